"""Futures: each pushed task's state, as a ``concurrent.futures.Future``.

```
 push() ─► Task ─► dispatcher ─► worker ─► RESULT ─► Task resolved (dispatcher lock held)
   └─► TaskFuture                                        └─► settle(): state, waiters, callbacks
 fut.result()/exception()/record()/await ─► Records.take([task]) ─► the record, built once
 pop()/collect()/map() ──────────────────► the same take, over other tasks
```

A future is settled on the thread that resolved its task (the dispatcher's,
or the one that cancelled it), after the dispatcher's lock is released: done
callbacks run there, as they do on an executor's management thread. Nothing
is unpickled when a future settles; the record is built when someone asks.
A task that crashed and went down a backup chain keeps its future: the
future follows it, so its user never sees the hand-over.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
)
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .._dispatcher._task import DONE, RUNNING
from .._errors import (
    CrewError,
    CrewTimeoutError,
    RemoteTraceback,
    TaskCrashError,
    TaskEnded,
    TaskError,
    TaskTimeoutError,
)
from .._results import Status
from .._wire import _pickling
from .._worker._evaluate import describe

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from .._dispatcher._task import Task
    from .._results import TaskResult
    from ._controller import Controller

T = TypeVar("T")
V = TypeVar("V")
_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
#: guards the first making of a future's condition and lists (rare, and short)
_MAKING = threading.Lock()
#: a callback added by ``_on_done`` and the future settling meanwhile: one waits
_ADDING = threading.Lock()


# The two errors that are also concurrent.futures' own (see _errors).
class BrokenExecutorError(CrewError, concurrent.futures.BrokenExecutor):
    """An ``pycrew.Executor``'s initializer failed: the executor takes no more tasks.

    Raised by the futures of its tasks and by ``submit()`` once it is broken;
    ``except concurrent.futures.BrokenExecutor`` catches it too.
    """


class TaskCancelledError(TaskEnded, concurrent.futures.CancelledError):
    """The task was cancelled (by ``cancel()`` or ``terminate()``).

    Attributes:
        record: the task's result record.
    """


class _OnFirstUse(Generic[V]):
    """A future's attribute kept in a slot, made on first use (the slot holds None till then)."""

    def __init__(self, slot: str, make: Callable[[], V]) -> None:
        self.slot = slot
        self.make = make

    def __get__(self, future: Any, owner: Any = None) -> V:
        made: V | None = getattr(future, self.slot)
        if made is None:
            with _MAKING:  # two threads asking at once get the same one
                made = getattr(future, self.slot)
                if made is None:
                    made = self.make()
                    setattr(future, self.slot, made)
        return made

    def __set__(self, future: Any, value: V) -> None:
        setattr(future, self.slot, value)


