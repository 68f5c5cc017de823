"""``sequential_controller()``: the controller's API, each task run inside ``push()``.

```
 push(fn, *args) ─ pickle ─► Task ─► InlineDispatcher.submit (live, as on any controller)
   └─ then, in the calling thread, outside every pycrew lock:
      unpickle a copy ─► evaluate() ─► outcome pickled as a worker sends it
                                       ─► Task resolved ─► future settled
 fut.result() / pop() / collect() / map() / wait() ─► the controller's own code, unchanged
```

A debugging stand-in for a real controller: a task runs in the calling
thread, so ``breakpoint()``, ``pdb`` and print statements work, and its
statuses, seeds, warnings and errors are those a worker would report. The
task travels through pickle both ways, as it would to a worker: what cannot
be pickled fails the same way, and a task that mutates its arguments or its
result leaves the caller's objects alone. No port, no thread, no process.
"""

from __future__ import annotations

import linecache
import os
import secrets
import socket
import sys
import threading
import time
import types
import warnings
from typing import TYPE_CHECKING, Any, cast

from .._dispatcher._task import DONE, QUEUED, RUNNING, WAITING, Resolutions, WorkerInfo
from .._engines._launcher import Launcher
from .._errors import CrewError, RemoteTraceback
from .._results import Status
from .._wire import _frames, _pickling
from .._wire._frames import Kind
from .._worker import _values
from .._worker._evaluate import (
    _SINK,
    CODE,
    ERROR,
    Cleanup,
    Interruptible,
    describe,
    evaluate,
    trace_of,
)
from .._worker._setup import drop_shared, keep_shared, run_step
from . import _push
from ._checks import check_int
from ._controller import Controller

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._dispatcher._dispatcher import Dispatcher
    from .._dispatcher._task import Task
    from .._engines._launcher import WorkerSpec
    from ._futures import TaskFuture

#: cloudpickle's file name for the code of functions it ships by value
#: the file name of a code string task (evaluate() compiles it so)
TASK_FILENAME = "<pycrew task>"
#: the worker id on every record of a sequential controller: the calling process
WORKER_ID = "main"
_LATE = (
    "the task ran past its seconds_timeout (it ran to its end: a task in the "
    "calling process cannot be stopped, so its result was dropped)"
)


def sequential_controller(
    name: str | None = None,
    *,
    seed: int | None = None,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    reset_environment: bool = False,
    bytes_max: int = _frames.BYTES_MAX,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
) -> SequentialController:
    """A controller that runs each task inside ``push()``, in the calling thread.

    For debugging: ``breakpoint()`` in a task stops there, in your terminal.
    The API is a local controller's, so a script switches between the two by
    changing the line that makes the controller. Statuses, seeds, warnings
    and errors are what a worker reports for the same task; ``seconds_timeout``
    is checked when the task returns (it cannot be interrupted here, so a
    task that overran ends as ``"timeout"``). Ctrl-C while a task runs raises
    ``KeyboardInterrupt`` from ``push()`` (or ``walk()``/``map()``); the task
    and those after it end as ``"cancel"``, ready for ``collect()``. Push from
    one thread at a time: while a task runs, the process's warning capture
    and ``sys.modules["__main__"]`` are the task's.

    Args:
        name: the controller's name (default: 8 random hex characters).
        seed: with a seed, every task gets a seed derived from it and the task
            name: the same seed a local controller gives it.
        reset_globals: remove globals a task added to ``__main__`` and to its
            function's globals. Tasks get a ``__main__`` of their own, as on a
            worker: a code string sees its ``data`` and ``globals``, not the
            script's variables, and what a task leaves there stays for the next
            task when this is False.
        reset_modules: unload modules a task imported.
        garbage_collection: run ``gc.collect()`` after each task.
        reset_environment: after each task, go back to the working directory,
            environment variables and ``sys.path`` this process had before it.
        bytes_max: the largest task or result, in bytes, as on workers.
        initializer, initargs, serializers: as for a local controller; the
            initializer runs at ``start()``, ``everywhere()`` at once, here.
            What tasks print goes straight to this terminal.

    Returns:
        A ``pycrew.Controller`` that starts no workers: ``launch()`` and
        ``scale()`` do nothing, ``pids()`` is empty, ``url`` is ``""``, and a
        task already ended when its ``push()`` returns, so ``cancel()`` finds
        nothing to stop. It cannot be another controller's ``backup``.
    """
    return SequentialController(
        name=name,
        seed=seed,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        reset_environment=reset_environment,
        bytes_max=bytes_max,
        initializer=initializer,
        initargs=initargs,
        serializers=serializers,
    )


