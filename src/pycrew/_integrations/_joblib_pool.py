"""The joblib backend's shared controllers, and its one thread.

```
 Parallel call (any thread)            the pool (one per process, under _LOCK)
 configure(n_jobs) ─► acquire(key, n) ─► the entry of key: reused (grown in place to n),
                                         re-made smaller when idle, or made now
 batches ─► entry.controller (owned tasks: calls on other threads share it safely)
 terminate() ─► release(entry) ─► last user: idle from now on
 thread "pycrew-joblib" (the courier): runs what post() queues (joblib's callbacks,
   for every call), and terminates a controller idle for its seconds_idle
 end_shared_controllers() / interpreter exit ─► every entry ended, the thread joined
```

The key is what the controller is made from: the launcher, the controller
options given to ``parallel_config`` and the ``Parallel`` call's
``initializer``/``initargs``. Blocks with different options get controllers
of their own; nothing is shared between processes, and nothing outlives
this one. One long-lived thread serves every call, so a call starts no
thread of its own (starting two threads per call cost more than a short
call's batches on a busy machine).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._controller._controller import Controller

#: the name of the backend's one thread
THREAD_NAME = "pycrew-joblib"


class Entry:
    """One shared controller, the key it was made for, and who uses it now."""

    def __init__(self, key: tuple[Any, ...], controller: Controller, size: int | None) -> None:
        self.key = key
        self.controller = controller
        #: the workers it was sized to (None: fixed by the workers= option)
        self.size = size
        self.users = 0
        #: when it ends if no call takes it before (monotonic), while idle
        self.deadline: float | None = None


_LOCK = threading.Lock()
_ENTRIES: list[Entry] = []


def acquire(
    key: tuple[Any, ...], make: Callable[[int | None], Controller], n_jobs: int | None
) -> Entry:
    """The shared controller for ``key``, sized for ``n_jobs`` workers, now in use.

    ``n_jobs`` is ``None`` when the options fix ``workers``. A controller
    sized smaller is grown in place (its warm workers stay); one sized
    larger and in use by no other call is ended and made again at the new
    size, so that ``n_jobs`` still bounds how many workers run.
    """
    stale: Controller | None = None
    with _LOCK:
        entry = next((e for e in _ENTRIES if _same(e.key, key)), None)
        if entry is not None and _broken(entry.controller):
            # a set-up step (the initializer) failed on a worker: it takes no more
            # tasks, so a fresh one serves the calls from now on
            _ENTRIES.remove(entry)
            stale = entry.controller if entry.users == 0 else None  # else: at release
            entry = None
        if entry is not None and n_jobs is not None and entry.size is not None:
            if n_jobs > entry.size:
                _grow(entry.controller, n_jobs)
                entry.size = n_jobs
            elif n_jobs < entry.size and entry.users == 0:
                _ENTRIES.remove(entry)
                stale, entry = entry.controller, None
        if entry is None:
            entry = Entry(key, make(n_jobs), n_jobs)
            _ENTRIES.append(entry)
        entry.users += 1
        entry.deadline = None
    if stale is not None:
        stale.terminate()
    return entry


def release(entry: Entry) -> None:
    """A call is done with ``entry``: the last one starts its idle time."""
    with _LOCK:
        entry.users -= 1
        if entry.users > 0:
            return
        dropped = entry not in _ENTRIES  # replaced, or ended by end_shared_controllers()
        seconds = entry.controller.seconds_idle
        if not dropped and math.isfinite(seconds):
            entry.deadline = time.monotonic() + seconds
    if dropped:
        entry.controller.terminate()  # safe to repeat
    elif math.isfinite(seconds):
        post(_nothing)  # the courier's wait now ends at this deadline at the latest
    # else: it ends at interpreter exit, or by end_shared_controllers()


def end_shared_controllers() -> None:
    """Terminate every shared controller of the joblib backend now, and end its thread.

    A ``Parallel`` call running on one meanwhile sees its batches cancelled.
    Runs at interpreter exit by itself; a test suite that checks for
    leftover workers and threads calls it after each test.
    """
    global _COURIER
    with _LOCK:
        entries = list(_ENTRIES)
        _ENTRIES.clear()
    for entry in entries:
        with contextlib.suppress(Exception):
            entry.controller.terminate()
    # last: terminating cancels batches, whose callbacks may still be posted
    with _LOCK:
        courier, _COURIER = _COURIER, None
    if courier is not None:
        courier.stop()


def shared_controllers() -> list[Controller]:
    """The shared controllers alive now (for tests and diagnosis)."""
    with _LOCK:
        return [e.controller for e in _ENTRIES]


atexit.register(end_shared_controllers)


# ------------------------------------------------------------------ the thread
def post(item: Callable[[], object]) -> None:
    """Run ``item()`` on the backend's thread, after what was posted before it."""
    global _COURIER
    with _LOCK:
        if _COURIER is None:
            _COURIER = _Courier()
        courier = _COURIER
    courier.queue.put(item)


def on_courier() -> bool:
    """Whether this is the backend's thread."""
    courier = _COURIER
    return courier is not None and threading.current_thread() is courier.thread


class _Courier:
    """The backend's one thread: posted items in order, and idle controllers' ends."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=_until_deadline())
            except queue.Empty:
                item = _nothing
            if item is None:
                return
            try:
                item()
            except BaseException as exc:  # nothing here could re-raise it
                report(exc)
            _end_expired()


def _nothing() -> None:
    return None


def _until_deadline() -> float | None:
    """Seconds until the next idle controller is due to end (None: none is idle)."""
    with _LOCK:
        deadlines = [e.deadline for e in _ENTRIES if e.deadline is not None]
    return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None


def _end_expired() -> None:
    """Terminate the shared controllers idle past their deadline (on the courier)."""
    now = time.monotonic()
    with _LOCK:
        due = [e for e in _ENTRIES if e.users == 0 and e.deadline is not None and e.deadline <= now]
        for entry in due:
            _ENTRIES.remove(entry)
    for entry in due:
        with contextlib.suppress(Exception):
            entry.controller.terminate()


def report(exc: BaseException) -> None:
    """An error no caller can receive: shown as Python shows errors in threads."""
    hook = threading.excepthook
    hook(threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, threading.current_thread())))


_COURIER: _Courier | None = None


def _broken(controller: Controller) -> bool:
    """A started controller that takes no more tasks (a worker's set-up step failed)."""
    dispatcher = getattr(controller, "_dispatcher", None)
    return dispatcher is not None and (
        getattr(dispatcher, "broken", None) is not None
        or getattr(dispatcher, "failure", None) is not None
    )


def _grow(controller: Controller, workers: int) -> None:
    """Let a controller, running or not, keep ``workers`` workers from now on.

    ``workers`` is read at ``start()``; a started controller's autoscaler
    holds its own copy, which is the cap its next scaling round applies.
    """
    controller.workers = workers
    autoscaler = getattr(controller, "_autoscaler", None)
    if autoscaler is not None:
        autoscaler.workers = workers


def _same(a: Any, b: Any) -> bool:
    """Keys match: the same objects, or equal values (anything that cannot say is unequal)."""
    if a is b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False
