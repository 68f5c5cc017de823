"""``--hog N``: N busy processes beside the run, so ratios under load come from one run."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

BUSY = "while True: pass"


def _stop(procs: list[subprocess.Popen[bytes]]) -> int:
    """End every hog by its pid; return how many could not be ended."""
    for p in procs:
        with contextlib.suppress(OSError):
            p.terminate()
    left = 0
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                left += 1
    return left


@contextlib.contextmanager
def hogs(n: int, info: dict[str, Any]) -> Iterator[None]:
    """Run the body with ``n`` busy processes; they end however the body ends.

    SIGTERM is turned into SystemExit for the duration, so that a terminated
    run still leaves through the ``finally`` below. ``info`` gets the pids and,
    at the end, how many hogs were still there after being ended (0).
    """
    procs: list[subprocess.Popen[bytes]] = []
    old = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if n:
        signal.signal(signal.SIGTERM, on_term)
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", BUSY],
                    stdin=subprocess.DEVNULL,
                    # their own session: the bench's reaping of a child's session
                    # and a terminal's Ctrl-C reach them only through us
                    start_new_session=True,
                )
            )
        info["pids"] = [p.pid for p in procs]
        yield
    finally:
        info["left_after_end"] = _stop(procs)
        if n:
            signal.signal(signal.SIGTERM, old)
