#!/usr/bin/env python3
"""pycrew benchmark: pycrew next to the worker pools a Python user would pick.

Systems, each with 2 warm worker processes, each in its own child interpreter:

  pycrew       pycrew.local_controller(workers=2, tls="none")
  pycrew-tls   pycrew.local_controller(workers=2, tls="automatic")
  pycrew-tcp   pycrew.local_controller(workers=2, shared_memory=False)
  ppe          concurrent.futures.ProcessPoolExecutor(max_workers=2)
  loky         loky.get_reusable_executor(max_workers=2)
  dask         dask.distributed LocalCluster(n_workers=2, threads_per_worker=1, processes=True)

Measurements (see bench/README.md):

  1. round trip   submit identity(i), wait for its result, sequentially; median and p90 in us
  2. throughput   10,000 tasks submitted one by one, then all gathered; tasks/s, median of 3
  3. payload      100 MB float64 array in, arr.sum() out; MB/s = 100 / median s (5 runs)
  4. cold start   executor creation -> first result with 2 new workers, fresh interpreter
                  each time, median of 5; the import is timed separately
  plus the raw floors of this machine, measured in the same run: 64-byte ping-pong
  over loopback TCP between two processes, and one memcpy of the payload's array.

Usage (from the repository root):

  python bench/bench.py                      # full run, about 3 minutes on 2 cores
  python bench/bench.py --quick              # small counts, under a minute
  python bench/bench.py --systems pycrew,ppe --json /tmp/r.json
  python bench/bench.py --plot               # a full run, then bench/latency.png
  python bench/bench.py --plot-only          # bench/latency.png from bench/results.json

The round trip and the throughput are timed twice: with ``tasks.identity``, a
function imported from a module, and with ``script_identity``, the same
function defined in this script, as a user's usually is (pickled by value).
Adapters live in adapters.py, the report in report.py, the plots in plots.py.

The parent prints a markdown report on stdout (progress goes to stderr) and writes
bench/results.json. Children are started as ``bench.py --system NAME [--cold]`` and
print one JSON line; ``bench.py --echo PORT`` is the far end of the ping-pong.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tasks
from hog import hogs
from many import child_million, measure_map, million_plan, with_cpu
from procs import Descendants, end_tree, reap
from report import PING_BYTES, render, summarize_system
from systems import ADAPTERS

if TYPE_CHECKING:
    from adapters import Adapter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
BENCH_PY = BENCH_DIR / "bench.py"
SRC_DIR = BENCH_DIR.parent / "src"
DEFAULT_JSON = BENCH_DIR / "results.json"
N_WORKERS = 2
MB = 1_000_000
JSON_MARK = "@@bench-json@@ "


def _prepend_pythonpath(path: Path) -> None:
    """Put ``path`` first on PYTHONPATH (inherited by every process we start) and sys.path."""
    old = os.environ.get("PYTHONPATH", "")
    parts = [p for p in old.split(os.pathsep) if p and p != str(path)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *parts])
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


# Workers of every system must be able to `import tasks`: set this before anything starts.
_prepend_pythonpath(BENCH_DIR)
# Convenience for a checkout where pycrew is not installed yet (`pip install -e .` is the
# documented way): use the source tree next to this folder.
if importlib.util.find_spec("pycrew") is None and (SRC_DIR / "pycrew" / "__init__.py").exists():
    _prepend_pythonpath(SRC_DIR)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    """Counts and time bounds. Every loop stops at its count or its time cap."""

    warmup_tasks: int = 100  # identity round trips after both workers answered
    warmup_tmax_s: float = 60.0
    rt_n: int = 2000  # round trip: timed iterations
    rt_warmup: int = 200  # round trip: untimed iterations first
    rt_tmax_s: float = 60.0
    tp_n: int = 10_000  # throughput: tasks per repetition
    tp_reps: int = 3
    tp_tmax_s: float = 120.0  # per repetition
    pl_mb: float = 100.0  # payload: array size (float64, so pl_mb * 125,000 elements)
    pl_reps: int = 5  # timed runs, after one untimed warm-up run
    pl_tmax_s: float = 120.0
    map_n: int = 100_000  # map: trivial tasks through the system's own map or batch API
    map_tmax_s: float = 120.0  # a slower system maps fewer, so that it ends in about half this
    million_n: int = 1_000_000  # many tasks: one map in a fresh interpreter, time and peak RSS
    million_tmax_s: float = 300.0  # not started where the map rate says it would take longer
    cold_runs: int = 5
    floor_n: int = 10_000  # ping-pong round trips per mode
    floor_tmax_s: float = 15.0
    task_timeout_s: float = 60.0  # one task's result
    warm_child_timeout_s: float = 1500.0
    cold_child_timeout_s: float = 120.0
    floor_child_timeout_s: float = 120.0


FULL = Config()
QUICK = dataclasses.replace(
    FULL,
    warmup_tasks=20,
    rt_n=200,
    rt_warmup=50,
    rt_tmax_s=10.0,
    tp_n=1000,
    tp_reps=2,
    tp_tmax_s=20.0,
    pl_mb=20.0,
    pl_reps=2,
    pl_tmax_s=20.0,
    map_n=10_000,
    map_tmax_s=30.0,
    million_n=100_000,
    million_tmax_s=60.0,
    cold_runs=2,
    floor_n=2000,
    floor_tmax_s=3.0,
    task_timeout_s=20.0,
    warm_child_timeout_s=300.0,
    cold_child_timeout_s=60.0,
    floor_child_timeout_s=30.0,
)


def make_config(args: argparse.Namespace) -> Config:
    """The run's configuration: full or ``--quick``, with each ``--set FIELD=VALUE`` on it."""
    cfg = QUICK if args.quick else FULL
    fields = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: give FIELD=VALUE, FIELD one of {', '.join(fields)}")
        try:
            changes[name] = fields[name](value)
        except ValueError:
            kind = fields[name].__name__
            raise ValueError(f"--set {item!r}: {value!r} is not a {kind}") from None
        if changes[name] <= 0:
            raise ValueError(f"--set {item!r}: the value must be above 0")
    return dataclasses.replace(cfg, **changes)


