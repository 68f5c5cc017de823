"""Shared fixtures: a leak check after every test, and small controller factories."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew

if TYPE_CHECKING:
    from collections.abc import Iterator

# Workers import test task functions as ``tests.tasks``.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)


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
