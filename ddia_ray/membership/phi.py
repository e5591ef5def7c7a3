"""The phi accrual failure detector (Hayashibara et al. 2004, as in Akka and Cassandra).

Theory of operation
-------------------
Instead of a yes/no timeout, the detector outputs a suspicion level
``phi = -log10(P(a heartbeat arrives later than now))``, estimated from the
recent heartbeat inter-arrival times modelled as a normal distribution
(Hayashibara et al., "The phi Accrual Failure Detector", SRDS 2004; DDIA
ch. 8 "Timeouts and Unbounded Delays"). ``phi = 1`` means a 10% chance that
a node we now suspect is in fact alive, ``phi = 8`` a 1e-8 chance, so the
application picks its own trade-off by choosing a threshold.

* The history is a bounded window of the last ``history_size`` intervals. A
  running sum and sum of squares (shifted by ``first_heartbeat_estimate_s``
  to avoid cancellation) make each update O(1); they are recomputed exactly
  once per ``history_size`` evictions so rounding errors cannot accumulate.
* As in Akka, the history is bootstrapped with two intervals around
  ``first_heartbeat_estimate_s`` (standard deviation = estimate / 4), so phi
  is meaningful from the second heartbeat on; the interval ending in a
  heartbeat that arrives while the node is deemed unavailable is *not*
  recorded, so an outage does not inflate the learned distribution.
* The normal CDF uses Akka's logistic approximation,
  ``P(X > t) ~ 1 / (1 + exp(y * (1.5976 + 0.070566 y^2)))`` with
  ``y = (t - mean) / std``, evaluated as a numerically stable softplus.
  ``acceptable_heartbeat_pause_s`` is added to the mean (tolerated GC pauses,
  lost heartbeats) and ``min_std_deviation_s`` keeps perfectly regular
  heartbeats from making the detector hair-triggered.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

from .._validate import at_least, integer, non_negative, number, positive
from ..errors import ConfigError

__all__ = ["PhiAccrualDetector", "PhiStats"]

_LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True, slots=True)
class PhiStats:
    """An immutable summary of a detector's learned heartbeat distribution."""

    samples: int
    mean_interval_s: float
    std_deviation_s: float
    last_heartbeat_s: float | None


class PhiAccrualDetector:
    """Suspicion level of one monitored process from its heartbeat arrival times.

    Times are caller-supplied seconds (``now_s``) from one monotonic clock.
    """

    __slots__ = (
        "_threshold",
        "_history_size",
        "_min_std_deviation_s",
        "_acceptable_heartbeat_pause_s",
        "_first_heartbeat_estimate_s",
        "_intervals",
        "_shifted_sum",
        "_shifted_sum_sq",
        "_evictions",
        "_last_heartbeat_s",
    )

    def __init__(
        self,
        threshold: float = 8.0,
        history_size: int = 1000,
        min_std_deviation_s: float = 0.1,
        acceptable_heartbeat_pause_s: float = 0.0,
        first_heartbeat_estimate_s: float = 1.0,
    ) -> None:
        self._threshold = float(positive("threshold", threshold))
        self._history_size = at_least("history_size", integer("history_size", history_size), 1)
        self._min_std_deviation_s = float(positive("min_std_deviation_s", min_std_deviation_s))
        self._acceptable_heartbeat_pause_s = float(
            non_negative("acceptable_heartbeat_pause_s", acceptable_heartbeat_pause_s)
        )
        self._first_heartbeat_estimate_s = float(
            positive("first_heartbeat_estimate_s", first_heartbeat_estimate_s)
        )
        self._intervals: deque[float] = deque()
        self._shifted_sum = 0.0
        self._shifted_sum_sq = 0.0
        self._evictions = 0
        self._last_heartbeat_s: float | None = None
        estimate = self._first_heartbeat_estimate_s
        for interval in (estimate - estimate / 4, estimate + estimate / 4):
            self._record(interval)

    @property
    def threshold(self) -> float:
        """``is_available`` is ``phi < threshold``."""
        return self._threshold

    @property
    def last_heartbeat_s(self) -> float | None:
        """Arrival time of the latest heartbeat, ``None`` before the first."""
        return self._last_heartbeat_s

    def heartbeat(self, now_s: float) -> None:
        """Record a heartbeat that arrived at ``now_s``.

        Raises :class:`~ddia_ray.errors.ConfigError` if ``now_s`` is earlier
        than the previous heartbeat (the caller's clock is not monotonic).
        """
        number("now_s", now_s)
        last = self._last_heartbeat_s
        if last is not None:
            if now_s < last:
                raise ConfigError(
                    f"heartbeat at now_s={now_s!r} is earlier than the previous one at {last!r}; "
                    "pass times from a monotonic clock"
                )
            # Akka: a heartbeat after the node was deemed down must not teach the
            # detector that long silences are normal.
            if self.is_available(now_s):
                self._record(now_s - last)
        self._last_heartbeat_s = float(now_s)

    def phi(self, now_s: float) -> float:
        """The suspicion level at ``now_s`` (0.0 before the first heartbeat).

        Non-decreasing in ``now_s`` between heartbeats; ``math.inf`` only for
        absurdly long silences (beyond about 1e100 standard deviations).
        """
        number("now_s", now_s)
        if self._last_heartbeat_s is None:
            return 0.0
        elapsed_s = max(0.0, now_s - self._last_heartbeat_s)
        mean_s, std_s = self._distribution()
        expected_s = mean_s + self._acceptable_heartbeat_pause_s
        y = (elapsed_s - expected_s) / max(std_s, self._min_std_deviation_s)
        z = y * (1.5976 + 0.070566 * y * y)
        # phi = log10(1 + e^z); the two branches avoid overflow and cancellation
        # (the same split Akka makes on timeDiff > mean).
        if z > 0:
            return (z + math.log1p(math.exp(-z))) / _LN10
        return math.log1p(math.exp(z)) / _LN10

    def is_available(self, now_s: float) -> bool:
        """``True`` while ``phi(now_s) < threshold``."""
        return self.phi(now_s) < self._threshold

    def stats(self) -> PhiStats:
        """The current mean and standard deviation of the interval history."""
        mean_s, std_s = self._distribution()
        return PhiStats(len(self._intervals), mean_s, std_s, self._last_heartbeat_s)

    def _distribution(self) -> tuple[float, float]:
        n = len(self._intervals)
        shifted_mean = self._shifted_sum / n
        variance = max(0.0, self._shifted_sum_sq / n - shifted_mean * shifted_mean)
        return self._first_heartbeat_estimate_s + shifted_mean, math.sqrt(variance)

    def _record(self, interval_s: float) -> None:
        shift = self._first_heartbeat_estimate_s
        if len(self._intervals) == self._history_size:
            old = self._intervals.popleft() - shift
            self._shifted_sum -= old
            self._shifted_sum_sq -= old * old
            self._evictions += 1
        self._intervals.append(interval_s)
        d = interval_s - shift
        self._shifted_sum += d
        self._shifted_sum_sq += d * d
        if self._evictions >= self._history_size:
            # Amortised O(1): one exact recomputation per window's worth of updates.
            self._evictions = 0
            self._shifted_sum = math.fsum(x - shift for x in self._intervals)
            self._shifted_sum_sq = math.fsum((x - shift) ** 2 for x in self._intervals)
