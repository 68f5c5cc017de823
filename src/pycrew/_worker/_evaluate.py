"""Runs one task inside a worker and turns whatever happens into a result tuple.

The tuple is ``(status, value, error, trace, warnings, seconds, seed,
memory_peak, cpu_seconds, attempts)``; the controller adds the name, command and worker
details when it builds the ``TaskResult``.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
import warnings

from ._setup import bring_state, keep_state, private_globals

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Outcome = tuple[
        str,
        Any,
        str | None,
        str | None,
        str | None,
        float | None,
        int | None,
        int | None,
        float | None,
        int,
    ]

#: where pycrew's own files are: their frames are left out of a task's traceback
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # pycrew/
TEXT_MAX = 2048
#: a traceback longer than this keeps its first and last halves
TRACE_MAX = 16384
#: a task's exception larger than this when pickled travels as text only
EXCEPTION_BYTES_MAX = 16 << 20
WARNINGS_MAX = 50

CALLABLE = 0
CODE = 1
#: a payload longer than this carries a trace context and a function name (items 10, 11)
TRACED = 11

#: statuses as the worker reports them (the values of pycrew.Status)
SUCCESS, ERROR, CANCEL = "success", "error", "cancel"


class Interrupted(BaseException):
    """Raised inside a running task when the controller cancels it or its time runs out."""


class Cleanup:
    """What to undo after each task."""

    def __init__(
        self,
        reset_globals: bool = True,
        reset_modules: bool = False,
        garbage_collection: bool = False,
        reset_environment: bool = False,
    ) -> None:
        self.reset_globals = reset_globals
        self.reset_modules = reset_modules
        self.garbage_collection = garbage_collection
        self.reset_environment = reset_environment


class Interruptible:
    """Whether the main thread is inside user code, where an interrupt may land."""

    active = False


#: a task that used less CPU than this reports the larger of its resident size at
#: its start and at its end as its peak: to touch a megabyte of new pages takes
#: about 0.1 ms of CPU (page faults), so that figure is within a megabyte or two
#: of the high-water mark, which costs several times more to read
QUICK_CPU = 0.0002


class Meter:
    """CPU seconds and peak resident memory of one task, for a few µs a task.

    Linux keeps a high-water mark of resident memory that a process may reset:
    writing "5" to /proc/self/clear_refs sets it to the current resident size
    (under 1 µs), and VmHWM in /proc/self/status reads it back (7 µs or more:
    the kernel formats the whole file, and a worker running tiny tasks spent a
    fifth of its time there). A task that used under ``QUICK_CPU`` of CPU
    reads /proc/self/statm instead, at its start and end (about 1 µs each: the
    resident size, not the mark). ``getrusage().ru_maxrss`` would be cheaper
    but is useless here: it never drops below the peak of whatever the process
    was before exec (the controller, when a launcher forks it) nor below the
    peak at any earlier thread exit. Both files stay open, so a task costs no
    open() call. Where the mark cannot be reset, memory_peak is the process's
    peak so far (an upper bound), and None where nothing can be read.

    CPU seconds come from ``time.process_time()``: user plus system time of the
    whole process, as ``getrusage(RUSAGE_SELF)`` would give, but with
    nanosecond resolution (``os.times()`` counts 10 ms ticks) and cheaper.
    """

    def __init__(self) -> None:
        self.clear_fd = -1
        self.status_fd = -1
        self.statm_fd = -1
        self.page = 0
        self.maxrss_unit = 0  # bytes per ru_maxrss unit; 0: no fallback
        if sys.platform.startswith("linux"):
            try:
                self.status_fd = os.open("/proc/self/status", os.O_RDONLY)
                self.clear_fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
                os.write(self.clear_fd, b"5")
            except OSError:
                if self.clear_fd >= 0:
                    os.close(self.clear_fd)
                self.clear_fd = -1
            else:
                try:
                    self.page = os.sysconf("SC_PAGE_SIZE")
                    self.statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
                except (OSError, ValueError):
                    pass  # no quick reading: every task reads the mark
        if self.status_fd < 0 or self._status_peak() is None:
            try:
                import resource
            except ImportError:
                pass
            else:
                # kilobytes on Linux, bytes on macOS and the BSDs' Darwin kin
                self.maxrss_unit = 1 if sys.platform == "darwin" else 1024
                self.resource = resource

    def start(self) -> tuple[float, bool, int | None]:
        """Call right before the task: the CPU clock, whether the mark was reset, and
        the resident size now (None where it cannot be read)."""
        reset = False
        if self.clear_fd >= 0:
            try:
                os.write(self.clear_fd, b"5")
                reset = True
            except OSError:
                pass  # e.g. a task closed our descriptor: report no peak then
        return time.process_time(), reset, self._resident() if reset else None

    def stop(self, started: tuple[float, bool, int | None]) -> tuple[int | None, float]:
        """Call right after the task: ``(memory_peak in bytes or None, cpu_seconds)``."""
        cpu = time.process_time() - started[0]
        peak: int | None = None
        if self.clear_fd >= 0:
            if started[1]:
                before = started[2]
                after = self._resident() if before is not None and cpu < QUICK_CPU else None
                peak = max(before, after) if before is not None and after is not None else None
                if peak is None:
                    peak = self._status_peak()
        elif self.status_fd >= 0:
            peak = self._status_peak()
        elif self.maxrss_unit:
            peak = self.resource.getrusage(self.resource.RUSAGE_SELF).ru_maxrss * self.maxrss_unit
        return peak, cpu

    def _resident(self) -> int | None:
        """Resident bytes now, from /proc/self/statm (its second field, in pages)."""
        if self.statm_fd < 0:
            return None
        try:
            return int(os.pread(self.statm_fd, 128, 0).split(None, 2)[1]) * self.page
        except (OSError, ValueError, IndexError):
            return None

    def _status_peak(self) -> int | None:
        try:
            # VmHWM sits near byte 300; a long Groups line may push it further
            text = os.pread(self.status_fd, 1024, 0)
            at = text.find(b"VmHWM:")
            if at < 0 or text.find(b"kB", at) < 0:
                text = os.pread(self.status_fd, 16384, 0)
                at = text.find(b"VmHWM:")
            return int(text[at + 6 : text.index(b"kB", at)]) * 1024 if at >= 0 else None
        except (OSError, ValueError):
            return None


class _WarningSink:
    """Collects the warnings of the running task (cheaper than catch_warnings per task)."""

    def __init__(self) -> None:
        self.messages: list[Warning | str] | None = None
        self.fallback = warnings.showwarning

    def show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if self.messages is not None:
            self.messages.append(message)
        else:
            self.fallback(message, category, filename, lineno, file, line)


_SINK = _WarningSink()


def capture_warnings() -> None:
    """Route every warning of this process to the running task's record (workers only)."""
    warnings.simplefilter("always")
    warnings.showwarning = _SINK.show


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 3] + "..."


