"""Shared memory with workers on the controller's machine (``_wire/_shm.py``).

Real workers and real segments; a fake worker (tests/helpers/peers.py) stands
for what a compromised or buggy one could send. What is asserted: large
arrays reach the task and come back through segments (the task's argument
and the user's result are maps of them), a task's writes stay its own,
segments are reused and handed back, none outlives a killed worker, a
terminate or a killed controller, and a peer gets shared memory only after
it proved it can read ours, and only for segments pycrew made.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import struct
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew._wire import _frames, _pickling, _shm
from pycrew._wire._frames import HEADER, LENGTH, Kind
from tests.helpers import peers, tasks
from tests.helpers.common import wait_until
from tests.helpers.scripts import alive, controller_script

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(not _shm.supported(), reason="no memfd on this platform")

WAIT = 60
MB = 1 << 20


def held_by(pid: int) -> tuple[int, int]:
    """How many of pycrew's segments process ``pid`` holds open, and maps."""
    fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        fds += target.startswith(f"/memfd:{_shm.NAME} ")
    with open(f"/proc/{pid}/maps") as maps:
        mapped = sum(f"memfd:{_shm.NAME} " in line for line in maps)
    return fds, mapped


def eight_mb() -> object:
    return np.arange(MB, dtype=np.float64)


@contextlib.contextmanager
def real_worker_busy(ctl: pycrew.Controller, tmp_path: Path) -> Iterator[None]:
    """The controller's real worker busy until the block ends: a fake gets what comes."""
    gate = tmp_path / "busy"
    busy = ctl.push(tasks.hold_array_until, np.zeros(1), str(gate))
    wait_until(lambda: (tmp_path / "busy.started").exists(), WAIT, "the real worker to be busy")
    try:
        yield
    finally:
        gate.touch()
    assert busy.result(timeout=WAIT) == 8


def only_worker(ctl: pycrew.Controller) -> object:
    dispatcher = ctl._dispatcher
    assert dispatcher is not None
    (conn,) = list(dispatcher.workers.values())
    return conn


def test_large_arrays_cross_through_shared_memory_both_ways() -> None:
    a = eight_mb()
    with pycrew.local_controller(workers=1) as ctl:
        # the worker's first tasks may come whole, before it said it reads shared memory
        ctl.push(tasks.add, 0, 0).result(timeout=WAIT)
        shared, writable, first, doubled = ctl.push(tasks.where_argument_lives, a).result(
            timeout=WAIT
        )
        assert shared, "the task's argument is not a map of a segment"
        assert writable
        assert first == 0.0
        assert a[0] == 0.0, "the task's write reached the controller's array"
        expected = a * 2
        expected[0] = 2000.0
        assert np.array_equal(doubled, expected)
        assert tasks.in_segment(doubled), "the result is not a map of the worker's segment"
        doubled[1] = -1.0  # the user's result is an ordinary, writable array
        # small arguments and results still travel in the frame itself
        assert ctl.push(tasks.bump, np.zeros(16)).result(timeout=WAIT).sum() == 16


def test_shared_memory_off_sends_everything_through_the_socket() -> None:
    a = eight_mb()
    with pycrew.local_controller(workers=1, shared_memory=False) as ctl:
        shared, _writable, _first, doubled = ctl.push(tasks.where_argument_lives, a).result(
            timeout=WAIT
        )
        assert not shared
        assert not tasks.in_segment(doubled)
        assert doubled[5] == 10.0
        assert held_by(os.getpid()) == (0, 0)


def test_segments_are_handed_back_and_reused() -> None:
    a = eight_mb()
    with pycrew.local_controller(workers=1) as ctl:
        for i in range(8):
            out = ctl.push(tasks.bump, a).result(timeout=WAIT)
            assert out[i] == a[i] + 1
            del out
        conn = only_worker(ctl)
        # the results' maps go back to the worker once the user let go of them
        wait_until(lambda: not conn.peer.maps, 10, "the results' maps to be let go of")  # type: ignore[attr-defined]
        # eight arguments, but the worker handed each back after its task: reused
        assert conn.segments.held() <= 2  # type: ignore[attr-defined]
        # the worker's own, reused the same way: its spares, once its results went back
        worker = ctl.pids()[0]
        wait_until(lambda: 1 <= held_by(worker)[0] <= 2, 10, "the worker to keep two spares")


def test_spare_segments_are_capped_across_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycrew._dispatcher import _sharing

    monkeypatch.setattr(_sharing, "SPARE_BYTES_MAX", 12 * MB)
    with pycrew.local_controller(workers=2) as ctl:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, WAIT, "two workers")
        futures = [ctl.push(tasks.pid_of, eight_mb()) for _ in range(6)]
        assert len({f.result(timeout=WAIT) for f in futures}) >= 1
        # each 8 MB segment came back as a spare; above 12 MB together, they go
        wait_until(lambda: held_by(os.getpid())[0] <= 1, 10, "the spares over the cap to go")
        assert ctl.push(tasks.bump, eight_mb()).result(timeout=WAIT)[3] == 4.0  # and on


