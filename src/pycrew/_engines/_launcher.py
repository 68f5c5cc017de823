"""The launcher plugin contract: how workers start, never how many.

Engines log on ``pycrew.engines.<engine>`` (``pycrew.engines`` for what they
share): INFO for workers launched and ended, DEBUG for each command they run,
WARNING for a command that failed. Never an environment or a job script: the
secret travels in those.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable, Sequence

    from .._resources import Resources

#: how many items a log line names before it says how many more there are
NAMED_MAX = 5


def some(items: Iterable[object]) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 95 more``: a log line stays one line."""
    listed = [str(item) for item in items]
    shown = ", ".join(listed[:NAMED_MAX])
    more = len(listed) - NAMED_MAX
    return f"{shown} and {more} more" if more > 0 else shown


class Pace:
    """When a launcher asks its platform about its workers again.

    At once about a handle it was not asked about the last time (just
    launched, or just gone); otherwise once ``every`` seconds, an interval
    that doubles from ``least`` to ``most`` while nothing changes and starts
    again from ``least`` when something does.
    """

    def __init__(self, least: float, most: float) -> None:
        self.least = least
        self.most = most
        self.every = least
        self.at = -math.inf
        self.asked: set[str] = set()

    def due(self, asked: set[str], waiting: bool) -> bool:
        """Whether to look now, asked about ``asked``; ``waiting``: some have not ended."""
        fresh = bool(asked - self.asked)
        self.asked = asked
        if fresh:
            self.every = self.least
        return waiting and (fresh or time.monotonic() - self.at >= self.every)

    def looked(self, changed: bool) -> None:
        """A look is over: soon again if it found a change, later if not."""
        self.at = time.monotonic()
        self.every = self.least if changed else min(self.most, 2 * self.every)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a launcher needs to start one worker.

    Attributes:
        command: the worker's argv (``python -m pycrew worker ...``). It never
            holds a secret, so it may appear in ``ps`` and job scripts.
        env: variables the worker needs on top of its inherited environment.
            It holds the controller's secret: pass it through the process
            environment or a private file, never on a command line or in a log.
        worker_id: the worker's id, unique within one controller start.
        controller: the controller's name.
        env_remove: variables of the controller's own environment that must
            not reach the worker, such as the one holding the TLS key's
            password. A launcher whose workers inherit that environment drops
            these.
        shape: the resources the worker is launched for (None: no shape, the
            default). A cluster launcher asks its scheduler for them; the
            local launcher has already put the worker's GPUs, thread counts
            and memory limit in ``env``.
        channel: for a launcher with ``channels = True`` only: the far end
            of a socket pair whose near end the controller holds. A worker
            that inherits it (its descriptor number in
            ``$PYCREW_CHANNEL_FD``) talks to the controller through it
            instead of dialing ``host:port``; one that does not dials as
            usual. The controller closes its copy once ``launch_workers()``
            returns.
    """

    command: list[str]
    env: dict[str, str] = field(repr=False)
    worker_id: str
    controller: str
    env_remove: frozenset[str] = frozenset()
    shape: Resources | None = None
    channel: socket.socket | None = field(default=None, repr=False, compare=False)


class Launcher(abc.ABC):
    """Base class of launcher plugins.

    A plugin starts worker processes somewhere (a subprocess, a cluster job,
    a container) that run ``spec.command`` with ``spec.env`` set. The
    controller's autoscaler decides how many; all calls come from one thread.
    """

    @property
    def channels(self) -> bool:
        """Whether its workers are children of the controller's process, on its
        machine, that inherit a socket: each spec then carries a ``channel``
        (see ``WorkerSpec``) that ``launch_worker`` hands down. False here."""
        return False

    @abc.abstractmethod
    def launch_worker(self, spec: WorkerSpec) -> Any:
        """Start one worker and return a handle for it (any object)."""

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[Any]:
        """Start a batch of workers; override to submit them in one go (a job array)."""
        return [self.launch_worker(spec) for spec in specs]

    def terminate_worker(self, handle: Any) -> None:  # noqa: B027 - optional hook
        """Stop a worker now, best effort; workers also leave on their own."""

    def exit_code(self, handle: Any) -> int | None:
        """The worker's exit code if it has ended and the launcher knows it.

        A negative code ``-N`` means the worker was killed by signal ``N``.
        """
        return None

    def exit_codes(self, handles: Sequence[Any]) -> list[int | None]:
        """``exit_code`` of many workers at once.

        The controller calls this every scaling round with the workers that are
        starting or have just left (often none). A plugin that must ask a
        scheduler overrides it to ask once for all of them, and not more often
        than the scheduler likes.
        """
        return [self.exit_code(handle) for handle in handles]

    def failure_output(self, handle: Any) -> str | None:
        """The end of what a worker that exited before connecting wrote to its stderr.

        Called once, on the scaler thread, for a worker whose ``exit_code``
        showed it ended before it connected; the controller finds the
        probable cause in it and quotes its last lines in the ``LaunchError``
        the user gets. Return the last few KiB (``""`` if the worker wrote
        nothing), or ``None`` if the launcher keeps no such output. Raise
        ``LaunchError`` to say why the output cannot be read (a log file that
        was never made, say): its message is shown as the cause. A launcher
        may delete a file it kept only for this once it has been read.
        """
        return None

    def exit_reason(self, handle: Any) -> str | None:
        """What the scheduler says ended a worker that has an exit code (``"OUT_OF_MEMORY"``,
        ``"TIMEOUT"``), for the crash reason of the task it ran; None by default."""
        return None

    def machine(self) -> Resources | None:
        """The most one worker of this launcher can have, or None when there is no
        such bound to check a task against here.

        None by default: on a batch scheduler every job is its own allocation,
        and the scheduler, not pycrew, knows what its nodes can give. A
        launcher whose workers share one machine returns what that machine has.
        """
        return None

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Raise ``LaunchError`` at ``start()`` if no worker could ever start (a missing
        interpreter, say), instead of at the first launch. Does nothing by default."""

    def log_files(self, worker_id: str, handle: Any | None) -> list[str]:
        """Where a worker's log may be, as paths on this machine, the one to read first
        first (``[]``: the launcher keeps none). ``handle`` is None once the worker is
        gone. ``Controller.worker_log()`` reads the first that exists; nothing here
        needs the scaler thread."""
        return []

    def describe_worker(self, handle: Any) -> dict[str, Any]:
        """What identifies a launched worker outside this process, for the record
        that lets monitors find leftovers: ``{"pid": ..., "host": ...}`` for a
        process, ``{"job": ...}`` for a scheduler's job. Plain JSON values."""
        return {}

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """After the controller closed: make sure these workers are gone within ``seconds``."""
        for handle in handles:
            self.terminate_worker(handle)
