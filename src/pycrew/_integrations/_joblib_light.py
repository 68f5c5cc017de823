"""The parts of the joblib backend that load without joblib.

Workers import pycrew too, and joblib (with numpy) costs far more than pycrew
itself, so neither the package nor a worker loads ``pycrew._integrations._joblib``:

- registration: ``import pycrew`` registers the backend's name with a factory
  that imports ``pycrew._integrations._joblib`` the first time joblib asks for it. If
  joblib is loaded already, that happens at once; if not, a finder on
  ``sys.meta_path``, which looks at the name ``joblib.parallel`` and nothing
  else, does it as soon as that module has run. ``import pycrew.joblib``
  registers the backend class itself, eagerly.
- ``run_batch``, what a worker runs for each batch.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself is slow to import, and every worker loads this
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

NAME = "pycrew"
_WATCHED = "joblib.parallel"


def _make_backend(**options: Any) -> Any:
    """The factory joblib calls for ``backend="pycrew"``: the backend class, loaded now."""
    from ._joblib import PycrewBackend

    return PycrewBackend(**options)


def register_lazily(parallel: Any) -> None:
    """Register the lazy factory with ``joblib.parallel``, unless the name is taken."""
    backends = getattr(parallel, "BACKENDS", None)
    register = getattr(parallel, "register_parallel_backend", None)
    if isinstance(backends, dict) and NAME not in backends and callable(register):
        register(NAME, _make_backend)


class _Finder:
    """Finds nothing itself: it wraps the loader of ``joblib.parallel`` to register after it."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _WATCHED:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec

        def exec_module(module: Any) -> None:
            run(module)
            register_lazily(module)

        # the loader is this spec's own object, so only this import is touched;
        # module.__loader__ stays the real loader (tracebacks read source through it)
        loader.exec_module = exec_module
        return spec


def run_batch(batch: Callable[[], Any], threads: int | None, keep: bool = False) -> Any:
    """Run one joblib batch on a worker, its BLAS/OpenMP pools capped at ``threads``.

    Without a cap, N workers on N cores each start N BLAS threads, and small
    linear algebra (a scikit-learn fit on a small dataset) gets several times
    slower than sequential. joblib's own process backend caps them through
    the environment of the workers it starts; pycrew's workers may be running
    already, so the cap is applied with threadpoolctl (a scikit-learn
    dependency) where it is installed: around each batch, or, with ``keep``
    (a worker of the backend's own shared controller, which runs nothing but
    batches), once, and again only when the cap changes or modules were
    imported since (they may bring a pool of their own). Applying it costs a
    few milliseconds, as much as a small fit.
    """
    if threads is None:
        return batch()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return batch()
    if not keep:
        with threadpool_limits(limits=threads):
            return batch()
    applied = (threads, len(sys.modules))
    if _KEPT.get("cap") != applied:
        threadpool_limits(limits=threads)  # in force until changed: this worker runs batches only
        _KEPT["cap"] = (threads, len(sys.modules))
    return batch()


#: on a worker of a shared controller: the cap in force, and how many modules were loaded then
_KEPT: dict[str, tuple[int, int]] = {}


def install() -> None:
    """Register now if joblib is loaded, and in any case when it is (again) later."""
    parallel = sys.modules.get(_WATCHED)
    if parallel is not None:
        register_lazily(parallel)
    # by name, not class: a reloaded pycrew must not add a second finder
    mine = [f for f in sys.meta_path if type(f).__qualname__ == "_Finder"]
    if not any(type(f).__module__ == __name__ for f in mine):
        sys.meta_path.insert(0, _Finder())
