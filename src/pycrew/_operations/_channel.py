"""A running controller's state, readable by other processes of the same user.

```
 controller process                            another process of the same user
 ┌──────────────────────────────────────┐      (pycrew top, pycrew dashboard)
 │ Channel.open(name, status, ...)      │
 │  thread "pycrew-channel":            │◄── connect ── find(): reads the sidecars
 │   accept; SO_PEERCRED: same uid?     │
 │   one JSON line ─► status(since)     │◄── request ── ask(listing, "status", since=N)
 │                    cancel(names)     │
 │                    worker_log(id)    │─── reply ───► one JSON line; the connection closes
 └──────────────────────────────────────┘
        │ binds a 0600 socket in a 0700 folder
        ▼
 STATE_DIR/live/c-PID-RANDOM.sock + c-PID-RANDOM.json (name, pid, host, start time)
 (or $XDG_RUNTIME_DIR/pycrew/KEY/ or /tmp/pycrew-UID/KEY/ when that path is too long)
```

A Unix socket, never the workers' TCP port: the folder's mode keeps other
users out, and the peer's uid is checked again on every connection. One
request per connection, so a client that stalls holds the thread at most
``IO_SECONDS``. The channel only reads the controller's state through the
callables it is given; it steers nothing unless ``cancel`` is passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import selectors
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._ledger import directory, pid_alive

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("pycrew.controller")

#: the longest request line the server reads; a status request is a few dozen bytes
REQUEST_MAX = 64 << 10
#: the longest reply a client reads: a state with its full stream is a few MB
REPLY_MAX = 256 << 20
#: how long either side waits on a stalled peer
IO_SECONDS = 5.0
#: how long close() waits for the serving thread
JOIN_SECONDS = 5.0
#: sun_path holds 108 bytes, the last one a NUL
PATH_MAX = 107
FORMAT = 1


class ChannelError(RuntimeError):
    """The controller answered with an error (a refused or malformed request)."""


class ChannelClosed(ChannelError):
    """The controller cannot be reached: it ended, or its channel closed."""


@dataclass(frozen=True)
class Listing:
    """One live controller's channel, as ``find()`` lists it."""

    name: str
    pid: int
    host: str
    started: float
    path: str  #: the socket
    sidecar: str  #: the discovery file beside it


# ------------------------------------------------------------ where
def _places() -> list[tuple[Path, Path]]:
    """The folders a channel may live in, first choice first, each with the
    topmost folder of it that must be ours alone.

    The fallbacks hold a sub-folder named after the state directory, so that
    two state directories (a test run's and the user's) never see each
    other's controllers.
    """
    live = directory() / "live"
    key = hashlib.sha256(str(live.absolute()).encode()).hexdigest()[:12]
    places = [(live, live)]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        places.append((Path(runtime) / "pycrew" / key, Path(runtime) / "pycrew"))
    temp = os.environ.get("TMPDIR", "")
    own = Path(temp if os.path.isabs(temp) else "/tmp") / f"pycrew-{os.geteuid()}"
    places.append((own / key, own))
    return places


def _private_folder(folder: Path, root: Path) -> None:
    """Make ``folder``, and see that it and the folders down to it from ``root``
    are real folders that only we can enter (``/tmp`` lets anyone make a
    folder of that name first)."""
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parts = [root, *[root / p for p in _steps(folder.relative_to(root))]]
    for part in parts:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700)
        info = os.lstat(part)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise PermissionError(f"{part} is not a folder of ours")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(part, 0o700)


def _steps(relative: Path) -> list[Path]:
    """``a/b/c`` as ``a``, ``a/b``, ``a/b/c`` (nothing for ``.``)."""
    return [Path(*relative.parts[: i + 1]) for i in range(len(relative.parts))]


