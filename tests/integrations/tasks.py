"""Task functions for the integration tests, imported by workers by name."""

from __future__ import annotations

import os
import sys
from typing import Any

#: what initialize() left on this worker
STATE: dict[str, Any] = {}


def initialize(value: str) -> None:
    """A Parallel initializer: counts its runs on this worker."""
    STATE["value"] = value
    STATE["runs"] = STATE.get("runs", 0) + 1


def initialized(i: int) -> tuple[int, object, int, int]:
    """``(i, the initializer's value, how often it ran here, this pid)``."""
    return i, STATE.get("value"), STATE.get("runs", 0), os.getpid()


def sklearn_loaded(i: int) -> tuple[int, bool, int]:
    """``(i, whether this worker had scikit-learn imported already, its pid)``; imports it."""
    loaded = "sklearn" in sys.modules
    import sklearn  # noqa: F401

    return i, loaded, os.getpid()


def write(shared: Any, key: int) -> tuple[int, int]:
    """Write into a multiprocessing.Manager() dict; ``(pid, parent pid)``."""
    shared[key] = os.getpid()
    return os.getpid(), os.getppid()


def pid(i: int) -> int:
    return os.getpid()


def fail_first_time(marker: str) -> None:
    """An initializer that fails on the first worker to run it, and works after."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise RuntimeError("the first worker's set-up fails")


def register_worker(shared: Any) -> None:
    """An initializer given a multiprocessing.Manager() dict: notes this worker in it."""
    shared[os.getpid()] = "initialized"
