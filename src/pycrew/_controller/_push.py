"""Pushing: a call becomes tasks, one (push) or many in one step (walk, map, map_async).

```
 push(fn, *args)    ─► make_task(): checks, payload, pickle, size limit ─► Task ─► dispatcher
 walk/map(fn, xs)   ─► one Task per input, pushed in one step ─► TaskFutures in input order
 map: wait on the dispatcher's condition ─► records built and handed over together
      (each where its task ended: a backup may have taken one over)
 interrupted (Ctrl-C, a cancelled coroutine) ─► unfinished tasks cancelled, left to collect()
```

map()'s tasks are its own: they never enter the queue that pop() and
collect() read, so several maps, pushes and collections can go on at once.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._dispatcher._task import (
    DONE,
    NO_FRAME,
    WAITING,
    Origin,
    Task,
    collector_paused,
    deadline_in,
)
from .._errors import ArgumentError, ArgumentTypeError, CrashLimitError, CrewTimeoutError, TaskError
from .._operations import _tracing
from .._resources import merged
from .._results import Status, command_label
from .._wire import _frames
from .._wire._frames import Kind
from .._worker._evaluate import CALLABLE, CODE, derived_seed, describe
from ._checks import (
    blame,
    check_mapping,
    check_retries,
    check_seconds,
    check_seed,
    command_text,
    task_inputs,
    task_names,
)
from ._futures import TaskFuture
from ._graph import Inputs
from ._records import warn_caller
from ._shapes import check_fits, shape_for, unwrap
from ._share import dumps_task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .._results import TaskResult
    from ._controller import Controller

log = logging.getLogger("pycrew.controller")
T = TypeVar("T")


def walk(
    ctl: Controller,
    fn: Callable[..., T] | str,
    iterable: Iterable[Any] | None,
    iterate: Mapping[str, Sequence[Any]] | None,
    data: Mapping[str, Any] | None,
    globals: Mapping[str, Any] | None,
    names: str | Sequence[str] | None,
    seed: int | None,
    seconds_timeout: float | None,
    owned: bool,
    retries: int | None = None,
    retry_on: Any = None,
    resources: object = None,
) -> list[TaskFuture[T]]:
    inputs, named = task_inputs(iterable, iterate)
    count = len(inputs)
    names_list = task_names(names, iterate, count)
    if len(set(names_list)) != count:
        raise ArgumentError("task names must be unique")
    ctl.start()
    ctl._raise_failure()
    ctl._prune()
    with ctl._lock:
        clash = [n for n in names_list if n in ctl._records.tasks]
        if clash:
            raise ArgumentError(f"task name {clash[0]!r} is in use: collect it first")
        tasks: list[Task] = []
        futures: list[TaskFuture[T]] = []
        recipe = Recipe(ctl, fn, data, globals, seconds_timeout, retries, retry_on, resources)
        try:
            if ctl.memory is not None:
                # submitting as room frees takes as long as the tasks: the collector runs
                _build_all(ctl, recipe, inputs, named, names_list, seed, owned, tasks, futures)
            else:
                with collector_paused():
                    _build_all(ctl, recipe, inputs, named, names_list, seed, owned, tasks, futures)
                ctl._submit(tasks)
        except BaseException as exc:
            if recipe.tracer is not None:
                recipe.unsent(describe(exc))
            raise
    return futures


def _build_all(
    ctl: Controller,
    recipe: Recipe,
    inputs: list[Any],
    named: bool,
    names_list: list[str],
    seed: int | None,
    owned: bool,
    tasks: list[Task],
    futures: list[TaskFuture[Any]],
) -> None:
    """walk(): one task per input, each submitted at once under ``memory=``."""
    code_string = recipe.code_string
    no_kwargs: dict[str, Any] = {}
    for i, item in enumerate(inputs):
        task_seed = None if seed is None else derived_seed(seed, str(i))
        if named:
            if code_string:
                merged = {**recipe.data, **item}
                task = recipe.build((), no_kwargs, names_list[i], task_seed, merged)
            else:
                task = recipe.build((), item, names_list[i], task_seed)
        elif code_string:
            raise ArgumentError(
                "a code string takes its inputs through iterate=, a dict of sequences"
            )
        else:
            task = recipe.build((item,), no_kwargs, names_list[i], task_seed)
        # the input is in its task's frame now: the list (this call's own) lets it go
        inputs[i] = None
        task.owned = owned
        tasks.append(task)
        futures.append(recipe.future(task))
        if ctl.memory is not None:
            # each as there is room: pickling all first would hold them all
            ctl._submit([task])


def push_one(
    ctl: Controller,
    fn: Callable[..., T] | str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    name: str | None = None,
    data: Mapping[str, Any] | None = None,
    globals: Mapping[str, Any] | None = None,
    seed: int | None = None,
    seconds_timeout: float | None = None,
    retries: int | None = None,
    retry_on: Any = None,
    owned: bool = False,
    wait: bool = True,
    resources: object = None,
) -> TaskFuture[T] | None:
    """Check, pickle and submit one task; its future.

    Under ``memory=``: waits up to ``seconds_timeout`` for room, or (``wait``
    False) returns None at once when there is none.
    """
    ctl.start()
    ctl._raise_failure()
    ctl._prune()
    with ctl._lock:  # the name check and the insertion, as one step
        recipe = Recipe(ctl, fn, data, globals, seconds_timeout, retries, retry_on, resources)
        task = recipe.build(args, kwargs, name, seed)
        task.owned = owned
        future: TaskFuture[T] = recipe.future(task)
        if not ctl._submit([task], ctl.seconds_timeout if wait else 0.0):
            if recipe.tracer is not None:
                recipe.unsent("no room under memory=")
            if not wait:
                return None
            raise CrewTimeoutError(
                f"no room for task {task.name!r} within {ctl.seconds_timeout} s: the "
                f"controller holds memory={ctl.memory} bytes of unfinished tasks"
            )
    return future


def try_push(
    ctl: Controller, fn: Callable[..., T] | str, args: Sequence[Any], kwargs: dict[str, Any]
) -> TaskFuture[T] | None:
    """``push`` without waiting for room: the push's own options come out of ``kwargs``."""
    options = {k: kwargs.pop(k) for k in PUSH_OPTIONS if k in kwargs}
    return push_one(ctl, fn, args, kwargs, **options, wait=False)


