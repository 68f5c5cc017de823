"""Futures own the task lifecycle: the standard library's future protocol, asyncio,
exceptions re-raised as themselves, transactional collection, and no future left
waiting on a controller that was terminated."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import warnings
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.common import interrupted_when

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 30


# ------------------------------------------------------- the Future protocol
def test_futures_are_standard_futures(controller: pycrew.Controller) -> None:
    futures = [controller.push(tasks.add, i, 1) for i in range(6)]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert (len(done), len(not_done)) == (6, 0)
    ended = list(concurrent.futures.as_completed(futures, timeout=WAIT))
    assert sorted(f.result() for f in ended) == [1, 2, 3, 4, 5, 6]
    assert all(f.done() and not f.running() and not f.cancelled() for f in futures)
    assert all(f.exception() is None for f in futures)
    assert controller.size() == 0  # every future handed its task over
    assert controller.collect() == []


def test_first_exception_wakes_wait(controller: pycrew.Controller) -> None:
    slow = controller.push(tasks.sleep, 60)
    bad = controller.push(tasks.raise_domain, "first")
    done, not_done = concurrent.futures.wait(
        [slow, bad], timeout=WAIT, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert done == {bad}
    assert not_done == {slow}
    assert slow.cancel()
    assert slow.cancelled()


def test_result_returns_the_value_and_raises_the_tasks_own_exception(
    controller: pycrew.Controller,
) -> None:
    assert controller.push(tasks.add, 2, 3).result(timeout=WAIT) == 5
    future = controller.push(tasks.raise_domain, "bad input")
    with pytest.raises(tasks.DomainError, match="bad input") as info:
        future.result(timeout=WAIT)
    # also caught as the base class a user would write
    assert isinstance(info.value, ValueError)
    cause = info.value.__cause__
    assert isinstance(cause, pycrew.RemoteTraceback)
    assert "raise_domain" in str(cause)
    assert "raise DomainError(message)" in str(cause)  # the worker read the source line
    assert "_evaluate.py" not in str(cause)  # pycrew's own frames are left out
    assert future.exception() is info.value  # the same object each time
    record = future.record()
    assert record.status is pycrew.Status.ERROR
    assert record.error == "DomainError: bad input"


def test_an_exception_that_cannot_be_rebuilt_is_a_task_error(
    controller: pycrew.Controller,
) -> None:
    with pytest.raises(pycrew.TaskError, match="NeedsTwo: a-b") as info:
        controller.push(tasks.raise_needs_two).result(timeout=WAIT)
    assert "could not be rebuilt here" in str(info.value)
    assert isinstance(info.value.__cause__, pycrew.RemoteTraceback)
    assert info.value.results[0].status is pycrew.Status.ERROR


def test_crash_cancel_and_timeout_raise_distinct_errors(controller: pycrew.Controller) -> None:
    with pytest.raises(pycrew.TaskCrashError, match="SIGKILL") as crash:
        controller.push(tasks.suicide).result(timeout=WAIT)
    assert crash.value.record is not None
    assert crash.value.record.status is pycrew.Status.CRASH
    with pytest.raises(pycrew.TaskTimeoutError) as late:
        controller.push(tasks.sleep, 60, seconds_timeout=0.2).result(timeout=WAIT)
    assert isinstance(late.value, TimeoutError)
    assert not isinstance(late.value, pycrew.CrewTimeoutError)  # the task's, not the wait's
    running = controller.push(tasks.sleep, 60)
    assert running.cancel()
    assert running.cancelled()
    assert running.done()
    with pytest.raises(pycrew.TaskCancelledError) as cancelled:
        running.result(timeout=WAIT)
    assert isinstance(cancelled.value, concurrent.futures.CancelledError)
    with pytest.raises(concurrent.futures.CancelledError):
        running.exception()
    for error in (crash.value, late.value, cancelled.value):
        assert isinstance(error, pycrew.CrewError)
    # a wait that runs out is a CrewTimeoutError and leaves the task alone
    pending = controller.push(tasks.sleep, 60)
    with pytest.raises(pycrew.CrewTimeoutError):
        pending.result(timeout=0.05)
    with pytest.raises(concurrent.futures.TimeoutError):
        pending.result(timeout=0.05)
    assert not pending.done()
    assert pending.cancel()


def test_cancel_of_a_finished_task_says_false(controller: pycrew.Controller) -> None:
    future = controller.push(tasks.add, 1, 1)
    assert future.result(timeout=WAIT) == 2
    assert not future.cancel()
    assert not future.cancelled()


def test_done_callbacks_run_once_the_task_ends(controller: pycrew.Controller) -> None:
    seen: list[object] = []
    arrived = threading.Event()

    def callback(fut: concurrent.futures.Future[int]) -> None:
        seen.append(fut.result())
        arrived.set()

    future = controller.push(tasks.add, 20, 22)
    future.add_done_callback(callback)
    assert arrived.wait(WAIT)
    assert seen == [42]
    late: list[object] = []
    future.add_done_callback(lambda f: late.append(f.result()))  # already done: runs now
    assert late == [42]


def test_a_callback_that_waits_for_another_task_gets_an_error_not_a_deadlock(
    controller: pycrew.Controller,
) -> None:
    outcome: list[BaseException | None] = []
    finished = threading.Event()
    slow = controller.push(tasks.sleep, 60)

    def callback(_: object) -> None:
        try:
            slow.result()
        except BaseException as exc:
            outcome.append(exc)
        finished.set()

    controller.push(tasks.add, 1, 1).add_done_callback(callback)
    assert finished.wait(WAIT)
    assert isinstance(outcome[0], pycrew.CrewError)
    assert "done callback" in str(outcome[0])
    assert slow.cancel()


# ------------------------------------------------------------------ asyncio
def test_await_wrap_future_and_async_as_completed(controller: pycrew.Controller) -> None:
    async def main() -> tuple[int, list[int], list[int], int]:
        one = await controller.push(tasks.add, 1, 2)
        wrapped = await asyncio.wrap_future(controller.push(tasks.add, 3, 4))
        gathered = await asyncio.gather(*(controller.push(tasks.add, i, i) for i in range(4)))
        arrived = []
        futures = [controller.push(tasks.add, i, 10) for i in range(4)]
        async for fut in pycrew.as_completed(futures, timeout=WAIT):
            assert fut in futures
            arrived.append(fut.result())
        with pytest.raises(tasks.DomainError):
            await controller.push(tasks.raise_domain, "async")
        return one, gathered, sorted(arrived), wrapped

    one, gathered, arrived, wrapped = asyncio.run(main())
    assert (one, wrapped) == (3, 7)
    assert gathered == [0, 2, 4, 6]
    assert arrived == [10, 11, 12, 13]


def test_cancelling_an_awaiting_coroutine_cancels_the_task(
    controller: pycrew.Controller,
) -> None:
    future = controller.push(tasks.sleep, 60)

    async def main() -> None:
        waiter = asyncio.ensure_future(asyncio.wrap_future(future))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    record = future.record(timeout=WAIT)
    assert record.status is pycrew.Status.CANCEL


def test_a_service_awaits_a_thousand_tasks_with_bounded_memory() -> None:
    """An async handler pushes and awaits; the controller keeps nothing, names are reused."""
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:

        async def handler(i: int) -> int:
            return await ctl.push(tasks.add, i, 1, name=f"request-{i % 10}")

        async def serve(start: int) -> list[int]:
            out = []
            for batch in range(start, start + 500, 10):
                out += await asyncio.gather(*(handler(i) for i in range(batch, batch + 10)))
            return out

        assert asyncio.run(serve(0)) == [i + 1 for i in range(500)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            assert asyncio.run(serve(500)) == [i + 1 for i in range(500, 1000)]
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert ctl.size() == 0
        assert ctl.collect() == []
        summary = ctl.summary()
        assert summary is not None
        assert (summary.tasks, summary.success) == (1000, 1000)
        assert grown < 2 << 20  # what 500 kept records would take is well above this


def test_pop_skips_what_futures_took_and_keeps_the_order() -> None:
    # one worker: tasks end in the order they were pushed, and pop() follows
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as controller:
        futures = [controller.push(tasks.add, i, 0, name=f"t{i}") for i in range(10)]
        assert controller.wait(seconds_timeout=WAIT)
        assert [futures[i].result() for i in range(0, 10, 2)] == [0, 2, 4, 6, 8]
        popped = [controller.pop() for _ in range(5)]
        assert [r.name for r in popped if r is not None] == ["t1", "t3", "t5", "t7", "t9"]
        assert controller.pop() is None
        assert not controller.wait(mode="one", seconds_timeout=0)
        assert controller.collect() == []


def test_results_read_through_futures_are_not_kept(controller: pycrew.Controller) -> None:
    """Nothing holds a result that its future handed over and its user let go."""
    size = 100_000
    controller.push(tasks.blob, size).result(timeout=WAIT)  # workers up
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(6):
            futures = [controller.push(tasks.blob, size) for _ in range(50)]
            assert all(len(f.result(timeout=WAIT)) == size for f in futures)
            del futures
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert controller.size() == 0
    assert grown < 100 * size  # the 300 results would take 30 MB


def test_map_async_keeps_the_loop_free(controller: pycrew.Controller) -> None:
    async def main() -> tuple[list[int], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.ensure_future(ticker())
        records = await controller.map_async(tasks.sleep, [0.3, 0.3])
        stop.set()
        await beat
        return [r.result for r in records], ticks

    results, ticks = asyncio.run(main())
    assert results == [0.3, 0.3]
    assert ticks > 1  # the loop ran other work while the tasks did


# --------------------------------------------------------- one lifecycle
def test_map_works_beside_pending_tasks_and_from_another_thread(
    controller: pycrew.Controller,
) -> None:
    controller.push(tasks.add, 1, 1).result(timeout=WAIT)
    pending = controller.push(tasks.sleep, 0.2, name="pending")
    out: list[list[int]] = []
    thread = threading.Thread(
        target=lambda: out.append([r.result for r in controller.map(abs, [-1, -2, -3])])
    )
    thread.start()
    mine = [r.result for r in controller.map(tasks.add, iterate={"x": [1, 2], "y": [1, 1]})]
    thread.join(WAIT)
    assert not thread.is_alive()
    assert out == [[1, 2, 3]]
    assert mine == [2, 3]
    assert controller.wait(seconds_timeout=WAIT)
    assert [r.name for r in controller.collect()] == ["pending"]
    assert pending.result() == 0.2


def test_map_fast_raises_at_the_first_failure_and_cancels_the_rest(
    controller: pycrew.Controller,
) -> None:
    with pytest.raises(pycrew.TaskError, match="DomainError: early") as info:
        controller.map(
            tasks.raise_domain_after,
            iterate={"seconds": [0.0, 60, 60, 60], "message": ["early", "a", "b", "c"]},
            error="fast",
        )
    statuses = [r.status for r in info.value.results]
    assert statuses[0] is pycrew.Status.ERROR
    assert set(statuses[1:]) == {pycrew.Status.CANCEL}
    assert isinstance(info.value.__cause__, tasks.DomainError)
    assert controller.unresolved() == 0
    assert controller.collect() == []


def test_ctrl_c_while_collect_unpickles_loses_nothing(controller: pycrew.Controller) -> None:
    controller.walk(tasks.make_slow, [0.01] * 200)
    assert controller.wait(seconds_timeout=WAIT)
    with (
        tasks.rebuilds_seen() as rebuilding,
        interrupted_when(rebuilding, WAIT),
        pytest.raises(KeyboardInterrupt),
    ):
        controller.collect()
    assert controller.size() == 200
    records = controller.collect()
    assert len(records) == 200
    assert {r.result for r in records} == {"slow"}
    assert controller.size() == 0
    assert controller.map(abs, [-1])[0].result == 1  # nothing is stuck


def test_a_result_that_raises_when_rebuilt_is_that_tasks_error(
    controller: pycrew.Controller,
) -> None:
    futures = [controller.push(tasks.make_bad_state)]
    good = controller.push(tasks.add, 1, 1)
    assert controller.wait(seconds_timeout=WAIT)
    records = controller.collect()
    by_name = {r.name: r for r in records}
    bad = by_name[futures[0].name]
    assert bad.status is pycrew.Status.ERROR
    assert "could not be unpickled here" in (bad.error or "")
    assert "SystemExit" in (bad.error or "")
    assert by_name[good.name].result == 2
    with pytest.raises(pycrew.TaskError, match="could not be unpickled"):
        futures[0].result()


def test_terminate_resolves_every_future() -> None:
    ctl = pycrew.local_controller(workers=1, seconds_interval=0.05)
    running = ctl.push(tasks.sleep, 30)
    queued = ctl.push(tasks.sleep, 30)
    with pytest.warns(pycrew.CrewWarning, match="cancelled 2 unfinished tasks"):
        ctl.terminate()
    try:
        assert ctl.push(abs, -1).result(timeout=WAIT) == 1  # a restart works
        for future in (running, queued):
            with pytest.raises(pycrew.TaskCancelledError, match="terminated"):
                future.result(timeout=WAIT)
            assert future.cancelled()
    finally:
        ctl.terminate()


def test_push_then_terminate_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pycrew")
    for _ in range(5):
        ctl = pycrew.local_controller()
        future = ctl.push("True")
        with warnings.catch_warnings():
            # whether the task ended first is a race: what it says is tested elsewhere
            warnings.simplefilter("ignore", pycrew.CrewWarning)
            ctl.terminate()
        assert future.done()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_summary_counts_every_task_whichever_way_it_left(controller: pycrew.Controller) -> None:
    controller.push(tasks.add, 1, 1).result(timeout=WAIT)  # by the future
    controller.map(abs, [-1, -2])  # by map
    controller.push(tasks.add, 1, 1)
    assert controller.wait(seconds_timeout=WAIT)
    controller.collect()  # by collect
    with pytest.raises(tasks.DomainError):
        controller.push(tasks.raise_domain, "x").result(timeout=WAIT)
    summary = controller.summary()
    assert summary is not None
    assert (summary.tasks, summary.success, summary.error) == (5, 4, 1)


def test_as_completed_times_out_with_a_crew_error(controller: pycrew.Controller) -> None:
    slow = controller.push(tasks.sleep, 60)
    with pytest.raises(pycrew.CrewTimeoutError, match="unfinished"):
        list(pycrew.as_completed([slow], timeout=0.1))

    async def main() -> None:
        with pytest.raises(pycrew.CrewTimeoutError):
            async for _ in pycrew.as_completed([slow], timeout=0.1):
                pass

    asyncio.run(main())
    assert slow.cancel()


def test_walk_and_as_completed_show_progress(controller: pycrew.Controller) -> None:
    futures = controller.walk(abs, [-1, -2, -3], progress=True)
    got = [f.result() for f in pycrew.as_completed(futures, timeout=WAIT, progress=True)]
    assert sorted(got) == [1, 2, 3]


def test_records_and_summaries_as_data_frames(controller: pycrew.Controller) -> None:
    records = controller.map(tasks.add, iterate={"x": [1, 2], "y": [3, 4]})
    frame = pycrew.to_pandas(records)
    assert list(frame["result"]) == [4, 6]
    assert list(frame["status"]) == ["success", "success"]
    assert list(frame.columns) == list(pycrew.TaskResult._fields)
    summary = pycrew.to_pandas(controller.summary())
    assert int(summary.loc[0, "tasks"]) == 2
    workers = pycrew.to_pandas(controller.summary(by="worker"))
    assert int(workers["tasks"].sum()) == 2
    assert pycrew.to_pandas([]).empty
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.to_pandas([1, 2])  # type: ignore[list-item]


# ------------------------------------------------------------ clear errors
def test_bad_arguments_are_crew_errors_and_builtin_ones() -> None:
    with pytest.raises(pycrew.ArgumentError) as value:
        pycrew.local_controller(workers=0)
    assert isinstance(value.value, ValueError)
    assert isinstance(value.value, pycrew.CrewError)
    with pytest.raises(pycrew.ArgumentTypeError) as kind:
        pycrew.local_controller(workers="2")  # type: ignore[arg-type]
    assert isinstance(kind.value, TypeError)
    with pytest.raises(pycrew.CrewError, match="error must be one of"):
        pycrew.local_controller().map(abs, [1], error="loud")  # type: ignore[arg-type]


def test_a_busy_fixed_port_is_a_clear_crew_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        ctl = pycrew.local_controller(port=port)
        with pytest.raises(pycrew.CrewError, match=f"cannot listen on 127.0.0.1:{port}.*port=0"):
            ctl.start()
        assert not ctl.started()
    finally:
        holder.close()


# ----------------------------------------------------- a user's own script
def test_a_script_catches_its_own_exception_class(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import pycrew

            class PlanError(Exception):
                pass

            def plan(x):
                if x > 1:
                    raise PlanError(f"too big: {x}")
                return x

            with pycrew.local_controller(workers=1) as ctl:
                assert ctl.push(plan, 1).result(timeout=30) == 1
                try:
                    ctl.push(plan, 5).result(timeout=30)
                except PlanError as exc:
                    print("caught", exc)
                    print(exc.__cause__)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "caught too big: 5" in done.stdout
    assert 'raise PlanError(f"too big: {x}")' in done.stdout  # the script's own line
    assert f'File "{script}"' in done.stdout


# ------------------------------------------- a result that raises KeyboardInterrupt
@pytest.fixture
def single() -> Iterator[pycrew.Controller]:
    """One worker: tasks end, and so are collected, in the order they were pushed."""
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        yield ctl


def _poisoned(controller: pycrew.Controller) -> list[str]:
    """Push a good task, one whose result interrupts its unpickling, and another good one."""
    names = ["good-1", "poison", "good-2"]
    controller.push(tasks.add, 1, 1, name=names[0])
    controller.push(tasks.make_interrupting, name=names[1])
    controller.push(tasks.add, 2, 2, name=names[2])
    assert controller.wait(seconds_timeout=WAIT)
    return names


def _is_poison_record(record: pycrew.TaskResult) -> bool:
    return (
        record.status is pycrew.Status.ERROR
        and record.result is None
        and "could not be unpickled" in (record.error or "")
        and "KeyboardInterrupt: the result itself interrupts" in (record.error or "")
    )


def test_a_result_that_interrupts_collect_raises_once_then_is_an_error(
    single: pycrew.Controller,
) -> None:
    controller = single
    names = _poisoned(controller)
    with pytest.raises(KeyboardInterrupt):
        controller.collect()
    assert controller.size() == 3  # nothing was handed over
    records = controller.collect()
    assert [r.name for r in records] == names
    assert [r.result for r in records] == [2, None, 4]
    assert _is_poison_record(records[1])
    assert controller.size() == 0
    assert controller.collect() == []
    # the name is free again, and the summary counted each task once
    assert controller.push(tasks.add, 3, 3, name="poison").result(timeout=WAIT) == 6
    summary = controller.summary()
    assert summary is not None
    assert (summary.tasks, summary.success, summary.error) == (4, 3, 1)


def test_a_result_that_interrupts_pop_raises_once_then_is_an_error(
    single: pycrew.Controller,
) -> None:
    controller = single
    names = _poisoned(controller)
    first = controller.pop()
    assert first is not None
    assert (first.name, first.result) == ("good-1", 2)
    with pytest.raises(KeyboardInterrupt):
        controller.pop()
    poison = controller.pop()
    assert poison is not None
    assert poison.name == names[1]
    assert _is_poison_record(poison)
    last = controller.pop()
    assert last is not None
    assert (last.name, last.result) == ("good-2", 4)
    assert controller.pop() is None
    assert controller.empty()


def test_a_result_that_interrupts_its_future_raises_once_then_is_an_error(
    controller: pycrew.Controller,
) -> None:
    future = controller.push(tasks.make_interrupting, name="poison")
    with pytest.raises(KeyboardInterrupt):
        future.result(timeout=WAIT)
    with pytest.raises(pycrew.TaskError, match="KeyboardInterrupt: the result itself"):
        future.result(timeout=WAIT)
    assert _is_poison_record(future.record())
    assert controller.collect() == []  # the future handed it over, once
    assert controller.empty()
    assert controller.push(tasks.add, 1, 1, name="poison").result(timeout=WAIT) == 2


def test_a_result_that_interrupts_map_raises_once_and_leaves_the_records_to_collect(
    controller: pycrew.Controller,
) -> None:
    with pytest.raises(KeyboardInterrupt):
        controller.map(tasks.interrupting_if, [False, True, False], names=["a", "b", "c"])
    records = {r.name: r for r in controller.collect()}
    assert sorted(records) == ["a", "b", "c"]
    assert (records["a"].result, records["c"].result) == (False, False)
    assert _is_poison_record(records["b"])
    assert controller.empty()
    assert controller.map(abs, [-1])[0].result == 1  # nothing is stuck


def test_an_exception_that_interrupts_its_rebuilding_raises_once(
    controller: pycrew.Controller,
) -> None:
    future = controller.push(tasks.raise_interrupting)
    with pytest.raises(KeyboardInterrupt):
        future.result(timeout=WAIT)
    with pytest.raises(pycrew.TaskError, match=r"could not be rebuilt here \(KeyboardInterrupt"):
        future.result(timeout=WAIT)
    assert future.record().status is pycrew.Status.ERROR
    assert controller.empty()


# ----------------------------------------------- terminate() and unfinished tasks
def test_terminate_warns_of_the_unfinished_tasks_it_cancels() -> None:
    ctl = pycrew.local_controller(workers=1, seconds_interval=0.05)
    try:
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # handed over
        resolved = ctl.push(tasks.add, 2, 2, name="resolved")
        assert ctl.wait(seconds_timeout=WAIT)  # resolved, never collected: not lost
        doomed = [ctl.push(tasks.sleep, 60, name=name) for name in "abcd"]
        with pytest.warns(pycrew.CrewWarning) as caught:
            ctl.terminate()
        assert len(caught) == 1
        message = str(caught[0].message)
        assert f"terminate() of controller {ctl.name!r} cancelled 4 unfinished tasks" in message
        assert "'a', 'b', 'c' and 1 more" in message
        assert "'resolved'" not in message
        assert "wait()" in message
        assert caught[0].filename == __file__  # at the caller's line, not pycrew's
        assert all(f.cancelled() for f in doomed)
        assert resolved.result(timeout=WAIT) == 4  # still there, through its future
        ctl.terminate()  # nothing more to say
    finally:
        ctl.terminate()


def test_leaving_the_with_block_warns_of_a_task_left_running() -> None:
    left = r"cancelled 1 unfinished task: 'left'\."
    with (
        pytest.warns(pycrew.CrewWarning, match=left) as caught,
        pycrew.local_controller(workers=1) as ctl,
    ):
        ctl.push(tasks.sleep, 60, name="left")
    assert caught[0].filename == __file__


def test_terminate_is_quiet_where_the_cancelling_is_meant() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # cancelled first, on purpose
        with pycrew.local_controller(workers=1) as ctl:
            ctl.push(tasks.sleep, 60)
            ctl.cancel(all=True)
        # left by an exception, which says enough
        with pytest.raises(RuntimeError, match="boom"):
            _leave_by_an_exception()
        # an executor's own tasks, on a controller it shares
        with pycrew.local_controller(workers=1) as ctl:
            ctl.executor().submit(tasks.sleep, 60)
        # nothing pushed, nothing unfinished
        with pycrew.local_controller(workers=1) as ctl:
            ctl.push(tasks.add, 1, 2).result(timeout=WAIT)
    assert [str(w.message) for w in seen if issubclass(w.category, pycrew.CrewWarning)] == []


def test_an_interrupted_map_leaves_no_warning_at_terminate(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:

            def interrupt() -> None:
                if _wait_for_file(marker):
                    os.kill(os.getpid(), signal.SIGINT)

            sender = threading.Thread(target=interrupt)
            sender.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    ctl.map(
                        tasks.mark_then_sleep,
                        iterate={"path": [str(marker)] * 2, "seconds": [60, 60]},
                    )
            finally:
                sender.join(WAIT)
            assert ctl.unresolved() == 0
            assert {r.status for r in ctl.collect()} == {pycrew.Status.CANCEL}
    assert [w for w in seen if issubclass(w.category, pycrew.CrewWarning)] == []


def _leave_by_an_exception() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        ctl.push(tasks.sleep, 60)
        raise RuntimeError("boom")


def _wait_for_file(path: Path) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists():
            return True
        threading.Event().wait(0.02)
    return False
