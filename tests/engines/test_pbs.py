"""Workers as PBS jobs, through real qsub, qstat and qdel: SLURM's Torque-compatible
commands (``scripts/pbs-commands``) over the one-node SLURM cluster.

What those commands exercise for real: ``qsub`` of a script file with ``-o``
and ``-e``, the ``#PBS -N``, ``-t`` (array), ``-l walltime`` and ``-l mem``
lines, ``qstat -f`` (name, state, owner), ``qdel``. What they cannot: array
elements in ``qstat`` (the whole array shows), ``exit_status``, PBS Pro's
``-J`` and ``select``, ``-l nodes=1:ppn``: those are tested by rendering the
script only. Skipped where the commands or the cluster are missing, unless
``PYCREW_REQUIRE_PBS=1`` (CI), where that fails instead.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew import pbs_controller
from pycrew._engines._pbs import PbsLauncher, PbsMonitor, job_key, parse_qstat
from pycrew.launchers import WorkerSpec
from tests.engines.test_slurm import _cluster_problem
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 120
SECRET = "9f2c-never-in-a-script"
COMMANDS = os.environ.get("PYCREW_PBS_COMMANDS", "/opt/pycrew-torque/usr/bin")


@pytest.fixture(scope="module")
def pbs() -> str:
    problem = None
    if not os.access(os.path.join(COMMANDS, "qsub"), os.X_OK):
        problem = f"no qsub in {COMMANDS} (run scripts/pbs-commands as root)"
    problem = problem or _cluster_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_PBS") == "1":
            pytest.fail(f"PYCREW_REQUIRE_PBS=1, but {problem}")
        pytest.skip(problem)
    return COMMANDS


@pytest.fixture(autouse=True)
def no_pbs_jobs_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a pycrew job in the queue."""
    yield
    if "pbs" not in request.fixturenames:
        return
    monitor = PbsMonitor(commands=COMMANDS)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = monitor.jobs()
        if not left:
            return
        time.sleep(0.2)
    monitor.terminate(all=True)
    pytest.fail(f"pycrew jobs left in the queue: {left}")


def _pbs(commands: str, **options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.1)
    return pbs_controller(commands=commands, **options)  # type: ignore[arg-type]


def _launcher(ctl: pycrew.Controller) -> PbsLauncher:
    assert isinstance(ctl.launcher, PbsLauncher)
    return ctl.launcher


def test_100_tasks_over_a_two_worker_array_with_tls(pbs: str) -> None:
    with _pbs(pbs, workers=2) as ctl:
        assert ctl.tls.mode == "automatic"
        futures = [ctl.push(tasks.add, i, i) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(100)]
        assert _launcher(ctl).calls["qsub"] == 1  # one array for both workers
    assert PbsMonitor(commands=pbs).jobs() == []


def test_scales_up_from_nothing_and_down_by_seconds_idle(pbs: str) -> None:
    with _pbs(pbs, workers=2, seconds_idle=1) as ctl:
        assert ctl.pids() == []
        assert [f.result(timeout=WAIT) for f in [ctl.push(tasks.sleep, 0.5)] * 2] == [0.5] * 2
        wait_until(lambda: ctl.pids() == [], WAIT, "the idle workers to leave")
        wait_until(lambda: PbsMonitor(commands=pbs).jobs() == [], WAIT, "their jobs to end")
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # and up again


