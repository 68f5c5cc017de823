"""Shapes: tasks that ask for resources go only to workers whose shape covers them.

```
 submit(task with a shape) ─► shaped[shape] (a queue per shape) ─► _drain_shaped()
                                   │                                    │
 scaler round: demand() per shape ─┘         an idle shaped worker ◄────┘
   └─► Partition.take(): the machine's GPUs, cores, memory left ─► launch for that shape
 worker connects: its shape (noted at launch) ─► _refill_shaped(): its own shape first,
   then the other shapes it covers, most GPUs first; never a task without a shape
```

Tasks without ``resources=`` never come here: the plain queue, its pacing
and prefetch stay as they were. A shaped worker holds one task at a time
(no prefetch), and takes no plain task, so a GPU worker is not filled with
work any worker could do while a GPU task waits for it. Every ``Shapes``
method is called with the dispatcher's lock held.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from .._resources import Resources
from .._wire import _frames
from .._wire._frames import Kind
from ._handshake import _READY
from ._task import QUEUED, WAITING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._handshake import Conn
    from ._task import Task


class Shapes:
    """The dispatcher's queues and idle workers per resource shape."""

    workers: dict[str, Conn]
    closing: bool
    broken: str | None
    deadlines: list[tuple[float, int]]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: a queue per shape, in the order shapes were first asked for
        self.shaped: dict[Resources, collections.deque[Task]] = {}
        #: shape -> its tasks queued or running (what the autoscaler launches for)
        self.shaped_live: dict[Resources, int] = {}
        #: idle workers that have a shape
        self.idle_shaped: dict[Conn, None] = {}
        #: worker id -> the shape it was launched for, until it connects
        self.shape_of: dict[str, Resources] = {}

    def _assign(self, conn: Conn, task: Task) -> None:
        raise NotImplementedError

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _flush_dirty(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ the scaler's
    def expect(self, worker_id: str, shape: Resources) -> None:
        """A worker is being launched for ``shape`` (before it can connect)."""
        self.shape_of[worker_id] = shape

    def demand(self) -> dict[Resources, int]:
        """Tasks queued or running, per shape (a copy)."""
        return {shape: n for shape, n in self.shaped_live.items() if n > 0}

    def shaped_workers(self) -> int:
        """How many connected workers have a shape."""
        return sum(1 for conn in self.workers.values() if conn.shape is not None)

    def let_go(
        self, keep: Resources, plain: bool, helps: Callable[[str], bool] | None = None
    ) -> str | None:
        """Ask one idle worker that is not of shape ``keep`` to leave, so that its
        place (and what it holds of the machine) can go to a worker for ``keep``;
        its id, or None when no worker is idle. ``plain``: a worker without a
        shape may go too (it holds a place under the cap, but nothing of the
        machine). ``helps``: whether a worker's leaving (by id) makes room."""
        idle: dict[Conn, None] = getattr(self, "idle", {}) if plain else {}
        for pool in (self.idle_shaped, idle):
            for conn in pool:
                info = conn.info
                if conn.shape == keep or info is None:
                    continue
                if helps is None or helps(info.id):
                    del pool[conn]
                    conn.leaving = True
                    self._write(conn, _frames.encode(Kind.EXIT, b""))
                    self._flush_dirty()
                    return info.id
        return None

    # ---------------------------------------------------------------- tasks
    def _enqueue_shaped(self, task: Task, shape: Resources) -> None:
        """A shaped task is submitted or released: queue it, and count it."""
        self.shaped_live[shape] = self.shaped_live.get(shape, 0) + 1
        self.shaped.setdefault(shape, collections.deque()).append(task)
        if self.idle_shaped:
            self._drain_shaped()
            self._flush_dirty()

    def _requeue_shaped(self, task: Task, shape: Resources) -> None:
        """A shaped task that never started goes first in its queue again."""
        self.shaped.setdefault(shape, collections.deque()).appendleft(task)
        if self.idle_shaped:
            self._drain_shaped()

    def _shape_ended(self, task: Task, state: int) -> None:
        """A shaped task in ``state`` ended: it is no longer the autoscaler's demand."""
        shape = task.shape
        if shape is not None and state != WAITING:
            left = self.shaped_live.get(shape, 0) - 1
            if left > 0:
                self.shaped_live[shape] = left
            else:
                self.shaped_live.pop(shape, None)

    def _drain_shaped(self) -> None:
        """Give idle shaped workers what they can take."""
        for conn in list(self.idle_shaped):
            task = self._pick(conn)
            if task is not None:
                del self.idle_shaped[conn]
                self._assign(conn, task)

    def _refill_shaped(self, conn: Conn) -> None:
        """A shaped worker is free: its next task, or it waits among the idle ones."""
        self.idle_shaped.pop(conn, None)
        if conn.tasks or conn.leaving or self.closing or conn.stage != _READY:
            return
        if self.broken is not None:
            return
        task = self._pick(conn)
        if task is None:
            self.idle_shaped[conn] = None
        else:
            self._assign(conn, task)

    def _pick(self, conn: Conn) -> Task | None:
        """The next task for ``conn``: its own shape's first, then what it covers."""
        own = conn.shape
        assert own is not None
        task = _first_queued(self.shaped.get(own))
        if task is not None:
            return task
        # most GPUs first, then most cores: the scarce kind of work goes where it can
        others = sorted(
            (s for s in self.shaped if s != own and own.covers(s)),
            key=lambda s: (s.gpus, s.cpus, s.memory),
            reverse=True,
        )
        for shape in others:
            task = _first_queued(self.shaped[shape])
            if task is not None:
                return task
        return None

    def shaped_queued(self) -> int:
        return sum(1 for q in self.shaped.values() for t in q if t.state == QUEUED)


def _first_queued(queue: collections.deque[Task] | None) -> Task | None:
    """Take the first task still queued (cancelled ones are skipped and dropped)."""
    while queue:
        task = queue.popleft()
        if task.state == QUEUED:
            return task
    return None


class Partition:
    """What a machine has left for workers with a shape: cores, memory, named counts,
    and GPUs by id. A worker takes its shape at launch and gives it back when it is
    gone; workers without a shape take nothing (as before shapes existed).

    ``source`` tells what the machine has; it is asked once, at the first
    shaped launch (looking for GPUs may run ``nvidia-smi``).
    """

    def __init__(self, source: Callable[[], tuple[Resources, Sequence[str]]]) -> None:
        self._source = source
        self._machine: Resources | None = None
        self.free_gpus: list[str] = []
        self.taken: dict[str, tuple[Resources, list[str]]] = {}

    @property
    def machine(self) -> Resources:
        if self._machine is None:
            self._machine, ids = self._source()
            self.free_gpus = list(ids)
        return self._machine

    def _used(self) -> Resources:
        cpus = memory = gpus = 0
        custom: collections.Counter[str] = collections.Counter()
        for shape, _ in self.taken.values():
            cpus += shape.cpus
            memory += shape.memory
            gpus += shape.gpus
            custom.update(dict(shape.custom))
        return Resources(cpus, memory, gpus, tuple(sorted(custom.items())))

    def fits(self, shape: Resources, without: str | None = None) -> bool:
        """Whether a worker of ``shape`` fits in what is left now (or once the
        worker ``without`` gave back what it holds)."""
        machine = self.machine
        held = self.taken.pop(without, None) if without is not None else None
        try:
            used = self._used()
            gpus = len(self.free_gpus) + (len(held[1]) if held is not None else 0)
        finally:
            if held is not None and without is not None:
                self.taken[without] = held
        taken = dict(used.custom)
        left = Resources(
            machine.cpus - used.cpus if machine.cpus else shape.cpus,
            machine.memory - used.memory if machine.memory else shape.memory,
            gpus,
            tuple((name, count - taken.get(name, 0)) for name, count in machine.custom),
        )
        return left.covers(shape)

    def take(self, worker_id: str, shape: Resources) -> list[str] | None:
        """Reserve ``shape`` for a worker; the GPU ids it gets, or None if it does not fit."""
        if not self.fits(shape):
            return None
        ids, self.free_gpus = self.free_gpus[: shape.gpus], self.free_gpus[shape.gpus :]
        self.taken[worker_id] = (shape, ids)
        return ids

    def give(self, worker_id: str) -> None:
        """The worker is gone: what it held is free again."""
        held = self.taken.pop(worker_id, None)
        if held is not None:
            self.free_gpus.extend(held[1])
