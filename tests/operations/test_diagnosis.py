"""Why a worker never came: the controller reads what a failed worker wrote, and says so.

Real workers on interpreters that cannot be workers: a venv without pycrew,
and a wrapper that announces another pycrew version. The SLURM side of it is
in tests/engines/test_slurm.py; the cause classifier is tested here as pure logic.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pycrew
import pycrew.launchers
from pycrew._operations import _diagnose
from pycrew._version import __version__
from pycrew._wire import _frames
from tests.helpers import tasks
from tests.helpers.common import wait_until

WAIT = 60
#: the workers' import path without this checkout's pycrew, whatever the tests run with
NO_PYCREW_PATH = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def python_without_pycrew(tmp_path: Path) -> Path:
    """A real interpreter that cannot import pycrew: a venv of its own, without pip."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=WAIT
    )
    return venv / "bin" / "python"


def python_of_another_version(tmp_path: Path, version: str) -> Path:
    """This interpreter, running a worker that announces pycrew ``version``."""
    wrapper = tmp_path / "python-other-version"
    code = (
        "import sys, runpy\n"
        "import pycrew._version, pycrew._wire._frames\n"
        f"pycrew._version.__version__ = pycrew._wire._frames.__version__ = {version!r}\n"
        "sys.argv = ['pycrew', *sys.argv[1:]]\n"
        "runpy.run_module('pycrew', run_name='__main__')\n"
    )
    # the worker's command is "PYTHON -m pycrew worker ...": drop "-m pycrew"
    wrapper.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" -c "{code}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def launch_error(ctl: pycrew.Controller) -> pycrew.LaunchError:
    """The LaunchError the user's next wait gets."""
    with pytest.raises(pycrew.LaunchError) as caught:
        wait_until(lambda: ctl.wait(seconds_timeout=0.1), WAIT, "the launch error")
    return caught.value


def launched(ctl: pycrew.Controller) -> int:
    status = ctl.workers_status()
    return status["connected"] + status["launching"] + status["failed"]


# ------------------------------------------------------------ local workers
def test_a_python_without_pycrew_is_named_at_the_first_failed_launch(tmp_path: Path) -> None:
    python = python_without_pycrew(tmp_path)
    with pycrew.local_controller(
        workers=2, python=python, seconds_interval=0.05, env=NO_PYCREW_PATH
    ) as ctl:
        ctl.push(tasks.add, 1, 2)
        wait_until(lambda: ctl.workers_status()["failed"] >= 1, WAIT, "the failed launch")
        # until the user has heard why, launching again would only fail again
        time.sleep(1)
        assert launched(ctl) <= 2
        error = launch_error(ctl)
        secret = ctl._env[_frames.SECRET_ENV]
    message = str(error)
    assert message.startswith(f"worker {ctl.name}-1 (pid ")
    assert "exited with code 1 before it connected" in message
    assert f"pycrew is not installed for the Python the workers run ({python})" in message
    assert "pass python= an interpreter that has it" in message
    assert f"    {python}: No module named pycrew" in message.splitlines()
    assert secret not in message


def test_the_launch_error_is_raised_once_and_launching_resumes_after(tmp_path: Path) -> None:
    python = python_without_pycrew(tmp_path)
    with pycrew.local_controller(
        workers=1, python=python, seconds_interval=0.05, env=NO_PYCREW_PATH
    ) as ctl:
        ctl.push(tasks.add, 1, 2)
        first = launch_error(ctl)
        # heard: the next round tries again, and the next call hears about that one
        second = launch_error(ctl)
        assert "pycrew is not installed" in str(first)
        assert "pycrew is not installed" in str(second)
        assert str(first).split()[1] != str(second).split()[1]  # two workers, one each
        assert ctl.workers_status()["failed"] in (2, 3)
        ctl.cancel()


def test_a_worker_of_another_pycrew_version_is_named(tmp_path: Path) -> None:
    python = python_of_another_version(tmp_path, "0.0.0+other")
    with pycrew.local_controller(workers=2, python=python, seconds_interval=0.05) as ctl:
        ctl.push(tasks.add, 1, 2)
        ctl.push(tasks.add, 3, 4)
        wait_until(lambda: ctl.workers_status()["failed"] == 2, WAIT, "both launches to fail")
        time.sleep(1)
        assert launched(ctl) == 2
        with pytest.warns(pycrew.CrewWarning, match="was refused"):
            error = launch_error(ctl)
        ctl.cancel()
    message = str(error)
    assert "exited with code 4 before it connected" in message
    assert (
        f"version mismatch: the workers run pycrew 0.0.0+other and the controller {__version__}"
        in message
    )
    assert f"install pycrew {__version__} for the workers' Python" in message
    assert re.search(r"could not join the controller at 127\.0\.0\.1:\d+: ", message)


