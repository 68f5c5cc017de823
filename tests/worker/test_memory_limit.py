"""A worker with a memory limit ($PYCREW_MEMORY_MAX) ends a task that goes over it:
the task is a crash, and the next task gets a fresh worker."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew
from pycrew._resources import MEMORY_ENV
from pycrew._wire._frames import Kind
from pycrew._worker import _memory
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WAIT = 60
LIMIT = 300_000_000
#: a child that takes CHILD_MB and says so, then waits for its stdin to close
CHILD = """
import sys
held = bytearray({mb} * 1_000_000)
print("ready", flush=True)
sys.stdin.read()
"""
CHILD_MB = 200


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> Iterator[pycrew.Controller]:
    """A one-worker local controller whose workers may use LIMIT bytes."""
    # local workers inherit the controller's environment
    monkeypatch.setenv(MEMORY_ENV, str(LIMIT))
    ctl = pycrew.local_controller(workers=1)
    try:
        yield ctl
    finally:
        ctl.terminate()


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    """A child process of this one that holds CHILD_MB."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(mb=CHILD_MB)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)


def crash_of(future: pycrew.TaskFuture[object]) -> pycrew.TaskCrashError:
    exc = future.exception(timeout=WAIT)
    assert isinstance(exc, pycrew.TaskCrashError), exc
    assert exc.record.status.value == "crash"
    return exc


# ------------------------------------------------------------ real workers
def test_a_task_over_its_memory_limit_crashes_and_the_next_runs(
    limited: pycrew.Controller,
) -> None:
    crash_of(limited.push(tasks.hold_memory, 2 * LIMIT // 1_000_000))
    # a fresh worker with the same limit: a task well under it succeeds
    assert limited.push(tasks.hold_memory, 10, 0.0).result(timeout=WAIT) == 10


def test_the_crash_names_the_memory_limit(limited: pycrew.Controller) -> None:
    exc = crash_of(limited.push(tasks.hold_memory, 2 * LIMIT // 1_000_000))
    reason = exc.record.error or ""
    assert "memory" in reason
    assert "300 MB" in reason


def test_the_memory_of_a_tasks_child_counts_and_the_child_is_ended(
    limited: pycrew.Controller, tmp_path: Path
) -> None:
    where = tmp_path / "child.pid"
    crash_of(limited.push(tasks.hold_memory_in_child, 2 * LIMIT // 1_000_000, str(where)))
    child = int(where.read_text())
    wait_until(lambda: gone(child), WAIT, "the task's child to end")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_task_holding_the_gil_is_still_ended(limited: pycrew.Controller) -> None:
    # the worker's memory thread never runs: its watchdog ends it instead
    crash_of(limited.push(tasks.hold_memory_and_gil, 2 * LIMIT // 1_000_000))
    assert limited.push(tasks.add, 1, 2).result(timeout=WAIT) == 3


# ------------------------------------------------------------- the sample
def test_a_sample_counts_this_process_and_its_children(child: subprocess.Popen[str]) -> None:
    total, tree = _memory.used()
    assert child.pid in tree
    # this process's own size moves between two reads: the child's share is what matters
    assert total - psutil.Process().memory_info().rss > 0.9 * CHILD_MB * 1_000_000
    alone, tree = _memory.used(skip=child.pid)
    assert child.pid not in tree
    assert total - alone > 0.9 * CHILD_MB * 1_000_000


def test_a_sample_of_a_process_alone_is_its_resident_size() -> None:
    total, tree = _memory.used()
    assert sorted(tree) == sorted(c.pid for c in psutil.Process().children(recursive=True))
    rss = psutil.Process().memory_info().rss
    assert 0.5 * rss < total < 2 * rss


def test_the_last_words_name_the_peak_and_the_limit() -> None:
    words = _memory.last_words(612_345_678, LIMIT)
    assert "612 MB" in words
    assert "300 MB" in words
    assert "memory" in words


def test_the_limit_is_read_from_the_variable_resources_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _memory.LIMIT_ENV == MEMORY_ENV
    assert pycrew.Resources(memory=LIMIT).environment()[MEMORY_ENV] == str(LIMIT)
    monkeypatch.setenv(MEMORY_ENV, str(LIMIT))
    assert _memory.limit() == LIMIT
    monkeypatch.setenv(MEMORY_ENV, "not a number")
    assert _memory.limit() == 0
    monkeypatch.delenv(MEMORY_ENV)
    assert _memory.limit() == 0


def test_last_words_is_a_kind_of_its_own() -> None:
    assert Kind.LAST_WORDS == 25
    assert len({k.value for k in Kind}) == len(Kind)


def test_an_unlimited_worker_has_no_guard() -> None:
    assert os.environ.get(MEMORY_ENV) is None
    with pycrew.local_controller(workers=1) as ctl:
        threads, watchdog = ctl.push(tasks.worker_threads_and_watchdog).result(timeout=WAIT)
    assert "pycrew-memory" not in threads
    # its watchdog has no limit either: the command line of old
    assert len(watchdog) == 7


def test_a_limited_worker_tells_its_watchdog(limited: pycrew.Controller) -> None:
    threads, watchdog = limited.push(tasks.worker_threads_and_watchdog).result(timeout=WAIT)
    assert "pycrew-memory" in threads
    assert watchdog[7] == str(LIMIT)
