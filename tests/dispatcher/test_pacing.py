"""When small tasks wait for busy workers: the pacing's rules, as pure logic (the
behaviour with real workers is in test_controller)."""

from __future__ import annotations

import math

import pytest

from pycrew._dispatcher._pacing import DISPATCH_RATE, FLOWING, PATIENCE_MAX, PATIENCE_MIN, Pacing


def _flowing(ran: float = 1e-5) -> Pacing:
    pacing = Pacing()
    pacing.result(100.0, ran)
    return pacing


def test_tiny_tasks_wait_for_two_busy_workers_while_results_come() -> None:
    pacing = _flowing()
    assert not pacing.hold(100.001, busy=1)  # one busy worker: wake a second
    assert pacing.hold(100.001, busy=2)
    assert pacing.holding
    assert pacing.due() == pytest.approx(100.0 + pacing.patience())
    assert pacing.take_back_after() == pacing.patience()


def test_long_tasks_never_wait() -> None:
    pacing = _flowing(ran=1.0)
    assert pacing.service * DISPATCH_RATE > 1000
    assert not pacing.hold(100.001, busy=500)


def test_no_result_within_the_patience_ends_the_wait_until_the_next_result() -> None:
    pacing = _flowing()
    assert pacing.hold(100.001, busy=2)
    late = 100.0 + pacing.patience()
    assert not pacing.expired(late - 1e-4)
    assert pacing.expired(late)
    assert not pacing.holding
    assert pacing.take_back_after() == FLOWING
    assert pacing.due() is None
    # stuck: nothing waits, however recent the last wake-up
    pacing.woke(late)
    assert not pacing.hold(late, busy=2)
    pacing.result(late + 0.001, 1e-5)
    assert pacing.hold(late + 0.002, busy=2)


def test_a_woken_worker_counts_as_progress() -> None:
    pacing = _flowing()
    later = 100.0 + 10 * PATIENCE_MAX
    assert not pacing.hold(later, busy=2)  # results stopped long ago
    pacing.woke(later)
    assert pacing.hold(later + 0.001, busy=2)


@pytest.mark.parametrize("ran", [math.nan, math.inf, -1.0, 1e9])
def test_an_absurd_run_time_counts_as_long(ran: float) -> None:
    pacing = _flowing(ran=ran)
    assert pacing.service > 0.1
    assert not pacing.hold(100.001, busy=100)


def test_patience_stays_within_its_bounds() -> None:
    assert _flowing(ran=0.0).patience() == PATIENCE_MIN
    assert _flowing(ran=10.0).patience() == PATIENCE_MAX
