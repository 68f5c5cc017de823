"""The web dashboard and its Prometheus page: real workers, a real server, a real browser.

The HTTP tests speak to the server with http.client, so that every header is
the test's own; the page tests drive Debian's headless Chromium through
selenium (tests/helpers/browser.py), and skip without it unless CI's
``PYCREW_REQUIRE_BROWSER=1``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("aiohttp", reason="the dashboard extra: pip install 'pycrew[dashboard]'")
pytest.importorskip(
    "prometheus_client", reason="the dashboard extra: pip install 'pycrew[dashboard]'"
)

from prometheus_client.parser import text_string_to_metric_families

import pycrew
from pycrew._operations._dashboard import _feed, _prometheus, _server
from tests.helpers import tasks
from tests.helpers.browser import chromium, console_errors, wait_js
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 60
#: a task that must outlast its whole test, however slow a loaded machine makes
#: the test (it is cancelled at the end): a run of WAIT seconds once ended
#: before the page was checked, and its success spoiled the count
LONG = 20 * WAIT
OUTCOMES = ("success", "error", "crash", "cancel", "timeout")
#: the error task prints first, so that its worker's log has a line of its own
FAILING = "print('hello from the log')\nraise ValueError('boom')"


# -- helpers ---------------------------------------------------------------------


def call(
    dash: _server.Dashboard,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these headers: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(dash.host, dash.port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def token(dash: _server.Dashboard) -> str:
    return dash.url.split("?token=", 1)[1]


def bearer(dash: _server.Dashboard) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(dash)}"}


def login(dash: _server.Dashboard) -> dict[str, str]:
    """Trade the token for the page's cookie, as a browser does; the headers to send it."""
    status, headers, _ = call(dash, f"/?token={token(dash)}")
    assert status == 303, status
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    return {"Cookie": cookie.split(";", 1)[0]}


def metrics(dash: _server.Dashboard) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus_client's own parser: {(sample, labels): value}."""
    status, headers, body = call(dash, "/metrics", headers=bearer(dash))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def ended(ctl: pycrew.Controller, **counts: int) -> bool:
    tasks_now = ctl.status()["tasks"]
    return all(tasks_now[k] >= v for k, v in counts.items())


class FakeRun:
    """A status() of a big run (``workers`` workers, ``per_call`` new bars a call), in the
    schema's shape: what a real run of 100,000 tasks would send, without running it."""

    def __init__(self, workers: int = 200, per_call: int = 10_000) -> None:
        self.workers = workers
        self.per_call = per_call
        self.seq = 0
        self.calls = 0
        self.lock = threading.Lock()

    def status(self, since: int) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
            now = time.time()
            stream = []
            for _ in range(self.per_call):
                self.seq += 1
                stream.append(
                    {
                        "seq": self.seq,
                        "name": f"task-{self.seq}",
                        "function": f"module.f{self.seq % 40}",
                        "worker": f"w-{self.seq % self.workers}",
                        "start": now - 1.0,
                        "end": now - 0.5,
                        "status": OUTCOMES[self.seq % 5],
                    }
                )
            done = self.seq
        rows = [
            {
                "id": f"w-{i}", "controller": "big", "state": "busy", "pid": 1000 + i,
                "host": "node", "job": None, "task": f"task-next-{i}", "function": "module.f1",
                "seconds": 1.0, "done": done // self.workers, "launched": now, "connected": now,
                "cpu": 99.0, "rss": 1 << 26,
                "samples": [[now - j, 90.0, 1 << 26] for j in range(30)],
            }
            for i in range(self.workers)
        ]  # fmt: skip
        functions = [
            {"function": f"module.f{i}", "queued": 10, "running": 5, "success": done // 40,
             "error": 1, "crash": 0, "cancel": 0, "timeout": 0}
            for i in range(40)
        ]  # fmt: skip
        return {
            "kind": "controller", "controller": "big", "engine": "local", "url": "tcp://x:1",
            "tls": "none", "host": "node", "pid": 1, "started": True, "uptime": 10.0,
            "time": now, "seq": self.seq, "broken": None,
            "tasks": {"pushed": 100_000, "queued": 100_000 - done, "running": self.workers,
                      "resolved": 0, "success": done, "error": 0, "crash": 0, "cancel": 0,
                      "timeout": 0},
            "rate": 1000.0,
            "history": [[now - 900 + i, 100_000 - i * 100, 200, i * 100] for i in range(900)],
            "functions": functions,
            "workers": {"connected": self.workers, "idle": 0, "busy": self.workers,
                        "launching": 0, "launched": self.workers, "exited": 0, "failed": 0,
                        "max": self.workers},
            "worker_rows": rows,
            "memory": {"held": 0, "peak": 0, "cap": None},
            "bytes": {"sent": 1, "received": 2},
            "stream": [e for e in stream if e["seq"] > since][-10_000:],
            "events": [], "errors": [],
        }  # fmt: skip


