"""Task graphs: a task whose arguments hold futures waits here until they end.

```
 push(g, fut_f) ─► pickled: fut_f becomes _values.value(0) ─► Task WAITING (live, not queued)
       └─► watch(): a done callback on each input's future
 each input ends ─► Inputs.done() ─┬─ all succeeded: their RESULT bytes, forwarded as the
                                   │  worker sent them, join the task's frame ─► release():
                                   │  queued now, its timeout counted from here
                                   └─ one did not: the task ends unrun ─► give_up():
                                      cancel for a cancelled input, else error
                                      (DependencyError), and its own dependents after it
```

Nothing here unpickles a result: an intermediate value is bytes in the
controller from the worker that made it to the worker that takes it. Only
an input whose result was already handed to the user (its bytes gone, its
value in a record) is pickled again, from that value.

Failures travel by a work list, not by recursion: a chain of a thousand
dependents of a failed task ends in a loop on the thread that saw it fail.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any

from .._dispatcher._task import WAITING, deadline_in
from .._errors import ArgumentTypeError, DependencyError
from .._results import Status
from .._wire import _frames, _pickling
from .._worker import _values
from .._worker._evaluate import describe
from ._share import input_slot

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._dispatcher._task import Task
    from .._results import TaskResult
    from ._controller import Controller
    from ._futures import TaskFuture

log = logging.getLogger("pycrew.controller")

#: wakes those who wait for a waiting task to be released or to end (the debugging controller)
_SETTLED = threading.Condition()
_LOCAL = threading.local()
#: guards every task's count of inputs still running (a lock each would cost memory)
_COUNTING = threading.Lock()


def reduce_future(future: TaskFuture[Any]) -> tuple[Any, ...]:
    """How a future pickles inside a task's arguments: as its input slot."""
    slot = input_slot(future)
    if slot is None:
        raise ArgumentTypeError(
            f"a future (task {future.name!r}) cannot be pickled: it can only be a task's "
            "argument (push, walk, map, submit), where the task takes its result"
        )
    return _values.value, (slot,)


class Inputs:
    """What a task waits for: the futures whose results it takes, by slot."""

    __slots__ = (
        "base",
        "cause",
        "controller",
        "futures",
        "groups",
        "ids",
        "pending",
        "task",
        "timeout",
    )

    def __init__(
        self, controller: Controller, task: Task, futures: list[TaskFuture[Any]], timeout: Any
    ) -> None:
        self.controller = controller
        self.task = task
        self.futures: Sequence[TaskFuture[Any]] = futures
        self.pending = len(futures)
        self.timeout = timeout
        #: the input that did not succeed, once one did not
        self.cause: TaskFuture[Any] | None = None
        #: by slot: the id of the input task if a worker may keep its result for
        #: this one (the dispatcher's ``want``), else 0
        self.ids: tuple[int, ...] = ()
        #: once released: the task's frame without its inputs, and each input's pieces
        self.base: Any = None
        self.groups: list[Sequence[Any]] | None = None

    def frame_for(self, here: set[int]) -> tuple[Any, ...]:
        """The task's frame for a worker that keeps the inputs whose ids are ``here``."""
        assert self.groups is not None, "a released task keeps its inputs until it ends"
        named: list[Sequence[Any] | int] = [
            i if i in here else group for i, group in zip(self.ids, self.groups, strict=True)
        ]
        return _frames.with_inputs(self.base, named)[0]

    def forget_values(self) -> None:
        """The task ended: its inputs' bytes go (its record may outlive them)."""
        self.base = self.groups = None

    def done(self, _: object) -> None:
        """An input ended (a done callback: on the thread that settled it)."""
        with _COUNTING:
            self.pending -= 1
            if self.pending:
                return
        ready: collections.deque[Inputs] | None = getattr(_LOCAL, "ready", None)
        if ready is not None:
            ready.append(self)  # a loop further up this thread takes it
            return
        _LOCAL.ready = ready = collections.deque([self])
        try:
            while ready:
                ready.popleft().settle()
        finally:
            _LOCAL.ready = None

    def settle(self) -> None:
        """Every input ended: release the task, or end it unrun."""
        task = self.task
        try:
            if task.state == WAITING:
                self._settle()
        except BaseException as exc:  # nothing may leave the task waiting forever
            log.exception("task %r could not take its inputs", task.name)
            self._give_up(Status.ERROR, f"its inputs could not be given to it: {describe(exc)}")
        finally:
            self.futures = ()
            with _SETTLED:
                _SETTLED.notify_all()

    def _settle(self) -> None:
        ctl = self.controller
        groups: list[Sequence[Any]] = []
        for future in self.futures:
            upstream = future._where[1]
            status = _failed(upstream)
            if status is not None:
                self.cause = future
                outcome = upstream.outcome
                why = f"input task {upstream.name!r} ended with status {status}"
                if outcome is Status.CANCEL:
                    self._give_up(Status.CANCEL, why)
                else:
                    self._give_up(Status.ERROR, f"DependencyError: {why}, so this task did not run")
                return
            groups.append(_result_pieces(ctl, upstream))
        task = self.task
        frame, size = _frames.with_inputs(task.frame, groups)
        self.base, self.groups = task.frame, groups
        if size > ctl.bytes_max:
            self._give_up(
                Status.ERROR,
                f"with its inputs the task is {size} bytes, more than bytes_max ({ctl.bytes_max})",
            )
            return
        extra = max(size - task.size, 0)  # the inputs' bytes, held for it now
        task.deadline = deadline_in(self.timeout)  # the wait for inputs is not the task's
        dispatcher = ctl._dispatcher
        if dispatcher is not None and dispatcher.release(task, frame, size, extra):
            scaler = ctl._scaler
            if scaler is not None and scaler.short:
                scaler.poke()

    def _give_up(self, status: Status, why: str) -> None:
        dispatcher = self.controller._dispatcher
        if dispatcher is not None:
            dispatcher.give_up(self.task, status, why)

    def wait(self) -> None:
        """Block until the task is released or ends (the debugging controller's run)."""
        with _SETTLED:
            _SETTLED.wait_for(lambda: self.task.state != WAITING)


