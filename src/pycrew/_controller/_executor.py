"""``pycrew.Executor``: a ``concurrent.futures.Executor`` over a controller.

```
 submit(fn, *args, **kw) ─► Controller._push(owned) ─► dispatcher ─► worker ─► _call(...)
   └─► TaskFuture ◄── settled (dispatcher thread) ◄── result       (initializer once per
         ├─ done callback: leaves _pending; a failed one goes to _suspects    process and key)
         └─ user: result() / wait() / as_completed()
 map() ─► submit() per item or per chunk ─► results in order, each dropped once yielded
 shutdown() ─► no more submits; cancel queued tasks; wait; terminate the own controller
```

The executor keeps no queue of its own: the controller's dispatcher is the
queue, and each task's future is its state. The executor only remembers
which of its futures are unfinished (to wait for them or cancel them at
shutdown) and which failed (to notice a broken initializer). Its tasks are
*owned*, so ``pop()``/``collect()`` on a shared controller never see them.

Every done callback runs on the dispatcher thread (or the cancelling one),
so callbacks here take no lock that a thread calling into pycrew could hold:
the bookkeeping is a dict and a deque, whose single operations are atomic.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import secrets
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._errors import ArgumentError, ArgumentTypeError
from .._operations._logs import print_plain
from ._controller import Controller
from ._futures import BrokenExecutorError, TaskFuture
from ._shapes import unwrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .._engines._launcher import Launcher

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("pycrew.controller")

_SHUTDOWN = "cannot schedule new futures after shutdown"
_EXITING = "cannot schedule new futures after interpreter shutdown"


# ---------------------------------------------------------------- worker side
class _InitializerError(BrokenExecutorError):
    """Raised in a worker whose run of the executor's initializer failed.

    ``args`` are (message, the initializer's formatted traceback), so that
    it pickles back to the controller as itself.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def trace(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else ""


#: per executor key, in a worker process: None once its initializer ran, or
#: (message, traceback text) of the run that failed (it is not run again)
_initialized: dict[str, tuple[str, str] | None] = {}


def _call(
    key: str,
    initializer: Callable[..., object],
    initargs: tuple[Any, ...],
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    """Run the executor's initializer in this process the first time, then ``fn``."""
    if key not in _initialized:
        try:
            initializer(*initargs)
        except Exception as exc:
            # BaseException (a cancel's interrupt) is let through: the
            # initializer did not fail, and runs again before the next task.
            # The traceback starts at the initializer: this wrapper is pycrew's.
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            trace = "".join(traceback.format_exception(type(exc), exc, tb))
            message = (
                f"the executor's initializer raised {type(exc).__name__}: {exc}; "
                "the executor is not usable anymore"
            )
            _initialized[key] = (message, trace)
            raise _InitializerError(message, trace) from exc
        _initialized[key] = None
    failed = _initialized[key]
    if failed is not None:
        message, trace = failed
        raise _InitializerError(f"{message} (it failed earlier on this worker)", trace)
    return fn(*args, **kwargs)


def _chunk(fn: Callable[..., T], calls: list[tuple[Any, ...]]) -> list[T]:
    """Several calls of one ``map()`` as one task (``chunksize > 1``)."""
    return [fn(*args) for args in calls]


# ---------------------------------------------------------------- controller side
#: executors whose work may not be finished, waited for when the interpreter exits
_live: weakref.WeakSet[Executor] = weakref.WeakSet()
_exiting = False


def _interpreter_exit() -> None:
    # Runs before atexit hooks (and so before pycrew terminates the controllers
    # left running): the unfinished work of an executor that was not shut
    # down, or shut down without waiting, still finishes (as in a thread
    # pool), and later submits are refused.
    global _exiting
    _exiting = True
    for executor in list(_live):
        try:
            executor.shutdown(wait=True)
        except Exception:  # the next executor's work still deserves its wait
            log.exception("an executor could not finish its work at interpreter exit")


# what ThreadPoolExecutor and ProcessPoolExecutor use too (a private hook, not in typeshed)
threading._register_atexit(_interpreter_exit)  # type: ignore[attr-defined]


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls run on pycrew workers.

    ``Executor(max_workers=4)`` builds its own local controller (terminated
    by ``shutdown()``); ``launcher=`` builds one on any launcher (``"slurm"``,
    a registered name, or a ``pycrew.launchers.Launcher``), and
    ``controller=`` (or ``ctl.executor()``) submits to an existing controller
    and leaves it running. ``submit()`` returns a ``pycrew.TaskFuture``.

    Args:
        max_workers: the most workers at once (default: the CPU count).
            Only for an executor that builds its own controller.
        initializer: called with ``*initargs`` once in each worker process,
            before the first task of this executor that the worker runs. If
            it raises, the executor is broken: the futures of its tasks raise
            ``pycrew.BrokenExecutorError`` (a
            ``concurrent.futures.BrokenExecutor``), and so does ``submit()``.
        initargs: the initializer's arguments.
        controller: a controller to submit to, instead of building one.
        launcher: the launcher of the controller to build, object or name.
        **options: options of the controller to build, as for
            ``pycrew.local_controller`` (``seconds_idle``, ``tls``, ...)
            or ``pycrew.slurm_controller`` with ``launcher="slurm"``.

    Raises:
        ArgumentError: ``max_workers`` is not > 0, or ``controller=`` came
            with ``max_workers``, ``launcher`` or controller options.
        ArgumentTypeError: an argument has the wrong type.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        controller: Controller | None = None,
        launcher: Launcher | str | None = None,
        **options: Any,
    ) -> None:
        if initializer is not None and not callable(initializer):
            raise ArgumentTypeError(f"initializer must be callable, got {initializer!r}")
        if not isinstance(initargs, tuple):
            raise ArgumentTypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
        own = controller is None
        if controller is not None:
            if not isinstance(controller, Controller):
                raise ArgumentTypeError(
                    f"controller must be a pycrew.Controller, got {type(controller).__name__}"
                )
            given = [
                n
                for n, v in (("max_workers", max_workers), ("launcher", launcher))
                if v is not None
            ]
            if given or options:
                raise ArgumentError(
                    f"{', '.join(given + sorted(options))} configure a controller the executor "
                    "builds; with controller= set them on that controller"
                )
            self._max_workers = controller.workers
        else:
            if max_workers is None:
                count = getattr(os, "process_cpu_count", os.cpu_count)()
                max_workers = count or 1
            elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise ArgumentTypeError(
                    f"max_workers must be an int, got {type(max_workers).__name__}"
                )
            if max_workers <= 0:
                raise ArgumentError("max_workers must be greater than 0")
            self._max_workers = max_workers
            controller = _build(launcher, max_workers, options)
            # what tasks print reaches the terminal as printed, as from a process pool
            controller._show_output = print_plain
        self._controller = controller
        self._own = own
        self._initializer = initializer
        self._initargs = initargs
        # tells this executor's initializer runs apart from another's on the same workers
        self._key = secrets.token_hex(8)
        # guards _shutdown against submit(): no task gets in after shutdown() began
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken_reason: str | None = None
        # unfinished futures (leave in their done callbacks) and failed ones
        # not yet looked at; see the module docstring for why no lock
        self._pending: dict[TaskFuture[Any], None] = {}
        self._suspects: collections.deque[TaskFuture[Any]] = collections.deque()
        self._ending = False
        self._ended = threading.Event()
        _live.add(self)

    def __repr__(self) -> str:
        if self._broken_reason is not None:
            state = "broken"
        else:
            state = "shut down" if self._shutdown else "open"
        return (
            f"<pycrew.Executor {state} controller={self._controller.name!r} "
            f"max_workers={self._max_workers} pending={len(self._pending)}>"
        )

    @property
    def controller(self) -> Controller:
        """The controller this executor submits to."""
        return self._controller

    @property
    def _broken(self) -> str | bool:
        # the attribute concurrent.futures' own executors have (and their tests read)
        with self._lock:
            self._look_for_breakage()
        return self._broken_reason or False

    # ----------------------------------------------------------- submitting
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future at once.

        Every keyword goes to ``fn`` (``submit(f, name=1)`` calls ``f(name=1)``).

        Raises:
            RuntimeError: after ``shutdown()``, or once the interpreter is exiting.
            BrokenExecutorError: the initializer failed in a worker.
            ArgumentTypeError: ``fn`` is not callable, or the task cannot be pickled.
            ArgumentError: the task is larger than the controller's ``bytes_max``.

        A function wrapped by ``pycrew.with_resources(fn, gpus=1, ...)`` asks
        for those resources (the controller's ``resources=`` otherwise).
        """
        if not callable(fn):
            raise ArgumentTypeError(f"fn must be callable, got {type(fn).__name__}")
        inner, asked = unwrap(fn, None)
        return self._submit(inner, args, kwargs, asked)

    def _submit(self, fn: Callable[..., T], args: Any, kwargs: Any, asked: object) -> TaskFuture[T]:
        with self._lock:
            self._check_open()
            future: TaskFuture[T]
            ctl = self._controller
            if self._initializer is None:
                future = ctl._push(fn, args, kwargs, owned=True, resources=asked)
            else:
                call = (self._key, self._initializer, self._initargs, fn, args, kwargs)
                future = ctl._push(_call, call, {}, owned=True, resources=asked)
            self._pending[future] = None
        future.add_done_callback(self._on_done)
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` on the workers: results in input order, as they come.

        The calls are submitted at once (or, with ``buffersize``, that many
        ahead of the one being read); results are yielded lazily, and the
        iterator keeps none it has yielded. A call's exception is raised when
        its turn comes; closing the iterator early cancels what is left.

        Args:
            fn: the callable; it gets one item of each iterable.
            *iterables: as for the builtin ``map`` (the shortest one ends it).
            timeout: seconds from this call after which reading a result
                that is not there raises ``TimeoutError`` (``None``: no limit).
            chunksize: calls per task; larger chunks save round trips when
                the calls are short.
            buffersize: submit at most this many tasks ahead of the reader,
                for long or endless iterables (``None``: submit all now).

        Raises:
            ArgumentError: ``chunksize`` < 1 or ``buffersize`` < 1.
            CrewTimeoutError: (a ``TimeoutError``) a result was late.
        """
        for label, value in (("chunksize", chunksize), ("buffersize", buffersize)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ArgumentTypeError(f"{label} must be an int, got {type(value).__name__}")
        if chunksize < 1:
            raise ArgumentError("chunksize must be >= 1.")
        if buffersize is not None and buffersize < 1:
            raise ArgumentError("buffersize must be None or > 0.")
        end = None if timeout is None else time.monotonic() + timeout
        calls: Iterator[Any] = zip(*iterables)  # noqa: B905 (as the builtin map: the shortest ends it)
        if chunksize > 1:
            calls = _batches(calls, chunksize)

        if not callable(fn):
            raise ArgumentTypeError(f"fn must be callable, got {type(fn).__name__}")
        inner, asked = unwrap(fn, None)  # with_resources(): every chunk asks for them

        def one(call: Any) -> TaskFuture[Any]:
            if chunksize > 1:
                return self._submit(_chunk, (inner, call), {}, asked)
            return self._submit(inner, call, {}, asked)

        first = calls if buffersize is None else _take(calls, buffersize)
        futures = collections.deque(one(call) for call in first)
        return _results(futures, None if buffersize is None else calls, one, end, chunksize > 1)

    # ------------------------------------------------------------ shutting down
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; the ones submitted finish (or, queued, are cancelled).

        Args:
            wait: return once every task of this executor has ended (and its
                own controller is terminated); ``False`` returns at once, and
                an own controller terminates itself after the last task.
            cancel_futures: cancel the tasks no worker has started, those a
                busy worker holds behind its current one included; a task that
                started runs to its end.

        Safe to repeat. An executor over a ``controller=`` leaves it running.
        """
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            _cancel_queued(list(self._pending.copy()))
        if wait:
            for future in list(self._pending.copy()):
                future._wait(None)
            _live.discard(self)
            if self._own:
                self._finish()
        elif self._own:
            self._ending = True
            if not self._pending:
                self._finish()

    # --------------------------------------------------------------- internals
    def _check_open(self) -> None:
        """Refuse a submit to a broken or shut-down executor (lock held)."""
        self._look_for_breakage()
        if self._broken_reason is not None:
            raise BrokenExecutorError(self._broken_reason)
        if _exiting:  # first: at exit, every executor is shut down by _interpreter_exit
            raise RuntimeError(_EXITING)
        if self._shutdown:
            raise RuntimeError(_SHUTDOWN)

    def _on_done(self, future: concurrent.futures.Future[Any]) -> None:
        """A task ended (dispatcher thread, or the cancelling one): no lock taken here."""
        assert isinstance(future, TaskFuture)
        self._pending.pop(future, None)
        if self._initializer is not None and future._where[1].failed:
            self._suspects.append(future)
        if self._ending and not self._pending:
            self._finish()

    def _look_for_breakage(self) -> None:
        """Read the errors of failed tasks; an initializer's failure breaks the executor.

        Runs on a user's thread (lock held): reading an error unpickles it,
        which the dispatcher thread must not do.
        """
        while self._suspects:
            future = self._suspects.popleft()
            try:
                error = future.exception(timeout=0)
            except Exception:  # cancelled meanwhile, or the controller failed
                continue
            if isinstance(error, _InitializerError) and self._broken_reason is None:
                self._broken_reason = str(error)
                log.error(
                    "Exception in initializer of an executor of controller %r; "
                    "the executor is broken:\n%s",
                    self._controller.name,
                    error.trace.rstrip(),
                )

    def _finish(self) -> None:
        """Terminate the own controller, once, never on the dispatcher thread (it joins that)."""
        if self._ended.is_set():
            return
        with _finish_lock:
            if self._ended.is_set():
                return
            self._ended.set()
        _live.discard(self)
        dispatcher = self._controller._dispatcher
        if dispatcher is not None and dispatcher.thread is threading.current_thread():
            threading.Thread(
                target=self._controller.terminate, name="pycrew-executor-end", daemon=True
            ).start()
        else:
            self._controller.terminate()


# held only to decide who terminates an own controller: never around a call into pycrew
_finish_lock = threading.Lock()


def _build(launcher: Launcher | str | None, workers: int, options: dict[str, Any]) -> Controller:
    """The executor's own controller."""
    import inspect

    from .._engines._launcher import Launcher
    from ._factories import controller, engine_factory

    if "workers" in options:
        raise ArgumentError("give max_workers=, not workers=")
    factory = engine_factory(launcher)
    if factory is None:
        if not isinstance(launcher, (str, Launcher)):
            raise ArgumentTypeError(
                "launcher must be a pycrew.launchers.Launcher or a registered name, "
                f"got {launcher!r}"
            )
        chosen = launcher
        factory = lambda **kw: controller(chosen, **kw)  # noqa: E731
        try:
            inspect.signature(Controller).bind(launcher, workers=workers, **options)
        except TypeError as exc:
            raise ArgumentTypeError(f"not a controller option: {exc}") from None
    if launcher is None or launcher in ("local", "slurm"):
        try:
            inspect.signature(factory).bind(workers=workers, **options)
        except TypeError as exc:
            raise ArgumentTypeError(f"not a controller option: {exc}") from None
    return factory(workers=workers, **options)


def _batches(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        batch = _take(calls, size)
        if not batch:
            return
        yield batch


def _take(items: Iterator[Any], count: int) -> list[Any]:
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) == count:
            break
    return taken


def _results(
    futures: collections.deque[TaskFuture[Any]],
    more: Iterator[Any] | None,
    submit: Callable[[Any], TaskFuture[Any]],
    end: float | None,
    chunked: bool,
) -> Iterator[Any]:
    """``map()``'s iterator: one future at a time, dropped before its value is yielded."""
    try:
        while futures:
            if more is not None:
                following = next(more, None)
                if following is not None:
                    futures.append(submit(following))
            left = None if end is None else end - time.monotonic()
            if chunked:
                values = _result_or_cancel(futures.popleft(), left)
                values.reverse()
                while values:
                    yield values.pop()
            else:
                # no local name: the frame must not keep the value once yielded
                yield _result_or_cancel(futures.popleft(), left)
    finally:
        for future in futures:
            future.cancel()


def _result_or_cancel(future: TaskFuture[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # a task that is late (or left behind) stops
        del future


def _cancel_queued(futures: list[TaskFuture[Any]]) -> None:
    """Cancel the tasks of these futures that no worker has started."""
    by_dispatcher: dict[Any, list[Any]] = {}
    for future in futures:
        controller, task = future._where
        dispatcher = controller._dispatcher
        if dispatcher is not None:
            by_dispatcher.setdefault(dispatcher, []).append(task)
    for dispatcher, tasks in by_dispatcher.items():
        dispatcher.cancel(tasks, queued_only=True)
