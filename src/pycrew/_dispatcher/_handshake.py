"""Letting workers in: accept, TLS, then the handshake, before anything is unpickled.

```
 accept ─► [TLS handshake] ─► HELLO (nonce) ─► AUTH (HMAC of the secret) ─┬─► WELCOME + settings
   │ more than PREAUTH_CONNECTIONS waiting: the oldest is evicted          │   + setup steps
   └ HANDSHAKE_SECONDS to get through, frames capped at PREAUTH_MAX        └─► REJECT (why)
```

``Doorway`` is the part of the dispatcher that does this; ``Conn``
is one connection as the dispatcher sees it, from accept to close.
"""

from __future__ import annotations

import collections
import logging
import secrets
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from .._errors import ProtocolError
from .._wire import _frames, _shm
from .._wire._frames import Kind
from ._task import WorkerInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._resources import Resources
    from ._observe import Observed
    from ._task import Task

log = logging.getLogger("pycrew.dispatcher")

HANDSHAKE_SECONDS = 10.0
#: unauthenticated connections held at once; a new one beyond this evicts the
#: oldest, so a flood of stalled peers cannot keep a real worker out for long
PREAUTH_CONNECTIONS = 64
#: at most one log line per this many seconds about dropped unauthenticated peers
DROP_LOG_SECONDS = 1.0
_TLS_SHAKE, _AUTH, _READY = 0, 1, 2


class Conn:
    """One worker connection as the dispatcher sees it."""

    __slots__ = (
        "answered",
        "deadline",
        "decoder",
        "head_since",
        "info",
        "kill_at",
        "last_words",
        "leaving",
        "nonce",
        "out",
        "peer",
        "segments",
        "shape",
        "shared",
        "sock",
        "stage",
        "started",
        "tasks",
        "want_write",
    )

    def __init__(self, sock: socket.socket, stage: int) -> None:
        self.sock = sock
        self.stage = stage
        self.decoder = _frames.Decoder(_frames.PREAUTH_MAX, allow_buffers=False)
        self.out: collections.deque[bytes | memoryview] = collections.deque()
        self.want_write = False
        self.deadline = time.monotonic() + HANDSHAKE_SECONDS
        self.nonce = b""
        self.info: WorkerInfo | None = None
        #: the resources it was launched with (a ``Resources``), or None: no shape
        self.shape: Resources | None = None
        #: why it said it is ending itself while a task runs (LAST_WORDS), if it did
        self.last_words: str | None = None
        # tasks sent to this worker, oldest (running) first; more than one only
        # when prefetching
        self.tasks: collections.deque[Task] = collections.deque()
        self.leaving = False
        self.kill_at: float | None = None
        #: when it last returned a result, which is when its oldest task started
        #: if it holds more (the dispatcher's clock)
        self.head_since = 0.0
        #: when its oldest task began to run (the dispatcher's clock)
        self.started = 0.0
        #: keys of the shared objects sent to this worker: each goes at most once
        self.shared: set[int] = set()
        #: reads the worker's shared-memory segments, when it is on this machine
        self.peer: _shm.Peer | None = None
        #: our segments lent to it, once it said it can read them (SHM_READY)
        self.segments: _shm.Segments | None = None
        #: whether it answered the offer of shared memory (SHM_READY, once)
        self.answered = False


