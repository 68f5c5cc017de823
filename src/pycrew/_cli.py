"""Command line: ``pycrew worker`` (what launchers run) and ``pycrew demo``."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    if args.command == "worker":
        import os

        from . import _wire
        from ._worker import main as worker_main

        if args.id:
            os.environ.setdefault(_wire.WORKER_ENV, args.id)
        return worker_main(args.address, args.tls)
    from ._demo import run_demo

    return run_demo(tasks=args.tasks, workers=args.workers, tls=args.tls)


if __name__ == "__main__":
    sys.exit(main())
