"""The wire: length-prefixed frames and the authentication handshake
(what goes into a frame's pickle stream is ``_pickling``'s).

Frame layout (little endian)::

    kind:u8  flags:u8  nbuf:u16  meta_len:u32  | nbuf x len:u64 | meta | buf_1 ... buf_n

``meta`` is JSON during the handshake and a pickle stream after it; large
buffers (numpy arrays and other PEP 574 buffers) travel out of band in the
``buf_i`` slots, so they are neither copied into the pickle stream nor out of
it.

Handshake, before which nothing is unpickled in either direction::

    controller -> worker   HELLO   {protocol, pycrew, python, nonce_c}
    worker -> controller   AUTH    {protocol, pycrew, python, nonce_w, id, pid, host,
                                    mac_w = HMAC(secret, "worker" | nonce_c | nonce_w)}
    controller -> worker   WELCOME {mac_c = HMAC(secret, "controller" | nonce_w | nonce_c),
                                    settings}
                  or       REJECT  {reason}

Frames before WELCOME are capped at ``PREAUTH_MAX`` bytes and carry no buffers.
After it, a frame (meta and buffers together) may be at most ``bytes_max``
bytes, checked from the header before any memory is set aside for it.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import mmap
import socket
import struct
import sys
import threading
import time

from .._errors import ProtocolError
from .._version import __version__
from . import _shm

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

PROTOCOL = 4
PREAUTH_MAX = 4096
#: default limit on one frame after authentication: a task with its data, or a result
BYTES_MAX = 4 << 30
#: the most ``bytes_max`` may be
BYTES_LIMIT = 1 << 40
#: the pickle stream of one frame (buffers aside) is at most this long: its length is a u32
META_MAX = (1 << 32) - 1
#: buffers smaller than this stay inside the pickle stream
OOB_MIN = 64 * 1024
HEADER = struct.Struct("<BBHI")
LENGTH = struct.Struct("<Q")
TASK_ID = struct.Struct("<Q")
#: a TASK frame's head: the task's id, and the seconds it may take (its
#: seconds_timeout, 0 when not given), for a worker that must leave before
#: its job ends
TASK_HEAD = struct.Struct("<Qf")
#: a result names its task, its flags (LAST, KEPT), whether the task failed,
#: and how many seconds it ran (0 if it did not), so that the controller knows
#: without unpickling anything
RESULT_HEAD = struct.Struct("<QBBf")
#: RESULT flags: the worker leaves after this result; it keeps the result (KEEP)
LAST, KEPT = 1, 2
#: after a TASK_INPUTS frame's TASK head: how many inputs, then for each how
#: many of the frame's buffers it takes (its result's pickle, then its
#: buffers), or 0 and the id of a task whose result the worker kept
INPUTS_COUNT = struct.Struct("<I")
INPUT_PIECES = struct.Struct("<IQ")
#: a shared object's key, at the head of SHARE and UNSHARE frames
SHARE_KEY = struct.Struct("<Q")
#: the head of an OUTPUT frame: the task's id and the stream (1 stdout, 2 stderr)
OUTPUT_HEAD = struct.Struct("<QB")
SECRET_ENV = "PYCREW_SECRET"
#: the controller's import folders, for workers to add to their sys.path
PATH_ENV = "PYCREW_PATH"
TRUST_ENV = "PYCREW_TLS_TRUST"
TLS_NAME_ENV = "PYCREW_TLS_NAME"
CONTROLLER_ENV = "PYCREW_CONTROLLER"
#: a local worker's inherited end of a socket pair with its controller (a
#: descriptor number): it talks through that instead of dialing the port
CHANNEL_ENV = "PYCREW_CHANNEL_FD"
WORKER_ENV = "PYCREW_WORKER"
#: when the worker's job ends (seconds since the epoch, this host's clock), if known
JOB_END_ENV = "PYCREW_JOB_END"


class Kind(enum.IntEnum):
    HELLO = 1
    AUTH = 2
    WELCOME = 3
    REJECT = 4
    TASK = 10
    RESULT = 11
    CANCEL = 12
    BYE = 13
    EXIT = 14
    RELEASE = 15
    RELEASED = 16
    #: controller -> worker: a step every worker runs before its next task
    #: (the serializers, the initializer, an everywhere() call), in order
    SETUP = 17
    #: controller -> worker: a shared object (its key, then its pickle), kept for later tasks
    SHARE = 18
    #: controller -> worker: forget a shared object
    UNSHARE = 19
    #: worker -> controller: lines a running task printed (task id, stream, UTF-8 text)
    OUTPUT = 20
    #: worker -> controller: a setup step failed (JSON: error, trace); the worker leaves
    SETUP_FAILED = 21
    #: controller -> worker: a TASK that takes other tasks' results (``with_inputs``)
    TASK_INPUTS = 22
    #: controller -> worker: keep the result of this task (its id) after sending
    #: it, for tasks that take it and may run here
    KEEP = 23
    #: controller -> worker: drop the result kept for this task
    FORGET = 24
    #: worker -> controller: why the worker is about to die (UTF-8 text, such as
    #: a task over its memory limit); the connection drops right after it
    LAST_WORDS = 25
    #: worker -> controller, once, if WELCOME offered shared memory: whether it
    #: read the controller's probe (b"\x01") or not (b""); if it did, large
    #: buffers may come to it through shared memory from now on (``_shm``)
    SHM_READY = 26
    #: either way: the receiver let go of the shared-memory segments named (u32
    #: descriptors); the sender may reuse them
    SHM_DONE = 27


#: received buffers at least this large get fresh pages instead of a bytearray
LARGE = 1 << 20

Buffer = bytearray | mmap.mmap
Frame = tuple[int, bytes, "Sequence[Buffer]"]
#: the buffers of a frame that has none: one tuple for all, where a list each
#: cost a million results 56 MB
NO_BUFFERS: tuple[Buffer, ...] = ()


def receive_buffer(n: int) -> Buffer:
    """Room for ``n`` incoming bytes.

    A large ``bytearray`` is zero-filled by CPython before the kernel copies
    into it: a full extra pass over the memory (about 50 ms per 100 MB here).
    Fresh anonymous pages are zeroed lazily by the kernel instead.
    """
    return bytearray(n) if n < LARGE else mmap.mmap(-1, n)


class BufferPool:
    """Large receive buffers, reused once no task holds them any more.

    Fresh memory costs a page fault per 4 KiB (about 40 ms per 100 MB here);
    a buffer that a finished task let go of costs nothing. Whether a task
    (or something it stored) still uses a buffer is asked of the buffer
    itself: an mmap with live views refuses to resize. At most ``keep``
    spares are kept, and only while tasks keep arriving.

    ``recycle_on_take``: the controller's pool for results, which recycles
    whenever a buffer is asked for (a result the user let go of makes room for
    the next) and also refuses a buffer something holds by name.
    """

    def __init__(self, keep: int = 2, recycle_on_take: bool = False) -> None:
        self.keep = keep
        self.recycle_on_take = recycle_on_take
        self.lock = threading.Lock()
        self.spares: list[mmap.mmap] = []
        self.lent: list[mmap.mmap] = []
        #: when a buffer was last lent: an idle owner lets its memory go (``expire``)
        self.last_lent = 0.0

    def take(self, n: int) -> Buffer:
        if n < LARGE:
            return bytearray(n)
        if self.recycle_on_take:
            self.recycle()
        self.last_lent = time.monotonic()
        with self.lock:
            for i, spare in enumerate(self.spares):
                if len(spare) == n:
                    del self.spares[i]
                    self.lent.append(spare)
                    return spare
        fresh = mmap.mmap(-1, n)
        with self.lock:
            self.lent.append(fresh)
        return fresh

    def recycle(self) -> None:
        """Move lent buffers that nothing uses any more back to the spares."""
        with self.lock:
            still = []
            for buf in self.lent:
                # held by name, though no view of it is (the list, the loop and
                # the call make 3): a frame still being read, or a deserializer
                # that kept the buffer itself. Asked where buffers are recycled
                # while frames arrive; the worker recycles between tasks only.
                if self.recycle_on_take and sys.getrefcount(buf) > 3:
                    still.append(buf)
                    continue
                try:
                    buf.resize(len(buf))
                except BufferError:
                    still.append(buf)
                    continue
                except (OSError, ValueError, SystemError):
                    continue
                self.spares.append(buf)
            # a buffer a task keeps for good is forgotten; its owner frees it
            self.lent = still[-16:]
            del self.spares[: max(0, len(self.spares) - self.keep)]

    def drop_spares(self) -> None:
        with self.lock:
            self.spares.clear()

    def expire(self, now: float, seconds: float) -> None:
        """Forget every buffer, spare or lent, once none was lent for ``seconds``."""
        if (self.spares or self.lent) and now - self.last_lent > seconds:
            with self.lock:
                self.spares.clear()
                self.lent.clear()


def python_version() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def encode(kind: int, meta: bytes, buffers: list[memoryview] | None = None) -> tuple[Any, ...]:
    """One frame as pieces: a small head (header + meta) then the buffers.

    A tuple: a queued task holds its frame, and a list cost twice the memory.
    """
    if not buffers:
        return (HEADER.pack(kind, 0, 0, len(meta)) + meta,)
    head = HEADER.pack(kind, 0, len(buffers), len(meta))
    head += b"".join(LENGTH.pack(b.nbytes) for b in buffers)
    return (head + meta, *buffers)


class Decoder:
    """Incremental frame parser for a non-blocking socket.

    Args:
        limit: the largest frame accepted (meta and buffers), checked from the
            header before its bytes arrive or any room is made for them.
        allow_buffers: whether frames may carry out-of-band buffers.
        alloc: makes the room for a buffer (a pool's ``take`` reuses memory).
    """

    __slots__ = (
        "_bufs",
        "_filled",
        "_kind",
        "_lens",
        "_meta",
        "_sizes",
        "alloc",
        "allow_buffers",
        "buf",
        "frames",
        "limit",
        "peer",
    )

    def __init__(
        self,
        limit: int,
        allow_buffers: bool,
        alloc: Callable[[int], Buffer] = receive_buffer,
        peer: _shm.Peer | None = None,
    ) -> None:
        self.limit = limit
        self.allow_buffers = allow_buffers
        self.alloc = alloc
        #: reads the shared-memory buffers of a peer that agreed to send them
        self.peer = peer
        #: a frame's buffer sizes, where some travel through shared memory
        self._sizes: list[int] | None = None
        self.buf = bytearray()
        self.frames: list[Frame] = []
        self._kind = 0
        self._meta = b""
        self._lens: list[int] = []
        self._bufs: list[Buffer] = []
        self._filled = 0

    def direct_target(self) -> memoryview | None:
        """Where the socket may write straight into a large buffer, if it may."""
        if self._lens and not self.buf:
            current = self._bufs[-1]
            if len(current) - self._filled > OOB_MIN:
                return memoryview(current)[self._filled :]
        return None

    def filled_directly(self, n: int) -> None:
        self._filled += n
        self._advance()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data
        self._advance()

    def _advance(self) -> None:
        # Frames are parsed at an offset and the bytes consumed cut once at
        # the end: cutting after each frame would move the rest of the buffer
        # every time (quadratic in a chunk of many small frames).
        buf = self.buf
        pos = 0
        try:
            while True:
                if self._lens:
                    current = self._bufs[-1]
                    need = len(current) - self._filled
                    n = min(need, len(buf) - pos)
                    if n > 0:
                        current[self._filled : self._filled + n] = buf[pos : pos + n]
                        pos += n
                        self._filled += n
                        need -= n
                    if need:
                        return
                    if len(self._bufs) < len(self._lens):
                        self._bufs.append(self._slot(len(self._bufs)))
                        self._filled = 0
                        continue
                    if self._sizes is not None:
                        self._read_shared()
                    self.frames.append((self._kind, self._meta, self._bufs))
                    self._lens, self._bufs = [], []
                    continue
                if len(buf) - pos < HEADER.size:
                    return
                kind, _flags, nbuf, meta_len = HEADER.unpack_from(buf, pos)
                if nbuf and not self.allow_buffers:
                    raise ProtocolError("buffers are not allowed before authentication")
                check_size(meta_len, self.limit)
                start = pos + HEADER.size + LENGTH.size * nbuf
                if len(buf) < start:
                    return
                lens = [
                    LENGTH.unpack_from(buf, pos + HEADER.size + LENGTH.size * i)[0]
                    for i in range(nbuf)
                ]
                check_size(meta_len + sum(n & ~_shm.SHARED for n in lens), self.limit)
                sizes = _shared_sizes(lens, self.peer)
                end = start + meta_len
                if len(buf) < end:
                    return
                meta = bytes(buf[start:end])
                if nbuf:
                    self._sizes = sizes
                    if sizes is not None:
                        lens = [_shm.REF.size if n & _shm.SHARED else n for n in lens]
                    self._lens = lens
                    self._kind, self._meta = kind, meta
                    self._bufs = [self._slot(0)]
                    self._filled = 0
                else:
                    self.frames.append((kind, meta, NO_BUFFERS))
                pos = end
        finally:
            if pos:
                del buf[:pos]

    def _slot(self, i: int) -> Buffer:
        """Room for buffer ``i`` of the frame: its bytes, or its shared-memory reference."""
        if self._sizes is not None and self._sizes[i] >= 0:
            return bytearray(self._lens[i])
        return self.alloc(self._lens[i])

    def _read_shared(self) -> None:
        sizes, self._sizes = self._sizes, None
        assert sizes is not None
        assert self.peer is not None
        for i, size in enumerate(sizes):
            if size >= 0:
                self._bufs[i] = self.peer.read(self._bufs[i], size)


def _shared_sizes(lens: list[int], peer: _shm.Peer | None) -> list[int] | None:
    """For a frame with buffers in shared memory, the size of each (-1: on the wire).

    None when all its buffers travel on the wire.
    """
    if not any(n & _shm.SHARED for n in lens):
        return None
    if peer is None:
        raise ProtocolError("a shared-memory buffer from a peer that did not agree to send one")
    return [n & ~_shm.SHARED if n & _shm.SHARED else -1 for n in lens]


def check_size(size: int, limit: int) -> None:
    """Refuse a frame larger than ``limit`` (called before anything is allocated for it)."""
    if size > limit:
        raise ProtocolError(f"a frame of {size} bytes exceeds the limit of {limit} bytes")


def too_large(meta: int, buffers: list[memoryview], limit: int) -> str | None:
    """Why a frame of this meta length and these buffers may not be sent, or None."""
    size = meta + sum(b.nbytes for b in buffers)
    if size > limit:
        return f"{size} bytes, more than bytes_max ({limit})"
    if meta > META_MAX:
        return f"{meta} bytes of pickled objects, more than one frame holds ({META_MAX})"
    return None


def pieces(frame: bytes | tuple[Any, ...]) -> tuple[Any, ...]:
    """A task's frame as pieces to send: a task keeps a frame without buffers as its
    bytes alone (a million queued tasks spare a tuple each)."""
    return (frame,) if isinstance(frame, bytes) else frame


def with_inputs(
    frame: bytes | tuple[Any, ...], inputs: Sequence[Sequence[Any] | int]
) -> tuple[tuple[Any, ...], int]:
    """A task's TASK frame made a TASK_INPUTS frame that carries its inputs; and its size.

    Each input is a RESULT's meta (head and pickle) and its buffers, as the
    worker that made it sent them: forwarded as they are, never unpickled
    here; or the id of a task whose result the receiving worker kept. They go
    first among the frame's buffers, as views (no copy); the task's own
    buffers follow. The worker unpickles each input's outcome and hands the
    values to the task (``_worker/_values.py``).
    """
    parts = pieces(frame)
    head = memoryview(parts[0]).cast("B")
    nbuf = HEADER.unpack_from(head)[2]
    meta = head[HEADER.size + LENGTH.size * nbuf :]
    directory = INPUTS_COUNT.pack(len(inputs)) + b"".join(
        INPUT_PIECES.pack(0, one) if isinstance(one, int) else INPUT_PIECES.pack(len(one), 0)
        for one in inputs
    )
    buffers = [
        memoryview(piece).cast("B") for one in inputs if not isinstance(one, int) for piece in one
    ]
    buffers += [memoryview(piece).cast("B") for piece in parts[1:]]
    new_meta = b"".join((meta[: TASK_HEAD.size], directory, meta[TASK_HEAD.size :]))
    encoded = encode(Kind.TASK_INPUTS, new_meta, buffers)
    return encoded, len(new_meta) + sum(b.nbytes for b in buffers)


def split_inputs(
    meta: bytes | memoryview, bufs: Sequence[Any]
) -> tuple[int, list[Sequence[Any] | int], Sequence[Any]]:
    """A TASK_INPUTS frame's parts: how far its payload's pickle starts past the TASK
    head, each input (its pieces, or the id of a kept result), and the task's
    own buffers."""
    (count,) = INPUTS_COUNT.unpack_from(meta, TASK_HEAD.size)
    at = TASK_HEAD.size + INPUTS_COUNT.size
    groups: list[Sequence[Any] | int] = []
    used = 0
    for _ in range(count):
        n, kept = INPUT_PIECES.unpack_from(meta, at)
        at += INPUT_PIECES.size
        if n == 0:
            groups.append(kept)
            continue
        if used + n > len(bufs):
            raise ProtocolError("a task's inputs do not match its buffers")
        groups.append(bufs[used : used + n])
        used += n
    return at - TASK_HEAD.size, groups, bufs[used:]


def retag(pieces: Sequence[Any], task_id: int) -> tuple[Any, ...]:
    """A copy of an encoded TASK frame that carries another task id."""
    head = bytearray(memoryview(pieces[0]).cast("B"))
    nbuf = HEADER.unpack_from(head)[2]
    TASK_ID.pack_into(head, HEADER.size + LENGTH.size * nbuf, task_id)
    return (bytes(head), *pieces[1:])


def mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> str:
    return hmac.new(secret, role + b"\0" + first + second, hashlib.sha256).hexdigest()


def check_mac(secret: bytes, role: bytes, first: bytes, second: bytes, claimed: object) -> bool:
    # compare_digest refuses non-ASCII text with a TypeError: a stranger's mac
    # must get a plain "no" instead
    if not isinstance(claimed, str) or not claimed.isascii():
        return False
    return hmac.compare_digest(mac(secret, role, first, second), claimed)


def json_meta(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_json(meta: bytes) -> dict[str, Any]:
    try:
        value = json.loads(meta)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError("handshake message is not JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError("handshake message is not a JSON object")
    return value


def version_problem(peer: dict[str, Any], peer_role: str) -> str | None:
    """Why a peer's versions cannot work with ours, or None.

    ``peer_role`` is what the peer is ("worker" or "controller"), for the message.
    """
    us = "controller" if peer_role == "worker" else "worker"
    mine = hello_fields()
    for field, label in (("protocol", "wire protocol"), ("pycrew", "pycrew"), ("python", "Python")):
        if peer.get(field) != mine[field]:
            return f"the {peer_role} runs {label} {peer.get(field)!r} and the {us} {mine[field]!r}"
    return None


def hello_fields() -> dict[str, Any]:
    """The version fields both sides send in the handshake."""
    return {"protocol": PROTOCOL, "pycrew": __version__, "python": python_version()}


def keepalive(sock: socket.socket, seconds: float | None = None) -> None:
    """Let the kernel notice a vanished peer within seconds, whatever a task does.

    Keep-alive probes find a vanished peer while the line is idle (in about
    5 s); the kernel sends none while data waits for an acknowledgement, so
    ``seconds`` (TCP_USER_TIMEOUT) bounds that case: a silent partition with
    a task or a result in flight. A local socket pair has neither line nor
    partition: its peer's end closes with the peer, and it is left as it is.
    """
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = [("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)]
    if seconds is not None:
        options.append(("TCP_USER_TIMEOUT", max(1, int(seconds * 1000))))
    for name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
