"""The controller's bytes, read through one buffer whose fill this worker can see.

Two threads take turns reading the connection (see ``_worker``): the main
thread while no task runs, a helper while one does. Before a thread waits
for the socket to become readable it must know that nothing is left in the
buffer, or in TLS's own buffer, since ``poll()`` sees neither: that is what
``buffered()`` tells, and what a ``BufferedReader`` keeps to itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    import socket

#: reads this large or larger go straight into the caller's buffer
DIRECT = 1 << 16


class Inflow:
    """Buffered, blocking reads of one socket (TLS or not)."""

    def __init__(self, sock: socket.socket, size: int = 1 << 18) -> None:
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        # an ssl.SSLSocket holds records it decrypted and we did not read yet
        self.pending = getattr(sock, "pending", None)

    def buffered(self) -> int:
        """Bytes that can be read without waiting on the socket."""
        n = self.end - self.start
        if self.pending is not None:
            n += self.pending()
        return n

    def _fill(self) -> int:
        n = self.sock.recv_into(self.view)
        self.start, self.end = 0, n
        return n

    def read(self, n: int) -> bytes:
        """``n`` bytes, or fewer if the connection ends first."""
        start, end = self.start, self.end
        if end - start >= n:
            self.start = start + n
            return bytes(self.view[start : start + n])
        out = bytearray(n)
        got = self.readinto(memoryview(out))
        while 0 < got < n:
            k = self.readinto(memoryview(out)[got:])
            if not k:
                break
            got += k
        return bytes(out) if got == n else bytes(out[:got])

    def readinto(self, target: memoryview) -> int:
        """Some bytes into ``target``: how many (0 at the end of the connection)."""
        avail = self.end - self.start
        want = len(target)
        if not avail:
            if want >= DIRECT:
                return self.sock.recv_into(target)
            avail = self._fill()
            if not avail:
                return 0
        k = min(avail, want)
        target[:k] = self.view[self.start : self.start + k]
        self.start += k
        return k
