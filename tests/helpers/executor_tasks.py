"""Task functions for the Executor tests, importable by workers (tests/ is on their path)."""

from __future__ import annotations

import os
import time
from typing import Any

#: how many times this process ran ``count_init``, and with which value
inits: list[Any] = []


def count_init(value: Any) -> None:
    inits.append(value)


def init_state() -> tuple[int, list[Any]]:
    """This worker's pid and the initializer calls it saw."""
    return os.getpid(), list(inits)


def broken_init() -> None:
    raise ValueError("error in initializer")


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def wait_file(path: str, seconds: float = 30.0, ballast: bytes = b"") -> bool:
    """True once ``path`` exists; False after ``seconds`` (so a test never hangs).
    ``ballast`` makes the task as large as a test needs (large tasks go only to idle
    workers)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Box:
    """A result that can be weakly referenced."""

    def __init__(self, value: int) -> None:
        self.value = value


def box(value: int) -> Box:
    return Box(value)
