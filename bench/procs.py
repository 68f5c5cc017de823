"""Process bookkeeping: children record their descendants, the parent ends what they leave.

Every process is ended by its pid, matched with its start time, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from report import is_tracker

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path


class Descendants:
    """Remembers every descendant process seen, and writes them to a pid file."""

    def __init__(self, pidfile: str | None) -> None:
        self.pidfile = pidfile
        self.seen: dict[int, dict[str, Any]] = {}

    def record(self) -> None:
        import psutil

        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in self.seen:
                    self.seen[p.pid] = {
                        "pid": p.pid,
                        "create_time": p.create_time(),
                        "name": p.name(),
                        "cmdline": " ".join(p.cmdline())[:160],
                    }
        if self.pidfile:
            tmp = self.pidfile + ".tmp"
            with open(tmp, "w") as fh:
                json.dump([[d["pid"], d["create_time"]] for d in self.seen.values()], fh)
            os.replace(tmp, self.pidfile)

    def alive(self, grace_s: float) -> list[dict[str, Any]]:
        """Those recorded that still run after up to ``grace_s`` seconds.

        Resource trackers (multiprocessing, loky) exit with this interpreter by
        design, so they are listed without waiting for them.
        """
        import psutil

        procs = _live_matching([(d["pid"], d["create_time"]) for d in self.seen.values()])
        trackers = [p for p in procs if is_tracker(self.seen[p.pid])]
        others = [p for p in procs if p not in trackers]
        alive = psutil.wait_procs(others, timeout=grace_s)[1] if others else []
        return [self.seen[p.pid] for p in [*alive, *trackers]]


def _live_matching(recorded: Iterable[Sequence[float]]) -> list[Any]:
    """psutil.Process objects for (pid, create_time) pairs that still exist (not zombies)."""
    import psutil

    out = []
    for pid, ctime in recorded:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(int(pid))
            if abs(p.create_time() - ctime) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def reap(session_id: int, pidfile: Path, grace_s: float = 5.0) -> list[dict[str, Any]]:
    """After a child exited: find what it started that is still alive, and end it.

    Candidates are the pids the child recorded (matched by create time) and every
    process still in the child's session. Each gets ``grace_s`` to exit on its own,
    then SIGTERM, then SIGKILL, by pid. Returns a description of each one ended.
    """
    import psutil

    recorded: list[list[float]] = []
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(pidfile.read_text())
    cands = {p.pid: p for p in _live_matching(recorded)}
    me = os.getpid()
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid != me and os.getsid(p.pid) == session_id and p.status() != "zombie":
                cands[p.pid] = p
    if not cands:
        return []
    _, alive = psutil.wait_procs(list(cands.values()), timeout=grace_s)
    ended = []
    for p in alive:
        info: dict[str, Any] = {"pid": p.pid}
        with contextlib.suppress(psutil.Error):
            info.update(name=p.name(), cmdline=" ".join(p.cmdline())[:160])
        with contextlib.suppress(psutil.Error):
            p.terminate()
        info["signal"] = "SIGTERM"
        ended.append(info)
    _, still = psutil.wait_procs(alive, timeout=3.0)
    for p in still:
        with contextlib.suppress(psutil.Error):
            p.kill()
        for info in ended:
            if info["pid"] == p.pid:
                info["signal"] = "SIGKILL"
    return ended


def end_tree(pid: int) -> None:
    """Timeout: SIGTERM a child and its descendants by pid, then SIGKILL what stays."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
