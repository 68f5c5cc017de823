"""A per-user record of launched workers, so that leftovers can be found after a crash.

```
 controller, scaler thread ── record_launches() ──┐   one write() per batch, O_APPEND,
 controller.terminate() ───── end_session() ──────┤   under flock(LOCK_EX)
                                                  ▼
                      $PYCREW_STATE_DIR | $XDG_STATE_HOME/pycrew | ~/.local/state/pycrew
                                      └── launched.jsonl  (0600, in a 0700 directory)
                                                  │
 LocalMonitor.stale(), SlurmMonitor.stale() ◄── read() ── which controllers are gone
```

One JSON object a line. A ``launch`` line names a worker (``pid`` and
``host`` of a local process, or a scheduler's ``job``) and the controller
that launched it (name, ``session``: a fresh id per ``start()``, and the
controller's own ``controller_pid`` and ``controller_host``); an ``end`` line
says a session's ``terminate()`` finished, after which any of its workers
still running is a leftover. Many controllers, in many processes, append at
once; a file grown past about ``COMPACT_LINES`` lines is rewritten without
what can no longer matter.

Nothing here raises into the controller: a record that cannot be written
costs the monitors their knowledge of that worker, never the launch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pycrew.registry")

#: the format written; lines of a newer one are reported by ``read()`` and kept by compaction
VERSION = 1
#: the environment variable that moves the registry's directory (tests use it)
DIR_ENV = "PYCREW_STATE_DIR"
FILE_NAME = "launched.jsonl"
#: a file with about this many lines is compacted by the next writer
COMPACT_LINES = 10_000
#: a launch line's usual size: the file's size stands for its length, since
#: counting lines would cost every writer a read of the whole file
LINE_BYTES = 256
#: the longest wait for another process's lock before giving up (a writer that
#: was stopped while holding it must not stall every controller's launches)
LOCK_SECONDS = 5.0
#: a launch on another host, or a scheduler's job, is forgotten this long after
#: its launch even if its session never ended (nothing here can ask about it)
FORGET_SECONDS = 30 * 86400.0

_warned: set[str] = set()
#: bytes this process's last compaction kept: a registry that stays long (many
#: live workers) is compacted again once it has doubled, not at every write
_kept_last = 0


@dataclass(frozen=True)
class Entry:
    """One line of the registry.

    Attributes:
        event: ``"launch"`` or ``"end"``.
        time: when it was written (seconds since the epoch).
        session: the controller start it belongs to.
        controller: the controller's name (``""`` on an ``end`` line of old).
        controller_pid, controller_host: the controller's process.
        worker: the worker id (launch lines only).
        pid, host: a local worker's process (launch lines of process launchers).
        job: a scheduler's job id (launch lines of scheduler launchers).
    """

    event: str
    time: float
    session: str
    controller: str
    controller_pid: int
    controller_host: str
    worker: str = ""
    pid: int | None = None
    host: str | None = None
    job: str | None = None


def directory() -> Path:
    """Where the registry lives: ``$PYCREW_STATE_DIR``, else the user's state directory."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override).expanduser()
    # the XDG spec says a relative value is invalid and must be ignored
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "pycrew"


def path() -> Path:
    """The registry file (it may not exist yet)."""
    return directory() / FILE_NAME


def record_launches(controller: str, session: str, workers: list[dict[str, Any]]) -> None:
    """Append launched workers (each a dict with ``worker`` and launcher details)."""
    if not workers:
        return
    head = _head("launch", controller, session)
    # a launcher's details never overwrite what the format itself says
    _append([{**head, **{k: v for k, v in w.items() if k not in head}} for w in workers])


def end_session(session: str, controller: str = "") -> None:
    """A controller start ended cleanly: its workers are no longer anyone's concern."""
    if session:
        _append([_head("end", controller, session)])


