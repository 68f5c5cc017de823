"""The stand-in's kubelet: each pod's container as a local process (see __init__).

```
 Store change (Condition) ──► new pod: fail its pull / leave it unplaced / start a process
                          ──► process ended: Succeeded or Failed, code, reason, stderr tail
                          ──► pod deleted: SIGTERM its process, SIGKILL after 2 s
```
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from .api import Store, now_text

if TYPE_CHECKING:
    from pathlib import Path

#: how much of a failed container's stderr goes in its termination message
MESSAGE_BYTES = 2048


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


class Kubelet:
    """Runs the pods of ``store`` as local processes until ``close()``.

    Args:
        store: the stand-in API's objects.
        folder: where each container's stderr is kept.
        node_cpu: the cores of the one node: a pod asking for more is Unschedulable.
        bad_images: images whose pull fails with ErrImagePull.
    """

    def __init__(
        self,
        store: Store,
        folder: Path,
        node_cpu: float = 8,
        bad_images: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.folder = folder
        self.node_cpu = node_cpu
        self.bad_images = set(bad_images)
        #: running processes by (namespace, pod name)
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        #: processes of deleted pods, and when they get SIGKILL
        self.dying: list[tuple[subprocess.Popen[bytes], float]] = []
        self.seen: set[tuple[str, str]] = set()
        self.reported: set[tuple[str, str]] = set()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="k8s-standin-kubelet")
        self.thread.start()

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while True:
            with self.store.lock:
                if self._stop:
                    return
                # woken by any change; the timeout is for processes ending
                self.store.lock.wait(0.05)
                pods = {
                    (ns, name): obj
                    for (kind, ns, name), obj in self.store.objects.items()
                    if kind == "pods"
                }
            for key, pod in pods.items():
                if key not in self.seen:
                    self.seen.add(key)
                    self._admit(key, pod)
            for key in [k for k in self.procs if k not in pods]:
                proc = self.procs.pop(key)
                with contextlib.suppress(OSError):
                    proc.terminate()
                self.dying.append((proc, time.monotonic() + 2))
            for key, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    del self.procs[key]
                    if key not in self.reported:
                        self._report(key, code)
            for proc, deadline in list(self.dying):
                if proc.poll() is not None:
                    self.dying.remove((proc, deadline))
                elif time.monotonic() > deadline:
                    with contextlib.suppress(OSError):
                        proc.kill()

    def _admit(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        ns, name = key
        container = pod["spec"]["containers"][0]
        asked = (container.get("resources") or {}).get("requests") or {}
        if "cpu" in asked and cores(asked["cpu"]) > self.node_cpu:
            self.store.set_status(
                ns,
                name,
                {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient cpu. "
                            "preemption: 0/1 nodes are available: 1 No preemption victims "
                            "found for incoming pod.",
                        }
                    ],
                },
            )
            return
        if container["image"] in self.bad_images:
            self._waiting(
                key,
                "ErrImagePull",
                f'failed to pull and unpack image "{container["image"]}": not found',
            )
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"]["secretKeyRef"]
            with self.store.lock:
                secret = self.store.objects.get(("secrets", ns, ref["name"]))
            if secret is None or ref["key"] not in (secret.get("data") or {}):
                self._waiting(
                    key, "CreateContainerConfigError", f'secret "{ref["name"]}" not found'
                )
                return
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        argv = [*container["command"], *(container.get("args") or [])]
        stderr = open(self.folder / f"{ns}.{name}.err", "wb")  # noqa: SIM115 - the child's
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            # as a container runtime says it: the container fails with StartError
            message = f'exec: "{argv[0]}": {exc.strerror.lower() if exc.strerror else exc}'
            self._report(key, 128, "StartError", message)
            return
        finally:
            stderr.close()
        self.procs[key] = proc
        started = now_text()
        self.store.set_status(
            ns,
            name,
            {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "startTime": started,
                "containerStatuses": [
                    self._container(pod, {"running": {"startedAt": started}}, ready=True)
                ],
            },
        )

    @staticmethod
    def _container(
        pod: dict[str, Any], state: dict[str, Any], ready: bool = False
    ) -> dict[str, Any]:
        container = pod["spec"]["containers"][0]
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "state": state,
        }

    def _waiting(self, key: tuple[str, str], reason: str, message: str) -> None:
        ns, name = key
        with self.store.lock:
            pod = self.store.objects.get(("pods", ns, name))
        if pod is not None:
            state = {"waiting": {"reason": reason, "message": message}}
            self.store.set_status(
                ns, name, {"phase": "Pending", "containerStatuses": [self._container(pod, state)]}
            )

    def _report(
        self, key: tuple[str, str], code: int, reason: str | None = None, message: str = ""
    ) -> None:
        ns, name = key
        with self.store.lock:
            pod = self.store.objects.get(("pods", ns, name))
        if pod is None:
            return
        self.reported.add(key)
        if code < 0:
            code = 128 - code  # a runtime's way of saying "signal N"
        if code != 0 and not message:
            with contextlib.suppress(OSError):
                message = (
                    (self.folder / f"{ns}.{name}.err")
                    .read_bytes()[-MESSAGE_BYTES:]
                    .decode("utf-8", "replace")
                )
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "finishedAt": now_text(),
        }
        if message:
            terminated["message"] = message
        status = dict(pod.get("status") or {})
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        status["containerStatuses"] = [self._container(pod, {"terminated": terminated})]
        self.store.set_status(ns, name, status)

    # ------------------------------------------------------------- control
    def pod_pids(self) -> dict[str, int]:
        return {name: proc.pid for (_, name), proc in self.procs.items()}

    def oom_kill(self, name: str, ns: str = "default") -> None:
        """Kill a running container as the kernel's OOM killer would; the status says so
        before the process goes, as a reader polling on the disconnect would then find it."""
        proc = self.procs[(ns, name)]
        self._report((ns, name), 137, "OOMKilled")
        proc.kill()

    def evict(self, name: str, ns: str = "default") -> None:
        """Evict a running pod as a kubelet under node pressure does: the pod fails with
        reason Evicted and the node's words, its container is killed (137)."""
        proc = self.procs[(ns, name)]
        self._report((ns, name), 137, "Error", "killed by the kubelet")
        with self.store.lock:
            pod = self.store.objects.get(("pods", ns, name))
        if pod is not None:
            status = dict(pod.get("status") or {})
            status["reason"] = "Evicted"
            status["message"] = "The node was low on resource: memory. Threshold quantity: 100Mi."
            self.store.set_status(ns, name, status)
        proc.kill()

    def close(self) -> None:
        """Stop the loop and kill every process it started."""
        with self.store.lock:
            self._stop = True
            self.store.lock.notify_all()
        self.thread.join(10)
        for proc in [*self.procs.values(), *(p for p, _ in self.dying)]:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()
        self.dying.clear()
