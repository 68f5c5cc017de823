"""Network faults between a controller and its worker, on a real (virtual) link.

The worker runs in a network namespace of its own, joined to this one by a
veth pair. A silent partition is made the way a dead switch port behaves:
each side's neighbour entry for the other is replaced by a bogus MAC address,
so packets leave and vanish, with no reset and no error. Needs root and
iproute2 (CI has both, and sets PYCREW_REQUIRE_NETNS=1 so that a missing one
fails instead of skipping).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import pycrew
from pycrew.launchers import LocalLauncher
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycrew.launchers import WorkerSpec

HEARTBEAT = 3.0  # seconds_heartbeat of these controllers
#: the bound the README promises: seconds_heartbeat plus keep-alive's 5 s, plus slack
DETECTED = HEARTBEAT + 5 + 7


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@dataclasses.dataclass
class Link:
    ns: str
    host_if: str
    worker_if: str
    host_ip: str
    worker_ip: str

    def cut(self) -> None:
        """Packets each way go to a MAC address nobody has: silence, not an error."""
        _ip("neigh", "replace", self.worker_ip, "lladdr", "02:00:00:00:0b:0b", "dev",
            self.host_if, "nud", "permanent")  # fmt: skip
        _ip("neigh", "replace", self.host_ip, "lladdr", "02:00:00:00:0a:0a", "dev",
            self.worker_if, "nud", "permanent", ns=self.ns)  # fmt: skip

    def down(self) -> None:
        """The controller's end of the link goes down (a cable pulled)."""
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("neigh", "del", self.worker_ip, "dev", self.host_if)
        _ip("neigh", "del", self.host_ip, "dev", self.worker_if, ns=self.ns)


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    return None


@pytest.fixture
def link() -> Iterator[Link]:
    problem = _problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_NETNS") == "1":
            pytest.fail(f"PYCREW_REQUIRE_NETNS=1, but {problem}")
        pytest.skip(problem)
    tag = f"{os.getpid() % 10000}"
    third = os.getpid() % 250 + 1
    made = Link(f"pycrew-{tag}", f"pcw{tag}h", f"pcw{tag}w", f"10.77.{third}.1", f"10.77.{third}.2")
    _ip("netns", "add", made.ns)
    try:
        _ip("link", "add", made.host_if, "type", "veth", "peer", "name", made.worker_if)
        _ip("link", "set", made.worker_if, "netns", made.ns)
        _ip("addr", "add", f"{made.host_ip}/30", "dev", made.host_if)
        _ip("link", "set", made.host_if, "up")
        _ip("addr", "add", f"{made.worker_ip}/30", "dev", made.worker_if, ns=made.ns)
        _ip("link", "set", made.worker_if, "up", ns=made.ns)
        _ip("link", "set", "lo", "up", ns=made.ns)
        yield made
    finally:
        subprocess.run(["ip", "netns", "del", made.ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", made.host_if], capture_output=True, timeout=30)


class NamespaceLauncher(LocalLauncher):
    """Local workers, each started inside the link's network namespace."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def launch_worker(self, spec: WorkerSpec) -> Any:
        command = ["ip", "netns", "exec", self.ns, *spec.command]
        return super().launch_worker(dataclasses.replace(spec, command=command))


def _controller(link: Link, **options: Any) -> pycrew.Controller:
    return pycrew.controller(
        NamespaceLauncher(link.ns),
        host=link.host_ip,
        tls="automatic",
        workers=1,
        seconds_heartbeat=HEARTBEAT,
        seconds_interval=0.05,
        **options,
    )


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("fault", ["silent", "link-down"])
def test_a_partition_with_tasks_in_flight_is_detected(link: Link, fault: str) -> None:
    with _controller(link) as ctl:
        pid = ctl.push(os.getpid).result(timeout=60)
        running = ctl.push(tasks.sleep, 1)  # its result will go out into the void
        ahead = [ctl.push(tasks.add, i, 1) for i in range(3)]  # sent ahead to the busy worker
        wait_until(running.running, 30, "the task to reach the worker")
        link.cut() if fault == "silent" else link.down()
        cut = time.monotonic()
        with pytest.raises(pycrew.TaskCrashError):
            running.result(timeout=DETECTED)
        detected = time.monotonic() - cut
        # the worker gave up on its side too, and is gone, not stranded
        wait_until(lambda: _gone(pid), DETECTED, "the partitioned worker to end")
        print(f"{fault} partition detected after {detected:.1f} s")
        for future in ahead:
            future.cancel()


@pytest.mark.parametrize("heal", ["before", "after"])
def test_a_healed_partition_gives_exactly_one_result(link: Link, heal: str) -> None:
    with _controller(link, retry_crashes=True, crashes_max=2) as ctl:
        ctl.push(os.getpid).result(timeout=60)
        future = ctl.push(tasks.sleep, 1)
        wait_until(future.running, 30, "the task to reach the worker")
        link.cut()
        if heal == "before":
            # shorter than any timeout: the kernel retransmits and nobody notices
            wait_until(lambda: future.running(), 5, "the partition to hold")
            time.sleep(0.5)  # the fault's length, not a synchronisation
            link.heal()
        else:
            wait_until(lambda: not ctl.pids(), DETECTED, "the partition to be detected")
            link.heal()
        record = future.record(timeout=60)
        assert record.status is pycrew.Status.SUCCESS
        assert record.attempts == (1 if heal == "before" else 2)
        assert ctl.collect() == []  # one outcome, handed over once
        summary = ctl.summary()
        assert summary is not None
        # a partition seen is a lost worker: its crash is counted, beside the two successes
        crashed = int(heal == "after")
        assert (summary.tasks, summary.success, summary.crash) == (2 + crashed, 2, crashed)
