"""Controller groups and backup chains, with real workers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import tasks

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _member(name: str, **options: object) -> pycrew.Controller:
    options.setdefault("seconds_interval", 0.05)
    return pycrew.local_controller(name=name, **options)  # type: ignore[arg-type]


@pytest.fixture
def pair() -> Iterator[pycrew.ControllerGroup]:
    group = pycrew.ControllerGroup(_member("a"), _member("b"))
    try:
        yield group
    finally:
        group.terminate()


def test_push_goes_to_the_named_member(pair: pycrew.ControllerGroup) -> None:
    to_b = pair.push(tasks.pid, controller="b")
    to_a = pair.push(tasks.pid)  # the first member by default
    assert pair.wait(seconds_timeout=30)
    assert pair.size() == 2
    records = pair.collect()
    assert [r.controller for r in records] == ["a", "b"]  # member by member
    on_a, on_b = records
    assert on_a.result in pair.pids(controllers=["a"])
    assert on_b.result in pair.pids(controllers="b")
    assert on_a.result != on_b.result
    assert pair.empty()
    # the futures still give their records (read after collect: the same ones)
    assert (to_a.record(timeout=30), to_b.record(timeout=30)) == (on_a, on_b)
    rows = pair.summary()
    assert rows is not None
    assert [(s.controller, s.tasks, s.success) for s in rows] == [("a", 1, 1), ("b", 1, 1)]
    workers = pair.summary(by="worker")
    assert workers is not None
    assert sorted((w.controller, w.tasks) for w in workers) == [("a", 1), ("b", 1)]
    for row in workers:
        assert row.worker in {r.worker for r in records}
        assert row.memory_peak is not None
        assert row.memory_peak > 1 << 20  # a Python process holds megabytes
        assert row.cpu_seconds >= 0


def test_map_and_walk_route_too(pair: pycrew.ControllerGroup) -> None:
    records = pair.map(tasks.add, iterate={"x": [1, 2], "y": [3, 4]}, controller="b")
    assert [(r.result, r.controller) for r in records] == [(4, "b"), (6, "b")]
    futures = pair.walk(tasks.add, iterate={"x": [5], "y": [6]})
    assert futures[0].record(timeout=30).controller == "a"


def test_wait_one_wakes_on_any_member() -> None:
    with pycrew.ControllerGroup(_member("a"), _member("b", workers=2)) as pair:
        _wait_one(pair)


def _wait_one(pair: pycrew.ControllerGroup) -> None:
    pair.push(tasks.sleep, 30, name="slow", controller="a")
    pair.push(tasks.sleep, 30, name="slower", controller="b")
    assert pair.wait("all", seconds_timeout=0) is False
    pair.push(tasks.add, 1, 1, name="done", controller="b")
    started = time.monotonic()
    assert pair.wait("one", seconds_timeout=30) is True
    # it woke on the resolution, long before any sleeping task could finish
    assert time.monotonic() - started < 20
    record = pair.pop()
    assert record is not None
    assert (record.name, record.result, record.controller) == ("done", 2, "b")
    pair.cancel(all=True)
    assert pair.wait("all", seconds_timeout=30) is True
    assert sorted(r.name for r in pair.collect()) == ["slow", "slower"]


def test_cancel_by_name_finds_the_member(pair: pycrew.ControllerGroup) -> None:
    pair.push(tasks.sleep, 30, name="long", controller="b")
    pair.cancel(["long"])
    assert pair.wait("all", seconds_timeout=30)
    (record,) = pair.collect()
    assert (record.name, record.status, record.controller) == ("long", pycrew.Status.CANCEL, "b")


def test_a_backup_chain_takes_a_crashing_task_down_the_line() -> None:
    """Spec: a->b->c, crashes_max=2: crashes 1-2 on a, 3-4 on b, 5-6 on c, the 7th raises."""
    c = _member("c", crashes_max=2)
    b = _member("b", crashes_max=2, backup=c)
    a = _member("a", crashes_max=2, backup=b)
    group = pycrew.ControllerGroup(a, b, c)
    try:
        where = []
        for _ in range(6):
            future = group.push(tasks.suicide, name="x")
            assert group.wait(seconds_timeout=30)
            assert [r.name for r in group.collect()] == ["x"]
            record = future.record(timeout=30)
            assert record.status is pycrew.Status.CRASH
            where.append(record.controller)
        assert where == ["a", "a", "b", "b", "c", "c"]
        assert group.crashes("x") == 6
        # a success elsewhere does not reset a's count: x keeps going down the chain
        assert a.crashes("x") == 2
        group.push(tasks.suicide, name="x")
        assert group.wait(seconds_timeout=30)
        with pytest.raises(pycrew.CrashLimitError, match="crashed its worker 3 consecutive"):
            group.collect()
        rows = group.summary()
        assert rows is not None
        assert [(s.controller, s.crash) for s in rows] == [("a", 2), ("b", 2), ("c", 3)]
        # other names are untouched by x's history
        assert group.push(tasks.add, 1, 2, name="y").record(timeout=30).controller == "a"
    finally:
        group.terminate()


def test_bad_groups_and_backups_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one controller"):
        pycrew.ControllerGroup()
    with pytest.raises(ValueError, match="named 'a'"):
        pycrew.ControllerGroup(_member("a"), _member("a"))
    with pytest.raises(TypeError, match="pycrew controllers"):
        pycrew.ControllerGroup(_member("a"), "b")  # type: ignore[arg-type]
    started = _member("s")
    started.start()
    try:
        with pytest.raises(ValueError, match="already started"):
            pycrew.ControllerGroup(started)
    finally:
        started.terminate()
    group = pycrew.ControllerGroup(_member("a"), _member("b"))
    with pytest.raises(ValueError, match=r"controller 'z' is not in this group"):
        group.push(tasks.add, 1, 1, controller="z")
    with pytest.raises(ValueError, match=r"controllers not found: \['z'\]"):
        group.collect(controllers=["a", "z"])
    with pytest.raises(ValueError, match="at least one member"):
        group.size(controllers=[])
    assert not group.started()
    first = _member("first")
    with pytest.raises(ValueError, match="its own backup"):
        _member("first", backup=first)
    with pytest.raises(TypeError, match="backup must be"):
        _member("x", backup="first")  # type: ignore[arg-type]


def test_retry_crashes_runs_a_task_again_until_it_succeeds(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    with _member("a", retry_crashes=True, crashes_max=2) as ctl:
        record = ctl.push(tasks.crash_once, str(marker), name="flaky").record(timeout=60)
        assert (record.status, record.result) == (pycrew.Status.SUCCESS, "survived")
        assert record.attempts == 2
        assert record.controller == "a"
        assert marker.exists()
        assert ctl.collect() == []  # the future handed it over
        assert ctl.empty()


def test_retry_crashes_goes_down_the_backup_chain() -> None:
    b = _member("b", retry_crashes=True, crashes_max=1)
    a = _member("a", retry_crashes=True, crashes_max=1, backup=b)
    with pycrew.ControllerGroup(a, b) as group:
        record = group.push(tasks.crash_unless, "b", name="needs-b").record(timeout=60)
        assert (record.status, record.result, record.controller) == (
            pycrew.Status.SUCCESS,
            "b",
            "b",
        )
        assert record.attempts == 2
        assert group.collect() == []  # the future followed it to b and handed it over
        assert group.empty()
        # map follows its tasks down the chain too, in input order
        records = a.map(tasks.crash_unless, iterate={"controller": ["b", "b"]})
        assert [(r.result, r.controller, r.attempts) for r in records] == [
            ("b", "b", 2),
            ("b", "b", 2),
        ]
        assert group.empty()
        # at the end of the chain the crash is the record, with every attempt counted
        final = group.push(tasks.suicide, name="doomed").record(timeout=60)
        assert (final.status, final.controller, final.attempts) == (
            pycrew.Status.CRASH,
            "b",
            2,
        )


def test_summary_counts_each_crash_where_it_happened(tmp_path: Path) -> None:
    b = _member("b", retry_crashes=True, crashes_max=1)
    a = _member("a", retry_crashes=True, crashes_max=1, backup=b)
    c = _member("c", retry_crashes=True, crashes_max=2)
    with pycrew.ControllerGroup(a, b, c) as group:
        # crashed on a, succeeded on its backup b
        record = group.push(tasks.crash_unless, "b", name="needs-b").record(timeout=60)
        assert (record.status, record.controller, record.attempts) == (
            pycrew.Status.SUCCESS,
            "b",
            2,
        )
        # crashed on c, succeeded on c when run again
        again = group.push(tasks.crash_once, str(tmp_path / "m"), controller="c")
        assert again.result(timeout=60) == "survived"
        rows = group.summary()
        assert rows is not None
        counts = [(s.controller, s.tasks, s.crash, s.success) for s in rows]
        assert counts == [("a", 1, 1, 0), ("b", 1, 0, 1), ("c", 2, 1, 1)]
        assert all(s.tasks == s.success + s.error + s.crash + s.cancel + s.timeout for s in rows)


def test_a_group_warns_once_of_the_tasks_its_members_had_left() -> None:
    group = pycrew.ControllerGroup(_member("a"), _member("b"))
    try:
        group.push(tasks.sleep, 60, name="on-a")
        group.push(tasks.sleep, 60, name="on-b", controller="b")
        with pytest.warns(pycrew.CrewWarning) as caught:
            group.terminate()
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "ControllerGroup.terminate() cancelled 2 unfinished tasks: 'on-a', 'on-b'" in message
        assert caught[0].filename == __file__
    finally:
        group.terminate()
