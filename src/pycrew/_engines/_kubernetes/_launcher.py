"""Workers as Kubernetes Pods, one per worker, through the official ``kubernetes`` client.

```
 scaler thread ── launch_workers(specs) ──► first launch of a start: Secret
      │                                      pycrew-<controller>-<token> (the secret env)
      │                                     then one Pod per worker: labels name the
      │                                      controller, this start and the worker; env
      │                                      entries point at the Secret (secretKeyRef)
      ├── exit_codes(handles) ──► one LIST of this start's pods (label selector), backing
      │                            off while nothing changes ──► exit code, reason, words
      ├── failure_output(handle) ──► the platform's words (ErrImagePull, Unschedulable,
      │                               OOMKilled) as a LaunchError, or the log tail that
      │                               FallbackToLogsOnError put in the termination message
      └── shutdown() ──► DELETE the start's pods (one collection call), wait for them to
                         go, DELETE its Secrets
```

One Pod per worker rather than an Indexed Job per scaling step: every worker
has its own id, which a pod carries in its command with no shell in the image
to map a completion index to it; a pod's status is the worker's own (its exit
code, OOMKilled, Evicted); and ``terminate_worker`` deletes exactly one pod.
The cost is one create call per worker instead of one per step.

The controller's secret never appears in a pod: it lives in a Secret made at
the first launch of a start and deleted at ``shutdown()``; pods name it in
``valueFrom.secretKeyRef``. Only variables that are not secret go as plain
env entries.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import json
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._errors import ArgumentError, ArgumentTypeError, LaunchError
from ..._resources import size_bytes
from .._launcher import Launcher, Pace, some
from .._secrets import split_env

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..._resources import Resources
    from .._launcher import WorkerSpec

log = logging.getLogger("pycrew.engines.kubernetes")

#: labels every pycrew pod and Secret carries (values cut to what Kubernetes allows)
CONTROLLER_LABEL = "pycrew.dev/controller"
SESSION_LABEL = "pycrew.dev/session"
WORKER_LABEL = "pycrew.dev/worker"
USER_LABEL = "pycrew.dev/user"
#: the exact names, which labels may have to shorten
CONTROLLER_NOTE = "pycrew.dev/controller-name"
WORKER_NOTE = "pycrew.dev/worker-id"
#: seconds between LISTs right after something changed, and at most after backing off
POLL_MIN, POLL_MAX = 0.25, 30.0
#: how long one API call may take
CALL_SECONDS = 60.0
#: the exit code given to a pod whose container never ran (the container
#: runtimes' own code for "could not run the container")
NEVER_RAN = 125
#: a worker's own exit codes when it leaves as planned (asked to, idle, wall
#: time, task quota): see ``pycrew._worker._worker``
PLANNED_EXITS = frozenset({0, 1, 2, 3})
#: waiting reasons after which the container will not start by itself soon
FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def client_module() -> Any:
    """``kubernetes.client``, or a LaunchError naming the extra that brings it."""
    try:
        return importlib.import_module("kubernetes.client")
    except ImportError:
        raise LaunchError(
            "the Kubernetes engine needs the kubernetes client: pip install 'pycrew[kubernetes]'"
        ) from None


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    """An ApiClient from a kubeconfig (given, $KUBECONFIG or ~/.kube/config), else the
    in-cluster service account when running in a pod."""
    client_module()
    config = importlib.import_module("kubernetes.config")
    default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config"))
    try:
        if kubeconfig is not None or context is not None or os.path.exists(default):
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = importlib.import_module("kubernetes.client").Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return importlib.import_module("kubernetes.client").ApiClient(configuration)
    except Exception as exc:  # the config module raises its own kinds, and OSError
        raise LaunchError(f"cannot load the Kubernetes configuration: {exc}") from exc
    raise LaunchError(
        "no Kubernetes configuration: pass kubeconfig=, set $KUBECONFIG, write "
        "~/.kube/config, or run the controller in a pod"
    )


def api_message(exc: BaseException) -> str:
    """The API server's own message in a client exception (its Status body), else the text."""
    body = getattr(exc, "body", None)
    with contextlib.suppress(ValueError, TypeError):
        message = json.loads(body or "").get("message")
        if message:
            return str(message)
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return str(exc).strip() or type(exc).__name__


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404


