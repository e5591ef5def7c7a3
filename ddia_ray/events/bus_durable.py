"""The event bus's durable mode: publish/subscribe by event type on the event store's topics.

Theory of operation
-------------------
``EventBus.launch(name, mode="durable", ...)`` starts an event store (a Raft
group, :mod:`.store`) and creates one topic in it (:mod:`.topics`), so the durable
bus is not a second log: a publish is an append to one of the topic's partition
streams, acknowledged once a majority of the members has it. A subscription is
a consumer group of the event store (:mod:`.consumer_groups`) over the topic,
consumed by threads of the subscribing process: each pulls a batch, calls the
handler for the events whose type matches the subscription's pattern (the others
are acked unseen), and acks or nacks them.

Guarantees, against the fire-and-forget mode's (docs/events-bus.md):

* a publish that returned survives the crash of any minority of the store's
  members, and of the publisher and the subscribers;
* delivery is at least once per subscription (group): an event is settled only
  by an ack, a skip or a park, and a subscriber that dies mid-batch leaves its
  events to time out and go to another; a handler that keeps failing has its event
  parked, listed by :meth:`DurableBusClient.dead_letters` and replayable;
* order is per partition (one key's events, in :meth:`DurableBusClient.replay`);
  a group's delivery may reorder on retries;
* replay from an offset or a time reads a partition again, for as long as the
  store keeps it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import ComponentNotFoundError, ConfigError, InvalidArgumentError
from ..runtime.component import Component
from .bus_records import event_type, matches
from .records import RecordedEvent
from .store import EventStore
from .topics import Topics

__all__ = ["DurableEventBus", "DurableBusClient", "DurableSubscription"]

_TOPIC = "events"


class DurableEventBus(Component):
    """A durable event bus: an event store with one topic (see the module docstring)."""

    factories = EventStore.factories
    mode = "durable"

    def __init__(self, store: EventStore) -> None:
        super().__init__(store.group)
        self.store = store

    @classmethod
    def launch(cls, name: str, *, replicas: int = 3, root: str | None = None, engine: str = "lsm",
               partitions: int = 4, **options: Any) -> "DurableEventBus":
        """Start the bus's event store (``replicas`` Raft members, rows under ``root``) and its topic of
        ``partitions`` partitions; ``options`` go to :meth:`EventStore.launch`."""
        if type(partitions) is not int or partitions < 1:
            raise ConfigError(f"partitions is an int >= 1, got {partitions!r}")
        store = EventStore.launch(name, replicas, root=root, engine=engine, **options)
        with store.shutdown_on_error(), store.client() as c:
            Topics(c).create(_TOPIC, partitions)
        return cls(store)

    @classmethod
    def _attached(cls, group) -> "DurableEventBus":
        store = EventStore._attached(group)
        with store.client() as c:
            try:
                Topics(c).partitions(_TOPIC)
            except ConfigError:
                raise ComponentNotFoundError(group.name, [f"{group.name} (an event store without the bus's topic)"],
                                             kind="EventBus") from None
        return cls(store)

    def client(self, **options: Any) -> "DurableBusClient":
        """A new client (``options`` go to :meth:`EventStore.client`)."""
        return DurableBusClient(self.store.client(**options))

    def stats(self) -> dict:
        """The event store's figures and the topic's end offsets."""
        with self.client() as c:
            return {"mode": self.mode, "end_offsets": c.topics.end_offsets(_TOPIC), **self.store.stats()}

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop the event store (``destroy_data``: and delete its data)."""
        self.store.shutdown(destroy_data=destroy_data)


