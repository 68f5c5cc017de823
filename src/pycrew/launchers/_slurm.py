"""Workers as SLURM jobs: one ``sbatch --array`` per scaling step.

```
 scaler thread ── launch_workers(specs) ──► sbatch --parsable --array=0-(n-1)  (script on stdin)
      │                                        job name  pycrew.<controller>.<start token>
      │                                        secret    in sbatch's environment, never the script
      ├── exit_codes(handles) ──► squeue --name (one call, at most every few seconds, backing off)
      │                            └─► scontrol show job <array> for jobs that left the queue
      └── shutdown() ──► scancel <every job of this start>, then wait until squeue is clear
```

Liveness comes from workers dialing in and their connections; the queue is
only asked about jobs that have not connected yet or have just left, and
never more often than ``POLL_MAX`` backs off to.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _ledger
from .._diagnose import read_tail
from .._errors import ArgumentError, ArgumentTypeError, LaunchError
from .._logs import BYTES_ENV, LOG_BYTES_MAX, STARTUP_ENV, check_log_bytes
from ._base import Launcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._base import WorkerSpec

#: seconds between queue polls right after a launch, and at most after backing off
POLL_MIN, POLL_MAX = 1.0, 30.0
#: how long one sbatch, squeue, scancel or scontrol call may take
COMMAND_SECONDS = 60.0
#: SLURM's default MaxArraySize, used when the configuration cannot be read
MAX_ARRAY_SIZE = 1001
#: job names are ``pycrew.<controller>.<token>``
JOB_PREFIX = "pycrew."
_EXIT = re.compile(r"\bExitCode=(\d+):(\d+)")
_JOB = re.compile(r"\bJobId=(\d+)")
_TASK = re.compile(r"\bArrayTaskId=(\d+)")
_ARRAY = re.compile(r"\bArrayJobId=(\d+)")
_STDERR = re.compile(r"\bStdErr=(.*?)(?= [A-Z][A-Za-z]*=|$)")
_REASON = re.compile(r"\bReason=(\S+)")
_PATTERN = re.compile(r"%(\d*)([%Aajxu])")
#: ``log_error``'s default: stderr kept until the worker connects, then dropped
STARTUP_LOG = "(startup)"
#: SLURM's ``%a`` outside an array
NO_INDEX = "4294967294"
#: how long a job's error file may take to show on this machine (a shared file system)
SHOW_SECONDS = 2.0


@dataclass(frozen=True)
class SlurmJob:
    """The handle of one worker: a job, or one element of a job array."""

    job_id: str
    index: int | None = None

    @property
    def id(self) -> str:
        """The id SLURM shows for it: ``123`` or ``123_4``."""
        return self.job_id if self.index is None else f"{self.job_id}_{self.index}"


def _megabytes(label: str, gigabytes: float | None) -> str | None:
    if gigabytes is None:
        return None
    if isinstance(gigabytes, bool) or not isinstance(gigabytes, (int, float)):
        raise ArgumentTypeError(f"{label} must be a number of gigabytes, got {gigabytes!r}")
    if not gigabytes > 0 or math.isinf(gigabytes):
        raise ArgumentError(f"{label} must be a positive number of gigabytes, got {gigabytes!r}")
    return f"{round(1024 * gigabytes)}M"


def _positive_int(label: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{label} must be a whole number >= 1, got {value!r}")
    return value


def _lines(label: str, value: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        raise ArgumentTypeError(f"{label} must be a list of strings, not one string")
    lines = list(value)
    for line in lines:
        if not isinstance(line, str) or "\n" in line:
            raise ArgumentError(f"each of {label} must be a string of one line, got {line!r}")
    return lines


def run_command(args: list[str], stdin: str | None = None, env: Any = None) -> str:
    """Run a SLURM command; its standard output, or a LaunchError with its message."""
    try:
        done = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise LaunchError(
            f"{args[0]} was not found on PATH: run the controller where SLURM's "
            "commands are installed (a login node)"
        ) from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{args[0]} did not answer in {COMMAND_SECONDS:.0f} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise LaunchError(f"{args[0]} failed: {message}")
    return done.stdout


class SlurmLauncher(Launcher):
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

    The controller's secret reaches the jobs through ``sbatch``'s environment
    (``--export=ALL``, SLURM's default), never the script; variables the
    controller must keep to itself (``WorkerSpec.env_remove``) are left out.
    """

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
    ) -> None:
        if partition is not None and (not isinstance(partition, str) or not partition):
            raise ArgumentError(f"partition must be a non-empty string, got {partition!r}")
        for label, value in (("log_output", log_output), ("log_error", log_error)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ArgumentError(f"{label} must be a path (a non-empty string) or None")
            if value is not None and value != STARTUP_LOG:
                _make_log_folder(label, value)
        if python is not None and (not isinstance(python, str) or not python):
            raise ArgumentError(f"python must be a path to an interpreter, got {python!r}")
        if not isinstance(array, bool):
            raise ArgumentTypeError(f"array must be True or False, got {array!r}")
        self.partition = partition
        self.cpus_per_task = _positive_int("cpus_per_task", cpus_per_task)
        self.memory_per_cpu = _megabytes("memory_gigabytes_per_cpu", memory_gigabytes_per_cpu)
        self.memory = _megabytes("memory_gigabytes_required", memory_gigabytes_required)
        self.time_minutes = _positive_int("time_minutes", time_minutes)
        self.script_lines = _lines("script_lines", script_lines)
        self.sbatch_options = _lines("sbatch_options", sbatch_options)
        self.script_directory = (
            Path(script_directory).expanduser() if script_directory is not None else None
        )
        self.log_output = log_output
        self.log_error = log_error
        self.log_bytes_max = check_log_bytes(log_bytes_max)
        self.python = python
        self.array = array
        #: how many times each SLURM command ran, for the curious and the tests
        self.calls: collections.Counter[str] = collections.Counter()
        self._token = secrets.token_hex(4)
        self._names: set[str] = set()
        self._submitted: list[str] = []
        self._max_array: int | None = None
        self._asked: set[str] = set()
        self._ended: dict[str, int] = {}
        self._polled_at = -math.inf
        self._poll_every = POLL_MIN
        # for reading a failed job's error file: the folder each job was
        # submitted from, an array element's own job id, and the file as
        # SLURM names it (patterns filled in)
        self._workdir: dict[str, str] = {}
        self._job_names: dict[str, str] = {}
        self._own_id: dict[str, str] = {}
        self._stderr: dict[str, str] = {}
        self._reason: dict[str, str] = {}

    # ----------------------------------------------------------- commands
    def _run(self, args: list[str], stdin: str | None = None, env: Any = None) -> str:
        self.calls[args[0]] += 1
        return run_command(args, stdin, env)

    def job_name(self, controller: str) -> str:
        """The name every job of this controller start carries."""
        return f"{JOB_PREFIX}{controller}.{self._token}"

    def startup_folder(self, name: str) -> str:
        """Where the jobs named ``name`` keep their stderr until they connect (the default)."""
        return os.path.realpath(_ledger.directory() / "startup" / name)

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
    def script(self, specs: Sequence[WorkerSpec], name: str, array: bool) -> str:
        """The job script for ``specs`` (one job, or one array when ``array``)."""
        lines = ["#!/bin/sh", f"#SBATCH --job-name={name}"]
        if array:
            lines.append(f"#SBATCH --array=0-{len(specs) - 1}")
        if self.log_output is not None:
            lines.append(f"#SBATCH --output={self.log_output}")
        if self.log_error == STARTUP_LOG:
            file = "%A_%a.err" if array else "%j.err"
            lines.append(f"#SBATCH --error={os.path.join(self.startup_folder(name), file)}")
        elif self.log_error is not None:
            lines.append(f"#SBATCH --error={self.log_error}")
        lines.append("#SBATCH --ntasks=1")
        for option, value in (
            ("--cpus-per-task", self.cpus_per_task),
            ("--mem", self.memory),
            ("--mem-per-cpu", self.memory_per_cpu),
            ("--time", self.time_minutes),
            ("--partition", self.partition),
        ):
            if value is not None:
                lines.append(f"#SBATCH {option}={value}")
        lines += [f"#SBATCH {option}" for option in self.sbatch_options]
        lines += self.script_lines
        if array:
            lines.append('case "${SLURM_ARRAY_TASK_ID:-0}" in')
            lines += [f"  {i}) id={shlex.quote(s.worker_id)} ;;" for i, s in enumerate(specs)]
            lines.append("esac")
        else:
            lines.append(f"id={shlex.quote(specs[0].worker_id)}")
        lines.append("PYCREW_WORKER=$id; export PYCREW_WORKER")
        command = [shlex.quote(part) for part in specs[0].command]
        if self.python is not None:
            command[0] = shlex.quote(self.python)
        # the worker id is the one argument that differs between array elements
        command = ['"$id"' if part == shlex.quote(specs[0].worker_id) else part for part in command]
        lines.append("exec " + " ".join(command))
        return "\n".join(lines) + "\n"

    def _environment(self, spec: WorkerSpec, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in spec.env_remove}
        env.update(spec.env)
        env.pop("PYCREW_WORKER", None)  # set per array element by the script
        if self.log_bytes_max is not None:
            env[BYTES_ENV] = str(self.log_bytes_max)
        if self.log_error == STARTUP_LOG:
            env[STARTUP_ENV] = self.startup_folder(name)
        return env

    # ------------------------------------------------------------ launching
    def launch_worker(self, spec: WorkerSpec) -> SlurmJob:
        return self.launch_workers([spec])[0]

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[SlurmJob]:
        if not specs:
            return []
        name = self.job_name(specs[0].controller)
        if self.log_error == STARTUP_LOG:
            try:
                os.makedirs(self.startup_folder(name), mode=0o700, exist_ok=True)
            except OSError as exc:
                raise LaunchError(
                    f"cannot make the folder of the jobs' error files "
                    f"{self.startup_folder(name)!r}: {exc.strerror}; pass log_error= a path"
                ) from exc
        self._names.add(name)
        handles: list[SlurmJob] = []
        if self.array and len(specs) > 1:
            size = self.max_array_size()
            for start in range(0, len(specs), size):
                chunk = specs[start : start + size]
                job_id = self._submit(chunk, name, array=len(chunk) > 1)
                handles += (
                    [SlurmJob(job_id, i) for i in range(len(chunk))]
                    if len(chunk) > 1
                    else [SlurmJob(job_id)]
                )
        else:
            for spec in specs:
                handles.append(SlurmJob(self._submit([spec], name, array=False)))
        self._poll_every = POLL_MIN
        return handles

    def _submit(self, specs: Sequence[WorkerSpec], name: str, array: bool) -> str:
        text = self.script(specs, name, array)
        args = ["sbatch", "--parsable"]
        stdin: str | None = text
        if self.script_directory is not None:
            self.script_directory.mkdir(parents=True, exist_ok=True)
            path = self.script_directory / f"{name}.{specs[0].worker_id}.sh"
            path.write_text(text)
            args.append(str(path))
            stdin = None
        out = self._run(args, stdin=stdin, env=self._environment(specs[0], name))
        # --parsable prints "jobid" or "jobid;cluster"
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise LaunchError(f"sbatch printed no job id: {out.strip()!r}")
        self._submitted.append(job_id)
        self._workdir[job_id] = os.getcwd()
        self._job_names[job_id] = name
        return job_id

    # ------------------------------------------------------------ watching
    def describe_worker(self, handle: Any) -> dict[str, Any]:
        return {"job": handle.id} if isinstance(handle, SlurmJob) else {}

    def terminate_worker(self, handle: Any) -> None:
        if isinstance(handle, SlurmJob):
            with contextlib.suppress(LaunchError):
                self._run(["scancel", handle.id])

    def exit_code(self, handle: Any) -> int | None:
        return self.exit_codes([handle])[0]

    def exit_codes(self, handles: Sequence[Any]) -> list[int | None]:
        jobs = [h for h in handles if isinstance(h, SlurmJob)]
        now = time.monotonic()
        # a job not asked about last time (just launched, or just gone) is
        # worth a look now; otherwise the back-off decides
        asked = {j.id for j in jobs}
        fresh = bool(asked - self._asked)
        self._asked = asked
        if jobs and (fresh or now - self._polled_at >= self._poll_every):
            self._poll(jobs)
            self._polled_at = now
        return [self._ended.get(h.id) if isinstance(h, SlurmJob) else None for h in handles]

    def _poll(self, jobs: list[SlurmJob]) -> None:
        """One squeue for every job of this start; scontrol for those that left the queue."""
        # a completing job's worker has ended already, and its exit code is known
        live = {i for i, state in self._queued().items() if state != "COMPLETING"}
        left = [j for j in jobs if j.id not in live and j.id not in self._ended]
        # back off while nothing changes; look again soon after something did
        self._poll_every = POLL_MIN if left else min(POLL_MAX, 2 * self._poll_every)
        for job_id in sorted({j.job_id for j in left}):
            self._ended.update(self._exit_codes_of(job_id))
        for job in left:
            # forgotten by SLURM already (after MinJobAge): it ended, how is unknown
            self._ended.setdefault(job.id, 0)

    def _queued(self) -> dict[str, str]:
        """This start's jobs that SLURM still holds (pending, running, completing): id to state."""
        if not self._names:
            return {}
        names = ",".join(sorted(self._names))
        out = self._run(["squeue", "-h", "-r", f"--name={names}", "-o", "%i %T"])
        pairs = (line.split() for line in out.splitlines())
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

    def _exit_codes_of(self, job_id: str) -> dict[str, int]:
        """Exit codes of a job or every element of an array, from ``scontrol``."""
        codes: dict[str, int] = {}
        with contextlib.suppress(LaunchError):
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
        return codes

    # ------------------------------------------------------------ failures
    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, SlurmJob):
            return None
        path = self._stderr.pop(handle.id, None) or self._error_file(handle)
        if path == os.devnull:
            raise LaunchError(
                "its error output went to /dev/null, so pycrew cannot say why: pass "
                "log_error= a path to keep it"
            )
        # a shared file system may show a file written on a node a moment late
        deadline = time.monotonic() + SHOW_SECONDS
        text = read_tail(path)
        while not text and time.monotonic() < deadline:
            time.sleep(0.1)
            text = read_tail(path)
        if self.log_error == STARTUP_LOG:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if text is None:
            reason = self._reason.pop(handle.id, "")
            raise LaunchError(
                f"the job left no error file {path}"
                + (f" (SLURM's reason: {reason})" if reason else "")
                + ": SLURM could not write it there (is the folder on a file system the "
                "compute nodes share, and writable there?), or the job never ran its script"
            )
        return text

    def _error_file(self, job: SlurmJob) -> str:
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

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """Cancel every job of this start still queued or running, and wait for the queue."""
        submitted = self._submitted
        try:
            if submitted:
                with contextlib.suppress(LaunchError):
                    self._run(["scancel", *submitted])
                deadline = time.monotonic() + seconds
                with contextlib.suppress(LaunchError):
                    while self._queued() and time.monotonic() < deadline:
                        time.sleep(0.25)
        finally:
            if self.log_error == STARTUP_LOG:
                for name in self._names:
                    shutil.rmtree(self.startup_folder(name), ignore_errors=True)
            # the next start submits under a new name
            self._submitted, self._names = [], set()
            self._token = secrets.token_hex(4)
            self._ended.clear()
            self._asked = set()
            for known in (self._workdir, self._job_names, self._own_id, self._stderr, self._reason):
                known.clear()


def _make_log_folder(label: str, pattern: str) -> None:
    """Make the folder of a job log now: SLURM cannot start a job whose log it cannot open."""
    folder = os.path.dirname(os.path.expanduser(pattern))
    if not folder or "%" in folder:
        return  # the submit folder itself, or a folder SLURM names per job
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ArgumentError(f"{label}: cannot make the folder {folder!r}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK):
        raise ArgumentError(f"{label}: the folder {folder!r} is not writable")