def test_a_worker_that_connects_lets_go_of_its_startup_log() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        pid = ctl.push(tasks.pid).result(timeout=WAIT)
        # its output goes where it went before there was a start-up log
        assert os.readlink(f"/proc/{pid}/fd/2") == os.devnull
        assert ctl.push(tasks.env, "PYCREW_STARTUP_LOG").result(timeout=WAIT) is None
        launcher = ctl.launcher
        assert isinstance(launcher, pycrew.launchers.LocalLauncher)
        folder = launcher._startup
        assert folder is not None
        assert os.listdir(folder) == []
    assert not os.path.exists(folder)


class _ExitsQuietly(pycrew.launchers.LocalLauncher):
    """Starts a process that exits at once, saying nothing, instead of a worker."""

    def launch_worker(self, spec: pycrew.launchers.WorkerSpec) -> subprocess.Popen[bytes]:
        quiet = dataclasses.replace(spec, command=[sys.executable, "-c", "raise SystemExit(3)"])
        return super().launch_worker(quiet)


def test_a_cause_in_doubt_is_given_a_second_launch() -> None:
    with pycrew.controller(_ExitsQuietly(), workers=1, seconds_interval=0.05) as ctl:
        ctl.push(tasks.add, 1, 2)
        error = launch_error(ctl)
        assert 2 <= ctl.workers_status()["failed"] <= 3
        ctl.cancel()
    assert str(error) == (
        f"worker {ctl.name}-2 (pid {str(error).split('pid ')[1].split(')')[0]}) exited with "
        "code 3 before it connected. Probable cause: it wrote nothing to its error output: "
        "what stopped it lies outside the worker (the launcher's or scheduler's records may "
        "say more)."
    )


class _Sleeps(pycrew.launchers.LocalLauncher):
    """Starts a process that neither connects nor exits."""

    def launch_worker(self, spec: pycrew.launchers.WorkerSpec) -> subprocess.Popen[bytes]:
        idle = dataclasses.replace(
            spec, command=[sys.executable, "-c", "import time; time.sleep(60)"]
        )
        return super().launch_worker(idle)


def test_workers_that_never_connect_nor_exit_keep_the_ten_in_a_row_rule() -> None:
    with pycrew.controller(_Sleeps(), workers=2, seconds_interval=0.05, seconds_launch=0.2) as ctl:
        ctl.push(tasks.add, 1, 2)
        ctl.push(tasks.add, 3, 4)
        error = launch_error(ctl)
        assert ctl.workers_status()["failed"] >= 10
        ctl.cancel()
    assert str(error).startswith("10 launched workers in a row never connected")


def test_a_log_directory_is_read_from_where_the_worker_began(tmp_path: Path) -> None:
    python = python_without_pycrew(tmp_path)
    logs = tmp_path / "logs"
    with pycrew.local_controller(
        name="logged",
        workers=1,
        python=python,
        log_directory=logs,
        seconds_interval=0.05,
        env=NO_PYCREW_PATH,
    ) as ctl:
        (logs / "logged-1.log").write_text("an earlier run's line\n")
        ctl.push(tasks.add, 1, 2)
        error = launch_error(ctl)
        ctl.cancel()
    message = str(error)
    assert "pycrew is not installed" in message
    assert "No module named pycrew" in message
    assert "an earlier run's line" not in message
    assert "No module named pycrew" in (logs / "logged-1.log").read_text()  # the user's, kept


def test_a_missing_interpreter_is_named_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    ctl = pycrew.local_controller(workers=1, python=missing)
    with pytest.raises(pycrew.LaunchError) as caught:
        ctl.start()  # before any worker is launched
    assert not ctl.started()
    assert str(caught.value).startswith(
        f"cannot run the workers' interpreter '{missing}': not found"
    )


