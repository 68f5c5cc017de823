"""Shared data sent once: 8 tasks on 2 workers that all use one 200 MB array.

Runs the same tasks twice in one process, the array in each task's ``data=``
and then through ``ctl.share()``, and prints for each the time from the first
push to the last result and the bytes sent to the workers (the controller's
``workers_status()["bytes_sent"]``), after both workers are up and warm.

    python bench/shared.py [--megabytes 200] [--tasks 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pycrew
from tasks import arr_sum, worker_pid


def run(ctl: pycrew.Controller, array: np.ndarray, n: int, shared: bool) -> tuple[float, int]:
    before = ctl.workers_status()["bytes_sent"]
    start = time.perf_counter()
    if shared:
        handle = ctl.share(array)
        futures = [ctl.push(arr_sum, handle) for _ in range(n)]
    else:
        futures = [ctl.push(arr_sum, data={"a": array}) for _ in range(n)]
    for future in futures:
        future.result(timeout=600)
    seconds = time.perf_counter() - start
    if shared:
        handle.drop()
    return seconds, ctl.workers_status()["bytes_sent"] - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    array = np.ones(args.megabytes * (1 << 20) // 8)
    with pycrew.local_controller(workers=2, relay_output=False) as ctl:
        ctl.launch(2)
        while (
            len({f.result(timeout=60) for f in [ctl.push(worker_pid, 0.1) for _ in range(4)]}) < 2
        ):
            pass
        for label, shared in (("data= per task", False), ("share() once", True)):
            seconds, moved = run(ctl, array, args.tasks, shared)
            print(
                f"{label:16} {args.tasks} tasks, 2 workers, {args.megabytes} MB array: "
                f"{seconds:.2f} s, {moved / 1e6:,.0f} MB sent to the workers"
            )


if __name__ == "__main__":
    main()
