#!/usr/bin/env python3
"""What watching a controller costs: pycrew alone, with the dashboard open, with
OpenTelemetry on, and with both, next to ProcessPoolExecutor, in one run.

Each scenario runs in a child interpreter of its own (2 warm workers), in
alternating order, ``--rounds`` times; the report gives medians and ratios
from the same run.

  ppe          concurrent.futures.ProcessPoolExecutor(max_workers=2)
  pycrew       pycrew.local_controller(workers=2), nothing watching
  dashboard    the same, with ctl.dashboard() open and a client (in a process
               of its own, as a browser is) reading its live stream (/events)
               the whole time, as an open page does
  otel-controller  the same, with an SDK tracer provider on the controller
               (BatchSpanProcessor, spans dropped at export); workers get the
               trace context but have no provider
  otel         the same, with the same provider on the workers (initializer=):
               a span per task on each side
  both         dashboard and otel together

Measurements: round trip (submit one task, wait for it, 1,000 times: median
us) and throughput (5,000 tasks submitted, then all gathered: tasks/s).

Usage: python bench/watching.py [--rounds 3] [--json PATH]
Needs pycrew[dashboard,otel] and opentelemetry-sdk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

SCENARIOS = ("ppe", "pycrew", "dashboard", "otel-controller", "otel", "both")
ROUND_TRIPS = 1_000
TASKS = 5_000


def identity(x: Any) -> Any:
    return x


def _measure(submit: Any, result: Any) -> dict[str, float]:
    for i in range(100):  # warm up: workers started, imports done
        result(submit(i))
    times = []
    for i in range(ROUND_TRIPS):
        t0 = time.perf_counter()
        result(submit(i))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    futures = [submit(i) for i in range(TASKS)]
    for future in futures:
        result(future)
    rate = TASKS / (time.perf_counter() - t0)
    return {"rt_us": statistics.median(times) * 1e6, "tasks_per_s": rate}


def read_events() -> None:
    """What an open page does, in a process of its own as a browser is: read the
    dashboard's live stream (URL in the environment: a token never goes in argv)."""
    url = os.environ["PYCREW_BENCH_PAGE"]
    base = url.split("?", 1)[0].rstrip("/")
    token = url.split("token=", 1)[1]
    request = urllib.request.Request(f"{base}/events", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as stream:
        while stream.readline():
            pass


def otel_on() -> None:
    """An SDK provider whose spans are made, batched and then dropped: what pycrew
    costs, without the cost of a particular exporter."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


def child(scenario: str) -> dict[str, float]:
    if scenario == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=2) as pool:
            return _measure(lambda x: pool.submit(identity, x), lambda f: f.result())
    import pycrew

    traced = scenario.startswith("otel") or scenario == "both"
    if traced:
        otel_on()
    # the workers trace too (their own provider, set up before their first task)
    initializer = otel_on if traced and scenario != "otel-controller" else None
    with pycrew.local_controller(workers=2, tls="none", initializer=initializer) as ctl:
        reader = None
        page = None
        if scenario in ("dashboard", "both"):
            page = ctl.dashboard()
            reader = subprocess.Popen(
                [sys.executable, __file__, "--reader"],
                env={**os.environ, "PYCREW_BENCH_PAGE": page.url},
            )
        try:
            return _measure(lambda x: ctl.push(identity, x), lambda f: f.result())
        finally:
            if page is not None:
                page.close()  # ends the stream: the reader leaves
            if reader is not None:
                reader.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        read_events()
        return
    if args.child:
        print(json.dumps(child(args.child)))
        return
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    for round_ in range(args.rounds):
        order = SCENARIOS if round_ % 2 == 0 else SCENARIOS[::-1]
        for scenario in order:
            print(f"round {round_ + 1}: {scenario} ...", file=sys.stderr)
            done = subprocess.run(
                [sys.executable, __file__, "--child", scenario],
                capture_output=True,
                text=True,
                check=True,
            )
            results[scenario].append(json.loads(done.stdout.strip().splitlines()[-1]))
    medians = {
        s: {k: statistics.median(r[k] for r in runs) for k in ("rt_us", "tasks_per_s")}
        for s, runs in results.items()
    }
    ppe, alone = medians["ppe"], medians["pycrew"]
    print(f"{args.rounds} rounds, medians; ratios > 1 mean pycrew is better than the peer\n")
    print(
        "| scenario | round trip µs | tasks/s | tasks/s vs nothing watching "
        "| vs ppe: round trip (ppe/x) | vs ppe: tasks/s (x/ppe) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for scenario, m in medians.items():
        print(
            f"| {scenario} | {m['rt_us']:.0f} | {m['tasks_per_s']:,.0f} | "
            f"{m['tasks_per_s'] / alone['tasks_per_s']:.3f} | "
            f"{ppe['rt_us'] / m['rt_us']:.2f} | {m['tasks_per_s'] / ppe['tasks_per_s']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"runs": results, "medians": medians}, file, indent=1)


if __name__ == "__main__":
    main()
