"""Durable topics on the event store: partitions, offsets, consumer groups and replay, Kafka-like.

Theory of operation
-------------------
The event bus's durable mode is not a second log: a topic ``orders`` with ``P``
partitions is ``P`` streams of the event store, ``bus.orders.0`` ..
``bus.orders.<P-1>`` (the topic's category-free names never clash with users'
streams, which have no ``bus.`` prefix by convention; the topic's settings are the
custom metadata of the stream ``bus.orders``). So a published event is an append:
replicated by Raft, acknowledged once a majority has it, with an id that makes a
retried publish a no-op.

* **Partitioning**: an event with a key goes to partition ``hash(key) mod P``
  (BLAKE2b of the key, stable across processes and versions, unlike Python's
  ``hash``), so one key's events keep their order; without a key, publishes go
  round robin.
* **Offsets** are stream versions: dense, 0-based, per partition, as Kafka's.
  :meth:`Topics.end_offsets` is each partition's next offset.
* **Replay** from an offset reads the partition stream from that version; from a
  time, it first finds the first offset whose event was published at or after it
  (a binary search over the partition's versions: ``log P`` one-event reads).
* **Consumer groups** are the event store's persistent subscriptions
  (:mod:`.consumer_groups`) filtered to the topic's streams: competing consumers,
  per-event acks, retries, parking. Delivery is at least once and ordered only per
  consumer batch, not per key (Kafka's partition ownership orders a key; here a
  redelivery may overtake: a handler must be idempotent). A catch-up subscription
  on one partition (:meth:`Topics.replay`) gives per-partition order.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, Iterable, Iterator

from ..errors import ConfigError, InvalidArgumentError, WrongExpectedVersionError
from .client import EventStoreClient
from .persistent import ConsumerGroups, PersistentSubscription
from .records import ANY, RecordedEvent, StreamMetadata, event_data

__all__ = ["Topics", "partition_of"]

_PREFIX = "bus."


def partition_of(key: bytes | str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (stable: BLAKE2b, not Python's salted hash)."""
    raw = key.encode() if isinstance(key, str) else key
    if type(raw) is not bytes:
        raise InvalidArgumentError(f"a partition key is str or bytes, got {type(key).__name__}")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % partitions


def _check_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not topic or "\x00" in topic or "." in topic or len(topic) > 200:
        raise InvalidArgumentError(f"a topic name is a non-empty str without '.' or NUL, got {topic!r:.80}")
    return topic


class Topics:
    """Create topics, publish to them, read their offsets, replay them and consume them in groups."""

    def __init__(self, client: EventStoreClient) -> None:
        self.client = client
        self._partitions: dict[str, int] = {}
        self._rr = itertools.count()

    @staticmethod
    def stream(topic: str, partition: int) -> str:
        """The event store stream holding ``partition`` of ``topic``."""
        return f"{_PREFIX}{topic}.{partition}"

    def create(self, topic: str, partitions: int = 4) -> bool:
        """Create ``topic`` with ``partitions``; True if created, False if it exists with as many
        (a ConfigError if with another count: partitions are fixed, or keys would move)."""
        _check_topic(topic)
        if type(partitions) is not int or not 1 <= partitions <= 1024:
            raise InvalidArgumentError(f"a topic has 1..1024 partitions, got {partitions!r}")
        try:
            self.client.set_metadata(f"{_PREFIX}{topic}", StreamMetadata(custom={"partitions": partitions}),
                                     expected_metadata_version=-1)
            self._partitions[topic] = partitions
            return True
        except WrongExpectedVersionError:
            have = self.partitions(topic)
            if have != partitions:
                raise ConfigError(f"topic {topic!r} exists with {have} partitions, not {partitions}") from None
            return False

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (ConfigError if it does not exist)."""
        _check_topic(topic)
        if topic not in self._partitions:
            meta, version = self.client.get_metadata(f"{_PREFIX}{topic}")
            if version < 0 or not meta.custom or type(meta.custom.get("partitions")) is not int:
                raise ConfigError(f"no topic {topic!r}: create it first")
            self._partitions[topic] = meta.custom["partitions"]
        return self._partitions[topic]

    def publish_nowait(self, topic: str, events: Iterable[Any], *, key: bytes | str | None = None):
        """Start publishing ``events`` (codec records or EventData) to one partition of ``topic``
        (``key``'s, or the next in turn); the future holds the AppendResult (offsets are versions)."""
        n = self.partitions(topic)
        p = partition_of(key, n) if key is not None else next(self._rr) % n
        return self.client.append_nowait(self.stream(topic, p), [event_data(e) for e in events], ANY)

    def publish(self, topic: str, event: Any, *, key: bytes | str | None = None, timeout_s: float | None = None):
        """Publish one event; returns ``(partition, offset)`` once a majority of the store has it."""
        result = self.client.wait(self.publish_nowait(topic, [event], key=key), timeout_s)
        return int(result.stream.rsplit(".", 1)[1]), result.first_version

    def end_offsets(self, topic: str) -> list[int]:
        """Each partition's next offset (its event count, the high-water mark)."""
        return [self.client.stream_version(self.stream(topic, p)) + 1 for p in range(self.partitions(topic))]

    def offset_at(self, topic: str, partition: int, time_ms: int) -> int:
        """The first offset of ``partition`` published at or after ``time_ms`` (the end offset if none)."""
        stream = self.stream(topic, partition)
        lo, hi = 0, self.client.stream_version(stream) + 1
        while lo < hi:  # created_ms grows with the offset (one appender's clock; see the docs' caveat)
            mid = (lo + hi) // 2
            (event,) = self.client.read_stream(stream, mid, max_count=1)
            if event.created_ms < time_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def replay(self, topic: str, partition: int, *, from_offset: int | None = None,
               from_time_ms: int | None = None, max_count: int | None = None) -> Iterator[RecordedEvent]:
        """``partition``'s events in offset order from ``from_offset`` or from the first published at or
        after ``from_time_ms`` (the committed ones; a live follower is a CatchUpSubscription on
        :meth:`stream`)."""
        if (from_offset is None) == (from_time_ms is None):
            raise InvalidArgumentError("replay from an offset or from a time, one of the two")
        if not 0 <= partition < self.partitions(topic):
            raise InvalidArgumentError(f"topic {topic!r} has no partition {partition}")
        start = from_offset if from_offset is not None else self.offset_at(topic, partition, from_time_ms or 0)
        return self.client.iter_stream(self.stream(topic, partition), start, max_count=max_count)

    def create_group(self, group: str, topic: str, *, from_start: bool = True, **settings: Any) -> bool:
        """A consumer group over ``topic`` (all its partitions) from its first event (``from_start``) or
        from now; ``settings`` as :meth:`ConsumerGroups.create` takes them."""
        self.partitions(topic)
        start = 0
        if not from_start:
            last = self.client.read_all_page(-1, backward=True, page=1)[0]
            start = last[0][2] + 1 if last else 0
        return ConsumerGroups(self.client).create(group, from_position=start, stream_prefix=f"{_PREFIX}{topic}.",
                                                  **settings)

    def consumer(self, group: str, name: str, **options: Any) -> PersistentSubscription:
        """One competing consumer of ``group`` (see :class:`~.persistent.PersistentSubscription`)."""
        return PersistentSubscription(self.client, group, name, **options)

    def lag(self, group: str) -> int:
        """Events of the group's topic published and not yet settled by the group (an upper bound:
        counted over ``$all`` from the group's checkpoint)."""
        return ConsumerGroups(self.client).info(group)["lag_events"]

