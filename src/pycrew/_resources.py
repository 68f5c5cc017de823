"""Resource shapes: what a task asks for, and what a worker has.

```
 push(..., resources={"gpus": 1, "memory": "8 GB"}) ─► Resources(gpus=1, memory=8e9)
        │                                                     │ (hashable: a key)
        ▼                                                     ▼
 validated against the controller's capacity      autoscaler: demand per shape
 (a shape no worker can have fails at push)       dispatcher: a worker whose shape covers it
```

One value type serves both sides: a task's *need* and a worker's *shape*.
A worker launched for a need has exactly that shape, so the common case
(one shape per kind of task) matches by equality; ``covers`` decides when a
bigger worker may take a smaller task. Zero means "not asked for".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: the names every engine knows; any other name is a custom count (as Dask's)
BUILT_IN = ("cpus", "memory", "gpus")

#: thread-count variables of the usual numeric libraries, set to a worker's cpus
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
#: where each kind of GPU runtime reads the devices a process may see
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
#: a worker's memory limit in bytes, read by its watchdog
MEMORY_ENV = "PYCREW_MEMORY_MAX"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Resources:
    """A resource shape: cores, bytes of memory, GPUs and named counts.

    A task's ``resources=`` becomes one of these; so does each worker's
    shape. Zero means "not asked for". Hashable, so a shape is a key.
    """

    cpus: int = 0
    memory: int = 0
    gpus: int = 0
    #: named counts, sorted by name (``{"license": 1}`` is ``(("license", 1),)``)
    custom: tuple[tuple[str, int], ...] = ()

    def covers(self, need: Resources) -> bool:
        """Whether a worker of this shape can run a task that asks for ``need``."""
        return not self.shortfall(need)

    def shortfall(self, need: Resources) -> list[str]:
        """What ``need`` asks for beyond this shape, in words (empty: it fits)."""
        short = []
        if need.cpus > self.cpus:
            short.append(f"cpus={need.cpus} (at most {self.cpus})")
        if need.memory > self.memory:
            short.append(f"memory={size_text(need.memory)} (at most {size_text(self.memory)})")
        if need.gpus > self.gpus:
            short.append(f"gpus={need.gpus} (at most {self.gpus})")
        have = dict(self.custom)
        for name, count in need.custom:
            if count > have.get(name, 0):
                short.append(f"{name}={count} (at most {have.get(name, 0)})")
        return short

    def as_dict(self) -> dict[str, int]:
        """The asked-for amounts by name (what ``resources=`` would take back)."""
        out = {name: getattr(self, name) for name in BUILT_IN if getattr(self, name)}
        out.update(self.custom)
        return out

    def __str__(self) -> str:
        parts = [
            f"{name}={size_text(value) if name == 'memory' else value}"
            for name, value in self.as_dict().items()
        ]
        return ", ".join(parts) or "nothing"

    def environment(self, gpu_ids: Iterable[str] = ()) -> dict[str, str]:
        """Variables a worker of this shape starts with: its thread counts, its GPUs
        (when the launcher assigned some) and its memory limit."""
        env: dict[str, str] = {}
        if self.cpus:
            env.update(dict.fromkeys(THREAD_VARIABLES, str(self.cpus)))
        ids = ",".join(gpu_ids)
        if ids:
            env.update(dict.fromkeys(GPU_VARIABLES, ids))
        if self.memory:
            env[MEMORY_ENV] = str(self.memory)
        return env


def resources(value: object, what: str = "resources") -> Resources | None:
    """Check a ``resources=`` argument: None, a ``Resources``, or a mapping of
    amounts (``{"cpus": 2, "memory": "8 GB", "gpus": 1, "license": 1}``).

    None for a shape that asks for nothing (so that path stays the fast one).
    """
    if value is None:
        return None
    if isinstance(value, Resources):
        shape = value
    elif isinstance(value, dict) or _is_mapping(value):
        shape = _from_mapping(value, what)  # type: ignore[arg-type]
    else:
        raise ArgumentTypeError(
            f"{what} must be a dict such as {{'gpus': 1, 'memory': '8 GB'}}, "
            f"not {type(value).__name__}"
        )
    return shape if shape.as_dict() else None


def _is_mapping(value: object) -> bool:
    return hasattr(value, "keys") and hasattr(value, "__getitem__")


def _from_mapping(value: Mapping[str, Any], what: str) -> Resources:
    amounts: dict[str, int] = {}
    custom: dict[str, int] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ArgumentError(f"{what}: {name!r} is not a resource name (letters, digits, _)")
        if name == "memory":
            amounts[name] = size_bytes(amount, f"{what}['memory']")
            continue
        count = _count(amount, f"{what}[{name!r}]")
        if name in BUILT_IN:
            amounts[name] = count
        elif count:
            custom[name] = count
    return Resources(**amounts, custom=tuple(sorted(custom.items())))


def _count(amount: object, what: str) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        else:
            raise ArgumentTypeError(f"{what} must be a whole number, not {amount!r}")
    if amount < 0:
        raise ArgumentError(f"{what} must be 0 or more, not {amount}")
    return amount


def size_bytes(amount: object, what: str = "memory") -> int:
    """Bytes from an int, or a text such as ``"8 GB"``, ``"512MiB"``, ``"2.5G"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000 and binary ones (KiB,
    MiB, GiB, TiB) of 1024, as the SI says; a bare letter is decimal.
    """
    if isinstance(amount, str):
        match = _SIZE.match(amount)
        unit = _UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ArgumentError(
                f"{what}: {amount!r} is not a size (say 8000000000, '8 GB' or '512 MiB')"
            )
        return int(float(match.group(1)) * unit)
    return _count(amount, what)


def size_text(n: int) -> str:
    """A byte count the way a person reads it ("8 GB", "512 MiB", "1500 B")."""
    exact: tuple[tuple[str, int], ...] = (("TB", 10**12), ("TiB", 2**40), ("GB", 10**9))
    exact += (("GiB", 2**30), ("MB", 10**6), ("MiB", 2**20))
    for unit, factor in exact:
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} B"


def merged(default: Resources | None, asked: Resources | None) -> Resources | None:
    """A task's shape: what it asked for, on top of its controller's default."""
    if default is None:
        return asked
    if asked is None:
        return default
    custom = dict(default.custom)
    custom.update(asked.custom)
    return Resources(
        cpus=asked.cpus or default.cpus,
        memory=asked.memory or default.memory,
        gpus=asked.gpus or default.gpus,
        custom=tuple(sorted(custom.items())),
    )