# --------------------------------------------------- the cause, as pure logic
CASES = [
    ("/opt/py/bin/python3: No module named pycrew\n", 1, "pycrew is not installed", True),
    ("ModuleNotFoundError: No module named 'pycrew'\n", 1, "pycrew is not installed", True),
    (
        "pycrew worker c-1: could not join the controller at h:1: the controller refused us: "
        "the worker runs Python '3.12' and the controller '3.11'\n",
        4,
        "version mismatch: the workers run Python 3.12 and the controller 3.11: "
        "pass python= a Python 3.11 interpreter",
        True,
    ),
    (
        "pycrew worker c-1: could not join the controller at h:1: the controller runs "
        "pycrew '0.2.0' and the worker '0.1.0'\n",
        4,
        "version mismatch: the workers run pycrew 0.1.0 and the controller 0.2.0",
        True,
    ),
    (
        "Traceback (most recent call last):\nModuleNotFoundError: No module named 'cloudpickle'\n",
        1,
        "cannot import 'cloudpickle', which pycrew needs",
        True,
    ),
    (
        "pycrew worker c-1: could not join the controller at 10.1.2.3:4567: "
        "[Errno 111] Connection refused\n",
        4,
        "could not reach the controller at 10.1.2.3:4567 ([Errno 111] Connection refused): "
        "pass host=",
        True,
    ),
    (
        "pycrew worker c-1: could not join the controller at 10.1.2.3:4567: timed out\n",
        4,
        "could not reach the controller at 10.1.2.3:4567 (timed out)",
        False,
    ),
    (
        "pycrew worker c-1: could not join the controller at h:1: no valid secret in "
        "$PYCREW_SECRET\n",
        4,
        "found no secret in its environment",
        True,
    ),
    (
        "pycrew worker c-1: could not join the controller at h:1: [SSL: "
        "CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch (_ssl.c:1006)\n",
        4,
        "could not verify the controller's TLS certificate (certificate verify failed: IP "
        "address mismatch (_ssl.c:1006))",
        True,
    ),
    (
        "pycrew worker c-1: could not join the controller at h:1: the controller refused us: "
        "authentication failed\n",
        4,
        "the controller refused the worker: authentication failed",
        True,
    ),
    (
        "/var/lib/slurm/slurmd/job00031/slurm_script: 6: exec: /no/python: not found\n",
        127,
        "the interpreter /no/python was not found where the worker ran",
        True,
    ),
    (
        "/var/spool/slurmd/job00031/slurm_script: line 6: /no/python: No such file or directory\n",
        127,
        "the interpreter /no/python was not found where the worker ran",
        True,
    ),
    (
        "/var/spool/slurmd/job7/slurm_script: line 6: /opt/python: Permission denied\n",
        126,
        "/opt/python cannot be run where the worker ran (permission denied)",
        True,
    ),
    (
        "slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2024-01-01T00:00:00 "
        "DUE TO TIME LIMIT ***\n",
        0,
        "reached its time limit",
        False,
    ),
    (
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=12.batch.\n",
        0,
        "ran out of memory",
        False,
    ),
    ("", -9, "was killed by SIGKILL before it connected", False),
    ("", 3, "it wrote nothing to its error output", False),
    (
        'Traceback (most recent call last):\n  File "x", line 1\nOSError: [Errno 28] No space\n',
        1,
        "the worker failed as it started: OSError: [Errno 28] No space",
        False,
    ),
    ("something odd\n", 1, "its last lines may say why", False),
    (None, 1, "keeps no output of its workers", False),
]


@pytest.mark.parametrize(("text", "code", "cause", "certain"), CASES)
def test_probable_causes(text: str | None, code: int, cause: str, certain: bool) -> None:
    found = _diagnose.probable_cause(text, code)
    assert cause in found.text
    assert found.certain is certain


def test_the_message_quotes_at_most_ten_short_lines() -> None:
    text = "".join(f"line {i}\n\n" for i in range(30)) + "x" * 1000 + "\n"
    cause = _diagnose.probable_cause(text, 1)
    message = str(_diagnose.launch_error("c-1", "job 12_0", 1, text, cause))
    lines = message.splitlines()
    assert lines[0] == (
        "worker c-1 (job 12_0) exited with code 1 before it connected. "
        "Probable cause: its last lines may say why."
    )
    assert lines[1] == "Its last lines of error output:"
    assert lines[2:-1] == [f"    line {i}" for i in range(21, 30)]
    assert lines[-1] == "    " + "x" * (_diagnose.LINE_CHARS - 3) + "..."


def test_only_the_tail_of_a_long_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old\n" + b"y" * (2 * _diagnose.TAIL_BYTES) + b"\nlast\n")
    text = _diagnose.read_tail(log, start=4)
    assert text is not None
    assert len(text) == _diagnose.TAIL_BYTES
    assert text.endswith("last\n")
    assert _diagnose.read_tail(tmp_path / "missing") is None
