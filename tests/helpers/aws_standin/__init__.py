"""A local stand-in for AWS Batch and Secrets Manager, not AWS, driven by the real boto3.

Three parts, all in the test process, each on a free local port or thread:

- Secrets Manager: moto's own server (``ThreadedMotoServer``), unchanged.
- Batch: ``batch_api.BatchServer``, a small server for exactly the Batch calls
  pycrew makes, every request and response checked against botocore's model
  (moto's Batch cannot have its job states driven; see that module).
- A compute environment: ``compute.ComputeEnvironment`` runs each job as a
  local process with the environment its container would get.

What it does not model: containers and images (a "bad image" is a name the
compute environment refuses to pull), IAM and execution roles, instances and
capacity (``paused`` stands for a queue with none), CloudWatch Logs, retries,
time-outs, AWS's eventual consistency and its rate limits.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import boto3
from moto.server import ThreadedMotoServer

from .batch_api import REGION, BatchServer
from .compute import ComputeEnvironment

if TYPE_CHECKING:
    from pathlib import Path

    from pycrew._engines._aws_batch._launcher import AwsBatchLauncher

QUEUE = "pycrew-test-queue"
DEFINITION = "pycrew-test-worker"
IMAGE = "public.ecr.aws/example/python-pycrew:latest"
ROLE = "arn:aws:iam::123456789012:role/pycrew-test-execution"
#: dummy credentials: nothing here reaches AWS
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class AwsStandin:
    """The three parts started; ``close()`` ends them (and every job's process)."""

    def __init__(self, folder: Path, bad_images: frozenset[str] = frozenset()) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.batch_server = BatchServer()
        self.endpoints = {"batch": self.batch_server.url, "secretsmanager": f"http://{host}:{port}"}
        self.store = self.batch_server.store
        self.batch = self.client("batch")
        self.secrets = self.client("secretsmanager")
        self.batch.register_job_definition(
            jobDefinitionName=DEFINITION,
            type="container",
            containerProperties={
                "image": IMAGE,
                "executionRoleArn": ROLE,
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "2048"},
                ],
                "environment": [{"name": "FROM_DEFINITION", "value": "yes"}],
            },
        )
        self.compute = ComputeEnvironment(self.store, self.batch, self.secrets, folder, bad_images)

    def client(self, service: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        ).client(service, endpoint_url=self.endpoints[service])

    def launcher(self, **options: Any) -> AwsBatchLauncher:
        from pycrew._engines._aws_batch._launcher import AwsBatchLauncher

        options.setdefault("python", sys.executable)
        options.setdefault("region", REGION)
        return AwsBatchLauncher(QUEUE, DEFINITION, endpoints=self.endpoints, **options)

    def close(self) -> None:
        self.compute.close()
        self.batch_server.close()
        self.moto.stop()
