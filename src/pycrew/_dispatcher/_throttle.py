"""Exponential back-off timer that paces waits and scaling rounds (crew's throttle)."""

from __future__ import annotations

import math
import time

from .._errors import ArgumentError


class Throttle:
    """A deterministic back-off interval between ``seconds_min`` and ``seconds_max``.

    ``poll()`` says whether more than the current interval has passed since the
    last ``True``; the very first poll only records the time, so that a fresh
    throttle lets work accumulate once before acting.
    """

    def __init__(
        self,
        seconds_max: float = 1.0,
        seconds_min: float = 1e-6,
        seconds_start: float | None = None,
        base: float = 2.0,
    ) -> None:
        start = seconds_min if seconds_start is None else seconds_start
        for label, value in (("seconds_max", seconds_max), ("seconds_min", seconds_min)):
            if not value > 0 or math.isnan(value):
                raise ArgumentError(f"{label} must be a positive number, got {value!r}")
        if not base > 1:
            raise ArgumentError(f"base must be greater than 1, got {base!r}")
        if seconds_min > seconds_max:
            raise ArgumentError("seconds_min must not exceed seconds_max")
        if not seconds_min <= start <= seconds_max:
            raise ArgumentError("seconds_start must lie within [seconds_min, seconds_max]")
        self.seconds_max = seconds_max
        self.seconds_min = seconds_min
        self.seconds_start = start
        self.base = base
        self.seconds_interval = start
        self.polled: float | None = None

    def poll(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.polled is None:
            self.polled = now
            return False
        if now - self.polled > self.seconds_interval:
            self.polled = now
            return True
        return False

    def accelerate(self) -> None:
        self.seconds_interval = max(self.seconds_min, self.seconds_interval / self.base)

    def decelerate(self) -> None:
        self.seconds_interval = min(self.seconds_max, self.seconds_interval * self.base)

    def reset(self) -> None:
        self.seconds_interval = self.seconds_start
        self.polled = -math.inf

    def update(self, activity: bool) -> None:
        if activity:
            self.reset()
        else:
            self.decelerate()