def now() -> float:
    return time.perf_counter()


def config_for(cls: type[Adapter], cfg: Config) -> Config:
    """``cfg`` with the adapter's lower counts, where it has any."""
    lower = {k: type(getattr(cfg, k))(v) for k, v in cls.limits.items() if v < getattr(cfg, k)}
    return dataclasses.replace(cfg, **lower) if lower else cfg


def summarize(samples_s: Sequence[float]) -> dict[str, Any]:
    """Median, p90, p99, mean, min, max of durations given in seconds, reported in seconds."""
    xs = sorted(samples_s)
    if not xs:
        return {"n": 0}

    def rank(q: float) -> float:  # nearest rank: a sample that was measured
        return xs[max(0, math.ceil(q * len(xs)) - 1)]

    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "mean": statistics.fmean(xs),
        "min": xs[0],
        "max": xs[-1],
    }


def in_us(s: dict[str, Any]) -> dict[str, Any]:
    return {k: (v * 1e6 if k != "n" else v) for k, v in s.items()}


def error_text(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}"[:400] + "\n" + tb[-1500:]


# ---------------------------------------------------------------------------------------
# Measurements on a started adapter (run inside the system's child interpreter)
# ---------------------------------------------------------------------------------------
def warm_up(ad: Adapter, cfg: Config) -> dict[str, Any]:
    """Make sure every worker answers, then run a few trivial round trips."""
    t0 = now()
    deadline = t0 + cfg.warmup_tmax_s
    pids: set[int] = set()
    rounds = 0
    # a system whose tasks return nothing cannot name the worker that ran them
    while ad.returns_values and len(pids) < ad.n_workers and now() < deadline:
        handles = [ad.submit(tasks.worker_pid, 0.05) for _ in range(2 * ad.n_workers)]
        pids.update(ad.gather(handles, max(1.0, deadline - now())))
        rounds += 1
    t_workers = now() - t0
    for i in range(cfg.warmup_tasks):
        got = ad.roundtrip(tasks.identity, i, cfg.task_timeout_s)
        if ad.returns_values and got != i:
            raise AssertionError(f"warm-up: identity({i}) gave {got!r}")
        if now() > deadline:
            break
    return {
        "worker_pids": sorted(pids),
        "all_workers_answered": len(pids) >= ad.n_workers if ad.returns_values else None,
        "pid_rounds": rounds,
        "workers_s": t_workers,
        "total_s": now() - t0,
    }