def read() -> tuple[list[Entry], list[str]]:
    """Every valid entry, oldest first, and what was wrong with the other lines.

    Never raises: a file that cannot be read is one problem and no entries.
    """
    file = path()
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{file}: {exc}"]
    try:
        # a shared lock: no writer is halfway through a line while we read
        _lock(fd, fcntl.LOCK_SH)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read()
    except OSError as exc:
        return [], [f"{file}: {exc}"]
    finally:
        os.close(fd)
    entries: list[Entry] = []
    problems: list[str] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        entry, problem = _parse(line)
        if entry is not None:
            entries.append(entry)
        elif problem is not None:
            problems.append(f"{file}, line {number}: {problem}")
    return entries, problems


# ------------------------------------------------------------ what is gone
def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # the state follows the command name, which may hold spaces and parentheses
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Index:
    """The registry, arranged for the monitors' questions.

    Args:
        entries: as ``read()`` returns them.
        host: this machine's name (``socket.gethostname()`` by default).
    """

    def __init__(self, entries: list[Entry], host: str | None = None) -> None:
        self.host = socket.gethostname() if host is None else host
        self.ended = {e.session for e in entries if e.event == "end"}
        self.by_pid: dict[int, list[Entry]] = {}
        self.by_job: dict[str, Entry] = {}
        for entry in entries:
            if entry.event != "launch":
                continue
            if entry.pid is not None and entry.host == self.host:
                self.by_pid.setdefault(entry.pid, []).append(entry)
            if entry.job is not None:
                self.by_job[entry.job] = entry  # the latest wins

    @classmethod
    def load(cls) -> tuple[Index, list[str]]:
        entries, problems = read()
        return cls(entries), problems

    def launch_of_process(self, pid: int, worker: str) -> Entry | None:
        """The latest launch of the worker ``worker`` as process ``pid`` of this host."""
        found = [e for e in self.by_pid.get(pid, ()) if e.worker == worker]
        return found[-1] if found else None

    def launch_near(self, pid: int, started: float, seconds: float = 10.0) -> Entry | None:
        """The launch of process ``pid`` recorded within ``seconds`` of its start
        (a worker forked from a template, whose command line names no worker)."""
        found = [e for e in self.by_pid.get(pid, ()) if abs(e.time - started) <= seconds]
        return found[-1] if found else None

    def gone(self, entry: Entry) -> str | None:
        """Why the controller that launched ``entry`` is gone, or ``None`` if it may live.

        Gone: its session ended (``terminate()`` finished, so anything still
        running was not stopped by it), or it ran on this host and its
        process no longer exists (or the pid now belongs to a process younger
        than the launch). A controller on another host that never ended is
        given the benefit of the doubt.
        """
        if entry.session in self.ended:
            return f"controller {entry.controller or '?'} ended session {entry.session}"
        if entry.controller_host != self.host:
            return None
        if not pid_alive(entry.controller_pid):
            return f"controller {entry.controller or '?'} (pid {entry.controller_pid}) is gone"
        if _started_after(entry.controller_pid, entry.time):
            return (
                f"controller {entry.controller or '?'} (pid {entry.controller_pid}) is gone;"
                " its pid was reused"
            )
        return None


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after ``when``: its pid was reused since."""
    try:
        import psutil

        return bool(psutil.Process(pid).create_time() > when + 1.0)
    except Exception:  # gone meanwhile, or unknowable: not proof of reuse
        return False


# ------------------------------------------------------------ writing
def _head(event: str, controller: str, session: str) -> dict[str, Any]:
    return {
        "v": VERSION,
        "event": event,
        "time": time.time(),
        "controller": controller,
        "session": session,
        "controller_pid": os.getpid(),
        "controller_host": socket.gethostname(),
    }


_UNKNOWN = (
    "launching goes on, but `pycrew monitor` cannot tell whether these workers' controller is gone"
)


def _warn(what: str, exc: BaseException, consequence: str = _UNKNOWN) -> None:
    """Log a failure once per kind and place: a controller may launch thousands of batches."""
    key = f"{what}: {type(exc).__name__}"
    if key in _warned:
        return
    _warned.add(key)
    log.warning("pycrew could not %s (%s); %s", what, exc, consequence)


def _lock(fd: int, kind: int) -> None:
    """``flock`` with a time limit: polled, since contention lasts a write or two."""
    deadline = time.monotonic() + LOCK_SECONDS
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the lock stayed taken for {LOCK_SECONDS} s") from None
            time.sleep(pause)
            pause = min(2 * pause, 0.05)


def _open_locked(file: Path) -> int:
    """Open the registry for appending, locked, as the file now at ``file``.

    Compaction replaces the file while holding the old one's lock: a writer
    that waited on the old one must not append to it after that.
    """
    for _ in range(100):
        fd = os.open(file, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(file).st_ino:
                return fd
        except FileNotFoundError:
            pass  # removed meanwhile: open (and make) it again
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(f"{file} kept being replaced while we waited for its lock")


def _append(records: list[dict[str, Any]]) -> None:
    global _kept_last
    file = path()
    try:
        text = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_locked(file)
    except Exception as exc:
        _warn(f"write the registry of launched workers {file}", exc)
        return
    try:
        size = os.fstat(fd).st_size
        # a writer killed halfway through a line must not take our first line with it
        if size and os.pread(fd, 1, size - 1) != b"\n":
            text = "\n" + text
        data = text.encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write: {written} of {len(data)} bytes")
    except Exception as exc:
        os.close(fd)
        _warn(f"write the registry of launched workers {file}", exc)
        return
    try:
        if size + written >= max(COMPACT_LINES * LINE_BYTES, 2 * _kept_last):
            _compact(fd, file)
    except Exception as exc:
        # the lines are written; try again only once the file has doubled
        _kept_last = size + written
        _warn(f"compact the registry of launched workers {file}", exc, "it keeps growing")
    finally:
        os.close(fd)  # releases the lock


def _compact(fd: int, file: Path) -> None:
    """Rewrite the registry without what no monitor needs any more (lock held)."""
    global _kept_last
    with os.fdopen(os.dup(fd), "rb") as stream:
        stream.seek(0)
        lines = stream.read().splitlines()
    parsed = [(line, *_parse(line)) for line in lines if line.strip()]
    ended = {e.session for _, e, _ in parsed if e is not None and e.event == "end"}
    host = socket.gethostname()
    now = time.time()
    kept = []
    for line, entry, problem in parsed:
        if entry is None:
            if problem is not None and problem.startswith("written by a newer"):
                kept.append(line)  # a newer pycrew's business: keep it as it was
            continue
        if entry.event != "launch" or entry.session in ended:
            continue
        if entry.pid is not None and entry.host == host:
            if pid_alive(entry.pid):
                kept.append(line)
        elif now - entry.time < FORGET_SECONDS:
            kept.append(line)
    temp, temp_name = tempfile.mkstemp(dir=file.parent, prefix=".launched.", suffix=".tmp")
    data = b"".join(line + b"\n" for line in kept)
    try:
        with os.fdopen(temp, "wb") as out:
            out.write(data)
        os.replace(temp_name, file)
        _kept_last = len(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


# ------------------------------------------------------------ reading
def _parse(line: bytes) -> tuple[Entry | None, str | None]:
    """One line as an entry, or why it is not one."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    version = raw.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None, f"no valid format version: {version!r}"
    if version > VERSION:
        return None, f"written by a newer pycrew (format {version}; this one reads {VERSION})"
    event = raw.get("event")
    if event not in ("launch", "end"):
        return None, f"unknown event {event!r}"
    kinds: dict[str, tuple[type, ...]] = {
        "time": (int, float),
        "session": (str,),
        "controller": (str,),
        "controller_pid": (int,),
        "controller_host": (str,),
    }
    if event == "launch":
        kinds["worker"] = (str,)
    for name, types in kinds.items():
        value = raw.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            return None, f"{event} line without a valid {name!r}"
    pid, host, job = raw.get("pid"), raw.get("host"), raw.get("job")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        return None, "launch line with an invalid 'pid'"
    if host is not None and not isinstance(host, str):
        return None, "launch line with an invalid 'host'"
    if job is not None and not isinstance(job, str):
        job = str(job)
    return (
        Entry(
            event=event,
            time=float(raw["time"]),
            session=raw["session"],
            controller=raw["controller"],
            controller_pid=raw["controller_pid"],
            controller_host=raw["controller_host"],
            worker=raw.get("worker", ""),
            pid=pid,
            host=host,
            job=job,
        ),
        None,
    )
