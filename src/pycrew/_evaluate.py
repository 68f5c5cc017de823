"""Runs one task inside a worker and turns whatever happens into a result tuple.

The tuple is ``(status, value, error, trace, warnings, seconds, seed)``; the
controller adds the name, command and worker details when it builds the
``TaskResult``.
"""

from __future__ import annotations

import gc
import random
import sys
import time
import warnings

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Outcome = tuple[str, Any, str | None, str | None, str | None, float | None, int | None]

TEXT_MAX = 2048
WARNINGS_MAX = 50

CALLABLE = 0
CODE = 1

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
    ) -> None:
        self.reset_globals = reset_globals
        self.reset_modules = reset_modules
        self.garbage_collection = garbage_collection


class Interruptible:
    """Whether the main thread is inside user code, where an interrupt may land."""

    active = False


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


def evaluate(payload: tuple[Any, ...], cleanup: Cleanup, interruptible: Interruptible) -> Outcome:
    """Run a task payload; never raises except ``Interrupted`` escaping a rogue task."""
    kind, target, args, kwargs, data, task_globals, seed = payload
    main = sys.modules["__main__"].__dict__
    spaces: list[dict[str, Any]] = [main]
    if kind == CALLABLE:
        # A function pickled by value carries a private globals dict; give it
        # the task's globals too. A real module's namespace is left alone.
        fn_globals = getattr(target, "__globals__", None)
        module = sys.modules.get(getattr(target, "__module__", None) or "")
        if (
            isinstance(fn_globals, dict)
            and fn_globals is not main
            and (module is None or module.__dict__ is not fn_globals)
        ):
            spaces.append(fn_globals)
    before = [set(space) for space in spaces] if cleanup.reset_globals else []
    modules_before = set(sys.modules) if cleanup.reset_modules else None
    shadowed: dict[str, Any] = {}
    saved_seeds = _seed_all(seed) if seed is not None else None
    caught: list[str] = []
    value: Any = None
    status, error, trace, seconds = SUCCESS, None, None, None
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
        start = time.perf_counter()
        try:
            interruptible.active = True
            try:
                if kind == CODE:
                    value = _run_code(target, main)
                else:
                    call: Callable[..., Any] = target
                    value = call(*args, **kwargs)
            finally:
                interruptible.active = False
        except Interrupted:
            status, error = CANCEL, "the task was interrupted"
            value = None
        except BaseException as exc:  # SystemExit too: a task may not end its worker that way
            status, error = ERROR, describe(exc)
            import traceback

            try:
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            except BaseException:
                trace = None
            value = None
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
        if cleanup.garbage_collection:
            gc.collect()
    joined = _clip(". ".join(caught)) if caught else None
    return status, value, error, trace, joined, seconds, seed