def script_identity(x: Any) -> Any:
    """``tasks.identity`` as a user writes it: in the script, so pickled by value
    by every system but a forked ProcessPoolExecutor, whose workers have it."""
    return x


def measure_round_trip(
    ad: Adapter, cfg: Config, identity: Callable[[Any], Any] = tasks.identity
) -> dict[str, Any]:
    timeout = cfg.task_timeout_s
    deadline = now() + cfg.rt_tmax_s
    for i in range(cfg.rt_warmup):
        ad.roundtrip(identity, -i, timeout)
        if now() > deadline:
            break
    samples: list[float] = []
    deadline = now() + cfg.rt_tmax_s
    for i in range(cfg.rt_n):
        t0 = now()
        got = ad.roundtrip(identity, i, timeout)
        t1 = now()
        if ad.returns_values and got != i:
            raise AssertionError(f"round trip: identity({i}) gave {got!r}")
        samples.append(t1 - t0)
        if t1 > deadline:
            break
    out = in_us(summarize(samples))
    out["capped_by_time"] = len(samples) < cfg.rt_n
    out["samples_us"] = [round(x * 1e6, 1) for x in samples]  # for --plot
    return out


def measure_throughput(
    ad: Adapter, cfg: Config, identity: Callable[[Any], Any] = tasks.identity
) -> dict[str, Any]:
    runs = []
    for _ in range(cfg.tp_reps):
        deadline = now() + cfg.tp_tmax_s
        handles = []
        cpu0 = with_cpu()
        t0 = now()
        for i in range(cfg.tp_n):
            handles.append(ad.submit(identity, i))
            if not i & 255 and now() > deadline:
                break
        t1 = now()
        values = ad.gather(handles, max(1.0, deadline - now()))
        t2 = now()
        cpu_s = with_cpu() - cpu0
        k = len(handles)
        if ad.returns_values and values != list(range(k)):
            raise AssertionError("throughput: results differ from inputs")
        runs.append(
            {
                "n": k,
                "submit_s": t1 - t0,
                "total_s": t2 - t0,
                "tasks_per_s": k / (t2 - t0),
                "submit_per_s": k / (t1 - t0),
                "cpu_s": cpu_s,
                "cpu_us_per_task": cpu_s / k * 1e6,
            }
        )
        if k < cfg.tp_n:
            break
    return {
        "n": runs[0]["n"],
        "reps": len(runs),
        "tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs),
        "submit_per_s": statistics.median(r["submit_per_s"] for r in runs),
        "cpu_us_per_task": sum(r["cpu_s"] for r in runs) / sum(r["n"] for r in runs) * 1e6,
        "runs": runs,
    }


def measure_payload(ad: Adapter, cfg: Config, back: bool = False) -> dict[str, Any]:
    """The array in, and its sum out; with ``back``, the array in and the array out."""
    import numpy as np

    arr = np.random.default_rng(12345).random(round(cfg.pl_mb * MB / 8))
    mb = arr.nbytes / MB
    expected = float(arr.sum())
    samples: list[float] = []
    deadline = now() + cfg.pl_tmax_s
    fn = tasks.arr_echo if back else tasks.arr_sum
    for rep in range(cfg.pl_reps + 1):  # rep 0 is the untimed warm-up
        t0 = now()
        got = ad.result(ad.submit(fn, arr), max(10.0, deadline - now()))
        dt = now() - t0
        if not ad.returns_values:
            pass
        elif back:
            if got.shape != arr.shape or not np.array_equal(got, arr):
                raise AssertionError("payload: the array came back changed")
        elif not math.isclose(got, expected, rel_tol=1e-9):
            raise AssertionError(f"payload: sum {got!r} != {expected!r}")
        del got
        if rep:
            samples.append(dt)
        if now() > deadline:
            break
    out = summarize(samples)
    out["array_mb"] = mb
    out["mb_per_s"] = mb / out["median"] if samples else None
    return out


