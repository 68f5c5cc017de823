"""The local channel: a running controller's state, read by another process of the same user.

Real controllers with real workers, real Unix sockets, real other processes
(a client in a subprocess, a controller process killed with SIGKILL, a child
running as another uid). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew._operations import _channel
from pycrew._operations._channel import Channel, ChannelClosed, ChannelError, ask, find
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

WAIT = 60
ROOT = Path(__file__).resolve().parents[2]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")


@contextlib.contextmanager
def serving(ctl: pycrew.Controller) -> Iterator[_channel.Listing]:
    """Start ``ctl`` and yield the listing of the channel it opens; then cancel
    what still runs and terminate it."""
    ctl.start()
    try:
        (listing,) = wait_for(ctl.name)
        yield listing
    finally:
        ctl.cancel(all=True)
        ctl.terminate()


def wait_for(name: str, count: int = 1) -> list[_channel.Listing]:
    """The listings of ``count`` controllers named ``name`` (bounded wait)."""
    wait_until(lambda: len(find(name)) >= count, WAIT, f"{count} channel(s) of {name!r}")
    return find(name)


def run_tasks(ctl: pycrew.Controller, n: int) -> None:
    """Push ``n`` quick tasks and wait for their results (other tasks may run on)."""
    futures = [ctl.push(tasks.add, i, 1) for i in range(n)]
    assert [f.result(timeout=WAIT) for f in futures] == [i + 1 for i in range(n)]


def raw(path: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read the reply until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(WAIT)
        conn.connect(path)
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        return reply


# ------------------------------------------------------------ serving
def test_a_controller_state_is_read_through_its_channel(state_dir: Path) -> None:
    ctl = pycrew.local_controller(name="observed", workers=2, seconds_interval=0.05)
    try:
        with serving(ctl) as listing:
            run_tasks(ctl, 6)
            assert (listing.name, listing.pid) == ("observed", os.getpid())
            assert listing.host == socket.gethostname()
            state = ask(listing, "status", since=0)
            assert state["controller"] == "observed"
            assert state["url"] == ctl.url
            assert state["tasks"]["success"] == 6
            json.dumps(state)  # plain data all through
            path = Path(listing.path)
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
            assert path.parent == state_dir / "live"
        assert find("observed") == []
        assert not path.exists()
        assert not Path(listing.sidecar).exists()
        with pytest.raises(ChannelClosed, match="observed"):
            ask(listing, "status", since=0)
    finally:
        ctl.terminate()


def test_another_process_reads_the_state_and_the_log(state_dir: Path) -> None:
    logs: list[str] = []

    def worker_log(worker: str) -> str | None:
        logs.append(worker)
        return "last line\n" if worker == "w1" else None

    channel = Channel.open("elsewhere", lambda since: {"since": since}, worker_log=worker_log)
    assert channel is not None
    try:
        client = textwrap.dedent(
            """
            import json
            from pycrew._operations._channel import ask, find
            (listing,) = find("elsewhere")
            print(json.dumps([
                listing.pid,
                ask(listing, "status", since=7),
                ask(listing, "log", worker="w1"),
                ask(listing, "log", worker="w2"),
            ]))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", client], capture_output=True, text=True, timeout=WAIT
        )
        assert out.returncode == 0, out.stderr
        pid, status, log1, log2 = json.loads(out.stdout)
        assert pid == os.getpid()
        assert status == {"since": 7}
        assert log1 == {"worker": "w1", "log": "last line\n"}
        assert log2 == {"worker": "w2", "log": None}
        assert logs == ["w1", "w2"]
    finally:
        channel.close()


def test_cancel_is_refused_unless_the_controller_allows_it(state_dir: Path) -> None:
    channel = Channel.open("reads-only", lambda since: {})
    assert channel is not None
    try:
        (listing,) = find("reads-only")
        with pytest.raises(ChannelError, match="does not allow"):
            ask(listing, "cancel", names=["x"])
    finally:
        channel.close()


