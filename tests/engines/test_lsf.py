"""Workers as LSF jobs. No LSF can run here: these tests render job scripts and
drive stand-in ``bsub``, ``bjobs`` and ``bkill`` commands (``tests/helpers/lsf_standin``)
that run each job as a local process and answer in LSF's documented formats.
They check pycrew's side of the conversation, not a real LSF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew import lsf_controller
from pycrew._engines._lsf import LsfLauncher, LsfMonitor, parse_bjobs
from pycrew.launchers import WorkerSpec
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

WAIT = 120
STANDIN = str(Path(__file__).resolve().parents[1] / "helpers" / "lsf_standin")
SECRET = "5e1f-never-in-a-script"


@pytest.fixture
def lsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stand-in commands, with a state folder of this test's own."""
    monkeypatch.setenv("LSF_STANDIN_STATE", str(tmp_path / "lsf-state"))
    yield STANDIN
    left = LsfMonitor(commands=STANDIN).jobs()
    if left:
        LsfMonitor(commands=STANDIN).terminate(all=True)
        pytest.fail(f"pycrew jobs left running: {left}")


def _lsf(commands: str, **options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.1)
    options.setdefault("host", "127.0.0.1")
    return lsf_controller(commands=commands, **options)  # type: ignore[arg-type]


def _launcher(ctl: pycrew.Controller) -> LsfLauncher:
    assert isinstance(ctl.launcher, LsfLauncher)
    return ctl.launcher


def test_100_tasks_over_a_two_worker_array_with_tls(lsf: str) -> None:
    with _lsf(lsf, workers=2) as ctl:
        futures = [ctl.push(tasks.add, i, i) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(100)]
        assert _launcher(ctl).calls["bsub"] == 1
        assert len(LsfMonitor(commands=lsf).jobs()) == 2
    assert LsfMonitor(commands=lsf).jobs() == []


def test_scales_down_by_seconds_idle_and_up_again(lsf: str) -> None:
    with _lsf(lsf, workers=1, seconds_idle=0.5) as ctl:
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
        wait_until(lambda: ctl.pids() == [], WAIT, "the idle worker to leave")
        wait_until(lambda: LsfMonitor(commands=lsf).jobs() == [], WAIT, "its job to end")
        assert ctl.push(tasks.add, 2, 2).result(timeout=WAIT) == 4


def test_a_job_killed_by_bkill_mid_task_is_a_crash(lsf: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with _lsf(lsf, workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        assert LsfMonitor(commands=lsf).terminate(all=True)
        assert future.record(timeout=WAIT).status == "crash"


def test_a_python_without_pycrew_is_named_from_the_start_up_file(lsf: str, tmp_path: Path) -> None:
    from tests.operations.test_diagnosis import NO_PYCREW_PATH, python_without_pycrew

    python = python_without_pycrew(tmp_path)
    with _lsf(lsf, workers=1, python=str(python), env=NO_PYCREW_PATH) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError, match="pycrew is not installed") as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        assert _launcher(ctl).calls["bsub"] <= 2
        ctl.cancel(all=True)
    assert "No module named pycrew" in str(caught.value)


def test_the_script_carries_every_option_and_no_secret() -> None:
    launcher = LsfLauncher(
        queue="short",
        cores=2,
        memory_gigabytes=1.5,
        walltime_minutes=75,
        script_lines=["module load python"],
        bsub_options=["-P project"],
        log_output="out.%J.%I",
    )
    specs = [
        WorkerSpec(
            command=["/usr/bin/python3", "-m", "pycrew", "worker", "--id", f"c-{i}"],
            env={"PYCREW_SECRET": SECRET},
            worker_id=f"c-{i}",
            controller="c",
        )
        for i in range(3)
    ]
    script = launcher.script(specs, "pycrew.c.tok", array=True)
    lines = script.splitlines()
    for line in (
        '#BSUB -J "pycrew.c.tok[1-3]"',
        "#BSUB -o out.%J.%I",
        "#BSUB -e /dev/null",
        "#BSUB -q short",
        "#BSUB -n 2",
        "#BSUB -M 1536",
        '#BSUB -R "rusage[mem=1536]"',
        "#BSUB -W 01:15",
        "#BSUB -P project",
        "PYCREW_JOB_END=$(( $(date +%s) + 4490 )); export PYCREW_JOB_END",
        'case "${LSB_JOBINDEX:-1}" in',
        "  3) ids=c-2 ;;",
    ):
        assert line in lines, line
    assert SECRET not in script


def test_bjobs_output_is_read_as_lsf_prints_it() -> None:
    out = "101|0|RUN|-|pycrew.c.tok\n102|3|EXIT|137|pycrew.c.tok[3]\nnoise\n"
    assert parse_bjobs(out) == [
        ("101", "RUN", None, "pycrew.c.tok"),
        ("102[3]", "EXIT", 137, "pycrew.c.tok[3]"),
    ]
    assert LsfLauncher().parse_job_id("Job <42> is submitted to queue <normal>.") == "42"
    with pytest.raises(pycrew.LaunchError, match="no job id"):
        LsfLauncher().parse_job_id("Request aborted by esub")
