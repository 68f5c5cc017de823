"""Fixtures the operations tests share."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.engines.test_slurm import _cluster_problem

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def cluster() -> None:
    """The real SLURM cluster (skipped where there is none, failed under CI's
    ``PYCREW_REQUIRE_SLURM=1``)."""
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SLURM") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SLURM=1, but {problem}")
        pytest.skip(problem)


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short state folder of this test alone, which its subprocesses (``pycrew top``,
    say) inherit: a controller's channel lives there."""
    folder = Path(tempfile.mkdtemp(prefix="po-"))
    monkeypatch.setenv("PYCREW_STATE_DIR", str(folder))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
