"""``controller()``: a controller whose workers start through any launcher plugin."""

from __future__ import annotations

import inspect
from typing import Any

from ._controller import Controller
from ._errors import LaunchError
from .launchers import Launcher, load


def controller(launcher: Launcher | str, **options: Any) -> Controller:
    """A controller whose workers start through ``launcher``.

    Args:
        launcher: a :class:`pycrew.launchers.Launcher` object, or the name of a
            launcher registered under the entry point group
            ``pycrew.launchers`` (made with no arguments).
        **options: the controller options, as for :func:`local_controller`
            (``workers``, ``host``, ``tls``, ``seconds_idle``, ...).

    Raises:
        LaunchError: the named launcher is not registered, or is broken.
    """
    if isinstance(launcher, str):
        name = launcher
        cls = load(name)
        try:
            inspect.signature(cls).bind()
        except TypeError as exc:
            raise LaunchError(
                f"launcher {name!r} cannot be made without arguments ({exc}); "
                "make it yourself and pass the object"
            ) from exc
        launcher = cls()
    return Controller(launcher, **options)
