"""Locality: a result a waiting task will take stays on the worker that made it, and
that task runs there when it can, so the value need not come back out to it.

```
 watch(dependent) ─► want(input task): counted; KEEP to its worker (now, or at _assign)
 worker sends the RESULT, and keeps it as sent ─► flag KEPT ─► kept_on[input] = worker
 dependent released ─► _near(): an idle worker that keeps one of its inputs, first
 _assign(worker, dependent) ─► its frame names the inputs kept there (no bytes sent)
 the last dependent ends ─► FORGET to the worker; a worker that leaves takes its own
```

The controller still gets every result (a user may ask for it, and a worker
may die): what this spares is the copy out to the next task, when it runs on
the worker that holds its input. Every method is called with the
dispatcher's lock held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._wire import _frames
from .._wire._frames import Kind
from ._task import QUEUED, RUNNING, WAITING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._handshake import Conn
    from ._task import Task


class Locality:
    """The dispatcher's memory of which worker keeps which result, for whom."""

    workers: dict[str, Conn]
    idle: dict[Conn, None]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: input task id -> dependents registered and not yet ended
        self.wanted: dict[int, int] = {}
        #: input task id -> the worker that keeps its result
        self.kept_on: dict[int, Conn] = {}

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _flush_dirty(self) -> None:
        raise NotImplementedError

    def want(self, task: Task) -> bool:
        """A waiting task takes ``task``'s result: keep it where it runs, if it can be.

        False: it has ended and no worker keeps it (its bytes will travel).
        """
        if task.state not in (QUEUED, RUNNING, WAITING) and task.id not in self.kept_on:
            return False
        self.wanted[task.id] = self.wanted.get(task.id, 0) + 1
        if task.state == RUNNING and task.worker is not None:
            conn = self.workers.get(task.worker.id)
            if conn is not None:
                self._write(conn, _keep(task.id))
                self._flush_dirty()
        return True

    def _keep_on_assign(self, conn: Conn, task: Task) -> tuple[Any, ...]:
        """The frame to send ``conn`` for ``task``, asking it to keep the result if wanted."""
        if task.id in self.wanted:
            self._write(conn, _keep(task.id))
        inputs = task.inputs
        if inputs is not None and self.kept_on:
            here = {i for i in inputs.ids if i and self.kept_on.get(i) is conn}
            if here:
                frame: tuple[Any, ...] = inputs.frame_for(here)
                return frame
        return _frames.pieces(task.frame)

    def _on_kept(self, conn: Conn, task: Task) -> None:
        """``conn`` says it keeps ``task``'s result."""
        if self.wanted.get(task.id):
            self.kept_on[task.id] = conn
        else:
            self.wanted.pop(task.id, None)
            self._write(conn, _frames.encode(Kind.FORGET, _frames.TASK_ID.pack(task.id)))

    def _inputs_ended(self, task: Task) -> None:
        """A task that took inputs ended: the results no task wants now are forgotten."""
        inputs = task.inputs
        inputs.forget_values()
        for input_id in inputs.ids:
            count = self.wanted.get(input_id)
            if not count:
                continue
            if count > 1:
                self.wanted[input_id] = count - 1
                continue
            del self.wanted[input_id]
            conn = self.kept_on.pop(input_id, None)
            if conn is not None:
                self._write(conn, _frames.encode(Kind.FORGET, _frames.TASK_ID.pack(input_id)))

    def _near(self, task: Task) -> Conn | None:
        """An idle worker that keeps one of ``task``'s inputs (taken out of ``idle``)."""
        for input_id in task.inputs.ids:
            conn = self.kept_on.get(input_id)
            if conn is not None and conn in self.idle:
                del self.idle[conn]
                return conn
        return None

    def _lost(self, conn: Conn) -> None:
        """A worker left: what it kept went with it."""
        if self.kept_on:
            for input_id in [i for i, c in self.kept_on.items() if c is conn]:
                del self.kept_on[input_id]


def _keep(task_id: int) -> tuple[Any, ...]:
    return _frames.encode(Kind.KEEP, _frames.TASK_ID.pack(task_id))
