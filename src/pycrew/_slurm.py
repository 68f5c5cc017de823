"""``slurm_controller()`` and ``SlurmMonitor``: workers as SLURM jobs, and finding them later."""

from __future__ import annotations

import contextlib
import datetime
import getpass
import math
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _ledger
from ._controller import Controller
from ._errors import ArgumentError
from .launchers import SlurmLauncher
from .launchers._slurm import JOB_PREFIX, STARTUP_LOG, run_command

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

    from ._metrics import Metrics
    from ._tls import TLS


def cluster_host() -> str:
    """This machine's address on the network its default route leaves by.

    That is the address compute nodes most likely reach it at; a UDP socket
    "connected" to a private address asks the kernel without sending anything.
    """
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        address: str = probe.getsockname()[0]
        if not address.startswith("127."):
            return address
    with contextlib.suppress(OSError):
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


def slurm_controller(
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    partition: str | None = None,
    cpus_per_task: int | None = None,
    memory_gigabytes_per_cpu: float | None = None,
    memory_gigabytes_required: float | None = None,
    time_minutes: int | None = None,
    script_lines: Sequence[str] = (),
    script_directory: str | os.PathLike[str] | None = None,
    log_output: str | None = "/dev/null",
    log_error: str | None = STARTUP_LOG,
    log_bytes_max: int | None = 100 << 20,
    sbatch_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    seconds_interval: float = 0.5,
    seconds_timeout: float = 60,
    seconds_launch: float = 86400,
    seconds_idle: float = 300,
    seconds_wall: float = math.inf,
    seconds_heartbeat: float = 10,
    tasks_max: float = math.inf,
    tasks_timers: int = 0,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    reset_environment: bool = False,
    crashes_max: int = 5,
    seed: int | None = None,
    allow_public: bool = False,
    bytes_max: int = 4 << 30,
    metrics: Metrics | None = None,
    backup: Controller | None = None,
    retry_crashes: bool = False,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
    relay_output: bool = False,
) -> Controller:
    """A controller whose workers are SLURM jobs, submitted as job arrays.

    Args:
        name: the controller's name, part of every job name
            (``pycrew.<name>.<token>``).
        workers: the most workers (jobs) auto-scaling keeps at once.
        host: the address compute nodes dial; by default this machine's
            address on the network its default route leaves by.
        port: the port to listen on; 0 lets the OS pick.
        tls: ``"automatic"`` by default: tasks cross the cluster's network.
        partition, cpus_per_task, memory_gigabytes_per_cpu,
        memory_gigabytes_required, time_minutes, script_lines,
        script_directory, log_output, log_error, log_bytes_max, sbatch_options, python,
        array: how jobs are submitted; see :class:`pycrew.launchers.SlurmLauncher`.
        log_error: by default (``"(startup)"``) a job's stderr is kept only
            until its worker connects, so that a job that exits first can
            say why in the ``LaunchError`` raised after at most two such
            jobs; a path (SLURM patterns allowed) keeps it all, and is read
            the same way; ``"/dev/null"`` discards it.
        seconds_launch: a job that has not connected by then (one day by
            default: it may wait in the queue) is cancelled and replaced.

    The other arguments are those of :func:`pycrew.local_controller`, except
    that ``relay_output`` is off by default: with many jobs, their output
    belongs in their logs.
    ``terminate()`` cancels every job this controller submitted that is still
    queued or running.
    """
    launcher = SlurmLauncher(
        partition=partition,
        cpus_per_task=cpus_per_task,
        memory_gigabytes_per_cpu=memory_gigabytes_per_cpu,
        memory_gigabytes_required=memory_gigabytes_required,
        time_minutes=time_minutes,
        script_lines=script_lines,
        script_directory=script_directory,
        log_output=log_output,
        log_error=log_error,
        log_bytes_max=log_bytes_max,
        sbatch_options=sbatch_options,
        python=python,
        array=array,
    )
    return Controller(
        launcher,
        name=name,
        workers=workers,
        host=cluster_host() if host is None else host,
        port=port,
        tls=tls,
        seconds_interval=seconds_interval,
        seconds_timeout=seconds_timeout,
        seconds_launch=seconds_launch,
        seconds_idle=seconds_idle,
        seconds_wall=seconds_wall,
        seconds_heartbeat=seconds_heartbeat,
        tasks_max=tasks_max,
        tasks_timers=tasks_timers,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        reset_environment=reset_environment,
        crashes_max=crashes_max,
        seed=seed,
        allow_public=allow_public,
        bytes_max=bytes_max,
        metrics=metrics,
        backup=backup,
        retry_crashes=retry_crashes,
        env=env,
        retries=retries,
        retry_on=retry_on,
        initializer=initializer,
        initargs=initargs,
        serializers=serializers,
        relay_output=relay_output,
    )


