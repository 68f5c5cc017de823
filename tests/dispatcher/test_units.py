"""Pure logic, no processes: throttle, autoscaling policy, wire format, public API."""

from __future__ import annotations

import collections
import inspect
import math
import pickle
import secrets
import threading

import numpy as np
import pytest

import pycrew
from pycrew._dispatcher._autoscale import Autoscaler
from pycrew._dispatcher._task import Resolutions, Task
from pycrew._dispatcher._throttle import Throttle
from pycrew._wire import _frames, _pickling
from pycrew._wire._frames import PREAUTH_MAX, Decoder, Kind


# ------------------------------------------------------------------ Throttle
def test_throttle_first_poll_only_records_then_fires_after_interval() -> None:
    t = Throttle(seconds_max=1.0, seconds_min=0.1, seconds_start=0.5)
    assert t.poll(now=100.0) is False
    assert t.poll(now=100.4) is False
    assert t.poll(now=100.6) is True
    # the clock restarts at the last True
    assert t.poll(now=101.0) is False
    assert t.poll(now=101.2) is True


def test_throttle_poll_uses_the_monotonic_clock_by_default() -> None:
    t = Throttle(seconds_max=3600.0, seconds_min=3600.0)
    assert t.poll() is False
    assert t.poll() is False  # an hour has not passed


def test_throttle_accelerate_clamps_at_min() -> None:
    t = Throttle(seconds_max=25.0, seconds_min=3.0, seconds_start=8.0, base=2.0)
    t.accelerate()
    assert t.seconds_interval == 4.0
    t.accelerate()
    assert t.seconds_interval == 3.0
    t.accelerate()
    assert t.seconds_interval == 3.0


def test_throttle_decelerate_clamps_at_max() -> None:
    t = Throttle(seconds_max=25.0, seconds_min=3.0, seconds_start=10.0, base=2.0)
    t.decelerate()
    assert t.seconds_interval == 20.0
    t.decelerate()
    assert t.seconds_interval == 25.0
    t.decelerate()
    assert t.seconds_interval == 25.0


def test_throttle_reset_restores_start_and_next_poll_fires() -> None:
    t = Throttle(seconds_max=25.0, seconds_min=3.0, seconds_start=10.0)
    assert t.poll(now=0.0) is False
    t.decelerate()
    assert t.poll(now=1.0) is False
    t.reset()
    assert t.seconds_interval == 10.0
    assert t.poll(now=1.0) is True
    assert t.poll(now=2.0) is False


def test_throttle_update_resets_on_activity_and_backs_off_without() -> None:
    t = Throttle(seconds_max=25.0, seconds_min=3.0, seconds_start=5.0)
    t.update(False)
    assert t.seconds_interval == 10.0
    t.update(False)
    assert t.seconds_interval == 20.0
    t.poll(now=0.0)
    t.update(True)
    assert t.seconds_interval == 5.0
    assert t.poll(now=0.0) is True


def test_throttle_default_start_is_min() -> None:
    t = Throttle(seconds_max=2.0, seconds_min=0.5)
    assert t.seconds_interval == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seconds_max": -1.0}, "seconds_max"),
        ({"seconds_max": 0.0}, "seconds_max"),
        ({"seconds_max": math.nan}, "seconds_max"),
        ({"seconds_min": -1.0}, "seconds_min"),
        ({"base": 1.0}, "base"),
        ({"base": 0.5}, "base"),
        ({"seconds_max": 1.0, "seconds_min": 2.0}, "exceed"),
        ({"seconds_max": 1.0, "seconds_min": 0.5, "seconds_start": 2.0}, "seconds_start"),
        ({"seconds_max": 1.0, "seconds_min": 0.5, "seconds_start": 0.1}, "seconds_start"),
    ],
)
def test_throttle_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Throttle(**kwargs)


# --------------------------------------------------------------- Autoscaler
def test_autoscaler_demand_is_capped_at_workers() -> None:
    a = Autoscaler(workers=3, seconds_launch=10.0)
    assert a.to_launch(0) == 0
    assert a.to_launch(2) == 2
    assert a.to_launch(100) == 3


