"""pycrew: crew for Python.

One controller object accepts Python tasks and returns their results, while
it launches, scales and retires worker processes that dial back over one
authenticated TCP port (optionally TLS).

    import pycrew

    with pycrew.local_controller(workers=2) as ctl:
        results = ctl.map(pow, iterate={"base": [2, 3], "exp": [10, 2]})
"""

# The names below load on first use, so that a worker process (which imports
# this package to reach pycrew._worker._worker) does not pay for the controller side.
from ._integrations._joblib_light import install as _install_joblib_hook
from ._version import __version__

# joblib.parallel_config(backend="pycrew") works from here on, whether joblib
# is imported before or after pycrew; joblib itself is not imported
_install_joblib_hook()

TYPE_CHECKING = False  # typing itself is slow to import

if TYPE_CHECKING:
    from ._controller._asyncio import as_completed
    from ._controller._cloud import aws_batch_controller, kubernetes_controller
    from ._controller._controller import Controller
    from ._controller._executor import Executor
    from ._controller._factories import (
        controller,
        local_controller,
        lsf_controller,
        pbs_controller,
        sge_controller,
        slurm_controller,
        ssh_controller,
    )
    from ._controller._futures import BrokenExecutorError, TaskCancelledError, TaskFuture
    from ._controller._group import ControllerGroup
    from ._controller._sequential import sequential_controller
    from ._controller._shapes import with_resources
    from ._controller._share import Shared
    from ._engines._aws_batch._monitor import AwsBatchMonitor
    from ._engines._kubernetes._monitor import KubernetesMonitor
    from ._engines._local import LocalMonitor
    from ._engines._lsf import LsfMonitor
    from ._engines._pbs import PbsMonitor
    from ._engines._sge import SgeMonitor
    from ._engines._slurm import SlurmMonitor
    from ._errors import (
        ArgumentError,
        ArgumentTypeError,
        ClosedError,
        CrashLimitError,
        CrewError,
        CrewTimeoutError,
        CrewWarning,
        DependencyError,
        LaunchError,
        ProtocolError,
        RemoteTraceback,
        TaskCrashError,
        TaskError,
        TaskTimeoutError,
        TlsConfigError,
    )
    from ._integrations._pandas import to_pandas
    from ._operations._metrics import Metrics
    from ._resources import Resources
    from ._results import Status, Summary, TaskResult, WorkerSummary
    from ._wire._tls import TLS

_HOMES = {
    "Controller": "_controller._controller",
    "TaskFuture": "_controller._futures",
    "as_completed": "_controller._asyncio",
    "Executor": "_controller._executor",
    "to_pandas": "_integrations._pandas",
    "sequential_controller": "_controller._sequential",
    "pbs_controller": "_controller._factories",
    "lsf_controller": "_controller._factories",
    "sge_controller": "_controller._factories",
    "ssh_controller": "_controller._factories",
    "SgeMonitor": "_engines._sge",
    "LsfMonitor": "_engines._lsf",
    "PbsMonitor": "_engines._pbs",
    "Shared": "_controller._share",
    "ControllerGroup": "_controller._group",
    "local_controller": "_controller._factories",
    "LocalMonitor": "_engines._local",
    "Metrics": "_operations._metrics",
    "controller": "_controller._factories",
    "slurm_controller": "_controller._factories",
    "SlurmMonitor": "_engines._slurm",
    "aws_batch_controller": "_controller._cloud",
    "kubernetes_controller": "_controller._cloud",
    "AwsBatchMonitor": "_engines._aws_batch._monitor",
    "KubernetesMonitor": "_engines._kubernetes._monitor",
    "ArgumentError": "_errors",
    "ArgumentTypeError": "_errors",
    "BrokenExecutorError": "_controller._futures",
    "ClosedError": "_errors",
    "CrashLimitError": "_errors",
    "CrewError": "_errors",
    "CrewTimeoutError": "_errors",
    "CrewWarning": "_errors",
    "DependencyError": "_errors",
    "LaunchError": "_errors",
    "ProtocolError": "_errors",
    "RemoteTraceback": "_errors",
    "TaskCancelledError": "_controller._futures",
    "TaskCrashError": "_errors",
    "TaskError": "_errors",
    "TaskTimeoutError": "_errors",
    "TlsConfigError": "_errors",
    "Status": "_results",
    "Summary": "_results",
    "TaskResult": "_results",
    "WorkerSummary": "_results",
    "TLS": "_wire._tls",
    "Resources": "_resources",
    "with_resources": "_controller._shapes",
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
    "AwsBatchMonitor",
    "BrokenExecutorError",
    "ClosedError",
    "Controller",
    "ControllerGroup",
    "CrashLimitError",
    "CrewError",
    "CrewTimeoutError",
    "CrewWarning",
    "DependencyError",
    "Executor",
    "KubernetesMonitor",
    "LaunchError",
    "LocalMonitor",
    "LsfMonitor",
    "Metrics",
    "PbsMonitor",
    "ProtocolError",
    "RemoteTraceback",
    "Resources",
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
    "aws_batch_controller",
    "controller",
    "kubernetes_controller",
    "local_controller",
    "lsf_controller",
    "pbs_controller",
    "sequential_controller",
    "sge_controller",
    "slurm_controller",
    "ssh_controller",
    "to_pandas",
    "with_resources",
]
