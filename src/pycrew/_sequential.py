"""Placeholder."""

from __future__ import annotations

from typing import Any


def sequential_controller(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError
