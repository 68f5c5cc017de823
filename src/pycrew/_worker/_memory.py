"""A worker's memory limit: watch the worker and its children while a task runs.

```
 $PYCREW_MEMORY_MAX=<bytes> ─► main(): Guard (thread pycrew-memory), and the limit
                                       on the watchdog's command line (its backstop)
 main thread:  busy() ── run_task() ── idle()    (each also a byte to the watchdog)
                 │
 pycrew-memory:  every EVERY s while busy: resident bytes of this process and its
                 descendants, less the watchdog (_watchdog.resident)
                   └─ over the limit ─► LAST_WORDS "task used ... over its limit of ..."
                                        (under the send lock), then end of stream
                                    ─► SIGKILL the descendants, then this process
```

The controller sees the connection drop while a task runs: a crash, and the
last words are its reason. SIGKILL, not an exception in the task: a task
that is over its memory may be anywhere (in C, in a child), and what it
holds is freed only once it is gone; the kernel's OOM killer would do the
same, later and without a word.

A thread samples, not the watchdog process, because only this process can
write on the connection (a frame between two of the main thread's, or on a
TLS stream). A task that holds the GIL in C starves this thread, as it does
the reader; the watchdog, which never needs the GIL, ends the worker when
it stays over its limit for ``_watchdog.MEMORY_GRACE`` while a task runs,
silently.

Without the variable none of this exists: no thread, no sample, no call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

from .._wire._frames import Kind, encode
from ._watchdog import resident

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable

#: the same name as pycrew._resources.MEMORY_ENV: that module would cost every
#: worker's start the import of dataclasses (about 9 ms) to read one string
LIMIT_ENV = "PYCREW_MEMORY_MAX"
#: seconds between two samples while a task runs
EVERY = 0.1
#: how long the last words wait for a frame the main thread is sending
SEND_WAIT = 1.0


def limit() -> int:
    """This worker's memory limit in bytes, from its environment (0: none)."""
    try:
        return max(int(os.environ.get(LIMIT_ENV) or 0), 0)
    except ValueError:
        return 0


def used(skip: int = 0) -> tuple[int, list[int]]:
    """Resident bytes of this process and its descendants, and the descendants' pids.

    ``skip`` (the watchdog's pid) and what it started are left out.
    """
    if sys.platform.startswith("linux"):
        # /proc directly: psutil's children() scans every process of the machine
        # (about 1 ms here, against 30 us for this walk)
        return resident(os.getpid(), skip)
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    tree = []
    for child in me.children(recursive=True):
        if child.pid != skip:
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
                tree.append(child.pid)
    return total, tree


def last_words(peak: int, limit: int) -> str:
    """What the controller records as the crash's reason."""
    from .._resources import size_text  # only now: see LIMIT_ENV

    cap = size_text(limit)
    return (
        f"task used {size_text(peak)} of memory, over its limit of {cap} "
        f"(resources={{'memory': '{cap}'}}; counted: the worker and its child processes)"
    )


class Guard:
    """Ends this worker when it and its children use more than ``limit`` bytes.

    Made before the watchdog starts (it gets ``pipe``, the reading end of
    the pipe on which ``busy``/``idle`` tell it when a task runs), started
    once the worker has its send lock.
    """

    def __init__(self, limit: int, sock: socket.socket, log: Callable[[str], None]) -> None:
        self.limit = limit
        self.sock = sock
        self.log = log
        #: the worker's: whoever holds it writes whole frames, so the last
        #: words never land inside another frame
        self.send_lock = threading.Lock()
        #: the watchdog's pid (0: none): its memory is not the task's, and it
        #: ends itself once this process is gone
        self.skip = 0
        self.pipe, self._tell = os.pipe()
        os.set_blocking(self._tell, False)
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pycrew-memory", daemon=True)

    def start(self, send_lock: threading.Lock, watchdog: int | None) -> None:
        """Start sampling (between tasks, the thread waits)."""
        os.close(self.pipe)  # the watchdog's copy, if it started, is its own
        if watchdog is None:
            os.close(self._tell)
            self._tell = -1
        self.send_lock = send_lock
        self.skip = watchdog or 0
        self._thread.start()

    def busy(self) -> None:
        """A task starts: sample from now on."""
        self._busy.set()
        self._say(b"1")

    def idle(self) -> None:
        """The task ended: the thread waits, without a sample, for the next."""
        self._busy.clear()
        self._say(b"0")

    def _say(self, byte: bytes) -> None:
        if self._tell >= 0:
            # a full pipe (a watchdog that reads nothing) is the watchdog's loss
            with contextlib.suppress(OSError):
                os.write(self._tell, byte)

    def _watch(self) -> None:
        while True:
            self._busy.wait()
            total, tree = used(self.skip)
            if total > self.limit:
                self._die(total, tree)
            time.sleep(EVERY)

    def _die(self, peak: int, tree: list[int]) -> None:
        words = last_words(peak, self.limit)
        self.log(f"ending: {words}")
        # Kept to the end: no frame may follow the last words. A send that
        # blocks (a controller that reads nothing) keeps the worker over its
        # limit, and the watchdog ends it.
        if self.send_lock.acquire(timeout=SEND_WAIT):
            with contextlib.suppress(OSError):
                for piece in encode(Kind.LAST_WORDS, words.encode("utf-8", "replace")):
                    self.sock.sendall(piece)
                # the end of the stream right behind the words, so that they
                # come first whatever the kernel makes of the kill
                self.sock.shutdown(socket.SHUT_WR)
        for pid in tree:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
