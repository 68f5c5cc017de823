"""Local workers talk to their controller through an inherited socket pair.

The local launcher hands each worker (started directly or forked from the
template) its end of a connected Unix socket pair: no TCP stack on the round
trip, and no address a stranger could dial. Everything else is as over the
port: TLS where asked, the same handshake, the same liveness rules.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew
from pycrew._wire import _frames
from pycrew.launchers import LocalLauncher
from tests.helpers import tasks
from tests.helpers.common import wait_until
from tests.helpers.scripts import alive

if TYPE_CHECKING:
    import subprocess

    from pycrew.launchers import WorkerSpec

WAIT = 60


def connections() -> dict[str, object]:
    """What the worker running this task holds: its TCP and Unix sockets, its parent."""
    me = psutil.Process()
    return {
        "tcp": len(me.net_connections("tcp")),
        "unix": len(me.net_connections("unix")),
        "channel_env": os.environ.get(_frames.CHANNEL_ENV),
        "parent": os.getppid(),
        "pid": os.getpid(),
    }


@pytest.mark.parametrize("tls", ["none", "automatic"])
def test_local_workers_use_a_socket_pair_started_or_forked(tls: str) -> None:
    # tasks_max=1: each task gets a new worker; after the first launches, they
    # come forked from the template
    with pycrew.local_controller(workers=2, tasks_max=1, tls=tls) as ctl:
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            seen.append(ctl.push(connections).result(timeout=WAIT))
            forked = [s for s in seen if s["parent"] != os.getpid()]
            if forked and len(seen) >= 3:
                break
        assert any(s["parent"] == os.getpid() for s in seen), "no worker started directly"
        assert any(s["parent"] != os.getpid() for s in seen), "no worker came from the template"
        for state in seen:
            # no TCP connection at all: not to the port, not anywhere
            assert state["tcp"] == 0, state
            assert isinstance(state["unix"], int), state
            assert state["unix"] >= 1, state
            # the descriptor's number is not left for the task's own children
            assert state["channel_env"] is None, state
        assert all(r.status == "success" for r in ctl.collect())


class _OwnWay(LocalLauncher):
    """A subclass that starts workers its own way: they must dial the port."""

    def launch_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        return super().launch_worker(spec)


def test_a_launcher_subclass_of_its_own_way_gets_workers_that_dial() -> None:
    before = psutil.Process().num_fds()
    with pycrew.controller(_OwnWay(), workers=1) as ctl:
        state = ctl.push(connections).result(timeout=WAIT)
        assert state["tcp"] == 1, state  # the port, as its command line says
    assert psutil.Process().num_fds() == before


class _Dropping(LocalLauncher):
    """Hands its workers no channel, though the controller made one."""

    @property
    def channels(self) -> bool:
        return True

    def launch_worker(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        return super().launch_worker(dataclasses.replace(spec, channel=None))


def test_a_channel_that_reaches_no_worker_is_closed_and_the_worker_dials() -> None:
    before = psutil.Process().num_fds()
    with pycrew.controller(_Dropping(), workers=1) as ctl:
        state = ctl.push(connections).result(timeout=WAIT)
        assert state["tcp"] == 1, state
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        # the unused pair's end hung up at once: only the worker's connection is left
        wait_until(lambda: len(dispatcher.conns) == 1, WAIT, "the unused channel to go")
    assert psutil.Process().num_fds() == before


def test_no_descriptor_is_left_behind_by_many_launches() -> None:
    before = psutil.Process().num_fds()
    with pycrew.local_controller(workers=2, tasks_max=1) as ctl:
        pids = {f.result(timeout=WAIT) for f in [ctl.push(os.getpid) for _ in range(12)]}
        assert len(pids) == 12
        launcher = ctl.launcher
        assert isinstance(launcher, LocalLauncher)
        template = launcher._template
        if template is not None:
            # the template passes each worker's end on and keeps none of them
            held = psutil.Process(template.proc.pid).num_fds()
            more = {f.result(timeout=WAIT) for f in [ctl.push(os.getpid) for _ in range(6)]}
            assert len(more) == 6
            assert psutil.Process(template.proc.pid).num_fds() == held
        # the controller holds one end per connected worker, at most
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        assert len(dispatcher.conns) <= 2
    assert psutil.Process().num_fds() == before


@pytest.mark.parametrize("hello", [True, False])
def test_a_stranger_on_a_channel_gets_the_same_handshake(hello: bool) -> None:
    """Whoever holds the other end proves the secret first; garbage is refused, and
    the controller serves its workers on."""
    with pycrew.local_controller(workers=1) as ctl:
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            with dispatcher.lock:
                dispatcher.adopt(ours)
            theirs.settimeout(WAIT)
            if hello:
                assert theirs.recv(1 << 16)  # the HELLO, with its nonce
            # a frame head that claims far more than any handshake frame may hold
            theirs.sendall(b"\xff" * 64)
            got = b""
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                chunk = theirs.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            else:
                raise AssertionError("the controller kept a channel that sent garbage")
            assert b"WELCOME" not in got
        assert ctl.push(tasks.add, 2, 2).result(timeout=WAIT) == 4


def test_a_worker_stuck_in_c_ends_when_its_channel_hangs_up() -> None:
    """The controller lives but lets go of the worker (its end closes) while a task
    holds the GIL: the watchdog sees the pair hang up and ends the worker."""
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        pid = ctl.push(os.getpid).result(timeout=WAIT)
        future = ctl.push(tasks.hold_gil, 120)
        wait_until(future.running, WAIT, "the task to start")
        dispatcher = ctl._dispatcher
        assert dispatcher is not None
        with dispatcher.lock:
            (conn,) = [c for c in dispatcher.conns.values() if c.info is not None]
            dispatcher._drop(conn, "let go by the test")
        wait_until(lambda: not alive(pid), 20, "the worker stuck in C to end")
        with pytest.raises(pycrew.TaskCrashError):
            future.result(timeout=WAIT)
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
