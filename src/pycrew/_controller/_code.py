"""A script's functions travel once: pickled once per controller, sent once per worker.

```
 push(fn, ...) ─► CodeCache.ref(fn)
    ├─ imported (a module's function) ──────────────────► fn, pickled by reference as always
    ├─ from a script, pushed before, nothing it uses ────► Code handle ─► SHARE frame, once
    │  changed since (the checks below)                      per worker; the task carries
    │                                                        only the handle's key
    └─ anything else: first push, a one-off closure, ───► fn, pickled by value with the task
       globals that are mutable objects
```

A function defined in ``__main__`` or a notebook cannot be pickled by
reference: cloudpickle ships its code and every global it uses by value,
which costs tens of microseconds a push. Pickling it once is only right
while a fresh pickle would say the same, so a function is cached only when
all it brings along (globals, defaults, closure, attributes, helper functions
and classes of the script, at any depth) is immutable or code, and every push
checks, by identity, that each of those names still holds the same object: a
rebound global or an edited helper makes a new pickle. A global that holds a
mutable object (a list, a dict, an array) keeps the function uncached, since
changes inside such an object cannot be seen cheaply; ``share()`` is the way to
send large data once.

On a worker every task gets a function of its own with fresh globals, as it
would unpickled from its own pickle (``_setup.code_value``).
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import TYPE_CHECKING, Any

from .._wire import _pickling
from .._worker import _setup
from ._share import KEYS, Shared, collect, publish

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._controller import Controller

#: at most this many functions a controller start pickles once (each stays
#: until terminate(), since queued tasks may name it); later ones travel by value
ENTRIES_MAX = 256
#: first sightings remembered: a function is cached from its second push on, so
#: a closure made anew for every push never takes a place
SEEN_MAX = 4096

_MISSING: Any = object()
_ATOMS = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        range,
        type(Ellipsis),
        type(NotImplemented),
    }
)
#: a class's own machinery: compared by identity, never looked into
_CLASS_MACHINERY = frozenset({"_abc_impl"})


class Code(Shared[Any]):
    """A function pickled once: in a task, a reference to it; on a worker, the function."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        collect(self)
        return _setup.code_value, (self.key, self.name)

    def __repr__(self) -> str:
        return f"<Code {self.name!r} {self.nbytes} bytes>"


class _Entry:
    __slots__ = ("attrs", "fn", "handle", "maps")

    def __init__(self, fn: types.FunctionType, checks: _Checks, handle: Code) -> None:
        self.fn = weakref.ref(fn)
        self.maps = checks.maps
        self.attrs = checks.attrs
        self.handle = handle

    def fresh(self) -> bool:
        """Whether every name the function uses still holds what it held when pickled."""
        for mapping, name, value in self.maps:
            if mapping.get(name, _MISSING) is not value:
                return False
        for obj, attr, value in self.attrs:  # noqa: SIM110 (a loop is cheaper than all())
            if getattr(obj, attr, _MISSING) is not value:
                return False
        return True


