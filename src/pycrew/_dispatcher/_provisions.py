"""What a worker gets besides its tasks, on the dispatcher's side: set-up steps and
shared objects (and what happens when a set-up step fails: ``_break``).

```
 initializer=, everywhere() ─► add_setup: to every worker now; each new one gets all at WELCOME
 share() ─► add_share: kept here ─► _send_shares(worker, task): once per worker, before
                                     the first task that uses it
 Shared.drop() ─► remove_share: UNSHARE to every worker that holds it
```

The public methods take the dispatcher's lock; ``_send_shares`` is called
with it held.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .._results import Status
from .._wire import _frames
from .._wire._frames import Kind

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from ._handshake import Conn
    from ._task import Task

log = logging.getLogger("pycrew.dispatcher")


class Provisions:
    """The set-up steps every worker runs, and the shared objects workers hold."""

    lock: threading.Lock
    workers: dict[str, Conn]
    live: dict[int, Task]
    idle: dict[Conn, None]
    room: dict[Conn, None]
    idle_shaped: dict[Conn, None]
    broken: str | None
    broken_trace: str | None
    #: SETUP frames every worker gets before its first task, in order
    setup: list[tuple[Any, ...]]
    #: SHARE frames by key, sent to a worker before the first task that uses one
    shares: dict[int, Sequence[Any]]

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _flush_dirty(self) -> None:
        raise NotImplementedError

    def _stop(self, task: Task, status: Status) -> None:
        raise NotImplementedError

    def _break(self, why: str, trace: str | None) -> None:
        """A setup step failed: every later worker would fail it too, so stop here.

        Unfinished tasks end as ``cancel`` (nothing waits forever), workers
        take no more tasks, and the controller refuses new ones.
        """
        if self.broken is not None:
            return
        self.broken = why
        self.broken_trace = trace
        log.error("pycrew: %s; the controller takes no more tasks\n%s", why, trace or "")
        for task in list(self.live.values()):
            self._stop(task, Status.CANCEL)
            task.detail = f"not run: {why}"
        self.idle.clear()
        self.room.clear()
        self.idle_shaped.clear()

    def add_setup(self, frame: tuple[Any, ...]) -> None:
        """A step for every worker: those connected now, and each that connects later."""
        with self.lock:
            self.setup.append(frame)
            for conn in self.workers.values():
                self._write(conn, frame)
            self._flush_dirty()

    def add_share(self, key: int, frame: Sequence[Any]) -> None:
        with self.lock:
            self.shares[key] = frame

    def remove_share(self, key: int) -> None:
        """Forget a shared object here and on every worker that holds it."""
        with self.lock:
            self.shares.pop(key, None)
            for conn in self.workers.values():
                if key in conn.shared:
                    conn.shared.discard(key)
                    self._write(conn, _frames.encode(Kind.UNSHARE, _frames.SHARE_KEY.pack(key)))
            self._flush_dirty()

    def _send_shares(self, conn: Conn, task: Task) -> None:
        """The shared objects ``task`` uses that ``conn`` does not hold yet, ahead of it."""
        for key in task.shared:
            if key not in conn.shared:
                # a dropped one stays unsent: the task then fails with a clear error
                share = self.shares.get(key)
                if share is not None:
                    conn.shared.add(key)
                    self._write(conn, share)
