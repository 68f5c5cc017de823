"""Shared memory between a controller and a worker on the same machine.

```
 sender (either side)                              receiver (same machine, same user)
 frame with a buffer >= SHM_MIN
   └─► copy it into a memfd (a spare one reused) ─► the buffer's slot on the wire
       its length gets SHARED, its slot the fd      carries the fd, not the bytes
                                                    open /proc/<sender>/fd/<fd>, check
                                                    it is one of ours, map it privately
                                                    (copy-on-write): the task or the
                                                    result uses those pages, uncopied
 the memfd goes back to the spares ◄── SHM_DONE [fd, ...] ◄── once nothing uses the map
```

A large array then crosses in one memory copy (into the segment) where the
socket takes two, and a reused segment costs no fresh pages. A memfd has
no name: nothing lingers in ``/dev/shm`` after a crash, and the kernel
frees it when the last process holding or mapping it ends, SIGKILL
included.

Who may read a segment: only a process that can open the holder's
``/proc/<pid>/fd`` entries, which the kernel grants to the same user (the
one who could read the holder's memory anyway). Both ends agree to use
shared memory only after the worker authenticated: each proves that it can
open the other's segments by reading a random token from the other's probe
memfd (AUTH carries the worker's, WELCOME the controller's, and the worker
answers SHM_READY). A receiver opens only the authenticated peer's own
descriptors, only memfds this module made and sealed against shrinking (a
mapping past a file's end would crash the reader): a peer that rewrites a
segment it lent can garble its own data, never crash us. The receiver's
map is private: what a task writes into its argument stays its own.
"""

from __future__ import annotations

import fcntl
import hmac
import mmap
import os
import struct
import sys
import threading
import time

from .._errors import ProtocolError

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

#: buffers at least this large travel through shared memory when both ends agreed
SHM_MIN = 1 << 20
#: a buffer length with this bit set travels as a ``REF`` to a memfd
SHARED = 1 << 63
#: the wire slot of a shared buffer: the sender's descriptor number
REF = struct.Struct("<I")
#: every memfd made here is named so: a receiver refuses any other descriptor
NAME = "pycrew-shm"
_PROBE_NAME = "pycrew-probe"
_TOKEN_BYTES = 16
#: spare segments a sender keeps for reuse, per connection
_KEEP = 2


def supported() -> bool:
    """Whether this platform has anonymous memory files (Linux 3.17+)."""
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


_LIBC: Any = None


def _map(fd: int, size: int, private: bool) -> Any:
    """``size`` bytes of ``fd`` mapped writable (``private``: copy-on-write), as a
    buffer; unmapped once the last reference to it goes.

    Through libc rather than the mmap module, which keeps a duplicate of the
    descriptor for as long as a map lives: a user holding a thousand large
    results would hold a thousand descriptors. The buffer's views (numpy
    arrays, memoryviews) hold references to it, so it is never unmapped under
    one of them.
    """
    global _LIBC
    import ctypes
    import weakref

    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _LIBC = libc
    flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
    address = _LIBC.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    buffer = (ctypes.c_ubyte * size).from_address(address)
    weakref.finalize(buffer, _LIBC.munmap, address, size)
    return buffer


