"""PBS (Torque and PBS Pro): its launcher and ``PbsMonitor`` (``pbs_controller()`` is a factory).

```
 launch_workers ──► qsub -o OUT -e ERR script   (#PBS -N, -t/-J 0-(n-1), -l, -q lines)
 exit_codes ──────► qstat -f  (this user's jobs, by name) └─► qstat -f <id>: exit_status
 shutdown ────────► qdel <every job of this start>
```

The script names each array element's worker from ``$PBS_ARRAYID`` (Torque),
``$PBS_ARRAY_INDEX`` (PBS Pro), or ``$SLURM_ARRAY_TASK_ID`` (SLURM's Torque
commands, which sites keep when they move from Torque to SLURM). Until a
worker connects, the script itself sends its stderr to ``<worker id>.err``
in a start-up folder: PBS has no per-element file pattern to name one.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import TYPE_CHECKING, Literal

from .._errors import ArgumentError, LaunchError
from .._operations._logs import LOG_BYTES_MAX
from ._cluster import (
    JOB_PREFIX,
    STARTUP_LOG,
    ClusterJob,
    ClusterLauncher,
    check_lines,
    check_megabytes,
    check_positive_int,
    check_text,
    in_folder,
    mebibytes,
    run_command,
)
from ._cluster_monitor import ClusterJobInfo, ClusterMonitor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._resources import Resources


_JOB_ID = re.compile(r"^(\d+)(?:\[(\d*)\])?")
_FIELD = re.compile(r"^\s+([A-Za-z_.]+) = (.*)$")
#: states of a job whose worker has ended: completed, exiting, finished, expired
ENDED = frozenset({"C", "E", "F", "X"})
Flavor = Literal["torque", "pro"]


def job_key(text: str) -> str:
    """A PBS job id as pycrew names it: ``123``, or ``123[4]`` for an array element."""
    found = _JOB_ID.match(text.strip())
    if found is None:
        return text.strip()
    job, index = found[1], found[2]
    return f"{job}[{index}]" if index else job


def parse_qstat(out: str) -> list[dict[str, str]]:
    """``qstat -f`` output as one dict per job (``Job Id`` and its attributes)."""
    jobs: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.startswith("Job Id:"):
            jobs.append({"Job Id": job_key(line.partition(":")[2])})
        elif jobs:
            found = _FIELD.match(line)
            if found is not None:
                jobs[-1][found[1]] = found[2].strip()
    return jobs


class PbsJob(ClusterJob):
    """The handle of one worker: a PBS job, or one element of an array (``123[4]``)."""

    @property
    def id(self) -> str:
        return self.job_id if self.index is None else f"{self.job_id}[{self.index}]"


class PbsLauncher(ClusterLauncher):
    """Start workers as PBS jobs (Torque or PBS Pro), an array per scaling step.

    Args:
        queue: ``#PBS -q``.
        cores: cores per worker: ``-l nodes=1:ppn=N`` (Torque) or
            ``-l select=1:ncpus=N`` (PBS Pro).
        memory_gigabytes: ``-l mem=...mb``.
        walltime_minutes: ``-l walltime=HH:MM:00``: the job's wall-time limit.
        script_lines: lines run before the worker starts (``module load python``).
        script_directory: keep each job script here; by default a private
            temporary file is submitted and removed.
        log_output, log_error: ``qsub -o``/``-e`` (plain paths: PBS has no
            per-element patterns). By default stdout is discarded and each
            worker's stderr goes to a start-up file of its own until it
            connects, read if it exits before (see docs/environment.md).
        log_bytes_max: as for SLURM.
        pbs_options: more ``#PBS`` lines, such as ``"-A project"``.
        python: the Python interpreter on the compute nodes.
        array: one job array per scaling step (``-t``, or ``-J`` for PBS Pro),
            or one job per worker.
        flavor: ``"torque"`` or ``"pro"`` (PBS Pro and OpenPBS): array flag and
            core request.
        commands: the folder holding ``qsub``, ``qstat`` and ``qdel``
            (default: found on ``PATH``).

    A worker launched for a resource shape runs in a job that asks for it, in
    place of ``cores`` and ``memory_gigabytes`` for the same quantity: PBS Pro
    gets one ``-l select=1:ncpus=N:mem=Mmb:ngpus=G:<name>=N`` line; Torque gets
    ``-l nodes=1:ppn=N:gpus=G``, ``-l mem=Mmb`` and, for each named count,
    ``-l gres=<name>:N`` (the form of Moab, which schedules Torque's jobs).
    """

    scheduler = "PBS"
    engine = "pbs"
    ending_states = ENDED
    finished_states = frozenset({"C", "F", "X"})
    # qsub takes a file with every PBS, and SLURM's Torque commands need one
    needs_file = True

    def __init__(
        self,
        *,
        queue: str | None = None,
        cores: int | None = None,
        memory_gigabytes: float | None = None,
        walltime_minutes: int | None = None,
        script_lines: Sequence[str] = (),
        script_directory: str | os.PathLike[str] | None = None,
        log_output: str | None = "/dev/null",
        log_error: str | None = STARTUP_LOG,
        log_bytes_max: int | None = LOG_BYTES_MAX,
        pbs_options: Sequence[str] = (),
        python: str | None = None,
        array: bool = True,
        processes: int = 1,
        flavor: Flavor = "torque",
        commands: str | os.PathLike[str] | None = None,
    ) -> None:
        if flavor not in ("torque", "pro"):
            raise ArgumentError(f"flavor must be 'torque' or 'pro', got {flavor!r}")
        super().__init__(
            script_lines=script_lines,
            script_directory=script_directory,
            log_output=log_output,
            log_error=log_error,
            log_bytes_max=log_bytes_max,
            python=python,
            array=array,
            processes=processes,
        )
        self.queue = check_text("queue", queue)
        self.cores = check_positive_int("cores", cores)
        self.memory = check_megabytes("memory_gigabytes", memory_gigabytes)
        self.walltime_minutes = check_positive_int("walltime_minutes", walltime_minutes)
        self.pbs_options = check_lines("pbs_options", pbs_options)
        self.flavor = flavor
        self.commands = os.fspath(commands) if commands is not None else None

    def command(self, name: str) -> str:
        return in_folder(self.commands, name)

    def make_handle(self, job_id: str, index: int | None, slot: int = 0) -> ClusterJob:
        return PbsJob(job_id, index, slot)

    def array_index(self) -> str:
        return "${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}}"

    def is_live(self, job: ClusterJob, held: dict[str, str]) -> bool:
        # an element is live while the queue shows it, or shows only its whole
        # array (Torque's qstat without -t, SLURM's Torque commands)
        for key in (job.id, job.job_id):
            if key in held:
                return held[key] not in self.ending_states
        return False

    # ------------------------------------------------------------- script
    def directives(
        self, count: int, name: str, array: bool, shape: Resources | None = None
    ) -> list[str]:
        lines = [f"#PBS -N {name}"]
        if array:
            flag = "-J" if self.flavor == "pro" else "-t"
            lines.append(f"#PBS {flag} 0-{count - 1}")
        if self.queue is not None:
            lines.append(f"#PBS -q {self.queue}")
        if self.walltime_minutes is not None:
            hours, minutes = divmod(self.walltime_minutes, 60)
            lines.append(f"#PBS -l walltime={hours:02d}:{minutes:02d}:00")
        if shape is not None:
            lines += [f"#PBS -l {request}" for request in self._shape_requests(shape)]
        else:
            if self.memory is not None:
                lines.append(f"#PBS -l mem={self.memory}mb")
            if self.cores is not None:
                select = "select=1:ncpus" if self.flavor == "pro" else "nodes=1:ppn"
                lines.append(f"#PBS -l {select}={self.cores}")
        lines += [f"#PBS {option}" for option in self.pbs_options]
        return lines

    def _shape_requests(self, shape: Resources) -> list[str]:
        """The ``-l`` values of a job for one worker of ``shape``, the launcher's own
        ``cores`` and memory filling in what the shape does not ask for."""
        cores = shape.cpus or self.cores
        memory = mebibytes(shape.memory) if shape.memory else self.memory
        if self.flavor == "pro":
            # one chunk holds it all: PBS Pro wants no job-wide mem or ncpus beside a select
            chunk = ["select=1"]
            chunk += [f"ncpus={cores}"] if cores else []
            chunk += [f"mem={memory}mb"] if memory else []
            chunk += [f"ngpus={shape.gpus}"] if shape.gpus else []
            chunk += [f"{key}={n}" for key, n in shape.custom]
            return [":".join(chunk)]
        node = "nodes=1" + (f":ppn={cores}" if cores else "")
        node += f":gpus={shape.gpus}" if shape.gpus else ""
        requests = [f"mem={memory}mb"] if memory else []
        if cores or shape.gpus:
            requests.append(node)
        return requests + [f"gres={key}:{n}" for key, n in shape.custom]

    # ----------------------------------------------------------- commands
    def submit_command(self, script: str | None) -> list[str]:
        # -o and -e on the command line: they win over the script's lines
        # with every qsub (SLURM's Torque commands set their own otherwise)
        args = [self.command("qsub")]
        if self.log_output is not None:
            args += ["-o", self.log_output]
        error = os.devnull if self.log_error == STARTUP_LOG else self.log_error
        if error is not None:
            args += ["-e", error]
        return [*args, script] if script else args

    def parse_job_id(self, out: str) -> str:
        # "123.server", "123[].server", or "123"
        found = _JOB_ID.match(out.strip())
        if found is None:
            raise LaunchError(f"qsub printed no job id: {out.strip()!r}")
        return found[1]

    def queued(self, names: Sequence[str]) -> dict[str, str]:
        wanted = set(names)
        out = self._run([self.command("qstat"), "-f"])
        return {
            job["Job Id"]: job.get("job_state", "?")
            for job in parse_qstat(out)
            if job.get("Job_Name") in wanted
        }

    def finished(self, job_id: str) -> dict[str, int]:
        out = self._run([self.command("qstat"), "-f", job_id])
        codes: dict[str, int] = {}
        for job in parse_qstat(out):
            status = job.get("exit_status", job.get("Exit_status", ""))
            if status.lstrip("-").isdigit():
                code = int(status)
                # PBS reports a job killed by signal N as 256 + N (Torque) or 128 + N
                codes[job["Job Id"]] = -(code - 256) if code > 256 else code
        return codes

    def cancel(self, ids: Sequence[str]) -> None:
        self._run([self.command("qdel"), *ids])


class PbsMonitor(ClusterMonitor):
    """pycrew's jobs in the PBS queue, to look at or cancel, even after a crash.

    Args:
        user: whose jobs (default: the current user).
        commands: the folder holding ``qstat`` and ``qdel`` (default: ``PATH``).
    """

    engine = "pbs"

    def __init__(self, user: str | None = None, commands: str | None = None) -> None:
        super().__init__(user)
        self.commands = commands

    def _command(self, name: str) -> str:
        return in_folder(self.commands, name)

    def jobs(self) -> list[ClusterJobInfo]:
        now = datetime.datetime.now()
        found = []
        for job in parse_qstat(run_command([self._command("qstat"), "-f"], log=self.log)):
            name, state = job.get("Job_Name", ""), job.get("job_state", "?")
            owner = job.get("Job_Owner", "").partition("@")[0]
            if not name.startswith(JOB_PREFIX) or state in ENDED or owner != self.user:
                continue
            seconds = None
            try:
                queued = datetime.datetime.strptime(job.get("qtime", ""), "%a %b %d %H:%M:%S %Y")
                seconds = (now - queued).total_seconds()
            except ValueError:
                pass
            index = _JOB_ID.match(job["Job Id"])
            found.append(
                ClusterJobInfo(
                    id=job["Job Id"],
                    array_index=int(index[2]) if index and index[2] else None,
                    state=state,
                    controller=self.controller_of(name),
                    seconds=seconds,
                    name=name,
                )
            )
        return found

    def whole_job(self, job_id: str) -> str:
        return job_id.partition("[")[0]

    def cancel(self, ids: Sequence[str]) -> None:
        run_command([self._command("qdel"), *ids], log=self.log)
