"""Workers as Grid Engine jobs, on a real one-node Grid Engine from Debian's
packages (``scripts/sge-cluster up``): ``qsub -terse -V`` with the script on
stdin (``#$ -N``, ``-t``, ``-o``, ``-e``, ``-S``), ``qstat -g d -xml``,
``qacct -j`` and ``qdel``. Resource lines (``-pe``, ``h_vmem``, ``h_rt``,
``-q``) are tested by rendering the script: the test queue has no parallel
environment. Skipped where no Grid Engine answers, unless
``PYCREW_REQUIRE_SGE=1`` (CI), where that fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew import sge_controller
from pycrew._engines._sge import SgeLauncher, SgeMonitor, parse_qacct, parse_qstat_xml
from pycrew.launchers import WorkerSpec
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 120
SECRET = "9f2c-never-in-a-script"


def _grid_engine_problem() -> str | None:
    if shutil.which("qconf") is None:
        return "Grid Engine's commands are not installed (run scripts/sge-cluster up as root)"
    try:
        done = subprocess.run(
            ["qstat", "-f"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"qstat failed: {exc}"
    if done.returncode != 0 or "pycrew.q@" not in done.stdout:
        return f"no Grid Engine queue answers: {(done.stderr or done.stdout).strip()}"
    return None


@pytest.fixture(scope="module")
def sge() -> None:
    problem = _grid_engine_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SGE") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SGE=1, but {problem}")
        pytest.skip(problem)


@pytest.fixture(autouse=True)
def no_sge_jobs_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a pycrew job in the queue."""
    yield
    if "sge" not in request.fixturenames:
        return
    monitor = SgeMonitor()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = monitor.jobs()
        if not left:
            return
        time.sleep(0.2)
    monitor.terminate(all=True)
    pytest.fail(f"pycrew jobs left in the queue: {left}")


def _sge(**options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.1)
    return sge_controller(**options)  # type: ignore[arg-type]


def _launcher(ctl: pycrew.Controller) -> SgeLauncher:
    assert isinstance(ctl.launcher, SgeLauncher)
    return ctl.launcher


def test_100_tasks_over_a_two_worker_array_with_tls(sge: None) -> None:
    with _sge(workers=2) as ctl:
        assert ctl.tls.mode == "automatic"
        futures = [ctl.push(tasks.add, i, i) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(100)]
        assert _launcher(ctl).calls["qsub"] == 1  # one array for both workers
    assert SgeMonitor().jobs() == []


def test_scales_up_from_nothing_and_down_by_seconds_idle(sge: None) -> None:
    with _sge(workers=2, seconds_idle=1) as ctl:
        assert ctl.pids() == []
        assert [f.result(timeout=WAIT) for f in [ctl.push(tasks.sleep, 0.5)] * 2] == [0.5] * 2
        wait_until(lambda: ctl.pids() == [], WAIT, "the idle workers to leave")
        wait_until(lambda: SgeMonitor().jobs() == [], WAIT, "their jobs to end")
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # and up again


def test_a_job_killed_by_qdel_mid_task_is_a_crash(sge: None, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with _sge(workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        assert SgeMonitor().terminate(all=True)
        record = future.record(timeout=WAIT)
        assert record.status == "crash"


def test_terminate_leaves_no_job(sge: None, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    ctl = _sge(workers=1)
    with ctl:
        ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        assert len(SgeMonitor().jobs()) == 1
        with pytest.warns(pycrew.CrewWarning, match="cancelled 1 unfinished task"):
            ctl.terminate()
    assert SgeMonitor().jobs() == []


def test_a_python_without_pycrew_is_named_from_the_start_up_file(sge: None, tmp_path: Path) -> None:
    from tests.operations.test_diagnosis import NO_PYCREW_PATH, python_without_pycrew

    python = python_without_pycrew(tmp_path)
    with _sge(workers=1, python=str(python), env=NO_PYCREW_PATH) as ctl:
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


def test_the_script_carries_every_option_and_no_secret() -> None:
    launcher = SgeLauncher(
        queue="short",
        cores=4,
        memory_gigabytes=2,
        walltime_minutes=90,
        script_lines=["module load python"],
        sge_options=["-P project"],
        log_output="out.$JOB_ID.$TASK_ID",
    )
    script = launcher.script(_specs(3), "pycrew.c.tok", array=True)
    lines = script.splitlines()
    for line in (
        "#$ -N pycrew.c.tok",
        "#$ -S /bin/sh",
        "#$ -t 1-3",
        "#$ -o out.$JOB_ID.$TASK_ID",
        "#$ -e /dev/null",
        "#$ -q short",
        "#$ -pe smp 4",
        "#$ -l h_vmem=2048M",
        "#$ -l h_rt=01:30:00",
        "#$ -P project",
        "PYCREW_JOB_END=$(( $(date +%s) + 5390 )); export PYCREW_JOB_END",
        "module load python",
        'case "${SGE_TASK_ID:-1}" in',
        "  3) ids=c-2 ;;",
    ):
        assert line in lines, line
    assert any(line.startswith("exec 2>>") and line.endswith('/"$id.err"') for line in lines)
    assert SECRET not in script


def test_qstat_and_qacct_output_are_read_as_grid_engine_prints_them() -> None:
    out = (
        "<?xml version='1.0'?><job_info><queue_info><job_list state='running'>"
        "<JB_job_number>7</JB_job_number><JB_name>pycrew.c.tok</JB_name>"
        "<JB_owner>me</JB_owner><state>r</state><tasks>2</tasks></job_list></queue_info>"
        "<job_info><job_list state='pending'><JB_job_number>8</JB_job_number>"
        "<JB_name>other</JB_name><JB_owner>me</JB_owner><state>qw</state><tasks></tasks>"
        "</job_list></job_info></job_info>"
    )
    rows = parse_qstat_xml(out)
    assert [(r["id"], r["name"], r["state"]) for r in rows] == [
        ("7.2", "pycrew.c.tok", "r"),
        ("8", "other", "qw"),
    ]
    accounting = (
        "==============\njobnumber    7\ntaskid       2\nexit_status  137 (Killed)\n"
        "==============\njobnumber    9\ntaskid       undefined\nexit_status  3\n"
    )
    assert parse_qacct(accounting) == {"7.2": -9, "9": 3}
    # a record of an earlier job of the same number (Grid Engine set up anew) is not ours
    earlier = (
        "==============\njobname      pycrew.old.tok\njobnumber    9\ntaskid       undefined\n"
        "exit_status  137 (Killed)\n"
    )
    assert parse_qacct(earlier, "pycrew.c.tok") == {}
    ours = "==============\njobname      pycrew.c.tok\n" + accounting.split("\n", 1)[1]
    assert parse_qacct(earlier + ours, "pycrew.c.tok") == {"7.2": -9}
    assert SgeLauncher().parse_job_id("10.1-4:1\n") == "10"
    with pytest.raises(pycrew.LaunchError, match="no job id"):
        SgeLauncher().parse_job_id("Unable to run job")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("queue", ""),
        ("cores", 0),
        ("memory_gigabytes", -1),
        ("walltime_minutes", 1.5),
        ("parallel_environment", ""),
    ],
)
def test_bad_sge_options_are_refused(option: str, value: object) -> None:
    with pytest.raises((pycrew.ArgumentError, pycrew.ArgumentTypeError)):
        SgeLauncher(**{option: value})  # type: ignore[arg-type]
