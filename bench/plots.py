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


def peers(run: dict[str, Any], folder: Path) -> list[Path]:
    """The same-run ratios of pycrew to each peer, one bar chart per figure."""
    from matplotlib.ticker import FuncFormatter

    from adapters import PYCREW_KEYS
    from report import RATIOS, better_ratio

    systems = {k: e for k, e in run["systems"].items() if e.get("summary")}
    mine = [k for k in PYCREW_KEYS if k in systems]
    others = [k for k in systems if k not in PYCREW_KEYS]
    if not mine or not others:
        return []
    plt = _pyplot()
    cols = 4
    rows = math.ceil(len(RATIOS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / len(mine)
    for ax, (metric, title, kind) in zip(axes.flat, RATIOS, strict=False):
        for j, pk in enumerate(mine):
            ps = systems[pk]["summary"]
            values = [better_ratio(kind, ps[metric], systems[q]["summary"][metric]) for q in others]
            xs = [i + (j - (len(mine) - 1) / 2) * width for i in range(len(others))]
            # Bars grow from 1 (even), up where pycrew is better, down where it is
            # worse; a missing ratio is marked, since no bar would read as "even".
            ax.bar(
                [x for x, v in zip(xs, values, strict=True) if v],
                [v - 1.0 for v in values if v],
                bottom=1.0,
                width=width,
                label=systems[pk]["label"],
            )
            for x, v in zip(xs, values, strict=True):
                if not v:
                    ax.text(
                        x,
                        0.5,
                        "no figure",
                        rotation=90,
                        ha="center",
                        va="center",
                        fontsize=7,
                        transform=ax.get_xaxis_transform(),  # x in data, y in the axes
                    )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        _plain_log_axis(ax.yaxis, math.log10(high / low) if 0 < low < high else 0.0)
        # ratios go below 0.1, where the plain formatter prints 0
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks(range(len(others)))
        ax.set_xticklabels([systems[q]["label"] for q in others], rotation=40, ha="right")
        ax.set_title(f"{title} ({'peer / pycrew' if kind == 'time' else 'pycrew / peer'})")
        ax.grid(alpha=0.3, axis="y", which="both")
    for ax in list(axes.flat)[len(RATIOS) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("pycrew against each peer, same run: above 1, pycrew is better (log scale)")
    fig.tight_layout()
    path = folder / "peers.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