# ------------------------------------------------------------ server
class Channel:
    """The server side: one socket, one daemon thread. Make it with ``Channel.open()``."""

    def __init__(
        self,
        name: str,
        listener: socket.socket,
        path: Path,
        sidecar: Path,
        status: Callable[[int], dict[str, Any]],
        cancel: Callable[[list[str]], None] | None,
        worker_log: Callable[[str], str | None] | None,
    ) -> None:
        self.name = name
        self.path = path
        self.sidecar = sidecar
        self._listener = listener
        self._status = status
        self._cancel = cancel
        self._worker_log = worker_log
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="pycrew-channel", daemon=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Channel {self.name!r} {state} {str(self.path)!r}>"

    @classmethod
    def open(
        cls,
        name: str,
        status: Callable[[int], dict[str, Any]],
        *,
        cancel: Callable[[list[str]], None] | None = None,
        worker_log: Callable[[str], str | None] | None = None,
    ) -> Channel | None:
        """Serve ``name``'s state to the user's other processes; None when no folder can hold it.

        Args:
            name: the controller's name, which clients choose it by.
            status: ``status(since)``: the state, as ``Controller.status()`` gives it.
            cancel: cancels tasks by name; without it, cancel requests are refused.
            worker_log: the tail of a worker's log, or None.
        """
        stem = f"c-{os.getpid()}-{secrets.token_hex(4)}"
        why: list[str] = []
        for folder, root in _places():
            path = folder / f"{stem}.sock"
            if len(os.fsencode(path)) > PATH_MAX:
                why.append(f"{path}: longer than a Unix socket's {PATH_MAX} bytes")
                continue
            try:
                _private_folder(folder, root)
                listener = _bind(path)
            except OSError as exc:
                why.append(f"{folder}: {exc}")
                continue
            sidecar = folder / f"{stem}.json"
            channel = cls(name, listener, path, sidecar, status, cancel, worker_log)
            try:
                _write_sidecar(sidecar, name, path)
            except OSError as exc:
                why.append(f"{sidecar}: {exc}")
                channel._release()
                continue
            channel._thread.start()
            return channel
        log.debug("controller %r opens no local channel: %s", name, "; ".join(why))
        return None

    def close(self) -> None:
        """Stop serving and remove the socket and its sidecar. Safe to repeat."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(JOIN_SECONDS)
            if self._thread.is_alive():
                log.debug("channel of %r: its thread is still busy after close()", self.name)
        self._release()

    def _release(self) -> None:
        for file in (self.sidecar, self.path):
            with contextlib.suppress(OSError):
                file.unlink()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed:
                ready = selector.select()
                if self._closed or any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue  # the peer gave up before we got to it
                with conn:
                    try:
                        self._answer(conn)
                    except Exception as exc:  # one bad client must not end the channel
                        log.debug("channel of %r: a request failed: %r", self.name, exc)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(IO_SECONDS)
        ours = _peer_uid(conn) == os.geteuid()
        refused: dict[str, Any] = {"ok": False, "error": "refused: another user's process"}
        try:
            # read first, even from a stranger: closing on unread bytes resets the
            # connection, and the stranger would never see why
            line = _read_line(conn, REQUEST_MAX)
            if not ours:
                reply = refused
            elif line is None:
                return  # a probe: connected, asked nothing
            else:
                reply = {"ok": True, "result": self._handle(line)}
        except ChannelError as exc:
            reply = {"ok": False, "error": str(exc)} if ours else refused
        except OSError:
            raise  # the peer went away or stalled: nobody to answer
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _send(conn, reply)

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            raise ChannelError("bad request: not JSON") from None
        if not isinstance(request, dict):
            raise ChannelError("bad request: not a JSON object")
        op = request.get("op")
        if op == "status":
            since = request.get("since", 0)
            if not isinstance(since, int) or isinstance(since, bool) or since < 0:
                raise ChannelError("bad request: since must be a whole number >= 0")
            return self._status(since)
        if op == "cancel":
            names = request.get("names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ChannelError("bad request: names must be a list of task names")
            if self._cancel is None:
                raise ChannelError(f"controller {self.name!r} does not allow cancelling here")
            self._cancel(names)
            return {"cancelled": len(names)}
        if op == "log":
            worker = request.get("worker")
            if not isinstance(worker, str):
                raise ChannelError("bad request: worker must be a worker id")
            text = self._worker_log(worker) if self._worker_log is not None else None
            return {"worker": worker, "log": text}
        raise ChannelError(f"bad request: unknown op {op!r} (status, cancel, log)")


def _bind(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(path))
        # the folder is 0700 already: this closes the door a second time
        os.chmod(path, 0o600)
        listener.listen(16)
    except BaseException:
        listener.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return listener


def _write_sidecar(sidecar: Path, name: str, path: Path) -> None:
    record = {
        "v": FORMAT,
        "name": name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "socket": os.fspath(path),
    }
    temp = sidecar.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    # whole or absent: a reader never sees half a record
    os.replace(temp, sidecar)


def _peer_uid(conn: socket.socket) -> int:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def _read_line(conn: socket.socket, most: int) -> bytes | None:
    """One line, or everything until the peer stops writing; None if it sent nothing."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > most:
            raise ChannelError(f"too long: over {most} bytes")
    line = data.split(b"\n", 1)[0]
    return line if line.strip() else None


