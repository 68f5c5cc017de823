"""The ``"pycrew"`` joblib backend: batches of ``joblib.Parallel`` run as pycrew tasks.

```
 user's thread (joblib.Parallel)                  pycrew
 configure(n_jobs, initializer) ─► the controller: given, or the shared one of these
     options (_joblib_pool: made at the first call, sized by n_jobs, kept warm)
 submit(batch) ─► ctl._push(batch, owned) ─► TaskFuture ─► a worker runs the batch
                                                  │ done: dispatcher thread
              _Relay.deliver(callback, future) ◄──┘ (a queue put, never blocks)
 the backend's one thread "pycrew-joblib" (every call's callbacks, in order):
   joblib's callback(future) ─► retrieve_result_callback ─► future.result()
     └─► dispatch_next() ─► submit(next batch)       (pickled here, not on the dispatcher)
 abort_everything() ─► cancel the batches still out
 terminate() ─► the call's callbacks drained; batch statistics reset; the shared
                controller released (ended after seconds_idle with no call)
```

joblib calls ``configure()`` and ``terminate()`` once per ``Parallel`` call
(once per ``with Parallel(...) as parallel:`` block). Without ``controller=``,
every call of this process with the same controller options (and the same
``initializer``/``initargs``) runs on one shared controller, as loky's
reusable executor serves every loky call: its workers stay warm between
calls (a ``GridSearchCV.fit`` after another does not import scikit-learn
again), and it ends after ``seconds_idle`` with no call, or at interpreter
exit (``_joblib_pool``). A controller passed in as ``controller=`` is used
as it is, started if need be, and never terminated here.

Batches are owned tasks (``_push(owned=True)``): they never show in the
controller's ``pop()``/``collect()``, and each leaves the controller once its
outcome is handed over, so calls from several threads, or other code, can
share a controller and each sees only its own.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import os
import threading
import weakref
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
from . import _joblib_pool
from ._joblib_light import NAME, run_batch

if TYPE_CHECKING:
    from collections.abc import Callable

    Callback = Callable[[concurrent.futures.Future[Any]], object]


end_shared_controllers = _joblib_pool.end_shared_controllers


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
    - the options of the controller to make: ``launcher=`` (``"local"``,
      the default; ``"slurm"``; a registered launcher name; or a
      ``pycrew.launchers.Launcher``), and the keyword arguments of
      ``pycrew.local_controller``, ``pycrew.slurm_controller`` or
      ``pycrew.controller`` for that launcher. One controller per set of
      options serves every ``Parallel`` call of the process, its workers
      kept warm between calls; it ends after ``seconds_idle`` (300 s by
      default) with no call, and at exit. ``workers`` defaults to the
      call's ``n_jobs``: a call with more grows it, one with fewer (while
      no other call uses it) makes it again smaller.

    ``Parallel(initializer=f, initargs=args)`` (joblib >= 1.5) runs
    ``f(*args)`` once on each worker before its first batch.

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
        self._launcher_key = "local" if launcher is None else launcher
        self._local = launcher in (None, "local") or isinstance(launcher, LocalLauncher)
        self._lease: _joblib_pool.Entry | None = None
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
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        **backend_kwargs: Any,
    ) -> int:
        """Start of a Parallel call: the number of batches to run at once.

        Without ``controller=``, the call takes the shared controller of
        these options and this ``initializer`` (made now if there is none,
        sized to ``n_jobs``; its workers start with the first batch, and
        stay for later calls). ``initializer(*initargs)`` runs once on each
        worker before its first batch. joblib's process-pool options
        (``max_nbytes``, ``mmap_mode``, ``temp_folder``) do not apply.
        """
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        self._threads = self._thread_cap(n_jobs)
        initargs = tuple(initargs or ())
        if initializer is not None and not callable(initializer):
            raise ArgumentTypeError(
                f"initializer must be callable, got {type(initializer).__name__}"
            )
        if initializer is not None and "initializer" in self._options:
            raise ArgumentError(
                "pycrew joblib backend: an initializer came both from parallel_config and "
                "from Parallel: pass one"
            )
        if self._given is not None:
            if initializer is not None:
                _everywhere_once(self._given, initializer, initargs)
            return n_jobs
        if n_jobs > 1:
            self._take_shared(n_jobs, initializer, initargs)
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
            keep = self._given is None  # a shared controller's workers run batches only
            future = self._controller()._push(
                run_batch, (func, self._threads, keep), {}, owned=True
            )
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
        """End of a Parallel call: stop the relay, and let go of the shared controller.

        The batch statistics that joblib's auto batching learned are reset, as
        joblib's own backends reset them, so the next call starts afresh.
        """
        with self._lock:
            relay, self._relay = self._relay, None
            lease, self._lease = self._lease, None
        if relay is not None:
            relay.close()
        if lease is not None:
            _joblib_pool.release(lease)
        self.reset_batch_stats()
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

    def _make(self, workers: int | None, options: dict[str, Any] | None = None) -> Controller:
        options = dict(self._options if options is None else options)
        if workers is not None:
            options["workers"] = workers
        try:
            made: Controller = self._factory(**options)
        except TypeError as exc:  # an option this launcher's controller does not take
            raise ArgumentError(f"pycrew joblib backend: {exc}") from exc
        return made

    def _take_shared(
        self, n_jobs: int, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> _joblib_pool.Entry:
        """Lease this call's shared controller (letting go of one a call left unreleased)."""
        options = dict(self._options)
        if initializer is not None:
            options.update(initializer=initializer, initargs=initargs)
        key = (self._launcher_key, options)
        fixed = "workers" in self._options

        def make(workers: int | None) -> Controller:
            return self._make(workers, options)

        entry = _joblib_pool.acquire(key, make, None if fixed else n_jobs)
        with self._lock:
            previous, self._lease = self._lease, entry
        if previous is not None:
            _joblib_pool.release(previous)
        return entry

    def _controller(self) -> Controller:
        if self._given is not None:
            return self._given
        lease = self._lease
        if lease is None:
            # submit() without configure(): joblib never does this, but a
            # caller might; size it as configure() would for n_jobs=-1
            lease = self._take_shared(self.effective_n_jobs(-1), None, ())
        return lease.controller

    def _running_relay(self) -> _Relay | None:
        """The call's relay (made on first use), or None in a callback of one that closed."""
        with self._lock:
            current: _Relay | None = getattr(_THREAD, "relay", None)
            if current is not None and current.closed:
                return None
            if self._relay is None:
                self._relay = _Relay()
            return self._relay


