"""``pycrew demo``: a short, visible tour of a local controller."""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._results import TaskResult


def _task(i: int) -> float:
    """A small task: a little arithmetic and a short pause."""
    time.sleep(random.uniform(0.0, 0.01))
    return math.sqrt(i)


def run_demo(tasks: int = 200, workers: int = 2, tls: str = "automatic") -> int:
    import psutil
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from ._controller._factories import local_controller

    console = Console()
    console.print(f"[bold]pycrew demo[/]: {tasks} tasks on {workers} local workers, TLS {tls}")
    started = time.perf_counter()
    ctl = local_controller(name="demo", workers=workers, tls=tls, seed=2026)
    with ctl:
        console.print(f"controller listening on [cyan]{ctl.url}[/]")
        for i in range(tasks):
            ctl.push(_task, i, name=f"task_{i + 1}")
        results: list[TaskResult] = []
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("running", total=tasks)
            while len(results) < tasks:
                ctl.wait(mode="one", seconds_timeout=1.0)
                done = ctl.collect()
                results.extend(done)
                progress.update(bar, advance=len(done))
        pids = sorted({r.pid for r in results if r.pid is not None})
        summary = ctl.summary()
    elapsed = time.perf_counter() - started
    assert summary is not None
    table = Table(title="summary", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    for key, value in summary.as_dict().items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    per_worker = {pid: sum(1 for r in results if r.pid == pid) for pid in pids}
    console.print("tasks per worker pid: " + ", ".join(f"{p}: {n}" for p, n in per_worker.items()))
    total = sum(r.result for r in results)
    console.print(
        f"sum of results: {total:.4f} (expected {sum(math.sqrt(i) for i in range(tasks)):.4f})"
    )
    left = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    if left:
        console.print(f"[red]workers still running: {left}[/]")
        return 1
    console.print(f"terminated: no worker left. Done in {elapsed:.2f} s.")
    return 0 if summary.success == tasks else 1
