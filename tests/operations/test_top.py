"""``pycrew top``: the command line against running controllers with real workers.

The test process runs the controllers; ``pycrew top`` runs as another
process with the same state folder, as a person would run it: once with
pipes (``--once``, ``--json``, the choosing of a controller), and live under
a real pseudo-terminal (pexpect), where it must redraw, obey ``q`` and
Ctrl-C, and notice its controller ending. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew._operations import _top
from tests.helpers import tasks
from tests.helpers.common import wait_until
from tests.operations.test_channel import WAIT, run_tasks, serving

if TYPE_CHECKING:
    import pexpect

ROOT = Path(__file__).resolve().parents[2]
#: ANSI escapes: colours, cursor moves, the alternate screen, window titles
ESCAPES = re.compile(
    r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])"
)
#: pexpect forks a process that has threads (the controller's): Python 3.12 warns of it
FORK_WARNING = "ignore:.*multi-threaded.*fork.*:DeprecationWarning"


def pycrew_cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycrew", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "COLUMNS": str(columns)},
        cwd=ROOT,
    )


def controller(name: str, workers: int = 2) -> pycrew.Controller:
    return pycrew.local_controller(name=name, workers=workers, seconds_interval=0.05)


# ------------------------------------------------------------ one frame, JSON
def test_once_prints_one_frame_of_a_running_controller(state_dir: Path) -> None:
    ctl = controller("frames")
    with serving(ctl):
        run_tasks(ctl, 5)
        ctl.push(tasks.fail, "a task that fails", name="fails")
        ctl.push(tasks.sleep, 300, name="sleeper")
        pycrew_wait_running(ctl, "sleeper")
        out = pycrew_cli("top", "frames", "--once")
        assert out.returncode == 0, out.stderr
        screen = out.stdout
        assert "pycrew top" in screen
        assert "frames" in screen
        assert ctl.url in screen
        assert re.search(r"\b5 success\b", screen)
        assert re.search(r"\b1 error\b", screen)
        assert "ValueError: a task that fails" in screen  # recent errors
        assert "sleeper" in screen  # a worker row's task, and the slowest tasks
        assert "tests.helpers.tasks.sleep" in screen
        assert re.search(r"frames-\d+ +busy", screen)
        for header in ("ID", "STATE", "PID/JOB", "HOST", "TASK", "FOR", "DONE", "CPU", "RSS"):
            assert header in screen
        assert "recent events" in screen
        assert "connect" in screen


def pycrew_wait_running(ctl: pycrew.Controller, name: str) -> None:
    """Until task ``name`` runs on a worker, as the controller's own state says."""

    def running() -> bool:
        return any(row["task"] == name for row in ctl.status()["worker_rows"])

    wait_until(running, WAIT, f"task {name!r} to run")


def test_json_prints_the_raw_state(state_dir: Path) -> None:
    ctl = controller("raw")
    with serving(ctl):
        run_tasks(ctl, 4)
        out = pycrew_cli("top", "raw", "--json")
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["controller"] == "raw"
        assert state["pid"] == os.getpid()
        assert state["url"] == ctl.url
        assert state["tasks"]["success"] == 4
        assert {"workers", "worker_rows", "events", "stream", "memory"} <= set(state)
        assert len(state["stream"]) == 4


