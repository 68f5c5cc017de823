"""Workers as AWS Batch jobs. No AWS can be reached here: these tests drive the real
boto3 against a local stand-in, not AWS (``tests/helpers/aws_standin``): moto's
Secrets Manager server, a small Batch API server checked against botocore's
model, and a test-side compute environment that runs each job's command as a
local process. They check pycrew's side of the conversation (what it submits,
describes, terminates, registers and deletes, and how it reads job status),
not AWS itself."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew._engines._aws_batch._jobs import CONTROLLER_TAG, SESSION_TAG
from pycrew._engines._aws_batch._launcher import AwsBatchLauncher
from pycrew._engines._aws_batch._monitor import AwsBatchMonitor
from pycrew._wire import _frames
from tests.helpers import tasks
from tests.helpers.common import wait_until

# boto3 drives the stand-in, moto serves Secrets Manager: pycrew[aws] and pycrew[test]
pytest.importorskip("boto3", reason="pip install 'pycrew[aws]'")
pytest.importorskip("moto.server", reason="pip install moto flask flask-cors (pycrew[test])")
from tests.helpers.aws_standin import CREDENTIALS, DEFINITION, QUEUE, AwsStandin

if TYPE_CHECKING:
    from collections.abc import Iterator

WAIT = 60
BAD_IMAGE = "registry.invalid/pycrew/nope:0"
LIVE = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"}


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsStandin]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    standin = AwsStandin(tmp_path, bad_images=frozenset({BAD_IMAGE}))
    try:
        yield standin
    finally:
        standin.close()


def controller(launcher: AwsBatchLauncher, **options: Any) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.1)
    return pycrew.Controller(launcher, tls="automatic", host="127.0.0.1", **options)


def submitted(aws: AwsStandin) -> list[dict[str, Any]]:
    return [body for name, body in aws.store.requests if name == "SubmitJob"]


def all_jobs(aws: AwsStandin) -> list[dict[str, Any]]:
    """DescribeJobs of every job the API holds, array children included."""
    ids = list(aws.store.jobs)
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        found += aws.batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
    return found


def assert_all_gone(aws: AwsStandin) -> None:
    """No job left unfinished, pycrew's job definition inactive, no secret."""
    assert [j["jobId"] for j in all_jobs(aws) if j["status"] in LIVE] == []
    definitions = aws.batch.describe_job_definitions()["jobDefinitions"]
    ours = [d for d in definitions if d["jobDefinitionName"] != DEFINITION]
    assert ours
    assert all(d["status"] == "INACTIVE" for d in ours)
    assert aws.secrets.list_secrets()["SecretList"] == []


def test_map_of_100_tasks_with_one_array_job_per_scaling_step(aws: AwsStandin) -> None:
    ctl = pycrew.aws_batch_controller(
        QUEUE,
        DEFINITION,
        name="hundred",
        workers=4,
        host="127.0.0.1",
        region="us-east-1",
        endpoints=aws.endpoints,
        python=sys.executable,
        seconds_interval=0.1,
    )
    launcher = ctl.launcher
    assert isinstance(launcher, AwsBatchLauncher)
    assert ctl.tls.mode == "automatic"  # the factory's default
    with ctl:
        records = ctl.map(abs, range(-100, 0))
        assert [r.result for r in records] == list(range(100, 0, -1))
        [body] = submitted(aws)  # one scaling step: one array job of 4
        assert body["arrayProperties"] == {"size": 4}
        assert body["jobName"].startswith("pycrew-hundred-")
        assert body["tags"][CONTROLLER_TAG] == "hundred"
        assert launcher.calls["submit_job"] == 1
        assert launcher.calls["create_secret"] == 1
        # status is one DescribeJobs per round at most, never one call per worker
        assert launcher.calls.get("describe_jobs", 0) < 40
        children = [j for j in all_jobs(aws) if "index" in j.get("arrayProperties", {})]
        assert sorted(j["arrayProperties"]["index"] for j in children) == [0, 1, 2, 3]
        # alive while the controller runs (on a busy machine some may still be starting)
        assert all(j["status"] in LIVE for j in children)
    assert_all_gone(aws)


def test_a_single_worker_is_a_plain_job_and_a_step_of_two_an_array(aws: AwsStandin) -> None:
    with controller(aws.launcher(), workers=3) as ctl:
        ctl.launch(1)
        ctl.launch(2)
        wait_until(lambda: len(ctl.pids()) == 3, WAIT, "three workers to join")
        first, second = submitted(aws)
        assert "arrayProperties" not in first
        assert second["arrayProperties"] == {"size": 2}
    assert_all_gone(aws)


