"""Task functions importable by workers (tests/ is on the workers' path)."""

from __future__ import annotations

import os
import random
import signal
import time
import warnings


def add(x: int, y: int) -> int:
    return x + y


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail(message: str) -> None:
    raise ValueError(message)


def warn_and_fail(message: str) -> None:
    warnings.warn("this is a warning", UserWarning, stacklevel=1)
    raise RuntimeError(message)


def warn_then(value: int) -> int:
    warnings.warn(f"warning {value}", UserWarning, stacklevel=1)
    return value


def draw() -> float:
    return random.random()


def suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def env(name: str) -> str | None:
    return os.environ.get(name)


def set_global(name: str, value: int) -> bool:
    import __main__

    setattr(__main__, name, value)
    return True


def has_global(name: str) -> bool:
    import __main__

    return hasattr(__main__, name)


def mark_then_sleep(path: str, seconds: float) -> float:
    """Leave a file behind, so a test knows the task really runs, then sleep."""
    open(path, "w").close()
    time.sleep(seconds)
    return seconds


def mark_then_spin(path: str) -> int:
    """Leave a file behind, then hold the GIL in C code for a very long time."""
    open(path, "w").close()
    return sum(range(10**13))
