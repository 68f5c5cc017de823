"""Shared fixtures: a leak check after every test, and small controller factories."""

from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers.common import workers

if TYPE_CHECKING:
    from collections.abc import Iterator

# Workers import test task functions as ``tests.helpers.tasks``.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)
# The record of launched workers goes to a folder of this test run, not the user's.
os.environ.setdefault("PYCREW_STATE_DIR", tempfile.mkdtemp(prefix="pycrew-state-"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a worker process or a pycrew thread behind."""
    yield
    import threading

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        procs = workers()
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
