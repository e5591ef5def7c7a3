"""Live reconfiguration of a circuit breaker and of its windows, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode
from ddia_ray.errors import CircuitOpenError, ConfigError, InvalidArgumentError
from ddia_ray.resilience import (BreakerSettings, CircuitBreaker, CircuitBreakerConfig, CountWindow, State,
                                 TimeWindow)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**overrides):
    cfg = dict(minimum_calls=4, window_size=10, permitted_calls_in_half_open=2, wait_in_open_s=10.0)
    cfg.update(overrides)
    clock = FakeClock()
    return CircuitBreaker("db", CircuitBreakerConfig(**cfg), clock=clock), clock


def outcomes(b, pattern: str) -> None:
    """``"ffs"``: two failures then a success, each through a permit."""
    for c in pattern:
        p = b.acquire()
        if c == "f":
            b.on_error(0.01, RuntimeError("boom"), p)
        else:
            b.on_success(0.01, p)


# --- settings ----------------------------------------------------------------------------


def test_settings_are_checked_by_the_config_rules_and_survive_the_codec():
    s = BreakerSettings(failure_rate_threshold=25, window_size=8, minimum_calls=4)
    assert decode(encode(s), BreakerSettings) == s
    assert BreakerSettings.of(s.config()) == s
    with pytest.raises(ConfigError, match="failure_rate_threshold must be a percentage"):
        BreakerSettings(failure_rate_threshold=150)
    with pytest.raises(ConfigError, match="window_type must be 'count' or 'time'"):
        BreakerSettings(window_type="sliding")
    with pytest.raises(InvalidArgumentError, match="window_size"):
        BreakerSettings(window_size=2.5)


def test_settings_keep_the_base_configs_callables():
    def is_failure(e: BaseException) -> bool:
        return isinstance(e, TimeoutError)

    base = CircuitBreakerConfig(record_exception=is_failure, ignore_exceptions=(KeyError,))
    merged = BreakerSettings(failure_rate_threshold=10).config(base)
    assert merged.record_exception is is_failure and merged.ignore_exceptions == (KeyError,)
    assert merged.failure_rate_threshold == 10


# --- the breaker ---------------------------------------------------------------------------


def test_a_lower_threshold_judges_the_outcomes_already_in_the_window():
    b, _ = make(failure_rate_threshold=50)
    outcomes(b, "fsss")  # 25%: under 50%
    assert b.state is State.CLOSED
    b.reconfigure(BreakerSettings(failure_rate_threshold=20, minimum_calls=4, window_size=10,
                                  permitted_calls_in_half_open=2, wait_in_open_s=10.0))
    assert b.state is State.CLOSED, "a reconfiguration is not a transition"
    assert b.metrics().buffered_calls == 4, "the window's outcomes were kept"
    outcomes(b, "s")  # 1 of 5 = 20%: at the new threshold
    assert b.state is State.OPEN


def test_a_higher_threshold_keeps_a_closed_breaker_closed():
    b, _ = make(failure_rate_threshold=50)
    outcomes(b, "ff")
    b.reconfigure(CircuitBreakerConfig(failure_rate_threshold=90, minimum_calls=4, window_size=10))
    outcomes(b, "ff")  # 2 + 2 failures of 4: 100% >= 90%
    assert b.state is State.OPEN
    b2, _ = make(failure_rate_threshold=50)
    outcomes(b2, "ff")
    b2.reconfigure(CircuitBreakerConfig(failure_rate_threshold=90, minimum_calls=4, window_size=10))
    outcomes(b2, "ss")  # 50%: would have tripped the old breaker
    assert b2.state is State.CLOSED


def test_an_open_breaker_keeps_its_announced_wait_and_its_counters():
    b, clock = make()
    outcomes(b, "ffff")
    assert b.state is State.OPEN
    before = b.metrics()
    b.reconfigure(CircuitBreakerConfig(minimum_calls=4, window_size=10, permitted_calls_in_half_open=2,
                                      wait_in_open_s=1.0))
    after = b.metrics()
    assert after.state is State.OPEN and after.retry_after_s == before.retry_after_s
    assert after.failed_calls_total == 4 and after.transitions == before.transitions
    clock.now += 5.0
    with pytest.raises(CircuitOpenError):
        b.acquire()  # the old 10 s wait still holds
    clock.now += 5.0
    b.acquire()  # half-open now
    assert b.state is State.HALF_OPEN


def test_a_probe_round_finishes_with_its_own_size_and_the_next_round_uses_the_new_one():
    b, clock = make(permitted_calls_in_half_open=2)
    outcomes(b, "ffff")
    clock.now += 10.0
    p1 = b.acquire()
    assert b.state is State.HALF_OPEN
    b.reconfigure(BreakerSettings(minimum_calls=4, window_size=10, permitted_calls_in_half_open=5,
                                  wait_in_open_s=10.0))
    b.on_error(0.01, RuntimeError("boom"), p1)
    b.on_error(0.01, RuntimeError("boom"), b.acquire())
    assert b.state is State.OPEN, "the round of 2 probes ended after 2 probes"
    clock.now += 10.0
    for _ in range(5):
        b.acquire()
    assert b.metrics().half_open_permits_left == 0 and b.state is State.HALF_OPEN
    assert not b.try_acquire()


def test_a_permit_issued_before_a_reconfiguration_still_counts():
    b, _ = make(failure_rate_threshold=50)
    p = b.acquire()
    b.reconfigure(BreakerSettings(minimum_calls=1, window_size=10, failure_rate_threshold=50))
    b.on_error(0.01, RuntimeError("boom"), p)
    assert b.state is State.OPEN


def test_resizing_the_window_keeps_the_newest_outcomes():
    b, _ = make(window_size=10, minimum_calls=10)
    outcomes(b, "ffffssssss")  # 40% failures
    b.reconfigure(BreakerSettings(window_size=6, minimum_calls=6, failure_rate_threshold=50))
    m = b.metrics()
    assert (m.buffered_calls, m.failed_calls) == (6, 0), "the six newest outcomes are all successes"
    b.reconfigure(BreakerSettings(window_type="time", window_size=60, minimum_calls=6))
    assert b.metrics().buffered_calls == 0, "a count window does not convert to seconds"


def test_invalid_config_is_refused_and_the_old_one_stays():
    b, _ = make(failure_rate_threshold=50)
    with pytest.raises(InvalidArgumentError, match="CircuitBreakerConfig or BreakerSettings"):
        b.reconfigure({"failure_rate_threshold": 10})
    with pytest.raises(ConfigError):
        b.reconfigure(BreakerSettings(failure_rate_threshold=-1))
    assert b.config.failure_rate_threshold == 50


# --- windows -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 5)), max_size=40),
       st.integers(1, 12), st.integers(1, 12))
def test_a_resized_count_window_equals_one_fed_the_newest_outcomes(history, old_size, new_size):
    old = CountWindow(old_size)
    for failed, slow, ms in history:
        old.record(0.0, ms / 1000, failed=failed, slow=slow)
    kept = history[-min(len(history), old_size, new_size):] if history else []
    model = CountWindow(new_size)
    for failed, slow, ms in kept:
        model.record(0.0, ms / 1000, failed=failed, slow=slow)
    resized = old.resized(new_size)
    assert resized.snapshot() == model.snapshot()
    # ...and it goes on evicting in the same order as the model.
    for _ in range(new_size):
        assert resized.record(0.0, 0.0, failed=False, slow=False) == model.record(0.0, 0.0, failed=False, slow=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=40), st.integers(1, 10), st.integers(1, 10))
def test_a_resized_time_window_equals_one_fed_the_newest_seconds(steps, old_size, new_size):
    now = 100
    old = TimeWindow(old_size)
    fed: list = []
    for dt, failed in steps:
        now += dt % 4
        old.record(now, 0.001, failed=failed, slow=False)
        fed.append((now, failed))
    model = TimeWindow(new_size)
    for at, failed in fed:
        if at > now - min(old_size, new_size):
            model.record(at, 0.001, failed=failed, slow=False)
    resized = old.resized(new_size)
    assert resized.snapshot(now) == model.snapshot(now)
    later = now + 3
    assert resized.snapshot(later) == model.snapshot(later)
