"""Task functions importable by workers (tests/ is on the workers' path)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


def add(x: int, y: int) -> int:
    return x + y


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail(message: str) -> None:
    raise ValueError(message)


def warn_and_fail(message: str) -> None:
    warnings.warn("this is a warning", UserWarning, stacklevel=1)
    raise RuntimeError(message)


def warn_then(value: int) -> int:
    warnings.warn(f"warning {value}", UserWarning, stacklevel=1)
    return value


def draw() -> float:
    return random.random()


def suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def nap_or_die(i: int, seconds: float, die: bool) -> int:
    """Sleep ``seconds`` and return ``i``, or end this worker at once if ``die``."""
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds)
    return i


def env(name: str) -> str | None:
    return os.environ.get(name)


def set_global(name: str, value: int) -> bool:
    import __main__

    setattr(__main__, name, value)
    return True


def has_global(name: str) -> bool:
    import __main__

    return hasattr(__main__, name)


def mark_then_sleep(path: str, seconds: float) -> float:
    """Leave a file behind, so a test knows the task really runs, then sleep."""
    open(path, "w").close()
    time.sleep(seconds)
    return seconds


def rendezvous(directory: str, count: int, seconds: float) -> bool:
    """Check in, then wait (up to ``seconds``) until ``count`` tasks have: whether they all
    ran at the same time."""
    open(os.path.join(directory, str(os.getpid())), "w").close()
    deadline = time.monotonic() + seconds
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def mark_then_spin(path: str) -> int:
    """Leave a file behind, then hold the GIL in C code for a very long time."""
    open(path, "w").close()
    return sum(range(10**13))


def nbytes(data: bytes) -> int:
    return len(data)


def blob(n: int) -> bytes:
    """A result of ``n`` bytes."""
    return b"\x01" * n


class EvilError(Exception):
    """An exception that would run code wherever it is unpickled: it creates ``path``."""

    def __init__(self, path: str, text: str) -> None:
        super().__init__(path, text)
        self.path = path
        self.text = text

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))

    def __str__(self) -> str:
        return self.text


def raise_evil(path: str, text: str) -> None:
    raise EvilError(path, text)


#: what the hostile objects below raise, by name
RAISES: dict[str, type[BaseException]] = {
    "RuntimeError": RuntimeError,
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
}


class BadStrError(Exception):
    """An exception whose text cannot be had: ``str()`` and ``repr()`` raise ``raises``."""

    def __init__(self, raises: str) -> None:
        super().__init__(raises)
        self.raises = raises

    def __str__(self) -> str:
        raise RAISES[self.raises]("str() refused")

    def __repr__(self) -> str:
        raise RAISES[self.raises]("repr() refused")


def raise_bad_str(raises: str = "RuntimeError") -> None:
    raise BadStrError(raises)


class FlakyWarning(UserWarning):
    """A warning whose ``str()`` works once (for ``warnings.warn``), then raises."""

    def __init__(self, raises: str) -> None:
        super().__init__(raises)
        self.raises = raises
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        if self.calls > 1:
            raise RAISES[self.raises]("str() refused")
        return "a flaky warning"


def warn_flaky(raises: str, value: int) -> int:
    warnings.warn(FlakyWarning(raises), stacklevel=1)
    return value


class Unpicklable:
    """A value whose pickling raises ``raises``."""

    def __init__(self, raises: str) -> None:
        self.raises = raises

    def __reduce__(self) -> tuple[object, ...]:
        raise RAISES[self.raises]("pickling refused")


def return_unpicklable(raises: str) -> Unpicklable:
    return Unpicklable(raises)


def crash_once(path: str) -> str:
    """Kill the worker the first time (leaving a marker), succeed after."""
    if not os.path.exists(path):
        with open(path, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def crash_unless(controller: str) -> str:
    """Kill the worker unless it belongs to ``controller``."""
    if os.environ.get("PYCREW_CONTROLLER") != controller:
        os.kill(os.getpid(), signal.SIGKILL)
    return controller


# ---------------------------------------------------------------- futures
class DomainError(ValueError):
    """A task's own exception type, importable on both sides."""


def raise_domain(message: str) -> None:
    raise DomainError(message)


class NeedsTwo(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ wants two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}-{b}")


def raise_needs_two() -> None:
    raise NeedsTwo("a", "b")


#: set in the controller's process: rebuilding a Slow result signals it
REBUILDING: list[object] = []


@contextlib.contextmanager
def rebuilds_seen() -> Iterator[threading.Event]:
    """An event set once a ``Slow`` result is rebuilt in this process, while the block runs."""
    event = threading.Event()
    REBUILDING.append(event)
    try:
        yield event
    finally:
        REBUILDING.clear()


def _rebuild_slow(seconds: float) -> str:
    for event in REBUILDING:
        event.set()  # type: ignore[attr-defined]
    time.sleep(seconds)
    return "slow"


