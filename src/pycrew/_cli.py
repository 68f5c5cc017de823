"""Command line: ``pycrew worker`` (what launchers run), ``pycrew demo``, ``pycrew monitor``,
``pycrew metrics``, and the live views ``pycrew top`` and ``pycrew dashboard``."""

from __future__ import annotations

import sys

from ._version import __version__
from ._worker._entry import run_worker, worker_fast_path

TYPE_CHECKING = False  # typing is slow to import, and every worker starts here
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ._engines._cluster_monitor import ClusterMonitor


def _add_metrics_parser(sub: Any) -> None:
    """``pycrew metrics plot DIR [--metric resident|virtual|cpu] [--output PNG]``."""
    metrics = sub.add_parser("metrics", help="read the samples of pycrew.Metrics")
    action = metrics.add_subparsers(dest="metrics_command", required=True)
    plot = action.add_parser("plot", help="draw one line per worker over time, tasks shaded")
    plot.add_argument("path", metavar="DIR", help="a metrics folder, a worker log folder, a file")
    plot.add_argument("--metric", default="resident", choices=["resident", "virtual", "cpu"])
    plot.add_argument(
        "--output", default=None, help="the PNG to write (default: memory.png, or cpu.png)"
    )


def _add_live_parsers(sub: Any) -> None:
    """``pycrew top`` and ``pycrew dashboard``: views of a running controller of this user."""
    top = sub.add_parser("top", help="watch a running controller in the terminal")
    top.add_argument("name", nargs="?", default=None, metavar="NAME", help="its name (or pid)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--json", action="store_true", help="print the raw state as JSON and exit")
    top.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="between redraws"
    )
    board = sub.add_parser("dashboard", help="serve a running controller's web dashboard")
    board.add_argument("name", nargs="?", default=None, metavar="NAME", help="its name (or pid)")
    board.add_argument("--host", default="127.0.0.1", help="the address to serve on (loopback)")
    board.add_argument("--port", type=int, default=0, help="the port (default: any free one)")
    board.add_argument(
        "--allow-cancel",
        action="store_true",
        help="show cancel buttons (the controller must allow cancelling too)",
    )
    board.add_argument(
        "--allow-public",
        action="store_true",
        help="serve on a --host other than loopback (plain HTTP: the token crosses the network)",
    )


