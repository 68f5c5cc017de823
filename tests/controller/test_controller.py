"""A local controller end to end, with real worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import pycrew
import pycrew.launchers
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    import pathlib


def test_round_trip_record(controller: pycrew.Controller) -> None:
    result = controller.push(tasks.add, 1, 2, name="one").record(timeout=30)
    assert result.result == 3
    assert result.status is pycrew.Status.SUCCESS
    assert (result.error, result.trace, result.warnings, result.code) == (None, None, None, 0)
    assert result.command == "tests.helpers.tasks.add"
    assert result.controller == controller.name
    assert result.seconds is not None
    assert result.seconds >= 0
    assert result.pid in controller.pids()
    assert result.worker is not None
    assert result.worker.startswith(controller.name)


def test_summary_is_none_before_start_and_counts_after() -> None:
    ctl = pycrew.local_controller()
    assert ctl.summary() is None
    with ctl:
        ctl.push(tasks.add, 1, 1)
        ctl.push(tasks.fail, "boom")
        assert ctl.wait(seconds_timeout=30)
        records = ctl.collect()
        summary = ctl.summary()
    assert len(records) == 2
    assert summary is not None
    assert (summary.tasks, summary.success, summary.error) == (2, 1, 1)


def test_three_rounds_of_200_with_name_reuse(controller: pycrew.Controller) -> None:
    for round_number in range(3):
        for i in range(1, 201):
            controller.push(tasks.add, i, round_number, name=f"task_{i}")
        assert controller.wait(mode="all", seconds_timeout=60)
        records = controller.collect()
        assert sorted(r.name for r in records) == sorted(f"task_{i}" for i in range(1, 201))
        assert all(r.result == int(r.name.split("_")[1]) + round_number for r in records)
        assert controller.empty()
    summary = controller.summary()
    assert summary is not None
    assert summary.success == 600


def test_duplicate_name_raises_until_popped(controller: pycrew.Controller) -> None:
    controller.push(tasks.add, 1, 1, name="x")
    with pytest.raises(ValueError, match="in use"):
        controller.push(tasks.add, 1, 1, name="x")
    assert controller.wait(seconds_timeout=30)
    assert controller.pop() is not None
    assert controller.push(tasks.add, 2, 2, name="x").record(timeout=30).result == 4


def test_code_string_with_data_and_globals(controller: pycrew.Controller) -> None:
    code = "def helper(v):\n    return v * z\n[helper(v) for v in (x, y)]"
    record = controller.push(code, data={"x": 1, "y": 2}, globals={"z": 3}).record(timeout=30)
    assert record.result == [3, 6]
    assert record.command == code
    # the global does not leak into later tasks (reset_globals=True) nor into the host
    leftover = controller.push("'z' in globals()").record(timeout=30)
    assert leftover.result is False
    assert "z" not in globals()


def test_reset_globals_off_keeps_them() -> None:
    with pycrew.local_controller(reset_globals=False) as ctl:
        ctl.push(tasks.set_global, "kept", 1).record(timeout=30)
        assert ctl.push(tasks.has_global, "kept").record(timeout=30).result is True
    with pycrew.local_controller(reset_globals=True) as ctl:
        ctl.push(tasks.set_global, "kept", 1).record(timeout=30)
        assert ctl.push(tasks.has_global, "kept").record(timeout=30).result is False


def test_closures_and_lambdas_from_the_test_module(controller: pycrew.Controller) -> None:
    offset = 10
    assert controller.push(lambda v: v + offset, 5).record(timeout=30).result == 15


def test_bad_input_is_refused_and_nothing_is_queued(controller: pycrew.Controller) -> None:
    with pytest.raises(TypeError, match="argument 2"):
        controller.push(tasks.add, 1, threading.Lock())
    assert controller.size() == 0
    with pytest.raises(ValueError, match="equal lengths"):
        controller.map(tasks.add, iterate={"x": [1, 2], "y": [1]})
    with pytest.raises(ValueError, match="mode"):
        controller.wait(mode="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error must be"):
        controller.collect(error="loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        pycrew.local_controller(workers=-1)
    with pytest.raises(ValueError, match="not valid Python"):
        controller.push("1 +")
    assert controller.size() == 0


def test_unpicklable_result_is_an_error_and_the_worker_lives(
    controller: pycrew.Controller,
) -> None:
    record = controller.push("import threading\nthreading.Lock()").record(timeout=30)
    assert record.status is pycrew.Status.ERROR
    assert "could not be pickled" in (record.error or "")
    again = controller.push(tasks.pid).record(timeout=30)
    assert again.status is pycrew.Status.SUCCESS
    assert again.pid == record.pid


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import sys\nsys.exit(3)", "SystemExit: 3"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ],
    ids=["SystemExit", "KeyboardInterrupt"],
)
def test_a_task_cannot_end_its_worker_by_raising(
    controller: pycrew.Controller, code: str, error: str
) -> None:
    record = controller.push(code).record(timeout=30)
    assert record.status is pycrew.Status.ERROR
    assert record.error == error
    again = controller.push(tasks.pid).record(timeout=30)
    assert again.pid == record.pid


def test_map_in_input_order_with_iterate_and_data(controller: pycrew.Controller) -> None:
    records = controller.map(
        "x + y + a + b", iterate={"x": [1, 2], "y": [3, 4]}, data={"a": 5, "b": 6}
    )
    assert [r.result for r in records] == [15, 17]
    positional = controller.map(abs, range(-50, 0))
    assert [r.result for r in positional] == list(range(50, 0, -1))
    named = controller.map(
        tasks.add,
        iterate={
            "x": [1, 2],
            "y": [3, 4],
        },
        names=["first", "second"],
    )
    assert [r.name for r in named] == ["first", "second"]


def test_map_runs_beside_other_tasks_and_takes_only_its_own(
    controller: pycrew.Controller,
) -> None:
    pending = controller.push(tasks.add, 1, 1, name="mine")
    assert [r.result for r in controller.map(abs, [-1, -2])] == [1, 2]
    assert controller.wait(seconds_timeout=30)
    assert [r.name for r in controller.collect()] == ["mine"]  # map took none of it
    assert pending.done()
    assert controller.map(abs, [-3])[0].result == 3  # and nothing of map's is left over
    assert controller.collect() == []
    assert controller.size() == 0


@pytest.mark.parametrize("mode", ["stop", "warn", "silent"])
def test_map_error_modes(controller: pycrew.Controller, mode: str) -> None:
    inputs = {"message": ["a", "b", "c"]}

    def run() -> list[pycrew.TaskResult]:
        return controller.map(tasks.warn_and_fail, iterate=inputs, error=mode)  # type: ignore[arg-type]

    if mode == "stop":
        with (
            pytest.warns(pycrew.CrewWarning, match="raised warnings"),
            pytest.raises(pycrew.TaskError, match="3 of 3") as info,
        ):
            run()
        assert controller.error is not None
        assert len(controller.error) == 3
        assert [r.error for r in info.value.results] == [
            "RuntimeError: a",
            "RuntimeError: b",
            "RuntimeError: c",
        ]
    elif mode == "warn":
        with pytest.warns(pycrew.CrewWarning) as caught:
            records = run()
        assert len(records) == 3
        assert any("did not succeed" in str(w.message) for w in caught)
    else:
        with pytest.warns(pycrew.CrewWarning, match="raised warnings"):
            records = run()
        assert controller.error is None
        assert [r.status for r in records] == [pycrew.Status.ERROR] * 3
        assert all(r.trace and "RuntimeError" in r.trace for r in records)
        assert all(r.warnings == "this is a warning" for r in records)
    assert controller.empty()
    summary = controller.summary()
    assert summary is not None
    assert (summary.error, summary.warning) == (3, 3)


def test_warnings_are_capped(controller: pycrew.Controller) -> None:
    code = "import warnings\nfor i in range(200):\n    warnings.warn('w' * 100)\n1"
    record = controller.push(code).record(timeout=30)
    assert record.status is pycrew.Status.SUCCESS
    assert record.warnings is not None
    assert len(record.warnings) <= 2048


def test_crash_by_sigkill_mid_task(controller: pycrew.Controller) -> None:
    record = controller.push(tasks.suicide, name="doomed").record(timeout=30)
    assert record.status is pycrew.Status.CRASH
    assert record.code == 19
    assert "SIGKILL" in (record.error or "")
    assert controller.crashes("doomed") == 1  # counted when handed over (here, by the future)
    assert controller.collect() == []
    # a replacement worker takes the next task
    assert controller.push(tasks.add, 2, 3).record(timeout=30).result == 5


def test_crash_of_a_worker_killed_from_outside(controller: pycrew.Controller) -> None:
    future = controller.push(tasks.sleep, 60)
    wait_until(lambda: controller.pids(), what="a connected worker")
    wait_until(lambda: controller.unresolved() == 1 and _busy(controller), what="task running")
    for pid in controller.pids():
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    record = future.record(timeout=10)
    assert record.status is pycrew.Status.CRASH
    assert time.monotonic() - started < 5


def _busy(ctl: pycrew.Controller) -> bool:
    dispatcher = ctl._dispatcher
    return dispatcher is not None and dispatcher.counts()[3] == 1


@pytest.mark.parametrize("via", ["pop", "collect"])
def test_crashes_max(via: str) -> None:
    with pycrew.local_controller(crashes_max=2, seconds_interval=0.05) as ctl:
        for attempt in range(1, 4):
            ctl.push(tasks.suicide, name="x")
            assert ctl.wait(seconds_timeout=30)
            take = ctl.pop if via == "pop" else ctl.collect
            if attempt < 3:
                take()
                assert ctl.crashes("x") == attempt
            else:
                with pytest.raises(pycrew.CrashLimitError, match="3 consecutive") as info:
                    take()
                assert info.value.crashes == 3
                assert info.value.results[0].status is pycrew.Status.CRASH
        assert ctl.crashes("x") == 3
        summary = ctl.summary()
        assert summary is not None
        assert summary.crash == 3
        assert ctl.empty()
        # a success resets the count
        ctl.push(tasks.add, 1, 1, name="x").record(timeout=30)
        ctl.collect()
        assert ctl.crashes("x") == 0


@pytest.mark.parametrize("in_c", [False, True], ids=["sleep", "spin_in_c"])
def test_cancel_a_running_task(
    controller: pycrew.Controller, in_c: bool, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "running"
    if in_c:
        future = controller.push(tasks.mark_then_spin, str(marker), name="long")
    else:
        future = controller.push(tasks.mark_then_sleep, str(marker), 1e6, name="long")
    wait_until(marker.exists, what="the task to start")
    controller.cancel(names=["long"])
    record = future.record(timeout=5)
    assert record.status is pycrew.Status.CANCEL
    assert record.code == 20
    # the task really stops: the worker is free again, or killed if the task holds
    # the GIL in C code (the record settles at once; the kill comes after a grace)
    if in_c:
        gone = lambda: record.pid not in controller.pids()  # noqa: E731
        wait_until(gone, seconds=10, what="the worker holding the GIL to be killed")
    else:
        wait_until(lambda: not _busy(controller), seconds=5, what="the worker to stop the task")
        assert record.pid in controller.pids()
    # a worker (the same or a replacement) takes the next task, and no crash is counted
    after = controller.push(tasks.add, 1, 1).record(timeout=30)
    assert after.status is pycrew.Status.SUCCESS
    controller.collect()
    summary = controller.summary()
    assert summary is not None
    assert (summary.cancel, summary.crash) == (1, 0)


def test_cancel_all_and_queued(controller: pycrew.Controller) -> None:
    for i in range(4):
        controller.push(tasks.sleep, 1e6, name=f"s{i}")
    controller.cancel(all=True)
    assert controller.wait(seconds_timeout=10)
    records = controller.collect()
    assert sorted(r.name for r in records) == ["s0", "s1", "s2", "s3"]
    assert {r.status for r in records} == {pycrew.Status.CANCEL}


def test_timeout_of_a_sleeping_task(controller: pycrew.Controller) -> None:
    started = time.monotonic()
    record = controller.push(tasks.sleep, 1e6, seconds_timeout=0.5).record(timeout=10)
    assert record.status is pycrew.Status.TIMEOUT
    assert record.code == 5
    assert time.monotonic() - started < 2.5
    assert controller.push(tasks.add, 1, 1).record(timeout=30).result == 2


def test_wait_returns_false_on_timeout_and_at_once_when_empty() -> None:
    with pycrew.local_controller() as ctl:
        assert ctl.wait(mode="all", seconds_timeout=0) is True
        assert ctl.wait(mode="one", seconds_timeout=0) is False
        ctl.push(tasks.sleep, 2)
        started = time.monotonic()
        assert ctl.wait(seconds_timeout=0.2) is False
        assert time.monotonic() - started < 1
        assert ctl.wait(mode="one", seconds_timeout=30) is True
        assert ctl.pop() is not None


def test_idle_workers_exit_and_are_relaunched() -> None:
    with pycrew.local_controller(seconds_idle=0.5, seconds_interval=0.05) as ctl:
        first = ctl.push(tasks.pid).record(timeout=30).result
        wait_until(
            lambda: (
                not psutil.pid_exists(first)
                or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
            ),
            what="the idle worker to exit",
        )
        wait_until(lambda: ctl.pids() == [], what="the controller to see it leave")
        second = ctl.push(tasks.pid).record(timeout=30).result
        assert second != first


def test_tasks_max_one_gives_transient_workers() -> None:
    with pycrew.local_controller(workers=2, tasks_max=1, seconds_interval=0.05) as ctl:
        records = ctl.map("import os\nos.getpid()", iterate={"i": list(range(6))})
        pids = [r.result for r in records]
        assert len(set(pids)) == 6


def test_tasks_timers_delay_the_idle_timer() -> None:
    with pycrew.local_controller(seconds_idle=0.3, tasks_timers=2, seconds_interval=0.05) as ctl:
        first = ctl.push(tasks.pid).record(timeout=30).result
        # after one task the idle timer has not started: the worker stays
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert psutil.pid_exists(first)
            time.sleep(0.1)
        assert ctl.push(tasks.pid).record(timeout=30).result == first
        wait_until(lambda: ctl.pids() == [], what="idle exit after the second task")


def test_seeds_reproduce_across_controllers() -> None:
    draws = []
    for workers in (1, 2):
        with pycrew.local_controller(workers=workers, seed=123) as ctl:
            draws.append(
                [ctl.push(tasks.draw, name=f"d{i}").record(timeout=30).result for i in range(4)]
            )
    assert draws[0] == draws[1]
    assert len(set(draws[0])) == 4
    with pycrew.local_controller() as ctl:
        a = ctl.push(tasks.draw, seed=7).record(timeout=30)
        b = ctl.push(tasks.draw, seed=7).record(timeout=30)
        c = ctl.push(tasks.draw, seed=8).record(timeout=30)
    assert a.result == b.result != c.result
    assert a.seed == 7


def test_controller_env_var_on_workers(controller: pycrew.Controller) -> None:
    record = controller.push(tasks.env, "PYCREW_CONTROLLER").record(timeout=30)
    assert record.result == controller.name


def test_log_directory(tmp_path: object) -> None:
    import pathlib

    folder = pathlib.Path(str(tmp_path)) / "logs"
    with pycrew.local_controller(log_directory=folder) as ctl:
        ctl.push(
            "print('hello from the task')\nimport warnings\nwarnings.warn('this-warning')"
        ).record(timeout=30)
        ctl.push(tasks.fail, "this-stop").record(timeout=30)
    files = list(folder.glob("*.log"))
    assert len(files) == 1
    text = files[0].read_text()
    for needle in ("hello from the task", "Warning: this-warning", "Error: ValueError: this-stop"):
        assert needle in text
    with pycrew.local_controller(log_directory=folder / "split", log_join=False) as ctl:
        ctl.push("print('to stdout')").record(timeout=30)
    names = sorted(p.name.rsplit("-", 1)[-1] for p in (folder / "split").iterdir())
    assert names == ["stderr.log", "stdout.log"]


def test_large_numpy_array_round_trip(controller: pycrew.Controller) -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(5_000_000, dtype=np.float64)
    record = controller.push(np.sum, array).record(timeout=60)
    assert record.result == array.sum()
    echoed = controller.push("a * 2", data={"a": array}).record(timeout=60)
    assert np.array_equal(echoed.result, array * 2)


def test_port_is_free_after_terminate() -> None:
    ctl = pycrew.local_controller()
    ctl.start()
    port = int(ctl.url.rsplit(":", 1)[1])
    assert ctl.push(tasks.add, 1, 1).record(timeout=30).result == 2
    ctl.terminate()
    ctl.terminate()  # idempotent
    with pycrew.local_controller(port=port) as again:
        assert again.url.endswith(f":{port}")
        assert again.push(tasks.add, 2, 2).record(timeout=30).result == 4
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))
    probe.close()


def test_restart_after_terminate_resets_summary(controller: pycrew.Controller) -> None:
    controller.push(tasks.add, 1, 1).record(timeout=30)
    controller.collect()
    controller.terminate()
    assert controller.summary() is not None
    controller.start()
    summary = controller.summary()
    assert summary is not None
    assert summary.tasks == 0
    assert controller.push(tasks.add, 1, 2).record(timeout=30).result == 3


def test_workers_exit_when_the_controller_is_killed(tmp_path: object) -> None:
    script = textwrap.dedent("""
        import sys, pycrew
        ctl = pycrew.local_controller(workers=2)
        ctl.launch(2)
        ctl.push("import time\\ntime.sleep(1e6)")
        import time
        deadline = time.monotonic() + 30
        while len(ctl.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(*ctl.pids(), flush=True)
        time.sleep(1e6)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait(timeout=10)
        started = time.monotonic()

        def gone() -> bool:
            return not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                for p in pids
            )

        wait_until(gone, seconds=5, what="workers to exit after the controller died")
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_launch_and_scale_and_counters() -> None:
    with pycrew.local_controller(workers=3, seconds_interval=0.05) as ctl:
        assert ctl.scale() is False
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, what="two launched workers")
        for i in range(5):
            ctl.push(tasks.sleep, 0.2, name=f"t{i}")
        assert ctl.saturated()
        assert ctl.size() == 5
        assert ctl.wait(seconds_timeout=30)
        assert ctl.unresolved() == 0
        assert ctl.resolved() == 5
        assert len(ctl.pids()) <= 3
        assert len(ctl.collect()) == 5


