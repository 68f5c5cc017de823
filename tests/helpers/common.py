"""Helpers every group of tests uses: bounded waits, a controller's address, workers alive."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    import pycrew


def workers() -> list[psutil.Process]:
    """pycrew worker processes started by this test session (children of this process)."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = proc.cmdline()
            if "pycrew" in cmd and "worker" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until(condition, seconds: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@contextlib.contextmanager
def interrupted_when(event: threading.Event, seconds: float) -> Iterator[None]:
    """Press Ctrl-C (SIGINT to this process) once ``event`` is set, if it is set within
    ``seconds``, while the block runs: for a block that must survive an interrupt."""

    def interrupt() -> None:
        if event.wait(seconds):
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    try:
        yield
    finally:
        sender.join(seconds)


def address(ctl: pycrew.Controller) -> tuple[str, int]:
    """The (host, port) a started controller listens on."""
    host, _, port = ctl.url.split("://", 1)[1].rpartition(":")
    return host, int(port)


def read_until_closed(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """Everything the peer sends until it closes; fail if it is still open after ``seconds``."""
    deadline = time.monotonic() + seconds
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {seconds} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
