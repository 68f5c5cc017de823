"""Controllers whose workers run in the cloud: AWS Batch jobs and Kubernetes pods.

Both keep the controller's secret in the platform's own store (Secrets
Manager, a Kubernetes Secret) made at start and deleted at ``terminate()``;
see the engines' modules for how.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .._engines._cluster import cluster_host
from .._errors import ArgumentError
from ._controller import Controller

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping, Sequence

    from .._operations._metrics import Metrics
    from .._resources import Resources
    from .._wire._tls import TLS


def aws_batch_controller(
    job_queue: str,
    job_definition: str,
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
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
    seconds_interval: float = 0.5,
    seconds_timeout: float = 60,
    seconds_launch: float = 1800,
    seconds_idle: float = 300,
    seconds_wall: float = math.inf,
    seconds_heartbeat: float = 10,
    tasks_max: float = math.inf,
    tasks_timers: int = 0,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    reset_environment: bool = False,
    crashes_max: int = 5,
    seed: int | None = None,
    allow_public: bool = False,
    bytes_max: int = 4 << 30,
    metrics: Metrics | None = None,
    backup: Controller | None = None,
    retry_crashes: bool = False,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
    seconds_drain: float = 0,
    memory: int | None = None,
    relay_output: bool = False,
    resources: Mapping[str, int | str] | Resources | None = None,
) -> Controller:
    """A controller whose workers are AWS Batch jobs, one array job per scaling step.

    Needs boto3: ``pip install 'pycrew[aws]'``. The job definition names the
    image (a Python with pycrew of the controller's version) and an execution
    role allowed ``secretsmanager:GetSecretValue`` on ``pycrew/*`` secrets;
    the workers must reach the controller (a security group that admits
    itself, with the controller in it).

    How jobs are submitted (``region``, ``vcpus``, ``memory_megabytes``,
    ``gpus``, ``seconds_timeout_job``, ``retry_attempts``, ``tags``,
    ``container_overrides``, ``python``, ``secret_env``, ``endpoints``) is
    ``pycrew.launchers.AwsBatchLauncher``'s to say; see there.

    Args:
        job_queue: the job queue's name or ARN.
        job_definition: the user's job definition (``name``,
            ``name:revision`` or ARN) of type ``container``.
        name: the controller's name, in every job's name and tags.
        workers: the most workers (jobs) auto-scaling keeps at once.
        host: the address the jobs dial; by default this machine's address
            on the network its default route leaves by (its private address
            in a VPC). A public address is refused unless ``allow_public``.
        port: the port to listen on; 0 lets the OS pick.
        tls: ``"automatic"`` by default: tasks cross the VPC's network.
        seconds_launch: a job that has not connected by then (30 minutes by
            default: Batch may start an instance first) is ended and replaced.

    The other arguments are those of ``pycrew.local_controller``, except
    that ``relay_output`` is off by default. ``terminate()`` ends every job
    this controller submitted that has not finished (array children
    included), retires its job definition and deletes its secret.
    """

    from .._engines._aws_batch._launcher import AwsBatchLauncher  # loads when it is used

    launcher = AwsBatchLauncher(
        job_queue,
        job_definition,
        region=region,
        vcpus=vcpus,
        memory_megabytes=memory_megabytes,
        gpus=gpus,
        seconds_timeout_job=seconds_timeout_job,
        retry_attempts=retry_attempts,
        tags=tags,
        container_overrides=container_overrides,
        python=python,
        secret_env=secret_env,
        endpoints=endpoints,
    )
    return Controller(
        launcher,
        name=name,
        workers=workers,
        host=cluster_host() if host is None else host,
        port=port,
        tls=tls,
        seconds_interval=seconds_interval,
        seconds_timeout=seconds_timeout,
        seconds_launch=seconds_launch,
        seconds_idle=seconds_idle,
        seconds_wall=seconds_wall,
        seconds_heartbeat=seconds_heartbeat,
        tasks_max=tasks_max,
        tasks_timers=tasks_timers,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        reset_environment=reset_environment,
        crashes_max=crashes_max,
        seed=seed,
        allow_public=allow_public,
        bytes_max=bytes_max,
        metrics=metrics,
        backup=backup,
        retry_crashes=retry_crashes,
        env=env,
        retries=retries,
        retry_on=retry_on,
        initializer=initializer,
        initargs=initargs,
        serializers=serializers,
        relay_output=relay_output,
        seconds_drain=seconds_drain,
        memory=memory,
        resources=resources,
    )


def kubernetes_controller(
    image: str,
    name: str | None = None,
    workers: int = 1,
    host: str | None = None,
    port: int = 0,
    tls: TLS | str | None = "automatic",
    *,
    namespace: str = "default",
    cpu: float | None = None,
    memory_megabytes: int | None = None,
    gpus: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    service_account: str | None = None,
    labels: Mapping[str, str] | None = None,
    image_pull_policy: str | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    python: str = "python",
    secret_env: Sequence[str] = (),
    seconds_unschedulable: float = 10.0,
    seconds_interval: float = 0.5,
    seconds_timeout: float = 60,
    seconds_launch: float = 600,
    seconds_idle: float = 300,
    seconds_wall: float = math.inf,
    seconds_heartbeat: float = 10,
    tasks_max: float = math.inf,
    tasks_timers: int = 0,
    reset_globals: bool = True,
    reset_modules: bool = False,
    garbage_collection: bool = False,
    reset_environment: bool = False,
    crashes_max: int = 5,
    seed: int | None = None,
    allow_public: bool = False,
    bytes_max: int = 4 << 30,
    metrics: Metrics | None = None,
    backup: Controller | None = None,
    retry_crashes: bool = False,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    serializers: Mapping[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] | None = None,
    seconds_drain: float = 0,
    memory: int | None = None,
    relay_output: bool = False,
    resources: Mapping[str, int | str] | Resources | None = None,
) -> Controller:
    """A controller whose workers are Kubernetes pods, one pod per worker.

    Needs the official client: ``pip install 'pycrew[kubernetes]'``. The
    pods must reach the controller: run it in the cluster (a pod, with a
    headless Service if other pods name it) or pass ``host=`` an address the
    pods can dial.

    Args:
        image: the container image the workers run: a Python (``python=``)
            with pycrew of the controller's version.
        name: the controller's name, in the pods' ``pycrew.dev/controller``
            label and in the Secret's name.
        workers: the most workers (pods) auto-scaling keeps at once.
        host: the address the pods dial; by default this machine's address
            on the network its default route leaves by (the pod's own IP when
            the controller runs in a pod).
        port: the port to listen on; 0 lets the OS pick.
        tls: ``"automatic"`` by default: tasks cross the cluster's network.
        namespace: where the pods and the Secret go.
        cpu: cores each pod asks for, as request and limit (``0.5`` is
            ``500m``); a task's ``resources=`` asks instead for the pods
            launched for it.
        memory_megabytes: memory each pod asks for, request and limit, in MiB
            (as AWS Batch's option; ``memory=`` is the controller's own).
        gpus: NVIDIA GPUs each pod asks for (``nvidia.com/gpu``).
        node_selector: node labels a worker's node must carry.
        tolerations: the pods' tolerations in the API's form, such as
            ``[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]``.
        service_account: the pods' service account; without one no account
            token is mounted in them.
        labels: more labels for the pods and the Secret (pycrew's own
            ``pycrew.dev/*`` win).
        image_pull_policy: ``"Always"``, ``"IfNotPresent"`` or ``"Never"``;
            None leaves Kubernetes' default.
        kubeconfig: the kubeconfig file; by default ``$KUBECONFIG`` or
            ``~/.kube/config``, else the in-cluster service account.
        context: the kubeconfig context (default: its current one).
        python: the interpreter in the image that runs the worker.
        secret_env: names of more variables of ``env=`` to pass through the
            Secret; names that say SECRET, PASSWORD, TOKEN, CREDENTIAL or end
            in _KEY always are.
        seconds_unschedulable: how long a pod the scheduler cannot place
            waits before it counts as a failed launch (with the scheduler's
            words); raise it where a cluster autoscaler adds nodes.
        seconds_launch: a pod that has not connected by then (10 minutes by
            default: an image may take a while to pull) is deleted and replaced.

    The other arguments are those of ``pycrew.local_controller``, except
    that ``relay_output`` is off by default. ``terminate()`` deletes every
    pod of the controller and the Secret of its start.
    """

    from .._engines._kubernetes._launcher import KubernetesLauncher  # loads when it is used

    launcher = KubernetesLauncher(
        image,
        namespace=namespace,
        cpu=cpu,
        memory=None if memory_megabytes is None else _mebibytes(memory_megabytes),
        gpus=gpus,
        node_selector=node_selector,
        tolerations=tolerations,
        service_account=service_account,
        labels=labels,
        image_pull_policy=image_pull_policy,
        kubeconfig=kubeconfig,
        context=context,
        python=python,
        secret_env=secret_env,
        seconds_unschedulable=seconds_unschedulable,
    )
    return Controller(
        launcher,
        name=name,
        workers=workers,
        host=cluster_host() if host is None else host,
        port=port,
        tls=tls,
        seconds_interval=seconds_interval,
        seconds_timeout=seconds_timeout,
        seconds_launch=seconds_launch,
        seconds_idle=seconds_idle,
        seconds_wall=seconds_wall,
        seconds_heartbeat=seconds_heartbeat,
        tasks_max=tasks_max,
        tasks_timers=tasks_timers,
        reset_globals=reset_globals,
        reset_modules=reset_modules,
        garbage_collection=garbage_collection,
        reset_environment=reset_environment,
        crashes_max=crashes_max,
        seed=seed,
        allow_public=allow_public,
        bytes_max=bytes_max,
        metrics=metrics,
        backup=backup,
        retry_crashes=retry_crashes,
        env=env,
        retries=retries,
        retry_on=retry_on,
        initializer=initializer,
        initargs=initargs,
        serializers=serializers,
        relay_output=relay_output,
        seconds_drain=seconds_drain,
        memory=memory,
        resources=resources,
    )


def _mebibytes(value: object) -> int:
    """``memory_megabytes`` in bytes."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"memory_megabytes must be a positive whole number, got {value!r}")
    return value << 20
