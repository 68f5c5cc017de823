"""A caller waiting on one task reads its worker's connection itself, for a while.

```
 future.result() ─► wait_on_worker(task): the worker runs it now, nothing to write to it?
     under the lock: its socket leaves the selector (the dispatcher thread sleeps on)
     poll(socket, at most BORROW_SECONDS) ─► under the lock: read, as the loop would
     its socket back in the selector; the dispatcher woken only if a timer moved earlier
 futures settle on the caller's thread ─► result() sees its task done: no wake-up
```

Without this, a result wakes the dispatcher thread, which wakes the caller: two
threads woken in turn where one would do, and each wake-up costs tens of
microseconds on a machine whose cores sleep. Only one caller borrows at a
time, only the connection of the task it waits for, and never for long: a
caller that waited ``BORROW_SECONDS`` in vain hands the connection back and
waits for the dispatcher like any other.
"""

from __future__ import annotations

import importlib
import os
import select
import selectors
import signal
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

try:
    _signal: Any = importlib.import_module("_signal")
except ImportError:  # not CPython
    _signal = signal

from ._handshake import _READY, Conn

if TYPE_CHECKING:
    from ._task import Task

#: the longest a caller keeps a worker's connection from the dispatcher at once
BORROW_SECONDS = 0.02


class Borrowing:
    """Lets a thread waiting on a task serve that task's connection."""

    lock: threading.Lock
    closing: bool
    conns: dict[int, Conn]
    workers: dict[str, Conn]
    backlog: set[Conn]
    finished: list[Task]
    output: list[tuple[str, int, str]]
    selector: selectors.BaseSelector
    #: the connection a caller reads now, if any
    borrowed: Conn | None = None
    #: when the dispatcher thread's wait ends, if nothing wakes it (time.monotonic())
    sleeping_until = 0.0

    def _serve(self, conn: Conn, mask: int) -> None:
        raise NotImplementedError

    def _flush_dirty(self) -> None:
        raise NotImplementedError

    def _sync_interest(self) -> None:
        raise NotImplementedError

    def _next_timeout(self) -> float:
        raise NotImplementedError

    def _wake_locked(self) -> None:
        raise NotImplementedError

    def _deliver(self, finished: list[Task], output: list[tuple[str, int, str]]) -> None:
        raise NotImplementedError

    def wait_on_worker(self, task: Task, seconds: float) -> bool:
        """Wait up to ``seconds`` (capped) for the task's worker, serving its frames here.

        Returns False at once where the dispatcher must keep the connection (the
        task is not running now, another caller borrows, bytes wait to go out),
        True once something was done (the task may still be running then).
        """
        # Ctrl-C waits until the connection is back (at most BORROW_SECONDS and
        # the reading): Python raises KeyboardInterrupt between any two
        # bytecodes of the main thread, and a frame read halfway would cost a
        # healthy worker, a future left unsettled a hang.
        held = _HeldSignal.hold()
        try:
            return self._borrow(task, seconds)
        finally:
            if held is not None:
                held.release()

    def _borrow(self, task: Task, seconds: float) -> bool:
        with self.lock:
            conn = self._lendable(task)
            if conn is None:
                return False
            sock = conn.sock
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                return False
            # From here the dispatcher thread leaves this socket alone, even for
            # an event it got before the socket left the selector (_on_event).
            self.borrowed = conn
        try:
            # TLS may hold a record it decrypted: poll() cannot see that
            ready = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not ready:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN)
                ready = bool(poller.poll(max(0, int(min(seconds, BORROW_SECONDS) * 1000))))
        except (OSError, ValueError):
            ready = False  # closed under us by the dispatcher: it dropped the worker
        self._hand_back(conn, ready)
        return True

    def _hand_back(self, conn: Conn, ready: bool) -> None:
        sock = conn.sock
        with self.lock:
            self.borrowed = None
            if ready and self._still(conn):
                self._serve(conn, selectors.EVENT_READ)
            if self._still(conn):
                self.selector.register(sock, selectors.EVENT_READ, conn)
                conn.want_write = False
            self._flush_dirty()
            self._sync_interest()
            if self.backlog or time.monotonic() + self._next_timeout() < self.sleeping_until:
                self._wake_locked()  # more to read, or a timer due before its wait ends
            finished, self.finished = self.finished, []
            output, self.output = self.output, []
        self._deliver(finished, output)

    def _still(self, conn: Conn) -> bool:
        """Whether the dispatcher still has this connection open (lock held)."""
        fd = conn.sock.fileno()
        return fd >= 0 and self.conns.get(fd) is conn

    def _lendable(self, task: Task) -> Conn | None:
        """The connection running ``task`` now, if a caller may read it (lock held)."""
        if self.borrowed is not None or self.closing:
            return None
        info = task.worker
        conn = self.workers.get(info.id) if info is not None else None
        if conn is None or conn.stage != _READY or not conn.tasks or conn.tasks[0] is not task:
            return None
        if conn.out or conn.want_write or conn in self.backlog or conn.sock.fileno() < 0:
            return None
        return conn


class _HeldSignal:
    """SIGINT held back on the main thread, then acted on as its handler would have."""

    __slots__ = ("before", "caught")

    def __init__(self, before: Any) -> None:
        self.before = before
        self.caught: tuple[int, Any] | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.caught is None:
            self.caught = (signum, frame)

    @classmethod
    def hold(cls) -> _HeldSignal | None:
        """Hold SIGINT back, on the main thread only (no other thread runs handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        held = cls(_signal.getsignal(signal.SIGINT))
        try:
            # _signal: the signal module's enum wrapping costs fifteen times the call
            _signal.signal(signal.SIGINT, held)
        except (ValueError, OSError):  # not the main interpreter
            return None
        return held

    def release(self) -> None:
        _signal.signal(signal.SIGINT, self.before)
        if self.caught is None:
            return
        signum, frame = self.caught
        before = self.before
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            os.kill(os.getpid(), signum)
