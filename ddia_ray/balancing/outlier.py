"""Passive outlier detection: eject replicas that keep failing, like Envoy does.

Theory of operation
-------------------
The detector watches request outcomes (:meth:`OutlierDetector.record`) rather
than probing, and temporarily *ejects* members that look broken, so a
balancer routes around them (DDIA ch. 8: a node that fails requests is
indistinguishable from a dead one, so stop asking it for a while).

* **Consecutive failures**: the ``consecutive_failures``-th failure in a row
  ejects the member at once, inside :meth:`record`.
* **Failure rate** (optional): every ``interval_s``, a member with at least
  ``minimum_requests`` outcomes in the interval whose failure percentage is at
  least ``failure_rate_threshold`` is ejected, worst first.
* **Ejection time grows**: the k-th ejection lasts ``min(base_ejection_s * k,
  max_ejection_s)``. The multiplier ``k`` *decays*: it drops by one for every
  full interval a member stays routable without a single failure (the interval
  in which it was readmitted does not count, or a flapping member would never
  back off). :meth:`tick` readmits members whose ejection has expired.
* **Never eject too much**: a member is ejected only if the number ejected
  afterwards stays ``<= floor(pool_size * max_ejection_percent / 100)``.
  Rounding down means 50% of 3 members is 1 and a lone member is never
  ejected; any percentage below 100 leaves at least one member routable.
  Shrinking the pool never cuts an ongoing ejection short.

Each member is either ``routable`` or ``ejected``; :data:`TRANSITIONS` lists the
moves with the reason that causes each. Every move produces an
:class:`EjectionEvent` (a codec record); events queue up and :meth:`tick`
returns all of them since the previous tick, in order, so a driver has one
place to log or publish them. Time only moves forward: a ``now_s`` older than
one already seen is treated as the latest one seen.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .._validate import InvariantViolation, at_least, integer, invariant, number, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError, UnknownNodeError
from .pickers import _check_member_name

__all__ = [
    "OutlierDetector",
    "EjectionEvent",
    "OutlierStatus",
    "TRANSITIONS",
    "ROUTABLE",
    "EJECTED",
    "REMOVED",
    "REASON_CONSECUTIVE_FAILURES",
    "REASON_FAILURE_RATE",
    "REASON_EXPIRED",
    "REASON_REMOVED",
]

ROUTABLE = "routable"
EJECTED = "ejected"
REMOVED = "removed"

REASON_CONSECUTIVE_FAILURES = "consecutive_failures"
REASON_FAILURE_RATE = "failure_rate"
REASON_EXPIRED = "expired"
REASON_REMOVED = "removed"

#: (state, reason) -> next state: the only moves a member can make.
TRANSITIONS: dict[tuple[str, str], str] = {
    (ROUTABLE, REASON_CONSECUTIVE_FAILURES): EJECTED,
    (ROUTABLE, REASON_FAILURE_RATE): EJECTED,
    (EJECTED, REASON_EXPIRED): ROUTABLE,
    (EJECTED, REASON_REMOVED): REMOVED,
}

_REASONS = frozenset(reason for _, reason in TRANSITIONS)


@record("balancing.ejection", version=1)
class EjectionEvent:
    """A member was ejected (``ejected=True``, until ``until_s``) or readmitted/dropped.

    ``until_s`` is the scheduled end of an ejection and ``None`` when
    ``ejected`` is false. ``reason`` is one of the reasons in
    :data:`TRANSITIONS`.
    """

    member: str
    ejected: bool
    at_s: float
    until_s: float | None
    reason: str

    def __post_init__(self):
        _check_member_name(self.member)
        if not isinstance(self.ejected, bool):
            raise InvalidArgumentError(f"ejected must be a bool, got {type(self.ejected).__name__}")
        number("at_s", self.at_s)
        if self.reason not in _REASONS:
            raise ConfigError(f"unknown ejection reason {self.reason!r}; expected one of {sorted(_REASONS)}")
        if self.ejected:
            if self.until_s is None or number("until_s", self.until_s) < self.at_s:
                raise ConfigError(f"an ejection needs until_s >= at_s, got at_s={self.at_s}, until_s={self.until_s}")
        elif self.until_s is not None:
            raise ConfigError("until_s must be None when ejected is false")


@record("balancing.outlier_status", version=1)
class OutlierStatus:
    """What the detector knows about one member at one moment."""

    member: str
    state: str
    ejected_until_s: float | None
    ejection_multiplier: int
    consecutive_failures: int
    interval_requests: int
    interval_failures: int

    def __post_init__(self):
        _check_member_name(self.member)
        if self.state not in (ROUTABLE, EJECTED):
            raise ConfigError(f"state must be {ROUTABLE!r} or {EJECTED!r}, got {self.state!r}")
        if (self.state == EJECTED) != (self.ejected_until_s is not None):
            raise ConfigError("ejected_until_s is set exactly when the member is ejected")
        for name in ("ejection_multiplier", "consecutive_failures", "interval_requests", "interval_failures"):
            integer(name, getattr(self, name))
            at_least(name, getattr(self, name), 0)


class _Member:
    """Mutable per-member bookkeeping (private)."""

    __slots__ = ("state", "until_s", "multiplier", "consecutive", "requests", "failures", "routable_since_s")

    def __init__(self, now_s: float):
        self.state = ROUTABLE
        self.until_s: float | None = None
        self.multiplier = 0
        self.consecutive = 0
        self.requests = 0
        self.failures = 0
        self.routable_since_s = now_s


class OutlierDetector:
    """Ejects members after consecutive failures or a high failure rate (see module doc)."""

    def __init__(
        self,
        *,
        consecutive_failures: int | None = 5,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejection_percent: float = 50.0,
        failure_rate_threshold: float | None = None,
        minimum_requests: int = 20,
        interval_s: float = 10.0,
        members=(),
    ):
        if consecutive_failures is not None:
            integer("consecutive_failures", consecutive_failures)
            at_least("consecutive_failures", consecutive_failures, 1)
        positive("base_ejection_s", base_ejection_s)
        at_least("max_ejection_s", max_ejection_s, base_ejection_s)
        number("max_ejection_percent", max_ejection_percent)
        if not 0 <= max_ejection_percent <= 100:
            raise ConfigError(f"max_ejection_percent must be within [0, 100], got {max_ejection_percent!r}")
        if failure_rate_threshold is not None:
            number("failure_rate_threshold", failure_rate_threshold)
            if not 0 < failure_rate_threshold <= 100:
                raise ConfigError(f"failure_rate_threshold must be within (0, 100], got {failure_rate_threshold!r}")
        integer("minimum_requests", minimum_requests)
        at_least("minimum_requests", minimum_requests, 1)
        positive("interval_s", interval_s)
        self.consecutive_failures = consecutive_failures
        self.base_ejection_s = float(base_ejection_s)
        self.max_ejection_s = float(max_ejection_s)
        self.max_ejection_percent = max_ejection_percent
        self.failure_rate_threshold = failure_rate_threshold
        self.minimum_requests = minimum_requests
        self.interval_s = float(interval_s)
        self._members: dict[str, _Member] = {}
        self._events: list[EjectionEvent] = []
        self._now_s: float | None = None
        self._interval_start_s = 0.0  # set by the first _advance(), before any interval check reads it
        for member in members:
            self.add_member(member)

    # --- membership ------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        """Every watched member, in insertion order."""
        return tuple(self._members)

    def add_member(self, member: str) -> None:
        """Start watching ``member`` (routable, with a clean history)."""
        _check_member_name(member)
        if member in self._members:
            raise ConfigError(f"{member!r} is already watched by the outlier detector")
        self._members[member] = _Member(self._now_s if self._now_s is not None else -math.inf)

    def remove_member(self, member: str, now_s: float | None = None) -> None:
        """Stop watching ``member``; if it was ejected, queue a ``removed`` event."""
        state = self._require(member)
        now = self._advance(now_s) if now_s is not None else (self._now_s if self._now_s is not None else 0.0)
        if state.state == EJECTED:
            self._move(member, state, REASON_REMOVED, now)
        del self._members[member]

    # --- input -----------------------------------------------------------

    def record(self, member: str, ok: bool, now_s: float) -> None:
        """Count one request outcome; may eject ``member`` immediately."""
        state = self._require(member)
        if not isinstance(ok, bool):
            raise InvalidArgumentError(f"ok must be a bool, got {type(ok).__name__}")
        now = self._advance(now_s)
        self._expire(now)
        state.requests += 1
        if ok:
            state.consecutive = 0
            return
        state.failures += 1
        state.consecutive += 1
        if (
            self.consecutive_failures is not None
            and state.state == ROUTABLE
            and state.consecutive >= self.consecutive_failures
        ):
            # If the cap refuses, the streak stays and the next failure tries again.
            self._try_eject(member, state, REASON_CONSECUTIVE_FAILURES, now)

    def tick(self, now_s: float) -> tuple[EjectionEvent, ...]:
        """Readmit expired members, run due interval checks, return queued events."""
        now = self._advance(now_s)
        self._expire(now)
        if now >= self._interval_start_s + self.interval_s:
            self._end_interval(now)
        events, self._events = tuple(self._events), []
        return events

    # --- queries ---------------------------------------------------------

    def ejected(self, now_s: float) -> frozenset:
        """Members ejected at ``now_s`` (an expired ejection no longer counts, even before :meth:`tick`)."""
        number("now_s", now_s)
        return frozenset(m for m, s in self._members.items()
                         if s.state == EJECTED and s.until_s is not None and s.until_s > now_s)

    def status(self, member: str) -> OutlierStatus:
        """An immutable snapshot of ``member``'s state and counters."""
        s = self._require(member)
        return OutlierStatus(
            member=member,
            state=s.state,
            ejected_until_s=s.until_s,
            ejection_multiplier=s.multiplier,
            consecutive_failures=s.consecutive,
            interval_requests=s.requests,
            interval_failures=s.failures,
        )

    def max_ejected(self) -> int:
        """How many members may be ejected at once: ``floor(pool * max_ejection_percent / 100)``."""
        # Fraction keeps e.g. 3 * 50 / 100 exact so the floor never lands one off.
        return math.floor(len(self._members) * Fraction(self.max_ejection_percent) / 100)

    def check_invariants(self) -> None:
        """Raise :class:`~ddia_ray._validate.InvariantViolation` if the bookkeeping is inconsistent."""
        for member, s in self._members.items():
            invariant(s.state in (ROUTABLE, EJECTED), f"{member}: impossible state {s.state!r}")
            invariant((s.state == EJECTED) == (s.until_s is not None), f"{member}: until_s disagrees with state")
            invariant(0 <= s.failures <= s.requests, f"{member}: failures outside [0, requests]")
            invariant(s.multiplier >= 0 and s.consecutive >= 0, f"{member}: negative counter")

    # --- internals -------------------------------------------------------

    def _require(self, member: str) -> _Member:
        try:
            return self._members[member]
        except (KeyError, TypeError):
            raise UnknownNodeError(member, self._members) from None

    def _advance(self, now_s: float) -> float:
        number("now_s", now_s)
        if self._now_s is None:
            self._interval_start_s = now_s
            for s in self._members.values():
                s.routable_since_s = now_s
        self._now_s = now_s if self._now_s is None else max(self._now_s, now_s)
        return self._now_s

    def _move(self, member: str, s: _Member, reason: str, now: float) -> None:
        """Apply one transition from :data:`TRANSITIONS` and queue its event."""
        target = TRANSITIONS.get((s.state, reason))
        if target is None:
            raise InvariantViolation(f"{member}: no transition from {s.state!r} on {reason!r}")
        if target == EJECTED:
            s.multiplier += 1
            s.until_s = now + min(self.base_ejection_s * s.multiplier, self.max_ejection_s)
            self._events.append(EjectionEvent(member, True, now, s.until_s, reason))
        else:
            s.until_s = None
            s.routable_since_s = now
            self._events.append(EjectionEvent(member, False, now, None, reason))
        # A new ejection or a readmission both start a fresh failure streak.
        s.consecutive = 0
        s.state = target

    def _try_eject(self, member: str, s: _Member, reason: str, now: float) -> bool:
        ejected_now = sum(1 for x in self._members.values() if x.state == EJECTED)
        if ejected_now + 1 > self.max_ejected():
            return False
        self._move(member, s, reason, now)
        return True

    def _expire(self, now: float) -> None:
        for member, s in self._members.items():
            if s.state == EJECTED and s.until_s is not None and s.until_s <= now:
                self._move(member, s, REASON_EXPIRED, now)

    def _end_interval(self, now: float) -> None:
        """Failure-rate ejections and multiplier decay for the interval(s) ending now."""
        start = self._interval_start_s
        if self.failure_rate_threshold is not None:
            threshold = Fraction(self.failure_rate_threshold)
            offenders = sorted(
                (
                    (-Fraction(s.failures, s.requests), member)
                    for member, s in self._members.items()
                    if s.state == ROUTABLE
                    and s.requests >= self.minimum_requests
                    and 100 * Fraction(s.failures, s.requests) >= threshold
                ),
            )
            for _, member in offenders:
                self._try_eject(member, self._members[member], REASON_FAILURE_RATE, now)
        for s in self._members.values():
            if s.state == ROUTABLE and s.failures == 0 and s.multiplier > 0:
                healthy_intervals = int((now - max(start, s.routable_since_s)) // self.interval_s)
                s.multiplier = max(0, s.multiplier - healthy_intervals)
            s.requests = s.failures = 0
        self._interval_start_s = now