def test_a_task_is_cancelled_through_the_channel(state_dir: Path) -> None:
    ctl = pycrew.local_controller(name="cancels", workers=1, seconds_interval=0.05)
    with serving(ctl) as listing:
        future = ctl.push(tasks.sleep, 300, name="long")
        assert ask(listing, "cancel", names=["long"]) == {"cancelled": 1}
        assert ctl.wait("all", seconds_timeout=WAIT)
        assert future.record(timeout=WAIT).status == "cancel"


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"this is not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"op": "steer"}\n', "unknown op 'steer'"),
        (b'{"op": "status", "since": -1}\n', "since must be"),
        (b'{"op": "status", "since": true}\n', "since must be"),
        (b'{"op": "cancel", "names": "x"}\n', "names must be"),
        (b'{"op": "log", "worker": 3}\n', "worker must be"),
        (b"x" * (_channel.REQUEST_MAX + 10), "too long"),
    ],
)
def test_a_bad_request_gets_an_error_and_the_channel_serves_on(
    state_dir: Path, request_bytes: bytes, error: str
) -> None:
    channel = Channel.open("strict", lambda since: {"seq": since})
    assert channel is not None
    try:
        reply = json.loads(raw(str(channel.path), request_bytes))
        assert reply["ok"] is False
        assert error in reply["error"]
        (listing,) = find("strict")
        assert ask(listing, "status", since=3) == {"seq": 3}
    finally:
        channel.close()


def test_a_failing_status_is_an_error_reply_not_the_end(state_dir: Path) -> None:
    calls: list[int] = []

    def status(since: int) -> dict[str, Any]:
        calls.append(since)
        if len(calls) == 1:
            raise RuntimeError("the state is being rebuilt")
        return {"ok": since}

    channel = Channel.open("flaky", status)
    assert channel is not None
    try:
        (listing,) = find("flaky")
        with pytest.raises(ChannelError, match="RuntimeError: the state is being rebuilt"):
            ask(listing, "status", since=0)
        assert ask(listing, "status", since=1) == {"ok": 1}
    finally:
        channel.close()


def test_close_is_idempotent_and_ends_the_thread(state_dir: Path) -> None:
    channel = Channel.open("brief", lambda since: {})
    assert channel is not None
    assert [t for t in threading.enumerate() if t.name == "pycrew-channel"]
    channel.close()
    channel.close()
    assert not [t for t in threading.enumerate() if t.name == "pycrew-channel"]
    assert not channel.path.exists()
    assert "closed" in repr(channel)


def test_several_controllers_are_listed_by_name(state_dir: Path) -> None:
    first = Channel.open("one", lambda since: {"who": 1})
    second = Channel.open("two", lambda since: {"who": 2})
    assert first is not None
    assert second is not None
    try:
        assert sorted(c.name for c in find()) == ["one", "two"]
        (two,) = find("two")
        assert ask(two, "status", since=0) == {"who": 2}
        assert find("three") == []
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------ stale and odd places
def test_a_killed_controller_is_skipped_and_cleaned_up(state_dir: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from pycrew._operations._channel import Channel
        channel = Channel.open("doomed", lambda since: {})
        print(channel.path, flush=True)
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        path = Path(child.stdout.readline().strip())
        assert [c.pid for c in find("doomed")] == [child.pid]
    finally:
        child.kill()
        child.wait(WAIT)
        if child.stdin is not None:
            child.stdin.close()
        if child.stdout is not None:
            child.stdout.close()
    assert path.exists()  # nobody removed it: SIGKILL leaves no time
    assert find() == []
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_a_socket_nobody_listens_on_is_stale(state_dir: Path) -> None:
    """A sidecar whose pid lives on (ours) but whose socket is dead: a reused pid."""
    channel = Channel.open("ghost", lambda since: {})
    assert channel is not None
    sidecar = channel.sidecar.read_bytes()
    channel.close()
    channel.sidecar.write_bytes(sidecar)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(channel.path))  # bound, never listening: connect is refused
        assert find() == []
    assert not channel.sidecar.exists()


