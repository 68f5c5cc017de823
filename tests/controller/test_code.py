"""A script's functions are pickled once per controller and sent once per worker,
and what a task computes is what it would be with a fresh pickle every push."""

from __future__ import annotations

import textwrap
from typing import Any

import cloudpickle
import pytest

import pycrew

WAIT = 60


def script(source: str) -> dict[str, Any]:
    """The globals of a script that ran ``source``: its functions travel by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<script>", "exec"), namespace)
    return namespace


SOURCE = """
    import math
    import os

    scale = 2
    table = [1, 2, 3]

    def helper(x):
        return x * scale

    def work(x):
        return helper(x) + math.floor(0.5)

    def where(x):
        return os.getpid(), helper(x)

    def look(i):
        return table[i]

    def count():
        global counter
        counter = globals().get("counter", 0) + 1
        return counter
"""


def run(ctl: pycrew.Controller, fn: Any, *args: Any) -> Any:
    return ctl.push(fn, *args).result(timeout=WAIT)


def test_a_script_function_travels_once_not_with_every_task() -> None:
    ns = script(SOURCE)
    by_value = len(cloudpickle.dumps(ns["work"]))
    with pycrew.local_controller(workers=1) as ctl:
        assert run(ctl, ns["work"], 1) == 2
        sent = ctl.workers_status()["bytes_sent"]
        futures = [ctl.push(ns["work"], i) for i in range(40)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(40)]
        moved = ctl.workers_status()["bytes_sent"] - sent
        # the code once, then small frames: not 40 copies of the function
        assert moved < 40 * by_value / 2


def test_a_rebound_global_or_a_redefined_helper_is_what_the_next_task_uses() -> None:
    ns = script(SOURCE)
    with pycrew.local_controller(workers=1) as ctl:
        assert [run(ctl, ns["work"], 3) for _ in range(3)] == [6, 6, 6]
        ns["scale"] = 5
        assert run(ctl, ns["work"], 3) == 15
        exec("def helper(x):\n    return -x\n", ns)
        assert [run(ctl, ns["work"], 3) for _ in range(2)] == [-3, -3]
        exec("def work(x):\n    return 100 + x\n", ns)
        assert run(ctl, ns["work"], 3) == 103
        exec("def work(x):\n    return math.floor(x)\n", ns)
        assert [run(ctl, ns["work"], 1.5) for _ in range(2)] == [1, 1]
        ns["math"] = None  # a module rebound: the task fails, as it would pickled afresh
        with pytest.raises(AttributeError):
            run(ctl, ns["work"], 1.5)


def test_an_object_changed_in_place_is_seen_by_the_next_task() -> None:
    ns = script(SOURCE)
    with pycrew.local_controller(workers=1) as ctl:
        assert [run(ctl, ns["look"], 1) for _ in range(3)] == [2, 2, 2]
        ns["table"][1] = 99
        assert run(ctl, ns["look"], 1) == 99


def test_a_closure_and_a_default_are_checked_like_globals() -> None:
    offset = 1

    def add(x: int, extra: int = 0) -> int:
        return x + offset + extra

    with pycrew.local_controller(workers=1) as ctl:
        assert [run(ctl, add, 1) for _ in range(3)] == [2, 2, 2]
        offset = 10
        assert run(ctl, add, 1) == 11
        add.__defaults__ = (100,)
        assert run(ctl, add, 1) == 111


def test_each_task_still_gets_fresh_globals() -> None:
    ns = script(SOURCE)
    with pycrew.local_controller(workers=1) as ctl:
        assert [run(ctl, ns["count"]) for _ in range(4)] == [1, 1, 1, 1]
    with pycrew.local_controller(workers=1, reset_globals=False) as ctl:
        assert [run(ctl, ns["count"]) for _ in range(4)] == [1, 2, 3, 4]


def test_every_new_worker_receives_the_function_it_needs() -> None:
    ns = script(SOURCE)
    # one task per worker: every task lands on a worker that never saw the code
    with pycrew.local_controller(workers=1, tasks_max=1) as ctl:
        runs = [run(ctl, ns["where"], i) for i in range(4)]
        assert [value for _, value in runs] == [0, 2, 4, 6]
        assert len({pid for pid, _ in runs}) == 4


def test_functions_in_arguments_data_and_globals_and_after_a_restart() -> None:
    ns = script(SOURCE)
    with pycrew.local_controller(workers=1) as ctl:
        for _ in range(3):
            assert run(ctl, lambda f, x: f(x), ns["work"], 2) == 4
            assert ctl.push(lambda x, f: f(x), 3, data={"f": ns["work"]}).result(WAIT) == 6
            assert ctl.push("work(4)", globals={"work": ns["work"]}).result(WAIT) == 8
        ctl.terminate()
        ctl.start()
        assert [run(ctl, ns["work"], 5) for _ in range(2)] == [10, 10]


def test_closures_made_for_every_push_all_run_right() -> None:
    def make(k: int) -> Any:
        return lambda x: x * k

    with pycrew.local_controller(workers=2) as ctl:
        futures = [ctl.push(make(k), 2) for k in range(400) for _ in range(2)]
        expected = [2 * k for k in range(400) for _ in range(2)]
        assert [f.result(timeout=WAIT) for f in futures] == expected


def test_the_sequential_controller_runs_a_cached_function() -> None:
    ns = script(SOURCE)
    with pycrew.sequential_controller() as ctl:
        assert [run(ctl, ns["work"], 2) for _ in range(3)] == [4, 4, 4]
        ns["scale"] = 3
        assert run(ctl, ns["work"], 2) == 6