#: push()'s own keyword arguments; the rest are the task's
PUSH_OPTIONS = (
    "name",
    "data",
    "globals",
    "seed",
    "seconds_timeout",
    "retries",
    "retry_on",
    "resources",
)


class Recipe:
    """What every task of one push, walk or map shares: checked and prepared once.

    ``build()`` then makes each task from its own inputs, name and seed.
    """

    __slots__ = (
        "code",
        "code_string",
        "command",
        "ctl",
        "data",
        "fn",
        "function",
        "globals",
        "last_span",
        "needs",
        "opened",
        "origin",
        "retry",
        "shape",
        "timeout",
        "tracer",
    )

    def __init__(
        self,
        ctl: Controller,
        fn: Callable[..., Any] | str,
        data: Mapping[str, Any] | None,
        task_globals: Mapping[str, Any] | None,
        seconds_timeout: float | None,
        retries: int | None = None,
        retry_on: Any = None,
        asked: object = None,
    ) -> None:
        self.ctl = ctl
        fn, asked = unwrap(fn, asked)
        #: the resources every task of this push asks for (None: any worker)
        self.shape = shape_for(ctl, asked)
        self.data = check_mapping("data", data)
        task_globals = check_mapping("globals", task_globals)
        if seconds_timeout is not None:
            check_seconds("seconds_timeout", seconds_timeout)
        self.timeout = seconds_timeout
        infinite = seconds_timeout is None or math.isinf(seconds_timeout)
        self.needs = 0.0 if infinite else seconds_timeout
        retries, retry_on = check_retries(
            ctl.retries if retries is None else retries,
            ctl.retry_on if retry_on is None else retry_on,
        )
        # the worker runs a task that raises one of retry_on up to retries more times
        self.retry: tuple[Any, ...] = (retries, retry_on) if retries else ()
        self.code = code = ctl._code
        self.globals = code.mapping(ctl, task_globals) if task_globals else task_globals
        self.fn: Any
        self.code_string = isinstance(fn, str)
        if isinstance(fn, str):
            try:
                compile(fn, "<pycrew task>", "exec")
            except SyntaxError as exc:
                raise ArgumentError(f"task is not valid Python: {exc}") from exc
            self.fn = fn
            self.command: str | None = fn
        elif callable(fn):
            self.fn = code.ref(ctl, fn)
            # one string for every task of the same function
            self.command = sys.intern(command_text(fn))
        else:
            raise ArgumentTypeError(
                f"a task is a callable or a string of code, not {type(fn).__name__}"
            )
        #: what every task of this push shares (their command, their controller);
        #: a run of pushes of one function shares one too (under ctl._lock)
        origin = ctl._records.origin
        if origin is None or origin.command != self.command:
            origin = ctl._records.origin = Origin(self.command)
        self.origin = origin
        #: decided at the controller's start: None (tracing off) costs a push one `if`
        self.tracer: Any = ctl._tracer
        if self.tracer is not None:
            self.function = command_label(self.command)
            self.last_span: _tracing.TaskSpan | None = None
            self.opened: list[tuple[Task, _tracing.TaskSpan]] = []

    def build(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        name: str | None,
        seed: int | None,
        data: Mapping[str, Any] | None = None,
    ) -> Task:
        """One task. ``data`` replaces the recipe's own (a walk over dicts merges its items)."""
        ctl = self.ctl
        if name is None:
            # a random prefix per controller plus a counter of its own (task ids
            # count apart): unique, and it spares a slow os.urandom() per push
            name = f"unnamed_task_{ctl._name_prefix}_{next(ctl._names)}"
        elif not isinstance(name, str) or not name:
            raise ArgumentError(f"task name must be a non-empty string, got {name!r}")
        if name in ctl._records.tasks:
            raise ArgumentError(
                f"task name {name!r} is in use: collect it (or read its future) first, "
                "or choose another name"
            )
        if seed is None:
            if ctl.seed is not None:
                seed = derived_seed(ctl.seed, name)
        else:
            check_seed(seed)
        code = self.code
        data = self.data if data is None else data
        payload: tuple[Any, ...]
        if self.code_string:
            if args or kwargs:
                raise ArgumentError(
                    "a code string takes its inputs through data=, not positional or "
                    "keyword arguments"
                )
            mapping = code.mapping(ctl, data) if data else data
            payload = (CODE, self.fn, (), {}, mapping, self.globals, seed, name, *self.retry)
        else:
            if data and kwargs:
                clash = set(data) & set(kwargs)
                if clash:
                    raise ArgumentError(
                        f"{sorted(clash)} given both in data= and as keyword arguments"
                    )
            merged = {**data, **kwargs} if data else kwargs
            payload = (
                CALLABLE,
                self.fn,
                code.args(ctl, tuple(args)),
                code.mapping(ctl, merged) if merged else {},
                {},
                self.globals,
                seed,
                name,
                *self.retry,
            )
        if self.tracer is None:
            return self._finish(name, payload, seed)
        span = _tracing.TaskSpan(self.tracer, self.function, name, ctl.name)
        if span.carrier:
            # the trace context travels only where there is one (items 10 and 11)
            payload = (*payload[:8], *(self.retry or NO_RETRY), span.carrier, self.function)
        try:
            task = self._finish(name, payload, seed)
        except BaseException as exc:
            span.unsent(describe(exc))
            raise
        self.last_span = span
        return task

    def _finish(self, name: str, payload: tuple[Any, ...], seed: int | None) -> Task:
        """The task of a payload: pickled, checked for size, framed."""
        ctl = self.ctl
        task_id = next(ctl._ids)
        try:
            body, buffers, shared, inputs = dumps_task(ctl, name, payload)
        except ArgumentError:
            raise
        except Exception as exc:
            raise ArgumentTypeError(
                f"task {name!r} cannot be pickled: {blame(payload, exc)}"
            ) from exc
        problem = _frames.too_large(_frames.TASK_HEAD.size + len(body), buffers, ctl.bytes_max)
        if problem is not None:
            raise ArgumentError(
                f"task {name!r} is {problem}: pass large data through files, or raise bytes_max"
            )
        head = _frames.TASK_HEAD.pack(task_id, self.needs)
        frame = _frames.encode(Kind.TASK, head + body, buffers)
        kept = frame if buffers else frame[0]  # see _frames.pieces()
        task = Task(
            task_id, name, self.command, kept, seed, deadline_in(self.timeout), origin=self.origin
        )
        task.shared = shared
        task.shape = self.shape
        if inputs:
            task.inputs = Inputs(ctl, task, inputs, self.timeout)
            task.state = WAITING
        return task

    def future(self, task: Task) -> TaskFuture[Any]:
        """The future of a task just built; its span, if traced, ends as the future settles."""
        future: TaskFuture[Any] = TaskFuture(self.ctl, task)
        if self.tracer is not None and self.last_span is not None:
            span, self.last_span = self.last_span, None
            # before the task is submitted, so no settling can be missed, and
            # without add_done_callback(), which makes each future a condition
            future._done_callbacks.append(_SpanEnd(span))
            self.opened.append((task, span))
        return future

    def unsent(self, why: str) -> None:
        """A push or walk failed: end the spans of its tasks that were never submitted."""
        submitted = self.ctl._records.tasks
        for task, span in self.opened:
            if submitted.get(task.name) is not task:
                span.unsent(why)


