"""Workers as Kubernetes pods. No Kubernetes can run here: these tests drive the real
``kubernetes`` client against a local stand-in, not Kubernetes (``tests/helpers/k8s_standin``):
an in-memory API server over HTTP and a test-side kubelet that runs each pod's
container command as a local process. They check pycrew's side of the
conversation (what it creates, lists and deletes, and how it reads pod status),
not a real cluster."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from pycrew._engines._kubernetes._launcher import (
    CONTROLLER_LABEL,
    SESSION_LABEL,
    WORKER_LABEL,
    KubernetesLauncher,
    dns_label,
)
from pycrew._engines._kubernetes._monitor import KubernetesMonitor
from pycrew._wire import _frames
from tests.helpers import tasks
from tests.helpers.common import wait_until

# the official client drives the stand-in: it comes with pycrew[kubernetes] and pycrew[test]
pytest.importorskip("kubernetes", reason="pip install 'pycrew[kubernetes]'")
from tests.helpers.k8s_standin import ApiServer, Kubelet, write_kubeconfig

if TYPE_CHECKING:
    from collections.abc import Iterator

WAIT = 60
BAD_IMAGE = "registry.invalid/pycrew/nope:0"


@dataclass
class Cluster:
    """The stand-in of one test: its API server, kubelet and kubeconfig."""

    api: ApiServer
    kubelet: Kubelet
    kubeconfig: str

    def raw(self, path: str) -> Any:
        """What the API answers at ``path``, as JSON (not through pycrew)."""
        with urllib.request.urlopen(self.api.url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def pods(self) -> list[dict[str, Any]]:
        return list(self.raw("/api/v1/namespaces/default/pods")["items"])

    def secrets(self) -> list[dict[str, Any]]:
        return list(self.raw("/api/v1/namespaces/default/secrets")["items"])

    def launcher(self, **options: Any) -> KubernetesLauncher:
        options.setdefault("image", "python:3.11-slim")
        options.setdefault("python", sys.executable)
        return KubernetesLauncher(kubeconfig=self.kubeconfig, **options)

    def controller(
        self, launcher: KubernetesLauncher | None = None, **options: Any
    ) -> pycrew.Controller:
        options.setdefault("seconds_interval", 0.1)
        return pycrew.Controller(
            launcher or self.launcher(), tls="automatic", host="127.0.0.1", **options
        )

    def monitor(self) -> KubernetesMonitor:
        return KubernetesMonitor(kubeconfig=self.kubeconfig)


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[Cluster]:
    api = ApiServer()
    kubelet = Kubelet(api.store, tmp_path, node_cpu=8, bad_images=frozenset({BAD_IMAGE}))
    try:
        yield Cluster(api, kubelet, str(write_kubeconfig(tmp_path / "kubeconfig", api.url)))
    finally:
        kubelet.close()
        api.close()


def _pod(ctl: pycrew.Controller, cluster: Cluster) -> dict[str, Any]:
    pods = cluster.pods()
    assert len(pods) == 1, pods
    return pods[0]


def test_map_of_100_tasks_over_pods_with_tls(k8s: Cluster) -> None:
    ctl = pycrew.kubernetes_controller(
        "python:3.11-slim",
        name="hundred",
        workers=2,
        host="127.0.0.1",
        kubeconfig=k8s.kubeconfig,
        python=sys.executable,
        seconds_interval=0.1,
    )
    launcher = ctl.launcher
    assert isinstance(launcher, KubernetesLauncher)
    assert ctl.tls.mode == "automatic"  # the factory's default
    with ctl:
        records = ctl.map(abs, range(-100, 0))
        assert [r.result for r in records] == list(range(100, 0, -1))
        pods = k8s.pods()
        assert len(pods) == 2
        for pod in pods:
            labels = pod["metadata"]["labels"]
            assert labels[CONTROLLER_LABEL] == "hundred"
            assert labels[SESSION_LABEL] == launcher.selector().partition("=")[2]
            assert labels[WORKER_LABEL].startswith("hundred-")
            assert pod["spec"]["restartPolicy"] == "Never"
        # status comes from one LIST per round at most, never one call per pod
        assert "read_namespaced_pod" not in launcher.calls
        assert launcher.calls["create_namespaced_secret"] == 1
    assert k8s.pods() == []
    assert k8s.secrets() == []


def test_the_pod_of_a_worker_that_left_idle_goes_and_a_new_one_comes(k8s: Cluster) -> None:
    with k8s.controller(workers=1, seconds_idle=0.5) as ctl:
        assert ctl.push(tasks.add, 1, 1).result(timeout=WAIT) == 2
        wait_until(lambda: ctl.pids() == [], WAIT, "the idle worker to leave")
        wait_until(lambda: k8s.pods() == [], WAIT, "its finished pod to be deleted")
        assert ctl.push(tasks.add, 2, 2).result(timeout=WAIT) == 4
        assert len(k8s.pods()) == 1


def test_an_image_that_cannot_be_pulled_is_a_launch_error_naming_it(k8s: Cluster) -> None:
    launcher = k8s.launcher(image=BAD_IMAGE)
    with k8s.controller(launcher, workers=1) as ctl:
        future = ctl.push(tasks.add, 1, 1)
        with pytest.raises(pycrew.LaunchError, match="ErrImagePull") as caught:
            future.result(timeout=WAIT)
        assert BAD_IMAGE in str(caught.value)
        assert launcher.calls["create_namespaced_pod"] <= 2
    assert k8s.pods() == []
    assert k8s.secrets() == []


def test_a_pod_that_cannot_be_placed_names_insufficient_cpu(k8s: Cluster) -> None:
    launcher = k8s.launcher(cpu=64, seconds_unschedulable=0)
    with k8s.controller(launcher, workers=1) as ctl:
        future = ctl.push(tasks.add, 1, 1)
        with pytest.raises(pycrew.LaunchError, match="Insufficient cpu") as caught:
            future.result(timeout=WAIT)
        assert "Unschedulable" in str(caught.value)


def test_a_worker_oomkilled_mid_task_is_a_crash_naming_oomkilled(
    k8s: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    with k8s.controller(workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        [name] = k8s.kubelet.pod_pids()
        k8s.kubelet.oom_kill(name)
        record = future.record(timeout=WAIT)
        assert record.status == "crash"
        assert "OOMKilled" in (record.error or ""), record.error
        assert "SIGKILL" in (record.error or "")


def test_an_evicted_worker_is_a_crash_naming_the_eviction(k8s: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with k8s.controller(workers=1, crashes_max=0) as ctl:
        future = ctl.push(tasks.mark_then_sleep, str(marker), 600)
        wait_until(marker.exists, WAIT, "the task to start")
        [name] = k8s.kubelet.pod_pids()
        k8s.kubelet.evict(name)
        record = future.record(timeout=WAIT)
        assert record.status == "crash"
        assert "Evicted: The node was low on resource: memory" in (record.error or ""), record.error


def test_terminate_leaves_no_pod_and_no_secret(k8s: Cluster) -> None:
    ctl = k8s.controller(workers=3)
    try:
        ctl.launch(3)
        assert ctl.map(abs, [-1, -2, -3])[0].result == 1
        assert len(k8s.pods()) == 3
        assert len(k8s.secrets()) == 1
    finally:
        ctl.terminate()
    assert k8s.pods() == []
    assert k8s.secrets() == []


def test_the_secret_is_nowhere_the_api_shows_but_its_secret(
    k8s: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctl = k8s.controller(workers=2, env={"PLAIN_SETTING": "visible", "DB_PASSWORD": "hunter2-x"})
    try:
        ctl.start()
        secret = ctl._env[_frames.SECRET_ENV]
        # the worker got the secret (it joined) and the user's variables
        values = [r.result for r in ctl.map(tasks.env, ["PLAIN_SETTING", "DB_PASSWORD"])]
        assert values == ["visible", "hunter2-x"]
        shown = json.dumps(
            [
                k8s.raw("/api/v1/namespaces/default/pods"),
                *(
                    k8s.raw(f"/api/v1/namespaces/default/pods/{p['metadata']['name']}")
                    for p in k8s.pods()
                ),
                k8s.raw("/api/v1/namespaces/default/events"),
            ]
        )
        assert "secretKeyRef" in shown
        assert "visible" in shown
        assert secret not in shown
        assert "hunter2-x" not in shown
        # what crossed the wire to make pods holds no secret either
        sent = [body for method, path, body in k8s.api.store.requests if path.endswith("/pods")]
        assert sent
        assert not any(secret in body or "hunter2-x" in body for body in sent)
        # the Secret is where it lives, and pods name it
        [stored] = k8s.secrets()
        assert stored["type"] == "Opaque"
        assert base64.b64decode(stored["data"][_frames.SECRET_ENV]).decode() == secret
        assert (
            stored["metadata"]["name"]
            == f"pycrew-{dns_label(ctl.name, 54)}-{stored['metadata']['labels'][SESSION_LABEL]}"
        )
    finally:
        ctl.terminate()
    assert k8s.pods() == []
    assert k8s.secrets() == []
    # nor in any log line, at any level
    assert "create_namespaced_secret" in caplog.text
    assert secret not in caplog.text
    assert "hunter2-x" not in caplog.text
    assert base64.b64encode(secret.encode()).decode() not in caplog.text  # nor as the API holds it


def test_a_shaped_worker_asks_for_its_shape(k8s: Cluster) -> None:
    with k8s.controller(workers=1) as ctl:
        shaped = ctl.push(tasks.add, 2, 3, resources={"cpus": 2, "memory": "1 GiB", "gpus": 1})
        assert shaped.result(timeout=WAIT) == 5
        resources = _pod(ctl, k8s)["spec"]["containers"][0]["resources"]
        want = {"cpu": "2", "memory": "1024Mi", "nvidia.com/gpu": "1"}
        assert resources == {"requests": want, "limits": want}


def test_the_pod_spec_carries_every_option(k8s: Cluster) -> None:
    launcher = k8s.launcher(
        cpu=0.5,
        memory="512 MiB",
        node_selector={"pool": "workers"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "crew", "effect": "NoSchedule"}
        ],
        service_account="crew-runner",
        labels={"team": "science"},
        image_pull_policy="IfNotPresent",
    )
    with k8s.controller(launcher, workers=1, name="Opts.Demo") as ctl:
        ctl.launch(1)
        wait_until(lambda: len(k8s.kubelet.pod_pids()) == 1, WAIT, "the pod to run")
        pod = _pod(ctl, k8s)
        spec, labels = pod["spec"], pod["metadata"]["labels"]
        assert spec["nodeSelector"] == {"pool": "workers"}
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "crew", "effect": "NoSchedule"}
        ]
        assert spec["serviceAccountName"] == "crew-runner"
        assert labels["team"] == "science"
        assert labels[CONTROLLER_LABEL] == "opts-demo"
        assert pod["metadata"]["annotations"]["pycrew.dev/controller-name"] == "Opts.Demo"
        container = spec["containers"][0]
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["image"] == "python:3.11-slim"
        assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
        assert container["command"][:3] == [sys.executable, "-m", "pycrew"]


def test_a_python_without_pycrew_is_named_from_the_termination_message(
    k8s: Cluster, tmp_path: Path
) -> None:
    from tests.operations.test_diagnosis import NO_PYCREW_PATH, python_without_pycrew

    launcher = k8s.launcher(python=str(python_without_pycrew(tmp_path)))
    with k8s.controller(launcher, workers=1, env=NO_PYCREW_PATH) as ctl:
        future = ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError, match="pycrew is not installed") as caught:
            future.result(timeout=WAIT)
        assert launcher.calls["create_namespaced_pod"] <= 2
    assert "No module named pycrew" in str(caught.value)


def test_a_command_the_image_lacks_is_named(k8s: Cluster) -> None:
    launcher = k8s.launcher(python="/opt/no/such/python")
    with k8s.controller(launcher, workers=1) as ctl:
        future = ctl.push(tasks.add, 1, 2)
        with pytest.raises(pycrew.LaunchError, match="StartError") as caught:
            future.result(timeout=WAIT)
    assert "/opt/no/such/python" in str(caught.value)


_KILLED_CONTROLLER = """
import sys, time
import pycrew
from pycrew._engines._kubernetes._launcher import KubernetesLauncher
from tests.helpers import tasks

