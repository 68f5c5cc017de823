"""Records: the controller's table of tasks, built into records once and handed over once,
and crew's views over them (wait, pop, collect, size, summary, ...).

```
 push() ── reserve the name ──► tasks {name: Task}
 resolved Task ── build() (unpickle here, once) ──► TaskResult cached on the Task
 pop/collect/map/future ── commit() ──► out of the table and the resolved queue,
                                        counted in the summary, crashes logged
```

Building is transactional: the raw result is dropped only once its record
exists, so an exception in the middle (Ctrl-C while a result unpickles)
loses nothing, and the caller puts what it claimed back. A result that
cannot be unpickled, whatever it raises, becomes that task's ``error``
record; a ``KeyboardInterrupt`` is raised first, once (it may be the user's
Ctrl-C, and the next try may then succeed), so a result that raises it
poisons neither the queue nor its name.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Literal, overload

from .._dispatcher._task import collector_paused
from .._errors import ArgumentError, CrashLimitError, CrewWarning, TaskError
from .._results import CODES, Status, Summary, TaskResult, WorkerSummary
from .._wire import _frames, _pickling
from .._worker._evaluate import describe
from ._checks import check_error, check_seconds

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .._dispatcher._autoscale import Autoscaler
    from .._dispatcher._dispatcher import Dispatcher
    from .._dispatcher._scaler import Scaler
    from .._dispatcher._task import Origin, Task

ErrorMode = Literal["stop", "warn", "silent"]

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
        # the peak memory of the last record built, shared by the next ones that match
        self.last_peak: int | None = None
        # crashes that ran again (retry_crashes=True) with no record here: here
        # or down the backup chain. Counted by the dispatcher thread alone.
        self.crashes_rerun = 0
        # tasks handed to the backup, whose names are to leave the table here
        self.forwarded: collections.deque[Task] = collections.deque()
        #: a failure (a LaunchError) was raised to a caller since the start
        self.failed = False
        #: the last push's origin (its command, this controller): the next push
        #: of the same command shares it, where one each would cost 48 bytes
        self.origin: Origin | None = None

    def reset(self) -> None:
        """A new start: nothing in the table, a zero summary."""
        with self.lock:
            self.tasks = {}
            self.crashes = {}
            self.summary = dict.fromkeys(_COUNTS, 0)
            self.by_worker = {}
            self.crashes_rerun = 0
            self.failed = False

    def crashed_and_rerun(self) -> None:
        """A task crashed its worker here and runs again, here or in a backup.

        The crash leaves no record, yet it happened here: the summary counts
        it as one more task that crashed, as if it had been collected and
        pushed again (crew's way). Runs on this controller's dispatcher thread.
        """
        self.crashes_rerun += 1

    def unfinished(self, dispatcher: Dispatcher) -> list[Task]:
        """The user's own tasks not yet resolved (not map's, not a front end's), but
        none once the controller failed and said so: they could not run, and the
        caller knows."""
        if self.failed or dispatcher.broken is not None or dispatcher.failure is not None:
            return []
        with dispatcher.lock:
            return [task for task in dispatcher.live.values() if not task.owned]

    def prune(self) -> None:
        """Forget names whose tasks went down the backup chain (never under the dispatcher lock)."""
        while self.forwarded:
            task = self.forwarded.popleft()
            with self.lock:
                if self.tasks.get(task.name) is task:
                    del self.tasks[task.name]

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
        retried = 0
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
            meta, bufs = (raw, _frames.NO_BUFFERS) if isinstance(raw, bytes) else raw
            try:
                outcome = _pickling.loads(memoryview(meta)[_frames.RESULT_HEAD.size :], bufs)
                status_text, value, error, trace, warned, seconds, seed, *usage = outcome
                status = _STATUSES[status_text]
                if len(usage) >= 2:  # peak resident bytes and CPU seconds, where measured
                    memory, cpu = usage[:2]
                    # a worker's peak repeats from task to task: one int for a run of them
                    if memory == self.last_peak:
                        memory = self.last_peak
                    else:
                        self.last_peak = memory
                if len(usage) >= 3:  # runs on the worker: retries of raised errors
                    retried = int(usage[2]) - 1
                task.interrupted = False
            except BaseException as exc:  # the result's own code may raise anything
                if isinstance(exc, KeyboardInterrupt) and not task.interrupted:
                    # once, as it came: Ctrl-C works, and the raw result stays for a
                    # later try (a Ctrl-C that fell here by chance loses nothing)
                    task.interrupted = True
                    raise
                status, value, trace, warned, seconds, seed = (
                    Status.ERROR,
                    None,
                    None,
                    None,
                    None,
                    task.seed,
                )
                again = " (a second time: the result raises it)" if task.interrupted else ""
                error = f"the result could not be unpickled here: {describe(exc)}{again}"
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
            task.attempts + retried,
        )
        built = task.record
        if built is None:  # another thread may have built it meanwhile
            task.record = built = record  # the raw result goes
        return built

    # ------------------------------------------------------------- take
    def claim(
        self, dispatcher: Dispatcher, count: int | None, crash_detail: Callable[[Task], str]
    ) -> list[TaskResult]:
        """pop()/collect(): take resolved tasks off the queue, build records, hand them over.

        All or nothing: if building a record raises (Ctrl-C while a result
        unpickles), every claimed task goes back to the queue, first in line.
        """
        with dispatcher.lock:
            queue = dispatcher.resolved
            claimed = queue.take(count)
        try:
            with collector_paused():
                records = [self.build(task, crash_detail) for task in claimed]
        except BaseException:
            with dispatcher.lock:
                queue.put_back(claimed)
            raise
        self.commit(claimed, records, True)
        return records

    def take_one(
        self, dispatcher: Dispatcher | None, task: Task, crash_detail: Callable[[Task], str]
    ) -> TaskResult:
        """A future hands its task over (no crash limit: the future says what happened)."""
        raw = task.raw
        # a result with buffers of its own (64 KB or more, out of band)
        heavy = isinstance(raw, tuple) and bool(raw[1])
        record = self.build(task, crash_detail)
        if not task.taken:
            self.commit([task], [record], False)
            self.forget(dispatcher, [task], heavy)
        return record

    @staticmethod
    def forget(dispatcher: Dispatcher | None, tasks: list[Task], heavy: bool = False) -> None:
        """Tasks handed over another way leave the pop()/collect() queue.

        Without the dispatcher's lock (but for an occasional rebuild of the
        queue): sparing it spares the dispatcher thread a wait on every
        future read. A ``heavy`` result is worth the wait: the queue would
        keep it (and its memory) until the rebuild.
        """
        if dispatcher is not None:
            dispatcher.resolved.forget(sum(1 for task in tasks if not task.owned))
            if heavy:
                with dispatcher.lock:
                    dispatcher.resolved.trim()

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
            if not self.tasks:
                self.tasks.clear()  # the table of an emptied dict stays; this frees it
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
        rerun = self.crashes_rerun
        return Summary(
            controller=self.controller,
            tasks=int(s["tasks"]) + rerun,
            seconds=float(s["seconds"]),
            success=int(s["success"]),
            error=int(s["error"]),
            crash=int(s["crash"]) + rerun,
            cancel=int(s["cancel"]),
            timeout=int(s["timeout"]),
            warning=int(s["warning"]),
        )

    def worker_rows(self) -> list[WorkerSummary]:
        return [
            WorkerSummary(self.controller, worker, int(t), s, int(m) or None, c)
            for worker, (t, s, m, c) in self.by_worker.items()
        ]


class RecordViews:
    """crew's queue methods of a controller: views over its records, not a second store.

    A ``pycrew.Controller`` is one; the attributes below are its own.
    """

    name: str
    workers: int
    seconds_interval: float
    _records: Records
    _dispatcher: Dispatcher | None
    _scaler: Scaler | None
    _autoscaler: Autoscaler | None

    def _raise_failure(self) -> None:
        raise NotImplementedError

    def _prune(self) -> None:
        self._records.prune()

    def wait(
        self, mode: Literal["all", "one"] = "all", seconds_timeout: float | None = None
    ) -> bool:
        """Block until every task is resolved (``"all"``) or one is ready to pop (``"one"``).

        Args:
            mode: ``"all"`` or ``"one"``.
            seconds_timeout: the most seconds to wait; ``None`` waits as long as it takes.

        Returns:
            Whether the condition holds. A timeout returns ``False``, never raises.
        """
        if mode not in ("all", "one"):
            raise ArgumentError(f"mode must be 'all' or 'one', got {mode!r}")
        if seconds_timeout is not None:
            check_seconds("seconds_timeout", seconds_timeout)
        dispatcher = self._dispatcher
        if dispatcher is None or self.size() == 0:
            return mode == "all"
        deadline = None if seconds_timeout is None else time.monotonic() + seconds_timeout
        # "all" is woken once nothing is live; "one", at every resolution
        hearing = contextlib.nullcontext() if mode == "all" else dispatcher.each_resolution()
        with dispatcher.cv, hearing:
            while True:
                self._raise_failure()
                if mode == "all":
                    if not dispatcher.live:
                        return True
                elif dispatcher.resolved:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if self._dispatcher is None:
                    return mode == "all"
                dispatcher.cv.wait(
                    self.seconds_interval if left is None else min(left, self.seconds_interval)
                )

    def pop(self, error: ErrorMode | None = None) -> TaskResult | None:
        """Remove and return one resolved task's record, oldest first, or ``None``.

        Args:
            error: ``None``/``"silent"`` return the record as it is; ``"stop"``
                raises ``TaskError`` if it did not succeed; ``"warn"`` warns.
        """
        check_error(error)
        records = self._claim(1)
        _react(records, error)
        return records[0] if records else None

    def collect(self, error: ErrorMode | None = None) -> list[TaskResult]:
        """Remove and return every resolved task's record (an empty list if none).

        Taking is all or nothing: if anything interrupts it (Ctrl-C while a
        result unpickles), every record stays to be collected again.
        """
        check_error(error)
        records = self._claim(None)
        _react(records, error)
        return records

    def _claim(self, count: int | None) -> list[TaskResult]:
        dispatcher = self._dispatcher
        if dispatcher is None:
            return []
        self._raise_failure()
        self._prune()
        return self._records.claim(dispatcher, count, self._crash_detail)

    def _take_one(self, task: Task) -> TaskResult:
        """Hand one task over through its future (no crash limit: the future says what happened)."""
        return self._records.take_one(self._dispatcher, task, self._crash_detail)

    def _crash_detail(self, task: Task) -> str:
        detail = task.detail or "the worker was lost during the task"
        scaler, worker, dispatcher = self._scaler, task.worker, self._dispatcher
        if scaler is None or worker is None:
            return detail
        # a done callback builds records on the dispatcher thread: that must not stall
        busy = dispatcher is not None and dispatcher.thread is threading.current_thread()
        return scaler.exit_detail(worker.id, detail, 0.0 if busy else 1.0)

    def pids(self) -> list[int]:
        """Process ids of the connected workers."""
        dispatcher = self._dispatcher
        return dispatcher.worker_pids() if dispatcher is not None else []

    def resolved(self) -> int:
        """Tasks resolved since start (cumulative, cancelled ones included)."""
        dispatcher = self._dispatcher
        return dispatcher.completed if dispatcher is not None else 0

    def unresolved(self) -> int:
        """Tasks queued or running now."""
        dispatcher = self._dispatcher
        return len(dispatcher.live) if dispatcher is not None else 0

    def workers_status(self) -> dict[str, int]:
        """Workers connected now, ever connected, launching, failed launches, and
        ``bytes_sent``: what went to workers since start (tasks, shared objects)."""
        dispatcher, auto = self._dispatcher, self._autoscaler
        if dispatcher is None or auto is None:
            return {"connected": 0, "cumulative": 0, "launching": 0, "failed": 0, "bytes_sent": 0}
        connections, cumulative, *_ = dispatcher.counts()
        return {
            "connected": connections,
            "cumulative": cumulative,
            "launching": len(auto.launching),
            "failed": auto.failed,
            "bytes_sent": dispatcher.bytes_sent,
        }

    def size(self) -> int:
        """Tasks not yet handed over (popped, collected, read through a future), resolved or not."""
        self._prune()
        return len(self._records.tasks)

    def empty(self) -> bool:
        return self.size() == 0

    def nonempty(self) -> bool:
        return self.size() > 0

    def saturated(self) -> bool:
        """Whether the controller holds at least ``workers`` tasks not handed over (advisory)."""
        return len(self._records.tasks) >= self.workers

    def crashes(self, name: str) -> int:
        """Consecutive crashes of task ``name`` so far (0 if none)."""
        return self._records.crashes.get(name, 0)

    @overload
    def summary(self, by: Literal["controller"] = ...) -> Summary | None: ...
    @overload
    def summary(self, by: Literal["worker"]) -> list[WorkerSummary]: ...

    def summary(
        self, by: Literal["controller", "worker"] = "controller"
    ) -> Summary | list[WorkerSummary] | None:
        """Statistics of the tasks handed over since the last start, whichever way.

        A crash that ``retry_crashes=True`` ran again leaves no record, yet
        counts here as a task that crashed (``tasks`` and ``crash``), in the
        controller where it happened, as if it had been collected and pushed
        again; the run that ends it counts where it ends, down a backup chain.

        Args:
            by: ``"controller"``: one ``Summary`` (``None`` if never
                started); ``"worker"``: one ``WorkerSummary`` per worker
                that ran a task handed over (tasks, seconds, peak memory, CPU).

        ``pycrew.to_pandas(ctl.summary())`` makes a data frame of either.
        """
        if by == "worker":
            return self._records.worker_rows()
        if by != "controller":
            raise ArgumentError(f"by must be 'controller' or 'worker', got {by!r}")
        return self._records.summary_row()


def _react(records: list[TaskResult], error: str | None) -> None:
    failed = [r for r in records if r.status is not Status.SUCCESS]
    if not failed or error in (None, "silent"):
        return
    message = f"task {failed[0].name!r} ended with status {failed[0].status}: {failed[0].error}"
    if error == "stop":
        raise TaskError(message, records)
    warn_caller(message)


def warn_caller(message: str) -> None:
    """Warn at the user's call: pop/collect/map, then one pycrew helper, are above here."""
    warnings.warn(message, CrewWarning, stacklevel=4)