def child_warm(key: str, cfg: Config, procs: Descendants) -> dict[str, Any]:
    cls = ADAPTERS[key]
    cfg = config_for(cls, cfg)
    ad = cls(N_WORKERS)
    out: dict[str, Any] = {"system": key, "mode": "warm", "errors": {}, "cannot": cls.cannot}
    try:
        t0 = now()
        ad.start()
        out["start_s"] = now() - t0
        procs.record()
        out["warmup"] = warm_up(ad, cfg)
        procs.record()
        for name, fn, args in (
            ("round_trip", measure_round_trip, ()),
            ("throughput", measure_throughput, ()),
            ("round_trip_script", measure_round_trip, (script_identity,)),
            ("throughput_script", measure_throughput, (script_identity,)),
            ("map", measure_map, ()),
            ("payload", measure_payload, ()),
            ("payload_out", measure_payload, (True,)),
        ):
            if name in cls.cannot:
                continue
            try:
                out[name] = fn(ad, cfg, *args)
            except Exception as exc:
                out["errors"][name] = error_text(exc)
            procs.record()
            with contextlib.suppress(Exception):
                out.setdefault("worker_pids_after", {})[name] = ad.worker_pids()
    except Exception as exc:
        out["errors"]["start" if "start_s" not in out else "warmup"] = error_text(exc)
    finally:
        procs.record()
        t1 = now()
        try:
            ad.shutdown()
        except Exception as exc:
            out["errors"]["shutdown"] = error_text(exc)
        out["shutdown_s"] = now() - t1
        out["alive_after_shutdown"] = procs.alive(3.0)
        out["processes_seen"] = list(procs.seen.values())
    return out


def child_cold(key: str, cfg: Config, procs: Descendants, t_exec: float | None) -> dict[str, Any]:
    cls = ADAPTERS[key]
    out: dict[str, Any] = {"system": key, "mode": "cold", "errors": {}}
    t0 = now()
    for m in cls.modules:
        importlib.import_module(m)
    out["import_s"] = now() - t0
    ad = cls(N_WORKERS)
    t1 = now()
    try:
        ad.start()
        got = ad.roundtrip(tasks.identity, 1, cfg.task_timeout_s)
        out["cold_s"] = now() - t1
        if t_exec is not None:
            out["exec_to_first_s"] = time.time() - t_exec
        if ad.returns_values and got != 1:
            raise AssertionError(f"cold start: identity(1) gave {got!r}")
    except Exception as exc:
        out["errors"]["cold"] = error_text(exc)
    finally:
        procs.record()
        t2 = now()
        try:
            ad.shutdown()
        except Exception as exc:
            out["errors"]["shutdown"] = error_text(exc)
        out["shutdown_s"] = now() - t2
        out["alive_after_shutdown"] = procs.alive(3.0)
    return out


# ---------------------------------------------------------------------------------------
# The raw floor: 64-byte ping-pong over loopback TCP between two processes
# ---------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, view: memoryview, deadline: float, busy: bool) -> bool:
    """Fill ``view`` from ``sock``; False on EOF. Busy mode spins on a non-blocking socket."""
    got, size = 0, len(view)
    while got < size:
        try:
            k = sock.recv_into(view[got:], size - got)
        except BlockingIOError:
            if busy and now() > deadline:
                raise TimeoutError("ping-pong: deadline passed") from None
            continue
        if k == 0:
            return False
        got += k
    return True


