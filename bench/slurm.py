#!/usr/bin/env python3
"""pycrew on SLURM: time from push to first result on a fresh job, and what 1,000 tasks cost.

Needs a SLURM cluster (``scripts/slurm-cluster up`` makes a one-node one as
root). Prints one JSON object:

  first_result_s   push of one task to its result, the worker a job submitted for it
  tasks            1,000 tasks (identity of an int) over ``--workers`` array workers
  tasks_per_s      their throughput, push to last result, jobs starting included
  sbatch, squeue, scancel, scontrol   how many times each command ran for all of it
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pycrew


def identity(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="first-result measurements")
    parser.add_argument("--tls", default="automatic", choices=["none", "automatic"])
    args = parser.parse_args()

    firsts = []
    for _ in range(args.repeat):
        with pycrew.slurm_controller(workers=1, tls=args.tls, seconds_interval=0.1) as ctl:
            ctl.start()
            started = time.perf_counter()
            ctl.push(identity, 1).result(timeout=120)
            firsts.append(time.perf_counter() - started)

    with pycrew.slurm_controller(workers=args.workers, tls=args.tls, seconds_interval=0.1) as ctl:
        ctl.start()
        started = time.perf_counter()
        records = ctl.map(identity, iterate={"x": list(range(args.tasks))})
        seconds = time.perf_counter() - started
        assert [r.result for r in records] == list(range(args.tasks))
        workers = len({r.pid for r in records})
    calls = ctl.launcher.calls  # type: ignore[attr-defined]
    print(
        json.dumps(
            {
                "first_result_s": {
                    "median": round(statistics.median(firsts), 3),
                    "all": [round(f, 3) for f in firsts],
                },
                "tasks": args.tasks,
                "workers_used": workers,
                "seconds": round(seconds, 3),
                "tasks_per_s": round(args.tasks / seconds),
                "tls": args.tls,
                **{name: calls[name] for name in ("sbatch", "squeue", "scancel", "scontrol")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
