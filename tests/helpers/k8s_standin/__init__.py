"""A local stand-in, not Kubernetes: just enough of the API server and a kubelet
for pycrew's Kubernetes engine to be driven end to end by the real ``kubernetes``
client over HTTP, with each pod's container run as a LOCAL process.

What it models (``api.py``): an in-memory, stateful ``/api/v1`` for pods and
Secrets in namespaces: create (validated by deserialising the body into the
client's own ``V1Pod``/``V1Secret``), read, LIST with label selectors
(``k=v``, ``k!=v``, ``k``, ``!k``), DELETE one and DELETE a collection by
selector; Secrets' ``stringData`` becomes base64 ``data`` as the API does;
errors come back as ``Status`` objects (404, 409, 422). Events are always an
empty list (pycrew creates none). Every answer is deserialised with the
client's ApiClient before it is sent, so a malformed answer fails loudly here.

``kubelet.py``: a test-side kubelet, a thread of the test process. It starts
each new pod's container command as a local process with the pod's env (values,
and ``secretKeyRef`` resolved from the stored Secret) over the test process's
own environment (the "image"), writes Running, then Succeeded or Failed with
the exit code, reason and the end of stderr as the termination message
(``FallbackToLogsOnError``); kills the process of a deleted pod; and, when told,
fails a pod's image pull (``ErrImagePull``), refuses to place a pod that asks
for more cpu than its one node has (``Unschedulable``, "Insufficient cpu"), or
OOM-kills a running container (status written first, then SIGKILL).

What it does not model: images (``image`` is only a name; the command runs
with this machine's Python), nodes beyond one capacity number, scheduling
beyond cpu, graceful termination periods (a deleted pod goes at once, its
process gets SIGTERM then SIGKILL), watches, PATCH/PUT, resourceVersion
conflicts, authentication and RBAC, quotas, events, logs, TLS to the API.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .api import ApiServer
from .kubelet import Kubelet

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ApiServer", "Kubelet", "write_kubeconfig"]


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig (JSON is YAML) whose one context points at the stand-in."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "standin", "user": {"token": "not-a-real-token"}}],
        "contexts": [
            {
                "name": "standin",
                "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
            }
        ],
        "current-context": "standin",
    }
    path.write_text(json.dumps(config))
    return path