def echo_main(port: int) -> None:
    """Far end of the ping-pong: echo 64-byte messages; blocking first, then busy-polling."""
    deadline = now() + 120.0
    for busy in (False, True):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(not busy)
            if not busy:
                sock.settimeout(30)
            buf = memoryview(bytearray(PING_BYTES))
            while _recv_exact(sock, buf, deadline, busy):
                sock.sendall(buf)


def echo_pair_main(fd: int) -> None:
    """Far end of the socket-pair ping-pong (what a local pycrew worker talks through)."""
    with socket.socket(fileno=fd) as sock:
        sock.settimeout(30)
        buf = memoryview(bytearray(PING_BYTES))
        while _recv_exact(sock, buf, now() + 60.0, False):
            sock.sendall(buf)


def _ping_pong(sock: socket.socket, cfg: Config, busy: bool) -> dict[str, Any]:
    """Time 64-byte round trips with the echo process at the other end of ``sock``."""
    msg = bytes(range(PING_BYTES))
    buf = memoryview(bytearray(PING_BYTES))
    deadline = now() + cfg.floor_tmax_s
    samples = []
    for i in range(cfg.floor_n + 200):
        t0 = now()
        sock.sendall(msg)
        if not _recv_exact(sock, buf, deadline + 5.0, busy):
            raise ConnectionError("the echo process closed its end")
        t1 = now()
        if i >= 200:  # the first 200 are warm-up
            samples.append(t1 - t0)
        if t1 > deadline:
            break
    return in_us(summarize(samples))


def pair_ping_pong(cfg: Config, procs: Descendants) -> dict[str, Any]:
    """Blocking 64-byte ping-pong through a Unix socket pair with a child process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        echo = subprocess.Popen(
            [sys.executable, str(BENCH_PY), "--echo-fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        procs.record()
        try:
            ours.settimeout(30)
            return _ping_pong(ours, cfg, False)
        finally:
            ours.close()
            try:
                echo.wait(10)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait(5)


def measure_memcpy(cfg: Config) -> dict[str, Any]:
    """One copy of the payload's array into memory already faulted in: the floor of
    moving it between two processes on this machine is one such copy each way."""
    import numpy as np

    src = np.random.default_rng(12345).random(round(cfg.pl_mb * MB / 8))
    dst = np.empty_like(src)
    np.copyto(dst, src)  # the destination's pages, faulted in once
    samples = []
    for _ in range(max(5, cfg.pl_reps)):
        t0 = now()
        np.copyto(dst, src)
        samples.append(now() - t0)
    out = summarize(samples)
    out["array_mb"] = src.nbytes / MB
    return out


def child_floor(cfg: Config, procs: Descendants) -> dict[str, Any]:
    out: dict[str, Any] = {"system": "floor", "errors": {}}
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(30)
        port = srv.getsockname()[1]
        echo = subprocess.Popen([sys.executable, str(BENCH_PY), "--echo", str(port)])
        procs.record()
        try:
            for mode in ("blocking", "busy_poll"):
                busy = mode == "busy_poll"
                conn, _ = srv.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.setblocking(not busy)
                    if not busy:
                        conn.settimeout(30)
                    out[mode] = _ping_pong(conn, cfg, busy)
        except Exception as exc:
            out["errors"]["floor"] = error_text(exc)
        try:
            out["pair"] = pair_ping_pong(cfg, procs)
        except Exception as exc:
            out["errors"]["pair"] = error_text(exc)
        try:
            out["memcpy"] = measure_memcpy(cfg)
        except Exception as exc:
            out["errors"]["memcpy"] = error_text(exc)
        finally:
            try:
                echo.wait(10)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait(5)
    return out


# ---------------------------------------------------------------------------------------
# Parent: run one child per system (and per cold start), clean up, report
# ---------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_child(
    args: list[str], timeout: float, workdir: Path, tag: str, passed: list[str]
) -> dict[str, Any]:
    """Run ``bench.py ARGS`` in its own session; parse its JSON line; end what it left.
    ``passed``: the run's own flags that set its counts (``--quick``, ``--set``)."""
    pidfile, out_path, err_path = (workdir / f"{tag}{ext}" for ext in (".pids", ".out", ".err"))
    cmd = [sys.executable, str(BENCH_PY), *args, "--pidfile", str(pidfile), *passed]
    if "--cold" in args:
        cmd += ["--t-exec", repr(time.time())]
    timed_out = False
    t0 = now()
    with open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
        proc = subprocess.Popen(
            cmd, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            end_tree(proc.pid)
            rc = proc.wait(10)
        except BaseException:
            # Ctrl-C or SIGTERM (--hog turns it into SystemExit): the child runs in a
            # session of its own and would outlive us, so end it and its tree first
            end_tree(proc.pid)
            raise
    wall = now() - t0
    res: dict[str, Any] = {}
    for line in out_path.read_text(errors="replace").splitlines():
        if line.startswith(JSON_MARK):
            res = json.loads(line[len(JSON_MARK) :])
    res.setdefault("errors", {})
    if rc != 0 or timed_out or not res.get("system"):
        tail = err_path.read_text(errors="replace")[-1500:]
        res["errors"]["child"] = f"rc={rc} timed_out={timed_out}; stderr tail:\n{tail}"
    res["child_wall_s"] = wall
    res["ended_by_parent"] = reap(proc.pid, pidfile)
    return res


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_meta() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    spec = importlib.util.find_spec("pycrew")
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            d: dist_version(d)
            for d in (
                "pycrew",
                "numpy",
                "cloudpickle",
                "loky",
                "dask",
                "distributed",
                "hyperqueue",
                "ray",
                "parsl",
                "executorlib",
                "pyzmq",
                "psutil",
            )
        },
        "pycrew_from": spec.origin if spec else None,
        "loadavg_start": os.getloadavg(),
        "n_workers": N_WORKERS,
    }


