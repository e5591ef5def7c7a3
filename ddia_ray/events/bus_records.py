"""The event bus's plain data: what travels between its client and its actor, and what it reports.

Theory of operation
-------------------
An *event* is any codec record (:func:`ddia_ray.codec.record`); its *type* is
the record's tag. The client encodes each event once, where it is published,
and the bus never decodes it: it routes the bytes by type and hands them to
the handlers, which decode them in their own process. So the bus needs none
of the applications' event classes, and no event is ever pickled.

Records, all versioned msgpack through :mod:`ddia_ray.codec`:

==========================  ===================================================================
``events.bus_publish``      :class:`PublishBatch`: a batch id (retries and duplicates of one
                            batch are accepted once) and the events as two columns
``events.bus_subscription`` :class:`SubscriptionSpec`: a pattern, the handler's description and
                            every delivery knob; what ``subscriptions()`` lists
``events.bus_dead_letter``  :class:`DeadLetter`: an event that was not delivered, why, after how
                            many attempts, and the last error as an :class:`ErrorRecord`
``events.bus_sub_stats``    :class:`SubscriptionStats`: one subscription's counters
``events.bus_stats``        :class:`BusStats`: the bus's counters and every subscription's
==========================  ===================================================================

Patterns: ``"user.created"`` matches that type only; a pattern ending in
``*`` matches every type that starts with what precedes it (``"user.*"``
matches ``"user.created"``, ``"*"`` matches everything). A ``*`` anywhere
else is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import codec
from .._validate import at_least, integer, positive
from ..codec import record
from ..error_record import ErrorRecord
from ..errors import ConfigError, InvalidArgumentError, UnknownSubscriptionError
from ..resilience import RetryPolicy

__all__ = ["PublishBatch", "SubscriptionSpec", "DeadLetter", "SubscriptionStats", "BusStats", "OVERFLOWS",
           "REASONS", "HANDLER_KINDS", "RETRY_FIELDS", "event_type", "matches", "retry_data"]

#: What a full subscription queue does with one event too many (see :mod:`.bus_core`).
OVERFLOWS = ("drop_oldest", "drop_newest")
#: Why an event became a dead letter.
REASONS = ("failed", "overflow", "unsubscribed")
#: The two kinds of handler: a Ray actor's method, or a function run as a Ray task.
HANDLER_KINDS = ("actor", "function")
#: The fields of a :class:`RetryPolicy` that travel (plain data); the others take callables.
RETRY_FIELDS = ("max_attempts", "base_delay_s", "max_delay_s", "multiplier", "jitter", "deadline_s")


def _text(name: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise InvalidArgumentError(f"{name} must be a {'' if empty else 'non-empty '}str, got {value!r:.80}")
    return value


def _check_pattern(pattern: Any) -> str:
    _text("event type pattern", pattern)
    if "*" in pattern[:-1]:
        raise ConfigError(f"pattern {pattern!r}: '*' may only end a pattern (a type prefix), as in 'user.*'")
    return pattern


def matches(pattern: str, tag: str) -> bool:
    """Whether ``pattern`` (an exact type, or a prefix followed by ``*``) matches the event type ``tag``."""
    if pattern.endswith("*"):
        return tag.startswith(pattern[:-1])
    return tag == pattern


def retry_data(policy: RetryPolicy | None) -> dict:
    """The plain fields of ``policy`` (``{}`` for None, the bus's default policy).

    A subscription lives in the bus's actor and is described as data, so only the scalar fields
    of a policy can travel; ``retry_on``, ``retry_if`` and ``retry_on_result`` cannot, and a
    policy that sets them is refused (``no_retry_on`` names the errors not to retry instead).
    """
    if policy is None:
        return {}
    if not isinstance(policy, RetryPolicy):
        raise InvalidArgumentError(f"retry must be a RetryPolicy or None, got {type(policy).__name__}")
    default = RetryPolicy()
    for f in dataclasses.fields(RetryPolicy):
        if f.name not in RETRY_FIELDS and getattr(policy, f.name) != getattr(default, f.name):
            raise InvalidArgumentError(
                f"retry.{f.name} cannot travel to the bus's actor (it is not plain data): every failure "
                "is retried; name the exception classes not to retry in no_retry_on=(...)")
    return {name: getattr(policy, name) for name in RETRY_FIELDS}


def event_type(event: Any) -> str:
    """The type of ``event`` (a codec record, or a record class): its record tag.

    Raises :class:`InvalidArgumentError` for anything that is not a record: an event must be
    encodable by :mod:`ddia_ray.codec`, and its tag is what subscriptions match.
    """
    rt = codec.record_type_of(event)
    if rt is None:
        what = event.__name__ if isinstance(event, type) else type(event).__name__
        raise InvalidArgumentError(f"an event is a codec record (a class decorated with @record), got {what}")
    return rt.tag


@record("events.bus_publish", version=1, fields_checked=True)
class PublishBatch:
    """Events published in one actor call: ``types[i]`` is the type of the encoded event ``data[i]``.

    ``batch_id`` is unique per client batch; the bus accepts a batch id once (within its dedupe
    window), so a client may retry a publish whose answer it did not get.
    """

    batch_id: str
    types: tuple
    data: tuple

    def __post_init__(self):
        _text("batch_id", self.batch_id)
        if type(self.types) is not tuple or type(self.data) is not tuple or len(self.types) != len(self.data):
            raise InvalidArgumentError("a publish batch holds two tuples of equal length: types and data")
        if not all(type(t) is str and t for t in self.types):
            raise InvalidArgumentError("event types are non-empty str")
        if not all(type(d) is bytes for d in self.data):
            raise InvalidArgumentError("events travel encoded, as bytes")


@record("events.bus_subscription", version=1)
class SubscriptionSpec:
    """One subscription: what it matches, who handles it, and how deliveries behave.

    ``kind`` is ``"actor"`` (``method`` of a Ray actor) or ``"function"`` (a Ray task);
    ``handler`` describes it for people. Deliveries: at most ``concurrency`` at once (1 keeps
    the handler's order), each of up to ``batch_max`` events (with ``batch_max > 1`` the handler
    gets a tuple), each attempt timing out after ``timeout_s``. Failures are retried per
    ``retry`` (the plain fields of a :class:`RetryPolicy`; ``{}`` is its defaults) unless the
    error's class name is in ``no_retry_on``. At most ``queue_max`` events wait; ``overflow``
    says which one a full queue dead-letters. ``ray_options`` are a function handler's task options.
    """

    id: str
    pattern: str
    name: str
    handler: str
    kind: str
    method: str = ""
    concurrency: int = 1
    queue_max: int = 10_000
    overflow: str = "drop_oldest"
    batch_max: int = 1
    timeout_s: float = 30.0
    retry: dict = dataclasses.field(default_factory=dict)
    no_retry_on: tuple = ()
    ray_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("id", "name", "handler"):
            _text(name, getattr(self, name))
        _check_pattern(self.pattern)
        if self.kind not in HANDLER_KINDS:
            raise ConfigError(f"handler kind must be one of {HANDLER_KINDS}, got {self.kind!r}")
        _text("method", self.method, empty=self.kind == "function")
        at_least("concurrency", integer("concurrency", self.concurrency), 1)
        at_least("queue_max", integer("queue_max", self.queue_max), 1)
        at_least("batch_max", integer("batch_max", self.batch_max), 1)
        if self.batch_max > self.queue_max:
            raise ConfigError(f"batch_max ({self.batch_max}) cannot exceed queue_max ({self.queue_max})")
        if self.overflow not in OVERFLOWS:
            raise ConfigError(f"overflow must be one of {OVERFLOWS}, got {self.overflow!r}")
        positive("timeout_s", self.timeout_s)
        if not isinstance(self.retry, dict) or not set(self.retry) <= set(RETRY_FIELDS):
            raise ConfigError(f"retry holds only {RETRY_FIELDS}, got {self.retry!r:.200}")
        self.policy()  # validates the values (ConfigError, InvalidArgumentError)
        if not isinstance(self.no_retry_on, tuple) or not all(isinstance(n, str) and n for n in self.no_retry_on):
            raise InvalidArgumentError("no_retry_on is a tuple of exception class names")
        if not isinstance(self.ray_options, dict) or not all(isinstance(k, str) for k in self.ray_options):
            raise InvalidArgumentError("ray_options is a dict of Ray task options")

    def policy(self) -> RetryPolicy:
        """The :class:`RetryPolicy` of this subscription's deliveries."""
        return RetryPolicy(**self.retry)


@record("events.bus_dead_letter", version=1)
class DeadLetter:
    """An event the bus gave up on, for one subscription.

    ``reason`` is ``"failed"`` (the handler failed ``attempts`` times, or with an error in
    ``no_retry_on``), ``"overflow"`` (the subscription's queue was full; ``attempts`` is 0) or
    ``"unsubscribed"`` (still pending when its subscription ended). ``error`` is the last
    failure, ``seq`` the event's sequence number in the bus, ``at_s`` when it was dead-lettered
    (Unix time). :meth:`event` decodes the event (its class must be importable here).
    """

    id: int
    subscription: str
    name: str
    handler: str
    seq: int
    event_type: str
    data: bytes
    attempts: int
    reason: str
    error: ErrorRecord | None = None
    at_s: float = 0.0

    def __post_init__(self):
        if self.reason not in REASONS:
            raise ConfigError(f"a dead letter's reason is one of {REASONS}, got {self.reason!r}")
        if not isinstance(self.data, bytes):
            raise InvalidArgumentError("a dead letter holds its event encoded, as bytes")
        if self.error is not None and not isinstance(self.error, ErrorRecord):
            raise InvalidArgumentError("a dead letter's error is an ErrorRecord or None")

    def event(self) -> Any:
        """The event, decoded (raises :class:`~ddia_ray.errors.UnknownTypeError` if its class is not known here)."""
        return codec.decode(self.data)

    def exception(self) -> Exception | None:
        """The last error as an exception of its class (``RemoteError`` for an application's own class)."""
        return None if self.error is None else self.error.exception(f"{self.name} ({self.handler})")


@record("events.bus_sub_stats", version=1)
class SubscriptionStats:
    """One subscription's counters (events, unless named otherwise).

    Conservation, checked by the core: ``matched + replayed == delivered + dead_lettered +
    dropped + queued + in_flight`` (``unsubscribed`` joins the right side once it ends).
    ``attempts``, ``retried`` and ``failures`` count handler calls.
    """

    id: str
    name: str
    pattern: str
    handler: str
    matched: int = 0
    replayed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    unsubscribed: int = 0
    queued: int = 0
    in_flight: int = 0
    attempts: int = 0
    retried: int = 0
    failures: int = 0
    queue_max: int = 0
    queue_depth_max: int = 0
    concurrency: int = 0


@record("events.bus_stats", version=1)
class BusStats:
    """The bus's counters: ``published`` events accepted, ``unrouted`` ones no subscription matched,
    ``duplicate_batches`` publishes accepted before (not counted again), the dead-letter list
    (``held`` now; ``total`` ever; ``evicted`` to keep it bounded; ``replayed``; ``discarded``),
    and ``subscriptions``."""

    published: int = 0
    unrouted: int = 0
    duplicate_batches: int = 0
    dead_letters_held: int = 0
    dead_letters_total: int = 0
    dead_letters_evicted: int = 0
    dead_letters_replayed: int = 0
    dead_letters_discarded: int = 0
    subscriptions: tuple = ()

    def subscription(self, key: str) -> SubscriptionStats:
        """The stats of the subscription with this id or name; :class:`UnknownSubscriptionError` if none."""
        for s in self.subscriptions:
            if key in (s.id, s.name):
                return s
        raise UnknownSubscriptionError(f"no subscription {key!r} in these stats", key)

    def total(self, counter: str) -> int:
        """``counter`` (a :class:`SubscriptionStats` field) summed over the subscriptions."""
        return sum(getattr(s, counter) for s in self.subscriptions)
