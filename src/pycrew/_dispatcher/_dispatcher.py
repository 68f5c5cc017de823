"""The dispatcher: one thread, one listening port, a FIFO queue of tasks.

```
 user threads                       dispatcher thread (selectors loop)
 push() ──► submit() ─┬─ idle worker (and _pacing does not hold it)? send TASK now
                      └─ else queue.append(task)          (under the lock)
                                    accept ─► _handshake.Doorway ─► WELCOME + SETUP steps
                                    TASK out, its SHARE frames first (once per worker)
                                    RESULT ─► task resolved ─► cv.notify_all()
                                    OUTPUT ─► lines printed once the lock is let go
                                              worker idle ─► next queued task
                                    EOF while busy ─► task "crash"
                                    deadlines ─► "timeout"; CANCEL; kill after a grace
 pop()/wait() ◄── resolved queue, cv ◄──┤
 futures ◄── settle(), lock let go ◄────┘
```

All shared state (queue, idle workers, task states, output buffers) is
guarded by ``lock``; ``cv`` wakes waiters on each resolution, and futures
settle after the lock is let go (their callbacks may take other locks).
Only the dispatcher thread waits on the selector; a user thread that leaves
bytes unsent, or changes a deadline, wakes it through a socket pair. One
that waits on a running task may take that worker's socket out of the
selector for a while and read it under the lock (``_borrow``).
Nothing a peer sends is unpickled here: results stay raw until asked for.
What workers send is read and acted on in ``_inbox``, what goes to them
leaves through ``_outbox``; this module owns the queue, placement and the loop.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import math
import selectors
import socket
import ssl
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import ProtocolError
from .._results import Status
from .._wire import _frames, _shm
from .._wire._frames import Kind
from ._borrow import Borrowing
from ._handshake import _READY, _TLS_SHAKE, Conn, Doorway
from ._inbox import CANCEL_GRACE, Inbox
from ._locality import Locality
from ._outbox import Outbox
from ._pacing import Pacing, Placement
from ._provisions import Provisions
from ._shapes import Shapes
from ._sharing import Sharing
from ._task import DONE, FORWARDED, NO_FRAME, QUEUED, RUNNING, WAITING, Resolutions, settle_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._observe import Observed
    from ._task import Task

log = logging.getLogger("pycrew.dispatcher")

#: tasks a worker may hold at once when prefetching (one running, the rest waiting).
#: Refilled at half this: one write to a worker carries up to half of it, and
#: on loopback each write costs the receiving side's wake-up as well (32: a
#: fifth more tiny tasks a second than 8, on 2 cores)
PREFETCH_DEPTH = 32
#: at most this many bytes of tasks wait on a busy worker behind the one it runs
PREFETCH_AHEAD_BYTES = 1 << 20
#: an idle controller lets its reusable result buffers go after this long
_SPARES_SECONDS = 10.0


def _ahead_bytes(conn: Conn) -> int:
    """Bytes of the tasks a worker holds behind the one it runs."""
    tasks = conn.tasks
    return sum(task.size for task in itertools.islice(tasks, 1, None)) if len(tasks) > 1 else 0


class Dispatcher(
    Outbox,
    Sharing,
    Doorway,
    Placement,
    Locality,
    Provisions,
    Shapes,
    Resolutions,
    Borrowing,
    Inbox,
):
    """Owns the listening socket, the worker connections and the task queue.

    Args:
        host: address to bind.
        port: port to bind (0: the OS picks).
        secret: the per-start secret workers must prove they know.
        tls: server context, or None for plain TCP.
        settings: worker settings sent in WELCOME.
        on_worker: called (on this thread, briefly) with ``("connected" |
            "disconnected", worker_id)``.
        on_kill: called with a worker id whose task would not stop.
        on_refused: called with ``(worker_id, reason)`` when a peer that
            proved it knows the secret is refused (another version, say).
        bytes_max: the largest frame a worker may send after authentication.
        on_crash: called with a task whose worker died and the reason; it may
            ``retry()`` or ``retire()`` the task and return True, or return
            False to let it resolve as a crash.
        listeners: called with no argument at every resolution, under the lock:
            they must be quick and take no lock that is held while this one is.
        on_output: called (lock let go) with ``(task name, stream, text)``
            items: lines that tasks printed, when workers relay them.
        prefetch: let a busy worker hold up to ``PREFETCH_DEPTH`` small tasks,
            so it starts the next without waiting for a round trip. A worker that goes idle
            while another holds an unstarted task asks for it back.
        shared_memory: large buffers to and from workers on this machine go
            through shared memory (``_sharing``) rather than the socket.
    """

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        tls: ssl.SSLContext | None,
        settings: dict[str, Any],
        on_worker: Callable[[str, str], None],
        on_kill: Callable[[str], None],
        on_refused: Callable[[str, str], None] | None = None,
        bytes_max: int = _frames.BYTES_MAX,
        prefetch: bool = False,
        listeners: list[Callable[[], None]] | None = None,
        on_crash: Callable[[Task, str], bool] | None = None,
        on_output: Callable[[list[tuple[str, int, str]]], None] | None = None,
        observed: Observed | None = None,
        shared_memory: bool = True,
    ) -> None:
        super().__init__(listeners)
        self.probe = _shm.Probe.make() if shared_memory else None
        if observed is not None:
            self.observed = observed
        self.secret = secret
        self.tls = tls
        self.settings = settings
        self.on_worker = on_worker
        self.on_kill = on_kill
        self.on_refused = on_refused
        self.bytes_max = bytes_max
        self.on_crash = on_crash
        self.queue: collections.deque[Task] = collections.deque()
        self.depth = PREFETCH_DEPTH if prefetch else 1
        # free capacity, as insertion-ordered sets: idle workers, and busy
        # workers that may take more tasks ahead (prefetch)
        self.idle: dict[Conn, None] = {}
        self.room: dict[Conn, None] = {}
        self.releasing: dict[int, Conn] = {}
        # workers given tasks ahead while others were idle (see _drain)
        self.packed: set[Conn] = set()
        # workers holding tasks they have not started: what _steal looks at
        self.ahead: set[Conn] = set()
        # whether small tasks wait in the queue for busy workers
        self.pacing = Pacing()
        self.workers: dict[str, Conn] = {}
        self.conns: dict[int, Conn] = {}
        # connections not yet authenticated, oldest first
        self.unauthenticated: dict[Conn, None] = {}
        self._drops_logged_at = -math.inf
        self._drops_unlogged = 0
        self.deadlines: list[tuple[float, int]] = []
        self.pending_out: set[Conn] = set()
        # connections with bytes written since the last flush: flushing once
        # per batch sends many small frames in one system call
        self.dirty: set[Conn] = set()
        # connections with a clock running: a handshake deadline or a kill time
        self.watch: set[Conn] = set()
        self.cumulative = 0
        #: bytes sent to workers since start (tasks, shared objects, setup steps)
        self.bytes_sent = 0
        self.failure: BaseException | None = None
        #: why a worker's setup failed: the controller launches and takes no more
        self.broken: str | None = None
        self.broken_trace: str | None = None
        self.setup: list[tuple[Any, ...]] = []
        self.shares: dict[int, Sequence[Any]] = {}
        #: where task output relayed by workers goes (None: it is not asked for)
        self.on_output = on_output
        self.output: list[tuple[str, int, str]] = []
        #: connections that had more to read when their budget ran out
        self.backlog: set[Conn] = set()
        #: large result buffers, reused once the user let go of a result: fresh
        #: pages cost a fault each, which made a 100 MB result 2-3x slower than
        #: a 100 MB argument (whose buffer the worker reuses)
        self.receive_pool = _frames.BufferPool(keep=2, recycle_on_take=True)
        self.closing = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, name="pycrew-dispatcher", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, task: Task) -> None:
        """Hand a task to a free worker right away, or queue it."""
        with self.lock:
            self.live[task.id] = task
            if self.broken is not None:
                # pushed as a worker's setup failed: it would never be handed out
                self._resolve(task, Status.CANCEL, f"not run: {self.broken}")
            elif task.state == WAITING:
                self._hold(task)
            else:
                self.observed.submitted(task)
                self._enqueue(task)
        if self.broken is not None:
            self.settle()

    def _enqueue(self, task: Task) -> None:
        if task.deadline is not None:
            heapq.heappush(self.deadlines, (task.deadline, task.id))
            self._wake_locked()
        if task.shape is not None:
            self._enqueue_shaped(task, task.shape)
            return
        self.queue.append(task)
        if self.idle or self.room:
            self._drain()
            self._flush_dirty()

    def cancel(self, tasks: list[Task], queued_only: bool = False) -> None:
        """Stop tasks; their futures settle before this returns. ``queued_only``
        leaves alone those a worker has started (an executor's ``cancel_futures``):
        one a busy worker holds behind its current task is stopped."""
        with self.lock:
            for task in tasks:
                if not queued_only or task.state in (QUEUED, WAITING) or self._ahead(task):
                    self._stop(task, Status.CANCEL)
            self._flush_dirty()
        self.settle()

    def started(self, task: Task) -> bool:
        """Whether a worker runs the task now (not: holds it behind another one)."""
        with self.lock:
            return task.state == RUNNING and not self._ahead(task)

    def _ahead(self, task: Task) -> bool:
        """Whether a worker holds the task behind the one it runs (lock held)."""
        info = task.worker
        conn = self.workers.get(info.id) if task.state == RUNNING and info is not None else None
        if conn is None or not conn.tasks or conn.tasks[0] is task:
            return False
        return task in conn.tasks

    def counts(self) -> tuple[int, int, int, int, int]:
        """(connections, cumulative, awaiting, executing, completed), like mirai's info()."""
        with self.lock:
            busy = sum(1 for c in self.workers.values() if c.tasks)
            queued = sum(1 for t in self.queue if t.state == QUEUED) + self.shaped_queued()
            return len(self.workers), self.cumulative, queued, busy, self.completed

    def status(
        self, since: int, limit: int | None = None, launching: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The live state as plain data (see ``Observed.snapshot``)."""
        with self.lock:
            self.observed.sample(time.monotonic(), self.workers.values(), self.waiting)
            return self.observed.snapshot(
                self.workers.values(),
                since,
                limit,
                launching,
                live=len(self.live),
                waiting=self.waiting,
                held=self.held,
                peak=self.held_peak,
                sent=self.bytes_sent,
                broken=self.broken,
            )

    def worker_pids(self) -> list[int]:
        with self.lock:
            return sorted(c.info.pid for c in self.workers.values() if c.info and c.info.pid)

    def close(self) -> None:
        """Tell every worker to exit, close every socket, stop the thread."""
        with self.lock:
            self.closing = True
            self._wake_locked()
        self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._wake_r.close()
        with contextlib.suppress(OSError):
            self._wake_w.close()

    # ----------------------------------------------------- internals (locked)
    def _place(self, conn: Conn) -> None:
        """File a worker under idle or room (or neither) by how many tasks it holds."""
        self.idle.pop(conn, None)
        self.room.pop(conn, None)
        if conn.shape is not None:
            self.idle_shaped.pop(conn, None)
            if not (conn.tasks or conn.leaving or self.closing or self.broken is not None):
                self.idle_shaped[conn] = None
            return
        if len(conn.tasks) > 1:
            self.ahead.add(conn)
        else:
            self.ahead.discard(conn)
        if conn.leaving or self.closing or conn.stage != _READY:
            return
        if self.broken is not None:
            return
        held = len(conn.tasks)
        if held == 0:
            self.idle[conn] = None
        elif held <= self.depth // 2 and _ahead_bytes(conn) < PREFETCH_AHEAD_BYTES:
            self.room[conn] = None

    def _assign(self, conn: Conn, task: Task) -> None:
        if conn.peer is not None:
            # results let go of since: the worker may write this task's into one again
            self._let_go(conn)
        if not conn.tasks:
            conn.started = time.monotonic()  # it starts now: nothing runs ahead of it
        conn.tasks.append(task)
        task.state = RUNNING
        task.worker = conn.info
        if task.shared:
            self._send_shares(conn, task)
        self._write(conn, self._keep_on_assign(conn, task))

    def retry(self, task: Task) -> None:
        """Run a task that crashed its worker again, first in line (lock held)."""
        task.state = QUEUED
        task.worker = None
        self.observed.requeued(task)
        self._requeue(task)

    def retire(self, task: Task) -> None:
        """A task another controller takes over: gone from here, with no record (lock held)."""
        if task.shape is not None:
            self._shape_ended(task, task.state)
        if task.inputs is not None:
            self._inputs_ended(task)
        task.state = FORWARDED
        task.frame = NO_FRAME
        self._free(task)
        self.live.pop(task.id, None)
        self.cv.notify_all()
        for listener in self.listeners:
            listener()

    def _stop(self, task: Task, status: Status) -> None:
        if task.state == DONE:
            return
        if task.state == QUEUED or task.state == WAITING:
            # left in the queue, and skipped when its turn comes: removing it
            # now would cost a scan of the queue per cancelled task
            self._resolve(task, status)
            return
        conn = next((c for c in self.workers.values() if task in c.tasks), None)
        running = conn is not None and conn.tasks[0] is task
        self._resolve(task, status, started=conn.started if conn is not None and running else None)
        if conn is not None:
            self._write(conn, _frames.encode(Kind.CANCEL, _frames.TASK_ID.pack(task.id)))
            if running:
                # running now; one that waits behind it is skipped by the worker
                conn.kill_at = time.monotonic() + CANCEL_GRACE
                self.watch.add(conn)
                self._wake_locked()

    def _drain(self) -> None:
        """Hand queued tasks to free workers: idle ones first, then those with room.

        But a small task goes first to the worker that last took one if its
        own task started under ``FLOWING`` ago, and waits for busy workers
        while ``_pacing`` says they keep up: a stream of tiny tasks keeps a
        few workers busy instead of waking a sleeping one per task. What a
        worker holds ahead is taken back for idle workers once its task runs
        longer (``_on_timers``), so a short task waits behind a long one for
        ``FLOWING`` at most (the patience, while tasks wait for busy workers).
        """
        queue = self.queue
        now = time.monotonic()
        while queue and (self.idle or self.room):
            task = queue[0]
            if task.state != QUEUED:
                queue.popleft()
                continue
            if self.idle:
                conn = self._near(task) if task.inputs is not None and self.kept_on else None
                conn = conn or self._flowing(task, now)
                if conn is None:
                    if task.small and self._held(now):
                        return  # a busy worker's refill takes it (see _pacing)
                    conn = self.idle.popitem()[0]
                    if task.small:
                        self.pacing.woke(now)
            elif task.small:
                conn = self.room.popitem()[0]
            else:
                return  # a large task waits, first in line, for an idle worker
            queue.popleft()
            self._assign(conn, task)
            self._place(conn)

    def _refill(self, conn: Conn) -> None:
        """Give a worker with free capacity queued tasks, then file it."""
        if conn.shape is not None:
            self._refill_shaped(conn)
            return
        # refill at half depth, so that one write carries several tasks
        if not (conn.leaving or self.closing) and len(conn.tasks) <= self.depth // 2:
            ahead = _ahead_bytes(conn)
            while self.queue and len(conn.tasks) < self.depth:
                task = self.queue[0]
                if task.state == QUEUED and conn.tasks:
                    if not task.small:
                        break  # a large task waits, first in line, for an idle worker
                    size = task.size
                    if ahead and ahead + size > PREFETCH_AHEAD_BYTES:
                        break  # enough bytes wait on this worker already
                    ahead += size
                self.queue.popleft()
                if task.state == QUEUED:
                    self._assign(conn, task)
        self._place(conn)
        if self.depth > 1 and conn in self.idle:
            self._steal()

    # --------------------------------------------------------- the loop
    def _run(self) -> None:
        finished_before = 0
        try:
            with self.lock:
                timeout = self._next_timeout()
            while True:
                events = self.selector.select(0 if self.backlog else timeout)
                with self.lock:
                    if self.closing:
                        break
                    for key, mask in events:
                        self._on_event(key, mask)
                    if self.backlog:
                        backlog, self.backlog = self.backlog, set()
                        for conn in backlog:
                            if conn.sock.fileno() >= 0:
                                self._serve(conn, selectors.EVENT_READ)
                    self._on_timers()
                    self._flush_dirty()
                    self._sync_interest()
                    timeout = self._next_timeout()
                    self.sleeping_until = time.monotonic() + (0.0 if self.backlog else timeout)
                    if finished_before != self.completed:
                        # a point of the live state's history, at most one a second
                        finished_before = self.completed
                        self.observed.sample(time.monotonic(), self.workers.values(), self.waiting)
                    finished, self.finished = self.finished, []
                    output, self.output = self.output, []
                self._deliver(finished, output)
        except BaseException as exc:  # surfaced to the user at the next call
            log.exception("pycrew dispatcher failed")
            with self.lock:
                self.failure = exc
                self.cv.notify_all()
        finally:
            self._shutdown()
            self.settle()

    def _deliver(self, finished: list[Task], output: list[tuple[str, int, str]]) -> None:
        """Print what tasks printed, settle the futures of tasks resolved (lock let go:
        callbacks may call in). ``finished`` is the caller's: emptied here, as the
        dispatcher thread must hold no result while it waits in select()."""
        if output and self.on_output is not None:
            self.on_output(output)
        settle_all(finished)

    def _next_timeout(self) -> float:
        """Seconds until the next deadline (at most 1); call with the lock held."""
        now = time.monotonic()
        soon = now + 1.0
        if self.deadlines:
            soon = min(soon, self.deadlines[0][0])
        for conn in self.packed:
            soon = min(soon, conn.head_since + self.pacing.take_back_after())
        due = self.pacing.due()
        if due is not None:
            soon = min(soon, due)
        for conn in self.watch:
            if conn.stage != _READY:
                soon = min(soon, conn.deadline)
            elif conn.kill_at is not None:
                soon = min(soon, conn.kill_at)
        return max(0.0, soon - now)

    def _on_event(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.fileobj is self.listener:
            self._accept()
        elif key.fileobj is self._wake_r:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
            self._woken = False
        else:
            conn: Conn = key.data
            # an event from before a caller borrowed the connection (_borrow):
            # what is there now is the caller's to read, and it waits for it
            if conn.sock.fileno() >= 0 and conn is not self.borrowed:
                self._serve(conn, mask)

    def _serve(self, conn: Conn, mask: int) -> None:
        """Handshake, write or read on one connection; what goes wrong drops only it."""
        try:
            if conn.stage == _TLS_SHAKE:
                self._tls_step(conn)
                return
            if mask & selectors.EVENT_WRITE:
                self._flush(conn)
            if mask & selectors.EVENT_READ:
                self._read(conn)
        except (ProtocolError, ssl.SSLError, ValueError, struct.error) as exc:
            self._drop(conn, f"broke the protocol: {exc}")
        except OSError as exc:
            self._drop(conn, f"connection error: {exc}")
        except Exception as exc:
            # A peer found input this loop does not expect: a bug of ours,
            # but one that must cost only that connection, never the
            # dispatcher and every other worker with it.
            log.exception("unexpected error on a connection; dropping it")
            self._drop(conn, f"unexpected error: {exc!r}")

    def _requeue(self, task: Task) -> None:
        """A task that never started goes first in the queue, and on if a worker is free."""
        if task.shape is not None:
            self._requeue_shaped(task, task.shape)
            return
        self.queue.appendleft(task)
        self._drain()

    def _give_back(self, conn: Conn) -> None:
        """Requeue, in order, the tasks a worker holds that it never started."""
        held = [t for t in conn.tasks if t.state == RUNNING]
        conn.tasks.clear()
        for task in reversed(held):
            self.releasing.pop(task.id, None)
            task.state = QUEUED
            task.worker = None
            if task.shape is not None:
                self._requeue_shaped(task, task.shape)
            else:
                self.queue.appendleft(task)
        if held:
            self._drain()

    def _drop(self, conn: Conn, why: str | None) -> None:
        """Forget a connection; a task it was running becomes a crash."""
        fd = next((f for f, c in self.conns.items() if c is conn), None)
        if fd is None:
            return
        del self.conns[fd]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        if conn.out:
            self._flush(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.pending_out.discard(conn)
        self.dirty.discard(conn)
        self.watch.discard(conn)
        self.unauthenticated.pop(conn, None)
        self.idle.pop(conn, None)
        self.room.pop(conn, None)
        self.idle_shaped.pop(conn, None)
        self.ahead.discard(conn)
        self.packed.discard(conn)
        self._close_segments(conn)
        info = conn.info
        if info is None:
            if why:
                self._log_drop(why)
            return
        self.workers.pop(info.id, None)
        self._lost(conn)
        # requests to hand tasks back that this worker can no longer answer
        asked = [task_id for task_id, held_by in self.releasing.items() if held_by is conn]
        for task_id in asked:
            del self.releasing[task_id]
        head = conn.tasks[0] if conn.tasks else None
        if head is not None and head.state == RUNNING and not conn.leaving:
            # the worker died while running its oldest task; any behind it never started
            conn.tasks.popleft()
            detail = f"worker {info.id} (pid {info.pid}) was lost during the task"
            why = conn.last_words or why
            if why:
                detail += f": {why}"
            log.info("task %s crashed (attempt %d): %s", head.name, head.attempts, detail)
            handled = False
            if self.on_crash is not None:
                try:
                    handled = self.on_crash(head, detail)
                except Exception:  # a retry that failed must still leave a record
                    log.exception("pycrew could not retry task %s", head.name)
            self.observed.crashed(head, info.id, detail, retried=handled)
            if not handled:
                self._resolve(head, Status.CRASH, detail, started=conn.started)
        self._give_back(conn)
        if asked:
            self._steal_for_idle()
        if why:
            log.info("worker %s dropped: %s", info.id, why)
        else:
            log.debug("worker %s disconnected", info.id)
        self.observed.disconnected(info.id, why)
        self.on_worker("disconnected", info.id)

    def _on_timers(self) -> None:
        now = time.monotonic()
        self.receive_pool.expire(now, _SPARES_SECONDS)
        self._tend_segments(self.workers.values(), now, _SPARES_SECONDS)
        if self.pacing.expired(now) and self.queue and self.idle:
            self._drain()  # the busy workers are stuck: what waited for them goes
        if self.packed:
            self._unpack(now)
        while self.deadlines and self.deadlines[0][0] <= now:
            _, task_id = heapq.heappop(self.deadlines)
            task = self.live.get(task_id)
            if task is not None:
                self._stop(task, Status.TIMEOUT)
        for conn in list(self.watch):
            if conn.stage != _READY and conn.deadline <= now:
                self._drop(conn, "handshake deadline passed")
            elif conn.kill_at is not None and conn.kill_at <= now and conn.info is not None:
                conn.kill_at = None
                log.info("worker %s did not stop its cancelled task: killing it", conn.info.id)
                self.on_kill(conn.info.id)
                self._drop(conn, None)

    def _shutdown(self) -> None:
        with self.lock:
            self.closing = True
            # nothing waits forever on a controller that stopped: what did not
            # end is cancelled, and its future says so
            for task in list(self.live.values()):
                self._resolve(task, Status.CANCEL, "the controller was terminated")
            for conn in list(self.conns.values()):
                if conn.stage == _READY:
                    self._write(conn, _frames.encode(Kind.EXIT, b""))
                    self._flush(conn)
                with contextlib.suppress(OSError):
                    conn.sock.close()
                self._close_segments(conn)
            self._close_probe()
            self.conns.clear()
            self.unauthenticated.clear()
            self.workers.clear()
            self.idle.clear()
            self.room.clear()
            self.idle_shaped.clear()
            with contextlib.suppress(OSError):
                self.listener.close()
            self.selector.close()
            self.cv.notify_all()
