"""Durable topics on the event store: partitions by key, offsets, replay from an offset and from a
time, consumer groups; and on Ray, publishing and consuming across a leader kill."""

from __future__ import annotations

import threading
import time

import pytest

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData
from ddia_ray.events.topics import Topics, partition_of


def _event(i: int) -> EventData:
    return EventData(f"e{i}", "OrderPlaced", b"%d" % i)


def test_keys_keep_their_partition_and_order():
    topics = Topics(EventStoreClient(LocalBackend()))
    assert topics.create("orders", 4) and not topics.create("orders", 4)
    placed = {}
    for i in range(40):
        key = f"customer-{i % 6}"
        placed.setdefault(key, []).append(topics.publish("orders", _event(i), key=key))
    for key, spots in placed.items():
        assert {p for p, _ in spots} == {partition_of(key, 4)}  # one key, one partition
        offsets = [o for _, o in spots]
        assert offsets == sorted(offsets)  # in publish order
    ends = topics.end_offsets("orders")
    assert sum(ends) == 40
    for p in range(4):
        got = [e.version for e in topics.replay("orders", p, from_offset=0)]
        assert got == list(range(ends[p]))  # offsets are dense and 0-based
        if ends[p] > 2:
            assert [e.version for e in topics.replay("orders", p, from_offset=2)] == list(range(2, ends[p]))


def test_replay_from_a_time():
    client = EventStoreClient(LocalBackend())
    topics = Topics(client)
    topics.create("clicks", 1)
    for i in range(10):
        client.append(Topics.stream("clicks", 0), [_event(i)], created_ms=1_000 + 100 * i)
    assert [e.version for e in topics.replay("clicks", 0, from_time_ms=1_450)] == [5, 6, 7, 8, 9]
    assert topics.offset_at("clicks", 0, 0) == 0 and topics.offset_at("clicks", 0, 10**9) == 10


def test_groups_consume_every_partition():
    topics = Topics(EventStoreClient(LocalBackend()))
    topics.create("orders", 3)
    topics.create("other", 1)
    for i in range(30):
        topics.publish("orders", _event(i), key=str(i))
    topics.publish("other", EventData("x", "Other", b""))
    topics.create_group("shipping", "orders", max_retries=2)
    seen = []
    for name in ("a", "b"):
        topics.consumer("shipping", name, batch=7).run(lambda e: seen.append(e.data), timeout_s=0.1)
    assert sorted(seen) == sorted(b"%d" % i for i in range(30))  # the other topic is not the group's
    assert topics.lag("shipping") == 0


def test_bad_input():
    topics = Topics(EventStoreClient(LocalBackend()))
    with pytest.raises(ConfigError, match="create it first"):
        topics.publish("missing", _event(1))
    topics.create("orders", 2)
    with pytest.raises(ConfigError, match="2 partitions"):
        topics.create("orders", 3)
    with pytest.raises(InvalidArgumentError):
        topics.create("bad.name", 1)
    with pytest.raises(InvalidArgumentError, match="one of the two"):
        topics.replay("orders", 0)
    with pytest.raises(InvalidArgumentError, match="no partition"):
        list(topics.replay("orders", 5, from_offset=0))


@pytest.mark.ray
def test_topics_across_a_leader_kill(ray_session, tmp_path):
    from ddia_ray.errors import CallTimeoutError
    from ddia_ray.events.store import EventStore

    es = EventStore.launch(replicas=3, root=f"file://{tmp_path}")
    try:
        with es.client(timeout_s=30) as c:
            topics = Topics(c)
            topics.create("orders", 4)
            topics.create_group("billing", "orders", ack_timeout_s=2.0)
            futures = {}
            for i in range(400):
                futures[f"e{i}"] = topics.publish_nowait("orders", [_event(i)], key=f"k{i % 9}")
                if i == 150:
                    es.kill(es.leader())
            acked = set()
            for event_id, f in futures.items():
                try:
                    f.result(60)
                    acked.add(event_id)
                except CallTimeoutError:
                    pass
            seen: set = set()
            lock = threading.Lock()

            def handle(event):
                with lock:
                    seen.add(event.id)

            consumers = [topics.consumer("billing", f"w{i}", batch=25) for i in range(2)]
            threads = [threading.Thread(target=s.run, args=(handle,), kwargs={"timeout_s": 90}) for s in consumers]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 90
            while not acked <= seen and time.monotonic() < deadline:
                time.sleep(0.05)
            for s in consumers:
                s.stop()
            for t in threads:
                t.join(30)
            assert acked <= seen, f"{len(acked - seen)} acknowledged publishes never delivered"
            replayed = [e.id for p in range(4) for e in topics.replay("orders", p, from_offset=0)]
            assert len(replayed) == len(set(replayed)) and acked <= set(replayed)
    finally:
        es.shutdown(destroy_data=True)
