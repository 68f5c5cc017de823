"""The sequential controller: a local controller's API, every task run inside push().

Only the seed comparison starts real workers; everything else runs in this
process, in this thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import doctest
import os
import re
import signal
import sys
import textwrap
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    import subprocess

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "debugging.md"
#: the longest a script in a subprocess may take (it never starts a worker)
SCRIPT_SECONDS = 60


class OwnError(Exception):
    """An exception class of the tests, to see it come back as itself."""


def raise_own(message: str) -> None:
    raise OwnError(message)


def where() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


def append_one(items: list[int]) -> list[int]:
    items.append(1)
    return items


def interrupt() -> None:
    raise KeyboardInterrupt


def press_ctrl_c() -> None:
    """What Ctrl-C at the terminal does: SIGINT to this process, here the main thread."""
    signal.raise_signal(signal.SIGINT)


def exit_task() -> None:
    sys.exit(3)


def unpicklable_result() -> Any:
    return threading.Lock()


#: the controller that nested tasks push to (a controller does not pickle)
NESTED: list[pycrew.Controller] = []


def push_nested(x: int) -> int:
    return NESTED[0].push(tasks.add, x, 1).result() * 10


def cancel_by_name(name: str) -> str:
    NESTED[0].cancel(name)
    return name


def script(body: str) -> str:
    return textwrap.dedent(body).lstrip()


def run_script(
    path: Path, code: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the script ``path`` (pdb lists a script's source), feeding it ``stdin``.

    pycrew's own variables and a breakpoint hook of the caller's are left out.
    """
    return run_python(
        code,
        script=path,
        stdin=stdin,
        seconds=SCRIPT_SECONDS,
        unset=lambda name: name.startswith("PYCREW_") or name == "PYTHONBREAKPOINT",
        **env,
    )


# ------------------------------------------------------------------ the API
def test_a_task_ends_inside_push_in_this_thread() -> None:
    with pycrew.sequential_controller(name="seq") as ctl:
        future = ctl.push(where, name="here")
        assert future.done()
        assert ctl.unresolved() == 0
        assert ctl.resolved() == 1
        assert ctl.size() == 1
        assert ctl.wait()
        assert ctl.wait("one", seconds_timeout=0)
        assert not ctl.saturated()
        record = ctl.pop()
        assert record is not None
        assert record.result == (os.getpid(), threading.get_ident())
        assert record.status == "success"
        assert record.code == 0
        assert record.controller == "seq"
        assert record.worker == "main"
        assert record.pid == os.getpid()
        assert ctl.pop() is None
        assert ctl.empty()
        # no workers, no port, nothing to scale
        ctl.launch(3)
        assert ctl.scale() is False
        assert ctl.pids() == []
        assert ctl.url == ""
        assert ctl.workers_status() == {
            "connected": 0,
            "cumulative": 0,
            "launching": 0,
            "failed": 0,
            "bytes_sent": 0,
        }
        assert not [t for t in threading.enumerate() if t.name.startswith("pycrew-")]
        assert repr(ctl) == "<SequentialController 'seq' started>"
    assert not ctl.started()
    assert ctl.resolved() == 0


def test_push_pop_collect_summary_as_a_local_controller() -> None:
    with pycrew.sequential_controller() as ctl:
        ctl.push(tasks.add, 1, 2, name="a")
        ctl.push(tasks.fail, "no", name="b")
        ctl.push("x * 2", data={"x": 21}, name="c")
        first = ctl.pop()
        assert first is not None
        assert (first.name, first.result) == ("a", 3)
        with pytest.raises(pycrew.TaskError, match="ValueError: no"):
            ctl.pop(error="stop")
        # the record was handed over all the same
        rest = ctl.collect()
        assert [(r.name, r.result) for r in rest] == [("c", 42)]
        ctl.push(tasks.add, 1, 1, name="a")  # the name is free again
        summary = ctl.summary()
        assert summary is not None
        assert (summary.tasks, summary.success, summary.error) == (3, 2, 1)
        assert [row.worker for row in ctl.summary(by="worker")] == ["main"]
        with pytest.raises(pycrew.ArgumentError, match="in use"):
            ctl.push(tasks.add, 1, 1, name="a")
    # the summary stays readable after terminate, until the next start
    assert ctl.summary() is not None


