"""Shared fixtures: a leak check after every test, and small controller factories."""

from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

# Workers import test task functions as ``tests.tasks``.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)
# The record of launched workers goes to a folder of this test run, not the user's.
os.environ.setdefault("PYCREW_STATE_DIR", tempfile.mkdtemp(prefix="pycrew-state-"))


def _workers() -> list[psutil.Process]:
    """pycrew worker processes started by this test session (children of this process)."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = proc.cmdline()
            if "pycrew" in cmd and "worker" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a worker process or a pycrew thread behind."""
    yield
    import threading

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        procs = _workers()
        threads = [t for t in threading.enumerate() if t.name.startswith("pycrew-")]
        if not procs and not threads:
            return
        time.sleep(0.05)
    for proc in procs:
        proc.kill()
    pytest.fail(f"leaked worker processes {[p.pid for p in procs]} or threads {threads}")


@pytest.fixture
def controller() -> Iterator[pycrew.Controller]:
    """A 2-worker local controller, terminated after the test."""
    ctl = pycrew.local_controller(workers=2, seconds_interval=0.05)
    try:
        yield ctl
    finally:
        ctl.terminate()


def wait_until(condition, seconds: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def address(ctl: pycrew.Controller) -> tuple[str, int]:
    """The (host, port) a started controller listens on."""
    host, _, port = ctl.url.split("://", 1)[1].rpartition(":")
    return host, int(port)


def read_until_closed(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """Everything the peer sends until it closes; fail if it is still open after ``seconds``."""
    deadline = time.monotonic() + seconds
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {seconds} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
