"""Workers as AWS Batch jobs: one array job per scaling step, through boto3.

```
 scaler thread ── launch_workers(specs) ──► first launch of a start: CreateSecret
      │                                      pycrew/<controller>/<token> (the secret env as
      │                                      JSON), RegisterJobDefinition pycrew-<...>-<token>:
      │                                      the user's definition + secrets valueFrom <arn>
      │                                     then SubmitJob: one array job (size >= 2) or one
      │                                      job per shape; a shell line maps
      │                                      AWS_BATCH_JOB_ARRAY_INDEX to the worker's id
      ├── exit_codes(handles) ──► DescribeJobs (100 ids a call) of the jobs asked about,
      │                            backing off while nothing changes ──► exit code,
      │                            statusReason, container reason
      ├── failure_output(handle) ──► the platform's words (CannotPullContainerError,
      │                               OutOfMemoryError, capacity) as a LaunchError
      └── shutdown() ──► TerminateJob on each job of this start that has not finished
                         (a parent ends its children), wait for them, deregister the job
                         definition revision, DeleteSecret (no recovery window)
```

The controller's secret never appears in a job: it lives in a Secrets
Manager secret made at the first launch of a start and deleted at
``shutdown()``. Batch reads it into the container's environment through the
job definition's ``secrets`` (``valueFrom: <secret arn>:PYCREW_SECRET::``),
with the job definition's execution role. pycrew registers its own job
definition, a copy of the user's with those ``secrets`` added, rather than a
new revision under the user's name: a revision of the user's definition
would become its latest, which the user's own submissions by bare name would
then pick up while the controller runs. Variables that are not secret travel
in ``containerOverrides.environment``.
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import json
import logging
import re
import secrets
import shlex
import time
from typing import TYPE_CHECKING, Any

from ..._errors import ArgumentError, ArgumentTypeError, LaunchError
from ..._wire import _frames
from .._launcher import Launcher, Pace, some
from .._secrets import split_env
from ._jobs import (
    ARRAY_MAX,
    BLOCKED,
    CONTROLLER_TAG,
    DESCRIBE_MAX,
    JOB_END_MARGIN,
    JOB_PREFIX,
    LIVE_STATES,
    POLL_MAX,
    POLL_MIN,
    SECRET_PREFIX,
    SESSION_TAG,
    USER_TAG,
    BatchJob,
    Outcome,
    api_message,
    aws_client,
    batch_name,
    error_code,
    hide,
    outcome,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..._resources import Resources
    from .._launcher import WorkerSpec

log = logging.getLogger("pycrew.engines.aws_batch")


class AwsBatchLauncher(Launcher):
    """Start workers as AWS Batch jobs: one array job per scaling step.

    The user's job definition names the image (which must hold Python with
    pycrew of the controller's version), the execution role and anything
    else the container needs; pycrew supplies the command. Its execution role
    must be allowed ``secretsmanager:GetSecretValue`` on ``pycrew/*`` secrets:
    that is how the controller's secret reaches the container.

    Args:
        job_queue: the job queue's name or ARN.
        job_definition: the user's job definition (name, ``name:revision`` or
            ARN) of type ``container``; the latest active revision by default.
        region: the AWS region (default: boto3's, from the environment or
            ``~/.aws/config``).
        vcpus: vCPUs each worker asks for (a ``VCPU`` resource requirement).
        memory_megabytes: memory each worker asks for, in MiB (``MEMORY``).
        gpus: GPUs each worker asks for (``GPU``).
        seconds_timeout_job: the job time-out (``attemptDurationSeconds``, at
            least 60): Batch ends a job that runs longer, and its worker takes
            no task it cannot end by then.
        retry_attempts: how many times Batch may try each job (1 to 10);
            pycrew replaces failed workers itself, so the default is one.
        tags: more tags for the jobs (pycrew's own ``pycrew:*`` win).
        container_overrides: more ``containerOverrides`` in the API's form
            (``environment``, ``resourceRequirements``, ``instanceType``);
            not ``command``, which is pycrew's.
        python: the interpreter in the image that runs the worker.
        secret_env: names of more variables (of the controller's ``env=``) to
            pass through Secrets Manager; names that say SECRET, PASSWORD,
            TOKEN, CREDENTIAL or end in _KEY always are.
        endpoints: endpoint URLs by service name (``"batch"``,
            ``"secretsmanager"``), for VPC endpoints or a local stand-in;
            boto3's ``AWS_ENDPOINT_URL_<SERVICE>`` variables work too.
    """

    engine = "aws_batch"

    def __init__(
        self,
        job_queue: str,
        job_definition: str,
        *,
        region: str | None = None,
        vcpus: float | None = None,
        memory_megabytes: int | None = None,
        gpus: int | None = None,
        seconds_timeout_job: int | None = None,
        retry_attempts: int | None = None,
        tags: Mapping[str, str] | None = None,
        container_overrides: Mapping[str, Any] | None = None,
        python: str = "python",
        secret_env: Sequence[str] = (),
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        for label, text in (
            ("job_queue", job_queue),
            ("job_definition", job_definition),
            ("python", python),
        ):
            if not isinstance(text, str) or not text:
                raise ArgumentError(f"{label} must be a non-empty string, got {text!r}")
        if region is not None and (not isinstance(region, str) or not region):
            raise ArgumentError(f"region must be a non-empty string, got {region!r}")
        if vcpus is not None and (
            isinstance(vcpus, bool) or not isinstance(vcpus, (int, float)) or not 0 < vcpus < 1e4
        ):
            raise ArgumentError(f"vcpus must be a positive number, got {vcpus!r}")
        for label, value, least in (
            ("memory_megabytes", memory_megabytes, 1),
            ("gpus", gpus, 0),
            ("seconds_timeout_job", seconds_timeout_job, 60),
            ("retry_attempts", retry_attempts, 1),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise ArgumentError(f"{label} must be a whole number >= {least}, got {value!r}")
        if retry_attempts is not None and retry_attempts > 10:
            raise ArgumentError(f"retry_attempts must be at most 10, got {retry_attempts}")
        if isinstance(secret_env, str):
            raise ArgumentTypeError("secret_env must be a list of variable names, not one string")
        overrides = dict(container_overrides or {})
        if "command" in overrides:
            raise ArgumentError(
                "container_overrides may not hold 'command': the worker's command is pycrew's"
            )
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.region = region
        self.vcpus = vcpus
        self.memory_megabytes = memory_megabytes
        self.gpus = gpus
        self.seconds_timeout_job = seconds_timeout_job
        self.retry_attempts = retry_attempts
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.container_overrides = overrides
        self.python = python
        self.secret_env = frozenset(secret_env)
        self.endpoints = dict(endpoints or {})
        self.user = getpass.getuser()
        #: how many times each API call was made, for the curious and the tests
        self.calls: dict[str, int] = {}
        self._clients: dict[str, Any] = {}
        self._new_start()

    def _new_start(self) -> None:
        """Forget the last start: a new token names the next one's jobs and secret."""
        self._token = secrets.token_hex(4)
        # one secret and job definition per set of secret values: in practice one
        # per start, as every spec of a start has the same
        self._prepared: dict[frozenset[tuple[str, str]], str] = {}
        self._secret_arns: list[str] = []
        self._definition_arns: list[str] = []
        self._submitted: list[str] = []
        self._handles: dict[str, BatchJob] = {}
        self._ended: dict[str, Outcome] = {}
        self._terminated: set[str] = set()
        self._pace = Pace(POLL_MIN, POLL_MAX)

    # ---------------------------------------------------------------- API
    def client(self, service: str) -> Any:
        """The boto3 client of a service, made at first use."""
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.region, self.endpoints)
        return self._clients[service]

    def _call(self, service: str, method: str, **kwargs: Any) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        # the call's name only: its arguments may hold the secret (CreateSecret)
        log.debug("%s.%s", service, method)
        return getattr(self.client(service), method)(**kwargs)

    def validate(self) -> None:
        # a missing extra or region is said at start(), not at the first launch
        self.client("batch")
        self.client("secretsmanager")

    def _tags(self, controller: str) -> dict[str, str]:
        return {
            **self.tags,
            CONTROLLER_TAG: controller,
            SESSION_TAG: self._token,
            USER_TAG: self.user,
        }

    # ------------------------------------------------------------ secrets
    def split_env(self, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """A spec's variables as (plain, secret); the worker id is set per child."""
        shared = {k: v for k, v in env.items() if k != _frames.WORKER_ENV}
        return split_env(shared, self.secret_env)

    def _prepare(self, controller: str, hidden: dict[str, str]) -> str:
        """The job definition for these secret values, made now with their secret if new."""
        key = frozenset(hidden.items())
        known = self._prepared.get(key)
        if known is not None:
            return known
        suffix = self._token if not self._prepared else f"{self._token}-{len(self._prepared) + 1}"
        name = f"{SECRET_PREFIX}{batch_name(controller, 200)}/{suffix}"
        user_def = self._user_definition()
        # botocore logs each request's parameters at DEBUG: not these
        hide(list(hidden.values()))
        try:
            made = self._call(
                "secretsmanager",
                "create_secret",
                Name=name,
                Description="pycrew: the secret of one controller start, deleted at its end",
                SecretString=json.dumps(hidden),
                Tags=[{"Key": k, "Value": v} for k, v in self._tags(controller).items()],
            )
        except LaunchError:
            raise
        except Exception as exc:
            raise LaunchError(
                f"Secrets Manager refused the secret {name}: {api_message(exc)}"
            ) from None
        secret_arn = str(made["ARN"])
        self._secret_arns.append(secret_arn)
        log.info("made the secret %s for the workers of this start", name)
        properties = copy.deepcopy(user_def.get("containerProperties") or {})
        # the user's own secrets stay; pycrew's come from its secret, by JSON key
        kept = [s for s in properties.get("secrets", []) if s.get("name") not in hidden]
        properties["secrets"] = kept + [
            {"name": key, "valueFrom": f"{secret_arn}:{key}::"} for key in sorted(hidden)
        ]
        definition = batch_name(f"{JOB_PREFIX}{controller}", 110) + f"-{suffix}"
        request: dict[str, Any] = {
            "jobDefinitionName": definition,
            "type": "container",
            "containerProperties": properties,
            "tags": self._tags(controller),
            "propagateTags": True,
        }
        for field in ("platformCapabilities", "parameters", "schedulingPriority"):
            if field in user_def:
                request[field] = user_def[field]
        try:
            registered = self._call("batch", "register_job_definition", **request)
        except Exception as exc:
            self._delete_secrets([secret_arn])
            raise LaunchError(
                f"AWS Batch refused the job definition {definition} (a copy of "
                f"{self.job_definition} that reads the secret): {api_message(exc)}"
            ) from None
        arn = str(registered["jobDefinitionArn"])
        self._definition_arns.append(arn)
        self._prepared[key] = arn
        log.info("registered the job definition %s", arn)
        return arn

    def _user_definition(self) -> dict[str, Any]:
        """The user's job definition: the revision named, or the latest active one."""
        wanted = self.job_definition
        try:
            if wanted.startswith("arn:") or ":" in wanted:
                found = self._call("batch", "describe_job_definitions", jobDefinitions=[wanted])
            else:
                found = self._call(
                    "batch", "describe_job_definitions", jobDefinitionName=wanted, status="ACTIVE"
                )
        except Exception as exc:
            raise LaunchError(
                f"cannot read the job definition {wanted}: {api_message(exc)}"
            ) from None
        listed = [d for d in found.get("jobDefinitions", []) if d.get("status") != "INACTIVE"]
        if not listed:
            raise LaunchError(f"AWS Batch has no active job definition {wanted}")
        chosen: dict[str, Any] = max(listed, key=lambda d: int(d.get("revision", 0)))
        if chosen.get("type") != "container" or "containerProperties" not in chosen:
            raise LaunchError(
                f"the job definition {wanted} is not of type container: pycrew's workers "
                "run as single-container jobs"
            )
        if not chosen["containerProperties"].get("executionRoleArn"):
            raise LaunchError(
                f"the job definition {wanted} has no executionRoleArn: AWS Batch reads the "
                "controller's secret from Secrets Manager with it; give the definition an "
                "execution role allowed secretsmanager:GetSecretValue on pycrew/* secrets"
            )
        return chosen

    def _delete_secrets(self, arns: Sequence[str] | None = None) -> None:
        """Delete these secrets of this start (all of them by default), with no recovery window."""
        chosen = list(self._secret_arns if arns is None else arns)
        for arn in chosen:
            try:
                self._call(
                    "secretsmanager", "delete_secret", SecretId=arn, ForceDeleteWithoutRecovery=True
                )
                log.info("deleted the secret %s", arn)
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    log.warning("deleting the secret %s failed: %s", arn, api_message(exc))
        self._secret_arns = [a for a in self._secret_arns if a not in chosen]

    # ---------------------------------------------------------- launching
    def requirements(self, shape: Resources | None) -> list[dict[str, str]]:
        """What each worker asks for: the user's overrides, the options, a shape's instead."""
        amounts: dict[str, str] = {
            str(r["type"]): str(r["value"])
            for r in self.container_overrides.get("resourceRequirements", [])
        }
        if self.vcpus:
            amounts["VCPU"] = f"{self.vcpus:g}"
        if self.memory_megabytes:
            amounts["MEMORY"] = str(self.memory_megabytes)
        if self.gpus:
            amounts["GPU"] = str(self.gpus)
        if shape is not None:
            if shape.custom:
                raise LaunchError(
                    f"AWS Batch knows no resource {shape.custom[0][0]!r}: a worker may ask "
                    "for cpus, memory and gpus only"
                )
            if shape.cpus:
                amounts["VCPU"] = str(shape.cpus)
            if shape.memory:
                amounts["MEMORY"] = str(-(-shape.memory // 2**20))  # whole MiB, never short
            if shape.gpus:
                amounts["GPU"] = str(shape.gpus)
        return [{"type": k, "value": v} for k, v in sorted(amounts.items())]

    def script(self, specs: Sequence[WorkerSpec]) -> str:
        """The shell line each job runs: its worker id from its array index, then the worker."""
        ids = [spec.worker_id for spec in specs]
        lines = []
        if len(ids) == 1:
            lines.append(f"id={shlex.quote(ids[0])}")
        else:
            index = "${AWS_BATCH_JOB_ARRAY_INDEX:-0}"
            numbers = [re.fullmatch(r"(.*-)(\d+)", i) for i in ids]
            first = numbers[0]
            if first is not None and all(
                m is not None and m[1] == first[1] and int(m[2]) == int(first[2]) + k
                for k, m in enumerate(numbers)
            ):
                # consecutive ids (the usual case): a sum, not a list of 10,000
                lines.append(f"id={shlex.quote(first[1])}$(( {int(first[2])} + {index} ))")
            else:
                lines.append(f'case "{index}" in')
                lines += [f"  {k}) id={shlex.quote(i)} ;;" for k, i in enumerate(ids)]
                lines.append("esac")
        if self.seconds_timeout_job is not None:
            # when Batch ends the job, a little early by this container's clock
            end = self.seconds_timeout_job - JOB_END_MARGIN
            lines.append(f"{_frames.JOB_END_ENV}=$(( $(date +%s) + {end} ))")
            lines.append(f"export {_frames.JOB_END_ENV}")
        lines.append(f'{_frames.WORKER_ENV}="$id"; export {_frames.WORKER_ENV}')
        command = [shlex.quote(part) for part in [self.python, *specs[0].command[1:]]]
        # the worker id is the one argument that differs between workers
        command = ['"$id"' if part == shlex.quote(ids[0]) else part for part in command]
        lines.append("exec " + " ".join(command))
        return "\n".join(lines)

    def _overrides(self, specs: Sequence[WorkerSpec], plain: dict[str, str]) -> dict[str, Any]:
        overrides = copy.deepcopy(self.container_overrides)
        environment = {e["name"]: e["value"] for e in overrides.get("environment", [])}
        environment.update(plain)
        overrides["environment"] = [{"name": k, "value": v} for k, v in sorted(environment.items())]
        overrides["command"] = ["sh", "-c", self.script(specs)]
        requirements = self.requirements(specs[0].shape)
        if requirements:
            overrides["resourceRequirements"] = requirements
        else:
            overrides.pop("resourceRequirements", None)
        return overrides

    def launch_worker(self, spec: WorkerSpec) -> BatchJob:
        return self.launch_workers([spec])[0]

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[BatchJob]:
        if not specs:
            return []
        plain, hidden = self.split_env(specs[0].env)
        definition = self._prepare(specs[0].controller, hidden)
        # one submission asks for one shape: a submission per shape, in the order of specs
        positions: dict[Resources | None, list[int]] = {}
        for i, spec in enumerate(specs):
            positions.setdefault(spec.shape, []).append(i)
        placed: dict[int, BatchJob] = {}
        done: list[BatchJob] = []
        try:
            for where in positions.values():
                for start in range(0, len(where), ARRAY_MAX):
                    chunk = [specs[i] for i in where[start : start + ARRAY_MAX]]
                    handles = self._submit(chunk, definition, plain)
                    done += handles
                    placed.update(zip(where[start : start + ARRAY_MAX], handles, strict=True))
        except LaunchError:
            # no handle of a batch that raised is kept: its jobs go now
            for job_id in sorted({h.job_id for h in done}):
                self._terminate(job_id, "pycrew: the rest of its launch failed")
            raise
        self._pace.every = POLL_MIN
        return [placed[i] for i in range(len(specs))]

    def _submit(
        self, specs: Sequence[WorkerSpec], definition: str, plain: dict[str, str]
    ) -> list[BatchJob]:
        controller = specs[0].controller
        name = batch_name(f"{JOB_PREFIX}{controller}", 119) + f"-{self._token}"
        request: dict[str, Any] = {
            "jobName": name,
            "jobQueue": self.job_queue,
            "jobDefinition": definition,
            "containerOverrides": self._overrides(specs, plain),
            "tags": self._tags(controller),
            "propagateTags": True,
            "retryStrategy": {"attempts": self.retry_attempts or 1},
        }
        if len(specs) > 1:
            request["arrayProperties"] = {"size": len(specs)}
        if self.seconds_timeout_job is not None:
            request["timeout"] = {"attemptDurationSeconds": self.seconds_timeout_job}
        try:
            answer = self._call("batch", "submit_job", **request)
        except Exception as exc:
            raise LaunchError(
                f"AWS Batch refused the job {name} on queue {self.job_queue}: {api_message(exc)}"
            ) from None
        job_id = str(answer["jobId"])
        self._submitted.append(job_id)
        if len(specs) == 1:
            handles = [BatchJob(job_id, None, specs[0].worker_id)]
        else:
            handles = [BatchJob(job_id, k, spec.worker_id) for k, spec in enumerate(specs)]
        for handle in handles:
            self._handles[handle.id] = handle
        shape = specs[0].shape
        log.info(
            "launched %d worker(s) as AWS Batch job %s%s: %s",
            len(specs),
            job_id,
            "" if shape is None else f" ({shape})",
            some(spec.worker_id for spec in specs),
        )
        return handles

    # ----------------------------------------------------------- watching
    def describe_worker(self, handle: Any) -> dict[str, Any]:
        return {"job": handle.id} if isinstance(handle, BatchJob) else {}

    def terminate_worker(self, handle: Any) -> None:
        if not isinstance(handle, BatchJob) or handle.id in self._ended:
            return
        log.info("terminating job %s (worker %s)", handle.id, handle.worker)
        self._terminate(handle.id, "pycrew: the controller ended this worker")

    def _terminate(self, job_id: str, reason: str) -> None:
        if job_id in self._terminated:
            return
        self._terminated.add(job_id)
        with contextlib.suppress(Exception):  # finished already, or AWS is away: best effort
            self._call("batch", "terminate_job", jobId=job_id, reason=reason)

    def describe(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """DescribeJobs of these ids, 100 a call: each job's entry by id."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), DESCRIBE_MAX):
            answer = self._call(
                "batch", "describe_jobs", jobs=list(ids[start : start + DESCRIBE_MAX])
            )
            for job in answer.get("jobs", []):
                found[str(job["jobId"])] = job
        return found

    def exit_code(self, handle: Any) -> int | None:
        return self.exit_codes([handle])[0]

    def exit_codes(self, handles: Sequence[Any]) -> list[int | None]:
        jobs = [h for h in handles if isinstance(h, BatchJob)]
        waiting = [j for j in jobs if j.id not in self._ended]
        if self._pace.due({j.id for j in jobs}, bool(waiting)):
            self._poll(waiting)
        return [
            self._ended[h.id].code if isinstance(h, BatchJob) and h.id in self._ended else None
            for h in handles
        ]

    def _poll(self, jobs: list[BatchJob]) -> None:
        """One DescribeJobs round for the jobs asked about; the end of those that ended."""
        try:
            found = self.describe(sorted({j.id for j in jobs}))
        except Exception as exc:
            log.warning("describing the jobs of this start failed: %s", api_message(exc))
            self._pace.looked(False)
            return
        changed = False
        for job in jobs:
            entry = found.get(job.id)
            if entry is None:
                # Batch forgets finished jobs after a week or so: ended, how is unknown
                self._ended[job.id] = Outcome(0, "no longer known to AWS Batch")
                changed = True
                continue
            end = outcome(entry)
            if end is None:
                continue
            self._ended[job.id] = end
            changed = True
            log.debug("job %s ended: code %s %s", job.id, end.code, end.words)
            if entry.get("status") == "RUNNABLE":
                # blocked for good: it would hold its place in the queue forever
                self._terminate(job.id, "pycrew: no compute environment can run this job")
        self._pace.looked(changed)

    def exit_reason(self, handle: Any) -> str | None:
        """AWS Batch's words on how a worker's job ended (OutOfMemoryError, a status reason)."""
        end = self._ended.get(handle.id) if isinstance(handle, BatchJob) else None
        return (end.words or None) if end is not None else None

    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, BatchJob):
            return None
        end = self._ended.get(handle.id)
        if end is None:
            return None
        words, where = end.words, f"job {handle.id}"
        if "CannotPullContainerError" in words:
            raise LaunchError(
                f"AWS Batch could not pull the image of {where} (CannotPullContainerError: "
                f"{words}): check the image in the job definition {self.job_definition}, and "
                "that its execution role may pull it"
            )
        if "ResourceInitializationError" in words or "secretsmanager" in words.lower():
            raise LaunchError(
                f"AWS Batch could not prepare {where} ({words}): is the execution role of "
                f"{self.job_definition} allowed secretsmanager:GetSecretValue on pycrew/* "
                "secrets, and can the compute environment reach Secrets Manager?"
            )
        if BLOCKED.match(end.status_reason):
            raise LaunchError(
                f"AWS Batch cannot run {where} on queue {self.job_queue} ({words}): "
                "insufficient capacity for what each worker asks for; ask for less (vcpus=, "
                "memory_megabytes=, gpus=, or the task's resources=), or give the queue a "
                "compute environment that has it"
            )
        if "OutOfMemoryError" in words:
            raise LaunchError(
                f"{where} ran out of memory as it started (OutOfMemoryError: {words}): ask "
                "for more (memory_megabytes=)"
            )
        if "CannotStartContainerError" in words or "CannotCreateContainerError" in words:
            raise LaunchError(
                f"AWS Batch could not start the container of {where} ({words}): is python= "
                f"({self.python}) an interpreter in the image, and sh there?"
            )
        if end.never_ran:
            raise LaunchError(f"AWS Batch could not start {where} ({words or 'no reason given'})")
        # the container ran and exited: its output is in CloudWatch Logs, which
        # pycrew does not read; Batch's words are all it has
        return words

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """End every job of this start, then its job definition and its secret."""
        try:
            if self._submitted:
                self._end_jobs(seconds)
        finally:
            for arn in self._definition_arns:
                try:
                    self._call("batch", "deregister_job_definition", jobDefinition=arn)
                    log.info("deregistered the job definition %s", arn)
                except Exception as exc:
                    log.warning(
                        "deregistering the job definition %s failed: %s", arn, api_message(exc)
                    )
            self._delete_secrets()
            self._new_start()

    def _end_jobs(self, seconds: float) -> None:
        try:
            found = self.describe(self._submitted)
        except Exception as exc:
            log.warning("describing the jobs of this start failed: %s", api_message(exc))
            found = {}
        live = [
            j for j in self._submitted if found.get(j, {}).get("status", "RUNNING") in LIVE_STATES
        ]
        if live:
            log.info(
                "terminating the %d unfinished job(s) of this start: %s", len(live), some(live)
            )
        self._terminated.clear()  # terminating a parent also ends children stopped one by one
        for job_id in live:
            self._terminate(job_id, "pycrew: the controller terminated")
        deadline = time.monotonic() + seconds
        while live:
            try:
                found = self.describe(live)
            except Exception as exc:
                log.warning("describing the jobs of this start failed: %s", api_message(exc))
                return
            # a parent array job is live until all its children are done
            live = [j for j in live if found.get(j, {}).get("status") in LIVE_STATES]
            if not live or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if live:
            log.warning(
                "AWS Batch still shows %d job(s) of this start after %.0f s", len(live), seconds
            )
