"""Liveness and hygiene: workers that hide their death, take-backs that race,
names that become paths, unbounded output, and certificates clients cannot check."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import random
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew._dispatcher._task import PREFETCH_BYTES
from pycrew._wire import _frames
from pycrew._wire._frames import Kind
from pycrew.launchers import Launcher
from tests.helpers import executor_tasks, peers, tasks
from tests.helpers.common import wait_until
from tests.helpers.scripts import alive, controller_script

if TYPE_CHECKING:
    from pathlib import Path

    from pycrew.launchers import WorkerSpec

WAIT = 30


def test_a_forked_child_does_not_hide_the_workers_death() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        child = ctl.push(tasks.fork_sleeper, 60).result(timeout=WAIT)
        try:
            future = ctl.push(tasks.sleep, 60)
            wait_until(future.running, WAIT, "the task to reach the worker")
            os.kill(ctl.pids()[0], signal.SIGKILL)  # as the OOM killer would
            with pytest.raises(pycrew.TaskCrashError, match="SIGKILL"):
                future.result(timeout=WAIT)
            wait_until(lambda: not ctl.pids(), WAIT, "the dead worker to leave pids()")
            assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
            # and what the dead worker's task left behind is ended too
            wait_until(lambda: not alive(child), WAIT, "the forked child to be ended")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("how", ["tasks_max", "terminate"])
def test_children_a_task_left_end_with_its_worker(how: str) -> None:
    """A worker that leaves, by its own limits or at terminate(), takes its task's children."""
    options = {"tasks_max": 1} if how == "tasks_max" else {}
    ctl = pycrew.local_controller(workers=1, seconds_interval=0.05, **options)
    try:
        child = ctl.push(tasks.fork_sleeper, 60).result(timeout=WAIT)
        assert alive(child)
        if how == "terminate":
            ctl.terminate()
        wait_until(lambda: not alive(child), WAIT, "the child to end with its worker")
    finally:
        ctl.terminate()


@pytest.mark.parametrize(
    "workers", [12, pytest.param(60, marks=pytest.mark.slow, id="60-workers-on-2-cores")]
)
def test_a_task_that_was_taken_back_never_runs_twice_nor_crashes(
    tmp_path: Path, workers: int
) -> None:
    """Oversubscribed workers steal from each other all the time; every task runs once."""
    log = tmp_path / "runs"
    names = [f"t{i}" for i in range(240)]
    with pycrew.local_controller(workers=workers, seconds_interval=0.05) as ctl:
        for _ in range(2):
            log.write_text("")
            records = ctl.map(
                tasks.note_run,
                iterate={"path": [str(log)] * len(names), "name": names, "seconds": [0.01] * 240},
                names="name",
                error="silent",
            )
            assert [r.status for r in records] == [pycrew.Status.SUCCESS] * len(names), [
                r.error for r in records if r.error
            ]
            runs = log.read_text().split()
            assert sorted(runs) == sorted(names)  # each exactly once


def _two_held_then_asked_back(
    ctl: pycrew.Controller, fakes: contextlib.ExitStack, name: str, gate: Path, first: int
) -> tuple[peers.FakeWorker, pycrew.TaskFuture[int], pycrew.TaskFuture[int]]:
    """The real worker busy on a large task, a fake joins and holds two small ones; the
    large one ends, and the now idle real worker makes the controller ask the fake for
    the second one back. Returns the fake and the two futures."""
    ballast = bytes(PREFETCH_BYTES)  # a large task: only an idle worker takes one
    busy = ctl.push(executor_tasks.wait_file, str(gate), WAIT, ballast)
    fake = fakes.enter_context(peers.fake_worker(ctl, name))
    ahead, behind = ctl.push(tasks.add, first, first), ctl.push(tasks.add, first + 1, first + 1)
    assert [fake.next_task(), fake.next_task()] == [ahead._task.id, behind._task.id]
    gate.touch()
    assert busy.result(timeout=WAIT) is True
    assert fake.next_of(Kind.RELEASE, WAIT) == behind._task.id
    return fake, ahead, behind