#: on the backend's thread, ``relay`` is the relay whose callback runs now
_THREAD = threading.local()
#: the initializers already added to each given controller with everywhere(), per start
_ADDED: weakref.WeakKeyDictionary[Controller, list[tuple[str, Any, tuple[Any, ...]]]]
_ADDED = weakref.WeakKeyDictionary()
_ADDED_LOCK = threading.Lock()


def _everywhere_once(
    controller: Controller, initializer: Callable[..., object], initargs: tuple[Any, ...]
) -> None:
    """``Parallel(initializer=...)`` on a given controller: added to it once per start.

    Its workers run it before their next task, and every later worker before
    its first: a given controller keeps it until ``terminate()``.
    """
    controller.start()
    step = (controller.session, initializer, initargs)
    with _ADDED_LOCK:
        added = _ADDED.setdefault(controller, [])
        if any(_joblib_pool._same(step, old) for old in added):
            return
        added.append(step)
    controller.everywhere(initializer, *initargs)


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
    """One call's completion callbacks, run in order on the backend's one thread.

    A pycrew done callback runs on the dispatcher thread, which must never
    block; joblib's callback takes the result (unpickling it) and pushes the
    next batch (pickling it, with the data of its arguments). Both happen on
    the thread of ``_joblib_pool`` ("pycrew-joblib"), which every call
    shares, so that a call starts no thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        # futures pushed and not yet delivered: what abort_everything cancels
        self._out: set[concurrent.futures.Future[Any]] = set()

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
                _joblib_pool.post(functools.partial(self._run, callback, future))
                return
            self._out.discard(future)
        # the call is over (it was aborted): nobody reads this outcome, but a
        # task leaves its controller only when its outcome is handed over
        _hand_over(future)

    @property
    def closed(self) -> bool:
        return not self._open

    def close(self) -> None:
        """Deliver what is queued, then stop (no wait on the backend's thread itself)."""
        with self._lock:
            if not self._open:
                return
            self._open = False
        if _joblib_pool.on_courier():
            return  # what is queued still runs there, after this callback
        delivered = threading.Event()
        _joblib_pool.post(delivered.set)
        delivered.wait()

    def _run(self, callback: Callback, future: concurrent.futures.Future[Any]) -> None:
        _THREAD.relay = self
        try:
            callback(future)
        except BaseException as exc:  # joblib's callback: nothing here can re-raise it
            _joblib_pool.report(exc)
        finally:
            _THREAD.relay = None
            with self._lock:
                self._out.discard(future)
            # joblib reads results through result(); an aborted call does not
            _hand_over(future)


def _hand_over(future: concurrent.futures.Future[Any]) -> None:
    if isinstance(future, TaskFuture):
        try:
            future.record()
        except CrewError as exc:
            _joblib_pool.report(exc)
