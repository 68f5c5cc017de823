"""A progress bar (rich) for map, walk and as_completed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def progress_bar(total: int) -> Callable[[int | None], None]:
    """Start a bar for ``total`` tasks; call the result with the count done, ``None`` to end."""
    from rich.progress import Progress

    bar = Progress(transient=False)
    task_id = bar.add_task("tasks", total=total)
    bar.start()

    def update(done: int | None) -> None:
        if done is None:
            bar.stop()
        else:
            bar.update(task_id, completed=done)

    return update
