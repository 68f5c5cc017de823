"""pycrew: crew for Python.

One controller object accepts Python tasks and returns their results, while
it launches, scales and retires worker processes that dial back over one
authenticated TCP port (optionally TLS).

    import pycrew

    with pycrew.local_controller(workers=2) as ctl:
        results = ctl.map(pow, iterate={"base": [2, 3], "exp": [10, 2]})
"""

from ._controller import Controller, TaskFuture, local_controller
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
from ._task import Status, Summary, TaskResult
from ._tls import TLS
from ._version import __version__

__all__ = [
    "TLS",
    "ClosedError",
    "Controller",
    "CrashLimitError",
    "CrewError",
    "CrewTimeoutError",
    "CrewWarning",
    "LaunchError",
    "ProtocolError",
    "Status",
    "Summary",
    "TaskError",
    "TaskFuture",
    "TaskResult",
    "TlsConfigError",
    "__version__",
    "local_controller",
]
