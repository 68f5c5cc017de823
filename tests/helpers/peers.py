"""A raw peer on the controller's port: frames, the controller's HELLO, an AUTH answer."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from pycrew._wire import _frames
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
