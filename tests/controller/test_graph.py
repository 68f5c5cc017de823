"""Task graphs: futures as arguments, with real workers.

A task whose arguments hold futures waits in the controller until they end,
then runs with their values; a failed input ends it unrun, and its own
dependents after it. Intermediate results travel as the bytes their worker
sent: the controller never unpickles them.
"""

from __future__ import annotations

import concurrent.futures
import pickle
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import executor_tasks, tasks
from tests.helpers.common import interrupted_when, wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60


# ------------------------------------------------------------ where futures go
def test_futures_in_every_argument_position(controller: pycrew.Controller) -> None:
    a = controller.push(tasks.add, 1, 1)  # 2
    b = controller.push(tasks.add, 2, 1)  # 3
    nested = controller.push(
        tasks.gather,
        a,
        [a, (b, {"deep": [b, {a}]})],
        key=b,
        mapping={"a": a, "both": (a, b)},
        frozen=frozenset({a, b}),
    )
    assert nested.result(timeout=WAIT) == [
        [2, [2, (3, {"deep": [3, {2}]})]],
        {"key": 3, "mapping": {"a": 2, "both": (2, 3)}, "frozen": frozenset({2, 3})},
    ]
    # data= of a function and of a code string, and globals=
    assert controller.push(tasks.add, a, data={"y": b}).result(timeout=WAIT) == 5
    assert controller.push("x * y", data={"x": a, "y": b}).result(timeout=WAIT) == 6
    assert controller.push("x + g", data={"x": a}, globals={"g": b}).result(timeout=WAIT) == 5
    # walk and map, one future per input, and in data= for all
    futures = controller.walk(tasks.add, [a, b], data={"y": a})
    assert [f.result(timeout=WAIT) for f in futures] == [4, 5]
    records = controller.map(tasks.add, iterate={"x": [a, b], "y": [b, b]})
    assert [r.result for r in records] == [5, 6]


