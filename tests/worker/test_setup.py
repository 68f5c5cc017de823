"""Setting workers up: an initializer, everywhere(), and state that lasts between tasks."""

from __future__ import annotations

import textwrap
import threading
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.common import wait_until
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60


def run(code: str, tmp_path: Path) -> str:
    """Run a user's script (its functions live in __main__); its stdout."""
    done = run_python(textwrap.dedent(code), script=tmp_path / "script.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_initializer_runs_once_per_worker_and_its_globals_reach_every_task(
    tmp_path: Path,
) -> None:
    out = run(
        f"""
        import os
        import pycrew

        def load(scale):
            global model
            model = {{"scale": scale}}
            with open({str(tmp_path / "runs")!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")

        def predict(x):
            return model["scale"] * x, os.getpid()

        with pycrew.local_controller(workers=2, initializer=load, initargs=(3,)) as ctl:
            results = [f.result(timeout=120) for f in [ctl.push(predict, i) for i in range(20)]]
            print("values", [v for v, _ in results])
            print("pids", len({{p for _, p in results}}))
        """,
        tmp_path,
    )
    assert f"values {[3 * i for i in range(20)]}" in out
    runs = (tmp_path / "runs").read_text().split()
    # once in each worker that ran tasks, never twice in one
    assert len(runs) == len(set(runs)) >= 1


def test_a_module_initializer_sets_state_that_reset_globals_leaves_alone() -> None:
    with pycrew.local_controller(
        workers=1, initializer=tasks.set_global, initargs=("ready", 41)
    ) as ctl:
        for _ in range(3):
            # reset_globals=True removes what a task adds, not what setup made
            assert ctl.push(tasks.get_global, "ready").result(timeout=WAIT)[1] == 41
            assert ctl.push(tasks.set_global, "scratch", 1).result(timeout=WAIT)
            assert ctl.push(tasks.get_global, "scratch").result(timeout=WAIT)[1] is None


def test_everywhere_reaches_workers_connected_now_and_those_launched_later(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    with pycrew.local_controller(workers=2, seconds_idle=120) as ctl:
        ctl.launch(1)
        wait_until(lambda: len(ctl.pids()) == 1, WAIT, "the first worker")
        first = ctl.pids()[0]
        ctl.everywhere(tasks.set_global, "flag", 7)
        ctl.everywhere(tasks.append_pid, str(marks))
        assert ctl.push(tasks.get_global, "flag").result(timeout=WAIT) == (first, 7)
        ctl.launch(1)
        wait_until(lambda: len(ctl.pids()) == 2, WAIT, "the second worker")
        second = next(p for p in ctl.pids() if p != first)
        # the later worker ran both steps, in order, before any task
        wait_until(lambda: marks.exists() and len(marks.read_text().split()) == 2, WAIT)
        assert sorted(map(int, marks.read_text().split())) == sorted([first, second])
        seen: dict[int, object] = {}
        for _ in range(200):
            futures = [ctl.push(tasks.get_global, "flag") for _ in range(8)]
            seen.update(f.result(timeout=WAIT) for f in futures)
            if len(seen) == 2:
                break
        assert seen == {first: 7, second: 7}


CACHE = """
import os
import pycrew

_cache = {{}}
LIMIT = 100

def cached(x):
    _cache[x] = x * x
    return os.getpid(), len(_cache), LIMIT

with pycrew.local_controller(workers=1, reset_globals={reset}) as ctl:
    for i in range(4):
        print("seen", ctl.push(cached, i).result(timeout=120)[1:])
"""


def test_a_main_cache_survives_between_tasks_with_reset_globals_false(tmp_path: Path) -> None:
    out = run(CACHE.format(reset=False), tmp_path)
    assert [line for line in out.splitlines() if line.startswith("seen")] == [
        f"seen ({n}, 100)" for n in (1, 2, 3, 4)
    ]


def test_each_task_brings_fresh_globals_with_reset_globals_true(tmp_path: Path) -> None:
    out = run(CACHE.format(reset=True), tmp_path)
    assert [line for line in out.splitlines() if line.startswith("seen")] == ["seen (1, 100)"] * 4


def test_code_always_comes_fresh_from_the_controller(tmp_path: Path) -> None:
    out = run(
        """
        import pycrew

        def helper():
            return "first"

        def task():
            return helper()

        with pycrew.local_controller(workers=1, reset_globals=False) as ctl:
            print("got", ctl.push(task).result(timeout=120))

            def helper():  # edited, as in a notebook
                return "second"

            print("got", ctl.push(task).result(timeout=120))
        """,
        tmp_path,
    )
    assert "got first" in out
    assert "got second" in out


def test_a_failing_initializer_stops_the_controller_with_a_launch_error() -> None:
    with pycrew.local_controller(
        workers=2, initializer=tasks.fail, initargs=("no license server",)
    ) as ctl:
        futures = [ctl.push(tasks.add, i, 1) for i in range(6)]
        for future in futures:
            with pytest.raises(pycrew.TaskCancelledError, match="no license server"):
                future.result(timeout=WAIT)
        with pytest.raises(pycrew.LaunchError, match="ValueError: no license server") as info:
            ctl.push(tasks.add, 1, 1)
        assert isinstance(info.value.__cause__, pycrew.RemoteTraceback)
        assert "def fail" in str(info.value.__cause__) or "fail" in str(info.value.__cause__)
        # no crash loop: no worker beyond the first round was launched
        assert ctl.workers_status()["cumulative"] <= 2
        assert ctl.summary() is not None


def test_a_failing_everywhere_step_stops_the_controller() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
        ctl.everywhere(tasks.fail, "bad step")
        queued = ctl.push(tasks.sleep, 0)
        with pytest.raises(pycrew.TaskCancelledError, match="bad step"):
            queued.result(timeout=WAIT)
        with pytest.raises(pycrew.LaunchError, match="bad step"):
            ctl.everywhere(tasks.add, 1, 2)


def test_setup_arguments_are_checked_where_they_are_given() -> None:
    with pytest.raises(pycrew.ArgumentTypeError, match="initializer must be callable"):
        pycrew.local_controller(initializer=42)  # type: ignore[arg-type]
    with pytest.raises(pycrew.ArgumentTypeError, match="tuple"):
        pycrew.local_controller(initializer=tasks.add, initargs=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(pycrew.ArgumentTypeError, match="cannot be pickled"):
        pycrew.local_controller(initializer=tasks.add, initargs=(threading.Lock(), 2))
    with pycrew.local_controller(workers=1) as ctl:
        with pytest.raises(pycrew.ArgumentTypeError, match="callable"):
            ctl.everywhere("print(1)")  # type: ignore[arg-type]
        assert ctl.pids() == []  # nothing was launched for a refused step


def test_a_sequential_controller_runs_setup_in_place() -> None:
    ctl = pycrew.sequential_controller(initializer=tasks.set_global, initargs=("ready", 5))
    with ctl:
        assert ctl.push(tasks.get_global, "ready").result()[1] == 5
        ctl.everywhere(tasks.set_global, "later", 6)
        assert ctl.push(tasks.get_global, "later").result()[1] == 6
        with pytest.raises(pycrew.LaunchError, match="broken step"):
            ctl.everywhere(tasks.fail, "broken step")
        with pytest.raises(pycrew.LaunchError):
            ctl.push(tasks.add, 1, 2)
    # the caller's own __main__ is untouched
    import __main__

    assert not hasattr(__main__, "ready")
