"""The registry of launched workers, and finding and ending stray workers with it.

Every test points ``PYCREW_STATE_DIR`` at a fresh directory (its subprocesses
inherit it), so a stray worker of another test run on this machine is never
called stale here, let alone ended. Controllers that must die by SIGKILL run
as subprocesses of small scripts written below.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import psutil
import pytest

import pycrew
from pycrew._cli import main
from pycrew._engines._local import LocalMonitor, LocalWorkerInfo
from pycrew._operations import _ledger
from tests.engines.test_slurm import LATER, _cluster_problem
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own."""
    directory = tmp_path / "state"
    monkeypatch.setenv(_ledger.DIR_ENV, str(directory))
    monkeypatch.setattr(_ledger, "_kept_last", 0)
    return directory


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _launch(name: str = "c", session: str = "s", **fields: object) -> None:
    _ledger.record_launches(name, session, [{"worker": f"{name}-1", **fields}])


# ------------------------------------------------------------ the registry
def test_registry_round_trip_in_a_private_file(state: Path) -> None:
    _ledger.record_launches("alpha", "s1", [{"worker": "alpha-1", "pid": 11, "host": "h"}])
    _ledger.record_launches("beta", "s2", [{"worker": "beta-1", "job": "42_0"}])
    _ledger.end_session("s1")
    assert _ledger.path() == state / "launched.jsonl"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(_ledger.path().stat().st_mode) == 0o600
    entries, problems = _ledger.read()
    assert problems == []
    assert [(e.event, e.session, e.worker) for e in entries] == [
        ("launch", "s1", "alpha-1"),
        ("launch", "s2", "beta-1"),
        ("end", "s1", ""),
    ]
    first = entries[0]
    assert (first.controller, first.pid, first.host, first.job) == ("alpha", 11, "h", None)
    assert first.controller_pid == os.getpid()
    assert first.controller_host == socket.gethostname()
    assert abs(first.time - time.time()) < 60
    assert entries[1].job == "42_0"
    assert json.loads(_ledger.path().read_text().splitlines()[0])["v"] == _ledger.VERSION


def test_launcher_details_never_overwrite_the_format() -> None:
    details = {"worker": "w-1", "v": 99, "event": "end", "session": "x", "pid": 5, "host": "h"}
    _ledger.record_launches("c", "s", [details])
    ((entry,), problems) = _ledger.read()
    assert problems == []
    assert (entry.event, entry.session, entry.worker, entry.pid) == ("launch", "s", "w-1", 5)


def test_registry_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(_ledger.DIR_ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert _ledger.path() == tmp_path / "xdg" / "pycrew" / "launched.jsonl"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _ledger.path() == tmp_path / "home" / ".local" / "state" / "pycrew" / "launched.jsonl"


def test_bad_lines_are_reported_and_the_rest_kept(state: Path) -> None:
    _launch("good")
    newer = {"v": _ledger.VERSION + 1, "event": "launch", "anything": ["new"]}
    with open(_ledger.path(), "a") as file:
        file.write("this is not json\n")
        file.write("[1, 2, 3]\n")
        file.write(json.dumps(newer) + "\n")
        file.write('{"v": 1, "event": "launch", "session": 7}\n')
        file.write('{"v": 1, "event": "lau')  # a writer killed mid-line
    _launch("after")  # starts on a line of its own
    entries, problems = _ledger.read()
    assert [e.controller for e in entries] == ["good", "after"]
    assert len(problems) == 5
    assert "line 2: not JSON" in problems[0]
    assert "line 3: not a JSON object" in problems[1]
    assert "line 4: written by a newer pycrew" in problems[2]
    assert "line 5: launch line without a valid 'time'" in problems[3]
    assert "line 6: not JSON" in problems[4]
    # the monitors read through them
    assert LocalMonitor().stale() == []


_WRITER = textwrap.dedent(
    """
    import sys
    from pycrew._operations import _ledger

    name, batches, pad, compact = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    if compact:
        _ledger.COMPACT_LINES = int(compact[0])
    sys.stdin.readline()  # everyone starts together
    for i in range(batches):
        workers = [
            {"worker": f"{name}-{i}-{k}", "job": f"{name}.{i}.{k}", "pad": "x" * pad}
            for k in (0, 1)
        ]
        _ledger.record_launches(name, name, workers)
        if compact:  # and a session that ends: compaction drops it
            _ledger.record_launches(name, f"{name}-gone-{i}", [{"worker": "w", "job": "j"}])
            _ledger.end_session(f"{name}-gone-{i}")
    """
)


def _writers(count: int, *args: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"p{n}", *args], stdin=subprocess.PIPE, text=True
        )
        for n in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_concurrent_writers_never_tear_a_line(state: Path) -> None:
    # batches of 5 KiB, more than a pipe buffer, and 2 MB in all (under compaction's size)
    _writers(4, "100", "2500")
    entries, problems = _ledger.read()
    assert problems == []
    assert len(_ledger.path().read_bytes().splitlines()) == 4 * 100 * 2
    assert sorted(e.worker for e in entries) == sorted(
        f"p{n}-{i}-{k}" for n in range(4) for i in range(100) for k in (0, 1)
    )