def test_push_returns_at_once_while_the_input_runs(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = controller.push(tasks.mark_then_sleep, str(gate), 60)
    second = controller.push(tasks.add, first, 1)  # returns without waiting for first
    assert not second.done()
    assert controller.status()["tasks"]["waiting"] == 1
    assert controller.unresolved() == 2
    first.cancel()
    with pytest.raises(pycrew.TaskCancelledError, match="input task"):
        second.result(timeout=WAIT)
    assert controller.status()["tasks"]["waiting"] == 0


def test_executor_submit_and_map_take_futures() -> None:
    with pycrew.Executor(max_workers=2) as pool:
        a = pool.submit(tasks.add, 1, 2)
        b = pool.submit(tasks.add, a, a)
        assert b.result(timeout=WAIT) == 6
        assert list(pool.map(tasks.add, [a, b], [b, b], timeout=WAIT)) == [9, 12]


def test_a_diamond(controller: pycrew.Controller) -> None:
    top = controller.push(tasks.add, 1, 0, name="top")
    left = controller.push(tasks.add, top, 10, name="left")
    right = controller.push(tasks.add, top, 100, name="right")
    bottom = controller.push(tasks.add, left, right, name="bottom")
    assert bottom.result(timeout=WAIT) == 112
    record = bottom.record()
    assert record.status is pycrew.Status.SUCCESS
    assert record.seconds is not None
    # every task has its own record, collected in the order they ended
    names = [r.name for r in controller.collect()]
    assert sorted(names) == ["left", "right", "top"]
    assert names[0] == "top"


def test_a_fan_in_of_a_thousand(controller: pycrew.Controller) -> None:
    parts = controller.walk(tasks.add, range(1000), data={"y": 1})
    whole = controller.push(tasks.total, parts)
    assert whole.result(timeout=WAIT) == sum(range(1, 1001))
    assert controller.summary().tasks >= 1


def test_a_map_then_a_tree_reduction(controller: pycrew.Controller) -> None:
    level = controller.walk(tasks.add, range(64), data={"y": 0})
    while len(level) > 1:
        level = [
            controller.push(tasks.add, x, y) for x, y in zip(level[::2], level[1::2], strict=True)
        ]
    assert level[0].result(timeout=WAIT) == sum(range(64))
    assert controller.unresolved() == 0


# ---------------------------------------------------- what is sent, and where
def test_an_intermediate_result_is_never_unpickled_in_the_controller(
    controller: pycrew.Controller,
) -> None:
    with tasks.rebuilds_seen() as rebuilt:
        slow = controller.push(tasks.make_slow, 0.0)
        passed = controller.push(tasks.echo, slow)  # unpickled on the worker: "slow"
        assert controller.push(tasks.echo, passed).result(timeout=WAIT) == "slow"
        assert not rebuilt.is_set()  # neither input was rebuilt here
        assert slow.result(timeout=WAIT) == "slow"  # until the user asked
        assert rebuilt.is_set()


def test_an_input_already_handed_over_still_works(controller: pycrew.Controller) -> None:
    first = controller.push(tasks.add, 20, 1)
    assert first.result(timeout=WAIT) == 21  # handed over: its bytes are gone
    assert controller.collect() == []
    assert controller.push(tasks.add, first, 1).result(timeout=WAIT) == 22


def test_a_future_of_another_controller() -> None:
    with (
        pycrew.local_controller(workers=1, name="upstream") as up,
        pycrew.local_controller(workers=1, name="downstream") as down,
    ):
        a = up.push(tasks.add, 1, 2)
        b = down.push(tasks.add, a, 10)
        assert b.result(timeout=WAIT) == 13
        assert b.record().controller == "downstream"
        failed = up.push(tasks.raise_domain, "upstream")
        dependent = down.push(tasks.echo, failed)
        with pytest.raises(pycrew.DependencyError) as info:
            dependent.result(timeout=WAIT)
        assert isinstance(info.value.__cause__, tasks.DomainError)


def test_a_future_of_a_group_member() -> None:
    one = pycrew.local_controller(workers=1, name="one")
    two = pycrew.local_controller(workers=1, name="two")
    with pycrew.ControllerGroup(one, two) as group:
        a = group.push(tasks.add, 1, 1, controller="one")
        b = group.push(tasks.add, a, 1, controller="two")
        assert b.result(timeout=WAIT) == 3


# ------------------------------------------------------ failures downstream
@pytest.mark.parametrize(
    ("make", "status", "cause"),
    [
        (lambda c, p: c.push(tasks.raise_domain, "bad"), "error", tasks.DomainError),
        (lambda c, p: c.push(tasks.suicide), "crash", pycrew.TaskCrashError),
        (
            lambda c, p: c.push(tasks.sleep, 60, seconds_timeout=0.5),
            "timeout",
            pycrew.TaskTimeoutError,
        ),
    ],
    ids=["error", "crash", "timeout"],
)
def test_a_failure_propagates_two_levels(
    controller: pycrew.Controller, tmp_path: Path, make: object, status: str, cause: type
) -> None:
    upstream = make(controller, tmp_path)  # type: ignore[operator]
    child = controller.push(tasks.add, upstream, 1, name="child")
    grandchild = controller.push(tasks.add, child, 1, name="grandchild")
    with pytest.raises(pycrew.DependencyError) as info:
        grandchild.result(timeout=WAIT)
    error = info.value
    assert (error.upstream, error.upstream_status) == ("child", "error")
    assert isinstance(error.__cause__, pycrew.DependencyError)
    assert error.__cause__.upstream == upstream.name
    assert error.__cause__.upstream_status == status
    assert isinstance(error.__cause__.__cause__, cause)
    record = child.record()
    assert record.status is pycrew.Status.ERROR
    assert record.seconds is None  # it never ran
    assert upstream.name in (record.error or "")
    assert record.worker is None
    summary = controller.summary()
    assert summary.error >= 2


def test_cancelling_an_upstream_cancels_what_waits_on_it(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    upstream = controller.push(tasks.mark_then_sleep, str(started), 60)
    child = controller.push(tasks.add, upstream, 1)
    grandchild = controller.push(tasks.gather, child, upstream)
    other = controller.push(tasks.add, 1, 1)  # not in the graph: untouched
    assert other.result(timeout=WAIT) == 2
    assert upstream.cancel()
    for future in (child, grandchild):
        with pytest.raises(pycrew.TaskCancelledError):
            future.result(timeout=WAIT)
        assert future.cancelled()
    assert controller.unresolved() == 0


def test_cancelling_a_waiting_task_leaves_its_inputs_alone(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    upstream = controller.push(tasks.slow_add, 1, 1, 1.0)
    child = controller.push(tasks.add, upstream, 1)
    assert child.cancel()
    assert upstream.result(timeout=WAIT) == 2
    assert child.cancelled()


def test_retries_happen_upstream_before_dependents_give_up(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    flaky = controller.push(tasks.flaky, str(tmp_path / "count"), 2, retries=3)
    assert isinstance(controller.push(tasks.echo, flaky).result(timeout=WAIT), float)
    crashing = pycrew.local_controller(workers=1, retry_crashes=True, seconds_interval=0.05)
    with crashing:
        once = crashing.push(tasks.crash_once, str(tmp_path / "crashed"))
        assert crashing.push(tasks.echo, once).result(timeout=WAIT) == "survived"
        assert once.record().attempts == 2


def test_an_input_that_went_down_the_backup_chain() -> None:
    b = pycrew.local_controller(name="b", retry_crashes=True, crashes_max=1)
    a = pycrew.local_controller(name="a", retry_crashes=True, crashes_max=1, backup=b)
    with pycrew.ControllerGroup(a, b):
        moved = a.push(tasks.crash_unless, "b")  # crashes in a, runs in b
        child = a.push(tasks.echo, moved)
        assert child.result(timeout=WAIT) == "b"
        assert (moved.record().controller, child.record().controller) == ("b", "a")


# ------------------------------------------------------------ the whole graph
def test_terminate_mid_graph_resolves_every_task(tmp_path: Path) -> None:
    ctl = pycrew.local_controller(workers=2, seconds_interval=0.05)
    try:
        roots = [ctl.push(tasks.sleep, 60) for _ in range(2)]
        middle = [ctl.push(tasks.gather, root) for root in roots]
        last = ctl.push(tasks.gather, *middle)
    finally:
        with pytest.warns(pycrew.CrewWarning):
            ctl.terminate()
    for future in [*roots, *middle, last]:
        assert future.done()
        assert future.cancelled()


def test_ctrl_c_in_collect_mid_graph_loses_nothing(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    gate = controller.push(executor_tasks.wait_file, str(go), WAIT)
    slow = controller.walk(tasks.make_slow, [0.01] * 50)
    echoed = controller.walk(tasks.echo, slow)
    later = controller.walk(tasks.gather, [[f, gate] for f in echoed[:5]])
    assert echoed[0].result(timeout=WAIT) == "slow"  # the graph runs
    concurrent.futures.wait(echoed, timeout=WAIT)
    with (
        tasks.rebuilds_seen() as rebuilding,
        interrupted_when(rebuilding, WAIT),
        pytest.raises(KeyboardInterrupt),
    ):
        controller.collect()
    assert controller.status()["tasks"]["waiting"] == 5  # mid-graph: these wait for the gate
    go.touch()
    assert controller.wait(mode="all", seconds_timeout=WAIT)
    records = controller.collect()
    assert {r.status for r in records} == {pycrew.Status.SUCCESS}
    # all but the echo handed over above: the gate, 50 slow, 49 echoes, 5 later
    assert len(records) == 1 + 50 + 49 + 5
    by_name = {r.name: r.result for r in records}
    assert [by_name[f.name] for f in later] == [[[["slow", True]], {}]] * 5


# ----------------------------------------------------- records and views
def test_seeds_make_a_graph_reproducible() -> None:
    def run() -> list[float]:
        with pycrew.local_controller(workers=2, seed=7) as ctl:
            draws = [ctl.push(tasks.draw, name=f"draw-{i}") for i in range(3)]
            mixed = ctl.push(tasks.gather, *draws, tasks.draw, name="mixed")
            again = ctl.push(tasks.draw, name="again")
            values: list[float] = [f.result(timeout=WAIT) for f in draws]
            values += mixed.result(timeout=WAIT)[0][:3]
            return [*values, again.result(timeout=WAIT)]

    assert run() == run()


def test_the_wait_for_inputs_is_not_the_tasks_time(controller: pycrew.Controller) -> None:
    upstream = controller.push(tasks.slow_add, 1, 1, 1.5)
    # a timeout shorter than the wait for the input: its clock starts at release
    child = controller.push(tasks.add, upstream, 1, seconds_timeout=1.0)
    assert child.result(timeout=WAIT) == 3
    assert (child.record().seconds or 0) < 1.0


def test_a_future_pickled_outside_a_task_is_refused(controller: pycrew.Controller) -> None:
    future = controller.push(tasks.add, 1, 1)
    with pytest.raises(pycrew.ArgumentTypeError, match="only be a task's argument"):
        pickle.dumps(future)
    with pytest.raises(pycrew.ArgumentTypeError, match="only be a task's argument"):
        controller.share({"f": future})
    assert future.result(timeout=WAIT) == 2


def test_memory_counts_the_inputs_a_task_holds() -> None:
    with pycrew.local_controller(workers=1, memory=64 << 20) as ctl:
        big = ctl.push(tasks.blob, 8 << 20)
        size = ctl.push(tasks.nbytes, big)
        assert size.result(timeout=WAIT) == 8 << 20
        assert ctl.status()["memory"]["peak"] >= 8 << 20
        assert ctl.status()["memory"]["held"] < 1 << 20  # freed once it ended


# --------------------------------------------------- the debugging controller
def test_the_debugging_controller_runs_a_graph_in_order() -> None:
    with pycrew.sequential_controller() as ctl:
        a = ctl.push(tasks.add, 1, 1)
        b = ctl.push(tasks.add, a, a)
        assert b.done()  # ran inside push, in this thread
        assert ctl.push(tasks.gather, a, [b]).result() == [[2, [4]], {}]
        bad = ctl.push(tasks.raise_domain, "seq")
        with pytest.raises(pycrew.DependencyError):
            ctl.push(tasks.echo, bad).result()
        with pycrew.local_controller(workers=1) as real:
            remote = real.push(tasks.slow_add, 1, 2, 0.2)
            assert ctl.push(tasks.add, remote, 1).result(timeout=WAIT) == 4


def test_an_executor_shutdown_cancels_tasks_waiting_for_inputs(tmp_path: Path) -> None:
    started = tmp_path / "started"
    pool = pycrew.Executor(max_workers=1)
    try:
        running = pool.submit(tasks.mark_then_sleep, str(started), 1.0)
        waiting = pool.submit(tasks.add, running, 1)
        wait_until(started.exists, WAIT, "the task to start")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=WAIT) == 1.0  # it ran on: it had started
    assert waiting.cancelled()


# ------------------------------------------------- a result kept where it was made
MB = 1 << 20


def _copies(ctl: pycrew.Controller, before: dict[str, int], size: int) -> tuple[float, float]:
    after = ctl.status()["bytes"]
    return (after["sent"] - before["sent"]) / size, (after["received"] - before["received"]) / size


@pytest.mark.parametrize("workers", [1, 2])
def test_a_chain_on_a_worker_sends_its_values_out_no_more(workers: int) -> None:
    # counted in bytes on the controller's sockets: each 8 MB value comes back
    # once (a user may ask for it), and is never sent out again to the next
    # task, which runs where the value is kept
    with pycrew.local_controller(workers=workers) as ctl:
        ctl.launch(workers)
        assert ctl.push(tasks.add, 0, 0).result(timeout=WAIT) == 0
        before = ctl.status()["bytes"]
        value = ctl.push(tasks.array_mb, 8)
        for _ in range(9):
            value = ctl.push(tasks.bump, value)
        assert float(value.result(timeout=WAIT)[0]) == 9.0
        sent, received = _copies(ctl, before, 8 * MB)
    assert sent < 0.1
    assert 9.9 < received < 10.1


def test_a_kept_input_is_a_copy_for_each_task_that_takes_it() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        source = ctl.push(tasks.array_mb, 1)
        changed = [ctl.push(tasks.bump_in_place, source) for _ in range(3)]
        assert [f.result(timeout=WAIT) for f in changed] == [1.0, 1.0, 1.0]
        assert float(source.result(timeout=WAIT).sum()) == 0.0


def test_a_dependent_on_another_worker_gets_the_bytes(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=2) as ctl:
        source = ctl.push(tasks.array_mb, 8)
        here = ctl.push(tasks.pid_of, source).result(timeout=WAIT)  # where it is kept
        before = ctl.status()["bytes"]
        started = tmp_path / "started"
        busy = ctl.push(tasks.mark_then_sleep, str(started), 3.0)  # that worker, busy
        wait_until(started.exists, WAIT, "the task to start")
        # a large task waits for an idle worker: a second one is launched for it
        there = ctl.push(tasks.pid_of, source).result(timeout=WAIT)
        sent, _ = _copies(ctl, before, 8 * MB)
        assert busy.result(timeout=WAIT) == 3.0
    assert there != here
    assert 0.9 < sent < 1.5  # its input went out once, to the worker that ran it


def test_a_kept_input_survives_its_worker_dying(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=1, retry_crashes=True, crashes_max=3) as ctl:
        source = ctl.push(tasks.array_mb, 1)
        assert float(source.result(timeout=WAIT)[0]) == 0.0
        # the worker that kept it dies before the dependent runs
        crash = ctl.push(tasks.crash_once_then, str(tmp_path / "crashed"), source)
        assert float(crash.result(timeout=WAIT)[0]) == 0.0
        assert crash.record().attempts == 2
        assert float(ctl.push(tasks.bump, source).result(timeout=WAIT)[0]) == 1.0


def test_inputs_too_large_for_bytes_max_end_the_task_with_a_clear_error() -> None:
    with pycrew.local_controller(workers=1, bytes_max=1 << 20) as ctl:
        halves = [ctl.push(tasks.blob, 600 << 10) for _ in range(2)]
        both = ctl.push(tasks.gather, *halves)
        record = both.record(timeout=WAIT)
        assert record.status is pycrew.Status.ERROR
        assert "more than bytes_max" in (record.error or "")
        assert [h.result(timeout=WAIT) for h in halves] == [b"\x01" * (600 << 10)] * 2


def test_an_input_whose_result_failed_to_unpickle_here_is_a_failed_input(
    controller: pycrew.Controller,
) -> None:
    bad = controller.push(tasks.make_bad_state)
    with pytest.raises(pycrew.TaskError):
        bad.result(timeout=WAIT)  # its record: an error, and its bytes are gone
    dependent = controller.push(tasks.echo, bad)
    with pytest.raises(pycrew.DependencyError) as info:
        dependent.result(timeout=WAIT)
    assert info.value.upstream_status == "error"


@pytest.mark.parametrize(
    "options",
    [{"tasks_max": 1}, {"tls": "automatic"}, {"seconds_idle": 0.2}],
    ids=["a-worker-per-task", "tls", "idle-workers-leave"],
)
def test_a_chain_with_workers_that_come_and_go(options: dict[str, object]) -> None:
    # a worker that keeps a result may leave before the next task runs: the
    # controller still has the bytes, and nothing waits for the gone worker
    with pycrew.local_controller(workers=2, seconds_interval=0.05, **options) as ctl:  # type: ignore[arg-type]
        value = ctl.push(tasks.array_mb, 1)
        for _ in range(5):
            value = ctl.push(tasks.bump, value)
        assert float(value.result(timeout=WAIT)[0]) == 5.0
        later = ctl.push(tasks.slow_add, 0, 0, 0.5)  # idle workers may leave meanwhile
        assert ctl.push(tasks.add, later, 1).result(timeout=WAIT) == 1
