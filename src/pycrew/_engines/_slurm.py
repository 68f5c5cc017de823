"""SLURM: its launcher (one ``sbatch --array`` per scaling step) and ``SlurmMonitor``
(``slurm_controller()`` is a factory).

```
 launch_workers ──► sbatch --parsable --array=0-(n-1)   (script on stdin, #SBATCH lines)
 exit_codes ──────► squeue --name=<this start's jobs>   └─► scontrol show job <id>: ExitCode,
                                                             StdErr, Reason of those that left
 shutdown ────────► scancel <every job of this start>
```

What all schedulers share (polling, back-off, the start-up error files,
shutdown) is ``_cluster.ClusterLauncher``'s.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
import re
from typing import TYPE_CHECKING, Any

from .._errors import LaunchError
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
    mebibytes,
    run_command,
)
from ._cluster_monitor import ClusterJobInfo, ClusterMonitor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._resources import Resources


#: SLURM's default MaxArraySize, used when the configuration cannot be read
MAX_ARRAY_SIZE = 1001
_EXIT = re.compile(r"\bExitCode=(\d+):(\d+)")
_JOB = re.compile(r"\bJobId=(\d+)")
_TASK = re.compile(r"\bArrayTaskId=(\d+)")
_ARRAY = re.compile(r"\bArrayJobId=(\d+)")
_STDERR = re.compile(r"\bStdErr=(.*?)(?= [A-Z][A-Za-z]*=|$)")
_REASON = re.compile(r"\bReason=(\S+)")
_STATE = re.compile(r"\bJobState=(\S+)")
#: job states that say why a job ended: a task that crashed with it is told
ENDED_BY = ("OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "DEADLINE", "BOOT_FAIL")
_PATTERN = re.compile(r"%(\d*)([%Aajxu])")
#: SLURM's ``%a`` outside an array
NO_INDEX = "4294967294"


class SlurmJob(ClusterJob):
    """The handle of one worker: a job, or one element of a job array (``123_4``)."""


class SlurmLauncher(ClusterLauncher):
    """Start workers as SLURM jobs, a job array per scaling step.

    Args:
        partition: ``#SBATCH --partition``.
        cpus_per_task: ``#SBATCH --cpus-per-task``.
        memory_gigabytes_per_cpu: ``#SBATCH --mem-per-cpu`` (in MiB, rounded).
        memory_gigabytes_required: ``#SBATCH --mem`` (in MiB, rounded).
        time_minutes: ``#SBATCH --time``: the job's wall-time limit.
        script_lines: lines run before the worker starts, such as
            ``module load python``.
        script_directory: keep each job script here, for reading; by default
            scripts go to ``sbatch`` on its standard input and leave no file.
        log_output: ``#SBATCH --output``: the workers' standard output;
            SLURM patterns such as ``%A_%a`` allowed. ``None``: SLURM's
            default (``slurm-%A_%a.out`` in the submit folder).
        log_error: ``#SBATCH --error``, likewise. By default
            (``"(startup)"``) each job's standard error goes to a file of its
            own until its worker connects, then the worker lets go of it and
            the file is deleted; the files sit in a folder of this controller
            start under pycrew's state folder (``~/.local/state/pycrew/startup``,
            which the compute nodes must see, as they see your home), removed
            at ``shutdown()``. The error file of a job that exits before its
            worker connects (this one, or the one named here) is read for the
            ``LaunchError`` that says why; ``"/dev/null"`` discards it all.
        log_bytes_max: a worker's log file that passes this many bytes moves
            to ``<file>.1`` and starts afresh; ``None``: no cap.
        sbatch_options: more ``#SBATCH`` options, such as ``"--qos=long"``.
        python: the Python interpreter on the compute nodes (default: this
            one, which suits a shared file system).
        array: one job array per scaling step (``True``), or one job per worker.

    A worker launched for a resource shape runs in a job that asks for it:
    ``--cpus-per-task``, ``--mem`` (in place of ``--mem-per-cpu``) and one
    ``--gres=gpu:N,<name>:N`` line, in place of the options above for the same
    quantity.

    The controller's secret reaches the jobs through ``sbatch``'s environment
    (``--export=ALL``, SLURM's default), never the script; variables the
    controller must keep to itself (``WorkerSpec.env_remove``) are left out.
    """

    scheduler = "SLURM"
    engine = "slurm"
    array_variable = "SLURM_ARRAY_TASK_ID"
    ending_states = frozenset({"COMPLETING"})
    startup_file_array = "%A_%a.err"
    startup_file_single = "%j.err"

    def __init__(
        self,
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
        log_bytes_max: int | None = LOG_BYTES_MAX,
        sbatch_options: Sequence[str] = (),
        python: str | None = None,
        array: bool = True,
        processes: int = 1,
    ) -> None:
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
        self.partition = check_text("partition", partition)
        self.cpus_per_task = check_positive_int("cpus_per_task", cpus_per_task)
        self.memory_per_cpu = check_megabytes("memory_gigabytes_per_cpu", memory_gigabytes_per_cpu)
        self.memory = check_megabytes("memory_gigabytes_required", memory_gigabytes_required)
        self.time_minutes = check_positive_int("time_minutes", time_minutes)
        self.sbatch_options = check_lines("sbatch_options", sbatch_options)
        self._max_array: int | None = None
        # an array element's own job id, for %j in a log pattern
        self._own_id: dict[str, str] = {}

    def walltime_seconds(self) -> float | None:
        return None if self.time_minutes is None else 60.0 * self.time_minutes

    def make_handle(self, job_id: str, index: int | None, slot: int = 0) -> ClusterJob:
        return SlurmJob(job_id, index, slot)

    def max_array_size(self) -> int:
        """SLURM's MaxArraySize: array indices stay below it."""
        if self._max_array is None:
            self._max_array = MAX_ARRAY_SIZE
            with contextlib.suppress(LaunchError):
                for line in self._run(["scontrol", "show", "config"]).splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() == "MaxArraySize" and value.strip().isdigit():
                        self._max_array = max(1, int(value.strip()))
        return self._max_array

    # ------------------------------------------------------------- script
    def directives(
        self, count: int, name: str, array: bool, shape: Resources | None = None
    ) -> list[str]:
        lines = [f"#SBATCH --job-name={name}"]
        if array:
            lines.append(f"#SBATCH --array=0-{count - 1}")
        if self.log_output is not None:
            lines.append(f"#SBATCH --output={self.log_output}")
        if self.log_error == STARTUP_LOG:
            lines.append(f"#SBATCH --error={self.startup_path(name, array)}")
        elif self.log_error is not None:
            lines.append(f"#SBATCH --error={self.log_error}")
        lines.append("#SBATCH --ntasks=1")
        cpus, memory, memory_per_cpu = self.cpus_per_task, self.memory, self.memory_per_cpu
        gres: list[str] = []
        if shape is not None:
            cpus = shape.cpus or cpus
            if shape.memory:
                # sbatch refuses --mem with --mem-per-cpu: the shape's total stands alone
                memory, memory_per_cpu = mebibytes(shape.memory), None
            # --gres rather than --gpus: every SLURM version knows it
            wanted = (("gpu", shape.gpus), *shape.custom)
            gres = [f"{key}:{n}" for key, n in wanted if n]
        for option, value in (
            ("--cpus-per-task", cpus),
            ("--mem", None if memory is None else f"{memory}M"),
            ("--mem-per-cpu", None if memory_per_cpu is None else f"{memory_per_cpu}M"),
            ("--time", self.time_minutes),
            ("--partition", self.partition),
            ("--gres", ",".join(gres) or None),
        ):
            if value is not None:
                lines.append(f"#SBATCH {option}={value}")
        lines += [f"#SBATCH {option}" for option in self.sbatch_options]
        return lines

    # ----------------------------------------------------------- commands
    def submit_command(self, script: str | None) -> list[str]:
        return ["sbatch", "--parsable"] + ([script] if script else [])

    def parse_job_id(self, out: str) -> str:
        # --parsable prints "jobid" or "jobid;cluster"
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise LaunchError(f"sbatch printed no job id: {out.strip()!r}")
        return job_id

    def queued(self, names: Sequence[str]) -> dict[str, str]:
        out = self._run(["squeue", "-h", "-r", f"--name={','.join(names)}", "-o", "%i %T"])
        pairs = (line.split() for line in out.splitlines())
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

    def cancel(self, ids: Sequence[str]) -> None:
        self._run(["scancel", *ids])

    def finished(self, job_id: str) -> dict[str, int]:
        """Exit codes of a job or every element of an array, from ``scontrol``."""
        codes: dict[str, int] = {}
        if True:
            for line in self._run(["scontrol", "-o", "show", "job", job_id]).splitlines():
                found = _EXIT.search(line)
                if found is None:
                    continue
                code, signal = int(found[1]), int(found[2])
                array, task = _ARRAY.search(line), _TASK.search(line)
                job = _JOB.search(line)
                key = f"{array[1]}_{task[1]}" if array and task else (job[1] if job else job_id)
                codes[key] = -signal if signal else code
                if job is not None:
                    self._own_id[key] = job[1]
                stderr = _STDERR.search(line)
                if stderr is not None and stderr[1].strip():
                    self._stderr[key] = stderr[1].strip()
                reason = _REASON.search(line)
                if reason is not None and reason[1] not in ("None", "NonZeroExitCode"):
                    self._reason[key] = reason[1]
                state = _STATE.search(line)
                if state is not None and state[1] in ENDED_BY:
                    self._reason[key] = f"job state {state[1]}"
        return codes

    def exit_reason(self, handle: Any) -> str | None:
        """SLURM's word on why a job ended (its state: OUT_OF_MEMORY, TIMEOUT, ...)."""
        return self._reason.get(handle.id) if isinstance(handle, ClusterJob) else None

    def error_file(self, job: ClusterJob) -> str:
        """The path of a job's stderr, from the pattern it was submitted with."""
        name = self._job_names.get(job.job_id, "")
        pattern = self.log_error
        if pattern == STARTUP_LOG:
            file = "%j.err" if job.index is None else "%A_%a.err"
            pattern = os.path.join(self.startup_folder(name), file)
        elif pattern is None:  # stderr goes with stdout
            pattern = self.log_output or (
                "slurm-%j.out" if job.index is None else "slurm-%A_%a.out"
            )
        own_id = self._own_id.get(job.id, job.job_id if job.index is None else "")
        if not own_id and re.search(r"%\d*j", pattern):
            raise LaunchError(
                f"SLURM forgot job {job.id}, so pycrew cannot tell which file %j names "
                f"in {pattern!r}"
            )
        fields = {
            "%": "%",
            "A": job.job_id,
            "a": NO_INDEX if job.index is None else str(job.index),
            "j": own_id,
            "u": getpass.getuser(),
            "x": name,
        }

        def fill(found: re.Match[str]) -> str:
            value = fields[found[2]]
            return value.zfill(int(found[1])) if found[1] else value

        path = _PATTERN.sub(fill, os.path.expanduser(pattern))
        return os.path.join(self._workdir.get(job.job_id, os.getcwd()), path)

    def _forget(self) -> None:
        super()._forget()
        self._own_id.clear()


SlurmJobInfo = ClusterJobInfo


class SlurmMonitor(ClusterMonitor):
    """pycrew's jobs in the SLURM queue, to look at or cancel, even after a crash.

    Args:
        user: whose jobs (default: the current user). Staleness comes from the
            current user's registry of launches on this machine, so it is
            known only for jobs that controllers of this user submitted here.
    """

    engine = "slurm"

    def jobs(self) -> list[ClusterJobInfo]:
        """The user's pycrew jobs still queued or running, one per array element."""
        # %V is the submit time; "|" cannot occur in the fields asked for
        args = ["squeue", "-h", "-r", "-u", self.user, "-o", "%i|%j|%T|%V"]
        out = run_command(args, log=self.log)
        now = datetime.datetime.now()
        found = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or not parts[1].startswith(JOB_PREFIX):
                continue
            job_id, job_name, state, submitted = parts
            controller = self.controller_of(job_name)
            index = job_id.partition("_")[2]
            age = None
            with contextlib.suppress(ValueError):
                age = (now - datetime.datetime.fromisoformat(submitted)).total_seconds()
            found.append(
                ClusterJobInfo(
                    id=job_id,
                    array_index=int(index) if index.isdigit() else None,
                    state=state,
                    controller=controller,
                    seconds=age,
                    name=job_name,
                )
            )
        return found

    def cancel(self, ids: Sequence[str]) -> None:
        run_command(["scancel", *ids], log=self.log)
