#!/usr/bin/env python3
"""What each task costs the controller in memory: walk + wait + collect of N tasks.

The user holds the futures of ``walk()`` and the records of ``collect()``, as
``scaling.py tasks`` does, on 2 local workers. Two runs, each in a fresh
interpreter:

  rss    no tracing: the controller process's peak resident memory, its
         resident memory after each step, and the seconds of each step
  trace  tracemalloc on: bytes per task still held after collect(), grouped by
         the line that allocated them (what kind of object each line makes is
         shown by its source), and the traced peak per task

Usage (from the repository root):

  python bench/memory_per_task.py [--n 100000] [--top 15] [--only rss|trace] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
MB = 1 << 20
TIMEOUT_S = 1800.0
PAGE = os.sysconf("SC_PAGE_SIZE")


def peak_mb() -> float:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def rss_mb() -> float:
    """The process's resident memory now."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE / MB


def run(n: int, trace: bool, top: int) -> dict[str, Any]:
    import pycrew
    import tasks

    out: dict[str, Any] = {"n": n, "mode": "trace" if trace else "rss"}
    with pycrew.local_controller(workers=2) as ctl:
        ctl.launch(2)
        ctl.push(tasks.identity, 0).result(timeout=60)
        gc.collect()
        out["base_mb"] = rss_mb()
        if trace:
            tracemalloc.start(1)
        t0 = time.perf_counter()
        futures = ctl.walk(tasks.identity, range(n))
        t1 = time.perf_counter()
        out["walk_mb"] = rss_mb()
        if trace:
            out["walk_traced_per_task"] = tracemalloc.get_traced_memory()[0] / n
        if not ctl.wait(mode="all", seconds_timeout=TIMEOUT_S):
            raise TimeoutError("wait() timed out")
        t2 = time.perf_counter()
        out["wait_mb"] = rss_mb()
        if trace:
            out["wait_traced_per_task"] = tracemalloc.get_traced_memory()[0] / n
        records = ctl.collect()
        t3 = time.perf_counter()
        out["collect_mb"] = rss_mb()
        if len(records) != n or any(r.status != "success" for r in records):
            raise AssertionError("not every task succeeded")
        out.update(walk_s=t1 - t0, wait_s=t2 - t1, collect_s=t3 - t2, total_s=t3 - t0)
        out["peak_mb"] = peak_mb()
        if trace:
            snapshot = tracemalloc.take_snapshot()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out["traced_per_task"] = current / n
            out["traced_peak_per_task"] = peak / n
            out["lines"] = by_line(snapshot, n, top)
        # still held here, so that nothing above was measured after it went
        out["held"] = len(futures) + len(records)
        del futures, records
    return out


def by_line(snapshot: tracemalloc.Snapshot, n: int, top: int) -> list[dict[str, Any]]:
    """The lines that allocated most of what is held, per task, with their source."""
    rows = []
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        where = frame.filename
        for prefix in (str(ROOT / "src") + os.sep, os.path.dirname(os.__file__) + os.sep):
            if where.startswith(prefix):
                where = where[len(prefix) :]
        source = linecache.getline(frame.filename, frame.lineno).strip()
        rows.append(
            {
                "where": f"{where}:{frame.lineno}",
                "bytes_per_task": stat.size / n,
                "objects_per_task": stat.count / n,
                "source": source[:70],
            }
        )
    return rows


def child(argv: list[str]) -> None:
    sys.path.insert(0, str(BENCH_DIR))
    mode, n, top = argv
    point = run(int(n), mode == "trace", int(top))
    print("@@point " + json.dumps(point), flush=True)


def run_child(mode: str, n: int, top: int) -> dict[str, Any]:
    from scaling import child_point

    point = child_point(__file__, [mode, str(n), str(top)])
    if "error" in point:
        raise RuntimeError(f"{mode} run failed:\n{point['error']}")
    return point


def report(points: list[dict[str, Any]]) -> str:
    lines = []
    for p in points:
        n = p["n"]
        lines.append(
            f"## {p['mode']}: {n:,} tasks\n\n"
            f"peak RSS {p['peak_mb']:.0f} MB (before the tasks {p['base_mb']:.0f} MB); "
            f"RSS after walk {p['walk_mb']:.0f}, wait {p['wait_mb']:.0f}, "
            f"collect {p['collect_mb']:.0f} MB; "
            f"({p['peak_mb'] - p['base_mb']:.0f} MB over the base: "
            f"{(p['peak_mb'] - p['base_mb']) * MB / n:.0f} B per task)\n"
            f"seconds: walk {p['walk_s']:.2f}, wait {p['wait_s']:.2f}, "
            f"collect {p['collect_s']:.2f}, total {p['total_s']:.2f}\n"
        )
        if "lines" in p:
            lines.append(
                f"traced per task after walk {p['walk_traced_per_task']:.0f} B, after wait "
                f"{p['wait_traced_per_task']:.0f} B, after collect {p['traced_per_task']:.0f} B "
                f"(traced peak {p['traced_peak_per_task']:.0f} B per task)\n\n"
                "| where | B/task | objects/task | source |\n|---|---:|---:|---|"
            )
            for row in p["lines"]:
                source = row["source"].replace("|", "\\|")
                lines.append(
                    f"| {row['where']} | {row['bytes_per_task']:.1f} | "
                    f"{row['objects_per_task']:.2f} | `{source}` |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="tasks (default 100,000)")
    parser.add_argument("--top", type=int, default=15, help="allocating lines shown")
    parser.add_argument("--only", choices=("rss", "trace"), help="one of the two runs")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    modes = [args.only] if args.only else ["rss", "trace"]
    points = [run_child(mode, args.n, args.top) for mode in modes]
    print(report(points))
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
