"""Adapters for the peers that are not worker pools of the standard kind.

HyperQueue, Ray, Parsl and executorlib, each set up as its own documentation
advises for many small tasks on one machine (bench/README.md names the pages).
Each owns a temporary folder for its files and removes it at shutdown.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar

import tasks
from adapters import Adapter, chunk, gather_futures

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _scratch(key: str) -> str:
    return tempfile.mkdtemp(prefix=f"pycrew-bench-{key}-")


class HyperQueueAdapter(Adapter):
    """HyperQueue from its PyPI wheel: the server and both workers live in this process.

    The wheel has no ``hq`` program; its server and worker are compiled into the
    extension module, and ``hyperqueue.cluster.LocalCluster`` starts them as
    threads of the calling process, in a server folder of our choosing. A
    function task runs in a fresh interpreter that the worker starts for it,
    and its value is not sent back (HyperQueue issue #715): the bench times
    the task's end, not its value.
    """

    key = "hq"
    label = "HyperQueue"
    modules = ("hyperqueue", "hyperqueue.cluster")
    dists = ("hyperqueue", "cloudpickle")
    notes = (
        "LocalCluster(server_dir=tmp) + 2 workers of 1 core, in this process; a fresh "
        "interpreter per function task, no value back"
    )
    returns_values = False
    cannot: ClassVar[dict[str, str]] = {
        "payload_out": "a function task's value is not sent back (HyperQueue #715)",
    }
    # A task costs an interpreter start (about 0.1 s of CPU) and a wait for a
    # job is answered once a second, so the counts shrink to minutes' worth.
    limits: ClassVar[dict[str, float]] = {
        "warmup_tasks": 1,
        "rt_warmup": 1,
        "rt_n": 10,
        "tp_n": 60,
        "tp_reps": 1,
        "pl_reps": 1,
        "map_n": 60,
    }

    def start(self) -> None:
        # tqdm draws a progress bar on every wait; it reads this to stay quiet
        os.environ["TQDM_DISABLE"] = "1"
        from hyperqueue.cluster import LocalCluster, WorkerConfig
        from hyperqueue.task.function import PythonEnv

        self.dir = _scratch(self.key)
        self.cluster = LocalCluster(server_dir=os.path.join(self.dir, "server"))
        for _ in range(self.n_workers):
            self.cluster.start_worker(WorkerConfig(cores=1))
        # the tasks' interpreter must be this one (the venv with cloudpickle and tasks.py)
        self.client = self.cluster.client(python_env=PythonEnv(python_bin=sys.executable))

    def _job(self) -> Any:
        from hyperqueue import Job

        return Job(default_workdir=os.path.join(self.dir, "tasks"), max_fails=1)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        job = self._job()
        job.function(fn, args=args, stdout=None, stderr=None)
        return self.client.submit(job)

    def _finish(self, jobs: list[Any]) -> None:
        # wait_for_jobs raises FailedJobsException if a task failed
        self.client.wait_for_jobs(jobs)
        for job in jobs:
            self.client.forget(job)

    def result(self, handle: Any, timeout: float) -> Any:
        self._finish([handle])

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        self._finish(handles)
        return [None] * len(handles)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # one job of many tasks is HyperQueue's way to submit many at once
        job = self._job()
        for x in items:
            job.function(fn, args=(x,), stdout=None, stderr=None)
        self._finish([self.client.submit(job)])
        return [None] * len(items)

    def shutdown(self) -> None:
        try:
            self.cluster.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class RayAdapter(Adapter):
    key = "ray"
    label = "Ray"
    modules = ("ray",)
    dists = ("ray",)
    notes = (
        "ray.init(num_cpus=2) on 127.0.0.1: GCS, raylet and 2 task workers; large objects "
        "through the shared-memory object store"
    )

    def start(self) -> None:
        # No usage report; and keep Ray on loopback: on Linux it otherwise
        # advertises the host's own address even when told 127.0.0.1.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self.dir = _scratch(self.key)
        self.ray = ray
        ray.init(
            num_cpus=self.n_workers,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=self.dir,
            log_to_driver=False,
            logging_level="WARNING",
        )
        self._remote: dict[Any, Any] = {}

    def _task(self, fn: Callable[..., Any]) -> Any:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self.ray.remote(fn)
        return remote

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._task(fn).remote(*args)

    def result(self, handle: Any, timeout: float) -> Any:
        return self.ray.get(handle, timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(self.ray.get(handles, timeout=timeout))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], timeout: float) -> list[Any]:
        # Ray's guide ("Anti-pattern: over-parallelizing with too fine-grained
        # tasks") batches tiny calls into a few larger tasks; its
        # multiprocessing Pool would add actor processes beside the 2 workers.
        size = chunk(len(items), self)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        batches = [self._task(tasks.apply_chunk).remote(fn, part) for part in parts]
        return [x for part in self.ray.get(batches, timeout=timeout) for x in part]

    def shutdown(self) -> None:
        try:
            self.ray.shutdown()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class ParslAdapter(Adapter):
    key = "parsl"
    label = "Parsl HTEX"
    modules = ("parsl", "parsl.executors", "parsl.providers")
    dists = ("parsl", "pyzmq")
    notes = (
        "HighThroughputExecutor + LocalProvider, 1 block of 2 workers on 127.0.0.1, "
        "encrypted=False, prefetch_capacity=8; interchange and a worker pool process"
    )

    def start(self) -> None:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        # The block's launch command runs process_worker_pool.py by name: from this venv.
        bindir = os.path.dirname(sys.executable)
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        self.dir = _scratch(self.key)
        self.parsl = parsl
        htex = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",
            loopback_address="127.0.0.1",
            max_workers_per_node=self.n_workers,
            cores_per_worker=1,
            # plain, as pycrew tls="none" is; Parsl's default is CurveZMQ
            encrypted=False,
            # its docstring: 0 is for few or long tasks; tiny tasks want some ahead
            prefetch_capacity=8,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, nodes_per_block=1),
        )
        config = Config(
            executors=[htex],
            run_dir=os.path.join(self.dir, "runinfo"),
            strategy="none",
            usage_tracking=0,
        )
        self.dfk = parsl.load(config)
        self._apps: dict[Any, Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        app = self._apps.get(fn)
        if app is None:
            app = self._apps[fn] = self.parsl.python_app(fn, executors=["htex"])
        return app(*args)

    def shutdown(self) -> None:
        try:
            self.dfk.cleanup()
        finally:
            self.parsl.clear()
            shutil.rmtree(self.dir, ignore_errors=True)


class ExecutorlibAdapter(Adapter):
    key = "executorlib"
    label = "executorlib"
    modules = ("executorlib",)
    dists = ("executorlib", "cloudpickle", "pyzmq")
    notes = (
        "SingleNodeExecutor(max_workers=2, block_allocation=True, disable_dependencies=True): "
        "2 reused worker processes over ZeroMQ"
    )

    def start(self) -> None:
        from executorlib import SingleNodeExecutor

        self.dir = _scratch(self.key)
        # The docs' performance advice: block allocation reuses the worker
        # processes (otherwise one per task), and with no futures among the
        # arguments the dependency check can go.
        self.ex = SingleNodeExecutor(
            max_workers=self.n_workers,
            block_allocation=True,
            disable_dependencies=True,
            hostname_localhost=True,
            resource_dict={"cores": 1, "cwd": self.dir},
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ex.submit(fn, *args)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        return gather_futures(handles, timeout)

    def shutdown(self) -> None:
        try:
            self.ex.shutdown(wait=True, cancel_futures=True)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


PEER_ADAPTERS: tuple[type[Adapter], ...] = (
    HyperQueueAdapter,
    RayAdapter,
    ParslAdapter,
    ExecutorlibAdapter,
)
