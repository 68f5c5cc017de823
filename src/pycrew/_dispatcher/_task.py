"""Tasks: what travels, and how each resolves, with the queue of resolved ones.

A ``Task`` is the controller's and the dispatcher's view of one pushed
task; its ``pycrew.TaskFuture`` is the user's, known here only through the
``Waiting`` protocol (the user's side sits above this layer). The record
(``pycrew._results.TaskResult``) is built from the task once, on the first
request, in the requesting thread.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .._results import Status, TaskResult
from ._observe import Observed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Protocol

    from .._resources import Resources

    class Waiting(Protocol):
        """What a task knows of its future (the user's side's ``TaskFuture``)."""

        def _settle(self, task: Task) -> None: ...

        def _follow(self, controller: Any, task: Task) -> None: ...


V = TypeVar("V")
#: guards the making of a task's ``_More`` (rare, and short)
_MAKING = threading.Lock()

#: dispatch states: waiting in the queue, sent to a worker, resolved,
#: handed to a backup controller after crashing here (resolved there), and
#: waiting in the controller for the tasks whose results it takes
QUEUED, RUNNING, DONE, FORWARDED, WAITING = 0, 1, 2, 3, 4
#: larger tasks go only to idle workers: a worker holding several big
#: payloads ahead would hold their memory too
PREFETCH_BYTES = 1 << 20
#: each status's name (an enum's .value is a slow property, and this is read per task)
_NAMES = {status: status.value for status in Status}
#: a resolved task's frame: one empty tuple for all, where a list each cost 56 bytes
NO_FRAME: tuple[Any, ...] = ()


def deadline_in(seconds: float | None) -> float | None:
    """When a task's ``seconds_timeout``, counted from now, runs out (``None``: never)."""
    if seconds is None or math.isinf(seconds):
        return None
    return time.monotonic() + seconds


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many tasks or records are made.

    Each object made counts towards the next collection, and with a million
    tasks alive each full collection walks them all: a walk() or collect()
    of many tasks spent a third of its time there, finding nothing, since
    what the batch makes stays alive. Reference counting still frees the
    rest meanwhile, and the collector resumes (if it ran before) as soon as
    the batch is made.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class WorkerInfo:
    __slots__ = ("host", "id", "pid")

    def __init__(self, worker_id: str, pid: int | None, host: str | None) -> None:
        self.id = worker_id
        self.pid = pid
        self.host = host


class _Rare(Generic[V]):
    """A task's field that most tasks leave at its default all their life.

    It lives on the task's ``more`` (a ``_More``, made on the first change
    away from the default), not in a slot of its own: a million tasks held
    at once pay 8 bytes each for the lot instead of 8 for each field.
    """

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: V) -> None:
        self.name = name
        self.default = default

    @overload
    def __get__(self, task: None, owner: Any = None) -> _Rare[V]: ...
    @overload
    def __get__(self, task: Task, owner: Any = None) -> V: ...

    def __get__(self, task: Task | None, owner: Any = None) -> V | _Rare[V]:
        if task is None:
            return self
        more = task.more
        if more is None:
            return self.default
        value: V = getattr(more, self.name, self.default)
        return value

    def __set__(self, task: Task, value: V) -> None:
        more = task.more
        if more is None:
            if value is self.default:
                return
            with _MAKING:  # two threads changing two fields at once share one
                more = task.more
                if more is None:
                    more = task.more = _More()
        setattr(more, self.name, value)


class _More:
    """The rare fields of one task (see ``_Rare``); a field never set reads as
    its default, which ``Task`` names."""

    __slots__ = (
        "attempts",
        "crashes",
        "deadline",
        "detail",
        "error_raw",
        "failed",
        "held",
        "inputs",
        "interrupted",
        "outcome",
        "shape",
        "shared",
    )


class Origin:
    """What the tasks of one push, walk or map share: their command, and the
    controller that holds them (their futures name it).

    In two slots of each task they would cost a million tasks 16 MB; one
    slot pointing here costs 8 MB. A task that moves to another controller
    (down a backup chain) gets an origin of its own.
    """

    __slots__ = ("command", "controller")

    def __init__(self, command: str | None) -> None:
        self.command = command
        self.controller: object = None