class TaskFuture(concurrent.futures.Future[T], Generic[T]):
    """The future of one pushed task: a real ``concurrent.futures.Future``.

    ``result()`` returns the task's value or raises its exception (its own
    type, with the worker's traceback as the cause); ``record()`` returns the
    full ``TaskResult``. Either hands the task over: it leaves the
    controller, so ``pop()``/``collect()`` will not return it again and its
    name can be reused. ``cancel()`` also stops a running task. Works with
    ``concurrent.futures.wait``/``as_completed``, ``asyncio.wrap_future`` and
    ``await``.
    """

    # Three slots: a million pushed tasks hold a million futures, most read
    # once after their task ended, never waited on, never given a callback,
    # never failed. The attributes such a future leaves at None are class
    # defaults below; the few futures that set one keep it in the instance
    # dict every concurrent.futures.Future has, made on its first write.
    __slots__ = ("_cond", "_current", "_state")

    # _result and _exception stay None (result() and exception() read the
    # task), but the standard library's code may look at them
    _result: Any = None
    _exception: BaseException | None = None
    _waiting: list[Any] | None = None
    _callbacks: list[Any] | None = None
    _error: BaseException | None = None

    def __init__(self, controller: Controller, task: Task) -> None:
        # what Future.__init__ sets, less what is made on first use
        self._state = PENDING
        self._cond: threading.Condition | None = None
        # the task names its controller: one reference, replaced whole when the
        # task moves down the backup chain, so a reader never sees a torn pair
        task.controller = controller
        self._current = task
        task.future = self

    @property
    def _where(self) -> tuple[Controller, Task]:
        """The task now, and the controller that holds it."""
        task = self._current
        controller = task.controller
        assert controller is not None
        return cast("Controller", controller), task

    # The standard library's code reads these three by name.
    _condition: _OnFirstUse[threading.Condition] = _OnFirstUse("_cond", threading.Condition)
    _waiters: _OnFirstUse[list[Any]] = _OnFirstUse("_waiting", list)
    _done_callbacks: _OnFirstUse[list[Any]] = _OnFirstUse("_callbacks", list)

    # ------------------------------------------------------------ state
    @property
    def name(self) -> str:
        """The task's name."""
        return self._current.name

    @property
    def _task(self) -> Task:
        return self._current

    @property
    def controller(self) -> str:
        """The name of the controller that holds the task now."""
        return self._where[0].name

    def done(self) -> bool:
        return self._state in _ENDED or self._current.state == DONE

    def cancelled(self) -> bool:
        if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
            return True
        task = self._current
        return task.state == DONE and task.outcome is Status.CANCEL

    def running(self) -> bool:
        """Whether a worker runs the task now: not one that waits behind another task
        on a busy worker, nor one that ended."""
        controller, task = self._where
        if task.state != RUNNING:
            return False
        dispatcher = controller._dispatcher
        return dispatcher is None or dispatcher.started(task)

    def cancel(self) -> bool:
        """Cancel the task, queued or running (a running task is interrupted).

        Returns:
            True if the task is cancelled now, False if it had already ended
            another way.
        """
        controller, task = self._where
        if task.state != DONE:
            controller._cancel_tasks([task])
        return self.cancelled()

    # ---------------------------------------------------------- outcome
    def record(self, timeout: float | None = None) -> TaskResult:
        """Wait for the task and return its full record (it never raises for the task's status).

        Raises:
            CrewTimeoutError: the task did not end within ``timeout`` seconds.
        """
        controller, task = self._wait(timeout)
        return controller._take_one(task)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the task and return its value, or raise what it raised.

        Raises:
            CrewTimeoutError: the task did not end within ``timeout`` seconds.
            TaskCrashError, TaskCancelledError, TaskTimeoutError: it ended so.
            TaskError: it raised an exception that cannot be rebuilt here.
            Exception: whatever else the task raised, as itself.
        """
        record = self.record(timeout)
        if record.status is Status.SUCCESS:
            value: T = record.result
            return value
        raise self._failure(record)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task; ``None`` if it succeeded, else the exception ``result()`` raises.

        Raises:
            TaskCancelledError: the task was cancelled (as for any future).
        """
        record = self.record(timeout)
        if record.status is Status.SUCCESS:
            return None
        failure = self._failure(record)
        if record.status is Status.CANCEL:
            raise failure
        return failure

    def _get_snapshot(self) -> tuple[bool, bool, Any, BaseException | None]:
        """``(done, cancelled, value, exception)``: what asyncio (3.14 on) copies from a future."""
        if not self.done():
            return False, False, None, None
        if self.cancelled():
            return True, True, None, None
        record = self.record()
        if record.status is Status.SUCCESS:
            return True, False, record.result, None
        return True, False, None, self._failure(record)

    def __await__(self) -> Generator[Any, None, T]:
        import asyncio  # here: it takes a tenth of a cold start to import

        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        task = self._current
        if task.state == DONE:
            state = (task.outcome or Status.ERROR if task.failed else Status.SUCCESS).value
        else:
            state = "running" if task.state == RUNNING else "pending"
        return f"<TaskFuture {task.name!r} {state}>"

    # ------------------------------------------------------- internals
    def _follow(self, controller: Controller, task: Task) -> None:
        """The task went down the backup chain: follow it (dispatcher lock held)."""
        task.controller = controller
        task.future = self
        self._current = task

    def _wait(self, timeout: float | None) -> tuple[Controller, Task]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            where = self._where
            controller, task = where
            if task.state == DONE:
                return where
            _check_waitable(controller)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise CrewTimeoutError(f"task {task.name!r} is not done after {timeout} s")
            pause = controller.seconds_interval
            if left is not None:
                pause = min(left, pause)
            dispatcher = controller._dispatcher
            if dispatcher is not None and dispatcher.wait_on_worker(task, pause):
                continue  # its worker's frames were read here: done, or not yet
            with self._condition:
                if self._state not in _ENDED and self._current is task and task.state != DONE:
                    self._condition.wait(pause)

    def _settle(self, task: Task) -> None:
        """Mark the future done, wake its waiters, run its callbacks (no pycrew lock held).

        Called once per resolution. The state is published first: anyone who
        looks after that sees it, and anyone who began to wait before made
        the condition first, so it is there to be woken through (a future no
        one waits on never makes one).
        """
        if self._current is not task or self._state in _ENDED:
            return  # handed down the backup chain, or settled already
        cancelled = task.outcome is Status.CANCEL
        failed = task.outcome is not None or task.failed
        self._state = CANCELLED_AND_NOTIFIED if cancelled else FINISHED
        condition = self._cond
        if condition is not None:
            with condition:
                for waiter in self._waiting or ():
                    if cancelled:
                        waiter.add_cancelled(self)
                    elif failed:
                        waiter.add_exception(self)
                    else:
                        waiter.add_result(self)
                condition.notify_all()
        if self._callbacks is not None:
            with _ADDING:
                pass  # an _on_done() that saw this future pending has added its callback
            if self._callbacks:
                # the standard library's own routine: it logs a callback that raises
                self._invoke_callbacks()  # type: ignore[attr-defined]

    def _on_done(self, callback: Callable[[TaskFuture[T]], object]) -> None:
        """Call ``callback(self)`` once settled, at once if it is: ``add_done_callback``
        without the condition it makes (a graph of a million tasks spares 800 MB)."""
        callbacks = self._done_callbacks  # made first: _settle() looks at it
        with _ADDING:
            if self._state not in _ENDED:
                callbacks.append(callback)
                return
        callback(self)

    def _failure(self, record: TaskResult) -> BaseException:
        """The exception this task's outcome raises; the same object each time."""
        if self._error is None:
            self._error = failure(record, self._current)
        return self._error

    def __reduce__(self) -> Any:
        # in a task's arguments: the task takes this one's result (see _graph)
        from ._graph import reduce_future

        return reduce_future(self)


