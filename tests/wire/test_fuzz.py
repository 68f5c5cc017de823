"""Fuzzing the wire: the frame decoder, and a live controller before authentication."""

from __future__ import annotations

import socket
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pycrew
import pycrew._dispatcher._handshake
from pycrew import ProtocolError
from pycrew._wire import _frames
from pycrew._wire._frames import HEADER, LENGTH, PREAUTH_MAX, Kind
from tests.helpers import peers, tasks
from tests.helpers.common import address, read_until_closed, wait_until

if TYPE_CHECKING:
    from collections.abc import Sequence

Frame = tuple[int, bytes, list[bytes]]


def _feed(decoder: _frames.Decoder, data: bytes, cuts: Sequence[int], direct: bool) -> None:
    """Feed ``data`` in chunks of the sizes in ``cuts``, cycled (after 300 chunks, the rest).

    With ``direct``, a chunk goes straight into the buffer being filled whenever
    the decoder offers one, as the dispatcher's ``recv_into`` does.
    """
    pos, i = 0, 0
    while pos < len(data):
        size = cuts[i % len(cuts)] if cuts and i < 300 else len(data)
        chunk = data[pos : pos + size]
        pos += len(chunk)
        i += 1
        target = decoder.direct_target() if direct else None
        if target is not None:
            with target:
                n = min(len(target), len(chunk))
                target[:n] = chunk[:n]
            decoder.filled_directly(n)
            chunk = chunk[n:]
        if chunk:
            decoder.feed(chunk)


def _encode(frames: Sequence[Frame]) -> bytes:
    return b"".join(
        bytes(piece)
        for kind, meta, bufs in frames
        for piece in _frames.encode(kind, meta, [memoryview(b) for b in bufs])
    )


def _decoded(decoder: _frames.Decoder) -> list[Frame]:
    return [(kind, meta, [bytes(b) for b in bufs]) for kind, meta, bufs in decoder.frames]


