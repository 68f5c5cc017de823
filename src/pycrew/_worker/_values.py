"""Values on the wire: a task's result as it leaves, and the results of other
tasks that a task takes as inputs, put where their futures were.

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

from .._wire import _frames, _pickling
from ._evaluate import ERROR, SUCCESS, describe

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


class Kept:
    """Results this worker keeps, as it sent them, for tasks that take them and may
    run here (the controller's KEEP, until its FORGET).

    A task gets a kept result as it would get it from the wire: unpickled from
    copies of its bytes, so no two tasks share (and change) one object.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: ids of tasks whose results the controller asked this worker to keep
        self.wanted: set[int] = set()
        self.results: dict[int, tuple[bytes, list[Any]]] = {}

    def want(self, task_id: int) -> None:
        with self.lock:
            self.wanted.add(task_id)

    def forget(self, task_id: int) -> None:
        with self.lock:
            self.wanted.discard(task_id)
            self.results.pop(task_id, None)

    def store(self, task_id: int, meta: bytes, bufs: list[Any]) -> bool:
        """Keep a success's RESULT if it is wanted; whether it is kept."""
        with self.lock:
            if task_id not in self.wanted:
                return False
            self.results[task_id] = (meta, bufs)
            return True

    def pieces(self, task_id: int) -> Sequence[Any]:
        with self.lock:
            found = self.results.get(task_id)
        if found is None:
            raise LookupError(f"the result of task {task_id} was not kept on this worker")
        meta, bufs = found
        return (meta, *[bytearray(buf) for buf in bufs])


def load(groups: Sequence[Sequence[Any] | int], kept: Kept | None = None) -> list[Any]:
    """The values of a task's inputs: each is a success's RESULT meta and buffers,
    or the id of a result this worker kept."""
    values = []
    for group in groups:
        if isinstance(group, int):
            if kept is None:
                raise LookupError("a kept result was named where none is kept")
            group = kept.pieces(group)
        meta = memoryview(group[0]).cast("B")
        outcome = _pickling.loads(meta[_frames.RESULT_HEAD.size :], group[1:])
        values.append(outcome[1])
    return values


def unpickle(
    meta: bytes | memoryview,
    bufs: Sequence[Any],
    offset: int,
    groups: Sequence[Sequence[Any] | int],
    kept: Kept | None = None,
) -> Any:
    """A TASK_INPUTS frame's payload, its inputs' values in their places."""
    values = load(groups, kept)
    with current(values):
        return _pickling.loads(memoryview(meta)[_frames.TASK_HEAD.size + offset :], bufs)


@contextlib.contextmanager
def current(values: list[Any]) -> Iterator[None]:
    """The values ``value()`` hands out while a payload unpickles."""
    _CURRENT.values = values
    try:
        yield
    finally:
        _CURRENT.values = None


def result_message(
    task_id: int,
    last: bool,
    outcome: tuple[Any, ...],
    bytes_max: int,
    serializers: _pickling.Serializers | None = None,
    kept: Kept | None = None,
) -> tuple[bytes, list[memoryview]]:
    """A RESULT frame's meta and buffers; a result that cannot travel becomes an error.

    A success the controller asked to keep (``kept``) stays here too, as sent,
    and its RESULT says so (flag KEPT).
    """
    ran = outcome[5] or 0.0
    flags = _frames.LAST if last else 0
    head = _frames.RESULT_HEAD.pack(task_id, flags, outcome[0] != SUCCESS, ran)
    try:
        body, out_bufs = _pickling.dumps(outcome, serializers)
        reason = None
    except BaseException as exc:  # a result's __reduce__ is the task's code, SystemExit too
        reason = f"the result could not be pickled: {describe(exc)}"
    else:
        problem = _frames.too_large(len(head) + len(body), out_bufs, bytes_max)
        if problem is not None:
            reason = f"the result is {problem}"
    if reason is not None:
        head = _frames.RESULT_HEAD.pack(task_id, flags, 1, ran)
        fallback = (ERROR, None, reason, None, *outcome[4:9])
        body, out_bufs = _pickling.dumps(fallback)
    elif kept is not None and outcome[0] == SUCCESS and kept.store(task_id, head + body, out_bufs):
        head = _frames.RESULT_HEAD.pack(task_id, flags | _frames.KEPT, 0, ran)
    return head + body, out_bufs


def unrun(status: str, error: str) -> tuple[Any, ...]:
    """The outcome of a task that did not run to its end here: nothing was measured.

    Every outcome is ``(status, value, error, trace, warnings, seconds, seed,
    memory_peak, cpu_seconds)``.
    """
    return (status, None, error, None, None, None, None, None, None)
