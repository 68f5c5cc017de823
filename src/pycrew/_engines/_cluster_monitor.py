"""Every batch scheduler's monitor: pycrew's jobs in the queue, to list or cancel,
and which of them lost their controller (by the registry of launches).

```
 pycrew monitor <engine> ──► ClusterMonitor.jobs(): the engine's queue listing, pycrew's jobs
                 --stale ──► stale(): each job the registry knows, whose controller is gone
           --cancel/--all ──► terminate(): only pycrew's jobs, whatever ids were given
```

An engine subclasses ``ClusterMonitor`` with its queue listing and its
cancel command; the cloud engines list pods or jobs the same way.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ArgumentError
from .._operations import _ledger
from ._cluster import JOB_PREFIX, engine_log
from ._launcher import some

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Sequence


@dataclass(frozen=True)
class ClusterJobInfo:
    """One pycrew job (or array element) in a scheduler's queue."""

    id: str
    array_index: int | None
    state: str
    controller: str
    seconds: float | None
    name: str


class ClusterMonitor(abc.ABC):
    """pycrew's jobs in a scheduler's queue, to look at or cancel, even after a crash.

    Args:
        user: whose jobs (default: the current user). Staleness comes from the
            current user's registry of launches on this machine, so it is
            known only for jobs that controllers of this user submitted here.
    """

    #: the engine's name in its logger's, ``pycrew.engines.<engine>``
    engine = ""

    def __init__(self, user: str | None = None) -> None:
        import getpass

        self.user = user or getpass.getuser()
        #: what was wrong with the registry at the last ``stale()`` (unreadable lines)
        self.problems: list[str] = []

    @property
    def log(self) -> logging.Logger:
        """Where this monitor's commands and cancellations are logged."""
        return engine_log(self.engine)

    @abc.abstractmethod
    def jobs(self) -> list[ClusterJobInfo]:
        """The user's pycrew jobs still queued or running, one per array element."""

    @abc.abstractmethod
    def cancel(self, ids: Sequence[str]) -> None:
        """Cancel these jobs or array elements."""

    def whole_job(self, job_id: str) -> str:
        """The job an array element belongs to (``123_4`` → ``123``)."""
        return job_id.partition("_")[0]

    @staticmethod
    def controller_of(job_name: str) -> str:
        return job_name[len(JOB_PREFIX) :].rpartition(".")[0]

    def stale(self) -> list[ClusterJobInfo]:
        """The jobs whose controller is gone, by the registry of launches.

        Gone: its session ended (``terminate()`` finished, yet the job is
        still queued or running), or it ran on this host and its process no
        longer exists. A job the registry does not know is never stale.
        """
        jobs = self.jobs()
        verdicts = self._verdicts(jobs)
        return [job for job in jobs if verdicts.get(job.id, ("", None))[1] is not None]

    def _verdicts(self, jobs: Sequence[ClusterJobInfo]) -> dict[str, tuple[str, str | None]]:
        """For each job the registry knows: its worker id and why its controller is gone."""
        index, self.problems = _ledger.Index.load()
        now = time.time()
        verdicts: dict[str, tuple[str, str | None]] = {}
        for job in jobs:
            launch = index.by_job.get(job.id)
            if launch is None or launch.controller != job.controller:
                continue  # not ours to judge, or a job id handed out again
            submitted = None if job.seconds is None else now - job.seconds
            # submitted well after that launch (minutes of slack: the queue's clock
            # is the cluster's): another job that was given the same id
            if submitted is not None and submitted > launch.time + 300:
                continue
            verdicts[job.id] = (launch.worker, index.gone(launch))
        return verdicts

    def terminate(
        self, ids: Iterable[str] | None = None, all: bool = False, stale: bool = False
    ) -> list[str]:
        """Cancel pycrew jobs: those in ``ids``, every one of the user's, or the stale ones.

        Exactly one of ``ids``, ``all=True`` and ``stale=True``. Only jobs
        that are pycrew's are touched, whatever ``ids`` holds. Returns the
        ids cancelled.
        """
        if sum((ids is not None, bool(all), bool(stale))) != 1:
            raise ArgumentError("give the job ids to cancel, all=True or stale=True (exactly one)")
        if stale:
            chosen = sorted(job.id for job in self.stale())
        elif all:
            chosen = sorted({job.id for job in self.jobs()})
        else:
            assert ids is not None
            ours = {job.id for job in self.jobs()}
            wanted = [ids] if isinstance(ids, str) else list(ids)
            # an element, or a whole job or array with an element of ours
            bases = {self.whole_job(o) for o in ours}
            chosen = sorted({i for i in wanted if i in ours or i in bases})
        if chosen:
            self.log.info("cancelling %d pycrew job(s): %s", len(chosen), some(chosen))
            self.cancel(chosen)
        return chosen
