"""The event bus's pure core: subscriptions, bounded queues, the retry schedule and dead letters.

Theory of operation
-------------------
:class:`BusCore` decides everything about fire-and-forget delivery and does
none of it: no Ray, no clock, no threads. Time comes in as ``now_s`` (any
monotonic seconds), randomness from a seeded ``random.Random``. Its driver
(:mod:`ddia_ray.events.bus_service`) loops::

    publish(batch, now_s)            events in: routed to every matching subscription's queue
    start_due(now_s) -> deliveries   what to call now (plain data); each is then "running"
    succeeded(id, now_s) | failed(id, error, now_s)   the outcome of each call
    next_due_s()                     when the earliest retry is due (sleep until then, or a wakeup)

Each subscription owns a FIFO queue of at most ``queue_max`` events and at
most ``concurrency`` *outstanding* deliveries (a delivery is up to
``batch_max`` events handed to the handler in one call). A delivery holds
its slot from its first attempt until it succeeds or is dead-lettered, while
it waits out a retry's backoff too: with ``concurrency=1`` the handler sees
its events in publish order, and a failing event holds back the ones behind
it (head-of-line) for at most its retries.

A failed attempt is retried after the next delay of a
:class:`~ddia_ray.resilience.Backoff` of the subscription's
:class:`~ddia_ray.resilience.RetryPolicy` (capped exponential, jittered,
from this core's seeded generator) unless the attempts are used up, the
policy's ``deadline_s`` (from the first attempt) leaves no room for the
delay, or the error's class is in ``no_retry_on``: then each of its events
becomes a :class:`~ddia_ray.events.bus_records.DeadLetter` (reason
``"failed"``, with the attempts and the last error).

Nothing is unbounded, and nothing vanishes:

* a full queue takes one more event by dead-lettering one (reason
  ``"overflow"``, counted in ``dropped``): the oldest queued event with
  ``overflow="drop_oldest"``, the arriving one with ``"drop_newest"``;
  publishing never waits for a handler;
* the dead-letter list holds at most ``dead_letters_max`` letters; a new one
  past that evicts the oldest, counted in ``dead_letters_evicted``;
* publish batch ids are remembered for the last ``dedupe_batches`` batches,
  so a retried or duplicated publish is accepted once;
* per subscription, ``matched + replayed == delivered + dead_lettered +
  dropped + unsubscribed + queued + in_flight`` at every step
  (:meth:`BusCore.check_invariants`, which the property tests call after
  each one).

``unsubscribe`` stops routing at once and dead-letters the queued events and
the deliveries waiting for a retry (reason ``"unsubscribed"``); deliveries
running then finish, and are counted, before the subscription is forgotten.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import Iterable

from .._validate import at_least, integer, invariant
from ..error_record import ErrorRecord
from ..errors import BusClosedError, ConfigError, InvalidArgumentError, UnknownSubscriptionError
from ..resilience import Backoff, RetryPolicy
from .bus_records import (BusStats, DeadLetter, PublishBatch, SubscriptionSpec, SubscriptionStats,
                          matches)

__all__ = ["BusCore", "Delivery"]

#: The counters of a subscription, as :class:`SubscriptionStats` names them.
_COUNTERS = ("matched", "replayed", "delivered", "dead_lettered", "dropped", "unsubscribed", "attempts",
             "retried", "failures")
#: Which counter an event dead-lettered for each reason goes to.
_REASON_COUNTER = {"failed": "dead_lettered", "overflow": "dropped", "unsubscribed": "unsubscribed"}


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One handler call to make now: ``data`` (encoded events, in queue order) for ``subscription``.

    ``attempt`` counts from 1; ``timeout_s`` bounds the call. Report its outcome with
    :meth:`BusCore.succeeded` or :meth:`BusCore.failed` and its ``id``.
    """

    id: int
    subscription: str
    attempt: int
    timeout_s: float
    seqs: tuple
    data: tuple


@dataclasses.dataclass(slots=True)
class _Event:
    seq: int
    type: str
    data: bytes


@dataclasses.dataclass(slots=True)
class _Outstanding:
    """A delivery between its first attempt and its end: running, or waiting until ``due_s``."""

    id: int
    events: tuple
    backoff: Backoff
    started_s: float
    attempt: int = 0
    running: bool = False
    due_s: float = 0.0
    last_error: ErrorRecord | None = None


