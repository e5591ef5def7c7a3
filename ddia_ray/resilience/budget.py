"""A retry budget: retries may add at most a fixed fraction to the load.

Theory of operation
-------------------
Per-request retry limits do not protect a backend that is down: with three
attempts per request, every client triples its load exactly when the backend
can least afford it, and the overload feeds itself (a "retry storm", the
metastable failure behind many cascading outages). A *budget* bounds retries
across all requests instead, as Finagle's ``RetryBudget`` and Envoy's
``retry_budget`` do:

* every first attempt **deposits** ``ratio`` tokens (e.g. 0.2);
* every retry **withdraws** one token, and is refused when fewer than one is left;
* deposits and withdrawals only count for ``ttl_s`` seconds, which bounds the
  balance: tokens saved during a quiet hour cannot fund a storm later;
* a **reserve** of ``min_retries_per_s * ttl_s`` tokens lets low-traffic
  clients retry at all (with 2 requests a minute, 20% would never add up to
  one retry).

So during a total outage, over any ``ttl_s`` window, retries are at most
``ratio * requests + min_retries_per_s * ttl_s``: the backend sees at most
``(1 + ratio)x`` the offered load plus a small constant, instead of
``max_attempts x``. When the backend is healthy, retries are rare and the
budget is never the limit.

Counts live in per-second buckets of the injected clock (one ring per
counter, ``ttl_s`` buckets, subtract-on-evict), so every operation is
amortised O(1) and the class is thread-safe behind one lock.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Callable

from .._validate import at_least, integer, invariant, non_negative, number
from ..errors import InvalidArgumentError

__all__ = ["RetryBudget", "BudgetStats"]

# Float tolerance when comparing the balance with one token: 5 deposits of 0.2 are one retry.
_EPS = 1e-9


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetStats:
    """Immutable counters of a :class:`RetryBudget` (lifetime totals, plus the current balance)."""

    deposits: int
    withdrawals: int
    rejected: int
    balance: float


class _WindowedCounter:
    """A sum over the last ``ttl_s`` whole seconds, one bucket per second."""

    __slots__ = ("_ttl", "_counts", "_head", "_total")

    def __init__(self, ttl_s: int):
        self._ttl = ttl_s
        self._counts = [0] * ttl_s
        self._head: int | None = None
        self._total = 0

    def _advance(self, now: float) -> int:
        sec = math.floor(now)
        if self._head is None:
            self._head = sec
        elif sec > self._head:
            if sec - self._head >= self._ttl:
                self._counts = [0] * self._ttl
                self._total = 0
            else:
                for s in range(self._head + 1, sec + 1):  # buckets that just left the window
                    i = s % self._ttl
                    self._total -= self._counts[i]
                    self._counts[i] = 0
            self._head = sec
        # A clock that steps back is folded into the newest bucket.
        return self._head % self._ttl

    def add(self, now: float, n: int = 1) -> None:
        self._counts[self._advance(now)] += n
        self._total += n

    def total(self, now: float) -> int:
        self._advance(now)
        invariant(self._total >= 0, "windowed counter went negative")
        return self._total


class RetryBudget:
    """Token budget shared by many callers: retries limited to ``ratio`` of requests plus a reserve."""

    def __init__(self, ratio: float = 0.2, min_retries_per_s: float = 10.0, ttl_s: int = 10,
                 clock: Callable[[], float] = time.monotonic):
        self.ratio = non_negative("ratio", ratio)
        self.min_retries_per_s = non_negative("min_retries_per_s", min_retries_per_s)
        self.ttl_s = at_least("ttl_s", integer("ttl_s", ttl_s), 1)
        if not callable(clock):
            raise InvalidArgumentError("clock must be a callable returning seconds")
        self._clock = clock
        self._lock = threading.Lock()
        self._deposits = _WindowedCounter(ttl_s)
        self._withdrawals = _WindowedCounter(ttl_s)
        self._total_deposits = self._total_withdrawals = self._rejected = 0

    @property
    def reserve(self) -> float:
        """Tokens available even with no traffic: ``min_retries_per_s * ttl_s``."""
        return self.min_retries_per_s * self.ttl_s

    def _balance_locked(self, now: float) -> float:
        return (self.ratio * self._deposits.total(now) + self.reserve
                - self._withdrawals.total(now))

    def deposit(self) -> None:
        """Record one first attempt (a request), earning ``ratio`` tokens for ``ttl_s`` seconds."""
        with self._lock:
            self._deposits.add(number("now", self._clock()))
            self._total_deposits += 1

    def try_withdraw(self) -> bool:
        """Take one token for a retry; False (and nothing taken) if the budget is spent."""
        with self._lock:
            now = number("now", self._clock())
            if self._balance_locked(now) < 1.0 - _EPS:
                self._rejected += 1
                return False
            self._withdrawals.add(now)
            self._total_withdrawals += 1
            return True

    def balance(self) -> float:
        """Tokens currently available (may be fractional)."""
        with self._lock:
            return self._balance_locked(number("now", self._clock()))

    def stats(self) -> BudgetStats:
        """Lifetime deposits, withdrawals and rejections, and the current balance."""
        with self._lock:
            return BudgetStats(self._total_deposits, self._total_withdrawals, self._rejected,
                               self._balance_locked(number("now", self._clock())))
