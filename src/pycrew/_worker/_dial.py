"""Dialling the controller: the handshake, the settings it sends, and reading frames.

```
 connect(address) ─► TCP, or the inherited channel of a local worker
     (+ TLS, verifying the controller) ─► HELLO ◄─ nonce
     AUTH (HMAC of the secret, our pid, a shared-memory probe) ─►
     ◄─ WELCOME (its HMAC, the settings, its probe) ─► Settings
 read_frame(stream) ─► (kind, meta, buffers): shared-memory buffers mapped
```

A connection closed mid-handshake is tried again for a while (over TCP
where a channel was closed); a refusal is final. Nothing the controller
sends is unpickled before it proved it knows the secret.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import socket
import sys
import time

from .._errors import ProtocolError
from .._wire import _frames, _shm
from .._wire._frames import Kind
from ._evaluate import Cleanup, describe
from ._inflow import Inflow

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

HANDSHAKE_SECONDS = 15.0
#: seconds_heartbeat when the controller says nothing of it
HEARTBEAT_SECONDS = 10.0


class Settings:
    """Worker limits and clean-up flags, as the controller sent them."""

    def __init__(
        self,
        seconds_idle: float,
        seconds_wall: float,
        tasks_max: float,
        tasks_timers: int,
        cleanup: Cleanup,
        bytes_max: int = _frames.BYTES_MAX,
        metrics: dict[str, Any] | None = None,
        seconds_heartbeat: float = HEARTBEAT_SECONDS,
        relay_output: bool = False,
        seconds_drain: float = 0.0,
    ) -> None:
        #: what a task that says nothing of its length is taken to need, before
        #: the job ends (its own seconds_timeout, when given, wins)
        self.seconds_drain = seconds_drain
        #: when this worker must be gone (time.monotonic()): its job's end
        self.job_end = _job_end()
        #: send what tasks print to the controller, too
        self.relay_output = relay_output
        #: how long the kernel may wait on an unanswered peer, and the watchdog
        #: on a stopped worker, before giving up on it
        self.seconds_heartbeat = seconds_heartbeat
        self.seconds_idle = seconds_idle
        self.seconds_wall = seconds_wall
        self.tasks_max = tasks_max
        self.tasks_timers = tasks_timers
        self.bytes_max = bytes_max
        self.cleanup = cleanup
        #: ``{"path": ..., "seconds_interval": ...}`` to sample this process, or None
        self.metrics = metrics
        #: whether the controller offered shared memory (it waits for the answer)
        self.shm_offered = False
        #: the controller's pid where both ends proved they can share memory, else 0
        self.shm_pid = 0


def _read_exact(stream: Inflow, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def read_frame(
    stream: Inflow,
    limit: int,
    allow_buffers: bool,
    alloc: Callable[[int], _frames.Buffer] = _frames.receive_buffer,
    peer: _shm.Peer | None = None,
) -> _frames.Frame:
    kind, _flags, nbuf, meta_len = _frames.HEADER.unpack(_read_exact(stream, _frames.HEADER.size))
    if kind != Kind.TASK:
        # only a task's buffers go back to the pool after it: a shared object keeps its own
        alloc = _frames.receive_buffer
    if nbuf and not allow_buffers:
        raise ProtocolError("buffers before authentication")
    _frames.check_size(meta_len, limit)
    lens = [_frames.LENGTH.unpack(_read_exact(stream, 8))[0] for _ in range(nbuf)]
    _frames.check_size(meta_len + sum(n & ~_shm.SHARED for n in lens), limit)
    meta = _read_exact(stream, meta_len)
    bufs = []
    for n in lens:
        if n & _shm.SHARED:
            if peer is None:
                raise ProtocolError("a shared-memory buffer the worker did not agree to")
            ref = _read_exact(stream, _shm.REF.size)
            bufs.append(peer.read(ref, n & ~_shm.SHARED))
            continue
        buf = alloc(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = stream.readinto(view[got:])
            if not k:
                raise EOFError
            got += k
        view.release()
        bufs.append(buf)
    return kind, meta, bufs


def send_pieces(sock: socket.socket, pieces: Sequence[Any]) -> None:
    for piece in pieces:
        sock.sendall(piece)


def _limit(value: Any) -> float:
    return math.inf if value is None else float(value)


def _take_env(name: str) -> str:
    """Remove a variable from the environment, its bytes in /proc/self/environ too.

    ``os.environ.pop`` only unlinks the variable: its bytes stay in the
    process's initial environment block, where a task could read them back
    from /proc/self/environ. Overwrite them first.
    """
    value = os.environ.get(name, "")
    if value and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            libc = ctypes.CDLL(None)
            libc.getenv.restype = ctypes.c_void_p
            libc.getenv.argtypes = [ctypes.c_char_p]
            where = libc.getenv(name.encode())
            if where:
                # not NUL bytes: readers of the block take an empty entry for its end
                ctypes.memset(where, ord("x"), len(os.fsencode(value)))
    os.environ.pop(name, None)
    return value


class _Closed(Exception):
    """The controller closed the connection before the handshake was over."""


def connect(address: str, tls: bool) -> tuple[socket.socket, Inflow, Settings]:
    """Dial, authenticate both ways, and receive the settings.

    A connection closed mid-handshake is tried again for a while: a controller
    under a flood of strangers evicts its oldest unauthenticated connections,
    and one of them may be ours. A refusal is final.
    """
    secret_hex = _take_env(_frames.SECRET_ENV)
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        secret = b""
    if not secret:
        raise ProtocolError(f"no valid secret in ${_frames.SECRET_ENV}")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    context = None
    server_name = os.environ.pop(_frames.TLS_NAME_ENV, "") or host
    if tls:
        trust = os.environ.pop(_frames.TRUST_ENV, "")
        if not trust:
            raise ProtocolError(f"TLS is on but ${_frames.TRUST_ENV} is empty")
        context = client_context(trust)
    channel = _take_channel()
    deadline = time.monotonic() + HANDSHAKE_SECONDS
    pause = 0.05
    while True:
        try:
            return _handshake(host, int(port), secret, context, server_name, channel)
        except _Closed as exc:
            if channel is not None:
                # the controller let go of its end (it evicted it, or it never
                # took it): the port still answers
                channel = None
                continue
            if time.monotonic() + pause > deadline:
                raise ProtocolError(f"the controller kept closing the connection: {exc}") from exc
            time.sleep(pause)
            pause = min(2 * pause, 1.0)


def _take_channel() -> socket.socket | None:
    """The socket pair end a local launcher handed down, if any (see ``CHANNEL_ENV``).

    Taken out of the environment, so that a task's own child processes
    neither see it nor mistake a descriptor of theirs for it.
    """
    fd = os.environ.pop(_frames.CHANNEL_ENV, "")
    if not fd:
        return None
    try:
        sock = socket.socket(fileno=int(fd))
    except (ValueError, OSError):
        return None  # not a socket of ours after all: dial the port
    if sock.family != getattr(socket, "AF_UNIX", None) or sock.type != socket.SOCK_STREAM:
        sock.detach()  # somebody else's descriptor: leave it alone
        return None
    sock.set_inheritable(False)
    return sock


def _handshake(
    host: str,
    port: int,
    secret: bytes,
    context: Any,
    server_name: str,
    channel: socket.socket | None = None,
) -> tuple[socket.socket, Inflow, Settings]:
    if channel is not None:
        sock = channel
        sock.settimeout(HANDSHAKE_SECONDS)
    else:
        sock = socket.create_connection((host, port), timeout=HANDSHAKE_SECONDS)
    try:
        return _authenticate(sock, secret, context, server_name)
    except (EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        sock.close()
        raise _Closed(describe(exc)) from exc
    except OSError as exc:
        sock.close()
        # ssl.SSLEOFError (the peer hung up mid-handshake) is worth a retry; a
        # certificate that fails verification is not
        if type(exc).__name__ == "SSLEOFError":
            raise _Closed(describe(exc)) from exc
        raise
    except BaseException:
        sock.close()
        raise


def _authenticate(
    sock: socket.socket, secret: bytes, context: Any, server_name: str
) -> tuple[socket.socket, Inflow, Settings]:
    if sock.family != getattr(socket, "AF_UNIX", None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _frames.keepalive(sock)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=server_name)
    stream = Inflow(sock)
    kind, meta, _ = read_frame(stream, _frames.PREAUTH_MAX, False)
    if kind != Kind.HELLO:
        raise ProtocolError("the controller did not say hello")
    hello = _frames.parse_json(meta)
    problem = _frames.version_problem(hello, "controller")
    nonce_c = bytes.fromhex(str(hello.get("nonce", "")))
    nonce_w = os.urandom(32)
    auth = _frames.hello_fields() | {
        "nonce": nonce_w.hex(),
        "mac": _frames.mac(secret, b"worker", nonce_c, nonce_w),
        "id": os.environ.get(_frames.WORKER_ENV, ""),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    # a controller on this machine proves it can read it, and shares memory then
    probe = _shm.Probe.make() if problem is None else None
    if probe is not None:
        auth["shm"] = probe.offer()
    try:
        send_pieces(sock, _frames.encode(Kind.AUTH, _frames.json_meta(auth)))
        if problem is not None:
            raise ProtocolError(problem)
        kind, meta, _ = read_frame(stream, _frames.PREAUTH_MAX, False)
    finally:
        if probe is not None:
            probe.close()
    reply = _frames.parse_json(meta)
    if kind == Kind.REJECT:
        raise ProtocolError(f"the controller refused us: {reply.get('reason')}")
    if kind != Kind.WELCOME or not _frames.check_mac(
        secret, b"controller", nonce_w, nonce_c, reply.get("mac")
    ):
        raise ProtocolError("the controller did not prove it knows the secret")
    sock.settimeout(None)
    raw = reply.get("settings", {})
    settings = Settings(
        seconds_idle=_limit(raw.get("seconds_idle")),
        seconds_wall=_limit(raw.get("seconds_wall")),
        tasks_max=_limit(raw.get("tasks_max")),
        tasks_timers=int(raw.get("tasks_timers", 0)),
        bytes_max=int(raw.get("bytes_max", _frames.BYTES_MAX)),
        metrics=raw.get("metrics") if isinstance(raw.get("metrics"), dict) else None,
        seconds_heartbeat=float(raw.get("seconds_heartbeat") or HEARTBEAT_SECONDS),
        relay_output=bool(raw.get("relay_output", False)),
        seconds_drain=float(raw.get("seconds_drain") or 0.0),
        cleanup=Cleanup(
            reset_globals=bool(raw.get("reset_globals", True)),
            reset_modules=bool(raw.get("reset_modules", False)),
            garbage_collection=bool(raw.get("garbage_collection", False)),
            reset_environment=bool(raw.get("reset_environment", False)),
        ),
    )
    offer = reply.get("shm")
    if probe is not None and isinstance(offer, list) and len(offer) == 3:
        settings.shm_offered = True
        pid, *probe_offer = offer
        if _shm.check_probe(pid, probe_offer):
            settings.shm_pid = pid
    return sock, stream, settings


def client_context(trust_pem: str) -> Any:
    """Verify the controller against ``trust_pem`` (the root only), host name included.

    Here rather than in _tls.py, whose imports would cost every worker's start.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=trust_pem)
    return ctx


def _job_end() -> float:
    """When this worker's job ends, on the ``time.monotonic()`` clock (inf: not known)."""
    try:
        end = float(os.environ.pop(_frames.JOB_END_ENV, ""))
    except ValueError:
        return math.inf
    return time.monotonic() + (end - time.time())
