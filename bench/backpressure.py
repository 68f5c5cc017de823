"""Backpressure: many tasks of 100 KB through a controller with memory= set.

Runs ``--tasks`` tasks, each carrying ``--kilobytes`` of data, through
``map()`` on 2 local workers, with ``memory=`` capping the bytes of
unfinished tasks the controller holds, and prints the time, the controller
process's peak resident memory (sampled every 50 ms) and the cap's own peak
count. ``--memory 0`` runs without a cap, for contrast (keep ``--tasks``
small then: every task is pickled before the first is sent).

    python bench/backpressure.py [--tasks 200000] [--kilobytes 100] [--memory 200]
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil

import pycrew


def size(data: bytes) -> int:
    return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--kilobytes", type=int, default=100)
    parser.add_argument("--memory", type=int, default=200, help="cap in MB; 0: none")
    args = parser.parse_args()
    payload = b"x" * (args.kilobytes * 1024)
    me = psutil.Process()
    peak = [me.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    cap = args.memory * 1024 * 1024 or None
    with pycrew.local_controller(workers=2, memory=cap, relay_output=False) as ctl:
        started = time.perf_counter()
        records = ctl.map(size, [payload] * args.tasks)
        seconds = time.perf_counter() - started
        held_peak = ctl._running().held_peak
    done.set()
    assert all(r.result == len(payload) for r in records)
    print(
        f"{args.tasks} tasks of {args.kilobytes} KB, memory={args.memory} MB: {seconds:.1f} s, "
        f"controller peak RSS {peak[0] / 2**20:,.0f} MB, held at most {held_peak / 2**20:,.0f} MB"
    )


if __name__ == "__main__":
    main()