class Slow:
    """A result that takes a while to unpickle on the controller."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_slow, (self.seconds,))


def make_slow(seconds: float) -> Slow:
    return Slow(seconds)


class BadState:
    """A result whose rebuilding on the controller raises a BaseException."""

    def __init__(self) -> None:
        self.state = 1  # a state to set: unpickling calls __setstate__ with it

    def __setstate__(self, state: object) -> None:
        raise SystemExit("no state for you")


def make_bad_state() -> BadState:
    return BadState()


def raise_domain_after(seconds: float, message: str) -> None:
    time.sleep(seconds)
    raise DomainError(message)


# --------------------------------------------------------------- hygiene
def fork_sleeper(seconds: float) -> int:
    """Leave a forked child behind (as a naive multiprocessing task would); its pid."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(seconds,))
    child.start()
    return child.pid or 0


def raise_long(size: int) -> None:
    raise ValueError("x" * size)


def note_run(path: str, name: str, seconds: float) -> str:
    """Append this run's name to a file (one line per run), then sleep."""
    with open(path, "a") as out:
        out.write(name + "\n")
    time.sleep(seconds)
    return name


def change_process(directory: str) -> bool:
    """Leave the worker in another directory, with another variable and import path."""
    import sys

    os.chdir(directory)
    os.environ["PYCREW_TEST_LEFT"] = "1"
    sys.path.append(directory)
    return True


def process_state(directory: str) -> tuple[str, str | None, bool]:
    import sys

    return os.getcwd(), os.environ.get("PYCREW_TEST_LEFT"), directory in sys.path


def chatter(megabytes: int) -> int:
    """Print this many MiB, a line at a time, as a runaway task would."""
    line = "y" * 1023
    for _ in range(megabytes * 1024):
        print(line)
    return megabytes