class Doorway:
    """The dispatcher's door: what it does with a connection until it is a worker."""

    listener: socket.socket
    selector: selectors.BaseSelector
    closing: bool
    tls: ssl.SSLContext | None
    secret: bytes
    settings: dict[str, Any]
    bytes_max: int
    receive_pool: _frames.BufferPool
    setup: list[tuple[Any, ...]]
    conns: dict[int, Conn]
    workers: dict[str, Conn]
    shape_of: dict[str, Resources]
    unauthenticated: dict[Conn, None]
    watch: set[Conn]
    cumulative: int
    on_worker: Callable[[str, str], None]
    on_refused: Callable[[str, str], None] | None
    observed: Observed
    _drops_logged_at: float
    _drops_unlogged: int

    def _drop(self, conn: Conn, why: str | None) -> None:
        raise NotImplementedError

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _refill(self, conn: Conn) -> None:
        raise NotImplementedError

    def _offer_memory(self, conn: Conn, pid: object, auth: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _frames.keepalive(sock, self.settings.get("seconds_heartbeat"))
            self._admit(sock)

    def adopt(self, sock: socket.socket) -> None:
        """Take this end of a socket pair whose other end a local worker inherited.

        The worker is let in as one that dialed the port would be: TLS if
        the controller has it, then the same handshake. A pair has no
        address for a stranger to reach, and no TCP stack to cross, which
        makes a round trip cheaper. Called with the dispatcher's lock held,
        from any thread; a dispatcher that is closing closes it instead, and
        the worker finds the port closed too.
        """
        if self.closing:
            sock.close()
            return
        self._admit(sock)
        self._wake_locked()

    def _admit(self, sock: socket.socket) -> None:
        while len(self.unauthenticated) >= PREAUTH_CONNECTIONS:
            oldest = next(iter(self.unauthenticated))
            self._drop(oldest, "evicted: too many connections waiting to authenticate")
        sock.setblocking(False)
        if self.tls is not None:
            tls_sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = Conn(tls_sock, _TLS_SHAKE)
            self._register(conn)
            self._tls_step(conn)
        else:
            conn = Conn(sock, _AUTH)
            self._register(conn)
            self._hello(conn)

    def _wake_locked(self) -> None:
        raise NotImplementedError

    def _register(self, conn: Conn) -> None:
        self.conns[conn.sock.fileno()] = conn
        self.unauthenticated[conn] = None
        self.watch.add(conn)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _tls_step(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._interest(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._interest(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self._drop(conn, f"TLS handshake failed: {exc}")
            return
        conn.stage = _AUTH
        self._interest(conn, selectors.EVENT_READ)
        self._hello(conn)

    def _interest(self, conn: Conn, events: int) -> None:
        raise NotImplementedError

    def _hello(self, conn: Conn) -> None:
        conn.nonce = secrets.token_bytes(32)
        hello = _frames.hello_fields() | {"nonce": conn.nonce.hex()}
        self._write(conn, _frames.encode(Kind.HELLO, _frames.json_meta(hello)))

    def _on_auth(self, conn: Conn, kind: int, meta: bytes) -> None:
        if kind != Kind.AUTH:
            raise ProtocolError("expected the worker's AUTH message")
        auth = _frames.parse_json(meta)
        try:
            nonce_w = bytes.fromhex(str(auth.get("nonce", "")))
        except ValueError:
            nonce_w = b""
        proven = len(nonce_w) >= 16 and _frames.check_mac(
            self.secret, b"worker", conn.nonce, nonce_w, auth.get("mac")
        )
        worker_id = str(auth.get("id") or f"anonymous-{secrets.token_hex(4)}")
        problem = _frames.version_problem(auth, "worker")
        if problem is None and not proven:
            problem = "authentication failed"
        if problem is None and worker_id in self.workers:
            problem = f"worker id {worker_id!r} is already connected"
        if problem is not None:
            self._write(conn, _frames.encode(Kind.REJECT, _frames.json_meta({"reason": problem})))
            self._drop(conn, f"rejected: {problem}")
            # only a peer holding the secret is one of ours: a stranger's claims
            # about itself are not worth the user's attention
            if proven:
                log.info("refused worker %s: %s", worker_id, problem)
                self.observed.event("refused", worker_id, detail=problem)
                if self.on_refused is not None:
                    self.on_refused(worker_id, problem)
            return
        pid = auth.get("pid")
        reply = {
            "mac": _frames.mac(self.secret, b"controller", nonce_w, conn.nonce),
            "settings": self.settings,
        } | self._offer_memory(conn, pid, auth)
        self._write(conn, _frames.encode(Kind.WELCOME, _frames.json_meta(reply)))
        for frame in self.setup:
            self._write(conn, frame)
        conn.info = WorkerInfo(
            worker_id, pid if isinstance(pid, int) else None, str(auth.get("host", "")) or None
        )
        log.info("worker %s connected (pid %s on %s)", worker_id, conn.info.pid, conn.info.host)
        conn.shape = self.shape_of.pop(worker_id, None)
        self.observed.connected(worker_id, conn.info.pid, conn.info.host, conn.shape)
        conn.stage = _READY
        self.watch.discard(conn)
        self.unauthenticated.pop(conn, None)
        conn.decoder = _frames.Decoder(
            self.bytes_max, allow_buffers=True, alloc=self.receive_pool.take, peer=conn.peer
        )
        self.workers[worker_id] = conn
        self.cumulative += 1
        self.on_worker("connected", worker_id)
        # tasks sent before it says it reads our segments (SHM_READY) go whole
        self._refill(conn)

    def _log_drop(self, why: str) -> None:
        """Log dropped strangers at a bounded rate: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._drops_logged_at < DROP_LOG_SECONDS:
            self._drops_unlogged += 1
            return
        more = f" (and {self._drops_unlogged} more since)" if self._drops_unlogged else ""
        log.info("dropped a connection before authentication: %s%s", why, more)
        self._drops_logged_at = now
        self._drops_unlogged = 0
