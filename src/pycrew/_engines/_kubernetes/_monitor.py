"""pycrew's pods in a namespace, to look at or delete, even after a controller crashed.

```
 KubernetesMonitor.jobs() ── LIST pods (pycrew.dev/user=<user>) ──► name, controller,
                                                                    phase, reason, start
 stale() ── the registry of launches (a pod's name is its "job") ──► those whose
                                                                     controller is gone
 terminate() ── DELETE each pod ──► DELETE the Secrets of starts left with no pod
```

A crashed controller leaves its pods (a finished pod stays in the API until
deleted) and the Secret of its start; ending the stale pods also deletes
those Secrets.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._errors import LaunchError
from .._cluster_monitor import ClusterJobInfo, ClusterMonitor
from ._launcher import (
    CONTROLLER_NOTE,
    SESSION_LABEL,
    USER_LABEL,
    api_client,
    api_message,
    client_module,
    dns_label,
    is_not_found,
    outcome,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class KubernetesPodInfo(ClusterJobInfo):
    """One pycrew pod: ``id`` and ``name`` are the pod's name, ``state`` its phase
    (with the reason, if any)."""

    phase: str = ""
    reason: str = ""
    started: datetime.datetime | None = None
    session: str = ""


class KubernetesMonitor(ClusterMonitor):
    """pycrew's pods in one namespace, to look at or delete.

    Args:
        namespace: where to look.
        kubeconfig, context: as ``KubernetesLauncher`` takes them.
        user: whose pods (the ``pycrew.dev/user`` label; default: the current user).
    """

    engine = "kubernetes"

    def __init__(
        self,
        namespace: str = "default",
        kubeconfig: str | None = None,
        context: str | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__(user)
        client_module()
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self._core: Any = None

    @property
    def core(self) -> Any:
        if self._core is None:
            self._core = client_module().CoreV1Api(api_client(self.kubeconfig, self.context))
        return self._core

    def _selector(self) -> str:
        return f"{USER_LABEL}={dns_label(self.user)}"

    def jobs(self) -> list[ClusterJobInfo]:
        """The user's pycrew pods in the namespace, running or not (a finished pod stays)."""
        try:
            listed = self.core.list_namespaced_pod(
                self.namespace, label_selector=self._selector(), _request_timeout=60
            )
        except LaunchError:
            raise
        except Exception as exc:
            raise LaunchError(f"cannot list the pods: {api_message(exc)}") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        found: list[ClusterJobInfo] = []
        for pod in listed.items or []:
            meta = pod.metadata
            notes, labels = meta.annotations or {}, meta.labels or {}
            status = pod.status
            phase = (status.phase if status is not None else None) or "Pending"
            end = outcome(pod)
            reason = (end.reason if end is not None else "") or (
                (status.reason or "") if status is not None else ""
            )
            created = meta.creation_timestamp
            started = status.start_time if status is not None else None
            found.append(
                KubernetesPodInfo(
                    id=meta.name,
                    array_index=None,
                    state=f"{phase} ({reason})" if reason else phase,
                    controller=notes.get(CONTROLLER_NOTE, ""),
                    seconds=None if created is None else (now - created).total_seconds(),
                    name=meta.name,
                    phase=phase,
                    reason=reason,
                    started=started,
                    session=labels.get(SESSION_LABEL, ""),
                )
            )
        return found

    # the pod names are whole: nothing to strip
    def whole_job(self, job_id: str) -> str:
        return job_id

    def workers(self) -> list[ClusterJobInfo]:
        """``jobs()`` by the name the local monitor uses."""
        return self.jobs()

    def cancel(self, ids: Sequence[str]) -> None:
        """Delete these pods, then the Secrets of their starts once no pod of them is left."""
        pods = [j for j in self.jobs() if isinstance(j, KubernetesPodInfo)]
        sessions = {j.session for j in pods if j.id in ids}
        for name in ids:
            try:
                self.core.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=5, _request_timeout=60
                )
            except Exception as exc:
                if not is_not_found(exc):
                    raise LaunchError(f"cannot delete pod {name}: {api_message(exc)}") from None
        # a deleted pod may linger while it terminates: it no longer needs its Secret
        left = {j.session for j in pods if j.id not in ids}
        for session in sorted(sessions - left - {""}):
            self._delete_secrets(session)

    def _delete_secrets(self, session: str) -> None:
        with contextlib.suppress(Exception):
            found = self.core.list_namespaced_secret(
                self.namespace, label_selector=f"{SESSION_LABEL}={session}", _request_timeout=60
            )
            for secret in found.items or []:
                self.log.info("deleting the Secret %s", secret.metadata.name)
                with contextlib.suppress(Exception):
                    self.core.delete_namespaced_secret(
                        secret.metadata.name, self.namespace, _request_timeout=60
                    )