def _check_waitable(controller: Controller) -> None:
    """Before a wait for a task: surface failures, and refuse a wait that could never end."""
    controller._raise_failure()
    dispatcher = controller._dispatcher
    if dispatcher is not None and dispatcher.thread is threading.current_thread():
        raise CrewError(
            "a done callback waited for an unfinished task: callbacks run on pycrew's "
            "dispatcher thread, which that task needs; hand the wait to another thread"
        )


def failure(record: TaskResult, task: Task) -> BaseException:
    """The exception for a record that did not succeed.

    A task's own exception is rebuilt from what the worker pickled (running
    its ``__reduce__``: pickle is code, and this is where the user asked
    for it), with the worker's formatted traceback as its cause. A
    ``KeyboardInterrupt`` out of that rebuild is raised once; the next time
    the exception counts as one that cannot be rebuilt here.
    """
    error_raw = task.error_raw
    status = record.status
    what = f"task {record.name!r}"
    if status is Status.CRASH:
        return TaskCrashError(f"{what} crashed its worker: {record.error}", record)
    if status is Status.CANCEL:
        return TaskCancelledError(f"{what} was cancelled: {record.error}", record)
    if status is Status.TIMEOUT:
        return TaskTimeoutError(f"{what} ran past its seconds_timeout", record)
    if task.inputs is not None:
        from ._graph import dependency_error

        unrun = dependency_error(record, task)
        if unrun is not None:
            return unrun
    remote = RemoteTraceback(record.trace) if record.trace else None
    error: BaseException | None = None
    why = ""
    if error_raw is not None:
        try:
            rebuilt = _pickling.loads(error_raw, [])
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and not task.interrupted:
                task.interrupted = True
                raise
            why = f"; it could not be rebuilt here ({describe(exc)})"
        else:
            if isinstance(rebuilt, BaseException):
                error = rebuilt
    if error is None:
        error = TaskError(f"{what} raised {record.error}{why}", [record])
    if remote is not None:
        error.__cause__ = remote
    return error
