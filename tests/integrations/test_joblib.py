"""The joblib backend: real workers, joblib and scikit-learn, and the examples of docs/joblib.md."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

import pycrew  # noqa: E402
import pycrew.joblib  # noqa: E402
from tests.helpers import joblib_tasks  # noqa: E402
from tests.helpers.common import wait_until  # noqa: E402
from tests.helpers.common import workers as _workers  # noqa: E402
from tests.helpers.scripts import run_python  # noqa: E402

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


def test_a_controller_made_for_the_call_runs_in_workers_and_ends_with_the_call() -> None:
    with joblib.parallel_config(backend="pycrew", n_jobs=2, seconds_interval=0.05):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(20))
        # the call has returned: its workers are gone, though the block is still open
        wait_until(lambda: not _workers(), 10, "the call's workers to end")
    assert [value for value, _ in out] == [i * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in out}


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
def test_parallel_on_slurm_jobs_made_for_the_call_leaves_no_job() -> None:
    from tests.engines.test_slurm import _cluster_problem, _our_jobs

    _skip_without_cluster(_cluster_problem)
    with joblib.parallel_config(
        backend="pycrew", launcher="slurm", workers=2, seconds_interval=0.1
    ):
        out = joblib.Parallel()(joblib.delayed(joblib_tasks.square_and_pid)(i) for i in range(20))
        # the call has returned: its jobs are cancelled or ended
        wait_until(lambda: _our_jobs() == [], 20, "the call's jobs to leave the queue")
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
