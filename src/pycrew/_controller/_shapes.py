"""A task's ``resources=``: merged with its controller's default, and checked at push
against what any worker of the controller can ever have.

```
 push(..., resources={"gpus": 1}) ─► shape_for(ctl, asked) ─► Task.shape
      │ merged over Controller(resources=...)     │ the launcher's machine() (local: this
      │                                           │ machine; clusters: unknown, the
      ▼                                           ▼ scheduler judges)
 an impossible shape: ArgumentError now, never a task that waits forever
```
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .._dispatcher._shapes import Partition
from .._errors import ArgumentError
from .._resources import Resources, merged, resources

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._engines._launcher import Launcher
    from ._controller import Controller

P = ParamSpec("P")
T = TypeVar("T")


def capacity_of(launcher: Launcher) -> Resources | None:
    """The most any worker of this launcher can have (None: not known here)."""
    machine = getattr(launcher, "machine", None)
    found: Resources | None = machine() if machine is not None else None
    return found


def shape_for(ctl: Controller, asked: object) -> Resources | None:
    """A task's shape: ``asked`` over the controller's default, checked against what its
    workers can have. None: no shape (any worker, today's path)."""
    shape = merged(ctl.resources, resources(asked))
    if shape is not None:
        check_fits(ctl, shape)
    return shape


def check_fits(ctl: Controller, shape: Resources) -> None:
    capacity = capacity_of(ctl.launcher)
    if capacity is None:
        return
    short = capacity.shortfall(shape)
    if short:
        raise ArgumentError(
            f"no worker of controller {ctl.name!r} can have what this task asks for: "
            f"{'; '.join(short)} on this machine (give the ids of its GPUs with gpus=[...], "
            "and named resources with capacity={...})"
        )


def route(members: Sequence[Controller], fn: Any, asked: object) -> Controller:
    """The group member a task that asks for ``asked`` goes to, when it names none:
    the first whose own default shape covers it (a member per profile, crew's way),
    else the first whose machine can have it, else the first whose scheduler
    judges (a cluster), else an error naming what each one lacks."""
    fn, asked = unwrap(fn, asked)
    shape = resources(asked)
    if shape is None:
        return members[0]
    for member in members:
        if member.resources is not None and member.resources.covers(shape):
            return member
    judged: Controller | None = None
    lacking = []
    for member in members:
        capacity = capacity_of(member.launcher)
        if capacity is None:
            judged = judged or member
            continue
        short = capacity.shortfall(merged(member.resources, shape) or shape)
        if not short:
            return member
        lacking.append(f"{member.name!r} lacks {', '.join(short)}")
    if judged is not None:
        return judged
    raise ArgumentError(
        f"no controller of this group can have what this task asks for ({shape}): "
        + "; ".join(lacking)
    )


def partition_for(launcher: Launcher) -> Partition | None:
    """How a launcher's machine is shared among shaped workers (None: each worker is a
    job of its own, its scheduler's to place)."""
    source = getattr(launcher, "machine_and_gpus", None)
    return Partition(source) if source is not None else None


class WithResources(Generic[P, T]):
    """A callable that carries the resources its tasks ask for (``pycrew.with_resources``).

    Calling it calls the function; an ``Executor`` (and ``push``, ``walk``,
    ``map``) that is given it as the task's function asks for its resources.
    """

    __slots__ = ("__wrapped__", "resources")

    def __init__(self, fn: Callable[P, T], shape: Resources | None) -> None:
        if not callable(fn):
            raise ArgumentError(f"with_resources() takes a callable, not {type(fn).__name__}")
        self.__wrapped__ = fn
        self.resources = shape

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"with_resources({self.__wrapped__!r}, {self.resources})"

    def __reduce__(self) -> tuple[Any, ...]:
        # the worker runs the function itself: the wrapper is the controller's
        return (functools.partial, (self.__wrapped__,))


def with_resources(fn: Callable[P, T], /, **amounts: Any) -> WithResources[P, T]:
    """Mark ``fn`` so that every task of it asks for ``amounts``
    (``cpus``, ``memory``, ``gpus``, named counts).

    The way to give per-task resources through ``Executor.submit`` and
    ``Executor.map``, whose keyword arguments all go to ``fn``::

        train_on_gpu = pycrew.with_resources(train, gpus=1, memory="16 GB")
        future = executor.submit(train_on_gpu, config)
    """
    return WithResources(fn, resources(amounts, "with_resources()"))


def unwrap(fn: Any, asked: object) -> tuple[Any, object]:
    """The function to run and what it asks for: a ``with_resources`` wrapper's own
    resources, under any ``resources=`` given beside it."""
    if isinstance(fn, WithResources):
        inner = fn.resources
        outer = resources(asked)
        return fn.__wrapped__, merged(inner, outer)
    return fn, asked
