"""The controller: the one object a user talks to.

```
 user thread                      scaler thread               dispatcher thread
 push(fn, *args) ─ pickle ─► Task ─► Dispatcher.submit ──────────► worker (TASK)
      │ └─ poke ─────────────────► Autoscaler → launcher
      └─► TaskFuture ◄── settled ◄── resolved Task ◄─────────────── worker (RESULT)
 fut.result() / pop() / collect() / map() ─► Records: build the record once, hand it over
```

The controller owns the records (name → task, crash log, summary); the
dispatcher owns the queue and the sockets; the scaler owns the launcher;
each task's state lives in its future. Results stay raw bytes until someone
asks, so a result that cannot be unpickled here becomes that task's error,
not the dispatcher's.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import itertools
import logging
import math
import secrets
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, overload

from .._dispatcher._autoscale import Autoscaler
from .._dispatcher._dispatcher import Dispatcher
from .._dispatcher._observe import Observed
from .._dispatcher._scaler import Scaler
from .._dispatcher._task import DONE, Task
from .._dispatcher._throttle import Throttle
from .._engines._launcher import Launcher, WorkerSpec
from .._errors import (
    ArgumentError,
    ArgumentTypeError,
    ClosedError,
    CrewError,
    LaunchError,
    RemoteTraceback,
)
from .._operations import _ledger
from .._operations._logs import print_output
from .._operations._metrics import Metrics
from .._resources import resources as check_resources
from .._wire import _frames
from .._wire._tls import TLS, resolve_tls
from . import _code, _graph, _push, _records, _share
from ._checks import (
    check_backup,
    check_bytes_max,
    check_count,
    check_env,
    check_flag,
    check_host,
    check_int,
    check_intervals,
    check_name,
    check_no_kwargs,
    check_port,
    check_retries,
    check_seconds,
    check_seed,
)
from ._records import Records, quietly
from ._shapes import partition_for
from ._share import Provisioning
from ._watch import Watching

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType

    from .._resources import Resources
    from .._results import TaskResult
    from ._executor import Executor
    from ._futures import TaskFuture

log = logging.getLogger("pycrew.controller")
T = TypeVar("T")
MapErrorMode = Literal["stop", "fast", "warn", "silent"]
RetryOn = type[BaseException] | tuple[type[BaseException], ...]
MAP_ERROR_MODES = ("stop", "fast", "warn", "silent")


class Controller(Watching, Provisioning):
    """Accepts tasks, returns results, and launches, scales and retires workers.

    Build one with ``pycrew.local_controller``; see its docstring for
    every argument. Use it as a context manager, or call ``start()`` (or just
    ``push()``) and finally ``terminate()``.
    """

    name: str
    backup: Controller | None
    #: whether this controller can take over tasks that crashed another's workers
    #: (as its ``backup``); a sequential controller runs tasks only inside push()
    _adopts = True

    def __init__(
        self,
        launcher: Launcher,
        *,
        name: str | None = None,
        workers: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLS | str | None = None,
        seconds_interval: float = 0.25,
        seconds_timeout: float = 60,
        seconds_launch: float = 30,
        seconds_idle: float = 300,
        seconds_wall: float = math.inf,
        seconds_heartbeat: float = 10,
        tasks_max: float = math.inf,
        tasks_timers: int = 0,
        reset_globals: bool = True,
        reset_modules: bool = False,
        garbage_collection: bool = False,
        reset_environment: bool = False,
        crashes_max: int = 5,
        seed: int | None = None,
        allow_public: bool = False,
        bytes_max: int = _frames.BYTES_MAX,
        metrics: Metrics | None = None,
        backup: Controller | None = None,
        retry_crashes: bool = False,
        env: Mapping[str, str] | None = None,
        retries: int = 0,
        retry_on: RetryOn = Exception,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
        relay_output: bool = False,
        seconds_drain: float = 0,
        memory: int | None = None,
        resources: Mapping[str, int | str] | Resources | None = None,
        shared_memory: bool = True,
    ) -> None:
        name = check_name(secrets.token_hex(4) if name is None else name)
        self.workers = check_int("workers", workers, 1)
        if not isinstance(host, str) or not host:
            raise ArgumentError("host must be a non-empty string, such as '127.0.0.1'")
        self.port = check_port(port)
        self.tls = resolve_tls(tls)
        check_host(host, self.tls, allow_public)
        self.seconds_interval, self.seconds_timeout = check_intervals(
            seconds_interval, seconds_timeout
        )
        self.seconds_launch = check_seconds("seconds_launch", seconds_launch)
        self.seconds_idle = check_seconds("seconds_idle", seconds_idle)
        self.seconds_wall = check_seconds("seconds_wall", seconds_wall)
        self.seconds_heartbeat = check_seconds("seconds_heartbeat", seconds_heartbeat, False)
        if self.seconds_heartbeat < 1:
            raise ArgumentError(f"seconds_heartbeat must be at least 1, got {seconds_heartbeat}")
        self.tasks_max = check_count("tasks_max", tasks_max, 1)
        self.tasks_timers = int(check_count("tasks_timers", tasks_timers, 0))
        self.reset_globals = check_flag("reset_globals", reset_globals)
        self.reset_modules = check_flag("reset_modules", reset_modules)
        self.garbage_collection = check_flag("garbage_collection", garbage_collection)
        self.reset_environment = check_flag("reset_environment", reset_environment)
        self.crashes_max = check_int("crashes_max", crashes_max, 0)
        self.seed = check_seed(seed)
        self.bytes_max = check_bytes_max(bytes_max)
        #: large arrays to and from workers on this machine go through shared memory
        self.shared_memory = check_flag("shared_memory", shared_memory)
        if metrics is not None and not isinstance(metrics, Metrics):
            raise ArgumentTypeError(f"metrics must be a pycrew.Metrics or None, got {metrics!r}")
        if backup is not None and not isinstance(backup, Controller):
            raise ArgumentTypeError(f"backup must be a pycrew.Controller, got {backup!r}")
        check_backup(name, self, backup)
        #: run a task that crashed its worker again: crashes_max attempts here,
        #: then down the backup chain; the record says how many attempts it took
        self.retry_crashes = check_flag("retry_crashes", retry_crashes)
        #: environment variables every worker gets, on top of what it inherits
        self.env = check_env(env)
        #: how often a task that raises one of ``retry_on`` runs again (default per task)
        self.retries, self.retry_on = check_retries(retries, retry_on)
        #: what a task without seconds_timeout is taken to need before a job ends
        self.seconds_drain = check_seconds("seconds_drain", seconds_drain)
        #: the most bytes of tasks this controller holds (mirai's memory=): push()
        #: waits for room (seconds_timeout at most), try_push() returns None
        self.memory = None if memory is None else check_int("memory", memory, 1)
        #: what each task asks for unless it says otherwise (a ``Resources``, or None)
        self.resources = check_resources(resources)
        #: print what tasks print, each line after its task's name
        self.relay_output = check_flag("relay_output", relay_output)
        self._show_output = print_output  # how relayed lines are shown (an Executor's: plain)
        self._serializers = _share.check_serializers(serializers)
        # what every worker runs before its first task, pickled once
        self._setup = _share.setup_frames(self._serializers, initializer, initargs)
        self._code = _code.CodeCache()  # a script's functions, pickled once per start
        if not isinstance(launcher, Launcher):
            raise ArgumentTypeError("launcher must be a pycrew.launchers.Launcher")
        self.name = name
        self.host = host
        self.metrics = metrics
        #: where a task name goes once it has crashed crashes_max times in a row here
        self.backup = backup
        self.launcher = launcher
        # called at every resolution, under the dispatcher's lock (groups wake this way)
        self._listeners: list[Callable[[], None]] = []
        #: a fresh random id per start, recorded with every launched worker
        self.session = ""
        #: results of the last ``map(error="stop")`` that raised; you may clear it
        self.error: list[TaskResult] | None = None
        self._dispatcher: Dispatcher | None = None
        self._scaler: Scaler | None = None
        self._autoscaler: Autoscaler | None = None
        self._records = Records(name, self.crashes_max)
        self._lock = self._records.lock
        self._ids = itertools.count(1)  # task ids; automatic names count apart
        self._names = itertools.count(1)
        self._name_prefix = secrets.token_hex(6)
        self._worker_numbers = itertools.count(1)
        # why workers holding the secret were refused; told to the user once each
        self._refusals: collections.deque[str] = collections.deque(maxlen=100)
        self._refusals_told: set[str] = set()
        # what every worker of this start gets in its environment (the secret too)
        self._env: dict[str, str] = {}

    # ------------------------------------------------------------ lifecycle
    def __repr__(self) -> str:
        state = "started" if self.started() else "stopped"
        return (
            f"<Controller {self.name!r} {state} workers={self.workers} "
            f"url={self.url or None!r} tls={self.tls.mode!r}>"
        )

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.terminate()
            return
        with quietly():  # the exception says enough: the block did not finish
            self.terminate()

    @property
    def url(self) -> str:
        """``tcp://host:port`` or ``tls+tcp://host:port`` once started, else ``""``."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return ""
        scheme = "tls+tcp" if dispatcher.tls is not None else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{dispatcher.port}"

    def started(self) -> bool:
        return self._dispatcher is not None

    def start(self) -> None:
        """Open the port and get ready to launch workers. Does nothing if started.

        Raises:
            CrewError: the port cannot be bound (a fixed ``port`` in use, say).
        """
        with self._lock:
            if self._dispatcher is not None:
                return
            self.launcher.validate()  # a launcher that cannot start any worker says so now
            begun, secret = time.time(), secrets.token_bytes(32)
            self.session = secrets.token_hex(6)
            session = self.tls.session(self.host)
            settings = _share.worker_settings(self)
            env = _share.worker_env(self, secret, session)
            try:
                dispatcher = Dispatcher(
                    self.host,
                    self.port,
                    secret,
                    session.server if session else None,
                    settings,
                    on_worker=lambda kind, wid: self._on_worker(kind, wid),
                    on_kill=lambda wid: self._on_kill(wid),
                    on_refused=lambda wid, why: self._refusals.append(why),
                    bytes_max=self.bytes_max,
                    listeners=self._listeners,
                    on_crash=functools.partial(_push.retry, self) if self.retry_crashes else None,
                    on_output=self._show_output if self.relay_output else None,
                    # a worker that may leave after a task must not hold another
                    prefetch=math.isinf(self.tasks_max) and math.isinf(self.seconds_wall),
                    observed=Observed(self.name),
                    shared_memory=self.shared_memory,
                )
            except OSError as exc:
                raise CrewError(
                    f"controller {self.name!r} cannot listen on {self.host}:{self.port}: "
                    f"{exc.strerror or exc}"
                    + (" (another program holds the port; pass port=0)" if self.port else "")
                ) from exc
            self._records.reset()
            self._env = env
            for frame in self._setup:
                dispatcher.add_setup(frame)
            autoscaler = Autoscaler(self.workers, self.seconds_launch)
            self._autoscaler = autoscaler
            self._dispatcher = dispatcher
            _LIVE.add(self)
            fastest = 1e-6 if math.isfinite(self.tasks_max) else self.seconds_interval
            address = self.url.split("://", 1)[1]
            self._scaler = Scaler(
                self.launcher,
                autoscaler,
                # the address and environment of this start, whatever terminate() does later
                functools.partial(self._worker_spec, address, env),
                lambda: (
                    len(dispatcher.live) - dispatcher.waiting - sum(dispatcher.shaped_live.values())
                ),
                # crew's launcher throttle: a fixed period, or a fast start when
                # workers are transient and must be replaced quickly
                Throttle(
                    seconds_max=self.seconds_interval, seconds_min=fastest, seconds_start=fastest
                ),
                on_launched=functools.partial(_share.record_launches, self),
                observed=dispatcher.observed,
                dispatcher=dispatcher,
                partition=partition_for(self.launcher),
            )
            self._open_watch(begun)

    def terminate(self) -> None:
        """Stop every worker and free the port; unfinished tasks end as ``cancel``.

        Their futures are resolved (as cancelled), so nothing waits forever,
        and a ``CrewWarning`` names those you pushed (``map()``'s and front
        ends' own tasks aside): wait for them first, or ``cancel(all=True)``.
        Records resolved but not handed over stay readable through their
        futures only (``pop()``/``collect()`` return nothing after this); the
        summary stays readable until the next ``start()``. Safe to repeat.
        """
        with self._lock:
            dispatcher, scaler = self._dispatcher, self._scaler
            if dispatcher is None or scaler is None:
                return
            watched = self._close_watch()
            self._dispatcher = self._scaler = None
            _LIVE.discard(self)
            unfinished = self._records.unfinished(dispatcher)
            dispatcher.close()
            scaler.stop(seconds=5.0)
            _ledger.end_session(self.session, self.name)
            self._records.tasks = {}
            self._env = {}
        # once all is stopped: a warning raised as an error leaves nothing running
        watched()
        _records.report_cancelled(f"terminate() of controller {self.name!r}", unfinished)

    def _on_worker(self, kind: str, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.worker_event(kind, worker_id)

    def _on_kill(self, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.kill(worker_id)

    def _worker_spec(
        self, address: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerSpec:
        """The spec of one new worker: by default for this start's address and environment."""
        address = address or self.url.split("://", 1)[1]
        return _share.worker_spec(self, address, self._env if env is None else env)

    def _running(self) -> Dispatcher:
        dispatcher = self._dispatcher
        if dispatcher is None:
            raise ClosedError(f"controller {self.name!r} is not started")
        return dispatcher

    def _raise_failure(self) -> None:
        while self._refusals:
            why = self._refusals.popleft()
            if why not in self._refusals_told:
                self._refusals_told.add(why)
                _records.warn_outside(f"a worker of controller {self.name!r} was refused: {why}")
        dispatcher, scaler = self._dispatcher, self._scaler
        if dispatcher is not None and dispatcher.failure is not None:
            raise CrewError("the dispatcher thread failed") from dispatcher.failure
        if dispatcher is not None and dispatcher.broken is not None:
            trace = dispatcher.broken_trace
            raise LaunchError(
                f"controller {self.name!r}: {dispatcher.broken}; it takes no more tasks"
            ) from (RemoteTraceback(trace) if trace else None)
        if scaler is not None and scaler.failure is not None:
            failure, scaler.failure = scaler.failure, None
            self._records.failed = True  # told: terminate() then warns of no task
            raise failure

    # ------------------------------------------------------------- pushing
    @overload
    def push(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        name: str | None = ...,
        data: Mapping[str, Any] | None = ...,
        globals: Mapping[str, Any] | None = ...,
        seed: int | None = ...,
        seconds_timeout: float | None = ...,
        retries: int | None = ...,
        retry_on: RetryOn | None = ...,
        resources: Mapping[str, int | str] | Resources | None = ...,
        **kwargs: Any,
    ) -> TaskFuture[T]: ...
    @overload
    def push(
        self,
        fn: str,
        /,
        *,
        name: str | None = ...,
        data: Mapping[str, Any] | None = ...,
        globals: Mapping[str, Any] | None = ...,
        seed: int | None = ...,
        seconds_timeout: float | None = ...,
        retries: int | None = ...,
        retry_on: RetryOn | None = ...,
        resources: Mapping[str, int | str] | Resources | None = ...,
    ) -> TaskFuture[Any]: ...

    def push(
        self,
        fn: Callable[..., T] | str,
        /,
        *args: Any,
        name: str | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        retries: int | None = None,
        retry_on: RetryOn | None = None,
        resources: Mapping[str, int | str] | Resources | None = None,
        **kwargs: Any,
    ) -> TaskFuture[T]:
        """Submit one task and return its future at once.

        Args:
            fn: a callable, or a string of Python code whose last expression
                is the result (``"x + y"``).
            *args: positional arguments for ``fn``.
            name: a name unique among tasks not yet handed over (default: random).
            data: for code strings, variables the code sees; for callables,
                extra keyword arguments.
            globals: variables set in the worker's global namespace for the task
                (and removed afterwards when ``reset_globals``).
            seed: seeds ``random`` (and numpy's global generator) for this task.
            seconds_timeout: the task ends as ``"timeout"`` this many seconds
                after the push, queued or running.
            retries, retry_on: run the task again on its worker, up to
                ``retries`` more times, when it raises one of ``retry_on``
                (default: the controller's, 0 and ``Exception``).
            resources: what the task needs (``{"gpus": 1, "cpus": 4, "memory":
                "8 GB"}``, named counts too), over the controller's default:
                it runs only on a worker launched with at least that.
            **kwargs: keyword arguments for ``fn``.

        Raises:
            ArgumentError: the name is in use, or the arguments do not fit ``fn``.
            ArgumentTypeError: something in the task cannot be pickled.
        """
        backup = self.backup
        if (
            backup is not None
            and name is not None
            and self.crashes_max > 0
            and self._records.crashes.get(name, 0) == self.crashes_max
        ):
            # crew's rule: this name crashed crashes_max times in a row here, so it
            # goes down the chain (to a controller with more resources, say)
            return backup.push(
                fn,
                *args,
                name=name,
                data=data,
                globals=globals,
                seed=seed,
                seconds_timeout=seconds_timeout,
                retries=retries,
                retry_on=retry_on,
                resources=resources,
                **kwargs,
            )
        return self._push(
            fn, args, kwargs, name, data, globals, seed, seconds_timeout, retries, retry_on,
            resources=resources,
        )  # fmt: skip

    def _walk(self, *args: Any, **kwargs: Any) -> list[TaskFuture[Any]]:
        return _push.walk(self, *args, **kwargs)

    def _push(self, *args: Any, **kwargs: Any) -> TaskFuture[Any]:
        """One task, as ``_push.push_one`` makes it (a hook for other controllers)."""
        future = _push.push_one(self, *args, **kwargs)
        assert future is not None  # it waits for room, or raises
        return future

    def try_push(
        self, fn: Callable[..., T] | str, /, *args: Any, **kwargs: Any
    ) -> TaskFuture[T] | None:
        """``push``, but ``None`` at once where ``memory=`` leaves no room now.

        mirai's ``try_mirai()``: for a producer that has other work to do
        rather than wait. Takes every argument of ``push``.
        """
        return _push.try_push(self, fn, args, kwargs)

    def _submit(self, tasks: list[Task], timeout: float | None = None) -> bool:
        """Hand tasks to the dispatcher; with ``memory=``, each once there is room for it.

        False: a task found no room within ``timeout`` (it and those after it
        were not submitted).
        """
        dispatcher = self._running()
        for task in tasks:
            if self.memory is not None and not dispatcher.reserve(task, self.memory, timeout):
                return False
            self._records.tasks[task.name] = task
            dispatcher.submit(task)
            if task.inputs is not None:
                _graph.watch(task)
        scaler = self._scaler
        if scaler is not None and scaler.short:
            scaler.poke()
        return True

    @overload
    def walk(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Any] | None = ...,
        *,
        iterate: Mapping[str, Sequence[Any]] | None = ...,
        data: Mapping[str, Any] | None = ...,
        globals: Mapping[str, Any] | None = ...,
        names: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        seconds_timeout: float | None = ...,
        retries: int | None = ...,
        retry_on: RetryOn | None = ...,
        resources: Mapping[str, int | str] | Resources | None = ...,
        progress: bool = ...,
        **kwargs: NoReturn,
    ) -> list[TaskFuture[T]]: ...
    @overload
    def walk(
        self,
        fn: str,
        iterable: None = ...,
        *,
        iterate: Mapping[str, Sequence[Any]] | None = ...,
        data: Mapping[str, Any] | None = ...,
        globals: Mapping[str, Any] | None = ...,
        names: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        seconds_timeout: float | None = ...,
        retries: int | None = ...,
        retry_on: RetryOn | None = ...,
        resources: Mapping[str, int | str] | Resources | None = ...,
        progress: bool = ...,
        **kwargs: NoReturn,
    ) -> list[TaskFuture[Any]]: ...

    def walk(
        self,
        fn: Callable[..., T] | str,
        iterable: Iterable[Any] | None = None,
        *,
        iterate: Mapping[str, Sequence[Any]] | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        names: str | Sequence[str] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        retries: int | None = None,
        retry_on: RetryOn | None = None,
        resources: Mapping[str, int | str] | Resources | None = None,
        progress: bool = False,
        **kwargs: NoReturn,
    ) -> list[TaskFuture[T]]:
        """Push one task per input without waiting; futures come back in input order.

        Give inputs either as ``iterable`` (each item is the one positional
        argument of ``fn``) or as ``iterate``, a dict of equal-length
        sequences whose i-th values are keyword arguments of task i (for
        code strings: its variables). ``names`` is a key of ``iterate`` whose
        values name the tasks, or a sequence of names. With ``seed``, task i
        gets a seed derived from ``(seed, i)``. ``progress=True`` shows a bar
        that advances as these tasks end. Constant keyword arguments of ``fn``
        go in ``data=`` (or ``functools.partial``), not as keyword arguments here.
        """
        check_no_kwargs("walk", kwargs)
        futures = self._walk(
            fn,
            iterable,
            iterate,
            data,
            globals,
            names,
            seed,
            seconds_timeout,
            False,
            retries,
            retry_on,
            resources,
        )
        if check_flag("progress", progress):
            _push.follow_progress(futures)
        return futures

    def map(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any] | None = None,
        *,
        iterate: Mapping[str, Sequence[Any]] | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        names: str | Sequence[str] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        retries: int | None = None,
        retry_on: RetryOn | None = None,
        resources: Mapping[str, int | str] | Resources | None = None,
        error: MapErrorMode = "stop",
        warnings: bool = True,
        progress: bool = False,
        **kwargs: NoReturn,
    ) -> list[TaskResult]:
        """Run one task per input, wait for all, and return the records in input order.

        Inputs are as in ``walk``. The tasks are this call's own: other
        pending tasks do not matter, and ``pop()``/``collect()`` never see
        these. ``error``: ``"stop"`` raises ``TaskError`` after all
        tasks ended if any did not succeed (all records are kept on
        ``controller.error``); ``"fast"`` raises at the first failure and
        cancels the rest; ``"warn"`` warns with ``CrewWarning``;
        ``"silent"`` says nothing. A raised ``TaskError`` has the first failed
        task's own exception as its cause. With ``warnings=True`` a
        ``CrewWarning`` reports tasks that warned. ``progress=True``
        shows a progress bar.

        Raises:
            TaskError: with ``error="stop"`` or ``"fast"``, when a task did not succeed.
            CrashLimitError: a task name crashed more than ``crashes_max`` times.
        """
        check_no_kwargs("map", kwargs)
        check_flag("progress", progress)
        futures = self._map_tasks(
            error, fn, iterable, iterate, data, globals, names, seed, seconds_timeout, retries,
            retry_on, resources,
        )  # fmt: skip
        try:
            _push.wait_for(self, futures, progress, error == "fast")
        except BaseException:
            _push.abandon(self, futures)
            raise
        return _push.finish_map(self, futures, error, warnings)

    async def map_async(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any] | None = None,
        *,
        iterate: Mapping[str, Sequence[Any]] | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        names: str | Sequence[str] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        retries: int | None = None,
        retry_on: RetryOn | None = None,
        resources: Mapping[str, int | str] | Resources | None = None,
        error: MapErrorMode = "stop",
        warnings: bool = True,
        **kwargs: NoReturn,
    ) -> list[TaskResult]:
        """``map`` for asyncio: ``records = await ctl.map_async(fn, items)``.

        The event loop is never blocked while tasks run; cancelling the
        awaiting coroutine cancels this call's tasks.
        """
        from ._asyncio import wait_futures

        check_no_kwargs("map_async", kwargs)
        futures = self._map_tasks(
            error, fn, iterable, iterate, data, globals, names, seed, seconds_timeout, retries,
            retry_on, resources,
        )  # fmt: skip
        try:
            await wait_futures(self, futures, error == "fast")
        except BaseException:
            _push.abandon(self, futures)
            raise
        return _push.finish_map(self, futures, error, warnings)

    def _map_tasks(self, error: str, *args: Any) -> list[TaskFuture[Any]]:
        """map()'s tasks, its own (``walk``'s arguments, but ``owned``)."""
        if error not in MAP_ERROR_MODES:
            raise ArgumentError(f"error must be one of {MAP_ERROR_MODES}, got {error!r}")
        return self._walk(*args[:8], True, *args[8:])

    # -------------------------------------------------------------- control
    def cancel(self, names: str | Iterable[str] | None = None, all: bool = False) -> None:
        """Cancel queued or running tasks; they end with status ``"cancel"``.

        A running task is interrupted; if it does not stop within a second,
        its worker is killed and replaced (not counted as a crash).
        ``all=True`` cancels every unfinished task, ``map()``'s too.
        """
        check_flag("all", all)
        if isinstance(names, str):
            names = [names]
        wanted = list(names or [])
        if any(not isinstance(n, str) or not n for n in wanted):
            raise ArgumentError("names must be non-empty strings")
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        if all:
            with dispatcher.lock:
                tasks = list(dispatcher.live.values())
        else:
            table = self._records.tasks
            tasks = [table[n] for n in wanted if n in table]
        self._cancel_tasks(tasks)

    def _cancel_tasks(self, tasks: list[Task]) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.cancel([t for t in tasks if t.state != DONE])

    def launch(self, n: int = 1) -> None:
        """Start ``n`` workers now, whatever the demand and the ``workers`` cap."""
        if check_int("n", n) < 1:
            return
        self.start()
        scaler = self._scaler
        assert scaler is not None
        scaler.request("launch", n, timeout=self.seconds_timeout)

    def scale(self) -> bool:
        """Run one auto-scaling round now; True if it launched workers."""
        self.start()
        self._raise_failure()
        scaler = self._scaler
        assert scaler is not None
        return bool(scaler.request("round", timeout=self.seconds_timeout))

    def executor(
        self, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()
    ) -> Executor:
        """A ``pycrew.Executor`` that submits to this controller.

        Its ``shutdown()`` leaves the controller running: it is yours to terminate.
        """
        from ._executor import Executor

        return Executor(controller=self, initializer=initializer, initargs=initargs)


#: started controllers, terminated at interpreter exit if the user did not
_LIVE: weakref.WeakSet[Controller] = weakref.WeakSet()


@atexit.register
def _terminate_all() -> None:
    with quietly():  # the interpreter is leaving: a warning would reach no one
        for controller in list(_LIVE):
            with contextlib.suppress(Exception):
                controller.terminate()
