"""pycrew.Executor: the concurrent.futures contract, on real worker processes."""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from tests.helpers import executor_tasks as tasks
from tests.helpers.common import wait_until
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 60  # bound for every wait on a task below


@pytest.fixture
def ex() -> Iterator[pycrew.Executor]:
    """A 2-worker executor with its own controller, shut down after the test."""
    executor = pycrew.Executor(max_workers=2, seconds_interval=0.05)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _flag(tmp_path: Path, name: str = "go") -> str:
    return str(tmp_path / name)


def _subprocess(code: str, seconds: float = 120) -> subprocess.CompletedProcess[str]:
    return run_python(code, seconds=seconds)


# --------------------------------------------------------------- submit
def test_submit_returns_a_task_future_with_the_value(ex: pycrew.Executor) -> None:
    future = ex.submit(pow, 2, 8)
    assert isinstance(future, pycrew.TaskFuture)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=SECONDS) == 256


def test_submit_passes_every_keyword_to_fn(ex: pycrew.Executor) -> None:
    future = ex.submit(tasks.capture, 1, fn=2, self=3, name="n", seed=4, data=5)
    assert future.result(timeout=SECONDS) == (
        (1,),
        {"fn": 2, "self": 3, "name": "n", "seed": 4, "data": 5},
    )
    with pytest.raises(TypeError):
        ex.submit(fn=tasks.capture)  # type: ignore[call-arg]
    with pytest.raises(pycrew.ArgumentTypeError):
        ex.submit("1 + 1")  # type: ignore[arg-type]


def test_a_task_error_is_raised_as_its_own_type_with_the_worker_traceback(
    ex: pycrew.Executor,
) -> None:
    future = ex.submit(divmod, 1, 0)
    with pytest.raises(ZeroDivisionError) as caught:
        future.result(timeout=SECONDS)
    assert isinstance(caught.value.__cause__, pycrew.RemoteTraceback)
    assert isinstance(future.exception(timeout=0), ZeroDivisionError)


# ------------------------------------------------------------------ map
def test_map_yields_in_input_order_with_any_chunksize(ex: pycrew.Executor) -> None:
    expected = list(map(pow, range(30), range(30)))
    for chunksize in (1, 4, 30, 100):
        assert list(ex.map(pow, range(30), range(30), chunksize=chunksize)) == expected
    assert list(ex.map(pow, [], [])) == []
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        ex.map(pow, [1], [1], chunksize=0)


def test_map_returns_before_the_results_exist(ex: pycrew.Executor, tmp_path: Path) -> None:
    flag = _flag(tmp_path)
    results = ex.map(tasks.wait_file, [flag, flag, flag])
    # map() returned while every task waits for the flag: it did not wait for them
    Path(flag).touch()
    assert list(results) == [True, True, True]


def test_map_with_buffersize_reads_an_endless_iterable(ex: pycrew.Executor) -> None:
    squares = ex.map(pow, itertools.count(), itertools.repeat(2), buffersize=3)
    assert [next(squares) for _ in range(8)] == [i * i for i in range(8)]
    squares.close()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="buffersize"):
        ex.map(pow, [1], [1], buffersize=0)


def test_map_raises_a_task_error_when_its_turn_comes(ex: pycrew.Executor) -> None:
    results = ex.map(divmod, [1, 1, 1], [2, 0, 3])
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_keeps_no_reference_to_a_result_it_yielded(ex: pycrew.Executor) -> None:
    for obj in ex.map(tasks.box, range(6)):
        ref = weakref.ref(obj)
        del obj
        # the dispatcher thread lets go of a result a moment after it arrives
        wait_until(lambda r=ref: gc.collect() >= 0 and r() is None, SECONDS, "the result freed")


