"""The ``"pycrew"`` joblib backend: batches of ``joblib.Parallel`` run as pycrew tasks.

```
 user's thread (joblib.Parallel)                  pycrew
 configure(n_jobs) ─► the controller: given, or made for this call (not started yet)
 submit(batch) ─► ctl._push(batch, owned) ─► TaskFuture ─► a worker runs the batch
                                                  │ done: dispatcher thread
              _Relay.deliver(callback, future) ◄──┘ (a queue put, never blocks)
 relay thread "pycrew-joblib":
   joblib's callback(future) ─► retrieve_result_callback ─► future.result()
     └─► dispatch_next() ─► submit(next batch)       (pickled here, not on the dispatcher)
 abort_everything() ─► cancel the batches still out
 terminate() ─► relay drained and joined; a controller made here is terminated
```

joblib calls ``configure()`` and ``terminate()`` once per ``Parallel`` call
(once per ``with Parallel(...) as parallel:`` block). A controller the backend
makes lives exactly that long: its workers start with the call's first batch
and are gone when the call returns, so nothing is left when a ``with
parallel_config(...)`` block ends. A controller passed in as ``controller=``
is used as it is, started if need be, and never terminated here: that is how
workers outlive one call (many calls, SLURM jobs that queue).

Batches are owned tasks (``_push(owned=True)``): they never show in the
controller's ``pop()``/``collect()``, and each leaves the controller once its
outcome is handed over, so a controller shared with other code stays clean.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

from joblib import cpu_count, register_parallel_backend
from joblib.parallel import AutoBatchingMixin, ParallelBackendBase

from .._controller._controller import Controller
from .._controller._factories import controller as plugin_controller
from .._controller._factories import engine_factory
from .._controller._futures import TaskFuture
from .._engines._launcher import Launcher
from .._engines._local import LocalLauncher
from .._errors import ArgumentError, ArgumentTypeError, CrewError
from ._joblib_light import NAME, run_batch

if TYPE_CHECKING:
    from collections.abc import Callable

    Callback = Callable[[concurrent.futures.Future[Any]], object]


def register() -> None:
    """Register the backend class with joblib as ``"pycrew"`` (idempotent).

    ``import pycrew`` already registers the name lazily; this makes the class
    itself the factory, as ``import pycrew.joblib`` does.
    """
    register_parallel_backend(NAME, PycrewBackend)


class PycrewBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """A joblib backend that runs ``Parallel``'s batches on pycrew workers.

    Select it with ``joblib.parallel_config(backend="pycrew", n_jobs=...,
    **options)``, where the options are either

    - ``controller=``: a ``pycrew.Controller`` to use as it is (it may
      be shared with other code, and is left running), or
    - the options of the controller to make for each ``Parallel`` call:
      ``launcher=`` (``"local"``, the default; ``"slurm"``; a registered
      launcher name; or a ``pycrew.launchers.Launcher``), and the
      keyword arguments of ``pycrew.local_controller``,
      ``pycrew.slurm_controller`` or ``pycrew.controller`` for that
      launcher. ``workers`` defaults to the call's ``n_jobs``.

    ``n_jobs=-1`` means every worker: the controller's ``workers``, or this
    machine's CPU count for a local controller made without ``workers``.
    ``n_jobs`` above the controller's ``workers`` is capped at it.

    Raises:
        ArgumentError: both ``controller=`` and controller options, or an
            option the launcher's controller does not take, or a bad value.
        ArgumentTypeError: ``controller=`` is not a ``pycrew.Controller``.
    """

    #: with this backend chosen, Parallel(n_jobs=None) uses every worker (as dask's does)
    default_n_jobs = -1
    #: results are taken in the relay thread, so return_as="generator" and timeout work
    supports_retrieve_callback = True
    #: tasks run in other processes: require="sharedmem" falls back to threads
    supports_sharedmem = False
    uses_threads = False
    #: parallel_config(inner_max_num_threads=n) caps each batch's BLAS/OpenMP threads
    supports_inner_max_num_threads = True

    def __init__(
        self,
        nesting_level: int | None = None,
        *,
        controller: Controller | None = None,
        launcher: Launcher | str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level)
        if controller is not None:
            if not isinstance(controller, Controller):
                raise ArgumentTypeError(
                    f"controller must be a pycrew.Controller, got {type(controller).__name__}"
                )
            if launcher is not None or options:
                raise ArgumentError(
                    "pass either controller= or the options of a controller to make, not both"
                )
        self._given = controller
        self._factory = _factory(launcher)
        self._options = options
        self._local = launcher in (None, "local") or isinstance(launcher, LocalLauncher)
        self._owned: Controller | None = None
        self._threads: int | None = None
        self._relay: _Relay | None = None
        self._lock = threading.Lock()
        if controller is None:
            # a controller made now checks every option's value where the user
            # wrote it (at parallel_config), not deep inside a library's fit()
            self._make(None)

    def __repr__(self) -> str:
        where = self._given if self._given is not None else f"options={self._options!r}"
        return f"<PycrewBackend {where}>"

    # ------------------------------------------------------------- joblib API
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many batches can run at once: ``n_jobs`` within the controller's ``workers``."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        workers = self._workers()
        if n_jobs < 0:
            if workers is None:
                if not self._local:
                    raise ArgumentError(
                        "n_jobs=-1 means every worker, but this pycrew backend makes its "
                        "controller with no workers= option: pass workers= to "
                        "parallel_config, or a positive n_jobs"
                    )
                workers = int(cpu_count())
            return max(workers + 1 + n_jobs, 1)
        return n_jobs if workers is None else min(n_jobs, workers)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Start of a Parallel call: the number of batches to run at once.

        A controller is made here (when none was given), sized to ``n_jobs``;
        its workers start with the first batch. joblib's process-pool options
        (``max_nbytes``, ``mmap_mode``, ``temp_folder``) do not apply.
        """
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        self._threads = self._thread_cap(n_jobs)
        with self._lock:
            if self._given is None and self._owned is None and n_jobs > 1:
                self._owned = self._make(None if "workers" in self._options else n_jobs)
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callback | None = None) -> Any:
        """Push one batch; its future reaches ``callback`` on the relay thread once done.

        A batch that cannot be pushed (say, it cannot be pickled) comes back as
        a failed future rather than raising here: joblib may call this from
        the relay thread, where nothing would see the exception.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        relay = self._running_relay()
        if relay is None:
            # a batch dispatched by the last callback of a call that has ended:
            # nobody waits for it, and the call's controller may be gone
            future.cancel()
            return future
        try:
            future = self._controller()._push(run_batch, (func, self._threads), {}, owned=True)
        except Exception as exc:
            future.set_exception(exc)
        else:
            relay.track(future)
        if callback is not None:
            future.add_done_callback(functools.partial(relay.deliver, callback))
        return future

    # joblib < 1.5 calls apply_async where later versions call submit
    apply_async = submit

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> Any:
        """The batch's results, or its own exception (the worker's traceback as its cause)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed (or the caller gave up): cancel the batches still queued or running.

        The backend stays usable either way; a controller made here is
        terminated by ``terminate()``, which joblib calls next.
        """
        relay = self._relay
        if relay is not None:
            for future in relay.outstanding():
                future.cancel()

    def terminate(self) -> None:
        """End of a Parallel call: stop the relay, and terminate a controller made here."""
        with self._lock:
            relay, self._relay = self._relay, None
            owned, self._owned = self._owned, None
        if relay is not None:
            relay.close()
        if owned is not None:
            owned.terminate()
        self.parallel = None

    # -------------------------------------------------------------- internals
    def _workers(self) -> int | None:
        """The most workers at once, where known before a controller is made."""
        if self._given is not None:
            return self._given.workers
        workers = self._options.get("workers")
        return None if workers is None else int(workers)

    def _thread_cap(self, n_jobs: int) -> int | None:
        """BLAS/OpenMP threads per batch: as joblib's process backend caps them.

        ``inner_max_num_threads`` if given; else nothing if the user set one of
        the variables (the workers inherit them); else the CPU count shared
        among this call's workers on this machine, or ``cpus_per_task`` for
        SLURM jobs made here; else no cap.
        """
        if self.inner_max_num_threads is not None:
            return int(self.inner_max_num_threads)
        if any(name in os.environ for name in self.MAX_NUM_THREADS_VARS):
            return None
        if self._given is not None:
            local = isinstance(self._given.launcher, LocalLauncher)
        else:
            local = self._local
            cpus = self._options.get("cpus_per_task")
            if not local and isinstance(cpus, int):
                return cpus
        return max(int(cpu_count()) // n_jobs, 1) if local else None

    def _make(self, workers: int | None) -> Controller:
        options = dict(self._options)
        if workers is not None:
            options["workers"] = workers
        try:
            made: Controller = self._factory(**options)
        except TypeError as exc:  # an option this launcher's controller does not take
            raise ArgumentError(f"pycrew joblib backend: {exc}") from exc
        return made

    def _controller(self) -> Controller:
        with self._lock:
            controller = self._given or self._owned
            if controller is None:
                # submit() without configure(): joblib never does this, but a
                # caller might; size it as configure() would for n_jobs=-1
                controller = self._owned = self._make(self.effective_n_jobs(-1))
            return controller

    def _running_relay(self) -> _Relay | None:
        """The call's relay (started on first use), or None on the thread of one that closed."""
        with self._lock:
            current: _Relay | None = getattr(_THREAD, "relay", None)
            if current is not None and current.closed:
                return None
            if self._relay is None:
                self._relay = _Relay()
            return self._relay


