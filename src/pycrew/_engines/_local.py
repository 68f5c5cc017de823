"""Local workers: ``LocalLauncher`` (subprocesses of the controller's process) and
``LocalMonitor``, which finds this machine's pycrew worker processes, to look
at or end, even after a crash. ``local_controller()`` is in ``_controller._factories``.

```
 psutil: processes of the user running ``... pycrew worker ...``
   └─ /proc/<pid>/environ: PYCREW_CONTROLLER, PYCREW_WORKER ──► LocalWorkerInfo
                                                                    │ pid + worker id
 registry of launches (_ledger) ── launch of that pid here ─────────┤
                                   └─ its controller gone? ─────────┴─► stale()
```

A worker leaves by itself when its controller goes away; one that does not
(stuck in C code that holds the GIL, stopped, or started without the
kernel's parent-death signal) is *stale*. Only the registry can say so: a
worker that it does not know about is never called stale.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, LaunchError
from .._operations import _ledger
from .._operations._diagnose import read_tail
from .._operations._logs import BYTES_ENV, LOG_BYTES_MAX, STARTUP_ENV, check_log_bytes
from .._wire import _frames
from .._worker._entry import AUTHKEY_ENV
from .._worker._template import Forked, Template, pipe_secrets
from ._launcher import Launcher, WorkerSpec, some
from ._machine import check_capacity, check_gpus, local_machine

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from .._resources import Resources

log = logging.getLogger("pycrew.engines.local")

PARENT_ENV = "PYCREW_PARENT_PID"
#: templates a start may begin: one that dies is replaced once, then workers start directly
TEMPLATE_STARTS = 2


class LocalLauncher(Launcher):
    """Start each worker as a subprocess of the controller's process.

    Args:
        log_directory: where worker output goes, one file per worker
            (``<worker id>.log``), or ``None`` to discard it. Without it, a
            worker's stderr still goes to a small file of its own until it
            connects (in a temporary folder that ``shutdown()`` removes), so
            that a worker that exits before connecting can say why.
        log_join: one file for stdout and stderr together (``True``), or
            ``<id>-stdout.log`` and ``<id>-stderr.log``.
        python: the interpreter workers run, instead of this process's.
        log_bytes_max: a log file that grows past this many bytes is moved
            to ``<file>.1`` (replacing the one before) and starts afresh, so
            a worker's logs take at most about twice this; ``None``: no cap.
        template: fork workers from a template process that has imported
            what a worker needs (a millisecond or two each, where a fresh
            interpreter takes tens), once it is ready (it is started at the
            second launch, so the first workers start alone); ``False``:
            start every worker as a fresh interpreter.
        gpus: the GPU ids workers may be given (default: those this process
            sees, from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``); each
            worker launched for a task's ``resources={"gpus": n}`` gets ``n``
            of them to itself.
        capacity: what the machine has for workers launched for a
            ``resources=`` shape, where found values are wrong or missing:
            fewer ``cpus`` or less ``memory`` than it has, or named counts
            (``{"license": 2}``).
    """

    @property
    def channels(self) -> bool:
        """Workers are this process's children: each inherits its end of a socket
        pair and skips dialing the port (round trips cross no TCP stack). Not
        for a subclass that starts workers its own way (another address, a
        wrapper command): its workers dial as it says."""
        return os.name == "posix" and type(self).launch_worker is _LAUNCH_WORKER

    def __init__(
        self,
        log_directory: str | os.PathLike[str] | None = None,
        log_join: bool = True,
        log_bytes_max: int | None = LOG_BYTES_MAX,
        python: str | os.PathLike[str] | None = None,
        template: bool = True,
        gpus: Sequence[int | str] | None = None,
        capacity: Mapping[str, int | str] | None = None,
    ) -> None:
        self.gpus = check_gpus(gpus)
        self.capacity = check_capacity(capacity)
        self._machine: tuple[Resources, tuple[str, ...]] | None = None
        if log_directory is not None and not isinstance(log_directory, (str, os.PathLike)):
            raise ArgumentTypeError(
                "log_directory must be None or a path (a str or os.PathLike), "
                f"got {type(log_directory).__name__}"
            )
        if log_directory is not None and not str(log_directory):
            raise ArgumentError("log_directory must be None or a non-empty path")
        if not isinstance(log_join, bool):
            raise ArgumentTypeError("log_join must be True or False")
        self.log_directory = Path(log_directory).expanduser() if log_directory else None
        if self.log_directory is not None:
            # at once, not in the first launch: a folder that cannot be made is
            # the user's to fix, not a worker that never comes
            try:
                self.log_directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArgumentError(
                    f"log_directory: cannot make {str(self.log_directory)!r}: {exc.strerror}"
                ) from exc
            if not os.access(self.log_directory, os.W_OK):
                raise ArgumentError(f"log_directory {str(self.log_directory)!r} is not writable")
        self.log_join = log_join
        self.log_bytes_max = check_log_bytes(log_bytes_max)
        if python is not None and not isinstance(python, (str, os.PathLike)):
            raise ArgumentTypeError(
                f"python must be None or the path of an interpreter, got {type(python).__name__}"
            )
        if python is not None and not str(python):
            raise ArgumentError("python must be None or the path of an interpreter")
        self.python = os.fspath(python) if python is not None else None
        # this start's folder of start-up logs (made at the first launch)
        self._startup: str | None = None
        # each worker's stderr: its file, how long it was at launch, and
        # whether the file is ours to delete
        self._stderr: weakref.WeakKeyDictionary[Any, tuple[str, int, bool]]
        self._stderr = weakref.WeakKeyDictionary()
        if not isinstance(template, bool):
            raise ArgumentTypeError("template must be True or False")
        self.template = template
        self._template: Template | None = None
        self._template_starts = 0
        # batches launched since start: the template waits for the second
        self._launches = 0
        # each live worker's id, for the log
        self._ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def machine(self) -> Resources:
        """What this machine has for workers with a resource shape (found once)."""
        return self.machine_and_gpus()[0]

    def machine_and_gpus(self) -> tuple[Resources, tuple[str, ...]]:
        """The machine's shape and the ids of its GPUs, each worker's to take."""
        if self._machine is None:
            self._machine = local_machine(self.gpus, self.capacity)
        return self._machine

    def validate(self) -> None:
        """Check, before any launch, that the workers' interpreter can be run.

        A ``python=`` that does not exist, or is not executable, would
        otherwise show only when the first worker fails to start.

        Raises:
            LaunchError: ``python`` names no executable file (on ``PATH``,
                for a bare name).
        """
        if self.python is None:
            return
        found = shutil.which(self.python) if os.sep not in self.python else self.python
        if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
            why = "not found" if found is None or not os.path.exists(found) else "not executable"
            raise LaunchError(
                f"cannot run the workers' interpreter {self.python!r}: {why}; pass "
                "python= the path of a Python that has pycrew"
            )

    def _streams(self, worker_id: str) -> tuple[Any, Any, list[IO[bytes]], tuple[str, int, bool]]:
        if self.log_directory is None:
            if self._startup is None:
                # realpath: the worker finds its file by the path /proc shows
                self._startup = os.path.realpath(tempfile.mkdtemp(prefix="pycrew-startup-"))
            path = os.path.join(self._startup, f"{worker_id}.err")
            err = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
            return subprocess.DEVNULL, err, [err], (path, 0, True)
        self.log_directory.mkdir(parents=True, exist_ok=True)
        if self.log_join:
            joined = open(self.log_directory / f"{worker_id}.log", "ab")  # noqa: SIM115
            return joined, subprocess.STDOUT, [joined], _appended(joined)
        out = open(self.log_directory / f"{worker_id}-stdout.log", "ab")  # noqa: SIM115
        err = open(self.log_directory / f"{worker_id}-stderr.log", "ab")  # noqa: SIM115
        return out, err, [out, err], _appended(err)

    @staticmethod
    def _inherited(spec: WorkerSpec) -> dict[str, str]:
        """This process's environment, less what the controller keeps to itself."""
        env = os.environ.copy()
        for name in spec.env_remove:
            env.pop(name, None)
        return env

    def _env(self, spec: WorkerSpec) -> dict[str, str]:
        env = self._inherited(spec)
        env.update(spec.env)
        # multiprocessing's key, as its own children inherit it: a Manager's
        # proxies (dicts, queues, locks) passed to tasks then connect. A
        # secret: it travels as PYCREW_SECRET does, never on a command line.
        env[AUTHKEY_ENV] = _authkey()
        if self.log_bytes_max is not None:
            env[BYTES_ENV] = str(self.log_bytes_max)
        return env

    def _command(self, spec: WorkerSpec) -> list[str]:
        command = list(spec.command)
        if self.python is not None:
            command[0] = self.python
        return command

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[Any]:
        handles, how = self._fork(specs), "forked from the template"
        if handles is None:
            handles, how = [self.launch_worker(spec) for spec in specs], "started"
        named = []
        for spec, handle in zip(specs, handles, strict=False):
            # a subclass's launch_worker may hand back any handle
            if isinstance(handle, (subprocess.Popen, Forked)):
                self._ids[handle] = spec.worker_id
                named.append(f"{spec.worker_id} (pid {handle.pid})")
            else:
                named.append(spec.worker_id)
        if named:
            log.info("%s %d worker(s): %s", how, len(named), some(named))
        return handles

    def _fork(self, specs: Sequence[WorkerSpec]) -> list[Any] | None:
        """Workers forked from the template, or ``None`` where they must start directly."""
        template = self._ready_template(specs)
        if template is None:
            return None
        envs, fds, wheres, files = [], [], [], []
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for spec in specs:
                env = self._env(spec)
                stdout, stderr, opened, where = self._streams(spec.worker_id)
                files += opened
                wheres.append(where)
                if where[2]:
                    env[STARTUP_ENV] = os.path.dirname(where[0])
                secret = pipe_secrets(env.pop(_frames.SECRET_ENV, ""), env.pop(AUTHKEY_ENV, ""))
                envs.append(env)
                out = stdout.fileno() if hasattr(stdout, "fileno") else null
                err = out if stderr == subprocess.STDOUT else stderr.fileno()
                channel = spec.channel.fileno() if spec.channel is not None else None
                fds.append((secret, out, err, channel))
            argvs = [self._command(spec)[3:] for spec in specs]
            try:
                handles = template.spawn([s.worker_id for s in specs], argvs, envs, fds)
            except OSError as exc:
                log.warning("the template could not fork workers (%s): starting them directly", exc)
                # what it forked dies with it (their parent-death signal), so no
                # worker of this batch runs twice
                self._close_template()
                for where in wheres:
                    _drop(where)
                return None
        finally:
            os.close(null)
            for opened_file in files:
                opened_file.close()
        for forked, where in zip(handles, wheres, strict=True):
            self._stderr[forked] = where
        return list(handles)

    def _ready_template(self, specs: Sequence[WorkerSpec]) -> Template | None:
        """The template, when it can fork workers now; started at the second launch.

        Not at the first: a controller's first workers would share the CPU with
        it, and a cold start took a fifth longer. A controller that launches
        again (workers that leave after tasks_max, scaling) gets it then.
        """
        if (
            not self.template
            or not specs
            or type(self).launch_worker is not _LAUNCH_WORKER  # a subclass keeps its way
            or not sys.platform.startswith("linux")  # fork, fd passing, parent-death signal
        ):
            return None
        current = self._template
        if current is not None and current.broken and self._template_starts < TEMPLATE_STARTS:
            self._close_template()
            current = None
        self._launches += 1
        if current is None and self._template_starts < TEMPLATE_STARTS and self._launches > 1:
            spec = specs[0]
            self._template_starts += 1
            log.debug("starting a template to fork workers from")
            try:
                current = self._template = Template(self._command(spec)[:4], self._inherited(spec))
            except OSError as exc:
                log.warning("could not start a template (%s): workers start directly", exc)
            return None  # still importing: these workers start directly
        return current if current is not None and current.usable() else None

    def _close_template(self) -> None:
        if self._template is not None:
            self._template.close()
            self._template = None

    def launch_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        env = self._env(spec)
        # The kernel kills the worker if the thread that launched it dies
        # (PR_SET_PDEATHSIG); the controller launches from a thread that
        # lives exactly as long as the controller.
        env[PARENT_ENV] = str(os.getpid())
        passed: tuple[int, ...] = ()
        if spec.channel is not None:
            passed = (spec.channel.fileno(),)
            env[_frames.CHANNEL_ENV] = str(passed[0])
        command = self._command(spec)
        stdout, stderr, files, where = self._streams(spec.worker_id)
        if where[2]:
            env[STARTUP_ENV] = os.path.dirname(where[0])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("running %s", shlex.join(command))
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=passed,
                # Not in the terminal's process group: Ctrl-C reaches the
                # controller, which then ends its workers itself.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            _drop(where)
            log.warning("cannot start worker %s: %s", spec.worker_id, exc)
            if exc.filename not in (command[0], None):
                raise
            raise LaunchError(
                f"cannot run the workers' interpreter {command[0]!r}: {exc.strerror}; pass "
                "python= the path of a Python that has pycrew"
            ) from exc
        except BaseException as exc:
            _drop(where)
            if isinstance(exc, Exception):  # not an interrupt
                log.warning("cannot start worker %s: %s", spec.worker_id, exc)
            raise
        finally:
            for handle in files:
                handle.close()
        self._stderr[proc] = where
        return proc

    def terminate_worker(self, handle: Any) -> None:
        if isinstance(handle, (subprocess.Popen, Forked)):
            if handle.poll() is None:
                log.info("killing worker %s (pid %d)", self._ids.get(handle, "?"), handle.pid)
                with contextlib.suppress(OSError):
                    handle.kill()
            # a worker ended before it connected leaves its start-up log behind
            _drop(self._stderr.pop(handle, ("", 0, False)))

    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, (subprocess.Popen, Forked)):
            return None
        found = self._stderr.pop(handle, None)
        if found is None:
            return None
        path, start, _ = found
        text = read_tail(path, start)
        _drop(found)
        if text is None:
            raise LaunchError(f"its log {path} is gone, so pycrew cannot say why")
        return text

    def log_files(self, worker_id: str, handle: Any | None) -> list[str]:
        folder = self.log_directory
        if folder is None:
            return []  # a start-up log only, dropped once the worker connects
        if self.log_join:
            return [str(folder / f"{worker_id}.log")]
        return [str(folder / f"{worker_id}-stderr.log"), str(folder / f"{worker_id}-stdout.log")]

    def describe_worker(self, handle: Any) -> dict[str, Any]:
        if isinstance(handle, (subprocess.Popen, Forked)):
            return {"pid": handle.pid, "host": socket.gethostname()}
        return {}

    def exit_code(self, handle: Any) -> int | None:
        if isinstance(handle, Forked):
            return handle.poll()  # the template ends the worker's group when it reaps it
        if isinstance(handle, subprocess.Popen):
            if handle.returncode is None and _ended(handle.pid) == "exited":
                _end_group(handle.pid)
            return handle.poll()
        return None

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        forked = [h for h in handles if isinstance(h, Forked)]
        killed = _stop_forked(forked, deadline) if forked else []
        for handle in handles:
            if not isinstance(handle, subprocess.Popen):
                continue
            while handle.returncode is None and _ended(handle.pid) == "running":
                if time.monotonic() >= deadline:
                    handle.kill()
                    killed.append(handle.pid)
                    break
                time.sleep(0.01)
            if handle.returncode is None:
                if _ended(handle.pid) != "reaped":
                    _end_group(handle.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    handle.wait(timeout=5)
        if handles:
            log.info(
                "ended %d worker(s) at shutdown: pids %s",
                len(handles),
                some(getattr(h, "pid", "?") for h in handles),
            )
        if killed:
            log.info(
                "killed %d worker(s) still running %.1f s after the controller closed: pids %s",
                len(killed),
                seconds,
                some(killed),
            )
        # last: its workers die with it
        self._close_template()
        self._template_starts = 0
        self._launches = 0
        if self._startup is not None:
            shutil.rmtree(self._startup, ignore_errors=True)
            self._startup = None
        self._stderr.clear()


_LAUNCH_WORKER = LocalLauncher.launch_worker


def _stop_forked(handles: list[Forked], deadline: float) -> list[int]:
    """Wait for forked workers to leave until ``deadline``, then kill the rest; their pids."""
    templates = {id(h.template): h.template for h in handles}.values()
    while any(h.returncode is None for h in handles) and time.monotonic() < deadline:
        for template in templates:
            template.poll(min(0.05, max(0.0, deadline - time.monotonic())))
    left = [h for h in handles if h.returncode is None]
    for handle in left:
        handle.kill()
    until = time.monotonic() + KILL_SECONDS
    while any(h.returncode is None for h in left) and time.monotonic() < until:
        for template in templates:
            template.poll(0.05)
    return [handle.pid for handle in left]


def _authkey() -> str:
    """This process's ``multiprocessing`` authentication key, as hex."""
    import multiprocessing.process

    return bytes(multiprocessing.process.current_process().authkey).hex()


def _drop(where: tuple[str, int, bool]) -> None:
    """Delete a worker's stderr file if it is a start-up log of ours."""
    path, _, ours = where
    if ours:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _appended(log: IO[bytes]) -> tuple[str, int, bool]:
    """Where a worker's output goes in a log it adds to: only what comes after is its own."""
    return (str(log.name), os.fstat(log.fileno()).st_size, False)


def _ended(pid: int) -> str:
    """``"running"``, ``"exited"`` (not reaped: its pid stays taken) or ``"reaped"``."""
    try:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "reaped"
    return "running" if found is None else "exited"


def _end_group(pid: int) -> None:
    """End what a worker's tasks left in its process group (forked children, say).

    A worker leads its own group (``start_new_session``); called before the
    worker is reaped, while its pid still names that group and no one else's.
    """
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


#: how long ``terminate`` waits for processes to go after SIGKILL
KILL_SECONDS = 5.0


@dataclass(frozen=True)
class LocalWorkerInfo:
    """One pycrew worker process of this machine.

    Attributes:
        pid: its process id.
        controller: the controller's name (``""`` if unreadable).
        worker: the worker id (``""`` if unreadable).
        session: the controller start that launched it, from the registry
            (``""`` if the registry does not know the process).
        started: when the process started (seconds since the epoch).
        command: its command line, as a shell would show it.
        state: the process state (``running``, ``sleeping``, ``stopped``...).
        stale: why its controller is gone, or ``None`` when it may still live
            (or the registry cannot tell).
    """

    pid: int
    controller: str
    worker: str
    session: str
    started: float
    command: str
    state: str = ""
    stale: str | None = None

    @property
    def seconds(self) -> float:
        """The process's age."""
        return max(0.0, time.time() - self.started)


def _worker_command(cmdline: list[str]) -> bool:
    """``... pycrew worker ...``: ``python -m pycrew worker`` or the ``pycrew`` script."""
    for i, arg in enumerate(cmdline[:-1]):
        if os.path.basename(arg) == "pycrew" and cmdline[i + 1] == "worker":
            return True
    return False


def _option(cmdline: list[str], flag: str) -> str:
    with contextlib.suppress(ValueError, IndexError):
        return cmdline[cmdline.index(flag) + 1]
    return ""


class LocalMonitor:
    """pycrew worker processes of one user on this machine.

    Args:
        user: whose processes (default: the current user). Staleness comes
            from the current user's registry of launches, so it is known
            only for their own workers.
    """

    def __init__(self, user: str | None = None) -> None:
        self.user = user or getpass.getuser()
        #: what was wrong with the registry at the last look (unreadable lines)
        self.problems: list[str] = []

    def workers(self) -> list[LocalWorkerInfo]:
        """The user's pycrew worker processes, oldest first, each with its staleness."""
        return [info for info, _ in self._scan()]

    def stale(self) -> list[LocalWorkerInfo]:
        """The workers whose controller is gone, by the registry of launches."""
        return [info for info in self.workers() if info.stale is not None]

    def terminate(
        self,
        pids: Iterable[int] | None = None,
        all: bool = False,
        stale: bool = False,
        seconds_grace: float = 3.0,
    ) -> list[int]:
        """End pycrew workers: those in ``pids``, every one of the user's, or the stale ones.

        Exactly one of ``pids``, ``all=True`` and ``stale=True``. Only the
        user's pycrew worker processes are touched, whatever ``pids`` holds.
        Each gets SIGTERM (and SIGCONT, should it be stopped), then SIGKILL
        if it is still there after ``seconds_grace``: a worker stuck in C code
        may never act on SIGTERM. Returns the pids ended.
        """
        if sum((pids is not None, bool(all), bool(stale))) != 1:
            raise ArgumentError("give the pids to end, all=True or stale=True (exactly one)")
        found = self._scan()
        if all:
            chosen = [proc for _, proc in found]
        elif stale:
            chosen = [proc for info, proc in found if info.stale is not None]
        else:
            assert pids is not None
            wanted = {int(p) for p in ([pids] if isinstance(pids, (int, str)) else pids)}
            chosen = [proc for info, proc in found if info.pid in wanted]
        if chosen:
            log.info(
                "ending %d worker process(es): pids %s", len(chosen), some(p.pid for p in chosen)
            )
        ended = _end(chosen, seconds_grace)
        if len(ended) < len(chosen):
            left = sorted({p.pid for p in chosen} - set(ended))
            log.warning("%d worker process(es) did not end: pids %s", len(left), some(left))
        return ended

    def _scan(self) -> list[tuple[LocalWorkerInfo, Any]]:
        import psutil

        index, self.problems = _ledger.Index.load()
        found = []
        procs = list(
            psutil.process_iter(["pid", "ppid", "username", "cmdline", "create_time", "status"])
        )
        # a template is not a worker, the workers it forks are (same command line)
        templated = {p.pid for p in procs if "--template" in (p.info.get("cmdline") or [])}
        for proc in procs:
            info = proc.info
            cmdline = info.get("cmdline") or []
            if (
                info.get("username") != self.user
                or info.get("status") == psutil.STATUS_ZOMBIE
                or proc.pid == os.getpid()
                or not _worker_command(cmdline)
                or (proc.pid in templated and info.get("ppid") not in templated)
            ):
                continue
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                env = {}
            started = float(info.get("create_time") or 0.0)
            if "--template" in cmdline:
                # a template, or a worker it forked: the command line and
                # environment are the template's, so the registry names it
                launch = index.launch_near(proc.pid, started)
                worker = launch.worker if launch else ""
            else:
                # the environment the worker started with: the command line's id wins
                worker = _option(cmdline, "--id") or env.get(_frames.WORKER_ENV, "")
                launch = index.launch_of_process(proc.pid, worker) if worker else None
            record = LocalWorkerInfo(
                pid=proc.pid,
                controller=env.get(_frames.CONTROLLER_ENV, "")
                or (launch.controller if launch else ""),
                worker=worker,
                session=launch.session if launch else "",
                started=started,
                command=shlex.join(cmdline),
                state=str(info.get("status") or ""),
                stale=index.gone(launch) if launch else None,
            )
            found.append((record, proc))
        found.sort(key=lambda pair: (pair[0].started, pair[0].pid))
        return found


def _end(procs: list[Any], seconds_grace: float) -> list[int]:
    """SIGTERM, then SIGKILL what is left after the grace; the pids that ended."""
    import psutil

    def signal_all(chosen: list[Any], signum: int) -> None:
        for proc in chosen:
            # psutil refuses to signal a pid that now names another process
            with contextlib.suppress(psutil.Error, OSError):
                proc.send_signal(signum)

    signal_all(procs, signal.SIGTERM)
    # a stopped process keeps SIGTERM pending until it runs again
    signal_all(procs, signal.SIGCONT)
    left = _wait_gone(procs, seconds_grace)
    signal_all(left, signal.SIGKILL)
    left = _wait_gone(left, KILL_SECONDS)
    return sorted(proc.pid for proc in procs if proc not in left)


def _wait_gone(procs: list[Any], seconds: float) -> list[Any]:
    """Wait until these processes are gone (a zombie is gone) or ``seconds`` pass."""
    import psutil

    deadline = time.monotonic() + seconds
    pause = 0.01
    while True:
        left = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.NoSuchProcess:
                continue
            except psutil.Error:
                left.append(proc)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(pause)
        pause = min(2 * pause, 0.1)