class SequentialController(Controller):
    """A ``pycrew.Controller`` whose tasks run in the calling thread; see
    ``pycrew.sequential_controller``."""

    _adopts = False

    def __init__(
        self,
        *,
        name: str | None = None,
        seed: int | None = None,
        reset_globals: bool = True,
        reset_modules: bool = False,
        garbage_collection: bool = False,
        reset_environment: bool = False,
        bytes_max: int = _frames.BYTES_MAX,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
    ) -> None:
        super().__init__(
            _NoLauncher(),
            name=name,
            seed=seed,
            reset_globals=reset_globals,
            reset_modules=reset_modules,
            garbage_collection=garbage_collection,
            reset_environment=reset_environment,
            bytes_max=bytes_max,
            initializer=initializer,
            initargs=initargs,
            serializers=serializers,
        )
        self._inline: InlineDispatcher | None = None

    def __repr__(self) -> str:
        state = "started" if self.started() else "stopped"
        return f"<SequentialController {self.name!r} {state}>"

    @property
    def url(self) -> str:
        """Always ``""``: nothing listens."""
        return ""

    def start(self) -> None:
        """Get ready to run tasks (a fresh summary). Does nothing if started."""
        with self._lock:
            if self._inline is not None:
                return
            cleanup = Cleanup(
                self.reset_globals,
                self.reset_modules,
                self.garbage_collection,
                self.reset_environment,
            )
            inline = InlineDispatcher(cleanup, self.bytes_max, self._listeners)
            self.session = secrets.token_hex(6)
            self._records.reset()
            self._inline = inline
            # it offers every attribute and method the controller uses of a dispatcher
            self._dispatcher = cast("Dispatcher", inline)
            for frame in self._setup:
                inline.add_setup(frame)

    def terminate(self) -> None:
        """Stop: ``resolved()`` goes back to 0; the summary stays until the next start."""
        with self._lock:
            inline = self._inline
            if inline is None:
                return
            self._inline = None
            self._dispatcher = None
            inline.close()
            self._records.tasks = {}

    def launch(self, n: int = 1) -> None:
        """Does nothing: tasks run in this process."""
        check_int("n", n)

    def scale(self) -> bool:
        """Does nothing: tasks run in this process. Returns False."""
        return False

    def saturated(self) -> bool:
        """Always False: a task ends inside its ``push()``."""
        return False

    # The controller's own push/walk queue the tasks; they run here, once its
    # locks are let go, so a task may push tasks of its own.
    def _push(self, *args: Any, **kwargs: Any) -> TaskFuture[Any]:
        future: TaskFuture[Any] = super()._push(*args, **kwargs)
        self._run([future])
        return future

    def _walk(self, *args: Any, **kwargs: Any) -> list[TaskFuture[Any]]:
        futures: list[TaskFuture[Any]] = super()._walk(*args, **kwargs)
        self._run(futures)
        return futures

    def _run(self, futures: list[TaskFuture[Any]]) -> None:
        inline = self._inline
        if inline is None:
            return  # terminated by one of its own tasks meanwhile
        try:
            for future in futures:
                inline.run(future._where[1])
        except BaseException:
            # Ctrl-C: the rest are cancelled, and pop()/collect() may take them
            # (map()'s too), as after an interrupted map() on workers
            _push.abandon(self, futures)
            raise