def dns_label(text: str, limit: int = 63) -> str:
    """``text`` as a DNS label (lower case, digits, dashes; at most ``limit``): a pod name,
    a label value."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())[:limit].strip("-")
    return cleaned or "x"


def model(kind: str, data: dict[str, Any]) -> Any:
    """A client model built from API-form data (a client without ``from_dict`` takes the dict)."""
    cls = getattr(client_module(), kind)
    return cls.from_dict(data) if hasattr(cls, "from_dict") else data


def quantity_cpu(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{math.ceil(cores * 1000)}m"


def quantity_memory(n: int) -> str:
    return f"{-(-n // 2**20)}Mi"  # whole MiB, rounded up: never short


@dataclass(frozen=True)
class Pod:
    """The handle of one worker: its pod's name."""

    name: str
    worker: str

    @property
    def id(self) -> str:
        return self.name


@dataclass(frozen=True)
class Outcome:
    """How a pod ended, by its status: the code, the platform's reason and words."""

    code: int
    reason: str = ""
    message: str = ""
    #: the container never ran: the words are the platform's, not the worker's output
    never_ran: bool = False


def outcome(pod: Any, give_up: bool = False) -> Outcome | None:
    """What a pod's status says of its end; None while it runs or may still start.

    ``give_up``: a pod the scheduler cannot place counts as ended.
    """
    status = pod.status
    if status is None:
        return None
    phase = status.phase or "Pending"
    states = status.container_statuses or []
    state = states[0].state if states else None
    if phase in ("Succeeded", "Failed"):
        done = state.terminated if state is not None else None
        if done is not None:
            code = int(done.exit_code)
            # the runtime reports a signal N as 128 + N; pycrew says -N
            code = -(code - 128) if 128 < code < 160 else code
            reason = status.reason or done.reason or ""
            message = status.message or done.message or ""
            return Outcome(code, reason, message)
        # evicted (or failed) with no container status: the node ended it
        return Outcome(-9 if phase == "Failed" else 0, status.reason or "", status.message or "")
    if phase == "Pending":
        waiting = state.waiting if state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            return Outcome(NEVER_RAN, waiting.reason, waiting.message or "", never_ran=True)
        for condition in status.conditions or []:
            if (
                condition.type == "PodScheduled"
                and condition.status == "False"
                and condition.reason == "Unschedulable"
                and give_up
            ):
                return Outcome(NEVER_RAN, "Unschedulable", condition.message or "", never_ran=True)
    return None


def unschedulable(pod: Any) -> bool:
    status = pod.status
    return status is not None and any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in status.conditions or []
    )