def test_walk_returns_futures_in_order(controller: pycrew.Controller) -> None:
    futures = controller.walk(tasks.add, iterate={"x": [1, 2, 3], "y": [1, 1, 1]})
    assert controller.wait(seconds_timeout=30)
    assert controller.size() == 3
    assert [f.record(timeout=30).result for f in futures] == [2, 3, 4]
    assert controller.size() == 0  # each future handed its task over
    assert controller.collect() == []


def test_ps_never_shows_the_secret(controller: pycrew.Controller) -> None:
    controller.push(tasks.add, 1, 1).record(timeout=30)
    secret = controller._env["PYCREW_SECRET"]
    for proc in psutil.process_iter(["cmdline"]):
        assert secret not in " ".join(proc.info["cmdline"] or [])
    assert secret not in repr(controller)


def test_wall_time_retires_workers() -> None:
    with pycrew.local_controller(seconds_wall=0.5, seconds_interval=0.05) as ctl:
        first = ctl.push(tasks.pid).record(timeout=30).result
        wait_until(lambda: ctl.pids() == [], what="the worker to leave at its wall time")
        assert (
            not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        )
        assert ctl.push(tasks.pid).record(timeout=30).result != first
        ctl.collect()
        summary = ctl.summary()
        assert summary is not None
        assert summary.crash == 0


