"""Task functions for the joblib tests, importable by workers without scikit-learn."""

from __future__ import annotations

import os
import time


class BatchError(ValueError):
    """A task's own exception type, which the caller must see as itself."""


def square_and_pid(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def fail_at(i: int, bad: int) -> int:
    if i == bad:
        raise BatchError(f"item {i} is bad")
    return i


def sleep_unless_bad(i: int, bad: int, seconds: float) -> int:
    """The bad item fails at once; the others sleep (they are to be cancelled)."""
    if i == bad:
        raise BatchError(f"item {i} is bad")
    time.sleep(seconds)
    return i


def nested_sum(n: int) -> int:
    """A joblib.Parallel inside a task: joblib gives it the nested backend (threads)."""
    import joblib

    return sum(joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(n)))