def _clip_trace(text: str) -> str:
    """A traceback cut to its head and tail: where it started, and what was raised."""
    if len(text) <= TRACE_MAX:
        return text
    half = TRACE_MAX // 2
    left_out = len(text) - 2 * half
    return f"{text[:half]}\n... ({left_out} characters left out) ...\n{text[-half:]}"


def _text(obj: object, fallback: str) -> str:
    """``str(obj)``, or ``fallback`` when the task's object will not say.

    An object a task made may be hostile or broken, even raising SystemExit
    from ``__str__``; reporting it must not end the worker.
    """
    try:
        return str(obj)
    except BaseException:
        return fallback


def describe(exc: BaseException) -> str:
    message = _text(exc, "(its message could not be formatted)")
    name = type(exc).__qualname__
    return _clip(f"{name}: {message}" if message else name)


def trace_of(exc: BaseException) -> str | None:
    """The task's traceback, from its own first frame (pycrew's frames left out)."""
    import traceback

    try:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            tb = tb.tb_next
        return _clip_trace("".join(traceback.format_exception(type(exc), exc, tb)))
    except BaseException:  # the exception's own code may raise anything
        return None


def _pickled(exc: BaseException) -> bytes | None:
    """The exception pickled (by value where its class lives only in a script), or None."""
    import pickle

    from .._wire import _pickling

    exc.__traceback__ = None  # frames do not pickle, and would hold the task's objects
    try:
        data = pickle.dumps(exc, protocol=5)
        if _pickling.names_main(data):
            raise pickle.PicklingError("a class of __main__ travels by value")
    except BaseException:
        try:
            import cloudpickle

            data = cloudpickle.dumps(exc, protocol=5)
        except BaseException:  # its __reduce__ is the task's code: anything may come out
            return None
    return data if len(data) <= EXCEPTION_BYTES_MAX else None