def test_concurrent_writers_and_compaction_lose_nothing_that_matters(state: Path) -> None:
    # each writer adds 4 lines a round, 2 of them for a session that ends at once
    _writers(4, "40", "0", "50")
    entries, problems = _ledger.read()
    assert problems == []
    lines = _ledger.path().read_bytes().splitlines()
    assert len(lines) < 4 * 40 * 4  # compacted at least once
    kept = [e.worker for e in entries if e.event == "launch" and e.session == e.controller]
    assert sorted(kept) == sorted(
        f"p{n}-{i}-{k}" for n in range(4) for i in range(40) for k in (0, 1)
    )


def test_compaction_keeps_what_may_still_run(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)
    _launch("alive", pid=os.getpid(), host=host)
    _launch("dead", pid=finished.pid, host=host)
    _launch("ended", session="over", pid=os.getpid(), host=host)
    _ledger.end_session("over")
    _launch("job", job="77")
    _launch("elsewhere", pid=1, host="another-host")
    old = {
        "v": 1,
        "event": "launch",
        "time": time.time() - _ledger.FORGET_SECONDS - 60,
        "controller": "old",
        "session": "s",
        "controller_pid": 1,
        "controller_host": host,
        "worker": "old-1",
        "job": "1",
    }
    with open(_ledger.path(), "a") as file:
        file.write(json.dumps(old) + "\n")
        file.write(json.dumps({"v": 99, "event": "later"}) + "\n")
        file.write("garbage\n")
    monkeypatch.setattr(_ledger, "COMPACT_LINES", 1)
    _launch("last", pid=os.getpid(), host=host)
    entries, problems = _ledger.read()
    assert [e.controller for e in entries] == ["alive", "job", "elsewhere", "last"]
    assert len(problems) == 1
    assert "newer pycrew" in problems[0]
    assert stat.S_IMODE(_ledger.path().stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == ["launched.jsonl"]  # no temporary file left


def test_an_unwritable_registry_never_stops_launching(
    state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a file where the directory should be: refused even to root
    blocker = state.parent / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv(_ledger.DIR_ENV, str(blocker))
    caplog.set_level(logging.WARNING, logger="pycrew")
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        assert ctl.push(tasks.add, 1, 2).record(timeout=30).result == 3
    assert any(
        "could not write the registry of launched workers" in r.getMessage()
        for r in caplog.records
        if r.name == "pycrew.registry"
    )
    entries, problems = _ledger.read()
    assert entries == []
    assert len(problems) == 1
    assert "Not a directory" in problems[0]


# ------------------------------------------------------------ LocalMonitor
def _ours(name: str) -> list[LocalWorkerInfo]:
    return [w for w in LocalMonitor().workers() if w.controller == name]


def test_workers_are_listed_and_one_can_be_ended() -> None:
    name = f"listed-{os.getpid()}"
    with pycrew.local_controller(name=name, workers=2, seconds_interval=0.05) as ctl:
        assert _ours(name) == []
        ctl.launch(2)
        # a fresh child shows pytest's command line until it has exec'd
        wait_until(lambda: len(_ours(name)) == 2, 10, "both workers to be listed")
        listed = _ours(name)
        assert sorted(w.worker for w in listed) == [f"{name}-1", f"{name}-2"]
        assert {w.session for w in listed} == {ctl.session}
        assert all(w.stale is None and "pycrew worker" in w.command for w in listed)
        assert all(0 <= w.seconds < 60 for w in listed)
        assert not [w for w in LocalMonitor().stale() if w.controller == name]
        victim = listed[0].pid
        # a stopped worker too: SIGTERM waits for the SIGCONT that follows it
        os.kill(victim, signal.SIGSTOP)
        wait_until(lambda: psutil.Process(victim).status() == psutil.STATUS_STOPPED, 10, "stop")
        started = time.monotonic()
        # never a process that is not a pycrew worker, such as this one
        ended = LocalMonitor().terminate([victim, os.getpid(), 1], seconds_grace=30)
        assert ended == [victim]
        assert time.monotonic() - started < 20  # SIGTERM did it, not SIGKILL after the grace
        assert [w.pid for w in _ours(name)] == [listed[1].pid]
        wait_until(lambda: ctl.pids() == [listed[1].pid], 10, "the controller to see it go")
        assert ctl.push(tasks.add, 2, 2).record(timeout=30).result == 4


def test_a_worker_still_running_after_its_session_ended_is_stale() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.launch(1)
        wait_until(lambda: len(_ours(ctl.name)) == 1, 10, "the worker to be listed")
        assert _ours(ctl.name)[0].stale is None
        # what terminate() writes once its workers should be gone
        _ledger.end_session(ctl.session)
        (stale,) = [w for w in LocalMonitor().stale() if w.controller == ctl.name]
        assert f"ended session {ctl.session}" in (stale.stale or "")


def test_terminate_needs_one_way_to_choose() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LocalMonitor().terminate()
    with pytest.raises(ValueError, match="exactly one"):
        LocalMonitor().terminate([1], stale=True)
    with pytest.raises(ValueError, match="exactly one"):
        pycrew.SlurmMonitor().terminate(ids=["1"], stale=True)


_STUCK_CONTROLLER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    import pycrew
    from pycrew.launchers import LocalLauncher

    name, marker = sys.argv[1], sys.argv[2]

    class NoDeathSignal(LocalLauncher):
        # LocalLauncher, less the kernel's parent-death signal (as on macOS, or
        # with a plugin that starts workers through another process)
        def launch_worker(self, spec):
            env = {k: v for k, v in os.environ.items() if k not in spec.env_remove}
            env.update(spec.env)
            return subprocess.Popen(
                spec.command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )

    def stuck(marker):
        import ctypes, os, signal
        import psutil
        # the worker's watchdog would end it once the controller is gone: this
        # one lost its watchdog first (as if the OOM killer had taken it)
        for child in psutil.Process().children():
            if any(part.endswith("_watchdog.py") for part in child.cmdline()):
                child.kill()
                child.wait()
        # a library's SIGTERM handler: Python code, which never runs while C holds the GIL
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.pthread_sigmask(
            signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
        )
        with open(marker + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        # C code that keeps the GIL (PyDLL does not release it) for an hour
        ctypes.PyDLL(None).sleep(3600)

    ctl = pycrew.controller(NoDeathSignal(), name=name, workers=2, seconds_interval=0.05)
    ctl.start()
    ctl.launch(2)
    ctl.push(stuck, marker)
    time.sleep(3600)
    """
)


@pytest.fixture
def stuck_worker(tmp_path: Path) -> Iterator[tuple[psutil.Process, str, str]]:
    """A worker left behind by a controller killed with SIGKILL, its controller and its id.

    Workers normally leave within a second of their controller's death: the
    connection closes and the reader thread calls ``os._exit``, and locally
    the kernel's parent-death signal kills them anyway. This one is the
    leftover the monitor is for: its task sits in C code that holds the GIL
    (``ctypes.PyDLL`` keeps it through ``sleep``), so the reader thread sees
    the connection close but can never run again, and its controller used a
    launcher without the parent-death signal, and its watchdog process is
    gone (the task ended it first). SIGTERM does not end it either:
    the task blocked it in its own thread and left a Python-level handler
    for the others, which cannot run without the GIL. A second, idle worker
    of the same controller exits as usual, which is how the test knows the
    controller's death has reached its workers.
    """
    name = f"stuck-{os.getpid()}"
    marker = tmp_path / "stuck.pid"
    controller = subprocess.Popen([sys.executable, "-c", _STUCK_CONTROLLER, name, str(marker)])
    stuck: psutil.Process | None = None
    others: list[psutil.Process] = []
    try:
        wait_until(marker.exists, 30, "the task to start")
        stuck = psutil.Process(int(marker.read_text()))
        wait_until(lambda: len(_ours(name)) == 2, 10, "both workers to be listed")
        (worker,) = [w.worker for w in _ours(name) if w.pid == stuck.pid]
        others = [psutil.Process(w.pid) for w in _ours(name) if w.pid != stuck.pid]
        wait_until(
            lambda: any(e.pid == stuck.pid for e in _ledger.read()[0]), 10, "the launch record"
        )
        controller.kill()
        controller.wait(timeout=30)
        wait_until(lambda: all(_gone(p) for p in others), 10, "the idle worker to exit")
        assert not _gone(stuck), "the stuck worker exited by itself"
        yield stuck, name, worker
    finally:
        controller.kill()
        controller.wait(timeout=30)
        for proc in [*others, *([stuck] if stuck else [])]:
            # psutil checks that the pid still names that process
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def test_a_worker_whose_controller_was_killed_is_stale_and_ended(
    stuck_worker: tuple[psutil.Process, str, str],
) -> None:
    stuck, name, worker = stuck_worker
    alive = f"alive-{os.getpid()}"
    with pycrew.local_controller(name=alive, workers=1, seconds_interval=0.05) as ctl:
        ctl.launch(1)  # a live controller's worker is never stale
        wait_until(lambda: len(_ours(alive)) == 1, 10, "the live worker to be listed")
        (stale,) = LocalMonitor().stale()
        assert (stale.pid, stale.controller, stale.worker) == (stuck.pid, name, worker)
        assert stale.stale is not None
        assert "is gone" in stale.stale
        started = time.monotonic()
        assert LocalMonitor().terminate(stale=True, seconds_grace=0.5) == [stuck.pid]
        assert time.monotonic() - started < 10
        assert _gone(stuck)
        assert LocalMonitor().stale() == []
        assert len(_ours(alive)) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycrew", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line_shows_and_ends_stale_workers(
    stuck_worker: tuple[psutil.Process, str, str],
) -> None:
    stuck, name, worker = stuck_worker
    shown = _cli("local", "--stale")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["PID", "CONTROLLER", "WORKER", "AGE", "STATE"]
    assert lines[1].split()[:3] == [str(stuck.pid), name, worker]
    assert "stale: controller" in lines[1]
    assert lines[-1] == f"1 stale pycrew worker(s) of {LocalMonitor().user}"
    every = _cli("local")
    assert every.returncode == 0, every.stderr
    assert str(stuck.pid) in every.stdout
    ended = _cli("local", "--stale", "--terminate")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.strip() == f"ended 1 worker(s): {stuck.pid}"
    assert _gone(stuck)
    assert _cli("local", "--stale", "--terminate", "12").returncode == 2


class _Terminal(io.StringIO):
    """Standard input that is a terminal, where someone types ``answer``."""

    def isatty(self) -> bool:
        return True


def _monitor(*args: str) -> int:
    return main(["monitor", *args])


def test_a_bare_terminate_ends_nothing_unasked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --terminate alone means every worker of the user, a live controller's too:
    # refused without a terminal to ask on, declined when the answer is not yes
    name = f"asked-{os.getpid()}"
    with pycrew.local_controller(name=name, workers=1, seconds_interval=0.05) as ctl:
        ctl.launch(1)
        wait_until(lambda: len(_ours(name)) == 1, 10, "the worker to be listed")
        (worker,) = _ours(name)
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        assert _monitor("local", "--terminate") == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "ends every pycrew worker of the user" in err
        assert "--yes" in err
        for answer in ("n\n", "\n", ""):
            monkeypatch.setattr(sys, "stdin", _Terminal(answer))
            assert _monitor("local", "--terminate") == 1
            out, err = capsys.readouterr()
            assert any(line.split()[:2] == [str(worker.pid), name] for line in out.splitlines())
            assert "[y/N]" in out
            assert out.endswith("nothing ended\n")
        assert [w.pid for w in _ours(name)] == [worker.pid]
        record = ctl.push(tasks.add, 1, 2).record(timeout=30)
        assert (record.result, record.pid) == (3, worker.pid)


def test_a_bare_terminate_goes_on_with_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a user with no processes here, so that nothing of this machine's is ended
    nobody = f"pycrew-nobody-{os.getpid()}"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert _monitor("local", "--user", nobody, "--terminate", "--yes") == 0
    assert capsys.readouterr().out == "ended 0 worker(s): -\n"
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert _monitor("local", "--user", nobody, "--terminate") == 0
    out = capsys.readouterr().out
    assert f"0 pycrew worker(s) of {nobody}" in out
    assert out.endswith("[y/N] ended 0 worker(s): -\n")
    # --terminate-all says what it means, and --stale ends only what no controller holds
    assert _monitor("local", "--user", nobody, "--terminate-all") == 0
    assert _monitor("local", "--user", nobody, "--stale", "--terminate") == 0
    assert capsys.readouterr().out == "ended 0 worker(s): -\n" * 2


# ------------------------------------------------------------ SlurmMonitor
@pytest.fixture
def cluster() -> None:
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SLURM") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SLURM=1, but {problem}")
        pytest.skip(problem)


_QUEUED_CONTROLLER = textwrap.dedent(
    """
    import sys, time
    import pycrew

    ctl = pycrew.slurm_controller(
        name=sys.argv[1], workers=1, seconds_interval=0.1, sbatch_options=sys.argv[2:]
    )
    ctl.launch(1)
    print("launched", flush=True)
    time.sleep(3600)
    """
)


def test_a_job_whose_controller_was_killed_is_stale_and_cancelled(cluster: None) -> None:
    name = f"queued-{os.getpid()}"
    monitor = pycrew.SlurmMonitor()
    controller = subprocess.Popen(
        [sys.executable, "-c", _QUEUED_CONTROLLER, name, *LATER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert controller.stdout is not None
        assert controller.stdout.readline().strip() == "launched"
        (job,) = [j for j in monitor.jobs() if j.controller == name]
        assert job.state == "PENDING"
        assert job.id not in {j.id for j in monitor.stale()}  # its controller lives
        controller.kill()
        controller.wait(timeout=30)
        (stale,) = monitor.stale()
        assert stale.id == job.id
        shown = _cli("slurm", "--stale")
        assert shown.returncode == 0, shown.stderr
        assert job.id in shown.stdout
        assert f"{name}-1" in shown.stdout
        assert monitor.terminate(stale=True) == [job.id]
        wait_until(
            lambda: not [j for j in monitor.jobs() if j.controller == name], 20, "the job to go"
        )
    finally:
        controller.kill()
        controller.wait(timeout=30)
        left = [j.id for j in monitor.jobs() if j.controller == name]
        if left:
            monitor.terminate(ids=left)
