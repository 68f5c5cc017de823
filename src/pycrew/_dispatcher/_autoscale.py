"""Auto-scaling policy: how many workers to launch now. Pure arithmetic, no I/O.

Workers carry ids, so unlike crew we never estimate who is still starting:
each launched id is *launching* until it connects, *connected* until it
leaves, and *failed* if it never connected within ``seconds_launch`` or its
process ended first.

    demand = min(workers, unresolved tasks)
    supply = connected + launching
    launch = max(0, demand - supply)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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

    def on_launched(self, ids: list[str], now: float) -> None:
        for worker_id in ids:
            self.launching[worker_id] = now
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

    def on_died(self, worker_id: str) -> None:
        """A launched worker's process ended before it connected."""
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
        self.failed += len(late)
        self.failed_in_a_row += len(late)
        return late

    def supply(self) -> int:
        return len(self.connected) + len(self.launching)

    def to_launch(self, unresolved: int) -> int:
        demand = min(self.workers, unresolved)
        return max(0, demand - self.supply())