def test_autoscaler_launching_counts_as_supply() -> None:
    a = Autoscaler(workers=3, seconds_launch=10.0)
    a.on_launched(["a", "b"], now=0.0)
    assert a.supply() == 2
    assert a.to_launch(100) == 1
    assert a.to_launch(2) == 0
    assert a.on_connected("a") is True
    assert a.supply() == 2
    assert a.to_launch(100) == 1
    assert a.launched_total == 2
    a.on_disconnected("a")
    assert a.supply() == 1
    assert a.to_launch(100) == 2


def test_autoscaler_expire_counts_late_launches_as_failed() -> None:
    a = Autoscaler(workers=2, seconds_launch=10.0)
    a.on_launched(["a"], now=0.0)
    a.on_launched(["b"], now=5.0)
    assert a.expire(now=9.9) == []
    assert a.failed == 0
    assert a.expire(now=10.0) == ["a"]
    assert a.failed == 1
    assert a.to_launch(100) == 1  # "b" still launching
    assert a.expire(now=15.0) == ["b"]
    assert a.failed == 2
    assert a.launching == {}
    assert a.to_launch(100) == 2
    # an expired worker that connects late is not counted
    assert a.on_connected("a") is False
    assert a.connected == set()


def test_autoscaler_never_expires_with_infinite_launch_time() -> None:
    a = Autoscaler(workers=1, seconds_launch=math.inf)
    a.on_launched(["a"], now=0.0)
    assert a.expire(now=1e12) == []
    assert a.failed == 0
    assert a.supply() == 1


def test_autoscaler_on_died_counts_only_launching_workers() -> None:
    a = Autoscaler(workers=3, seconds_launch=10.0)
    a.on_launched(["a", "b"], now=0.0)
    assert a.on_connected("b") is True
    a.on_died("a")
    assert a.failed == 1
    assert a.supply() == 1
    a.on_died("a")  # twice: counted once
    a.on_died("b")  # connected, not launching
    a.on_died("never-launched")
    assert a.failed == 1
    assert a.connected == {"b"}


def test_autoscaler_unknown_id_connection_is_refused() -> None:
    a = Autoscaler(workers=2, seconds_launch=10.0)
    assert a.on_connected("stranger") is False
    assert a.connected == set()
    assert a.supply() == 0


