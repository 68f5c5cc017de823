"""Workers as local subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._diagnose import read_tail
from .._errors import ArgumentError, ArgumentTypeError, LaunchError
from .._logs import BYTES_ENV, LOG_BYTES_MAX, STARTUP_ENV, check_log_bytes
from ._base import Launcher, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

PARENT_ENV = "PYCREW_PARENT_PID"


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
    """

    def __init__(
        self,
        log_directory: str | os.PathLike[str] | None = None,
        log_join: bool = True,
        log_bytes_max: int | None = LOG_BYTES_MAX,
        python: str | os.PathLike[str] | None = None,
    ) -> None:
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
        if python is not None and not str(python):
            raise ArgumentError("python must be None or the path of an interpreter")
        self.python = os.fspath(python) if python is not None else None
        # this start's folder of start-up logs (made at the first launch)
        self._startup: str | None = None
        # each worker's stderr: its file, how long it was at launch, and
        # whether the file is ours to delete
        self._stderr: weakref.WeakKeyDictionary[subprocess.Popen[bytes], tuple[str, int, bool]]
        self._stderr = weakref.WeakKeyDictionary()

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

    def launch_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        env = os.environ.copy()
        for name in spec.env_remove:
            env.pop(name, None)
        env.update(spec.env)
        # The kernel kills the worker if the thread that launched it dies
        # (PR_SET_PDEATHSIG); the controller launches from a thread that
        # lives exactly as long as the controller.
        env[PARENT_ENV] = str(os.getpid())
        if self.log_bytes_max is not None:
            env[BYTES_ENV] = str(self.log_bytes_max)
        command = list(spec.command)
        if self.python is not None:
            command[0] = self.python
        stdout, stderr, files, where = self._streams(spec.worker_id)
        if where[2]:
            env[STARTUP_ENV] = os.path.dirname(where[0])
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # Not in the terminal's process group: Ctrl-C reaches the
                # controller, which then ends its workers itself.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            _drop(where)
            if exc.filename not in (command[0], None):
                raise
            raise LaunchError(
                f"cannot run the workers' interpreter {command[0]!r}: {exc.strerror}; pass "
                "python= the path of a Python that has pycrew"
            ) from exc
        except BaseException:
            _drop(where)
            raise
        finally:
            for handle in files:
                handle.close()
        self._stderr[proc] = where
        return proc

    def terminate_worker(self, handle: Any) -> None:
        if isinstance(handle, subprocess.Popen):
            if handle.poll() is None:
                with contextlib.suppress(OSError):
                    handle.kill()
            # a worker ended before it connected leaves its start-up log behind
            _drop(self._stderr.pop(handle, ("", 0, False)))

    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, subprocess.Popen):
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

    def describe_worker(self, handle: Any) -> dict[str, Any]:
        if isinstance(handle, subprocess.Popen):
            return {"pid": handle.pid, "host": socket.gethostname()}
        return {}

    def exit_code(self, handle: Any) -> int | None:
        if isinstance(handle, subprocess.Popen):
            if handle.returncode is None and _ended(handle.pid) == "exited":
                _end_group(handle.pid)
            return handle.poll()
        return None

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for handle in handles:
            if not isinstance(handle, subprocess.Popen):
                continue
            while handle.returncode is None and _ended(handle.pid) == "running":
                if time.monotonic() >= deadline:
                    handle.kill()
                    break
                time.sleep(0.01)
            if handle.returncode is None:
                if _ended(handle.pid) != "reaped":
                    _end_group(handle.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    handle.wait(timeout=5)
        if self._startup is not None:
            shutil.rmtree(self._startup, ignore_errors=True)
            self._startup = None
        self._stderr.clear()


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