class Task:
    """One pushed task, as the controller and the dispatcher see it.

    Its slots are what every task uses; what few tasks change from the
    default sits on ``more`` (see ``_Rare``). A user who keeps a million
    futures keeps a million of these alive: each slot costs 8 MB. Twelve
    slots make it 128 bytes, a size class of Python's allocator that the
    frame of a small task (about 135 bytes: the 144 class) does not share.
    Made one after the other by walk(), tasks and frames sharing a class
    would share its pools, and the frames, gone once sent, would leave holes
    there that nothing else of that size fills: a 144-byte task cost a
    million tasks 130 MB more at their peak than this one. ``_More`` has
    twelve fields for the same reason: every task of a push with
    ``seconds_timeout=`` or ``resources=`` has one.
    """

    __slots__ = (
        "ended",
        "frame",
        "future",
        "id",
        "more",
        "name",
        "origin",
        "owned",
        "seed",
        "state",
        "taken",
        "worker",
    )

    # how many times the task was pushed, counting retries after crashes,
    # and how many of them crashed in this controller
    attempts = _Rare("attempts", 1)
    crashes = _Rare("crashes", 0)
    deadline: _Rare[float | None] = _Rare("deadline", None)
    # the worker's RESULT said the task raised (most succeed)
    failed = _Rare("failed", False)
    # the controller's text for an outcome it set (a cancel's reason, say)
    detail: _Rare[str | None] = _Rare("detail", None)
    # the task's exception as the worker pickled it; rebuilt only on request
    error_raw: _Rare[bytes | None] = _Rare("error_raw", None)
    #: bytes of this task counted against the controller's memory= cap
    held = _Rare("held", 0)
    #: what a task that takes other tasks' results waits for (the user's
    #: side's ``_graph.Inputs``; opaque here), else None
    inputs: _Rare[Any] = _Rare("inputs", None)
    # set by the controller (CRASH, CANCEL, TIMEOUT); None: a worker's result
    outcome: _Rare[Status | None] = _Rare("outcome", None)
    # a KeyboardInterrupt came out of unpickling its result (or its exception)
    # once: raised then, it is taken for the result's own doing the next time
    interrupted = _Rare("interrupted", False)
    #: the resources it asked for (a ``Resources``), or None: any worker
    shape: _Rare[Resources | None] = _Rare("shape", None)
    #: keys of the shared objects the task uses: its worker gets them first
    shared: _Rare[tuple[int, ...]] = _Rare("shared", ())

    def __init__(
        self,
        task_id: int,
        name: str,
        command: str | None,
        frame: bytes | tuple[Any, ...],
        seed: int | None,
        deadline: float | None,
        owned: bool = False,
        origin: Origin | None = None,
    ) -> None:
        self.id = task_id
        # the command, and the controller that holds it (see Origin): ``origin``
        # where the task's push shares one, which has ``command`` already
        self.origin = Origin(command) if origin is None else origin
        self.name = name
        # bytes, or a tuple of bytes and flat byte views (_frames.pieces())
        self.frame = frame
        self.seed = seed
        self.more: _More | None = None
        if deadline is not None:
            self.deadline = deadline
        # owned by map() or an Executor: never in the pop/collect queue
        self.owned = owned
        self.state = QUEUED
        # the worker's raw result, then its record once built (see raw, record)
        self.ended: bytes | tuple[bytes, Sequence[Any]] | TaskResult | None = None
        self.worker: WorkerInfo | None = None
        # handed over (popped, collected, or read through its future)
        self.taken = False
        self.future: Waiting | None = None

    @property
    def command(self) -> str | None:
        """The source of a code string, or the function's qualified name."""
        return self.origin.command

    @property
    def controller(self) -> object:
        """The controller that holds the task (set by its future; opaque at this layer)."""
        return self.origin.controller

    @controller.setter
    def controller(self, controller: object) -> None:
        origin = self.origin
        if origin.controller is controller:
            return
        if origin.controller is None:
            # the first of its push to be given one: they all go to this controller
            origin.controller = controller
        else:
            mine = self.origin = Origin(origin.command)
            mine.controller = controller

    @property
    def raw(self) -> bytes | tuple[bytes, Sequence[Any]] | None:
        """What the worker's RESULT said before anything is unpickled: its bytes,
        with its buffers where it has any (most results have none); None once
        the record is built, or if there is none."""
        ended = self.ended
        return None if type(ended) is TaskResult else ended  # type: ignore[return-value]

    @raw.setter
    def raw(self, raw: bytes | tuple[bytes, Sequence[Any]] | None) -> None:
        self.ended = raw

    @property
    def record(self) -> TaskResult | None:
        """The record, built once, on first request (in the caller's thread)."""
        ended = self.ended
        return ended if type(ended) is TaskResult else None

    @record.setter
    def record(self, record: TaskResult) -> None:
        # the raw result goes with it: one slot holds the one, then the other
        self.ended = record

    @property
    def size(self) -> int:
        """The frame's bytes (0 once the task ended and its frame went)."""
        frame = self.frame
        return len(frame) if isinstance(frame, bytes) else sum(map(len, frame))

    @property
    def small(self) -> bool:
        """Whether a busy worker may be sent it ahead (larger tasks go only to idle ones)."""
        return self.size <= PREFETCH_BYTES

    def settle(self) -> None:
        """Tell the future its task is resolved (never with the dispatcher's lock held)."""
        future, self.future = self.future, None  # no cycle left: memory goes back at once
        if future is not None:
            future._settle(self)


