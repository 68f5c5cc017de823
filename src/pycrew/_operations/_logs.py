"""A worker's log files, kept under a size: past ``log_bytes_max`` a log moves aside.

```
 task output ─► fd 1/2 ─► <worker>.log ──(over the cap, checked every second
                                          and after each task)──► <worker>.log.1
                          a fresh <worker>.log starts with a line saying so
```

What a task prints through ``sys.stdout``/``sys.stderr`` is counted as it
is written, so a log moves aside within a few KiB of the cap however fast a
task prints; output that bypasses Python (C code, a child process) is caught
by the checks. At most two parts are kept, so a worker's logs take about
twice the cap on disk. The file descriptors stay the same (the new file is
put in their place), so nothing a task holds goes stale.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading

from .._errors import ArgumentError, ArgumentTypeError

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: the environment variable through which a launcher hands a worker its cap
BYTES_ENV = "PYCREW_LOG_BYTES_MAX"
#: how often the logs are measured between tasks
CHECK_SECONDS = 1.0
#: how much Python output goes by between two measurements
WRITE_CHECK = 64 << 10
#: a worker's log file is moved aside past this many bytes, by default
LOG_BYTES_MAX = 100 << 20
#: names the folder of a launcher's start-up logs: a worker whose stderr (or
#: stdout) is a file there lets go of it once connected
STARTUP_ENV = "PYCREW_STARTUP_LOG"


def check_log_bytes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"log_bytes_max must be None or an int, got {value!r}")
    if value < 4096:
        raise ArgumentError(f"log_bytes_max must be at least 4096 bytes, got {value}")
    return value


class LogCap:
    """Rotates this process's stdout and stderr files when one passes ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.unmeasured = 0
        self.lock = threading.RLock()
        # one entry per log file: its path and the descriptors that write to it
        self.files: list[tuple[str, list[int]]] = []
        seen: dict[tuple[int, int], int] = {}
        for fd in (1, 2):
            try:
                info = os.fstat(fd)
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue  # a terminal, a pipe or /dev/null: nothing piles up
            key = (info.st_dev, info.st_ino)
            if key in seen:
                self.files[seen[key]][1].append(fd)
            else:
                seen[key] = len(self.files)
                self.files.append((path, [fd]))

    def wrote(self, count: int) -> None:
        """``count`` characters went to a log through Python: measure now and then."""
        self.unmeasured += count
        if self.unmeasured >= WRITE_CHECK:
            self.unmeasured = 0
            self.check()

    def check(self) -> None:
        """Rotate every log that passed the cap (safe from any thread)."""
        with self.lock:
            for path, fds in self.files:
                try:
                    size = os.fstat(fds[0]).st_size
                except OSError:
                    continue
                if size > self.limit:
                    self._rotate(path, fds, size)

    def _rotate(self, path: str, fds: list[int], size: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        try:
            os.replace(path, path + ".1")
            fresh = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        except OSError:
            return  # the directory went away or is read-only: nothing better to do
        for fd in fds:
            os.dup2(fresh, fd)
        os.close(fresh)
        note = (
            f"pycrew: this log passed log_bytes_max ({self.limit} bytes) at {size} bytes; "
            f"the part before is {path}.1, and older parts are dropped\n"
        )
        os.write(fds[0], note.encode())

    def watch(self) -> Callable[[], None]:
        """Check every ``CHECK_SECONDS`` on a thread of its own; returns what stops it."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(CHECK_SECONDS):
                self.check()

        threading.Thread(target=loop, name="pycrew-logs", daemon=True).start()
        return stop.set


class _Counted:
    """A text stream that tells the cap how much went through it."""

    def __init__(self, inner: Any, cap: LogCap) -> None:
        self._inner = inner
        self._cap = cap

    def write(self, text: str) -> int:
        written: int = self._inner.write(text)
        self._cap.wrote(len(text))
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def from_environment() -> LogCap | None:
    """The cap a launcher asked for, if any, and only if a log is a file."""
    raw = os.environ.pop(BYTES_ENV, "")
    try:
        limit = int(raw)
    except ValueError:
        return None
    cap = LogCap(limit) if limit > 0 else None
    if cap is None or not cap.files:
        return None
    capped = {fd for _, fds in cap.files for fd in fds}
    if 1 in capped:
        sys.stdout = _Counted(sys.stdout, cap)
    if 2 in capped:
        sys.stderr = _Counted(sys.stderr, cap)
    return cap


def leave_startup_log() -> None:
    """Once connected, stop writing to a launcher's start-up log, and remove it.

    Such a file only explains a worker that never connects. Kept open, a
    long-lived worker's output would grow it without end; removed but still
    open, it would fill the disk unseen. So output goes to ``/dev/null``
    from here on, as it would have without the file.
    """
    folder = os.environ.pop(STARTUP_ENV, "")
    try:
        ours = os.stat(folder) if folder else None
    except OSError:
        return
    if ours is None:
        return
    null = -1
    for fd in (1, 2):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            # the same folder, however this machine's mounts spell its path
            parent = os.stat(os.path.dirname(path))
        except OSError:
            continue
        if (parent.st_dev, parent.st_ino) != (ours.st_dev, ours.st_ino):
            continue  # the user's own file, or not a file at all
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        if null < 0:
            null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    if null >= 0:
        os.close(null)


# ------------------------------------------------------------------ relayed output
class Relay:
    """Sends the lines a running task prints to the controller (``relay_output``).

    Only while the task's own code runs (``active()``): pycrew's lines about
    it stay in the log. Text is held until a line ends (or piles past 8 KiB),
    so a line printed in pieces arrives whole.
    """

    def __init__(self, send: Callable[[int, int, str], None], active: Callable[[], bool]) -> None:
        self.send = send
        self.active = active
        #: the running task's id (0: none)
        self.task_id = 0
        self.lock = threading.Lock()
        self.partial: dict[int, list[str]] = {1: [], 2: []}

    def install(self) -> None:
        sys.stdout = _Relayed(sys.stdout, 1, self)
        sys.stderr = _Relayed(sys.stderr, 2, self)

    def add(self, stream: int, text: str) -> None:
        task_id = self.task_id
        if not task_id or not text or not self.active():
            return
        with self.lock:
            parts = self.partial[stream]
            parts.append(text)
            if "\n" not in text and sum(len(p) for p in parts) < 8192:
                return
            joined = "".join(parts)
            cut = joined.rfind("\n") + 1 or len(joined)
            self.partial[stream] = [joined[cut:]] if joined[cut:] else []
        self.send(task_id, stream, joined[:cut])

    def end(self) -> None:
        """The task is over: send what it left without a line end."""
        task_id, self.task_id = self.task_id, 0
        with self.lock:
            held = [(s, "".join(p)) for s, p in self.partial.items() if p]
            for parts in self.partial.values():
                parts.clear()
        for stream, text in held:
            if task_id:
                self.send(task_id, stream, text)


class _Relayed:
    """A text stream that also hands what is written to a ``Relay``."""

    def __init__(self, inner: Any, stream: int, relay: Relay) -> None:
        self._inner = inner
        self._stream = stream
        self._relay = relay

    def write(self, text: str) -> int:
        written: int = self._inner.write(text)
        self._relay.add(self._stream, text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def print_output(items: list[tuple[str, int, str]]) -> None:
    """Controller side: relayed lines, each after its task's name (dispatcher thread)."""
    for name, stream, text in items:
        _show(stream, "".join(f"[{name}] {line}\n" for line in text.splitlines()))


def print_plain(items: list[tuple[str, int, str]]) -> None:
    """Controller side: relayed text exactly as the task printed it (dispatcher thread).

    What a ``concurrent.futures`` executor's user expects: a process pool's
    children write to the same terminal, with no name before their lines.
    """
    for _name, stream, text in items:
        _show(stream, text)


def _show(stream: int, text: str) -> None:
    out = sys.stderr if stream == 2 else sys.stdout
    with contextlib.suppress(Exception):  # a closed terminal must not stop the dispatcher
        out.write(text)
        out.flush()
