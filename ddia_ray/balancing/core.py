"""The pure heart of a load balancer: picker + in-flight counts + outlier detection.

Theory of operation
-------------------
:class:`BalancerCore` does no I/O and reads no clock: the driver (a Ray actor,
a client-side handle, a test) calls :meth:`~BalancerCore.begin` to choose a
replica for a request, :meth:`~BalancerCore.end` when the reply (or error)
arrives, and :meth:`~BalancerCore.tick` now and then, always passing the time.

A replica is *routable* when it is a member, not ejected by the
:class:`~ddia_ray.balancing.outlier.OutlierDetector` (fed by every ``end``),
and not marked unhealthy by :meth:`~BalancerCore.mark_health` (pushed in from
a failure detector). ``begin`` asks the picker for a member, excluding the
unroutable ones and any the caller excludes for this request (already tried,
circuit breaker open), with the in-flight counts as load. A pick the caller
then does not send is undone with :meth:`~BalancerCore.cancel`, which leaves
outlier detection untouched.

Panic mode (Envoy's rule): when fewer than ``panic_threshold_percent`` of the
members are routable, the exclusions are probably wrong or the few survivors
would be crushed by all the traffic, so ``begin`` routes across *all* members,
ejected and unhealthy included (never those the caller excluded).
``panic_threshold_percent=0`` turns panic off: then, with nothing routable,
``begin`` raises :class:`~ddia_ray.errors.NoReplicaAvailableError`. An empty
pool always raises.

Removal drains: :meth:`~BalancerCore.remove_replica` takes the replica out of
the picker and the detector at once (no new picks), but its in-flight
requests may still ``end``; the replica is forgotten when the last one does.
Adding a draining replica again cancels the drain.

Live reconfiguration: :meth:`~BalancerCore.reconfigure` switches the picker
and/or changes weights and the panic threshold in one step, after checking
all of it. A new picker receives the current members in their order and
with their weights; the in-flight counts, health marks, draining replicas
and the detector's ejections are the core's, not the picker's, so they
carry over untouched. Only the picker's own position (a round-robin cursor,
the smooth weights) starts afresh, as any weight change already does.

Invariant: for every replica ``0 <= in_flight <= requests`` and
``failures <= requests``; the picker and the detector hold exactly the
non-draining replicas; a draining replica has work in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from fractions import Fraction
from types import MappingProxyType

from .._validate import integer, invariant, non_negative, number
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError, NoReplicaAvailableError, UnknownNodeError
from .least_connections import WeightedLeastConnectionsPicker
from .outlier import EjectionEvent, OutlierDetector
from .pickers import Picker, _check_member_name, _check_weight

__all__ = ["BalancerCore", "ReplicaStats", "BalancerStats"]


@record("balancing.replica_stats", version=1)
class ReplicaStats:
    """One replica's counters; ``latency_avg_s`` is None until a latency was reported."""

    name: str
    weight: int
    in_flight: int
    requests: int
    failures: int
    ejected: bool
    healthy: bool
    draining: bool
    latency_avg_s: float | None

    def __post_init__(self):
        _check_member_name(self.name)
        for field in ("weight", "in_flight", "requests", "failures"):
            integer(field, getattr(self, field))
            non_negative(field, getattr(self, field))
        for field in ("ejected", "healthy", "draining"):
            if not isinstance(getattr(self, field), bool):
                raise InvalidArgumentError(f"{field} must be a bool")
        if self.latency_avg_s is not None:
            non_negative("latency_avg_s", self.latency_avg_s)


@record("balancing.stats", version=1)
class BalancerStats:
    """Every replica's :class:`ReplicaStats` (sorted by name) and balancer-wide counters.

    ``picks`` counts successful ``begin`` calls, ``panic_picks`` those made in
    panic mode, ``unavailable`` those that raised NoReplicaAvailableError,
    ``cancelled`` the picks undone by ``cancel`` (still counted in ``picks``).
    """

    replicas: tuple
    picks: int
    panic_picks: int
    unavailable: int
    cancelled: int

    def __post_init__(self):
        if not isinstance(self.replicas, tuple) or not all(isinstance(r, ReplicaStats) for r in self.replicas):
            raise InvalidArgumentError("replicas must be a tuple of ReplicaStats")
        for field in ("picks", "panic_picks", "unavailable", "cancelled"):
            integer(field, getattr(self, field))
            non_negative(field, getattr(self, field))

    def by_name(self) -> Mapping[str, ReplicaStats]:
        """A read-only mapping name -> :class:`ReplicaStats`."""
        return MappingProxyType({r.name: r for r in self.replicas})


