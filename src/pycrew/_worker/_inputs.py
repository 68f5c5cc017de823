"""A task's inputs: the results of other tasks, put where their futures were.

```
 controller: TaskFuture in a task's arguments ─ pickled as value(slot) ─┐
   its result's bytes, forwarded unread ─► TASK_INPUTS frame ─► worker  │
 worker: load(groups) ─► the values, by slot ─► the payload unpickles ◄─┘
         with each value(slot) call returning its input's value
```

Values are loaded before the payload, and stay current only while it
unpickles: a future in a list, a dict or an object of the user's becomes
its value wherever pickle meets it, with no walk over the arguments.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from .._wire import _frames

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

_CURRENT = threading.local()


def value(slot: int) -> Any:
    """The value of input ``slot`` of the task being unpickled (what a future pickles as)."""
    values: list[Any] | None = getattr(_CURRENT, "values", None)
    if values is None or not 0 <= slot < len(values):
        raise LookupError(
            f"input {slot} of a task is not here: a pycrew future is a task's argument only"
        )
    return values[slot]


def load(groups: Sequence[Sequence[Any]]) -> list[Any]:
    """The values of a task's inputs: each is a success's RESULT meta and buffers."""
    values = []
    for group in groups:
        meta = memoryview(group[0]).cast("B")
        outcome = _frames.loads(meta[_frames.RESULT_HEAD.size :], group[1:])
        values.append(outcome[1])
    return values


def unpickle(
    meta: bytes | memoryview, bufs: Sequence[Any], offset: int, groups: Sequence[Sequence[Any]]
) -> Any:
    """A TASK_INPUTS frame's payload, its inputs' values in their places."""
    values = load(groups)
    with current(values):
        return _frames.loads(memoryview(meta)[_frames.TASK_HEAD.size + offset :], bufs)


@contextlib.contextmanager
def current(values: list[Any]) -> Iterator[None]:
    """The values ``value()`` hands out while a payload unpickles."""
    _CURRENT.values = values
    try:
        yield
    finally:
        _CURRENT.values = None
