#!/usr/bin/env python3
"""pycrew on each cluster engine: time from push to first result on a fresh job,
and which scheduler commands 1,000 tasks cost.

Needs the test clusters (as root: ``scripts/slurm-cluster up``,
``scripts/sge-cluster up``, ``scripts/pbs-commands``); LSF runs on the
tests' stand-in commands (no LSF runs here), so its times say nothing of a
real LSF. Prints one JSON object per engine:

  first_result_s   push of one task to its result, on a worker a job was submitted for
  tasks            1,000 tasks (identity of an int) over ``--workers`` array workers
  seconds          push of the first to the last result, jobs starting included
  calls            how many times each scheduler command ran for those 1,000 tasks,
                   the controller's start to its terminate() (submit, status, exit
                   codes, cancel)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrew

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("slurm", "sge", "pbs", "lsf")


def identity(x: int) -> int:
    return x


def factory(engine: str, state: str) -> Any:
    if engine == "slurm":
        return pycrew.slurm_controller
    if engine == "sge":
        return pycrew.sge_controller
    if engine == "pbs":
        commands = os.environ.get("PYCREW_PBS_COMMANDS", "/opt/pycrew-torque/usr/bin")
        return lambda **kw: pycrew.pbs_controller(commands=commands, **kw)
    os.environ["LSF_STANDIN_STATE"] = state
    standin = str(ROOT / "tests" / "lsf_standin")
    return lambda **kw: pycrew.lsf_controller(commands=standin, **kw)


def measure(engine: str, workers: int, tasks: int, repeat: int, tls: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        make = factory(engine, state)
        firsts = []
        for _ in range(repeat):
            with make(workers=1, tls=tls, seconds_interval=0.1, host="127.0.0.1") as ctl:
                ctl.start()
                started = time.perf_counter()
                ctl.push(identity, 1).result(timeout=120)
                firsts.append(time.perf_counter() - started)
        with make(workers=workers, tls=tls, seconds_interval=0.1, host="127.0.0.1") as ctl:
            ctl.start()
            started = time.perf_counter()
            records = ctl.map(identity, iterate={"x": list(range(tasks))})
            seconds = time.perf_counter() - started
            assert [r.result for r in records] == list(range(tasks))
        calls = dict(ctl.launcher.calls)
    return {
        "engine": engine,
        "first_result_s": {
            "median": round(statistics.median(firsts), 3),
            "all": [round(f, 3) for f in firsts],
        },
        "tasks": tasks,
        "workers": workers,
        "seconds": round(seconds, 3),
        "calls": calls,
        "tls": tls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="first-result measurements")
    parser.add_argument("--tls", default="automatic", choices=["none", "automatic"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # the LSF stand-ins' folder, found from here
    for engine in args.engines.split(","):
        result = measure(engine, args.workers, args.tasks, args.repeat, args.tls)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