def test_reset_modules_and_garbage_collection() -> None:
    code = "import sys\nimport colorsys\n'colorsys' in sys.modules"
    check = "import sys\n'colorsys' in sys.modules"
    with pycrew.local_controller(reset_modules=True, garbage_collection=True) as ctl:
        assert ctl.push(code).record(timeout=30).result is True
        assert ctl.push(check).record(timeout=30).result is False
    with pycrew.local_controller() as ctl:
        ctl.push(code).record(timeout=30)
        assert ctl.push(check).record(timeout=30).result is True


class _FlakyLauncher(pycrew.launchers.LocalLauncher):
    """Every other launch starts nothing, like a scheduler that loses jobs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def launch_worker(self, spec: pycrew.launchers.WorkerSpec) -> object:
        self.calls += 1
        if self.calls % 2 == 1:
            return None
        return super().launch_worker(spec)


def test_failed_launches_are_replaced() -> None:
    ctl = pycrew.Controller(_FlakyLauncher(), workers=2, seconds_launch=1, seconds_interval=0.05)
    with ctl:
        # 20 x 0.1 s outlasts seconds_launch, so the lost launch is noticed and replaced
        records = ctl.map(tasks.sleep, [0.1] * 20)
        assert [r.result for r in records] == [0.1] * 20
        assert ctl.workers_status()["failed"] >= 1


def test_short_tasks_never_wait_behind_a_long_one() -> None:
    # A busy worker may hold tasks ahead (prefetch); an idle worker takes them back.
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, what="two workers")
        long = ctl.push(tasks.sleep, 30, name="long")
        short = [ctl.push(tasks.sleep, 0.05, name=f"short{i}") for i in range(8)]
        started = time.monotonic()
        for future in short:
            assert future.record(timeout=15).status is pycrew.Status.SUCCESS
        assert time.monotonic() - started < 10
        assert not long.done()
        ctl.cancel(names=["long"])
        assert long.record(timeout=10).status is pycrew.Status.CANCEL


def test_tasks_packed_behind_one_that_turns_long_are_taken_back() -> None:
    # A worker that just returned a result takes the next small tasks ahead
    # of idle workers; if the task it then runs turns long, what waits behind
    # it goes back to an idle worker, even with nothing else happening.
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, what="two workers")
        for _ in range(3):
            for i in range(20):
                assert ctl.push(tasks.add, i, 1).result(timeout=15) == i + 1
            long = ctl.push(tasks.sleep, 30)
            short = ctl.push(tasks.add, 1, 2)
            assert short.result(timeout=15) == 3
            assert not long.done()
            long.cancel()
            assert long.record(timeout=10).status is pycrew.Status.CANCEL


def test_long_tasks_after_a_stream_of_tiny_ones_still_run_side_by_side(
    tmp_path: pathlib.Path,
) -> None:
    # Tiny tasks are kept on a few busy workers; tasks that turn out long must
    # still reach every idle worker (each waits until all 6 run at once).
    with pycrew.local_controller(workers=6, seconds_interval=0.05) as ctl:
        ctl.launch(6)
        wait_until(lambda: len(ctl.pids()) == 6, what="six workers")
        futures = [ctl.push(tasks.add, i, 1) for i in range(2000)]
        assert [f.result(timeout=60) for f in futures] == [i + 1 for i in range(2000)]
        met = [ctl.push(tasks.rendezvous, str(tmp_path), 6, 60) for _ in range(6)]
        assert [f.result(timeout=90) for f in met] == [True] * 6


def test_tasks_held_behind_a_crash_are_rerun_not_crashed() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.launch(1)
        wait_until(lambda: len(ctl.pids()) == 1, what="a worker")
        doomed = ctl.push(tasks.suicide, name="doomed")
        after = [ctl.push(tasks.add, i, 1, name=f"after{i}") for i in range(5)]
        assert doomed.record(timeout=30).status is pycrew.Status.CRASH
        assert [f.record(timeout=30).result for f in after] == [1, 2, 3, 4, 5]
        assert all(f.record().status is pycrew.Status.SUCCESS for f in after)


def test_cancel_a_task_waiting_on_a_busy_worker() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.launch(1)
        wait_until(lambda: len(ctl.pids()) == 1, what="a worker")
        pid = ctl.pids()[0]
        long = ctl.push(tasks.sleep, 1e6, name="long")
        waiting = ctl.push(tasks.add, 1, 1, name="waiting")
        ctl.cancel(names=["waiting"])
        assert waiting.record(timeout=5).status is pycrew.Status.CANCEL
        assert not long.done()
        ctl.cancel(names=["long"])
        assert long.record(timeout=5).status is pycrew.Status.CANCEL
        # the same worker lives on: the waiting task was skipped, the long one interrupted
        record = ctl.push(tasks.pid).record(timeout=30)
        assert record.result == pid
        ctl.collect()
        summary = ctl.summary()
        assert summary is not None
        assert (summary.cancel, summary.crash) == (2, 0)


def test_received_buffers_are_reused_only_when_free() -> None:
    np = pytest.importorskip("numpy")
    first = np.full(300_000, 1.0)  # 2.4 MB: travels out of band, into a reusable buffer
    second = np.full(300_000, 2.0)
    keep = "import __main__\n__main__.kept = a\nfloat(a.sum())"
    check = "import __main__\nfloat(__main__.kept.sum())"
    with pycrew.local_controller(reset_globals=False) as ctl:
        assert ctl.push(keep, data={"a": first}).record(timeout=30).result == 300_000.0
        # the first buffer is still held by the worker's global: it must not be reused
        assert ctl.push("float(a.sum())", data={"a": second}).record(timeout=30).result == 600_000.0
        assert ctl.push(check).record(timeout=30).result == 300_000.0
        for value in (3.0, 4.0, 5.0):
            array = np.full(300_000, value)
            assert ctl.push(np.sum, array).record(timeout=30).result == 300_000 * value


def test_a_result_kept_by_the_user_is_never_overwritten_by_a_later_one() -> None:
    np = pytest.importorskip("numpy")

    def one(value: float) -> Any:
        ctl.push(np.full, 1_000_000, value)
        assert ctl.wait(seconds_timeout=30)
        return ctl.pop().result  # handed over: the controller keeps nothing of it

    with pycrew.local_controller(workers=1) as ctl:
        # 8 MB results: each lands in a large receive buffer the controller reuses
        # once the user lets go of the result
        kept = [one(float(i)) for i in range(3)]
        for i in range(3, 9):
            dropped = one(float(i))
            assert float(dropped.sum()) == 1_000_000 * i
            del dropped
        assert [float(a.sum()) for a in kept] == [0.0, 1_000_000.0, 2_000_000.0]
        pool = ctl._dispatcher.receive_pool  # type: ignore[union-attr]
        assert len(pool.lent) + len(pool.spares) <= 5  # 6 results dropped, their room reused


def test_a_large_result_read_through_its_future_goes_when_the_user_drops_it() -> None:
    np = pytest.importorskip("numpy")
    with pycrew.local_controller(workers=1) as ctl:
        for i in range(3):
            value = ctl.push(np.full, 1_000_000, float(i)).result(timeout=30)
            gone = weakref.ref(value)
            del value
            # nothing of the controller's keeps it (8 MB a task would pile up)
            assert gone() is None


def test_pushes_from_many_threads_keep_names_unique(controller: pycrew.Controller) -> None:
    import concurrent.futures

    def push_all(offset: int) -> int:
        accepted = 0
        for i in range(200):
            try:
                controller.push(tasks.add, i, offset, name=f"shared_{i}")
                accepted += 1
            except ValueError:
                pass
        return accepted

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        accepted = sum(pool.map(push_all, range(4)))
    assert accepted == 200
    assert controller.wait(seconds_timeout=60)
    records = controller.collect()
    assert sorted(r.name for r in records) == sorted(f"shared_{i}" for i in range(200))
    summary = controller.summary()
    assert summary is not None
    assert summary.success == 200


def test_workers_end_when_the_script_forgets_terminate() -> None:
    script = textwrap.dedent("""
        import pycrew
        ctl = pycrew.local_controller(workers=2)
        ctl.launch(2)
        print(ctl.push(abs, -3).record(timeout=30).result)
        print(*ctl.pids(), flush=True)
        ctl.push("import time; time.sleep(60)")  # the exit handler cancels it, quietly
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "CrewWarning" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "3"
    pids = [int(p) for p in lines[1].split()]
    assert pids

    def gone() -> bool:
        return not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in pids
        )

    wait_until(gone, seconds=5, what="workers of a script that exited without terminate()")


