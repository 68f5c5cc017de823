"""pycrew's AWS Batch jobs in one queue, to look at or end, even after a controller crashed.

```
 AwsBatchMonitor.jobs() ── ListJobs (JOB_NAME pycrew-*) of the queue, and of each array
                           job its children ── DescribeJobs (100 a call) for the tags:
                           controller, start, user ──► unfinished jobs, one per child
 stale() ── the registry of launches (a child's "job" is <array job id>:<index>) ──►
            those whose controller is gone
 terminate() ── TerminateJob each ──► a start left with no unfinished job: its job
                                      definition deregistered, its secret deleted
```

A controller that crashed leaves its queued jobs (they would start later,
find nobody, and exit, each costing an instance's start), its job
definition and its secret; ending the stale jobs also removes the other two.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._errors import ArgumentError, LaunchError
from .._cluster_monitor import ClusterJobInfo, ClusterMonitor
from ._jobs import (
    CONTROLLER_TAG,
    DESCRIBE_MAX,
    JOB_PREFIX,
    LIVE_STATES,
    SESSION_TAG,
    USER_TAG,
    api_message,
    aws_client,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True)
class AwsBatchJobInfo(ClusterJobInfo):
    """One pycrew job, or child of an array job: ``id`` is Batch's (``<job>:<index>``
    for a child), ``state`` its status."""

    status_reason: str = ""
    started: datetime.datetime | None = None
    session: str = ""


class AwsBatchMonitor(ClusterMonitor):
    """pycrew's jobs in one AWS Batch job queue, to look at or end.

    Args:
        job_queue: the job queue's name or ARN.
        region: the AWS region (default: boto3's).
        user: whose jobs (the ``pycrew:user`` tag; default: the current user).
        endpoints: endpoint URLs by service name, as ``AwsBatchLauncher`` takes them.
    """

    engine = "aws_batch"

    def __init__(
        self,
        job_queue: str,
        region: str | None = None,
        user: str | None = None,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(user)
        if not isinstance(job_queue, str) or not job_queue:
            raise ArgumentError(f"job_queue must be a non-empty string, got {job_queue!r}")
        self.job_queue = job_queue
        self.region = region
        self.endpoints = dict(endpoints or {})
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.region, self.endpoints)
        return self._clients[service]

    def _list(self, **where: Any) -> list[dict[str, Any]]:
        """Every job ListJobs gives for ``where``, page by page (a name filter shows all states)."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            more = {"nextToken": token} if token else {}
            try:
                page = self.client("batch").list_jobs(
                    filters=[{"name": "JOB_NAME", "values": [f"{JOB_PREFIX}*"]}], **where, **more
                )
            except Exception as exc:
                raise LaunchError(f"cannot list the jobs of {where}: {api_message(exc)}") from None
            found += page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                return found

    def _tags(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        tags: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), DESCRIBE_MAX):
            try:
                answer = self.client("batch").describe_jobs(
                    jobs=list(ids[start : start + DESCRIBE_MAX])
                )
            except Exception as exc:
                raise LaunchError(f"cannot describe jobs: {api_message(exc)}") from None
            for job in answer.get("jobs", []):
                tags[str(job["jobId"])] = dict(job.get("tags") or {})
        return tags

    def jobs(self) -> list[ClusterJobInfo]:
        """The user's unfinished pycrew jobs in the queue, one per child of an array job."""
        tops = [j for j in self._list(jobQueue=self.job_queue) if j.get("status") in LIVE_STATES]
        tags = self._tags([str(j["jobId"]) for j in tops])
        now = time.time()
        found: list[ClusterJobInfo] = []
        for top in tops:
            labels = tags.get(str(top["jobId"]), {})
            if labels.get(USER_TAG) != self.user:
                continue
            if "size" in (top.get("arrayProperties") or {}):
                entries = self._list(arrayJobId=top["jobId"])
            else:
                entries = [top]
            for job in entries:
                if job.get("status") not in LIVE_STATES:
                    continue
                started = job.get("startedAt")
                found.append(
                    AwsBatchJobInfo(
                        id=str(job["jobId"]),
                        array_index=(job.get("arrayProperties") or {}).get("index"),
                        state=str(job["status"]),
                        controller=labels.get(CONTROLLER_TAG, self.controller_of(job["jobName"])),
                        seconds=now - int(job.get("createdAt", now * 1000)) / 1000,
                        name=str(job["jobName"]),
                        status_reason=str(job.get("statusReason") or ""),
                        started=None
                        if not started
                        else datetime.datetime.fromtimestamp(
                            int(started) / 1000, datetime.timezone.utc
                        ),
                        session=labels.get(SESSION_TAG, ""),
                    )
                )
        return found

    @staticmethod
    def controller_of(job_name: str) -> str:
        # pycrew-<controller>-<token>: a name made Batch-safe, the tag holds the exact one
        return job_name[len(JOB_PREFIX) :].rpartition("-")[0]

    def whole_job(self, job_id: str) -> str:
        return job_id.partition(":")[0]

    def workers(self) -> list[ClusterJobInfo]:
        """``jobs()`` by the name the local monitor uses."""
        return self.jobs()

    def cancel(self, ids: Sequence[str]) -> None:
        """End these jobs (a whole array job by its id), then what their starts leave."""
        before = [j for j in self.jobs() if isinstance(j, AwsBatchJobInfo)]
        for job_id in ids:
            try:
                self.client("batch").terminate_job(jobId=job_id, reason="pycrew monitor: ended")
            except Exception as exc:
                raise LaunchError(f"cannot end job {job_id}: {api_message(exc)}") from None
        ended = set(ids)
        sessions = {j.session for j in before if j.id in ended or self.whole_job(j.id) in ended}
        left = {
            j.session for j in before if j.id not in ended and self.whole_job(j.id) not in ended
        }
        for session in sorted(sessions - left - {""}):
            self._clean(session)

    def _clean(self, session: str) -> None:
        """Deregister the job definitions and delete the secrets of a start that is over."""
        with contextlib.suppress(Exception):
            pages = self.client("batch").get_paginator("describe_job_definitions")
            for page in pages.paginate(status="ACTIVE"):
                for definition in page.get("jobDefinitions", []):
                    if (definition.get("tags") or {}).get(SESSION_TAG) == session:
                        self.log.info("deregistering %s", definition["jobDefinitionArn"])
                        self.client("batch").deregister_job_definition(
                            jobDefinition=definition["jobDefinitionArn"]
                        )
        with contextlib.suppress(Exception):
            manager = self.client("secretsmanager")
            found = manager.list_secrets(
                Filters=[
                    {"Key": "tag-key", "Values": [SESSION_TAG]},
                    {"Key": "tag-value", "Values": [session]},
                ]
            )
            for secret in found.get("SecretList", []):
                tags = {t["Key"]: t["Value"] for t in secret.get("Tags", [])}
                if tags.get(SESSION_TAG) == session:
                    self.log.info("deleting the secret %s", secret["Name"])
                    manager.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
