"""Security with a real controller, real workers and raw sockets on 127.0.0.1."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import secrets
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import pycrew
import pycrew._dispatcher._handshake
from pycrew._wire import _frames
from pycrew._wire._frames import PREAUTH_MAX, Kind
from tests.helpers import peers, tasks
from tests.helpers.common import address, read_until_closed, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


# ------------------------------------------------------------------ helpers


class _Canary:
    """Unpickling this creates a file: proof that a peer's bytes were unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# ------------------------------------------------------ (1) rogue clients

ROGUES: dict[str, tuple[Callable[[dict[str, Any]], bytes], str | None]] = {
    # name: (what the rogue sends after HELLO, the REJECT reason expected or None)
    "http": (lambda h: b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None),
    "zeros": (lambda h: b"\0" * 64, None),
    "binary": (lambda h: bytes(range(256))[::-1], None),
    "auth-not-json": (lambda h: peers.frame(Kind.AUTH, b"\x80\x05not json"), None),
    "auth-json-list": (lambda h: peers.frame(Kind.AUTH, b"[1,2,3]"), None),
    "task-before-auth": (lambda h: peers.frame(Kind.TASK, b"\0" * 16), None),
    "buffers-before-auth": (lambda h: peers.frame(Kind.AUTH, b"{}", [b"x" * 100]), None),
    "oversized-header-only": (
        lambda h: _frames.HEADER.pack(Kind.AUTH, 0, 0, PREAUTH_MAX + 1),
        None,
    ),
    "oversized-whole": (lambda h: peers.frame(Kind.AUTH, b" " * (PREAUTH_MAX + 1)), None),
    "huge-header": (lambda h: _frames.HEADER.pack(Kind.AUTH, 0, 0, 0xFFFFFFFF), None),
    "wrong-mac": (lambda h: peers.auth(h, peers.WRONG_SECRET), "authentication failed"),
    "mac-not-str": (
        lambda h: peers.auth(h, peers.WRONG_SECRET, mac=12345),
        "authentication failed",
    ),
    "no-mac": (lambda h: peers.auth(h, peers.WRONG_SECRET, mac=None), "authentication failed"),
    "short-nonce": (
        lambda h: peers.auth(h, peers.WRONG_SECRET, nonce="00"),
        "authentication failed",
    ),
    "replayed-nonce": (
        lambda h: peers.auth(h, peers.WRONG_SECRET, nonce=h["nonce"]),
        "authentication failed",
    ),
    "other-version": (lambda h: peers.auth(h, peers.WRONG_SECRET, pycrew="0.0.0-rogue"), "pycrew"),
}


@pytest.mark.parametrize("rogue", sorted(ROGUES))
def test_rogue_client_is_dropped_while_worker_keeps_working(rogue: str) -> None:
    make, reason = ROGUES[rogue]
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        before = ctl.push(tasks.pid).record(timeout=30)
        assert before.status is pycrew.Status.SUCCESS
        running = ctl.push(tasks.sleep, 0.3)
        with peers.rogue(ctl) as (sock, hello):
            assert hello["pycrew"] == pycrew.__version__
            sock.sendall(make(hello))
            started = time.monotonic()
            reply = read_until_closed(sock, peers.DROP_SECONDS)
            # dropped at once, not at the handshake deadline
            assert time.monotonic() - started < pycrew._dispatcher._handshake.HANDSHAKE_SECONDS / 2
        frames = peers.frames(reply)
        assert all(kind != Kind.WELCOME for kind, _, _ in frames)
        if reason is None:
            assert frames == []
        else:
            assert [kind for kind, _, _ in frames] == [Kind.REJECT]
            assert reason in _frames.parse_json(frames[0][1])["reason"]
        # the worker was not disturbed: same process, its task done, the next one too
        assert running.record(timeout=30).status is pycrew.Status.SUCCESS
        after = ctl.push(tasks.add, 2, 3).record(timeout=30)
        assert after.result == 5
        assert after.pid == before.result
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)
        assert "rogue" not in {r.worker for r in (before, after)}


