"""A per-user record of launched workers, so that leftovers can be found after a crash."""

from __future__ import annotations

from typing import Any


def record_launches(
    controller: str, session: str, workers: list[dict[str, Any]]
) -> None:  # pragma: no cover - filled in below
    """Append launched workers (each a dict with ``worker`` and launcher details)."""


def end_session(session: str) -> None:  # pragma: no cover
    """A controller start ended cleanly: its workers are no longer anyone's concern."""