class CodeCache:
    """The functions of one controller start that travel by handle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.session = ""
        self.entries: dict[int, _Entry] = {}
        self.seen: dict[int, weakref.ref[Any] | None] = {}
        self.made = 0

    def ref(self, ctl: Controller, fn: Any) -> Any:
        """``fn`` itself, or the handle that stands for it in a task's pickle."""
        if type(fn) is not types.FunctionType:
            return fn
        if fn.__module__ != "__main__" and "<" not in fn.__qualname__:
            return fn  # a module's function: pickled by reference, nothing to save
        if _pickling.by_value_modules():
            return fn  # cloudpickle pickles everything then; keep it simple
        with self.lock:
            if self.session != ctl.session:
                self.session = ctl.session
                self.entries.clear()
                self.seen.clear()
                self.made = 0
            key = id(fn)
            entry = self.entries.get(key)
            if entry is not None and entry.fn() is fn:
                if entry.fresh():
                    return entry.handle
                del self.entries[key]  # its frame stays: queued tasks may name it
            elif not self._seen_before(key, fn):
                return fn
            if self.made >= ENTRIES_MAX:
                return fn
            checks = _Checks()
            if not checks.function(fn):
                self.seen[key] = None  # uncacheable: never looked into again
                return fn
            handle = _pickle(ctl, fn)
            self.made += 1
            self.entries[key] = _Entry(fn, checks, handle)
            return handle

    def _seen_before(self, key: int, fn: types.FunctionType) -> bool:
        if key in self.seen:
            seen = self.seen[key]
            if seen is None:
                return False
            if seen() is fn:
                return True
        if len(self.seen) >= SEEN_MAX:
            self.seen.clear()
        self.seen[key] = weakref.ref(fn)
        return False

    def args(self, ctl: Controller, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Positional arguments, the functions among them by handle."""
        if types.FunctionType not in map(type, args):
            return args
        return tuple(self.ref(ctl, a) for a in args)

    def mapping(self, ctl: Controller, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data=``, ``globals=`` or keyword arguments, the functions among them by handle."""
        if types.FunctionType not in map(type, values.values()):
            return values
        return {name: self.ref(ctl, value) for name, value in values.items()}


def _pickle(ctl: Controller, fn: types.FunctionType) -> Code:
    key = next(KEYS)
    return Code(ctl, key, fn.__qualname__, publish(ctl, key, fn, f"function {fn.__qualname__}"))


class _Checks:
    """What must stay the same object for a function's pickle to stay right.

    ``maps`` holds ``(mapping, name, value)``: ``value`` is ``_MISSING`` for a
    name the function uses that its globals do not hold (a builtin, an
    attribute), which a new global of that name would shadow. ``attrs`` holds
    ``(object, attribute, value)``.
    """

    def __init__(self) -> None:
        self.maps: list[tuple[Any, str, Any]] = []
        self.attrs: list[tuple[Any, str, Any]] = []
        self.visited: set[int] = set()

    def function(self, fn: types.FunctionType) -> bool:
        if id(fn) in self.visited:
            return True
        self.visited.add(id(fn))
        for attr in ("__code__", "__defaults__", "__kwdefaults__", "__dict__"):
            self.attrs.append((fn, attr, getattr(fn, attr)))
        if not all(self.stable(v) for v in fn.__defaults__ or ()):
            return False
        if not self.mapping(fn.__kwdefaults__ or {}) or not self.mapping(fn.__dict__):
            return False
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not filled yet
                return False
            if not self.stable(value):
                return False
            self.attrs.append((cell, "cell_contents", value))
        fn_globals = fn.__globals__
        for name in _names(fn.__code__):
            value = fn_globals.get(name, _MISSING)
            self.maps.append((fn_globals, name, value))
            if value is not _MISSING and not self.stable(value):
                return False
        return True

    def mapping(self, mapping: Mapping[str, Any]) -> bool:
        for name, value in mapping.items():
            if not self.stable(value):
                return False
            self.maps.append((mapping, name, value))
        return True

    def klass(self, cls: type) -> bool:
        if id(cls) in self.visited:
            return True
        self.visited.add(id(cls))
        if not self.stable(type(cls)) or not all(self.stable(b) for b in cls.__bases__):
            return False
        self.attrs.append((cls, "__bases__", cls.__bases__))
        namespace = cls.__dict__
        for name, value in namespace.items():
            self.maps.append((namespace, name, value))
            if (name.startswith("__") and name.endswith("__")) or name in _CLASS_MACHINERY:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                parts = (value.fget, value.fset, value.fdel)
                if not all(self.stable(p) for p in parts):
                    return False
            elif not self.stable(value):
                return False
        return True

    def stable(self, value: Any) -> bool:
        """Whether ``value`` pickles the same while it is the same object."""
        kind = type(value)
        if kind in _ATOMS or kind is types.ModuleType:
            return True
        if kind is tuple or kind is frozenset:
            return all(self.stable(v) for v in value)
        if kind is types.BuiltinFunctionType:
            owner = value.__self__
            return owner is None or type(owner) is types.ModuleType
        if kind is types.FunctionType:
            return _setup.by_reference(value) or self.function(value)
        if isinstance(value, type):
            return _setup.by_reference(value) or self.klass(value)
        return False


#: names by code object, so a function is read once however often it is checked
_NAMES: weakref.WeakKeyDictionary[types.CodeType, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _names(code: types.CodeType) -> tuple[str, ...]:
    """Every global (or attribute) name a code object and the code inside it use."""
    names = _NAMES.get(code)
    if names is None:
        found = dict.fromkeys(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found.update(dict.fromkeys(_names(const)))
        names = tuple(found)
        _NAMES[code] = names
    return names