@dataclass(frozen=True)
class SlurmJobInfo:
    """One pycrew job (or array element) in the queue."""

    id: str
    array_index: int | None
    state: str
    controller: str
    seconds: float | None
    name: str


class SlurmMonitor:
    """pycrew's jobs in the SLURM queue, to look at or cancel, even after a crash.

    Args:
        user: whose jobs (default: the current user). Staleness comes from the
            current user's registry of launches on this machine, so it is
            known only for jobs that controllers of this user submitted here.
    """

    def __init__(self, user: str | None = None) -> None:
        self.user = user or getpass.getuser()
        #: what was wrong with the registry at the last ``stale()`` (unreadable lines)
        self.problems: list[str] = []

    def jobs(self) -> list[SlurmJobInfo]:
        """The user's pycrew jobs still queued or running, one per array element."""
        # %V is the submit time; "|" cannot occur in the fields asked for
        out = run_command(["squeue", "-h", "-r", "-u", self.user, "-o", "%i|%j|%T|%V"])
        now = datetime.datetime.now()
        found = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or not parts[1].startswith(JOB_PREFIX):
                continue
            job_id, job_name, state, submitted = parts
            controller = job_name[len(JOB_PREFIX) :].rpartition(".")[0]
            index = job_id.partition("_")[2]
            age = None
            with contextlib.suppress(ValueError):
                age = (now - datetime.datetime.fromisoformat(submitted)).total_seconds()
            found.append(
                SlurmJobInfo(
                    id=job_id,
                    array_index=int(index) if index.isdigit() else None,
                    state=state,
                    controller=controller,
                    seconds=age,
                    name=job_name,
                )
            )
        return found

    def stale(self) -> list[SlurmJobInfo]:
        """The jobs whose controller is gone, by the registry of launches.

        Gone: its session ended (``terminate()`` finished, yet the job is
        still queued or running), or it ran on this host and its process no
        longer exists. A job the registry does not know is never stale.
        """
        jobs = self.jobs()
        verdicts = self._verdicts(jobs)
        return [job for job in jobs if verdicts.get(job.id, ("", None))[1] is not None]

    def _verdicts(self, jobs: Sequence[SlurmJobInfo]) -> dict[str, tuple[str, str | None]]:
        """For each job the registry knows: its worker id and why its controller is gone."""
        index, self.problems = _ledger.Index.load()
        now = time.time()
        verdicts: dict[str, tuple[str, str | None]] = {}
        for job in jobs:
            launch = index.by_job.get(job.id)
            if launch is None or launch.controller != job.controller:
                continue  # not ours to judge, or a job id SLURM has handed out again
            submitted = None if job.seconds is None else now - job.seconds
            # submitted well after that launch (minutes of slack: squeue's clock is
            # the cluster's): another job that was given the same id
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
            # an element (123_4), or a whole job or array (123) with an element of ours
            bases = {o.partition("_")[0] for o in ours}
            chosen = sorted({i for i in wanted if i in ours or i in bases})
        if chosen:
            run_command(["scancel", *chosen])
        return chosen
