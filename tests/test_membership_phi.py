"""Phi accrual detector: shape of phi, O(1) bookkeeping, bootstrap, bad parameters."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.membership import PhiAccrualDetector


def regular(interval_s: float = 1.0, beats: int = 20, **kw) -> PhiAccrualDetector:
    detector = PhiAccrualDetector(**kw)
    for i in range(beats):
        detector.heartbeat(i * interval_s)
    return detector


def test_phi_is_zero_before_any_heartbeat():
    detector = PhiAccrualDetector()
    assert detector.phi(123.0) == 0.0 and detector.is_available(1e9)
    assert detector.last_heartbeat_s is None


def test_phi_is_about_zero_right_after_a_regular_heartbeat():
    detector = regular()
    assert detector.phi(19.0) < 1e-6
    assert detector.phi(19.1) < 1e-3


def test_phi_grows_with_silence():
    detector = regular()
    values = [detector.phi(19.0 + dt) for dt in (0.0, 0.5, 0.9, 1.0, 1.1, 1.2, 1.4, 2.0, 5.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert detector.is_available(19.9) and not detector.is_available(24.0)


def test_phi_at_the_mean_is_log10_2():
    # y = 0: the approximated CDF is exactly 1/2, whatever the deviation.
    detector = regular(interval_s=2.0, beats=30, history_size=10)
    mean_s = detector.stats().mean_interval_s
    assert mean_s == pytest.approx(2.0)
    assert detector.phi(58.0 + mean_s) == pytest.approx(math.log10(2.0))


def test_logistic_approximation_tracks_the_normal_tail():
    detector = regular(interval_s=1.0, beats=50, history_size=5, min_std_deviation_s=0.2)
    stats = detector.stats()
    assert stats.std_deviation_s < 1e-9  # perfectly regular: min_std_deviation_s applies
    for y in (-3.0, -1.0, 0.0, 0.7, 1.5, 2.0):
        now_s = 49.0 + stats.mean_interval_s + y * 0.2
        exact = -math.log10(0.5 * math.erfc(y / math.sqrt(2.0)))
        assert detector.phi(now_s) == pytest.approx(exact, abs=1e-3)


def test_acceptable_pause_shifts_the_curve():
    plain = regular(beats=10)
    paused = regular(beats=10, acceptable_heartbeat_pause_s=3.0)
    for dt in (0.5, 1.0, 1.3, 2.0):
        assert paused.phi(9.0 + dt + 3.0) == pytest.approx(plain.phi(9.0 + dt))
    assert paused.phi(11.0) < 1e-6 < plain.phi(11.0)


def test_bootstrap_from_first_heartbeat_estimate():
    detector = PhiAccrualDetector(first_heartbeat_estimate_s=2.0)
    stats = detector.stats()
    # Akka seeds the window with estimate +- estimate / 4.
    assert stats.samples == 2
    assert stats.mean_interval_s == pytest.approx(2.0)
    assert stats.std_deviation_s == pytest.approx(0.5)
    detector.heartbeat(10.0)
    assert detector.phi(12.0) == pytest.approx(math.log10(2.0))


def test_interval_after_an_outage_is_not_learned():
    detector = regular(beats=10)
    before = detector.stats()
    assert not detector.is_available(60.0)
    detector.heartbeat(60.0)
    after = detector.stats()
    assert (after.samples, after.mean_interval_s) == (before.samples, before.mean_interval_s)
    assert after.last_heartbeat_s == 60.0
    detector.heartbeat(61.0)
    assert detector.stats().samples == before.samples + 1


def test_history_is_bounded():
    detector = regular(interval_s=0.5, beats=40, history_size=8)
    stats = detector.stats()
    assert stats.samples == 8
    assert stats.mean_interval_s == pytest.approx(0.5)  # the bootstrap samples were evicted


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 12),
    st.lists(st.floats(0.5, 1.5, allow_nan=False), min_size=1, max_size=80),
)
def test_running_sums_match_a_recomputation(history_size, intervals):
    detector = PhiAccrualDetector(history_size=history_size, acceptable_heartbeat_pause_s=100.0)
    now_s = 0.0
    detector.heartbeat(now_s)
    for interval in intervals:
        now_s += interval
        detector.heartbeat(now_s)
    times = _times(intervals)
    window = ([0.75, 1.25] + [b - a for a, b in zip(times, times[1:])])[-history_size:]
    stats = detector.stats()
    assert stats.samples == len(window)
    assert stats.mean_interval_s == pytest.approx(statistics.fmean(window), abs=1e-9)
    assert stats.std_deviation_s == pytest.approx(statistics.pstdev(window), abs=1e-6)


def _times(intervals):
    out, now = [0.0], 0.0
    for interval in intervals:
        now += interval
        out.append(now)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.01, 10.0, allow_nan=False), min_size=0, max_size=30),
    st.floats(0.0, 1e4, allow_nan=False),
    st.floats(0.0, 1e4, allow_nan=False),
    st.floats(0.0, 5.0, allow_nan=False),
)
def test_phi_is_non_decreasing_between_heartbeats(intervals, d1, d2, pause_s):
    detector = PhiAccrualDetector(history_size=10, acceptable_heartbeat_pause_s=pause_s)
    last = _times(intervals)[-1]
    for t in _times(intervals):
        detector.heartbeat(t)
    early, late = sorted((d1, d2))
    phi_early, phi_late = detector.phi(last + early), detector.phi(last + late)
    assert phi_early >= 0.0
    assert phi_late >= phi_early


def test_heartbeat_going_backwards_is_refused():
    detector = regular(beats=3)
    with pytest.raises(ConfigError, match="monotonic"):
        detector.heartbeat(1.0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"threshold": 0}, ConfigError),
        ({"threshold": -1.0}, ConfigError),
        ({"threshold": math.inf}, ConfigError),
        ({"threshold": "8"}, InvalidArgumentError),
        ({"history_size": 0}, ConfigError),
        ({"history_size": 2.0}, InvalidArgumentError),
        ({"min_std_deviation_s": 0.0}, ConfigError),
        ({"acceptable_heartbeat_pause_s": -0.1}, ConfigError),
        ({"first_heartbeat_estimate_s": 0}, ConfigError),
        ({"first_heartbeat_estimate_s": math.nan}, ConfigError),
    ],
)
def test_bad_parameters(kwargs, error):
    with pytest.raises(error):
        PhiAccrualDetector(**kwargs)


def test_bad_times():
    detector = PhiAccrualDetector()
    with pytest.raises(InvalidArgumentError):
        detector.heartbeat("now")
    with pytest.raises(ConfigError):
        detector.phi(math.nan)
