"""Attacks on a live controller: real workers, raw sockets on 127.0.0.1.

Each test attacks, then proves that the controller still serves its legitimate
workers and that nothing is lost: tasks pushed before, during and after the
attack all succeed with the right results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import pickle
import random
import secrets
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import pytest

import pycrew
import pycrew._dispatcher._dispatcher
import pycrew._dispatcher._handshake
from pycrew._wire import _frames
from pycrew._wire._frames import PREAUTH_MAX, Kind
from pycrew.launchers import LocalLauncher, WorkerSpec
from tests.helpers import peers, pki, tasks
from tests.helpers.common import address, read_until_closed, wait_until

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path

SUCCESS = pycrew.Status.SUCCESS


# ------------------------------------------------------------------ helpers
def _ok(future: pycrew.TaskFuture, expected: Any = None) -> pycrew.TaskResult:
    record = future.record(timeout=30)
    assert record.status is SUCCESS, record.error
    if expected is not None:
        assert record.result == expected
    return record


def _dispatcher(ctl: pycrew.Controller) -> pycrew._dispatcher._dispatcher.Dispatcher:
    disp = ctl._dispatcher
    assert disp is not None
    return disp


def _connections(ctl: pycrew.Controller) -> int:
    """Connections the controller holds, authenticated or not."""
    disp = _dispatcher(ctl)
    with disp.lock:
        return len(disp.conns)


# --------------------------------------------------------- (1) replay
class _Relay:
    """A TCP relay in front of the controller that records what each client sends."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        #: per relayed connection: the bytes the client (the worker) sent
        self.sent: list[bytearray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-relay", daemon=True)

    def start(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        self.listener.close()

    def _run(self) -> None:
        assert self.upstream is not None
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        # socket -> (its peer, where to record what it sends, or None)
        pairs: dict[socket.socket, tuple[socket.socket, bytearray | None]] = {}

        def close_pair(sock: socket.socket) -> None:
            peer, _ = pairs.pop(sock)
            pairs.pop(peer, None)
            for s in (sock, peer):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                s.close()

        try:
            while not self._stop.is_set():
                for key, _mask in sel.select(0.05):
                    if key.data is None:
                        client, _ = self.listener.accept()
                        server = socket.create_connection(self.upstream, timeout=5)
                        record = bytearray()
                        self.sent.append(record)
                        pairs[client] = (server, record)
                        pairs[server] = (client, None)
                        for s in (client, server):
                            s.settimeout(5)
                            sel.register(s, selectors.EVENT_READ, s)
                        continue
                    sock = key.data
                    if sock not in pairs:
                        continue
                    peer, recording = pairs[sock]
                    try:
                        data = sock.recv(1 << 16)
                        if data:
                            # recorded first: once the controller has it, the test may read it
                            if recording is not None:
                                recording += data
                            peer.sendall(data)
                    except OSError:
                        data = b""
                    if not data:
                        close_pair(sock)
        finally:
            for sock in list(pairs):
                if sock in pairs:
                    close_pair(sock)
            sel.close()


class _RelayLauncher(LocalLauncher):
    """Local workers that dial the relay instead of the controller."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def launch_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        command = list(spec.command)
        command[command.index("--address") + 1] = f"127.0.0.1:{self.port}"
        return super().launch_worker(dataclasses.replace(spec, command=command))


@pytest.mark.parametrize("tls", ["none", "automatic"])
def test_replayed_worker_handshake_is_rejected(tls: str) -> None:
    relay = _Relay()
    try:
        with pycrew.Controller(
            _RelayLauncher(relay.port), workers=1, tls=tls, seconds_interval=0.05
        ) as ctl:
            relay.start(address(ctl))
            first = _ok(ctl.push(tasks.pid))
            assert len(relay.sent) == 1, "the worker did not come through the relay"
            recorded = bytes(relay.sent[0])
            running = ctl.push(tasks.sleep, 0.3)
            for replay in _replays(recorded, tls):
                with socket.create_connection(address(ctl), timeout=peers.DROP_SECONDS) as sock:
                    if tls == "none":
                        peers.read_hello(sock)  # a fresh nonce, which the replay cannot answer
                    sock.sendall(replay)
                    reply = read_until_closed(sock, peers.DROP_SECONDS)
                if tls == "none":
                    frames = peers.frames(reply)
                    assert [kind for kind, _, _ in frames] == [Kind.REJECT]
                    reason = _frames.parse_json(frames[0][1])["reason"]
                    assert reason == "authentication failed"
                else:
                    # the replayed TLS records fail the TLS handshake: nothing in the clear
                    assert b"nonce" not in reply
                    assert b"pycrew" not in reply
            # the real worker, through the relay, is undisturbed
            assert _ok(running).pid == first.result
            later = [ctl.push(tasks.add, i, 1) for i in range(5)]
            assert [_ok(f, i + 1).pid for i, f in enumerate(later)] == [first.result] * 5
            status = ctl.workers_status()
            assert (status["connected"], status["cumulative"]) == (1, 1)
            assert len(relay.sent) == 1
            assert ctl.pids() == [first.result]
    finally:
        relay.close()


def _replays(recorded: bytes, tls: str) -> list[bytes]:
    """What to replay: the worker's AUTH message alone, then everything it sent."""
    if tls != "none":
        assert len(recorded) > 100
        return [recorded]
    kind, _flags, nbuf, meta_len = _frames.HEADER.unpack_from(recorded)
    assert (kind, nbuf) == (Kind.AUTH, 0)
    auth = recorded[: _frames.HEADER.size + meta_len]
    fields = _frames.parse_json(auth[_frames.HEADER.size :])
    assert isinstance(fields["mac"], str)
    assert len(recorded) > len(auth)  # results followed the handshake
    return [auth, recorded]


# ------------------------------------------------ (2) TLS impostor clients
def _unrelated_ca() -> str:
    """A self-signed CA certificate (PEM) that has nothing to do with the controller."""
    return pki.issue("unrelated test CA", ca=True).pem().decode()


def _tls_client_is_refused(
    make_context: Callable[[pycrew.Controller], ssl.SSLContext],
) -> ssl.SSLError:
    """Run a TLS client against an automatic-TLS controller; return the client's error."""
    with pycrew.local_controller(workers=1, tls="automatic", seconds_interval=0.05) as ctl:
        before = _ok(ctl.push(tasks.pid))
        running = ctl.push(tasks.sleep, 0.3)
        context = make_context(ctl)
        with (
            socket.create_connection(address(ctl), timeout=peers.DROP_SECONDS) as raw,
            pytest.raises(ssl.SSLError) as caught,
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        # the controller let go of that connection too, long before the handshake deadline
        wait_until(
            lambda: _connections(ctl) == 1, peers.DROP_SECONDS, "the TLS client to be dropped"
        )
        assert _ok(running).pid == before.result
        assert _ok(ctl.push(tasks.add, 2, 3), 5).pid == before.result
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)
        return caught.value


def test_tls_client_trusting_another_ca_fails_its_handshake() -> None:
    def other_ca(ctl: pycrew.Controller) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=_unrelated_ca())
        return context

    error = _tls_client_is_refused(other_ca)
    assert isinstance(error, ssl.SSLCertVerificationError)
    # the chain does not lead to a trusted root (not a host name mismatch, say)
    assert error.verify_code in (19, 20), error.verify_message  # X509_V_ERR_*_ISSUER / _IN_CHAIN


def test_tls_1_1_client_is_refused() -> None:
    def old_tls(ctl: pycrew.Controller) -> ssl.SSLContext:
        # trusts the controller: only the protocol version is wrong
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=ctl._env[_frames.TRUST_ENV])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with contextlib.suppress(ValueError, ssl.SSLError):
                context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # let OpenSSL offer TLS 1.1 if it still can, so that the server is the one refusing
        with contextlib.suppress(ssl.SSLError):
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context

    error = _tls_client_is_refused(old_tls)
    # refused by the server (a protocol_version alert), or, where OpenSSL no longer
    # speaks TLS 1.1 at all, by the client before it sends anything
    assert "VERSION" in str(error.reason) or "PROTOCOL" in str(error.reason), error


