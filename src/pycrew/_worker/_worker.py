"""The worker process: dial the controller, prove the secret, run tasks one at a time.

```
 controller ──TASK/CANCEL/EXIT──► main thread, between tasks: reads, then evaluate()
     │                            helper thread, while a task runs: reads ──► inbox
     │                              │ CANCEL: interrupt the main thread (SIGUSR1)
     ◄──────────RESULT/BYE──────────┴──────────────────── main thread sends
```

Between tasks the main thread reads the connection itself, so a task that
arrives at an idle worker runs without a hand-off between threads. While a
task runs, a helper thread reads instead, so a lost controller is seen at
once (EOF ends the process) and a cancel reaches a task that sleeps; tasks
it reads wait in the inbox. Writes share one lock: results and BYE leave
from the main thread, RELEASED from whichever thread read the RELEASE.
A planned exit (idle, wall time, task quota) is announced with BYE, so the
controller never mistakes it for a crash.

Exit codes: 0 the controller went away or asked us to stop, 1 idle limit,
2 wall time, 3 task quota, 4 could not connect or authenticate, 5 a setup
step (the initializer, an ``everywhere()`` call) failed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import math
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import types

from .._errors import ProtocolError
from .._operations import _logs
from .._version import __version__
from .._wire import _frames, _pickling, _shm
from .._wire._frames import Kind
from . import _memory, _values, _watchdog
from ._dial import Settings, connect, read_frame, send_pieces
from ._evaluate import (
    CANCEL,
    ERROR,
    Interrupted,
    Interruptible,
    Meter,
    capture_warnings,
    describe,
    evaluate,
    flush_traces,
    trace_of,
)
from ._lending import Lender, drain
from ._setup import drop_shared, keep_shared, run_step

TYPE_CHECKING = False  # typing itself is slow to import, and workers start often
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .._operations._metrics import Sampler
    from ._inflow import Inflow

EXIT_CONNECTION, EXIT_IDLE, EXIT_WALL, EXIT_TASKS, EXIT_STARTUP, EXIT_SETUP = 0, 1, 2, 3, 4, 5
#: the inbox's id for a setup step (task ids start at 1)
SETUP_ID = 0
PARENT_ENV = "PYCREW_PARENT_PID"
#: set by a job script that starts several workers
OWN_GROUP_ENV = "PYCREW_OWN_GROUP"
INTERRUPT_EVERY = 0.2
#: an idle worker frees its spare receive buffers after this long
SPARES_SECONDS = 2.0


def _die_with_parent() -> None:
    """Ask the kernel to kill us if the controller process dies (Linux only)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    # the parent may have died before prctl took effect
    if str(os.getppid()) != parent:
        os._exit(EXIT_CONNECTION)


#: run once at exit, from whichever thread ends the process (the last metrics sample)
_AT_EXIT: list[Callable[[], None]] = []
_EXITING = threading.Lock()


def _hard_exit(code: int) -> None:
    # Two threads may get here at once (the main thread leaving on its idle
    # limit, the reader seeing the controller close the connection on that):
    # the first runs the exit steps and ends the process, the second waits
    # for it, bounded, rather than end the process halfway through them.
    if _EXITING.acquire(timeout=2.0):
        while _AT_EXIT:
            with contextlib.suppress(Exception):
                _AT_EXIT.pop()()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _log(message: str) -> None:
    print(
        f"pycrew worker {os.environ.get(_frames.WORKER_ENV, '?')}: {message}",
        file=sys.stderr,
        flush=True,
    )