# --------------------------------------------------------------------- wire
def _frames_bytes() -> tuple[bytes, list[tuple[int, bytes, list[bytes]]]]:
    """Several frames as one byte string, and what decoding must give back."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
    small = b"xy"
    specs: list[tuple[int, bytes, list[bytes]]] = [
        (Kind.HELLO, b'{"a":1}', []),
        (Kind.RESULT, b"meta-with-buffers", [big, small]),
        (Kind.BYE, b"", []),
        (Kind.TASK, bytes(range(256)) * 3, [b""]),
        (Kind.EXIT, b"", []),
    ]
    stream = b""
    for kind, meta, bufs in specs:
        pieces = _frames.encode(kind, meta, [memoryview(b) for b in bufs])
        stream += b"".join(bytes(p) for p in pieces)
    return stream, specs


def _decoded(decoder: Decoder) -> list[tuple[int, bytes, list[bytes]]]:
    return [(kind, meta, [bytes(b) for b in bufs]) for kind, meta, bufs in decoder.frames]


def test_encode_head_layout() -> None:
    pieces = _frames.encode(Kind.RESULT, b"abc", [memoryview(b"12345")])
    head = pieces[0]
    assert _frames.HEADER.unpack_from(head) == (Kind.RESULT, 0, 1, 3)
    assert _frames.LENGTH.unpack_from(head, _frames.HEADER.size) == (5,)
    assert head.endswith(b"abc")
    assert bytes(pieces[1]) == b"12345"


def test_decoder_one_chunk_and_byte_by_byte_agree() -> None:
    stream, expected = _frames_bytes()
    whole = Decoder(1 << 40, allow_buffers=True)
    whole.feed(stream)
    assert _decoded(whole) == expected
    assert not whole.buf

    trickle = Decoder(1 << 40, allow_buffers=True)
    view = memoryview(stream)
    for i in range(len(stream)):
        trickle.feed(view[i : i + 1])
    assert _decoded(trickle) == expected
    assert not trickle.buf


def test_decoder_direct_writes_into_large_buffers() -> None:
    """The dispatcher's path: recv_into the decoder's buffer when it offers one."""
    stream, expected = _frames_bytes()
    decoder = Decoder(1 << 40, allow_buffers=True)
    pos = 0
    direct = 0
    while pos < len(stream):
        target = decoder.direct_target()
        if target is not None:
            n = min(len(target), 70_000, len(stream) - pos)
            target[:n] = stream[pos : pos + n]
            decoder.filled_directly(n)
            direct += n
        else:
            n = min(1000, len(stream) - pos)
            decoder.feed(stream[pos : pos + n])
        pos += n
    assert direct > 0
    assert _decoded(decoder) == expected


def test_preauth_decoder_rejects_oversized_header_before_the_bytes() -> None:
    decoder = Decoder(PREAUTH_MAX, allow_buffers=False)
    head = _frames.HEADER.pack(Kind.AUTH, 0, 0, PREAUTH_MAX + 1)
    with pytest.raises(pycrew.ProtocolError, match="exceeds"):
        decoder.feed(head)  # only the 8-byte header: the meta never has to arrive


def test_preauth_decoder_rejects_huge_header() -> None:
    decoder = Decoder(PREAUTH_MAX, allow_buffers=False)
    with pytest.raises(pycrew.ProtocolError):
        decoder.feed(_frames.HEADER.pack(Kind.AUTH, 0, 0, 0xFFFFFFFF))


def test_preauth_decoder_accepts_exactly_the_limit() -> None:
    decoder = Decoder(PREAUTH_MAX, allow_buffers=False)
    meta = b"x" * PREAUTH_MAX
    decoder.feed(b"".join(bytes(p) for p in _frames.encode(Kind.AUTH, meta)))
    assert [(k, m, list(b)) for k, m, b in decoder.frames] == [(Kind.AUTH, meta, [])]


def test_preauth_decoder_rejects_buffers() -> None:
    decoder = Decoder(PREAUTH_MAX, allow_buffers=False)
    head = _frames.HEADER.pack(Kind.RESULT, 0, 1, 4)
    with pytest.raises(pycrew.ProtocolError, match="buffers"):
        decoder.feed(head)
    # a whole well-formed frame with a buffer is refused too
    decoder = Decoder(PREAUTH_MAX, allow_buffers=False)
    pieces = _frames.encode(Kind.AUTH, b"{}", [memoryview(b"payload")])
    with pytest.raises(pycrew.ProtocolError):
        decoder.feed(b"".join(bytes(p) for p in pieces))
    assert decoder.frames == []


def test_dumps_keeps_large_numpy_array_out_of_band() -> None:
    array = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    assert array.nbytes == 1 << 20
    data, buffers = _pickling.dumps({"x": array})
    assert len(buffers) == 1
    assert buffers[0].nbytes == array.nbytes
    assert len(data) < 1024
    # the receiver hands over bytearrays, as the decoder builds them
    back = _pickling.loads(data, [bytearray(b) for b in buffers])
    np.testing.assert_array_equal(back["x"], array)


def test_dumps_keeps_small_arrays_in_band() -> None:
    array = np.arange(16, dtype=np.int64)
    data, buffers = _pickling.dumps(array)
    assert buffers == []
    np.testing.assert_array_equal(_pickling.loads(data, []), array)


def test_lambda_and_closure_round_trip_through_cloudpickle() -> None:
    data, buffers = _pickling.dumps(lambda x: x + 1)
    assert _pickling.loads(data, buffers)(1) == 2

    offset = 10

    def local(x: int) -> int:
        return x + offset

    data, buffers = _pickling.dumps(local)
    assert _pickling.loads(data, buffers)(5) == 15


def test_mac_accepts_only_the_right_secret_role_and_nonces() -> None:
    secret = secrets.token_bytes(32)
    n1, n2 = secrets.token_bytes(32), secrets.token_bytes(32)
    good = _frames.mac(secret, b"worker", n1, n2)
    assert _frames.check_mac(secret, b"worker", n1, n2, good) is True
    assert _frames.check_mac(secrets.token_bytes(32), b"worker", n1, n2, good) is False
    assert _frames.check_mac(secret, b"controller", n1, n2, good) is False
    assert _frames.check_mac(secret, b"worker", n2, n1, good) is False
    assert _frames.check_mac(secret, b"worker", n1, n2, good.upper()) is False
    assert _frames.check_mac(secret, b"worker", n1, n2, "") is False


@pytest.mark.parametrize("claimed", [None, 123, ["x"], {"mac": "x"}])
def test_check_mac_rejects_non_str(claimed: object) -> None:
    secret = secrets.token_bytes(32)
    assert _frames.check_mac(secret, b"worker", b"a", b"b", claimed) is False


def test_check_mac_rejects_the_right_mac_as_bytes() -> None:
    secret = secrets.token_bytes(32)
    good = _frames.mac(secret, b"worker", b"a", b"b")
    assert _frames.check_mac(secret, b"worker", b"a", b"b", good.encode()) is False


def test_version_problem() -> None:
    ours = _frames.hello_fields()
    assert _frames.version_problem(ours, "worker") is None
    newer = pycrew.__version__ + ".post9"
    assert _frames.version_problem(ours | {"pycrew": newer}, "worker") == (
        f"the worker runs pycrew {newer!r} and the controller {pycrew.__version__!r}"
    )
    other_protocol = _frames.version_problem(
        ours | {"protocol": _frames.PROTOCOL + 1}, "controller"
    )
    assert other_protocol == (
        f"the controller runs wire protocol {_frames.PROTOCOL + 1} "
        f"and the worker {_frames.PROTOCOL}"
    )
    other_python = _frames.version_problem(ours | {"python": "2.7"}, "worker")
    assert other_python is not None
    assert "runs Python '2.7'" in other_python
    assert _frames.version_problem({}, "worker") is not None


@pytest.mark.parametrize("meta", [b"not json", b"\xff\xfe", b"[1, 2]", b'"str"', b"1"])
def test_parse_json_refuses_non_objects(meta: bytes) -> None:
    with pytest.raises(pycrew.ProtocolError):
        _frames.parse_json(meta)


def test_parse_json_never_unpickles() -> None:
    payload = pickle.dumps(collections.OrderedDict(a=1))
    with pytest.raises(pycrew.ProtocolError):
        _frames.parse_json(payload)


# --------------------------------------------------------------- public API
def _isort_key(name: str) -> tuple[int, str]:
    """The project's __all__ order (ruff RUF022): CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_complete() -> None:
    names = pycrew.__all__
    assert list(names) == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(pycrew, name), name


