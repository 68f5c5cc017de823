"""LSF (IBM Spectrum LSF): its launcher and ``LsfMonitor`` (``lsf_controller()`` is a factory).

```
 launch_workers ──► bsub < script   (#BSUB -J "name[1-n]", -o, -e, -n, -M, -W, -q lines)
 exit_codes ──────► bjobs -a -o "jobid jobindex stat exit_code job_name"  (one call)
 shutdown ────────► bkill <every job of this start>
```

No LSF can run here: the tests render scripts and drive stand-in ``bsub``,
``bjobs`` and ``bkill`` commands that run jobs as local processes (see
docs/lsf.md), so this engine is checked against LSF's documented formats,
not a real LSF.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

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
    in_folder,
    mebibytes,
    run_command,
)
from ._cluster_monitor import ClusterJobInfo, ClusterMonitor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._resources import Resources


_SUBMITTED = re.compile(r"Job <(\d+)>")
#: the fields asked of bjobs, in order; "|" cannot occur in them
FIELDS = "jobid jobindex stat exit_code job_name delimiter='|'"
#: states of a job whose worker has ended
ENDED = frozenset({"DONE", "EXIT"})


class LsfJob(ClusterJob):
    """The handle of one worker: an LSF job, or one element of an array (``123[4]``)."""

    @property
    def id(self) -> str:
        return self.job_id if self.index is None else f"{self.job_id}[{self.index}]"


def parse_bjobs(out: str) -> list[tuple[str, str, int | None, str]]:
    """``bjobs -o FIELDS`` output as ``(handle id, state, exit code, job name)`` rows."""
    rows = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        job, index, state, code, name = parts
        key = f"{job}[{index}]" if index.isdigit() and index != "0" else job
        rows.append((key, state, int(code) if code.isdigit() else None, name))
    return rows


class LsfLauncher(ClusterLauncher):
    """Start workers as LSF jobs, a job array per scaling step.

    Args:
        queue: ``#BSUB -q``.
        cores: ``#BSUB -n``: slots per worker.
        memory_gigabytes: ``#BSUB -M`` (in MB, LSF's usual unit) with a
            matching ``rusage[mem=...]`` request.
        walltime_minutes: ``#BSUB -W HH:MM``.
        script_lines, script_directory, python, array, log_bytes_max: as for SLURM.
        log_output, log_error: ``#BSUB -o``/``-e`` (LSF's ``%J`` and ``%I``
            allowed). By default stdout is discarded and each worker's stderr
            goes to a start-up file of its own until it connects.
        bsub_options: more ``#BSUB`` lines, such as ``"-P project"``.
        commands: the folder holding ``bsub``, ``bjobs`` and ``bkill``
            (default: found on ``PATH``).

    A worker launched for a resource shape runs in a job that asks for it, in
    place of the options above for the same quantity: ``-n`` for its cpus,
    ``-M`` and ``rusage[mem=...]`` for its memory (MB, as ``memory_gigabytes``),
    ``-gpu "num=N"`` for its GPUs, and its named counts in the same
    ``rusage[...]`` string as the memory.
    """

    scheduler = "LSF"
    engine = "lsf"
    array_variable = "LSB_JOBINDEX"
    array_first = 1
    ending_states = ENDED
    finished_states = ENDED
    # bsub reads #BSUB lines only from a script on its standard input
    reads_stdin = True

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
        bsub_options: Sequence[str] = (),
        python: str | None = None,
        array: bool = True,
        processes: int = 1,
        commands: str | os.PathLike[str] | None = None,
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
        self.queue = check_text("queue", queue)
        self.cores = check_positive_int("cores", cores)
        self.memory = check_megabytes("memory_gigabytes", memory_gigabytes)
        self.walltime_minutes = check_positive_int("walltime_minutes", walltime_minutes)
        self.bsub_options = check_lines("bsub_options", bsub_options)
        self.commands = os.fspath(commands) if commands is not None else None
        # exit codes bjobs reported with the states, by handle id
        self._codes: dict[str, int] = {}

    def command(self, name: str) -> str:
        return in_folder(self.commands, name)

    def make_handle(self, job_id: str, index: int | None, slot: int = 0) -> ClusterJob:
        return LsfJob(job_id, index, slot)

    # ------------------------------------------------------------- script
    def directives(
        self, count: int, name: str, array: bool, shape: Resources | None = None
    ) -> list[str]:
        lines = [f'#BSUB -J "{name}[1-{count}]"' if array else f"#BSUB -J {name}"]
        if self.log_output is not None:
            lines.append(f"#BSUB -o {self.log_output}")
        error = os.devnull if self.log_error == STARTUP_LOG else self.log_error
        if error is not None:
            lines.append(f"#BSUB -e {error}")
        if self.queue is not None:
            lines.append(f"#BSUB -q {self.queue}")
        cores, memory = self.cores, self.memory
        usage: list[str] = []
        if shape is not None:
            cores = shape.cpus or cores
            memory = mebibytes(shape.memory) if shape.memory else memory
            usage = [f"{key}={n}" for key, n in shape.custom]
        if cores is not None:
            lines.append(f"#BSUB -n {cores}")
        if memory is not None:
            lines.append(f"#BSUB -M {memory}")
            usage.insert(0, f"mem={memory}")
        if usage:
            # one rusage string: LSF reads its resources joined by ":"
            lines.append(f'#BSUB -R "rusage[{":".join(usage)}]"')
        if shape is not None and shape.gpus:
            lines.append(f'#BSUB -gpu "num={shape.gpus}"')
        if self.walltime_minutes is not None:
            hours, minutes = divmod(self.walltime_minutes, 60)
            lines.append(f"#BSUB -W {hours:02d}:{minutes:02d}")
        lines += [f"#BSUB {option}" for option in self.bsub_options]
        return lines

    # ----------------------------------------------------------- commands
    def submit_command(self, script: str | None) -> list[str]:
        # bsub reads a script with #BSUB lines from its standard input
        return [self.command("bsub")]

    def parse_job_id(self, out: str) -> str:
        found = _SUBMITTED.search(out)
        if found is None:
            raise LaunchError(f"bsub printed no job id: {out.strip()!r}")
        return found[1]

    def queued(self, names: Sequence[str]) -> dict[str, str]:
        wanted = set(names)
        out = self._run([self.command("bjobs"), "-a", "-noheader", "-o", FIELDS])
        held = {}
        for key, state, code, name in parse_bjobs(out):
            if name.partition("[")[0] in wanted:
                held[key] = state
                if state in ENDED and code is not None:
                    self._codes[key] = code
        return held

    def finished(self, job_id: str) -> dict[str, int]:
        # bjobs gave the exit codes with the states it last reported
        return {k: v for k, v in self._codes.items() if k.partition("[")[0] == job_id}

    def cancel(self, ids: Sequence[str]) -> None:
        self._run([self.command("bkill"), *ids])

    def _forget(self) -> None:
        super()._forget()
        self._codes.clear()


class LsfMonitor(ClusterMonitor):
    """pycrew's jobs in the LSF queue, to look at or cancel, even after a crash.

    Args:
        user: whose jobs (default: the current user).
        commands: the folder holding ``bjobs`` and ``bkill`` (default: ``PATH``).
    """

    engine = "lsf"

    def __init__(self, user: str | None = None, commands: str | None = None) -> None:
        super().__init__(user)
        self.commands = commands

    def _command(self, name: str) -> str:
        return in_folder(self.commands, name)

    def jobs(self) -> list[ClusterJobInfo]:
        args = [self._command("bjobs"), "-u", self.user, "-noheader", "-o", FIELDS]
        out = run_command(args, log=self.log)
        found = []
        for key, state, _code, name in parse_bjobs(out):
            base = name.partition("[")[0]
            if not base.startswith(JOB_PREFIX) or state in ENDED:
                continue
            index = key.partition("[")[2].rstrip("]")
            found.append(
                ClusterJobInfo(
                    id=key,
                    array_index=int(index) if index.isdigit() else None,
                    state=state,
                    controller=self.controller_of(base),
                    seconds=None,
                    name=base,
                )
            )
        return found

    def whole_job(self, job_id: str) -> str:
        return job_id.partition("[")[0]

    def cancel(self, ids: Sequence[str]) -> None:
        run_command([self._command("bkill"), *ids], log=self.log)
