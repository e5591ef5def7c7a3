"""A membership view: one phi accrual detector per node and a three-state status machine.

Theory of operation
-------------------
The view is a pure core driven by the caller: ``add``/``heartbeat`` feed
arrival times, ``tick(now_s)`` re-evaluates every node's phi and returns the
status changes as :class:`MemberEvent` records (also pushed to subscribed
listeners). Each input is first classified as an :class:`Observation` (phi
below ``suspect_threshold``, between the two thresholds, at or above
``threshold``, or a heartbeat), then looked up in :data:`TRANSITIONS`::

    HEALTHY  --phi >= suspect--> SUSPECT --phi >= threshold--> UNREACHABLE
       ^   <---phi < suspect-----'   |                           |
       '------------- heartbeat -----'------- heartbeat ---------'

UNREACHABLE is sticky: only a heartbeat brings a node back, as in Akka,
where an unreachable member stays so until the detector hears from it again.
The default ``suspect_threshold`` of 5.0 (a 1e-5 chance the suspicion is
wrong under the detector's model) gives an early warning well before the
Akka/Cassandra-style ``threshold`` of 8.0 declares the node unreachable.

Listeners are called synchronously, after the view's state has changed.
A listener that raises neither stops the others nor undoes anything: every
listener sees every event, then :class:`~ddia_ray.errors.ListenerError` is
raised carrying the events and the failures (the first chained as cause).
"""

from __future__ import annotations

import enum
import math
from numbers import Real
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from .._validate import number, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError, ListenerError, UnknownNodeError
from .phi import PhiAccrualDetector

__all__ = ["MemberStatus", "Observation", "TRANSITIONS", "MemberEvent", "MemberState", "MembershipView"]


class MemberStatus(str, enum.Enum):
    """What the view believes about a node."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    UNREACHABLE = "unreachable"


class Observation(enum.Enum):
    """The inputs of the status machine."""

    PHI_LOW = "phi < suspect_threshold"
    PHI_SUSPECT = "suspect_threshold <= phi < threshold"
    PHI_HIGH = "phi >= threshold"
    HEARTBEAT = "heartbeat"


_H, _S, _U = MemberStatus.HEALTHY, MemberStatus.SUSPECT, MemberStatus.UNREACHABLE

#: (current status, observation) -> next status: the whole state machine.
TRANSITIONS: Mapping[tuple[MemberStatus, Observation], MemberStatus] = MappingProxyType(
    {
        (_H, Observation.PHI_LOW): _H,
        (_H, Observation.PHI_SUSPECT): _S,
        (_H, Observation.PHI_HIGH): _U,  # ticks may be sparse: skipping SUSPECT is allowed
        (_H, Observation.HEARTBEAT): _H,
        (_S, Observation.PHI_LOW): _H,
        (_S, Observation.PHI_SUSPECT): _S,
        (_S, Observation.PHI_HIGH): _U,
        (_S, Observation.HEARTBEAT): _H,  # direct evidence of life
        (_U, Observation.PHI_LOW): _U,  # sticky until heard from again
        (_U, Observation.PHI_SUSPECT): _U,
        (_U, Observation.PHI_HIGH): _U,
        (_U, Observation.HEARTBEAT): _H,
    }
)


def _node_id(node) -> str:
    if not isinstance(node, str):
        raise InvalidArgumentError(f"node id must be a str, got {type(node).__name__}")
    if not node:
        raise ConfigError("node id must be a non-empty string")
    return node


def _status(name: str, value) -> MemberStatus:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a MemberStatus, got {type(value).__name__}")
    try:
        return MemberStatus(value)
    except ValueError:
        raise ConfigError(f"{name} must be one of {[s.value for s in MemberStatus]}, got {value!r}") from None


@record("membership.event", version=1)
class MemberEvent:
    """``node`` changed status from ``old`` to ``new`` at ``at_s``, when its phi was ``phi``."""

    node: str
    old: MemberStatus
    new: MemberStatus
    phi: float
    at_s: float

    def __post_init__(self) -> None:
        _node_id(self.node)
        # Decoding yields plain strings: turn them back into the enum.
        object.__setattr__(self, "old", _status("old", self.old))
        object.__setattr__(self, "new", _status("new", self.new))
        if isinstance(self.phi, bool) or not isinstance(self.phi, Real):
            raise InvalidArgumentError(f"phi must be a number, got {type(self.phi).__name__}")
        if math.isnan(self.phi) or self.phi < 0:  # +inf is a legitimate (extreme) phi
            raise ConfigError(f"phi must be >= 0, got {self.phi!r}")
        object.__setattr__(self, "phi", float(self.phi))
        object.__setattr__(self, "at_s", float(number("at_s", self.at_s)))


class MemberState(NamedTuple):
    """A node's status and its phi when last evaluated (by ``add``, ``heartbeat`` or ``tick``)."""

    status: MemberStatus
    phi: float


class _Member:
    __slots__ = ("detector", "status", "phi")

    def __init__(self, detector: PhiAccrualDetector) -> None:
        self.detector = detector
        self.status = MemberStatus.HEALTHY
        self.phi = 0.0


