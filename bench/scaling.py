#!/usr/bin/env python3
"""How pycrew scales: up to a million tasks, and up to hundreds of workers on few cores.

Two curves, each point in a fresh interpreter, pycrew beside ProcessPoolExecutor
in the same run:

  tasks    walk + wait + collect of N trivial tasks (``tasks.identity``) on 2 local
           workers, N from 10,000 to 1,000,000: seconds of each step and the
           controller process's peak resident memory (the workers are other processes).
           ProcessPoolExecutor does the same with submit() per task and result().
  workers  W local workers started and warm, then 20,000 trivial tasks pushed and
           gathered: tasks/s as W grows from 2 to 200 on the same cores, which is
           the dispatcher's rate once every worker is idle most of the time.
  transient  a fresh worker process per task (tasks_max=1) on 2 workers: N trivial
           tasks pushed and gathered, tasks/s; pycrew with its template (workers
           forked) and without (fresh interpreters), ProcessPoolExecutor with
           max_tasks_per_child=1 (which makes it spawn fresh interpreters).

Usage (from the repository root):

  python bench/scaling.py tasks [--counts 10000,100000,1000000] [--systems pycrew,ppe]
  python bench/scaling.py workers [--counts 2,10,50,100,200] [--tasks 20000]
  python bench/scaling.py transient [--counts 200] [--systems pycrew,pycrew-fresh,ppe]
  python bench/scaling.py --plot     # bench/tasks.png and bench/workers.png from the JSON

Results go to bench/scaling.json (each run replaces its own curve) and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "scaling.json"
MB = 1 << 20
TIMEOUT_S = 900.0


def peak_mb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def tasks_point(system: str, n: int) -> dict[str, Any]:
    import tasks

    out: dict[str, Any] = {"system": system, "n": n}
    if system == "pycrew":
        import pycrew

        with pycrew.local_controller(workers=2) as ctl:
            ctl.launch(2)
            ctl.push(tasks.identity, 0).result(timeout=60)
            base = peak_mb()
            t0 = time.perf_counter()
            futures = ctl.walk(tasks.identity, range(n))
            t1 = time.perf_counter()
            if not ctl.wait(mode="all", seconds_timeout=TIMEOUT_S):
                raise TimeoutError("wait() timed out")
            t2 = time.perf_counter()
            records = ctl.collect()
            t3 = time.perf_counter()
            if len(records) != n or any(r.status != "success" for r in records):
                raise AssertionError("not every task succeeded")
            del futures
    else:
        from concurrent.futures import ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=2) as pool:
            pool.submit(tasks.identity, 0).result(timeout=60)
            base = peak_mb()
            t0 = time.perf_counter()
            futures = [pool.submit(tasks.identity, i) for i in range(n)]
            t1 = time.perf_counter()
            wait(futures, timeout=TIMEOUT_S)
            t2 = time.perf_counter()
            values = [f.result() for f in futures]
            t3 = time.perf_counter()
            if values != list(range(n)):
                raise AssertionError("results differ from inputs")
    out.update(
        submit_s=t1 - t0,
        wait_s=t2 - t1,
        collect_s=t3 - t2,
        total_s=t3 - t0,
        peak_mb=peak_mb(),
        base_mb=base,
    )
    return out


def timed(submit: Callable[..., Any], n_tasks: int, out: dict[str, Any]) -> None:
    """Push ``n_tasks`` trivial tasks one by one, gather them, note the rate in ``out``."""
    import tasks

    t0 = time.perf_counter()
    futures = [submit(tasks.identity, i) for i in range(n_tasks)]
    values = [f.result(timeout=TIMEOUT_S) for f in futures]
    out["seconds"] = time.perf_counter() - t0
    if values != list(range(n_tasks)):
        raise AssertionError("results differ from inputs")
    out["tasks_per_s"] = n_tasks / out["seconds"]


def workers_point(system: str, n_workers: int, n_tasks: int) -> dict[str, Any]:
    import tasks

    out: dict[str, Any] = {"system": system, "workers": n_workers, "tasks": n_tasks}
    t_start = time.perf_counter()
    if system == "pycrew":
        import pycrew

        with pycrew.local_controller(workers=n_workers, seconds_idle=600) as ctl:
            ctl.launch(n_workers)
            deadline = time.monotonic() + TIMEOUT_S
            while len(ctl.pids()) < n_workers and time.monotonic() < deadline:
                time.sleep(0.1)
            out["start_s"] = time.perf_counter() - t_start
            ctl.map(tasks.identity, range(2 * n_workers))  # every worker warm
            timed(ctl.push, n_tasks, out)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            list(pool.map(tasks.identity, range(2 * n_workers)))
            out["start_s"] = time.perf_counter() - t_start
            timed(pool.submit, n_tasks, out)
    return out


def transient_point(system: str, n_tasks: int) -> dict[str, Any]:
    import tasks

    out: dict[str, Any] = {"system": system, "tasks": n_tasks}
    if system in ("pycrew", "pycrew-fresh"):
        import pycrew

        with pycrew.local_controller(workers=2, tasks_max=1, template=system == "pycrew") as ctl:
            ctl.map(tasks.identity, range(4))  # the template (if any) is ready after these
            timed(ctl.push, n_tasks, out)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=2, max_tasks_per_child=1) as pool:
            list(pool.map(tasks.identity, range(4)))
            timed(pool.submit, n_tasks, out)
    return out


def child(argv: list[str]) -> None:
    sys.path.insert(0, str(BENCH_DIR))
    kind, system, *numbers = argv
    if kind == "tasks":
        point = tasks_point(system, int(numbers[0]))
    elif kind == "transient":
        point = transient_point(system, int(numbers[0]))
    else:
        point = workers_point(system, int(numbers[0]), int(numbers[1]))
    print("@@point " + json.dumps(point), flush=True)


def run_point(args: list[str]) -> dict[str, Any]:
    return child_point(__file__, args)


def child_point(script: str, args: list[str]) -> dict[str, Any]:
    """``script --child *args`` in a fresh interpreter: the point it prints, or its error."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, script, "--child", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S + 120,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@point "):
            point: dict[str, Any] = json.loads(line[len("@@point ") :])
            return point
    return {"error": (proc.stderr or proc.stdout)[-1500:], "args": args}