def test_public_classes_live_in_pycrew() -> None:
    classes = [getattr(pycrew, n) for n in pycrew.__all__ if inspect.isclass(getattr(pycrew, n))]
    assert len(classes) >= 10
    for cls in classes:
        assert cls.__module__.startswith("pycrew"), (cls, cls.__module__)


def test_every_error_is_a_crew_error() -> None:
    for name in pycrew.__all__:
        obj = getattr(pycrew, name)
        if inspect.isclass(obj) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, pycrew.CrewError), name
    assert issubclass(pycrew.CrewTimeoutError, TimeoutError)
    assert issubclass(pycrew.CrewWarning, UserWarning)


def test_buffer_pool_reuses_only_buffers_nobody_holds() -> None:
    np = pytest.importorskip("numpy")
    from pycrew._wire._frames import BufferPool

    pool = BufferPool(keep=2)
    small = pool.take(100)
    assert isinstance(small, bytearray)
    size = 2 << 20
    big = pool.take(size)
    view = np.frombuffer(big, dtype=np.uint8)  # a task's array over the buffer
    pool.recycle()
    assert pool.spares == []  # still in use
    again = pool.take(size)
    assert again is not big
    del view
    pool.recycle()
    assert big in pool.spares
    assert pool.take(size) is big
    pool.drop_spares()
    assert pool.spares == []


