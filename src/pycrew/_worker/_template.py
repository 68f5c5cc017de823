"""Local workers forked from a template: a process that has imported what a
worker needs and forks one in a millisecond or two, where a fresh interpreter
takes tens of milliseconds to start and import.

```
 LocalLauncher ── Unix socket pair ──────► template: python -m pycrew worker --template
   {"id", "argv", "env"} + 3-4 fds ──────►   fork ─► worker: own session, fds 0-2,
   (secret pipe, stdout, stderr,                       the secret (and multiprocessing's
    its end of a pair with the controller)             authkey) from its pipe, env,
                                                       its channel, the worker's main
   ◄── {"id", "pid"}
   ◄── {"exit": pid, "code": n}          ◄── SIGCHLD: end the worker's group, reap it
   {"kill": pid} ────────────────────────►   SIGKILL, if not reaped yet
 controller dies ─► template dies (parent-death signal) ─► its workers die (theirs)
```

Fork safety: the template is a fresh interpreter started by the controller,
not a fork of it, so it holds none of the controller's threads, sockets,
locks or secrets. It starts no thread. A worker's secret travels in a pipe
the template passes on unread; the rest of the environment, the same a
worker started directly would get, travels in the request. A worker's
random state is its own (``random`` reseeds after a fork).

The template is ready once it has imported everything: until then, and if
it cannot start at all, the launcher starts workers directly, so the first
workers of a controller are never slower than without it, and a worker
that cannot start still explains why (``_diagnose``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

TYPE_CHECKING = False  # the template side must import little
if TYPE_CHECKING:
    import subprocess
    from typing import Any

#: the template's end of its socket pair
FD_ENV = "PYCREW_TEMPLATE_FD"
#: one request or reply; an environment is a few kilobytes
MESSAGE_MAX = 1 << 20
#: how long the launcher waits for the template to answer a fork request
REPLY_SECONDS = 30.0


def pipe_secrets(secret: str, authkey: str) -> str:
    """What a forked worker's secret pipe carries: the secret, then multiprocessing's key.

    Both are hex, so a space parts them; neither travels in the request,
    which the template reads.
    """
    return f"{secret} {authkey}" if authkey else secret


# --------------------------------------------------------------- template side
def serve() -> int:
    """The template's main loop: fork a worker per request, report how each ended."""
    import select

    from . import _worker

    _worker._die_with_parent()
    sock = socket.socket(fileno=int(os.environ.pop(FD_ENV)))
    _warm()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller ends it, not a terminal
    children: set[int] = set()
    _send(sock, {"ready": os.getpid()})
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(OSError):
                while os.read(wake_r, 512):
                    pass
            _reap(children, sock)
        if sock.fileno() not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, MESSAGE_MAX, 4)
        except OSError:
            break
        if not data:
            break  # the controller let go: its workers leave on their own
        request = json.loads(data)
        if "kill" in request:
            if request["kill"] in children:
                with contextlib.suppress(OSError):
                    os.kill(request["kill"], signal.SIGKILL)
            continue
        pid = os.fork()
        if pid == 0:
            _become_worker(request, fds, (sock.fileno(), wake_r, wake_w))
        for fd in fds:
            os.close(fd)
        children.add(pid)
        _send(sock, {"id": request["id"], "pid": pid})
    return 0


def _warm() -> None:
    """Import what a worker imports, so that a forked one does not."""
    import hashlib  # noqa: F401
    import hmac  # noqa: F401
    import pickle  # noqa: F401
    import ssl  # noqa: F401

    from .._operations import _logs  # noqa: F401
    from .._wire import _frames  # noqa: F401
    from . import _evaluate, _setup, _watchdog  # noqa: F401

    with contextlib.suppress(ImportError):
        import cloudpickle  # noqa: F401 (functions of a script unpickle with it)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.send(json.dumps(message).encode())


def _reap(children: set[int], sock: socket.socket) -> None:
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None:
            return
        pid = found.si_pid
        # what its tasks left in its group (forked children), while the pid
        # still names that group and no one else's
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        children.discard(pid)
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _become_worker(request: dict[str, Any], fds: list[int], close: tuple[int, ...]) -> None:
    """In the forked child: become the worker the request describes. Never returns."""
    code = 4
    try:
        os.setsid()  # a group of its own, out of the terminal's (as a direct start)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:
            os.close(fd)
        secret_r, out_fd, err_fd, *channel = fds
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in {null, out_fd, err_fd}:
            if fd > 2:
                os.close(fd)
        with os.fdopen(secret_r, "rb") as pipe:
            secret, _, authkey = pipe.read().decode().partition(" ")
        from .._wire import _frames
        from . import _worker
        from ._entry import AUTHKEY_ENV

        env = request["env"]
        env[_frames.SECRET_ENV] = secret
        if authkey:
            env[AUTHKEY_ENV] = authkey
        env[_worker.PARENT_ENV] = str(os.getppid())
        if channel:
            env[_frames.CHANNEL_ENV] = str(channel[0])
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["pycrew", *request["argv"]]
        from ._entry import worker_fast_path

        code = worker_fast_path(request["argv"]) or 0
    except BaseException:
        import traceback

        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


