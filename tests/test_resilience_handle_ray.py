"""ResilientHandle on real Ray actors: retries, timeouts, dead actors, breaker, futures, asyncio."""

from __future__ import annotations

import asyncio
import collections
import os

import pytest
import ray
from raywait import actor_dead, wait_for

from ddia_ray.errors import (ActorUnavailableError, CallTimeoutError, CircuitOpenError, ConfigError,
                             RetriesExhaustedError)
from ddia_ray.resilience import (CircuitBreaker, CircuitBreakerConfig, ResilientHandle, RetryBudget,
                                 RetryPolicy, State)

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0)
class Backend:
    """A test double: counts every call it actually receives."""

    def __init__(self):
        self.calls = collections.Counter()
        self.slow_cancelled = asyncio.Event()

    async def ok(self, x):
        self.calls["ok"] += 1
        return x

    async def flaky(self, key, failures):
        """Raise ConnectionError the first ``failures`` times it is called with ``key``."""
        self.calls[key] += 1
        if self.calls[key] <= failures:
            raise ConnectionError(f"{key}: transient failure {self.calls[key]}")
        return key

    async def fail(self):
        self.calls["fail"] += 1
        raise ValueError("always fails")

    async def slow(self, seconds):
        self.calls["slow"] += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return seconds

    async def wait_slow_cancelled(self):
        await self.slow_cancelled.wait()
        return True

    async def die(self):
        os._exit(1)

    async def count(self, key):
        return self.calls[key]


@pytest.fixture(scope="module")
def backend(ray_session):
    actor = Backend.remote()
    yield actor
    ray.kill(actor)


def quick_retry(**kw):
    return RetryPolicy(**{"max_attempts": 4, "base_delay_s": 0.01, "max_delay_s": 0.05,
                          "retry_on": (ConnectionError, ActorUnavailableError), **kw})


def test_retries_recover_from_transient_failures(backend):
    h = ResilientHandle(backend, timeout_s=30, retry=quick_retry(), name="backend")
    assert h.flaky("sync-2", 2) == "sync-2"
    assert ray.get(backend.count.remote("sync-2")) == 3
    s = h.stats()
    assert (s.calls, s.attempts, s.retries, s.failures, s.successes) == (1, 3, 2, 2, 1)


def test_exhausted_retries_keep_the_last_specific_error(backend):
    h = ResilientHandle(backend, retry=quick_retry(max_attempts=2), name="backend")
    with pytest.raises(RetriesExhaustedError) as ei:
        h.flaky("never", 100)
    assert isinstance(ei.value.last_error, ConnectionError)
    assert "transient failure 2" in str(ei.value.last_error)
    assert ei.value.attempts == 2


def test_application_error_surfaces_as_its_own_type_and_is_not_retried(backend):
    h = ResilientHandle(backend, retry=quick_retry())
    before = ray.get(backend.count.remote("fail"))
    with pytest.raises(ValueError, match="always fails") as ei:
        h.fail()
    assert isinstance(ei.value.__cause__, ray.exceptions.RayTaskError)  # remote traceback kept
    assert ray.get(backend.count.remote("fail")) == before + 1


def test_timeout_raises_call_timeout_error(backend):
    h = ResilientHandle(backend, timeout_s=0.3, name="backend")
    with pytest.raises(CallTimeoutError, match=r"backend\.slow\(\) got no reply within 0\.3s"):
        h.slow(30)
    assert h.stats().timeouts == 1
    # The timed-out request was cancelled on the actor, not left running for 30 s.
    assert ray.get(backend.wait_slow_cancelled.remote(), timeout=20) is True
    assert h.ok(7) == 7


