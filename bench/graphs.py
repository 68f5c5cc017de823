#!/usr/bin/env python3
"""What task graphs cost: controller memory for a large graph, and bytes on the wire
for a chain of large values.

  memory   N tasks in a fresh interpreter each, 2 local workers:
           independent  walk(identity, range(N)), wait, collect
           graph        walk(identity, range(N // 2)), then a tree reduction of
                        the futures with add(x, y) (N // 2 - 1 more tasks), wait,
                        collect: as many tasks, each of the second half taking two
                        futures
           The controller process's peak resident memory above its level once
           the workers are warm (the workers are other processes).
  chain    10 tasks, each taking the previous one's future: the first makes a
           numpy array of --mb megabytes, each next one adds 1 to it; only the
           last result is asked for. Bytes the controller sent to workers and
           received from them, in copies of the array, with 1 and 2 workers.

Usage (from the repository root):

  python bench/graphs.py memory [--n 100000]
  python bench/graphs.py chain [--mb 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
MB = 1 << 20
TIMEOUT_S = 900.0


def peak_mb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def memory_point(kind: str, n: int) -> dict[str, Any]:
    import pycrew
    import tasks

    with pycrew.local_controller(workers=2) as ctl:
        ctl.launch(2)
        ctl.push(tasks.identity, 0).result(timeout=60)
        base = peak_mb()
        t0 = time.perf_counter()
        if kind == "independent":
            futures = ctl.walk(tasks.identity, range(n))
            expected = n
        else:
            level = ctl.walk(tasks.identity, range(n // 2))
            futures = list(level)
            while len(level) > 1:
                pairs = list(zip(level[::2], level[1::2], strict=False))
                nxt = [ctl.push(tasks.add, x, y) for x, y in pairs]
                if len(level) % 2:
                    nxt.append(level[-1])
                futures += nxt[: len(pairs)]
                level = nxt
            expected = len(futures)
        if not ctl.wait(mode="all", seconds_timeout=TIMEOUT_S):
            raise TimeoutError("wait() timed out")
        records = ctl.collect()
        seconds = time.perf_counter() - t0
        if len(records) != expected or any(r.status != "success" for r in records):
            raise AssertionError("not every task succeeded")
        if kind == "graph" and futures[-1].result() != sum(range(n // 2)):
            raise AssertionError("the reduction is wrong")
        del futures
    return {"kind": kind, "n": expected, "seconds": seconds, "peak_mb": peak_mb() - base}


def chain_point(workers: int, mb: int) -> dict[str, Any]:
    import pycrew
    import tasks

    with pycrew.local_controller(workers=workers) as ctl:
        ctl.launch(workers)
        ctl.push(tasks.identity, 0).result(timeout=60)
        before = ctl.status()["bytes"]
        t0 = time.perf_counter()
        value = ctl.push(tasks.array_mb, mb)
        for _ in range(9):
            value = ctl.push(tasks.bump, value)
        last = value.result(timeout=TIMEOUT_S)
        seconds = time.perf_counter() - t0
        after = ctl.status()["bytes"]
        if float(last[0]) != 10.0:
            raise AssertionError("the chain is wrong")
    size = mb * MB
    return {
        "workers": workers,
        "mb": mb,
        "seconds": seconds,
        "sent_copies": (after["sent"] - before["sent"]) / size,
        "received_copies": (after["received"] - before["received"]) / size,
    }


def child(args: list[str]) -> None:
    sys.path.insert(0, str(BENCH_DIR))
    what = args[0]
    if what == "memory":
        out = memory_point(args[1], int(args[2]))
    else:
        out = chain_point(int(args[1]), int(args[2]))
    print(json.dumps(out))


def run_child(*args: object) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={"PYTHONPATH": str(BENCH_DIR), **__import__("os").environ},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("memory", "chain"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    if args.what == "memory":
        rows = [run_child("memory", kind, args.n) for kind in ("independent", "graph")]
        base = rows[0]["peak_mb"]
        print("| tasks | kind | seconds | controller peak MB | vs independent |")
        print("|---:|---|---:|---:|---:|")
        for row in rows:
            ratio = row["peak_mb"] / base if base else float("nan")
            print(
                f"| {row['n']:,} | {row['kind']} | {row['seconds']:.1f} | "
                f"{row['peak_mb']:.0f} | {ratio:.2f} |"
            )
    else:
        rows = [run_child("chain", workers, args.mb) for workers in (1, 2)]
        print("| workers | seconds | copies sent to workers | copies received from workers |")
        print("|---:|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['workers']} | {row['seconds']:.2f} | {row['sent_copies']:.2f} | "
                f"{row['received_copies']:.2f} |"
            )


if __name__ == "__main__":
    main()
