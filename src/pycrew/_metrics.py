"""Resource metrics of workers: what to sample, and where it goes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metrics:
    """Ask every worker to sample its own process while it runs.

    Args:
        path: a directory (one file per worker is written there), or
            ``"/dev/stdout"`` / ``"/dev/stderr"`` to mix the lines into the
            worker's own log.
        seconds_interval: seconds between samples.
    """

    path: str | os.PathLike[str]
    seconds_interval: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise TypeError(f"path must be a directory or /dev/stdout, got {self.path!r}")
        seconds = self.seconds_interval
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds_interval must be a number, got {seconds!r}")
        if not seconds > 0 or math.isinf(seconds):
            raise ValueError(f"seconds_interval must be a positive number, got {seconds!r}")

    def settings(self) -> dict[str, Any]:
        """What the workers are sent."""
        return {"path": os.fspath(self.path), "seconds_interval": float(self.seconds_interval)}
