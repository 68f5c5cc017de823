"""Every error pycrew raises, under one root.

```
CrewError
 ├── ArgumentError (also a ValueError)        a bad argument value
 ├── ArgumentTypeError (also a TypeError)     an argument of the wrong type
 ├── CrewTimeoutError (also a TimeoutError)   a bounded wait ran out
 ├── ClosedError                              the controller was terminated
 ├── BrokenExecutorError (a BrokenExecutor)   an Executor's initializer failed (in _futures)
 ├── TaskError                                a task failed (or map/pop/collect asked to raise)
 ├── TaskCrashError                           a task's worker died while running it
 ├── TaskCancelledError (a CancelledError)    a task was cancelled (in _futures)
 ├── TaskTimeoutError (also a TimeoutError)   a task ran past its seconds_timeout
 ├── CrashLimitError                          a task name crashed more than crashes_max times
 ├── LaunchError                              a launcher could not start workers
 ├── TlsConfigError                           a TLS setting is unusable
 ├── ProtocolError                            a peer broke the wire protocol
 └── RemoteTraceback                          the worker's traceback, as a raised error's cause
CrewWarning (a UserWarning)                   task errors or warnings with error="warn"
```

The two that are also ``concurrent.futures`` errors live in ``_futures``,
which imports that package anyway: a worker, which never raises them,
starts without it.

A task that raised re-raises its own exception (``except ValueError`` works);
only what cannot be rebuilt here becomes a ``TaskError``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False

if TYPE_CHECKING:
    from ._results import TaskResult


class CrewError(Exception):
    """Root of every pycrew error."""


class ArgumentError(CrewError, ValueError):
    """An argument has a value pycrew cannot use."""


class ArgumentTypeError(CrewError, TypeError):
    """An argument is of a type pycrew cannot use."""


# Python 3.10 has its own concurrent.futures.TimeoutError; from 3.11 on it is
# the builtin. Either way, a pycrew timeout is caught by both names. (From 3.11
# on, concurrent.futures is not imported here: with the logging it brings, it
# took a third of a worker's imports.)
_TIMEOUTS: tuple[type[Exception], ...] = (TimeoutError,)
if sys.version_info < (3, 11):
    import concurrent.futures

    _TIMEOUTS = (concurrent.futures.TimeoutError, TimeoutError)


class CrewTimeoutError(CrewError, *_TIMEOUTS):  # type: ignore[misc]
    """A bounded wait in pycrew ran out of time (the task itself goes on)."""


class ClosedError(CrewError):
    """The controller was terminated and cannot take this call."""


class TaskError(CrewError):
    """One or more tasks did not succeed and the caller asked to raise.

    Also what a future raises for a task whose exception cannot be rebuilt
    in this process (its class is not importable here, say).

    Attributes:
        results: every result record of the call that raised, in order.
    """

    def __init__(self, message: str, results: list[TaskResult]) -> None:
        super().__init__(message)
        self.results = results


class TaskEnded(CrewError):
    """A task that ended without a value; ``record`` says how."""

    def __init__(self, message: str, record: TaskResult | None = None) -> None:
        super().__init__(message)
        self.record = record


class TaskCrashError(TaskEnded):
    """The worker running the task died (killed, out of memory, ...).

    Attributes:
        record: the task's result record.
    """


class TaskTimeoutError(TaskEnded, TimeoutError):
    """The task ran past its ``seconds_timeout``.

    Attributes:
        record: the task's result record.
    """


class DependencyError(TaskEnded):
    """The task did not run: a task whose result it takes (a future among its
    arguments) ended with an error, a crash or a timeout.

    Its cause (``__cause__``) is what that input's own ``result()`` raises.

    Attributes:
        record: the task's result record (status ``error``).
        upstream: the name of the input task that failed.
        upstream_status: how it ended: ``"error"``, ``"crash"`` or ``"timeout"``.
    """

    def __init__(
        self,
        message: str,
        record: TaskResult | None = None,
        upstream: str = "",
        upstream_status: str = "",
    ) -> None:
        super().__init__(message, record)
        self.upstream = upstream
        self.upstream_status = upstream_status


class CrashLimitError(CrewError):
    """A task name crashed its worker more than ``crashes_max`` times in a row.

    Attributes:
        name: the task name.
        crashes: how many consecutive crashes were counted.
        results: the records collected by the call that raised (nothing is lost).
    """

    def __init__(self, message: str, name: str, crashes: int, results: list[TaskResult]) -> None:
        super().__init__(message)
        self.name = name
        self.crashes = crashes
        self.results = results


class LaunchError(CrewError):
    """A launcher could not start workers."""


class TlsConfigError(CrewError):
    """A TLS setting is missing, malformed or unusable."""


class ProtocolError(CrewError):
    """A peer sent something the wire protocol does not allow."""


class RemoteTraceback(CrewError):
    """The traceback of a task's exception, as the worker formatted it.

    Set as the ``__cause__`` of the exception a future re-raises, so the
    worker's frames print below the caller's.
    """

    def __init__(self, trace: str) -> None:
        super().__init__(trace)
        self.trace = trace

    def __str__(self) -> str:
        return f'\n"""\n{self.trace.rstrip()}\n"""'


class CrewWarning(UserWarning):
    """Tasks ended with errors or warnings, and the caller asked for a warning."""