def test_the_name_may_be_left_out_when_one_controller_runs(state_dir: Path) -> None:
    ctl = controller("alone")
    with serving(ctl):
        out = pycrew_cli("top", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["controller"] == "alone"
        by_pid = pycrew_cli("top", str(os.getpid()), "--json")
        assert by_pid.returncode == 0, by_pid.stderr
        assert json.loads(by_pid.stdout)["controller"] == "alone"
        piped = pycrew_cli("top")  # no terminal to redraw on: one frame
        assert piped.returncode == 0, piped.stderr
        assert "pycrew top  alone" in piped.stdout


def test_several_controllers_need_a_name(state_dir: Path) -> None:
    first, second = controller("first", 1), controller("second", 1)
    with serving(first), serving(second):
        out = pycrew_cli("top", "--once")
        assert out.returncode == 2
        assert "2 controllers run; name one" in out.stderr
        assert "first" in out.stderr
        assert "second" in out.stderr
        assert out.stdout == ""
        unknown = pycrew_cli("top", "third", "--once")
        assert unknown.returncode == 1
        assert "no controller 'third' runs; these do: first, second" in unknown.stderr
        chosen = pycrew_cli("top", "second", "--json")
        assert chosen.returncode == 0, chosen.stderr
        assert json.loads(chosen.stdout)["controller"] == "second"


def test_no_controller_running_is_said_plainly(state_dir: Path) -> None:
    out = pycrew_cli("top", "--once")
    assert out.returncode == 1
    assert "no controller of yours runs on this host" in out.stderr
    named = pycrew_cli("top", "anything")
    assert named.returncode == 1
    assert "no controller of yours runs" in named.stderr


def test_dashboard_without_a_controller_says_so(state_dir: Path) -> None:
    out = pycrew_cli("dashboard")
    assert out.returncode == 1
    assert "pycrew dashboard: no controller of yours runs" in out.stderr


def test_dashboard_serves_a_running_controller_from_another_process(state_dir: Path) -> None:
    pytest.importorskip("aiohttp", reason="the dashboard needs pycrew[dashboard]")
    pytest.importorskip("plotly", reason="the dashboard needs pycrew[dashboard]")
    ctl = controller("board")
    with serving(ctl):
        run_tasks(ctl, 3)
        board = subprocess.Popen(
            [sys.executable, "-m", "pycrew", "dashboard", "board"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            line = first_line(board)
            assert line.startswith("dashboard of 'board'")
            url = line.rsplit(" ", 1)[1]
            base, _, token = url.partition("/?token=")
            assert base.startswith("http://127.0.0.1:")
            request = urllib.request.Request(
                f"{base}/api/status", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=WAIT) as reply:
                state = json.load(reply)
            assert state["controller"] == "board"
            assert state["tasks"]["success"] == 3
            with pytest.raises(urllib.error.HTTPError, match="403"):
                urllib.request.urlopen(f"{base}/api/status", timeout=WAIT)
            board.send_signal(signal.SIGINT)
            assert board.wait(WAIT) == 0
            assert "Traceback" not in (board.stderr.read() if board.stderr else "")
        finally:
            board.kill()
            board.wait(WAIT)
            for stream in (board.stdout, board.stderr):
                if stream is not None:
                    stream.close()


def first_line(process: subprocess.Popen[str]) -> str:
    """The first line ``process`` prints, within ``WAIT`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], WAIT)
    assert ready, f"nothing printed in {WAIT} s"
    return process.stdout.readline().strip()


def test_dashboard_refuses_a_public_address_unless_told(state_dir: Path) -> None:
    out = pycrew_cli("dashboard", "--host", "0.0.0.0")
    assert out.returncode == 2
    assert "not loopback" in out.stderr
    assert "--allow-public" in out.stderr


# ------------------------------------------------------------ live, on a terminal
def spawn_top(*args: str) -> pexpect.spawn:
    pexpect = pytest.importorskip("pexpect", reason="pexpect drives the terminal (pycrew[test])")
    return pexpect.spawn(
        sys.executable,
        ["-m", "pycrew", "top", *args],
        cwd=str(ROOT),
        env={**os.environ, "TERM": "xterm-256color"},
        dimensions=(50, 180),
        encoding="utf-8",
        codec_errors="replace",
        timeout=WAIT,
    )


def screen_until(child: pexpect.spawn, pattern: str, seconds: float = WAIT) -> str:
    """What ``child`` drew from now until its text (escapes removed) matches ``pattern``."""
    import pexpect

    deadline = time.monotonic() + seconds
    drawn = ""
    while True:
        text = ESCAPES.sub("", drawn)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} after {seconds} s; the end:\n{text[-3000:]}")
        try:
            drawn += child.read_nonblocking(65536, timeout=0.5)
        except pexpect.TIMEOUT:
            continue
        except pexpect.EOF:
            text = ESCAPES.sub("", drawn)
            if re.search(pattern, text):
                return text
            raise AssertionError(
                f"top ended before {pattern!r}; it drew:\n{text[-3000:]}"
            ) from None


def ended(child: pexpect.spawn) -> tuple[int | None, str]:
    """Wait (bounded) for ``child`` to end: its exit status and what it drew last."""
    import pexpect

    child.expect(pexpect.EOF, timeout=WAIT)
    rest = ESCAPES.sub("", child.before or "")
    child.close()
    return child.exitstatus, rest


@pytest.mark.filterwarnings(FORK_WARNING)
def test_live_view_redraws_and_quits_on_q(state_dir: Path) -> None:
    ctl = controller("live")
    with serving(ctl):
        ctl.push(tasks.sleep, 300, name="sleeper")
        pycrew_wait_running(ctl, "sleeper")
        child = spawn_top("live", "--interval", "0.2")
        try:
            screen = screen_until(child, r"live-\d+ +busy")
            assert "pycrew top" in screen
            assert "sleeper" in screen
            assert re.search(r"\b0 success\b", screen)
            run_tasks(ctl, 7)
            screen_until(child, r"\b7 success\b")  # the same view, redrawn
            child.send("q")
            status, _ = ended(child)
            assert status == 0
        finally:
            child.close(force=True)


@pytest.mark.filterwarnings(FORK_WARNING)
def test_live_view_ends_cleanly_on_ctrl_c(state_dir: Path) -> None:
    ctl = controller("interrupted", 1)
    with serving(ctl):
        child = spawn_top("interrupted", "--interval", "0.2")
        try:
            screen_until(child, r"pycrew top +interrupted")
            child.sendintr()
            status, rest = ended(child)
            assert status == 0
            assert "Traceback" not in rest
        finally:
            child.close(force=True)


@pytest.mark.filterwarnings(FORK_WARNING)
def test_live_view_says_when_its_controller_ends(state_dir: Path) -> None:
    ctl = controller("leaving", 1)
    child = None
    try:
        with serving(ctl):
            child = spawn_top("leaving", "--interval", "0.2")
            screen_until(child, r"pycrew top +leaving")
        # serving() terminated it: its channel is gone
        status, rest = ended(child)
        assert status == 1
        assert "controller 'leaving'" in rest
        assert "has ended" in rest
        assert "Traceback" not in rest
    finally:
        if child is not None:
            child.close(force=True)


# ------------------------------------------------------------ formatting
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (-1, "-"), (0, "0.0s"), (4.25, "4.2s"), (192, "3m12s"), (7500, "2h05m")],
)
def test_durations_read_at_a_glance(seconds: Any, shown: str) -> None:
    assert _top.duration(seconds) == shown


@pytest.mark.parametrize(
    ("n", "shown"), [(None, "-"), (512, "512 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")]
)
def test_sizes_in_binary_units(n: Any, shown: str) -> None:
    assert _top.size(n) == shown


def test_a_frame_of_a_state_from_another_version_still_draws() -> None:
    """A newer or older controller's state may lack fields or hold odd ones."""
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(_top.frame({"controller": "odd", "workers": "?", "worker_rows": [{}]}, []))
    text = console.export_text()
    assert "pycrew top  odd" in text
    assert "0 connected" in text