def _dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard here, reading the controller through its local channel."""
    import time

    from ._operations import _channel, _top

    if not args.allow_public and not _loopback(args.host):
        print(
            f"pycrew dashboard: {args.host!r} is not loopback, and the page is plain HTTP: "
            "its token would cross the network in clear. Keep it on loopback and forward "
            "the port (ssh -L), or add --allow-public to mean it",
            file=sys.stderr,
        )
        return 2
    chosen = _top.choose(args.name, "dashboard", sys.stderr)
    if isinstance(chosen, int):
        return chosen
    try:
        from ._operations._dashboard._server import serve
    except ImportError as exc:
        print(f"pycrew dashboard: not available here ({exc})", file=sys.stderr)
        return 1

    def status(since: int) -> dict[str, Any]:
        return _channel.ask(chosen, "status", since=since)

    def cancel(names: list[str]) -> None:
        _channel.ask(chosen, "cancel", names=names)

    def worker_log(worker: str) -> str | None:
        text = _channel.ask(chosen, "log", worker=worker).get("log")
        return text if isinstance(text, str) else None

    try:
        server = serve(
            status=status,
            cancel=cancel if args.allow_cancel else None,
            worker_log=worker_log,
            host=args.host,
            port=args.port,
            title=chosen.name,
        )
    except (OSError, ValueError) as exc:
        print(f"pycrew dashboard: {exc}", file=sys.stderr)
        return 1
    # the URL carries the token: printed for this user's terminal, never logged
    print(f"dashboard of {chosen.name!r} (pid {chosen.pid}): {server.url}", flush=True)
    print("Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(2.0)  # a glance at the channel now and then, to notice the end
            if not any(c.path == chosen.path for c in _channel.find(chosen.name)):
                print(f"pycrew dashboard: controller {chosen.name!r} has ended", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()


def _loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass  # a name: what it resolves to decides
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _metrics_plot(args: argparse.Namespace) -> int:
    from ._operations._metrics import plot, read

    output = args.output or ("cpu.png" if args.metric == "cpu" else "memory.png")
    try:
        records = read(args.path)
        written = plot(records, args.metric, output)
    except (OSError, ValueError, ImportError) as exc:
        print(f"pycrew metrics: {exc}", file=sys.stderr)
        return 1
    workers = len({(r.get("worker"), r.get("pid")) for r in records})
    print(f"{written}: {len(records)} samples of {workers} worker(s)")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size, most in (("s", 1, 120), ("m", 60, 120), ("h", 3600, 48)):
        if seconds < size * most:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell; the age (fourth) right-aligned, the last free."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i == 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join([*cells, row[-1]]).rstrip())


def _state(state: str, stale: str | None) -> str:
    return state if stale is None else f"{state}, stale: {stale}"


def _problems(problems: list[str]) -> None:
    for problem in problems[:3]:
        print(f"pycrew monitor: ignored {problem}", file=sys.stderr)
    if len(problems) > 3:
        print(f"pycrew monitor: ... and {len(problems) - 3} more", file=sys.stderr)


def _monitor_local(user: str | None, stale: bool, ids: list[str] | None, every: bool) -> int:
    from ._engines._local import LocalMonitor

    monitor = LocalMonitor(user)
    if every or ids is not None:
        try:
            pids = [int(i) for i in ids] if ids else None
        except ValueError:
            print("pycrew monitor: local workers are named by their pids", file=sys.stderr)
            return 2
        ended = monitor.terminate(pids, all=every or (pids is None and not stale), stale=stale)
        _problems(monitor.problems)
        print(f"ended {len(ended)} worker(s): {' '.join(map(str, ended)) or '-'}")
        return 0
    workers = monitor.stale() if stale else monitor.workers()
    _problems(monitor.problems)
    _table(
        ["PID", "CONTROLLER", "WORKER", "AGE", "STATE"],
        [
            [
                str(w.pid),
                w.controller or "?",
                w.worker or "?",
                _age(w.seconds),
                _state(w.state, w.stale),
            ]
            for w in workers
        ],
    )
    print(f"{len(workers)} {'stale ' if stale else ''}pycrew worker(s) of {monitor.user}")
    return 0


def _cluster_monitor(scheduler: str, user: str | None, where: argparse.Namespace) -> ClusterMonitor:
    """The monitor of ``scheduler``; ``where`` holds the cloud engines' own flags."""
    if scheduler == "kubernetes":
        from ._engines._kubernetes._monitor import KubernetesMonitor

        return KubernetesMonitor(where.namespace, where.kubeconfig, where.context, user)
    if scheduler == "aws-batch":
        from ._engines._aws_batch._monitor import AwsBatchMonitor
        from ._errors import LaunchError

        if not where.job_queue:
            raise LaunchError("aws-batch needs --job-queue: the queue whose jobs to look at")
        return AwsBatchMonitor(where.job_queue, where.region, user)
    if scheduler == "pbs":
        from ._engines._pbs import PbsMonitor

        return PbsMonitor(user)
    if scheduler == "lsf":
        from ._engines._lsf import LsfMonitor

        return LsfMonitor(user)
    if scheduler == "sge":
        from ._engines._sge import SgeMonitor

        return SgeMonitor(user)
    from ._engines._slurm import SlurmMonitor

    return SlurmMonitor(user)


def _monitor_cluster(
    scheduler: str,
    user: str | None,
    stale: bool,
    ids: list[str] | None,
    every: bool,
    where: argparse.Namespace,
) -> int:
    monitor = _cluster_monitor(scheduler, user, where)
    if every or ids is not None:
        cancelled = monitor.terminate(
            ids=ids or None, all=every or (not ids and not stale), stale=stale
        )
        _problems(monitor.problems)
        print(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) or '-'}")
        return 0
    jobs = monitor.jobs()
    verdicts = monitor._verdicts(jobs)
    _problems(monitor.problems)
    rows = []
    for job in jobs:
        worker, gone = verdicts.get(job.id, ("", None))
        if stale and gone is None:
            continue
        rows.append(
            [job.id, job.controller, worker or "?", _age(job.seconds), _state(job.state, gone)]
        )
    _table(["JOB", "CONTROLLER", "WORKER", "AGE", "STATE"], rows)
    print(f"{len(rows)} {'stale ' if stale else ''}pycrew job(s) of {monitor.user}")
    return 0


