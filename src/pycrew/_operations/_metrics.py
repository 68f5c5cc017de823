"""Resource metrics of workers: what to sample, where it goes, and reading it back.

A worker with metrics on runs a ``Sampler`` thread that writes one line
per sample::

    __PYCREW_METRICS__ {"time": 1715000000.123, "pid": 4242, "worker": "c0ffee-1", ...}

The marker lets ``read`` pick the samples out of anything, a worker log
that task output is mixed into included. Everything here but ``Metrics``
runs only when asked for, so it may import what it needs at the top: a
worker imports this module only when metrics are on.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

#: what starts the JSON of every sample, wherever the line is written
MARKER = "__PYCREW_METRICS__"
#: the values ``plot`` can draw, and the axis each gets
METRICS = {
    "resident": "resident memory (MiB)",
    "virtual": "virtual memory (MiB)",
    "cpu": "CPU (% of one core)",
}
STREAMS = _STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}
#: bytes read from the end of a worker's file for its latest samples
_TAIL_BYTES = 16 << 10


@dataclass(frozen=True)
class Metrics:
    """Ask every worker to sample its own process while it runs.

    Args:
        path: a directory (one file per worker is written there), or
            ``"/dev/stdout"`` / ``"/dev/stderr"`` to mix the lines into the
            worker's own log.
        seconds_interval: seconds between samples.
    """

    path: str | os.PathLike[str]
    seconds_interval: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise ArgumentTypeError(f"path must be a directory or /dev/stdout, got {self.path!r}")
        seconds = self.seconds_interval
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ArgumentTypeError(f"seconds_interval must be a number, got {seconds!r}")
        if not seconds > 0 or math.isinf(seconds):
            raise ArgumentError(f"seconds_interval must be a positive number, got {seconds!r}")

    def settings(self) -> dict[str, Any]:
        """What the workers are sent."""
        return {"path": os.fspath(self.path), "seconds_interval": float(self.seconds_interval)}


# the worker's side ---------------------------------------------------------


class Sampler:
    """Samples the worker's own process every ``seconds_interval`` on a daemon thread.

    One sample when it starts (phase ``"start"``), then one per interval, and
    a last one (phase ``"exit"``) from ``stop``, which the worker calls on
    its way out. The worker sets ``current`` to ``(task name, task id)``
    while a task runs and to ``("idle", None)`` between tasks: one attribute,
    so that the thread never reads a name and an id of two different tasks.

    Lines are written with one ``os.write`` each, on a descriptor of our own:
    a line is never split by other output (log files are opened for append,
    and a line is shorter than a pipe's atomic size), a task that redirects
    ``sys.stdout`` does not capture it, and no Python buffer holds it back.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        worker: str,
        controller: str,
        log: Callable[[str], None],
    ) -> None:
        self.path = str(os.fspath(settings["path"]))
        self.seconds_interval = float(settings["seconds_interval"])
        if not self.seconds_interval > 0 or math.isinf(self.seconds_interval):
            raise ArgumentError(f"seconds_interval must be positive, got {self.seconds_interval}")
        self.pid = os.getpid()
        self.worker = worker or f"worker-{self.pid}"
        self.controller = controller
        self.log = log
        self.current: tuple[str, int | None] = ("start", None)
        self.fd = -1
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.process: Any = None

    def file_path(self) -> str:
        """Where the samples go: a stream's path, or ``<path>/<worker id>.metrics``."""
        if self.path in _STREAMS:
            return self.path
        # a worker id is a controller name and a number; keep a name with a
        # slash from reaching outside the folder
        name = self.worker.replace(os.sep, "_").replace("/", "_")
        return os.path.join(self.path, f"{name}.metrics")

    def start(self) -> bool:
        """Write the first sample and start the thread; ``False`` (logged) if that fails."""
        target = self.file_path()
        try:
            import psutil

            if self.path in _STREAMS:
                # our own descriptor: a task that closes or redirects fd 1 keeps the log
                self.fd = os.dup(_STREAMS[self.path])
            else:
                os.makedirs(self.path, exist_ok=True)
                self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.process = psutil.Process(self.pid)
            self.process.cpu_percent(None)  # the first call only starts psutil's clock
            self._write(self._sample())
        except Exception as exc:
            self._close()
            self.log(f"metrics are off: cannot write samples to {target}: {_describe(exc)}")
            return False
        self.current = ("idle", None)
        thread = threading.Thread(target=self._run, name="pycrew-metrics", daemon=True)
        thread.start()
        return True

    def stop(self) -> None:
        """Write the last sample and close (once; the thread stops at its next tick)."""
        if self.done.is_set():
            return
        self.done.set()
        # bounded: the process is on its way out and must not hang on a stuck write
        if not self.lock.acquire(timeout=1.0):
            return
        try:
            if self.fd >= 0:
                self.current = ("exit", None)
                self._write(self._sample())
        except Exception:
            pass  # the reason, if any, was logged by the thread
        finally:
            self._close()
            self.lock.release()

    def _run(self) -> None:
        interval = self.seconds_interval
        due = time.monotonic() + interval
        while not self.done.wait(max(0.0, due - time.monotonic())):
            with self.lock:
                if self.done.is_set() or self.fd < 0:
                    return
                try:
                    self._write(self._sample())
                except Exception as exc:
                    self.log(f"metrics stopped: cannot write to {self.file_path()}: {exc}")
                    self._close()
                    return
            # fixed ticks, without a burst of catch-up samples after a stall
            due = max(due + interval, time.monotonic())

    def _sample(self) -> dict[str, Any]:
        phase, task = self.current
        with self.process.oneshot():
            memory = self.process.memory_info()
            cpu = self.process.cpu_percent(None)
        return {
            "time": round(time.time(), 6),
            "pid": self.pid,
            "worker": self.worker,
            "controller": self.controller,
            "phase": phase,
            "task": task,
            "cpu": cpu,
            "resident": memory.rss,
            "virtual": memory.vms,
        }

    def _write(self, record: dict[str, Any]) -> None:
        line = f"{MARKER} {json.dumps(record, separators=(',', ':'))}\n".encode()
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view) :]

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# the user's side -----------------------------------------------------------


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The samples in a file, or in every file under a folder (worker logs too).

    Lines with the marker are parsed wherever the marker stands in the line;
    every other line, and a marked line that is not valid JSON, is skipped.
    Each sample gains ``elapsed``: seconds since the first sample of the same
    worker process. Samples are returned in time order.
    """
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    elif root.exists():
        files = [root]
    else:
        raise FileNotFoundError(f"no such file or folder: {os.fspath(path)!r}")
    records: list[dict[str, Any]] = []
    for file in files:
        try:
            handle = open(file, "rb")  # noqa: SIM115 (closed below, skipped if unreadable)
        except OSError:
            if file is root:
                raise
            continue
        with handle:
            for line in handle:
                record = _parse(line)
                if record is not None:
                    records.append(record)
    records.sort(key=lambda r: r["time"])
    first: dict[tuple[Any, Any], float] = {}
    for record in records:
        key = (record.get("worker"), record.get("pid"))
        record["elapsed"] = record["time"] - first.setdefault(key, record["time"])
    return records


_MARKER = MARKER.encode()
_DECODER = json.JSONDecoder()


def _parse(line: bytes) -> dict[str, Any] | None:
    """The sample on a line, wherever its marker stands; None if it holds none."""
    at = line.find(_MARKER)
    if at < 0:
        return None
    text = line[at + len(_MARKER) :].decode("utf-8", "replace").strip()
    try:
        # raw_decode: whatever followed on the same line does not matter
        record, _ = _DECODER.raw_decode(text)
    except ValueError:
        return None
    if isinstance(record, dict) and isinstance(record.get("time"), (int, float)):
        return record
    return None


def tail(path: str | os.PathLike[str], worker: str, count: int) -> list[dict[str, Any]]:
    """A worker's latest ``count`` samples, from the end of its file in folder ``path``
    (``[]`` if it has none yet): cheap enough to call every second."""
    name = worker.replace(os.sep, "_").replace("/", "_")
    try:
        with open(os.path.join(path, f"{name}.metrics"), "rb") as file:
            end = file.seek(0, os.SEEK_END)
            file.seek(max(0, end - _TAIL_BYTES))
            lines = file.read().splitlines()
    except OSError:
        return []
    samples: list[dict[str, Any]] = []
    for line in reversed(lines):
        # the first line read may be cut, the last one half written: neither parses
        sample = _parse(line)
        if sample is not None:
            samples.append(sample)
            if len(samples) >= count:
                break
    samples.reverse()
    return samples


def to_pandas(records: Iterable[Mapping[str, Any]]) -> Any:
    """The samples as a ``pandas.DataFrame``, with a UTC ``datetime`` column from ``time``."""
    try:
        pandas: Any = importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(
            "pycrew.metrics.to_pandas needs pandas, which pycrew does not install: "
            "pip install pandas"
        ) from exc
    frame = pandas.DataFrame.from_records([dict(r) for r in records])
    if "time" in frame:
        frame["datetime"] = pandas.to_datetime(frame["time"], unit="s", utc=True)
    return frame


def plot(
    records: Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    metric: str = "resident",
    path: str | os.PathLike[str] = "memory.png",
    *,
    size: tuple[int, int] = (800, 400),
    title: str | None = None,
) -> str:
    """Draw one line per worker over time, tasks shaded, into a PNG; returns its path.

    Args:
        records: samples from ``read``, or a path to read them from.
        metric: ``"resident"`` or ``"virtual"`` memory (in MiB), or ``"cpu"``
            (percent of one core: a busy worker with threads may pass 100).
        path: where to write the picture (its suffix picks the format).
        size: width and height in pixels.
        title: the picture's title; by default it names the controller.

    Each task a worker ran is a shaded span of that worker's colour, from the
    first to the last sample taken while it ran (a task shorter than the
    interval may fall between samples and not show), labelled with the
    task's name when the samples carry one. matplotlib draws without a window
    and without touching pyplot's state, so this is safe in a notebook or a
    server.
    """
    if metric not in METRICS:
        raise ArgumentError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if isinstance(records, (str, os.PathLike)):
        records = read(records)
    samples = [r for r in records if isinstance(r.get(metric), (int, float))]
    if not samples:
        raise ArgumentError(f"no samples with {metric!r} to plot")
    try:
        figure_module: Any = importlib.import_module("matplotlib.figure")
        agg: Any = importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError as exc:
        raise ImportError("pycrew.metrics.plot needs matplotlib: pip install matplotlib") from exc
    dpi = 100
    figure = figure_module.Figure(
        figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained"
    )
    agg.FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    start = min(float(r["time"]) for r in samples)
    scale = 1.0 if metric == "cpu" else 1.0 / 2**20
    workers: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for record in sorted(samples, key=lambda r: float(r["time"])):
        workers.setdefault((str(record.get("worker")), record.get("pid")), []).append(record)
    # Tasks: the area under a worker's line is filled while a task runs, and
    # a strip per worker along the bottom shows each task as a bar, alternate
    # ones lighter, so that back-to-back tasks stay apart and the spans of
    # several workers never cover one another.
    strip = min(0.04, 0.2 / len(workers))
    fill = min(0.15, 0.6 / len(workers))  # many workers' fills add up
    labels = []
    for k, ((worker, pid), rows) in enumerate(workers.items()):
        xs = [float(r["time"]) - start for r in rows]
        ys = [r[metric] * scale for r in rows]
        (line,) = axes.plot(xs, ys, label=f"{worker} (pid {pid})", linewidth=1.2)
        color = line.get_color()
        for n, (first, last, x0, x1, phase) in enumerate(_task_spans(rows, xs)):
            axes.fill_between(
                xs[first : last + 1], ys[first : last + 1], color=color, alpha=fill, linewidth=0
            )
            bottom = 0.01 + k * strip
            axes.axvspan(
                x0,
                x1,
                ymin=bottom,
                ymax=bottom + 0.8 * strip,
                color=color,
                alpha=0.8 if n % 2 == 0 else 0.45,
                linewidth=0,
            )
            if phase not in ("task", ""):
                labels.append(((x0 + x1) / 2, max(ys[first : last + 1]), phase, color))
    if len(labels) <= 40:  # names where the samples carry them, while they fit
        for x, y, phase, color in labels:
            axes.annotate(
                phase,
                (x, y),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color=color,
                clip_on=True,
            )
    controllers = sorted({str(r.get("controller")) for r in samples})
    if title is None:
        title = "pycrew workers" + (f" of {controllers[0]}" if len(controllers) == 1 else "")
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("seconds since the first sample")
    axes.set_ylabel(METRICS[metric])
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if len(workers) <= 12:  # below the axes, where it hides no line and no task
        figure.legend(fontsize=7, loc="outside lower center", ncols=min(len(workers), 4))
    # no Software stamp: the same samples make the same file
    figure.savefig(path, dpi=dpi, metadata={"Software": None})
    return str(os.fspath(path))


def _task_spans(
    rows: list[Mapping[str, Any]], xs: list[float]
) -> list[tuple[int, int, float, float, str]]:
    """Each run of samples taken during one task: its first and last index, where
    its bar starts and ends, and its phase (the task's name, or ``"task"``)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(xs) if b > a)
    # half the usual gap on each side: a one-sample task still shows
    pad = gaps[len(gaps) // 2] / 2 if gaps else 0.5
    spans: list[tuple[int, int, float, float, str]] = []
    i = 0
    while i < len(rows):
        task = rows[i].get("task")
        if task is None:
            i += 1
            continue
        j = i
        while j + 1 < len(rows) and rows[j + 1].get("task") == task:
            j += 1
        spans.append((i, j, xs[i] - pad, xs[j] + pad, str(rows[i].get("phase", ""))))
        i = j + 1
    return spans