# ------------------------------------------------- tasks cancelled at the end
class _Quiet(threading.local):
    #: where terminate() calls in this thread put the names of the tasks they
    #: cancelled, instead of warning (None: warn)
    names: list[str] | None = None


_QUIET = _Quiet()
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: how many names a warning shows
_SHOWN = 3


@contextlib.contextmanager
def quietly() -> Iterator[list[str]]:
    """``terminate()`` calls inside (this thread) warn of nothing: they add the names
    of the tasks they cancelled to the list this yields.

    For whoever ends controllers on purpose and reports on its own (a group,
    once for all its members) or not at all (the exit handler; a ``with``
    block left by an exception, which says enough).
    """
    outer = _QUIET.names
    names: list[str] = []
    _QUIET.names = names
    try:
        yield names
    finally:
        _QUIET.names = outer


def report_cancelled(who: str, tasks: list[Task]) -> None:
    """``tasks`` were unfinished as ``who`` stopped: warn of those it cancelled."""
    warn_cancelled(who, [task.name for task in tasks if task.outcome is Status.CANCEL])


def warn_cancelled(who: str, names: list[str]) -> None:
    """Warn that ``who`` cancelled the tasks ``names`` (inside ``quietly()``: note them)."""
    sink = _QUIET.names
    if sink is not None:
        sink += names
        return
    if not names:
        return
    shown = ", ".join(repr(name) for name in names[:_SHOWN])
    if len(names) > _SHOWN:
        shown += f" and {len(names) - _SHOWN} more"
    count = f"{len(names)} unfinished task{'s' if len(names) > 1 else ''}"
    warn_outside(
        f"{who} cancelled {count}: {shown}. Wait for them first (wait(), or each "
        "future's result()), or cancel them first (cancel(all=True)) if that is what "
        "you meant"
    )


def warn_outside(message: str) -> None:
    """Warn at the first caller outside pycrew (a ``with`` statement, say)."""
    level = 1
    frame = sys._getframe(0)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, CrewWarning, stacklevel=level)
