"""The stand-in's API server: pods and Secrets in memory, over plain HTTP (see __init__).

```
 kubernetes client ──HTTP──► Handler ──► Store (one lock; a Condition the kubelet waits on)
                                │            ▲
                                │            └── Kubelet writes pod status
                                └── every answer deserialised into the client's models first
```
"""

from __future__ import annotations

import base64
import copy
import datetime
import itertools
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import ApiClient

_PATH = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>pods|secrets|events)(?:/(?P<name>[^/]+))?$"
)
_MODELS = {"pods": ("V1Pod", "V1PodList", "Pod"), "secrets": ("V1Secret", "V1SecretList", "Secret")}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, and-ed."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Store:
    """Objects by (kind, namespace, name); a Condition tells the kubelet of changes."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1)
        #: (method, path, body text) of every request, for the secret scan
        self.requests: list[tuple[str, str, str]] = []

    def version(self) -> str:
        return str(next(self._versions))

    def create(self, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name", "")
        if not _NAME.match(name) or len(name) > 253:
            raise ApiError(422, "Invalid", f"{kind[:-1]} name {name!r} is not a DNS subdomain")
        for key, value in (meta.get("labels") or {}).items():
            if len(value) > 63 or not re.match(
                r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value
            ):
                raise ApiError(422, "Invalid", f"label {key}: invalid value {value!r}")
        with self.lock:
            if (kind, ns, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{kind} "{name}" already exists')
            meta.update(
                namespace=ns,
                uid=str(uuid.uuid4()),
                creationTimestamp=now_text(),
                resourceVersion=self.version(),
            )
            if kind == "secrets":
                data = dict(body.get("data") or {})
                for key, value in (body.pop("stringData", None) or {}).items():
                    data[key] = base64.b64encode(value.encode()).decode()
                body["data"] = data
            else:
                body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            self.objects[(kind, ns, name)] = body
            self.lock.notify_all()
            return copy.deepcopy(body)

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            found = self.objects.get((kind, ns, name))
            if found is None:
                raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
            return copy.deepcopy(found)

    def list(self, kind: str, ns: str, selector: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (k, n, _), o in self.objects.items()
                if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, selector)
            ]

    def delete(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            found = self.objects.pop((kind, ns, name), None)
            if found is None:
                raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
            self.lock.notify_all()
            return found

    def set_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        """The kubelet's write-back; False when the pod is gone."""
        with self.lock:
            found = self.objects.get(("pods", ns, name))
            if found is None:
                return False
            found["status"] = status
            found["metadata"]["resourceVersion"] = self.version()
            self.lock.notify_all()
            return True


class ApiServer:
    """The HTTP server on 127.0.0.1 in a thread of its own; ``close()`` ends it."""

    def __init__(self) -> None:
        self.store = Store()
        self.client = ApiClient()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test's output is the test's

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

            def do_DELETE(self) -> None:
                server.handle(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="k8s-standin-api"
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    # ------------------------------------------------------------ requests
    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(request.headers.get("Content-Length") or 0)
        text = request.rfile.read(length).decode() if length else ""
        self.store.requests.append((method, parts.path, text))
        try:
            code, answer = self.answer(method, parts.path, query, text)
        except ApiError as exc:
            code, answer = exc.code, exc.status()
        data = json.dumps(answer).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def check(self, answer: dict[str, Any], model: str) -> dict[str, Any]:
        """Refuse to send what the client's own models would not read."""
        self.client.deserialize(json.dumps(answer), model, "application/json")
        return answer

    def answer(
        self, method: str, path: str, query: dict[str, str], text: str
    ) -> tuple[int, dict[str, Any]]:
        found = _PATH.match(path)
        if found is None:
            raise ApiError(404, "NotFound", f"the stand-in serves no {path}")
        ns, kind, name = found["ns"], found["kind"], found["name"]
        selector = query.get("labelSelector", "")
        if kind == "events":
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}
        one, many, title = _MODELS[kind]
        if method == "GET" and name is None:
            items = self.store.list(kind, ns, selector)
            listed = {"kind": f"{title}List", "apiVersion": "v1", "metadata": {}, "items": items}
            return 200, self.check(listed, many)
        if method == "GET":
            return 200, self.check(self.store.get(kind, ns, name), one)
        if method == "POST" and name is None:
            try:
                body = json.loads(text)
                self.client.deserialize(text, one, "application/json")
            except Exception as exc:
                raise ApiError(422, "Invalid", f"not a valid {title}: {exc}") from None
            if body.get("kind", title) != title:
                raise ApiError(400, "BadRequest", f"expected a {title}")
            return 201, self.check(self.store.create(kind, ns, body), one)
        if method == "DELETE" and name is not None:
            return 200, self.check(self.store.delete(kind, ns, name), one)
        if method == "DELETE":
            for item in self.store.list(kind, ns, selector):
                self.store.delete(kind, ns, item["metadata"]["name"])
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        raise ApiError(405, "MethodNotAllowed", f"{method} {path}")
