"""pycrew: crew for Python.

One controller object accepts Python tasks and returns their results, while
it launches, scales and retires worker processes that dial back over one
authenticated TCP port (optionally TLS).

    import pycrew

    with pycrew.local_controller(workers=2) as ctl:
        results = ctl.map(pow, iterate={"base": [2, 3], "exp": [10, 2]})
"""

# The names below load on first use, so that a worker process (which imports
# this package to reach pycrew._worker) does not pay for the controller side.
from ._version import __version__

TYPE_CHECKING = False  # typing itself is slow to import

if TYPE_CHECKING:
    from ._controller import Controller, TaskFuture
    from ._errors import (
        ClosedError,
        CrashLimitError,
        CrewError,
        CrewTimeoutError,
        CrewWarning,
        LaunchError,
        ProtocolError,
        TaskError,
        TlsConfigError,
    )
    from ._group import ControllerGroup
    from ._local import local_controller
    from ._metrics import Metrics
    from ._monitor import LocalMonitor
    from ._plugin import controller
    from ._slurm import SlurmMonitor, slurm_controller
    from ._task import Status, Summary, TaskResult, WorkerSummary
    from ._tls import TLS

_HOMES = {
    "Controller": "_controller",
    "TaskFuture": "_controller",
    "ControllerGroup": "_group",
    "local_controller": "_local",
    "LocalMonitor": "_monitor",
    "Metrics": "_metrics",
    "controller": "_plugin",
    "slurm_controller": "_slurm",
    "SlurmMonitor": "_slurm",
    "ClosedError": "_errors",
    "CrashLimitError": "_errors",
    "CrewError": "_errors",
    "CrewTimeoutError": "_errors",
    "CrewWarning": "_errors",
    "LaunchError": "_errors",
    "ProtocolError": "_errors",
    "TaskError": "_errors",
    "TlsConfigError": "_errors",
    "Status": "_task",
    "Summary": "_task",
    "TaskResult": "_task",
    "WorkerSummary": "_task",
    "TLS": "_tls",
}


def __getattr__(name: str) -> object:
    import importlib

    if name in ("launchers", "metrics"):  # public sub-modules: plugins, reading metrics
        value: object = importlib.import_module(f"pycrew.{name}")
        globals()[name] = value
        return value
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pycrew' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pycrew.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "TLS",
    "ClosedError",
    "Controller",
    "ControllerGroup",
    "CrashLimitError",
    "CrewError",
    "CrewTimeoutError",
    "CrewWarning",
    "LaunchError",
    "LocalMonitor",
    "Metrics",
    "ProtocolError",
    "SlurmMonitor",
    "Status",
    "Summary",
    "TaskError",
    "TaskFuture",
    "TaskResult",
    "TlsConfigError",
    "WorkerSummary",
    "__version__",
    "controller",
    "local_controller",
    "slurm_controller",
]