def _failed(upstream: Task) -> str | None:
    """How an ended input failed, or None if it succeeded.

    A success whose result could not be unpickled when its record was built
    here has no bytes left: its record's status counts.
    """
    outcome = upstream.outcome
    if outcome is not None:
        return outcome.value
    if upstream.failed:
        return Status.ERROR.value
    record = upstream.record if upstream.raw is None else None
    if record is not None and record.status is not Status.SUCCESS:
        return str(record.status.value)
    return None


def _result_pieces(ctl: Controller, upstream: Task) -> Sequence[Any]:
    """An input's result as its worker sent it: the RESULT meta, then its buffers.

    A result already handed over (its bytes dropped once its record was
    built) is pickled again from the record's value.
    """
    raw = upstream.raw
    if raw is None:
        record = upstream.record
        assert record is not None, "a resolved task has its raw result or its record"
        body, buffers = _pickling.dumps(("success", record.result), ctl._serializers)
        return (_frames.RESULT_HEAD.pack(upstream.id, 0, 0, 0.0) + body, *buffers)
    if isinstance(raw, bytes):
        return (raw,)
    return (raw[0], *raw[1])


def watch(task: Task) -> None:
    """After submit: hear when each input of a waiting task ends (maybe at once), and
    ask that a worker keep each input's result for it, where one can."""
    inputs: Inputs = task.inputs
    if task.state != WAITING:
        return
    ctl = inputs.controller
    dispatcher = ctl._dispatcher
    ids = []
    for future in inputs.futures:
        upstream_ctl, upstream = future._where
        local = dispatcher is not None and upstream_ctl is ctl
        ids.append(upstream.id if local and _wanted(dispatcher, upstream) else 0)
    inputs.ids = tuple(ids)
    for future in list(inputs.futures):
        future._on_done(inputs.done)


def _wanted(dispatcher: Any, upstream: Task) -> bool:
    with dispatcher.lock:
        wanted: bool = dispatcher.want(upstream)
        return wanted


def dependency_error(record: TaskResult, task: Task) -> BaseException | None:
    """What ``result()`` raises for a task that did not run because an input failed:
    a ``DependencyError`` whose cause is the input's own exception (None: not such a task)."""
    inputs: Inputs | None = task.inputs
    cause = inputs.cause if inputs is not None else None
    if cause is None or record.status is not Status.ERROR:
        return None
    upstream_ctl, upstream = cause._where
    upstream_record = upstream_ctl._records.build(upstream, upstream_ctl._crash_detail)
    error = DependencyError(
        f"task {record.name!r} did not run: input task {upstream.name!r} ended with status "
        f"{upstream_record.status.value}",
        record,
        upstream.name,
        upstream_record.status.value,
    )
    error.__cause__ = cause._failure(upstream_record)
    return error
