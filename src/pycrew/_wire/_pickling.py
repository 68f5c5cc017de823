"""Pickling for the wire: what a task or a result becomes before it is framed.

```
 dumps(obj) ─► C pickler (protocol 5; buffers of 64 KiB or more kept apart)
   └─ something of __main__, a lambda, a registered module ─► cloudpickle,
      code keeping its file name (and a notebook cell's lines)
 loads(meta, buffers) ─► the object (after authentication only: see _frames)
 Serializers: a controller's own ways for some types (mirai's serial_config)
```

The controller's import folders travel too (``import_paths``), so that a
worker can import what a task's pickle names by reference.
"""

from __future__ import annotations

import pickle
import sys

from ._frames import OOB_MIN

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def import_paths() -> list[str]:
    """The folders this process imports from that are the user's own.

    The working directory and every ``sys.path`` entry (a script's folder,
    PYTHONPATH, an editable install), as absolute paths, less the
    interpreter's own library and site-packages: a worker has its own.
    """
    import os

    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    found: dict[str, None] = {}
    for entry in [os.getcwd(), *sys.path]:
        path = os.path.abspath(entry or os.curdir)
        real = os.path.realpath(path)
        if any(real == p or real.startswith(p + os.sep) for p in own):
            continue
        found.setdefault(path)
    return list(found)


def add_import_paths(joined: str) -> None:
    """A worker: append the controller's import folders that exist here to sys.path."""
    import os

    for path in joined.split(os.pathsep) if joined else ():
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


#: how protocol 4+ writes the module name of a class or function of ``__main__``
#: (STACK_GLOBAL's module string, first written in full): a string that merely
#: holds "__main__" (a task's label, say) does not match, and costs no re-pickle
MAIN_MODULE = b"\x8c\x08__main__"


def names_main(data: bytes) -> bool:
    """Whether a pickle names something of ``__main__`` (a worker could not find it)."""
    return MAIN_MODULE in data


