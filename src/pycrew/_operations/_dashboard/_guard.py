"""Who may read the dashboard, and who may cancel: the token, the cookie, the CSRF value.

```
 request ─► Host allowed? ─► token (?token=, Bearer) or session cookie? ─► handler
              │ no              │ no: 403, no detail     │ ?token= on the page:
              └─ 403            └───────────────────────┘ cookie + 303 to the bare URL
 POST /api/cancel ─► also: cancel enabled, same Origin, X-Pycrew-CSRF matches
```

The token is printed once, in the URL the user opens (as Jupyter does). The
page trades it for an HttpOnly, SameSite=Strict cookie holding a different
random value, so that the token leaves the address bar and no script can read
what the cookie holds. Prometheus scrapers send ``Authorization: Bearer``.
Every comparison is constant-time. The CSRF value is not a credential: it only
proves that a POST came from our own page's script, which another site's page
cannot read (no CORS headers are ever sent).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

__all__ = ["CSRF_HEADER", "Guard"]

CSRF_HEADER = "X-Pycrew-CSRF"
#: routes a cross-site page must never trigger (browsers send no custom header
#: cross-origin without a CORS preflight, which this server never answers)
_WRITES = frozenset({"/api/cancel"})


class Guard:
    """The credentials of one dashboard, and the aiohttp middleware that checks them."""

    def __init__(self, host: str) -> None:
        self.token = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self._session = secrets.token_urlsafe(32)
        self._host = host
        self._hosts: frozenset[str] = frozenset()
        self.cookie = "pycrew-dashboard"

    def bind(self, port: int) -> None:
        """Learn the port (cookies are not kept apart by port, so its name carries it)."""
        self.cookie = f"pycrew-dashboard-{port}"
        if _loopback(self._host):
            # a page on another name that resolves here (DNS rebinding) is refused
            names = {self._host, "127.0.0.1", "localhost", "[::1]"}
            names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
            self._hosts = frozenset(f"{n}:{port}" for n in names)

    def __repr__(self) -> str:
        return f"<Guard host={self._host!r}>"

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._hosts and request.headers.get("Host", "") not in self._hosts:
            raise web.HTTPForbidden()
        query_token = request.query.get("token")
        if query_token is not None and _same(query_token, self.token):
            if request.method == "GET" and request.path == "/":
                # trade the token for a cookie, and take it out of the address bar
                response = web.HTTPSeeOther("/")
                response.set_cookie(
                    self.cookie,
                    self._session,
                    path="/",
                    httponly=True,
                    samesite="Strict",
                )
                raise response
        elif not self._allowed(request):
            raise web.HTTPForbidden()
        if request.path in _WRITES and request.method == "POST":
            self._check_write(request)
        return await handler(request)

    def _allowed(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(value.strip(), self.token):
            return True
        return _same(request.cookies.get(self.cookie, ""), self._session)

    def _check_write(self, request: web.Request) -> None:
        if not _same(request.headers.get(CSRF_HEADER, ""), self.csrf):
            raise web.HTTPForbidden()
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden()
        if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
            raise web.HTTPForbidden()


def _same(given: str, expected: str) -> bool:
    # bytes, so that a non-ASCII guess is refused rather than raising TypeError
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