def system_missing(key: str) -> str | None:
    missing = [m for m in ADAPTERS[key].modules if importlib.util.find_spec(m) is None]
    return f"not importable: {', '.join(missing)}" if missing else None


def compile_pycrew() -> None:
    """Write pycrew's bytecode, as an install does: under PYTHONDONTWRITEBYTECODE an
    edited checkout would otherwise compile its changed modules in every process,
    and cold starts would time the compiler."""
    import compileall

    spec = importlib.util.find_spec("pycrew")
    if spec is not None and spec.origin:
        compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)


def orchestrate(args: argparse.Namespace) -> int:
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ADAPTERS]
    if unknown:
        log(f"unknown system(s): {', '.join(unknown)}; known: {', '.join(ADAPTERS)}")
        return 2
    hog: dict[str, Any] = {"n": args.hog}
    with hogs(args.hog, hog):
        if args.hog:
            log(f"{args.hog} busy process(es) running: pids {hog['pids']}")
        run = run_all(args, keys, hog)
    # written once the hogs are gone, so that the report can say they are
    if hog.get("left_after_end"):
        log(f"hog: {hog['left_after_end']} busy process(es) could not be ended")
    out_path = Path(args.json) if args.json else DEFAULT_JSON
    out_path.write_text(json.dumps(run, indent=1, default=str) + "\n")
    print(render(run))
    log(f"wrote {out_path}")
    return 0