# --------------------------------------- fake (compromised) worker helpers
class _Scene:
    """A controller with one real worker, a fake worker, and tasks spread over both."""

    def __init__(self, ctl: pycrew.Controller, fake: peers.FakeWorker) -> None:
        self.ctl = ctl
        self.fake = fake
        self.real_pid = 0
        self.futures: list[pycrew.TaskFuture] = []
        self.held: pycrew.TaskFuture | None = None
        self.held_id = 0

    def spread(self) -> None:
        """Push tasks until the fake worker holds one."""
        wait_until(
            lambda: self.ctl.workers_status()["connected"] == 2,
            peers.DROP_SECONDS,
            "the fake to join",
        )
        self.futures = [self.ctl.push(tasks.add, i, 100) for i in range(6)]
        self.held_id = self.fake.next_task()
        self.held = next(f for f in self.futures if f._task.id == self.held_id)

    def check(self) -> None:
        """The fake's task crashed; every other task succeeded on the real worker."""
        assert self.held is not None
        record = self.held.record(timeout=30)
        assert record.status is pycrew.Status.CRASH, record
        assert record.worker == "fake"
        for i, future in enumerate(self.futures):
            if future is not self.held:
                assert _ok(future, i + 100).pid == self.real_pid
        assert _ok(self.ctl.push(tasks.add, 20, 22), 42).pid == self.real_pid
        assert self.ctl.workers_status()["connected"] == 1
        assert self.ctl.pids() == [self.real_pid]


