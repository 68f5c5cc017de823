"""What the user gets back: a task's record, its status, and the summaries.

Public at the package root (``pycrew.TaskResult``, ``pycrew.Status``,
``pycrew.Summary``, ``pycrew.WorkerSummary``); every layer may name them, the
errors that carry records included, so they sit at the bottom with the errors.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, NamedTuple

#: the longest label a task's function is shown by (a code string's first line)
LABEL_MAX = 80


class Status(str, enum.Enum):
    """How a task ended."""

    SUCCESS = "success"
    ERROR = "error"
    CRASH = "crash"
    CANCEL = "cancel"
    TIMEOUT = "timeout"

    def __str__(self) -> str:
        return self.value


#: crew's numeric codes, kept so that records read the same as crew's.
CODES = {
    Status.SUCCESS: 0,
    Status.ERROR: -1,
    Status.CRASH: 19,
    Status.CANCEL: 20,
    Status.TIMEOUT: 5,
}


class TaskResult(NamedTuple):
    """The record of one finished task (immutable).

    Attributes:
        name: the task name.
        command: source text of a code string, or the callable's qualified name.
        result: the return value (``None`` unless ``status`` is ``"success"``).
        status: ``success``, ``error``, ``crash``, ``cancel`` or ``timeout``.
        error: the error message, or ``None`` on success.
        code: 0 success, -1 error, 19 crash, 20 cancel, 5 timeout.
        trace: the formatted traceback of a task error, or ``None``.
        warnings: the first warnings the task raised, joined by ``". "``, or ``None``.
        seconds: run time of the task itself on the worker, or ``None``.
        seed: the seed the task ran with, or ``None``.
        controller: name of the controller that launched the worker.
        worker: the id of the worker that ran the task, or ``None``.
        pid: process id of that worker, or ``None``.
        host: host name of that worker, or ``None``.
        memory_peak: the most resident memory (bytes) the worker process held
            while the task ran, or ``None`` where it cannot be measured.
        cpu_seconds: CPU time (user and system) the task used, or ``None``.
        attempts: how many times the task was run (more than 1 only when a
            controller with ``retry_crashes`` pushed it again after a crash);
            ``controller`` names where the last attempt ran.
    """

    name: str
    command: str | None
    result: Any
    status: Status
    error: str | None
    code: int
    trace: str | None
    warnings: str | None
    seconds: float | None
    seed: int | None
    controller: str
    worker: str | None
    pid: int | None
    host: str | None
    memory_peak: int | None = None
    cpu_seconds: float | None = None
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (``status`` as a str)."""
        out = self._asdict()
        out["status"] = self.status.value
        return out


class Summary(NamedTuple):
    """Cumulative statistics of the tasks collected since the controller started."""

    controller: str
    tasks: int
    seconds: float
    success: int
    error: int
    crash: int
    cancel: int
    timeout: int
    warning: int

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain dict."""
        return self._asdict()


class WorkerSummary(NamedTuple):
    """What one worker did for the tasks collected since the controller started."""

    controller: str
    worker: str
    tasks: int
    seconds: float
    memory_peak: int | None
    cpu_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain dict."""
        return self._asdict()


@functools.lru_cache(maxsize=1024)
def command_label(command: str | None) -> str:
    """What a task's function is called in a view or a span: ``module.qualname``,
    or the first line of a code string, cut at ``LABEL_MAX`` characters."""
    lines = [line.strip() for line in (command or "").splitlines() if line.strip()]
    first = lines[0] if lines else "task"
    return first if len(first) <= LABEL_MAX else first[: LABEL_MAX - 3] + "..."
