"""Pacing: whether queued small tasks wait for busy workers or wake idle ones, and
when what a busy worker holds ahead is taken back for an idle one.

```
 RESULT (with the seconds its task ran) ──► result(): run-time estimate, progress
 _drain(), an idle worker free, a small task ──► hold()? ─ yes ─► it stays queued:
                                                   │              a busy worker's refill takes it
                                                   └─ no ──► the idle worker gets it, woke()
 timer at due(): no result within patience() ──► expired(): nothing held till the next result
 a worker goes idle, the queue empty ──► _steal(): RELEASE what busy workers hold unstarted,
                                         from those whose task ran past take_back_after()
```

With hundreds of workers on a few cores, waking one worker per tiny task
left each process running a task or two per wake-up, among hundreds of
others waiting for a CPU: at 200 workers the rate fell to a third. A few
busy workers that take their tasks in batches keep it. Tasks wait only
while the busy workers are about as many as the tasks' run time needs to
keep up with the dispatcher, and while results keep coming: long tasks,
and busy workers stuck in one, spread to idle workers within the patience.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .._wire import _frames
from .._wire._frames import Kind
from ._handshake import _READY, Conn
from ._task import RUNNING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._task import Task

#: about the most tasks a second one dispatcher hands out: for tasks that run
#: s seconds, about s times this many busy workers keep up with it, and more
#: only add wake-ups
DISPATCH_RATE = 50_000
#: bounds of how long busy workers may go without a result while tasks wait for them
PATIENCE_MIN, PATIENCE_MAX = 0.01, 0.02
#: a worker whose task started less than this ago is "flowing": small tasks go
#: to it ahead of idle workers, and what it holds ahead is taken back once its
#: task runs longer (longer: the patience, while tasks wait for busy workers)
FLOWING = 0.001


class Pacing:
    """The dispatcher's pace of work (called with the dispatcher's lock held)."""

    __slots__ = ("holding", "progress", "service", "stuck")

    def __init__(self) -> None:
        #: seconds the recent tasks ran on their workers (a moving average):
        #: what the worker measured, free of its wait for a CPU
        self.service = 0.0
        #: when a result last came, or an idle worker was last woken for a small task
        self.progress = 0.0
        #: whether tasks wait in the queue for busy workers now
        self.holding = False
        #: no result came within the patience while tasks waited: none wait
        #: again until one comes
        self.stuck = False

    def patience(self) -> float:
        """How long busy workers may go without a result before waiting tasks go elsewhere.

        A multiple of the tasks' run time, within bounds: with many more
        workers than cores, a worker waits for a CPU many times longer than
        its task runs, and a shorter patience read that wait as a stuck task
        and woke yet another worker.
        """
        return min(PATIENCE_MAX, max(PATIENCE_MIN, 50 * self.service))

    def take_back_after(self) -> float:
        """How long a worker's task may run before its unstarted tasks are taken back."""
        return self.patience() if self.holding else FLOWING

    def result(self, now: float, ran: float) -> None:
        """A result came, of a task that ran ``ran`` seconds on its worker."""
        self.progress = now
        self.stuck = False
        # a NaN or an absurd figure counts as long, which only spreads tasks wider
        ran = ran if 0.0 <= ran < 3600.0 else 1.0
        self.service += (ran - self.service) / 8

    def woke(self, now: float) -> None:
        """An idle worker got a small task: its result is on its way."""
        self.progress = max(self.progress, now)

    def hold(self, now: float, busy: int) -> bool:
        """Whether a small task waits for the ``busy`` workers instead of an idle one."""
        if (
            self.stuck
            or busy < max(2, self.service * DISPATCH_RATE)
            or now - self.progress >= self.patience()
        ):
            return False
        self.holding = True
        return True

    def due(self) -> float | None:
        """When to look whether the busy workers are stuck, while tasks wait for them."""
        return self.progress + self.patience() if self.holding else None

    def expired(self, now: float) -> bool:
        """Tasks waited and no result came within the patience: they go to idle workers."""
        if not self.holding or now - self.progress < self.patience():
            return False
        self.holding = False
        self.stuck = True
        return True


class Placement:
    """The dispatcher's choices of worker for small tasks (its lock held): packing onto
    a flowing worker, waiting for busy ones, and taking back what one holds ahead."""

    idle: dict[Conn, None]
    room: dict[Conn, None]
    packed: set[Conn]
    ahead: set[Conn]
    releasing: dict[int, Conn]
    workers: dict[str, Conn]
    pacing: Pacing
    depth: int
    thread: threading.Thread

    def _wake_locked(self) -> None:
        raise NotImplementedError

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _flowing(self, task: Task, now: float) -> Conn | None:
        if not (self.room and task.small):
            return None
        conn = next(reversed(self.room))
        if now - conn.head_since >= FLOWING:
            return None
        del self.room[conn]
        if conn not in self.packed:
            self.packed.add(conn)
            if threading.current_thread() is not self.thread:
                self._wake_locked()  # to look again once FLOWING has passed
        return conn

    def _held(self, now: float) -> bool:
        if self.depth == 1:
            return False  # no prefetch: each worker takes its next task when it is done
        holding = self.pacing.holding
        if not self.pacing.hold(now, len(self.workers) - len(self.idle)):
            return False
        if not holding and threading.current_thread() is not self.thread:
            self._wake_locked()  # to look again when the patience runs out
        return True

    def _steal(self) -> None:
        """Idle workers and an empty queue: ask busy workers for tasks they hold unstarted.

        One request per idle worker that no request is on its way for yet,
        newest tasks first, never a worker's oldest (it runs): several
        workers going idle at once each get one, whoever holds them.
        """
        wanted = len(self.idle) - len(self.releasing)
        if wanted <= 0:
            return
        now = time.monotonic()
        for other in list(self.ahead):
            if other.stage != _READY or len(other.tasks) < 2:
                self.ahead.discard(other)
                continue
            if now - other.head_since < self.pacing.take_back_after():
                if len(other.tasks) > 1:
                    self.packed.add(other)  # looked at again once its task runs longer
                continue  # it gets to them sooner than a release would
            for task in list(other.tasks)[:0:-1]:
                if wanted <= 0:
                    return
                if task.id not in self.releasing and task.state == RUNNING:
                    self.releasing[task.id] = other
                    self._write(other, _frames.encode(Kind.RELEASE, _frames.TASK_ID.pack(task.id)))
                    wanted -= 1

    def _steal_for_idle(self) -> None:
        """Look for tasks held ahead again, if any worker is idle and prefetch is on."""
        if self.depth > 1 and self.idle and self.ahead:
            self._steal()

    def _unpack(self, now: float) -> None:
        """Take back what a worker holds ahead once its task runs past ``take_back_after()``."""
        overdue = False
        for conn in list(self.packed):
            if len(conn.tasks) < 2 or not self.idle or conn.stage != _READY:
                self.packed.discard(conn)
            elif now - conn.head_since >= self.pacing.take_back_after():
                self.packed.discard(conn)
                overdue = True
        if overdue:
            self._steal()  # one pass serves every idle worker