# ---------------------------------------------- (a) garbage in, only ProtocolError
@st.composite
def _framelike(draw: st.DrawFn) -> bytes:
    """Bytes shaped like frames: plausible or absurd headers, lengths and bodies."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        nbuf = draw(st.integers(0, 3) | st.integers(0, 0xFFFF))
        lens = draw(
            st.lists(
                st.integers(0, 3000) | st.integers(0, 2**64 - 1),
                min_size=min(nbuf, 4),
                max_size=min(nbuf, 4),
            )
        )
        body = draw(st.binary(max_size=3000))
        meta_len = draw(st.just(len(body)) | st.integers(0, 3000) | st.integers(0, 2**32 - 1))
        head = HEADER.pack(draw(st.integers(0, 255)), draw(st.integers(0, 255)), nbuf, meta_len)
        parts.append(head + b"".join(LENGTH.pack(n) for n in lens) + body)
    parts.append(draw(st.binary(max_size=64)))
    return b"".join(parts)


@settings(max_examples=400, deadline=None, database=None)
@given(
    data=st.binary(max_size=2000) | _framelike(),
    cuts=st.lists(st.integers(1, 5000), max_size=20),
    limit=st.sampled_from([0, 9, 100, PREAUTH_MAX, 1 << 16, 4 << 20]),
    allow_buffers=st.booleans(),
    direct=st.booleans(),
)
def test_decoder_raises_only_protocol_error_on_garbage(
    data: bytes, cuts: list[int], limit: int, allow_buffers: bool, direct: bool
) -> None:
    decoder = _frames.Decoder(limit, allow_buffers)
    try:
        _feed(decoder, data, cuts, direct)
    except ProtocolError:
        return
    # accepted frames obey the limits; so does what is held for a frame still arriving
    for _kind, meta, bufs in decoder.frames:
        assert len(meta) + sum(len(b) for b in bufs) <= limit
        assert allow_buffers or not bufs
    assert sum(len(b) for b in decoder._bufs) <= limit


@pytest.mark.parametrize(
    "lens",
    [[1 << 40], [(1 << 63) - 1], [1 << 63], [2**64 - 1], [8 << 30], [3 << 30, 3 << 30]],
    ids=["2^40", "2^63-1", "2^63", "2^64-1", "8GiB", "two-3GiB"],
)
@pytest.mark.parametrize("limit", [PREAUTH_MAX, 4 << 30])
def test_decoder_refuses_a_huge_frame_from_its_header_alone(lens: list[int], limit: int) -> None:
    decoder = _frames.Decoder(limit, True)
    head = HEADER.pack(Kind.RESULT, 0, len(lens), 9) + b"".join(LENGTH.pack(n) for n in lens)
    # 2^63 alone is the bit of a buffer in shared memory, which this peer did not agree to
    with pytest.raises(ProtocolError, match=r"exceeds the limit|did not agree"):
        decoder.feed(head)  # refused before the meta even arrives, and before any allocation
    assert decoder._bufs == []


# --------------------------------------------------------- (b) round trips
def _buffer(size: int, seed: int) -> bytes:
    pattern = bytes((seed + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


_BUFFERS = st.binary(max_size=200) | st.builds(
    _buffer,
    st.sampled_from(
        [0, 1, _frames.OOB_MIN - 1, _frames.OOB_MIN + 1, _frames.LARGE, _frames.LARGE + 3]
    ),
    st.integers(0, 250),
)
_FRAMES = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=300), st.lists(_BUFFERS, max_size=3)),
    max_size=5,
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    frames=_FRAMES,
    cuts=st.lists(st.integers(1, 70_000), max_size=20),
    direct=st.booleans(),
)
def test_encoded_frames_decode_to_the_same_frames_in_any_chunking(
    frames: list[Frame], cuts: list[int], direct: bool
) -> None:
    data = _encode(frames)
    decoder = _frames.Decoder(1 << 30, True)
    _feed(decoder, data, cuts, direct)
    assert _decoded(decoder) == frames
    assert not decoder.buf
    assert decoder.direct_target() is None


@settings(max_examples=100, deadline=None, database=None)
@given(frame=_FRAMES.filter(bool).map(lambda fs: fs[0]), cuts=st.lists(st.integers(1, 9)))
def test_a_frame_of_exactly_the_limit_passes_and_one_byte_more_does_not(
    frame: Frame, cuts: list[int]
) -> None:
    _kind, meta, bufs = frame
    size = len(meta) + sum(len(b) for b in bufs)
    data = _encode([frame])
    exact = _frames.Decoder(size, True)
    _feed(exact, data, cuts, False)
    assert _decoded(exact) == [frame]
    if size == 0:
        return
    smaller = _frames.Decoder(size - 1, True)
    with pytest.raises(ProtocolError):
        _feed(smaller, data, cuts, False)


@settings(max_examples=100, deadline=None, database=None)
@given(
    metas=st.lists(st.binary(max_size=PREAUTH_MAX), max_size=4),
    cuts=st.lists(st.integers(1, 700), max_size=10),
)
def test_handshake_frames_round_trip_under_the_preauth_limits(
    metas: list[bytes], cuts: list[int]
) -> None:
    frames: list[Frame] = [(Kind.AUTH, meta, []) for meta in metas]
    decoder = _frames.Decoder(PREAUTH_MAX, False)
    _feed(decoder, _encode(frames), cuts, False)
    assert _decoded(decoder) == frames


# ------------------------------------ (c) a live controller, before authentication
@st.composite
def _mutations(draw: st.DrawFn) -> list[tuple[str, float, int]]:
    ops = st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"])
    step = st.tuples(ops, st.floats(0, 1, exclude_max=True), st.integers(0, 255))
    return draw(st.lists(step, max_size=4))


def _mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    out = bytearray(data)
    for op, where, value in mutations:
        if not out:
            break
        i = int(where * len(out))
        if op == "flip":
            out[i] ^= 1 << (value % 8)
        elif op == "set":
            out[i] = value
        elif op == "insert":
            out[i:i] = bytes([value]) * (1 + value % 5)
        elif op == "delete":
            del out[i : i + 1 + value % 5]
        elif op == "truncate":
            del out[i:]
        else:
            out += out[i:]
    return bytes(out)


_AUDIT: dict[str, Any] = {"on": False, "seen": [], "installed": False}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["on"] and event == "pickle.find_class":
        _AUDIT["seen"].append(args[:2])


def test_live_controller_survives_fuzzed_handshakes(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _AUDIT["installed"]:  # audit hooks cannot be removed: install once, switch on
        sys.addaudithook(_audit)
        _AUDIT["installed"] = True
    handshake = 0.3
    monkeypatch.setattr(pycrew._dispatcher._handshake, "HANDSHAKE_SECONDS", handshake)
    replies: list[list[int]] = []
    killers: list[bytes] = []
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = ctl.push(tasks.pid).record(timeout=30).result
        assert isinstance(pid, int)
        disp = ctl._dispatcher
        assert disp is not None

        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        # found by this fuzzer: each of these killed the dispatcher thread
        @example(garbage=None, mutations=[], hang_up=False, changes={"mac": "\u00e9"})
        @example(
            garbage=peers.frame(Kind.AUTH, b"[" * 2000 + b"]" * 2000),
            mutations=[],
            hang_up=False,
            changes={},
        )
        @given(
            garbage=st.none() | st.binary(max_size=600),
            mutations=_mutations(),
            hang_up=st.booleans(),
            changes=st.dictionaries(
                st.sampled_from(["nonce", "mac", "id", "protocol", "pycrew", "python", "pid"]),
                st.none() | st.integers() | st.text(max_size=40) | st.lists(st.integers()),
                max_size=2,
            ),
        )
        def attack(
            garbage: bytes | None,
            mutations: list[tuple[str, float, int]],
            hang_up: bool,
            changes: dict[str, Any],
        ) -> None:
            assert not killers, "the dispatcher thread died"
            with socket.create_connection(address(ctl), timeout=5) as sock:
                hello = peers.read_hello(sock)
                if garbage is None:
                    # a mutated AUTH; made with a wrong secret, so no mutation can pass
                    payload = _mutate(peers.auth(hello, peers.WRONG_SECRET, **changes), mutations)
                else:
                    payload = garbage
                started = time.monotonic()
                sock.sendall(payload)
                if hang_up:
                    sock.shutdown(socket.SHUT_WR)
                reply = read_until_closed(sock, handshake + 4)
                # at once, or at the handshake deadline for a message that never ends
                assert time.monotonic() - started < handshake + 3
            if disp.failure is not None:
                killers.append(payload)
            assert not killers, "the dispatcher thread died"
            kinds = [kind for kind, _, _ in peers.frames(reply)]
            assert kinds in ([], [Kind.REJECT]), kinds
            replies.append(kinds)

        _AUDIT["on"], _AUDIT["seen"] = True, []
        try:
            attack()
        except Exception as exc:
            if killers:  # every example fails once it is dead: say which one killed it
                raise AssertionError(
                    f"the dispatcher thread died of {disp.failure!r} after {killers[0]!r}"
                ) from exc
            raise
        finally:
            _AUDIT["on"] = False
        assert _AUDIT["seen"] == []  # nothing was unpickled
        assert [Kind.REJECT] in replies  # some attempts got as far as a verdict
        # the controller still serves the same worker
        wait_until(lambda: ctl.workers_status()["connected"] == 1, 5, "the worker")
        after = ctl.push(tasks.add, 2, 3).record(timeout=30)
        assert after.status is pycrew.Status.SUCCESS
        assert (after.result, after.pid) == (5, pid)
        status = ctl.workers_status()
        assert (status["connected"], status["cumulative"]) == (1, 1)
