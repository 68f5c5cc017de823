"""Command line: ``pycrew worker`` (what launchers run), ``pycrew demo``, ``pycrew monitor``."""

from __future__ import annotations

import sys

from ._version import __version__


def _worker_fast_path(argv: list[str]) -> int | None:
    """``worker --address A [--id I] [--tls]`` without argparse, which is slow to import.

    Worker start-up time is cold-start time for every task of a fresh
    worker; anything unusual falls back to the full parser.
    """
    if not argv or argv[0] != "worker":
        return None
    options: dict[str, str | bool] = {}
    rest = argv[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "--tls":
            options["tls"] = True
        elif flag in ("--address", "--id") and rest:
            options[flag[2:]] = rest.pop(0)
        else:
            return None
    address = options.get("address")
    if not isinstance(address, str):
        return None
    return _run_worker(address, str(options.get("id", "")), bool(options.get("tls", False)))


def _run_worker(address: str, worker_id: str, tls: bool) -> int:
    import os

    from . import _wire
    from ._worker import main as worker_main

    if worker_id:
        # the command line is the contract: its id wins over an inherited one
        os.environ[_wire.WORKER_ENV] = worker_id
    return worker_main(address, tls)


def _monitor(user: str | None, ids: list[str] | None, everything: bool) -> int:
    from ._errors import LaunchError
    from ._slurm import SlurmMonitor

    monitor = SlurmMonitor(user)
    try:
        if ids or everything:
            cancelled = monitor.terminate(ids=ids, all=everything)
            print(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) or '-'}")
            return 0
        jobs = monitor.jobs()
    except LaunchError as exc:
        print(f"pycrew monitor: {exc}", file=sys.stderr)
        return 1
    print(f"{'JOB':<16} {'STATE':<12} {'AGE':>8}  CONTROLLER")
    for job in jobs:
        age = "-" if job.seconds is None else f"{job.seconds:.0f}s"
        print(f"{job.id:<16} {job.state:<12} {age:>8}  {job.controller}")
    print(f"{len(jobs)} pycrew job(s) of {monitor.user}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fast = _worker_fast_path(list(argv))
    if fast is not None:
        return fast
    import argparse

    parser = argparse.ArgumentParser(prog="pycrew", description="pycrew: crew for Python")
    parser.add_argument("--version", action="version", version=f"pycrew {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker (launchers start this)")
    worker.add_argument("--address", required=True, help="the controller's host:port")
    worker.add_argument("--id", default="", help="the worker id given by the launcher")
    worker.add_argument("--tls", action="store_true", help="the controller speaks TLS")
    demo = sub.add_parser("demo", help="run tasks on a local controller and show the results")
    demo.add_argument("--tasks", type=int, default=200)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--tls", default="automatic", choices=["none", "automatic"])
    monitor = sub.add_parser("monitor", help="list or cancel pycrew's jobs on a scheduler")
    monitor.add_argument("scheduler", choices=["slurm"])
    monitor.add_argument("--user", default=None, help="whose jobs (default: yours)")
    cancel = monitor.add_mutually_exclusive_group()
    cancel.add_argument("--terminate", nargs="+", metavar="ID", help="cancel these jobs")
    cancel.add_argument("--terminate-all", action="store_true", help="cancel every pycrew job")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return _run_worker(args.address, args.id, args.tls)
    if args.command == "monitor":
        return _monitor(args.user, args.terminate, args.terminate_all)
    from ._demo import run_demo

    return run_demo(tasks=args.tasks, workers=args.workers, tls=args.tls)


if __name__ == "__main__":
    sys.exit(main())
