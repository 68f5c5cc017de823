"""pycrew's own events on named loggers, as a user's logging configuration sees them.

Real runs (local worker processes, a SLURM cluster where one answers, a scheduler
command that really fails) with every ``pycrew`` record captured at DEBUG: which
logger says what at which level, and that no record holds the controller's secret
or the workers' multiprocessing key, in its message, its arguments or its traceback.
"""

from __future__ import annotations

import logging
import multiprocessing.process
import os
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew._wire import _frames
from pycrew.launchers import LsfLauncher, SlurmLauncher, WorkerSpec
from tests.engines.test_ssh import Remote, _only_sshd, _ssh, remote  # noqa: F401 - remote is a fixture
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60
#: every logger pycrew logs on; a handler on "pycrew" sees them all
NAMED = {
    "pycrew.controller",
    "pycrew.dispatcher",
    "pycrew.scaler",
    "pycrew.registry",
    "pycrew.engines",
    "pycrew.engines.local",
    "pycrew.engines.slurm",
    "pycrew.engines.sge",
    "pycrew.engines.pbs",
    "pycrew.engines.lsf",
    "pycrew.engines.ssh",
}


def _records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    """The messages logged on ``name`` at exactly ``level``."""
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


def _said(caplog: pytest.LogCaptureFixture, name: str, level: int = logging.DEBUG) -> str:
    """All that ``name`` logged at ``level`` or above, as one text."""
    return " ".join(r.getMessage() for r in caplog.records if r.name == name and r.levelno >= level)


def _assert_secrets_unlogged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No record shows a secret, however a handler formats it (traceback included)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    assert caplog.records
    for record in caplog.records:
        shown = formatter.format(record) + repr(record.args) + repr(record.msg)
        for secret in secrets:
            assert secret not in shown, f"{record.name} logged a secret: {record.msg!r}"


def _authkey() -> str:
    return bytes(multiprocessing.process.current_process().authkey).hex()


def test_a_local_run_logs_launches_exits_and_a_crash_on_named_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pycrew")
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        records = ctl.map(tasks.add, iterate={"x": list(range(20)), "y": [1] * 20})
        assert [r.result for r in records] == list(range(1, 21))
        secret = ctl._env[_frames.SECRET_ENV]
        ran_on = {r.pid for r in records}
        crash = ctl.push(tasks.suicide).record(timeout=WAIT)
        assert crash.status is pycrew.Status.CRASH
        # the scaler replaces the lost worker: a second launch, forked from the template
        again = ctl.map(tasks.add, iterate={"x": list(range(20)), "y": [1] * 20})
        assert all(r.status is pycrew.Status.SUCCESS for r in again)
        ran_on |= {r.pid for r in again}
    # every record on a named logger: a user can turn each part up or down
    names = {r.name for r in caplog.records}
    assert names <= NAMED, names - NAMED
    # the engine: each launch at INFO with the workers' ids and pids, each process's
    # command line at DEBUG
    launched = " ".join(_records(caplog, "pycrew.engines.local", logging.INFO))
    assert launched
    for pid in ran_on - {None}:
        assert f"(pid {pid})" in launched
    commands = _records(caplog, "pycrew.engines.local", logging.DEBUG)
    assert any("pycrew worker" in c and "--id" in c for c in commands), commands
    # launches, connections, the crash and the exits, from the dispatcher and the scaler
    assert _records(caplog, "pycrew.scaler", logging.INFO)
    connected = " ".join(_records(caplog, "pycrew.dispatcher", logging.INFO))
    assert crash.worker is not None
    assert crash.worker in connected
    assert crash.name in _said(caplog, "pycrew.dispatcher", logging.INFO)
    said = _said(caplog, "pycrew.dispatcher")
    assert f"worker {crash.worker} disconnected" in said or f"worker {crash.worker} dropped" in said
    # and the rest end with the controller, each named by the engine at INFO
    ended = [m for m in _records(caplog, "pycrew.engines.local", logging.INFO) if "ended" in m]
    assert len(ended) == 1
    for pid in ran_on - {None, crash.pid}:
        assert str(pid) in ended[0]
    _assert_secrets_unlogged(caplog, secret, _authkey())


