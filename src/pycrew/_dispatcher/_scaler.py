"""The scaler thread: owns the launcher, so every launch and kill runs here.

```
 push() ── poke ──┐        dispatcher ── connected/disconnected ──┐
 launch(n) ───────┼──► requests / events ──► scaler thread ───────┴─► Autoscaler (pure)
 kill(id) ────────┘                             └─► launcher.launch_workers(...)
```

One long-lived thread launches every local worker, which also makes the
kernel's parent-death signal reliable: it fires when this thread ends, at
``terminate()``, and never earlier.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import LaunchError
from .._operations import _diagnose

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._engines._launcher import Launcher, WorkerSpec
    from .._resources import Resources
    from ._autoscale import Autoscaler
    from ._dispatcher import Dispatcher
    from ._observe import Observed
    from ._shapes import Partition
    from ._throttle import Throttle

log = logging.getLogger("pycrew.scaler")

#: launched workers in a row that never connect before the user hears of it
LAUNCH_FAILURES = 10
#: launched workers in a row that exit before connecting before the user hears
#: why; the first one already, when its last words leave no doubt
EXIT_FAILURES = 2


class _Request:
    __slots__ = ("arg", "done", "error", "kind", "result")

    def __init__(self, kind: str, arg: Any) -> None:
        self.kind = kind
        self.arg = arg
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Scaler:
    """Runs scaling rounds on a thread of its own.

    Args:
        launcher: the plugin that starts workers.
        autoscaler: the pure policy and worker bookkeeping.
        make_spec: builds the spec for one new worker.
        unresolved: how many tasks are queued or running now.
        on_launched: called (on this thread) with each batch of specs and handles.
        throttle: paces the rounds nobody asked for: soon after a round that
            launched workers, then backing off to its maximum (crew's
            launcher throttle). Pushes, worker exits and requests start a
            round at once whatever the throttle says.
        dispatcher: where tasks with a resource shape are counted per shape
            (their workers are launched per shape; None: no shapes).
        partition: what the machine has left for shaped workers (local
            launchers; None: each worker is its own allocation, as a job).
    """

    def __init__(
        self,
        launcher: Launcher,
        autoscaler: Autoscaler,
        make_spec: Callable[[], WorkerSpec],
        unresolved: Callable[[], int],
        throttle: Throttle,
        on_launched: Callable[[list[WorkerSpec], list[Any]], None] | None = None,
        observed: Observed | None = None,
        dispatcher: Dispatcher | None = None,
        partition: Partition | None = None,
    ) -> None:
        self.launcher = launcher
        self.dispatcher = dispatcher
        self.partition = partition
        self.observed = observed
        self.autoscaler = autoscaler
        self.make_spec = make_spec
        self.unresolved = unresolved
        self.throttle = throttle
        self.on_launched = on_launched
        self.handles: dict[str, Any] = {}
        self.exit_codes: dict[str, int] = {}
        #: what the launcher says ended a worker (a scheduler's job state), by id
        self.exit_reasons: dict[str, str] = {}
        self._gone: set[str] = set()
        self.short = True
        self.failure: LaunchError | None = None
        # workers that exited before connecting since one last connected
        self._exited_in_a_row = 0
        # the diagnosis of the workers that exited, until the user has heard
        # it: launching more would only fail the same way
        self._held: LaunchError | None = None
        # causes of failed rounds already logged
        self._told: set[str] = set()
        self._cv = threading.Condition()
        self._poked = False
        self._stopping = False
        self._shutdown_seconds = 5.0
        self._events: collections.deque[tuple[str, str]] = collections.deque()
        self._requests: collections.deque[_Request] = collections.deque()
        self.thread = threading.Thread(target=self._run, name="pycrew-scaler", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        """Ask for a scaling round soon (cheap; called on every push while short)."""
        with self._cv:
            if not self._poked:
                self._poked = True
                self._cv.notify()

    def worker_event(self, kind: str, worker_id: str) -> None:
        with self._cv:
            self._events.append((kind, worker_id))
            self._cv.notify()

    def request(self, kind: str, arg: Any = None, timeout: float | None = 60.0) -> Any:
        """Run a request on the scaler thread and wait for its result."""
        req = _Request(kind, arg)
        with self._cv:
            if self._stopping:
                raise LaunchError("the controller is shutting down")
            self._requests.append(req)
            self._cv.notify()
        if not req.done.wait(timeout):
            raise LaunchError(f"the launcher did not answer a {kind!r} request in {timeout} s")
        if req.error is not None:
            raise req.error
        return req.result

    def exit_detail(self, worker_id: str, detail: str, wait: float = 1.0) -> str:
        """``detail`` with how the worker's process ended, once this thread has learnt it.

        The exit code comes from the launcher soon after the connection
        drops, so a caller may wait up to ``wait`` seconds for it.
        """
        code = self.exit_codes.get(worker_id)
        deadline = time.monotonic() + wait
        while code is None and worker_id in self.handles and time.monotonic() < deadline:
            time.sleep(0.01)
            code = self.exit_codes.get(worker_id)
        if code is None:
            return detail
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        reason = self.exit_reasons.get(worker_id)
        if reason:
            how += f"; the scheduler says: {reason}"
        return f"{detail} ({how})"

    def kill(self, worker_id: str) -> None:
        with self._cv:
            self._requests.append(_Request("kill", worker_id))
            self._cv.notify()

    def stop(self, seconds: float = 5.0) -> None:
        """End the thread, after the launcher's shutdown of every worker it launched.

        The shutdown runs on this thread, as every launcher call does. That
        also keeps local workers from being killed by the kernel's
        parent-death signal (tied to this thread) before they could exit
        cleanly: they get ``seconds`` to leave on their own.
        """
        with self._cv:
            self._stopping = True
            self._shutdown_seconds = seconds
            self._cv.notify()
        # a launcher call in flight (an sbatch) may take its whole time limit:
        # shutting down under it would miss the jobs it submits
        self.thread.join(timeout=90 + seconds)

    # ------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            with self._cv:
                if not (self._poked or self._events or self._requests or self._stopping):
                    self._cv.wait(self.throttle.seconds_interval)
                if self._stopping:
                    for req in self._requests:
                        req.error = LaunchError("the controller is shutting down")
                        req.done.set()
                    break
                self._poked = False
                events = list(self._events)
                self._events.clear()
                requests = list(self._requests)
                self._requests.clear()
            try:
                self.throttle.update(self._step(events, requests) > 0)
            except Exception as exc:  # a launcher bug must not kill scaling silently
                self._tell(exc)
                self.failure = LaunchError(f"launching workers failed: {exc}")
                self.failure.__cause__ = exc
        try:
            self.launcher.shutdown(list(self.handles.values()), self._shutdown_seconds)
        except Exception:
            log.exception("the launcher's shutdown failed")

    def _tell(self, exc: Exception) -> None:
        """Log a failed round once per cause: a bad partition must not print every round."""
        cause = f"{type(exc).__name__}: {exc}"
        if cause in self._told:
            log.debug("scaling round failed again: %s", cause)
            return
        if len(self._told) < 100:
            self._told.add(cause)
        # the launcher's own message says what is wrong; a traceback only for our bugs
        trace = not isinstance(exc, LaunchError)
        log.error("pycrew could not launch workers: %s", cause, exc_info=trace)

    def _step(self, events: list[tuple[str, str]], requests: list[_Request]) -> int:
        """One round: bookkeeping, requests, then auto-scaling; returns how many it launched."""
        auto = self.autoscaler
        for kind, worker_id in events:
            if kind == "connected":
                auto.on_connected(worker_id)
                self._exited_in_a_row = 0
            else:
                auto.on_disconnected(worker_id)
                self._gone.add(worker_id)
                if self.partition is not None:
                    self.partition.give(worker_id)
        for req in requests:
            try:
                if req.kind == "launch":
                    req.result = self._launch(int(req.arg))
                elif req.kind == "round":
                    req.result = self._round() > 0
                elif req.kind == "kill":
                    handle = self.handles.get(req.arg)
                    if handle is not None:
                        self.launcher.terminate_worker(handle)
            except Exception as exc:
                req.error = exc if isinstance(exc, LaunchError) else LaunchError(str(exc))
            req.done.set()
        self._reap()
        return self._round()

    def _reap(self) -> None:
        """Launches that died before connecting, or took too long, count as failed."""
        auto = self.autoscaler
        gone = [w for w in self._gone if w in self.handles]
        self._gone.intersection_update(gone)
        launching = [w for w in auto.launching if w in self.handles]
        watched = gone + launching
        # one question for all of them, every round (often about none): a
        # scheduler is asked once, not per worker
        codes = self.launcher.exit_codes([self.handles[w] for w in watched])
        if len(codes) != len(watched):
            raise LaunchError(f"exit_codes() gave {len(codes)} codes for {len(watched)} workers")
        for worker_id, code in zip(gone, codes[: len(gone)], strict=True):
            if code is not None:
                self._gone.discard(worker_id)
                handle = self.handles.pop(worker_id, None)
                self.exit_codes[worker_id] = code
                reason = self.launcher.exit_reason(handle) if handle is not None else None
                if reason:
                    self.exit_reasons[worker_id] = reason
        while len(self.exit_codes) > 10_000:
            del self.exit_codes[next(iter(self.exit_codes))]
        while len(self.exit_reasons) > 10_000:
            del self.exit_reasons[next(iter(self.exit_reasons))]
        for worker_id, code in zip(launching, codes[len(gone) :], strict=True):
            if code is not None:
                log.warning("worker %s exited with code %s before connecting", worker_id, code)
                if self.observed is not None:
                    self.observed.launch_failed(
                        worker_id, f"exited with code {code} before connecting"
                    )
                auto.on_died(worker_id)
                if self.partition is not None:
                    self.partition.give(worker_id)
                self._exited(worker_id, code)
        for worker_id in auto.expire(time.monotonic()):
            log.warning("worker %s did not connect within seconds_launch", worker_id)
            if self.partition is not None:
                self.partition.give(worker_id)
            if self.observed is not None:
                self.observed.launch_failed(worker_id, "did not connect within seconds_launch")
            handle = self.handles.get(worker_id)
            if handle is not None:
                try:
                    self.launcher.terminate_worker(handle)
                except Exception:  # best effort, as the contract says
                    log.exception("terminating worker %s failed", worker_id)
        if auto.failed_in_a_row >= LAUNCH_FAILURES:
            auto.failed_in_a_row = 0
            self.failure = LaunchError(
                f"{LAUNCH_FAILURES} launched workers in a row never connected (they exited "
                "first or outlived seconds_launch): check the workers' logs (log_directory "
                "or log_output), the Python on the workers' side, and that they can reach "
                "the controller's host and port"
            )

    def _exited(self, worker_id: str, code: int) -> None:
        """A launched worker exited before connecting: find out why, and tell the user."""
        self._exited_in_a_row += 1
        handle = self.handles.get(worker_id)
        if handle is None:
            return
        text: str | None = None
        try:
            # read even when nobody will hear of it: the launcher may then let the file go
            text = self.launcher.failure_output(handle)
            cause = _diagnose.probable_cause(text, code)
        except LaunchError as exc:  # the launcher's own words on why
            cause = _diagnose.stated_cause(str(exc), code)
        except Exception:  # a plugin's bug must not stop scaling
            log.exception("reading the output of worker %s failed", worker_id)
            cause = _diagnose.probable_cause(None, code)
        if self._held is not None and self._held is self.failure:
            return  # the user has yet to hear the last diagnosis
        if not cause.certain and self._exited_in_a_row < EXIT_FAILURES:
            return  # one may be bad luck (a node that failed); two are not
        try:
            about = self.launcher.describe_worker(handle)
        except Exception:
            about = {}
        where = f"job {about['job']}" if "job" in about else ""
        where = where or (f"pid {about['pid']}" if "pid" in about else "")
        self.failure = self._held = _diagnose.launch_error(worker_id, where, code, text, cause)
        self._exited_in_a_row = 0
        self.autoscaler.failed_in_a_row = 0

    def _round(self) -> int:
        if self._held is not None:
            if self._held is self.failure:
                self.short = self.autoscaler.supply() < self.autoscaler.workers
                return 0
            self._held = None
        n = self.autoscaler.to_launch(self.unresolved())
        if n > 0:
            self._launch(n)
        if self.dispatcher is not None and self.dispatcher.shaped_live:
            n += self._shaped_round(self.dispatcher)
        self.short = self.autoscaler.supply() < self.autoscaler.workers
        return n

    def _shaped_round(self, dispatcher: Dispatcher) -> int:
        """Launch workers for each shape that has more tasks than workers."""
        with dispatcher.lock:
            demand = dispatcher.demand()
        auto, partition = self.autoscaler, self.partition
        plan = auto.to_launch_shaped(demand)
        if not plan and any(n > 0 for n in demand.values()) and auto.supply() >= auto.workers:
            # the cap is reached: an idle worker of no use to these tasks makes room
            shape = next(iter(demand))
            if not any(s == shape for s in auto.shapes.values()):
                with dispatcher.lock:
                    dispatcher.let_go(shape, plain=True)
        launched = 0
        for shape, n in plan.items():
            specs = []
            for _ in range(n):
                if partition is not None and not partition.fits(shape):
                    # an idle worker whose share of the machine would make room leaves
                    helps = functools.partial(_fits_without, partition, shape)
                    with dispatcher.lock:
                        dispatcher.let_go(shape, False, helps)
                    break
                spec = self.make_spec()
                ids = partition.take(spec.worker_id, shape) if partition is not None else []
                env = {**spec.env, **shape.environment(ids or ())}
                specs.append(dataclasses.replace(spec, env=env, shape=shape))
                with dispatcher.lock:
                    dispatcher.expect(spec.worker_id, shape)
            try:
                launched += self._launch_specs(specs, shape)
            except BaseException:
                if partition is not None:
                    for spec in specs:
                        partition.give(spec.worker_id)
                raise
        return launched

    def _launch(self, n: int) -> int:
        if n < 1:
            return 0
        return self._launch_specs([self.make_spec() for _ in range(n)])

    def _launch_specs(self, specs: list[WorkerSpec], shape: Resources | None = None) -> int:
        n = len(specs)
        if n < 1:
            return 0
        specs, ours = self._with_channels(specs)
        try:
            handles = self.launcher.launch_workers(specs)
        except BaseException:
            for sock in ours:
                sock.close()
            raise
        finally:
            for spec in specs:
                if spec.channel is not None:
                    spec.channel.close()  # the worker has its own copy now, or never will
        if len(handles) != len(specs):
            for sock in ours:
                sock.close()
            raise LaunchError(f"launcher returned {len(handles)} handles for {n} workers")
        for spec, handle in zip(specs, handles, strict=False):
            self.handles[spec.worker_id] = handle
        dispatcher = self.dispatcher
        if ours and dispatcher is not None:
            with dispatcher.lock:
                for sock in ours:
                    dispatcher.adopt(sock)
        self.autoscaler.on_launched([s.worker_id for s in specs], time.monotonic(), shape)
        how = f" for {shape}" if shape is not None else ""
        log.info("launched %d worker(s)%s: %s", n, how, ", ".join(s.worker_id for s in specs))
        if self.on_launched is not None:
            try:
                self.on_launched(specs, handles)
            except Exception:  # a record of launches must never stop launching
                log.exception("recording launched workers failed")
        return n

    def _with_channels(
        self, specs: list[WorkerSpec]
    ) -> tuple[list[WorkerSpec], list[socket.socket]]:
        """Give each spec a connected socket pair's far end, where the launcher starts
        workers as children on this machine (``Launcher.channels``): such a
        worker skips dialing the port and the TCP stack; ours go to the dispatcher."""
        if not getattr(self.launcher, "channels", False) or self.dispatcher is None:
            return specs, []
        if not hasattr(socket, "AF_UNIX"):
            return specs, []
        ours: list[socket.socket] = []
        given: list[WorkerSpec] = []
        try:
            for spec in specs:
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ours.append(mine)
                given.append(dataclasses.replace(spec, channel=theirs))
        except OSError as exc:  # out of descriptors: these workers dial the port
            log.warning("cannot make socket pairs for local workers (%s): they dial the port", exc)
            for sock in ours:
                sock.close()
            for spec in given:
                assert spec.channel is not None
                spec.channel.close()
            return specs, []
        return given, ours


def _fits_without(partition: Partition, shape: Resources, worker_id: str) -> bool:
    return partition.fits(shape, without=worker_id)
