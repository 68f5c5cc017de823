"""The live state: counters and bounded histories kept on the dispatcher's own events.

```
 Dispatcher (lock held)                        Scaler thread
   submit ─► pushed, per function                launch ─► event "launch" (pid, job, host)
   result / crash / cancel / timeout             exit before connecting ─► event "exit"
     ─► outcome counts, per function, per worker
     ─► stream (last 10,000), errors (last 20)
     ─► history sample (at most one a second)
   connect / disconnect / refused ─► events (last 500) ─► listeners (tracing)
                         │
 status() ◄── snapshot(): plain dicts, only what is newer than the caller's cursor
```

Nothing here wakes a thread or allocates per task beyond one small tuple
in a bounded deque: it reads, it never steers. Every update runs on an
event the dispatcher or the scaler handles anyway.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from .._results import command_label

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    from ._handshake import Conn
    from ._task import Task

log = logging.getLogger("pycrew.dispatcher")

#: outcomes in the order the counters keep them
OUTCOMES = ("success", "error", "crash", "cancel", "timeout")
_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
STREAM_MAX = 10_000
EVENTS_MAX = 500
ERRORS_MAX = 20
HISTORY_MAX = 900
#: workers remembered after they left (pid, job, tasks done)
GONE_MAX = 1_000
#: functions counted apart; the rest are counted under one name
FUNCTIONS_MAX = 200
OTHER = "(other functions)"
RATE_SECONDS = 10.0
#: ``_task.RUNNING`` (that module imports this one)
_RUNNING = 1


class Observed:
    """One controller's live state; updated with the dispatcher's lock held
    (or, for launches, on the scaler thread: deques and counters only)."""

    def __init__(self, controller: str) -> None:
        self.controller = controller
        self.started = time.time()
        self._clock = time.monotonic()
        self.pushed = 0
        self.outcomes = [0] * len(OUTCOMES)
        #: function -> [pushed, success, error, crash, cancel, timeout]
        self.functions: dict[str, list[int]] = {}
        self._seq = itertools.count(1)
        # (seq, name, function, worker, start, end, outcome) on the monotonic clock
        self.stream: collections.deque[tuple[int, str, str, str | None, float, float, str]] = (
            collections.deque(maxlen=STREAM_MAX)
        )
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_MAX)
        #: (wall time, task) of the last tasks that failed: their records say why
        self.errors: collections.deque[tuple[float, Task]] = collections.deque(maxlen=ERRORS_MAX)
        self.history: collections.deque[tuple[float, int, int, int]] = collections.deque(
            maxlen=HISTORY_MAX
        )
        self.sampled = 0.0
        #: worker id -> facts: pid, host, job, launched, connected, done
        self.workers: dict[str, dict[str, Any]] = {}
        self._gone: collections.deque[str] = collections.deque()
        self.launched = 0
        self.exited = 0
        self.failed = 0
        self.bytes_received = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    # ------------------------------------------------------------ clocks
    def wall(self, monotonic: float) -> float:
        """A monotonic time as wall-clock seconds since the epoch."""
        return self.started + (monotonic - self._clock)

    # ------------------------------------------------------------ events
    def listen(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn`` with each event (on the thread that saw it; it must be quick)."""
        self.listeners.append(fn)

    def event(
        self,
        kind: str,
        worker: str | None = None,
        task: str | None = None,
        detail: str | None = None,
        **extra: Any,
    ) -> None:
        entry = {
            "seq": next(self._seq),
            "time": time.time(),
            "kind": kind,
            "worker": worker,
            "task": task,
            "detail": detail,
        }
        self.events.append(entry)
        for listener in self.listeners:
            try:
                listener(entry | extra | {"controller": self.controller})
            except Exception:  # an observer's bug must not stop dispatching
                log.debug("an event listener failed", exc_info=True)

    def launch(self, worker: str, about: dict[str, Any]) -> None:
        """A worker was launched (scaler thread); ``about``: pid, host or job."""
        self.launched += 1
        facts = self._facts(worker)
        facts["launched"] = time.time()
        for key in ("pid", "host", "job"):
            if about.get(key) is not None:
                facts[key] = about[key]
        where = f"job {facts['job']}" if "job" in facts else f"pid {facts.get('pid')}"
        self.event(
            "launch", worker, detail=where, **{k: facts.get(k) for k in ("pid", "host", "job")}
        )

    def launch_failed(self, worker: str, why: str) -> None:
        self.failed += 1
        self.event("exit", worker, detail=why)
        self._forget(worker)

    def connected(
        self, worker: str, pid: int | None, host: str | None, shape: object = None
    ) -> None:
        facts = self._facts(worker)
        if shape is not None:
            facts["shape"] = str(shape)
        facts["connected"] = time.time()
        facts["pid"] = pid if pid is not None else facts.get("pid")
        facts["host"] = host or facts.get("host")
        self.event("connect", worker, detail=f"pid {pid} on {host}")

    def disconnected(self, worker: str, why: str | None) -> None:
        self.exited += 1
        self.event("disconnect", worker, detail=why)
        self._forget(worker)

    def _facts(self, worker: str) -> dict[str, Any]:
        facts = self.workers.get(worker)
        if facts is None:
            facts = self.workers[worker] = {"done": 0}
        return facts

    def _forget(self, worker: str) -> None:
        """Keep a worker that left for a while (its tasks in the stream name it)."""
        self._gone.append(worker)
        while len(self._gone) > GONE_MAX:
            self.workers.pop(self._gone.popleft(), None)

    # ------------------------------------------------------------- tasks
    def submitted(self, task: Task) -> None:
        self.pushed += 1
        counts = self.functions.get(task.command or "?") or self._function(task.command)
        counts[0] += 1

    def _function(self, command: str | None) -> list[int]:
        name = command or "?"
        counts = self.functions.get(name)
        if counts is None:
            if len(self.functions) >= FUNCTIONS_MAX:
                name = OTHER
                counts = self.functions.get(name)
            if counts is None:
                counts = self.functions[name] = [0] * (1 + len(OUTCOMES))
        return counts

    def ended(self, task: Task, outcome: str, started: float | None, now: float) -> None:
        """A task ended here (lock held): ``started`` is when its run began, if it ran."""
        index = _INDEX[outcome]
        self.outcomes[index] += 1
        command = task.command or "?"
        counts = self.functions.get(command) or self._function(command)
        counts[1 + index] += 1
        worker = task.worker.id if task.worker is not None else None
        if worker is not None:
            facts = self.workers.get(worker)
            if facts is not None:
                facts["done"] += 1
        self.stream.append(
            (next(self._seq), task.name, command, worker, now if started is None else started, now,
             outcome)
        )  # fmt: skip
        if index and outcome != "cancel":
            self.errors.append((time.time(), task))

    def crashed(self, task: Task, worker: str, detail: str, retried: bool) -> None:
        """A task's worker died under it; ``retried``: it runs again (no record here)."""
        self.event("retry" if retried else "crash", worker, task.name, detail)
        if retried:
            self.outcomes[_INDEX["crash"]] += 1
            self._function(task.command)[1 + _INDEX["crash"]] += 1

    def requeued(self, task: Task) -> None:
        """A crashed task runs again here: one more push, as summary() counts it."""
        self.pushed += 1
        self._function(task.command)[0] += 1

    def sample(self, now: float, conns: Iterable[Conn], waiting: int = 0) -> None:
        """A point of the history, at most one a second (lock held); ``waiting``: tasks
        waiting for their inputs (pushed, neither queued nor running)."""
        if now - self.sampled >= 1.0:
            self.sampled = now
            running = sum(1 for c in conns if c.tasks and c.tasks[0].state == _RUNNING)
            done = sum(self.outcomes)
            queued = max(self.pushed - done - running - waiting, 0)
            self.history.append((self.wall(now), queued, running, done))

    # ---------------------------------------------------------- snapshot
    def snapshot(
        self,
        conns: Collection[Conn],
        since: int,
        limit: int | None,
        launching: Iterable[str] = (),
        *,
        live: int = 0,
        waiting: int = 0,
        held: int = 0,
        peak: int = 0,
        sent: int = 0,
        broken: str | None = None,
    ) -> dict[str, Any]:
        """The counters, rows and histories as plain data (lock held by the caller).

        ``launching``: ids of workers launched and not yet connected; the
        keywords are the dispatcher's own figures (a stopped controller's are
        the defaults). It only reads: the history's points are taken by
        ``sample``. ``errors`` holds ``(time, task)`` pairs, for the
        controller to turn into records.
        """
        now = time.monotonic()
        running_by_function: collections.Counter[str] = collections.Counter()
        rows = []
        busy = idle = 0
        for conn in conns:
            info = conn.info
            if info is None:
                continue
            head = conn.tasks[0] if conn.tasks else None
            if head is not None and head.state == _RUNNING:
                running_by_function[head.command or "?"] += 1
                busy += 1
                state = "leaving" if conn.leaving else "busy"
                rows.append(
                    self._row(info.id, state, info.pid, info.host, head, now - conn.started)
                )
            else:
                idle += not conn.leaving
                state = "leaving" if conn.leaving else "idle"
                rows.append(self._row(info.id, state, info.pid, info.host, None, None))
        connected = len(rows)
        for worker in launching:
            facts = self.workers.get(worker, {})
            rows.append(self._row(worker, "launching", facts.get("pid"), facts.get("host")))
        resolved_total = sum(self.outcomes)
        running_total = sum(running_by_function.values())
        functions = []
        for name, counts in self.functions.items():
            unresolved = counts[0] - sum(counts[1:])
            on_workers = min(running_by_function.get(name, 0), unresolved)
            row: dict[str, Any] = {
                "function": command_label(name),
                "queued": max(unresolved - on_workers, 0),
                "running": on_workers,
            }
            row.update(zip(OUTCOMES, counts[1:], strict=True))
            functions.append(row)
        stream = [
            {
                "seq": seq,
                "name": name,
                "function": command_label(function),
                "worker": worker,
                "start": round(self.wall(start), 6),
                "end": round(self.wall(end), 6),
                "status": outcome,
            }
            for seq, name, function, worker, start, end, outcome in _newer(self.stream, since)[
                -(limit or STREAM_MAX) :
            ]
        ]
        events = [dict(e) for e in _newer_events(self.events, since)[-(limit or EVENTS_MAX) :]]
        last = max(
            [since]
            + ([self.stream[-1][0]] if self.stream else [])
            + ([self.events[-1]["seq"]] if self.events else [])
        )
        history = list(self.history)
        return {
            "seq": last,
            "tasks": {
                "live": live,
                "pushed": self.pushed,
                "queued": max(self.pushed - resolved_total - running_total - waiting, 0),
                "waiting": waiting,
                "running": running_total,
                **dict(zip(OUTCOMES, self.outcomes, strict=True)),
            },
            "rate": _rate(history, now_wall=self.wall(now), done=resolved_total),
            "history": [list(point) for point in history],
            "functions": functions,
            "workers": {
                "connected": connected,
                "idle": idle,
                "busy": busy,
                "launching": len(rows) - connected,
                "launched": self.launched,
                "exited": self.exited,
                "failed": self.failed,
            },
            "worker_rows": rows,
            "memory": {"held": held, "peak": peak},
            "bytes": {"sent": sent, "received": self.bytes_received},
            "broken": broken,
            "stream": stream,
            "events": events,
            "errors": list(self.errors),
        }

    def _row(
        self,
        worker: str,
        state: str,
        pid: int | None,
        host: str | None,
        task: Task | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """One worker's row (``task``: the one it runs now, for ``seconds``)."""
        facts = self.workers.get(worker, {})
        return {
            "id": worker,
            "controller": self.controller,
            "state": state,
            "pid": pid,
            "host": host,
            "job": facts.get("job"),
            "shape": facts.get("shape"),
            "task": task.name if task is not None else None,
            "function": command_label(task.command) if task is not None else None,
            "seconds": round(seconds, 3) if seconds is not None else None,
            "done": facts.get("done", 0),
            "launched": facts.get("launched"),
            "connected": facts.get("connected"),
            "cpu": None,
            "rss": None,
            "samples": [],
        }


def _newer(
    entries: collections.deque[tuple[int, str, str, str | None, float, float, str]], since: int
) -> list[tuple[int, str, str, str | None, float, float, str]]:
    """Entries with a sequence number above ``since``, oldest first, without a full scan."""
    if not entries or entries[-1][0] <= since:
        return []
    if entries[0][0] > since:
        return list(entries)
    out = []
    for entry in reversed(entries):
        if entry[0] <= since:
            break
        out.append(entry)
    out.reverse()
    return out


def _newer_events(entries: collections.deque[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    out = []
    for entry in reversed(entries):
        if entry["seq"] <= since:
            break
        out.append(entry)
    out.reverse()
    return out


def _rate(history: list[tuple[float, int, int, int]], now_wall: float, done: int) -> float:
    """Tasks ended per second over the last ``RATE_SECONDS`` (from the history's points)."""
    older = [p for p in history if now_wall - p[0] <= RATE_SECONDS + 1.0]
    if not older:
        return 0.0
    first = older[0]
    span = now_wall - first[0]
    if span < 0.5:
        return 0.0
    return round((done - first[3]) / span, 3)
