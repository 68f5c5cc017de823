"""The systems bench.py times: one adapter class each, the same four verbs.

Each wraps a pool of warm worker processes behind start / submit / result /
shutdown, so the measurements in bench.py read the same for every system.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def now() -> float:
    return time.perf_counter()


def chunk(n_items: int, ad: Adapter) -> int:
    """Items per chunk for a chunked map: four chunks per worker."""
    return max(1, math.ceil(n_items / (4 * ad.n_workers)))


def gather_futures(handles: list[Any], timeout: float) -> list[Any]:
    """The values of ``concurrent.futures`` futures, in order, once all ended within
    ``timeout`` (else TimeoutError)."""
    from concurrent.futures import wait

    _, pending = wait(handles, timeout=timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} tasks unfinished after {timeout:.0f} s")
    return [f.result() for f in handles]


class Adapter:
    """A pool of ``n_workers`` worker processes behind a submit/result interface.

    ``result`` returns the task's value (raising if the task failed) and releases
    whatever the system keeps for the task. ``gather``, ``roundtrip`` and ``map``
    have generic versions built on submit/result; a system overrides them when it
    has a faster public way to do the same thing (``map``: its own map or batch API).

    A system that cannot do a figure names it in ``cannot`` with the reason, and
    the bench leaves a dash there instead of failing. ``limits`` lowers counts of
    the configuration for a system whose every task costs much more (a fresh
    interpreter per task), so that its run ends in minutes.
    """

    key = ""
    label = ""
    modules: tuple[str, ...] = ()  # imported before the cold-start clock starts
    dists: tuple[str, ...] = ()  # distributions whose versions are reported
    notes = ""
    returns_values = True  # False: a task's value never comes back, only its end
    cannot: ClassVar[dict[str, str]] = {}  # figure -> why this system has none
    limits: ClassVar[dict[str, float]] = {}  # Config field -> a lower count for this system

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers

    def start(self) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = now() + timeout
        return [self.result(h, max(0.001, deadline - now())) for h in handles]

    def roundtrip(self, fn: Callable[..., Any], arg: Any, timeout: float) -> Any:
        return self.result(self.submit(fn, arg), timeout)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        """``fn`` over ``items``, values in order; one task per item unless overridden."""
        return self.gather([self.submit(fn, x) for x in items], timeout)

    def many(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        """One task per item, every handle held as a user who keeps them would (no
        chunks: the per-task cost is what this times); the values, in any order."""
        return self.gather([self.submit(fn, x) for x in items], timeout)

    def worker_pids(self) -> list[int] | None:
        """Pids of the connected workers, where the system tells (to spot worker churn)."""
        return None

    def shutdown(self) -> None:
        raise NotImplementedError


class PycrewAdapter(Adapter):
    key = "pycrew"
    label = "pycrew tls=none"
    # pycrew loads its controller side on first use; import it with the library
    modules = ("pycrew", "pycrew._controller._factories")
    dists = ("pycrew", "cloudpickle", "cryptography")
    notes = (
        "local_controller(workers=2): controller in this process, workers dial in over TCP; "
        "arrays of 1 MiB or more through shared memory"
    )
    tls = "none"
    shared_memory = True

    def start(self) -> None:
        import pycrew

        self.ctl = pycrew.local_controller(
            workers=self.n_workers, tls=self.tls, shared_memory=self.shared_memory
        )
        self.ctl.start()
        # Auto-scaling launches min(workers, unresolved tasks) workers, so a sequential
        # loop alone would get one worker. Launch both now, as the other pools do.
        self.ctl.launch(self.n_workers)

    def worker_pids(self) -> list[int] | None:
        return sorted(self.ctl.pids())

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ctl.push(fn, *args)

    def result(self, fut: Any, timeout: float) -> Any:
        # the value, or the task's own exception; reading it hands the task over,
        # so the controller keeps nothing
        return fut.result(timeout=timeout)

    def roundtrip(self, fn: Callable[..., Any], arg: Any, timeout: float) -> Any:
        return self.ctl.push(fn, arg).result(timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        if not self.ctl.wait(mode="all", seconds_timeout=timeout):
            raise TimeoutError(f"pycrew: wait(mode='all') timed out after {timeout:.0f} s")
        values = [fut.result(timeout=timeout) for fut in handles]
        if self.ctl.size():
            raise RuntimeError(f"pycrew: {self.ctl.size()} tasks left after reading the futures")
        return values

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # pycrew's own batch API, chunked as ProcessPoolExecutor's is here: the
        # Executor over this controller, several calls per task
        import pycrew

        executor = pycrew.Executor(controller=self.ctl)
        return list(executor.map(fn, items, timeout=timeout, chunksize=chunk(len(items), self)))

    def many(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # walk + wait + collect, holding the futures and the records: what a user of
        # crew's collect() does with many tasks
        futures = self.ctl.walk(fn, items)
        if not self.ctl.wait(mode="all", seconds_timeout=timeout):
            raise TimeoutError(f"pycrew: wait(mode='all') timed out after {timeout:.0f} s")
        records = self.ctl.collect()
        if len(records) != len(futures) or any(r.status != "success" for r in records):
            raise RuntimeError("pycrew: not every task succeeded")
        return [r.result for r in records]

    def shutdown(self) -> None:
        self.ctl.terminate()


class PycrewTLSAdapter(PycrewAdapter):
    key = "pycrew-tls"
    label = "pycrew tls=automatic"
    notes = "as pycrew, with tls='automatic' (self-signed certificate made at start)"
    tls = "automatic"


class PycrewSocketAdapter(PycrewAdapter):
    key = "pycrew-tcp"
    label = "pycrew shared_memory=False"
    notes = "as pycrew, every byte through the socket (what remote workers get)"
    shared_memory = False


class ProcessPoolAdapter(Adapter):
    key = "ppe"
    label = "ProcessPoolExecutor"
    modules = ("concurrent.futures", "multiprocessing")
    notes = "stdlib, default start method (fork on Linux), pipes, no TCP"

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(max_workers=self.n_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ex.submit(fn, *args)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        return gather_futures(handles, timeout)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # the docs advise a large chunksize for long iterables (the default sends
        # one item per message); four chunks per worker keeps both workers busy
        return list(self.ex.map(fn, items, timeout=timeout, chunksize=chunk(len(items), self)))

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


class LokyAdapter(ProcessPoolAdapter):
    key = "loky"
    label = "loky"
    modules = ("loky",)
    dists = ("loky", "cloudpickle")
    notes = "get_reusable_executor: fresh interpreters (loky start method), pipes, no TCP"

    def start(self) -> None:
        from loky import get_reusable_executor

        self.ex = get_reusable_executor(max_workers=self.n_workers, timeout=600, reuse=False)

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True, kill_workers=False)


class DaskAdapter(Adapter):
    key = "dask"
    label = "dask.distributed"
    modules = ("distributed",)
    dists = ("dask", "distributed", "cloudpickle")
    notes = (
        "LocalCluster(n_workers=2, threads_per_worker=1, processes=True): scheduler in "
        "this process, a nanny and a worker process per worker, TCP"
    )

    def start(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=self.n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(self.n_workers, timeout=120)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        from distributed import wait

        wait(handles, timeout=timeout)
        return list(self.client.gather(handles))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # one call submits every task (client.map): Dask's own way to many tasks
        return self.gather(self.client.map(fn, items, pure=False), timeout)

    def many(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        return self.map(fn, items, timeout)  # client.map makes a task of each item

    def shutdown(self) -> None:
        try:
            self.client.close(timeout=30)
        finally:
            self.cluster.close(timeout=30)


BASE_ADAPTERS: tuple[type[Adapter], ...] = (
    PycrewAdapter,
    PycrewTLSAdapter,
    PycrewSocketAdapter,
    ProcessPoolAdapter,
    LokyAdapter,
    DaskAdapter,
)
PYCREW_KEYS = ("pycrew", "pycrew-tls", "pycrew-tcp")