@pytest.mark.parametrize("late", ["it-runs-on", "its-worker-dies"])
def test_a_request_to_hand_back_that_came_too_late_stops_no_later_one(
    tmp_path: Path, late: str
) -> None:
    """A worker started the task it was asked to hand back (and runs it on, or dies
    running it): an idle worker's later request for another task still goes out, and the
    task held behind a long one runs on the idle worker."""
    with (
        pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl,
        contextlib.ExitStack() as fakes,
    ):
        real = ctl.push(tasks.pid).result(timeout=WAIT)
        one, a1, a2 = _two_held_then_asked_back(ctl, fakes, "fake-1", tmp_path / "gate1", 1)
        # ... too late: a2 started already, once a1 was done
        one.succeed(a1._task.id, 2)
        assert a1.result(timeout=WAIT) == 2
        if late == "its-worker-dies":
            one.sock.close()
            assert a2.record(timeout=WAIT).status is pycrew.Status.CRASH
        wait_until(lambda: not ctl.status()["tasks"]["queued"], WAIT, "a2 to run or end")

        # b1 runs long on the second fake: b2, behind it, is asked back for the idle worker
        two, b1, b2 = _two_held_then_asked_back(ctl, fakes, "fake-2", tmp_path / "gate2", 3)
        two.sock.sendall(peers.frame(Kind.RELEASED, _frames.TASK_ID.pack(b2._task.id)))
        assert b2.record(timeout=WAIT).pid == real
        two.succeed(b1._task.id, 6)
        assert b1.result(timeout=WAIT) == 6
        if late == "it-runs-on":
            one.succeed(a2._task.id, 4)
            assert a2.result(timeout=WAIT) == 4


