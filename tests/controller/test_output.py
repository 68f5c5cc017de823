"""Task output relayed to the controller's terminal, each line after its task's name."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pycrew
from tests.helpers import tasks
from tests.helpers.scripts import run_python

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

WAIT = 60

SCRIPT = """
import sys
import pycrew

def greet(who):
    print("hello", who)
    print("to stderr", file=sys.stderr)
    sys.stdout.write("in ")
    sys.stdout.write("pieces\\n")
    sys.stdout.write("no line end")
    return who

with pycrew.local_controller(workers=1{options}) as ctl:
    print("result", ctl.push(greet, "world", name="greeter").result(timeout=120))
    ctl.push(greet, "again", name="second").result(timeout=120)
"""


def test_a_local_controller_shows_what_tasks_print(tmp_path: Path) -> None:
    done = run_python(textwrap.dedent(SCRIPT.format(options="")), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "[greeter] hello world" in out
    assert "[greeter] in pieces" in out
    assert "[greeter] no line end" in out
    assert "[second] hello again" in out
    # printed lines arrive before the result that follows them
    assert out.index("[greeter] hello world") < out.index("result world")
    assert "[greeter] to stderr" in done.stderr.splitlines()
    # pycrew's own lines about a task stay in the worker's log
    assert "Warning:" not in done.stdout + done.stderr


def test_relay_output_false_keeps_task_output_off_the_terminal(tmp_path: Path) -> None:
    code = textwrap.dedent(SCRIPT.format(options=", relay_output=False"))
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "hello" not in done.stdout + done.stderr
    assert "result world" in done.stdout


def test_relayed_output_in_process(capfd: pytest.CaptureFixture[str]) -> None:
    with pycrew.local_controller(workers=1) as ctl:
        assert ctl.push(tasks.shout, "hi", name="loud").result(timeout=WAIT) == "hi"
        ctl.push(tasks.add, 1, 2).result(timeout=WAIT)  # the dispatcher has printed by now
    out, err = capfd.readouterr()
    assert "[loud] out: hi" in out.splitlines()
    assert "[loud] in pieces" in out.splitlines()
    assert "[loud] err: hi" in err.splitlines()


def test_a_cancelled_task_that_prints_without_end_leaves_the_worker_in_step(
    tmp_path: Path,
) -> None:
    code = textwrap.dedent(
        """
        import logging
        import os
        import sys
        import time
        import pycrew

        logging.basicConfig(level=logging.INFO)  # the controller's word on dropped workers

        def chatter():
            while True:
                print("x" * 200)

        with pycrew.local_controller(workers=1) as ctl:
            busy = ctl.push(chatter)
            time.sleep(0.5)
            ctl.cancel(all=True)
            # on stderr: the task's relayed lines fill stdout meanwhile
            print("status", busy.record(timeout=60).status, file=sys.stderr)
            print("after", ctl.push(pow, 2, 5).result(timeout=60), file=sys.stderr)
            ctl.push(os.getpid).result(timeout=60)
        """
    )
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "status cancel" in lines
    assert "after 32" in lines
    # an interrupt never lands inside a frame: the worker stays in step
    # (killed after the grace, perhaps, on a busy machine: never cut off)
    assert "broke the protocol" not in done.stderr
    assert any(line.startswith("[unnamed_task_") for line in done.stdout.splitlines())


def test_cluster_controllers_leave_relaying_off_by_default() -> None:
    ctl = pycrew.slurm_controller(host="127.0.0.1")
    assert ctl.relay_output is False
    assert pycrew.local_controller().relay_output is True
