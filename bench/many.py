"""The many-task figures: a map of many trivial tasks, a million of them in a
fresh interpreter, one task each (time and the controller's peak memory), and the
controller's CPU time per task."""

from __future__ import annotations

import contextlib
import resource
import time
from typing import TYPE_CHECKING, Any

import tasks

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapters import Adapter

MIB = 1 << 20


def now() -> float:
    return time.perf_counter()


def with_cpu() -> float:
    """CPU seconds (user + system) of this process so far, all of its threads.

    The same sum as psutil's ``Process().cpu_times()``, read from getrusage:
    psutil reads /proc, which counts in clock ticks (10 ms), too coarse for a
    quick run's thousand tasks. The driver holds the controller or scheduler
    where a system keeps it in the caller's process (pycrew, Dask, HyperQueue);
    Ray's GCS and raylet and Parsl's interchange are other processes, and not
    counted here.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB


def measure_map(ad: Adapter, cfg: Any) -> dict[str, Any]:
    """``cfg.map_n`` trivial tasks through the system's map, timed once.

    An untimed small map first warms the path and gives a rate; a system too
    slow to map ``map_n`` in about half of ``map_tmax_s`` maps fewer, and the
    count is reported beside the rate.
    """
    probe = max(10, cfg.map_n // 100)
    t0 = now()
    ad.map(tasks.identity, range(probe), cfg.map_tmax_s)
    probe_rate = probe / max(now() - t0, 1e-9)
    n = min(cfg.map_n, max(probe, int(probe_rate * cfg.map_tmax_s / 2)))
    cpu0 = with_cpu()
    t0 = now()
    values = ad.map(tasks.identity, range(n), 2 * cfg.map_tmax_s)
    dt = now() - t0
    cpu_s = with_cpu() - cpu0
    if ad.returns_values and values != list(range(n)):
        raise AssertionError("map: results differ from inputs")
    return {
        "n": n,
        "asked": cfg.map_n,
        "seconds": dt,
        "tasks_per_s": n / dt,
        "probe_tasks_per_s": probe_rate,
        "cpu_us_per_task": cpu_s / n * 1e6,
    }


def million_plan(cls: type[Adapter], warm: dict[str, Any], cfg: Any) -> str | None:
    """Why the many-task run is not started for this system, or None to start it.

    It is left out where the warm run's rate of tasks pushed one by one says it
    would take longer than ``million_tmax_s``: a dash and the projection, not a
    child killed at its limit.
    """
    if "million" in cls.cannot:
        return cls.cannot["million"]
    rate = (warm.get("throughput") or {}).get("tasks_per_s")
    if not rate:
        return "no rate of tasks from the warm run"
    projected = cfg.million_n / rate
    if projected > cfg.million_tmax_s:
        return (
            f"about {projected:,.0f} s at its rate of {rate:,.0f} tasks/s "
            f"(limit {cfg.million_tmax_s:,.0f} s)"
        )
    return None


def child_million(
    ad: Adapter, cfg: Any, record: Callable[[], None], warm_up: Callable[..., Any]
) -> dict[str, Any]:
    """In a fresh interpreter: ``cfg.million_n`` tasks, one per item (``Adapter.many``);
    the time, and this process's peak resident memory before and after."""
    out: dict[str, Any] = {"system": ad.key, "mode": "million", "errors": {}}
    try:
        ad.start()
        record()
        warm_up(ad, cfg)
        ad.map(tasks.identity, range(100), cfg.task_timeout_s)
        record()
        out["base_mb"] = peak_mb()
        cpu0 = with_cpu()
        t0 = now()
        values = ad.many(tasks.identity, range(cfg.million_n), 2 * cfg.million_tmax_s)
        dt = now() - t0
        cpu_s = with_cpu() - cpu0
        out["peak_mb"] = peak_mb()  # before the check below makes lists of its own
        if ad.returns_values and sorted(values) != list(range(cfg.million_n)):
            raise AssertionError("million: results differ from inputs")
        del values
        out.update(
            n=cfg.million_n,
            seconds=dt,
            tasks_per_s=cfg.million_n / dt,
            cpu_us_per_task=cpu_s / cfg.million_n * 1e6,
        )
    except Exception as exc:
        import traceback

        out["errors"]["million"] = (
            f"{type(exc).__name__}: {exc}"[:400] + "\n" + (traceback.format_exc()[-1500:])
        )
    finally:
        record()
        with contextlib.suppress(Exception):
            ad.shutdown()
    return out