def test_map_timeout_raises_and_cancels_the_rest(
    controller: pycrew.Controller, tmp_path: Path
) -> None:
    ex = controller.executor()
    never = _flag(tmp_path)
    results = ex.map(tasks.wait_file, [never, never], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(results)
    results.close()  # type: ignore[attr-defined]
    wait_until(lambda: controller.unresolved() == 0, SECONDS, "the late tasks to be cancelled")
    ex.shutdown()


# ---------------------------------------------------- wait / as_completed
def test_futures_work_with_wait_and_as_completed(ex: pycrew.Executor, tmp_path: Path) -> None:
    flag = _flag(tmp_path)
    quick = ex.submit(pow, 3, 2)
    failing = ex.submit(divmod, 1, 0)
    slow = ex.submit(tasks.wait_file, flag)
    every: list[concurrent.futures.Future[Any]] = [quick, failing, slow]
    done, pending = concurrent.futures.wait(
        every, timeout=SECONDS, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert failing in done
    assert slow in pending
    Path(flag).touch()
    finished = list(concurrent.futures.as_completed(every, timeout=SECONDS))
    assert set(finished) == {quick, failing, slow}
    assert slow.result(timeout=0) is True


# ------------------------------------------------------------- shutdown
def test_shutdown_wait_true_waits_and_terminates_its_own_controller(tmp_path: Path) -> None:
    ex = pycrew.Executor(max_workers=2, seconds_interval=0.05)
    futures = [ex.submit(pow, i, 2) for i in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(6)]
    assert not ex.controller.started()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 2, 2)
    ex.shutdown()  # again: nothing happens


def test_shutdown_wait_false_returns_and_the_work_still_finishes(tmp_path: Path) -> None:
    ex = pycrew.Executor(max_workers=1, seconds_interval=0.05)
    flag = _flag(tmp_path)
    future = ex.submit(tasks.wait_file, flag)
    ex.shutdown(wait=False)
    assert not future.done()  # it waits for the flag, which nobody made yet
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 2)
    Path(flag).touch()
    assert future.result(timeout=SECONDS) is True
    wait_until(lambda: not ex.controller.started(), SECONDS, "the own controller to terminate")


@pytest.mark.parametrize("prefetch", [True, False])
def test_shutdown_cancel_futures_cancels_what_no_worker_started(
    tmp_path: Path, prefetch: bool
) -> None:
    # seconds_wall makes a worker hold one task at a time (no prefetch); with
    # prefetch, the busy worker holds the small tasks behind the one it runs
    options = {} if prefetch else {"seconds_wall": 3600}
    ex = pycrew.Executor(max_workers=1, seconds_interval=0.05, **options)
    flag = _flag(tmp_path)
    running = ex.submit(tasks.wait_file, flag)
    wait_until(running.running, SECONDS, "the first task to start")
    queued = [ex.submit(pow, i, 2) for i in range(5)]
    dispatcher = ex.controller._dispatcher
    assert dispatcher is not None
    held = sum(len(conn.tasks) for conn in dispatcher.workers.values())
    assert held == (6 if prefetch else 1)
    assert running.running()
    assert not any(f.running() for f in queued)  # held is not started
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(concurrent.futures.CancelledError):
        queued[0].result(timeout=0)
    assert not running.cancelled()
    Path(flag).touch()
    assert running.result(timeout=SECONDS) is True
    wait_until(lambda: not ex.controller.started(), SECONDS, "the own controller to terminate")