def test_map_and_walk() -> None:
    with pycrew.sequential_controller() as ctl:
        records = ctl.map(tasks.add, iterate={"x": [1, 2, 3], "y": [10, 20, 30]})
        assert [r.result for r in records] == [11, 22, 33]
        assert ctl.collect() == []  # map's own tasks
        futures = ctl.walk(tasks.add, iterate={"x": [1, 2], "y": [3, 4]}, names=["p", "q"])
        assert [f.result() for f in futures] == [4, 6]
        with pytest.raises(pycrew.TaskError, match="1 of 2") as caught:
            ctl.map(tasks.add, iterate={"x": [1, "a"], "y": [1, 1]}, error="stop")
        assert isinstance(caught.value.__cause__, TypeError)
        assert ctl.error is not None
        assert len(ctl.error) == 2
        with pytest.warns(pycrew.CrewWarning, match="did not succeed"):
            ctl.map(tasks.fail, ["a"], error="warn")
        quiet = ctl.map(tasks.fail, ["a", "b"], error="silent")
        assert [r.status for r in quiet] == ["error", "error"]


def test_futures_as_for_a_local_controller() -> None:
    with pycrew.sequential_controller() as ctl:
        ok = ctl.push(tasks.add, 2, 3)
        bad = ctl.push(raise_own, "mine")
        called: list[str] = []
        ok.add_done_callback(lambda f: called.append(f.name))
        assert called == [ok.name]
        done, pending = concurrent.futures.wait([ok, bad], timeout=0)
        assert done == {ok, bad}
        assert not pending
        assert set(concurrent.futures.as_completed([ok, bad], timeout=0)) == {ok, bad}
        assert set(pycrew.as_completed([ok, bad])) == {ok, bad}
        assert ok.result() == 5
        error = bad.exception()
        assert isinstance(error, OwnError)
        assert str(error) == "mine"
        assert isinstance(error.__cause__, pycrew.RemoteTraceback)
        assert "raise OwnError(message)" in error.__cause__.trace
        with pytest.raises(OwnError, match="mine"):
            bad.result()

        async def main() -> list[int]:
            futures = [ctl.push(tasks.add, i, i) for i in range(3)]
            streamed = [f async for f in pycrew.as_completed(futures)]
            assert set(streamed) == set(futures)
            records = await ctl.map_async(tasks.add, iterate={"x": [1], "y": [1]})
            assert records[0].result == 2
            return [await f for f in futures]

        assert asyncio.run(main()) == [0, 2, 4]


def test_errors_as_on_workers() -> None:
    with pycrew.sequential_controller() as ctl:
        ctl.push(raise_own, "boom", name="own")
        ctl.push(exit_task, name="exit")
        ctl.push(unpicklable_result, name="result")
        ctl.push("1 / 0", name="code")
        own, exited, result, code = ctl.collect()
    assert own.status == "error"
    assert own.code == -1
    assert own.error == "OwnError: boom"
    assert own.trace is not None
    assert own.trace.rstrip().endswith("OwnError: boom")
    assert "raise OwnError(message)" in own.trace  # the source line, as in any traceback
    assert exited.status == "error"
    assert exited.error == "SystemExit: 3"
    assert result.status == "error"
    assert result.error is not None
    assert "could not be pickled" in result.error
    assert code.status == "error"
    assert code.error == "ZeroDivisionError: division by zero"
    assert code.trace is not None
    assert "1 / 0" in code.trace


def say_then_fail(message: str) -> None:
    print(f"task says {message}", file=sys.stderr)
    warnings.warn("careful", UserWarning, stacklevel=1)
    raise RuntimeError(message)


def test_failing_tasks_print_only_their_own_output(capfd: pytest.CaptureFixture[str]) -> None:
    # a local controller relays what a task prints, never the worker's own
    # "Error: ..." and "Warning: ..." lines about it: neither does this one
    with pycrew.sequential_controller() as ctl:
        records = ctl.map(say_then_fail, ["one", "two"], error="silent", warnings=False)
        ctl.push("1 / 0", name="code")
        code = ctl.pop()
    assert [r.status for r in records] == ["error", "error"]
    assert [r.error for r in records] == ["RuntimeError: one", "RuntimeError: two"]
    assert [r.warnings for r in records] == ["careful", "careful"]
    assert code is not None
    assert code.error == "ZeroDivisionError: division by zero"
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "task says one\ntask says two\n"


def test_a_task_that_cannot_be_pickled_fails_at_push() -> None:
    with pycrew.sequential_controller() as ctl:
        with pytest.raises(pycrew.ArgumentTypeError, match="cannot be pickled"):
            ctl.push(tasks.add, threading.Lock(), 1)
        assert ctl.size() == 0


def test_arguments_and_results_travel_as_copies() -> None:
    import numpy

    items = [0]
    big = numpy.zeros(1 << 18)  # large enough to travel out of band

    def fill(array: Any) -> Any:
        array[:] = 1.0
        return array

    with pycrew.sequential_controller() as ctl:
        assert ctl.push(append_one, items).result() == [0, 1]
        returned = ctl.push(fill, big).result()
    assert items == [0]
    assert big.sum() == 0
    assert returned.sum() == big.size


DRAW = "import random\nrandom.random()"


