"""A worker's watchdog: a small process that ends the worker when it cannot end itself.

```
 worker ──spawns──► python -I -S .../pycrew/_watchdog.py <worker pid> <fd> <seconds>
   │                    [<bytes> <busy fd>]
   │                  every 0.25 s, holding the worker's socket (never reading it):
   │                  ├─ socket no longer ESTABLISHED (controller gone, link reset,
   │                  │  keep-alive or TCP_USER_TIMEOUT gave up; a local worker's
   │                  │  socket pair hung up) ─► SIGKILL the worker
   │                  ├─ worker stopped (SIGSTOP) for longer than <seconds> ─► SIGKILL it
   │                  ├─ a task running (the last byte on <busy fd> is b"1"), and the
   │                  │  worker and its children over <bytes> of memory for longer than
   │                  │  MEMORY_GRACE (its own memory thread did not act) ─► SIGKILL them
   │                  └─ worker gone (killed, crashed, or ended here) ─► end what its
   │                     tasks left in its process group (when it leads one), then exit
   └─ leaves on purpose ─► kills its watchdog first
```

A worker notices its controller is gone when the thread reading its
connection (the main thread between tasks, the reader thread during one)
sees it close. A task that holds the GIL in C code stops that thread, and
so would keep a worker of a killed controller alive for as long as the call
lasts. The kernel keeps the socket's state whatever the worker's threads do,
and this process reads it without the worker's GIL: the state, not data, so
nothing is taken from the worker's stream. The kernel decides when a peer is
gone (a FIN or reset at once, keep-alive probes when idle, TCP_USER_TIMEOUT
with data in flight), so a healthy worker that is merely busy is never killed.

A worker with a memory limit enforces it itself (``_memory.py``), so that it
can tell the controller why it dies; that thread is starved by the same
tasks, and this process is the backstop: it steps in only when the worker
stayed over its limit for ``MEMORY_GRACE``, ten of the thread's samples,
while a task ran (as the thread, it leaves an idle worker be; the worker
tells it over a pipe, a byte a task).
``resident`` is shared by both, and reads /proc alone (psutil would cost
this process its start-up time, and the worker a scan of every process).
"""

from __future__ import annotations

# _socket and _signal, the C modules: this process starts with each worker, and
# the Python ones (enums, selectors), with contextlib, doubled its start-up
import _socket
import os
import select
import sys
import time

TYPE_CHECKING = False  # typing itself is slow to import; this process starts with each worker
if TYPE_CHECKING:
    import signal as _signal  # the same names, typed
    from typing import NoReturn
else:
    import _signal

TCP_ESTABLISHED = 1
TCP_CLOSE = 7
CHECK_SECONDS = 0.25
#: how long the worker may stay over its memory limit before this process ends it
MEMORY_GRACE = 1.0
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TCP_INFO = getattr(_socket, "TCP_INFO", 11)


def _state(sock: _socket.socket) -> int | None:
    """The socket's TCP state, or None if it cannot be read.

    A local worker's socket pair has no TCP state: it reads as established
    until its peer hangs up (the controller closed it, or died).
    """
    if sock.family == getattr(_socket, "AF_UNIX", None):
        hung_up = getattr(select, "POLLRDHUP", 0) | select.POLLHUP
        poller = select.poll()
        poller.register(sock.fileno(), hung_up)
        return TCP_CLOSE if poller.poll(0) else TCP_ESTABLISHED
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


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``, whichever of its threads started them."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as listed:
                found.extend(map(int, listed.read().split()))
        except OSError:
            pass  # the thread ended meanwhile
    return found


def resident(pid: int, skip: int = 0) -> tuple[int, list[int]]:
    """Resident bytes of ``pid`` and all its descendants; and those descendants' pids.

    ``skip`` (the watchdog) is left out, and so is what it started. Pages a
    forked child still shares with its parent count in both, as RSS does:
    the exact share (PSS, smaps_rollup) costs milliseconds per GB mapped.
    A grandchild that left the tree (a daemon reparented to init) is not seen.
    """
    total = 0
    tree: list[int] = []
    todo = [pid]
    while todo:
        one = todo.pop()
        try:
            with open(f"/proc/{one}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile: neither it nor its children count
        if one != pid:
            tree.append(one)
        todo.extend(child for child in _children(one) if child != skip)
    return total, tree


def watch(worker: int, fd: int, grace: float, memory: int = 0, busy: int = -1) -> NoReturn:
    """Watch until the worker is gone, then end what is left of it, and this process.

    ``memory``: the worker's limit in bytes (0: none), for the backstop;
    ``busy``: the pipe on which the worker says when a task runs.
    """
    # This process holds the worker's socket: it must not keep the connection
    # open once the worker is dead. The kernel tells it at once (SIGTERM as the
    # parent-death signal), and it goes, taking what the worker's tasks left.
    _signal.signal(_signal.SIGTERM, lambda *_: _end(worker))
    sock = _socket.socket(fileno=fd)
    stopped_since: float | None = None
    over_since: float | None = None
    running = False
    if memory:
        os.set_blocking(busy, False)
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
        if memory:
            running = _running(busy, running)
            used, tree = resident(worker, os.getpid()) if running else (0, [])
            over_since = (over_since or time.monotonic()) if used > memory else None
            if over_since is not None and time.monotonic() - over_since >= MEMORY_GRACE:
                mb = f"{used / 1e6:.0f} MB of memory, over its limit of {memory / 1e6:.0f} MB"
                _log(worker, f"it used {mb} for {MEMORY_GRACE:g} s")
                # what its tasks started may have left its process group
                for pid in tree:
                    _kill(pid)
                _end(worker)
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
        _log(worker, why)
        _end(worker)


def _running(busy: int, was: bool) -> bool:
    """Whether a task runs, as the worker last said on the pipe (b"1" yes, b"0" no)."""
    try:
        said = os.read(busy, 4096)
    except OSError:  # nothing new (BlockingIOError)
        return was
    return said[-1:] == b"1" if said else was


def _log(worker: int, why: str) -> None:
    print(f"pycrew watchdog: ending worker pid {worker}: {why}", file=sys.stderr, flush=True)


def _kill(pid: int) -> None:
    try:  # noqa: SIM105 (contextlib would cost this process's start: see the imports)
        os.kill(pid, _signal.SIGKILL)
    except OSError:
        pass


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


def spawn(fd: int, grace: float, memory: int = 0, busy: int = -1) -> int | None:
    """Start a watchdog for this worker over socket ``fd``; its pid, or None if it cannot.

    ``memory``: the worker's memory limit in bytes (0: none); ``busy``: the
    reading end of the pipe on which the worker says when a task runs.
    """
    if not sys.platform.startswith("linux"):
        return None
    # the file alone, isolated and without site: it needs only the standard
    # library, so it starts in a few milliseconds
    argv = [sys.executable, "-I", "-S", __file__, str(os.getpid()), str(fd), str(grace)]
    passed = [fd]
    if memory:
        argv += [str(memory), str(busy)]
        passed.append(busy)
    for one in passed:
        os.set_inheritable(one, True)
    try:
        return os.posix_spawn(sys.executable, argv, dict(os.environ))
    except OSError:
        return None
    finally:
        for one in passed:
            os.set_inheritable(one, False)


if __name__ == "__main__":
    limit, busy = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (0, -1)
    watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), limit, busy)
