"""Retry policy, backoff planner and retrier, on a fake clock whose sleep moves time."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import (CircuitOpenError, ConfigError, InvalidArgumentError,
                             RetriesExhaustedError)
from ddia_ray.resilience import JITTERS, Backoff, Retrier, RetryPolicy


class FakeTime:
    """A clock plus sleep functions that advance it; records every sleep."""

    def __init__(self, now: float = 100.0):
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    async def async_sleep(self, s: float) -> None:
        self.sleep(s)


def retrier(policy, t=None, seed=7, budget=None):
    t = t or FakeTime()
    return Retrier(policy, budget=budget, rng=random.Random(seed), clock=t.clock, sleep=t.sleep,
                   async_sleep=t.async_sleep), t


class Flaky:
    """Fails ``n`` times with ``exc`` then returns ``value``; optionally takes time on a FakeTime."""

    def __init__(self, n, exc=ConnectionError, value="ok", t=None, cost_s=0.0):
        self.n, self.exc, self.value, self.t, self.cost_s = n, exc, value, t, cost_s
        self.calls = 0
        self.started_at: list[float] = []

    def __call__(self):
        self.calls += 1
        if self.t is not None:
            self.started_at.append(self.t.now)
            self.t.now += self.cost_s
        if self.calls <= self.n:
            raise self.exc(f"transient {self.calls}")
        return self.value


# --- backoff ------------------------------------------------------------------

@st.composite
def policies(draw):
    base = draw(st.floats(0, 2, allow_nan=False))
    return RetryPolicy(max_attempts=draw(st.integers(1, 12)), base_delay_s=base,
                       max_delay_s=base + draw(st.floats(0, 30, allow_nan=False)),
                       multiplier=draw(st.floats(1, 4, allow_nan=False)), jitter=draw(st.sampled_from(JITTERS)))


@settings(max_examples=150, deadline=None)
@given(policy=policies(), seed=st.integers(0, 2**32 - 1))
def test_backoff_delays_respect_cap_and_jitter_range(policy, seed):
    delays = Backoff(policy, random.Random(seed)).plan()
    assert len(delays) == policy.max_attempts - 1
    assert delays == Backoff(policy, random.Random(seed)).plan()  # seeded: reproducible
    ceiling, prev = policy.base_delay_s, policy.base_delay_s
    for d in delays:
        assert 0 <= d <= policy.max_delay_s + 1e-9
        if policy.jitter == "none":
            assert d == pytest.approx(ceiling)
        elif policy.jitter == "full":
            assert 0 <= d <= ceiling + 1e-9
        elif policy.jitter == "equal":
            assert ceiling / 2 - 1e-9 <= d <= ceiling + 1e-9
        else:
            assert policy.base_delay_s - 1e-9 <= d <= max(policy.base_delay_s, 3 * prev) + 1e-9
            prev = d
        ceiling = min(policy.max_delay_s, ceiling * policy.multiplier)


def test_exponential_growth_without_jitter_is_capped():
    p = RetryPolicy(max_attempts=7, base_delay_s=0.5, multiplier=2.0, max_delay_s=5.0, jitter="none")
    assert Backoff(p, random.Random(0)).plan() == (0.5, 1.0, 2.0, 4.0, 5.0, 5.0)


def test_backoff_survives_huge_attempt_counts():
    p = RetryPolicy(max_attempts=5000, base_delay_s=1.0, multiplier=10.0, max_delay_s=60.0, jitter="none")
    assert Backoff(p, random.Random(0)).plan()[-1] == 60.0  # grown stepwise: no float overflow


# --- retrier ------------------------------------------------------------------------


def test_transient_failures_recover_with_planned_sleeps():
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.1, jitter="full")
    r, t = retrier(policy, seed=3)
    fn = Flaky(2)
    assert r.call(fn) == "ok"
    assert fn.calls == 3
    assert t.sleeps == list(Backoff(policy, random.Random(3)).plan()[:2])
    s = r.stats()
    assert (s.calls, s.attempts, s.retries, s.successes) == (1, 3, 2, 1)
    assert s.slept_s == pytest.approx(sum(t.sleeps))


def test_exhaustion_raises_with_attempts_and_last_error_as_cause():
    r, _ = retrier(RetryPolicy(max_attempts=3, base_delay_s=0.01))
    with pytest.raises(RetriesExhaustedError) as ei:
        r.call(Flaky(10))
    err = ei.value
    assert err.attempts == 3
    assert isinstance(err.last_error, ConnectionError) and str(err.last_error) == "transient 3"
    assert err.__cause__ is err.last_error
    assert r.stats().exhausted == 1



def test_non_retryable_error_propagates_unchanged_after_one_attempt():
    r, t = retrier(RetryPolicy(max_attempts=5, retry_on=(ConnectionError,)))
    boom = KeyError("caller bug")

    def fn():
        raise boom

    with pytest.raises(KeyError) as ei:
        r.call(fn)
    assert ei.value is boom
    assert t.sleeps == [] and r.stats().non_retryable == 1


def test_retry_if_predicate_narrows_retry_on():
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.0, retry_if=lambda e: "transient" in str(e))
    r, _ = retrier(policy)
    assert r.call(Flaky(2)) == "ok"
    with pytest.raises(ValueError, match="permanent"):
        r.call(Flaky(1, exc=lambda msg: ValueError("permanent")))


def test_retry_on_result_retries_bad_values_then_reports_them():
    results = iter([None, None, 42])
    r, _ = retrier(RetryPolicy(max_attempts=3, base_delay_s=0.0, retry_on_result=lambda v: v is None))
    assert r.call(lambda: next(results)) == 42
    with pytest.raises(RetriesExhaustedError) as ei:
        r.call(lambda: None)
    assert ei.value.last_error is None and ei.value.last_result is None
    assert ei.value.attempts == 3


def test_circuit_open_is_not_retried_by_default():
    r, t = retrier(RetryPolicy(max_attempts=5))
    calls = []

    def refused():
        calls.append(1)
        raise CircuitOpenError("db", "open", 3.0)

    with pytest.raises(CircuitOpenError):
        r.call(refused)
    assert len(calls) == 1 and t.sleeps == []


def test_circuit_open_retried_on_request_waits_for_retry_after():
    r, t = retrier(RetryPolicy(max_attempts=2, base_delay_s=0.01, retry_on_circuit_open=True))
    state = {"n": 0}

    def half_way():
        state["n"] += 1
        if state["n"] == 1:
            raise CircuitOpenError("db", "open", 3.0)
        return "through"

    assert r.call(half_way) == "through"
    assert t.sleeps == [3.0]


@settings(max_examples=80, deadline=None)
@given(deadline_s=st.floats(0.5, 20, allow_nan=False), cost_s=st.floats(0, 3, allow_nan=False),
       base=st.floats(0, 2, allow_nan=False), jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
       seed=st.integers(0, 1000))
def test_deadline_no_attempt_or_sleep_past_it(deadline_s, cost_s, base, jitter, seed):
    policy = RetryPolicy(max_attempts=50, base_delay_s=base, max_delay_s=base + 5, jitter=jitter,
                         deadline_s=deadline_s)
    t = FakeTime()
    start = t.now
    r, _ = retrier(policy, t=t, seed=seed)
    fn = Flaky(10**6, t=t, cost_s=cost_s)
    sleep_ends = []
    real_sleep = t.sleep

    def sleep(s):
        real_sleep(s)
        sleep_ends.append(t.now)

    r._sleep = sleep
    with pytest.raises(RetriesExhaustedError) as ei:
        r.call(fn)
    assert ei.value.attempts == len(fn.started_at)
    assert fn.started_at[0] == start
    assert all(s <= start + deadline_s + 1e-9 for s in fn.started_at)
    assert all(e <= start + deadline_s + 1e-9 for e in sleep_ends)
    if len(fn.started_at) < 50:  # stopped early: only the deadline may have stopped it
        assert "deadline" in str(ei.value)


def test_deadline_stops_before_planned_sleep():
    policy = RetryPolicy(max_attempts=10, base_delay_s=2.0, multiplier=1.0, jitter="none", deadline_s=5.0)
    t = FakeTime()
    r, _ = retrier(policy, t=t)
    fn = Flaky(100, t=t, cost_s=0.5)
    with pytest.raises(RetriesExhaustedError, match="deadline") as ei:
        r.call(fn)
    # Attempts start at 0, 2.5 and 5.0 (a start exactly at the deadline is not past it);
    # the third ends at 5.5, and a further 2 s sleep would end past the deadline: stop.
    assert [round(s - 100.0, 6) for s in fn.started_at] == [0.0, 2.5, 5.0]
    assert ei.value.attempts == 3 and t.sleeps == [2.0, 2.0]


def test_call_async_retries_with_async_sleep():
    r, t = retrier(RetryPolicy(max_attempts=3, base_delay_s=0.2, jitter="none"))
    fn = Flaky(2)

    async def coro():
        return fn()

    assert asyncio.run(r.call_async(coro)) == "ok"
    assert t.sleeps == [0.2, 0.4]

    async def always_bad():
        raise ConnectionError("down")

    with pytest.raises(RetriesExhaustedError):
        asyncio.run(r.call_async(always_bad))


def test_keyboard_interrupt_is_never_retried():
    r, _ = retrier(RetryPolicy(max_attempts=5, retry_on=(BaseException,)))
    with pytest.raises(KeyboardInterrupt):
        r.call(Flaky(1, exc=KeyboardInterrupt))


@pytest.mark.parametrize("bad", [
    dict(max_attempts=0), dict(base_delay_s=-1), dict(base_delay_s=2, max_delay_s=1),
    dict(multiplier=0.5), dict(jitter="random"), dict(deadline_s=0),
])
def test_policy_rejects_bad_config(bad):
    with pytest.raises(ConfigError):
        RetryPolicy(**bad)


@pytest.mark.parametrize("bad", [dict(max_attempts=2.0), dict(retry_on=ValueError),
                                 dict(retry_if="yes"), dict(retry_on_circuit_open=1)])
def test_policy_rejects_wrong_types(bad):
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(**bad)
