"""Bytes on their way to workers: queued under the lock, sent in batches.

```
 _write(conn, pieces) ──► conn.out (a deque of bytes and views), conn marked dirty
 end of a loop round, or a user call ──► _flush_dirty(): one send() per dirty worker
     small frames merged first (many tiny tasks: one system call)
     what the kernel would not take ──► pending_out ──► _sync_interest(): wait to write
 a user thread left bytes unsent ──► _wake_locked(): the loop wakes and sends the rest
```

Only the dispatcher thread waits in the selector; a user thread that queues
bytes sends what it can at once and wakes the loop for the rest.
"""

from __future__ import annotations

import contextlib
import selectors
import ssl
import threading
from typing import TYPE_CHECKING, Any

from .._wire import _frames
from ._handshake import _TLS_SHAKE

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

    from ._handshake import Conn


class Outbox:
    """The dispatcher's sending side (called with its lock held)."""

    selector: selectors.BaseSelector
    thread: threading.Thread
    dirty: set[Conn]
    pending_out: set[Conn]
    bytes_sent: int
    _woken: bool
    _wake_w: socket.socket

    def _wake_locked(self) -> None:
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        """Queue bytes for a worker; they leave at the next ``_flush_dirty()``."""
        # pieces are bytes, or flat byte views (pickle's raw buffers)
        segments = conn.segments
        if len(pieces) > 1 and segments is not None:  # a worker on this machine
            before = segments.bytes
            pieces = segments.share(pieces)
            self.bytes_sent += segments.bytes - before  # what the socket does not carry
        conn.out.extend(pieces)
        self.dirty.add(conn)

    def _flush_dirty(self) -> None:
        for conn in self.dirty:
            self._flush(conn)
            if conn.out and not conn.want_write:
                self.pending_out.add(conn)
                if threading.current_thread() is not self.thread:
                    self._wake_locked()
        self.dirty.clear()

    def _flush(self, conn: Conn) -> None:
        out = conn.out
        sock = conn.sock
        if len(out) > 1 and len(out[0]) < _frames.OOB_MIN and len(out[1]) < _frames.OOB_MIN:
            merged: list[bytes | memoryview] = []
            while out and len(out[0]) < _frames.OOB_MIN and len(merged) < 256:
                merged.append(out.popleft())
            out.appendleft(b"".join(merged))
        try:
            while out:
                head = out[0]
                n = sock.send(head)
                self.bytes_sent += n
                if n < len(head):
                    out[0] = memoryview(head)[n:]  # a view: slicing bytes would copy
                    return
                out.popleft()
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError:
            out.clear()  # the read side will notice the broken connection

    def _interest(self, conn: Conn, events: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(conn.sock, events, conn)
        conn.want_write = bool(events & selectors.EVENT_WRITE)

    def _sync_interest(self) -> None:
        if not self.pending_out:
            return
        for conn in list(self.pending_out):
            if conn.sock.fileno() < 0:
                self.pending_out.discard(conn)
                continue
            if conn.out and not conn.want_write:
                self._interest(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            elif not conn.out:
                if conn.want_write and conn.stage != _TLS_SHAKE:
                    self._interest(conn, selectors.EVENT_READ)
                self.pending_out.discard(conn)
