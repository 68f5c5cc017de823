"""Per-task resources on the real one-node Grid Engine (``scripts/sge-cluster up``
declares a parallel environment ``smp``): a task that asks for cores runs in a job
of that many slots."""

from __future__ import annotations

from tests.engines.test_sge import _sge, no_sge_jobs_left, sge
from tests.helpers import shape_tasks

__all__ = ["no_sge_jobs_left", "sge"]  # fixtures, used by name

WAIT = 120


def test_a_task_that_asks_for_cores_gets_a_job_of_that_many_slots(sge: None) -> None:
    with _sge(workers=2) as ctl:
        wide = ctl.push(shape_tasks.grid_engine_slots, 0, resources={"cpus": 2})
        plain = ctl.push(shape_tasks.grid_engine_slots, 0)
        wide_seen, plain_seen = wide.result(timeout=WAIT), plain.result(timeout=WAIT)
    assert wide_seen["PE"] == "smp"
    assert wide_seen["NSLOTS"] == "2"
    assert wide_seen["OMP_NUM_THREADS"] == "2"
    assert plain_seen["NSLOTS"] == "1"
    assert wide_seen["JOB_ID"] != plain_seen["JOB_ID"]