def test_a_path_too_long_for_a_socket_falls_back_to_a_short_folder(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = state_dir / ("d" * 60) / ("e" * 60)
    short = Path(tempfile.mkdtemp(prefix="pt-"))
    monkeypatch.setenv("PYCREW_STATE_DIR", str(deep))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(short))
    try:
        channel = Channel.open("deep", lambda since: {"deep": True})
        assert channel is not None
        try:
            assert channel.path.is_relative_to(short / f"pycrew-{os.geteuid()}")
            for folder in (channel.path.parent, channel.path.parent.parent):
                assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
            (listing,) = find("deep")
            assert ask(listing, "status", since=0) == {"deep": True}
            # another state directory does not see it
            monkeypatch.setenv("PYCREW_STATE_DIR", str(state_dir))
            assert find() == []
        finally:
            channel.close()
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_no_place_for_a_channel_is_none_and_a_debug_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PYCREW_STATE_DIR", str(blocker / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocker))
    monkeypatch.setenv("TMPDIR", str(blocker))
    with caplog.at_level(logging.DEBUG, logger="pycrew.controller"):
        assert Channel.open("homeless", lambda since: {}) is None
    assert "homeless" in caplog.text
    assert "opens no local channel" in caplog.text
    assert find() == []


@ROOT_ONLY
def test_a_fallback_folder_someone_else_made_is_not_used(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = Path(tempfile.mkdtemp(prefix="pt-"))
    squatted = short / f"pycrew-{os.geteuid()}"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, NOBODY, NOBODY)
    monkeypatch.setenv("PYCREW_STATE_DIR", str(state_dir / ("d" * 100)))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(short))
    try:
        assert Channel.open("careful", lambda since: {}) is None
        assert list(squatted.iterdir()) == []
    finally:
        shutil.rmtree(short, ignore_errors=True)


# ------------------------------------------------------------ other users
NOBODY = 65534


def as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@functools.cache
def python_for_nobody() -> str | None:
    """An interpreter uid 65534 may run (ours may sit in root's 0700 home)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [candidate, "-c", "pass"], check=True, timeout=WAIT, cwd="/", preexec_fn=as_nobody
            )
            return candidate
    return None


def connect_as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    """Connect to ``path`` from a child running as uid 65534 and print what happened."""
    code = textwrap.dedent(
        f"""
        import socket
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout({WAIT})
        try:
            conn.connect({path!r})
        except PermissionError:
            print("denied")
            raise SystemExit(0)
        conn.sendall(b'{{"op": "status", "since": 0}}\\n')
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        print(reply.decode())
        """
    )
    python = python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter here that uid 65534 may run")
    return subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd="/",
        preexec_fn=as_nobody,
    )


@ROOT_ONLY
def test_another_user_cannot_reach_the_socket(state_dir: Path) -> None:
    state_dir.chmod(0o755)  # only the channel's own folder keeps the other user out
    channel = Channel.open("private", lambda since: {"secret": "state"})
    assert channel is not None
    try:
        out = connect_as_nobody(str(channel.path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "denied"
    finally:
        channel.close()


@ROOT_ONLY
def test_another_user_is_refused_even_through_an_open_door(state_dir: Path) -> None:
    """The uid check holds when the folder's and socket's modes would let anyone in."""
    state_dir.chmod(0o755)
    channel = Channel.open("private", lambda since: {"secret": "state"})
    assert channel is not None
    try:
        channel.path.parent.chmod(0o777)
        channel.path.chmod(0o777)
        out = connect_as_nobody(str(channel.path))
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert reply == {"ok": False, "error": "refused: another user's process"}
        (listing,) = find("private")
        assert ask(listing, "status", since=0) == {"secret": "state"}
    finally:
        channel.close()
