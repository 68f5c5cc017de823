"""The joblib backend: real workers, joblib and scikit-learn, and the examples of docs/joblib.md."""

from __future__ import annotations

import multiprocessing
import os
import re
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

import pycrew  # noqa: E402
import pycrew.joblib  # noqa: E402
from pycrew._integrations._joblib_pool import end_shared_controllers, shared_controllers  # noqa: E402
from tests.helpers import joblib_tasks  # noqa: E402
from tests.helpers.common import wait_until  # noqa: E402
from tests.helpers.common import workers as _workers  # noqa: E402
from tests.helpers.scripts import run_python  # noqa: E402
from tests.integrations import tasks  # noqa: E402

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "joblib.md"
#: the longest one docs example may take (it starts workers that import scikit-learn)
BLOCK_SECONDS = 120
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _run_python(code: str, seconds: float = BLOCK_SECONDS) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, this checkout's pycrew first on its path."""
    return run_python(code, seconds=seconds)


# ----------------------------------------------------------- registration
@pytest.mark.parametrize("joblib_first", [True, False], ids=["joblib-first", "pycrew-first"])
def test_import_pycrew_registers_the_backend_without_importing_joblib(joblib_first: bool) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        if {joblib_first}:
            import joblib
        import pycrew
        assert ("joblib" in sys.modules) is {joblib_first}, "import pycrew imported joblib"
        assert "pycrew._integrations._joblib" not in sys.modules
        import joblib
        with joblib.parallel_config(backend="pycrew", n_jobs=2) as config:
            print(type(config["backend"]).__name__, joblib.effective_n_jobs())
        """
    )
    done = _run_python(code, 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PycrewBackend", "2"]


def test_import_pycrew_joblib_registers_the_class_for_parallel_by_name() -> None:
    from joblib.parallel import BACKENDS

    assert BACKENDS["pycrew"] is pycrew.joblib.PycrewBackend
    out = joblib.Parallel(backend="pycrew", n_jobs=2)(
        joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(5)
    )
    assert [value for value, _ in out] == [0, 1, 4, 9, 16]


# ---------------------------------------------------------------- running
def test_parallel_runs_in_order_on_the_given_controllers_workers_and_leaves_it_running(
    controller: pycrew.Controller,
) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(50))
    assert [value for value, _ in out] == [i * i for i in range(50)]
    pids = {pid for _, pid in out}
    assert os.getpid() not in pids
    assert pids <= set(controller.pids())
    # left running, and clean: the batches were owned, and all handed over
    assert controller.started()
    assert controller.size() == 0
    assert controller.collect() == []
    assert controller.push(joblib_tasks.fail_at, 1, 0).result(timeout=30) == 1


def test_a_shared_controller_runs_the_call_in_workers_and_ends_when_idle() -> None:
    with joblib.parallel_config(
        backend="pycrew", n_jobs=2, seconds_interval=0.05, seconds_idle=0.5
    ):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(20))
        assert len(shared_controllers()) == 1
        # no call for seconds_idle: the controller ends, though the block is still open
        wait_until(lambda: not shared_controllers(), 30, "the idle shared controller to end")
        wait_until(lambda: not _workers(), 10, "its workers to end")
    assert [value for value, _ in out] == [i * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in out}


def test_consecutive_fits_reuse_the_warm_workers_of_one_shared_controller() -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = load_iris(return_X_y=True)

    def loaded() -> list[tuple[int, bool, int]]:
        out: list[tuple[int, bool, int]] = joblib.Parallel()(
            joblib.delayed(tasks.sklearn_loaded)(i) for i in range(8)
        )
        return out

    with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
        GridSearchCV(LogisticRegression(max_iter=1000), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
        [ctl] = shared_controllers()
        wait_until(lambda: len(ctl.pids()) == 2, 30, "both workers to connect")
        warm = set(ctl.pids())
        second = loaded()
        third = loaded()
        assert shared_controllers() == [ctl]
    # the later calls ran on the workers of the first, which stay for the next call
    assert {pid for _, _, pid in second + third} <= warm
    # a worker keeps what an earlier call imported (scikit-learn): no cold start again
    ran_second = {pid for _, _, pid in second}
    assert all(was for _, was, pid in third if pid in ran_second)
    assert ctl.started()  # the block's end does not end it: its idle time or the exit does


def test_a_call_with_more_jobs_grows_the_shared_controller_and_fewer_remakes_it() -> None:
    def run(n_jobs: int) -> list[int]:
        out: list[int] = joblib.Parallel(n_jobs=n_jobs)(
            joblib.delayed(tasks.pid)(i) for i in range(6)
        )
        return out

    with joblib.parallel_config(backend="pycrew", seconds_interval=0.05):
        run(2)
        [first] = shared_controllers()
        assert first.workers == 2
        run(3)
        assert shared_controllers() == [first]  # grown in place, its workers kept
        assert first.workers == 3
        run(2)
        [second] = shared_controllers()
    assert second is not first
    assert second.workers == 2
    assert not first.started()


def test_blocks_with_other_options_get_their_own_shared_controller() -> None:
    def run() -> None:
        joblib.Parallel()(joblib.delayed(tasks.pid)(i) for i in range(4))

    with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
        run()
    with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.1):
        run()
    assert len(shared_controllers()) == 2
    with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
        run()
    assert len(shared_controllers()) == 2
    assert sorted(c.seconds_interval for c in shared_controllers()) == [0.05, 0.1]


def test_two_threads_run_parallel_calls_on_the_shared_controller_at_once() -> None:
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=30)

    def call(offset: int) -> None:
        try:
            with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
                start.wait()
                results[offset] = joblib.Parallel()(
                    joblib.delayed(joblib_tasks.fail_at)(offset + i, -1) for i in range(40)
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(offset,)) for offset in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    assert not errors, errors
    assert results == {0: list(range(40)), 1000: list(range(1000, 1040))}
    [ctl] = shared_controllers()
    assert ctl.size() == 0  # owned batches, all handed over
    assert ctl.collect() == []


def test_terminate_resets_the_batch_statistics_for_the_next_call(
    controller: pycrew.Controller,
) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2) as config:
        backend = config["backend"]
        # warm workers first: batches that wait for a worker to start teach it nothing
        joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(100))
        grown = 0
        for i, value in enumerate(
            joblib.Parallel(return_as="generator")(joblib.delayed(abs)(-i) for i in range(4000))
        ):
            assert value == i
            grown = max(grown, backend._effective_batch_size)
        assert grown > 1  # auto batching learned from fast tasks during the call
        # the call is over: the next one in this block starts from joblib's defaults
        assert backend._effective_batch_size == backend._DEFAULT_EFFECTIVE_BATCH_SIZE
        assert backend._smoothed_batch_duration == backend._DEFAULT_SMOOTHED_BATCH_DURATION


# ------------------------------------------------------------ initializer
needs_initializer = pytest.mark.skipif(
    tuple(int(p) for p in joblib.__version__.split(".")[:2]) < (1, 5),
    reason="Parallel(initializer=) came with joblib 1.5",
)


@needs_initializer
def test_parallel_initializer_runs_once_on_each_worker_before_its_first_batch() -> None:
    def run(value: str) -> list[tuple[int, object, int, int]]:
        out: list[tuple[int, object, int, int]] = joblib.Parallel(
            n_jobs=2, backend="pycrew", initializer=tasks.initialize, initargs=(value,)
        )(joblib.delayed(tasks.initialized)(i) for i in range(12))
        return out

    first = run("hello")
    assert [i for i, *_ in first] == list(range(12))
    assert {(value, runs) for _, value, runs, _ in first} == {("hello", 1)}
    assert run("hello") is not None  # the same initializer: the same warm controller
    assert len(shared_controllers()) == 1
    # another initializer needs workers that ran it, and only it
    other = run("other")
    assert {(value, runs) for _, value, runs, _ in other} == {("other", 1)}
    assert len(shared_controllers()) == 2


@needs_initializer
def test_parallel_initializer_on_a_given_controller_runs_once_per_worker(
    controller: pycrew.Controller,
) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2):
        for _ in range(2):
            out = joblib.Parallel(initializer=tasks.initialize, initargs=("given",))(
                joblib.delayed(tasks.initialized)(i) for i in range(8)
            )
            assert {(value, runs) for _, value, runs, _ in out} == {("given", 1)}


# ------------------------------------------------------ multiprocessing.Manager
def test_a_manager_dict_is_written_by_tasks_of_the_joblib_backend() -> None:
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
            out = joblib.Parallel()(joblib.delayed(tasks.write)(shared, i) for i in range(6))
        assert dict(shared) == {i: pid for i, (pid, _) in enumerate(out)}
        assert os.getpid() not in set(shared.values())


@needs_initializer
def test_a_manager_dict_in_initargs_reaches_each_worker() -> None:
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        out = joblib.Parallel(
            n_jobs=2, backend="pycrew", initializer=tasks.register_worker, initargs=(shared,)
        )(joblib.delayed(tasks.pid)(i) for i in range(6))
        assert set(out) <= set(shared.keys())
        assert set(shared.values()) == {"initialized"}


def test_a_manager_dict_is_written_by_fresh_and_forked_local_workers() -> None:
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        lock = manager.Lock()
        with pycrew.local_controller(workers=1, tasks_max=1, seconds_interval=0.05) as ctl:
            deadline = time.monotonic() + 60
            parents: set[int] = set()
            key = 0
            # the first workers start directly; later ones are forked from the template
            while time.monotonic() < deadline and parents <= {os.getpid()}:
                _, parent = ctl.push(tasks.write, shared, key).result(timeout=60)
                parents.add(parent)
                key += 1
            assert os.getpid() in parents, "no worker started directly"
            assert parents - {os.getpid()}, "no worker came from the template"
            with lock:
                assert ctl.push(tasks.write, shared, -1).result(timeout=60)
        assert set(shared.keys()) == {*range(key), -1}


def test_a_task_exception_is_raised_as_itself_with_the_worker_traceback(
    controller: pycrew.Controller,
) -> None:
    with (
        joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2),
        pytest.raises(joblib_tasks.BatchError, match="item 7 is bad") as caught,
    ):
        joblib.Parallel()(joblib.delayed(joblib_tasks.fail_at)(i, 7) for i in range(20))
    assert isinstance(caught.value.__cause__, pycrew.RemoteTraceback)
    assert "fail_at" in str(caught.value.__cause__)


def test_a_failure_cancels_the_batches_still_running(controller: pycrew.Controller) -> None:
    with (
        joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2),
        pytest.raises(joblib_tasks.BatchError),
    ):
        # the first batch fails (a failure queued on a worker behind a long task
        # would wait for it: workers take tasks ahead of time)
        joblib.Parallel(batch_size=1)(
            joblib.delayed(joblib_tasks.sleep_unless_bad)(i, 0, 300) for i in range(6)
        )
    # the sleeping batches were cancelled (not left to run 300 s), and nothing lingers
    wait_until(lambda: controller.unresolved() == 0, 30, "the other batches to be cancelled")
    wait_until(lambda: controller.size() == 0, 10, "the cancelled batches to leave")
    assert controller.push(joblib_tasks.fail_at, 2, 0).result(timeout=30) == 2


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_return_as_generators(controller: pycrew.Controller, return_as: str) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2):
        out = joblib.Parallel(return_as=return_as)(
            joblib.delayed(joblib_tasks.fail_at)(i, -1) for i in range(30)
        )
        assert not isinstance(out, list)
        values = list(out)
    assert (values if return_as == "generator" else sorted(values)) == list(range(30))


def test_nested_parallel_runs_inside_the_worker(controller: pycrew.Controller) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller, n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.nested_sum)(n) for n in (3, 10))
    assert out == [3, 45]


def test_grid_search_on_all_workers_matches_a_sequential_run() -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}

    def search(n_jobs: int) -> GridSearchCV:
        model = GridSearchCV(LogisticRegression(max_iter=1000), grid, cv=3, n_jobs=n_jobs)
        return model.fit(X, y)

    expected = search(1)
    with joblib.parallel_config(backend="pycrew", workers=2, seconds_interval=0.05):
        got = search(-1)
    assert got.best_params_ == expected.best_params_
    assert got.best_score_ == pytest.approx(expected.best_score_)


# ---------------------------------------------------------------- options
def test_n_jobs_counts_the_controllers_workers(controller: pycrew.Controller) -> None:
    with joblib.parallel_config(backend="pycrew", controller=controller):
        assert joblib.effective_n_jobs(-1) == controller.workers == 2
        assert joblib.effective_n_jobs(None) == 2
        assert joblib.effective_n_jobs(8) == 2  # capped at workers
        assert joblib.effective_n_jobs(-2) == 1
    with joblib.parallel_config(backend="pycrew", workers=3):
        assert joblib.effective_n_jobs(-1) == 3
    with joblib.parallel_config(backend="pycrew", launcher="slurm"):
        with pytest.raises(pycrew.ArgumentError, match="workers="):
            joblib.effective_n_jobs(-1)
        assert joblib.effective_n_jobs(4) == 4


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"controller": "not one"}, pycrew.ArgumentTypeError, "pycrew.Controller"),
        ({"workers": 0}, ValueError, "workers"),
        ({"partition": "x"}, pycrew.ArgumentError, r"local_controller\(\) takes no option"),
        ({"launcher": 3}, pycrew.ArgumentTypeError, "launcher must be"),
    ],
)
def test_bad_options_fail_at_parallel_config(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        joblib.parallel_config(backend="pycrew", **options)


def test_a_controller_and_controller_options_together_are_refused(
    controller: pycrew.Controller,
) -> None:
    with pytest.raises(pycrew.ArgumentError, match="not both"):
        joblib.parallel_config(backend="pycrew", controller=controller, workers=2)


# ------------------------------------------------------------------ SLURM
def test_parallel_on_slurm_jobs_leaves_no_job_once_its_shared_controller_ends() -> None:
    from tests.engines.test_slurm import _cluster_problem, _our_jobs

    _skip_without_cluster(_cluster_problem)
    with joblib.parallel_config(
        backend="pycrew", launcher="slurm", workers=2, seconds_interval=0.1
    ):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(20))
    # the shared controller ended (as after its idle time, or at exit): no job is left
    end_shared_controllers()
    wait_until(lambda: _our_jobs() == [], 20, "the shared controller's jobs to leave the queue")
    assert [value for value, _ in out] == [i * i for i in range(20)]


def _skip_without_cluster(problem_of: Callable[[], str | None]) -> None:
    """The SLURM tests' rule: skip without a cluster, fail if PYCREW_REQUIRE_SLURM=1."""
    problem = problem_of()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SLURM") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SLURM=1, but {problem}")
        pytest.skip(problem)