class Worker:
    """One connected worker; ``run()`` returns the exit code."""

    def __init__(self, sock: socket.socket, stream: Inflow, settings: Settings) -> None:
        self.sock = sock
        self.stream = stream
        self.settings = settings
        self.pool = _frames.BufferPool()
        #: tasks and setup steps read while a task ran, in the order they came
        self.inbox: collections.deque[_frames.Frame] = collections.deque()
        #: whether the helper thread reads (a task runs); only the main thread sets it
        self.lent = False
        #: held by the helper while it reads a frame and acts on it, and by the
        #: main thread to take reading back: never both read
        self.read_lock = threading.Lock()
        #: wakes the helper once a task has run a little while
        self.lender = Lender()
        #: whether the helper reads now (it woke while lent; read_lock guards it)
        self.helping = False
        #: wakes a helper waiting for the socket once reading was taken back
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)
        self.current = 0
        self.cancelled: set[int] = set()
        # tasks received and not yet started, and those handed back unstarted
        # counted per id: a task handed back may come again while its first
        # copy still waits in the inbox, and each RELEASE frees one copy
        self.pending: collections.Counter[int] = collections.Counter()
        self.released: collections.Counter[int] = collections.Counter()
        #: other tasks' results that tasks received and not yet started take, per copy
        self.inputs: dict[int, collections.deque[tuple[int, list[Any]]]] = {}
        #: results kept here for tasks that take them
        self.kept = _values.Kept()
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.interruptible = Interruptible()
        #: an interrupt came while the task's output was being sent: it is due
        self.deferred = False
        self.main_thread = threading.main_thread().ident
        self.meter = Meter()
        #: samples this process's resources while metrics are on (main() starts it)
        self.sampler: Sampler | None = None
        #: keeps the log files under the launcher's cap, if it set one
        self.logs: _logs.LogCap | None = None
        #: sends what tasks print to the controller, when it asked for that
        self.relay: _logs.Relay | None = None
        #: ends this worker over its memory limit, when it has one
        self.memory: _memory.Guard | None = None
        #: shared memory with the controller (both None unless it is on this machine)
        self.peer = _shm.Peer(settings.shm_pid) if settings.shm_pid else None
        self.segments = _shm.Segments() if settings.shm_pid else None

    # reading ---------------------------------------------------------------
    def read_one(self) -> bool:
        """Read one frame and act on it; False when the controller asked us to stop."""
        kind, meta, bufs = read_frame(
            self.stream, self.settings.bytes_max, True, self.pool.take, self.peer
        )
        if kind == Kind.TASK or kind == Kind.TASK_INPUTS:
            (task_id,) = _frames.TASK_ID.unpack_from(meta)
            with self.lock:
                self.pending[task_id] += 1
                if kind == Kind.TASK_INPUTS:
                    offset, groups, bufs = _frames.split_inputs(meta, bufs)
                    self.inputs.setdefault(task_id, collections.deque()).append((offset, groups))
            self.inbox.append((task_id, meta, bufs))
        elif kind == Kind.KEEP:
            self.kept.want(_frames.TASK_ID.unpack_from(meta)[0])
        elif kind == Kind.FORGET:
            self.kept.forget(_frames.TASK_ID.unpack_from(meta)[0])
        elif kind == Kind.SETUP:
            self.inbox.append((SETUP_ID, meta, bufs))
        elif kind == Kind.SHARE:
            (key,) = _frames.SHARE_KEY.unpack_from(meta)
            keep_shared(key, meta[_frames.SHARE_KEY.size :], bufs)
        elif kind == Kind.UNSHARE:
            drop_shared(_frames.SHARE_KEY.unpack_from(meta)[0])
        elif kind == Kind.RELEASE:
            (task_id,) = _frames.TASK_ID.unpack_from(meta)
            self.release(task_id)
        elif kind == Kind.CANCEL:
            (task_id,) = _frames.TASK_ID.unpack_from(meta)
            self.cancel(task_id)
        elif kind == Kind.SHM_DONE:
            if self.segments is None:
                return False
            self.segments.done(meta)
        elif kind == Kind.EXIT:
            return False
        return True

    def read_while_lent(self) -> None:
        """The helper thread: read while the main thread runs a task."""
        sock_fd = self.sock.fileno()
        woken = select.poll()
        woken.register(self.lender.fd, select.POLLIN)
        reading = select.poll()
        reading.register(sock_fd, select.POLLIN)
        reading.register(self.wake_r, select.POLLIN)
        try:
            while True:
                woken.poll()
                self.lender.clear()
                with self.read_lock:
                    if not self.lent:
                        continue  # the task ended before the timer did
                    self.helping = True
                while True:
                    ready = self.stream.buffered() > 0
                    if not ready:
                        for fd, _ in reading.poll():
                            if fd == sock_fd:
                                ready = True
                            else:
                                drain(self.wake_r)
                    with self.read_lock:
                        if not self.lent:
                            self.helping = False
                            break  # the main thread reads again
                        # the frame is acted on under the lock: the main thread,
                        # reading next, must see what it changed
                        if ready and not self.read_one():
                            _hard_exit(EXIT_CONNECTION)
        except (EOFError, OSError, ValueError, ProtocolError, struct.error):
            pass
        # The controller is gone or asked us to stop: nothing we hold matters now.
        _hard_exit(EXIT_CONNECTION)

    def lend(self) -> None:
        """Let the helper read while a task runs, once it ran a little (main thread)."""
        if self.lent:
            return
        self.lent = True
        self.lender.arm()

    def take_back(self) -> None:
        """Read on the main thread again; waits for a frame the helper is reading."""
        self.lender.disarm()
        with self.read_lock:
            self.lent = False
            helping = self.helping
        if helping:
            with contextlib.suppress(BlockingIOError):
                os.write(self.wake_w, b"\0")  # it waits on the socket: back to sleep

    def read_buffered(self) -> bool:
        """While lent to a helper still asleep, read a frame already here (main thread).

        Tasks sent together run back to back this way, without a timer armed
        and disarmed between them: the helper wakes once the first has run a while.
        """
        with self.read_lock:
            if self.helping or not self.stream.buffered():
                return False
            self.read_or_leave()
        return True

    def read_between(self, timeout: float | None) -> bool:
        """Read one frame on the main thread (no task runs); False if none came in time."""
        if not self.stream.buffered():
            ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
            if not self.poller.poll(ms):
                return False
        self.read_or_leave()
        return True

    def read_or_leave(self) -> None:
        """Read one frame on the main thread; end the process if the controller is gone."""
        try:
            going_on = self.read_one()
        except (EOFError, OSError, ValueError, ProtocolError, struct.error):
            going_on = False
        if not going_on:
            # The controller is gone or asked us to stop: nothing we hold matters now.
            _hard_exit(EXIT_CONNECTION)

    def release(self, task_id: int) -> None:
        """Hand back a task that has not started, for an idle worker to run."""
        with self.lock:
            if self.pending[task_id] <= 0:
                return  # started or finished already: its result will tell
            _take(self.pending, task_id)
            self.released[task_id] += 1
            # sent before the lock is let go: the main thread, which skips a
            # released task under this lock, must not run the next one and send
            # its RESULT ahead of this RELEASED
            self.send(_frames.encode(Kind.RELEASED, _frames.TASK_ID.pack(task_id)))

    def send(self, pieces: Sequence[Any], shared: bool = True) -> None:
        """Send a frame; its large buffers in shared memory unless ``shared`` is False."""
        if shared and len(pieces) > 1 and self.segments is not None:
            pieces = self.segments.share(pieces)
        with self.send_lock:
            send_pieces(self.sock, pieces)

    def cancel(self, task_id: int) -> None:
        with self.lock:
            if self.pending[task_id] <= 0 and task_id != self.current:
                return
            self.cancelled.add(task_id)
            running = self.current == task_id
        if running:
            threading.Thread(target=self._interrupt, args=(task_id,), daemon=True).start()

    def _interrupt(self, task_id: int) -> None:
        # Repeat: a task may swallow one interrupt, or be between two system calls.
        while self.current == task_id:
            if self.interruptible.active and self.main_thread is not None:
                signal.pthread_kill(self.main_thread, signal.SIGUSR1)
            time.sleep(INTERRUPT_EVERY)

    def on_signal(self, signum: int, frame: Any) -> None:
        # no lock here: the handler runs on the main thread wherever it is, maybe
        # holding this lock, or the send lock that release() waits for under it
        hit = self.current in self.cancelled
        if hit and self.interruptible.active:
            raise Interrupted
        if hit:
            self.deferred = True  # sending a task's output: it lands right after

    # main thread ---------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        done = 0
        timers_on = s.tasks_timers <= 0
        started = time.monotonic()
        while True:
            item = self._next(timers_on, started)
            if isinstance(item, int):
                return item
            task_id, meta, bufs = item
            del item
            # from here until the next _next(), the helper watches the connection
            self.lend()
            if task_id == SETUP_ID:
                if not self.run_setup(meta, bufs):
                    return self.leave(EXIT_SETUP, announce=False)
                continue
            with self.lock:
                if self.released[task_id] > 0:
                    # a copy handed back (its pending mark went with it): skip one
                    _take(self.released, task_id)
                    self.take_inputs(task_id)
                    continue
                if done and self._too_late(meta, timers_on, started):
                    # it could not end here in time: back to the controller with
                    # it (and all held), for a fresh worker the controller launches.
                    # (A fresh worker runs its first task: none would do better.)
                    return self.leave(EXIT_WALL)
                _take(self.pending, task_id)
                self.current = task_id
            wall_passed = timers_on and time.monotonic() - started >= s.seconds_wall
            done += 1
            last = wall_passed or done >= s.tasks_max
            memory = self.memory
            if memory is not None:
                memory.busy()
            self.run_task(task_id, meta, bufs, last)
            if memory is not None:
                memory.idle()
            del bufs
            self.pool.recycle()
            if self.peer is not None and self.peer.maps:
                self.let_go()
            if self.logs is not None:
                self.logs.check()
            if last:
                return self.leave(EXIT_WALL if wall_passed else EXIT_TASKS, announce=False)
            if not timers_on and done >= s.tasks_timers:
                timers_on = True
                started = time.monotonic()

    def _too_late(self, meta: bytes, timers_on: bool, started: float) -> bool:
        """Whether a task could not end before this worker's job does (or its wall time)."""
        s = self.settings
        ends = min(s.job_end, started + s.seconds_wall if timers_on else math.inf)
        needs = _frames.TASK_HEAD.unpack_from(meta)[1] or s.seconds_drain
        left = ends - time.monotonic()
        if needs and needs > left:
            _log(f"{max(left, 0):.0f} s left before the job ends; the next task needs {needs:.0f}")
            return True
        return False

    def _next(self, timers_on: bool, started: float) -> _frames.Frame | int:
        """The next task, or an exit code once the idle or wall limit is reached."""
        s = self.settings
        idle_since = time.monotonic()
        while True:
            if self.inbox:
                return self.inbox.popleft()
            if self.lent:
                if self.read_buffered():
                    continue
                self.take_back()
                continue  # the helper may have read one more before it let go
            now = time.monotonic()
            until = s.job_end - now  # a worker leaves before its job is killed, idle or not
            if timers_on:
                idle, wall = s.seconds_idle - (now - idle_since), s.seconds_wall - (now - started)
                until = min(until, idle, wall)
            wait = None if math.isinf(until) else until
            # spare buffers are memory: keep them only while tasks keep coming
            segments = self.segments
            spares = self.pool.spares or (segments is not None and segments.spares)
            spare_wait = SPARES_SECONDS if spares else None
            if spare_wait is not None and (wait is None or spare_wait < wait):
                if not self.read_between(spare_wait):
                    self.pool.drop_spares()
                    if segments is not None:
                        segments.expire(time.monotonic(), 0.0)
            elif not self.read_between(wait):
                now = time.monotonic()
                wall_passed = now - started >= s.seconds_wall or now >= s.job_end
                return self.leave(EXIT_WALL if wall_passed else EXIT_IDLE)

    def run_setup(self, meta: bytes, bufs: Sequence[Any]) -> bool:
        """Run one setup step; on failure tell the controller why, and return False."""
        try:
            run_step(_pickling.loads(meta, bufs), sys.modules["__main__"].__dict__)
        except BaseException as exc:  # the step is the user's code: SystemExit too
            error = describe(exc)
            _log(f"setup failed: {error}")
            report = {"error": error, "trace": trace_of(exc)}
            with contextlib.suppress(OSError):
                self.send(_frames.encode(Kind.SETUP_FAILED, _frames.json_meta(report)))
            return False
        return True

    def take_inputs(self, task_id: int) -> tuple[int, list[Any]] | None:
        """The inputs of one copy of a task, if it takes any (lock held)."""
        held = self.inputs.get(task_id)
        if not held:
            return None
        entry = held.popleft()
        if not held:
            del self.inputs[task_id]
        return entry

    def run_task(self, task_id: int, meta: bytes, bufs: Sequence[Any], last: bool) -> None:
        with self.lock:
            skip = task_id in self.cancelled
            inputs = self.take_inputs(task_id)
        if skip:
            outcome = _values.unrun(CANCEL, "cancelled")
        else:
            sampler = self.sampler
            try:
                if inputs is None:
                    payload = _pickling.loads(memoryview(meta)[_frames.TASK_HEAD.size :], bufs)
                else:
                    payload = _values.unpickle(meta, bufs, *inputs, self.kept)
                del inputs
                if sampler is not None:
                    sampler.current = (_phase(payload), task_id)
                if self.relay is not None:
                    self.relay.task_id = task_id
                outcome = evaluate(payload, self.settings.cleanup, self.interruptible, self.meter)
            except Interrupted:
                outcome = _values.unrun(CANCEL, "the task was interrupted")
            except BaseException as exc:  # unpickling runs the pusher's code, SystemExit too
                outcome = _values.unrun(
                    ERROR, f"the worker could not load the task: {describe(exc)}"
                )
            if sampler is not None:
                sampler.current = ("idle", None)
            if self.relay is not None:
                self.relay.end()
        with self.lock:
            self.current = 0
            self.cancelled.discard(task_id)
        meta, out_bufs = _values.result_message(
            task_id, last, outcome, self.settings.bytes_max, _pickling.WORKER_SERIALIZERS, self.kept
        )
        # the last result of a worker about to leave goes through the socket: its
        # segments end with the process, maybe before the controller opened them
        self.send(_frames.encode(Kind.RESULT, meta, out_bufs), shared=not last)

    def let_go(self) -> None:
        """Hand the controller back the segments no task uses any more."""
        assert self.peer is not None
        self.peer.release()
        acks = self.peer.take_acks()
        if acks is not None:
            with contextlib.suppress(OSError):
                self.send(_frames.encode(Kind.SHM_DONE, acks))

    def send_output(self, task_id: int, stream: int, text: str) -> None:
        """Relay a task's printed lines (from any thread the task runs)."""
        frame = _frames.encode(
            Kind.OUTPUT, _frames.OUTPUT_HEAD.pack(task_id, stream) + text.encode("utf-8", "replace")
        )
        inter = self.interruptible
        # a cancel's interrupt must not land halfway through a frame: it would
        # leave the connection out of step. It lands after the send instead.
        main = threading.get_ident() == self.main_thread
        was = inter.active
        if main:
            inter.active = False
        try:
            self.send(frame)
        except OSError:
            pass  # the reader sees the connection go
        finally:
            if main:
                inter.active = was
        if main and was and self.deferred:
            self.deferred = False
            if self.current in self.cancelled:
                raise Interrupted

    def leave(self, code: int, announce: bool = True) -> int:
        reasons = {EXIT_IDLE: "idle", EXIT_WALL: "wall", EXIT_TASKS: "tasks"}
        if announce:
            with contextlib.suppress(OSError):
                self.send(_frames.encode(Kind.BYE, reasons[code].encode()))
        why = "a setup step failed" if code == EXIT_SETUP else f"{reasons.get(code)} limit reached"
        _log(f"leaving: {why}")
        return code