class _NeverStarts(pycrew.launchers.LocalLauncher):
    """Starts a process that exits at once instead of a worker."""

    def launch_worker(self, spec: pycrew.launchers.WorkerSpec) -> subprocess.Popen[bytes]:
        broken = dataclasses.replace(spec, command=[sys.executable, "-c", "raise SystemExit(3)"])
        return super().launch_worker(broken)


def test_workers_that_never_connect_become_a_launch_error() -> None:
    with pycrew.controller(_NeverStarts(), workers=1, seconds_interval=0.05) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError, match="exited with code 3 before it connected"):
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        assert ctl.workers_status()["failed"] >= 2


def test_the_command_line_id_wins_over_an_inherited_one() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.start()
        spec = ctl._worker_spec()
        env = {**os.environ, **spec.env, "PYCREW_WORKER": "an-inherited-id"}
        proc = subprocess.Popen(spec.command, env=env, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: ctl.workers_status()["connected"] == 1, 30, "the worker")
            record = ctl.push(tasks.pid).record(timeout=30)
            assert record.worker == spec.worker_id
            assert record.result == proc.pid
        finally:
            ctl.terminate()
            proc.wait(timeout=30)


def test_launchers_are_reachable_from_the_package_root() -> None:
    code = "import pycrew; print(pycrew.launchers.available())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "'local'" in out
    assert "'slurm'" in out


