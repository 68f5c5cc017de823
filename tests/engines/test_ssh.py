"""Workers over ssh, against a real sshd (Debian's openssh-server) running in a
network namespace that reaches the controller only the way a remote host
would: over a veth pair, or (``tunnel=True``) not at all but through ssh's
reverse tunnel. Needs root and iproute2; skipped without them unless
``PYCREW_REQUIRE_NETNS=1`` (CI), where that fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew import ssh_controller
from pycrew._engines._ssh import SshLauncher
from pycrew._operations import _diagnose
from pycrew._wire import _frames
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 60
SSHD = "/usr/sbin/sshd"


@dataclass
class Remote:
    """A host reached over ssh: a network namespace with sshd in it."""

    ns: str
    address: str
    host_address: str
    identity: str
    known_hosts: str


def _ns_inode(ns: str) -> str:
    return f"net:[{os.stat(f'/var/run/netns/{ns}').st_ino}]"


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        return "openssh-server is not installed"
    return None


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    problem = _problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_NETNS") == "1":
            pytest.fail(f"PYCREW_REQUIRE_NETNS=1, but {problem}")
        pytest.skip(problem)
    tag = f"{os.getpid() % 10000}"
    third = (os.getpid() + 101) % 250 + 1
    ns, host_if, remote_if = f"pycrew-ssh-{tag}", f"pcs{tag}h", f"pcs{tag}r"
    host_ip, remote_ip = f"10.78.{third}.1", f"10.78.{third}.2"
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
            check=True,
            timeout=30,
        )
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    (keys / "known_hosts").write_text(f"{remote_ip} {(keys / 'host.pub').read_text()}")
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress {remote_ip}\nPort 22\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    _ip("netns", "add", ns)
    sshd = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", remote_if)
        _ip("link", "set", remote_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{remote_ip}/30", "dev", remote_if, ns=ns)
        _ip("link", "set", remote_if, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        made = Remote(ns, remote_ip, host_ip, str(keys / "client"), str(keys / "known_hosts"))
        wait_until(lambda: _answers(made), 30, "sshd to answer")
        yield made
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=10)
        # whatever the test left in the namespace goes with it
        for pid in _pids_in(_ns_inode(ns)) if os.path.exists(f"/var/run/netns/{ns}") else []:
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)


def _answers(remote: Remote) -> bool:
    done = subprocess.run(
        ["ssh", *_options(remote), remote.address, "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _options(remote: Remote) -> list[str]:
    return [
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={remote.known_hosts}", "-i", remote.identity,
    ]  # fmt: skip


def _pids_in(namespace: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == namespace:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _ssh(remote: Remote, **options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.05)
    if not options.get("tunnel"):
        options.setdefault("host", remote.host_address)
    return ssh_controller(
        [remote.address],
        identity=remote.identity,
        known_hosts=remote.known_hosts,
        **options,  # type: ignore[arg-type]
    )


def _command_lines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    lines.append(cmdline.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_100_tasks_on_a_remote_host_that_dials_back_with_tls(remote: Remote) -> None:
    with _ssh(remote, workers=2) as ctl:
        futures = [ctl.push(tasks.add, i, i) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(100)]
        pids = ctl.pids()
        assert pids
        # they run in the remote host's network, started by its sshd
        assert {_ns_of(pid) for pid in pids} == {_ns_inode(remote.ns)}
        secret = ctl._env[_frames.SECRET_ENV]
        assert not [line for line in _command_lines() if secret in line]
    wait_until(lambda: _only_sshd(remote), WAIT, "nothing left")


def test_a_tunnel_serves_a_host_that_cannot_reach_the_controller(remote: Remote) -> None:
    with _ssh(remote, workers=1, tunnel=True) as ctl:
        assert ctl.url.startswith("tls+tcp://127.0.0.1:")  # loopback: out of the host's reach
        futures = [ctl.push(tasks.add, i, 1) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in futures] == [i + 1 for i in range(100)]
        assert {_ns_of(pid) for pid in ctl.pids()} == {_ns_inode(remote.ns)}
    wait_until(lambda: _only_sshd(remote), WAIT, "nothing left")


def test_scales_up_from_nothing_and_down_by_seconds_idle(remote: Remote) -> None:
    with _ssh(remote, workers=1, seconds_idle=0.5) as ctl:
        assert ctl.pids() == []
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
        wait_until(lambda: ctl.pids() == [], WAIT, "the idle worker to leave")
        wait_until(lambda: _only_sshd(remote), WAIT)
        assert ctl.push(tasks.add, 2, 2).result(timeout=WAIT) == 4


def test_a_killed_remote_worker_is_a_crash(remote: Remote, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with _ssh(remote, workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        os.kill(ctl.pids()[0], signal.SIGKILL)
        assert future.record(timeout=WAIT).status == "crash"


def test_an_unknown_host_key_is_refused_and_named(remote: Remote, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with ssh_controller(
        [remote.address],
        host=remote.host_address,
        identity=remote.identity,
        known_hosts=str(empty),
        seconds_interval=0.05,
    ) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(
            pycrew.LaunchError, match=f"ssh to {remote.address} refused its host key"
        ) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), WAIT, "the launch error")
        # a certain cause: told at the first failed worker, not after a second one
        assert str(caught.value).startswith(f"worker {ctl.name}-1 exited with code 255")
        ctl.cancel(all=True)


def test_a_host_that_refuses_is_named(remote: Remote) -> None:
    with ssh_controller(
        [remote.address],
        ssh_port=2,  # nothing listens there
        host=remote.host_address,
        identity=remote.identity,
        known_hosts=remote.known_hosts,
        seconds_interval=0.05,
    ) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError, match=f"ssh to {remote.address} failed: .*refused"):
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), WAIT, "the launch error")
        ctl.cancel(all=True)


#: what OpenSSH says when StrictHostKeyChecking=yes meets a host it does not know
REFUSED_KEY = (
    "No ED25519 host key is known for node1 and you have requested strict checking.\n"
    "Host key verification failed.\n"
)
CHANGED_KEY = (
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
    "Host key for node1 has changed and you have requested strict checking.\n"
    "Host key verification failed.\n"
)


def test_what_ssh_refuses_for_good_is_a_certain_cause() -> None:
    for text in (REFUSED_KEY, CHANGED_KEY):
        cause = _diagnose.probable_cause(text, 255)
        assert cause.certain
        assert "host's key" in cause.text
        assert "known_hosts" in cause.text
    login = _diagnose.probable_cause("root@node1: Permission denied (publickey).\n", 255)
    assert login.certain
    assert "identity=" in login.text
    name = "ssh: Could not resolve hostname nodex: Name or service not known\n"
    assert _diagnose.probable_cause(name, 255).certain
    refused = "ssh: connect to host node1 port 2: Connection refused\n"
    assert _diagnose.probable_cause(refused, 255).certain
    # a time-out may pass: the second failure decides
    late = "ssh: connect to host node1 port 22: Connection timed out\n"
    assert not _diagnose.probable_cause(late, 255).certain
    # the launcher's own message (a LaunchError from failure_output) is the cause,
    # certain when what it quotes is
    said = "ssh to node1 refused its host key: Host key verification failed. (add ...)"
    stated = _diagnose.stated_cause(said, 255)
    assert (stated.text, stated.certain) == (said, True)
    unclear = "ssh to node1 failed: kex_exchange_identification: read: Connection reset"
    assert not _diagnose.stated_cause(unclear, 255).certain
    assert not _diagnose.stated_cause("the log file /x was never made", 1).certain


def test_a_refused_host_key_is_told_at_the_first_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in for the ssh command that says what OpenSSH says (the real one
    # against a real sshd: test_an_unknown_host_key_is_refused_and_named)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "ssh"
    stand_in.write_text(f"#!/bin/sh\nprintf '%s' '{REFUSED_KEY}' >&2\nexit 255\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with ssh_controller(["node1"], tunnel=True, seconds_interval=0.05) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), WAIT, "the launch error")
        message = str(caught.value)
        assert message.startswith(f"worker {ctl.name}-1 exited with code 255 before it connected")
        assert "ssh to node1 refused its host key: Host key verification failed." in message
        ctl.cancel(all=True)


def test_ssh_command_lines_verify_host_keys_and_carry_no_secret() -> None:
    launcher = SshLauncher(["node1"], known_hosts="/k", identity="/i", tunnel=True, user="me")
    args = launcher.ssh_command("node1", 5000)
    assert args[-1] == "node1"
    assert "StrictHostKeyChecking=yes" in args
    assert "UserKnownHostsFile=/k" in args
    assert "-R" in args
    assert args[args.index("-R") + 1] == "0:127.0.0.1:5000"
    assert "StrictHostKeyChecking=no" not in " ".join(args)
    with pytest.raises(pycrew.ArgumentError):
        SshLauncher([])


def _ns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _only_sshd(remote: Remote) -> bool:
    """Whether the host runs nothing but its sshd: no worker, no session left."""
    return all(_is_sshd(pid) for pid in _pids_in(_ns_inode(remote.ns)))


def _is_sshd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"sshd" in cmdline.read()
    except OSError:
        return True  # gone meanwhile
