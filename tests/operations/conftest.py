"""Fixtures the operations tests share."""

from __future__ import annotations

import os

import pytest

from tests.engines.test_slurm import _cluster_problem


@pytest.fixture
def cluster() -> None:
    """The real SLURM cluster (skipped where there is none, failed under CI's
    ``PYCREW_REQUIRE_SLURM=1``)."""
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SLURM") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SLURM=1, but {problem}")
        pytest.skip(problem)
