"""``pycrew top``: a running controller's state in the terminal, redrawn every second.

```
 pycrew top NAME ── find(NAME) ── ask("status", since=seq) ──► the controller's channel
        │                               ▲         │
        │   every --interval, until q,  └─────────┘ state: counts, worker rows, new events
        │   Ctrl-C, or the channel goes
        ▼
 frame(state, events) ── rich ──► header, workers, slowest tasks, events, errors
```

Everything shown is what ``Controller.status()`` gives, read through the
local channel (``_channel``); ``top`` never writes to the controller. Values
are read with defaults, since the controller may run another pycrew version.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ._channel import ChannelClosed, ChannelError, Listing, ask, find

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import ConsoleOptions, RenderableType, RenderResult

#: events kept across redraws (each status call brings only the newer ones)
EVENTS_KEPT = 200
EVENTS_SHOWN = 8
SLOWEST_SHOWN = 5
ERRORS_SHOWN = 3
#: how long a controller may take to answer before top says it does not
ASK_SECONDS = 10.0
#: the narrowest a column of names gets before the table is cut at the right
FLEX_MIN = 6

_STATE_STYLE = {"busy": "green", "idle": "dim", "launching": "yellow", "leaving": "magenta"}
_OUTCOME_STYLE = {
    "success": "green",
    "error": "red",
    "crash": "bold red",
    "cancel": "yellow",
    "timeout": "magenta",
}
_EVENT_STYLE = {
    "crash": "bold red",
    "exit": "red",
    "refused": "red",
    "retry": "yellow",
    "disconnect": "yellow",
    "connect": "green",
    "launch": "cyan",
}


# ------------------------------------------------------------ choosing a controller
def choose(name: str | None, command: str, err: TextIO) -> Listing | int:
    """The one controller ``name`` (a name or a pid) means, or the exit code and why on ``err``."""
    running = find()
    if not running:
        print(f"pycrew {command}: no controller of yours runs on this host", file=err)
        return 1
    if name is None:
        if len(running) == 1:
            return running[0]
        print(f"pycrew {command}: {len(running)} controllers run; name one:", file=err)
        _list(running, err)
        return 2
    chosen = [c for c in running if c.name == name or str(c.pid) == name]
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        names = ", ".join(sorted({c.name for c in running}))
        print(f"pycrew {command}: no controller {name!r} runs; these do: {names}", file=err)
        return 1
    print(f"pycrew {command}: {len(chosen)} controllers are named {name!r}; give a pid:", file=err)
    _list(chosen, err)
    return 2


def _list(listings: list[Listing], err: TextIO) -> None:
    now = time.time()
    for c in listings:
        print(f"  {c.name}  (pid {c.pid}, up {duration(now - c.started)})", file=err)


# ------------------------------------------------------------ the command
def top(name: str | None, *, once: bool, as_json: bool, interval: float) -> int:
    """Run ``pycrew top``: 0 after one frame, ``q`` or Ctrl-C; 1 when the controller goes."""
    chosen = choose(name, "top", sys.stderr)
    if isinstance(chosen, int):
        return chosen
    try:
        state = ask(chosen, "status", since=0, seconds=ASK_SECONDS)
    except ChannelError as exc:
        print(f"pycrew top: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(state, indent=2))
        return 0
    console = Console()
    if once or not console.is_terminal:
        # redrawing needs a terminal: a pipe or a file gets one frame
        console.print(frame(state, state.get("events") or []))
        return 0
    try:
        return _live(chosen, state, console, max(0.05, interval))
    except KeyboardInterrupt:
        return 0


def _live(chosen: Listing, state: dict[str, Any], console: Console, interval: float) -> int:
    from rich.live import Live

    events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
    events.extend(state.get("events") or [])
    seq = _int(state.get("seq"))
    gone: str | None = None
    with _keys() as pressed, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            rows = max(3, console.size.height - 24)
            live.update(frame(state, list(events), rows_max=rows), refresh=True)
            if pressed(interval):
                break
            try:
                state = ask(chosen, "status", since=seq, seconds=ASK_SECONDS)
            except ChannelClosed as exc:
                ended = all(c.path != chosen.path for c in find(chosen.name))
                gone = (
                    f"controller {chosen.name!r} (pid {chosen.pid}) has ended"
                    if ended
                    else str(exc)
                )
                break
            except ChannelError as exc:
                gone = f"controller {chosen.name!r} refused: {exc}"
                break
            if _int(state.get("seq")) < seq:
                events.clear()  # restarted: its cursor began again
            events.extend(state.get("events") or [])
            seq = _int(state.get("seq"))
    if gone is not None:
        print(f"pycrew top: {gone}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """A wait of at most N seconds that ends early, with True, when ``q`` is pressed.

    The terminal goes to cbreak mode (keys arrive unbuffered, Ctrl-C still
    interrupts) and comes back as it was, whatever ends the view.
    """
    stdin = sys.stdin
    fd = -1
    with contextlib.suppress(AttributeError, ValueError, OSError):
        fd = stdin.fileno() if stdin is not None and stdin.isatty() else -1
    if fd < 0:

        def wait(seconds: float) -> bool:
            time.sleep(seconds)  # no keys to read: a plain pause between redraws
            return False

        yield wait
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return False
            key = os.read(fd, 32)
            if not key or b"q" in key.lower():
                return True  # q, or the terminal went away
        return False

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ------------------------------------------------------------ one frame
def frame(
    state: dict[str, Any], events: list[dict[str, Any]], rows_max: int | None = None
) -> RenderableType:
    """The whole view of one state: header, workers, slowest tasks, events, errors."""
    parts: list[RenderableType] = [_header(state)]
    rows = [r for r in state.get("worker_rows") or [] if isinstance(r, dict)]
    parts.append(_workers(rows, state.get("kind") == "group", rows_max))
    running = sorted((r for r in rows if r.get("task")), key=lambda r: -_float(r.get("seconds")))[
        :SLOWEST_SHOWN
    ]
    if running:
        parts.append(_slowest(running))
    if events:
        parts.append(_events(events[-EVENTS_SHOWN:]))
    errors = [e for e in state.get("errors") or [] if isinstance(e, dict)]
    if errors:
        parts.append(_errors(errors[-ERRORS_SHOWN:]))
    spaced: list[RenderableType] = []
    for part in parts:
        spaced.extend([part, Text("")])
    return Group(*spaced[:-1])


def _header(state: dict[str, Any]) -> RenderableType:
    title = Text.assemble(
        ("pycrew top", "bold"),
        "  ",
        (str(state.get("controller", "?")), "bold cyan"),
        "  ",
        (str(state.get("engine", "?")), "cyan"),
        "  ",
        str(state.get("url") or "not started"),
        f"  tls {state.get('tls', '?')}",
        f"  pid {state.get('pid', '?')} on {state.get('host', '?')}",
        f"  up {duration(_float(state.get('uptime')))}",
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    if state.get("kind") == "group":
        grid.add_row("members", ", ".join(str(m) for m in state.get("members") or []))
    if state.get("broken"):
        grid.add_row(Text("broken", "bold red"), Text(str(state["broken"]), "red"))
    w = _dict(state.get("workers"))
    workers = _counts(
        [
            ("connected", w.get("connected"), "bold"),
            ("idle", w.get("idle"), ""),
            ("busy", w.get("busy"), "green"),
            ("launching", w.get("launching"), "yellow"),
        ]
    )
    workers.append(f"  of {w.get('max', '?')} at most · launched {_int(w.get('launched'))}")
    workers.append(f", exited {_int(w.get('exited'))}")
    workers.append(f", failed {_int(w.get('failed'))}", "red" if _int(w.get("failed")) else "")
    grid.add_row("workers", workers)
    t = _dict(state.get("tasks"))
    tasks = _counts(
        [
            ("queued", t.get("queued"), ""),
            ("waiting", t.get("waiting"), ""),
            ("running", t.get("running"), "bold"),
            ("resolved", t.get("resolved"), ""),
        ]
    )
    tasks.append(" · ")
    tasks.append_text(
        _counts([(k, t.get(k), s) for k, s in _OUTCOME_STYLE.items()], quiet_zero=True)
    )
    grid.add_row("tasks", tasks)
    m = _dict(state.get("memory"))
    cap = m.get("cap")
    b = _dict(state.get("bytes"))
    grid.add_row(
        "rate",
        Text.assemble(
            (f"{_float(state.get('rate')):.1f}", "bold"),
            " tasks/s   memory held ",
            (size(m.get("held")), "bold"),
            f", peak {size(m.get('peak'))}, cap {size(cap) if cap is not None else 'none'}",
            f"   sent {size(b.get('sent'))}, received {size(b.get('received'))}",
        ),
    )
    return Group(title, grid)


def _counts(items: list[tuple[str, Any, str]], quiet_zero: bool = False) -> Text:
    text = Text()
    for i, (label, value, style) in enumerate(items):
        n = _int(value)
        text.append(("  " if i else "") + str(n), style if n or not quiet_zero else "dim")
        text.append(f" {label}", "" if n or not quiet_zero else "dim")
    return text


#: a column: its header, right-aligned?, and whether it gives way on a narrow screen
Column = tuple[str, bool, bool]
Cell = str | Text


class _Fitted:
    """A table that fits the width it is drawn at: only the columns of names
    (tasks, functions, hosts, messages) give way, each with an ellipsis; the
    numbers and states keep their width."""

    def __init__(
        self, title: str, columns: list[Column], rows: list[list[Cell]], caption: str | None
    ) -> None:
        self.title, self.columns, self.rows, self.caption = title, columns, rows, caption

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = [
            max([len(header), *(_cell_len(row[i]) for row in self.rows)])
            for i, (header, _, _) in enumerate(self.columns)
        ]
        # a space either side of each cell, and a blank rule between columns
        excess = sum(natural) + 3 * len(natural) - 1 - options.max_width
        widths = list(natural)
        flexible = [i for i, (_, _, gives) in enumerate(self.columns) if gives]
        while excess > 0 and flexible:
            widest = max(flexible, key=lambda i: widths[i])
            if widths[widest] <= FLEX_MIN:
                break
            widths[widest] -= 1
            excess -= 1
        table = Table(
            title=self.title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            header_style="bold",
            caption=self.caption,
            caption_justify="left",
        )
        for (header, right, _), width in zip(self.columns, widths, strict=True):
            table.add_column(
                header,
                justify="right" if right else "left",
                no_wrap=True,
                overflow="ellipsis",
                width=width,
            )
        for row in self.rows:
            table.add_row(*row)
        yield table


def _cell_len(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def _workers(rows: list[dict[str, Any]], group: bool, rows_max: int | None) -> RenderableType:
    columns: list[Column] = [
        ("ID", False, True),
        *([("CONTROLLER", False, True)] if group else []),
        ("STATE", False, False),
        ("PID/JOB", True, False),
        ("HOST", False, True),
        ("TASK", False, True),
        ("FUNCTION", False, True),
        ("FOR", True, False),
        ("DONE", True, False),
        ("CPU", True, False),
        ("RSS", True, False),
    ]
    shown = rows if rows_max is None else rows[:rows_max]
    cells: list[list[Cell]] = []
    for row in shown:
        state = str(row.get("state", "?"))
        pid = row.get("pid")
        cells.append(
            [
                str(row.get("id", "?")),
                *([str(row.get("controller") or "-")] if group else []),
                Text(state, _STATE_STYLE.get(state, "")),
                str(pid) if pid is not None else str(row.get("job") or "-"),
                str(row.get("host") or "-"),
                str(row.get("task") or "-"),
                _first(row.get("function")),
                duration(row.get("seconds")) if row.get("task") else "-",
                str(_int(row.get("done"))),
                f"{_float(row['cpu']):.0f}%" if row.get("cpu") is not None else "-",
                size(row.get("rss")) if row.get("rss") is not None else "-",
            ]
        )
    caption = None
    if len(shown) < len(rows):
        rest = rows[len(shown) :]
        busy = sum(1 for r in rest if r.get("state") == "busy")
        caption = f"... and {len(rest)} more ({busy} busy)"
    elif not rows:
        caption = "no workers yet"
    return _Fitted("workers", columns, cells, caption)


def _slowest(rows: list[dict[str, Any]]) -> RenderableType:
    columns: list[Column] = [
        ("TASK", False, True),
        ("FUNCTION", False, True),
        ("WORKER", False, True),
        ("FOR", True, False),
    ]
    cells: list[list[Cell]] = [
        [
            str(row.get("task")),
            _first(row.get("function")),
            str(row.get("id", "?")),
            duration(row.get("seconds")),
        ]
        for row in rows
    ]
    return _Fitted("slowest running tasks", columns, cells, None)


def _events(events: list[dict[str, Any]]) -> RenderableType:
    columns: list[Column] = [
        ("TIME", False, False),
        ("KIND", False, False),
        ("WORKER", False, True),
        ("TASK", False, True),
        ("DETAIL", False, True),
    ]
    cells: list[list[Cell]] = []
    for event in events:
        kind = str(event.get("kind", "?"))
        cells.append(
            [
                _clock(event.get("time")),
                Text(kind, _EVENT_STYLE.get(kind, "")),
                str(event.get("worker") or "-"),
                str(event.get("task") or "-"),
                _line(event.get("detail")),
            ]
        )
    return _Fitted("recent events", columns, cells, None)


def _errors(errors: list[dict[str, Any]]) -> RenderableType:
    columns: list[Column] = [
        ("TIME", False, False),
        ("TASK", False, True),
        ("STATUS", False, False),
        ("ERROR", False, True),
    ]
    cells: list[list[Cell]] = []
    for error in errors:
        status = str(error.get("status", "?"))
        cells.append(
            [
                _clock(error.get("time")),
                str(error.get("name", "?")),
                Text(status, _OUTCOME_STYLE.get(status, "")),
                _line(error.get("error")),
            ]
        )
    return _Fitted("recent errors", columns, cells, None)


# ------------------------------------------------------------ formatting
def duration(seconds: object) -> str:
    """``4.2s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(n: object) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.2 GiB``; ``-`` when unknown."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover - the loop always returns


def _clock(when: object) -> str:
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(when))


def _first(text: object) -> str:
    """The first line (a code string's function is its code)."""
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else "-"


def _line(text: object) -> str:
    """A message on one line: its last (a traceback's last line names the error)."""
    if not text:
        return "-"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "-"


def _int(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