#: retries and retry_on of a traced task that asked for none: items 10 and 11 come after
NO_RETRY = (0, ())


class _SpanEnd:
    """A traced task's done callback: its span ends with the task's outcome.

    It runs where the future settles, outside the dispatcher's lock. Only a
    task that raised has its record built here (the error's text is in it):
    a success's result stays unpickled, and a crash's record waits for its
    worker's exit code.
    """

    __slots__ = ("span",)

    def __init__(self, span: _tracing.TaskSpan) -> None:
        self.span = span

    def __call__(self, future: TaskFuture[Any]) -> None:
        try:
            controller, task = future._where
            worker = task.worker
            outcome = task.outcome
            if outcome is None and not task.failed:
                status, error, attempts = Status.SUCCESS.value, None, task.attempts
            elif outcome is None:
                # the error's text is inside the result: its record, built now
                record = controller._records.build(task, controller._crash_detail)
                status, error, attempts = record.status.value, record.error, record.attempts
            else:
                # not the record: a crash's is built once the worker's exit code is in
                status, attempts = outcome.value, task.attempts
                crashed = outcome is Status.CRASH
                error = controller._crash_detail(task) if crashed else task.detail
            self.span.end(
                status,
                error,
                attempts,
                worker.id if worker else None,
                worker.host if worker else None,
            )
        except Exception as exc:  # tracing never breaks the settling of a future
            log.debug("task span not ended: %s", exc)


