"""The joblib backend keeps its shared controllers warm between calls: end them after each test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycrew._integrations._joblib_pool import end_shared_controllers

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def no_shared_controllers() -> Iterator[None]:
    """Torn down before the leak check: no shared controller, worker or timer outlives a test."""
    yield
    end_shared_controllers()