def test_many_rogues_at_once_do_not_stop_the_controller() -> None:
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        assert ctl.push(tasks.add, 1, 1).record(timeout=30).result == 2
        assert ctl.collect() == []  # handed over by its future
        socks = [
            socket.create_connection(address(ctl), timeout=peers.DROP_SECONDS) for _ in range(20)
        ]
        try:
            for sock in socks:
                peers.read_hello(sock)
                sock.sendall(b"\xff" * 8)
            for sock in socks:
                read_until_closed(sock, peers.DROP_SECONDS)
        finally:
            for sock in socks:
                sock.close()
        results = ctl.map(tasks.add, iterate={"x": list(range(20)), "y": [1] * 20})
        assert [r.result for r in results] == list(range(1, 21))


# ------------------------------------- (2) nothing is unpickled before auth
_AUDIT: dict[str, Any] = {"on": False, "find_class": 0, "installed": False}


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["on"] and event == "pickle.find_class":
        _AUDIT["find_class"] += 1


def _install_audit_hook() -> None:
    # audit hooks cannot be removed: install once, switch with the flag
    if not _AUDIT["installed"]:
        sys.addaudithook(_audit_hook)
        _AUDIT["installed"] = True


def test_nothing_is_unpickled_before_authentication(tmp_path: Path) -> None:
    _install_audit_hook()
    canary = tmp_path / "canary"
    payload = pickle.dumps([collections.OrderedDict(a=1), _Canary(canary)], protocol=5)
    assert len(payload) < PREAUTH_MAX
    # the hook works: a real unpickle of this kind of payload is counted
    _AUDIT["on"], _AUDIT["find_class"] = True, 0
    try:
        pickle.loads(pickle.dumps(collections.OrderedDict(a=1)))
        assert _AUDIT["find_class"] >= 1
    finally:
        _AUDIT["on"], _AUDIT["find_class"] = False, 0

    result_frame = peers.frame(Kind.RESULT, _frames.RESULT_HEAD.pack(1, 0, 0, 0.0) + payload)
    attempts: list[Callable[[dict[str, Any]], bytes]] = [
        lambda h: result_frame,
        lambda h: peers.frame(Kind.AUTH, payload),
        lambda h: peers.frame(Kind.TASK, _frames.TASK_ID.pack(1) + payload),
        lambda h: peers.auth(h, peers.WRONG_SECRET) + result_frame,
        lambda h: peers.frame(Kind.RESULT, _frames.RESULT_HEAD.pack(1, 0, 0, 0.0), [payload]),
    ]
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        before = ctl.push(tasks.add, 1, 2).record(timeout=30)
        assert before.result == 3
        _AUDIT["on"] = True
        try:
            for attempt in attempts:
                with peers.rogue(ctl) as (sock, hello):
                    sock.sendall(attempt(hello))
                    read_until_closed(sock, peers.DROP_SECONDS)
            assert _AUDIT["find_class"] == 0
        finally:
            _AUDIT["on"] = False
        assert not canary.exists()
        assert ctl.push(tasks.add, 3, 4).record(timeout=30).result == 7
        assert ctl.workers_status()["cumulative"] == 1
    assert not canary.exists()


# -------------------------------------------------- (3) handshake deadline
@pytest.mark.parametrize(
    "sends",
    [
        b"",  # says nothing
        b"\x02\x00\x00",  # a partial header
        _frames.HEADER.pack(Kind.AUTH, 0, 0, 100) + b"{",  # a partial message
    ],
    ids=["silent", "partial-header", "partial-meta"],
)
def test_silent_client_is_dropped_after_handshake_deadline(
    monkeypatch: pytest.MonkeyPatch, sends: bytes
) -> None:
    deadline = 0.5
    monkeypatch.setattr(pycrew._dispatcher._handshake, "HANDSHAKE_SECONDS", deadline)
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        with peers.rogue(ctl) as (sock, _hello):
            started = time.monotonic()
            if sends:
                sock.sendall(sends)
            assert peers.frames(read_until_closed(sock, seconds=deadline + 4)) == []
            elapsed = time.monotonic() - started
        # not before the deadline (less the time HELLO took to read), and not long after
        assert deadline - 0.2 <= elapsed < deadline + 4
        assert ctl.push(tasks.add, 1, 1).record(timeout=30).result == 2


