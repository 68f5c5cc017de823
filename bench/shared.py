"""Shared data sent once: 8 tasks on 2 workers that all use one 200 MB array.

Runs the same tasks twice in one process, the array in each task's ``data=``
and then through ``ctl.share()``, and prints for each the time from the first
push to the last result and the bytes the workers read (their ``rchar`` in
/proc, sockets included), after both workers are up and warm.

    python bench/shared.py [--megabytes 200] [--tasks 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pycrew  # noqa: E402
from tasks import arr_sum, worker_pid  # noqa: E402


def bytes_read() -> tuple[int, int]:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("rchar:"):
                return os.getpid(), int(line.split()[1])
    raise RuntimeError("no rchar")


def reads(ctl: pycrew.Controller) -> dict[int, int]:
    seen: dict[int, int] = {}
    while len(seen) < 2:
        seen.update(f.result(timeout=60) for f in [ctl.push(bytes_read) for _ in range(4)])
    return seen


def run(ctl: pycrew.Controller, array: np.ndarray, n: int, shared: bool) -> tuple[float, int]:
    before = reads(ctl)
    start = time.perf_counter()
    if shared:
        handle = ctl.share(array)
        futures = [ctl.push(arr_sum, handle) for _ in range(n)]
    else:
        futures = [ctl.push(arr_sum, data={"a": array}) for _ in range(n)]
    for future in futures:
        future.result(timeout=600)
    seconds = time.perf_counter() - start
    after = reads(ctl)
    if shared:
        handle.drop()
    return seconds, sum(after[p] - before.get(p, 0) for p in after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    array = np.ones(args.megabytes * (1 << 20) // 8)
    with pycrew.local_controller(workers=2, relay_output=False) as ctl:
        ctl.launch(2)
        while len({ctl.push(worker_pid).result(timeout=60) for _ in range(8)}) < 2:
            pass
        for label, shared in (("data= per task", False), ("share() once", True)):
            seconds, moved = run(ctl, array, args.tasks, shared)
            print(
                f"{label:16} {args.tasks} tasks, 2 workers, {args.megabytes} MB array: "
                f"{seconds:.2f} s, workers read {moved / 1e6:,.0f} MB"
            )


if __name__ == "__main__":
    main()