_EVERY = (
    "pycrew monitor: --terminate with no ID ends every pycrew worker of the user, "
    "those of live controllers too"
)


def _confirm_every(scheduler: str, user: str | None, where: argparse.Namespace) -> int | None:
    """Ask before a bare ``--terminate`` ends every worker: None to go on, else the exit code.

    On a terminal it lists the workers and asks; anywhere else (a script, a
    pipe, cron) it refuses, since nobody is there to answer.
    """
    if not _interactive():
        print(
            f"{_EVERY}: add --yes (or use --terminate-all) to mean it, name the IDs to end, "
            "or add --stale to end only the workers whose controller is gone",
            file=sys.stderr,
        )
        return 2
    if scheduler == "local":
        _monitor_local(user, False, None, False)
    else:
        _monitor_cluster(scheduler, user, False, None, False, where)
    try:
        answer = input("End every one of them, those of live controllers too? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return None
    print("nothing ended")
    return 1


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # a closed or odd stdin
        return False


def _monitor(args: argparse.Namespace) -> int:
    """``pycrew monitor local|slurm|sge|pbs|lsf|aws-batch|kubernetes [--stale]
    [--terminate [ID ...] | --terminate-all] [--yes]``, plus a cloud engine's flags."""
    from ._errors import LaunchError

    ids = args.terminate  # None: list; []: end the listed ones; [...]: end these
    if args.stale and (ids or args.terminate_all):
        print("pycrew monitor: --stale goes with a bare --terminate", file=sys.stderr)
        return 2
    try:
        if ids == [] and not args.stale and not args.yes:
            # every worker of the user, live controllers' included: asked, never assumed
            answer = _confirm_every(args.scheduler, args.user, args)
            if answer is not None:
                return answer
        if args.scheduler == "local":
            return _monitor_local(args.user, args.stale, ids, args.terminate_all)
        return _monitor_cluster(
            args.scheduler, args.user, args.stale, ids, args.terminate_all, args
        )
    except LaunchError as exc:
        print(f"pycrew monitor: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fast = worker_fast_path(list(argv))
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
    monitor = sub.add_parser(
        "monitor",
        help="list or end pycrew's workers: local processes, SLURM, SGE, PBS or LSF jobs, "
        "AWS Batch jobs, Kubernetes pods",
    )
    monitor.add_argument(
        "scheduler", choices=["local", "slurm", "sge", "pbs", "lsf", "aws-batch", "kubernetes"]
    )
    monitor.add_argument("--job-queue", default=None, help="aws-batch: the job queue (needed)")
    monitor.add_argument("--region", default=None, help="aws-batch: the region (default: boto3's)")
    monitor.add_argument("--namespace", default="default", help="kubernetes: the namespace")
    monitor.add_argument(
        "--kubeconfig",
        default=None,
        help="kubernetes: the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, "
        "else the in-cluster account)",
    )
    monitor.add_argument("--context", default=None, help="kubernetes: the kubeconfig context")
    monitor.add_argument("--user", default=None, help="whose workers (default: yours)")
    monitor.add_argument(
        "--stale", action="store_true", help="only workers whose controller is gone"
    )
    cancel = monitor.add_mutually_exclusive_group()
    cancel.add_argument(
        "--terminate",
        nargs="*",
        metavar="ID",
        help=(
            "end these workers (pids, or job ids); with no ID and no --stale, every one "
            "listed, live controllers' too: asks first on a terminal, and refuses "
            "elsewhere unless --yes"
        ),
    )
    cancel.add_argument(
        "--terminate-all", action="store_true", help="end every pycrew worker of the user"
    )
    monitor.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="with a bare --terminate: end every worker listed without asking",
    )
    _add_metrics_parser(sub)
    _add_live_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return run_worker(args.address, args.id, args.tls)
    if args.command == "metrics":
        return _metrics_plot(args)
    if args.command == "monitor":
        return _monitor(args)
    if args.command == "top":
        from ._operations._top import top

        return top(args.name, once=args.once, as_json=args.json, interval=args.interval)
    if args.command == "dashboard":
        return _dashboard(args)
    from ._demo import run_demo

    return run_demo(tasks=args.tasks, workers=args.workers, tls=args.tls)


if __name__ == "__main__":
    sys.exit(main())
