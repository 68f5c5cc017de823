"""Prometheus metrics over one status snapshot.

```
 scrape ─► render(snapshot) ─► own CollectorRegistry ─► StatusCollector.collect()
                                                           └─ metric families from the dict
```

A collector built on a snapshot, not counters kept alongside the controller:
the controller already counts everything (observability reads, never steers),
so a scrape only translates one ``status()`` dict. Each scrape uses a registry
of its own, so that nothing lands in (or collides with) the process's global
``prometheus_client.REGISTRY``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE", "StatusCollector", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: outcome counters, in the order summary() lists them
OUTCOMES = ("success", "error", "crash", "cancel", "timeout")
TASK_STATES = ("queued", "waiting", "running", "resolved")
#: worker states that are a count now (launched, exited and failed only grow)
WORKER_STATES = ("connected", "idle", "busy", "launching")


class StatusCollector(Collector):
    """Metric families read from ``snapshot()``, one call per collection.

    ``snapshot`` returns a dict shaped as ``Controller.status()``; register the
    collector in any ``CollectorRegistry`` to expose a controller next to other
    metrics of a program.
    """

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Nothing to describe up front: asking for the names would call status()
        # at registration, and a registry of our own has nothing to collide with.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        return iter(families(self._snapshot()))


def render(status: Mapping[str, Any]) -> bytes:
    """The text exposition format of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status))
    return generate_latest(registry)


def families(status: Mapping[str, Any]) -> list[Metric]:
    """Every metric family of one snapshot, each labelled with the controller's name."""
    name = str(status.get("controller", ""))
    tasks: Mapping[str, Any] = status.get("tasks") or {}
    workers: Mapping[str, Any] = status.get("workers") or {}
    memory: Mapping[str, Any] = status.get("memory") or {}
    sent_received: Mapping[str, Any] = status.get("bytes") or {}
    out: list[Metric] = []

    def counter(metric: str, doc: str, value: Any) -> None:
        family = CounterMetricFamily(metric, doc, labels=["controller"])
        family.add_metric([name], _number(value))
        out.append(family)

    def gauge(metric: str, doc: str, value: Any) -> None:
        if value is None:  # e.g. no memory cap: no sample rather than a made-up one
            return
        family = GaugeMetricFamily(metric, doc, labels=["controller"])
        family.add_metric([name], _number(value))
        out.append(family)

    outcomes = CounterMetricFamily(
        "pycrew_tasks",
        "Tasks that ended, by status (crash counts every crashed attempt).",
        labels=["controller", "status"],
    )
    for status_name in OUTCOMES:
        outcomes.add_metric([name, status_name], _number(tasks.get(status_name)))
    out.append(outcomes)
    counter("pycrew_tasks_pushed", "Tasks pushed.", tasks.get("pushed"))
    counter("pycrew_worker_launches", "Workers launched.", workers.get("launched"))
    counter(
        "pycrew_worker_crashes",
        "Tasks lost with the worker that ran them.",
        tasks.get("crash"),
    )
    counter("pycrew_bytes_sent", "Bytes sent to workers.", sent_received.get("sent"))
    counter("pycrew_bytes_received", "Bytes received from workers.", sent_received.get("received"))

    # not "pycrew_tasks": that is the counter's family name without its _total
    states = GaugeMetricFamily(
        "pycrew_tasks_current",
        "Tasks not yet handed over, by state (resolved: done, not yet collected).",
        labels=["controller", "state"],
    )
    for state in TASK_STATES:
        states.add_metric([name, state], _number(tasks.get(state)))
    out.append(states)
    pool = GaugeMetricFamily("pycrew_workers", "Workers, by state.", labels=["controller", "state"])
    for state in WORKER_STATES:
        pool.add_metric([name, state], _number(workers.get(state)))
    out.append(pool)
    gauge("pycrew_workers_max", "The most workers the controller may run.", workers.get("max"))
    gauge("pycrew_memory_held_bytes", "Bytes of results held (memory=).", memory.get("held"))
    gauge("pycrew_memory_cap_bytes", "The memory= cap, in bytes.", memory.get("cap"))
    gauge("pycrew_task_rate", "Tasks resolved per second, last 10 s.", status.get("rate"))
    gauge("pycrew_uptime_seconds", "Seconds since the controller started.", status.get("uptime"))
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