def test_workers_dying_while_tasks_are_handed_about_leave_no_task_behind() -> None:
    """Short and long tasks on prefetching workers, some of which end their worker: the
    busy hand tasks back to the idle, workers die holding tasks ahead and are replaced.
    Every task ends, as a success or (those that killed their worker) a crash."""
    rng = random.Random(7)
    plan = [(i, rng.choice([0.0, 0.0, 0.001, 0.01, 0.2]), i % 23 == 11) for i in range(300)]
    with pycrew.local_controller(workers=4, seconds_interval=0.05) as ctl:
        futures = [ctl.push(tasks.nap_or_die, i, nap, die) for i, nap, die in plan]
        _, pending = concurrent.futures.wait(futures, timeout=WAIT * 4)
        assert not pending, f"{len(pending)} tasks never ended: {ctl.status()['workers']}"
        for (i, _, die), future in zip(plan, futures, strict=True):
            record = future.record(timeout=WAIT)
            if die:
                assert record.status is pycrew.Status.CRASH, record
            else:
                assert (record.status, record.result) == (pycrew.Status.SUCCESS, i), record


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\0b", "\ud800", "", ".hidden", "x" * 65])
def test_a_controller_name_that_would_make_a_path_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(pycrew.ArgumentError, match="letters, digits"):
        pycrew.local_controller(name=name, log_directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_names_of_letters_digits_dots_and_dashes_are_fine() -> None:
    for name in ("big", "node-7", "run_2026.11", "A" * 64):
        assert pycrew.local_controller(name=name).name == name


def test_a_group_with_no_tasks_does_not_wait() -> None:
    group = pycrew.ControllerGroup(
        pycrew.local_controller(name="a"), pycrew.local_controller(name="b")
    )
    with group:
        started = time.monotonic()
        assert group.wait(mode="one") is False
        assert group.wait(mode="all") is True
        assert group.wait(mode="one", seconds_timeout=30) is False
        assert time.monotonic() - started < 20  # at once; 30 s would be the timeout


def test_a_huge_exception_gives_a_bounded_error_and_trace() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        record = ctl.push(tasks.raise_long, 1 << 20).record(timeout=WAIT)
    assert record.status is pycrew.Status.ERROR
    assert record.error is not None
    assert len(record.error) <= 2048
    assert record.trace is not None
    assert len(record.trace) <= 16384 + 100
    assert record.trace.startswith("Traceback (most recent call last):")
    assert "raise ValueError" in record.trace
    assert "characters left out" in record.trace
    assert record.trace.rstrip().endswith("x")  # the tail: the end of the message


def test_a_certificate_naming_its_host_only_in_the_cn_gets_a_fix(tmp_path: Path) -> None:
    """crew's own recipe: ``openssl req -x509 ... -subj "/CN=127.0.0.1"``, no subjectAltName."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key.chmod(0o600)
    ctl = pycrew.local_controller(tls=pycrew.TLS("custom", key=key, certificates=[cert]))
    try:
        with pytest.raises(
            pycrew.TlsConfigError,
            match=r"only in the subject \(CN=127\.0\.0\.1\).*subjectAltName=IP:127\.0\.0\.1",
        ):
            ctl.start()
    finally:
        ctl.terminate()


class _NoQuota(Launcher):
    """A launcher whose every submission is refused, as a full queue would be."""

    def __init__(self) -> None:
        self.calls = 0

    def launch_worker(self, spec: WorkerSpec) -> object:
        self.calls += 1
        raise pycrew.LaunchError("sbatch: error: QOSMaxSubmitJobPerUserLimit")


def test_a_failing_launch_is_logged_once_with_the_launchers_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pycrew")
    launcher = _NoQuota()
    with pycrew.controller(launcher, seconds_interval=0.05) as ctl:
        future = ctl.push(tasks.add, 1, 1)
        with pytest.raises(pycrew.LaunchError, match="QOSMaxSubmitJobPerUserLimit"):
            future.result(timeout=WAIT)
        wait_until(lambda: launcher.calls >= 4, WAIT, "several scaling rounds")
        future.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "QOSMaxSubmitJobPerUserLimit" in errors[0].getMessage()
    assert not errors[0].exc_info  # the launcher's message, not a traceback


@pytest.mark.parametrize("reset", [False, True])
def test_reset_environment_undoes_a_tasks_directory_environment_and_path(
    reset: bool, tmp_path: Path
) -> None:
    with pycrew.local_controller(workers=1, reset_environment=reset) as ctl:
        before = ctl.push(tasks.process_state, str(tmp_path)).result(timeout=WAIT)
        assert ctl.push(tasks.change_process, str(tmp_path)).result(timeout=WAIT)
        after = ctl.push(tasks.process_state, str(tmp_path)).result(timeout=WAIT)
    if reset:
        assert after == before
    else:  # what a task leaves stays for the next one on that worker
        assert after == (str(tmp_path), "1", True)


def test_a_worker_log_stays_under_its_cap(tmp_path: Path) -> None:
    cap = 1 << 20
    with pycrew.local_controller(workers=1, log_directory=tmp_path, log_bytes_max=cap) as ctl:
        assert ctl.push(tasks.chatter, 8).result(timeout=WAIT) == 8
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # the worker goes on
    logs = sorted(tmp_path.iterdir())
    assert [p.name.split(".", 1)[1] for p in logs] == ["log", "log.1"]
    for path in logs:
        assert path.stat().st_size <= cap + (128 << 10), path  # the cap and a check's margin
    assert "passed log_bytes_max (1048576 bytes)" in logs[0].read_text()
    assert sum(p.stat().st_size for p in logs) < 3 * cap  # not 8 MiB


def test_log_bytes_max_is_checked() -> None:
    with pytest.raises(pycrew.ArgumentError, match="at least 4096"):
        pycrew.local_controller(log_bytes_max=10)
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.local_controller(log_bytes_max="1 MB")  # type: ignore[arg-type]


# ------------------------------------------------------- the watchdog
_ORPHAN_SCRIPT = """
import os, subprocess, sys, time
import pycrew
from pycrew.launchers import Launcher
from pycrew._dispatcher._task import PREFETCH_BYTES
from pycrew._wire import _frames
from pycrew._wire._frames import Kind
from tests.helpers import executor_tasks, peers, tasks

class Plain(Launcher):
    # as a scheduler starts workers: no parent-death signal ties them to us
    def launch_worker(self, spec):
        env = {**os.environ, **spec.env}
        return subprocess.Popen(spec.command, env=env, start_new_session=True)

ctl = pycrew.controller(Plain(), workers=1, seconds_interval=0.05)
assert ctl.push(os.getpid).result(timeout=60) == ctl.pids()[0]
future = ctl.push(getattr(tasks, sys.argv[1]), 120)
while not future.running():
    time.sleep(0.01)
print(ctl.pids()[0], flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("task", ["hold_gil", "deaf_hold_gil", "spin", "sleep"])
def test_a_worker_ends_when_its_controller_is_killed(tmp_path: Path, task: str) -> None:
    """With no parent-death signal (as on a cluster), whatever its task is doing."""
    with controller_script(tmp_path / "controller.py", _ORPHAN_SCRIPT, task) as (controller, pids):
        (worker,) = pids
        controller.kill()  # SIGKILL: nothing of the controller runs any more
        controller.wait(WAIT)
        wait_until(lambda: not alive(worker), 15, "the orphaned worker to end")


def test_a_stopped_worker_is_ended_after_seconds_heartbeat(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with pycrew.local_controller(workers=1, seconds_heartbeat=1, seconds_interval=0.05) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 60)
        # the task really runs (the dispatcher counts it running once sent,
        # while the worker may still be starting its watchdog)
        wait_until(marker.exists, WAIT, "the task to start on the worker")
        os.kill(ctl.pids()[0], signal.SIGSTOP)
        with pytest.raises(pycrew.TaskCrashError, match="SIGKILL"):
            future.result(timeout=WAIT)
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2


@pytest.mark.parametrize(
    "seconds", [3, pytest.param(60, marks=pytest.mark.slow, id="a-minute-in-c")]
)
def test_a_worker_busy_in_c_past_seconds_heartbeat_is_left_alone(seconds: int) -> None:
    with pycrew.local_controller(workers=1, seconds_heartbeat=1, seconds_interval=0.05) as ctl:
        pid = ctl.push(os.getpid).result(timeout=WAIT)
        assert ctl.push(tasks.hold_gil, seconds).result(timeout=seconds + WAIT) == seconds
        assert ctl.push(os.getpid).result(timeout=WAIT) == pid  # the same, living worker


_KILLED_SCRIPT = """
import os, sys, time
import psutil
import pycrew
from pycrew._dispatcher._task import PREFETCH_BYTES
from pycrew._wire import _frames
from pycrew._wire._frames import Kind
from tests.helpers import executor_tasks, peers, tasks

ctl = pycrew.local_controller(workers=1, seconds_interval=0.05)
worker = ctl.push(os.getpid).result(timeout=60)
future = ctl.push(tasks.fork_then_hold_gil, 120)
while True:  # the task's child, once it is there
    kids = [
        p for p in psutil.Process(worker).children()
        if not any(part.endswith("_watchdog.py") for part in p.cmdline())
    ]
    if kids:
        break
    time.sleep(0.01)
print(worker, kids[0].pid, flush=True)
time.sleep(600)
"""


def test_a_killed_controller_leaves_no_worker_and_no_child(tmp_path: Path) -> None:
    with controller_script(tmp_path / "controller.py", _KILLED_SCRIPT) as (controller, pids):
        assert len(pids) == 2
        controller.kill()
        controller.wait(WAIT)
        wait_until(lambda: not any(map(alive, pids)), 15, "the worker and its child to end")


def _receiving(ctl: pycrew.Controller) -> bool:
    """Whether the controller is part way through reading a large result."""
    dispatcher = ctl._dispatcher
    assert dispatcher is not None
    # read without the lock: the dispatcher holds it while it reads a frame
    return any(
        c.info is not None and c.decoder.direct_target() is not None
        for c in list(dispatcher.conns.values())
    )


def test_a_worker_killed_while_sending_a_large_result(tmp_path: Path) -> None:
    # through the socket: shared memory (tests/wire/test_shared_memory.py) reads no stream
    with pycrew.local_controller(workers=1, seconds_interval=0.05, shared_memory=False) as ctl:
        pid = ctl.push(os.getpid).result(timeout=WAIT)
        future = ctl.push(tasks.big_buffer, 512 << 20)
        wait_until(lambda: _receiving(ctl), 60, "the result to be on its way")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(pycrew.TaskCrashError, match="SIGKILL"):
            future.result(timeout=WAIT)
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # a new worker, served


def test_workers_that_connect_after_the_pushes_each_take_a_long_task(tmp_path: Path) -> None:
    # the first worker to connect takes every task ahead; each that connects
    # later must get one back, even while another's request is on its way
    marks = [tmp_path / f"started-{i}" for i in range(4)]
    with pycrew.local_controller(workers=4) as ctl:
        futures = [ctl.push(tasks.mark_then_sleep, str(m), 600) for m in marks]
        wait_until(lambda: all(m.exists() for m in marks), 60, "all four tasks to start")
        assert len(ctl.pids()) == 4
        ctl.cancel(all=True)
        assert all(f.record(timeout=60).status == "cancel" for f in futures)


def test_a_task_that_cannot_end_before_the_wall_goes_to_a_fresh_worker() -> None:
    # seconds_wall=3: after a first task of about 1 s, a task that may take 10 s
    # (its seconds_timeout) cannot end in time there; a fresh worker runs it
    with pycrew.local_controller(workers=1, seconds_wall=3) as ctl:
        first = ctl.push(tasks.pid_after, 1.0)
        second = ctl.push(tasks.pid_after, 0.1, seconds_timeout=10)
        one, two = first.record(timeout=60), second.record(timeout=60)
        assert (one.status, two.status) == ("success", "success")
        assert one.result != two.result  # another worker ran it
        assert two.attempts == 1  # handed back before it started: never a crash