#: on a relay's thread, ``relay`` is that relay
_THREAD = threading.local()


def _factory(launcher: Launcher | str | None) -> Callable[..., Controller]:
    """The controller factory for ``launcher``, its options checked by name when called."""
    factory = engine_factory(launcher)
    if factory is not None:
        return _checked(factory)
    if isinstance(launcher, (str, Launcher)):
        return functools.partial(plugin_controller, launcher)
    raise ArgumentTypeError(
        f"launcher must be 'local', 'slurm', 'sge', 'pbs', 'lsf', a registered launcher name or a "
        f"pycrew.launchers.Launcher, got {type(launcher).__name__}"
    )


def _checked(factory: Callable[..., Controller]) -> Callable[..., Controller]:
    """``factory``, refusing unknown option names with a message that lists the known ones."""
    known = inspect.signature(factory).parameters

    @functools.wraps(factory)
    def make(**options: Any) -> Controller:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ArgumentError(
                f"pycrew joblib backend: {factory.__name__}() takes no option(s) {unknown}; "
                f"it takes {sorted(known)}"
            )
        return factory(**options)

    return make


class _Relay:
    """Runs joblib's completion callbacks on a thread of its own.

    A pycrew done callback runs on the dispatcher thread, which must never
    block; joblib's callback takes the result (unpickling it) and pushes the
    next batch (pickling it, with the data of its arguments). Both happen here.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callback, concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._open = True
        # futures pushed and not yet delivered: what abort_everything cancels
        self._out: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(target=self._run, name="pycrew-joblib", daemon=True)
        self._thread.start()

    def track(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._out.add(future)

    def outstanding(self) -> list[concurrent.futures.Future[Any]]:
        with self._lock:
            return list(self._out)

    def deliver(self, callback: Callback, future: concurrent.futures.Future[Any]) -> None:
        """A done callback (dispatcher thread): queue the future for joblib's callback."""
        with self._lock:
            if self._open:
                self._queue.put((callback, future))
                return
            self._out.discard(future)
        # the call is over (it was aborted): nobody reads this outcome, but a
        # task leaves its controller only when its outcome is handed over
        _hand_over(future)

    @property
    def closed(self) -> bool:
        return not self._open

    def close(self) -> None:
        """Deliver what is queued, then stop (a no-op on the relay thread itself)."""
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        _THREAD.relay = self
        while True:
            item = self._queue.get()
            if item is None:
                return
            callback, future = item
            try:
                callback(future)
            except BaseException as exc:  # joblib's callback: nothing here can re-raise it
                _report(exc)
            finally:
                with self._lock:
                    self._out.discard(future)
                # joblib reads results through result(); an aborted call does not
                _hand_over(future)


def _hand_over(future: concurrent.futures.Future[Any]) -> None:
    if isinstance(future, TaskFuture):
        try:
            future.record()
        except CrewError as exc:
            _report(exc)


def _report(exc: BaseException) -> None:
    """An error no caller can receive: shown as Python shows errors in threads."""
    hook = threading.excepthook
    hook(threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, threading.current_thread())))
