"""Workers as SLURM jobs, on a real one-node cluster (``scripts/slurm-cluster up``).

Skipped where no cluster answers, unless ``PYCREW_REQUIRE_SLURM=1`` (CI), where
a missing cluster fails instead. Every test ends with none of its jobs left in
the queue.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pycrew
from pycrew._wire import _frames
from pycrew.launchers import SlurmJob, SlurmLauncher, WorkerSpec
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

#: jobs that must stay queued: they may not start for an hour
LATER = ["--begin=now+3600"]


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "SLURM's commands are not installed (run scripts/slurm-cluster up as root)"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed") for s in states):
        return f"no SLURM node is up: {(done.stderr or done.stdout).strip()}"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PYCREW_REQUIRE_SLURM") == "1":
            pytest.fail(f"PYCREW_REQUIRE_SLURM=1, but {problem}")
        pytest.skip(problem)


def _our_jobs() -> list[pycrew._engines._slurm.SlurmJobInfo]:
    return pycrew.SlurmMonitor().jobs()


@pytest.fixture(autouse=True)
def no_jobs_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a pycrew job in the queue."""
    if "cluster" not in request.fixturenames:
        yield
        return
    yield
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = _our_jobs()
        if not left:
            return
        time.sleep(0.2)
    pycrew.SlurmMonitor().terminate(all=True)
    pytest.fail(f"pycrew jobs left in the queue: {left}")


def _slurm(**options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.1)
    return pycrew.slurm_controller(**options)  # type: ignore[arg-type]


def _launcher(ctl: pycrew.Controller) -> SlurmLauncher:
    assert isinstance(ctl.launcher, SlurmLauncher)
    return ctl.launcher


# ------------------------------------------------------------ on the cluster
def test_100_tasks_over_a_two_worker_array_with_tls(cluster: None) -> None:
    with _slurm(workers=2) as ctl:
        assert ctl.url.startswith("tls+tcp://")
        ctl.launch(2)
        launcher = _launcher(ctl)
        assert launcher.calls["sbatch"] == 1  # one array for both workers
        wait_until(lambda: len(ctl.pids()) == 2, 60, "both array workers to connect")
        jobs = _our_jobs()
        assert sorted(j.array_index for j in jobs) == [0, 1]
        assert {j.controller for j in jobs} == {ctl.name}
        records = ctl.map(tasks.add, iterate={"x": list(range(100)), "y": [1] * 100})
        assert [r.result for r in records] == list(range(1, 101))
        assert all(r.status is pycrew.Status.SUCCESS for r in records)
        assert {r.pid for r in records} <= set(ctl.pids())
        assert launcher.calls["sbatch"] == 1


def test_scales_up_from_nothing_and_down_by_seconds_idle(cluster: None) -> None:
    with _slurm(workers=2, seconds_idle=1.0) as ctl:
        ctl.start()
        assert _our_jobs() == []
        assert ctl.pids() == []
        futures = [ctl.push(tasks.sleep, 0.5) for _ in range(4)]
        assert [f.record(timeout=60).status for f in futures] == [pycrew.Status.SUCCESS] * 4
        assert ctl.workers_status()["cumulative"] >= 1
        # idle workers leave on their own, and their jobs end with them
        wait_until(lambda: ctl.workers_status()["connected"] == 0, 30, "idle workers to leave")
        wait_until(lambda: _our_jobs() == [], 30, "the jobs to end")
        # and work brings them back
        assert ctl.push(tasks.add, 1, 2).record(timeout=60).result == 3


def test_scancel_mid_task_is_a_crash(cluster: None, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with _slurm(workers=1) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 300)
        wait_until(marker.exists, 60, "the task to start")
        (job,) = _our_jobs()
        subprocess.run(["scancel", job.id], check=True, timeout=30)
        record = future.record(timeout=60)
        assert record.status is pycrew.Status.CRASH
        assert record.code == 19
        assert "was lost during the task" in (record.error or "")
        # the controller carries on with a fresh job
        assert ctl.push(tasks.add, 2, 3).record(timeout=60).result == 5


def test_terminate_cancels_queued_and_running_jobs(cluster: None) -> None:
    ctl = _slurm(workers=3, sbatch_options=LATER)
    try:
        ctl.launch(3)
        jobs = _our_jobs()
        assert len(jobs) == 3
        assert {j.state for j in jobs} == {"PENDING"}
    finally:
        ctl.terminate()
    # terminate() waits for the queue: nothing of ours is left, at once
    assert _our_jobs() == []


