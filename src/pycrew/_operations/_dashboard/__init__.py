"""A live web dashboard and a Prometheus ``/metrics`` page over a controller's status.

Everything here is a view: it calls the ``status(since)`` it is given and never
steers the controller, except through the ``cancel`` callable a user opts into.
Imported only by ``Controller.dashboard()``; ``import pycrew`` and workers never
load it (it needs the ``dashboard`` extra: aiohttp, plotly, prometheus-client).

```
 caller's thread            "pycrew-dashboard" thread (one event loop)       browser
 serve(status, ...) ──► Dashboard ─ aiohttp app ─ _guard (token, cookie, CSRF)
                                       │
     status(since) ◄── io pool ◄── _feed: one poller, rings of the last bars,
                                       │    fan-out ─► /events (server-sent) ──► page
                                       ├─ /api/status, /api/worker/<id>/log, /api/cancel
                                       └─ /metrics ◄── _prometheus collector ◄── scraper
```
"""
