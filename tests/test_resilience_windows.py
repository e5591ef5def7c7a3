"""Sliding windows: subtract-on-evict totals agree with a naive recomputation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.resilience import CountWindow, WindowSnapshot, TimeWindow

outcome = st.tuples(st.booleans(), st.booleans(), st.floats(0, 5, allow_nan=False))


def test_count_window_evicts_oldest_outcome():
    w = CountWindow(3)
    w.record(0, 1.0, failed=True, slow=False)
    w.record(0, 2.0, failed=False, slow=True)
    snap = w.record(0, 3.0, failed=False, slow=False)
    assert (snap.total_calls, snap.failed_calls, snap.slow_calls) == (3, 1, 1)
    snap = w.record(0, 4.0, failed=False, slow=False)  # the failed 1.0s call leaves
    assert (snap.total_calls, snap.failed_calls, snap.slow_calls) == (3, 0, 1)
    assert snap.avg_duration_s == pytest.approx(3.0)
    assert snap.failure_rate_pct == 0.0
    assert snap.slow_call_rate_pct == pytest.approx(100 / 3)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 8), outcomes=st.lists(outcome, max_size=40))
def test_count_window_matches_naive_tail(size, outcomes):
    w = CountWindow(size)
    for i, (failed, slow, dur) in enumerate(outcomes):
        snap = w.record(0, dur, failed=failed, slow=slow)
        tail = outcomes[max(0, i + 1 - size): i + 1]
        assert snap.total_calls == len(tail)
        assert snap.failed_calls == sum(f for f, _, _ in tail)
        assert snap.slow_calls == sum(s for _, s, _ in tail)
        assert snap.total_duration_ns == sum(round(d * 1e9) for _, _, d in tail)


def test_time_window_expires_whole_seconds():
    w = TimeWindow(3)
    w.record(10.2, 0.1, failed=True, slow=False)
    w.record(11.9, 0.1, failed=False, slow=False)
    assert w.snapshot(12.99).total_calls == 2       # seconds 10, 11, 12 are inside
    assert w.snapshot(13.0).failed_calls == 0       # second 10 left at 13.0
    assert w.snapshot(13.0).total_calls == 1
    assert w.snapshot(14.5).total_calls == 0
    assert w.snapshot(1000.0) == WindowSnapshot(0, 0, 0, 0)  # a long gap clears everything


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 6),
       events=st.lists(st.tuples(st.floats(0, 3, allow_nan=False), outcome), max_size=40))
def test_time_window_matches_naive_filter(size, events):
    w, now, seen = TimeWindow(size), 100.0, []
    for dt, (failed, slow, dur) in events:
        now += dt
        w.record(now, dur, failed=failed, slow=slow)
        seen.append((math.floor(now), failed, slow))
        snap = w.snapshot(now)
        live = [e for e in seen if e[0] > math.floor(now) - size]
        assert snap.total_calls == len(live)
        assert snap.failed_calls == sum(f for _, f, _ in live)
        assert snap.slow_calls == sum(s for _, _, s in live)


def test_time_window_folds_backwards_clock_into_newest_bucket():
    w = TimeWindow(2)
    w.record(50.5, 0, failed=False, slow=False)
    w.record(49.0, 0, failed=True, slow=False)  # older than the head: counted at second 50
    assert w.snapshot(51.0).total_calls == 2
    assert w.snapshot(52.0).total_calls == 0


def test_window_arguments_are_checked():
    with pytest.raises(ConfigError):
        CountWindow(0)
    with pytest.raises(InvalidArgumentError):
        TimeWindow(2.5)
    with pytest.raises(ConfigError):
        CountWindow(2).record(0, -1.0, failed=False, slow=False)