# -- the Prometheus page ------------------------------------------------------------


def test_the_collector_translates_one_snapshot_in_a_registry_of_its_own() -> None:
    from prometheus_client import REGISTRY

    state = FakeRun(workers=3, per_call=0).status(0)
    state["tasks"].update(success=7, error=2, crash=1, cancel=3, timeout=4, pushed=20, queued=3)
    state["memory"] = {"held": 5, "peak": 9, "cap": None}
    text = _prometheus.render(state).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for outcome, count in (("success", 7), ("error", 2), ("crash", 1), ("cancel", 3)):
        labels = (("controller", "big"), ("status", outcome))
        assert samples["pycrew_tasks_total", labels] == count
    assert samples["pycrew_tasks_pushed_total", (("controller", "big"),)] == 20
    assert samples["pycrew_worker_crashes_total", (("controller", "big"),)] == 1
    assert samples["pycrew_tasks_current", (("controller", "big"), ("state", "queued"))] == 3
    assert samples["pycrew_workers", (("controller", "big"), ("state", "busy"))] == 3
    assert samples["pycrew_memory_held_bytes", (("controller", "big"),)] == 5
    # no cap is no sample, not a made-up number
    assert not [k for k in samples if k[0] == "pycrew_memory_cap_bytes"]
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("pycrew")]


def test_metrics_after_a_run_count_what_summary_counts() -> None:
    with (
        pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl,
        ctl.dashboard() as dash,
    ):
        for i in range(6):
            ctl.push(tasks.add, i, 1, name=f"add-{i}")
        ctl.push(tasks.fail, "boom", name="bad")
        ctl.push(tasks.suicide, name="dies")
        assert ctl.wait(seconds_timeout=WAIT)
        ctl.collect()
        summary = ctl.summary()
        assert summary is not None
        samples = metrics(dash)
        me = ("controller", ctl.name)
        for outcome in OUTCOMES:
            assert samples["pycrew_tasks_total", (me, ("status", outcome))] == getattr(
                summary, outcome
            ), outcome
        assert samples["pycrew_tasks_pushed_total", (me,)] == 8
        assert samples["pycrew_worker_crashes_total", (me,)] == summary.crash >= 1
        assert samples["pycrew_worker_launches_total", (me,)] >= 2
        assert samples["pycrew_bytes_sent_total", (me,)] > 0
        assert samples["pycrew_bytes_received_total", (me,)] > 0
        assert samples["pycrew_tasks_current", (me, ("state", "queued"))] == 0


# -- who may look, who may cancel ---------------------------------------------------


def test_every_route_wants_the_token_and_hands_no_secret_out() -> None:
    with (
        pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl,
        ctl.dashboard() as dash,
    ):
        ctl.push(tasks.add, 1, 2, name="one")
        assert ctl.wait(seconds_timeout=WAIT)
        secret = token(dash)
        assert secret == dash.token
        assert secret not in repr(dash)
        assert dash.host == "127.0.0.1"
        routes = (
            "/",
            "/static/dashboard.js",
            "/static/plotly.min.js",
            "/events",
            "/api/session",
            "/api/status",
            "/api/worker/x/log",
            "/metrics",
        )
        for route in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "x=y"}):
                status, _, body = call(dash, route, headers=headers)
                assert (status, body) == (403, b"403: Forbidden"), (route, headers)
            status, _, _ = call(dash, f"{route}?token=wrong-{secret[:8]}")
            assert status == 403, route
            assert call(dash, route + "?token=%C3%A9")[0] == 403  # not ASCII: refused, no 500
        # a name that only resolves here (DNS rebinding) is refused even with the token
        forged = {**bearer(dash), "Host": f"attacker.example:{dash.port}"}
        assert call(dash, "/api/session", headers=forged)[0] == 403

        cookie = login(dash)
        for route in ("/", "/static/dashboard.js", "/api/session", "/api/status"):
            status, headers, body = call(dash, route, headers=cookie)
            assert status == 200, route
            assert secret.encode() not in body, route
            assert headers["x-frame-options"] == "DENY"
        status, headers, _ = call(dash, "/", headers=cookie)
        assert "script-src 'self'" in headers["content-security-policy"]
        assert call(dash, "/static/plotly.min.js", headers=cookie)[0] == 200
        session = json.loads(call(dash, "/api/session", headers=cookie)[2])
        assert session["cancel"] is False
        state = json.loads(call(dash, "/api/status", headers=cookie)[2])
        assert state["tasks"]["success"] == 1
        # read-only: no cancel, whatever the request carries
        csrf = {session["csrf_header"]: session["csrf"], "Content-Type": "application/json"}
        body = json.dumps({"names": ["one"]}).encode()
        status, _, _ = call(dash, "/api/cancel", method="POST", headers=cookie | csrf, body=body)
        assert status == 403
        assert call(dash, "/api/cancel", headers=cookie | csrf)[0] == 405