class ResolvedQueue:
    """Resolved tasks that pop()/collect() may take, oldest first.

    A deque, where an ordered dict cost a million results 100 MB. A task
    handed over through its future stays in the deque, skipped when reached
    (it is ``taken``): taking it out of the middle would cost a search. Those
    are counted, and the deque is rebuilt without them once they are half of
    it, so a run read only through futures does not keep its tasks alive.
    Every method but ``forget`` is called with the dispatcher's lock held.
    """

    __slots__ = ("_lock", "_stale", "_tasks")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._tasks: collections.deque[Task] = collections.deque()
        # handed over since the last rebuild (a hint: see forget())
        self._stale = 0

    def __bool__(self) -> bool:
        tasks = self._tasks
        while tasks and tasks[0].taken:
            tasks.popleft()
        return bool(tasks)

    def append(self, task: Task) -> None:
        self._tasks.append(task)

    def take(self, count: int | None) -> list[Task]:
        """Up to ``count`` tasks (all if None), oldest first, out of the queue."""
        tasks = self._tasks
        if count is None:
            out = [task for task in tasks if not task.taken]
            tasks.clear()
            self._stale = 0
            return out
        out = []
        while tasks and len(out) < count:
            task = tasks.popleft()
            if not task.taken:
                out.append(task)
        return out

    def put_back(self, tasks: list[Task]) -> None:
        """Tasks taken but not handed over go back, first in line, in their order."""
        self._tasks.extendleft(task for task in reversed(tasks) if not task.taken)

    def trim(self) -> None:
        """Let go of handed-over tasks at either end (lock held): one that holds a
        large result goes now, not at the next rebuild (a loop reading futures
        one by one leaves each at the end)."""
        tasks = self._tasks
        while tasks and tasks[0].taken:
            tasks.popleft()
        while tasks and tasks[-1].taken:
            tasks.pop()

    def forget(self, count: int) -> None:
        """``count`` tasks were handed over through their futures (no lock held).

        The count is a hint that may miss an update when two threads add at
        once; whether a task is still to be taken is its own ``taken``.
        """
        self._stale += count
        if self._stale > 64 and 2 * self._stale > len(self._tasks):
            with self._lock:
                self._stale = 0
                live = [task for task in self._tasks if not task.taken]
                self._tasks = collections.deque(live)