@contextlib.contextmanager
def _scene(**options: Any) -> Iterator[_Scene]:
    with pycrew.local_controller(workers=1, seconds_interval=0.05, **options) as ctl:
        real_pid = _ok(ctl.push(tasks.pid)).result
        # the real worker is idle now: the fake, joining later, is the first one picked
        with peers.fake_worker(ctl) as fake:
            scene = _Scene(ctl, fake)
            scene.real_pid = real_pid
            scene.spread()
            yield scene


# ------------------------------------- (3) oversize frames after the handshake
def _header(kind: int, meta_len: int, lens: list[int]) -> bytes:
    head = _frames.HEADER.pack(kind, 0, len(lens), meta_len)
    return head + b"".join(_frames.LENGTH.pack(n) for n in lens)


OVERSIZE = {
    # name: (controller options, meta length claimed, buffer lengths claimed)
    "buffer-2^40": ({}, 10, [1 << 40]),
    "buffer-2^63": ({}, 10, [1 << 63]),
    "buffer-8GiB": ({}, 10, [8 << 30]),
    "buffers-summing-6GiB": ({}, 10, [3 << 30, 3 << 30]),
    "meta-4GiB": ({"bytes_max": 64 << 20}, 0xFFFFFFFF, []),
}


@pytest.mark.parametrize("variant", sorted(OVERSIZE))
def test_oversize_frame_after_authentication_is_refused_before_allocating(variant: str) -> None:
    options, meta_len, lens = OVERSIZE[variant]
    me = psutil.Process()
    with _scene(**options) as scene:
        rss = me.memory_info().rss
        head = _frames.RESULT_HEAD.pack(scene.held_id, 0, 0, 0.0)
        meta = head[: max(0, min(meta_len, len(head)))]
        scene.fake.sock.sendall(_header(Kind.RESULT, meta_len, lens) + meta)
        read_until_closed(scene.fake.sock, 3.0)
        assert me.memory_info().rss - rss < 50 << 20
        scene.check()
        assert me.memory_info().rss - rss < 50 << 20


def test_bytes_max_defaults_to_4_gib() -> None:
    for make in (pycrew.local_controller, pycrew.Controller):
        assert inspect.signature(make).parameters["bytes_max"].default == 4 << 30
    with pytest.raises(ValueError, match="bytes_max"):
        pycrew.local_controller(bytes_max=10)


