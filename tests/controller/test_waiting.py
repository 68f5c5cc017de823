"""A caller waiting on a future reads the worker's connection itself, for a while.

What users rely on: the value comes back, Ctrl-C while waiting interrupts the
wait and costs nothing else (no worker, no task, no later result), and many
threads may wait at once. Real controllers and workers throughout.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.common import wait_until

WAIT = 60


@pytest.mark.parametrize("tls", ["none", "automatic"])
def test_ctrl_c_while_results_are_read_loses_nothing(tls: str) -> None:
    # SIGINT arrives again and again, anywhere in result(): while it polls the
    # worker's socket, reads a frame, or settles the future. Each one must
    # surface as KeyboardInterrupt from result() (or not at all), and the
    # result, the worker and the connection must come through whole.
    state = {"waiting": False, "raised": 0}

    def on_sigint(signum: int, frame: object) -> None:
        if state["waiting"]:
            raise KeyboardInterrupt

    stop = threading.Event()

    def press() -> None:
        for _ in range(5000):
            if stop.wait(0.0007):
                return
            os.kill(os.getpid(), signal.SIGINT)

    def wait_for(future: pycrew.TaskFuture[int]) -> int:
        while True:
            try:
                state["waiting"] = True
                value = future.result(timeout=WAIT)
                state["waiting"] = False
                return value
            except KeyboardInterrupt:
                state["waiting"] = False
                state["raised"] += 1

    before = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pycrew.local_controller(workers=1, seconds_idle=WAIT, tls=tls) as ctl:
            pid = ctl.push(tasks.pid).result(timeout=WAIT)
            sender = threading.Thread(target=press)
            sender.start()
            try:
                values = [wait_for(ctl.push(tasks.add, i, 1)) for i in range(400)]
            finally:
                stop.set()
                sender.join(WAIT)
            assert values == [i + 1 for i in range(400)]
            assert state["raised"] > 0, "no interrupt landed in result(): the test proved nothing"
            # the handler in place is the user's again, and no worker was lost
            assert signal.getsignal(signal.SIGINT) is on_sigint
            assert ctl.push(tasks.pid).result(timeout=WAIT) == pid
            summary = ctl.summary()
            assert summary is not None
            assert summary.crash == 0
            assert summary.success == 402
    finally:
        signal.signal(signal.SIGINT, before)


def test_many_threads_waiting_at_once_each_get_their_own_values() -> None:
    # one borrows a connection at a time; the others wait on their futures
    with pycrew.local_controller(workers=2, seconds_idle=WAIT) as ctl:

        def run(start: int) -> list[int]:
            return [ctl.push(tasks.add, start + i, 0).result(timeout=WAIT) for i in range(50)]

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(run, [0, 1000, 2000, 3000]))
        assert got == [[s + i for i in range(50)] for s in (0, 1000, 2000, 3000)]


def test_a_worker_lost_while_its_caller_waits_is_a_crash_and_the_next_task_runs() -> None:
    with pycrew.local_controller(workers=1, seconds_idle=WAIT) as ctl:
        doomed = ctl.push(tasks.suicide)
        try:
            doomed.result(timeout=WAIT)
        except pycrew.TaskCrashError:
            pass
        else:
            raise AssertionError("a task whose worker died returned a value")
        assert ctl.push(tasks.add, 2, 3).result(timeout=WAIT) == 5


def test_an_event_the_dispatcher_got_before_a_borrow_leaves_the_result_to_the_borrower() -> None:
    # The race a busy machine opens: the dispatcher thread's select() returns
    # a worker's socket as readable, then a caller borrows that socket before
    # the dispatcher gets the lock. The dispatcher, acting on its old event
    # later, must not read what came meanwhile: the borrower waits for it.
    with pycrew.local_controller(workers=1, seconds_idle=WAIT) as ctl:
        ctl.push(tasks.pid).result(timeout=WAIT)
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        future = ctl.push(tasks.sleep, 0.2)
        task = future._current
        with dispatcher.lock:
            conn = dispatcher._lendable(task)
            assert conn is not None, "the running task's connection could not be borrowed"
            stale = dispatcher.selector.get_key(conn.sock)  # as select() had returned it
            dispatcher.selector.unregister(conn.sock)
            dispatcher.borrowed = conn
        try:
            poller = select.poll()
            poller.register(conn.sock.fileno(), select.POLLIN)
            assert poller.poll(WAIT * 1000), "the task's result never came"
            with dispatcher.lock:
                dispatcher._on_event(stale, selectors.EVENT_READ)
            assert not future.done(), "the dispatcher read a borrowed connection"
        finally:
            dispatcher._hand_back(conn, True)
        assert future.done()
        assert future.result(timeout=WAIT) == 0.2


def test_cancel_and_terminate_from_another_thread_end_a_wait_on_a_running_task() -> None:
    # the waiting thread holds the worker's socket in turns of 20 ms: a cancel
    # or a terminate made elsewhere must still end its wait, and promptly
    with pycrew.local_controller(workers=1, seconds_idle=WAIT) as ctl:
        running = ctl.push(tasks.sleep, 300.0)
        wait_until(running.running, WAIT, "the task to start")
        canceller = threading.Timer(0.3, running.cancel)
        canceller.start()
        try:
            running.result(timeout=WAIT)
        except pycrew.TaskCancelledError:
            pass
        else:
            raise AssertionError("a cancelled task returned a value")
        finally:
            canceller.join(WAIT)
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
    ctl = pycrew.local_controller(workers=1, seconds_idle=WAIT)
    ctl.start()
    try:
        running = ctl.push(tasks.sleep, 300.0)
        wait_until(running.running, WAIT, "the task to start")

        def terminate() -> None:
            with warnings.catch_warnings():  # it says it cancelled the task: it did, on purpose
                warnings.simplefilter("ignore", pycrew.CrewWarning)
                ctl.terminate()

        terminator = threading.Timer(0.3, terminate)
        terminator.start()
        try:
            running.result(timeout=WAIT)
        except pycrew.TaskCancelledError:
            pass
        else:
            raise AssertionError("a task of a terminated controller returned a value")
        finally:
            terminator.join(WAIT)
    finally:
        ctl.terminate()