# --------------------------------------------------------------- launcher side
class Forked:
    """A worker the template forked: its pid, and its exit code once reported."""

    __slots__ = ("__weakref__", "pid", "returncode", "template")

    def __init__(self, pid: int, template: Template) -> None:
        self.pid = pid
        self.template = template
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.template.poll()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            self.template.kill(self)


class Template:
    """The launcher's end of one template process (used from the scaler thread)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        import subprocess

        from . import _worker

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**env, FD_ENV: str(theirs.fileno()), _worker.PARENT_ENV: str(os.getpid())}
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [*command, "--template"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # one that cannot start is told by the direct starts that follow
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.ready = False
        self.broken = False
        self.children: dict[int, Forked] = {}
        #: fork requests sent, by worker id: the pid once the template answers
        self.pending: dict[str, int | None] = {}

    def usable(self) -> bool:
        """Whether it can fork a worker now (not still importing, not gone)."""
        if not self.broken and not self.ready:
            self.poll()
        return self.ready and not self.broken

    def spawn(
        self, ids: list[str], argvs: list[list[str]], envs: list[dict[str, str]], fds: list[Any]
    ) -> list[Forked]:
        """Fork one worker per request, all asked first, then all answered.

        ``fds`` holds ``(secret, stdout fd, stderr fd, channel fd or None)`` per
        worker (the channel: its end of a socket pair with the controller).
        """
        import time

        self.pending = dict.fromkeys(ids)
        deadline = time.monotonic() + REPLY_SECONDS
        for worker_id, argv, env, (secret, out_fd, err_fd, channel) in zip(
            ids, argvs, envs, fds, strict=True
        ):
            read_end, write_end = os.pipe()
            message = json.dumps({"id": worker_id, "argv": argv, "env": env}).encode()
            passed = [read_end, out_fd, err_fd] + ([] if channel is None else [channel])
            try:
                while True:
                    try:
                        socket.send_fds(self.sock, [message], passed)
                        break
                    except BlockingIOError:
                        # a large batch: read its answers while it catches up
                        if time.monotonic() > deadline or not self.poll(0.01):
                            raise
                # far under a pipe's buffer: never blocks
                os.write(write_end, secret.encode())
            except OSError as exc:
                self.broken = True
                raise OSError(f"the worker template is gone: {exc}") from exc
            finally:
                os.close(read_end)
                os.close(write_end)
        while any(pid is None for pid in self.pending.values()):
            if not self.poll(max(0.0, deadline - time.monotonic())) or time.monotonic() > deadline:
                self.broken = True
                raise OSError("the worker template stopped answering")
        forked = []
        for worker_id in ids:
            pid = self.pending[worker_id]
            assert pid is not None
            handle = self.children.setdefault(pid, Forked(pid, self))
            forked.append(handle)
        self.pending = {}
        return forked

    def poll(self, seconds: float = 0.0) -> bool:
        """Read what the template said (waiting up to ``seconds`` for a first
        message); False once it is gone."""
        import select

        if self.broken:
            return False
        if seconds > 0:
            select.select([self.sock], [], [], seconds)
        while True:
            try:
                data = self.sock.recv(MESSAGE_MAX)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                data = b""
            if not data:
                self._gone()
                return False
            message = json.loads(data)
            if "ready" in message:
                self.ready = True
            elif "exit" in message:
                child = self.children.pop(message["exit"], None)
                if child is not None:
                    child.returncode = int(message["code"])
            elif message.get("id") in self.pending:
                self.pending[message["id"]] = int(message["pid"])

    def kill(self, child: Forked) -> None:
        if not self.broken:
            with contextlib.suppress(OSError):
                self.sock.send(json.dumps({"kill": child.pid}).encode())

    def _gone(self) -> None:
        """The template died: its workers died with it (their parent-death signal)."""
        self.broken = True
        for child in self.children.values():
            if child.returncode is None:
                child.returncode = -signal.SIGKILL
        self.children.clear()

    def close(self, seconds: float = 5.0) -> None:
        """Let go: the template is killed, and what it still forked dies with it.

        Killed rather than asked: it holds nothing to save, and a clean exit
        of its interpreter added a few tens of milliseconds to every
        terminate(). (A template whose controller dies sees its socket close
        and leaves on its own.)
        """
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait(timeout=seconds)
