"""Tasks for the resource-shape tests: importable, so workers can unpickle them."""

from __future__ import annotations

import os
import time
from pathlib import Path

VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYCREW_MEMORY_MAX",
)


def environment() -> dict[str, str | None]:
    """What a task sees of its worker's shape, and which worker it ran on."""
    seen: dict[str, str | None] = {name: os.environ.get(name) for name in VARIABLES}
    seen["pid"] = str(os.getpid())
    return seen


def hold(folder: str, label: str, seconds: float = 60.0) -> dict[str, str | None]:
    """Say it started (a file), then wait for ``go`` to appear (bounded)."""
    here = Path(folder)
    (here / f"started-{label}").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    deadline = time.monotonic() + seconds
    while not (here / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("nobody said go")
        time.sleep(0.01)
    return environment()


def environment_of(_: object) -> dict[str, str | None]:
    """``environment()`` for map and walk, which give each task an item."""
    return environment()


def slurm_allocation(_: object) -> dict[str, str | None]:
    """What SLURM gave the job this task runs in."""
    names = (
        "SLURM_JOB_ID",
        "SLURM_CPUS_PER_TASK",
        "SLURM_MEM_PER_NODE",
        "SLURM_JOB_GPUS",
        "SLURM_GPUS_ON_NODE",
        "CUDA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
    )
    seen: dict[str, str | None] = {name: os.environ.get(name) for name in names}
    seen["pid"] = str(os.getpid())
    return seen


def grid_engine_slots(_: object) -> dict[str, str | None]:
    """What Grid Engine gave the job this task runs in."""
    names = ("JOB_ID", "NSLOTS", "PE", "OMP_NUM_THREADS")
    seen: dict[str, str | None] = {name: os.environ.get(name) for name in names}
    seen["pid"] = str(os.getpid())
    return seen