class _Replica:
    """Mutable per-replica bookkeeping (private)."""

    __slots__ = ("weight", "in_flight", "requests", "failures", "latency_sum_s", "latency_count", "healthy", "draining")

    def __init__(self, weight: int):
        self.weight = weight
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.latency_sum_s = 0.0
        self.latency_count = 0
        self.healthy = True
        self.draining = False


class BalancerCore:
    """Chooses replicas for requests and learns from their outcomes (see module doc).

    ``picker`` must be empty (default: a fresh
    :class:`~ddia_ray.balancing.least_connections.WeightedLeastConnectionsPicker`,
    since the core knows exact in-flight counts); ``detector`` must watch no
    members yet (default: :class:`OutlierDetector` with its defaults).
    """

    def __init__(
        self,
        picker: Picker | None = None,
        *,
        detector: OutlierDetector | None = None,
        panic_threshold_percent: float = 50.0,
    ):
        picker = WeightedLeastConnectionsPicker() if picker is None else picker
        detector = OutlierDetector() if detector is None else detector
        if not isinstance(picker, Picker):
            raise InvalidArgumentError(f"picker must be a Picker, got {type(picker).__name__}")
        if not isinstance(detector, OutlierDetector):
            raise InvalidArgumentError(f"detector must be an OutlierDetector, got {type(detector).__name__}")
        if picker.members or detector.members:
            raise ConfigError("give BalancerCore an empty picker and detector; add members with add_replica()")
        number("panic_threshold_percent", panic_threshold_percent)
        if not 0 <= panic_threshold_percent <= 100:
            raise ConfigError(f"panic_threshold_percent must be within [0, 100], got {panic_threshold_percent!r}")
        self.picker = picker
        self.detector = detector
        self.panic_threshold_percent = panic_threshold_percent
        self._replicas: dict[str, _Replica] = {}
        self._picks = 0
        self._panic_picks = 0
        self._unavailable = 0
        self._cancelled = 0
        self._now_s = 0.0

    # --- membership and health -------------------------------------------

    @property
    def replicas(self) -> tuple[str, ...]:
        """The replicas new requests may go to (not draining), in insertion order."""
        return self.picker.members

    def add_replica(self, name: str, weight: int = 1) -> None:
        """Add a replica, or cancel the drain of one being removed (keeping its in-flight work)."""
        existing = self._replicas.get(name) if isinstance(name, str) else None
        if existing is not None and not existing.draining:
            raise ConfigError(f"replica {name!r} is already in the pool; use set_weight() to change its weight")
        self.picker.add(name, weight)  # validates name and weight before anything else changes
        self.detector.add_member(name)
        if existing is None:
            self._replicas[name] = _Replica(weight)
        else:
            existing.draining = False
            existing.weight = weight

    def remove_replica(self, name: str, now_s: float | None = None) -> None:
        """Stop routing to ``name``; in-flight requests may still end (idempotent while draining)."""
        replica = self._require(name)
        if replica.draining:
            return
        self.picker.remove(name)
        self.detector.remove_member(name, now_s)
        if replica.in_flight == 0:
            del self._replicas[name]
        else:
            replica.draining = True

    def set_weight(self, name: str, weight: int) -> None:
        """Change the weight of a (non-draining) replica."""
        replica = self._require(name)
        if replica.draining:
            raise UnknownNodeError(name, self.picker.members)
        self.picker.set_weight(name, weight)
        replica.weight = weight

    def reconfigure(self, *, picker: Picker | None = None, weights: Mapping[str, int] | None = None,
                    panic_threshold_percent: float | None = None) -> None:
        """Switch to an empty ``picker``, change some ``weights``, and/or the panic threshold, atomically.

        Left out (None): kept. ``weights`` may name only replicas new requests can go to (not
        draining). Everything is checked first: on an error nothing has changed. Health, in-flight
        counts and ejections carry over (module doc).
        """
        if picker is not None:
            if not isinstance(picker, Picker):
                raise InvalidArgumentError(f"picker must be a Picker, got {type(picker).__name__}")
            if picker.members:
                raise ConfigError("reconfigure() takes an empty picker: the core gives it the current replicas")
        if weights is None:
            weights = {}
        elif not isinstance(weights, Mapping):
            raise InvalidArgumentError(f"weights must map replica names to ints, got {type(weights).__name__}")
        for name, weight in weights.items():
            if name not in self.picker:
                raise UnknownNodeError(name, self.picker.members)
            _check_weight(weight)
        if panic_threshold_percent is not None:
            number("panic_threshold_percent", panic_threshold_percent)
            if not 0 <= panic_threshold_percent <= 100:
                raise ConfigError(
                    f"panic_threshold_percent must be within [0, 100], got {panic_threshold_percent!r}")
        # Checked: from here on nothing can fail, so the core never holds half the change.
        new_weights = {m: weights.get(m, self.picker.weight(m)) for m in self.picker.members}
        if picker is not None:
            for member, weight in new_weights.items():
                picker.add(member, weight)
            self.picker = picker
        else:
            for member, weight in new_weights.items():
                if self.picker.weight(member) != weight:
                    self.picker.set_weight(member, weight)
        for member, weight in new_weights.items():
            self._replicas[member].weight = weight
        if panic_threshold_percent is not None:
            self.panic_threshold_percent = panic_threshold_percent

    def mark_health(self, name: str, healthy: bool) -> None:
        """Record a failure detector's verdict; unhealthy replicas are skipped outside panic mode."""
        replica = self._require(name)
        if not isinstance(healthy, bool):
            raise InvalidArgumentError(f"healthy must be a bool, got {type(healthy).__name__}")
        replica.healthy = healthy

    # --- requests --------------------------------------------------------

    def begin(self, key: bytes | str | None = None, *, now_s: float, exclude: Set = frozenset()) -> str:
        """Choose a replica for one request, count it in flight, and return its name.

        ``exclude`` names replicas the caller cannot use for this request
        (already tried, breaker open); unlike ejections they stay excluded in
        panic mode. Raises :class:`NoReplicaAvailableError` when nothing is left.
        """
        if not isinstance(exclude, Set):
            raise InvalidArgumentError(f"exclude must be a set of replica names, got {type(exclude).__name__}")
        now = self._advance(now_s)
        excluded, panic = self._exclusions(now)
        load = {name: r.in_flight for name, r in self._replicas.items() if not r.draining}
        try:
            member = self.picker.pick(key, exclude=excluded | frozenset(exclude), load=load)
        except NoReplicaAvailableError:
            self._unavailable += 1
            raise
        replica = self._replicas[member]
        replica.in_flight += 1
        replica.requests += 1
        self._picks += 1
        self._panic_picks += panic
        return member

    def cancel(self, member: str) -> None:
        """Undo a :meth:`begin` whose request was never sent: no outcome is recorded."""
        replica = self._require(member)
        if replica.in_flight == 0:
            raise ConfigError(f"cancel() for {member!r} without a matching begin(): nothing is in flight there")
        replica.in_flight -= 1
        replica.requests -= 1
        self._cancelled += 1
        if replica.draining and replica.in_flight == 0:
            del self._replicas[member]

    def end(self, member: str, ok: bool, now_s: float, latency_s: float | None = None) -> None:
        """Finish a request begun on ``member``: uncount it and learn from ``ok`` and ``latency_s``."""
        replica = self._require(member)
        if not isinstance(ok, bool):
            raise InvalidArgumentError(f"ok must be a bool, got {type(ok).__name__}")
        if latency_s is not None:
            non_negative("latency_s", latency_s)
        now = self._advance(now_s)
        if replica.in_flight == 0:
            raise ConfigError(f"end() for {member!r} without a matching begin(): nothing is in flight there")
        replica.in_flight -= 1
        invariant(replica.in_flight >= 0, f"{member}: in-flight count went negative")
        if not ok:
            replica.failures += 1
        if latency_s is not None:
            replica.latency_sum_s += latency_s
            replica.latency_count += 1
        if not replica.draining:
            self.detector.record(member, ok, now)
        elif replica.in_flight == 0:
            del self._replicas[member]  # fully drained

    def tick(self, now_s: float) -> tuple[EjectionEvent, ...]:
        """Let time pass for outlier detection; returns its ejection/readmission events."""
        return self.detector.tick(self._advance(now_s))

    # --- queries ---------------------------------------------------------

    def routable(self, now_s: float) -> frozenset:
        """The replicas :meth:`begin` would choose among at ``now_s`` (all of them in panic mode)."""
        exclude, _ = self._exclusions(number("now_s", now_s))
        return frozenset(m for m in self.picker.members if m not in exclude)

    def in_panic(self, now_s: float) -> bool:
        """Whether fewer than ``panic_threshold_percent`` of the replicas are routable at ``now_s``."""
        return self._exclusions(number("now_s", now_s))[1]

    def stats(self, now_s: float | None = None) -> BalancerStats:
        """An immutable snapshot; ``ejected`` is judged at ``now_s`` (default: the latest time seen)."""
        now = self._now_s if now_s is None else number("now_s", now_s)
        ejected = self.detector.ejected(now)
        replicas = tuple(
            ReplicaStats(
                name=name,
                weight=r.weight,
                in_flight=r.in_flight,
                requests=r.requests,
                failures=r.failures,
                ejected=name in ejected,
                healthy=r.healthy,
                draining=r.draining,
                latency_avg_s=r.latency_sum_s / r.latency_count if r.latency_count else None,
            )
            for name, r in sorted(self._replicas.items())
        )
        return BalancerStats(replicas, self._picks, self._panic_picks, self._unavailable, self._cancelled)

    def check_invariants(self) -> None:
        """Raise :class:`~ddia_ray._validate.InvariantViolation` if any invariant is broken."""
        active = {name for name, r in self._replicas.items() if not r.draining}
        invariant(active == set(self.picker.members), "picker members differ from the active replicas")
        invariant(active == set(self.detector.members), "detector members differ from the active replicas")
        for name, r in self._replicas.items():
            invariant(r.in_flight >= 0, f"{name}: in-flight count is negative")
            invariant(r.in_flight <= r.requests, f"{name}: more in flight than ever begun")
            invariant(0 <= r.failures <= r.requests, f"{name}: failures outside [0, requests]")
            invariant(not r.draining or r.in_flight > 0, f"{name}: drained replica was not forgotten")
            invariant(r.draining or self.picker.weight(name) == r.weight, f"{name}: weight out of sync")
        invariant(self._panic_picks <= self._picks, "more panic picks than picks")
        invariant(self._cancelled <= self._picks, "more cancelled picks than picks")
        self.detector.check_invariants()

    # --- internals -------------------------------------------------------

    def _require(self, name: str) -> _Replica:
        try:
            return self._replicas[name]
        except (KeyError, TypeError):
            raise UnknownNodeError(name, self._replicas) from None

    def _advance(self, now_s: float) -> float:
        number("now_s", now_s)
        self._now_s = max(self._now_s, now_s)
        return now_s

    def _exclusions(self, now: float) -> tuple[frozenset, bool]:
        """``(members to exclude, panic?)`` at ``now``."""
        members = self.picker.members
        ejected = self.detector.ejected(now)
        excluded = frozenset(m for m in members if m in ejected or not self._replicas[m].healthy)
        routable = len(members) - len(excluded)
        # Exact: routable / members < threshold / 100.
        panic = bool(members) and routable * 100 < Fraction(self.panic_threshold_percent) * len(members)
        return (frozenset(), True) if panic else (excluded, False)
