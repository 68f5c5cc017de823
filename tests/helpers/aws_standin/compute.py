"""The stand-in's compute environment: each Batch job's container as a local process.

```
 store change (Condition) ──► SUBMITTED ──► RUNNABLE (stays there while paused: no capacity)
                          ──► bad image: FAILED, CannotPullContainerError, no exit code
                          ──► else DescribeJobs through the API, secrets from Secrets
                              Manager by valueFrom ──► RUNNING: a local process
                          ──► process ended: SUCCEEDED / FAILED, exit code, status reason
                          ──► TerminateJob of a running job: SIGTERM, SIGKILL after 2 s
```

A local stand-in, not AWS: no containers, images, instances or isolation.
A job's process gets exactly the environment its container would (the job's
``container.environment`` as the API shows it, the job definition's secrets
resolved from Secrets Manager, Batch's own ``AWS_BATCH_*`` variables) on top
of a minimal base (PATH, HOME, LANG) standing for the image's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from .batch_api import BatchStore

PULL_FAILURE = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
    "resolve ref {image}: not found"
)


class ComputeEnvironment:
    """Runs the jobs of ``store`` as local processes until ``close()``.

    Args:
        store: the stand-in Batch API's state.
        batch, secrets: boto3 clients of the stand-in Batch API and of Secrets Manager.
        folder: where each job's stdout and stderr go (what CloudWatch Logs would hold).
        bad_images: images whose pull fails.
    """

    def __init__(
        self,
        store: BatchStore,
        batch: Any,
        secrets: Any,
        folder: Path,
        bad_images: frozenset[str] = frozenset(),
    ) -> None:
        self.store, self.batch, self.secrets = store, batch, secrets
        self.folder = folder
        self.bad_images = set(bad_images)
        #: while True, jobs wait RUNNABLE: the queue has no capacity
        self.paused = False
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._killing: dict[str, float] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="aws-standin-compute", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            with self.store.lock:
                self.store.changed.wait(0.1)
                todo = [
                    (j["jobId"], j["status"])
                    for j in self.store.jobs.values()
                    if j["status"] in ("SUBMITTED", "RUNNABLE")
                    and j["jobId"] not in self.store.children
                ]
                kills = dict(self.store.to_kill)
            for job_id, status in todo:
                if self._closed:
                    return
                if status == "SUBMITTED":
                    with self.store.lock:
                        self.store.set_status(job_id, "RUNNABLE")
                if not self.paused:
                    try:
                        self._start(job_id)
                    except Exception as exc:  # a stand-in fault shows as a failed job
                        with self.store.lock:
                            self.store.finish(job_id, "FAILED", f"stand-in error: {exc!r}")
            self._kill(kills)

    def _start(self, job_id: str) -> None:
        # what the API shows of the job is what its container gets
        job = self.batch.describe_jobs(jobs=[job_id])["jobs"][0]
        container = job["container"]
        if container["image"] in self.bad_images:
            with self.store.lock:
                self.store.set_status(job_id, "STARTING")
                self.store.finish(
                    job_id,
                    "FAILED",
                    "Task failed to start",
                    container_reason=PULL_FAILURE.format(image=container["image"]),
                )
            return
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env.update({e["name"]: e["value"] for e in container.get("environment", [])})
        try:
            for secret in container.get("secrets", []):
                env[secret["name"]] = self._resolve(secret["valueFrom"])
        except Exception as exc:  # as Batch: the task cannot start without its secrets
            with self.store.lock:
                self.store.finish(
                    job_id,
                    "FAILED",
                    "Task failed to start",
                    container_reason=f"ResourceInitializationError: unable to pull secrets: {exc}",
                )
            return
        env["AWS_BATCH_JOB_ID"] = job_id
        env["AWS_BATCH_JQ_NAME"] = job["jobQueue"]
        index = job.get("arrayProperties", {}).get("index")
        if index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
        name = job_id.replace(":", "_")
        with self.store.lock:
            self.store.set_status(job_id, "STARTING")
        with (
            open(self.folder / f"{name}.out", "wb") as out,
            open(self.folder / f"{name}.err", "wb") as err,
        ):
            process = subprocess.Popen(
                container["command"],
                env=env,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.processes[job_id] = process
        with self.store.lock:
            self.store.set_status(job_id, "RUNNING")
        threading.Thread(
            target=self._watch, args=(job_id, process), name="aws-standin-job", daemon=True
        ).start()

    def _resolve(self, value_from: str) -> str:
        """A secrets entry's value: ``<secret arn>[:json-key:version-stage:version-id]``."""
        parts = value_from.split(":")
        arn, extra = ":".join(parts[:7]), parts[7:]
        text: str = self.secrets.get_secret_value(SecretId=arn)["SecretString"]
        key = extra[0] if extra else ""
        return str(json.loads(text)[key]) if key else text

    def _watch(self, job_id: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        # the container runtime's convention: a signal N is 128 + N
        code = 128 - code if code < 0 else code
        with self.store.lock:
            asked = self.store.to_kill.get(job_id)
            reason = asked or "Essential container in task exited"
            self.store.finish(job_id, "SUCCEEDED" if code == 0 else "FAILED", reason, code)
        self._killing.pop(job_id, None)

    def _kill(self, kills: dict[str, str]) -> None:
        now = time.monotonic()
        for job_id in kills:
            process = self.processes.get(job_id)
            if process is None or process.poll() is not None:
                continue
            first = self._killing.setdefault(job_id, now)
            sig = signal.SIGTERM if now - first < 2 else signal.SIGKILL
            with contextlib.suppress(OSError):
                process.send_signal(sig)

    def close(self) -> None:
        """Kill every process still running, and stop."""
        self._closed = True
        with self.store.lock:
            self.store.changed.notify_all()
        self._thread.join(10)
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