def test_a_worker_that_leaves_after_its_result_sends_it_whole() -> None:
    # its segments would end with it, maybe before the controller opened them:
    # the last result of a worker goes through the socket
    a = eight_mb()
    with pycrew.local_controller(workers=1, tasks_max=1) as ctl:
        outs = [ctl.push(tasks.bump, a).result(timeout=WAIT) for _ in range(4)]
    assert all(out[9] == 10.0 for out in outs)


def test_a_result_the_user_keeps_stays_intact_while_others_come() -> None:
    a = eight_mb()
    with pycrew.local_controller(workers=1) as ctl:
        kept = [ctl.push(tasks.bump, a + i).result(timeout=WAIT) for i in range(12)]
        for i, out in enumerate(kept):
            assert out[7] == a[7] + i + 1, "a kept result was overwritten by a later one"
        # each is a map of its own, and none holds a file descriptor open here
        fds, maps = held_by(os.getpid())
        assert maps >= 12
        assert fds <= 3  # the segments of the arguments (spares), not one per result


def test_no_segment_outlives_a_worker_killed_mid_task(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = ctl.push(os.getpid).result(timeout=WAIT)
        future = ctl.push(tasks.hold_array_until, eight_mb(), str(gate))
        wait_until(lambda: (tmp_path / "gate.started").exists(), WAIT, "the task to start")
        assert held_by(pid)[1] >= 1  # the worker maps the argument
        assert held_by(os.getpid())[0] >= 1  # lent by the controller
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(pycrew.TaskCrashError):
            future.result(timeout=WAIT)
        wait_until(lambda: held_by(os.getpid()) == (0, 0), 10, "the lent segments to close")
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # and it serves on


def test_terminate_with_segments_in_flight_leaves_none(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ctl = pycrew.local_controller(workers=2, seconds_interval=0.05)
    try:
        futures = [ctl.push(tasks.hold_array_until, eight_mb(), str(gate)) for _ in range(4)]
        wait_until(lambda: (tmp_path / "gate.started").exists(), WAIT, "a task to start")
    finally:
        with pytest.warns(pycrew.CrewWarning, match="cancelled 4 unfinished tasks"):
            ctl.terminate()
    assert all(f.record(timeout=WAIT).status in ("cancel", "crash") for f in futures)
    assert held_by(os.getpid()) == (0, 0)


_KILLED_SCRIPT = """
import os, sys, time
import numpy as np
import pycrew
from tests.helpers import tasks

ctl = pycrew.local_controller(workers=1, seconds_interval=0.05)
worker = ctl.push(os.getpid).result(timeout=60)
future = ctl.push(tasks.hold_array_until, np.ones(1 << 23), sys.argv[1])
while not os.path.exists(sys.argv[1] + ".started"):
    time.sleep(0.01)
print(worker, flush=True)
time.sleep(600)
"""


def test_a_killed_controller_leaves_no_segment_behind(tmp_path: Path) -> None:
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    gate = str(tmp_path / "gate")
    with controller_script(tmp_path / "controller.py", _KILLED_SCRIPT, gate) as (script, pids):
        (worker,) = pids
        assert held_by(worker)[1] >= 1
        script.kill()  # SIGKILL: the controller can clean nothing up
        script.wait(WAIT)
        wait_until(lambda: not alive(worker), 15, "the orphaned worker to end")
    # a memfd has no name: with its holders gone nothing is left, in /dev/shm or elsewhere
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) <= shm_before


# ------------------------------------------------------------------ refusals
def test_a_worker_whose_probe_does_not_check_out_gets_no_shared_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = _shm.Probe()
    try:
        wrong = [probe.fd, os.urandom(16).hex()]  # not the token it holds
        with pycrew.local_controller(workers=1) as ctl, peers.fake_worker(ctl, shm=wrong) as fake:
            assert "shm" not in fake.welcome
            caplog.set_level(logging.INFO, logger="pycrew.dispatcher")
            fake.sock.sendall(peers.frame(Kind.SHM_READY, b""))
            assert fake.closed()
            # logged once the connection is closed
            wait_until(lambda: "not offered shared memory" in caplog.text, 10, "the reason")
            assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
    finally:
        probe.close()


def test_a_shared_buffer_from_a_worker_that_did_not_agree_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segments = _shm.Segments()
    try:
        with pycrew.local_controller(workers=1) as ctl:
            caplog.set_level(logging.INFO, logger="pycrew.dispatcher")
            with real_worker_busy(ctl, tmp_path), peers.fake_worker(ctl) as fake:
                future = ctl.push(tasks.add, 1, 1)
                task_id = fake.next_task()  # no probe offered, yet it answers in a segment
                pieces = segments.share(peers.result_pieces(task_id, np.ones(MB)))
                fake.sock.sendall(b"".join(bytes(p) for p in pieces))
                assert fake.closed()
            assert "did not agree" in caplog.text
            with pytest.raises(pycrew.TaskCrashError, match="did not agree"):
                future.result(timeout=WAIT)  # it ran there: its worker broke the protocol
            assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2  # the others serve on
    finally:
        segments.close()


def _shared_result(task_id: int, fd: int, nbytes: int) -> bytes:
    """A RESULT whose one buffer is said to be ``nbytes`` in our descriptor ``fd``."""
    outcome = ("success", pickle_buffer_marker(), None, None, None, 0.0, None, None, None)
    body, buffers = _pickling.dumps(outcome)
    assert len(buffers) == 1
    meta = _frames.RESULT_HEAD.pack(task_id, 0, 0, 0.0) + body
    head = HEADER.pack(Kind.RESULT, 0, 1, len(meta)) + LENGTH.pack(nbytes | _shm.SHARED)
    return head + meta + _shm.REF.pack(fd)


def pickle_buffer_marker() -> object:
    return np.ones(MB // 8)  # one out-of-band buffer of 1 MiB


def _plain_memfd(size: int, seal: bool) -> int:
    fd = os.memfd_create(_shm.NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    return fd


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("a regular file", "not one of pycrew's segments"),
        ("the probe", "not one of pycrew's segments"),
        ("an unsealed segment", "may shrink"),
        ("a short segment", "smaller than its frame says"),
        ("no such descriptor", "cannot open"),
    ],
)
def test_a_shared_buffer_that_is_not_a_sound_segment_is_refused(
    what: str, why: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = _shm.Probe()
    opened: list[int] = []
    try:
        if what == "a regular file":
            path = tmp_path / "plain"
            path.write_bytes(b"\0" * MB)
            fd = os.open(path, os.O_RDONLY)
        elif what == "the probe":
            fd = probe.fd
        elif what == "an unsealed segment":
            fd = _plain_memfd(MB, seal=False)
        elif what == "a short segment":
            fd = _plain_memfd(MB // 2, seal=True)
        else:
            fd = 999_999  # above any descriptor the process has open
        if what != "the probe" and what != "no such descriptor":
            opened.append(fd)
        with pycrew.local_controller(workers=1) as ctl:
            caplog.set_level(logging.INFO, logger="pycrew.dispatcher")
            fake_joins = peers.fake_worker(ctl, shm=probe.offer(), pid=os.getpid())
            with real_worker_busy(ctl, tmp_path), fake_joins as fake:
                assert "shm" in fake.welcome  # it proved we can read its segments
                fake.sock.sendall(peers.frame(Kind.SHM_READY, b""))  # ours go by socket
                future = ctl.push(tasks.add, 2, 3)
                task_id = fake.next_task()
                fake.sock.sendall(_shared_result(task_id, fd, MB))
                assert fake.closed()
            assert why in caplog.text
            with pytest.raises(pycrew.TaskCrashError, match="broke the protocol"):
                future.result(timeout=WAIT)
            assert ctl.push(tasks.add, 2, 3).result(timeout=WAIT) == 5  # the others serve on
    finally:
        probe.close()
        for fd in opened:
            os.close(fd)


def test_a_fake_worker_that_shares_properly_is_read_and_answered(tmp_path: Path) -> None:
    """The protocol as a worker speaks it: a result in a segment, then SHM_DONE back."""
    probe = _shm.Probe()
    segments = _shm.Segments()
    try:
        with pycrew.local_controller(workers=1) as ctl:
            fake_joins = peers.fake_worker(ctl, shm=probe.offer(), pid=os.getpid())
            with real_worker_busy(ctl, tmp_path), fake_joins as fake:
                pid, *offer = fake.welcome["shm"]
                assert pid == os.getpid()
                assert _shm.check_probe(pid, offer)
                fake.sock.sendall(peers.frame(Kind.SHM_READY, b""))
                future = ctl.push(tasks.add, 2, 3)
                task_id = fake.next_task()
                value = np.arange(MB // 8, dtype=np.float64)
                pieces = segments.share(peers.result_pieces(task_id, value))
                assert segments.held() == 1
                fake.sock.sendall(b"".join(bytes(p) for p in pieces))
                got = future.result(timeout=WAIT)
                assert np.array_equal(got, value)
                del got, future
                kind, meta, _ = fake.frame(WAIT)
                while kind != Kind.SHM_DONE:
                    kind, meta, _ = fake.frame(WAIT)
                (fd,) = struct.unpack("<I", meta)
                assert fd in segments.lent
                segments.done(meta)
                assert not segments.lent
                assert len(segments.spares) == 1
    finally:
        segments.close()
        probe.close()
