"""Auto-scaling policy: how many workers to launch now. Pure arithmetic, no I/O.

Workers carry ids, so unlike crew we never estimate who is still starting:
each launched id is *launching* until it connects, *connected* until it
leaves, and *failed* if it never connected within ``seconds_launch`` or its
process ended first.

    demand = min(workers, unresolved tasks)
    supply = connected + launching
    launch = max(0, demand - supply)

Workers launched for a resource shape are counted apart, per shape, and
only against the total cap: tasks without a shape are served by workers
without one, as they always were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._resources import Resources


@dataclass
class Autoscaler:
    """Bookkeeping of launched workers and the scaling decision.

    Args:
        workers: the most workers auto-scaling keeps at once.
        seconds_launch: how long a launched worker may take to connect.
    """

    workers: int
    seconds_launch: float
    launching: dict[str, float] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    failed: int = 0
    #: failures since a launched worker last connected
    failed_in_a_row: int = 0
    launched_total: int = 0
    #: launched or connected workers that have a shape, by id
    shapes: dict[str, Resources] = field(default_factory=dict)

    def on_launched(self, ids: list[str], now: float, shape: Resources | None = None) -> None:
        for worker_id in ids:
            self.launching[worker_id] = now
            if shape is not None:
                self.shapes[worker_id] = shape
        self.launched_total += len(ids)

    def on_connected(self, worker_id: str) -> bool:
        """Record a connection; False if the id was never launched or already failed."""
        if self.launching.pop(worker_id, None) is None:
            return False
        self.connected.add(worker_id)
        self.failed_in_a_row = 0
        return True

    def on_disconnected(self, worker_id: str) -> None:
        self.connected.discard(worker_id)
        self.shapes.pop(worker_id, None)

    def on_died(self, worker_id: str) -> None:
        """A launched worker's process ended before it connected."""
        self.shapes.pop(worker_id, None)
        if self.launching.pop(worker_id, None) is not None:
            self.failed += 1
            self.failed_in_a_row += 1

    def expire(self, now: float) -> list[str]:
        """Ids still launching after ``seconds_launch``: counted failed and forgotten."""
        if math.isinf(self.seconds_launch):
            return []
        late = [i for i, t in self.launching.items() if now - t >= self.seconds_launch]
        for worker_id in late:
            del self.launching[worker_id]
            self.shapes.pop(worker_id, None)
        self.failed += len(late)
        self.failed_in_a_row += len(late)
        return late

    def supply(self) -> int:
        return len(self.connected) + len(self.launching)

    def to_launch(self, unresolved: int) -> int:
        """Workers without a shape to launch for ``unresolved`` tasks without one."""
        supply = self.supply()
        demand = min(self.workers, unresolved)
        return max(0, min(demand - (supply - len(self.shapes)), self.workers - supply))

    def to_launch_shaped(self, demand: dict[Resources, int]) -> dict[Resources, int]:
        """Workers to launch per shape for the tasks of each, within the total cap."""
        room = self.workers - self.supply()
        have: dict[Resources, int] = {}
        for shape in self.shapes.values():
            have[shape] = have.get(shape, 0) + 1
        plan = {}
        for shape, wanted in demand.items():
            n = min(wanted - have.get(shape, 0), room)
            if n > 0:
                plan[shape] = n
                room -= n
        return plan
