"""Backpressure: memory= caps the bytes of unfinished tasks a controller holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import pycrew
from tests.helpers import tasks
from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from pathlib import Path

WAIT = 120
KB = 1024


def test_a_map_larger_than_the_cap_completes_within_it() -> None:
    cap = 2 * 1024 * KB
    payload = b"x" * (100 * KB)
    with pycrew.local_controller(workers=2, memory=cap) as ctl:
        records = ctl.map(tasks.nbytes, [payload] * 200)
        assert [r.result for r in records] == [len(payload)] * 200
        dispatcher = ctl._running()
        assert dispatcher.held_peak <= cap
        assert dispatcher.held == 0  # all freed once ended


def test_try_push_says_full_and_push_waits_for_room(tmp_path: Path) -> None:
    marker = tmp_path / "holding"
    big = b"b" * (700 * KB)
    with pycrew.local_controller(workers=2, memory=1024 * KB, seconds_timeout=0.5) as ctl:
        holding = ctl.push(tasks.hold, big, str(marker))
        wait_until(marker.exists, WAIT, "the big task to start")
        assert ctl.try_push(tasks.nbytes, big) is None  # no room for a second one
        small = ctl.try_push(tasks.add, 1, 2, name="small")  # room for a small one
        assert small is not None
        assert small.result(timeout=WAIT) == 3
        with pytest.raises(pycrew.CrewTimeoutError, match="memory=1048576"):
            ctl.push(tasks.nbytes, big)
        ctl.cancel(all=True)
        assert holding.record(timeout=WAIT).status == "cancel"
        # the cancel freed its bytes
        later = ctl.try_push(tasks.nbytes, big)
        assert later is not None
        assert later.result(timeout=WAIT) == len(big)


def test_a_task_alone_always_fits_and_a_bad_cap_is_refused() -> None:
    with pycrew.local_controller(workers=1, memory=1024) as ctl:
        assert ctl.push(tasks.nbytes, b"z" * (64 * KB)).result(timeout=WAIT) == 64 * KB
    with pytest.raises(pycrew.ArgumentError):
        pycrew.local_controller(memory=0)
