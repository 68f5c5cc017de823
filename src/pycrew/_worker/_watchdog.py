"""A worker's watchdog: a small process that ends the worker when it cannot end itself.

```
 worker ──spawns──► python -I -S .../pycrew/_watchdog.py <worker pid> <fd> <seconds>
   │                  every 0.25 s, holding the worker's TCP socket (never reading it):
   │                  ├─ socket no longer ESTABLISHED (controller gone, link reset,
   │                  │  keep-alive or TCP_USER_TIMEOUT gave up) ─► SIGKILL the worker
   │                  ├─ worker stopped (SIGSTOP) for longer than <seconds> ─► SIGKILL it
   │                  └─ worker gone (killed, crashed, or ended here) ─► end what its
   │                     tasks left in its process group (when it leads one), then exit
   └─ leaves on purpose ─► kills its watchdog first
```

A worker notices its controller is gone when its reader thread sees the
connection close. A task that holds the GIL in C code stops that thread, and
so would keep a worker of a killed controller alive for as long as the call
lasts. The kernel keeps the socket's state whatever the worker's threads do,
and this process reads it without the worker's GIL: the state, not data, so
nothing is taken from the worker's stream. The kernel decides when a peer is
gone (a FIN or reset at once, keep-alive probes when idle, TCP_USER_TIMEOUT
with data in flight), so a healthy worker that is merely busy is never killed.
"""

from __future__ import annotations

# _socket and _signal, the C modules: this process starts with each worker, and
# the Python ones (enums, selectors), with contextlib, doubled its start-up
import _socket
import os
import sys
import time

TYPE_CHECKING = False  # typing itself is slow to import; this process starts with each worker
if TYPE_CHECKING:
    import signal as _signal  # the same names, typed
    from typing import NoReturn
else:
    import _signal

TCP_ESTABLISHED = 1
CHECK_SECONDS = 0.25
_TCP_INFO = getattr(_socket, "TCP_INFO", 11)


def _state(sock: _socket.socket) -> int | None:
    """The socket's TCP state, or None if it cannot be read."""
    try:
        return sock.getsockopt(_socket.IPPROTO_TCP, _TCP_INFO, 8)[0]
    except OSError:
        return None


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger), from its /proc stat line."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except OSError:
        return False
    # the state follows the command's closing parenthesis, which may hide spaces
    state = line[line.rfind(b")") + 2 : line.rfind(b")") + 3]
    return state in (b"T", b"t")


def watch(worker: int, fd: int, grace: float) -> NoReturn:
    """Watch until the worker is gone, then end what is left of it, and this process."""
    # This process holds the worker's socket: it must not keep the connection
    # open once the worker is dead. The kernel tells it at once (SIGTERM as the
    # parent-death signal), and it goes, taking what the worker's tasks left.
    _signal.signal(_signal.SIGTERM, lambda *_: _end(worker))
    sock = _socket.socket(fileno=fd)
    stopped_since: float | None = None
    told = False
    while True:
        if os.getppid() != worker:
            # it died without ending this watchdog first, as a worker that
            # leaves on purpose does: end what its tasks left behind
            _end(worker)
        time.sleep(CHECK_SECONDS)
        if not told:
            # after the first look, not before: ctypes takes as long to import as
            # the rest, and a worker's first task would wait for the CPU it takes
            # (the look above covers a worker that died meanwhile)
            told = True
            _die_with_parent()
        state = _state(sock)
        if state is not None and state != TCP_ESTABLISHED:
            why = "its connection to the controller ended"
        elif _stopped(worker):
            now = time.monotonic()
            stopped_since = stopped_since or now
            if now - stopped_since < grace:
                continue
            why = f"it was stopped for over {grace:g} s"
        else:
            stopped_since = None
            continue
        print(f"pycrew watchdog: ending worker pid {worker}: {why}", file=sys.stderr, flush=True)
        _end(worker)


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, _signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _end(worker: int) -> NoReturn:
    """SIGKILL the worker, and its whole process group when it leads one.

    What its tasks started there (forked children, subprocesses) would outlive
    it otherwise. This process is in that group too, and goes with it.
    """
    try:
        if os.getpgrp() == worker:
            os.killpg(worker, _signal.SIGKILL)
        else:
            os.kill(worker, _signal.SIGKILL)
    except OSError:
        pass
    os._exit(0)


def spawn(fd: int, grace: float) -> int | None:
    """Start a watchdog for this worker over socket ``fd``; its pid, or None if it cannot."""
    if not sys.platform.startswith("linux"):
        return None
    # the file alone, isolated and without site: it needs only the standard
    # library, so it starts in a few milliseconds
    argv = [sys.executable, "-I", "-S", __file__, str(os.getpid()), str(fd), str(grace)]
    os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(sys.executable, argv, dict(os.environ))
    except OSError:
        return None
    finally:
        os.set_inheritable(fd, False)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
