"""What a controller shows of itself: ``status()``, a worker's log, the dashboard.

```
 dispatcher's Observed ─┐
 records (size), autoscaler (launching), metrics files ─┼─► status(since) ─► plain dict
                         │                                   │
                         │     ctl.dashboard() ─► web page ◄─┤ (pycrew[dashboard])
                         │     channel (0600 Unix socket) ◄──┤ pycrew top / pycrew dashboard
                         └── events ─► tracing listener (pycrew[otel])
```

Everything here reads; nothing steers. The dashboard's and tracing's
packages are imported only when asked for: ``import pycrew`` and the
workers never import them.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .._dispatcher._observe import Observed
from .._errors import ArgumentError, ArgumentTypeError
from .._operations import _diagnose, _metrics, _tracing
from .._results import command_label
from .._wire._tls import TLS
from ._checks import check_cursor, check_flag, check_host, check_port
from ._records import RecordViews

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .._engines._launcher import Launcher
    from .._operations._channel import Channel
    from .._operations._dashboard._server import Dashboard
    from .._operations._metrics import Metrics

log = logging.getLogger("pycrew.controller")

#: metrics samples each worker row carries (the dashboard's sparklines)
SAMPLES = 30
#: worker rows that get their metrics read per status(): the busiest first
SAMPLED_ROWS = 200


class Watching(RecordViews):
    """The controller's views of its live state; a ``pycrew.Controller`` is one."""

    launcher: Launcher
    tls: TLS
    memory: int | None
    metrics: Metrics | None
    _channel: Channel | None = None
    #: the tracer of this start (None: tracing is off, and a push pays one ``if``)
    _tracer: Any = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def cancel(self, names: str | Iterable[str] | None = None, all: bool = False) -> None:
        raise NotImplementedError

    def status(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The controller's live state as plain data (JSON-serialisable).

        What runs where now, what is stuck, what eats memory and how fast it
        goes: tasks by status, the workers with their current task, the task
        stream, recent events and errors. Cheap to call every second; the
        fields are described in the docs ("Watching a controller").

        Args:
            since: a cursor from an earlier call's ``"seq"``: the ``stream``
                and ``events`` lists then hold only what is newer.
            limit: at most this many of the newest ``stream`` entries and
                ``events`` (a poller that shows a window need not have the
                rest built); ``None``: all that are kept.
        """
        check_cursor(since, limit)
        dispatcher, auto = self._dispatcher, self._autoscaler
        now = time.time()
        state: dict[str, Any] = {
            "kind": "controller",
            "controller": self.name,
            "engine": engine_name(self),
            "url": self.url,
            "tls": self.tls.mode,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": dispatcher is not None,
            "time": now,
        }
        if dispatcher is None or auto is None:
            # the same fields, from a state that saw nothing: zeros and empty lists
            live = Observed(self.name).snapshot((), since, limit)
            live["uptime"] = 0.0
        else:
            live = dispatcher.status(since, limit, list(auto.launching))
            live["uptime"] = round(now - dispatcher.observed.started, 3)
        errors = live.pop("errors")
        tasks = live["tasks"]
        tasks["resolved"] = max(self.size() - tasks.pop("live"), 0)
        live["workers"]["max"] = self.workers
        live["memory"]["cap"] = self.memory
        live["errors"] = [self._error_row(when, task) for when, task in errors]
        _add_samples(self.metrics, live["worker_rows"])
        return state | live

    def _error_row(self, when: float, task: Any) -> dict[str, Any]:
        try:
            record = self._records.build(task, self._crash_detail)
            error, trace, status = record.error, record.trace, record.status.value
        except BaseException as exc:  # a result's own code may raise anything
            error, trace, status = f"the record could not be read: {exc!r}", None, "error"
        return {
            "name": task.name,
            "function": command_label(task.command),
            "status": status,
            "error": error,
            "trace": trace,
            "worker": task.worker.id if task.worker is not None else None,
            "time": when,
        }

    def worker_log(self, worker_id: str, lines: int = 200) -> str | None:
        """The last ``lines`` lines a worker wrote to its log, if this controller
        keeps one (``log_directory=`` locally, ``log_error=`` or the start-up log on a
        cluster); None if it keeps none."""
        if not isinstance(worker_id, str) or not worker_id:
            raise ArgumentTypeError(f"worker_id must be a non-empty str, got {worker_id!r}")
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            raise ArgumentError(f"lines must be a positive int, got {lines!r}")
        scaler = self._scaler
        handle = scaler.handles.get(worker_id) if scaler is not None else None
        try:
            paths = self.launcher.log_files(worker_id, handle)
        except Exception:  # a plugin's bug: no log to show, and status() goes on
            log.debug("log_files() of worker %s failed", worker_id, exc_info=True)
            paths = []
        for path in paths:
            text = _diagnose.read_tail(path)
            if text is not None:
                return "\n".join(text.splitlines()[-lines:])
        return None

    def dashboard(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_cancel: bool = False,
        allow_public: bool = False,
    ) -> Dashboard:
        """Serve a live web page of this controller; returns it (``.url``, ``.close()``).

        Needs ``pip install 'pycrew[dashboard]'``. The page is read-only unless
        ``allow_cancel=True``; it binds loopback unless told otherwise (the
        same rule as the controller's ``host``), and opens only with the random
        token in the URL it prints. Close it with ``.close()`` or a ``with``
        block; ``terminate()`` does not close it (a page may outlive a start).
        """
        return serve_dashboard(self, host, port, allow_cancel, allow_public, self.name)

    # ------------------------------------------------------- start / stop
    def _open_watch(self, begun: float) -> None:
        """At the end of start() (``begun``: when it began): the channel ``pycrew top``
        reads, and, where tracing is on, spans for the start and for worker events."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        from .._operations import _channel

        self._tracer = tracer = _tracing.tracer()
        if tracer is not None:
            dispatcher.observed.listen(_tracing.EventSpans(tracer, self.name))
            _tracing.controller_event(
                tracer, "start", name=self.name, url=self.url, engine=engine_name(self), begun=begun
            )
        self._channel = _channel.Channel.open(
            self.name,
            self.status,
            cancel=self.cancel,
            worker_log=self.worker_log,
        )

    def _close_watch(self) -> Callable[[], None]:
        """At terminate(), before anything stops; returns what to call once all has."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        tracer, begun, url = self._tracer, time.time(), self.url
        self._tracer = None
        return functools.partial(
            _tracing.controller_event,
            tracer,
            "terminate",
            name=self.name,
            url=url,
            engine=engine_name(self),
            begun=begun,
        )


def serve_dashboard(
    source: Any, host: str, port: int, allow_cancel: bool, allow_public: bool, title: str
) -> Dashboard:
    """The dashboard of a controller or a group (``source``: status, cancel, worker_log)."""
    if not isinstance(host, str) or not host:
        raise ArgumentTypeError(f"host must be a non-empty str, got {host!r}")
    check_port(port)
    check_flag("allow_cancel", allow_cancel)
    check_flag("allow_public", allow_public)
    # a page over plain HTTP: off loopback, its token crosses the network in clear
    check_host(host, TLS(), allow_public)
    try:
        from .._operations._dashboard import _server
    except ImportError as exc:
        raise ArgumentError(
            f"the dashboard needs pip install 'pycrew[dashboard]' ({exc.name} is missing)"
        ) from exc
    from .._operations._dashboard._feed import STREAM_WINDOW

    return _server.serve(
        # a page shows a window of the stream: nothing older is built for it
        status=functools.partial(_windowed, source.status, STREAM_WINDOW),
        cancel=source.cancel if allow_cancel else None,
        worker_log=source.worker_log,
        host=host,
        port=port,
        title=f"pycrew: {title}",
    )


class GroupCursors:
    """A group's ``status(since)`` cursors: one int stands for each member's own."""

    KEPT = 256

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._cursors: collections.OrderedDict[int, dict[str, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def members_since(self, since: int) -> dict[str, int]:
        """Each member's cursor behind ``since`` (none known: everything kept)."""
        with self._lock:
            return dict(self._cursors.get(since, {}))

    def issue(self, states: list[dict[str, Any]]) -> int:
        with self._lock:
            cursor = next(self._next)
            self._cursors[cursor] = {s["controller"]: s["seq"] for s in states}
            while len(self._cursors) > self.KEPT:
                self._cursors.popitem(last=False)
            return cursor


def merge_status(
    states: list[dict[str, Any]], cursor: int, limit: int | None = None
) -> dict[str, Any]:
    """One view of a group's members' states (see ``Watching.status``)."""
    first = states[0]
    tasks: collections.Counter[str] = collections.Counter()
    workers: collections.Counter[str] = collections.Counter()
    functions: dict[str, collections.Counter[str]] = {}
    for state in states:
        tasks.update(state["tasks"])
        workers.update(state["workers"])
        for row in state["functions"]:
            counts = functions.setdefault(row["function"], collections.Counter())
            counts.update({k: v for k, v in row.items() if k != "function"})
    caps = [s["memory"]["cap"] for s in states]

    def tagged(key: str) -> list[dict[str, Any]]:
        return [entry | {"controller": s["controller"]} for s in states for entry in s[key]]

    return {
        "kind": "group",
        "controller": "+".join(s["controller"] for s in states),
        "members": [s["controller"] for s in states],
        "engine": ",".join(dict.fromkeys(s["engine"] for s in states)),
        "url": " ".join(s["url"] for s in states if s["url"]),
        "tls": ",".join(dict.fromkeys(s["tls"] for s in states)),
        "host": first["host"],
        "pid": first["pid"],
        "started": any(s["started"] for s in states),
        "uptime": max(s["uptime"] for s in states),
        "time": first["time"],
        "seq": cursor,
        "broken": next((s["broken"] for s in states if s["broken"]), None),
        "tasks": dict(tasks),
        "rate": round(sum(s["rate"] for s in states), 3),
        "history": _merge_history([s["history"] for s in states]),
        "functions": [{"function": name} | dict(counts) for name, counts in functions.items()],
        "workers": dict(workers),
        "worker_rows": [row for s in states for row in s["worker_rows"]],
        "memory": {
            "held": sum(s["memory"]["held"] for s in states),
            "peak": sum(s["memory"]["peak"] for s in states),
            "cap": None if None in caps else sum(caps),
        },
        "bytes": {k: sum(s["bytes"][k] for s in states) for k in ("sent", "received")},
        "stream": sorted(tagged("stream"), key=lambda e: e["end"])[-(limit or 10_000) :],
        "events": sorted(tagged("events"), key=lambda e: e["time"])[-(limit or 500) :],
        "errors": sorted(tagged("errors"), key=lambda e: e["time"])[-20:],
    }


def _merge_history(histories: list[list[list[float]]]) -> list[list[float]]:
    """Members' points summed over time, each member's last value carried forward."""
    points = sorted((p[0], i, p[1:]) for i, history in enumerate(histories) for p in history)
    latest: dict[int, list[float]] = {}
    merged: list[list[float]] = []
    for when, member, values in points:
        latest[member] = values
        total = [sum(v[k] for v in latest.values()) for k in range(len(values))]
        if merged and when - merged[-1][0] < 1.0:
            merged[-1] = [merged[-1][0], *total]
        else:
            merged.append([when, *total])
    return merged[-900:]


def _windowed(status: Callable[..., dict[str, Any]], limit: int, since: int) -> dict[str, Any]:
    return status(since, limit=limit)


def engine_name(ctl: Watching) -> str:
    """``local``, ``slurm``, ... from the launcher's class (a plugin's own name otherwise)."""
    name = type(ctl.launcher).__name__
    return name.removesuffix("Launcher").lower() or name


def _add_samples(metrics: Any, rows: list[dict[str, Any]]) -> None:
    """The last metrics samples of each worker, from its file (``metrics=`` with a folder)."""
    if metrics is None or str(metrics.path) in _metrics.STREAMS:
        return
    for row in rows[:SAMPLED_ROWS]:
        samples = _metrics.tail(metrics.path, row["id"], SAMPLES)
        if samples:
            row["samples"] = [[s["time"], s.get("cpu"), s.get("resident")] for s in samples]
            row["cpu"], row["rss"] = samples[-1].get("cpu"), samples[-1].get("resident")
