"""Retries with capped exponential backoff, jitter, a deadline and a budget.

Theory of operation
-------------------
A retry is only safe for idempotent work and only useful for transient
faults (DDIA ch. 8: a timeout cannot tell a lost request from a lost reply).
A :class:`RetryPolicy` states which failures are transient (``retry_on``
types, narrowed by the ``retry_if`` predicate; ``retry_on_result`` for bad
return values) and how long to wait between attempts.

Delays follow "Exponential Backoff And Jitter" (Marc Brooker, AWS
Architecture Blog, 2015). With ``c_n = min(max_delay_s, base_delay_s *
multiplier**n)`` for the n-th retry (n from 0):

* ``none``: ``c_n`` (synchronised clients retry in lockstep: avoid at scale);
* ``full``: ``uniform(0, c_n)``, least total work for the server;
* ``equal``: ``c_n/2 + uniform(0, c_n/2)``, never retries almost at once;
* ``decorrelated``: ``d = min(max_delay_s, uniform(base_delay_s, 3 * d_prev))``
  starting from ``d_prev = base_delay_s`` (the blog's growth factor 3; the
  ``multiplier`` is not used).

:class:`Backoff` computes these delays and nothing else (pure, seeded
``random.Random``). :class:`Retrier` runs the loop: the first attempt always
runs; after a retryable failure it stops, raising
:class:`RetriesExhaustedError` chained to the last error, when attempts are
used up, or when the planned sleep would end past ``deadline_s`` (measured
from the start of the call, so no attempt starts and no sleep is planned
past it); it raises :class:`RetryBudgetExhaustedError` when the shared
:class:`~ddia_ray.resilience.RetryBudget` refuses the retry. Non-retryable
errors are re-raised unchanged, never wrapped.

A breaker's refusal (:class:`CallNotPermittedError`) is not retried unless
``retry_on_circuit_open=True``: the breaker exists to shed load, and
retrying into it only burns attempts. When it is retried, the sleep is at
least the breaker's ``retry_after_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from typing import Any, Callable

from .._validate import at_least, integer, non_negative, positive
from ..errors import (CallNotPermittedError, ConfigError, InvalidArgumentError,
                      RetriesExhaustedError, RetryBudgetExhaustedError)
from .budget import RetryBudget

__all__ = ["JITTERS", "RetryPolicy", "Backoff", "Retrier", "RetryStats"]

#: The jitter modes of :class:`RetryPolicy`.
JITTERS = ("none", "full", "equal", "decorrelated")
_DECORRELATED_GROWTH = 3.0  # per the AWS blog's decorrelated jitter


def _exception_types(name: str, value) -> tuple:
    if not isinstance(value, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value):
        raise InvalidArgumentError(f"{name} must be a tuple of exception classes, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how often to retry; validated on construction."""

    max_attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    jitter: str = "full"
    deadline_s: float | None = None
    retry_on: tuple = (Exception,)
    retry_if: Callable[[BaseException], bool] | None = None
    retry_on_result: Callable[[Any], bool] | None = None
    retry_on_circuit_open: bool = False

    def __post_init__(self):
        at_least("max_attempts", integer("max_attempts", self.max_attempts), 1)
        non_negative("base_delay_s", self.base_delay_s)
        at_least("max_delay_s", self.max_delay_s, self.base_delay_s)
        at_least("multiplier", self.multiplier, 1.0)
        if self.jitter not in JITTERS:
            raise ConfigError(f"jitter must be one of {JITTERS}, got {self.jitter!r}")
        if self.deadline_s is not None:
            positive("deadline_s", self.deadline_s)
        _exception_types("retry_on", self.retry_on)
        for name in ("retry_if", "retry_on_result"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable or None")
        if not isinstance(self.retry_on_circuit_open, bool):
            raise InvalidArgumentError("retry_on_circuit_open must be a bool")

    def is_retryable(self, exc: BaseException) -> bool:
        """True if ``exc`` is worth another attempt under this policy."""
        if not isinstance(exc, Exception):
            return False  # cancellation and interrupts are the caller's decision, never retried
        if isinstance(exc, CallNotPermittedError) and not self.retry_on_circuit_open:
            return False
        if not isinstance(exc, self.retry_on):
            return False
        return self.retry_if is None or bool(self.retry_if(exc))

    def is_retryable_result(self, result: Any) -> bool:
        """True if a returned value should be treated as a transient failure."""
        return self.retry_on_result is not None and bool(self.retry_on_result(result))


class Backoff:
    """The delays before retries 1 .. ``max_attempts - 1`` of one call (pure, seeded)."""

    def __init__(self, policy: RetryPolicy, rng: random.Random):
        if not isinstance(policy, RetryPolicy):
            raise InvalidArgumentError("policy must be a RetryPolicy")
        if not isinstance(rng, random.Random):
            raise InvalidArgumentError("rng must be a random.Random (seed it for reproducibility)")
        self._policy = policy
        self._rng = rng
        self._left = policy.max_attempts - 1
        self._ceiling = float(policy.base_delay_s)  # c_n, grown multiplicatively: never overflows
        self._prev = float(policy.base_delay_s)     # decorrelated jitter's previous delay

    def __iter__(self) -> "Backoff":
        return self

    def __next__(self) -> float:
        if self._left <= 0:
            raise StopIteration
        self._left -= 1
        p, rng, ceiling = self._policy, self._rng, self._ceiling
        self._ceiling = min(float(p.max_delay_s), ceiling * p.multiplier)
        if p.jitter == "none":
            return ceiling
        if p.jitter == "full":
            return rng.uniform(0.0, ceiling)
        if p.jitter == "equal":
            return ceiling / 2 + rng.uniform(0.0, ceiling / 2)
        base = float(p.base_delay_s)
        self._prev = min(float(p.max_delay_s),
                         rng.uniform(base, max(base, self._prev * _DECORRELATED_GROWTH)))
        return self._prev

    def plan(self) -> tuple[float, ...]:
        """All remaining delays at once."""
        return tuple(self)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryStats:
    """Immutable counters of a :class:`Retrier` since it was created."""

    calls: int
    attempts: int
    retries: int
    successes: int
    non_retryable: int
    exhausted: int
    budget_exhausted: int
    slept_s: float


_NO_RESULT = object()


class _Run:
    """Bookkeeping of one ``call``: attempts made, delays left, deadline."""

    def __init__(self, retrier: "Retrier"):
        self.r = retrier
        p = retrier.policy
        self.started_s = retrier._clock()
        self.deadline_at_s = float("inf") if p.deadline_s is None else self.started_s + p.deadline_s
        self.delays = Backoff(p, retrier._rng)
        self.attempts = 0
        self.last_error: BaseException | None = None
        self.last_result: Any = _NO_RESULT
        if retrier.budget is not None:
            retrier.budget.deposit()
        retrier._count(calls=1)

    def begin_attempt(self) -> None:
        if self.attempts and self.r._clock() > self.deadline_at_s:  # the sleep overran
            self._give_up(f"deadline of {self.r.policy.deadline_s}s passed",
                          self.last_error, self.last_result)
        self.attempts += 1
        self.r._count(attempts=1, retries=1 if self.attempts > 1 else 0)

    def plan_retry(self, error: BaseException | None, result: Any = _NO_RESULT) -> float:
        """The delay before the next attempt, or raise the right 'giving up' error."""
        p = self.r.policy
        self.last_error, self.last_result = error, result
        if self.attempts >= p.max_attempts:
            self._give_up(f"all {self.attempts} attempts failed", error, result)
        delay_s = next(self.delays)
        hint = error.retry_after_s if isinstance(error, CallNotPermittedError) else None
        if hint is not None:
            delay_s = max(delay_s, hint)  # retrying before the breaker half-opens is pointless
        if self.r._clock() + delay_s > self.deadline_at_s:
            self._give_up(f"deadline of {p.deadline_s}s leaves no room for a {delay_s:.3f}s backoff",
                          error, result)
        budget = self.r.budget
        if budget is not None and not budget.try_withdraw():
            self.r._count(budget_exhausted=1)
            err = RetryBudgetExhaustedError(
                f"retry budget spent after {self.attempts} attempt(s) (the backend is probably "
                f"overloaded; retries are capped at {budget.ratio:.0%} of requests)",
                self.attempts, error)
            raise err from error
        self.r._count(slept_s=delay_s)
        return delay_s

    def _give_up(self, why: str, error: BaseException | None, result: Any = _NO_RESULT):
        self.r._count(exhausted=1)
        last = f"last error: {error!r}" if error is not None else f"last result: {result!r}"
        err = RetriesExhaustedError(f"{why}; {last}", self.attempts, error)
        if result is not _NO_RESULT:
            err.last_result = result
        raise err from error


class Retrier:
    """Runs callables under a :class:`RetryPolicy` (and optionally a shared :class:`RetryBudget`)."""

    def __init__(self, policy: RetryPolicy, budget: RetryBudget | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep,
                 async_sleep: Callable[[float], Any] = asyncio.sleep):
        if not isinstance(policy, RetryPolicy):
            raise InvalidArgumentError("policy must be a RetryPolicy")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise InvalidArgumentError("budget must be a RetryBudget or None")
        for name, fn in (("clock", clock), ("sleep", sleep), ("async_sleep", async_sleep)):
            if not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable")
        self.policy = policy
        self.budget = budget
        # An unseeded Random by default: independent clients must not jitter in lockstep.
        self._rng = random.Random() if rng is None else rng
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {f.name: 0 for f in dataclasses.fields(RetryStats)}  # int counts, float slept_s
        self._stats["slept_s"] = 0.0

    def _count(self, **deltas) -> None:
        with self._lock:
            for k, v in deltas.items():
                self._stats[k] += v

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Call ``fn(*args, **kwargs)`` until it succeeds or the policy gives up."""
        run = _Run(self)
        while True:
            run.begin_attempt()
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                if not self.policy.is_retryable(e):
                    self._count(non_retryable=1)
                    raise
                delay_s = run.plan_retry(e)
            else:
                if not self.policy.is_retryable_result(result):
                    self._count(successes=1)
                    return result
                delay_s = run.plan_retry(None, result)
            self._sleep(delay_s)

    async def call_async(self, coro_fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Await ``coro_fn(*args, **kwargs)`` until it succeeds or the policy gives up."""
        run = _Run(self)
        while True:
            run.begin_attempt()
            try:
                result = await coro_fn(*args, **kwargs)
            except BaseException as e:
                if not self.policy.is_retryable(e):
                    self._count(non_retryable=1)
                    raise
                delay_s = run.plan_retry(e)
            else:
                if not self.policy.is_retryable_result(result):
                    self._count(successes=1)
                    return result
                delay_s = run.plan_retry(None, result)
            await self._async_sleep(delay_s)

    def stats(self) -> RetryStats:
        """Immutable counters: calls, attempts, retries, outcomes and total planned sleep."""
        with self._lock:
            return RetryStats(**self._stats)
