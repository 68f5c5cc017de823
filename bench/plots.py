"""PNGs of the bench's figures (matplotlib, the ``plot`` extra).

``latency`` reads a bench.py run (bench/results.json); ``scaling`` reads
bench/scaling.json. Each returns the paths it wrote.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis: Any, decades: float) -> None:
    """Log scale with plain numbers (10, 20, 50, 100), not powers of ten; over
    many decades, only the powers of ten, so that the labels do not collide."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0,) if decades > 2.5 else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def latency(run: dict[str, Any], folder: Path) -> list[Path]:
    """Round-trip distributions (empirical CDFs), an imported and a script function."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    parts = (
        ("round_trip", "function imported from a module"),
        ("round_trip_script", "function defined in the script"),
    )
    for ax, (part, title) in zip(axes, parts, strict=True):
        low, high = math.inf, 0.0
        for entry in run["systems"].values():
            samples = sorted(entry.get("warm", {}).get(part, {}).get("samples_us") or [])
            if not samples:
                continue
            low, high = min(low, samples[0]), max(high, samples[-1])
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            ax.step(samples, ys, where="post", label=entry["label"])
        floor = run.get("floor", {}).get("blocking", {}).get("median")
        if floor:
            ax.axvline(floor, color="grey", linestyle=":", label="loopback ping-pong")
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis, math.log10(high / low) if 0 < low < high else 0.0)
        ax.set_xlabel("round trip, \u00b5s (log)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of round trips at most this long")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = folder / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def scaling(data: dict[str, Any], folder: Path) -> list[Path]:
    """The 10 k to 1 M tasks curve (time and memory) and the workers curve."""
    plt = _pyplot()
    written = []
    points = [p for p in data.get("tasks", {}).get("points", []) if "error" not in p]
    if points:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for system in dict.fromkeys(p["system"] for p in points):
            mine = sorted((p for p in points if p["system"] == system), key=lambda p: p["n"])
            ns = [p["n"] for p in mine]
            left.plot(ns, [p["total_s"] for p in mine], marker="o", label=system)
            right.plot(ns, [p["peak_mb"] for p in mine], marker="o", label=system)
        for ax, label in ((left, "walk + wait + collect, s"), (right, "controller peak RSS, MB")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("tasks")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.suptitle("Trivial tasks on 2 workers: time and memory as the count grows")
        fig.tight_layout()
        path = folder / "tasks.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    points = [p for p in data.get("workers", {}).get("points", []) if "error" not in p]
    if points:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for system in dict.fromkeys(p["system"] for p in points):
            mine = sorted((p for p in points if p["system"] == system), key=lambda p: p["workers"])
            ax.plot(
                [p["workers"] for p in mine],
                [p["tasks_per_s"] for p in mine],
                marker="o",
                label=system,
            )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("local workers (on the same cores)")
        ax.set_ylabel("trivial tasks/s")
        ax.set_title("Rate as workers are added")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        path = folder / "workers.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