def test_an_invalid_partition_is_a_launch_error_with_sbatchs_message(cluster: None) -> None:
    with _slurm(partition="no-such-partition") as ctl:
        with pytest.raises(pycrew.LaunchError, match=r"sbatch failed: .*[Ii]nvalid partition"):
            ctl.launch(1)
        # a push gets the same answer from the scaling round it starts
        ctl.push(tasks.add, 1, 1)
        with pytest.raises(pycrew.LaunchError, match=r"[Ii]nvalid partition"):
            wait_until(lambda: not ctl.wait(seconds_timeout=0.1), 30, "the launch error")


def test_a_job_that_never_starts_is_cancelled_after_seconds_launch(cluster: None) -> None:
    with _slurm(workers=1, seconds_launch=2, sbatch_options=LATER) as ctl:
        ctl.launch(1)
        assert [j.state for j in _our_jobs()] == ["PENDING"]
        wait_until(lambda: ctl.workers_status()["failed"] == 1, 30, "the launch to be given up")
        wait_until(lambda: _our_jobs() == [], 30, "the pending job to be cancelled")


def test_no_sbatch_is_a_clear_launch_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        _slurm(host="127.0.0.1") as ctl,
        pytest.raises(pycrew.LaunchError, match="sbatch was not found on PATH"),
    ):
        ctl.launch(1)


