"""Load: many small tasks through churning workers, every result exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pycrew
from pycrew._controller._futures import TaskFuture
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    import pytest


def test_many_tasks_with_idle_churn() -> None:
    # 8 workers that leave after 0.2 s without work, fed in bursts
    with pycrew.local_controller(workers=8, seconds_idle=0.2, seconds_interval=0.05) as ctl:
        total = 0
        for burst in range(4):
            n = 2500
            for i in range(n):
                ctl.push(tasks.add, i, burst, name=f"b{burst}_{i}")
            assert ctl.wait(seconds_timeout=120)
            records = ctl.collect()
            assert len(records) == n
            assert sorted(r.result for r in records) == [i + burst for i in range(n)]
            total += n
            # every worker idles out before the next burst, which must relaunch them
            wait_until(lambda: ctl.pids() == [], seconds=20, what="workers to idle out")
        summary = ctl.summary()
        assert summary is not None
        assert (summary.tasks, summary.success) == (total, total)
        assert ctl.workers_status()["cumulative"] >= 4 * 2


def test_transient_workers_with_tls() -> None:
    with pycrew.local_controller(
        workers=4, tasks_max=50, tls="automatic", seconds_interval=0.05
    ) as ctl:
        for rnd in range(2):
            records = ctl.map(tasks.add, iterate={"x": list(range(1000)), "y": [rnd] * 1000})
            assert [r.result for r in records] == [x + rnd for x in range(1000)]
        assert ctl.workers_status()["cumulative"] >= 2000 // 50
        summary = ctl.summary()
        assert summary is not None
        assert (summary.success, summary.crash) == (2000, 0)


def test_a_large_map_looks_over_its_futures_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """map()'s wait looks at each pending future a bounded number of times per task,
    not once per resolution (which made a map of n tasks cost n² calls)."""
    calls = [0]
    done = TaskFuture.done

    def counted(self: TaskFuture[object]) -> bool:
        calls[0] += 1
        return done(self)

    n = 8000
    with pycrew.local_controller(workers=2) as ctl:
        assert ctl.push(tasks.add, 1, 1).result(timeout=60) == 2
        monkeypatch.setattr(TaskFuture, "done", counted)
        records = ctl.map(tasks.add, iterate={"x": list(range(n)), "y": [1] * n})
        monkeypatch.undo()
    assert [r.result for r in records] == [x + 1 for x in range(n)]
    # about 15 n here; looking at every resolution made it about 300 n
    assert calls[0] <= 60 * n, calls[0]