def test_handshake_deadline_default_is_bounded() -> None:
    assert 0 < pycrew._dispatcher._handshake.HANDSHAKE_SECONDS <= 30


# ------------------------------------------------------- (4) secret hiding
def test_secret_is_not_visible_in_ps_repr_logs_or_tasks(tmp_path: Path) -> None:
    ctl = pycrew.local_controller(workers=2, seconds_interval=0.05, log_directory=tmp_path)
    try:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, 20, "two connected workers")
        secret = ctl._env[_frames.SECRET_ENV]
        assert len(secret) == 64
        bytes.fromhex(secret)
        # both workers, each with one task, look for the secret in their environment
        code = "import os, time\ntime.sleep(0.3)\nos.environ.get(name)"
        futures = [ctl.push(code, data={"name": _frames.SECRET_ENV}) for _ in range(2)]
        records = [f.record(timeout=30) for f in futures]
        assert [r.status for r in records] == [pycrew.Status.SUCCESS] * 2
        assert [r.result for r in records] == [None, None]
        assert {r.pid for r in records} == set(ctl.pids())
        assert ctl.push(tasks.env, _frames.SECRET_ENV).record(timeout=30).result is None
        # nor can a task read it back from the process's initial environment block
        if sys.platform.startswith("linux"):
            peek = "open('/proc/self/environ', 'rb').read().count(secret.encode())"
            assert ctl.push(peek, data={"secret": secret}).record(timeout=30).result == 0
            # and the block still reads whole: the variables after it are intact
            for pid in ctl.pids():
                assert psutil.Process(pid).environ()[_frames.CONTROLLER_ENV] == ctl.name

        seen_workers = set()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            assert secret not in cmdline.lower(), proc.info["pid"]
            if proc.info["pid"] in ctl.pids():
                seen_workers.add(proc.info["pid"])
                assert "worker" in cmdline
        assert seen_workers == set(ctl.pids())  # the scan did see the workers
        assert secret not in repr(ctl).lower()
        assert secret not in str(ctl.url)
    finally:
        ctl.terminate()
    logs = sorted(tmp_path.glob("*.log"))
    assert len(logs) == 2
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "connected to" in text
    assert secret not in text.lower()
    assert ctl._env == {}  # terminate forgets the secret


# ------------------------------------------- (5) worker with a wrong secret
def _worker_env(secret: str | None) -> dict[str, str]:
    env = os.environ.copy()
    for name in (_frames.SECRET_ENV, _frames.TRUST_ENV, _frames.WORKER_ENV, "PYCREW_PARENT_PID"):
        env.pop(name, None)
    if secret is not None:
        env[_frames.SECRET_ENV] = secret
    return env