class DurableSubscription:
    """A running subscription: ``consumers`` threads of one consumer group (see :meth:`stop`)."""

    def __init__(self, client: "DurableBusClient", group: str, pattern: str, handler: Callable[[RecordedEvent], Any],
                 consumers: int, batch: int, on_error: str) -> None:
        self.group, self.pattern = group, pattern
        self._subs = [client.topics.consumer(group, f"{group}-{i}", batch=batch) for i in range(consumers)]

        def handle(event: RecordedEvent) -> None:
            if matches(pattern, event.type):
                handler(event)

        self._threads = [threading.Thread(target=s.run, args=(handle,), kwargs={"on_error": on_error},
                                          name=f"bus-{group}-{i}", daemon=True) for i, s in enumerate(self._subs)]
        for t in self._threads:
            t.start()

    @property
    def handled(self) -> int:
        """Events this subscription's consumers handled (matching or not)."""
        return sum(s.handled for s in self._subs)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the consumers after their current batch (what they did not settle times out and is
        handed out again to whoever consumes the group next)."""
        for s in self._subs:
            s.stop()
        for t in self._threads:
            t.join(timeout_s)


class DurableBusClient:
    """Publish to and subscribe on a durable bus; thread-safe. Close it (or use ``with``)."""

    def __init__(self, client) -> None:
        self.client = client
        self.topics = Topics(client)
        self._subscriptions: list[DurableSubscription] = []

    def __enter__(self) -> "DurableBusClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def publish_future(self, event: Any, *, key: bytes | str | None = None):
        """Start publishing ``event`` (a codec record); the future holds the append's result."""
        return self.topics.publish_nowait(_TOPIC, [event], key=key)

    def publish(self, event: Any, *, key: bytes | str | None = None) -> tuple[int, int]:
        """Publish ``event`` (a codec record); returns ``(partition, offset)`` once it is durable.
        ``key``: its partition (one key's events keep their order); none: round robin."""
        return self.topics.publish(_TOPIC, event, key=key)

    def publish_many(self, events, *, key: bytes | str | None = None) -> list[tuple[int, int]]:
        """Publish each of ``events`` (futures in flight together, so they share the store's batches)."""
        futures = [self.publish_future(e, key=key) for e in events]
        out = []
        for f in futures:
            r = self.client.wait(f, None)
            out.append((int(r.stream.rsplit(".", 1)[1]), r.first_version))
        return out

    def subscribe(self, pattern: Any, handler: Callable[[RecordedEvent], Any], *, group: str, consumers: int = 1,
                  batch: int = 100, from_start: bool = True, on_error: str = "retry", max_retries: int = 5,
                  ack_timeout_s: float = 30.0) -> DurableSubscription:
        """Consume the events whose type matches ``pattern`` (a type, a record class, or a prefix ending
        in ``*``) in consumer group ``group`` with ``consumers`` threads here; ``handler`` gets each
        :class:`~.records.RecordedEvent` (``.decode()`` gives the record). The group is created if new
        (from the first event, or with ``from_start=False`` from now); other processes subscribing with
        the same group compete for its events."""
        if not isinstance(group, str) or not group:
            raise InvalidArgumentError(f"a durable subscription names its consumer group, got {group!r}")
        if type(consumers) is not int or consumers < 1:
            raise InvalidArgumentError(f"consumers is an int >= 1, got {consumers!r}")
        text = pattern if isinstance(pattern, str) else event_type(pattern)
        self.topics.create_group(group, _TOPIC, from_start=from_start, max_retries=max_retries,
                                 ack_timeout_s=ack_timeout_s)
        sub = DurableSubscription(self, group, text, handler, consumers, batch, on_error)
        self._subscriptions.append(sub)
        return sub

    def replay(self, partition: int, *, from_offset: int | None = None, from_time_ms: int | None = None,
               max_count: int | None = None):
        """``partition``'s events in order from an offset or a time (see :meth:`Topics.replay`)."""
        return self.topics.replay(_TOPIC, partition, from_offset=from_offset, from_time_ms=from_time_ms,
                                  max_count=max_count)

    def end_offsets(self) -> list[int]:
        """Each partition's next offset."""
        return self.topics.end_offsets(_TOPIC)

    def dead_letters(self, group: str) -> list[tuple[int, int, str]]:
        """The group's parked events: ``(position, attempts, reason)``."""
        from .persistent import ConsumerGroups

        return ConsumerGroups(self.client).parked(group)

    def replay_dead_letters(self, group: str) -> int:
        """Hand the group's parked events out again; returns how many."""
        from .persistent import ConsumerGroups

        return ConsumerGroups(self.client).replay_parked(group)

    def lag(self, group: str) -> int:
        """Events published and not yet settled by ``group``."""
        return self.topics.lag(group)

    def close(self) -> None:
        """Stop this client's subscriptions and close it."""
        for sub in self._subscriptions:
            sub.stop()
        self.client.close()
