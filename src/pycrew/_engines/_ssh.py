"""Workers on other machines over ssh: ``SshLauncher`` (``ssh_controller()`` is a factory).

```
 launch_worker ──► ssh -T -o BatchMode=yes -o StrictHostKeyChecking=yes HOST \\
                       python -m pycrew worker --address A --id ID --stdin-environment
      │            stdin ◄── {"env": {secret, TLS trust, ...}, "address": ...}  (one JSON line)
      │ tunnel:   ssh -R 0:127.0.0.1:PORT ...: the controller stays on loopback, and the
      │           worker dials the port ssh allocated on its host ("Allocated port N")
      ├── exit_code ──► the ssh process's (the remote command's, or 255: ssh failed)
      └── failure_output ──► what ssh and the worker wrote to stderr (kept, last lines)
```

The secret never appears on a command line on either host: it goes through
ssh's standard input. Host keys are verified (``known_hosts=`` or the
user's own), never accepted blindly. A worker ends when its controller's
connection does (its watchdog sees to that), so ending a worker is closing
that connection, and ``shutdown`` ends any ssh session left.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, LaunchError
from ._cluster import check_lines
from ._launcher import Launcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._launcher import WorkerSpec

log = logging.getLogger("pycrew.engines.ssh")

_ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")
#: stderr lines kept per worker, for the diagnosis
KEPT_LINES = 200


class SshWorker:
    """The handle of one worker: its host and the ssh process that runs it."""

    def __init__(self, host: str, process: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.process = process
        self.lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self.allocated = threading.Event()
        self.remote_port: int | None = None
        self.reader = threading.Thread(target=self._read, name="pycrew-ssh", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            found = _ALLOCATED.search(line)
            if found is not None and self.remote_port is None:
                self.remote_port = int(found[1])
                self.allocated.set()
                continue
            self.lines.append(line)
        self.allocated.set()  # ssh ended: nobody waits for a port any more

    def __repr__(self) -> str:
        return f"<SshWorker {self.host} pid {self.process.pid}>"


class SshLauncher(Launcher):
    """Start workers on other machines over ssh, each in its own ssh session.

    Args:
        hosts: the machines (``"host"`` or ``"user@host"``); a new worker goes
            to the one running the fewest.
        port: sshd's port on them.
        user: the login, where ``hosts`` does not say.
        identity: a private key file (``ssh -i``); by default ssh's own choice.
        known_hosts: the file holding the hosts' keys, checked strictly; by
            default the user's ``~/.ssh/known_hosts``. Add a host's key there
            once you have checked it (``ssh-keyscan``, compared by hand).
        tunnel: for hosts that cannot reach the controller: each ssh session
            carries a reverse tunnel (``ssh -R``) from a port on the host to
            the controller, which may then listen on loopback only.
        python: the Python interpreter on the hosts (default: this one's path).
        ssh_options: more ``-o`` options for ssh, such as ``"ProxyJump=gate"``.
        seconds_connect: ssh's ``ConnectTimeout``.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        port: int = 22,
        user: str | None = None,
        identity: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        tunnel: bool = False,
        python: str | None = None,
        ssh_options: Sequence[str] = (),
        seconds_connect: float = 10,
    ) -> None:
        if isinstance(hosts, str):
            hosts = [hosts]
        self.hosts = list(hosts)
        if not self.hosts or not all(isinstance(h, str) and h for h in self.hosts):
            raise ArgumentError("hosts must be a list of host names, such as ['node1', 'node2']")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ArgumentError(f"port must be a TCP port, got {port!r}")
        if not isinstance(tunnel, bool):
            raise ArgumentTypeError(f"tunnel must be True or False, got {tunnel!r}")
        if not isinstance(seconds_connect, (int, float)) or seconds_connect <= 0:
            raise ArgumentError(f"seconds_connect must be positive, got {seconds_connect!r}")
        self.port = port
        self.user = user
        self.identity = os.fspath(identity) if identity is not None else None
        self.known_hosts = os.fspath(known_hosts) if known_hosts is not None else None
        self.tunnel = tunnel
        self.python = python
        self.ssh_options = check_lines("ssh_options", ssh_options)
        self.seconds_connect = float(seconds_connect)
        self._workers: list[SshWorker] = []

    def ssh_command(self, host: str, controller_port: int | None) -> list[str]:
        """ssh's command line for one worker (no secret in it)."""
        args = ["ssh", "-T", "-p", str(self.port), "-o", "BatchMode=yes"]
        args += ["-o", "StrictHostKeyChecking=yes"]
        args += ["-o", f"ConnectTimeout={max(1, round(self.seconds_connect))}"]
        if self.known_hosts is not None:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity is not None:
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.user is not None:
            args += ["-l", self.user]
        if controller_port is not None:
            args += ["-o", "ExitOnForwardFailure=yes", "-R", f"0:127.0.0.1:{controller_port}"]
        for option in self.ssh_options:
            args += ["-o", option]
        return [*args, host]

    def launch_worker(self, spec: WorkerSpec) -> SshWorker:
        live = collections.Counter(w.host for w in self._workers if w.process.poll() is None)
        host = min(self.hosts, key=lambda h: live[h])
        command = list(spec.command)
        if self.python is not None:
            command[0] = self.python
        address = command[command.index("--address") + 1]
        controller_port = int(address.rpartition(":")[2]) if self.tunnel else None
        remote = shlex.join(["exec", *command, "--stdin-environment"])
        argv = [*self.ssh_command(host, controller_port), remote]
        if log.isEnabledFor(logging.DEBUG):
            # the secret goes on ssh's standard input, never here
            log.debug("running %s", shlex.join(argv))
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("cannot run ssh: %s", exc.strerror or exc)
            raise LaunchError(f"cannot run ssh: {exc.strerror or exc}") from exc
        worker = SshWorker(host, process)
        self._workers.append(worker)
        log.info("launched worker %s on %s (ssh pid %d)", spec.worker_id, host, process.pid)
        env = {k: v for k, v in spec.env.items() if k not in spec.env_remove}
        sent: dict[str, Any] = {"env": env}
        if controller_port is not None:
            # the port ssh opened on the host, known once the session is up
            worker.allocated.wait(self.seconds_connect + 5)
            if worker.remote_port is None:
                log.warning("ssh to %s opened no tunnel for worker %s", host, spec.worker_id)
                return worker  # ssh failed: exit_code and failure_output say why
            sent["address"] = f"127.0.0.1:{worker.remote_port}"
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.write(json.dumps(sent).encode() + b"\n")
            process.stdin.close()
        return worker

    def exit_code(self, handle: Any) -> int | None:
        return handle.process.poll() if isinstance(handle, SshWorker) else None

    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, SshWorker):
            return None
        handle.reader.join(timeout=2)
        lines = list(handle.lines)
        if handle.process.poll() == 255:
            # ssh itself failed: name the host and ssh's own words
            said = next((line for line in reversed(lines) if line.strip()), "no message")
            if "Host key verification failed" in said or "host key" in said.lower():
                where = self.known_hosts or "~/.ssh/known_hosts"
                raise LaunchError(
                    f"ssh to {handle.host} refused its host key: {said} (add the host's key "
                    f"to {where} once you have checked it)"
                )
            raise LaunchError(f"ssh to {handle.host} failed: {said}")
        return "\n".join(lines)

    def terminate_worker(self, handle: Any) -> None:
        # a worker ends once its connection to the controller does; ending the
        # session also ends a tunnel, and a worker that never connected
        if isinstance(handle, SshWorker) and handle.process.poll() is None:
            log.info(
                "ending the ssh session of a worker on %s (pid %d)", handle.host, handle.process.pid
            )
            with contextlib.suppress(OSError):
                handle.process.terminate()

    def describe_worker(self, handle: Any) -> dict[str, Any]:
        if isinstance(handle, SshWorker):
            return {"host": handle.host, "ssh_pid": handle.process.pid}
        return {}

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """Wait for the sessions to end (their workers leave), then end those left."""
        deadline = time.monotonic() + seconds
        workers, self._workers = self._workers, []
        for worker in workers:
            while worker.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if worker.process.poll() is None:
                log.info("killing the ssh session on %s (pid %d)", worker.host, worker.process.pid)
                with contextlib.suppress(OSError):
                    worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=5)
            if worker.process.stderr is not None:
                worker.reader.join(timeout=2)
                worker.process.stderr.close()
