"""Launchers registered under the entry point group ``pycrew.launchers``.

A distribution registers a launcher class in its ``pyproject.toml``::

    [project.entry-points."pycrew.launchers"]
    mycluster = "mypackage.launcher:MyClusterLauncher"

``pycrew.controller(launcher="mycluster")`` then finds it by that name. A
plugin is checked as it is loaded, and a broken one is refused with an error
that names it and says what is wrong.
"""

from __future__ import annotations

import logging

from .._errors import LaunchError
from ._launcher import Launcher

GROUP = "pycrew.launchers"

log = logging.getLogger("pycrew.engines")


def available() -> list[str]:
    """Names of the registered launchers (nothing is imported to list them)."""
    import importlib.metadata  # here: it takes a tenth of a cold start to import

    return sorted({ep.name for ep in importlib.metadata.entry_points(group=GROUP)})


def load(name: str) -> type[Launcher]:
    """The launcher class registered as ``name``, checked.

    Raises:
        LaunchError: no launcher has that name, or the plugin is broken: it
            cannot be imported, is not a ``Launcher`` subclass, or leaves
            an abstract method unimplemented.
    """
    import importlib.metadata
    import inspect

    found = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise LaunchError(
            f"no launcher named {name!r} is registered (entry point group {GROUP!r}); "
            f"registered: {', '.join(available()) or 'none'}"
        )
    entry = found[0]
    where = f"launcher plugin {name!r} ({entry.value})"
    try:
        value = entry.load()
    except Exception as exc:
        raise LaunchError(f"{where} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if not (inspect.isclass(value) and issubclass(value, Launcher)):
        raise LaunchError(f"{where} is not a subclass of pycrew.launchers.Launcher but {value!r}")
    if inspect.isabstract(value):
        missing = ", ".join(sorted(getattr(value, "__abstractmethods__", ())))
        raise LaunchError(f"{where} does not implement {missing}")
    log.debug("loaded %s", where)
    return value
