"""Shared memory with workers on this machine: the dispatcher's side of ``_wire._shm``.

```
 AUTH {shm: worker's probe} ─► read its token ─► WELCOME {shm: [our pid, our probe]}
 SHM_READY ◄─ whether it read ours ─► if yes, large buffers of frames to it go
                                       through memfds from now on (before: whole)
 its memfds mapped here, until no result uses them ─► SHM_DONE [fds]: it reuses them
 SHM_DONE from it ─► our memfds it read become spares; a dropped worker: all closed
```

Nothing here runs before the worker proved it knows the secret.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .._errors import ProtocolError
from .._wire import _frames, _shm
from .._wire._frames import Kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._handshake import Conn
    from ._observe import Observed


#: how often the timers look for maps let go of and spares to expire
TEND_SECONDS = 0.05
#: the most bytes of spare segments kept for reuse, all workers together
SPARE_BYTES_MAX = 512 << 20
#: how often, at most, the maps of one worker's results are looked at otherwise,
#: when more than LET_GO_EVERY_TIME of them are held
LET_GO_SECONDS = 0.002
LET_GO_EVERY_TIME = 8


class Sharing:
    """Which workers share memory with the dispatcher, and the segments lent to them."""

    #: the dispatcher's probe, or None when shared memory is off or impossible here
    probe: _shm.Probe | None
    observed: Observed
    _tended_at = 0.0

    def _write(self, conn: Conn, pieces: Sequence[Any]) -> None:
        raise NotImplementedError

    def _offer_memory(self, conn: Conn, pid: object, auth: dict[str, Any]) -> dict[str, Any]:
        """What WELCOME adds for a worker whose probe we can read (after its MAC checked)."""
        probe = self.probe
        if probe is None or not isinstance(pid, int) or not _shm.check_probe(pid, auth.get("shm")):
            return {}
        conn.peer = _shm.Peer(pid)
        return {"shm": [os.getpid(), *probe.offer()]}

    def _on_memory_frame(self, conn: Conn, kind: int, meta: bytes) -> None:
        if kind == Kind.SHM_READY:
            if conn.peer is None or conn.segments is not None or conn.answered:
                raise ProtocolError("SHM_READY from a worker that was not offered shared memory")
            conn.answered = True
            if meta == b"\x01":
                conn.segments = _shm.Segments()
        elif conn.segments is None:
            raise ProtocolError("SHM_DONE from a worker that was lent no shared memory")
        else:
            conn.segments.done(meta)

    def _let_go(self, conn: Conn) -> None:
        """Hand a worker back its segments that no result here uses any more.

        Asked as frames come and before each task goes to it; where the user
        holds many of its results, at most every ``LET_GO_SECONDS`` (each time
        looks at every result of it still mapped).
        """
        peer = conn.peer
        if peer is None:
            return
        if peer.bytes:
            self.observed.bytes_received += peer.take_bytes()  # beside the socket's
        if not peer.maps:
            return
        if len(peer.maps) > LET_GO_EVERY_TIME:
            now = time.monotonic()
            if now - peer.released_at < LET_GO_SECONDS:
                return
            peer.released_at = now
        peer.release()
        acks = peer.take_acks()
        if acks is not None:
            self._write(conn, _frames.encode(Kind.SHM_DONE, acks))

    def _tend_segments(self, conns: Iterable[Conn], now: float, seconds: float) -> None:
        """On the timers: maps let go of go back, spares unused for ``seconds`` go.

        At most every ``TEND_SECONDS``: the loop's rounds come every few
        microseconds when tasks are tiny, and a result let go of can wait.
        """
        if self.probe is None or now - self._tended_at < TEND_SECONDS:
            return
        self._tended_at = now
        spare: list[_shm.Segments] = []
        for conn in conns:
            self._let_go(conn)
            if conn.segments is not None and conn.segments.spares:
                conn.segments.expire(now, seconds)
                spare.append(conn.segments)
        # many workers each with a spare as large as its largest array would hold
        # gigabytes: past the cap, the largest spares go first
        total = sum(segments.spare_bytes() for segments in spare)
        for segments in sorted(spare, key=lambda s: s.spare_bytes(), reverse=True):
            while total > SPARE_BYTES_MAX and segments.spares:
                total -= segments.drop_largest_spare()

    @staticmethod
    def _close_segments(conn: Conn) -> None:
        segments, conn.segments = conn.segments, None
        if segments is not None:
            segments.close()

    def _close_probe(self) -> None:
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.close()