def test_automatic_names_count_one_by_one(controller: pycrew.Controller) -> None:
    futures = [controller.push(tasks.add, i, 1) for i in range(3)]
    futures.append(controller.push("1 + 1"))
    names = [f.name for f in futures]
    prefixes = {name.rsplit("_", 1)[0] for name in names}
    assert len(prefixes) == 1
    assert prefixes.pop().startswith("unnamed_task_")
    assert [name.rsplit("_", 1)[1] for name in names] == ["1", "2", "3", "4"]
    assert [f.result(timeout=30) for f in futures] == [1, 2, 3, 2]


def test_map_and_walk_point_constant_keyword_arguments_to_data(
    controller: pycrew.Controller,
) -> None:
    hint = r"takes no keyword arguments for the function, got \['y'\].*data=\{'y': \.\.\.\}"
    with pytest.raises(pycrew.ArgumentTypeError, match=r"map\(\) " + hint):
        controller.map(tasks.add, [1, 2], y=10)  # type: ignore[call-arg]
    with pytest.raises(pycrew.ArgumentTypeError, match=r"walk\(\) " + hint):
        controller.walk(tasks.add, [1, 2], y=10)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"functools\.partial\(fn, y=\.\.\.\).*iterate="):
        asyncio.run(controller.map_async(tasks.add, [1, 2], y=10))  # type: ignore[call-arg]
    assert controller.size() == 0  # nothing was queued
    # what the message says works
    assert [r.result for r in controller.map(tasks.add, [1, 2], data={"y": 10})] == [11, 12]
    futures = controller.walk(functools.partial(tasks.add, y=10), [1, 2])
    assert [f.result(timeout=30) for f in futures] == [11, 12]