def test_killed_actor_raises_actor_unavailable(ray_session):
    actor = Backend.remote()
    h = ResilientHandle(actor, timeout_s=30, name="victim")
    assert h.ok(1) == 1
    ray.kill(actor, no_restart=True)
    # ray.kill only requests the kill, and a call sent right after it can still reach the
    # live worker first: wait until Ray reports the actor dead.
    actor_id = actor._actor_id.hex()
    wait_for(lambda: actor_dead(actor_id), what="the killed actor to be dead")
    with pytest.raises(ActorUnavailableError, match="victim") as ei:
        h.ok(2)
    assert isinstance(ei.value.__cause__, ray.exceptions.RayActorError)
    retried = ResilientHandle(actor, timeout_s=30, retry=quick_retry(max_attempts=2), name="victim")
    with pytest.raises(RetriesExhaustedError) as ei:
        retried.ok(3)
    assert isinstance(ei.value.last_error, ActorUnavailableError)
    assert retried.stats().actor_unavailable == 2


def test_actor_that_dies_mid_call_raises_actor_unavailable(ray_session):
    h = ResilientHandle(Backend.remote(), timeout_s=30, name="crasher")
    with pytest.raises(ActorUnavailableError, match=r"die\(\)"):
        h.die()


def test_breaker_opens_then_rejects_without_calling_the_actor(ray_session):
    actor = Backend.remote()
    breaker = CircuitBreaker("backend", CircuitBreakerConfig(window_size=3, minimum_calls=3,
                                                             wait_in_open_s=600))
    h = ResilientHandle(actor, timeout_s=30, breaker=breaker, retry=quick_retry(retry_on=(ValueError,)))
    with pytest.raises(CircuitOpenError):
        h.fail()  # attempts 1-3 fail and open the breaker; attempt 4 is refused and not retried
    assert breaker.state is State.OPEN
    assert ray.get(actor.count.remote("fail")) == 3
    with pytest.raises(CircuitOpenError) as ei:
        h.ok(1)
    assert ei.value.retry_after_s > 500
    assert ray.get(actor.count.remote("ok")) == 0  # refused before any remote call
    s = h.stats()
    assert (s.rejected, s.failures, s.attempts) == (2, 3, 5)
    ray.kill(actor)


def test_futures_run_concurrently_and_retry(backend):
    h = ResilientHandle(backend, timeout_s=30, retry=quick_retry(), budget=RetryBudget())
    futures = [h.ok.future(i) for i in range(20)]
    assert [f.result(timeout=60) for f in futures] == list(range(20))
    assert h.flaky.future("future-1", 1).result(timeout=60) == "future-1"
    with pytest.raises(ValueError):
        h.fail.future().result(timeout=60)
    assert h.stats().retries == 1


def test_aio_variant(backend):
    h = ResilientHandle(backend, timeout_s=30, retry=quick_retry(), name="backend")
    impatient = ResilientHandle(backend, timeout_s=0.2, name="backend")
    retry_timeouts = ResilientHandle(backend, timeout_s=0.2, name="backend",
                                     retry=quick_retry(max_attempts=2, retry_on=(CallTimeoutError,)))

    async def scenario():
        values = await asyncio.gather(*(h.ok.aio(i) for i in range(10)))
        recovered = await h.flaky.aio("aio-2", 2)
        with pytest.raises(CallTimeoutError):
            await impatient.slow.aio(30)
        with pytest.raises(RetriesExhaustedError) as ei:
            await retry_timeouts.slow.aio(30)
        return values, recovered, ei.value

    values, recovered, exhausted = asyncio.run(scenario())
    assert values == list(range(10)) and recovered == "aio-2"
    assert isinstance(exhausted.last_error, CallTimeoutError) and exhausted.attempts == 2
    assert h.stats().retries == 2
    assert retry_timeouts.stats().timeouts == 2


def test_handle_argument_checks(backend):
    with pytest.raises(ConfigError):
        ResilientHandle(backend, budget=RetryBudget())
    with pytest.raises(ConfigError):
        ResilientHandle(backend, timeout_s=0)
    with pytest.raises(AttributeError):
        ResilientHandle(backend).no_such_method
