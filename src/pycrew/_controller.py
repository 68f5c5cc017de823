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
import signal
import sys
import threading
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _ledger, _wire
from ._autoscale import Autoscaler
from ._checks import (
    blame,
    check_bytes_max,
    check_count,
    check_error,
    check_flag,
    check_host,
    check_int,
    check_mapping,
    check_port,
    check_seconds,
    check_seed,
    command_text,
    derived_seed,
    task_inputs,
    task_names,
)
from ._dispatcher import Dispatcher, timeout_deadline
from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    ClosedError,
    CrashLimitError,
    CrewError,
    CrewWarning,
    TaskError,
)
from ._evaluate import CALLABLE, CODE
from ._futures import TaskFuture
from ._metrics import Metrics
from ._records import Records
from ._scaler import Scaler
from ._task import DONE, Status, Summary, Task, TaskResult, WorkerSummary
from ._throttle import Throttle
from ._tls import TLS, resolve_tls
from ._wire import Kind
from .launchers import Launcher, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType

    from ._executor import Executor

log = logging.getLogger("pycrew")
T = TypeVar("T")
ErrorMode = Literal["stop", "warn", "silent"]
MapErrorMode = Literal["stop", "fast", "warn", "silent"]
MAP_ERROR_MODES = ("stop", "fast", "warn", "silent")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Controller:
    """Accepts tasks, returns results, and launches, scales and retires workers.

    Build one with :func:`pycrew.local_controller`; see its docstring for
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
        tasks_max: float = math.inf,
        tasks_timers: int = 0,
        reset_globals: bool = True,
        reset_modules: bool = False,
        garbage_collection: bool = False,
        crashes_max: int = 5,
        seed: int | None = None,
        allow_public: bool = False,
        bytes_max: int = _wire.BYTES_MAX,
        metrics: Metrics | None = None,
        backup: Controller | None = None,
        retry_crashes: bool = False,
    ) -> None:
        if name is None:
            name = secrets.token_hex(4)
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ArgumentError(f"name must be a non-empty string without spaces, got {name!r}")
        self.workers = check_int("workers", workers, 1)
        if not isinstance(host, str) or not host:
            raise ArgumentError("host must be a non-empty string, such as '127.0.0.1'")
        self.port = check_port(port)
        self.tls = resolve_tls(tls)
        check_host(host, self.tls, allow_public)
        self.seconds_interval = check_seconds("seconds_interval", seconds_interval, False)
        if self.seconds_interval <= 0:
            raise ArgumentError("seconds_interval must be > 0")
        self.seconds_timeout = check_seconds("seconds_timeout", seconds_timeout)
        if self.seconds_timeout < self.seconds_interval:
            raise ArgumentError("seconds_timeout must be >= seconds_interval")
        self.seconds_launch = check_seconds("seconds_launch", seconds_launch)
        self.seconds_idle = check_seconds("seconds_idle", seconds_idle)
        self.seconds_wall = check_seconds("seconds_wall", seconds_wall)
        self.tasks_max = check_count("tasks_max", tasks_max, 1)
        self.tasks_timers = int(check_count("tasks_timers", tasks_timers, 0))
        self.reset_globals = check_flag("reset_globals", reset_globals)
        self.reset_modules = check_flag("reset_modules", reset_modules)
        self.garbage_collection = check_flag("garbage_collection", garbage_collection)
        self.crashes_max = int(check_count("crashes_max", crashes_max, 0))
        if math.isinf(crashes_max):
            raise ArgumentError("crashes_max must be finite")
        self.seed = check_seed(seed)
        self.bytes_max = check_bytes_max(bytes_max)
        if metrics is not None and not isinstance(metrics, Metrics):
            raise ArgumentTypeError(f"metrics must be a pycrew.Metrics or None, got {metrics!r}")
        if backup is not None:
            if not isinstance(backup, Controller):
                raise ArgumentTypeError(
                    f"backup must be a pycrew.Controller or None, got {backup!r}"
                )
            if not backup._adopts:
                raise ArgumentError(
                    f"controller {backup.name!r} cannot be a backup: it runs tasks only "
                    "inside push(), in the calling thread"
                )
            link: Controller | None = backup
            while link is not None:
                if link is self or link.name == name:
                    raise ArgumentError(
                        f"controller {name!r} cannot be its own backup, directly or down the chain"
                    )
                link = link.backup
        #: run a task that crashed its worker again: crashes_max attempts here,
        #: then down the backup chain; the record says how many attempts it took
        self.retry_crashes = check_flag("retry_crashes", retry_crashes)
        if not isinstance(launcher, Launcher):
            raise ArgumentTypeError("launcher must be a pycrew.launchers.Launcher")
        self.name = name
        self.host = host
        self.metrics = metrics
        #: where a task name goes once it has crashed crashes_max times in a row here
        self.backup = backup
        self.launcher = launcher
        # tasks handed to the backup, whose names are to leave the table here
        self._forwarded: collections.deque[Task] = collections.deque()
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
        self._ids = itertools.count(1)
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
            secret = secrets.token_bytes(32)
            self.session = secrets.token_hex(6)
            session = self.tls.session(self.host)
            settings = {
                "seconds_idle": None if math.isinf(self.seconds_idle) else self.seconds_idle,
                "seconds_wall": None if math.isinf(self.seconds_wall) else self.seconds_wall,
                "tasks_max": None if math.isinf(self.tasks_max) else int(self.tasks_max),
                "tasks_timers": self.tasks_timers,
                "reset_globals": self.reset_globals,
                "reset_modules": self.reset_modules,
                "garbage_collection": self.garbage_collection,
                "bytes_max": self.bytes_max,
                "metrics": self.metrics.settings() if self.metrics else None,
            }
            env = {_wire.SECRET_ENV: secret.hex(), _wire.CONTROLLER_ENV: self.name}
            if session is not None:
                env[_wire.TRUST_ENV] = session.trust_pem
                if session.server_name is not None:
                    env[_wire.TLS_NAME_ENV] = session.server_name
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
                    on_crash=self._on_crash if self.retry_crashes else None,
                    # a worker that may leave after a task must not hold another
                    prefetch=math.isinf(self.tasks_max) and math.isinf(self.seconds_wall),
                )
            except OSError as exc:
                raise CrewError(
                    f"controller {self.name!r} cannot listen on {self.host}:{self.port}: "
                    f"{exc.strerror or exc}"
                    + (" (another program holds the port; pass port=0)" if self.port else "")
                ) from exc
            self._records.reset()
            self._env = env
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
                lambda: len(dispatcher.live),
                # crew's launcher throttle: a fixed period, or a fast start when
                # workers are transient and must be replaced quickly
                Throttle(
                    seconds_max=self.seconds_interval, seconds_min=fastest, seconds_start=fastest
                ),
                on_launched=self._on_launched,
            )

    def terminate(self) -> None:
        """Stop every worker and free the port; unfinished tasks end as ``cancel``.

        Their futures are resolved (as cancelled), so nothing waits forever.
        Records not yet handed over stay readable through their futures; the
        summary stays readable until the next ``start()``. Safe to repeat.
        """
        with self._lock:
            dispatcher, scaler = self._dispatcher, self._scaler
            if dispatcher is None or scaler is None:
                return
            self._dispatcher = None
            self._scaler = None
            _LIVE.discard(self)
            dispatcher.close()
            scaler.stop(seconds=5.0)
            _ledger.end_session(self.session, self.name)
            self._records.tasks = {}
            self._env = {}

    def _on_launched(self, specs: list[WorkerSpec], handles: list[Any]) -> None:
        """Record launched workers where monitors look for leftovers (scaler thread)."""
        _ledger.record_launches(
            self.name,
            self.session,
            [
                {"worker": spec.worker_id, **self.launcher.describe_worker(handle)}
                for spec, handle in zip(specs, handles, strict=True)
            ],
        )

    def _on_crash(self, task: Task, detail: str) -> bool:
        """A task's worker died: try it again here, or hand it down the chain.

        Runs on the dispatcher thread with its lock held. It may take the
        backup's locks (the chain has no cycle, so always in the same order)
        but never this controller's own table lock.
        """
        dispatcher = self._dispatcher
        if dispatcher is None:
            return False
        task.crashes += 1
        log.info("task %s crashed its worker (attempt %d): %s", task.name, task.attempts, detail)
        if task.crashes < max(self.crashes_max, 1):
            task.attempts += 1
            dispatcher.retry(task)
            return True
        backup = self.backup
        if backup is None or task.name in backup._records.tasks:
            return False  # the chain ends here, or the name is in use there: a crash
        dispatcher.retire(task)
        backup._adopt(task)
        self._forwarded.append(task)
        return True

    def _adopt(self, task: Task) -> None:
        """Take over a task that crashed its workers in the controller before us."""
        self.start()
        taken = Task(next(self._ids), task.name, task.command, [], task.seed, task.deadline)
        taken.frame = _wire.retag(task.frame, taken.id)
        task.frame = []
        taken.small = task.small
        taken.owned = task.owned
        taken.attempts = task.attempts + 1
        if task.future is not None:
            task.future._follow(self, taken)
        self._submit([taken])

    def _prune(self) -> None:
        """Forget names whose tasks went down the backup chain (never under the dispatcher lock)."""
        while self._forwarded:
            task = self._forwarded.popleft()
            with self._lock:
                if self._records.tasks.get(task.name) is task:
                    del self._records.tasks[task.name]

    def _on_worker(self, kind: str, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.worker_event(kind, worker_id)

    def _on_kill(self, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.kill(worker_id)

    def _worker_spec(self, address: str, env: dict[str, str]) -> WorkerSpec:
        worker_id = f"{self.name}-{next(self._worker_numbers)}"
        command = [sys.executable, "-m", "pycrew", "worker", "--address", address]
        command += ["--id", worker_id]
        if self.tls.enabled:
            command.append("--tls")
        hidden = frozenset([self.tls.password_env] if self.tls.password_env else [])
        return WorkerSpec(
            command=command,
            env={**env, _wire.WORKER_ENV: worker_id},
            worker_id=worker_id,
            controller=self.name,
            env_remove=hidden,
        )

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
                _warn(f"a worker of controller {self.name!r} was refused: {why}")
        dispatcher, scaler = self._dispatcher, self._scaler
        if dispatcher is not None and dispatcher.failure is not None:
            raise CrewError("the dispatcher thread failed") from dispatcher.failure
        if scaler is not None and scaler.failure is not None:
            failure, scaler.failure = scaler.failure, None
            raise failure

    def _check_waitable(self) -> None:
        """Before a wait for a task: surface failures, and refuse a wait that could never end."""
        self._raise_failure()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.thread is threading.current_thread():
            raise CrewError(
                "a done callback waited for an unfinished task: callbacks run on pycrew's "
                "dispatcher thread, which that task needs; hand the wait to another thread"
            )

    # ------------------------------------------------------------- pushing
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
                **kwargs,
            )
        return self._push(fn, args, kwargs, name, data, globals, seed, seconds_timeout)

    def _push(
        self,
        fn: Callable[..., T] | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        name: str | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        owned: bool = False,
    ) -> TaskFuture[T]:
        self.start()
        self._raise_failure()
        self._prune()
        with self._lock:  # the name check and the insertion, as one step
            task = self._make_task(fn, args, kwargs, name, data, globals, seed, seconds_timeout)
            task.owned = owned
            future: TaskFuture[T] = TaskFuture(self, task)
            self._submit([task])
        return future

    def _make_task(
        self,
        fn: Callable[..., Any] | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        name: str | None,
        data: Mapping[str, Any] | None,
        task_globals: Mapping[str, Any] | None,
        seed: int | None,
        seconds_timeout: float | None,
    ) -> Task:
        if name is None:
            # a random prefix per controller plus a counter: unique, and it
            # spares a slow os.urandom() call on every push
            name = f"unnamed_task_{self._name_prefix}_{next(self._ids)}"
        elif not isinstance(name, str) or not name:
            raise ArgumentError(f"task name must be a non-empty string, got {name!r}")
        if name in self._records.tasks:
            raise ArgumentError(
                f"task name {name!r} is in use: collect it (or read its future) first, "
                "or choose another name"
            )
        data = check_mapping("data", data)
        task_globals = check_mapping("globals", task_globals)
        check_seed(seed)
        if seconds_timeout is not None:
            check_seconds("seconds_timeout", seconds_timeout)
        if seed is None and self.seed is not None:
            seed = derived_seed(self.seed, name)
        payload: tuple[Any, ...]
        if isinstance(fn, str):
            if args or kwargs:
                raise ArgumentError(
                    "a code string takes its inputs through data=, "
                    "not positional or keyword arguments"
                )
            try:
                compile(fn, "<pycrew task>", "exec")
            except SyntaxError as exc:
                raise ArgumentError(f"task {name!r} is not valid Python: {exc}") from exc
            payload = (CODE, fn, (), {}, data, task_globals, seed, name)
            command = fn
        elif callable(fn):
            clash = set(data) & set(kwargs)
            if clash:
                raise ArgumentError(
                    f"{sorted(clash)} given both in data= and as keyword arguments"
                )
            payload = (CALLABLE, fn, tuple(args), {**data, **kwargs}, {}, task_globals, seed, name)
            command = command_text(fn)
        else:
            raise ArgumentTypeError(
                f"a task is a callable or a string of code, not {type(fn).__name__}"
            )
        task_id = next(self._ids)
        try:
            body, buffers = _wire.dumps(payload)
        except Exception as exc:
            raise ArgumentTypeError(
                f"task {name!r} cannot be pickled: {blame(payload, exc)}"
            ) from exc
        problem = _wire.too_large(_wire.TASK_ID.size + len(body), buffers, self.bytes_max)
        if problem is not None:
            raise ArgumentError(
                f"task {name!r} is {problem}: pass large data through files, or raise bytes_max"
            )
        frame = _wire.encode(Kind.TASK, _wire.TASK_ID.pack(task_id) + body, buffers)
        return Task(task_id, name, command, frame, seed, timeout_deadline(seconds_timeout))

    def _submit(self, tasks: list[Task]) -> None:
        dispatcher = self._running()
        for task in tasks:
            self._records.tasks[task.name] = task
            dispatcher.submit(task)
        scaler = self._scaler
        if scaler is not None and scaler.short:
            scaler.poke()

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
        progress: bool = False,
    ) -> list[TaskFuture[T]]:
        """Push one task per input without waiting; futures come back in input order.

        Give inputs either as ``iterable`` (each item is the one positional
        argument of ``fn``) or as ``iterate``, a dict of equal-length
        sequences whose i-th values are keyword arguments of task i (for
        code strings: its variables). ``names`` is a key of ``iterate`` whose
        values name the tasks, or a sequence of names. With ``seed``, task i
        gets a seed derived from ``(seed, i)``. ``progress=True`` shows a bar
        that advances as these tasks end.
        """
        futures = self._walk(
            fn, iterable, iterate, data, globals, names, seed, seconds_timeout, owned=False
        )
        if check_flag("progress", progress):
            _follow_progress(futures)
        return futures

    def _walk(
        self,
        fn: Callable[..., T] | str,
        iterable: Iterable[Any] | None,
        iterate: Mapping[str, Sequence[Any]] | None,
        data: Mapping[str, Any] | None,
        globals: Mapping[str, Any] | None,
        names: str | Sequence[str] | None,
        seed: int | None,
        seconds_timeout: float | None,
        owned: bool,
    ) -> list[TaskFuture[T]]:
        inputs = task_inputs(iterable, iterate)
        count = len(inputs)
        names_list = task_names(names, iterate, count)
        if len(set(names_list)) != count:
            raise ArgumentError("task names must be unique")
        self.start()
        self._raise_failure()
        self._prune()
        with self._lock:
            clash = [n for n in names_list if n in self._records.tasks]
            if clash:
                raise ArgumentError(f"task name {clash[0]!r} is in use: collect it first")
            tasks = []
            for i, item in enumerate(inputs):
                task_seed = None if seed is None else derived_seed(seed, str(i))
                if isinstance(item, dict):
                    merged = {**(data or {}), **item} if isinstance(fn, str) else data
                    args: tuple[Any, ...] = ()
                    kwargs: dict[str, Any] = {} if isinstance(fn, str) else item
                elif isinstance(fn, str):
                    raise ArgumentError(
                        "a code string takes its inputs through iterate=, a dict of sequences"
                    )
                else:
                    merged, args, kwargs = data, (item[0],), {}
                task = self._make_task(
                    fn, args, kwargs, names_list[i], merged, globals, task_seed, seconds_timeout
                )
                task.owned = owned
                tasks.append(task)
            futures: list[TaskFuture[T]] = [TaskFuture(self, task) for task in tasks]
            self._submit(tasks)
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
        error: MapErrorMode = "stop",
        warnings: bool = True,
        progress: bool = False,
    ) -> list[TaskResult]:
        """Run one task per input, wait for all, and return the records in input order.

        Inputs are as in :meth:`walk`. The tasks are this call's own: other
        pending tasks do not matter, and ``pop()``/``collect()`` never see
        these. ``error``: ``"stop"`` raises :class:`TaskError` after all
        tasks ended if any did not succeed (all records are kept on
        ``controller.error``); ``"fast"`` raises at the first failure and
        cancels the rest; ``"warn"`` warns with :class:`CrewWarning`;
        ``"silent"`` says nothing. A raised ``TaskError`` has the first failed
        task's own exception as its cause. With ``warnings=True`` a
        :class:`CrewWarning` reports tasks that warned. ``progress=True``
        shows a progress bar.

        Raises:
            TaskError: with ``error="stop"`` or ``"fast"``, when a task did not succeed.
            CrashLimitError: a task name crashed more than ``crashes_max`` times.
        """
        if error not in MAP_ERROR_MODES:
            raise ArgumentError(f"error must be one of {MAP_ERROR_MODES}, got {error!r}")
        check_flag("progress", progress)
        futures = self._walk(
            fn, iterable, iterate, data, globals, names, seed, seconds_timeout, owned=True
        )
        try:
            self._wait_for(futures, progress, error == "fast")
        except BaseException:
            self._abandon(futures)
            raise
        return self._finish_map(futures, error, warnings)

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
        error: MapErrorMode = "stop",
        warnings: bool = True,
    ) -> list[TaskResult]:
        """:meth:`map` for asyncio: ``records = await ctl.map_async(fn, items)``.

        The event loop is never blocked while tasks run; cancelling the
        awaiting coroutine cancels this call's tasks.
        """
        from ._asyncio import wait_futures

        if error not in MAP_ERROR_MODES:
            raise ArgumentError(f"error must be one of {MAP_ERROR_MODES}, got {error!r}")
        futures = self._walk(
            fn, iterable, iterate, data, globals, names, seed, seconds_timeout, owned=True
        )
        try:
            await wait_futures(self, futures, error == "fast")
        except BaseException:
            self._abandon(futures)
            raise
        return self._finish_map(futures, error, warnings)

    def _abandon(self, futures: list[TaskFuture[Any]]) -> None:
        """A map() that was interrupted: stop its tasks, and leave their records to collect()."""
        for controller, task in [f._where for f in futures]:
            controller._cancel_tasks([task])
            dispatcher = controller._dispatcher
            if dispatcher is not None:
                dispatcher.disown([task])

    def _wait_for(self, futures: list[TaskFuture[Any]], progress: bool, fast: bool) -> None:
        """Wait until every future is done, or (``fast``) one of them failed."""
        dispatcher = self._running()
        bar = None
        if progress:
            from ._progress import progress_bar

            bar = progress_bar(len(futures))
        try:
            pending = futures
            with dispatcher.cv:
                while True:
                    pending = [f for f in pending if not f.done()]
                    if bar is not None:
                        bar(len(futures) - len(pending))
                    if not pending or (fast and any(_failed(f) for f in futures)):
                        return
                    self._raise_failure()
                    # tasks that went down a backup chain end in another dispatcher,
                    # whose resolutions do not wake this one: the interval bounds that
                    dispatcher.cv.wait(self.seconds_interval)
        finally:
            if bar is not None:
                bar(None)

    def _finish_map(
        self, futures: list[TaskFuture[Any]], error: str, warnings: bool
    ) -> list[TaskResult]:
        failed_first = next((f for f in futures if _failed(f)), None)
        if error == "fast" and failed_first is not None:
            self._cancel_tasks([f._where[1] for f in futures])
        records = self._hand_over(futures)
        failed = [r for r in records if r.status is not Status.SUCCESS]
        warned = [r for r in records if r.warnings is not None]
        if warnings and warned:
            _warn(f"{len(warned)} task(s) raised warnings. First: {warned[0].warnings}")
        if failed and error != "silent":
            first = failed_first.record() if failed_first is not None else failed[0]
            message = (
                f"{len(failed)} of {len(records)} task(s) did not succeed. "
                f"First ({first.name}, {first.status}): {first.error}"
            )
            if error in ("stop", "fast"):
                self.error = records
                cause = failed_first._failure(first) if failed_first is not None else None
                raise TaskError(message, records) from cause
            _warn(message)
        return records

    def _hand_over(self, futures: list[TaskFuture[Any]]) -> list[TaskResult]:
        """Records of done futures, wherever their tasks ended, handed over at once."""
        by_controller: dict[Controller, list[tuple[Task, TaskResult]]] = {}
        records = []
        for future in futures:
            controller, task = future._where
            if task.state != DONE:
                continue
            record = controller._records.build(task, controller._crash_detail)
            records.append(record)
            by_controller.setdefault(controller, []).append((task, record))
        limit: CrashLimitError | None = None
        for controller, pairs in by_controller.items():
            controller._forget_resolved([t for t, _ in pairs])
            try:
                controller._records.commit([t for t, _ in pairs], [r for _, r in pairs], True)
            except CrashLimitError as exc:
                limit = limit or exc
        if limit is not None:
            limit.results = records
            raise limit
        return records

    # ------------------------------------------------------------ waiting
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
        with dispatcher.cv:
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
                raises :class:`TaskError` if it did not succeed; ``"warn"`` warns.
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
        """Take resolved tasks off the queue, build their records, hand them over."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return []
        self._raise_failure()
        self._prune()
        with dispatcher.lock:
            queue = dispatcher.resolved
            if count is None:
                claimed = list(queue.values())
                queue.clear()
            else:
                claimed = [queue.popitem(last=False)[1] for _ in range(min(count, len(queue)))]
        try:
            records = [self._records.build(task, self._crash_detail) for task in claimed]
        except BaseException:
            # nothing was handed over: the claimed tasks go back, first in line
            with dispatcher.lock:
                for task in reversed(claimed):
                    if not task.taken:
                        queue[task.id] = task
                        queue.move_to_end(task.id, last=False)
            raise
        self._records.commit(claimed, records, True)
        return records

    def _take_one(self, task: Task) -> TaskResult:
        """Hand one task over through its future (no crash limit: the future says what happened)."""
        record = self._records.build(task, self._crash_detail)
        if not task.taken:
            self._forget_resolved([task])
            self._records.commit([task], [record], False)
        return record

    def _forget_resolved(self, tasks: list[Task]) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            with dispatcher.lock:
                for task in tasks:
                    dispatcher.resolved.pop(task.id, None)

    def _crash_detail(self, task: Task) -> str:
        detail = task.detail or "the worker was lost during the task"
        worker = task.worker
        scaler = self._scaler
        if worker is None or scaler is None:
            return detail
        # The scaler thread, the only one that talks to the launcher, learns the
        # exit code soon after the connection drops; wait a moment for it.
        code = scaler.exit_codes.get(worker.id)
        deadline = time.monotonic() + 1.0
        while code is None and worker.id in scaler.handles and time.monotonic() < deadline:
            time.sleep(0.01)
            code = scaler.exit_codes.get(worker.id)
        if code is None:
            return detail
        how = f"killed by {_signal_name(code)}" if code < 0 else f"exit code {code}"
        return f"{detail} ({how})"

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

    def executor(self, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()) -> Executor:
        """A :class:`pycrew.Executor` that submits to this controller.

        Its ``shutdown()`` leaves the controller running: it is yours to terminate.
        """
        from ._executor import Executor

        return Executor(controller=self, initializer=initializer, initargs=initargs)

    # --------------------------------------------------------- observation
    def pids(self) -> list[int]:
        """Process ids of the connected workers."""
        dispatcher = self._dispatcher
        return dispatcher.worker_pids() if dispatcher is not None else []

    def size(self) -> int:
        """Tasks not yet handed over (popped, collected, read through a future), resolved or not."""
        self._prune()
        return len(self._records.tasks)

    def empty(self) -> bool:
        return self.size() == 0

    def nonempty(self) -> bool:
        return self.size() > 0

    def resolved(self) -> int:
        """Tasks resolved since start (cumulative, cancelled ones included)."""
        dispatcher = self._dispatcher
        return dispatcher.completed if dispatcher is not None else 0

    def unresolved(self) -> int:
        """Tasks queued or running now."""
        dispatcher = self._dispatcher
        return len(dispatcher.live) if dispatcher is not None else 0

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

        Args:
            by: ``"controller"``: one :class:`Summary` (``None`` if never
                started); ``"worker"``: one :class:`WorkerSummary` per worker
                that ran a task handed over (tasks, seconds, peak memory, CPU).

        ``pycrew.to_pandas(ctl.summary())`` makes a data frame of either.
        """
        if by == "worker":
            return self._records.worker_rows()
        if by != "controller":
            raise ArgumentError(f"by must be 'controller' or 'worker', got {by!r}")
        return self._records.summary_row()

    def workers_status(self) -> dict[str, int]:
        """Workers connected now, ever connected, launching, and failed launches."""
        dispatcher, auto = self._dispatcher, self._autoscaler
        if dispatcher is None or auto is None:
            return {"connected": 0, "cumulative": 0, "launching": 0, "failed": 0}
        connections, cumulative, *_ = dispatcher.counts()
        return {
            "connected": connections,
            "cumulative": cumulative,
            "launching": len(auto.launching),
            "failed": auto.failed,
        }


#: started controllers, terminated at interpreter exit if the user did not
_LIVE: weakref.WeakSet[Controller] = weakref.WeakSet()


def _failed(future: TaskFuture[Any]) -> bool:
    """Whether a future's task ended in anything but success (without building its record)."""
    task = future._where[1]
    return task.state == DONE and (task.outcome is not None or task.failed)


def _follow_progress(futures: list[TaskFuture[Any]]) -> None:
    """A bar that advances as these futures end, and closes itself after the last."""
    from ._progress import progress_bar

    bar = progress_bar(len(futures))
    counter = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def ended(_: object) -> None:
        done = next(counter)
        bar(done)
        if done == len(futures):
            bar(None)

    for future in futures:
        future.add_done_callback(ended)


@atexit.register
def _terminate_all() -> None:
    for controller in list(_LIVE):
        with contextlib.suppress(Exception):
            controller.terminate()


def _react(records: list[TaskResult], error: str | None) -> None:
    failed = [r for r in records if r.status is not Status.SUCCESS]
    if not failed or error in (None, "silent"):
        return
    message = f"task {failed[0].name!r} ended with status {failed[0].status}: {failed[0].error}"
    if error == "stop":
        raise TaskError(message, records)
    _warn(message)


def _warn(message: str) -> None:
    warnings.warn(message, CrewWarning, stacklevel=3)

