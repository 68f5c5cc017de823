"""Shared objects: sent to each worker once, used by many tasks, dropped on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.engines.test_slurm import cluster, no_jobs_left  # noqa: F401 (the cluster's fixtures)
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

np = pytest.importorskip("numpy")
WAIT = 120
MB = 1 << 20


def test_each_worker_receives_a_shared_array_once_for_all_its_tasks() -> None:
    # the case, scaled down: 8 tasks on 2 workers using one array move
    # the array once per worker, not once per task
    size = 64 * MB
    array = np.ones(size // 8)
    with pycrew.local_controller(workers=2) as ctl:
        handle = ctl.share(array, name="big")
        assert handle.nbytes >= size
        sent = ctl.workers_status()["bytes_sent"]
        facts = [f.result(timeout=WAIT) for f in [ctl.push(tasks.shared_facts, handle)] * 8]
        assert all(total == array.size for _, _, total in facts)
        by_worker: dict[int, set[int]] = {}
        for pid, ident, _ in facts:
            by_worker.setdefault(pid, set()).add(ident)
        # one object per worker, the same one for every task there
        assert all(len(idents) == 1 for idents in by_worker.values())
        moved = ctl.workers_status()["bytes_sent"] - sent
        # once per worker that ran one of the tasks (a copy per task: 8 times)
        assert len(by_worker) * size <= moved < (len(by_worker) + 0.5) * size
        # in data=, the same array travels with every task
        sent = ctl.workers_status()["bytes_sent"]
        for future in [ctl.push(tasks.shared_facts, data={"obj": array}) for _ in range(4)]:
            future.result(timeout=WAIT)
        assert ctl.workers_status()["bytes_sent"] - sent >= 4 * size


def test_a_handle_works_at_any_depth_in_arguments_data_and_globals() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        handle = ctl.share({"offset": 10})
        assert ctl.push(lambda d: d["offset"] + 1, handle).result(timeout=WAIT) == 11
        nested = ctl.push(lambda xs: xs[0][1]["offset"], [(0, handle)]).result(timeout=WAIT)
        assert nested == 10
        assert ctl.push(lambda cfg: cfg["offset"], data={"cfg": handle}).result(timeout=WAIT) == 10
        code = ctl.push("cfg['offset'] * 2", globals={"cfg": handle}).result(timeout=WAIT)
        assert code == 20


def test_a_dropped_object_leaves_every_worker_and_cannot_be_used_again() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        handle = ctl.share(np.arange(10))
        assert ctl.push(tasks.shared_facts, handle).result(timeout=WAIT)[2] == 45
        assert ctl.push(tasks.shared_keys).result(timeout=WAIT) == [handle.key]
        assert handle.live()
        handle.drop()
        assert not handle.live()
        assert "dropped" in repr(handle)
        with pytest.raises(pycrew.ArgumentError, match="dropped"):
            ctl.push(tasks.shared_facts, handle)
        wait_until(lambda: ctl.push(tasks.shared_keys).result(timeout=WAIT) == [], WAIT, "the drop")
        handle.drop()  # twice is harmless


def test_handles_belong_to_one_controller_start() -> None:
    with pycrew.local_controller(workers=1) as one, pycrew.local_controller(workers=1) as two:
        handle = one.share(1)
        with pytest.raises(pycrew.ArgumentError, match="another controller"):
            two.push(tasks.add, handle, 1)
    ctl = pycrew.local_controller(workers=1)
    with ctl:
        old = ctl.share(2)
    with ctl:  # started again: what was shared before is gone
        assert not old.live()
        with pytest.raises(pycrew.ArgumentError, match="dropped"):
            ctl.push(tasks.add, old, 1)


def test_a_worker_that_replaces_a_crashed_one_gets_the_shared_object_too(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=1, retry_crashes=True) as ctl:
        handle = ctl.share(np.arange(4))
        record = ctl.push(tasks.crash_once_then, str(tmp_path / "crashed"), handle).record(
            timeout=WAIT
        )
        assert record.status == "success", record.error
        assert record.attempts == 2
        assert list(record.result) == [0, 1, 2, 3]


def test_share_refuses_what_cannot_travel() -> None:
    import threading

    with pycrew.local_controller(workers=1, bytes_max=1 << 20) as ctl:
        with pytest.raises(pycrew.ArgumentTypeError, match="cannot be pickled"):
            ctl.share(threading.Lock())
        with pytest.raises(pycrew.ArgumentError, match="bytes_max"):
            ctl.share(np.zeros(1 << 18))
        with pytest.raises(pycrew.ArgumentError, match="name"):
            ctl.share(1, name="")


def test_a_sequential_controller_shares_in_place() -> None:
    with pycrew.sequential_controller() as ctl:
        array = np.arange(5)
        handle = ctl.share(array)
        assert ctl.push(tasks.shared_facts, handle).result()[2] == 10
        handle.drop()
        with pytest.raises(pycrew.ArgumentError, match="dropped"):
            ctl.push(tasks.shared_facts, handle)


@pytest.mark.usefixtures("cluster")
def test_setup_shared_objects_and_serializers_on_slurm_workers() -> None:
    points = {tasks.Point: (tasks.point_dumps, tasks.point_loads)}
    with pycrew.slurm_controller(
        workers=2,
        seconds_interval=0.1,
        initializer=tasks.set_global,
        initargs=("ready", 9),
        serializers=points,
    ) as ctl:
        handle = ctl.share(np.arange(100))
        facts = [f.result(timeout=WAIT) for f in [ctl.push(tasks.shared_facts, handle)] * 6]
        assert {total for _, _, total in facts} == {4950}
        assert ctl.push(tasks.get_global, "ready").result(timeout=WAIT)[1] == 9
        ctl.everywhere(tasks.set_global, "later", 10)
        assert ctl.push(tasks.get_global, "later").result(timeout=WAIT)[1] == 10
        seen, _ = ctl.push(tasks.move, {"a": [tasks.Point(0, 0)]}, 1).result(timeout=WAIT)
        assert seen == ["serializer"]
