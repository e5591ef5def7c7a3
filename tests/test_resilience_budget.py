"""Retry budget: retries stay a bounded fraction of requests, even in a total outage."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import ConfigError, RetriesExhaustedError, RetryBudgetExhaustedError
from ddia_ray.resilience import Retrier, RetryBudget, RetryPolicy


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reserve_allows_a_floor_of_retries_without_traffic():
    clock = FakeClock()
    b = RetryBudget(ratio=0.2, min_retries_per_s=0.5, ttl_s=4, clock=clock)
    assert b.reserve == 2.0
    assert [b.try_withdraw() for _ in range(3)] == [True, True, False]
    clock.now += 4.0  # the withdrawals expire with the TTL: the floor is available again
    assert b.try_withdraw()


def test_each_request_deposits_ratio_tokens():
    b = RetryBudget(ratio=0.2, min_retries_per_s=0.0, ttl_s=10, clock=FakeClock())
    for _ in range(10):
        b.deposit()
    assert b.balance() == pytest.approx(2.0)
    assert [b.try_withdraw() for _ in range(3)] == [True, True, False]
    s = b.stats()
    assert (s.deposits, s.withdrawals, s.rejected) == (10, 2, 1)


def test_deposits_expire_after_ttl_so_savings_cannot_fund_a_storm():
    clock = FakeClock()
    b = RetryBudget(ratio=0.5, min_retries_per_s=0.0, ttl_s=3, clock=clock)
    for _ in range(100):
        b.deposit()
    assert b.balance() == pytest.approx(50.0)
    clock.now = 2.999
    assert b.balance() == pytest.approx(50.0)
    clock.now = 3.0
    assert b.balance() == 0.0
    assert not b.try_withdraw()


@settings(max_examples=40, deadline=None)
@given(ratio=st.sampled_from([0.1, 0.2, 0.5]), requests=st.integers(1, 400),
       max_attempts=st.integers(2, 6), floor=st.sampled_from([0.0, 1.0]))
def test_total_outage_load_is_bounded_by_ratio(ratio, requests, max_attempts, floor):
    clock = FakeClock(1000.0)
    ttl_s = 10
    budget = RetryBudget(ratio=ratio, min_retries_per_s=floor, ttl_s=ttl_s, clock=clock)
    retrier = Retrier(RetryPolicy(max_attempts=max_attempts, base_delay_s=0.0), budget=budget,
                      rng=random.Random(0), clock=clock, sleep=lambda s: None)
    backend_calls = 0

    def down():
        nonlocal backend_calls
        backend_calls += 1
        raise ConnectionError("backend down")

    budget_refusals = 0
    for _ in range(requests):  # all inside one TTL window: the worst case for the bound
        with pytest.raises(RetriesExhaustedError) as ei:
            retrier.call(down)
        budget_refusals += isinstance(ei.value, RetryBudgetExhaustedError)
    retries = backend_calls - requests
    assert retries <= ratio * requests + floor * ttl_s + 1e-6
    # The budget is not stricter than promised either: it spends what it has.
    assert retries >= min((max_attempts - 1) * requests, int(ratio * requests + floor * ttl_s + 1e-6)) - 1
    assert retrier.stats().budget_exhausted == budget_refusals
    if (max_attempts - 1) * requests > ratio * requests + floor * ttl_s + 1:
        assert budget_refusals > 0


def test_without_budget_an_outage_multiplies_load():
    clock = FakeClock()
    retrier = Retrier(RetryPolicy(max_attempts=4, base_delay_s=0.0), clock=clock, sleep=lambda s: None)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError()

    for _ in range(50):
        with pytest.raises(RetriesExhaustedError):
            retrier.call(down)
    assert len(calls) == 200  # 4x: what the budget exists to prevent


def test_budget_is_thread_safe():
    b = RetryBudget(ratio=1.0, min_retries_per_s=0.0, ttl_s=60, clock=FakeClock())
    for _ in range(1000):
        b.deposit()
    granted = []
    lock = threading.Lock()

    def grab():
        mine = sum(b.try_withdraw() for _ in range(400))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=grab) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 1000
    assert b.stats().rejected == 6 * 400 - 1000


def test_budget_validates_arguments():
    with pytest.raises(ConfigError):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ConfigError):
        RetryBudget(ttl_s=0)
