"""The controller: the one object a user talks to.

```
 user thread                      scaler thread               dispatcher thread
 push(fn, *args) ─ pickle ─► Task ─► Dispatcher.submit ──────────► worker (TASK)
      └─ poke ──────────────────► Autoscaler → launcher
 wait()/pop()/collect()/map() ◄── resolved tasks ◄─────────────── worker (RESULT)
      └─ unpickle, crash log, summary
```

The controller owns the task table (name → task), the crash log and the
summary; the dispatcher owns the queue and the sockets; the scaler owns the
launcher. Results stay raw bytes until the user collects them, so a result
that cannot be unpickled here becomes that task's error, not the
dispatcher's.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
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
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from . import _ledger, _wire
from ._autoscale import Autoscaler
from ._checks import (
    ERROR_MODES,
    blame,
    check_count,
    check_error,
    check_host,
    check_mapping,
    check_seconds,
    command_text,
    derived_seed,
    task_inputs,
    task_names,
)
from ._dispatcher import DONE, Dispatcher, Task, timeout_deadline
from ._errors import (
    ClosedError,
    CrashLimitError,
    CrewError,
    CrewTimeoutError,
    CrewWarning,
    TaskError,
)
from ._evaluate import CALLABLE, CODE, describe
from ._metrics import Metrics
from ._scaler import Scaler
from ._task import CODES, Status, Summary, TaskResult, WorkerSummary
from ._throttle import Throttle
from ._tls import TLS, resolve_tls
from ._wire import Kind
from .launchers import Launcher, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType

log = logging.getLogger("pycrew")
ErrorMode = Literal["stop", "warn", "silent"]
_STATUSES = {status.value: status for status in Status}
_HOST_ERRORS = {
    Status.CANCEL: "the task was cancelled",
    Status.TIMEOUT: "the task ran past its seconds_timeout",
}


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class TaskFuture:
    """A handle on one pushed task. ``result()`` waits for its record.

    The record stays in the controller until it is popped or collected.
    """

    __slots__ = ("_controller", "_task")

    def __init__(self, controller: Controller, task: Task) -> None:
        self._controller = controller
        self._task = task

    @property
    def name(self) -> str:
        return self._task.name

    def done(self) -> bool:
        task = self._task
        while task.state == DONE and task.forward is not None:
            task = task.forward[1]
        return task.state == DONE

    def result(self, timeout: float | None = None) -> TaskResult:
        """Wait for the task and return its record.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            CrewTimeoutError: the task did not finish within ``timeout``.
        """
        ctl = self._controller
        task = self._task
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if task.state != DONE:
                disp = ctl._running()
                with disp.cv:
                    while task.state != DONE:
                        ctl._raise_failure()
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise CrewTimeoutError(
                                f"task {task.name!r} is not done after {timeout} s"
                            )
                        disp.cv.wait(ctl.seconds_interval if left is None else min(left, 1.0))
            if task.forward is None:
                return ctl._record(task)
            # it crashed here and went down the backup chain: follow it
            ctl, task = task.forward

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<TaskFuture {self._task.name!r} {state}>"


class Controller:
    """Accepts tasks, returns results, and launches, scales and retires workers.

    Build one with :func:`pycrew.local_controller`; see its docstring for
    every argument. Use it as a context manager, or call ``start()`` (or just
    ``push()``) and finally ``terminate()``.
    """

    name: str
    backup: Controller | None

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
            raise ValueError(f"name must be a non-empty string without spaces, got {name!r}")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an int, got {workers!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not isinstance(host, str) or not host:
            raise ValueError("host must be a non-empty string, such as '127.0.0.1'")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"port must be an int from 0 to 65535 (0: any free port), got {port!r}"
            )
        self.tls = resolve_tls(tls)
        check_host(host, self.tls, allow_public)
        self.seconds_interval = check_seconds("seconds_interval", seconds_interval, False)
        if self.seconds_interval <= 0:
            raise ValueError("seconds_interval must be > 0")
        self.seconds_timeout = check_seconds("seconds_timeout", seconds_timeout)
        if self.seconds_timeout < self.seconds_interval:
            raise ValueError("seconds_timeout must be >= seconds_interval")
        self.seconds_launch = check_seconds("seconds_launch", seconds_launch)
        self.seconds_idle = check_seconds("seconds_idle", seconds_idle)
        self.seconds_wall = check_seconds("seconds_wall", seconds_wall)
        self.tasks_max = check_count("tasks_max", tasks_max, 1)
        self.tasks_timers = int(check_count("tasks_timers", tasks_timers, 0))
        for label, flag in (
            ("reset_globals", reset_globals),
            ("reset_modules", reset_modules),
            ("garbage_collection", garbage_collection),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{label} must be True or False, got {flag!r}")
        self.crashes_max = int(check_count("crashes_max", crashes_max, 0))
        if math.isinf(crashes_max):
            raise ValueError("crashes_max must be finite")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be None or an int, got {seed!r}")
        if isinstance(bytes_max, bool) or not isinstance(bytes_max, int):
            raise TypeError(f"bytes_max must be an int, got {bytes_max!r}")
        if not 1024 <= bytes_max <= _wire.BYTES_LIMIT:
            raise ValueError(
                f"bytes_max must be from 1024 to {_wire.BYTES_LIMIT} bytes, got {bytes_max}"
            )
        if metrics is not None and not isinstance(metrics, Metrics):
            raise TypeError(f"metrics must be a pycrew.Metrics or None, got {metrics!r}")
        if backup is not None:
            if not isinstance(backup, Controller):
                raise TypeError(f"backup must be a pycrew.Controller or None, got {backup!r}")
            link: Controller | None = backup
            while link is not None:
                if link is self or link.name == name:
                    raise ValueError(
                        f"controller {name!r} cannot be its own backup, directly or down the chain"
                    )
                link = link.backup
        if not isinstance(retry_crashes, bool):
            raise TypeError(f"retry_crashes must be True or False, got {retry_crashes!r}")
        if not isinstance(launcher, Launcher):
            raise TypeError("launcher must be a pycrew.launchers.Launcher")
        self.name = name
        self.workers = workers
        self.host = host
        self.port = port
        self.reset_globals = reset_globals
        self.reset_modules = reset_modules
        self.garbage_collection = garbage_collection
        self.seed = seed
        self.bytes_max = bytes_max
        self.metrics = metrics
        #: where a task name goes once it has crashed crashes_max times in a row here
        self.backup = backup
        #: run a task that crashed its worker again: crashes_max attempts here,
        #: then down the backup chain; the record says how many attempts it took
        self.retry_crashes = retry_crashes
        self.launcher = launcher
        # tasks handed to the backup, whose names are to leave the table here
        self._forwarded: collections.deque[Task] = collections.deque()
        # called at every resolution, under the dispatcher's lock (groups wake this way)
        self._listeners: list[Callable[[], None]] = []
        # per worker id: [controller tasks, seconds, peak memory, cpu seconds]
        self._by_worker: dict[str, list[float]] = {}
        #: a fresh random id per start, recorded with every launched worker
        self.session = ""
        #: results of the last ``map(error="stop")`` that raised; you may clear it
        self.error: list[TaskResult] | None = None
        self._dispatcher: Dispatcher | None = None
        self._scaler: Scaler | None = None
        self._autoscaler: Autoscaler | None = None
        self._tasks: dict[str, Task] = {}
        self._crashes: dict[str, int] = {}
        self._summary: dict[str, float] | None = None
        self._ids = itertools.count(1)
        self._name_prefix = secrets.token_hex(6)
        self._worker_numbers = itertools.count(1)
        self._env: dict[str, str] = {}
        self._url = ""
        self._lock = threading.RLock()
        # why workers holding the secret were refused; told to the user once each
        self._refusals: collections.deque[str] = collections.deque(maxlen=100)
        self._refusals_told: set[str] = set()

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
        return self._url

    def started(self) -> bool:
        return self._dispatcher is not None

    def start(self) -> None:
        """Open the port and get ready to launch workers. Does nothing if started."""
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
            autoscaler = Autoscaler(self.workers, self.seconds_launch)
            self._tasks = {}
            self._crashes = {}
            self._summary = dict.fromkeys(
                ("tasks", "seconds", "success", "error", "crash", "cancel", "timeout", "warning"), 0
            )
            self._env = {
                _wire.SECRET_ENV: secret.hex(),
                _wire.CONTROLLER_ENV: self.name,
            }
            if session is not None:
                self._env[_wire.TRUST_ENV] = session.trust_pem
                if session.server_name is not None:
                    self._env[_wire.TLS_NAME_ENV] = session.server_name
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
            scheme = "tls+tcp" if session is not None else "tcp"
            host = f"[{self.host}]" if ":" in self.host else self.host
            self._url = f"{scheme}://{host}:{dispatcher.port}"
            self._autoscaler = autoscaler
            self._dispatcher = dispatcher
            _LIVE.add(self)
            fastest = 1e-6 if math.isfinite(self.tasks_max) else self.seconds_interval
            self._scaler = Scaler(
                self.launcher,
                autoscaler,
                self._worker_spec,
                lambda: len(dispatcher.live),
                # crew's launcher throttle: a fixed period, or a fast start when
                # workers are transient and must be replaced quickly
                Throttle(
                    seconds_max=self.seconds_interval, seconds_min=fastest, seconds_start=fastest
                ),
                on_launched=self._on_launched,
            )
            self._by_worker = {}

    def terminate(self) -> None:
        """Stop every worker, free the port, and drop unfinished tasks. Safe to repeat.

        The summary stays readable until the next ``start()``.
        """
        with self._lock:
            dispatcher, scaler = self._dispatcher, self._scaler
            if dispatcher is None or scaler is None:
                return
            self._dispatcher = None
            self._scaler = None
            self._url = ""
            _LIVE.discard(self)
            dispatcher.close()
            scaler.stop(seconds=5.0)
            _ledger.end_session(self.session, self.name)
            self._tasks = {}
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
        if backup is None:
            return False  # the chain is exhausted: the crash is the record
        taken = backup._adopt(task)
        if taken is None:
            return False
        task.forward = (backup, taken)
        dispatcher.retire(task)
        self._forwarded.append(task)
        return True

    def _adopt(self, task: Task) -> Task | None:
        """Take over a task that crashed its workers in the controller before us."""
        self.start()
        with self._lock:
            if task.name in self._tasks:
                return None  # the name is in use here: the crash stays where it was
            taken = Task(
                next(self._ids),
                task.name,
                task.command,
                [],
                task.seed,
                task.deadline,
            )
            taken.frame = _wire.retag(task.frame, taken.id)
            taken.small = task.small
            taken.attempts = task.attempts + 1
            self._submit([taken])
        return taken

    def _prune(self) -> None:
        """Forget names whose tasks went down the backup chain (never under the dispatcher lock)."""
        while self._forwarded:
            task = self._forwarded.popleft()
            with self._lock:
                if self._tasks.get(task.name) is task:
                    del self._tasks[task.name]

    def _on_worker(self, kind: str, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.worker_event(kind, worker_id)

    def _on_kill(self, worker_id: str) -> None:
        scaler = self._scaler
        if scaler is not None:
            scaler.kill(worker_id)

    def _worker_spec(self) -> WorkerSpec:
        worker_id = f"{self.name}-{next(self._worker_numbers)}"
        command = [
            sys.executable,
            "-m",
            "pycrew",
            "worker",
            "--address",
            self._url.split("://", 1)[1],
            "--id",
            worker_id,
        ]
        if self.tls.enabled:
            command.append("--tls")
        env = dict(self._env)
        env[_wire.WORKER_ENV] = worker_id
        hidden = frozenset([self.tls.password_env] if self.tls.password_env else [])
        return WorkerSpec(
            command=command,
            env=env,
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

    # ------------------------------------------------------------- pushing
    def push(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        name: str | None = None,
        data: Mapping[str, Any] | None = None,
        globals: Mapping[str, Any] | None = None,
        seed: int | None = None,
        seconds_timeout: float | None = None,
        **kwargs: Any,
    ) -> TaskFuture:
        """Submit one task and return its future at once.

        Args:
            fn: a callable, or a string of Python code whose last expression
                is the result (``"x + y"``).
            *args: positional arguments for ``fn``.
            name: a name unique among tasks not yet popped (default: random).
            data: for code strings, variables the code sees; for callables,
                extra keyword arguments.
            globals: variables set in the worker's global namespace for the task
                (and removed afterwards when ``reset_globals``).
            seed: seeds ``random`` (and numpy's global generator) for this task.
            seconds_timeout: the task ends as ``"timeout"`` this many seconds
                after the push, queued or running.
            **kwargs: keyword arguments for ``fn``.

        Raises:
            ValueError: the name is in use, or the arguments do not fit ``fn``.
            TypeError: something in the task cannot be pickled.
        """
        backup = self.backup
        if (
            backup is not None
            and name is not None
            and self.crashes_max > 0
            and self._crashes.get(name, 0) == self.crashes_max
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
        self.start()
        self._raise_failure()
        self._prune()
        with self._lock:  # the name check and the insertion, as one step
            task = self._make_task(fn, args, kwargs, name, data, globals, seed, seconds_timeout)
            self._submit([task])
        return TaskFuture(self, task)

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
            raise ValueError(f"task name must be a non-empty string, got {name!r}")
        if name in self._tasks:
            raise ValueError(
                f"task name {name!r} is in use: pop or collect it first, or choose another name"
            )
        data = check_mapping("data", data)
        task_globals = check_mapping("globals", task_globals)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be None or an int, got {seed!r}")
        if seconds_timeout is not None:
            check_seconds("seconds_timeout", seconds_timeout)
        if seed is None and self.seed is not None:
            seed = derived_seed(self.seed, name)
        payload: tuple[Any, ...]
        if isinstance(fn, str):
            if args or kwargs:
                raise ValueError(
                    "a code string takes its inputs through data=, "
                    "not positional or keyword arguments"
                )
            try:
                compile(fn, "<pycrew task>", "exec")
            except SyntaxError as exc:
                raise ValueError(f"task {name!r} is not valid Python: {exc}") from exc
            payload = (CODE, fn, (), {}, data, task_globals, seed, name)
            command = fn
        elif callable(fn):
            clash = set(data) & set(kwargs)
            if clash:
                raise ValueError(f"{sorted(clash)} given both in data= and as keyword arguments")
            payload = (CALLABLE, fn, tuple(args), {**data, **kwargs}, {}, task_globals, seed, name)
            command = command_text(fn)
        else:
            raise TypeError(f"a task is a callable or a string of code, not {type(fn).__name__}")
        task_id = next(self._ids)
        try:
            body, buffers = _wire.dumps(payload)
        except Exception as exc:
            raise TypeError(f"task {name!r} cannot be pickled: {blame(payload, exc)}") from exc
        problem = _wire.too_large(_wire.TASK_ID.size + len(body), buffers, self.bytes_max)
        if problem is not None:
            raise ValueError(
                f"task {name!r} is {problem}: pass large data through files, or raise bytes_max"
            )
        frame = _wire.encode(Kind.TASK, _wire.TASK_ID.pack(task_id) + body, buffers)
        return Task(task_id, name, command, frame, seed, timeout_deadline(seconds_timeout))

    def _submit(self, tasks: list[Task]) -> None:
        dispatcher = self._running()
        for task in tasks:
            self._tasks[task.name] = task
            dispatcher.submit(task)
        scaler = self._scaler
        if scaler is not None and scaler.short:
            scaler.poke()

    def walk(
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
    ) -> list[TaskFuture]:
        """Push one task per input without waiting; futures come back in input order.

        Give inputs either as ``iterable`` (each item is the one positional
        argument of ``fn``) or as ``iterate``, a dict of equal-length
        sequences whose i-th values are keyword arguments of task i (for
        code strings: its variables). ``names`` is a key of ``iterate`` whose
        values name the tasks, or a sequence of names. With ``seed``, task i
        gets a seed derived from ``(seed, i)``.
        """
        inputs = task_inputs(iterable, iterate)
        count = len(inputs)
        names_list = task_names(names, iterate, count)
        self.start()
        self._raise_failure()
        if len(set(names_list)) != count:
            raise ValueError("task names must be unique")
        with self._lock:
            return self._walk(fn, inputs, names_list, data, globals, seed, seconds_timeout)

    def _walk(
        self,
        fn: Callable[..., Any] | str,
        inputs: list[Any],
        names: list[str],
        data: Mapping[str, Any] | None,
        globals: Mapping[str, Any] | None,
        seed: int | None,
        seconds_timeout: float | None,
    ) -> list[TaskFuture]:
        clash = [n for n in names if n in self._tasks]
        if clash:
            raise ValueError(f"task name {clash[0]!r} is in use: pop or collect it first")
        tasks = []
        for i, item in enumerate(inputs):
            task_seed = None if seed is None else derived_seed(seed, str(i))
            if isinstance(item, dict):
                merged = {**(data or {}), **item}
                if isinstance(fn, str):
                    tasks.append(
                        self._make_task(
                            fn, (), {}, names[i], merged, globals, task_seed, seconds_timeout
                        )
                    )
                else:
                    tasks.append(
                        self._make_task(
                            fn, (), item, names[i], data, globals, task_seed, seconds_timeout
                        )
                    )
            else:
                if isinstance(fn, str):
                    raise ValueError(
                        "a code string takes its inputs through iterate=, a dict of sequences"
                    )
                tasks.append(
                    self._make_task(
                        fn, (item[0],), {}, names[i], data, globals, task_seed, seconds_timeout
                    )
                )
        self._submit(tasks)
        return [TaskFuture(self, task) for task in tasks]

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
        error: ErrorMode = "stop",
        warnings: bool = True,
        progress: bool = False,
    ) -> list[TaskResult]:
        """Run one task per input, wait for all, and return the records in input order.

        Inputs are as in :meth:`walk`. The controller must hold no other
        tasks. ``error``: ``"stop"`` raises :class:`TaskError` if any task did
        not succeed (all records are kept on ``controller.error``), ``"warn"``
        warns with :class:`CrewWarning`, ``"silent"`` says nothing. With
        ``warnings=True`` a :class:`CrewWarning` reports tasks that warned.
        ``progress=True`` shows a progress bar.

        Raises:
            TaskError: with ``error="stop"``, when a task did not succeed.
            CrashLimitError: a task name crashed more than ``crashes_max`` times.
        """
        if error not in ERROR_MODES:
            raise ValueError(f"error must be one of {ERROR_MODES}, got {error!r}")
        self._prune()
        if self._tasks:
            raise CrewError(
                f"map() needs an empty controller, but {len(self._tasks)} "
                "tasks are not collected yet: collect() them first"
            )
        futures = self.walk(
            fn,
            iterable,
            iterate=iterate,
            data=data,
            globals=globals,
            names=names,
            seed=seed,
            seconds_timeout=seconds_timeout,
        )
        tasks = [f._task for f in futures]
        self._wait_for(tasks, progress)
        self._running().forget_resolved(tasks)
        own = iter(self._take([t for t in tasks if t.forward is None]))
        # tasks that crashed here and went down the backup chain are taken where they ended
        records = [next(own) if t.forward is None else _take_forwarded(t) for t in tasks]
        failed = [r for r in records if r.status is not Status.SUCCESS]
        warned = [r for r in records if r.warnings is not None]
        if warnings and warned:
            _warn(f"{len(warned)} task(s) raised warnings. First: {warned[0].warnings}")
        if failed and error != "silent":
            message = (
                f"{len(failed)} of {len(records)} task(s) did not succeed. "
                f"First ({failed[0].name}, {failed[0].status}): {failed[0].error}"
            )
            if error == "stop":
                self.error = records
                raise TaskError(message, records)
            _warn(message)
        return records

    def _wait_for(self, tasks: list[Task], progress: bool) -> None:
        dispatcher = self._running()
        bar = _progress(len(tasks)) if progress else None
        try:
            with dispatcher.cv:
                pending = [t for t in tasks if t.state != DONE]
                while pending:
                    self._raise_failure()
                    dispatcher.cv.wait(self.seconds_interval)
                    pending = [t for t in pending if t.state != DONE]
                    if bar is not None:
                        bar(len(tasks) - len(pending))
        finally:
            if bar is not None:
                bar(None)

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
            raise ValueError(f"mode must be 'all' or 'one', got {mode!r}")
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
        dispatcher = self._dispatcher
        if dispatcher is None:
            return None
        self._raise_failure()
        self._prune()
        with dispatcher.lock:
            task = dispatcher.resolved.popleft() if dispatcher.resolved else None
        if task is None:
            return None
        records = self._take([task])
        _react(records, error)
        return records[0]

    def collect(self, error: ErrorMode | None = None) -> list[TaskResult]:
        """Remove and return every resolved task's record (an empty list if none)."""
        check_error(error)
        dispatcher = self._dispatcher
        if dispatcher is None:
            return []
        self._raise_failure()
        self._prune()
        with dispatcher.lock:
            tasks = list(dispatcher.resolved)
            dispatcher.resolved.clear()
        records = self._take(tasks)
        _react(records, error)
        return records

    def _take(self, tasks: list[Task]) -> list[TaskResult]:
        """Remove tasks from the table, count them, then enforce the crash limit."""
        with self._lock:
            return self._take_locked(tasks)

    def _take_locked(self, tasks: list[Task]) -> list[TaskResult]:
        records = [self._record(task) for task in tasks]
        over: list[tuple[str, int]] = []
        summary = self._summary
        for task, record in zip(tasks, records, strict=False):
            if self._tasks.get(task.name) is task:
                del self._tasks[task.name]
            if summary is not None:
                summary["tasks"] += 1
                summary[record.status.value] += 1
                if record.seconds is not None:
                    summary["seconds"] += record.seconds
                if record.warnings is not None:
                    summary["warning"] += 1
            if record.worker is not None:
                row = self._by_worker.setdefault(record.worker, [0, 0.0, 0, 0.0])
                row[0] += 1
                row[1] += record.seconds or 0.0
                row[2] = max(row[2], record.memory_peak or 0)
                row[3] += record.cpu_seconds or 0.0
            if record.status is Status.CRASH:
                count = self._crashes.get(record.name, 0) + 1
                self._crashes[record.name] = count
                if count > self.crashes_max:
                    over.append((record.name, count))
            else:
                self._crashes.pop(record.name, None)
        if over:
            name, count = over[0]
            raise CrashLimitError(
                f"task {name!r} crashed its worker {count} consecutive time(s) in controller "
                f"{self.name!r} (crashes_max={self.crashes_max}); it may need more memory or "
                "a fix. The records are on this error's .results.",
                name,
                count,
                records,
            )
        return records

    def _record(self, task: Task) -> TaskResult:
        """Build a task's record once (unpickling its result here, in the caller's thread)."""
        if task.record is not None:
            return cast("TaskResult", task.record)
        worker = task.worker
        value = trace = warned = seconds = None
        memory: int | None = None
        cpu: float | None = None
        seed = task.seed
        if task.outcome is not None:
            status = task.outcome
            if status is Status.CRASH:
                error: str | None = self._crash_detail(task)
            else:
                error = _HOST_ERRORS.get(status)
        else:
            assert task.raw is not None
            meta, bufs = task.raw
            task.raw = None
            try:
                outcome = _wire.loads(memoryview(meta)[_wire.RESULT_HEAD.size :], bufs)
                status_text, value, error, trace, warned, seconds, seed, *usage = outcome
                status = _STATUSES[status_text]
                if len(usage) == 2:  # peak resident bytes and CPU seconds, where measured
                    memory, cpu = usage
            except Exception as exc:
                status, value, trace, warned, seconds, seed = (
                    Status.ERROR,
                    None,
                    None,
                    None,
                    None,
                    task.seed,
                )
                error = f"the result could not be unpickled here: {describe(exc)}"
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
            self.name,
            worker.id if worker else None,
            worker.pid if worker else None,
            worker.host if worker else None,
            memory,
            cpu,
            task.attempts,
        )
        task.record = record
        return record

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
        """Cancel queued or running tasks; they stay until popped, with status ``"cancel"``.

        A running task is interrupted; if it does not stop within a second,
        its worker is killed and replaced (not counted as a crash).
        """
        if not isinstance(all, bool):
            raise TypeError("all must be True or False")
        if isinstance(names, str):
            names = [names]
        wanted = list(names or [])
        if any(not isinstance(n, str) or not n for n in wanted):
            raise ValueError("names must be non-empty strings")
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        tasks = (
            list(self._tasks.values())
            if all
            else [self._tasks[n] for n in wanted if n in self._tasks]
        )
        dispatcher.cancel(tasks)

    def launch(self, n: int = 1) -> None:
        """Start ``n`` workers now, whatever the demand and the ``workers`` cap."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {n!r}")
        if n < 1:
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

    # --------------------------------------------------------- observation
    def pids(self) -> list[int]:
        """Process ids of the connected workers."""
        dispatcher = self._dispatcher
        return dispatcher.worker_pids() if dispatcher is not None else []

    def size(self) -> int:
        """Tasks not yet popped or collected, resolved or not."""
        self._prune()
        return len(self._tasks)

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
        """Whether the controller holds at least ``workers`` uncollected tasks (advisory)."""
        return len(self._tasks) >= self.workers

    def crashes(self, name: str) -> int:
        """Consecutive crashes of task ``name`` so far (0 if none)."""
        return self._crashes.get(name, 0)

    @overload
    def summary(self, by: Literal["controller"] = ...) -> Summary | None: ...
    @overload
    def summary(self, by: Literal["worker"]) -> list[WorkerSummary]: ...

    def summary(
        self, by: Literal["controller", "worker"] = "controller"
    ) -> Summary | list[WorkerSummary] | None:
        """Statistics of collected tasks since the last start.

        Args:
            by: ``"controller"``: one :class:`Summary` (``None`` if never
                started); ``"worker"``: one :class:`WorkerSummary` per worker
                that ran a collected task (tasks, seconds, peak memory, CPU).
        """
        if by == "worker":
            return [
                WorkerSummary(self.name, worker, int(t), s, int(m) or None, c)
                for worker, (t, s, m, c) in self._by_worker.items()
            ]
        if by != "controller":
            raise ValueError(f"by must be 'controller' or 'worker', got {by!r}")
        if self._summary is None:
            return None
        s = self._summary
        return Summary(
            controller=self.name,
            tasks=int(s["tasks"]),
            seconds=float(s["seconds"]),
            success=int(s["success"]),
            error=int(s["error"]),
            crash=int(s["crash"]),
            cancel=int(s["cancel"]),
            timeout=int(s["timeout"]),
            warning=int(s["warning"]),
        )

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


def _take_forwarded(task: Task) -> TaskResult:
    """Wait for a task down its backup chain, and take its record where it ended."""
    ctl, last = task.forward
    while True:
        TaskFuture(ctl, last).result()
        if last.forward is None:
            break
        ctl, last = last.forward
    ctl._running().forget_resolved([last])
    return cast("TaskResult", ctl._take([last])[0])


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


def _progress(total: int) -> Callable[[int | None], None]:
    from rich.progress import Progress

    bar = Progress(transient=False)
    task_id = bar.add_task("tasks", total=total)
    bar.start()

    def update(done: int | None) -> None:
        if done is None:
            bar.stop()
        else:
            bar.update(task_id, completed=done)

    return update
