"""What workers send: reading their connections, and acting on each frame.

```
 readable socket ─► _read(): recv (straight into a large buffer where it can)
     ─► Decoder ─► frames; shared-memory buffers mapped (_sharing)
     ─► _on_frame(): RESULT ─► task resolved, the worker refilled
                     RELEASED ─► a task handed back, requeued first
                     OUTPUT, LAST_WORDS, SETUP_FAILED, BYE, SHM_READY, SHM_DONE
```

Runs with the dispatcher's lock held: on its thread, or on a caller's that
borrowed a connection (``_borrow``). A frame that breaks the protocol raises
``ProtocolError``: ``_serve`` drops that connection only.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING

from .._errors import ProtocolError
from .._wire import _frames
from .._wire._frames import Kind
from ._handshake import _AUTH
from ._task import DONE, QUEUED, RUNNING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._results import Status
    from ._handshake import Conn
    from ._observe import Observed
    from ._pacing import Pacing
    from ._task import Task

log = logging.getLogger("pycrew.dispatcher")

#: a cancelled task has this long to stop before its worker is killed
CANCEL_GRACE = 1.0
_READ_CHUNK = 1 << 18
#: bytes read from one connection before the loop serves the others (and its
#: timers): a worker that floods, with output say, must not starve them
_READ_BUDGET = 16 << 20
#: the most of a worker's last words kept as a crash's reason
_LAST_WORDS_MAX = 1000


class Inbox:
    """The dispatcher's receiving side (called with its lock held)."""

    backlog: set[Conn]
    observed: Observed
    releasing: dict[int, Conn]
    pacing: Pacing
    watch: set[Conn]
    depth: int
    idle: dict[Conn, None]
    on_output: Callable[[list[tuple[str, int, str]]], None] | None
    output: list[tuple[str, int, str]]

    def _drop(self, conn: Conn, why: str | None) -> None:
        raise NotImplementedError

    def _on_auth(self, conn: Conn, kind: int, meta: bytes) -> None:
        raise NotImplementedError

    def _let_go(self, conn: Conn) -> None:
        raise NotImplementedError

    def _on_memory_frame(self, conn: Conn, kind: int, meta: bytes) -> None:
        raise NotImplementedError

    def _resolve(
        self,
        task: Task,
        outcome: Status | None,
        detail: str | None = None,
        started: float | None = None,
    ) -> None:
        raise NotImplementedError

    def _on_kept(self, conn: Conn, task: Task) -> None:
        raise NotImplementedError

    def _refill(self, conn: Conn) -> None:
        raise NotImplementedError

    def _steal(self) -> None:
        raise NotImplementedError

    def _steal_for_idle(self) -> None:
        raise NotImplementedError

    def _requeue(self, task: Task) -> None:
        raise NotImplementedError

    def _break(self, why: str, trace: str | None) -> None:
        raise NotImplementedError

    def _give_back(self, conn: Conn) -> None:
        raise NotImplementedError

    def _place(self, conn: Conn) -> None:
        raise NotImplementedError

    def _read(self, conn: Conn) -> None:
        sock = conn.sock
        decoder = conn.decoder
        is_tls = isinstance(sock, ssl.SSLSocket)
        budget = _READ_BUDGET
        while True:
            if budget <= 0:
                # more may wait (in the kernel, or inside TLS where select()
                # cannot see it): the next round reads on, after the others
                self.backlog.add(conn)
                return
            target = decoder.direct_target()
            try:
                if target is not None:
                    n = sock.recv_into(target)
                    if n == 0:
                        self._drop(conn, None)
                        return
                    decoder.filled_directly(n)
                else:
                    data = sock.recv(_READ_CHUNK)
                    if not data:
                        self._drop(conn, None)
                        return
                    decoder.feed(data)
                    n = len(data)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            budget -= n
            self.observed.bytes_received += n
            if decoder.frames:
                frames, decoder.frames = decoder.frames, []
                self._let_go(conn)
                for frame in frames:
                    self._on_frame(conn, frame)
                    if conn.sock.fileno() < 0:
                        return
            if not is_tls and n < _READ_CHUNK and target is None:
                break

    def _on_frame(self, conn: Conn, frame: _frames.Frame) -> None:
        kind, meta, bufs = frame
        if conn.stage == _AUTH:
            self._on_auth(conn, kind, meta)
        elif kind == Kind.RESULT:
            if len(meta) < _frames.RESULT_HEAD.size:
                raise ProtocolError("a result too short to name its task")
            task_id, last, failed, ran = _frames.RESULT_HEAD.unpack_from(meta)
            if not conn.tasks or conn.tasks[0].id != task_id:
                raise ProtocolError("a result for a task this worker was not given")
            task = conn.tasks.popleft()
            self.releasing.pop(task_id, None)
            conn.head_since = now = time.monotonic()
            conn.started = now  # the next task it holds, if any, starts now
            self.pacing.result(now, ran)
            conn.kill_at = None
            if conn.tasks and conn.tasks[0].state == DONE:
                # the next one was cancelled while it waited: it must stop quickly
                conn.kill_at = time.monotonic() + CANCEL_GRACE
            if conn.kill_at is None:
                self.watch.discard(conn)
            if last & _frames.LAST:
                conn.leaving = True
            if task.state != DONE:
                task.raw = (meta, bufs) if bufs else meta
                task.failed = bool(failed)
                self._resolve(task, None, started=now - ran)
            if last & _frames.KEPT:
                self._on_kept(conn, task)
            # asked back too late, the next one runs now (or its RELEASED is on the way,
            # which requeues it all the same). Left counted, it would stand for an idle
            # worker's request for as long as it runs, and no other request would be made.
            head = conn.tasks[0].id if conn.tasks else -1
            late = bool(self.releasing) and self.releasing.pop(head, None) is not None
            self._refill(conn)
            if late:
                self._steal_for_idle()
        elif kind == Kind.RELEASED:
            if len(meta) != _frames.TASK_ID.size:
                raise ProtocolError("a release that names no task")
            (task_id,) = _frames.TASK_ID.unpack_from(meta)
            self.releasing.pop(task_id, None)
            given = next((t for t in conn.tasks if t.id == task_id), None)
            if given is None:
                raise ProtocolError("released a task this worker was not given")
            conn.tasks.remove(given)
            if given.state == RUNNING:
                given.state = QUEUED
                given.worker = None
                self._requeue(given)
            self._refill(conn)
            if self.depth > 1 and self.idle:
                # the task may have gone to another idle worker than the one that asked
                self._steal()
        elif kind == Kind.OUTPUT:
            if len(meta) < _frames.OUTPUT_HEAD.size:
                raise ProtocolError("output that names no task")
            task_id, stream = _frames.OUTPUT_HEAD.unpack_from(meta)
            sender = next((t for t in conn.tasks if t.id == task_id), None)
            # a task already cancelled or timed out has nothing more to say
            if self.on_output is not None and sender is not None and sender.state != DONE:
                text = meta[_frames.OUTPUT_HEAD.size :].decode("utf-8", "replace")
                self.output.append((sender.name, 2 if stream == 2 else 1, text))
        elif kind == Kind.SETUP_FAILED:
            report = _frames.parse_json(meta)
            who = conn.info.id if conn.info else "?"
            trace = report.get("trace")
            self._break(
                f"the setup of worker {who} failed: {report.get('error')}",
                trace if isinstance(trace, str) else None,
            )
            conn.leaving = True
            self._give_back(conn)
        elif kind == Kind.LAST_WORDS:
            # why the worker is about to end itself (over its memory limit): the
            # reason of the crash of the task it runs, not of one it finished
            if conn.tasks and conn.tasks[0].state == RUNNING:
                conn.last_words = meta[:_LAST_WORDS_MAX].decode("utf-8", "replace")
            else:
                log.info("worker %s: %s", conn.info.id if conn.info else "?", meta[:200])
        elif kind == Kind.SHM_READY or kind == Kind.SHM_DONE:
            self._on_memory_frame(conn, kind, meta)
        elif kind == Kind.BYE:
            # Sent while idle: whatever is on its way to this worker never ran.
            conn.leaving = True
            self._place(conn)
            self._give_back(conn)
        else:
            raise ProtocolError(f"unexpected message kind {kind}")