def test_cancel_wants_the_pages_csrf_value_and_its_origin() -> None:
    with (
        pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl,
        ctl.dashboard(allow_cancel=True) as dash,
    ):
        future = ctl.push(tasks.sleep, LONG, name="long")
        wait_until(lambda: ended(ctl, running=1), WAIT, "the long task to run")
        cookie = login(dash)
        session = json.loads(call(dash, "/api/session", headers=cookie)[2])
        assert session["cancel"] is True
        body = json.dumps({"names": ["long"]}).encode()
        plain = cookie | {"Content-Type": "application/json"}
        csrf = {session["csrf_header"]: session["csrf"]}
        refused = (
            plain,  # no CSRF header: another site's form or script
            plain | {session["csrf_header"]: "guess"},
            plain | csrf | {"Origin": "http://attacker.example"},
            plain | csrf | {"Sec-Fetch-Site": "cross-site"},
            {"Content-Type": "application/json"} | csrf,  # no credentials at all
        )
        for headers in refused:
            status, _, _ = call(dash, "/api/cancel", method="POST", headers=headers, body=body)
            assert status == 403, headers
        assert call(dash, "/api/cancel", headers=plain | csrf)[0] == 405  # a GET never cancels
        assert not future.done()
        bad = call(dash, "/api/cancel", method="POST", headers=plain | csrf, body=b'{"names": 1}')
        assert bad[0] == 400
        origin = {"Origin": f"http://127.0.0.1:{dash.port}"}
        status, _, _ = call(
            dash, "/api/cancel", method="POST", headers=plain | csrf | origin, body=body
        )
        assert status == 200
        assert future.record(WAIT).status == "cancel"


def test_a_port_in_use_raises_at_serve_and_leaves_nothing_running() -> None:
    run = FakeRun(workers=1, per_call=0)
    with _server.serve(run.status) as first:
        with pytest.raises(OSError, match="in use"):
            _server.serve(run.status, port=first.port)
        assert call(first, "/api/session", headers=bearer(first))[0] == 200
    assert not [t for t in threading.enumerate() if t.name.startswith("pycrew-dashboard")]


# -- the stream of updates ------------------------------------------------------------