def test_a_worker_that_never_connects_is_killed_at_info(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # an interpreter that never becomes a worker: the scaler gives up on it after
    # seconds_launch and the engine kills it
    stuck = tmp_path / "python-that-hangs"
    stuck.write_text("#!/bin/sh\nexec sleep 600\n")
    stuck.chmod(0o755)
    caplog.set_level(logging.DEBUG, logger="pycrew")
    ctl = pycrew.local_controller(workers=1, seconds_interval=0.05, seconds_launch=1, python=stuck)
    try:
        ctl.launch(1)
        secret = ctl._env[_frames.SECRET_ENV]
        wait_until(
            lambda: any(
                m.startswith("killing worker")
                for m in _records(caplog, "pycrew.engines.local", logging.INFO)
            ),
            WAIT,
            "the engine to kill the worker that never connected",
        )
    finally:
        ctl.terminate()
    assert any("seconds_launch" in m for m in _records(caplog, "pycrew.scaler", logging.WARNING))
    _assert_secrets_unlogged(caplog, secret, _authkey())


def test_a_failing_scheduler_command_is_a_warning_and_its_call_a_debug_line(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # a real bsub that refuses, the way a cluster's does when a queue is closed
    bsub = tmp_path / "bsub"
    bsub.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            cat > /dev/null
            echo "Queue <night> is not available. Job not submitted." >&2
            exit 255
            """
        )
    )
    bsub.chmod(0o755)
    secret = os.urandom(32).hex()
    spec = WorkerSpec(
        command=[sys.executable, "-m", "pycrew", "worker", "--address", "h:1", "--id", "c-1"],
        env={_frames.SECRET_ENV: secret},
        worker_id="c-1",
        controller="c",
    )
    caplog.set_level(logging.DEBUG, logger="pycrew")
    launcher = LsfLauncher(commands=str(tmp_path), log_error="/dev/null")
    with pytest.raises(pycrew.LaunchError, match="not available"):
        launcher.launch_workers([spec])
    calls = _records(caplog, "pycrew.engines.lsf", logging.DEBUG)
    assert calls == [f"running {bsub}"]
    warned = _records(caplog, "pycrew.engines.lsf", logging.WARNING)
    assert len(warned) == 1
    assert "Queue <night> is not available" in warned[0]
    # nothing was launched, so nothing says it was
    assert _records(caplog, "pycrew.engines.lsf", logging.INFO) == []
    _assert_secrets_unlogged(caplog, secret)


# ------------------------------------------------------------------ SLURM
def test_slurm_logs_its_scheduler_calls_launches_and_cancellations(
    cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pycrew")
    with pycrew.slurm_controller(workers=2, seconds_interval=0.1) as ctl:
        records = ctl.map(tasks.add, iterate={"x": list(range(10)), "y": [1] * 10})
        assert [r.result for r in records] == list(range(1, 11))
        secret = ctl._env[_frames.SECRET_ENV]
        crash = ctl.push(tasks.suicide).record(timeout=WAIT)
        assert crash.status is pycrew.Status.CRASH
        assert ctl.push(tasks.add, 1, 2).record(timeout=WAIT).result == 3
    wait_until(lambda: pycrew.SlurmMonitor().jobs() == [], 30, "this test's jobs to leave")
    names = {r.name for r in caplog.records}
    assert names <= NAMED, names - NAMED
    calls = _records(caplog, "pycrew.engines.slurm", logging.DEBUG)
    for command in ("sbatch", "squeue", "scancel"):
        assert any(c.startswith(f"running {command} ") for c in calls), (command, calls)
    infos = _records(caplog, "pycrew.engines.slurm", logging.INFO)
    launched = [m for m in infos if m.startswith("launched")]
    assert launched
    assert all("as SLURM job" in m for m in launched)
    assert any(m.startswith("cancelling the") for m in infos), infos
    # the crash and the exits, from the dispatcher
    assert crash.name in _said(caplog, "pycrew.dispatcher", logging.INFO)
    _assert_secrets_unlogged(caplog, secret)


def test_an_array_element_that_left_is_told_apart_from_one_still_running(
    cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    # SLURM shows every element of an array with an exit code, the running ones
    # too (0:0): only the one that left may be given its code
    leave_or_stay = 'if [ "$PYCREW_WORKER" = w-0 ]; then exit 3; fi; exec sleep 600'
    specs = [
        WorkerSpec(
            command=["/bin/sh", "-c", leave_or_stay],
            env={_frames.SECRET_ENV: os.urandom(32).hex()},
            worker_id=f"w-{i}",
            controller="logging-test",
        )
        for i in range(2)
    ]
    caplog.set_level(logging.DEBUG, logger="pycrew.engines")
    launcher = SlurmLauncher(log_error="/dev/null")
    handles = launcher.launch_workers(specs)
    try:
        wait_until(
            lambda: launcher.exit_codes(handles)[0] is not None, WAIT, "the first element to end"
        )
        assert launcher.exit_codes(handles) == [3, None]
        assert f"job {handles[0].id} left the queue, exit code 3" in _records(
            caplog, "pycrew.engines.slurm", logging.DEBUG
        )
    finally:
        launcher.shutdown(handles, 20)
    wait_until(lambda: pycrew.SlurmMonitor().jobs() == [], 30, "this test's jobs to leave")


# ------------------------------------------------------------------ ssh
def test_ssh_logs_each_session_and_never_the_secret(
    remote: Remote,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pycrew")
    with _ssh(remote, workers=1, tunnel=True) as ctl:
        assert ctl.push(tasks.add, 1, 2).result(timeout=WAIT) == 3
        secret = ctl._env[_frames.SECRET_ENV]
    wait_until(lambda: _only_sshd(remote), WAIT, "nothing left")
    calls = _records(caplog, "pycrew.engines.ssh", logging.DEBUG)
    assert any(c.startswith("running ssh ") and " -R " in c for c in calls), calls
    launched = _records(caplog, "pycrew.engines.ssh", logging.INFO)
    assert any(m.startswith("launched worker") and remote.address in m for m in launched)
    _assert_secrets_unlogged(caplog, secret, _authkey())