def test_a_buffer_held_by_name_is_not_reused_and_an_idle_pool_lets_go() -> None:
    from pycrew._wire._frames import BufferPool

    size = 2 << 20
    pool = BufferPool(keep=1, recycle_on_take=True)  # the controller's, for results
    kept = pool.take(size)  # a deserializer that kept the buffer itself, no view of it
    assert pool.take(size) is not kept
    del kept
    reused = pool.take(size)  # the first is free now: taking recycles it first
    assert len(pool.lent) >= 1
    pool.recycle()
    del reused
    pool.recycle()
    assert len(pool.spares) == 1
    pool.expire(pool.last_lent + 5, seconds=10)
    assert pool.spares  # not idle long enough
    pool.expire(pool.last_lent + 11, seconds=10)
    assert (pool.spares, pool.lent) == ([], [])


def test_a_string_naming_main_keeps_the_fast_pickler(monkeypatch: pytest.MonkeyPatch) -> None:
    # a traced task carries its label, "__main__.f" for a script's function:
    # only a real reference to __main__ sends a payload through cloudpickle
    def no_cloudpickle() -> None:
        raise AssertionError("pickled again by value")

    monkeypatch.setattr(_pickling, "_script_pickler", no_cloudpickle)
    payload = ("__main__.f", {"label": "module __main__"})
    data, _ = _pickling.dumps(payload)
    assert data == pickle.dumps(payload, protocol=5)
    assert _pickling.loads(data, []) == payload


def test_a_reference_to_main_travels_by_value() -> None:
    import __main__

    def made_in_main(x: int) -> int:
        return x * 3

    made_in_main.__module__ = "__main__"
    made_in_main.__qualname__ = "made_in_main"
    __main__.made_in_main = made_in_main  # type: ignore[attr-defined]
    try:
        assert _pickling.names_main(pickle.dumps(made_in_main, protocol=5))
        data, buffers = _pickling.dumps(("__main__", made_in_main))
    finally:
        del __main__.made_in_main  # type: ignore[attr-defined]
    # by value: it loads where __main__ has no such function
    label, fn = _pickling.loads(data, buffers)
    assert label == "__main__"
    assert fn(2) == 6


# --------------------------------------------------------------- resolutions
def _live_tasks(res: Resolutions, n: int) -> list[Task]:
    tasks = [Task(i, f"t{i}", None, b"", None, None) for i in range(1, n + 1)]
    for task in tasks:
        res.live[task.id] = task
    return tasks


class _Counting(threading.Condition):
    """A condition that counts how often it was told to wake its waiters."""

    notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_a_wait_for_nothing_live_is_woken_once_not_at_every_resolution() -> None:
    res = Resolutions(None)
    res.cv = counting = _Counting(res.lock)
    tasks = _live_tasks(res, 50)
    for task in tasks[:-1]:
        with res.lock:
            res._resolve(task, None)
    assert counting.notified == 0  # a wait(mode="all") would find tasks live: not woken
    with res.lock, res.each_resolution():  # a wait(mode="one"), map(), a memory cap
        res._resolve(tasks[-1], None)
    assert counting.notified == 1
    # the last live task's end wakes every waiter, eager or not
    res = Resolutions(None)
    res.cv = counting = _Counting(res.lock)
    (last,) = _live_tasks(res, 1)
    with res.lock:
        res._resolve(last, None)
    assert counting.notified == 1


def test_a_wait_inside_each_resolution_hears_the_first_one() -> None:
    res = Resolutions(None)
    first, _ = _live_tasks(res, 2)
    waiting = threading.Event()
    heard: list[int] = []

    def wait_one() -> None:
        with res.cv, res.each_resolution():
            waiting.set()
            while not res.resolved:
                res.cv.wait(60)
            heard.append(len(res.live))

    thread = threading.Thread(target=wait_one)
    thread.start()
    assert waiting.wait(60)
    with res.lock:
        res._resolve(first, None)
    thread.join(60)
    assert not thread.is_alive()
    assert heard == [1]  # woken while a task was still live
    assert res.eager == 0
