"""What every batch scheduler's launcher shares; an engine adds its commands.

```
 scaler thread ── launch_workers(specs) ──► submit(): one array per scaling step, script on
      │                                     stdin, job name pycrew.<controller>.<start token>,
      │                                     the secret only in the submission's environment
      ├── exit_codes(handles) ──► queued(): one status query for this start's jobs, at most
      │                            every few seconds, backing off ──► finished(job) for jobs
      │                            that left the queue: their exit codes
      ├── failure_output(handle) ──► the job's error file (a start-up file by default)
      └── shutdown() ──► cancel(every job of this start), then wait until the queue is clear
```

An engine (SLURM, ...) subclasses ``ClusterLauncher`` with its script
directives and its four commands (submit, status, exit codes, cancel), and
``ClusterMonitor`` (``_cluster_monitor``) with its queue listing. Liveness comes from workers
dialing in; the queue is only asked about jobs that have not connected yet or
have just left.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import inspect
import logging
import math
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, LaunchError
from .._operations import _ledger
from .._operations._diagnose import read_tail
from .._operations._logs import BYTES_ENV, STARTUP_ENV, check_log_bytes
from .._resources import Resources
from ._launcher import Launcher, some

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._launcher import WorkerSpec

#: seconds between queue polls right after a launch, and at most after backing off
POLL_MIN, POLL_MAX = 1.0, 30.0
#: how long one scheduler command may take
COMMAND_SECONDS = 60.0
#: job names are ``pycrew.<controller>.<token>``
JOB_PREFIX = "pycrew."
#: ``log_error``'s default: stderr kept until the worker connects, then dropped
STARTUP_LOG = "(startup)"
#: seconds before a job's wall-time limit that its workers count as its end
JOB_END_MARGIN = 10
#: how long a job's error file may take to show on this machine (a shared file system)
SHOW_SECONDS = 2.0

#: an engine's launcher and monitor log on a child of this one, named after the engine
log = logging.getLogger("pycrew.engines")


def engine_log(engine: str) -> logging.Logger:
    """The logger of one engine: ``pycrew.engines.<engine>``, or the shared one."""
    return log.getChild(engine) if engine else log


def run_command(
    args: list[str], stdin: str | None = None, env: Any = None, log: logging.Logger = log
) -> str:
    """Run a scheduler command; its standard output, or a LaunchError with its message.

    The command line is logged at DEBUG, a failure at WARNING; its input (a
    job script) and environment (the secret) never are.
    """
    if log.isEnabledFor(logging.DEBUG):
        log.debug("running %s", shlex.join(args))
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
        log.warning("%s was not found on PATH", args[0])
        raise LaunchError(
            f"{args[0]} was not found on PATH: run the controller where the scheduler's "
            "commands are installed (a login node)"
        ) from None
    except subprocess.TimeoutExpired:
        log.warning("%s did not answer in %.0f s", args[0], COMMAND_SECONDS)
        raise LaunchError(f"{args[0]} did not answer in {COMMAND_SECONDS:.0f} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        log.warning("%s failed: %s", args[0], message)
        raise LaunchError(f"{args[0]} failed: {message}")
    return done.stdout


def check_megabytes(label: str, gigabytes: float | None) -> int | None:
    """Gigabytes as whole MiB (rounded), or None."""
    if gigabytes is None:
        return None
    if isinstance(gigabytes, bool) or not isinstance(gigabytes, (int, float)):
        raise ArgumentTypeError(f"{label} must be a number of gigabytes, got {gigabytes!r}")
    if not gigabytes > 0 or math.isinf(gigabytes):
        raise ArgumentError(f"{label} must be a positive number of gigabytes, got {gigabytes!r}")
    return round(1024 * gigabytes)


def mebibytes(n: int) -> int:
    """Bytes as whole MiB (every scheduler's "M", "mb" or "MB"), rounded up: never short."""
    return -(-n // 2**20)


def check_positive_int(label: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{label} must be a whole number >= 1, got {value!r}")
    return value


def check_text(label: str, value: str | None) -> str | None:
    """An optional name such as a queue or partition: None or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ArgumentError(f"{label} must be a non-empty string, got {value!r}")
    return value


def in_folder(folder: str | None, command: str) -> str:
    """A scheduler command, from ``folder`` where one is given, else found on PATH."""
    return os.path.join(folder, command) if folder else command


def check_lines(label: str, value: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        raise ArgumentTypeError(f"{label} must be a list of strings, not one string")
    lines = list(value)
    for line in lines:
        if not isinstance(line, str) or "\n" in line:
            raise ArgumentError(f"each of {label} must be a string of one line, got {line!r}")
    return lines


def make_log_folder(label: str, pattern: str) -> None:
    """Make the folder of a job log now: a scheduler cannot start a job whose log it cannot open."""
    folder = os.path.dirname(os.path.expanduser(pattern))
    if not folder or "%" in folder or "$" in folder:
        return  # the submit folder itself, or a folder the scheduler names per job
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ArgumentError(f"{label}: cannot make the folder {folder!r}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK):
        raise ArgumentError(f"{label}: the folder {folder!r} is not writable")


@dataclass(frozen=True)
class ClusterJob:
    """The handle of one worker: a job, or one element of a job array."""

    job_id: str
    index: int | None = None
    #: which of the job's workers (``processes`` > 1 puts several in one job)
    slot: int = 0

    @property
    def id(self) -> str:
        """The id the scheduler shows for it (SLURM's form, ``123`` or ``123_4``, by default)."""
        return self.job_id if self.index is None else f"{self.job_id}_{self.index}"


class ClusterLauncher(Launcher):
    """Base of launchers that submit workers as jobs of a batch scheduler.

    ``processes`` worker processes run in each job (array element): under
    a cluster's quota of jobs, more workers. Each has its own id, and the
    controller sees each as a worker of its own; the job ends once all of
    them have left.

    A subclass sets ``scheduler`` (its name, for messages), ``array_variable``
    (the variable holding an array element's index in the job) and
    ``array_first`` (the first index), and implements ``directives``,
    ``submit_command``, ``parse_job_id``, ``queued``, ``finished`` and
    ``cancel``. The secret reaches jobs through the submission's environment,
    never their script. Workers of each resource shape go in a submission of
    their own, whose ``directives`` ask for that shape.
    """

    #: what the scheduler is called, in messages
    scheduler = "the scheduler"
    #: the engine's name in its logger's, ``pycrew.engines.<engine>``
    engine = ""
    #: the variable an array element finds its index in, and the first index
    array_variable = ""
    array_first = 0
    #: queue states of a job whose worker has ended already (its exit code is known)
    ending_states: frozenset[str] = frozenset()
    #: states of ended jobs the queue keeps showing for a while (PBS's C, LSF's
    #: DONE): shutdown does not wait for them to go
    finished_states: frozenset[str] = frozenset()
    #: whether the submit command needs the script as a file (not on stdin), or
    #: reads it on stdin even where a copy is kept in ``script_directory``
    needs_file = False
    reads_stdin = False
    #: the error file of a start-up log, in the scheduler's own pattern language;
    #: empty: the job script sends its stderr to ``<worker id>.err`` itself
    startup_file_array = ""
    startup_file_single = ""

    def __init__(
        self,
        *,
        script_lines: Sequence[str] = (),
        script_directory: str | os.PathLike[str] | None = None,
        log_output: str | None = "/dev/null",
        log_error: str | None = STARTUP_LOG,
        log_bytes_max: int | None = None,
        python: str | None = None,
        array: bool = True,
        processes: int = 1,
    ) -> None:
        for label, value in (("log_output", log_output), ("log_error", log_error)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ArgumentError(f"{label} must be a path (a non-empty string) or None")
            if value is not None and value != STARTUP_LOG:
                make_log_folder(label, value)
        if python is not None and (not isinstance(python, str) or not python):
            raise ArgumentError(f"python must be a path to an interpreter, got {python!r}")
        if not isinstance(array, bool):
            raise ArgumentTypeError(f"array must be True or False, got {array!r}")
        self.script_lines = check_lines("script_lines", script_lines)
        self.script_directory = (
            Path(script_directory).expanduser() if script_directory is not None else None
        )
        self.log_output = log_output
        self.log_error = log_error
        self.log_bytes_max = check_log_bytes(log_bytes_max)
        self.python = python
        self.array = array
        #: worker processes per job (array element): under a quota of jobs, more workers
        self.processes = check_positive_int("processes", processes) or 1
        #: how many times each scheduler command ran, for the curious and the tests
        self.calls: collections.Counter[str] = collections.Counter()
        self._token = secrets.token_hex(4)
        self._names: set[str] = set()
        self._submitted: list[str] = []
        self._asked: set[str] = set()
        self._ended: dict[str, int] = {}
        self._polled_at = -math.inf
        self._poll_every = POLL_MIN
        # for reading a failed job's error file: the folder each job was
        # submitted from, its job name, and what the scheduler said of it
        self._workdir: dict[str, str] = {}
        self._job_names: dict[str, str] = {}
        self._worker_of: dict[ClusterJob, str] = {}
        # workers of a job of several that the controller asked to stop
        self._stopping: dict[str, set[int]] = {}
        self._stderr: dict[str, str] = {}
        self._reason: dict[str, str] = {}

    # ------------------------------------------------------------- engine
    @abc.abstractmethod
    def directives(
        self, count: int, name: str, array: bool, shape: Resources | None = None
    ) -> list[str]:
        """The script's scheduler lines (name, array of ``count`` jobs, logs, resources).

        ``shape`` (None: none) is what each job asks for on top of the
        launcher's own options, and instead of them for the same quantity.
        """

    @abc.abstractmethod
    def submit_command(self, script: str | None) -> list[str]:
        """The submit command: for a script file, or (``None``) a script on stdin."""

    @abc.abstractmethod
    def parse_job_id(self, out: str) -> str:
        """The job id in what the submit command printed."""

    @abc.abstractmethod
    def queued(self, names: Sequence[str]) -> dict[str, str]:
        """Jobs of these names the scheduler still holds: handle id to state."""

    @abc.abstractmethod
    def finished(self, job_id: str) -> dict[str, int]:
        """Exit codes of a job (or each element of an array) that left the queue, by handle id.

        May fill ``self._stderr`` and ``self._reason`` by handle id for the diagnosis.
        """

    @abc.abstractmethod
    def cancel(self, ids: Sequence[str]) -> None:
        """Cancel jobs, array elements or whole arrays by id."""

    def max_array_size(self) -> int:
        """How many elements one array may have."""
        return 10_000

    def make_handle(self, job_id: str, index: int | None, slot: int = 0) -> ClusterJob:
        return ClusterJob(job_id, index, slot)

    def error_file(self, job: ClusterJob) -> str:
        """Where a job's stderr went, as a path on this machine.

        By default: the start-up file the job script names after its worker,
        or ``log_error`` as given (no patterns).
        """
        if self.log_error == STARTUP_LOG:
            name = self._job_names.get(job.job_id, "")
            worker = self._worker_of.get(job, "")
            return os.path.join(self.startup_folder(name), f"{worker}.err")
        if self.log_error is None:
            raise LaunchError(
                f"pycrew cannot tell where {self.scheduler} put job {job.id}'s errors"
            )
        path = os.path.expanduser(self.log_error)
        return os.path.join(self._workdir.get(job.job_id, os.getcwd()), path)

    # ----------------------------------------------------------- commands
    @property
    def log(self) -> logging.Logger:
        """Where this launcher's launches, commands and cancellations are logged."""
        return engine_log(self.engine)

    def _run(self, args: list[str], stdin: str | None = None, env: Any = None) -> str:
        self.calls[os.path.basename(args[0])] += 1
        return run_command(args, stdin, env, self.log)

    def job_name(self, controller: str) -> str:
        """The name every job of this controller start carries."""
        return f"{JOB_PREFIX}{controller}.{self._token}"

    def startup_folder(self, name: str) -> str:
        """Where the jobs named ``name`` keep their stderr until they connect (the default)."""
        return os.path.realpath(_ledger.directory() / "startup" / name)

    def startup_path(self, name: str, array: bool) -> str:
        file = self.startup_file_array if array else self.startup_file_single
        return os.path.join(self.startup_folder(name), file)

    def walltime_seconds(self) -> float | None:
        """The job's wall-time limit, if the launcher asks for one."""
        minutes = getattr(self, "walltime_minutes", None)
        return None if minutes is None else 60.0 * minutes

    def array_index(self) -> str:
        """The shell expression of an array element's index inside its job."""
        return f"${{{self.array_variable}:-{self.array_first}}}"

    def is_live(self, job: ClusterJob, held: dict[str, str]) -> bool:
        """Whether the queue still holds a job's worker (``held``: ``queued``'s answer)."""
        state = held.get(job.id)
        return state is not None and state not in self.ending_states

    # ------------------------------------------------------------- script
    def groups(self, specs: Sequence[WorkerSpec]) -> list[Sequence[WorkerSpec]]:
        """The workers of each job (array element): ``processes`` at a time."""
        return [specs[i : i + self.processes] for i in range(0, len(specs), self.processes)]

    def script(self, specs: Sequence[WorkerSpec], name: str, array: bool) -> str:
        """The job script for ``specs`` (one job, or one array when ``array``)."""
        groups = self.groups(specs)
        ids = [" ".join(spec.worker_id for spec in group) for group in groups]
        shape = specs[0].shape  # one submission holds workers of one shape
        if shape is None:
            head = self.directives(len(groups), name, array)
        else:
            workers = max(len(group) for group in groups)
            head = self.directives(len(groups), name, array, shape=self._job_shape(shape, workers))
        lines = ["#!/bin/sh", *head, *self.script_lines]
        if array:
            first = self.array_first
            lines.append(f'case "{self.array_index()}" in')
            lines += [f"  {first + i}) ids={shlex.quote(text)} ;;" for i, text in enumerate(ids)]
            lines.append("esac")
        else:
            lines.append(f"ids={shlex.quote(ids[0])}")
        command = [shlex.quote(part) for part in specs[0].command]
        if self.python is not None:
            command[0] = shlex.quote(self.python)
        # the worker id is the one argument that differs between workers
        command = ['"$id"' if part == shlex.quote(specs[0].worker_id) else part for part in command]
        walltime = self.walltime_seconds()
        if walltime is not None:
            # when the job ends, by this node's clock, a little early: the
            # scheduler's clock started before this script did. A worker takes
            # no task it cannot end by then.
            end = int(walltime) - JOB_END_MARGIN
            lines.append(f"PYCREW_JOB_END=$(( $(date +%s) + {end} )); export PYCREW_JOB_END")
        worker = ["PYCREW_WORKER=$id; export PYCREW_WORKER"]
        if self.log_error == STARTUP_LOG and not self.startup_file_single:
            # no pattern language to name a file per worker: the script does it
            folder = shlex.quote(self.startup_folder(name))
            worker.append(f'exec 2>>{folder}/"$id.err"')
        worker.append("exec " + " ".join(command))
        if self.processes == 1:
            lines += ["id=$ids", *worker]
        else:
            # each worker its own process group: ending one (its watchdog does,
            # when its connection goes) leaves the others and the job be
            lines += ["PYCREW_OWN_GROUP=1; export PYCREW_OWN_GROUP", "for id in $ids; do", "  ("]
            lines += [f"    {line}" for line in worker]
            lines += ["  ) &", "done", "wait"]
        return "\n".join(lines) + "\n"

    def _job_shape(self, shape: Resources, workers: int) -> Resources:
        """What a job asks for to run ``workers`` workers of ``shape`` side by side."""
        # a plugin written before shapes existed has no way to ask for one
        if "shape" not in inspect.signature(self.directives).parameters:
            raise LaunchError(
                f"{type(self).__name__} cannot ask {self.scheduler} for resources "
                f"({shape}): its directives() takes no shape"
            )
        if workers == 1:
            return shape
        if shape.gpus:
            # a job's GPUs are one set: each of its workers would use the first
            raise LaunchError(
                f"workers that ask for gpus cannot share a job ({workers} per job here): "
                "use processes=1 for a controller whose tasks ask for gpus"
            )
        custom = tuple((key, count * workers) for key, count in shape.custom)
        return Resources(cpus=shape.cpus * workers, memory=shape.memory * workers, custom=custom)

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
    def launch_worker(self, spec: WorkerSpec) -> ClusterJob:
        return self.launch_workers([spec])[0]

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[ClusterJob]:
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
        # a script asks for one shape: a submission per shape, handles in the order of specs
        positions: dict[Resources | None, list[int]] = {}
        for i, spec in enumerate(specs):
            positions.setdefault(spec.shape, []).append(i)
        placed: dict[int, ClusterJob] = {}
        for where in positions.values():
            batch = [specs[i] for i in where]
            placed.update(zip(where, self._launch_batch(batch, name), strict=True))
        handles = [placed[i] for i in range(len(specs))]
        for spec, handle in zip(specs, handles, strict=True):
            self._worker_of[handle] = spec.worker_id
        self._poll_every = POLL_MIN
        return handles

    def _launch_batch(self, specs: Sequence[WorkerSpec], name: str) -> list[ClusterJob]:
        """Submit workers of one shape: one array (or as few as its size allows), or a job each."""
        handles: list[ClusterJob] = []
        groups = self.groups(specs)
        if self.array and len(groups) > 1:
            size = self.max_array_size()
            for start in range(0, len(groups), size):
                chunk = groups[start : start + size]
                workers = [spec for group in chunk for spec in group]
                job_id = self._submit(workers, name, array=len(chunk) > 1)
                for i, group in enumerate(chunk):
                    index = self.array_first + i if len(chunk) > 1 else None
                    handles += [self.make_handle(job_id, index, s) for s in range(len(group))]
        else:
            for group in groups:
                job_id = self._submit(group, name, array=False)
                handles += [self.make_handle(job_id, None, s) for s in range(len(group))]
        return handles

    def _submit(self, specs: Sequence[WorkerSpec], name: str, array: bool) -> str:
        text = self.script(specs, name, array)
        folder = self.script_directory
        scratch = None
        if folder is None and self.needs_file:
            # a private file, removed once submitted
            import tempfile

            scratch = folder = Path(tempfile.mkdtemp(prefix="pycrew-job-"))
        try:
            path = None
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{name}.{specs[0].worker_id}.sh"
                path.write_text(text)
            on_stdin = path is None or self.reads_stdin
            args = self.submit_command(None if on_stdin else str(path))
            env = self._environment(specs[0], name)
            out = self._run(args, stdin=text if on_stdin else None, env=env)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        job_id = self.parse_job_id(out)
        self.log.info(
            "launched %d worker(s) as %s job %s%s: %s",
            len(specs),
            self.scheduler,
            job_id,
            "" if specs[0].shape is None else f" ({specs[0].shape})",
            some(spec.worker_id for spec in specs),
        )
        self._submitted.append(job_id)
        self._workdir[job_id] = os.getcwd()
        self._job_names[job_id] = name
        return job_id

    # ------------------------------------------------------------ watching
    def log_files(self, worker_id: str, handle: Any | None) -> list[str]:
        if not isinstance(handle, ClusterJob):
            return []
        try:
            path = self.error_file(handle)
        except LaunchError:  # pycrew cannot tell where the scheduler put it
            return []
        return [] if path == os.devnull else [path]

    def describe_worker(self, handle: Any) -> dict[str, Any]:
        if not isinstance(handle, ClusterJob):
            return {}
        return {"job": handle.id} | ({"slot": handle.slot} if self.processes > 1 else {})

    def terminate_worker(self, handle: Any) -> None:
        if not isinstance(handle, ClusterJob):
            return
        if self.processes > 1:
            # a job of several workers ends once all of them are to stop; one
            # alone ends with its connection (its watchdog sees it close)
            stopping = self._stopping.setdefault(handle.id, set())
            stopping.add(handle.slot)
            siblings = sum(1 for h in self._worker_of if h.id == handle.id)
            if len(stopping) < siblings:
                return
        self.log.info("cancelling job %s (worker %s)", handle.id, self._worker_of.get(handle, "?"))
        with contextlib.suppress(LaunchError):
            self.cancel([handle.id])

    def exit_code(self, handle: Any) -> int | None:
        return self.exit_codes([handle])[0]

    def exit_codes(self, handles: Sequence[Any]) -> list[int | None]:
        jobs = [h for h in handles if isinstance(h, ClusterJob)]
        now = time.monotonic()
        # a job not asked about last time (just launched, or just gone) is
        # worth a look now; otherwise the back-off decides
        asked = {j.id for j in jobs}
        fresh = bool(asked - self._asked)
        self._asked = asked
        if jobs and (fresh or now - self._polled_at >= self._poll_every):
            self._poll(jobs)
            self._polled_at = now
        return [self._ended.get(h.id) if isinstance(h, ClusterJob) else None for h in handles]

    def _poll(self, jobs: list[ClusterJob]) -> None:
        """One status query for every job of this start; exit codes of those that left."""
        held = self.queued(sorted(self._names)) if self._names else {}
        left = [j for j in jobs if not self.is_live(j, held) and j.id not in self._ended]
        # back off while nothing changes; look again soon after something did
        self._poll_every = POLL_MIN if left else min(POLL_MAX, 2 * self._poll_every)
        gone = {j.id for j in left}
        for job_id in sorted({j.job_id for j in left}):
            with contextlib.suppress(LaunchError):
                codes = self.finished(job_id).items()
                # an array's other elements may still be queued or running: the
                # scheduler shows them with a code too (SLURM's 0:0), not theirs yet
                self._ended.update((key, code) for key, code in codes if key in gone)
        for job in left:
            # forgotten by the scheduler already: it ended, how is unknown
            self._ended.setdefault(job.id, 0)
            self.log.debug("job %s left the queue, exit code %s", job.id, self._ended[job.id])

    # ------------------------------------------------------------ failures
    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, ClusterJob):
            return None
        path = self._stderr.pop(handle.id, None) or self.error_file(handle)
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
                + (f" ({self.scheduler}'s reason: {reason})" if reason else "")
                + f": {self.scheduler} could not write it there (is the folder on a file system "
                "the compute nodes share, and writable there?), or the job never ran its script"
            )
        return text

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """Cancel every job of this start still queued or running, and wait for the queue."""
        submitted, names = self._submitted, sorted(self._names)
        try:
            if submitted:
                self.log.info(
                    "cancelling the %d job(s) of this start: %s", len(submitted), some(submitted)
                )
                with contextlib.suppress(LaunchError):
                    self.cancel(submitted)
                deadline = time.monotonic() + seconds
                with contextlib.suppress(LaunchError):
                    while self._holding(names):
                        if time.monotonic() >= deadline:
                            self.log.warning(
                                "%s still holds jobs of this start after %.0f s",
                                self.scheduler,
                                seconds,
                            )
                            break
                        time.sleep(0.25)
        finally:
            if self.log_error == STARTUP_LOG:
                for name in names:
                    shutil.rmtree(self.startup_folder(name), ignore_errors=True)
            # the next start submits under a new name
            self._submitted, self._names = [], set()
            self._token = secrets.token_hex(4)
            self._ended.clear()
            self._asked = set()
            self._forget()

    def _holding(self, names: Sequence[str]) -> bool:
        """Whether the queue still holds a job of these names that it has not finished with."""
        return any(state not in self.finished_states for state in self.queued(names).values())

    def _forget(self) -> None:
        """Drop what was learnt about this start's jobs (a subclass adds its own)."""
        for known in (
            self._workdir,
            self._job_names,
            self._worker_of,
            self._stderr,
            self._reason,
            self._stopping,
        ):
            known.clear()


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
