"""What a worker keeps between tasks: setup steps, shared objects, its ``__main__``.

```
 controller                         worker (whichever reads)     worker (main thread)
 serializers, initializer,
 everywhere(fn) ── SETUP ────────► inbox, in order with tasks ─► run_step(): fn runs, its
                                                                  globals join __main__
 share(obj) ────── SHARE (once ──► SHARED[key] = raw bytes ──┐
                   per worker)                               └─► a task's handle unpickles
 handle.drop() ─── UNSHARE ──────► SHARED.pop(key)                as the object (once)
```

A step that fails is fatal to the worker: every later worker would fail the
same way, so the controller stops rather than launch them in a loop.

Light on imports: workers load this module at start.
"""

from __future__ import annotations

import threading
import types

from .._errors import CrewError

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

#: shared objects this process holds, by key: raw ``(pickle, buffers)`` until a
#: task first uses one, then the object itself
SHARED: dict[int, Any] = {}
_SHARED_LOCK = threading.Lock()
_RAW = object()


class SharedMissingError(CrewError, LookupError):
    """A task used a shared object its worker does not hold (it was dropped)."""


def keep_shared(key: int, meta: bytes, buffers: Sequence[Any]) -> None:
    """Hold a shared object as it came, unpickled only when a task uses it."""
    with _SHARED_LOCK:
        SHARED[key] = (_RAW, meta, buffers)


def drop_shared(key: int) -> None:
    with _SHARED_LOCK:
        SHARED.pop(key, None)


def shared_value(key: int, name: str) -> Any:
    """What a ``pycrew.Shared`` handle becomes when a task is unpickled here."""
    from .._wire import _pickling

    with _SHARED_LOCK:
        entry = SHARED.get(key)
        if entry is None:
            raise SharedMissingError(
                f"shared object {name!r} is not on this worker: it was dropped before the task ran"
            )
        if isinstance(entry, tuple) and len(entry) == 3 and entry[0] is _RAW:
            _, meta, buffers = entry
            entry = _pickling.loads(meta, buffers)
            # the object now owns the buffers (an array views them): no copy made
            SHARED[key] = entry
        return entry


def code_value(key: int, name: str) -> Any:
    """A function the controller pickled once, fresh for each task: its globals
    are the task's own, as when it travels with the task.

    The first task unpickles it; where nothing it brings along is code of the
    script (a helper would share its globals), later tasks get a copy made
    from it with a shallow copy of its globals, which holds only immutable
    values then (the controller caches no other function): as fresh as an
    unpickling, and several times cheaper.
    """
    from .._wire import _pickling

    with _SHARED_LOCK:
        entry = SHARED.get(key)
    if entry is None:
        raise SharedMissingError(f"function {name!r} is not on this worker")
    if isinstance(entry, _Template):
        return entry.make()
    _, meta, buffers = entry
    fn = _pickling.loads(meta, buffers)
    if _Template.fits(fn):
        with _SHARED_LOCK:
            if key in SHARED:
                SHARED[key] = _Template(fn)
    return fn


class _Template:
    """A function of the script to copy for each task."""

    __slots__ = ("fn", "globals")

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn
        self.globals = dict(fn.__globals__)

    def make(self) -> types.FunctionType:
        old = self.fn
        fn = types.FunctionType(
            old.__code__, dict(self.globals), old.__name__, old.__defaults__, old.__closure__
        )
        fn.__qualname__ = old.__qualname__
        fn.__module__ = old.__module__
        fn.__doc__ = old.__doc__
        if old.__kwdefaults__:
            fn.__kwdefaults__ = dict(old.__kwdefaults__)
        if old.__dict__:
            fn.__dict__.update(old.__dict__)
        return fn

    @staticmethod
    def fits(fn: object) -> bool:
        if type(fn) is not types.FunctionType:
            return False
        values = [*fn.__globals__.values(), *(fn.__defaults__ or ()), *fn.__dict__.values()]
        values += (fn.__kwdefaults__ or {}).values()
        try:
            values += (cell.cell_contents for cell in fn.__closure__ or ())
        except ValueError:  # an empty cell
            return False
        return all(_importable(v) for v in values)


def _importable(value: object) -> bool:
    """Not code of the script: a plain value, or code a worker imports by name."""
    if isinstance(value, (tuple, frozenset)):
        return all(_importable(v) for v in value)
    if not isinstance(value, (types.FunctionType, type)):
        return True
    return by_reference(value)


def by_reference(obj: object) -> bool:
    """Whether pickle finds ``obj`` (a function or class) by module and name, as
    a worker imports it, rather than shipping it by value from a script."""
    import sys

    module_name = getattr(obj, "__module__", None)
    if module_name is None or module_name == "__main__":
        return False
    target: Any = sys.modules.get(module_name)
    for part in getattr(obj, "__qualname__", "").split("."):
        target = getattr(target, part, None)
    return target is obj


# ----------------------------------------------------------------- __main__ state
def _is_state(name: str) -> bool:
    return not (name.startswith("__") and name.endswith("__"))


def _is_code(value: object) -> bool:
    return isinstance(value, (types.FunctionType, type, types.ModuleType))


def private_globals(fn: object, main: dict[str, Any]) -> dict[str, Any] | None:
    """The globals a function brought along, if it was shipped by value (from a script).

    Such a function gets a fresh dict of the globals it uses at every task;
    a function of a real module shares its module's, which persists anyway.
    """
    import sys

    fn_globals = getattr(fn, "__globals__", None)
    if not isinstance(fn_globals, dict) or fn_globals is main:
        return None
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is not None and module.__dict__ is fn_globals:
        return None
    return fn_globals


def bring_state(fn_globals: dict[str, Any], main: dict[str, Any]) -> None:
    """Give a shipped function the worker's state: what setup steps (and, with
    ``reset_globals=False``, earlier tasks) left in ``__main__``.

    The worker's value of a name wins over the one the function brought, as a
    ProcessPoolExecutor worker keeps its own copy of a script's globals: a
    cache filled by earlier tasks survives. Code (functions, classes,
    modules) always comes fresh from the controller, so an edited helper is
    the one that runs.
    """
    for name, value in main.items():
        if _is_state(name) and not _is_code(fn_globals.get(name)):
            fn_globals[name] = value


def keep_state(fn_globals: dict[str, Any], main: dict[str, Any]) -> None:
    """Keep what a shipped function's globals now hold in the worker's ``__main__``."""
    for name, value in fn_globals.items():
        if _is_state(name):
            main[name] = value


# ----------------------------------------------------------------------- steps
def run_step(payload: Any, main: dict[str, Any]) -> None:
    """Run one setup step; raises what the step raised.

    ``payload`` is ``("serializers", {type: (dumps, loads)})`` or ``("call", fn, args,
    kwargs)``. A called function's globals join ``__main__``, so that
    ``global model; model = load()`` in an initializer reaches every task.
    """
    from .._wire import _pickling

    if payload[0] == "serializers":
        _pickling.WORKER_SERIALIZERS = _pickling.Serializers(payload[1])
        return
    _, fn, args, kwargs = payload
    fn_globals = private_globals(fn, main)
    if fn_globals is not None:
        bring_state(fn_globals, main)
    fn(*args, **kwargs)
    if fn_globals is not None:
        keep_state(fn_globals, main)