def hold_gil(seconds: int) -> int:
    """Sleep in C with the GIL held (libc's sleep through ctypes.PyDLL), as a stuck extension."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)
    return seconds


def fork_then_hold_gil(seconds: int) -> None:
    """Leave a forked child behind, then sit in C with the GIL held."""
    fork_sleeper(seconds)
    hold_gil(seconds)


def big_buffer(n: int) -> object:
    """A result of ``n`` bytes that travels out of band (a numpy array's buffer)."""
    import numpy

    return numpy.ones(n, dtype=numpy.uint8)


def spin(seconds: float) -> float:
    """Busy in Python (the GIL changes hands every few milliseconds)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


def deaf_hold_gil(seconds: int) -> int:
    """Ignore SIGTERM, then sit in C with the GIL held."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return hold_gil(seconds)


def flaky(path: str, failures: int, kind: str = "OSError") -> float:
    """Raise ``kind`` the first ``failures`` times (counted in a file), then draw a number."""
    with open(path, "a+") as count:
        count.seek(0)
        runs = len(count.read())
        count.write(".")
    if runs < failures:
        raise {"OSError": OSError, "ValueError": ValueError}[kind](f"run {runs + 1} failed")
    return random.random()


def get_global(name: str) -> tuple[int, object]:
    """This worker's pid and the value of ``__main__.<name>`` (None when unset)."""
    import __main__

    return os.getpid(), getattr(__main__, name, None)


def append_pid(path: str) -> None:
    """A setup step that leaves a line per run: the worker's pid."""
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")


def shared_facts(obj: object) -> tuple[int, int, int]:
    """What a task sees of a shared object: its worker, its identity, and its size."""
    import numpy

    assert isinstance(obj, numpy.ndarray)
    return os.getpid(), id(obj), int(obj.sum())


def shared_keys() -> list[int]:
    """The shared objects this worker holds."""
    from pycrew._worker import _setup

    return sorted(_setup.SHARED)


def crash_once_then(path: str, value: object) -> object:
    """Kill the worker the first time (leaving ``path``), then return ``value``."""
    if not os.path.exists(path):
        open(path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def shout(text: str) -> str:
    """Print to stdout and stderr, one line in pieces, and return ``text``."""
    import sys

    print(f"out: {text}")
    print(f"err: {text}", file=sys.stderr)
    sys.stdout.write("in ")
    sys.stdout.write("pieces\n")
    return text


class Point:
    """A type with a serializer of its own in the tests: ``via`` says how it travelled."""

    def __init__(self, x: float, y: float, via: str = "made") -> None:
        self.x = x
        self.y = y
        self.via = via


def point_dumps(point: Point) -> bytes:
    return f"{point.x},{point.y}".encode()


def point_loads(data: object) -> Point:
    x, y = bytes(data).decode().split(",")  # type: ignore[call-overload]
    return Point(float(x), float(y), via="serializer")


def move(points: dict[str, list[Point]], dx: float) -> tuple[list[str], list[Point]]:
    """How each point arrived, and the points moved (to travel back the same way)."""
    seen = [p.via for ps in points.values() for p in ps]
    return seen, [Point(p.x + dx, p.y, via="worker") for ps in points.values() for p in ps]


def pid_after(seconds: float) -> int:
    """Sleep, then the worker's pid."""
    time.sleep(seconds)
    return os.getpid()


def hold(payload: bytes, path: str) -> int:
    """Leave a file behind, then hold on to ``payload`` until cancelled."""
    open(path, "w").close()
    time.sleep(600)
    return len(payload)


class Interrupting:
    """A result whose unpickling on the controller raises KeyboardInterrupt, every time."""

    def __init__(self) -> None:
        self.state = 1  # a state to set: unpickling calls __setstate__ with it

    def __setstate__(self, state: object) -> None:
        raise KeyboardInterrupt("the result itself interrupts")


def make_interrupting() -> Interrupting:
    return Interrupting()


class InterruptingError(Exception):
    """A task's exception whose rebuilding on the controller raises KeyboardInterrupt."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_interrupt, ())


def _interrupt() -> None:
    raise KeyboardInterrupt("the exception itself interrupts")


def raise_interrupting() -> None:
    raise InterruptingError("never rebuilt")


def interrupting_if(flag: bool) -> object:
    """An Interrupting result if ``flag``, else ``flag`` itself."""
    return Interrupting() if flag else flag


# ------------------------------------------------------------- task graphs
def echo(value: object) -> object:
    return value


def gather(*args: object, **kwargs: object) -> list[object]:
    """Its inputs as they arrived: ``[args, kwargs]``."""
    return [list(args), kwargs]


def total(values: list[int]) -> int:
    return sum(values)


def slow_add(x: int, y: int, seconds: float) -> int:
    time.sleep(seconds)
    return x + y


def array_mb(mb: int) -> object:
    """A fresh numpy array of ``mb`` megabytes of zeros."""
    import numpy as np

    return np.zeros(mb * (1 << 20) // 8)


def bump(a: Any) -> object:
    """A new array one larger everywhere."""
    return a + 1


def bump_in_place(a: Any) -> float:
    """Change the input itself, then read it: a task must get its own copy."""
    a += 1
    return float(a[0])


def pid_of(_: object) -> int:
    """The worker's pid (the input is only waited for)."""
    return os.getpid()


# ------------------------------------------------------------- memory limits
def hold_memory(mb: int, seconds: float = 120.0) -> int:
    """Take ``mb`` MB, a MB at a time (each zero-filled, so touched), and hold it.

    Small pieces from Python code: a worker's memory thread gets the GIL
    between them, as it would from most tasks. A limited worker ends the
    task long before ``seconds``.
    """
    held = [bytearray(1_000_000) for _ in range(mb)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return len(held)


def hold_memory_and_gil(mb: int) -> int:
    """Take ``mb`` MB, then hold the GIL in C for minutes (a regex that backtracks)."""
    import re

    held = bytearray(mb * 1_000_000)
    re.match(r"(a+)+$", "a" * 34 + "b")  # about 2**34 steps, none of them giving up the GIL
    return len(held)


def worker_threads_and_watchdog() -> tuple[list[str], list[str]]:
    """The names of the worker's threads, and its watchdog's command line."""
    import psutil

    for child in psutil.Process().children():
        command = child.cmdline()
        if any(part.endswith("_watchdog.py") for part in command):
            break
    else:
        command = []
    return [t.name for t in threading.enumerate()], command


def hold_memory_in_child(mb: int, path: str) -> int:
    """Start a child process that writes its pid to ``path``, then takes ``mb`` MB; wait."""
    import subprocess
    import sys

    # the pid first: the child goes over a limit only after it is written
    code = (
        "import os, sys, time\n"
        "with open(sys.argv[1], 'w') as out: out.write(str(os.getpid()))\n"
        f"held = bytearray({mb} * 1_000_000)\n"
        "time.sleep(120)\n"
    )
    return subprocess.run([sys.executable, "-c", code, path], check=False, timeout=120).returncode


# ------------------------------------------------------------- shared memory
def segment_maps() -> list[tuple[int, int]]:
    """The address ranges of this process's maps of pycrew's shared-memory segments."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "memfd:pycrew-shm" in line:
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


def in_segment(a: Any) -> bool:
    """Whether an array's memory is a map of one of pycrew's shared-memory segments."""
    address = a.__array_interface__["data"][0]
    return any(start <= address < end for start, end in segment_maps())


def where_argument_lives(a: Any) -> tuple[bool, bool, float, object]:
    """Whether the argument is a map of a segment, whether it can be written (it is,
    which must stay this task's own), its first value as it came, and a new array."""
    shared, first = in_segment(a), float(a[0])
    a[0] += 1000
    return shared, bool(a.flags.writeable), first, a * 2


def hold_array_until(a: Any, path: str) -> int:
    """Hold the argument (mapped here) until ``path`` exists; its size."""
    open(path + ".started", "w").close()
    deadline = time.monotonic() + 600
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(a.nbytes)