def test_monitor_lists_and_cancels_our_jobs(cluster: None) -> None:
    ctl = _slurm(workers=3, name="monitored", sbatch_options=LATER)
    try:
        ctl.launch(3)
        monitor = pycrew.SlurmMonitor()
        jobs = monitor.jobs()
        assert len(jobs) == 3
        assert {j.controller for j in jobs} == {"monitored"}
        assert all(j.seconds is not None and 0 <= j.seconds < 120 for j in jobs)
        first = jobs[0].id
        # the command line shows the same jobs
        shown = subprocess.run(
            [sys.executable, "-m", "pycrew", "monitor", "slurm"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert all(j.id in shown for j in jobs)
        assert monitor.terminate(ids=[first]) == [first]
        wait_until(lambda: first not in {j.id for j in monitor.jobs()}, 20, "one job cancelled")
        assert len(monitor.jobs()) == 2
        # a job that is not pycrew's is never touched
        other = subprocess.run(
            ["sbatch", "--parsable", "--begin=now+3600", "--wrap", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        try:
            assert monitor.terminate(ids=[other]) == []
            assert len(monitor.terminate(all=True)) == 2
            wait_until(lambda: monitor.jobs() == [], 20, "every pycrew job cancelled")
            queue = subprocess.run(
                ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30
            ).stdout.split()
            assert other in queue
        finally:
            subprocess.run(["scancel", other], timeout=30, check=False)
    finally:
        ctl.terminate()


def test_the_secret_is_not_in_the_job_script_or_scontrol(cluster: None, tmp_path: Path) -> None:
    ctl = _slurm(workers=2, sbatch_options=LATER, script_directory=tmp_path)
    try:
        ctl.launch(2)
        secret = ctl._env[_frames.SECRET_ENV]
        scripts = list(tmp_path.glob("*.sh"))
        assert len(scripts) == 1
        text = scripts[0].read_text()
        assert "#SBATCH --array=0-1" in text
        assert "pycrew worker" in text.replace("'", "")
        job = _our_jobs()[0].id.partition("_")[0]
        for args in (
            ["scontrol", "show", "job", job],
            ["scontrol", "-d", "show", "job", job],
            ["scontrol", "write", "batch_script", job, "-"],
        ):
            shown = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
            assert shown, args
            assert secret not in shown, args
        assert secret not in text
    finally:
        ctl.terminate()


def test_worker_logs_follow_slurm_patterns(cluster: None, tmp_path: Path) -> None:
    pattern = str(tmp_path / "worker-%A_%a.log")
    with _slurm(workers=2, log_output=pattern, log_error=None) as ctl:
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 2, 60, "both workers")
        assert ctl.push(tasks.add, 1, 1).record(timeout=60).result == 2
    logs = sorted(tmp_path.glob("worker-*_*.log"))
    assert len(logs) == 2  # one file per array element
    wait_until(lambda: all("connected to" in p.read_text() for p in logs), 30, "the logs")


def test_one_job_per_worker_without_arrays(cluster: None) -> None:
    ctl = _slurm(workers=2, sbatch_options=LATER, array=False)
    try:
        ctl.launch(2)
        assert _launcher(ctl).calls["sbatch"] == 2
        assert [j.array_index for j in _our_jobs()] == [None, None]
    finally:
        ctl.terminate()


def test_arrays_are_split_at_max_array_size(cluster: None) -> None:
    ctl = _slurm(workers=5, sbatch_options=LATER)
    try:
        launcher = _launcher(ctl)
        assert launcher.max_array_size() >= 2  # read from the cluster's configuration
        launcher._max_array = 2  # as if the site allowed arrays of two
        ctl.launch(5)
        assert launcher.calls["sbatch"] == 3  # 2 + 2 + 1
        jobs = _our_jobs()
        assert len(jobs) == 5
        assert sorted(j.array_index for j in jobs if j.array_index is not None) == [0, 0, 1, 1]
    finally:
        ctl.terminate()


def test_a_python_without_pycrew_is_named_from_the_jobs_error_file(
    cluster: None, tmp_path: Path
) -> None:
    from tests.operations.test_diagnosis import NO_PYCREW_PATH, python_without_pycrew

    python = python_without_pycrew(tmp_path)
    with _slurm(workers=1, python=str(python), env=NO_PYCREW_PATH) as ctl:
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        launcher = _launcher(ctl)
        assert launcher.calls["sbatch"] <= 2  # one job, and perhaps its replacement since
        folder = Path(launcher.startup_folder(launcher.job_name(ctl.name)))
        assert folder.is_dir()
        ctl.cancel()
    assert not folder.exists()  # the default error files go with the controller
    message = str(caught.value)
    assert re.match(rf"worker {ctl.name}-1 \(job \d+\) exited with code 1 before it", message)
    assert f"pycrew is not installed for the Python the workers run ({python})" in message
    assert f"    {python}: No module named pycrew" in message.splitlines()


def test_a_missing_interpreter_is_named_from_the_users_error_files(
    cluster: None, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-python"
    pattern = str(tmp_path / "logs" / "err-%A_%a.log")
    with _slurm(workers=2, python=str(missing), log_error=pattern) as ctl:
        ctl.push(tasks.add, 1, 2)
        ctl.push(tasks.add, 3, 4)
        with pytest.raises(pycrew.LaunchError) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        assert _launcher(ctl).calls["sbatch"] <= 2
        ctl.cancel()
    message = str(caught.value)
    assert re.match(rf"worker {ctl.name}-[12] \(job \d+_[01]\) exited with code 127", message)
    assert f"the interpreter {missing} was not found where the worker ran" in message
    assert f"exec: {missing}: not found" in message
    assert len(list((tmp_path / "logs").glob("err-*_*.log"))) >= 2  # the user's: kept


def test_a_log_folder_gone_after_construction_is_named(cluster: None, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with _slurm(workers=1, log_error=str(logs / "%A.err")) as ctl:
        shutil.rmtree(logs)  # SLURM cannot open the job's error file, so the job fails
        ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError) as caught:
            wait_until(lambda: ctl.wait(seconds_timeout=0.1), 60, "the launch error")
        assert _launcher(ctl).calls["sbatch"] <= 3  # a cause in doubt gets a second job
        ctl.cancel()
    message = str(caught.value)
    assert re.match(rf"worker {ctl.name}-2 \(job \d+\) ", message)
    assert re.search(rf"left no error file {logs}/\d+\.err \(SLURM's reason: \w+\)", message)
    assert "is the folder on a file system the compute nodes share" in message


def test_a_job_that_connects_lets_go_of_its_error_file(cluster: None) -> None:
    with _slurm(workers=1) as ctl:
        pid = ctl.push(tasks.pid).result(timeout=60)
        assert os.readlink(f"/proc/{pid}/fd/2") == os.devnull  # a one-node cluster: here
        launcher = _launcher(ctl)
        assert os.listdir(launcher.startup_folder(launcher.job_name(ctl.name))) == []


# ------------------------------------------------ the script (no cluster)
def _spec(worker_id: str = "ctl-1") -> WorkerSpec:
    return WorkerSpec(
        command=[sys.executable, "-m", "pycrew", "worker", "--address", "h:1", "--id", worker_id],
        env={_frames.SECRET_ENV: "ab" * 32},
        worker_id=worker_id,
        controller="ctl",
    )


def test_job_script_carries_every_option_and_no_secret() -> None:
    launcher = SlurmLauncher(
        partition="short,long",
        cpus_per_task=4,
        memory_gigabytes_per_cpu=2.096,
        memory_gigabytes_required=4.1,
        time_minutes=90,
        script_lines=["module load python"],
        log_output="logs/%A_%a.out",
        log_error=None,
        sbatch_options=["--qos=high"],
        python="/opt/python/bin/python3",
    )
    text = launcher.script([_spec("ctl-1"), _spec("ctl-2")], "pycrew.ctl.0000", array=True)
    lines = text.splitlines()
    assert lines[:4] == [
        "#!/bin/sh",
        "#SBATCH --job-name=pycrew.ctl.0000",
        "#SBATCH --array=0-1",
        "#SBATCH --output=logs/%A_%a.out",
    ]
    for expected in (
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=4198M",
        "#SBATCH --mem-per-cpu=2146M",
        "#SBATCH --time=90",
        "#SBATCH --partition=short,long",
        "#SBATCH --qos=high",
        "module load python",
        "  0) ids=ctl-1 ;;",
        "  1) ids=ctl-2 ;;",
    ):
        assert expected in lines
    assert not any(line.startswith("#SBATCH --error") for line in lines)
    assert lines[-1].startswith("exec /opt/python/bin/python3 -m pycrew worker")
    assert lines[-1].endswith('--id "$id"')
    assert "ab" * 32 not in text


def test_job_stderr_goes_to_the_startup_folder_by_default() -> None:
    launcher = SlurmLauncher()
    folder = launcher.startup_folder("pycrew.ctl.0000")
    assert folder == os.path.realpath(
        pycrew._operations._ledger.directory() / "startup" / "pycrew.ctl.0000"
    )
    lines = launcher.script([_spec("ctl-1"), _spec("ctl-2")], "pycrew.ctl.0000", True).splitlines()
    assert f"#SBATCH --error={folder}/%A_%a.err" in lines
    lines = launcher.script([_spec("ctl-1")], "pycrew.ctl.0000", False).splitlines()
    assert f"#SBATCH --error={folder}/%j.err" in lines
    assert "#SBATCH --output=/dev/null" in lines


def test_error_files_are_found_by_their_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    launcher = SlurmLauncher(log_error="logs/%x.%A_%3a.%j.%%.err")
    # what sbatch and scontrol would have told it
    launcher._workdir["12"] = str(tmp_path)
    launcher._job_names["12"] = "pycrew.ctl.0000"
    launcher._own_id["12_1"] = "14"
    logs = tmp_path / "logs"
    (logs / "pycrew.ctl.0000.12_001.14.%.err").write_text("the element's own words\n")
    assert launcher.failure_output(SlurmJob("12", 1)) == "the element's own words\n"
    # an element SLURM no longer knows: %j cannot be filled in
    with pytest.raises(pycrew.LaunchError, match="cannot tell which file %j names"):
        launcher.failure_output(SlurmJob("12", 2))
    # one job, not an array, with stderr in the output file
    launcher = SlurmLauncher(log_output="out-%j-%a.txt", log_error=None)
    launcher._workdir["20"] = str(tmp_path)
    (tmp_path / "out-20-4294967294.txt").write_text("joined\n")
    assert launcher.failure_output(SlurmJob("20")) == "joined\n"
    assert (tmp_path / "out-20-4294967294.txt").exists()  # the user's file stays
    with pytest.raises(pycrew.LaunchError, match="went to /dev/null"):
        SlurmLauncher(log_error="/dev/null").failure_output(SlurmJob("21"))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("cpus_per_task", 0),
        ("cpus_per_task", -1),
        ("memory_gigabytes_required", 0),
        ("memory_gigabytes_per_cpu", float("inf")),
        ("time_minutes", 1.5),
        ("partition", ""),
        ("script_lines", "module load python"),
        ("script_lines", ["two\nlines"]),
        ("log_output", ""),
        ("array", "yes"),
    ],
)
def test_bad_slurm_options_are_refused(option: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=option.split("_")[0]):
        SlurmLauncher(**{option: value})  # type: ignore[arg-type]


def test_handles_name_jobs_and_array_elements() -> None:
    assert SlurmJob("12").id == "12"
    assert SlurmJob("12", 3).id == "12_3"


def test_monitor_needs_ids_or_all() -> None:
    with pytest.raises(ValueError, match="all=True"):
        pycrew.SlurmMonitor().terminate()
    with pytest.raises(ValueError, match="all=True"):
        pycrew.SlurmMonitor().terminate(ids=["1"], all=True)


_KILLED_SLURM_CONTROLLER = """
import os, sys, time
import pycrew
from tests.helpers import tasks

ctl = pycrew.slurm_controller(name=sys.argv[1], workers=1, seconds_interval=0.1)
pid = ctl.push(os.getpid).result(timeout=120)
future = ctl.push(tasks.fork_then_hold_gil, 300)
while not future.running():
    time.sleep(0.01)
print(pid, flush=True)
time.sleep(900)
"""


def test_a_killed_controller_leaves_no_job_running(cluster: None, tmp_path: Path) -> None:
    """A job's worker stuck in C with the GIL (and a child) ends with its killed controller."""
    name = f"killed-{os.getpid()}"
    script = tmp_path / "controller.py"
    script.write_text(_KILLED_SLURM_CONTROLLER)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    controller = subprocess.Popen(
        [sys.executable, str(script), name], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert controller.stdout is not None
        assert int(controller.stdout.readline()) > 0
        assert [j.controller for j in _our_jobs()] == [name]
        controller.kill()
        controller.wait(60)
        wait_until(lambda: _our_jobs() == [], 30, "the job to end with its worker")
    finally:
        controller.kill()
        controller.wait(60)


def test_a_script_run_from_another_folder_finds_its_helpers_on_slurm(
    cluster: None, tmp_path: Path
) -> None:
    from tests.helpers.scripts import run_python
    from tests.worker.test_environment import script_in_a_project

    script, elsewhere = script_in_a_project(
        tmp_path, "slurm_controller(workers=1, seconds_interval=0.1)"
    )
    done = run_python(script.read_text(), script=script, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "result 42" in done.stdout


def test_several_workers_per_job_are_each_a_worker(cluster: None, tmp_path: Path) -> None:
    marks = [tmp_path / f"started-{i}" for i in range(4)]
    with _slurm(workers=4, processes=2) as ctl:
        futures = [ctl.push(tasks.mark_then_sleep, str(m), 600) for m in marks]
        wait_until(lambda: all(m.exists() for m in marks), 60, "four tasks running")
        assert _launcher(ctl).calls["sbatch"] == 1
        assert len(_our_jobs()) == 2  # two array elements of two workers each
        pids = ctl.pids()
        assert len(pids) == 4
        # one worker dies: its task alone is a crash, and its job runs on
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: sum(f.done() for f in futures) == 1, 60, "the crash")
        crashed = [f.record() for f in futures if f.done()]
        assert [r.status for r in crashed] == ["crash"]
        assert crashed[0].pid == pids[0]
        wait_until(lambda: len(ctl.pids()) == 3, 60, "the controller to see it")
        assert len(_our_jobs()) == 2  # its sibling holds the job
        assert sum(f.done() for f in futures) == 1  # the three others run on
        ctl.cancel(all=True)
    assert _our_jobs() == []


def test_the_script_of_several_workers_per_job() -> None:
    launcher = SlurmLauncher(processes=3)
    specs = [
        WorkerSpec(
            command=["python3", "-m", "pycrew", "worker", "--id", f"c-{i}"],
            env={},
            worker_id=f"c-{i}",
            controller="c",
        )
        for i in range(5)
    ]
    script = launcher.script(specs, "pycrew.c.tok", array=True)
    lines = script.splitlines()
    assert "#SBATCH --array=0-1" in lines  # 5 workers in jobs of 3: two elements
    assert "  0) ids='c-0 c-1 c-2' ;;" in lines
    assert "  1) ids='c-3 c-4' ;;" in lines
    assert "PYCREW_OWN_GROUP=1; export PYCREW_OWN_GROUP" in lines
    assert '    exec python3 -m pycrew worker --id "$id"' in lines
    assert lines[-1] == "wait"


def test_a_worker_near_its_job_limit_hands_back_a_task_it_could_not_end(cluster: None) -> None:
    # a 1-minute job (its workers count 50 s): after a 30 s task, one that may
    # take 35 s cannot end in time there; a fresh job's worker runs it
    with _slurm(workers=1, time_minutes=1) as ctl:
        first = ctl.push(tasks.pid_after, 30.0, seconds_timeout=35)
        second = ctl.push(tasks.pid_after, 0.5, seconds_timeout=35)
        one, two = first.record(timeout=120), second.record(timeout=120)
        assert (one.status, two.status) == ("success", "success")
        assert one.result != two.result
        assert one.worker != two.worker
        assert two.attempts == 1
        assert _launcher(ctl).calls["sbatch"] == 2  # the replacement


def test_jobs_with_a_time_limit_tell_their_workers_when_they_end() -> None:
    script = SlurmLauncher(time_minutes=5).script([_spec()], "pycrew.c.tok", array=False)
    assert "PYCREW_JOB_END=$(( $(date +%s) + 290 )); export PYCREW_JOB_END" in script
    assert "PYCREW_JOB_END" not in SlurmLauncher().script([_spec()], "n", array=False)