def _run_code(source: str, namespace: dict[str, Any]) -> Any:
    """Run a code string; its value is the value of a trailing expression, as in a notebook."""
    import ast

    tree = ast.parse(source, mode="exec")
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        body = ast.Module(body=tree.body[:-1], type_ignores=[])
        exec(compile(body, "<pycrew task>", "exec"), namespace)
        return eval(compile(ast.Expression(last.value), "<pycrew task>", "eval"), namespace)
    exec(compile(tree, "<pycrew task>", "exec"), namespace)
    return None


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # it was removed under us
        return None


def _restore_process(cwd: str | None, environ: dict[str, str], path: list[str]) -> None:
    """Undo what a task changed of the process: its directory, environment and sys.path."""
    if cwd is not None and _cwd() != cwd:
        try:
            os.chdir(cwd)
        except OSError:
            print(f"Warning: could not return to {cwd}", file=sys.stderr)
    if os.environ != environ:
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
    if sys.path != path:
        sys.path[:] = path


def derived_seed(seed: int, key: str) -> int:
    """A seed derived from another and a key (a task's name, an input's index, an attempt)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _seed_all(seed: int) -> tuple[Any, Any]:
    saved_random = random.getstate()
    random.seed(seed)
    saved_numpy = None
    try:
        import numpy
    except ImportError:
        pass
    else:
        saved_numpy = numpy.random.get_state()
        numpy.random.seed(seed % 2**32)
    return saved_random, saved_numpy


def _restore_seeds(saved: tuple[Any, Any]) -> None:
    random.setstate(saved[0])
    if saved[1] is not None:
        import numpy

        numpy.random.set_state(saved[1])


def evaluate(
    payload: tuple[Any, ...],
    cleanup: Cleanup,
    interruptible: Interruptible,
    meter: Meter | None = None,
) -> Outcome:
    """Run a task payload; never raises except ``Interrupted`` escaping a rogue task.

    Items after the first seven (the task's name, say) are for the worker, not
    here, but for the trace context and function name a traced task carries
    as items 10 and 11.
    """
    if len(payload) > TRACED:
        return _traced(payload, cleanup, interruptible, meter)
    return _evaluate(payload, cleanup, interruptible, meter)


def _traced(
    payload: tuple[Any, ...],
    cleanup: Cleanup,
    interruptible: Interruptible,
    meter: Meter | None,
) -> Outcome:
    """``evaluate()`` inside a span that continues the pusher's trace (when tracing is on here)."""
    from .._operations import _tracing  # only now: opentelemetry is slow to import

    carrier, function = payload[TRACED - 1 : TRACED + 1]
    try:
        span = _tracing.serve(carrier, function, str(payload[7]))
    except Exception as exc:  # tracing never costs a task its run
        print(f"Warning: no trace span for this task: {describe(exc)}", file=sys.stderr)
        span = None
    if span is None:
        return _evaluate(payload, cleanup, interruptible, meter)
    outcome: Outcome | None = None
    try:
        outcome = _evaluate(payload, cleanup, interruptible, meter)
        return outcome
    finally:
        # no outcome: an interrupt escaped a task that would not stop
        ended = outcome or (CANCEL, None, "the task was interrupted", None, *(None,) * 5, 1)
        try:
            span.end(ended[0], ended[2], ended[3], ended[9])
        except Exception as exc:
            print(f"Warning: the task's trace span failed: {describe(exc)}", file=sys.stderr)


def flush_traces() -> None:
    """At a worker's exit (``os._exit`` skips atexit): send the spans still buffered."""
    tracing = sys.modules.get("pycrew._operations._tracing")
    if tracing is not None:
        tracing.flush()


def _evaluate(
    payload: tuple[Any, ...],
    cleanup: Cleanup,
    interruptible: Interruptible,
    meter: Meter | None = None,
) -> Outcome:
    kind, target, args, kwargs, data, task_globals, seed = payload[:7]
    # retries and retry_on, when the pusher asked for any (items 8 and 9)
    retries, retry_on = payload[8:10] if len(payload) > 9 else (0, Exception)
    attempts = 1
    main = sys.modules["__main__"].__dict__
    spaces: list[dict[str, Any]] = [main]
    # A function pickled by value carries a private globals dict: it gets the
    # worker's state and the task's globals too. A real module's is left alone.
    fn_globals = private_globals(target, main) if kind == CALLABLE else None
    if fn_globals is not None:
        bring_state(fn_globals, main)
        spaces.append(fn_globals)
    before = [set(space) for space in spaces] if cleanup.reset_globals else []
    modules_before = set(sys.modules) if cleanup.reset_modules else None
    # the working directory, environment variables and import path, as they were
    process_before = (
        (_cwd(), dict(os.environ), list(sys.path)) if cleanup.reset_environment else None
    )
    shadowed: dict[str, Any] = {}
    saved_seeds = _seed_all(seed) if seed is not None else None
    caught: list[str] = []
    value: Any = None
    status, error, trace, seconds = SUCCESS, None, None, None
    memory_peak: int | None = None
    cpu_seconds: float | None = None
    try:
        for space in spaces:
            space.update(task_globals)
        if kind == CODE:
            for key, item in data.items():
                if key in main:
                    shadowed[key] = main[key]
                main[key] = item
        filters = list(warnings.filters)
        records: list[Warning | str] = []
        _SINK.messages = records
        usage = meter.start() if meter is not None else (0.0, False, None)
        start = time.perf_counter()
        try:
            interruptible.active = True
            try:
                while True:
                    try:
                        if kind == CODE:
                            value = _run_code(target, main)
                        else:
                            call: Callable[..., Any] = target
                            value = call(*args, **kwargs)
                        break
                    except Exception as exc:
                        if attempts > retries or not isinstance(exc, retry_on):
                            raise
                        # a transient error the caller asked to retry: once more,
                        # reseeded from (seed, attempt) so a rerun draws the same
                        # asked for: the log says so, the record counts attempts
                        print(f"Retry: attempt {attempts} raised {describe(exc)}", file=sys.stderr)
                        attempts += 1
                        if seed is not None:
                            _seed_all(derived_seed(seed, f"attempt {attempts}"))
            finally:
                interruptible.active = False
                # here, before a traceback is formatted: that is pycrew's work
                if meter is not None:
                    memory_peak, cpu_seconds = meter.stop(usage)
        except Interrupted:
            status, error = CANCEL, "the task was interrupted"
            value = None
        except BaseException as exc:  # SystemExit too: a task may not end its worker that way
            status, error = ERROR, describe(exc)
            trace = trace_of(exc)
            # the exception itself travels too, pickled apart, so the caller
            # can re-raise it as itself; the controller unpickles it only then
            value = _pickled(exc)
            print(f"Error: {error}", file=sys.stderr)
        seconds = time.perf_counter() - start
        _SINK.messages = None
        if warnings.filters != filters:
            # the task changed the warning filters: undo that for the next task
            warnings.filters[:] = filters  # type: ignore[index]
            warnings._filters_mutated()  # type: ignore[attr-defined]
        for message in records[:WARNINGS_MAX]:
            caught.append(_text(message, "(a warning that could not be formatted)") or ".")
        for text in caught:
            print(f"Warning: {text}", file=sys.stderr)
    finally:
        if fn_globals is not None and not cleanup.reset_globals:
            # what the task left in its globals stays for the next task
            keep_state(fn_globals, main)
        if kind == CODE:
            for key in data:
                main.pop(key, None)
            main.update(shadowed)
        for space, names in zip(spaces, before, strict=False):
            for key in set(space) - names:
                del space[key]
        if modules_before is not None:
            for key in set(sys.modules) - modules_before:
                del sys.modules[key]
        if saved_seeds is not None:
            _restore_seeds(saved_seeds)
        if process_before is not None:
            _restore_process(*process_before)
        if cleanup.garbage_collection:
            gc.collect()
    joined = _clip(". ".join(caught)) if caught else None
    return status, value, error, trace, joined, seconds, seed, memory_peak, cpu_seconds, attempts