class KubernetesLauncher(Launcher):
    """Start each worker as a Kubernetes Pod.

    Args:
        image: the container image the workers run; it must hold Python with
            pycrew of the controller's version.
        namespace: where the pods and the Secret go.
        cpu: cores each worker asks for (requests and limits), such as 0.5 or 2.
        memory: memory each worker asks for (requests and limits): bytes, or a
            size such as ``"4 GiB"``.
        gpus: NVIDIA GPUs each worker asks for (``nvidia.com/gpu``).
        node_selector: node labels a worker's node must have.
        tolerations: tolerations of the pods, in the API's form
            (``[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]``).
        service_account: the pods' service account; without one, no account
            token is mounted (a worker has no use for the API).
        labels: more labels for the pods (pycrew's own under ``pycrew.dev/`` win).
        image_pull_policy: ``"Always"``, ``"IfNotPresent"`` or ``"Never"``.
        kubeconfig, context: which kubeconfig file and context to use; by
            default ``$KUBECONFIG`` or ``~/.kube/config``, else the in-cluster
            service account when the controller itself runs in a pod.
        python: the interpreter in the image that runs the worker.
        secret_env: names of more variables (of the controller's ``env=``) to
            pass through the Secret; names that say SECRET, PASSWORD, TOKEN,
            CREDENTIAL or end in _KEY always are.
        seconds_unschedulable: how long a pod the scheduler cannot place may
            wait before it counts as a failed launch (and is deleted) with the
            scheduler's words; raise it, and ``seconds_launch``, where a
            cluster autoscaler adds nodes.
    """

    engine = "kubernetes"

    def __init__(
        self,
        image: str,
        *,
        namespace: str = "default",
        cpu: float | None = None,
        memory: int | str | None = None,
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
    ) -> None:
        client_module()  # a missing extra is said now, not at the first launch
        for label, text in (("image", image), ("namespace", namespace), ("python", python)):
            if not isinstance(text, str) or not text:
                raise ArgumentError(f"{label} must be a non-empty string, got {text!r}")
        if cpu is not None and (
            isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 < cpu < math.inf
        ):
            raise ArgumentError(f"cpu must be a positive number of cores, got {cpu!r}")
        if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0):
            raise ArgumentError(f"gpus must be a whole number >= 0, got {gpus!r}")
        if image_pull_policy not in (None, "Always", "IfNotPresent", "Never"):
            raise ArgumentError(
                "image_pull_policy must be 'Always', 'IfNotPresent' or 'Never', "
                f"got {image_pull_policy!r}"
            )
        if isinstance(tolerations, (str, dict)):
            raise ArgumentTypeError("tolerations must be a list of dicts")
        if isinstance(secret_env, str):
            raise ArgumentTypeError("secret_env must be a list of variable names, not one string")
        if not isinstance(seconds_unschedulable, (int, float)) or seconds_unschedulable < 0:
            raise ArgumentError(
                f"seconds_unschedulable must be >= 0, got {seconds_unschedulable!r}"
            )
        self.image = image
        self.namespace = namespace
        self.cpu = cpu
        self.memory = None if memory is None else size_bytes(memory, "memory")
        self.gpus = gpus
        self.node_selector = {str(k): str(v) for k, v in (node_selector or {}).items()}
        self.tolerations = [dict(t) for t in tolerations or ()]
        self.service_account = service_account
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.image_pull_policy = image_pull_policy
        self.kubeconfig = None if kubeconfig is None else os.fspath(kubeconfig)
        self.context = context
        self.python = python
        self.secret_env = frozenset(secret_env)
        self.seconds_unschedulable = float(seconds_unschedulable)
        self.user = dns_label(getpass.getuser())
        #: how many times each API call was made, for the curious and the tests
        self.calls: dict[str, int] = {}
        self._core: Any = None
        self._new_start()

    def _new_start(self) -> None:
        """Forget the last start: a new token names the next one's pods and Secret."""
        self._token = secrets.token_hex(4)
        self._seq = 0
        self._pods: dict[str, Pod] = {}
        self._secrets: dict[frozenset[tuple[str, str]], str] = {}
        self._ended: dict[str, Outcome] = {}
        self._deleted: set[str] = set()
        self._pending_since: dict[str, float] = {}
        self._pace = Pace(POLL_MIN, POLL_MAX)

    # ---------------------------------------------------------------- API
    @property
    def core(self) -> Any:
        """The CoreV1Api, made at first use."""
        if self._core is None:
            self._core = client_module().CoreV1Api(api_client(self.kubeconfig, self.context))
        return self._core

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        # names only: a body may hold the secret (a Secret's data)
        log.debug("%s %s", method, " ".join(a for a in args if isinstance(a, str)))
        return getattr(self.core, method)(*args, _request_timeout=CALL_SECONDS, **kwargs)

    def validate(self) -> None:
        self.core  # noqa: B018 - a missing configuration is said at start()

    def selector(self) -> str:
        """The label selector of this start's pods and Secrets."""
        return f"{SESSION_LABEL}={self._token}"

    def _labels(self, controller: str, worker: str | None) -> dict[str, str]:
        labels = {
            **self.labels,
            CONTROLLER_LABEL: dns_label(controller),
            SESSION_LABEL: self._token,
            USER_LABEL: self.user,
        }
        if worker is not None:
            labels[WORKER_LABEL] = dns_label(worker)
        return labels

    # ------------------------------------------------------------ secrets
    def split_env(self, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """A spec's variables as (plain, secret)."""
        return split_env(env, self.secret_env)

    def _secret_for(self, controller: str, hidden: dict[str, str]) -> str:
        """The Secret holding these values, made now if this start has none like it."""
        key = frozenset(hidden.items())
        name = self._secrets.get(key)
        if name is not None:
            return name
        # one per start in practice: the values are the same for every spec of it
        name = dns_label(f"pycrew-{controller}", 54) + f"-{self._token}"
        if self._secrets:
            name += f"-{len(self._secrets) + 1}"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "labels": self._labels(controller, None),
                "annotations": {CONTROLLER_NOTE: controller},
            },
            "stringData": hidden,
        }
        try:
            self._call("create_namespaced_secret", self.namespace, model("V1Secret", body))
        except LaunchError:
            raise
        except Exception as exc:
            raise LaunchError(
                f"Kubernetes refused the Secret {name} in namespace {self.namespace}: "
                f"{api_message(exc)}"
            ) from None
        log.info("made the Secret %s for the workers of this start", name)
        self._secrets[key] = name
        return name

    # ---------------------------------------------------------- launching
    def resources(self, shape: Resources | None) -> dict[str, str]:
        """What each worker asks for: the launcher's options, a shape's amounts instead."""
        amounts: dict[str, str] = {}
        cpu = shape.cpus if shape is not None and shape.cpus else self.cpu
        memory = shape.memory if shape is not None and shape.memory else self.memory
        gpus = shape.gpus if shape is not None and shape.gpus else self.gpus
        if cpu:
            amounts["cpu"] = quantity_cpu(cpu)
        if memory:
            amounts["memory"] = quantity_memory(memory)
        if gpus:
            amounts["nvidia.com/gpu"] = str(gpus)
        for name, count in shape.custom if shape is not None else ():
            if "/" not in name:
                raise LaunchError(
                    f"Kubernetes knows no resource {name!r}: name an extended resource "
                    "with its domain (such as 'example.com/licence')"
                )
            amounts[name] = str(count)
        return amounts

    def pod_body(self, spec: WorkerSpec, name: str, secret: str, plain: dict[str, str]) -> Any:
        """The Pod for one worker: its command, plain env, secret env by reference."""
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
        hidden = sorted(set(spec.env) - set(plain))
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in hidden
        ]
        amounts = self.resources(spec.shape)
        container: dict[str, Any] = {
            "name": "worker",
            "image": self.image,
            "command": [self.python, *spec.command[1:]],
            "env": env,
            # a container that fails puts the end of its log in its status,
            # where the diagnosis reads it without another call
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        if amounts:
            container["resources"] = {"requests": amounts, "limits": dict(amounts)}
        if self.image_pull_policy is not None:
            container["imagePullPolicy"] = self.image_pull_policy
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "automountServiceAccountToken": self.service_account is not None,
        }
        if self.service_account is not None:
            pod_spec["serviceAccountName"] = self.service_account
        if self.node_selector:
            pod_spec["nodeSelector"] = self.node_selector
        if self.tolerations:
            pod_spec["tolerations"] = self.tolerations
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": self._labels(spec.controller, spec.worker_id),
                "annotations": {CONTROLLER_NOTE: spec.controller, WORKER_NOTE: spec.worker_id},
            },
            "spec": pod_spec,
        }
        return model("V1Pod", body)

    def launch_worker(self, spec: WorkerSpec) -> Pod:
        return self.launch_workers([spec])[0]

    def launch_workers(self, specs: Sequence[WorkerSpec]) -> list[Pod]:
        handles: list[Pod] = []
        try:
            for spec in specs:
                plain, hidden = self.split_env(spec.env)
                secret = self._secret_for(spec.controller, hidden)
                self._seq += 1
                name = dns_label(f"pycrew-{self._token}-{self._seq}-{spec.worker_id}")
                body = self.pod_body(spec, name, secret, plain)
                try:
                    self._call("create_namespaced_pod", self.namespace, body)
                except Exception as exc:
                    raise LaunchError(
                        f"Kubernetes refused pod {name} in namespace {self.namespace}: "
                        f"{api_message(exc)}"
                    ) from None
                handle = Pod(name, spec.worker_id)
                self._pods[name] = handle
                handles.append(handle)
        except LaunchError:
            # no handle of a batch that raised is kept: its pods go now
            for handle in handles:
                self.terminate_worker(handle)
            raise
        if handles:
            shaped = specs[0].shape
            log.info(
                "launched %d worker(s) as pods%s: %s",
                len(handles),
                "" if shaped is None else f" ({shaped})",
                some(h.name for h in handles),
            )
        self._pace.every = POLL_MIN
        return handles

    # ----------------------------------------------------------- watching
    def describe_worker(self, handle: Any) -> dict[str, Any]:
        return {"job": handle.name} if isinstance(handle, Pod) else {}

    def terminate_worker(self, handle: Any) -> None:
        if not isinstance(handle, Pod) or handle.name in self._deleted:
            return
        log.info("deleting pod %s (worker %s)", handle.name, handle.worker)
        self._delete_pod(handle.name)

    def _delete_pod(self, name: str) -> None:
        self._deleted.add(name)
        with contextlib.suppress(Exception):  # gone already, or the API is away: best effort
            self._call("delete_namespaced_pod", name, self.namespace, grace_period_seconds=5)

    def exit_code(self, handle: Any) -> int | None:
        return self.exit_codes([handle])[0]

    def exit_codes(self, handles: Sequence[Any]) -> list[int | None]:
        pods = [h for h in handles if isinstance(h, Pod)]
        waiting = [p for p in pods if p.name not in self._ended]
        if self._pace.due({p.name for p in pods}, bool(waiting)):
            self._poll(waiting)
        return [
            self._ended[h.name].code if isinstance(h, Pod) and h.name in self._ended else None
            for h in handles
        ]

    def _poll(self, pods: list[Pod]) -> None:
        """One LIST of this start's pods; the end of those asked about that ended."""
        try:
            listed = self._call(
                "list_namespaced_pod", self.namespace, label_selector=self.selector()
            )
        except Exception as exc:
            log.warning("listing the pods of this start failed: %s", api_message(exc))
            self._pace.looked(False)
            return
        found = {p.metadata.name: p for p in listed.items or []}
        now = time.monotonic()
        changed = False
        for pod in pods:
            item = found.get(pod.name)
            if item is None:
                # deleted (by us, the monitor, a person): Kubernetes ends a deleted
                # pod's container with SIGTERM
                self._ended[pod.name] = Outcome(-15, "Deleted")
                changed = True
                continue
            give_up = False
            if unschedulable(item):
                first = self._pending_since.setdefault(pod.name, now)
                give_up = now - first >= self.seconds_unschedulable
            end = outcome(item, give_up)
            if end is None:
                continue
            self._ended[pod.name] = end
            changed = True
            log.debug("pod %s ended: code %s %s", pod.name, end.code, end.reason)
            if end.never_ran or end.code in PLANNED_EXITS:
                # one that never ran would wait (or pull again) forever; a worker
                # that left as planned has nothing to show. Any other stays until
                # shutdown, for kubectl logs and describe.
                self._delete_pod(pod.name)
        self._pace.looked(changed)

    def exit_reason(self, handle: Any) -> str | None:
        """Kubernetes' word on how a worker's pod ended (OOMKilled, Evicted, ...)."""
        end = self._ended.get(handle.name) if isinstance(handle, Pod) else None
        if end is None or end.reason in ("", "Completed", "Error"):
            return None
        if end.reason in ("Evicted", "Unschedulable") or end.never_ran:
            return f"{end.reason}: {end.message}" if end.message else end.reason
        return end.reason

    def failure_output(self, handle: Any) -> str | None:
        if not isinstance(handle, Pod):
            return None
        end = self._ended.get(handle.name)
        if end is None:
            return None
        words = end.message.strip()
        where = f"pod {handle.name}"
        if end.reason == "Unschedulable":
            raise LaunchError(
                f"Kubernetes could not place {where} (Unschedulable: {words}): ask for "
                "less (cpu=, memory=, gpus=, or the task's resources=), or add nodes "
                "that have it"
            )
        if end.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            raise LaunchError(
                f"Kubernetes could not pull the image {self.image} for {where} "
                f"({end.reason}: {words}): check the image's name and tag, and that the "
                "cluster may pull it (imagePullSecrets of the service account)"
            )
        if end.never_ran:
            raise LaunchError(f"Kubernetes could not start {where} ({end.reason}: {words})")
        if end.reason in ("StartError", "ContainerCannotRun"):
            raise LaunchError(
                f"Kubernetes could not start the container of {where} ({end.reason}: {words}): "
                f"is python= ({self.python}) an interpreter in the image {self.image}?"
            )
        if end.reason == "OOMKilled":
            raise LaunchError(
                f"{where} was OOMKilled as it started: its memory limit is too small "
                "for a worker; ask for more (memory=)"
            )
        if end.reason == "Evicted":
            raise LaunchError(f"Kubernetes evicted {where} ({words})")
        # the end of the container's log, by FallbackToLogsOnError
        return words

    def shutdown(self, handles: Sequence[Any], seconds: float) -> None:
        """Delete every pod and Secret of this start, and wait for the pods to go."""
        if not self._pods and not self._secrets:
            self._new_start()
            return
        selector = self.selector()
        try:
            if self._pods:
                log.info("deleting the %d pod(s) of this start", len(self._pods))
                with contextlib.suppress(Exception):
                    self._call(
                        "delete_collection_namespaced_pod",
                        self.namespace,
                        label_selector=selector,
                        grace_period_seconds=5,
                    )
                deadline = time.monotonic() + seconds
                while True:
                    try:
                        left = self._call(
                            "list_namespaced_pod", self.namespace, label_selector=selector
                        ).items
                    except Exception as exc:
                        log.warning("listing the pods of this start failed: %s", api_message(exc))
                        break
                    if not left:
                        break
                    if time.monotonic() >= deadline:
                        log.warning(
                            "Kubernetes still holds %d pod(s) of this start after %.0f s",
                            len(left),
                            seconds,
                        )
                        break
                    time.sleep(0.25)
        finally:
            for name in self._secrets.values():
                try:
                    self._call("delete_namespaced_secret", name, self.namespace)
                except Exception as exc:
                    if not is_not_found(exc):
                        log.warning("deleting the Secret %s failed: %s", name, api_message(exc))
            self._new_start()