def retry(ctl: Controller, task: Task, detail: str) -> bool:
    """A task's worker died: try it again here, or hand it down the chain.

    Runs on the dispatcher thread with its lock held. It may take the
    backup's locks (the chain has no cycle, so always in the same order)
    but never this controller's own table lock.
    """
    dispatcher = ctl._dispatcher
    if dispatcher is None:
        return False
    task.crashes += 1
    if task.crashes < max(ctl.crashes_max, 1):
        task.attempts += 1
        dispatcher.retry(task)
    else:
        backup = ctl.backup
        if backup is None or not adopt(backup, task, dispatcher.shares):
            return False  # the chain ends here, or the name is in use there: a crash
        dispatcher.retire(task)
        ctl._records.forwarded.append(task)
    ctl._records.crashed_and_rerun()  # no record of this crash: counted where it happened
    return True


def adopt(ctl: Controller, task: Task, shares: dict[int, Sequence[Any]]) -> bool:
    """Take over a task that crashed its workers in the controller before us
    (``shares``: that controller's shared objects)."""
    ctl.start()
    with ctl._lock:
        if task.name in ctl._records.tasks:
            return False
        taken = Task(next(ctl._ids), task.name, task.command, NO_FRAME, task.seed, task.deadline)
        taken.frame = _frames.retag(_frames.pieces(task.frame), taken.id)
        taken.owned = task.owned
        taken.attempts = task.attempts + 1
        taken.shared = task.shared
        # what the task asked for, with this controller's own default on top: a
        # backup with bigger workers gives the task their size
        taken.shape = merged(task.shape, ctl.resources)
        if taken.shape is not None:
            try:
                check_fits(ctl, taken.shape)
            except ArgumentError:
                return False
        for key in task.shared:
            # the objects it uses go along; the backup keeps them until it stops
            if key in shares:
                ctl._running().add_share(key, shares[key])
        if task.future is not None:
            task.future._follow(ctl, taken)
        ctl._submit([taken])
    return True


def abandon(ctl: Controller, futures: list[TaskFuture[Any]]) -> None:
    """A map() that was interrupted: stop its tasks, and leave their records to collect()."""
    for controller, task in [f._where for f in futures]:
        controller._cancel_tasks([task])
        dispatcher = controller._dispatcher
        if dispatcher is not None:
            dispatcher.disown([task])


#: a map's wait looks over its pending futures again once 1/LOOK_SHARE of them ended
LOOK_SHARE = 16
#: ... or once this long (plus a little per pending future) passed since any ended
LOOK_SECONDS = 0.1
LOOK_SECONDS_PER_FUTURE = 2e-6


