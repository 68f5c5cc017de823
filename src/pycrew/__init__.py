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
from ._joblib_light import install as _install_joblib_hook
from ._version import __version__

# joblib.parallel_config(backend="pycrew") works from here on, whether joblib
# is imported before or after pycrew; joblib itself is not imported
_install_joblib_hook()

TYPE_CHECKING = False  # typing itself is slow to import

if TYPE_CHECKING:
    from ._asyncio import as_completed
    from ._controller import Controller
    from ._errors import (
        ArgumentError,
        ArgumentTypeError,
        ClosedError,
        CrashLimitError,
        CrewError,
        CrewTimeoutError,
        CrewWarning,
        LaunchError,
        ProtocolError,
        RemoteTraceback,
        TaskCrashError,
        TaskError,
        TaskTimeoutError,
        TlsConfigError,
    )
    from ._executor import Executor
    from ._futures import BrokenExecutorError, TaskCancelledError, TaskFuture
    from ._group import ControllerGroup
    from ._local import LocalMonitor, local_controller
    from ._lsf import LsfMonitor, lsf_controller
    from ._metrics import Metrics
    from ._pandas import to_pandas
    from ._pbs import PbsMonitor, pbs_controller
    from ._plugin import controller
    from ._sequential import sequential_controller
    from ._sge import SgeMonitor, sge_controller
    from ._share import Shared
    from ._slurm import SlurmMonitor, slurm_controller
    from ._ssh import ssh_controller
    from ._task import Status, Summary, TaskResult, WorkerSummary
    from ._tls import TLS

_HOMES = {
    "Controller": "_controller",
    "TaskFuture": "_futures",
    "as_completed": "_asyncio",
    "Executor": "_executor",
    "to_pandas": "_pandas",
    "sequential_controller": "_sequential",
    "pbs_controller": "_pbs",
    "lsf_controller": "_lsf",
    "sge_controller": "_sge",
    "ssh_controller": "_ssh",
    "SgeMonitor": "_sge",
    "LsfMonitor": "_lsf",
    "PbsMonitor": "_pbs",
    "Shared": "_share",
    "ControllerGroup": "_group",
    "local_controller": "_local",
    "LocalMonitor": "_local",
    "Metrics": "_metrics",
    "controller": "_plugin",
    "slurm_controller": "_slurm",
    "SlurmMonitor": "_slurm",
    "ArgumentError": "_errors",
    "ArgumentTypeError": "_errors",
    "BrokenExecutorError": "_futures",
    "ClosedError": "_errors",
    "CrashLimitError": "_errors",
    "CrewError": "_errors",
    "CrewTimeoutError": "_errors",
    "CrewWarning": "_errors",
    "LaunchError": "_errors",
    "ProtocolError": "_errors",
    "RemoteTraceback": "_errors",
    "TaskCancelledError": "_futures",
    "TaskCrashError": "_errors",
    "TaskError": "_errors",
    "TaskTimeoutError": "_errors",
    "TlsConfigError": "_errors",
    "Status": "_task",
    "Summary": "_task",
    "TaskResult": "_task",
    "WorkerSummary": "_task",
    "TLS": "_tls",
}


def __getattr__(name: str) -> object:
    import importlib

    # public sub-modules: plugins, reading metrics, the joblib backend
    if name in ("launchers", "metrics", "joblib"):
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
    "ArgumentError",
    "ArgumentTypeError",
    "BrokenExecutorError",
    "ClosedError",
    "Controller",
    "ControllerGroup",
    "CrashLimitError",
    "CrewError",
    "CrewTimeoutError",
    "CrewWarning",
    "Executor",
    "LaunchError",
    "LocalMonitor",
    "LsfMonitor",
    "Metrics",
    "PbsMonitor",
    "ProtocolError",
    "RemoteTraceback",
    "SgeMonitor",
    "Shared",
    "SlurmMonitor",
    "Status",
    "Summary",
    "TaskCancelledError",
    "TaskCrashError",
    "TaskError",
    "TaskFuture",
    "TaskResult",
    "TaskTimeoutError",
    "TlsConfigError",
    "WorkerSummary",
    "__version__",
    "as_completed",
    "controller",
    "local_controller",
    "lsf_controller",
    "pbs_controller",
    "sequential_controller",
    "sge_controller",
    "slurm_controller",
    "ssh_controller",
    "to_pandas",
]
