"""Records: the controller's table of tasks, built into records once and handed over once.

```
 push() ── reserve the name ──► tasks {name: Task}
 resolved Task ── build() (unpickle here, once) ──► TaskResult cached on the Task
 pop/collect/map/future ── commit() ──► out of the table and the resolved queue,
                                        counted in the summary, crashes logged
```

Building is transactional: the raw result is dropped only once its record
exists, so an exception in the middle (Ctrl-C while a result unpickles)
loses nothing, and the caller puts what it claimed back. A result that
cannot be unpickled, whatever it raises (``KeyboardInterrupt`` aside, which
is the user's), becomes that task's ``error`` record.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from . import _wire
from ._errors import CrashLimitError
from ._evaluate import describe
from ._task import CODES, Status, Summary, TaskResult, WorkerSummary

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._task import Task

_STATUSES = {status.value: status for status in Status}
_HOST_ERRORS = {
    Status.CANCEL: "the task was cancelled",
    Status.TIMEOUT: "the task ran past its seconds_timeout",
}
_COUNTS = ("tasks", "seconds", "success", "error", "crash", "cancel", "timeout", "warning")


class Records:
    """Tasks not yet handed over (by name), the crash log and the summary of one controller.

    ``lock`` also guards a name check and its insertion in ``push()``.
    """

    def __init__(self, controller: str, crashes_max: int) -> None:
        self.controller = controller
        self.crashes_max = crashes_max
        self.lock = threading.RLock()
        self.tasks: dict[str, Task] = {}
        self.crashes: dict[str, int] = {}
        self.summary: dict[str, float] | None = None
        # per worker id: [tasks, seconds, peak memory, cpu seconds]
        self.by_worker: dict[str, list[float]] = {}

    def reset(self) -> None:
        """A new start: nothing in the table, a zero summary."""
        with self.lock:
            self.tasks = {}
            self.crashes = {}
            self.summary = dict.fromkeys(_COUNTS, 0)
            self.by_worker = {}

    # ------------------------------------------------------------ build
    def build(self, task: Task, crash_detail: Callable[[Task], str]) -> TaskResult:
        """The task's record, built once (unpickling its result in this thread)."""
        record = task.record
        if record is not None:
            return record
        worker = task.worker
        value = trace = warned = seconds = None
        memory: int | None = None
        cpu: float | None = None
        seed = task.seed
        raw = task.raw
        if task.outcome is not None:
            status = task.outcome
            if status is Status.CRASH:
                error: str | None = crash_detail(task)
            else:
                error = task.detail or _HOST_ERRORS.get(status)
        else:
            assert raw is not None, "a resolved task has a raw result or an outcome"
            meta, bufs = raw
            try:
                outcome = _wire.loads(memoryview(meta)[_wire.RESULT_HEAD.size :], bufs)
                status_text, value, error, trace, warned, seconds, seed, *usage = outcome
                status = _STATUSES[status_text]
                if len(usage) == 2:  # peak resident bytes and CPU seconds, where measured
                    memory, cpu = usage
            except KeyboardInterrupt:
                raise  # the user's own interrupt: the raw result stays for a later try
            except BaseException as exc:  # the result's own code may raise anything
                status, value, trace, warned, seconds, seed = (
                    Status.ERROR,
                    None,
                    None,
                    None,
                    None,
                    task.seed,
                )
                error = f"the result could not be unpickled here: {describe(exc)}"
            if status is Status.ERROR and isinstance(value, bytes):
                # the task's exception, pickled apart: rebuilt only if asked for
                task.error_raw = value
                value = None
        record = TaskResult(
            task.name,
            task.command,
            value,
            status,
            error,
            CODES[status],
            trace,
            warned,
            seconds,
            seed,
            self.controller,
            worker.id if worker else None,
            worker.pid if worker else None,
            worker.host if worker else None,
            memory,
            cpu,
            task.attempts,
        )
        if task.record is None:  # another thread may have built it meanwhile
            task.record = record
            task.raw = None
        return task.record

    # ----------------------------------------------------------- commit
    def commit(self, tasks: list[Task], records: list[TaskResult], limit: bool) -> None:
        """Hand tasks over: out of the table, counted, crashes logged (once per task).

        Raises:
            CrashLimitError: ``limit`` and a task name crashed more than
                ``crashes_max`` times in a row; the records are on the error.
        """
        over: list[tuple[str, int]] = []
        with self.lock:
            summary = self.summary
            for task, record in zip(tasks, records, strict=True):
                if task.taken:
                    continue
                task.taken = True
                if self.tasks.get(task.name) is task:
                    del self.tasks[task.name]
                if summary is not None:
                    summary["tasks"] += 1
                    summary[record.status.value] += 1
                    if record.seconds is not None:
                        summary["seconds"] += record.seconds
                    if record.warnings is not None:
                        summary["warning"] += 1
                if record.worker is not None:
                    row = self.by_worker.setdefault(record.worker, [0, 0.0, 0, 0.0])
                    row[0] += 1
                    row[1] += record.seconds or 0.0
                    row[2] = max(row[2], record.memory_peak or 0)
                    row[3] += record.cpu_seconds or 0.0
                if record.status is Status.CRASH:
                    count = self.crashes.get(record.name, 0) + 1
                    self.crashes[record.name] = count
                    if count > self.crashes_max:
                        over.append((record.name, count))
                else:
                    self.crashes.pop(record.name, None)
        if over and limit:
            name, count = over[0]
            raise CrashLimitError(
                f"task {name!r} crashed its worker {count} consecutive time(s) in controller "
                f"{self.controller!r} (crashes_max={self.crashes_max}); it may need more "
                "memory or a fix. The records are on this error's .results.",
                name,
                count,
                records,
            )

    # ----------------------------------------------------------- report
    def summary_row(self) -> Summary | None:
        s = self.summary
        if s is None:
            return None
        return Summary(
            controller=self.controller,
            tasks=int(s["tasks"]),
            seconds=float(s["seconds"]),
            success=int(s["success"]),
            error=int(s["error"]),
            crash=int(s["crash"]),
            cancel=int(s["cancel"]),
            timeout=int(s["timeout"]),
            warning=int(s["warning"]),
        )

    def worker_rows(self) -> list[WorkerSummary]:
        return [
            WorkerSummary(self.controller, worker, int(t), s, int(m) or None, c)
            for worker, (t, s, m, c) in self.by_worker.items()
        ]