def run_all(args: argparse.Namespace, keys: list[str], hog: dict[str, Any]) -> dict[str, Any]:
    cfg = make_config(args)
    passed = (["--quick"] if args.quick else []) + [f"--set={item}" for item in args.set]
    compile_pycrew()
    workdir = Path(tempfile.mkdtemp(prefix="pycrew-bench-"))
    log(f"child logs in {workdir}")
    t_run = now()
    run: dict[str, Any] = {
        "meta": machine_meta(),
        "quick": args.quick,
        "set": args.set,
        "config": dataclasses.asdict(cfg),
        "hog": hog,
        "systems": {},
    }
    log("floor: loopback TCP ping-pong ...")
    run["floor"] = run_child(
        ["--system", "floor"], cfg.floor_child_timeout_s, workdir, "floor", passed
    )
    for key in keys:
        cls = ADAPTERS[key]
        entry: dict[str, Any] = {"label": cls.label, "notes": cls.notes, "cannot": cls.cannot}
        run["systems"][key] = entry
        missing = system_missing(key)
        if missing:
            log(f"{key}: skipped ({missing})")
            entry["skipped"] = missing
            continue
        log(f"{key}: warm run ...")
        entry["warm"] = run_child(
            ["--system", key], cfg.warm_child_timeout_s, workdir, f"{key}-warm", passed
        )
        why_not = million_plan(cls, entry["warm"], cfg)
        if why_not:
            entry["million_skipped"] = why_not
            log(f"{key}: {cfg.million_n:,} tasks: not run ({why_not})")
        else:
            log(f"{key}: {cfg.million_n:,} tasks in a fresh interpreter ...")
            entry["million"] = run_child(
                ["--system", key, "--million"],
                2 * cfg.million_tmax_s + cfg.cold_child_timeout_s,
                workdir,
                f"{key}-million",
                passed,
            )
        entry["cold"] = []
        for i in range(cfg.cold_runs):
            log(f"{key}: cold start {i + 1}/{cfg.cold_runs} ...")
            cold_args = ["--system", key, "--cold"]
            entry["cold"].append(
                run_child(cold_args, cfg.cold_child_timeout_s, workdir, f"{key}-cold{i}", passed)
            )
        entry["summary"] = summarize_system(entry)
        log(f"{key}: {entry['summary']}")
    log("floor again, at the end ...")
    run["floor_end"] = run_child(
        ["--system", "floor"], cfg.floor_child_timeout_s, workdir, "floor-end", passed
    )
    run["meta"]["loadavg_end"] = os.getloadavg()
    run["meta"]["wall_s"] = now() - t_run
    run["meta"]["child_logs"] = str(workdir)
    return run


def plot(results: Path) -> int:
    import plots

    run = json.loads(results.read_text())
    for path in [*plots.latency(run, BENCH_DIR), *plots.peers(run, BENCH_DIR)]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (under a minute)")
    parser.add_argument(
        "--systems",
        default=",".join(ADAPTERS),
        help=f"comma-separated subset of: {', '.join(ADAPTERS)} (default: all)",
    )
    parser.add_argument("--json", help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument(
        "--plot",
        action="store_true",
        help="after the run, draw bench/latency.png and bench/peers.png from its results",
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="draw the PNGs from the JSON, no run"
    )
    parser.add_argument(
        "--hog",
        type=int,
        default=0,
        metavar="N",
        help="keep N busy processes (while True: pass) running for the whole run",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one count or time bound of the configuration (a field of Config, "
        "e.g. million_tmax_s=60); may be given many times",
    )
    # internal: child modes
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--million", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--t-exec", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--pidfile", help=argparse.SUPPRESS)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.echo_fd is not None:
        echo_pair_main(args.echo_fd)
        return
    if args.echo is not None:
        echo_main(args.echo)
        return 0
    if args.hog < 0:
        parser.error("--hog takes a count of 0 or more")
    try:
        cfg = make_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.system is None:
        if args.plot_only:
            return plot(Path(args.json or DEFAULT_JSON))
        code = orchestrate(args)
        if args.plot:
            plot(Path(args.json or DEFAULT_JSON))
        return code

    procs = Descendants(args.pidfile)
    out: dict[str, Any]
    try:
        if args.system == "floor":
            out = child_floor(cfg, procs)
        elif args.cold:
            out = child_cold(args.system, cfg, procs, args.t_exec)
        elif args.million:
            cls = ADAPTERS[args.system]
            out = child_million(cls(N_WORKERS), config_for(cls, cfg), procs.record, warm_up)
            out["alive_after_shutdown"] = procs.alive(3.0)
        else:
            out = child_warm(args.system, cfg, procs)
    except Exception as exc:
        out = {"system": args.system, "errors": {"child": error_text(exc)}}
    out["loadavg"] = os.getloadavg()
    print(JSON_MARK + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