def _events(dash: _server.Dashboard, headers: dict[str, str]) -> Any:
    """An open /events response and a reader of its next message."""
    conn = http.client.HTTPConnection(dash.host, dash.port, timeout=WAIT)
    conn.request("GET", "/events", headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"

    def next_message() -> dict[str, Any] | None:
        while True:
            line = response.fp.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                message: dict[str, Any] = json.loads(line[6:])
                return message

    return conn, next_message


def test_events_send_a_snapshot_then_only_what_is_new_and_end_at_close() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        dash = ctl.dashboard()
        try:
            ctl.push(tasks.add, 1, 2, name="first")
            assert ctl.wait(seconds_timeout=WAIT)
            conn, next_message = _events(dash, bearer(dash))
            snapshot = next_message()
            assert snapshot is not None
            assert snapshot["kind"] == "snapshot"
            assert [t["name"] for t in snapshot["stream"]] == ["first"]
            ctl.push(tasks.add, 3, 4, name="second")
            seen: list[str] = []

            def second_arrived() -> bool:
                message = next_message()
                assert message is not None
                assert message["kind"] == "tick"
                seen.extend(t["name"] for t in message["stream"])
                return "second" in seen

            wait_until(second_arrived, WAIT, "the second task in a tick")
            assert seen == ["second"]  # the first is never sent again
        finally:
            dash.close()
        assert next_message() is None  # close() ends an open page's stream
        conn.close()
        dash.close()  # twice is fine
        assert not [t for t in threading.enumerate() if t.name.startswith("pycrew-dashboard")]


def test_a_big_run_reaches_a_page_in_bounded_pieces() -> None:
    run = FakeRun(workers=200, per_call=10_000)

    async def two_ticks() -> tuple[dict[str, Any], dict[str, Any], bool]:
        feed = _feed.Feed(run.status, 0.01)
        page = feed.join()
        first = await asyncio.wait_for(page.queue.get(), WAIT)
        second = await asyncio.wait_for(page.queue.get(), WAIT)
        # a page that stops reading is dropped rather than buffered without bound
        slow = feed.join()
        await asyncio.sleep(0)
        for _ in range(_feed._BACKLOG + 2):
            feed.publish(run.status(feed.cursor))
        dropped = slow not in feed._pages
        await feed.close()
        assert first is not None
        assert second is not None
        return json.loads(first[6:]), json.loads(second[6:]), dropped

    first, second, dropped = asyncio.run(two_ticks())
    assert first["kind"] == "snapshot"
    assert second["kind"] == "tick"
    assert len(first["stream"]) == len(second["stream"]) == _feed.STREAM_WINDOW
    assert second["stream"][0]["seq"] > first["stream"][-1]["seq"]  # only new bars
    assert len(second["history"]) < len(first["history"])  # only new samples
    assert dropped


# -- the page, in a real browser ----------------------------------------------------------

#: how the test counts the task stream's bars of ended tasks: the chart's own data
BARS = """(() => {
  const box = document.getElementById('stream');
  if (!box.data) return 0;
  const ended = box.data.filter((trace) => trace.name !== 'running');
  return ended.reduce((n, trace) => n + trace.x.filter((x) => x !== null).length / 2, 0);
})()"""


def _text(browser: Any, element: str) -> str:
    return str(browser.execute_script(f"return document.getElementById('{element}').textContent"))


@pytest.mark.timeout(600)  # several bounded waits in a row: each says what it waited for
def test_the_page_shows_a_real_run_and_keeps_up_without_reloading(tmp_path: Path) -> None:
    with (
        chromium(tmp_path / "profile") as browser,
        pycrew.local_controller(
            workers=2, seconds_interval=0.05, log_directory=tmp_path / "logs"
        ) as ctl,
    ):
        for i in range(6):
            ctl.push(tasks.add, i, 1, name=f"add-{i}")
        ctl.push(FAILING, name="bad")
        ctl.push(tasks.suicide, name="dies")
        wait_until(lambda: ended(ctl, success=6, error=1, crash=1), WAIT, "the first tasks")
        ctl.push(tasks.sleep, LONG, name="long")
        wait_until(lambda: ended(ctl, running=1), WAIT, "the long task to run")
        with ctl.dashboard() as dash:
            browser.get(dash.url)
            assert browser.current_url == f"http://127.0.0.1:{dash.port}/"  # token gone
            wait_js(
                browser,
                "return document.getElementById('tasks-success').textContent === '6'",
                WAIT,
                "the totals",
            )
            browser.execute_script("window.__marker = 1")
            wait_js(browser, f"return {BARS} >= 8", WAIT, "8 bars in the task stream")
            functions = browser.execute_script(
                "return [...document.querySelectorAll('#functions [data-function]')]"
                ".map((e) => e.dataset.function)"
            )
            assert {"tests.helpers.tasks.add", "tests.helpers.tasks.suicide"} <= set(functions)
            # a code string is shown by its first line
            assert [f for f in functions if f.startswith(FAILING.split("\n")[0])]
            wait_js(
                browser,
                "return [...document.querySelectorAll('#workers td.task')]"
                ".some((td) => td.textContent === 'long')",
                WAIT,
                "the long task's worker",
            )
            assert _text(browser, "tasks-crash") == "1"
            # read-only: no cancel buttons anywhere
            assert (
                browser.execute_script("return document.querySelectorAll('button.cancel').length")
                == 0
            )

            # an error's traceback and its worker's log, one click away
            wait_js(
                browser,
                "return !!document.querySelector('#errors li[data-name=\"bad\"]')",
                WAIT,
                "the error in the list",
            )
            browser.execute_script(
                "document.querySelector('#errors li[data-name=\"bad\"]').click()"
            )
            assert "ValueError: boom" in _text(browser, "error-trace")
            wait_js(
                browser,
                "return document.getElementById('error-log').textContent"
                ".includes('hello from the log')",
                WAIT,
                "the worker's log tail",
            )
            crash = '#errors li[data-name="dies"]'
            assert browser.execute_script(f"return !!document.querySelector('{crash}')")

            # more work shows up by itself: no reload (the marker survives)
            for i in range(5):
                ctl.push(tasks.add, i, 10, name=f"more-{i}")
            # a worker may have to start for them on a busy machine: what is checked
            # here is the page, so the wait is generous
            wait_until(lambda: ended(ctl, success=11), 3 * WAIT, "the new tasks to end")
            wait_js(
                browser,
                "return document.getElementById('tasks-success').textContent === '11'",
                WAIT,
                "the new successes",
            )
            wait_js(browser, f"return {BARS} >= 13", WAIT, "13 bars in the task stream")
            assert browser.execute_script("return window.__marker") == 1
            assert _text(browser, "live") == "live"
            browser.save_screenshot(str(tmp_path / "dashboard.png"))
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000
            assert console_errors(browser) == []
            assert token(dash) not in browser.page_source
        ctl.cancel(all=True)  # the long task: ended on purpose, not by terminate()


def test_the_cancel_button_cancels_the_task_it_stands_beside(tmp_path: Path) -> None:
    with (
        chromium(tmp_path / "profile") as browser,
        pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl,
        ctl.dashboard(allow_cancel=True) as dash,
    ):
        future = ctl.push(tasks.sleep, LONG, name="long")
        browser.get(dash.url)
        button = '#workers button.cancel[data-task="long"]'
        wait_js(browser, f"return !!document.querySelector('{button}')", WAIT, "a cancel button")
        browser.execute_script(f"document.querySelector('{button}').click()")
        assert future.record(WAIT).status == "cancel"
        wait_js(
            browser,
            "return document.getElementById('tasks-cancel').textContent === '1'",
            WAIT,
            "the cancel counted on the page",
        )
        assert console_errors(browser) == []


def test_a_page_over_a_big_run_keeps_a_bounded_window(tmp_path: Path) -> None:
    run = FakeRun(workers=200, per_call=10_000)
    with (
        chromium(tmp_path / "profile") as browser,
        _server.serve(run.status, interval=0.2) as dash,
    ):
        browser.get(dash.url)
        wait_js(
            browser,
            "return document.querySelectorAll('#workers tbody tr').length === 200",
            WAIT,
            "200 worker rows",
        )
        calls = run.calls
        wait_until(lambda: run.calls >= calls + 3, WAIT, "three more ticks")
        wait_js(browser, f"return {BARS} === 2000", WAIT, "the stream window full")
        # ticks keep coming, the window stays the same size, the page still answers
        calls = run.calls
        wait_until(lambda: run.calls >= calls + 3, WAIT, "three more ticks")
        assert browser.execute_script(f"return {BARS}") == _feed.STREAM_WINDOW
        rows = browser.execute_script(
            "return document.querySelectorAll('#functions .function').length"
        )
        assert rows == 25  # 40 functions: 24 and one row of the others
        assert console_errors(browser) == []


# -- what imports what -------------------------------------------------------------------


def test_import_pycrew_loads_no_dashboard_package() -> None:
    probe = (
        "import sys, pycrew\n"
        "ctl = pycrew.local_controller(workers=1)\n"
        "heavy = ('aiohttp', 'plotly', 'prometheus_client', 'pycrew._operations._dashboard')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy[-1])])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=WAIT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_worker_of_a_watched_controller_loads_no_dashboard_package() -> None:
    probe = (
        "import sys\n"
        "sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'plotly', "
        "'prometheus_client') or m.startswith('pycrew._operations._dashboard'))"
    )
    with (
        pycrew.local_controller(workers=1) as ctl,
        ctl.dashboard(),
    ):
        record = ctl.push(probe).record(WAIT)
    assert record.status == "success", record.error
    assert record.result == []


def test_a_group_has_a_dashboard_of_all_its_members() -> None:
    first = pycrew.local_controller(name="first", workers=1, seconds_interval=0.05)
    second = pycrew.local_controller(name="second", workers=1, seconds_interval=0.05)
    with pycrew.ControllerGroup(first, second) as group, group.dashboard() as dash:
        group.push(tasks.add, 1, 1, name="a", controller="first")
        group.push(tasks.add, 2, 2, name="b", controller="second")
        assert group.wait(seconds_timeout=WAIT)
        status, _, body = call(dash, "/api/status", headers=bearer(dash))
        assert status == 200
        state = json.loads(body)
        assert state["kind"] == "group"
        assert state["members"] == ["first", "second"]
        assert state["tasks"]["success"] == 2
        status, _, _ = call(dash, "/api/status")
        assert status == 403