def test_cancel_futures_cancels_most_of_a_long_queue_on_few_workers() -> None:
    """As the standard library's own test asks: 50 tasks of 0.1 s on 5 workers, then
    shutdown(cancel_futures=True): many are cancelled, however they were spread."""
    ex = pycrew.Executor(max_workers=5, seconds_interval=0.05)
    assert list(ex.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
    futures = [ex.submit(time.sleep, 0.1) for _ in range(50)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert sum(f.cancelled() for f in futures) > 20
    assert all(f.done() for f in futures)


def test_context_manager_shuts_down() -> None:
    with pycrew.Executor(max_workers=2, seconds_interval=0.05) as ex:
        assert list(ex.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]
    assert not ex.controller.started()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)


def test_controller_executor_leaves_the_controller_running(
    controller: pycrew.Controller,
) -> None:
    ex = controller.executor()
    assert ex.controller is controller
    assert ex.submit(pow, 2, 5).result(timeout=SECONDS) == 32
    assert list(ex.map(pow, [2, 3], [2, 2])) == [4, 9]
    ex.shutdown()
    assert controller.started()
    assert controller.collect() == []  # executor tasks are its own, never collected
    assert controller.push(pow, 2, 3).result(timeout=SECONDS) == 8


def test_submit_from_an_atexit_hook_raises_runtime_error() -> None:
    code = textwrap.dedent(
        """
        import atexit
        import pycrew

        def late():
            try:
                ex.submit(abs, -1)
            except RuntimeError as exc:
                print("refused:", exc)

        atexit.register(late)
        ex = pycrew.Executor(max_workers=1, seconds_interval=0.05)
        print("before:", ex.submit(abs, -7).result(timeout=60))
        """
    )
    done = _subprocess(code)
    assert done.returncode == 0, done.stderr
    assert "before: 7" in done.stdout
    assert "refused: cannot schedule new futures after interpreter shutdown" in done.stdout


def test_what_tasks_print_reaches_the_terminal_as_printed() -> None:
    # as from a ProcessPoolExecutor's children (CPython's test_interpreter_shutdown
    # reads it so); a controller's own relay_output keeps each task's name before it
    code = textwrap.dedent(
        """
        import sys
        import pycrew

        def say(word):
            print("out:", word)
            print("err:", word, file=sys.stderr)
            print("no line end", end="")
            return word

        if __name__ == "__main__":
            with pycrew.Executor(max_workers=1, seconds_interval=0.05) as ex:
                assert ex.submit(say, "plain").result(timeout=60) == "plain"
            with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
                with ctl.executor() as shared:
                    future = shared.submit(say, "named")
                    assert future.result(timeout=60) == "named"
            print("done")
        """
    )
    done = _subprocess(code)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    err = done.stderr.splitlines()
    assert out[0] == "out: plain"
    assert out[1].startswith("no line end")  # the text ends where the task left it
    assert "err: plain" in err
    named = [line for line in out if "out: named" in line]
    assert len(named) == 1
    assert re.search(r"\[\w+\] out: named$", named[0])
    assert any(re.fullmatch(r"\[\w+\] err: named", line) for line in err)
    assert out[-1] == "done"


# ---------------------------------------------------------- initializer
def test_initializer_runs_once_in_each_worker_before_its_first_task() -> None:
    with pycrew.Executor(
        max_workers=2, initializer=tasks.count_init, initargs=("ready",), seconds_interval=0.05
    ) as ex:
        states = [
            f.result(timeout=SECONDS) for f in [ex.submit(tasks.init_state) for _ in range(12)]
        ]
    for _, inits in states:
        assert inits == ["ready"]
    assert 1 <= len({pid for pid, _ in states}) <= 2


def test_a_failing_initializer_breaks_the_executor(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pycrew")
    ex = pycrew.Executor(max_workers=2, initializer=tasks.broken_init, seconds_interval=0.05)
    try:
        futures = [ex.submit(tasks.init_state) for _ in range(3)]
        for future in futures:
            with pytest.raises(concurrent.futures.BrokenExecutor) as caught:
                future.result(timeout=SECONDS)
            assert isinstance(caught.value, pycrew.BrokenExecutorError)
            assert "ValueError: error in initializer" in str(caught.value)
        wait_until(lambda: bool(ex._broken), SECONDS, "the executor to be broken")
        with pytest.raises(pycrew.BrokenExecutorError, match="initializer"):
            ex.submit(tasks.init_state)
        assert any("ValueError: error in initializer" in r.getMessage() for r in caplog.records)
    finally:
        ex.shutdown()


# ------------------------------------------------------------ arguments
@pytest.mark.parametrize("bad", [0, -1])
def test_max_workers_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0") as caught:
        pycrew.Executor(max_workers=bad)
    assert isinstance(caught.value, pycrew.ArgumentError)


def test_bad_arguments_raise_pycrew_errors(controller: pycrew.Controller) -> None:
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.Executor(max_workers="2")  # type: ignore[arg-type]
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.Executor(max_workers=1, no_such_option=1)
    with pytest.raises(pycrew.ArgumentError, match="max_workers"):
        pycrew.Executor(max_workers=2, controller=controller)
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.Executor(initializer=3)  # type: ignore[arg-type]
    with pytest.raises(pycrew.ArgumentTypeError):
        pycrew.Executor(controller="ctl")  # type: ignore[arg-type]


# --------------------------------------------------------------- typing
def test_mypy_checks_submit_arguments_against_fn(tmp_path: Path) -> None:
    snippet = tmp_path / "typed.py"
    snippet.write_text(
        textwrap.dedent(
            """
            import pycrew

            def square(x: int) -> int:
                return x * x

            def use(ex: pycrew.Executor) -> int:
                good: int = ex.submit(square, 2).result()
                ex.submit(square, "three")
                return good
            """
        )
    )
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout
    assert re.search(r"typed\.py:\d+: error: Argument 2 to \"submit\"", errors[0]), errors


# ----------------------------------------------------------------- docs
def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "executor.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("index", range(len(_doc_examples())))
def test_docs_examples_run(index: int) -> None:
    done = _subprocess(_doc_examples()[index])
    assert done.returncode == 0, done.stdout + done.stderr