def _start_worker(address: str, secret: str | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pycrew", "worker", "--address", address, "--id", "x"],
        env=_worker_env(secret),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (secrets.token_hex(32), "authentication failed"),
        (None, "no valid secret"),
        ("not hex at all", "no valid secret"),
    ],
    ids=["wrong", "missing", "not-hex"],
)
def test_worker_with_wrong_secret_exits_4_and_gets_no_task(
    secret: str | None, message: str
) -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        address = ctl.url.split("://", 1)[1]
        proc = _start_worker(address, secret)
        try:
            future = ctl.push(tasks.pid)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 4, err
            assert message in err.decode()
            record = future.record(timeout=30)
            assert record.status is pycrew.Status.SUCCESS
            assert record.result != proc.pid
            assert record.worker != "x"
            status = ctl.workers_status()
            assert (status["connected"], status["cumulative"]) == (1, 1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_worker_refuses_an_impostor_controller(tmp_path: Path) -> None:
    """A listener that does not know the secret cannot make a worker run anything."""
    canary = tmp_path / "canary"
    secret = secrets.token_hex(32)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        proc = _start_worker(f"127.0.0.1:{port}", secret)
        try:
            conn, _ = server.accept()
            with conn:
                nonce_c = secrets.token_bytes(32)
                conn.sendall(
                    peers.frame(
                        Kind.HELLO,
                        _frames.json_meta(_frames.hello_fields() | {"nonce": nonce_c.hex()}),
                    )
                )
                conn.settimeout(10)
                decoder = _frames.Decoder(PREAUTH_MAX, allow_buffers=False)
                while not decoder.frames:
                    chunk = conn.recv(4096)
                    assert chunk
                    decoder.feed(chunk)
                kind, meta, _ = decoder.frames[0]
                assert kind == Kind.AUTH
                assert secret not in meta.decode()
                auth = _frames.parse_json(meta)
                # the worker proves the secret without revealing it
                nonce_w = bytes.fromhex(auth["nonce"])
                assert _frames.check_mac(
                    bytes.fromhex(secret), b"worker", nonce_c, nonce_w, auth["mac"]
                )
                bad_mac = _frames.mac(peers.WRONG_SECRET, b"controller", nonce_w, nonce_c)
                task = _frames.TASK_ID.pack(1) + pickle.dumps(_Canary(canary), protocol=5)
                with contextlib.suppress(OSError):
                    conn.sendall(
                        peers.frame(
                            Kind.WELCOME, _frames.json_meta({"mac": bad_mac, "settings": {}})
                        )
                        + peers.frame(Kind.TASK, task)
                    )
                _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 4, err
    assert "did not prove" in err.decode()
    assert not canary.exists()


def test_worker_of_another_version_is_refused_and_the_user_is_told() -> None:
    """A worker holding the secret but running another pycrew is refused, visibly."""
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        assert ctl.push(tasks.add, 1, 2).record(timeout=30).result == 3
        address = ctl.url.split("://", 1)[1]
        env = _worker_env(ctl._env[_frames.SECRET_ENV])
        code = (
            "import sys, pycrew._version as v\n"
            "v.__version__ = '9.9.9'\n"
            "from pycrew._cli import main\n"
            "sys.exit(main(sys.argv[1:]))"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "worker", "--address", address, "--id", "old-worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        # the worker says why in its log, and exits with the start-up failure code
        assert proc.returncode == 4, err
        assert f"the controller runs pycrew '{pycrew.__version__}' and the worker '9.9.9'" in (
            err.decode()
        )
        # the user hears it at the next call, once
        with pytest.warns(
            pycrew.CrewWarning,
            match=r"was refused: the worker runs pycrew '9.9.9' and the controller",
        ):
            record = ctl.push(tasks.add, 2, 3).record(timeout=30)
        assert record.result == 5
        assert ctl.workers_status()["cumulative"] == 1


def test_a_stranger_claiming_another_version_does_not_reach_the_user() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        assert ctl.push(tasks.add, 1, 2).record(timeout=30).result == 3
        with peers.rogue(ctl) as (sock, hello):
            sock.sendall(peers.auth(hello, peers.WRONG_SECRET, pycrew="9.9.9"))
            read_until_closed(sock, peers.DROP_SECONDS)
        # filterwarnings=error: any warning here fails the test
        assert ctl.push(tasks.add, 2, 3).record(timeout=30).result == 5
        assert ctl.collect() == []
        assert ctl._refusals_told == set()


# --------------------------------------------------- (6) public host refused
@pytest.mark.parametrize("host", ["8.8.8.8", "0.0.0.0", "::", "1.1.1.1"])
def test_public_or_wildcard_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="allow_public"):
        pycrew.local_controller(host=host)


def test_wildcard_host_allowed_on_request() -> None:
    ctl = pycrew.local_controller(host="0.0.0.0", allow_public=True, tls="automatic")
    assert ctl.host == "0.0.0.0"
    assert not ctl.started()
    # without TLS a non-loopback host is allowed, but with a warning
    with pytest.warns(pycrew.CrewWarning, match="TLS is off"):
        pycrew.local_controller(host="0.0.0.0", allow_public=True)


def test_loopback_host_needs_no_permission() -> None:
    with pycrew.local_controller(host="127.0.0.1") as ctl:
        assert ctl.url.startswith("tcp://127.0.0.1:")