def _phase(payload: Any) -> str:
    """What metrics samples call the running task: its name when the payload carries one.

    The payload is ``(kind, target, args, kwargs, data, globals, seed)``; a
    controller may append the task's name as an eighth item.
    """
    if isinstance(payload, tuple) and len(payload) > 7 and isinstance(payload[7], str):
        return payload[7]
    return "task"


def _start_sampler(metrics: dict[str, Any]) -> Sampler | None:
    """Start sampling this process; on any failure, say why in the log and run tasks anyway."""
    try:
        from .._operations._metrics import Sampler  # json and psutil load only when metrics are on

        sampler = Sampler(
            metrics,
            worker=os.environ.get(_frames.WORKER_ENV, ""),
            controller=os.environ.get(_frames.CONTROLLER_ENV, ""),
            log=_log,
        )
    except Exception as exc:
        _log(f"metrics are off: {describe(exc)}")
        return None
    if not sampler.start():
        return None
    _AT_EXIT.append(sampler.stop)
    return sampler


def _take(counts: collections.Counter[int], key: int) -> None:
    """One copy fewer (and no entry left at zero, so the counters stay small)."""
    if counts[key] <= 1:
        counts.pop(key, None)
    else:
        counts[key] -= 1


def _end_watchdog(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _forget_connection(fd: int) -> None:
    """In a process forked by a task: let go of the worker's connection to the controller."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, fd)
        os.close(null)


def main(address: str, tls: bool) -> int:
    """Entry point of ``pycrew worker``."""
    _die_with_parent()
    if os.environ.pop(OWN_GROUP_ENV, None) and os.getpgrp() != os.getpid():
        # one of several workers of a job: a group of its own, so that ending
        # this worker's group (its watchdog does) leaves the others be
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    # tasks get a __main__ of their own, not pycrew's command line module
    sys.modules["__main__"] = types.ModuleType("__main__")
    _pickling.add_import_paths(os.environ.pop(_frames.PATH_ENV, ""))
    try:
        sock, stream, settings = connect(address, tls)
    except Exception as exc:  # whatever the other side sent, a clean refusal: no traceback
        _log(f"could not join the controller at {address}: {exc}")
        return EXIT_STARTUP
    _logs.leave_startup_log()
    # the log's header: enough to tell whose worker this was, and where it ran
    version = ".".join(map(str, sys.version_info[:3]))
    _log(
        f"connected to {address}: controller {os.environ.get(_frames.CONTROLLER_ENV, '?')}, "
        f"pid {os.getpid()}, host {socket.gethostname()}, Python {version}, pycrew {__version__}"
    )
    # A child a task forks (multiprocessing's fork, os.fork) would hold this
    # connection open: the controller would not see the worker die while the
    # child lives. The child's copy points at /dev/null instead; the number
    # stays taken, so nothing else of the child's lands on it.
    os.register_at_fork(after_in_child=functools.partial(_forget_connection, sock.fileno()))
    _frames.keepalive(sock, settings.seconds_heartbeat)
    # before any thread starts, and before forked children let go of the socket
    memory = _memory.limit()
    guard = _memory.Guard(memory, sock, _log) if memory else None
    busy = guard.pipe if guard is not None else -1
    watchdog = _watchdog.spawn(sock.fileno(), settings.seconds_heartbeat, memory, busy)
    worker = Worker(sock, stream, settings)
    if settings.shm_offered:  # yes or no: until then the controller sends every byte whole
        worker.send(_frames.encode(Kind.SHM_READY, b"\x01" if worker.peer else b""))
    if guard is not None:
        worker.memory = guard
        guard.start(worker.send_lock, watchdog)
    worker.logs = _logs.from_environment()
    if worker.logs is not None:
        _AT_EXIT.append(worker.logs.watch())
    if settings.relay_output:
        worker.relay = _logs.Relay(worker.send_output, lambda: worker.interruptible.active)
        worker.relay.install()
    if settings.metrics is not None:
        worker.sampler = _start_sampler(settings.metrics)
    _AT_EXIT.append(flush_traces)  # first of the exit steps: spans of traced tasks go out
    capture_warnings()
    signal.signal(signal.SIGUSR1, worker.on_signal)
    reader = threading.Thread(target=worker.read_while_lent, name="pycrew-reader", daemon=True)
    reader.start()
    code = worker.run()
    if watchdog is not None:
        # leaving on purpose: end the watchdog first, or closing the connection
        # would alarm it. (A worker that lost its controller leaves it be: it
        # ends this process should a task hold the GIL until os._exit.)
        _end_watchdog(watchdog)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    _hard_exit(code)
    return code
