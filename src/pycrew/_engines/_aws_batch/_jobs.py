"""The Batch side of the engine: names, tags, job handles, reading a job's end, the client.

Shared by the launcher and the monitor; nothing here submits or ends a job.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._errors import LaunchError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: tags every pycrew job, job definition and secret carries
CONTROLLER_TAG = "pycrew:controller"
SESSION_TAG = "pycrew:session"
USER_TAG = "pycrew:user"
#: job names (and pycrew's job definitions) start with this
JOB_PREFIX = "pycrew-"
#: the secret's name: pycrew/<controller>/<token>
SECRET_PREFIX = "pycrew/"
#: seconds between DescribeJobs right after something changed, and at most after backing off
POLL_MIN, POLL_MAX = 0.5, 30.0
#: DescribeJobs takes at most this many ids a call
DESCRIBE_MAX = 100
#: the most children one array job may have
ARRAY_MAX = 10_000
#: the exit code given to a job whose container never ran
NEVER_RAN = 125
#: seconds before a job's time-out that its worker counts as its end
JOB_END_MARGIN = 10
#: job states in which a job has not finished
LIVE_STATES = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"})
#: the start of a RUNNABLE job's statusReason when Batch cannot place it
#: (``MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - ...``, ``CAPACITY:INSUFFICIENT_...``)
BLOCKED = re.compile(r"^(MISCONFIGURATION|CAPACITY):")
#: container reasons of a container that never ran
NOT_STARTED = (
    "CannotPullContainerError",
    "CannotStartContainerError",
    "CannotCreateContainerError",
    "CannotInspectContainerError",
    "ResourceInitializationError",
    "TaskFailedToStart",
)


class _Redact(logging.Filter):
    """Keeps botocore's DEBUG lines (a request's parameters) from showing the secret."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            with contextlib.suppress(Exception):  # a record that cannot be formatted stays
                text = record.getMessage()
                if any(value in text for value in self.values):
                    record.msg, record.args = (
                        "(a call that carries pycrew's secret: not logged)",
                        (),
                    )
        return True


_redact = _Redact()
#: the loggers where botocore writes request parameters and response bodies
_BOTOCORE_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.auth")


def hide(values: Sequence[str]) -> None:
    for name in _BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if _redact not in logger.filters:
            logger.addFilter(_redact)
    _redact.values.update(v for v in values if v)


def aws_client(service: str, region: str | None, endpoints: Mapping[str, str]) -> Any:
    """A boto3 client, or a LaunchError naming the extra that brings boto3."""
    try:
        boto3 = importlib.import_module("boto3")
        config = importlib.import_module("botocore.config")
    except ImportError:
        raise LaunchError("the AWS Batch engine needs boto3: pip install 'pycrew[aws]'") from None
    settings = config.Config(
        connect_timeout=10, read_timeout=60, retries={"mode": "standard", "max_attempts": 5}
    )
    try:
        return boto3.session.Session(region_name=region).client(
            service, endpoint_url=endpoints.get(service), config=settings
        )
    except Exception as exc:  # NoRegionError and kin
        raise LaunchError(f"cannot make an AWS {service} client: {exc}") from None


def api_message(exc: BaseException) -> str:
    """AWS's own code and message in a client error, else the text."""
    error = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    if error:
        return f"{error.get('Code', '')}: {error.get('Message', '')}".strip(": ")
    return str(exc).strip() or type(exc).__name__


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def batch_name(text: str, limit: int = 128) -> str:
    """``text`` as a Batch name: letters, digits, hyphens and underscores, at most ``limit``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)[:limit].strip("-") or "x"


@dataclass(frozen=True)
class BatchJob:
    """The handle of one worker: a job, or one child of an array job."""

    job_id: str
    index: int | None
    worker: str

    @property
    def id(self) -> str:
        """Batch's id of it: ``<job id>`` or ``<array job id>:<index>``."""
        return self.job_id if self.index is None else f"{self.job_id}:{self.index}"


@dataclass(frozen=True)
class Outcome:
    """How a job ended, by DescribeJobs: the code, Batch's status reason, the container's."""

    code: int
    status_reason: str = ""
    container_reason: str = ""
    #: the container never ran: the words are the platform's, not the worker's
    never_ran: bool = False

    @property
    def words(self) -> str:
        return "; ".join(w for w in (self.container_reason, self.status_reason) if w)


def outcome(job: Mapping[str, Any]) -> Outcome | None:
    """What a DescribeJobs entry says of a job's end; None while it may still run."""
    status = job.get("status", "")
    reason = str(job.get("statusReason") or "")
    container = job.get("container") or {}
    container_reason = str(container.get("reason") or "")
    if status == "RUNNABLE" and BLOCKED.match(reason):
        # Batch says no compute environment of the queue can ever run it
        return Outcome(NEVER_RAN, reason, never_ran=True)
    if status not in ("SUCCEEDED", "FAILED"):
        return None
    code = container.get("exitCode")
    if code is None:
        if status == "SUCCEEDED":
            return Outcome(0, reason, container_reason)
        # failed with no exit code: the container never ran (a pull, a secret,
        # a placement that failed), or the job was ended before it started
        return Outcome(NEVER_RAN, reason, container_reason, never_ran=True)
    code = int(code)
    # the container runtime reports a signal N as 128 + N; pycrew says -N
    code = -(code - 128) if 128 < code < 160 else code
    never = container_reason.startswith(NOT_STARTED)
    return Outcome(code, reason, container_reason, never_ran=never)
