"""``LocalMonitor``: this machine's pycrew worker processes, to look at or end, even after a crash.

```
 psutil: processes of the user running ``... pycrew worker ...``
   └─ /proc/<pid>/environ: PYCREW_CONTROLLER, PYCREW_WORKER ──► LocalWorkerInfo
                                                                    │ pid + worker id
 registry of launches (_ledger) ── launch of that pid here ─────────┤
                                   └─ its controller gone? ─────────┴─► stale()
```

A worker leaves by itself when its controller goes away; one that does not
(stuck in C code that holds the GIL, stopped, or started without the
kernel's parent-death signal) is *stale*. Only the registry can say so: a
worker that it does not know about is never called stale.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _ledger, _wire
from ._errors import ArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable

#: how long ``terminate`` waits for processes to go after SIGKILL
KILL_SECONDS = 5.0


@dataclass(frozen=True)
class LocalWorkerInfo:
    """One pycrew worker process of this machine.

    Attributes:
        pid: its process id.
        controller: the controller's name (``""`` if unreadable).
        worker: the worker id (``""`` if unreadable).
        session: the controller start that launched it, from the registry
            (``""`` if the registry does not know the process).
        started: when the process started (seconds since the epoch).
        command: its command line, as a shell would show it.
        state: the process state (``running``, ``sleeping``, ``stopped``...).
        stale: why its controller is gone, or ``None`` when it may still live
            (or the registry cannot tell).
    """

    pid: int
    controller: str
    worker: str
    session: str
    started: float
    command: str
    state: str = ""
    stale: str | None = None

    @property
    def seconds(self) -> float:
        """The process's age."""
        return max(0.0, time.time() - self.started)


def _worker_command(cmdline: list[str]) -> bool:
    """``... pycrew worker ...``: ``python -m pycrew worker`` or the ``pycrew`` script."""
    for i, arg in enumerate(cmdline[:-1]):
        if os.path.basename(arg) == "pycrew" and cmdline[i + 1] == "worker":
            return True
    return False


def _option(cmdline: list[str], flag: str) -> str:
    with contextlib.suppress(ValueError, IndexError):
        return cmdline[cmdline.index(flag) + 1]
    return ""


class LocalMonitor:
    """pycrew worker processes of one user on this machine.

    Args:
        user: whose processes (default: the current user). Staleness comes
            from the current user's registry of launches, so it is known
            only for their own workers.
    """

    def __init__(self, user: str | None = None) -> None:
        self.user = user or getpass.getuser()
        #: what was wrong with the registry at the last look (unreadable lines)
        self.problems: list[str] = []

    def workers(self) -> list[LocalWorkerInfo]:
        """The user's pycrew worker processes, oldest first, each with its staleness."""
        return [info for info, _ in self._scan()]

    def stale(self) -> list[LocalWorkerInfo]:
        """The workers whose controller is gone, by the registry of launches."""
        return [info for info in self.workers() if info.stale is not None]

    def terminate(
        self,
        pids: Iterable[int] | None = None,
        all: bool = False,
        stale: bool = False,
        seconds_grace: float = 3.0,
    ) -> list[int]:
        """End pycrew workers: those in ``pids``, every one of the user's, or the stale ones.

        Exactly one of ``pids``, ``all=True`` and ``stale=True``. Only the
        user's pycrew worker processes are touched, whatever ``pids`` holds.
        Each gets SIGTERM (and SIGCONT, should it be stopped), then SIGKILL
        if it is still there after ``seconds_grace``: a worker stuck in C code
        may never act on SIGTERM. Returns the pids ended.
        """
        if sum((pids is not None, bool(all), bool(stale))) != 1:
            raise ArgumentError("give the pids to end, all=True or stale=True (exactly one)")
        found = self._scan()
        if all:
            chosen = [proc for _, proc in found]
        elif stale:
            chosen = [proc for info, proc in found if info.stale is not None]
        else:
            assert pids is not None
            wanted = {int(p) for p in ([pids] if isinstance(pids, (int, str)) else pids)}
            chosen = [proc for info, proc in found if info.pid in wanted]
        return _end(chosen, seconds_grace)

    def _scan(self) -> list[tuple[LocalWorkerInfo, Any]]:
        import psutil

        index, self.problems = _ledger.Index.load()
        found = []
        for proc in psutil.process_iter(["pid", "username", "cmdline", "create_time", "status"]):
            info = proc.info
            cmdline = info.get("cmdline") or []
            if (
                info.get("username") != self.user
                or info.get("status") == psutil.STATUS_ZOMBIE
                or proc.pid == os.getpid()
                or not _worker_command(cmdline)
            ):
                continue
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                env = {}
            # the environment the worker started with: the command line's id wins
            worker = _option(cmdline, "--id") or env.get(_wire.WORKER_ENV, "")
            launch = index.launch_of_process(proc.pid, worker) if worker else None
            record = LocalWorkerInfo(
                pid=proc.pid,
                controller=env.get(_wire.CONTROLLER_ENV, "")
                or (launch.controller if launch else ""),
                worker=worker,
                session=launch.session if launch else "",
                started=float(info.get("create_time") or 0.0),
                command=shlex.join(cmdline),
                state=str(info.get("status") or ""),
                stale=index.gone(launch) if launch else None,
            )
            found.append((record, proc))
        found.sort(key=lambda pair: (pair[0].started, pair[0].pid))
        return found


def _end(procs: list[Any], seconds_grace: float) -> list[int]:
    """SIGTERM, then SIGKILL what is left after the grace; the pids that ended."""
    import psutil

    def signal_all(chosen: list[Any], signum: int) -> None:
        for proc in chosen:
            # psutil refuses to signal a pid that now names another process
            with contextlib.suppress(psutil.Error, OSError):
                proc.send_signal(signum)

    signal_all(procs, signal.SIGTERM)
    # a stopped process keeps SIGTERM pending until it runs again
    signal_all(procs, signal.SIGCONT)
    left = _wait_gone(procs, seconds_grace)
    signal_all(left, signal.SIGKILL)
    left = _wait_gone(left, KILL_SECONDS)
    return sorted(proc.pid for proc in procs if proc not in left)


def _wait_gone(procs: list[Any], seconds: float) -> list[Any]:
    """Wait until these processes are gone (a zombie is gone) or ``seconds`` pass."""
    import psutil

    deadline = time.monotonic() + seconds
    pause = 0.01
    while True:
        left = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.NoSuchProcess:
                continue
            except psutil.Error:
                left.append(proc)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(pause)
        pause = min(2 * pause, 0.1)
