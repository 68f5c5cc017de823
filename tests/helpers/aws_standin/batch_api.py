"""A local stand-in for the AWS Batch API, not AWS: the calls pycrew makes, over HTTP.

```
 boto3 (real client) ── POST /v1/<operation> ──► Handler ── request checked against
                                                   │         botocore's model of Batch
                                                   ▼
                                         BatchStore (jobs, array children, definitions)
                                                   ▲         every response checked too
 ComputeEnvironment (compute.py) ── start / finish / fail jobs (its own hook: AWS has none)
```

moto's Batch cannot be driven here: without Docker it marks every job
SUCCEEDED at once, ignores TerminateJob of a started job and of an array
parent's children, and shows no ``secrets``. So this serves exactly the
Batch operations pycrew and its tests use (SubmitJob, DescribeJobs, ListJobs,
TerminateJob, CancelJob, Register/Describe/DeregisterJobDefinition), with
requests and responses validated against botocore's own service model, and
lets the test-side compute environment move job states.

Not modelled: compute environments and queues as objects (any queue name is
accepted), scheduling policies, retries (one attempt), dependencies,
multi-node and EKS jobs, job time-outs, CloudWatch Logs, IAM (every caller
may do everything), paging beyond one page (``maxResults`` is honoured
without a token), and AWS's eventual consistency.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

REGION = "us-east-1"
ACCOUNT = "123456789012"
LIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


class ApiError(Exception):
    def __init__(self, message: str, kind: str = "ClientException", status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


def now_ms() -> int:
    return int(time.time() * 1000)


class BatchStore:
    """The stand-in's state. Every method takes the lock; ``changed`` wakes the compute side."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[str]] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        #: every request body as received, by operation, for the tests to read
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: running jobs asked to end, with the reason: the compute side kills them
        self.to_kill: dict[str, str] = {}

    # ----------------------------------------------------- job definitions
    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["jobDefinitionName"]
        revision = 1 + max(
            (d["revision"] for d in self.definitions.values() if d["jobDefinitionName"] == name),
            default=0,
        )
        arn = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{name}:{revision}"
        definition = {
            "jobDefinitionName": name,
            "jobDefinitionArn": arn,
            "revision": revision,
            "status": "ACTIVE",
            "type": body["type"],
            "containerProperties": body.get("containerProperties", {}),
            "tags": body.get("tags", {}),
            "propagateTags": body.get("propagateTags", False),
            "parameters": body.get("parameters", {}),
        }
        if "platformCapabilities" in body:
            definition["platformCapabilities"] = body["platformCapabilities"]
        self.definitions[arn] = definition
        return {"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision}

    def find_definition(self, ref: str, active_only: bool = True) -> dict[str, Any] | None:
        if ref in self.definitions:
            return self.definitions[ref]
        name, _, revision = ref.rpartition("/")[2].partition(":")
        found = [
            d
            for d in self.definitions.values()
            if d["jobDefinitionName"] == name
            and (not revision or str(d["revision"]) == revision)
            and (d["status"] == "ACTIVE" or not active_only or revision)
        ]
        return max(found, key=lambda d: d["revision"]) if found else None

    def describe_definitions(self, body: dict[str, Any]) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        for ref in body.get("jobDefinitions", []):
            definition = self.find_definition(ref, active_only=False)
            if definition is not None:
                found.append(definition)
        if "jobDefinitionName" in body:
            found += [
                d
                for d in self.definitions.values()
                if d["jobDefinitionName"] == body["jobDefinitionName"]
            ]
        if not body.get("jobDefinitions") and "jobDefinitionName" not in body:
            found = list(self.definitions.values())
        if "status" in body:
            found = [d for d in found if d["status"] == body["status"]]
        return {"jobDefinitions": found}

    def deregister(self, body: dict[str, Any]) -> dict[str, Any]:
        definition = self.find_definition(body["jobDefinition"], active_only=False)
        if definition is None:
            raise ApiError(f"Job definition {body['jobDefinition']} does not exist")
        definition["status"] = "INACTIVE"
        return {}

    # ---------------------------------------------------------------- jobs
    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        definition = self.find_definition(body["jobDefinition"])
        if definition is None or definition["status"] != "ACTIVE":
            raise ApiError(f"Job definition {body['jobDefinition']} does not exist")
        job_id = str(uuid.uuid4())
        overrides = body.get("containerOverrides", {})
        properties = definition["containerProperties"]
        environment = {e["name"]: e["value"] for e in properties.get("environment", [])}
        environment.update({e["name"]: e["value"] for e in overrides.get("environment", [])})
        container = {
            "image": properties.get("image", ""),
            "command": overrides.get("command", properties.get("command", [])),
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "resourceRequirements": overrides.get(
                "resourceRequirements", properties.get("resourceRequirements", [])
            ),
            "secrets": properties.get("secrets", []),
            "executionRoleArn": properties.get("executionRoleArn", ""),
        }
        tags = dict(body.get("tags", {}))
        if body.get("propagateTags") or definition["propagateTags"]:
            tags = {**definition["tags"], **tags}
        job: dict[str, Any] = {
            "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}",
            "jobName": body["jobName"],
            "jobId": job_id,
            "jobQueue": body["jobQueue"],
            "status": "SUBMITTED",
            "createdAt": now_ms(),
            "jobDefinition": definition["jobDefinitionArn"],
            "container": container,
            "tags": tags,
            "dependsOn": [],
            "parameters": {},
            "attempts": [],
            "propagateTags": bool(body.get("propagateTags")),
        }
        for key in ("timeout", "retryStrategy"):
            if key in body:
                job[key] = body[key]
        size = body.get("arrayProperties", {}).get("size")
        if size is not None:
            if not 2 <= size <= 10_000:
                raise ApiError("array size must be from 2 to 10000")
            job["arrayProperties"] = {"size": size}
            job["status"] = "PENDING"
            self.children[job_id] = []
            for index in range(size):
                child = json.loads(json.dumps(job))
                child_id = f"{job_id}:{index}"
                child.update(
                    jobId=child_id,
                    jobArn=f"{job['jobArn']}:{index}",
                    status="SUBMITTED",
                    arrayProperties={"index": index},
                )
                self.jobs[child_id] = child
                self.children[job_id].append(child_id)
        self.jobs[job_id] = job
        self.changed.notify_all()
        return {"jobArn": job["jobArn"], "jobName": job["jobName"], "jobId": job_id}

    def view(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as DescribeJobs shows it; an array parent's state and summary from its children."""
        shown = json.loads(json.dumps(job))
        kids = self.children.get(job["jobId"])
        if kids is not None:
            states = [self.jobs[k]["status"] for k in kids]
            summary = {s: states.count(s) for s in (*LIVE, "SUCCEEDED", "FAILED")}
            shown["arrayProperties"] = {"size": len(kids), "statusSummary": summary}
            if any(s in LIVE for s in states):
                shown["status"] = "RUNNING" if "RUNNING" in states else "PENDING"
            else:
                shown["status"] = (
                    "SUCCEEDED" if states.count("SUCCEEDED") == len(kids) else "FAILED"
                )
                shown["stoppedAt"] = max(
                    (self.jobs[k].get("stoppedAt", 0) for k in kids), default=0
                )
        return shown

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        if len(body["jobs"]) > 100:
            raise ApiError("jobs may name at most 100 jobs")
        return {"jobs": [self.view(self.jobs[i]) for i in body["jobs"] if i in self.jobs]}

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        if "arrayJobId" in body:
            candidates = [self.jobs[k] for k in self.children.get(body["arrayJobId"], [])]
        elif "jobQueue" in body:
            queue = body["jobQueue"]
            candidates = [
                j
                for j in self.jobs.values()
                if j["jobQueue"] == queue and "index" not in j.get("arrayProperties", {})
            ]
        else:
            raise ApiError("give jobQueue or arrayJobId")
        shown = [self.view(j) for j in candidates]
        filters = body.get("filters")
        if filters:
            for item in filters:
                if item["name"] != "JOB_NAME":
                    raise ApiError(f"the stand-in filters by JOB_NAME only, not {item['name']}")
                pattern = item["values"][0]
                if pattern.endswith("*"):
                    shown = [j for j in shown if j["jobName"].startswith(pattern[:-1])]
                else:
                    shown = [j for j in shown if j["jobName"] == pattern]
        else:
            # as AWS: no status given lists RUNNING jobs
            wanted = body.get("jobStatus", "RUNNING")
            shown = [j for j in shown if j["status"] == wanted]
        summaries = []
        for job in shown[: body.get("maxResults", 1000)]:
            summary = {
                k: job[k]
                for k in (
                    "jobArn",
                    "jobId",
                    "jobName",
                    "createdAt",
                    "status",
                    "statusReason",
                    "startedAt",
                    "stoppedAt",
                    "jobDefinition",
                )
                if k in job
            }
            container = {
                k: job["container"][k] for k in ("exitCode", "reason") if k in job["container"]
            }
            if container:
                summary["container"] = container
            if "arrayProperties" in job:
                summary["arrayProperties"] = {
                    k: v for k, v in job["arrayProperties"].items() if k in ("size", "index")
                }
            summaries.append(summary)
        return {"jobSummaryList": summaries}

    def terminate(self, body: dict[str, Any], cancel: bool = False) -> dict[str, Any]:
        job_id, reason = body["jobId"], body["reason"]
        if job_id not in self.jobs:
            raise ApiError(f"Job {job_id} does not exist")
        targets = self.children.get(job_id, [job_id])
        for target in targets:
            job = self.jobs[target]
            if job["status"] in ("SUBMITTED", "PENDING", "RUNNABLE"):
                self.finish(target, "FAILED", reason)
            elif job["status"] in ("STARTING", "RUNNING") and not cancel:
                self.to_kill[target] = reason
        self.changed.notify_all()
        return {}

    # ------------------------------------------------ the compute side's hook
    def set_status(self, job_id: str, status: str, reason: str | None = None) -> None:
        job = self.jobs[job_id]
        job["status"] = status
        if reason is not None:
            job["statusReason"] = reason
        if status == "RUNNING":
            job["startedAt"] = now_ms()
        self.changed.notify_all()

    def finish(
        self,
        job_id: str,
        status: str,
        reason: str,
        exit_code: int | None = None,
        container_reason: str | None = None,
    ) -> None:
        job = self.jobs[job_id]
        job.update(status=status, statusReason=reason, stoppedAt=now_ms())
        if exit_code is not None:
            job["container"]["exitCode"] = exit_code
        if container_reason is not None:
            job["container"]["reason"] = container_reason
        self.to_kill.pop(job_id, None)
        self.changed.notify_all()

    def live(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.view(j) for j in self.jobs.values() if self.view(j)["status"] in LIVE]


OPERATIONS = {
    "SubmitJob": BatchStore.submit,
    "DescribeJobs": BatchStore.describe,
    "ListJobs": BatchStore.list,
    "TerminateJob": BatchStore.terminate,
    "CancelJob": lambda store, body: store.terminate(body, cancel=True),
    "RegisterJobDefinition": BatchStore.register,
    "DescribeJobDefinitions": BatchStore.describe_definitions,
    "DeregisterJobDefinition": BatchStore.deregister,
}


class BatchServer:
    """The stand-in's HTTP server on a free local port, in a thread, until ``close()``."""

    def __init__(self) -> None:
        self.store = BatchStore()
        model = botocore.session.get_session().get_service_model("batch")
        self.model = model
        routes = {}
        for name in OPERATIONS:
            operation = model.operation_model(name)
            routes[operation.http["requestUri"]] = operation
        validator = ParamValidator()
        store = self.store

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: bodies may hold what tests seek
                pass

            def do_POST(self) -> None:
                operation = routes.get(self.path.split("?")[0])
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    if operation is None:
                        raise ApiError(f"the stand-in does not serve {self.path}", "NotFound", 404)
                    body = json.loads(raw or b"{}")
                    report = validator.validate(body, operation.input_shape)
                    if report.has_errors():
                        raise ApiError(f"invalid request: {report.generate_report()}")
                    with store.lock:
                        store.requests.append((operation.name, body))
                        answer = OPERATIONS[operation.name](store, body)
                    if operation.output_shape is not None:
                        report = validator.validate(answer, operation.output_shape)
                        # botocore's model calls startedAt required, yet AWS shows it
                        # only once a job has started: that one is let through
                        problems = [
                            line
                            for line in report.generate_report().splitlines()
                            if line and not line.endswith('"startedAt"')
                        ]
                        if problems:
                            raise ApiError(
                                "stand-in bug, invalid response: " + "; ".join(problems),
                                "ServerException",
                                500,
                            )
                    self._send(200, answer, None)
                except ApiError as exc:
                    self._send(exc.status, {"message": str(exc)}, exc.kind)

            def _send(self, status: int, body: dict[str, Any], kind: str | None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if kind is not None:
                    self.send_header("x-amzn-ErrorType", kind)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="aws-standin-batch", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
