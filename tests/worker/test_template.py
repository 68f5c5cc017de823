"""Local workers forked from a template process: cheap, and just like a fresh one."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from typing import TYPE_CHECKING

import psutil

import pycrew
from pycrew._wire import _frames
from tests.helpers.common import wait_until
from tests.helpers.scripts import alive, controller_script

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

WAIT = 60


def lineage() -> tuple[int, int]:
    return os.getpid(), os.getppid()


def environment(name: str) -> str | None:
    return os.environ.get(name)


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def templates() -> list[psutil.Process]:
    """Template processes started by this test process."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--template" in proc.cmdline() and proc.ppid() == os.getpid():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def first_forked(ctl: pycrew.Controller) -> tuple[int, int]:
    """Run tasks until one runs on a forked worker: (its pid, the template's).

    The first workers start directly while the template imports; a worker
    that stays is made to leave, so that the next one may come forked.
    """
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pid, parent = ctl.push(lineage).result(timeout=WAIT)
        if parent != os.getpid():
            return pid, parent
        if ctl.tasks_max != 1:
            assert ctl.push(os._exit, 0).record(timeout=WAIT).status == "crash"
    raise AssertionError("no worker came from the template")


def test_transient_workers_are_forked_from_the_template() -> None:
    with pycrew.local_controller(workers=2, tasks_max=1) as ctl:
        _, template = first_forked(ctl)
        assert [p.pid for p in templates()] == [template]
        runs = [f.result(timeout=WAIT) for f in [ctl.push(lineage) for _ in range(20)]]
        # one task per process, each a fresh fork of the template
        assert len({pid for pid, _ in runs}) == 20
        assert {parent for _, parent in runs} == {template}
        assert all(r.status == "success" for r in ctl.collect())
    # terminate() ends the template too (the leak check covers the workers)
    assert not psutil.pid_exists(template) or psutil.Process(template).status() == "zombie"


def test_the_template_holds_no_thread_socket_or_secret_of_the_controller() -> None:
    with pycrew.local_controller(workers=1, tls="automatic") as ctl:
        worker, template = first_forked(ctl)
        secret = ctl._env[_frames.SECRET_ENV]
        # the scan finds it where it is: in the worker that it reached
        assert secret.encode() in memory_of(worker)
        proc = psutil.Process(template)
        assert proc.num_threads() == 1
        assert proc.net_connections(kind="inet") == []
        assert _frames.SECRET_ENV not in proc.environ()
        held = memory_of(template)
        assert secret.encode() not in held
        assert bytes.fromhex(secret) not in held
        # the workers it forked connected with it, and keep it from their tasks
        assert ctl.push(environment, _frames.SECRET_ENV).result(timeout=WAIT) is None


def memory_of(pid: int) -> bytes:
    """Every readable writable mapping of a process (ours to read: a descendant)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except OSError:
                continue
    return b"".join(chunks)


def test_a_forked_worker_gets_the_environment_a_fresh_one_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pycrew.local_controller(workers=1, env={"FROM_ENV": "yes"}, tasks_max=1) as ctl:
        first_forked(ctl)
        # set after the template started: a worker started now still sees it
        monkeypatch.setenv("SET_LATER", "later")
        _pid, parent = ctl.push(lineage).result(timeout=WAIT)
        assert parent != os.getpid()
        assert ctl.push(environment, "FROM_ENV").result(timeout=WAIT) == "yes"
        assert ctl.push(environment, "SET_LATER").result(timeout=WAIT) == "later"
        # the worker's id, and the start-up log it left once connected
        worker = ctl.push(environment, _frames.WORKER_ENV).result(timeout=WAIT)
        assert re.fullmatch(rf"{ctl.name}-\d+", worker or "")


def test_a_killed_forked_worker_is_a_crash_and_a_killed_template_is_replaced() -> None:
    with pycrew.local_controller(workers=1, tasks_max=1) as ctl:
        _, template = first_forked(ctl)
        future = ctl.push(sleep_then_pid, 60)
        wait_until(future.running, WAIT, "the task to start")

        def its_worker() -> list[psutil.Process]:
            """The template's child that runs the task: not the last worker, which may
            linger unreaped as a zombie on a busy machine."""
            found = []
            for child in psutil.Process(template).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.status() != psutil.STATUS_ZOMBIE and child.pid in ctl.pids():
                        found.append(child)
            return found

        wait_until(lambda: len(its_worker()) == 1, WAIT, "its worker")
        its_worker()[0].kill()
        assert future.record(timeout=WAIT).status == "crash"
        # the template goes, its workers with it; the next workers still come
        os.kill(template, signal.SIGKILL)
        runs = [ctl.push(lineage).result(timeout=WAIT) for _ in range(8)]
        assert len({pid for pid, _ in runs}) == 8
        assert template not in {parent for _, parent in runs}


def test_without_the_template_every_worker_is_a_fresh_interpreter() -> None:
    with pycrew.local_controller(workers=1, tasks_max=1, template=False) as ctl:
        runs = [ctl.push(lineage).result(timeout=WAIT) for _ in range(5)]
        assert {parent for _, parent in runs} == {os.getpid()}
        assert templates() == []


def test_a_monitor_names_forked_workers() -> None:
    with pycrew.local_controller(workers=1) as ctl:
        pid, _ = first_forked(ctl)
        found = {w.pid: w for w in pycrew.LocalMonitor().workers()}
        assert found[pid].worker.startswith(ctl.name + "-")
        assert found[pid].controller == ctl.name
        assert found[pid].stale is None


def test_a_forked_worker_writes_its_own_log_file(tmp_path: Path) -> None:
    with pycrew.local_controller(workers=1, tasks_max=1, log_directory=tmp_path) as ctl:
        first_forked(ctl)
        worker = ctl.push(environment, _frames.WORKER_ENV).result(timeout=WAIT)
        assert worker
    log = (tmp_path / f"{worker}.log").read_text()
    assert "connected to" in log


_KILLED_SCRIPT = """
import os, time
import pycrew

ctl = pycrew.local_controller(workers=1, tasks_max=1, seconds_interval=0.05)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pid, parent = ctl.push(lambda: (os.getpid(), os.getppid())).result(timeout=60)
    if parent != os.getpid():
        break
def busy(path):
    with open(path + ".tmp", "w") as out:
        out.write(f"{os.getppid()} {os.getpid()}")
    os.replace(path + ".tmp", path)
    time.sleep(600)


marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "busy")
ctl.push(busy, marker)  # a forked worker busy when its controller dies
while not os.path.exists(marker):
    time.sleep(0.01)
with open(marker) as found:
    print(found.read(), flush=True)
time.sleep(600)
"""


def test_a_killed_controller_takes_its_template_and_forked_workers_along(tmp_path: Path) -> None:
    with controller_script(tmp_path / "controller.py", _KILLED_SCRIPT) as (controller, found):
        template, worker = found
        assert template != controller.pid  # forked by the template
        assert psutil.Process(template).ppid() == controller.pid
        assert alive(worker)
        controller.kill()  # SIGKILL: nothing of the controller runs any more
        controller.wait(WAIT)
        for pid in found:
            wait_until(lambda p=pid: not alive(p), 15, f"process {pid} to end")