def test_seeds_are_those_of_a_local_controller() -> None:
    with pycrew.sequential_controller(seed=123) as ctl:
        here = [ctl.push(tasks.draw, name=f"d{i}").result() for i in range(2)]
        walked = [f.result() for f in ctl.walk(DRAW, iterate={"i": [0, 1]}, seed=5)]
        again = ctl.push(tasks.draw, name="d0").result()
        record = ctl.push(tasks.draw, seed=7).record()
    assert again == here[0]
    assert len(set(here)) == 2
    assert record.seed == 7
    with pycrew.local_controller(seed=123) as ctl:
        there = [ctl.push(tasks.draw, name=f"d{i}").result(timeout=30) for i in range(2)]
        walked_there = [f.result(timeout=30) for f in ctl.walk(DRAW, iterate={"i": [0, 1]}, seed=5)]
    assert here == there
    assert walked == walked_there


def test_the_random_state_of_the_caller_is_left_alone() -> None:
    import random

    random.seed(1)
    expected = random.random()
    random.seed(1)
    with pycrew.sequential_controller(seed=3) as ctl:
        ctl.push(tasks.draw).result()
    assert random.random() == expected


def test_warnings_are_captured_and_the_callers_settings_kept() -> None:
    filters = list(warnings.filters)
    shown = warnings.showwarning
    with pycrew.sequential_controller() as ctl:
        record = ctl.push(tasks.warn_then, 4).record()
        assert record.warnings == "warning 4"
        both = ctl.push(tasks.warn_and_fail, "no").record()
        assert both.status == "error"
        assert both.warnings == "this is a warning"
        with pytest.warns(pycrew.CrewWarning, match="1 task\\(s\\) raised warnings"):
            ctl.map(tasks.warn_then, [7])
        quiet = ctl.map(tasks.warn_then, [8], warnings=False)  # filterwarnings=error: no warning
        assert quiet[0].warnings == "warning 8"
        summary = ctl.summary()
        assert summary is not None
        assert summary.warning == 4
    assert warnings.filters == filters
    assert warnings.showwarning is shown
    # the caller's own warnings still follow the caller's filters (pytest's: errors)
    with pytest.raises(UserWarning, match="outside"):
        warnings.warn("outside", UserWarning, stacklevel=1)


def test_tasks_have_a_main_of_their_own_as_on_a_worker() -> None:
    import __main__

    with pycrew.sequential_controller() as ctl:
        assert ctl.push(tasks.set_global, "seq_leftover", 1).result()
        assert not ctl.push(tasks.has_global, "seq_leftover").result()
        assert ctl.push(tasks.has_global, "seq_given", globals={"seq_given": 1}).result()
        assert not ctl.push(tasks.has_global, "seq_given").result()
        # a code string sees its data, not the caller's variables, and leaves them alone
        record = ctl.push("__name__ = 'changed'\nprint").record()
        assert record.status == "success"
        missing = ctl.push("pytest").record()
        assert missing.error == "NameError: name 'pytest' is not defined"
    assert __main__.__name__ == "__main__"
    with pycrew.sequential_controller(reset_globals=False) as ctl:
        ctl.push(tasks.set_global, "seq_leftover", 1).result()
        assert ctl.push(tasks.has_global, "seq_leftover").result()
        assert ctl.push("seq_leftover + 1").result() == 2
    assert not hasattr(__main__, "seq_leftover")


def test_reset_modules_is_honoured() -> None:
    sys.modules.pop("tests.helpers.guide_keyring", None)
    with pycrew.sequential_controller(reset_modules=True) as ctl:
        ctl.push("import tests.helpers.guide_keyring").result()
    assert "tests.helpers.guide_keyring" not in sys.modules


def test_seconds_timeout_is_checked_when_the_task_returns() -> None:
    with pycrew.sequential_controller() as ctl:
        late = ctl.push(tasks.add, 1, 1, seconds_timeout=0).record()
        assert late.status == "timeout"
        assert late.code == 5
        assert late.result is None
        assert late.error is not None
        assert "seconds_timeout" in late.error
        with pytest.raises(pycrew.TaskTimeoutError):
            ctl.push(tasks.add, 1, 1, seconds_timeout=0).result()
        assert ctl.push(tasks.add, 1, 1, seconds_timeout=60).result() == 2


def test_cancel_finds_nothing_to_stop_but_a_task_later_in_line() -> None:
    with pycrew.sequential_controller() as ctl:
        NESTED[:] = [ctl]
        try:
            done = ctl.push(tasks.add, 1, 1, name="done")
            ctl.cancel("done")
            assert not done.cancel()
            assert done.result() == 2
            first, second = ctl.walk(cancel_by_name, ["second", "unused"], names=["a", "second"])
        finally:
            NESTED.clear()
        assert first.result() == "second"
        assert second.cancelled()