def test_an_image_that_cannot_be_pulled_is_a_launch_error_naming_it(aws: AwsStandin) -> None:
    aws.batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={"image": BAD_IMAGE, "executionRoleArn": "arn:aws:iam::1:role/r"},
    )
    launcher = aws.launcher()
    with controller(launcher, workers=1) as ctl:
        future = ctl.push(tasks.add, 1, 1)
        with pytest.raises(pycrew.LaunchError, match="CannotPullContainerError") as caught:
            future.result(timeout=WAIT)
        assert BAD_IMAGE in str(caught.value)
        assert launcher.calls["submit_job"] <= 2
    assert_all_gone(aws)


def test_a_worker_killed_mid_task_is_a_crash_with_the_status_reason(
    aws: AwsStandin, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    with controller(aws.launcher(), workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        [process] = aws.compute.processes.values()
        process.send_signal(signal.SIGKILL)
        record = future.record(timeout=WAIT)
        assert record.status == "crash"
        assert "Essential container in task exited" in (record.error or ""), record.error
        assert "SIGKILL" in (record.error or "")
    assert_all_gone(aws)


def test_terminate_ends_queued_jobs_the_definition_and_the_secret(aws: AwsStandin) -> None:
    aws.compute.paused = True  # no capacity: the jobs wait RUNNABLE
    ctl = controller(aws.launcher(), workers=3)
    try:
        ctl.launch(3)
        wait_until(
            lambda: sum(j["status"] == "RUNNABLE" for j in all_jobs(aws)) == 3,
            WAIT,
            "three children to wait for capacity",
        )
        assert len(aws.secrets.list_secrets()["SecretList"]) == 1
    finally:
        ctl.terminate()
    assert_all_gone(aws)
    # one TerminateJob for the array job: Batch ends its children
    terminations = [b for n, b in aws.store.requests if n == "TerminateJob"]
    assert len(terminations) == 1
    assert ":" not in terminations[0]["jobId"]


def test_the_secret_is_nowhere_the_api_shows(
    aws: AwsStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctl = controller(
        aws.launcher(), workers=2, env={"PLAIN_SETTING": "visible", "DB_PASSWORD": "hunter2-x"}
    )
    try:
        ctl.start()
        secret = ctl._env[_frames.SECRET_ENV]
        names = ["PLAIN_SETTING", "DB_PASSWORD", "FROM_DEFINITION"]
        values = [r.result for r in ctl.map(tasks.env, names)]
        assert values == ["visible", "hunter2-x", "yes"]
        definitions = aws.batch.describe_job_definitions()["jobDefinitions"]
        [ours] = [d for d in definitions if d["jobDefinitionName"] != DEFINITION]
        [stored] = aws.secrets.list_secrets()["SecretList"]
        shown = json.dumps(
            [
                all_jobs(aws),
                aws.batch.list_jobs(jobQueue=QUEUE, jobStatus="RUNNING"),
                definitions,
                [s["Name"] for s in aws.secrets.list_secrets()["SecretList"]],
                aws.store.requests,
            ],
            default=str,
        )
        assert "visible" in shown
        assert f"{stored['ARN']}:{_frames.SECRET_ENV}::" in shown  # the reference, not the value
        assert secret not in shown
        assert "hunter2-x" not in shown
        # the secret is where it lives, and the job definition names it
        value = json.loads(aws.secrets.get_secret_value(SecretId=stored["ARN"])["SecretString"])
        assert value[_frames.SECRET_ENV] == secret
        assert value["DB_PASSWORD"] == "hunter2-x"
        assert stored["Name"] == f"pycrew/{ctl.name}/{ours['tags'][SESSION_TAG]}"
        refs = {s["name"] for s in ours["containerProperties"]["secrets"]}
        assert refs == {_frames.SECRET_ENV, "DB_PASSWORD"}
    finally:
        ctl.terminate()
    assert_all_gone(aws)
    assert "create_secret" in caplog.text
    assert secret not in caplog.text
    assert "hunter2-x" not in caplog.text


def test_a_shaped_worker_asks_for_its_shape(aws: AwsStandin) -> None:
    with controller(aws.launcher(vcpus=1, memory_megabytes=512), workers=1) as ctl:
        plain = ctl.push(tasks.add, 1, 1)
        assert plain.result(timeout=WAIT) == 2
        shaped = ctl.push(tasks.add, 2, 3, resources={"cpus": 2, "memory": "1 GiB", "gpus": 1})
        assert shaped.result(timeout=WAIT) == 5
    bodies = submitted(aws)
    asked = [
        {r["type"]: r["value"] for r in b["containerOverrides"]["resourceRequirements"]}
        for b in bodies
    ]
    assert asked[0] == {"VCPU": "1", "MEMORY": "512"}
    assert {"VCPU": "2", "MEMORY": "1024", "GPU": "1"} in asked[1:]


def test_options_reach_the_submission(aws: AwsStandin) -> None:
    launcher = aws.launcher(
        seconds_timeout_job=600,
        retry_attempts=2,
        tags={"team": "science"},
        container_overrides={"environment": [{"name": "EXTRA", "value": "1"}]},
    )
    with controller(launcher, workers=1) as ctl:
        assert ctl.push(tasks.env, "EXTRA").result(timeout=WAIT) == "1"
    [body] = submitted(aws)
    assert body["timeout"] == {"attemptDurationSeconds": 600}
    assert body["retryStrategy"] == {"attempts": 2}
    assert body["tags"]["team"] == "science"
    command = body["containerOverrides"]["command"]
    assert command[:2] == ["sh", "-c"]
    # the worker learns when Batch will end its job (600 s, less a margin)
    assert f"{_frames.JOB_END_ENV}=$(( $(date +%s) + 590 ))" in command[2]
    with pytest.raises(pycrew.ArgumentError, match="command"):
        aws.launcher(container_overrides={"command": ["x"]})


_KILLED_CONTROLLER = """
import json, sys, time
import pycrew
from pycrew._engines._aws_batch._launcher import AwsBatchLauncher

launcher = AwsBatchLauncher(sys.argv[2], sys.argv[3], region="us-east-1",
                            endpoints=json.loads(sys.argv[4]), python=sys.executable)
ctl = pycrew.Controller(launcher, name=sys.argv[1], workers=2, tls="automatic", host="127.0.0.1")
ctl.start()
ctl.launch(2)
print("running", flush=True)
time.sleep(900)
"""


def test_the_monitor_ends_the_jobs_of_a_killed_controller(aws: AwsStandin, tmp_path: Path) -> None:
    aws.compute.paused = True  # the orphans that cost: jobs still waiting to start
    script = tmp_path / "controller.py"
    script.write_text(_KILLED_CONTROLLER)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    name = f"killed-{os.getpid()}"
    args = [name, QUEUE, DEFINITION, json.dumps(aws.endpoints)]
    process = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "running"
        monitor = AwsBatchMonitor(QUEUE, region="us-east-1", endpoints=aws.endpoints)
        wait_until(lambda: len(monitor.jobs()) == 2, WAIT, "both children to be listed")
        jobs = monitor.jobs()
        assert {j.controller for j in jobs} == {name}
        assert sorted(j.array_index for j in jobs) == [0, 1]  # type: ignore[type-var]
        assert {j.state for j in jobs} == {"RUNNABLE"}
        assert monitor.stale() == []  # its controller lives
        process.send_signal(signal.SIGKILL)
        process.wait(WAIT)
        stale = monitor.stale()
        assert sorted(j.id for j in stale) == sorted(j.id for j in jobs)
        # the command line sees them too (boto3 reads endpoints from the environment)
        cli = subprocess.run(
            [sys.executable, "-m", "pycrew", "monitor", "aws-batch", "--job-queue", QUEUE],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            env={
                **env,
                "AWS_ENDPOINT_URL_BATCH": aws.endpoints["batch"],
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws.endpoints["secretsmanager"],
            },
        )
        assert cli.returncode == 0, cli.stderr
        assert all(j.id in cli.stdout for j in jobs), cli.stdout
        assert "2 pycrew job(s)" in cli.stdout
        assert sorted(monitor.terminate(stale=True)) == sorted(j.id for j in jobs)
        assert monitor.jobs() == []
        assert_all_gone(aws)
    finally:
        process.kill()
        process.wait(WAIT)


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("boto3", "botocore")):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr("importlib.import_module", lambda name: refuse(name))
    launcher = AwsBatchLauncher("q", "d", region="us-east-1")
    with pytest.raises(pycrew.LaunchError, match=r"pycrew\[aws\]"):
        launcher.validate()