class MembershipView:
    """Tracks the health of many nodes, each with its own :class:`PhiAccrualDetector`.

    ``suspect_threshold`` and ``threshold`` split phi into the three
    statuses; the remaining arguments configure every node's detector.
    """

    def __init__(
        self,
        *,
        suspect_threshold: float = 5.0,
        threshold: float = 8.0,
        history_size: int = 1000,
        min_std_deviation_s: float = 0.1,
        acceptable_heartbeat_pause_s: float = 0.0,
        first_heartbeat_estimate_s: float = 1.0,
    ) -> None:
        self._suspect_threshold = float(positive("suspect_threshold", suspect_threshold))
        self._threshold = float(positive("threshold", threshold))
        if self._suspect_threshold >= self._threshold:
            raise ConfigError(
                f"suspect_threshold ({suspect_threshold}) must be below threshold ({threshold})"
            )
        self._detector_args: dict[str, Any] = dict(
            threshold=threshold,
            history_size=history_size,
            min_std_deviation_s=min_std_deviation_s,
            acceptable_heartbeat_pause_s=acceptable_heartbeat_pause_s,
            first_heartbeat_estimate_s=first_heartbeat_estimate_s,
        )
        PhiAccrualDetector(**self._detector_args)  # validate detector settings now, not on first add
        self._members: dict[str, _Member] = {}
        self._listeners: list[_Subscription] = []

    # --- membership ----------------------------------------------------------

    def add(self, node: str, now_s: float) -> None:
        """Start monitoring ``node`` as HEALTHY; joining counts as its first heartbeat."""
        _node_id(node)
        number("now_s", now_s)
        if node in self._members:
            raise ConfigError(f"node {node!r} is already a member; remove it first to re-add it")
        member = _Member(PhiAccrualDetector(**self._detector_args))
        member.detector.heartbeat(now_s)
        self._members[node] = member

    def remove(self, node: str) -> None:
        """Stop monitoring ``node`` (no event is emitted)."""
        self._member(node)
        del self._members[node]

    def __contains__(self, node: object) -> bool:
        """``True`` if ``node`` is monitored."""
        return node in self._members

    def __len__(self) -> int:
        """The number of monitored nodes."""
        return len(self._members)

    def nodes(self) -> tuple[str, ...]:
        """Every monitored node, sorted."""
        return tuple(sorted(self._members))

    # --- inputs ----------------------------------------------------------------

    def heartbeat(self, node: str, now_s: float) -> tuple[MemberEvent, ...]:
        """Record a heartbeat from ``node``; returns (and publishes) the event if its status changed."""
        member = self._member(node)
        member.detector.heartbeat(now_s)
        event = self._apply(node, member, Observation.HEARTBEAT, member.detector.phi(now_s), now_s)
        return self._publish(() if event is None else (event,))

    def tick(self, now_s: float) -> tuple[MemberEvent, ...]:
        """Re-evaluate every node's phi at ``now_s``; returns (and publishes) the changes, by node."""
        number("now_s", now_s)
        events = []
        for node in sorted(self._members):
            member = self._members[node]
            phi = member.detector.phi(now_s)
            event = self._apply(node, member, self._classify(phi), phi, now_s)
            if event is not None:
                events.append(event)
        return self._publish(tuple(events))

    # --- queries ---------------------------------------------------------------

    def status(self, node: str) -> MemberStatus:
        """The current status of ``node``."""
        return self._member(node).status

    def phi(self, node: str, now_s: float) -> float:
        """``node``'s phi at ``now_s``, without changing its status."""
        return self._member(node).detector.phi(now_s)

    def healthy(self) -> tuple[str, ...]:
        """The HEALTHY nodes, sorted."""
        return tuple(sorted(n for n, m in self._members.items() if m.status is MemberStatus.HEALTHY))

    def snapshot(self) -> Mapping[str, MemberState]:
        """An immutable copy of node -> (status, phi as last evaluated)."""
        return MappingProxyType({n: MemberState(m.status, m.phi) for n, m in sorted(self._members.items())})

    # --- listeners -------------------------------------------------------------

    def subscribe(self, callback: Callable[[MemberEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` on every status change; returns an idempotent unsubscribe function."""
        if not callable(callback):
            raise InvalidArgumentError(f"listener must be callable, got {type(callback).__name__}")
        token = _Subscription(callback)
        self._listeners.append(token)

        def unsubscribe() -> None:
            if token in self._listeners:
                self._listeners.remove(token)

        return unsubscribe

    # --- internals -------------------------------------------------------------

    def _member(self, node: str) -> _Member:
        _node_id(node)
        try:
            return self._members[node]
        except KeyError:
            raise UnknownNodeError(node, self._members) from None

    def _classify(self, phi: float) -> Observation:
        if phi >= self._threshold:
            return Observation.PHI_HIGH
        if phi >= self._suspect_threshold:
            return Observation.PHI_SUSPECT
        return Observation.PHI_LOW

    def _apply(
        self, node: str, member: _Member, seen: Observation, phi: float, now_s: float
    ) -> MemberEvent | None:
        old = member.status
        member.status = TRANSITIONS[(old, seen)]
        member.phi = phi
        if member.status is old:
            return None
        return MemberEvent(node, old, member.status, phi, now_s)

    def _publish(self, events: tuple[MemberEvent, ...]) -> tuple[MemberEvent, ...]:
        if not events or not self._listeners:
            return events
        errors: list[BaseException] = []
        listeners = tuple(self._listeners)  # a listener may (un)subscribe while we iterate
        for event in events:
            for listener in listeners:
                try:
                    listener.callback(event)
                except Exception as e:  # noqa: BLE001 - collected and re-raised below
                    errors.append(e)
        if errors:
            raise ListenerError(
                f"{len(errors)} membership listener call(s) raised; every listener still received all "
                f"{len(events)} event(s) and the view's state is updated; first error: {errors[0]!r}",
                events,
                tuple(errors),
            )
        return events


class _Subscription:
    """Wraps a callback so the same function can be subscribed twice and unsubscribed once."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[MemberEvent], object]) -> None:
        self.callback = callback