def test_a_task_may_push_tasks_of_its_own() -> None:
    with pycrew.sequential_controller() as ctl:
        NESTED[:] = [ctl]
        try:
            assert ctl.push(push_nested, 4).result() == 50
            assert [r.result for r in ctl.map(push_nested, [1, 2])] == [20, 30]
        finally:
            NESTED.clear()


@pytest.mark.parametrize("task", [interrupt, press_ctrl_c])
def test_ctrl_c_in_a_task_is_the_users(task: Any) -> None:
    with pycrew.sequential_controller() as ctl:
        with pytest.raises(KeyboardInterrupt) as caught:
            ctl.push(task, name="stop")
        assert isinstance(caught.value.__cause__, pycrew.RemoteTraceback)
        # the interrupted map() cancels the rest, and collect() may take them all
        with pytest.raises(KeyboardInterrupt):
            ctl.map(lambda x: task() if x == 1 else x, [0, 1, 2], names=["m0", "m1", "m2"])
        records = {r.name: r for r in ctl.collect()}
        assert set(records) == {"stop", "m0", "m1", "m2"}
        assert records["m0"].status == "success"
        assert [records[n].status for n in ("stop", "m1", "m2")] == ["cancel"] * 3
        assert records["m1"].error == "interrupted by KeyboardInterrupt"
        assert ctl.size() == 0
        assert ctl.unresolved() == 0
        assert ctl.push(tasks.add, 1, 2, name="stop").result() == 3


def test_a_sequential_controller_is_no_backup() -> None:
    with pytest.raises(pycrew.ArgumentError, match="cannot be a backup"):
        pycrew.local_controller(backup=pycrew.sequential_controller(name="seq"))


# ---------------------------------------------------------------- debugging
BREAKPOINT_SCRIPT = script(
    """
    import pycrew

    def task(x):
        y = x * 7
        breakpoint()
        return y

    with pycrew.sequential_controller() as ctl:
        print("result", ctl.push(task, 6).result())
    """
)


def test_breakpoint_stops_in_the_task(tmp_path: Path) -> None:
    done = run_script(tmp_path / "debug_me.py", BREAKPOINT_SCRIPT, stdin="p y * 1000\nll\nc\n")
    assert done.returncode == 0, done.stderr
    assert "debug_me.py(6)task()" in done.stdout  # pdb stops in the task, in its file
    assert "42000" in done.stdout
    assert "breakpoint()" in done.stdout  # ll lists the task's source
    assert "result 42" in done.stdout


def test_pythonbreakpoint_0_is_respected(tmp_path: Path) -> None:
    done = run_script(tmp_path / "debug_me.py", BREAKPOINT_SCRIPT, PYTHONBREAKPOINT="0")
    assert done.returncode == 0, done.stderr
    assert "(Pdb)" not in done.stdout
    assert "result 42" in done.stdout


# --------------------------------------------------------------------- docs
@dataclass
class Block:
    line: int
    code: str
    stdin: str
    expected: str | None


def doc_blocks(text: str) -> list[Block]:
    """The page's python blocks, in order.

    A block that reads a terminal is preceded by ``<!-- stdin ... -->``,
    whose lines are its input. A ``text`` block right after a python block
    is what it prints, compared as doctest does with ELLIPSIS.
    """
    fence = re.compile(
        r"(?:<!--\s*stdin\n(?P<stdin>.*?)-->\s*\n)?^```(?P<info>\w*)\n(?P<body>.*?)^```$",
        re.MULTILINE | re.DOTALL,
    )
    blocks: list[Block] = []
    previous: tuple[Block, int] | None = None
    for match in fence.finditer(text):
        if match["info"] == "python":
            line = text.count("\n", 0, match.start("body")) + 1
            block = Block(line, match["body"], match["stdin"] or "", None)
            blocks.append(block)
            previous = (block, match.end())
            continue
        if match["info"] == "text" and previous and not text[previous[1] : match.start()].strip():
            previous[0].expected = match["body"]
        previous = None
    return blocks


def test_every_python_block_of_the_debugging_page_runs(tmp_path: Path) -> None:
    blocks = doc_blocks(DOC.read_text())
    assert len(blocks) >= 6
    assert sum(bool(b.stdin) for b in blocks) >= 2
    checker = doctest.OutputChecker()
    for block in blocks:
        folder = tmp_path / f"block-{block.line}"
        folder.mkdir()
        done = run_script(folder / "script.py", block.code, block.stdin)
        where = f"{DOC.name}:{block.line}"
        assert done.returncode == 0, f"{where} exited with {done.returncode}\n{done.stderr}"
        if block.expected is not None:
            same = checker.check_output(block.expected, done.stdout, doctest.ELLIPSIS)
            assert same, f"{where} printed other output than the page shows:\n{done.stdout}"
