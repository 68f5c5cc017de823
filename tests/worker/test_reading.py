"""How a worker reads: on its main thread between tasks, on a helper while one runs.

The buffered reader and the lending timer are tested alone (pure logic, a
socket pair); the behaviour users rely on (a cancel reaches a running task,
tasks sent while one runs are all served, a lost controller ends the
worker) runs through real controllers and workers.
"""

from __future__ import annotations

import os
import select
import socket

import psutil
import pytest

import pycrew
from pycrew._worker._inflow import DIRECT, Inflow
from pycrew._worker._lending import Lender
from tests.helpers import tasks
from tests.helpers.common import wait_until

WAIT = 60


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_inflow_reads_frames_split_anywhere_and_says_what_it_holds(pair) -> None:
    a, b = pair
    inflow = Inflow(b, size=16)
    a.sendall(b"abcdefghij")
    assert inflow.read(3) == b"abc"
    # the rest of that one receive waits in the buffer: poll() would not see it
    assert inflow.buffered() == 7
    assert not select.select([b], [], [], 0)[0]
    a.sendall(b"klmnopqrstuvwxyz0123")
    assert inflow.read(20) == b"defghijklmnopqrstuvw"  # across two receives and the buffer's end
    assert inflow.read(7) == b"xyz0123"
    assert inflow.buffered() == 0


def test_inflow_fills_large_targets_directly_and_ends_short_at_eof(pair) -> None:
    a, b = pair
    inflow = Inflow(b, size=16)
    payload = os.urandom(DIRECT * 3)
    a.sendall(b"head" + payload)
    assert inflow.read(4) == b"head"
    target = bytearray(len(payload))
    view = memoryview(target)
    got = 0
    while got < len(payload):
        k = inflow.readinto(view[got:])
        assert k > 0
        got += k
    assert bytes(target) == payload
    a.sendall(b"xy")
    a.close()
    assert inflow.read(5) == b"xy"  # the connection ended: fewer bytes, never a hang
    assert inflow.readinto(memoryview(bytearray(4))) == 0


def test_the_lending_timer_fires_only_for_a_task_still_running() -> None:
    lender = Lender(after=0.001)
    poller = select.poll()
    poller.register(lender.fd, select.POLLIN)
    lender.arm()
    assert poller.poll(WAIT * 1000), "an armed timer never fired"
    lender.clear()
    assert not poller.poll(0)
    # a task that ended first disarms it: nobody is woken, however long we look
    slow = Lender(after=0.05)
    poller = select.poll()
    poller.register(slow.fd, select.POLLIN)
    slow.arm()
    slow.disarm()
    assert not poller.poll(300)


def test_a_cancel_reaches_a_running_task_and_tasks_sent_behind_it_all_run() -> None:
    # One worker: the sleeping task and the ones pushed after it reach it while
    # it runs, read by the helper thread; the cancel must interrupt the sleep.
    with pycrew.local_controller(workers=1, seconds_idle=WAIT) as ctl:
        before = ctl.push(tasks.pid).result(timeout=WAIT)
        long = ctl.push(tasks.sleep, 300.0, name="long")
        wait_until(long.running, WAIT, "the long task to start")
        short = [ctl.push(tasks.add, i, 1) for i in range(20)]
        long.cancel()
        assert [f.result(timeout=WAIT) for f in short] == [i + 1 for i in range(20)]
        assert long.cancelled()
        # the same worker ran them all: the cancel interrupted the sleep, no kill
        assert ctl.push(tasks.pid).result(timeout=WAIT) == before


def test_a_worker_between_tasks_leaves_when_its_controller_goes() -> None:
    ctl = pycrew.local_controller(workers=1, seconds_idle=WAIT)
    ctl.start()
    try:
        assert ctl.push(tasks.pid).result(timeout=WAIT) > 0
        pids = ctl.pids()
        assert len(pids) == 1
        worker = psutil.Process(pids[0])
    finally:
        ctl.terminate()
    # idle, reading on its main thread: the closed connection ends it
    worker.wait(timeout=WAIT)
    assert not worker.is_running()


def test_tasks_far_apart_run_on_the_same_worker_without_a_helper_left_reading() -> None:
    # A task that ran long enough to wake the helper, then tasks arriving at an
    # idle worker: the main thread must get reading back each time.
    with pycrew.local_controller(workers=1, seconds_idle=WAIT) as ctl:
        first = ctl.push(tasks.sleep, 0.05).result(timeout=WAIT)
        assert first == 0.05
        pids = set()
        for i in range(30):
            pids.add(ctl.push(tasks.pid).result(timeout=WAIT))
            if i % 10 == 0:
                ctl.push(tasks.sleep, 0.01).result(timeout=WAIT)
        assert len(pids) == 1
