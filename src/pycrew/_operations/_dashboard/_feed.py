"""One poller of ``status(since)`` for every open page, and what each page is sent.

```
 ticker (while a page is open) ── status(cursor) in the io pool ──► rings:
     last 2,000 stream bars, last 500 events, the history samples
       │ per tick: one "tick" message (only what is new since the last one)
       ├─► page A's queue ─► /events ─► browser
       └─► page B's queue (a page just opened gets one "snapshot" instead)
```

The controller is asked once per tick however many pages are open, and not at
all while none is. The cursor (``seq``) stays here, so a tick carries only
the bars and events that are new; a page that joins gets the rings as they
are. A page that cannot keep up (its queue is full) is dropped: its browser
reconnects and starts again from a snapshot, instead of the server buffering
without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("pycrew.dashboard")

__all__ = ["STREAM_WINDOW", "Feed", "Page"]

#: the most task-stream bars a page is sent (and keeps)
STREAM_WINDOW = 2000
EVENT_WINDOW = 500
#: messages a page may fall behind before it is dropped
_BACKLOG = 8
Status = dict[str, Any]
#: parts of a status that the feed sends as increments
_INCREMENTAL = ("stream", "events", "history")


class Page:
    """One open ``/events`` connection: its queue of encoded messages."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(_BACKLOG)
        self.fresh = True

    def send(self, message: bytes) -> bool:
        """Queue ``message``; False (and the page is told to leave) when it fell behind."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.end()
            return False
        return True

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Feed:
    """Polls ``status`` every ``interval`` seconds while pages are open; runs on the loop."""

    def __init__(self, status: Callable[[int], Status], interval: float) -> None:
        self._status = status
        self._interval = interval
        self._pages: set[Page] = set()
        self._cursor = 0
        self._latest: Status | None = None
        self._stream: collections.deque[Any] = collections.deque(maxlen=STREAM_WINDOW)
        self._events: collections.deque[Any] = collections.deque(maxlen=EVENT_WINDOW)
        self._history: list[Any] = []
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def cursor(self) -> int:
        """The newest ``seq`` seen: a snapshot asked with it carries no stream again."""
        return self._cursor

    def join(self) -> Page:
        page = Page()
        if self._closed:
            page.end()
            return page
        self._pages.add(page)
        self._wake.set()  # a new page should not wait a whole interval for its snapshot
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_while_watched())
        return page

    def leave(self, page: Page) -> None:
        self._pages.discard(page)

    async def close(self) -> None:
        self._closed = True
        for page in list(self._pages):
            page.end()
        self._pages.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _tick_while_watched(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pages and not self._closed:
            self._wake.clear()
            try:
                status = await loop.run_in_executor(None, self._status, self._cursor)
            except Exception as exc:  # a closed controller: tell the pages, keep trying
                status = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                self.publish(status)
            except Exception:  # a bug here must not leave every page without news
                log.exception("the dashboard could not send a status to its pages")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    def publish(self, status: Status) -> None:
        """Take in one status and send every page its message."""
        tick = self.absorb(status)
        encoded_tick = _encode(tick)
        encoded_snapshot: bytes | None = None
        for page in list(self._pages):
            if page.fresh:
                if encoded_snapshot is None:
                    encoded_snapshot = _encode(self.snapshot())
                message = encoded_snapshot
                page.fresh = False
            else:
                message = encoded_tick
            if not page.send(message):
                self._pages.discard(page)

    def absorb(self, status: Status) -> dict[str, Any]:
        """Fold one status into the rings; the "tick" message of what it brought."""
        if "error" in status and "tasks" not in status:
            return {"kind": "tick", "status": self._latest, "error": status["error"]}
        stream = list(status.get("stream") or ())[-STREAM_WINDOW:]
        events = list(status.get("events") or ())[-EVENT_WINDOW:]
        history = list(status.get("history") or ())
        last = self._history[-1][0] if self._history else None
        new_history = [h for h in history if last is None or h[0] > last]
        self._stream.extend(stream)
        self._events.extend(events)
        self._history = history
        self._cursor = max(self._cursor, int(status.get("seq") or 0))
        self._latest = {k: v for k, v in status.items() if k not in _INCREMENTAL}
        return {
            "kind": "tick",
            "status": self._latest,
            "stream": stream,
            "events": events,
            "history": new_history,
        }

    def snapshot(self) -> dict[str, Any]:
        """What a page that just opened needs: the latest status and the rings."""
        return {
            "kind": "snapshot",
            "status": self._latest,
            "stream": list(self._stream),
            "events": list(self._events),
            "history": self._history,
        }


def _encode(message: dict[str, Any]) -> bytes:
    # one "data:" line: json.dumps escapes every newline inside strings
    return b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"