def _new_memfd(name: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    except OSError:
        os.close(fd)
        raise
    return fd


class Probe:
    """A memfd holding a random token, for the other end to prove it can read ours."""

    def __init__(self) -> None:
        self.token = os.urandom(_TOKEN_BYTES)
        self.fd = _new_memfd(_PROBE_NAME)
        os.write(self.fd, self.token)

    @classmethod
    def make(cls) -> Probe | None:
        """A probe, or None where this machine cannot make one."""
        if not supported():
            return None
        try:
            return cls()
        except OSError:
            return None

    def offer(self) -> list[Any]:
        """What goes in AUTH or WELCOME: the descriptor and the token."""
        return [self.fd, self.token.hex()]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def check_probe(pid: object, offer: object) -> bool:
    """Whether process ``pid``'s probe, as ``offer`` names it, holds the token it claims."""
    if not supported() or not isinstance(pid, int) or pid <= 0:
        return False
    if not isinstance(offer, list) or len(offer) != 2:
        return False
    fd, token_hex = offer
    if not isinstance(fd, int) or not isinstance(token_hex, str) or fd < 0:
        return False
    try:
        token = bytes.fromhex(token_hex)
    except ValueError:
        return False
    try:
        src = _open_peer(pid, fd, _PROBE_NAME)
    except (OSError, ProtocolError):
        return False
    try:
        found = os.pread(src, _TOKEN_BYTES + 1, 0)
    except OSError:
        return False
    finally:
        os.close(src)
    return len(token) == _TOKEN_BYTES and hmac.compare_digest(found, token)


def _open_peer(pid: int, fd: int, name: str) -> int:
    """Open descriptor ``fd`` of process ``pid``, if it is a memfd named ``name``."""
    # O_NONBLOCK: a descriptor that turns out to be a FIFO must not hang us
    src = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        target = os.readlink(f"/proc/self/fd/{src}")
    except OSError:
        os.close(src)
        raise
    if not target.startswith(f"/memfd:{name} "):
        os.close(src)
        raise ProtocolError("a shared buffer that is not one of pycrew's segments")
    return src


class Peer:
    """The receiving side: maps the segments an authenticated peer names.

    A map is handed back (SHM_DONE) once nothing uses it any more: asked at
    ``release()``, which the worker calls after each task and the
    dispatcher as frames and timers come.
    """

    __slots__ = ("acks", "bytes", "lock", "maps", "pid", "released_at")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        #: the peer's segments mapped here: its descriptor and our map
        self.maps: list[tuple[int, Any]] = []
        #: descriptors let go of since the last SHM_DONE
        self.acks: list[int] = []
        #: bytes received through shared memory, not yet counted by the owner
        self.bytes = 0
        #: when the owner last asked for ``release()`` (its clock)
        self.released_at = 0.0

    def take_bytes(self) -> int:
        """Bytes received through shared memory since the last call."""
        n, self.bytes = self.bytes, 0
        return n

    def read(self, ref: Any, nbytes: int) -> Any:
        """The segment that ``ref`` (a wire slot) names, mapped here."""
        if len(ref) != REF.size:
            raise ProtocolError("a shared buffer's reference is malformed")
        (fd,) = REF.unpack(bytes(ref))
        try:
            src = _open_peer(self.pid, fd, NAME)
        except OSError as exc:
            raise ProtocolError(f"cannot open the peer's shared buffer: {exc}") from exc
        try:
            if not fcntl.fcntl(src, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK:
                raise ProtocolError("a shared buffer that may shrink under its reader")
            if os.fstat(src).st_size < nbytes:
                raise ProtocolError("a shared buffer smaller than its frame says")
            mapped = _map(src, nbytes, private=True)
        except OSError as exc:
            raise ProtocolError(f"cannot map the peer's shared buffer: {exc}") from exc
        finally:
            os.close(src)
        with self.lock:
            self.maps.append((fd, mapped))
        self.bytes += nbytes
        return mapped

    def release(self) -> None:
        """Unmap what nothing uses any more; its descriptor goes in the next SHM_DONE."""
        with self.lock:
            if not self.maps:
                return
            kept = []
            for entry in self.maps:
                # held elsewhere (an array viewing it, a frame being parsed, a
                # result not yet unpickled) beyond our list's tuple and the call
                if sys.getrefcount(entry[1]) > 2:
                    kept.append(entry)
                else:
                    self.acks.append(entry[0])
            # the others go with the old list: unmapped as their last reference goes
            self.maps = kept

    def take_acks(self) -> bytes | None:
        """The SHM_DONE meta for the segments let go of since the last call, or None."""
        with self.lock:
            if not self.acks:
                return None
            meta = struct.pack(f"<{len(self.acks)}I", *self.acks)
            self.acks.clear()
        return meta


class _Segment:
    """One memfd of ours and our own map of it, through which we write into it."""

    __slots__ = ("fd", "map", "size")

    def __init__(self, size: int) -> None:
        self.fd = _new_memfd(NAME)
        try:
            os.ftruncate(self.fd, size)
            self.map = _map(self.fd, size, private=False)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size

    def write(self, view: memoryview) -> None:
        with memoryview(self.map) as target:
            target.cast("B")[: view.nbytes] = view

    def close(self) -> None:
        self.map = None  # unmapped: nothing else views it
        os.close(self.fd)


class Segments:
    """The sending side: memfds lent to the peer until it says it let go of them.

    We write into a segment through a map of our own (a plain memory copy,
    several times faster than ``write()`` into a memfd). A segment the peer
    unmapped goes back to the spares, and the next large buffer reuses one
    whose pages both maps already have (fresh pages cost a fault each, more
    than the copy itself). One the peer keeps mapped (a task stored its
    argument) stays lent, never written again.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: memfd -> segment, lent to the peer and not yet let go of
        self.lent: dict[int, _Segment] = {}
        #: segments the peer let go of, smallest first
        self.spares: list[_Segment] = []
        self.last_used = 0.0
        #: bytes sent through shared memory
        self.bytes = 0

    def share(self, pieces: Sequence[Any]) -> tuple[Any, ...]:
        """A frame's pieces with each large buffer moved into a segment (``bytes`` counts them)."""
        from ._frames import HEADER, LENGTH

        head = memoryview(pieces[0]).cast("B")
        kind, flags, nbuf, meta_len = HEADER.unpack_from(head)
        if not nbuf or all(memoryview(p).nbytes < SHM_MIN for p in pieces[1:]):
            return tuple(pieces)
        lens = bytearray()
        slots: list[Any] = []
        for piece in pieces[1:]:
            view = memoryview(piece).cast("B")
            if view.nbytes < SHM_MIN:
                lens += LENGTH.pack(view.nbytes)
                slots.append(piece)
                continue
            lens += LENGTH.pack(view.nbytes | SHARED)
            slots.append(REF.pack(self._put(view)))
        top = HEADER.size + LENGTH.size * nbuf
        return (HEADER.pack(kind, flags, nbuf, meta_len) + bytes(lens), head[top:], *slots)

    def _put(self, view: memoryview) -> int:
        n = view.nbytes
        with self.lock:
            self.last_used = time.monotonic()
            found = next((i for i, spare in enumerate(self.spares) if spare.size >= n), None)
            segment = self.spares.pop(found) if found is not None else None
        if segment is None:
            segment = _Segment(n)
        try:
            segment.write(view)
        except BaseException:
            segment.close()
            raise
        with self.lock:
            self.lent[segment.fd] = segment
        self.bytes += n
        return segment.fd

    def done(self, meta: bytes | memoryview) -> None:
        """The peer let go of these segments (an SHM_DONE's meta): they may be reused."""
        if len(meta) % REF.size:
            raise ProtocolError("a malformed SHM_DONE")
        fds = struct.unpack(f"<{len(meta) // REF.size}I", meta)
        with self.lock:
            for fd in fds:
                segment = self.lent.pop(fd, None)
                if segment is None:
                    raise ProtocolError("SHM_DONE for a segment that was not lent")
                self.spares.append(segment)
            self.spares.sort(key=lambda spare: spare.size)
            while len(self.spares) > _KEEP:
                self.spares.pop(0).close()

    def spare_bytes(self) -> int:
        with self.lock:
            return sum(spare.size for spare in self.spares)

    def drop_largest_spare(self) -> int:
        """Close the largest spare; its size (0: there was none)."""
        with self.lock:
            if not self.spares:
                return 0
            spare = self.spares.pop()
        spare.close()
        return spare.size

    def expire(self, now: float, seconds: float) -> None:
        """Let the spares go once no segment was used for ``seconds``."""
        if self.spares and now - self.last_used > seconds:
            with self.lock:
                for segment in self.spares:
                    segment.close()
                self.spares.clear()

    def close(self) -> None:
        """Close every segment: the connection is gone (the peer's maps are its own)."""
        with self.lock:
            for segment in [*self.lent.values(), *self.spares]:
                segment.close()
            self.lent.clear()
            self.spares.clear()

    def held(self) -> int:
        with self.lock:
            return len(self.lent) + len(self.spares)