class Resolutions:
    """Where tasks end: the live table, the pop()/collect() queue, futures to settle.

    Shared by the dispatcher and the sequential controller's stand-in for it.
    ``lock`` guards it all; the listeners hear of each resolution, and so does
    ``cv`` while a thread waits on it inside ``each_resolution()``; otherwise
    ``cv`` hears only of the last live task's end (and of failures). A
    ``wait()`` for every task, woken at each of a million resolutions to find
    tasks still live, cost the dispatcher a tenth of its time in wake-ups.
    """

    def __init__(self, listeners: list[Callable[[], None]] | None) -> None:
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        # threads waiting on cv that must hear of every resolution (each_resolution())
        self.eager = 0
        # called (under the lock) at each resolution: how a group's wait wakes
        self.listeners = listeners if listeners is not None else []
        self.live: dict[int, Task] = {}
        # resolved tasks that pop()/collect() may take, oldest first (map's and
        # an executor's own tasks never enter)
        self.resolved = ResolvedQueue(self.lock)
        # resolved since the lock was last let go: their futures settle after
        self.finished: list[Task] = []
        self.completed = 0
        #: task bytes the controller holds (memory=): counted at submit, freed at the end
        self.held = 0
        self.held_peak = 0
        #: the live state a status() reads (the dispatcher names its controller)
        self.observed = Observed("")
        #: live tasks waiting for their inputs (never queued, never launch a worker)
        self.waiting = 0

    @contextlib.contextmanager
    def each_resolution(self) -> Iterator[None]:
        """While inside (lock held), ``cv`` is notified at every resolution, not only
        at the last: for a wait on anything but "nothing live"."""
        self.eager += 1
        try:
            yield
        finally:
            self.eager -= 1

    def reserve(self, task: Task, cap: int, timeout: float | None) -> bool:
        """Count a task's bytes against ``cap``, waiting (up to ``timeout``) for room.

        A task always fits when nothing else is held. False: no room in time.
        """
        size = task.size
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv, self.each_resolution():
            while self.held and self.held + size > cap:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cv.wait(left)
            task.held = size
            self.held += size
            self.held_peak = max(self.held_peak, self.held)
        return True

    # ---------------------------------------------------- task graphs
    def _hold(self, task: Task) -> None:
        """A task whose inputs are not all in: live, and waiting (lock held)."""
        self.waiting += 1
        self.observed.submitted(task)

    def release(self, task: Task, frame: tuple[Any, ...], size: int, extra: int) -> bool:
        """A waiting task's inputs are in: it goes to the queue with ``frame``, which
        carries them. ``extra``: their bytes, now held for it (``memory=``).

        False: it had ended meanwhile (cancelled, say).
        """
        with self.lock:
            if task.state != WAITING:
                return False
            self.waiting -= 1
            task.frame = frame  # its size, and so whether it is small, follow
            task.held += extra
            self.held += extra
            self.held_peak = max(self.held_peak, self.held)
            task.state = QUEUED
            self._enqueue(task)
        return True

    def give_up(self, task: Task, status: Status, detail: str) -> None:
        """A waiting task whose input failed ends unrun; its future settles here."""
        with self.lock:
            if task.state == WAITING:
                self._resolve(task, status, detail)
        self.settle()

    def _enqueue(self, task: Task) -> None:
        """A task may go to a worker now (lock held)."""

    def want(self, task: Task) -> bool:
        """A waiting task takes ``task``'s result: whether a worker may keep it for
        that task (``_locality``; here, never)."""
        return False

    def _shape_ended(self, task: Task, state: int) -> None:
        """A task with a shape ended (the dispatcher counts them per shape)."""

    def _inputs_ended(self, task: Task) -> None:
        """A task that took inputs ended (lock held): its copies of them go."""
        task.inputs.forget_values()

    def _free(self, task: Task) -> None:
        """The task's bytes are no longer the controller's (lock held)."""
        if task.held:
            self.held -= task.held
            task.held = 0

    def _resolve(
        self,
        task: Task,
        outcome: Status | None,
        detail: str | None = None,
        started: float | None = None,
    ) -> None:
        """The task ended (lock held): out of the live table, into the queue if not owned.

        ``started``: when its run began on a worker (the monotonic clock), if known.
        """
        self.observed.ended(
            task,
            ("error" if task.failed else "success") if outcome is None else _NAMES[outcome],
            started,
            time.monotonic(),
        )
        if task.shape is not None:
            self._shape_ended(task, task.state)
        if task.state == WAITING:
            self.waiting -= 1
        if task.inputs is not None:
            self._inputs_ended(task)
        task.state = DONE
        task.outcome = outcome
        task.detail = detail
        task.frame = NO_FRAME
        self._free(task)
        live = self.live
        live.pop(task.id, None)
        if not live:
            # a dict keeps its table when emptied: a million tasks left theirs,
            # 40 MB, behind them until the next one came; clear() lets it go
            live.clear()
        if not task.owned:
            self.resolved.append(task)
        self.finished.append(task)
        self.completed += 1
        if self.eager or not live:
            self.cv.notify_all()
        for listener in self.listeners:
            listener()

    def disown(self, tasks: list[Task]) -> None:
        """Tasks whose owner (an interrupted map) let go: pop()/collect() may take them."""
        with self.lock:
            for task in tasks:
                if task.owned:
                    task.owned = False
                    if task.state == DONE and not task.taken:
                        self.resolved.append(task)

    def settle(self) -> None:
        """Settle the futures of tasks resolved since the last call (without the lock held:
        their done callbacks run here, on the calling thread)."""
        while self.finished:
            with self.lock:
                finished, self.finished = self.finished, []
            settle_all(finished)


def settle_all(tasks: list[Task]) -> None:
    """Settle each task's future, then forget the tasks (nothing here keeps a result alive)."""
    for task in tasks:
        task.settle()
    tasks.clear()