class _Subscription:
    """One subscription's spec, queue, outstanding deliveries and counters."""

    __slots__ = ("spec", "policy", "queue", "outstanding", "counts", "depth_max", "closing")

    def __init__(self, spec: SubscriptionSpec):
        self.spec = spec
        self.policy: RetryPolicy = spec.policy()
        self.queue: collections.deque[_Event] = collections.deque()
        self.outstanding: dict[int, _Outstanding] = {}
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.depth_max = 0
        self.closing = False

    def in_flight(self) -> int:
        return sum(len(o.events) for o in self.outstanding.values())

    def stats(self) -> SubscriptionStats:
        s = self.spec
        return SubscriptionStats(s.id, s.name, s.pattern, s.handler, **self.counts, queued=len(self.queue),
                                 in_flight=self.in_flight(), queue_max=s.queue_max,
                                 queue_depth_max=self.depth_max, concurrency=s.concurrency)


def _error_class(error: ErrorRecord) -> str:
    """The class name an error had where it was raised (an application's own class arrives as a
    RemoteError that keeps its name in ``attrs["kind"]``)."""
    if error.kind == "RemoteError" and error.attrs and isinstance(error.attrs.get("kind"), str):
        return error.attrs["kind"]
    return error.kind


class BusCore:
    """Fire-and-forget publish/subscribe, decided without I/O (see the module docstring)."""

    def __init__(self, *, seed: int = 0, dead_letters_max: int = 10_000, dedupe_batches: int = 1024):
        integer("seed", seed)
        self.dead_letters_max = at_least("dead_letters_max", integer("dead_letters_max", dead_letters_max), 1)
        self.dedupe_batches = at_least("dedupe_batches", integer("dedupe_batches", dedupe_batches), 1)
        self._rng = random.Random(seed)
        self._subs: dict[str, _Subscription] = {}  # by id, in subscription order (deliveries start in it)
        self._by_name: dict[str, str] = {}
        self._routes: dict[str, tuple[_Subscription, ...]] = {}  # event type -> matching subscriptions
        self._owner: dict[int, _Subscription] = {}  # outstanding delivery id -> its subscription
        self._batches: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._letters: dict[int, DeadLetter] = {}  # by id; insertion order is age
        self._next_seq = 1
        self._next_delivery = 1
        self._next_letter = 1
        self._closed = False
        self.counts = dict.fromkeys(("published", "unrouted", "duplicate_batches", "dead_letters_total",
                                     "dead_letters_evicted", "dead_letters_replayed", "dead_letters_discarded",
                                     "late_results"), 0)

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, spec: SubscriptionSpec) -> bool:
        """Add ``spec``; True if new, False if this very subscription exists (a retried call).

        Raises :class:`ConfigError` if its id or name is taken by a different subscription.
        """
        if not isinstance(spec, SubscriptionSpec):
            raise InvalidArgumentError(f"subscribe takes a SubscriptionSpec, got {type(spec).__name__}")
        self._check_open()
        old = self._subs.get(spec.id)
        if old is not None and not old.closing:
            if old.spec == spec:
                return False
            raise ConfigError(f"subscription id {spec.id!r} is taken by another subscription")
        if old is not None or spec.name in self._by_name:
            raise ConfigError(f"subscription name {spec.name!r} (or id {spec.id!r}) is in use; pick another")
        self._subs[spec.id] = _Subscription(spec)
        self._by_name[spec.name] = spec.id
        self._routes.clear()
        return True

    def _find(self, key: str) -> _Subscription:
        sub = self._subs.get(key)
        if sub is None or sub.closing:  # not a live id: a live name, then
            sub = self._subs.get(self._by_name.get(key, ""))
        if sub is None or sub.closing:
            raise UnknownSubscriptionError(
                f"no subscription {key!r} on this bus (running: {sorted(self._by_name)[:20]})", key)
        return sub

    def subscription(self, key: str) -> SubscriptionSpec:
        """The spec of the live subscription with id or name ``key``; UnknownSubscriptionError if none."""
        return self._find(key).spec

    def subscriptions(self) -> tuple[SubscriptionSpec, ...]:
        """Every live subscription's spec, in subscription order."""
        return tuple(s.spec for s in self._subs.values() if not s.closing)

    def has_subscription(self, sub_id: str) -> bool:
        """Whether ``sub_id`` is known here, live or ending (its running deliveries not reported yet)."""
        return sub_id in self._subs

    def unsubscribe(self, key: str, now_s: float) -> int:
        """End the subscription ``key`` (id or name); returns how many events it dead-lettered now.

        Queued events and deliveries waiting for a retry become dead letters (``"unsubscribed"``);
        running deliveries finish first (see the module docstring).
        """
        sub = self._find(key)
        sub.closing = True
        del self._by_name[sub.spec.name]
        self._routes.clear()
        moved = len(sub.queue)
        while sub.queue:
            self._dead_letter(sub, (sub.queue.popleft(),), 0, "unsubscribed", None, now_s)
        for o in [o for o in sub.outstanding.values() if not o.running]:
            moved += len(o.events)
            self._end(sub, o, "unsubscribed", now_s)
        self._forget_if_done(sub)
        return moved

    def _forget_if_done(self, sub: _Subscription) -> None:
        if sub.closing and not sub.outstanding:
            self._subs.pop(sub.spec.id, None)

    # --- events -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("this event bus is shutting down; nothing was accepted")

    def _route(self, tag: str) -> tuple[_Subscription, ...]:
        subs = self._routes.get(tag)
        if subs is None:
            subs = tuple(s for s in self._subs.values() if not s.closing and matches(s.spec.pattern, tag))
            if len(self._routes) >= 4096:  # bounded like everything else: many distinct types just recompute
                self._routes.clear()
            self._routes[tag] = subs
        return subs

    def publish(self, batch: PublishBatch, now_s: float) -> tuple[int, int]:
        """Accept ``batch``; returns ``(first_seq, count)``: its events are ``first_seq ..``.

        A batch id seen within the last ``dedupe_batches`` batches is not accepted again: the
        first answer is returned. Raises :class:`BusClosedError` once the bus is closing.
        """
        if not isinstance(batch, PublishBatch):
            raise InvalidArgumentError(f"publish takes a PublishBatch, got {type(batch).__name__}")
        self._check_open()
        seen = self._batches.get(batch.batch_id)
        if seen is not None:
            self.counts["duplicate_batches"] += 1
            return seen
        first = self._next_seq
        for tag, data in zip(batch.types, batch.data):
            event = _Event(self._next_seq, tag, data)
            self._next_seq += 1
            subs = self._route(tag)
            if not subs:
                self.counts["unrouted"] += 1
            for sub in subs:
                sub.counts["matched"] += 1
                self._enqueue(sub, event, now_s)
        result = (first, len(batch.types))
        self.counts["published"] += len(batch.types)
        self._batches[batch.batch_id] = result
        while len(self._batches) > self.dedupe_batches:
            self._batches.popitem(last=False)
        return result

    def _enqueue(self, sub: _Subscription, event: _Event, now_s: float) -> None:
        queue = sub.queue
        if len(queue) >= sub.spec.queue_max:
            if sub.spec.overflow == "drop_newest":
                self._dead_letter(sub, (event,), 0, "overflow", None, now_s)
                return
            self._dead_letter(sub, (queue.popleft(),), 0, "overflow", None, now_s)
        queue.append(event)
        sub.depth_max = max(sub.depth_max, len(queue))

    def start_due(self, now_s: float) -> tuple[Delivery, ...]:
        """The deliveries to start now: retries whose backoff ended, then new ones from the queues
        while slots are free. Each is "running" until its outcome is reported."""
        if self._closed:
            return ()
        out = []
        for sub in self._subs.values():
            for o in sub.outstanding.values():
                if not o.running and o.due_s <= now_s:
                    out.append(self._attempt(sub, o))
            spec = sub.spec
            while sub.queue and len(sub.outstanding) < spec.concurrency and not sub.closing:
                events = tuple(sub.queue.popleft() for _ in range(min(spec.batch_max, len(sub.queue))))
                o = _Outstanding(self._next_delivery, events, Backoff(sub.policy, self._rng), now_s)
                self._next_delivery += 1
                sub.outstanding[o.id] = o
                self._owner[o.id] = sub
                out.append(self._attempt(sub, o))
        return tuple(out)

    def _attempt(self, sub: _Subscription, o: _Outstanding) -> Delivery:
        o.attempt += 1
        o.running = True
        sub.counts["attempts"] += 1
        if o.attempt > 1:
            sub.counts["retried"] += 1
        return Delivery(o.id, sub.spec.id, o.attempt, float(sub.spec.timeout_s),
                        tuple(e.seq for e in o.events), tuple(e.data for e in o.events))

    def next_due_s(self) -> float | None:
        """When the earliest waiting retry is due (None if none waits); new events need a wakeup."""
        due = [o.due_s for sub in self._subs.values() for o in sub.outstanding.values() if not o.running]
        return min(due) if due else None

    def _running(self, delivery_id: int) -> tuple[_Subscription, _Outstanding] | None:
        sub = self._owner.get(delivery_id)
        o = sub.outstanding.get(delivery_id) if sub is not None else None
        if sub is None or o is None or not o.running:
            self.counts["late_results"] += 1  # reported twice, or after close: nothing to change
            return None
        return sub, o

    def succeeded(self, delivery_id: int, now_s: float) -> None:
        """The handler call of ``delivery_id`` returned: its events are delivered."""
        found = self._running(delivery_id)
        if found is None:
            return
        sub, o = found
        sub.counts["delivered"] += len(o.events)
        self._remove(sub, o)

    def failed(self, delivery_id: int, error: ErrorRecord, now_s: float) -> None:
        """The handler call of ``delivery_id`` failed with ``error``: schedule a retry or dead-letter it."""
        if not isinstance(error, ErrorRecord):
            raise InvalidArgumentError(f"a failure is reported as an ErrorRecord, got {type(error).__name__}")
        found = self._running(delivery_id)
        if found is None:
            return
        sub, o = found
        sub.counts["failures"] += 1
        o.running = False
        o.last_error = error
        if sub.closing:
            self._end(sub, o, "unsubscribed", now_s)
            return
        policy = sub.policy
        if o.attempt >= policy.max_attempts or _error_class(error) in sub.spec.no_retry_on:
            self._end(sub, o, "failed", now_s)
            return
        delay_s = next(o.backoff)  # attempt < max_attempts: the backoff has a delay left
        if policy.deadline_s is not None and now_s + delay_s > o.started_s + policy.deadline_s:
            self._end(sub, o, "failed", now_s)
            return
        o.due_s = now_s + delay_s

    def _end(self, sub: _Subscription, o: _Outstanding, reason: str, now_s: float) -> None:
        self._dead_letter(sub, o.events, o.attempt, reason, o.last_error, now_s)
        self._remove(sub, o)

    def _remove(self, sub: _Subscription, o: _Outstanding) -> None:
        del sub.outstanding[o.id]
        del self._owner[o.id]
        self._forget_if_done(sub)

    def pending(self) -> int:
        """Events queued or in a delivery, over every subscription (0: everything was handled)."""
        return sum(len(s.queue) + s.in_flight() for s in self._subs.values())

    def close(self) -> int:
        """Refuse further publishes and subscriptions and start nothing more; returns the events
        abandoned (queued or outstanding: lost with the bus, as fire-and-forget allows)."""
        self._closed = True
        return self.pending()

    # --- dead letters -------------------------------------------------------------------

    def _dead_letter(self, sub: _Subscription, events: Iterable[_Event], attempts: int, reason: str,
                     error: ErrorRecord | None, now_s: float) -> None:
        spec = sub.spec
        for e in events:
            sub.counts[_REASON_COUNTER[reason]] += 1
            letter = DeadLetter(self._next_letter, spec.id, spec.name, spec.handler, e.seq, e.type, e.data,
                                attempts, reason, error, float(now_s))
            self._next_letter += 1
            self._letters[letter.id] = letter
            self.counts["dead_letters_total"] += 1
            if len(self._letters) > self.dead_letters_max:
                del self._letters[next(iter(self._letters))]
                self.counts["dead_letters_evicted"] += 1

    def _select(self, ids: Iterable[int] | None, subscription: str | None) -> list[DeadLetter]:
        """The letters of ``ids`` (None: all) held now, oldest first, of the subscription whose id or
        name is ``subscription`` (None: any; an ended subscription's letters are found by it too)."""
        if ids is None:
            letters = list(self._letters.values())
        else:
            letters = [self._letters[i] for i in sorted({integer("dead letter id", i) for i in ids})
                       if i in self._letters]
        return [d for d in letters if subscription is None or subscription in (d.subscription, d.name)]

    def dead_letters(self, *, subscription: str | None = None, after: int = 0,
                     limit: int = 1000) -> tuple[DeadLetter, ...]:
        """Up to ``limit`` dead letters with an id above ``after``, oldest first (of one subscription,
        by id or name, when given)."""
        at_least("limit", integer("limit", limit), 1)
        integer("after", after)
        out = []
        for d in self._select(None, subscription):
            if d.id > after:
                out.append(d)
                if len(out) == limit:
                    break
        return tuple(out)

    def replay_dead_letters(self, ids: Iterable[int] | None = None, *, subscription: str | None = None,
                            now_s: float) -> int:
        """Put dead letters back in their subscriptions' queues (oldest first); returns how many.

        ``ids`` None means all (of ``subscription`` when given). A letter whose subscription has
        ended stays in the list; unknown ids are ignored (evicted, or replayed already). A replayed
        event meets the queue's bound like a new one.
        """
        self._check_open()
        replayed = 0
        for d in self._select(ids, subscription):
            sub = self._subs.get(d.subscription)
            if sub is None or sub.closing:
                continue
            del self._letters[d.id]
            self.counts["dead_letters_replayed"] += 1
            sub.counts["replayed"] += 1
            self._enqueue(sub, _Event(d.seq, d.event_type, d.data), now_s)
            replayed += 1
        return replayed

    def discard_dead_letters(self, ids: Iterable[int] | None = None, *, subscription: str | None = None) -> int:
        """Remove dead letters for good (all, or ``ids``, of ``subscription`` when given); returns how many."""
        selected = self._select(ids, subscription)
        for d in selected:
            del self._letters[d.id]
        self.counts["dead_letters_discarded"] += len(selected)
        return len(selected)

    # --- figures ------------------------------------------------------------------------

    def stats(self) -> BusStats:
        """Immutable counters of the bus and of every live subscription."""
        c = self.counts
        return BusStats(c["published"], c["unrouted"], c["duplicate_batches"], len(self._letters),
                        c["dead_letters_total"], c["dead_letters_evicted"], c["dead_letters_replayed"],
                        c["dead_letters_discarded"],
                        tuple(s.stats() for s in self._subs.values() if not s.closing))

    def check_invariants(self) -> None:
        """Raise :class:`~ddia_ray._validate.InvariantViolation` if a bound or a count does not hold."""
        c = self.counts
        invariant(len(self._letters) <= self.dead_letters_max, "the dead-letter list exceeds its bound")
        invariant(c["dead_letters_total"] == len(self._letters) + c["dead_letters_evicted"]
                  + c["dead_letters_replayed"] + c["dead_letters_discarded"], "a dead letter vanished")
        invariant(len(self._batches) <= self.dedupe_batches, "the dedupe window exceeds its bound")
        invariant(set(self._owner) == {i for s in self._subs.values() for i in s.outstanding},
                  "the owners of outstanding deliveries disagree with the subscriptions")
        for sub in self._subs.values():
            n, spec = sub.counts, sub.spec
            invariant(len(sub.queue) <= spec.queue_max, f"{spec.name}: the queue exceeds queue_max")
            invariant(len(sub.outstanding) <= spec.concurrency, f"{spec.name}: more deliveries than concurrency")
            invariant(all(len(o.events) <= spec.batch_max for o in sub.outstanding.values()),
                      f"{spec.name}: a delivery exceeds batch_max")
            invariant(n["matched"] + n["replayed"] == n["delivered"] + n["dead_lettered"] + n["dropped"]
                      + n["unsubscribed"] + len(sub.queue) + sub.in_flight(), f"{spec.name}: an event vanished")