def test_a_job_killed_by_qdel_mid_task_is_a_crash(pbs: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with _pbs(pbs, workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        assert PbsMonitor(commands=pbs).terminate(all=True)
        record = future.record(timeout=WAIT)
        assert record.status == "crash"


def test_terminate_leaves_no_job(pbs: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    ctl = _pbs(pbs, workers=1)
    with ctl:
        ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        assert len(PbsMonitor(commands=pbs).jobs()) == 1
        with pytest.warns(pycrew.CrewWarning, match="cancelled 1 unfinished task"):
            ctl.terminate()
    assert PbsMonitor(commands=pbs).jobs() == []


def test_a_python_without_pycrew_is_named_from_the_start_up_file(pbs: str, tmp_path: Path) -> None:
    from tests.operations.test_diagnosis import NO_PYCREW_PATH, python_without_pycrew

    python = python_without_pycrew(tmp_path)
    with _pbs(pbs, workers=1, python=str(python), env=NO_PYCREW_PATH) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        assert _launcher(ctl).calls["qsub"] <= 2
        ctl.cancel(all=True)
    message = str(caught.value)
    assert re.match(rf"worker {ctl.name}-\d \(job \d+\) exited", message), message
    assert "pycrew is not installed for the Python the workers run" in message
    assert "No module named pycrew" in message


def _specs(n: int) -> list[WorkerSpec]:
    command = ["/usr/bin/python3", "-m", "pycrew", "worker", "--address", "h:1", "--id"]
    return [
        WorkerSpec(
            command=[*command, f"c-{i}"],
            env={"PYCREW_SECRET": SECRET},
            worker_id=f"c-{i}",
            controller="c",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("flavor", "array", "cores"),
    [("torque", "-t", "nodes=1:ppn=4"), ("pro", "-J", "select=1:ncpus=4")],
)
def test_the_script_carries_every_option_and_no_secret(flavor: str, array: str, cores: str) -> None:
    launcher = PbsLauncher(
        queue="short",
        cores=4,
        memory_gigabytes=2,
        walltime_minutes=90,
        script_lines=["module load python"],
        pbs_options=["-A project"],
        flavor=flavor,  # type: ignore[arg-type]
    )
    script = launcher.script(_specs(3), "pycrew.c.tok", array=True)
    lines = script.splitlines()
    for line in (
        "#PBS -N pycrew.c.tok",
        f"#PBS {array} 0-2",
        "#PBS -q short",
        "#PBS -l walltime=01:30:00",
        "#PBS -l mem=2048mb",
        f"#PBS -l {cores}",
        "#PBS -A project",
        "PYCREW_JOB_END=$(( $(date +%s) + 5390 )); export PYCREW_JOB_END",
        "module load python",
        'case "${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}}" in',
        "  2) ids=c-2 ;;",
    ):
        assert line in lines, line
    assert lines[-1].startswith("exec /usr/bin/python3 -m pycrew worker")
    assert any(line.startswith("exec 2>>") and line.endswith('/"$id.err"') for line in lines)
    assert "PYCREW_SECRET" not in script
    assert SECRET not in script


def test_qstat_output_and_job_ids_are_read_as_pbs_prints_them() -> None:
    out = (
        "Job Id: 123[4].server.example\n"
        "    Job_Name = pycrew.c.tok\n"
        "    job_state = R\n"
        "    exit_status = 271\n"
        "Job Id:\t124\n"
        "\tJob_Name = other\n"
        "\tjob_state = C\n"
    )
    jobs = parse_qstat(out)
    assert [j["Job Id"] for j in jobs] == ["123[4]", "124"]
    assert jobs[0]["Job_Name"] == "pycrew.c.tok"
    assert jobs[1]["job_state"] == "C"
    assert job_key("125[].server") == "125"
    assert PbsLauncher().parse_job_id("126[].server\n") == "126"
    with pytest.raises(pycrew.LaunchError, match="no job id"):
        PbsLauncher().parse_job_id("qsub: error")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("queue", ""),
        ("cores", 0),
        ("memory_gigabytes", -1),
        ("walltime_minutes", 1.5),
        ("flavor", "sge"),
    ],
)
def test_bad_pbs_options_are_refused(option: str, value: object) -> None:
    with pytest.raises((pycrew.ArgumentError, pycrew.ArgumentTypeError)):
        PbsLauncher(**{option: value})  # type: ignore[arg-type]