def load() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {}


def report_tasks(points: list[dict[str, Any]]) -> str:
    rows = [
        "| system | tasks | submit s | wait s | collect s | total s | tasks/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        if "error" in p:
            rows.append(f"| {' '.join(p['args'])} | error: {p['error'].splitlines()[-1]} |||||||")
            continue
        rows.append(
            f"| {p['system']} | {p['n']:,} | {p['submit_s']:.2f} | {p['wait_s']:.2f} | "
            f"{p['collect_s']:.2f} | {p['total_s']:.2f} | {p['n'] / p['total_s']:,.0f} | "
            f"{p['peak_mb']:,.0f} |"
        )
    return "\n".join(rows)


def report_workers(points: list[dict[str, Any]]) -> str:
    rows = [
        "| system | workers | start s | tasks/s | vs the fewest workers |",
        "|---|---:|---:|---:|---:|",
    ]
    first: dict[str, float] = {}
    for p in points:
        if "error" in p:
            rows.append(f"| {' '.join(p['args'])} | error: {p['error'].splitlines()[-1]} ||||")
            continue
        base = first.setdefault(p["system"], p["tasks_per_s"])
        rows.append(
            f"| {p['system']} | {p['workers']} | {p['start_s']:.1f} | {p['tasks_per_s']:,.0f} | "
            f"{p['tasks_per_s'] / base:.2f} |"
        )
    return "\n".join(rows)


def report_transient(points: list[dict[str, Any]]) -> str:
    rows = ["| system | tasks (a process each) | tasks/s |", "|---|---:|---:|"]
    for p in points:
        if "error" in p:
            rows.append(f"| {' '.join(p['args'])} | error: {p['error'].splitlines()[-1]} ||")
            continue
        rows.append(f"| {p['system']} | {p['tasks']:,} | {p['tasks_per_s']:,.1f} |")
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curve", nargs="?", choices=("tasks", "workers", "transient"))
    parser.add_argument("--counts", help="comma-separated task or worker counts")
    parser.add_argument(
        "--systems", help="default: pycrew,ppe (transient: pycrew,pycrew-fresh,ppe)"
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per workers point")
    parser.add_argument("--plot", action="store_true", help="draw PNGs from bench/scaling.json")
    args = parser.parse_args()
    if args.plot:
        import plots

        for path in plots.scaling(load(), BENCH_DIR):
            print(f"wrote {path}")
        return 0
    if args.curve is None:
        parser.error("name a curve: tasks or workers (or --plot)")
    default = {
        "tasks": "10000,30000,100000,300000,1000000",
        "workers": "2,10,50,100,200",
        "transient": "200",
    }[args.curve]
    systems = args.systems or (
        "pycrew,pycrew-fresh,ppe" if args.curve == "transient" else "pycrew,ppe"
    )
    counts = [int(c) for c in (args.counts or default).split(",")]
    from bench import compile_pycrew

    compile_pycrew()
    points = []
    for system in systems.split(","):
        for count in counts:
            extra = [str(args.tasks)] if args.curve == "workers" else []
            print(f"{args.curve}: {system} {count}", file=sys.stderr, flush=True)
            points.append(run_point([args.curve, system, str(count), *extra]))
    data = load()
    data[args.curve] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "points": points}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    report = {"tasks": report_tasks, "workers": report_workers, "transient": report_transient}
    print(report[args.curve](points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
