"""``slurm_controller()`` and ``SlurmMonitor``: workers as SLURM jobs, and finding them later."""

from __future__ import annotations

import contextlib
import datetime
import getpass
import math
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._controller import Controller
from .launchers import SlurmLauncher
from .launchers._slurm import JOB_PREFIX, run_command

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Sequence

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
    log_error: str | None = "/dev/null",
    sbatch_options: Sequence[str] = (),
    python: str | None = None,
    array: bool = True,
    seconds_interval: float = 0.5,
    seconds_timeout: float = 60,
    seconds_launch: float = 86400,
    seconds_idle: float = 300,
    seconds_wall: float = math.inf,
    tasks_max: float = math.inf,
    tasks_timers: int = 0,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    crashes_max: int = 5,
    seed: int | None = None,
    allow_public: bool = False,
    bytes_max: int = 4 << 30,
    metrics: Metrics | None = None,
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
        script_directory, log_output, log_error, sbatch_options, python,
        array: how jobs are submitted; see :class:`pycrew.launchers.SlurmLauncher`.
        seconds_launch: a job that has not connected by then (one day by
            default: it may wait in the queue) is cancelled and replaced.

    The other arguments are those of :func:`pycrew.local_controller`.
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
        tasks_max=tasks_max,
        tasks_timers=tasks_timers,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        crashes_max=crashes_max,
        seed=seed,
        allow_public=allow_public,
        bytes_max=bytes_max,
        metrics=metrics,
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
        user: whose jobs (default: the current user).
    """

    def __init__(self, user: str | None = None) -> None:
        self.user = user or getpass.getuser()

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

    def terminate(self, ids: Iterable[str] | None = None, all: bool = False) -> list[str]:
        """Cancel pycrew jobs: those in ``ids``, or every one of the user's with ``all``.

        Only jobs that are pycrew's are touched, whatever ``ids`` holds.
        Returns the ids cancelled.
        """
        if (ids is None) == (not all):
            raise ValueError("give the job ids to cancel, or all=True (not both)")
        ours = {job.id for job in self.jobs()}
        if all:
            chosen = sorted(ours)
        else:
            assert ids is not None
            wanted = [ids] if isinstance(ids, str) else list(ids)
            # an element (123_4), or a whole job or array (123) with an element of ours
            bases = {o.partition("_")[0] for o in ours}
            chosen = sorted({i for i in wanted if i in ours or i in bases})
        if chosen:
            run_command(["scancel", *chosen])
        return chosen