# ------------------------------------------------------------------ docs
def _docs_blocks() -> list[object]:
    """Each ``python`` block of docs/joblib.md, with its line and its tags (``python slurm``)."""
    text = DOCS.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        words = match["info"].split()
        if words and words[0] == "python":
            line = text.count("\n", 0, match.start()) + 1
            tags = " ".join(words[1:])
            blocks.append(pytest.param(line, tags, match["body"], id=f"joblib.md:{line}"))
    return blocks


@pytest.mark.parametrize(("line", "tags", "code"), _docs_blocks())
def test_docs_python_block_runs(line: int, tags: str, code: str) -> None:
    """Each block runs by itself in a fresh interpreter; ``slurm`` ones need the cluster."""
    if "slurm" in tags:
        from tests.engines.test_slurm import _cluster_problem

        _skip_without_cluster(_cluster_problem)
    done = _run_python(code)
    assert done.returncode == 0, f"{DOCS.name}:{line} failed:\n{done.stderr}"


def test_a_worker_takes_the_authkey_without_importing_multiprocessing_or_keeping_it(
    controller: pycrew.Controller,
) -> None:
    probe = "import os, sys\n('multiprocessing' in sys.modules, os.environ.get('PYCREW_AUTHKEY'))"
    assert controller.push(probe).result(timeout=60) == (False, None)
    # imported by a task, multiprocessing has this process's key at once
    key = controller.push(
        "import multiprocessing\nbytes(multiprocessing.current_process().authkey)"
    ).result(timeout=60)
    assert key == bytes(multiprocessing.current_process().authkey)


@needs_initializer
def test_a_shared_controller_stopped_by_a_failing_initializer_is_replaced(
    tmp_path: Path,
) -> None:
    def run() -> list[int]:
        out: list[int] = joblib.Parallel(
            n_jobs=2,
            backend="pycrew",
            initializer=tasks.fail_first_time,
            initargs=(str(tmp_path / "marker"),),
        )(joblib.delayed(tasks.pid)(i) for i in range(4))
        return out

    with pytest.raises(pycrew.CrewError):
        run()
    [broken] = shared_controllers()
    assert len(run()) == 4  # a fresh controller, whose workers' set-up works
    assert shared_controllers() != [broken]
    assert not broken.started()
