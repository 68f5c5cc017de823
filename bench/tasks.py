"""Task functions that bench.py ships to workers.

They live in an importable module (not in ``__main__``), so every system pickles
them by reference, as it would pickle functions from a user's package. bench.py
puts this folder on ``PYTHONPATH`` for every process it starts.
"""

from __future__ import annotations

import os
import time
from typing import Any


def identity(x: Any) -> Any:
    """Return the argument unchanged (the trivial task)."""
    return x


def arr_sum(a: Any) -> float:
    """Sum a numpy array; the 100 MB payload goes in, 8 bytes come back."""
    return float(a.sum())


def worker_pid(delay: float = 0.0) -> int:
    """Sleep ``delay`` seconds, then return the worker's pid (warm-up check)."""
    if delay > 0:
        time.sleep(delay)
    return os.getpid()


def add(x: Any, y: Any) -> Any:
    """One node of a tree reduction."""
    return x + y


def array_mb(mb: int) -> Any:
    """A fresh numpy array of ``mb`` megabytes (float64 ones)."""
    import numpy as np

    return np.ones(mb * (1 << 20) // 8)


def bump(a: Any) -> Any:
    """A new array one larger everywhere: a step of a chain that passes arrays on."""
    return a + 1


def arr_echo(a: Any) -> Any:
    """Return the array itself: the payload travels to the worker and back."""
    return a


def apply_chunk(fn: Any, items: Any) -> list[Any]:
    """``fn`` over a chunk of items in one task (batching, for systems without a map)."""
    return [fn(x) for x in items]
