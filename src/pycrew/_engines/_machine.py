"""What this machine has for workers with a resource shape: cores, memory, GPUs.

GPUs are found, in order, from the user's ``gpus=[ids]``, the devices this
process may already see (``CUDA_VISIBLE_DEVICES``, then ROCm's
``ROCR_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES``), then ``nvidia-smi``. The
ids are kept as text: CUDA also accepts ``GPU-<uuid>`` and MIG names.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError
from .._resources import BUILT_IN, GPU_VARIABLES, Resources, resources

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger("pycrew.engines")

#: how long ``nvidia-smi`` may take to list the GPUs
NVIDIA_SMI_SECONDS = 20.0


def check_gpus(gpus: object) -> tuple[str, ...] | None:
    """Check a ``gpus=`` argument: None (find them), or the ids this controller may use."""
    if gpus is None:
        return None
    if isinstance(gpus, (str, bytes)) or not hasattr(gpus, "__iter__"):
        raise ArgumentTypeError(
            f"gpus must be a list of GPU ids such as [0, 1], not {type(gpus).__name__}"
        )
    ids = []
    for gpu in gpus:
        if isinstance(gpu, bool) or not isinstance(gpu, (int, str)) or str(gpu).strip() == "":
            raise ArgumentError(f"gpus: {gpu!r} is not a GPU id (a number or a name)")
        ids.append(str(gpu).strip())
    if len(set(ids)) != len(ids):
        raise ArgumentError(f"gpus: an id appears twice in {ids}")
    return tuple(ids)


def check_capacity(capacity: object) -> Resources | None:
    """Check a ``capacity=`` argument: what the machine has, where it is not found out
    (named counts such as ``{"license": 2}``, or fewer cores or bytes than it has)."""
    if capacity is None:
        return None
    shape = resources(capacity, "capacity")
    if shape is not None and shape.gpus:
        raise ArgumentError("capacity: give GPUs as gpus=[ids], so that each gets its own")
    return shape


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The GPUs this process was limited to, if it was; None: no such limit."""
    environ = os.environ if environ is None else environ
    for name in GPU_VARIABLES:
        value = environ.get(name)
        if value is None:
            continue
        value = value.strip()
        if value in ("", "-1", "NoDevFiles", "none"):
            return ()
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return None


def nvidia_gpus() -> tuple[str, ...]:
    """GPU indices as ``nvidia-smi`` lists them; none where it is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi could not list the GPUs: %s", exc)
        return ()
    if done.returncode != 0:
        log.warning("nvidia-smi could not list the GPUs: %s", done.stderr.strip()[:200])
        return ()
    return tuple(line.strip() for line in done.stdout.splitlines() if line.strip())


def cores() -> int:
    """The cores this process may run on (its affinity, where the system tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_total() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def local_machine(
    gpus: Sequence[str] | None, capacity: Resources | None
) -> tuple[Resources, tuple[str, ...]]:
    """This machine's shape and its GPU ids, ``capacity`` taking precedence."""
    ids = tuple(gpus) if gpus is not None else visible_gpus()
    if ids is None:
        ids = nvidia_gpus()
    found: dict[str, Any] = {"cpus": cores(), "memory": memory_total()}
    custom: tuple[tuple[str, int], ...] = ()
    if capacity is not None:
        found.update({k: v for k, v in capacity.as_dict().items() if k in BUILT_IN})
        custom = capacity.custom
    return Resources(found["cpus"], found["memory"], len(ids), custom), ids