class InlineDispatcher(Resolutions):
    """What the controller asks of a dispatcher, for tasks that run in the calling thread.

    ``submit()`` only makes a task live; ``run()`` evaluates it where it is
    called and resolves it as the dispatcher resolves a worker's result.
    ``lock`` guards the task states and queues, as the dispatcher's does.
    """

    # read by the controller: no TLS, no port, no thread, never failed
    tls = None
    port = 0
    thread: threading.Thread | None = None
    failure: BaseException | None = None
    bytes_sent = 0

    def __init__(
        self, cleanup: Cleanup, bytes_max: int, listeners: list[Callable[[], None]]
    ) -> None:
        super().__init__(listeners)
        self.cleanup = cleanup
        self.bytes_max = bytes_max
        self.worker = WorkerInfo(WORKER_ID, os.getpid(), socket.gethostname())
        #: the tasks' ``__main__``, as a worker's is theirs (the caller's stays apart)
        self.main = types.ModuleType("__main__")
        #: why a setup step failed, as on a dispatcher: no task runs after that
        self.broken: str | None = None
        self.broken_trace: str | None = None
        self.serializers: _pickling.Serializers | None = None
        #: the shared objects' keys (the objects wait where a worker keeps them)
        self.shares: dict[int, Sequence[Any]] = {}

    def add_setup(self, frame: tuple[Any, ...]) -> None:
        """Run a setup step here, now, as a worker would before its next task."""
        payload = _pickling.loads(*_frame_parts(frame, 0))
        if payload[0] == "serializers":
            # this controller's own, not the process's: another may have others
            self.serializers = _pickling.Serializers(payload[1])
            return
        caller = sys.modules["__main__"]
        try:
            sys.modules["__main__"] = self.main
            run_step(payload, self.main.__dict__)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the step is the user's code: SystemExit too
            self.broken = f"the setup step failed: {describe(exc)}"
            self.broken_trace = trace_of(exc)
        finally:
            sys.modules["__main__"] = caller

    def add_share(self, key: int, frame: list[Any]) -> None:
        meta, bufs = _frame_parts(frame, _frames.SHARE_KEY.size)
        # copies, as a worker's would be: a task cannot reach the caller's object
        keep_shared(key, bytes(meta), bufs)
        self.shares[key] = frame

    def remove_share(self, key: int) -> None:
        self.shares.pop(key, None)
        drop_shared(key)

    def submit(self, task: Task) -> None:
        with self.lock:
            self.live[task.id] = task
            if self.broken is not None:
                self._resolve(task, Status.CANCEL, f"not run: {self.broken}")
        self.settle()

    def run(self, task: Task) -> None:
        """Evaluate one submitted task here and resolve it (call without the lock).

        Raises:
            KeyboardInterrupt: the user pressed Ctrl-C while the task ran (the
                task is resolved as ``cancel`` first).
        """
        if task.state == WAITING:
            task.inputs.wait()  # an input of another controller, still running
        with self.lock:
            if task.state != QUEUED:
                return  # cancelled before its turn, or an input failed
            task.state = RUNNING
            task.worker = self.worker
            frame = _frames.pieces(task.frame)
        try:
            meta, bufs = execute(
                task.id, frame, self.cleanup, self.bytes_max, self.main, self.serializers
            )
        except BaseException as exc:
            with self.lock:
                if task.state != DONE:
                    self._resolve(task, Status.CANCEL, f"interrupted by {type(exc).__name__}")
            self.settle()
            raise
        with self.lock:
            if task.state != DONE:  # cancelled by the task itself, or another thread
                if task.deadline is not None and time.monotonic() > task.deadline:
                    self._resolve(task, Status.TIMEOUT, _LATE)
                else:
                    task.raw = (meta, bufs) if bufs else meta
                    task.failed = bool(_frames.RESULT_HEAD.unpack_from(meta)[2])
                    self._resolve(task, None)
        self.settle()

    def cancel(self, tasks: list[Task], queued_only: bool = False) -> None:
        """End tasks not yet run (a running one keeps running; its result is dropped)."""
        with self.lock:
            for task in tasks:
                if task.state in (QUEUED, WAITING) or (task.state != DONE and not queued_only):
                    self._resolve(task, Status.CANCEL)
        self.settle()

    def started(self, task: Task) -> bool:
        """Whether the task runs now (one runs at a time, in the caller's thread)."""
        return task.state == RUNNING

    def counts(self) -> tuple[int, int, int, int, int]:
        """(connections, cumulative, awaiting, executing, completed); never a connection."""
        with self.lock:
            running = sum(1 for t in self.live.values() if t.state == RUNNING)
            return 0, 0, len(self.live) - running, running, self.completed

    def worker_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        with self.lock:
            for task in list(self.live.values()):
                self._resolve(task, Status.CANCEL, "the controller was terminated")
        self.settle()
        for key in list(self.shares):
            self.remove_share(key)


def _frame_parts(frame: Sequence[Any], skip: int) -> tuple[memoryview, list[Any]]:
    """An encoded frame's pickle (past ``skip`` bytes of head) and copies of its buffers."""
    head = memoryview(frame[0]).cast("B")
    nbuf = _frames.HEADER.unpack_from(head)[2]
    start = _frames.HEADER.size + _frames.LENGTH.size * nbuf + skip
    return head[start:], [bytearray(piece) for piece in frame[1:]]


