"""When the helper thread takes over reading: a task's start, plus a little.

Waking the helper costs a task more than the helper saves it when the task
is short: the helper needs the interpreter's lock for a moment, and takes it
from the main thread at its next system call, often just before the result
leaves. So the main thread arms a timer as a task starts, and only a task
still running ``LEND_AFTER`` later wakes the helper; a task that ends first
disarms it, and nobody woke. On Linux the timer is a ``timerfd`` (two
system calls a task); elsewhere the helper is woken at once through a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

#: seconds a task runs before the helper reads for it (and a cancel can reach it)
LEND_AFTER = 0.002
_CLOCK_MONOTONIC = 1


class _Spec(ctypes.Structure):
    # struct itimerspec: the interval, then the first expiry (each seconds, nanoseconds)
    _fields_ = [
        ("interval_s", ctypes.c_long),
        ("interval_ns", ctypes.c_long),
        ("value_s", ctypes.c_long),
        ("value_ns", ctypes.c_long),
    ]


class Lender:
    """A file descriptor that becomes readable once the helper should read."""

    def __init__(self, after: float = LEND_AFTER) -> None:
        self.fd = -1
        self._settime = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
                if fd >= 0:
                    settime = libc.timerfd_settime
                    pointer = ctypes.c_void_p
                    settime.argtypes = [ctypes.c_int, ctypes.c_int, pointer, pointer]
                    self.fd, self._settime = fd, settime
        whole, part = divmod(after, 1.0)
        self._on = _Spec(0, 0, int(whole), max(1, int(part * 1e9)))
        self._off = _Spec()
        self._on_ref = ctypes.byref(self._on)
        self._off_ref = ctypes.byref(self._off)
        self._write = -1
        if self._settime is None:  # no timer: wake the helper at once, through a pipe
            self.fd, self._write = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write, False)

    def arm(self) -> None:
        """A task starts: wake the helper if it is still running ``after`` from now."""
        if self._settime is not None:
            self._settime(self.fd, 0, self._on_ref, None)
        else:
            with contextlib.suppress(BlockingIOError):
                os.write(self._write, b"\0")

    def disarm(self) -> None:
        """The task ended: nobody need wake."""
        if self._settime is not None:
            self._settime(self.fd, 0, self._off_ref, None)

    def clear(self) -> None:
        """Called by the helper once woken, so that the next wait waits."""
        if self._settime is None:
            drain(self.fd)
            return
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)  # a timerfd reads once: its expiry count


def drain(fd: int) -> None:
    """Empty a non-blocking pipe."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
