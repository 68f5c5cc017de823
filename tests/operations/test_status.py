"""``status()``: a controller's live state as plain data, with real workers."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 30
OUTCOMES = ("success", "error", "crash", "cancel", "timeout")


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """What a user gets must survive JSON as it is."""
    result: dict[str, Any] = json.loads(json.dumps(state))
    assert result == state
    return result


def test_a_stopped_controller_says_so_with_every_field() -> None:
    ctl = pycrew.local_controller(workers=3, memory=1 << 20)
    state = _plain(ctl.status())
    assert (state["kind"], state["controller"], state["engine"]) == (
        "controller",
        ctl.name,
        "local",
    )
    assert not state["started"]
    assert state["url"] == ""
    assert state["tasks"] == dict.fromkeys(
        ("pushed", "queued", "waiting", "running", "resolved", *OUTCOMES), 0
    )
    assert state["workers"]["max"] == 3
    assert state["memory"]["cap"] == 1 << 20
    assert state["stream"] == state["events"] == state["errors"] == state["worker_rows"] == []


def test_counts_rows_stream_and_errors_follow_a_run() -> None:
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        for i in range(10):
            ctl.push(tasks.add, i, 1, name=f"add-{i}")
        ctl.push(tasks.fail, "boom", name="bad")
        ctl.push(tasks.suicide, name="dies")
        assert ctl.wait(seconds_timeout=WAIT)
        state = _plain(ctl.status())
        assert state["started"]
        assert state["url"] == ctl.url
        counts = state["tasks"]
        assert (counts["pushed"], counts["success"], counts["error"], counts["crash"]) == (
            12,
            10,
            1,
            1,
        )
        assert (counts["queued"], counts["running"], counts["resolved"]) == (0, 0, 12)
        by_function = {row["function"]: row for row in state["functions"]}
        assert by_function["tests.helpers.tasks.add"]["success"] == 10
        assert by_function["tests.helpers.tasks.fail"]["error"] == 1
        assert by_function["tests.helpers.tasks.suicide"]["crash"] == 1
        stream = {entry["name"]: entry for entry in state["stream"]}
        assert set(stream) == {f"add-{i}" for i in range(10)} | {"bad", "dies"}
        assert stream["bad"]["status"] == "error"
        assert stream["dies"]["status"] == "crash"
        assert all(e["start"] <= e["end"] and e["worker"] for e in stream.values())
        errors = {e["name"]: e for e in state["errors"]}
        assert errors["bad"]["error"] == "ValueError: boom"
        assert "raise ValueError(message)" in errors["bad"]["trace"]
        assert "SIGKILL" in errors["dies"]["error"]
        kinds = [e["kind"] for e in state["events"]]
        assert kinds.count("launch") >= 2
        assert "connect" in kinds
        assert "crash" in kinds
        assert state["workers"]["launched"] >= 2
        assert state["workers"]["exited"] >= 1
        assert state["bytes"]["sent"] > 0
        assert state["bytes"]["received"] > 0
        # the cursor: nothing new since the last call, then only what is new
        later = ctl.status(since=state["seq"])
        assert later["stream"] == []
        # a worker launched to replace the one that died may connect only now
        assert all(e["seq"] > state["seq"] for e in later["events"])
        assert {e["kind"] for e in later["events"]} <= {"launch", "connect"}
        ctl.push(tasks.add, 5, 5, name="after")
        assert ctl.wait(seconds_timeout=WAIT)
        newer = ctl.status(since=state["seq"])
        assert [e["name"] for e in newer["stream"]] == ["after"]
        assert newer["seq"] > state["seq"]
        # once everything is collected, the counts are summary()'s
        ctl.collect()
        summary = ctl.summary()
        assert summary is not None
        final = ctl.status()["tasks"]
        assert [final[k] for k in OUTCOMES] == [getattr(summary, k) for k in OUTCOMES]
        assert final["pushed"] == summary.tasks
        assert final["resolved"] == 0


def test_a_running_task_shows_on_its_worker_row(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        ctl.push(tasks.mark_then_sleep, str(marker), 60, name="long")
        wait_until(marker.exists, WAIT, "the long task to start")
        state = _plain(ctl.status())
        (row,) = [r for r in state["worker_rows"] if r["state"] == "busy"]
        assert row["task"] == "long"
        assert row["function"] == "tests.helpers.tasks.mark_then_sleep"
        assert row["seconds"] is not None
        assert row["seconds"] >= 0
        assert row["pid"] == ctl.pids()[0]
        assert state["tasks"]["running"] == 1
        assert state["workers"]["busy"] == 1
        ctl.cancel("long")
        assert ctl.wait(seconds_timeout=WAIT)
        assert ctl.status()["tasks"]["cancel"] == 1


def test_a_retried_crash_counts_as_summary_counts_it(tmp_path: Path) -> None:
    with pycrew.local_controller(
        workers=1, seconds_interval=0.05, retry_crashes=True, crashes_max=3
    ) as ctl:
        assert ctl.push(tasks.crash_once, str(tmp_path / "once")).result(timeout=WAIT) == "survived"
        ctl.collect()
        state = ctl.status()
        summary = ctl.summary()
        assert summary is not None
        assert (state["tasks"]["crash"], state["tasks"]["success"]) == (1, 1)
        assert state["tasks"]["pushed"] == summary.tasks == 2
        assert [e["kind"] for e in state["events"]].count("retry") == 1


def test_metrics_samples_and_the_worker_log_reach_the_rows(tmp_path: Path) -> None:
    metrics = pycrew.Metrics(tmp_path / "metrics", seconds_interval=0.1)
    with pycrew.local_controller(
        workers=1, seconds_interval=0.05, metrics=metrics, log_directory=tmp_path / "logs"
    ) as ctl:
        ctl.push(tasks.shout, "hello from the task").result(timeout=WAIT)

        def sampled() -> bool:
            rows = ctl.status()["worker_rows"]
            return bool(rows) and len(rows[0]["samples"]) >= 2

        wait_until(sampled, WAIT, "two metrics samples in the worker's row")
        (row,) = ctl.status()["worker_rows"]
        assert row["rss"] > 0
        assert row["cpu"] is not None
        assert all(len(s) == 3 for s in row["samples"])
        text = ctl.worker_log(row["id"])
        assert text is not None
        assert "hello from the task" in text
        assert ctl.worker_log("nobody-1") is None
        with pytest.raises(pycrew.ArgumentError):
            ctl.worker_log(row["id"], lines=0)


def test_bad_cursors_and_limits_are_refused() -> None:
    ctl = pycrew.local_controller(workers=1)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(pycrew.ArgumentTypeError):
            ctl.status(since=bad)  # type: ignore[arg-type]
    for bad in (0, -2, 2.0, False):
        with pytest.raises(pycrew.ArgumentTypeError):
            ctl.status(limit=bad)  # type: ignore[arg-type]


def test_a_limit_keeps_the_newest_entries_and_the_cursor_moves_past_the_rest() -> None:
    with pycrew.local_controller(workers=1, seconds_interval=0.05) as ctl:
        for i in range(10):
            ctl.push(tasks.add, i, 0, name=f"t{i}")
        assert ctl.wait(seconds_timeout=WAIT)
        state = ctl.status(limit=3)
        assert [e["name"] for e in state["stream"]] == ["t7", "t8", "t9"]
        assert len(state["events"]) <= 3
        assert state["tasks"]["success"] == 10  # counts are whole whatever the limit
        assert ctl.status(since=state["seq"])["stream"] == []


def test_a_group_merges_its_members() -> None:
    first = pycrew.local_controller(name="first", workers=1, seconds_interval=0.05)
    second = pycrew.local_controller(name="second", workers=1, seconds_interval=0.05)
    with pycrew.ControllerGroup(first, second) as group:
        group.push(tasks.add, 1, 1, name="a", controller="first")
        group.push(tasks.add, 2, 2, name="b", controller="second")
        assert group.wait(seconds_timeout=WAIT)
        state = _plain(group.status())
        assert state["kind"] == "group"
        assert state["members"] == ["first", "second"]
        assert state["tasks"]["success"] == 2
        assert state["tasks"]["pushed"] == 2
        assert {(e["name"], e["controller"]) for e in state["stream"]} == {
            ("a", "first"),
            ("b", "second"),
        }
        assert {r["controller"] for r in state["worker_rows"]} <= {"first", "second"}
        assert group.status(since=state["seq"])["stream"] == []
        group.push(tasks.add, 3, 3, name="c", controller="second")
        assert group.wait(seconds_timeout=WAIT)
        assert [e["name"] for e in group.status(since=state["seq"])["stream"]] == ["c"]


def test_status_can_be_polled_while_many_tasks_flow() -> None:
    """Polling with the cursor while tasks flow: every task is in the stream once."""
    with pycrew.local_controller(workers=2, seconds_interval=0.05) as ctl:
        futures = [ctl.push(abs, -i, name=f"t{i}") for i in range(2_000)]
        seen: list[str] = []
        cursor = 0

        def poll() -> bool:
            nonlocal cursor
            state = ctl.status(since=cursor)
            cursor = state["seq"]
            seen.extend(entry["name"] for entry in state["stream"])
            assert state["tasks"]["pushed"] == 2_000
            return all(f.done() for f in futures) and len(seen) == 2_000

        wait_until(poll, 4 * WAIT, "every task in the stream")
        assert sorted(seen) == sorted(f"t{i}" for i in range(2_000))
        state = ctl.status()
        assert state["tasks"]["success"] == 2_000
        assert state["pid"] == os.getpid()