def test_push_over_bytes_max_raises_and_result_over_it_is_an_error() -> None:
    limit = 1 << 20
    with pycrew.local_controller(workers=1, seconds_interval=0.05, bytes_max=limit) as ctl:
        pid = _ok(ctl.push(tasks.pid)).result
        with pytest.raises(ValueError, match="bytes_max"):
            ctl.push(tasks.nbytes, b"x" * (limit + 1))
        with pytest.raises(ValueError, match="bytes_max"):
            ctl.push(tasks.nbytes, np.zeros(limit + 1, dtype=np.uint8))
        assert ctl.size() == 0  # the refused tasks left nothing behind
        assert _ok(ctl.push(tasks.nbytes, b"x" * (limit // 2)), limit // 2).pid == pid
        big = ctl.push(tasks.blob, limit + 1).record(timeout=30)
        assert big.status is pycrew.Status.ERROR
        assert big.error is not None
        assert "bytes_max" in big.error
        # the worker survived: the same process runs the next task
        assert _ok(ctl.push(tasks.blob, 10), b"\x01" * 10).pid == pid
        assert ctl.workers_status()["cumulative"] == 1


# ------------------------------ (4b) hostile handshake values, found by fuzzing
HOSTILE_AUTH: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "mac-non-ascii": lambda h: peers.auth(h, peers.WRONG_SECRET, mac="\u00e9" * 64),
    "mac-non-ascii-short": lambda h: peers.auth(h, peers.WRONG_SECRET, mac="\u2603"),
    "json-nested-too-deep": lambda h: peers.frame(Kind.AUTH, b"[" * 2000 + b"]" * 2000),
    "json-huge-number": lambda h: peers.frame(Kind.AUTH, b'{"protocol":' + b"9" * 4000 + b"}"),
    "nonce-non-ascii": lambda h: peers.auth(h, peers.WRONG_SECRET, nonce="\u00e9" * 64),
    "id-huge-list": lambda h: peers.auth(h, peers.WRONG_SECRET, id=list(range(900))),
}


@pytest.mark.parametrize(
    "variant",
    list(HOSTILE_AUTH),
)
def test_hostile_auth_values_are_refused_and_the_controller_serves_on(variant: str) -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = _ok(ctl.push(tasks.pid)).result
        running = ctl.push(tasks.sleep, 0.3)
        with peers.rogue(ctl) as (sock, hello):
            message = HOSTILE_AUTH[variant](hello)
            assert len(message) <= _frames.HEADER.size + PREAUTH_MAX
            sock.sendall(message)
            reply = read_until_closed(sock, peers.DROP_SECONDS)
        kinds = [kind for kind, _, _ in peers.frames(reply)]
        assert kinds in ([], [Kind.REJECT])
        assert _dispatcher(ctl).failure is None
        assert _ok(running).pid == pid
        assert _ok(ctl.push(tasks.add, 2, 3), 5).pid == pid
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)


IMPOSTOR: dict[str, tuple[bytes | None, Any]] = {
    # name: (the HELLO message sent, or None for a proper one; the WELCOME's mac)
    "welcome-mac-non-ascii": (None, "\u00e9" * 64),
    "welcome-mac-a-number": (None, 12345),
    "hello-nonce-non-ascii": (_frames.json_meta(_frames.hello_fields() | {"nonce": "\u00e9"}), ""),
    "hello-nested-too-deep": (b"[" * 2000 + b"]" * 2000, ""),
}


@pytest.mark.parametrize(
    "variant",
    list(IMPOSTOR),
)
def test_worker_cleanly_refuses_an_impostor_controller_with_hostile_values(
    variant: str, tmp_path: Path
) -> None:
    import subprocess

    hello_meta, welcome_mac = IMPOSTOR[variant]
    canary = tmp_path / "canary"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    env[_frames.SECRET_ENV] = secrets.token_hex(32)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "pycrew", "worker", "--address", f"127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            conn, _ = server.accept()
            with conn:
                nonce = secrets.token_bytes(32).hex()
                if hello_meta is None:
                    hello_meta = _frames.json_meta(_frames.hello_fields() | {"nonce": nonce})
                task = _frames.TASK_ID.pack(1) + pickle.dumps(_Canary(str(canary)), protocol=5)
                with contextlib.suppress(OSError):
                    conn.sendall(peers.frame(Kind.HELLO, hello_meta))
                    conn.settimeout(10)
                    conn.recv(PREAUTH_MAX)  # the worker's AUTH, if it gets that far
                    welcome = _frames.json_meta({"mac": welcome_mac, "settings": {}})
                    conn.sendall(peers.frame(Kind.WELCOME, welcome) + peers.frame(Kind.TASK, task))
                _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert not canary.exists()
    assert proc.returncode == 4, err.decode(errors="replace")[-2000:]
    assert b"could not join" in err
    assert b"Traceback" not in err


class _Canary:
    """Unpickling this creates a file: proof that a peer's bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# ---------------------------------------- (5) a flood of bogus connections
def test_500_bogus_connections_while_1000_tasks_run() -> None:
    rng = random.Random(500)
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, 30, "two connected workers")
        pids = ctl.pids()
        where = address(ctl)
        futures: list[pycrew.TaskFuture] = []
        held: list[socket.socket] = []
        try:
            for batch in range(10):
                xs = list(range(batch * 100, batch * 100 + 100))
                futures += ctl.walk(tasks.add, iterate={"x": xs, "y": [7] * 100})
                for i in range(50):
                    _bogus(where, i % 5, rng, held)
            # hold the last ones while the tasks finish
            records = [f.record(timeout=60) for f in futures]
        finally:
            for sock in held:
                sock.close()
        assert len(held) == 100
        assert [r.status for r in records] == [SUCCESS] * 1000
        assert [r.result for r in records] == [x + 7 for x in range(1000)]
        assert {r.pid for r in records} <= set(pids)
        # every bogus connection is gone; only the two workers remain
        wait_until(
            lambda: _connections(ctl) == 2, peers.DROP_SECONDS, "bogus connections to be dropped"
        )
        assert _ok(ctl.push(tasks.add, 1, 2), 3).pid in pids
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (2, 2)
        assert ctl.pids() == pids


def _bogus(
    where: tuple[str, int], kind: int, rng: random.Random, held: list[socket.socket]
) -> None:
    sock = socket.create_connection(where, timeout=peers.DROP_SECONDS)
    if kind == 3:
        held.append(sock)  # open and silent
        return
    with sock, contextlib.suppress(OSError):  # the controller may have closed it already
        if kind == 1:
            # reset instead of a clean close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == 2:
            sock.sendall(rng.randbytes(rng.randint(1, 64)))
        elif kind == 4:
            sock.sendall(
                peers.frame(Kind.AUTH, _frames.json_meta({"nonce": "00" * 32, "mac": "0"}))
            )


# ------------------------------------------------------------ (6) slowloris
class _Slowloris:
    """Sockets that trickle a handshake one byte at a time; records when each is closed."""

    def __init__(self, where: tuple[str, int], count: int, period: float) -> None:
        self.period = period
        self.opened: dict[socket.socket, float] = {}
        self.closed: dict[socket.socket, float] = {}
        # a header announcing a long AUTH message, then its bytes, one per period
        self.trickle = _frames.HEADER.pack(Kind.AUTH, 0, 0, PREAUTH_MAX - 16) + b"{" * 4000
        for _ in range(count):
            sock = socket.create_connection(where, timeout=peers.DROP_SECONDS)
            sock.setblocking(False)
            self.opened[sock] = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-slowloris", daemon=True)
        self._thread.start()

    def wait_all_closed(self, seconds: float) -> None:
        self._thread.join(timeout=seconds)
        assert not self._thread.is_alive(), (
            f"{len(self.opened) - len(self.closed)} stalled sockets still open after {seconds} s"
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.opened:
            sock.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sent = dict.fromkeys(self.opened, 0)
        for sock in self.opened:
            sel.register(sock, selectors.EVENT_READ, sock)

        def gone(sock: socket.socket) -> None:
            self.closed[sock] = time.monotonic()
            sel.unregister(sock)
            del sent[sock]

        next_tick = time.monotonic()
        try:
            while sent and not self._stop.is_set():
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.period
                    for sock in list(sent):
                        try:
                            sent[sock] += sock.send(self.trickle[sent[sock] : sent[sock] + 1])
                        except BlockingIOError:
                            pass
                        except OSError:
                            gone(sock)
                for key, _mask in sel.select(max(0.0, next_tick - time.monotonic())):
                    sock = key.data
                    if sock not in sent:
                        continue
                    try:
                        data = sock.recv(4096)  # HELLO, then the end
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        gone(sock)
        finally:
            sel.close()


def test_slowloris_does_not_lock_out_a_new_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    handshake = 4.0
    monkeypatch.setattr(pycrew._dispatcher._handshake, "HANDSHAKE_SECONDS", handshake)
    count = pycrew._dispatcher._handshake.PREAUTH_CONNECTIONS + 86
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.start()
        attack = _Slowloris(address(ctl), count, period=0.2)
        try:
            first_stall = min(attack.opened.values())
            # no worker yet: pushing launches one, which must get in while the stall holds
            futures = [ctl.push(tasks.add, i, 1) for i in range(5)]
            in_time = first_stall + handshake - 0.5 - time.monotonic()
            wait_until(lambda: len(ctl.pids()) == 1, in_time, "the new worker to connect")
            assert [_ok(f, i + 1).pid for i, f in enumerate(futures)] == ctl.pids() * 5
            # each stalled socket is closed by its deadline (or earlier, if evicted)
            attack.wait_all_closed(handshake + 5)
            late = [
                attack.closed[s] - opened
                for s, opened in attack.opened.items()
                if attack.closed[s] - opened > handshake + 1.5
            ]
            assert late == [], f"closed late: {sorted(late)[-5:]}"
        finally:
            attack.stop()
        assert _ok(ctl.push(tasks.add, 2, 2), 4).pid in ctl.pids()
        assert _connections(ctl) == 1
        assert ctl.workers_status()["cumulative"] == 1


# ------------------------------------- (7) malformed frames from a worker
MALFORMED: dict[str, Callable[[_Scene], bytes]] = {
    "unknown-kind": lambda s: peers.frame(200, _frames.TASK_ID.pack(s.held_id)),
    "task-kind-from-worker": lambda s: peers.frame(Kind.TASK, _frames.TASK_ID.pack(s.held_id)),
    "result-3-byte-meta": lambda s: peers.frame(Kind.RESULT, b"\x01\x02\x03"),
    "result-empty-meta": lambda s: peers.frame(Kind.RESULT, b""),
    "result-unknown-task": lambda s: peers.frame(
        Kind.RESULT, _frames.RESULT_HEAD.pack(2**63 + 5, 0, 0, 0.0) + pickle.dumps(None)
    ),
    "result-for-another-worker's-task": lambda s: peers.frame(
        Kind.RESULT,
        _frames.RESULT_HEAD.pack(next(f._task.id for f in s.futures if f is not s.held), 0, 0, 0.0)
        + pickle.dumps(("success", 0, None, None, None, 0.0, None)),
    ),
    "released-unknown-task": lambda s: peers.frame(Kind.RELEASED, _frames.TASK_ID.pack(2**62)),
    "released-short-meta": lambda s: peers.frame(Kind.RELEASED, b"\x07"),
    "auth-again": lambda s: peers.frame(Kind.AUTH, b"{}"),
    "truncated-then-close": lambda s: _frames.HEADER.pack(Kind.RESULT, 0, 0, 100) + b"x" * 10,
}


@pytest.mark.parametrize("variant", sorted(MALFORMED))
def test_malformed_frame_from_a_worker_mid_task_drops_only_that_worker(variant: str) -> None:
    with _scene() as scene:
        scene.fake.sock.sendall(MALFORMED[variant](scene))
        if variant == "truncated-then-close":
            scene.fake.sock.shutdown(socket.SHUT_WR)
        read_until_closed(scene.fake.sock, peers.DROP_SECONDS)
        scene.check()


# ----------------------------------------- (8) malicious task exceptions
_HOOK: dict[str, Any] = {"on": False, "classes": [], "installed": False}


def _find_class_hook(event: str, args: tuple[Any, ...]) -> None:
    if _HOOK["on"] and event == "pickle.find_class":
        _HOOK["classes"].append(args[:2])


def test_malicious_exception_is_reported_as_text_and_never_unpickled(tmp_path: Path) -> None:
    if not _HOOK["installed"]:  # audit hooks cannot be removed: install once, switch on
        sys.addaudithook(_find_class_hook)
        _HOOK["installed"] = True
    canary = tmp_path / "canary"
    text = "an evil message <\x00> with \u00e9"
    # the canary works: unpickling this exception creates the file
    pickle.loads(pickle.dumps(tasks.EvilError(str(canary), text)))
    assert canary.exists()
    canary.unlink()
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        first = _ok(ctl.push(tasks.pid))
        pid = first.result
        future = ctl.push(tasks.raise_evil, str(canary), text)
        _HOOK["on"], _HOOK["classes"] = True, []
        try:
            record = future.record(timeout=30)
            records = ctl.collect()
        finally:
            _HOOK["on"] = False
        assert records == []  # both were handed over through their futures
        assert record.status is pycrew.Status.ERROR
        assert record.error == f"EvilError: {text}"
        assert record.trace is not None
        assert "EvilError" in record.trace
        assert record.pid == pid
        assert not canary.exists()
        assert not any("Evil" in str(name) or name == "open" for _, name in _HOOK["classes"])
        assert _ok(ctl.push(tasks.add, 1, 1), 2).pid == pid
    assert not canary.exists()


@pytest.mark.parametrize("raises", tasks.RAISES)
def test_exception_whose_str_raises_is_an_error_and_the_worker_survives(raises: str) -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = _ok(ctl.push(tasks.pid)).result
        record = ctl.push(tasks.raise_bad_str, raises).record(timeout=30)
        assert record.status is pycrew.Status.ERROR, record.error
        assert record.pid == pid
        # reported by its class, as a task failure (not as a task that could not load)
        assert record.error is not None
        assert record.error.startswith("BadStrError"), record.error
        assert "could not load" not in record.error
        assert record.trace is not None
        assert "BadStrError" in record.trace
        # the same process runs the next tasks
        assert _ok(ctl.push(tasks.add, 1, 1), 2).pid == pid
        assert _ok(ctl.push(tasks.pid), pid).pid == pid
        assert ctl.workers_status()["cumulative"] == 1


@pytest.mark.parametrize("raises", tasks.RAISES)
def test_warning_whose_str_fails_later_keeps_the_result_and_the_worker(raises: str) -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = _ok(ctl.push(tasks.pid)).result
        record = _ok(ctl.push(tasks.warn_flaky, raises, 41), 41)
        assert record.pid == pid
        assert _ok(ctl.push(tasks.add, 1, 1), 2).pid == pid
        assert ctl.workers_status()["cumulative"] == 1


@pytest.mark.parametrize("raises", tasks.RAISES)
def test_unpicklable_result_is_an_error_and_the_worker_survives(raises: str) -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = _ok(ctl.push(tasks.pid)).result
        record = ctl.push(tasks.return_unpicklable, raises).record(timeout=30)
        assert record.status is pycrew.Status.ERROR, record.error
        assert record.error is not None
        assert "could not be pickled" in record.error
        assert "pickling refused" in record.error
        assert record.pid == pid
        assert _ok(ctl.push(tasks.add, 1, 1), 2).pid == pid
        assert ctl.workers_status()["cumulative"] == 1