def execute(
    task_id: int,
    frame: Sequence[Any],
    cleanup: Cleanup,
    bytes_max: int,
    main: types.ModuleType,
    serializers: _pickling.Serializers | None = None,
) -> tuple[bytes, list[Any]]:
    """Run an encoded TASK frame as a worker would; the RESULT's meta and buffers.

    The task is unpickled from copies of its bytes and its result pickled and
    copied back, as the wire would: neither shares memory with the caller's
    objects. Only the user's ``KeyboardInterrupt`` escapes.
    """
    try:
        task_meta, task_bufs = _frame_parts(frame, 0)
        if _frames.HEADER.unpack_from(memoryview(frame[0]))[0] == Kind.TASK_INPUTS:
            offset, groups, own = _frames.split_inputs(task_meta, task_bufs)
            payload = _values.unpickle(task_meta, own, offset, groups)
        else:
            payload = _pickling.loads(task_meta[_frames.TASK_HEAD.size :], task_bufs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # unpickling runs the task's code, SystemExit too
        error = f"the task could not be loaded: {describe(exc)}"
        outcome: tuple[Any, ...] = (ERROR, None, error, None, None, None, None, None, None)
    else:
        _give_back_sources(payload)
        outcome = _evaluate_here(payload, cleanup, main)
    meta, bufs = _values.result_message(task_id, False, outcome, bytes_max, serializers)
    return meta, [bytearray(buf) for buf in bufs]


def _give_back_sources(payload: tuple[Any, ...]) -> None:
    """Let pdb and tracebacks show a code string's lines, as they would without pycrew.

    (A script's functions keep their file name on the wire, so their lines
    are found already.) A code string's text goes where ``linecache`` looks
    for ``<pycrew task>``.
    """
    kind, target = payload[:2]
    if kind == CODE and isinstance(target, str):
        lines = target.splitlines(keepends=True)
        linecache.cache[TASK_FILENAME] = (len(target), None, lines, TASK_FILENAME)


def _evaluate_here(
    payload: tuple[Any, ...], cleanup: Cleanup, main: types.ModuleType
) -> tuple[Any, ...]:
    """``evaluate()`` as in a worker: its ``__main__`` and warning capture, for this task only.

    A worker's ``__main__`` is not the script's: a code string sees only its
    ``data`` and ``globals``, and what a task leaves there stays for the next
    task (unless ``reset_globals``), not in the caller's namespace.
    """
    outer = _SINK.messages  # a task pushed by a running task: the outer one's warnings
    caller = sys.modules["__main__"]
    interruptible = Interruptible()
    stderr = sys.stderr
    quiet = _TaskOutputOnly(stderr, interruptible) if stderr is not None else None
    try:
        sys.modules["__main__"] = main
        if quiet is not None:
            sys.stderr = quiet
        with warnings.catch_warnings():
            # what capture_warnings() sets for good in a worker
            warnings.simplefilter("always")
            warnings.showwarning = _SINK.show
            outcome = evaluate(payload, cleanup, interruptible)
    finally:
        if quiet is not None and sys.stderr is quiet:  # a task may have put its own there
            sys.stderr = stderr
        sys.modules["__main__"] = caller
        _SINK.messages = outer
    _raise_interrupt(outcome)
    return outcome


class _TaskOutputOnly:
    """``sys.stderr`` while a task is evaluated here: the task's own writes only.

    A worker writes lines of its own about a task to its log (``Error: ...``
    for a failed one, ``Warning: ...`` for each warning); a local controller
    relays only what the task's code prints (``Relay``), so the user's
    terminal never shows those lines, whatever ``error=`` says. Here the
    worker's log would be the terminal: writes from the evaluating thread
    pass only while the task's code runs (``interruptible.active``), and
    every other thread's writes pass as they are.
    """

    def __init__(self, inner: Any, interruptible: Interruptible) -> None:
        self._inner = inner
        self._interruptible = interruptible
        self._thread = threading.get_ident()

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread and not self._interruptible.active:
            return len(text)
        written: int = self._inner.write(text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _raise_interrupt(outcome: tuple[Any, ...]) -> None:
    """Raise the task's ``KeyboardInterrupt`` (Ctrl-C is the user's), with its trace as cause.

    ``evaluate()`` turns every exception into an error record, as a worker
    must; here the interrupt belongs to the user at the terminal.
    """
    status, value, _error, trace = outcome[:4]
    if status != ERROR or not isinstance(value, bytes):
        return
    try:
        exc = _pickling.loads(value, [])
    except KeyboardInterrupt:
        raise
    except BaseException:  # an exception that cannot be rebuilt is not an interrupt
        return
    if isinstance(exc, KeyboardInterrupt):
        raise exc from (RemoteTraceback(trace) if trace else None)


class _NoLauncher(Launcher):
    """The launcher of a controller that starts no workers (never called)."""

    def launch_worker(self, spec: WorkerSpec) -> Any:
        raise CrewError("a sequential controller starts no workers")
