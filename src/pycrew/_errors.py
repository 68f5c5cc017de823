"""Every error pycrew raises, under one root.

```
CrewError
 ├── CrewTimeoutError (also a TimeoutError)   a bounded wait ran out
 ├── ClosedError                              the controller was terminated
 ├── TaskError                                a task failed and error="stop" asked to raise
 ├── CrashLimitError                          a task name crashed more than crashes_max times
 ├── LaunchError                              a launcher could not start workers
 ├── TlsConfigError                           a TLS setting is unusable
 └── ProtocolError                            a peer broke the wire protocol
CrewWarning (a UserWarning)                   task errors or warnings with error="warn"
```
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from ._task import TaskResult


class CrewError(Exception):
    """Root of every pycrew error."""


class CrewTimeoutError(CrewError, TimeoutError):
    """A bounded wait in pycrew ran out of time."""


class ClosedError(CrewError):
    """The controller was terminated and cannot take this call."""


class TaskError(CrewError):
    """One or more tasks did not succeed and the caller asked to raise.

    Attributes:
        results: every result record of the call that raised, in order.
    """

    def __init__(self, message: str, results: list[TaskResult]) -> None:
        super().__init__(message)
        self.results = results


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


class CrewWarning(UserWarning):
    """Tasks ended with errors or warnings, and the caller asked for a warning."""
