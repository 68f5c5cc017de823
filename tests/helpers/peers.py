"""A raw peer on the controller's port: frames, the controller's HELLO, an AUTH answer,
and a fake worker that speaks the protocol step by step."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from pycrew._wire import _frames, _pickling
from pycrew._wire._frames import PREAUTH_MAX, Kind
from tests.helpers.common import address

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pycrew

#: how long a raw peer waits for the controller to answer or hang up
DROP_SECONDS = 5.0
#: a secret no controller has
WRONG_SECRET = secrets.token_bytes(32)


def frame(kind: int, meta: bytes, buffers: list[bytes] | None = None) -> bytes:
    pieces = _frames.encode(kind, meta, [memoryview(b) for b in buffers or []])
    return b"".join(bytes(p) for p in pieces)


def frames(data: bytes) -> list[_frames.Frame]:
    """The pre-authentication frames in ``data`` (all of it must parse)."""
    decoder = _frames.Decoder(PREAUTH_MAX, allow_buffers=False)
    decoder.feed(data)
    assert not decoder.buf, "a partial frame"
    return decoder.frames


def read_hello(sock: socket.socket) -> dict[str, Any]:
    """Read the controller's HELLO, which it sends as soon as it accepts."""
    decoder = _frames.Decoder(PREAUTH_MAX, allow_buffers=False)
    sock.settimeout(DROP_SECONDS)
    while not decoder.frames:
        chunk = sock.recv(4096)
        assert chunk, "the controller closed before saying hello"
        decoder.feed(chunk)
    kind, meta, _ = decoder.frames[0]
    assert (kind, len(decoder.frames)) == (Kind.HELLO, 1)
    return _frames.parse_json(meta)


def auth(hello: dict[str, Any], secret: bytes, **changes: Any) -> bytes:
    """An AUTH message answering ``hello``, its MAC made with ``secret``."""
    nonce_c = bytes.fromhex(hello["nonce"])
    nonce_w = secrets.token_bytes(32)
    message = _frames.hello_fields() | {
        "nonce": nonce_w.hex(),
        "mac": _frames.mac(secret, b"worker", nonce_c, nonce_w),
        "id": "rogue",
        "pid": os.getpid(),
        "host": "rogue-host",
    }
    message.update(changes)
    return frame(Kind.AUTH, _frames.json_meta(message))


@contextlib.contextmanager
def rogue(ctl: pycrew.Controller) -> Iterator[tuple[socket.socket, dict[str, Any]]]:
    """A raw connection to ``ctl`` that has read the HELLO."""
    sock = socket.create_connection(address(ctl), timeout=DROP_SECONDS)
    try:
        yield sock, read_hello(sock)
    finally:
        sock.close()


class FakeWorker:
    """A peer that knows the real secret: a compromised or buggy worker."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = _frames.Decoder(1 << 30, allow_buffers=True)
        #: the controller's WELCOME (JSON), once read
        self.welcome: dict[str, Any] = {}

    def frame(self, seconds: float = DROP_SECONDS) -> _frames.Frame:
        deadline = time.monotonic() + seconds
        while not self.decoder.frames:
            left = deadline - time.monotonic()
            assert left > 0, f"no frame from the controller in {seconds} s"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                raise AssertionError(f"no frame from the controller in {seconds} s") from None
            assert chunk, "the controller closed the connection"
            self.decoder.feed(chunk)
        return self.decoder.frames.pop(0)

    def closed(self, seconds: float = DROP_SECONDS) -> bool:
        """Whether the controller hangs up within ``seconds`` (what it sends is skipped)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(1 << 16):
                    return True
            except TimeoutError:
                break
            except ConnectionResetError:
                return True
        return False

    def next_task(self) -> int:
        """Wait for a TASK frame (skipping others); return its task id."""
        while True:
            kind, meta, _ = self.frame()
            if kind == Kind.TASK:
                task_id: int = _frames.TASK_ID.unpack_from(meta)[0]
                return task_id

    def next_of(self, kind: int, seconds: float = DROP_SECONDS) -> int:
        """Wait for a frame of ``kind`` that names a task (skipping others); its task id."""
        while True:
            got, meta, _ = self.frame(seconds)
            if got == kind:
                task_id: int = _frames.TASK_ID.unpack_from(meta)[0]
                return task_id

    def succeed(self, task_id: int, value: object) -> None:
        """Send the result of a task as a real worker does: a success with ``value``."""
        self.sock.sendall(b"".join(bytes(p) for p in result_pieces(task_id, value)))


def result_pieces(task_id: int, value: object) -> tuple[Any, ...]:
    """A RESULT frame for a success with ``value``, its large buffers out of band."""
    # (status, value, error, trace, warnings, seconds, seed, memory peak, CPU seconds)
    outcome = ("success", value, None, None, None, 0.0, None, None, None)
    body, buffers = _pickling.dumps(outcome)
    return _frames.encode(Kind.RESULT, _frames.RESULT_HEAD.pack(task_id, 0, 0, 0.0) + body, buffers)


@contextlib.contextmanager
def fake_worker(
    ctl: pycrew.Controller, worker_id: str = "fake", **claims: Any
) -> Iterator[FakeWorker]:
    """A fake worker that passed the handshake; ``claims`` go in its AUTH."""
    secret = bytes.fromhex(ctl._env[_frames.SECRET_ENV])
    with rogue(ctl) as (sock, hello):
        sock.sendall(auth(hello, secret, id=worker_id, **claims))
        fake = FakeWorker(sock)
        kind, meta, _ = fake.frame()
        assert kind == Kind.WELCOME
        fake.welcome = _frames.parse_json(meta)
        yield fake
