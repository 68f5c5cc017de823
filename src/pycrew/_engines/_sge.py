"""Grid Engine (SGE, Son of Grid Engine, Univa/Altair): its launcher and ``SgeMonitor``
(``sge_controller()`` is a factory).

```
 launch_workers ──► qsub -terse -V   (script on stdin: #$ -N, -t 1-n, -o, -e, -q, -l, -pe)
 exit_codes ──────► qstat -g d -xml  (one call: every task of this user's jobs)
                    └─► qacct -j <id> for jobs that left the queue: exit_status per task
 shutdown ────────► qdel <every job of this start>
```
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import xml.etree.ElementTree as ElementTree
from typing import TYPE_CHECKING

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
    mebibytes,
    run_command,
)
from ._cluster_monitor import ClusterJobInfo, ClusterMonitor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._resources import Resources


_SUBMITTED = re.compile(r"^(\d+)")


def qdel_commands(ids: Sequence[str]) -> list[list[str]]:
    """``qdel`` for whole jobs (``123``) at once, and one per array task (``123.4``)."""
    whole = [i for i in ids if "." not in i]
    tasks = [i.partition(".") for i in ids if "." in i]
    return ([["qdel", *whole]] if whole else []) + [["qdel", j, "-t", t] for j, _, t in tasks]


class SgeJob(ClusterJob):
    """The handle of one worker: a Grid Engine job, or one task of an array (``123.4``)."""

    @property
    def id(self) -> str:
        return self.job_id if self.index is None else f"{self.job_id}.{self.index}"


def parse_qstat_xml(out: str) -> list[dict[str, str]]:
    """``qstat -g d -xml`` as one dict per job or array task: id, name, owner, state, start."""
    if not out.strip():
        return []
    try:
        root = ElementTree.fromstring(out)
    except ElementTree.ParseError as exc:
        raise LaunchError(f"qstat printed no XML: {exc}") from None
    rows = []
    for job in root.iter("job_list"):
        number = job.findtext("JB_job_number", "")
        task = (job.findtext("tasks") or "").strip()
        rows.append(
            {
                "id": f"{number}.{task}" if task.isdigit() else number,
                "job": number,
                "name": job.findtext("JB_name", ""),
                "owner": job.findtext("JB_owner", ""),
                "state": job.findtext("state", ""),
                "time": job.findtext("JAT_start_time") or job.findtext("JB_submission_time") or "",
            }
        )
    return rows


def parse_qacct(out: str, name: str | None = None) -> dict[str, int]:
    """``qacct -j`` output: exit codes by job (``123``) or array task (``123.4``).

    With ``name``, only records of jobs of that name count: job numbers start
    again when Grid Engine is set up anew, and the accounting file keeps the
    records of the jobs that had the number before (while a new job's record
    is not written yet, the old one would be all there is).
    """
    codes: dict[str, int] = {}
    job = task = jobname = ""
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key.startswith("====="):
            job = task = jobname = ""
        elif key == "jobname":
            jobname = value
        elif key == "jobnumber":
            job, task = value, ""
        elif key == "taskid":
            task = value
        elif key == "exit_status" and job and (name is None or jobname == name):
            code = value.split()[0] if value else ""
            if code.isdigit():
                number = int(code)
                # 128 + N: killed by signal N
                codes[f"{job}.{task}" if task.isdigit() else job] = (
                    -(number - 128) if number > 128 else number
                )
    return codes


class SgeLauncher(ClusterLauncher):
    """Start workers as Grid Engine jobs, an array job per scaling step.

    Args:
        queue: ``#$ -q``.
        cores: slots per worker, through ``-pe <parallel_environment> N``.
        parallel_environment: the parallel environment for ``cores`` (``smp``).
        memory_gigabytes: ``-l h_vmem=...M`` (per slot, as Grid Engine counts it).
        walltime_minutes: ``-l h_rt=HH:MM:00``.
        script_lines, script_directory, python, array, log_bytes_max: as for SLURM.
        log_output, log_error: ``#$ -o``/``-e`` (Grid Engine's ``$JOB_ID`` and
            ``$TASK_ID`` allowed). By default stdout is discarded and each
            worker's stderr goes to a start-up file of its own until it connects.
        sge_options: more ``#$`` lines, such as ``"-P project"``.

    A worker launched for a resource shape runs in a job that asks for it, in
    place of the options above for the same quantity: its cpus as slots of
    ``parallel_environment``, its memory as ``h_vmem`` shared out over those
    slots (Grid Engine multiplies ``h_vmem`` by them), and ``-l gpu=N`` and
    ``-l <name>=N`` for its GPUs and named counts (complexes a site defines;
    counted per job where it makes them ``consumable JOB``).
    """

    scheduler = "Grid Engine"
    engine = "sge"
    array_variable = "SGE_TASK_ID"
    array_first = 1

    def __init__(
        self,
        *,
        queue: str | None = None,
        cores: int | None = None,
        parallel_environment: str = "smp",
        memory_gigabytes: float | None = None,
        walltime_minutes: int | None = None,
        script_lines: Sequence[str] = (),
        script_directory: str | os.PathLike[str] | None = None,
        log_output: str | None = "/dev/null",
        log_error: str | None = STARTUP_LOG,
        log_bytes_max: int | None = LOG_BYTES_MAX,
        sge_options: Sequence[str] = (),
        python: str | None = None,
        array: bool = True,
        processes: int = 1,
    ) -> None:
        if not isinstance(parallel_environment, str) or not parallel_environment:
            raise ArgumentError("parallel_environment must be a non-empty string")
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
        self.parallel_environment = parallel_environment
        self.memory = check_megabytes("memory_gigabytes", memory_gigabytes)
        self.walltime_minutes = check_positive_int("walltime_minutes", walltime_minutes)
        self.sge_options = check_lines("sge_options", sge_options)

    def make_handle(self, job_id: str, index: int | None, slot: int = 0) -> ClusterJob:
        return SgeJob(job_id, index, slot)

    def array_index(self) -> str:
        # outside an array Grid Engine sets SGE_TASK_ID to "undefined"
        return "${SGE_TASK_ID:-1}"

    # ------------------------------------------------------------- script
    def directives(
        self, count: int, name: str, array: bool, shape: Resources | None = None
    ) -> list[str]:
        lines = [f"#$ -N {name}", "#$ -S /bin/sh"]
        if array:
            lines.append(f"#$ -t 1-{count}")
        if self.log_output is not None:
            lines.append(f"#$ -o {self.log_output}")
        error = os.devnull if self.log_error == STARTUP_LOG else self.log_error
        if error is not None:
            lines.append(f"#$ -e {error}")
        if self.queue is not None:
            lines.append(f"#$ -q {self.queue}")
        cores, memory = self.cores, self.memory
        requests: list[str] = []
        if shape is not None:
            cores = shape.cpus or cores
            if shape.memory:
                # h_vmem is per slot: the worker's memory over its slots, rounded up
                memory = -(-mebibytes(shape.memory) // (cores or 1))
            wanted = (("gpu", shape.gpus), *shape.custom)
            requests = [f"{key}={n}" for key, n in wanted if n]
        if cores is not None:
            lines.append(f"#$ -pe {self.parallel_environment} {cores}")
        if memory is not None:
            lines.append(f"#$ -l h_vmem={memory}M")
        lines += [f"#$ -l {request}" for request in requests]
        if self.walltime_minutes is not None:
            hours, minutes = divmod(self.walltime_minutes, 60)
            lines.append(f"#$ -l h_rt={hours:02d}:{minutes:02d}:00")
        lines += [f"#$ {option}" for option in self.sge_options]
        return lines

    # ----------------------------------------------------------- commands
    def submit_command(self, script: str | None) -> list[str]:
        # -V: the job gets the submission's environment (the secret with it)
        return ["qsub", "-terse", "-V"] + ([script] if script else [])

    def parse_job_id(self, out: str) -> str:
        # "123" for a job, "123.1-4:1" for an array
        found = _SUBMITTED.match(out.strip())
        if found is None:
            raise LaunchError(f"qsub printed no job id: {out.strip()!r}")
        return found[1]

    def queued(self, names: Sequence[str]) -> dict[str, str]:
        wanted = set(names)
        out = self._run(["qstat", "-g", "d", "-xml"])
        held: dict[str, str] = {}
        for row in parse_qstat_xml(out):
            if row["name"] in wanted:
                held[row["id"]] = row["state"]
        return held

    def finished(self, job_id: str) -> dict[str, int]:
        # the accounting file takes a moment after a job ends
        return parse_qacct(self._run(["qacct", "-j", job_id]), self._job_names.get(job_id))

    def cancel(self, ids: Sequence[str]) -> None:
        for args in qdel_commands(ids):
            self._run(args)


class SgeMonitor(ClusterMonitor):
    """pycrew's jobs in the Grid Engine queue, to look at or cancel, even after a crash."""

    engine = "sge"

    def jobs(self) -> list[ClusterJobInfo]:
        out = run_command(["qstat", "-u", self.user, "-g", "d", "-xml"], log=self.log)
        now = datetime.datetime.now()
        found = []
        for row in parse_qstat_xml(out):
            if not row["name"].startswith(JOB_PREFIX):
                continue
            seconds = None
            with contextlib.suppress(ValueError):
                seconds = (now - datetime.datetime.fromisoformat(row["time"])).total_seconds()
            index = row["id"].partition(".")[2]
            found.append(
                ClusterJobInfo(
                    id=row["id"],
                    array_index=int(index) if index.isdigit() else None,
                    state=row["state"],
                    controller=self.controller_of(row["name"]),
                    seconds=seconds,
                    name=row["name"],
                )
            )
        return found

    def whole_job(self, job_id: str) -> str:
        return job_id.partition(".")[0]

    def cancel(self, ids: Sequence[str]) -> None:
        for args in qdel_commands(ids):
            run_command(args, log=self.log)
