"""The dashboard's web server: an aiohttp app on its own event loop, in one daemon thread.

```
 serve() ─► Dashboard ─ starts ─► "pycrew-dashboard" thread: loop.run_forever()
   .url (token)                     ├─ aiohttp app: _guard.middleware, routes below
   .close() ─ stop on the loop ─►   ├─ _feed.Feed (one poller for every page)
              then join (bounded)   └─ io pool "pycrew-dashboard-io": status(),
                                       worker_log(), cancel(), which may block
 GET  /                  the page            GET /events            server-sent events
 GET  /static/<file>     page assets, plotly GET /api/session       title, cancel on?, CSRF
 GET  /api/status        status(since) JSON  GET /api/worker/<id>/log
 POST /api/cancel        (cancel= given)     GET /metrics           Prometheus text
```

The controller's calls run in a small pool of the dashboard's own, never on the
loop, so that a slow ``status()`` delays one tick and not every request. The
pool's threads, like the loop's, are named ``pycrew-...`` and joined at close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from pycrew._operations._dashboard import _prometheus
from pycrew._operations._dashboard._feed import Feed
from pycrew._operations._dashboard._guard import CSRF_HEADER, Guard

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["Dashboard", "serve"]

STATIC = Path(__file__).with_name("static")
_ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
#: seconds to wait for the server to start, and for it to stop at close()
_START = 30.0
_STOP = 10.0
#: names one cancel request may carry
_MOST_NAMES = 100_000
# The page's own script and styles only; plotly sets style attributes inline.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def serve(
    status: Callable[[int], dict[str, Any]],
    *,
    cancel: Callable[[list[str]], None] | None = None,
    worker_log: Callable[[str], str | None] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    title: str = "pycrew",
    interval: float = 1.0,
) -> Dashboard:
    """Start a dashboard over ``status`` and return once it listens.

    Args:
        status: ``status(since)``, shaped as ``Controller.status()``.
        cancel: called with task names from the page's cancel buttons; ``None``
            (the default) makes the dashboard read-only.
        worker_log: the tail of a worker's log by worker id, or ``None``.
        host: the address to bind; the caller decides whether it may be public.
        port: 0 lets the operating system pick one.
        title: shown in the page's title and header.
        interval: seconds between two updates of an open page.

    Returns:
        The running ``Dashboard``; open ``.url`` (it holds the token).

    Raises:
        ImportError: plotly (the page's charts) is not installed.
        OSError: the address cannot be bound.
    """
    plotly = _plotly_js()
    dashboard = Dashboard(
        status,
        cancel=cancel,
        worker_log=worker_log,
        host=host,
        port=port,
        title=title,
        interval=interval,
        plotly=plotly,
    )
    dashboard._start()
    return dashboard


class Dashboard:
    """A running dashboard: its address, and ``close()`` (idempotent, bounded)."""

    def __init__(
        self,
        status: Callable[[int], dict[str, Any]],
        *,
        cancel: Callable[[list[str]], None] | None,
        worker_log: Callable[[str], str | None] | None,
        host: str,
        port: int,
        title: str,
        interval: float,
        plotly: Path,
    ) -> None:
        self._status = status
        self._cancel = cancel
        self._worker_log = worker_log
        self._title = title
        self._plotly = plotly
        self._guard = Guard(host)
        self._interval = interval
        self._wanted = (host, port)
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="pycrew-dashboard-io"
        )
        self._loop.set_default_executor(self._pool)
        self._thread = threading.Thread(target=self._run, name="pycrew-dashboard", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._feed: Feed | None = None
        self._scraped = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        """The address to open, with the token: treat it as a password."""
        return f"{self._base()}/?token={quote(self._guard.token)}"

    @property
    def token(self) -> str:
        """The token alone, for a Prometheus scraper's ``Authorization: Bearer``."""
        return self._guard.token

    @property
    def read_only(self) -> bool:
        """True unless the page may cancel tasks."""
        return self._cancel is None

    def _base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<Dashboard {self._base()}/ {state}>"

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving: open pages see the end of their stream; waits at most ~10 s."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive() and self._loop.is_running():
            stopping = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
            with contextlib.suppress(Exception):
                stopping.result(_STOP)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self._thread.is_alive():
            self._loop.close()

    # -- the loop's thread -------------------------------------------------

    def _start(self) -> None:
        self._thread.start()
        if not self._ready.wait(_START):
            self.close()
            raise TimeoutError(f"the dashboard did not start within {_START:.0f} s")
        if self._failure is not None:
            failure = self._failure
            self.close()
            raise failure

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:  # handed to serve()'s caller
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        # anything left (an SSE handler mid-write) is cancelled, not abandoned
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    async def _open(self) -> None:
        host, port = self._wanted
        sock = _bind(host, port)
        self.port = sock.getsockname()[1]
        self._guard.bind(self.port)
        self._feed = Feed(self._status, self._interval)
        app = web.Application(middlewares=[self._guard.middleware], client_max_size=2**20)
        app.on_response_prepare.append(_headers)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/status", self._status_json)
        app.router.add_get("/api/worker/{worker}/log", self._log)
        app.router.add_post("/api/cancel", self._cancel_tasks)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        try:
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            await self._runner.cleanup()
            sock.close()
            raise

    async def _stop(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- routes ------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": _CSP})

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "plotly.min.js":
            # 4.8 MB that never changes within a version: let the browser keep it
            headers = {"Content-Type": "text/javascript", "Cache-Control": "private, max-age=86400"}
            return web.FileResponse(self._plotly, headers=headers)
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": _ASSETS[name]})

    async def _session(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "title": self._title,
                "cancel": self._cancel is not None,
                "logs": self._worker_log is not None,
                "csrf": self._guard.csrf,
                "csrf_header": CSRF_HEADER,
                "interval": self._interval,
            }
        )

    async def _status_json(self, request: web.Request) -> web.StreamResponse:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest() from None
        status = await self._call(self._status, since)
        return web.json_response(status)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert self._feed is not None
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        page = self._feed.join()
        try:
            await response.write(f"retry: {int(self._interval * 2000)}\n\n".encode())
            while (message := await page.queue.get()) is not None:
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser left, or the dashboard is closing
        finally:
            self._feed.leave(page)
        return response

    async def _log(self, request: web.Request) -> web.StreamResponse:
        if self._worker_log is None:
            raise web.HTTPNotFound()
        text = await self._call(self._worker_log, request.match_info["worker"])
        if text is None:
            raise web.HTTPNotFound()
        return web.Response(text=text, content_type="text/plain")

    async def _cancel_tasks(self, request: web.Request) -> web.StreamResponse:
        if self._cancel is None:
            raise web.HTTPForbidden()  # read-only: the guard let it through only this far
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest() from None
        names = body.get("names") if isinstance(body, dict) else None
        if (
            not isinstance(names, list)
            or len(names) > _MOST_NAMES
            or not all(isinstance(n, str) for n in names)
        ):
            raise web.HTTPBadRequest()
        await self._call(self._cancel, names)
        return web.json_response({"cancelled": len(names)})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        # a cursor from the last look, so that a scrape is not sent the task stream again
        cursor = max(self._feed.cursor if self._feed is not None else 0, self._scraped)
        status = await self._call(self._status, cursor)
        seq = status.get("seq")
        if isinstance(seq, int):
            self._scraped = seq
        body = await self._call(_prometheus.render, status)
        return web.Response(body=body, headers={"Content-Type": _prometheus.CONTENT_TYPE})

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket of the right family, so that port 0 tells its number at once."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _plotly_js() -> Path:
    """plotly's own copy of plotly.js, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise ImportError(
        "the dashboard's charts come from plotly's package: pip install 'pycrew[dashboard]'"
    )