def dumps(obj: Any, serializers: Serializers | None = None) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` (protocol 5; callables by value where needed), large buffers apart.

    ``serializers`` are the controller's own ways to pickle some types.
    """
    buffers: list[memoryview] = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < OOB_MIN:
            return True
        buffers.append(raw)
        return False

    # The C pickler is twice as fast as cloudpickle's; but it pickles
    # functions and classes of __main__ by reference, which a worker cannot
    # resolve, and it refuses lambdas and local functions. Either way,
    # cloudpickle takes over and ships them by value.
    try:
        if by_value_modules():
            raise pickle.PicklingError("modules are registered to travel by value")
        if serializers is None:
            data = pickle.dumps(obj, protocol=5, buffer_callback=keep)
        else:
            data = _pickle_with(serializers.plain, obj, keep)
    except Exception:
        data = MAIN_MODULE
    if names_main(data):
        buffers.clear()
        script = _script_pickler() if serializers is None else serializers.script()
        data = _pickle_with(script, obj, keep)
    return data, buffers


def _pickle_with(pickler: Any, obj: Any, keep: Any) -> bytes:
    import io

    with io.BytesIO() as out:
        pickler(out, protocol=5, buffer_callback=keep).dump(obj)
        return out.getvalue()


class Serializers:
    """A controller's own ways to pickle some types (mirai's ``serial_config``).

    ``table`` maps a type to ``(dumps, loads)``: ``dumps(obj)`` gives bytes or
    any buffer (a large one travels out of band, uncopied), and
    ``loads(buffer)`` rebuilds the object from it. Wherever an object of
    exactly that type sits in a task's arguments or a result, at any depth,
    it travels this way. ``loads`` goes along by reference, or by value when
    it lives in a script, so a worker needs nothing installed but the type's
    own package.
    """

    def __init__(self, table: dict[type, tuple[Any, Any]]) -> None:
        import collections
        import copyreg
        import functools

        self.table = table
        self.reducers = {
            cls: functools.partial(_reduce_custom, *pair) for cls, pair in table.items()
        }
        # the C pickler reads dispatch_table from its class when it is made
        dispatch: Any = collections.ChainMap(self.reducers, copyreg.dispatch_table)
        self.plain: Any = type("Pickler", (pickle.Pickler,), {"dispatch_table": dispatch})
        self._script: Any = None

    def script(self) -> Any:
        """cloudpickle's pickler (as ``_script_pickler``), with these types added."""
        if self._script is None:
            import collections

            base = _script_pickler()
            dispatch: Any = collections.ChainMap(self.reducers, base.dispatch_table)
            self._script = type("ScriptPickler", (base,), {"dispatch_table": dispatch})
        return self._script


def _reduce_custom(dump: Any, load: Any, obj: Any) -> tuple[Any, ...]:
    data = dump(obj)
    if not isinstance(data, bytes):
        # a buffer (a pyarrow Buffer, a memoryview) travels out of band when large
        data = pickle.PickleBuffer(data)
    return _load_custom, (load, data)


def _load_custom(load: Any, data: Any) -> Any:
    return load(data)


#: a worker's serializers, as its controller's SETUP said (None: plain pickle)
WORKER_SERIALIZERS: Serializers | None = None


def by_value_modules() -> bool:
    """Whether the user asked cloudpickle to ship some module by value.

    The C pickler knows nothing of cloudpickle.register_pickle_by_value():
    while any module is registered, cloudpickle pickles everything.
    """
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None:
        return False
    # asked twice per push: the registry itself where it is found, not the
    # copy of it that the public call makes
    registry = getattr(getattr(cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES", None)
    if isinstance(registry, set):
        return bool(registry)
    return bool(cloudpickle.list_registry_pickle_by_value())


_SCRIPT_PICKLER: Any = None


def _script_pickler() -> Any:
    """cloudpickle's pickler, but code keeps the name of the file it came from.

    cloudpickle renames every code object it ships to ``<dynamic-code>``, so a
    task's traceback on the worker could show no line of the user's script.
    Ours keeps the real file name (the worker reads the lines where it can see
    the file), and where the file is not on disk (a notebook cell, whose lines
    live in linecache), the lines travel with the code.
    """
    global _SCRIPT_PICKLER
    if _SCRIPT_PICKLER is None:
        import collections
        import types

        import cloudpickle  # only when needed: it is slow to import

        try:
            from cloudpickle.cloudpickle import _code_reduce
        except ImportError:  # another cloudpickle layout: plain code objects then
            _SCRIPT_PICKLER = cloudpickle.Pickler
            return _SCRIPT_PICKLER

        def reduce_code(code: types.CodeType) -> tuple[Any, ...]:
            _, args = _code_reduce(code)
            filename = code.co_filename
            args = tuple(filename if a == "<dynamic-code>" else a for a in args)
            return _code_with_source, (args, filename, _source_lines(filename))

        class ScriptPickler(cloudpickle.Pickler):  # type: ignore[misc]
            dispatch_table = collections.ChainMap(
                {types.CodeType: reduce_code}, cloudpickle.Pickler.dispatch_table
            )

        _SCRIPT_PICKLER = ScriptPickler
    return _SCRIPT_PICKLER


def _source_lines(filename: str) -> list[str] | None:
    """The lines of a file that exists only in this process's linecache (a notebook cell)."""
    import linecache
    import os

    if not filename or filename.startswith("<") or os.path.isfile(filename):
        return None
    return linecache.getlines(filename) or None


def _code_with_source(args: tuple[Any, ...], filename: str, lines: list[str] | None) -> Any:
    """Rebuild a shipped code object; its source lines, if they came along, go to linecache."""
    import types

    if lines:
        import linecache

        size = sum(len(line) for line in lines)
        # no modification time: linecache.checkcache() never drops the entry
        linecache.cache.setdefault(filename, (size, None, lines, filename))
    return types.CodeType(*args)


def loads(data: bytes | memoryview, buffers: Sequence[Any]) -> Any:
    return pickle.loads(data, buffers=buffers)