launcher = KubernetesLauncher("python:3.11-slim", kubeconfig=sys.argv[2], python=sys.executable)
ctl = pycrew.Controller(launcher, name=sys.argv[1], workers=1, tls="automatic", host="127.0.0.1")
ctl.start()
future = ctl.push(tasks.mark_then_sleep, sys.argv[3], 600)
print("running", flush=True)
time.sleep(900)
"""


def test_the_monitor_ends_the_pods_and_secret_of_a_killed_controller(
    k8s: Cluster, tmp_path: Path
) -> None:
    script = tmp_path / "controller.py"
    script.write_text(_KILLED_CONTROLLER)
    marker = tmp_path / "started"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    name = f"killed-{os.getpid()}"
    controller = subprocess.Popen(
        [sys.executable, str(script), name, k8s.kubeconfig, str(marker)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert controller.stdout is not None
        assert controller.stdout.readline().strip() == "running"
        wait_until(marker.exists, WAIT, "the task to start")
        monitor = k8s.monitor()
        [pod] = monitor.jobs()
        assert pod.controller == name
        assert pod.state == "Running"
        assert monitor.stale() == []  # its controller lives
        controller.kill()
        controller.wait(WAIT)
        # the worker saw its connection go and left; its pod and Secret stay
        wait_until(lambda: not k8s.kubelet.pod_pids(), WAIT, "the worker to leave")
        [stale] = monitor.stale()
        assert stale.id == pod.id
        assert stale.state.startswith(("Succeeded", "Failed"))
        assert len(k8s.secrets()) == 1
        # from the command line: list the stale pod, then end it (and its Secret)
        pycrew_cli = [sys.executable, "-m", "pycrew", "monitor", "kubernetes"]
        where = ["--kubeconfig", k8s.kubeconfig, "--stale"]
        listed = subprocess.run(
            [*pycrew_cli, *where], capture_output=True, text=True, timeout=WAIT, env=env
        )
        assert listed.returncode == 0, listed.stderr
        assert pod.id in listed.stdout
        assert "1 stale pycrew job(s)" in listed.stdout
        ended = subprocess.run(
            [*pycrew_cli, *where, "--terminate"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env,
        )
        assert ended.returncode == 0, ended.stderr
        assert f"cancelled 1 job(s): {pod.id}" in ended.stdout
        assert monitor.jobs() == []
        assert k8s.pods() == []
        assert k8s.secrets() == []
    finally:
        controller.kill()
        controller.wait(WAIT)


def test_secret_and_plain_variables_are_told_apart() -> None:
    launcher = KubernetesLauncher("img", kubeconfig="/nonexistent", secret_env=["MY_SETTING"])
    plain, hidden = launcher.split_env(
        {
            _frames.SECRET_ENV: "s",
            _frames.TRUST_ENV: "pem",
            _frames.WORKER_ENV: "w-1",
            "API_TOKEN": "t",
            "MY_SETTING": "m",
            "OTHER": "o",
        }
    )
    assert set(plain) == {_frames.TRUST_ENV, _frames.WORKER_ENV, "OTHER"}
    assert set(hidden) == {_frames.SECRET_ENV, "API_TOKEN", "MY_SETTING"}
    assert dns_label("My_Controller.Name") == "my-controller-name"
    with pytest.raises(pycrew.LaunchError, match="Kubernetes configuration"):
        launcher.validate()


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # a module set to None in sys.modules cannot be imported: as if never installed
    monkeypatch.setitem(sys.modules, "kubernetes.client", None)
    with pytest.raises(pycrew.LaunchError, match=r"pip install 'pycrew\[kubernetes\]'"):
        pycrew.kubernetes_controller("python:3.11-slim")
