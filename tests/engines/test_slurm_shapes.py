"""Per-task resources on the real one-node SLURM cluster (``scripts/slurm-cluster up``
declares two dummy GPUs and a count-only ``tape`` resource).

Tasks of two shapes launch jobs that ask for each shape; SLURM's own view of
each job (its environment) shows what it was given.
"""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING

import pycrew
from tests.engines.test_slurm import _launcher, _slurm, cluster, no_jobs_left
from tests.helpers import shape_tasks, tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["cluster", "no_jobs_left"]  # fixtures, used by name

WAIT = 120


def test_two_shapes_are_two_kinds_of_job_each_given_its_shape(cluster: None) -> None:
    with _slurm(workers=4) as ctl:
        gpu = ctl.walk(
            shape_tasks.slurm_allocation, range(2), resources={"gpus": 1, "cpus": 2, "tape": 1}
        )
        small = ctl.walk(shape_tasks.slurm_allocation, range(2), resources={"memory": "100 MB"})
        gpu_seen = [f.result(timeout=WAIT) for f in gpu]
        small_seen = [f.result(timeout=WAIT) for f in small]
        assert _launcher(ctl).calls["sbatch"] >= 2  # a submission per shape at least
    for seen in gpu_seen:
        assert seen["SLURM_CPUS_PER_TASK"] == "2"
        assert seen["OMP_NUM_THREADS"] == "2"
        assert seen["SLURM_GPUS_ON_NODE"] == "1"
        # SLURM names the GPU where its device files are devices (scripts/slurm-cluster)
        assert seen["CUDA_VISIBLE_DEVICES"] == seen["SLURM_JOB_GPUS"]
    for seen in small_seen:
        assert seen["SLURM_MEM_PER_NODE"] == "96"  # 100 MB, rounded up to whole MiB
        assert seen["SLURM_GPUS_ON_NODE"] is None
    jobs = {s["SLURM_JOB_ID"] for s in gpu_seen} | {s["SLURM_JOB_ID"] for s in small_seen}
    assert not {s["SLURM_JOB_ID"] for s in gpu_seen} & {s["SLURM_JOB_ID"] for s in small_seen}
    assert len(jobs) >= 2


def test_a_shape_the_cluster_cannot_give_is_a_launch_error_with_sbatchs_words(
    cluster: None,
) -> None:
    errors: list[pycrew.LaunchError] = []

    def refused() -> bool:
        try:
            ctl.scale()
        except pycrew.LaunchError as exc:
            errors.append(exc)
            return True
        return False

    with _slurm(workers=1) as ctl:
        ctl.push(shape_tasks.environment, resources={"gpus": 5})
        wait_until(refused, WAIT, "sbatch to refuse five GPUs")
        ctl.cancel(all=True)
    assert "sbatch" in str(errors[0])
    assert re.search(r"(?i)gres|generic resource|node configuration", str(errors[0]))


def test_a_task_whose_job_slurm_ends_is_a_crash_that_says_why(
    cluster: None, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    with _slurm(workers=1) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 300)
        wait_until(marker.exists, WAIT, "the task to start")
        (job,) = pycrew.SlurmMonitor().jobs()
        # the shortest time limit there is: SLURM ends the job at its next check
        subprocess.run(
            ["scontrol", "update", f"JobId={job.id}", "TimeLimit=0:0:1"], check=True, timeout=30
        )
        scaler = ctl._scaler
        assert scaler is not None
        wait_until(lambda: scaler.exit_reasons, WAIT, "SLURM to say why the job ended")
        record = future.record(timeout=WAIT)
    assert record.status is pycrew.Status.CRASH
    # SLURM's words: its job state, or its reason when the state has moved on
    assert re.search(r"the scheduler says: .*(TIMEOUT|TimeLimit)", record.error or "")
