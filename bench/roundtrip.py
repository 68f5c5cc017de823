#!/usr/bin/env python3
"""Round trips of pycrew and ProcessPoolExecutor, alternating in one process.

A virtual machine's cores sleep and wake on their own schedule, and a round
trip mostly measures how long they take to wake: two systems timed a minute
apart (as ``bench.py`` does, one child each) may have met different
machines. Here each round times ProcessPoolExecutor, then pycrew, for a
function imported from a module and one defined in this script, so that
every ratio compares neighbours. With ``--hog N``, N busy processes run
beside it (started and ended here).

Usage (from the repository root):

  python bench/roundtrip.py [--n 2000] [--rounds 5] [--hog 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pycrew
from tasks import identity

if TYPE_CHECKING:
    from collections.abc import Callable

WARM = 200
TIMEOUT_S = 60.0


def script_identity(x: Any) -> Any:
    """The same as ``tasks.identity``, but of this script: pickled by value."""
    return x


def median_us(submit: Callable[..., Any], fn: Callable[[Any], Any], n: int) -> float:
    for i in range(WARM):
        submit(fn, i).result(timeout=TIMEOUT_S)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        got = submit(fn, i).result(timeout=TIMEOUT_S)
        samples.append(time.perf_counter() - t0)
        if got != i:
            raise AssertionError(f"round trip: identity({i}) gave {got!r}")
    return statistics.median(samples) * 1e6


def one_round(n: int, out: dict[str, list[float]]) -> None:
    with ProcessPoolExecutor(2) as ex:
        out.setdefault("ProcessPoolExecutor", []).append(median_us(ex.submit, identity, n))
        out.setdefault("ProcessPoolExecutor, script fn", []).append(
            median_us(ex.submit, script_identity, n)
        )
    with pycrew.local_controller(workers=2) as ctl:
        ctl.launch(2)
        out.setdefault("pycrew", []).append(median_us(ctl.push, identity, n))
        out.setdefault("pycrew, script fn", []).append(median_us(ctl.push, script_identity, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="timed round trips a system a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hog", type=int, default=0, help="busy processes beside the run")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
    out: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            one_round(args.n, out)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"{args.rounds} rounds of {args.n} round trips, {args.hog} busy processes beside")
    print()
    print("| system | median of the rounds' medians, µs | each round |")
    print("|---|---:|---|")
    for key, values in out.items():
        each = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {key} | {statistics.median(values):.0f} | {each} |")
    print()
    for suffix in ("", ", script fn"):
        ratios = [
            p / c
            for p, c in zip(
                out[f"ProcessPoolExecutor{suffix}"], out[f"pycrew{suffix}"], strict=True
            )
        ]
        print(
            f"ProcessPoolExecutor{suffix} ÷ pycrew{suffix}, round by round "
            f"(above 1: pycrew faster): median {statistics.median(ratios):.2f}, "
            f"range {min(ratios):.2f}-{max(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