def wait_for(ctl: Controller, futures: list[TaskFuture[Any]], progress: bool, fast: bool) -> None:
    """Wait until every future is done, or (``fast``) one of them failed.

    A look over the pending futures costs a call per future: one at every
    resolution made a map of n tasks cost about n²/16 calls (a 100,000-task
    map ran at half the rate of a 20,000-task one). So it looks again once
    a sixteenth of them ended, or a moment after any ended (for the bar and
    ``fast``), or when a wait times out: at most about 16 calls per task.
    """
    dispatcher = ctl._running()
    bar = None
    if progress:
        from .._operations._progress import progress_bar

        bar = progress_bar(len(futures))
    try:
        pending = futures
        seen, looked = 0, 0.0  # dispatcher.completed and the clock at the last look
        look = True  # at once, and after a wait that timed out
        with dispatcher.cv, dispatcher.each_resolution():
            while True:
                ended = dispatcher.completed - seen
                now = time.monotonic()
                pause = LOOK_SECONDS + LOOK_SECONDS_PER_FUTURE * len(pending)
                if (
                    look
                    or ended * LOOK_SHARE >= len(pending)
                    or (ended > 0 and now - looked >= pause)
                ):
                    seen, looked = dispatcher.completed, now
                    still, failed = [], False
                    for f in pending:
                        if not f.done():
                            still.append(f)
                        elif fast and not failed:
                            failed = ended_badly(f)
                    pending = still
                    if bar is not None:
                        bar(len(futures) - len(pending))
                    if not pending or failed:
                        return
                ctl._raise_failure()
                # tasks that went down a backup chain end in another dispatcher,
                # whose resolutions do not wake this one: the interval bounds that
                wait = ctl.seconds_interval
                if dispatcher.completed > seen:  # a look is due once ``pause`` passed
                    wait = min(wait, max(0.0, looked + pause - now))
                look = not dispatcher.cv.wait(wait)
    finally:
        if bar is not None:
            bar(None)


def finish_map(
    ctl: Controller, futures: list[TaskFuture[Any]], error: str, warnings: bool
) -> list[TaskResult]:
    failed_first = next((f for f in futures if ended_badly(f)), None)
    if error == "fast" and failed_first is not None:
        ctl._cancel_tasks([f._where[1] for f in futures])
    records = hand_over(ctl, futures)
    failed = [r for r in records if r.status is not Status.SUCCESS]
    warned = [r for r in records if r.warnings is not None]
    if warnings and warned:
        warn_caller(f"{len(warned)} task(s) raised warnings. First: {warned[0].warnings}")
    if failed and error != "silent":
        first = failed_first.record() if failed_first is not None else failed[0]
        message = (
            f"{len(failed)} of {len(records)} task(s) did not succeed. "
            f"First ({first.name}, {first.status}): {first.error}"
        )
        if error in ("stop", "fast"):
            ctl.error = records
            cause = failed_first._failure(first) if failed_first is not None else None
            raise TaskError(message, records) from cause
        warn_caller(message)
    return records


def hand_over(ctl: Controller, futures: list[TaskFuture[Any]]) -> list[TaskResult]:
    """Records of done futures, wherever their tasks ended, handed over at once.

    Interrupted while records are built (Ctrl-C, or a result whose unpickling
    raises ``KeyboardInterrupt``), it hands over nothing: the tasks are left
    to ``collect()``, as after an interrupted wait.
    """
    by_controller: dict[Controller, list[tuple[Task, TaskResult]]] = {}
    records = []
    try:
        for future in futures:
            controller, task = future._where
            if task.state != DONE:
                continue
            record = controller._records.build(task, controller._crash_detail)
            records.append(record)
            by_controller.setdefault(controller, []).append((task, record))
    except BaseException:
        abandon(ctl, futures)
        raise
    limit: CrashLimitError | None = None
    for controller, pairs in by_controller.items():
        try:
            controller._records.commit([t for t, _ in pairs], [r for _, r in pairs], True)
        except CrashLimitError as exc:
            limit = limit or exc
        finally:
            controller._records.forget(controller._dispatcher, [t for t, _ in pairs])
    if limit is not None:
        limit.results = records
        raise limit
    return records


def ended_badly(future: TaskFuture[Any]) -> bool:
    """Whether a future's task ended in anything but success (without building its record)."""
    task = future._where[1]
    return task.state == DONE and (task.outcome is not None or task.failed)


def follow_progress(futures: list[TaskFuture[Any]]) -> None:
    """A bar that advances as these futures end, and closes itself after the last."""
    from .._operations._progress import progress_bar

    bar = progress_bar(len(futures))
    counter = itertools.count(1)  # next() is atomic: callbacks may run on several threads

    def ended(_: object) -> None:
        done = next(counter)
        bar(done)
        if done == len(futures):
            bar(None)

    for future in futures:
        future.add_done_callback(ended)