def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
    conn.sendall(json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n")


# ------------------------------------------------------------ client
def find(name: str | None = None) -> list[Listing]:
    """The live controllers of this user on this host (those named ``name``), oldest first.

    Sidecars of processes that ended are removed with their sockets on the way.
    """
    host = socket.gethostname()
    found: list[Listing] = []
    for folder, _root in _places():
        try:
            sidecars = sorted(folder.glob("c-*.json"))
        except OSError:
            continue
        for sidecar in sidecars:
            listing = _read_sidecar(sidecar)
            if listing is None or listing.host != host:
                continue  # another host's controller shares a network home: not ours to judge
            if not pid_alive(listing.pid) or not _answers(listing.path):
                _remove_stale(listing)
                continue
            if name is None or listing.name == name:
                found.append(listing)
    return sorted(found, key=lambda listing: listing.started)


def _read_sidecar(sidecar: Path) -> Listing | None:
    try:
        raw = json.loads(sidecar.read_text())
        return Listing(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            host=str(raw["host"]),
            started=float(raw["started"]),
            path=str(raw["socket"]),
            sidecar=str(sidecar),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _answers(path: str) -> bool:
    """Whether something listens on ``path`` (a pid reused by another program does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(IO_SECONDS)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return True  # busy or slow is not gone
    return True


def _remove_stale(listing: Listing) -> None:
    # the socket first: a sidecar is what makes a listing, so it goes last
    for file in (listing.path, listing.sidecar):
        with contextlib.suppress(OSError):
            os.unlink(file)


def ask(listing: Listing, op: str, *, seconds: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one request to a controller's channel and return its result.

    Args:
        listing: as ``find()`` gave it.
        op: ``"status"`` (``since=``), ``"cancel"`` (``names=``) or ``"log"`` (``worker=``).
        seconds: the longest wait for the whole reply.

    Raises:
        ChannelClosed: the controller cannot be reached, or stopped answering.
        ChannelError: it refused the request.
    """
    deadline = time.monotonic() + seconds
    request = json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            conn.connect(listing.path)
            conn.sendall(request)
            conn.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
                if len(data) > REPLY_MAX:
                    raise ChannelError(f"reply over {REPLY_MAX} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError
    except OSError as exc:  # TimeoutError included
        why = exc.strerror or "no reply in time"
        raise ChannelClosed(
            f"controller {listing.name!r} (pid {listing.pid}) does not answer: {why}"
        ) from exc
    try:
        reply = json.loads(data)
    except ValueError:
        raise ChannelClosed(
            f"controller {listing.name!r} (pid {listing.pid}) ended its reply early"
        ) from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ChannelError(str(error or "a malformed reply"))
    result = reply.get("result")
    if not isinstance(result, dict):
        raise ChannelError("a malformed reply")
    return result
