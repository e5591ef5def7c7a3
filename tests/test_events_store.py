"""The event store on real Ray actors (a Raft group on the LSM engine): appends from many callers
while the leader is killed, $all gap-free, a catch-up subscription exactly once across the failover
and a subscriber restart, a projection's effectively-once fold, connect(), and procedure errors."""

from __future__ import annotations

import pytest

from ddia_ray.errors import (CallTimeoutError, ComponentNotFoundError, StreamDeletedError,
                             UnknownProcedureError, WrongExpectedVersionError)
from ddia_ray.events.projection import Projection, ProjectionRunner, StoreReadModel
from ddia_ray.events.records import NO_STREAM, EventData
from ddia_ray.events.store import EventStore
from ddia_ray.events.subscription import CatchUpSubscription
from ddia_ray.replication import ReplicatedStore
from ddia_ray.replication.procedures import call_op
from tests.raywait import until as _until

pytestmark = pytest.mark.ray


def test_event_store_under_a_leader_kill(ray_session, tmp_path):
    es = EventStore.launch(replicas=3, root=f"file://{tmp_path}")
    try:
        with es.client(timeout_s=30) as c:
            # History before the subscriber starts, then a subscriber that stops half way (a restart).
            for i in range(50):
                c.append(f"order-{i % 5}", [EventData(f"pre{i}", "OrderPlaced", b"%d" % i)])
            sub = CatchUpSubscription(c, from_position=0, page=7)
            seen = []
            sub.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 30)
            checkpoint = sub.checkpoint
            assert seen == list(range(30)) and checkpoint == 30

            # Many appends in flight while the leader is killed: every acknowledged one survives.
            futures = {}
            old = es.leader()
            for i in range(600):
                stream = f"user-{i % 20}"
                futures[(stream, f"ev{i}")] = c.append_nowait(stream, [EventData(f"ev{i}", "UserCreated", b"x")])
                if i == 200:
                    es.kill(old)
            acked = {}
            for (stream, event_id), f in futures.items():
                try:
                    acked[event_id] = (stream, f.result(60))
                except CallTimeoutError:
                    pass  # unknown outcome: may or may not be there
            assert len(acked) > 200
            es.restart(old)

            # The handle's own nemesis: a follower cut off while appends go on, then healed.
            cut = next(m for m in es.members if m != es.leader())
            es.partition([[cut], ["*"]])
            assert c.append("cut-off", [EventData("during-cut", "Probe", b"")]).first_position >= 0
            es.heal()

            # The restarted subscriber resumes from its checkpoint: every event once, in order.
            resumed = CatchUpSubscription(c, from_position=checkpoint, page=50)
            total = es.stats()["events"]
            resumed.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= total, timeout_s=60)
            assert seen == list(range(total)), "the subscription skipped or repeated an event"
            everything = c.read_all()
            assert [e.position for e in everything] == list(range(total))  # $all is gap-free
            ids = {e.id: e for e in everything}
            for event_id, (stream, result) in acked.items():
                e = ids[event_id]  # an acknowledged append is there, where its answer said
                assert (e.stream, e.position) == (stream, result.first_position)
            for s in {s for s, _ in acked.values()}:  # each stream's versions are 0..n-1
                assert [e.version for e in c.read_stream(s)] == list(range(len(c.read_stream(s))))
            # Many streams in one read, from the new leader: each as its own read returns it.
            many = c.read_streams([f"user-{i}" for i in range(20)] + [f"order-{i}" for i in range(5)])
            assert {s: [e.id for e in events] for s, events in many.items()} == \
                {s: [e.id for e in c.read_stream(s)] for s in many}
            assert sum(map(len, many.values())) >= len(acked) + 50

            # Expected versions and tombstones still hold after the failover.
            v = c.stream_version("user-0")
            with pytest.raises(WrongExpectedVersionError) as e:
                c.append("user-0", [EventData("late", "X", b"")], v - 1 if v > 0 else NO_STREAM)
            assert e.value.actual == v
            c.tombstone_stream("user-1")
            with pytest.raises(StreamDeletedError):
                c.append("user-1", [EventData("late2", "X", b"")])
    finally:
        es.shutdown(destroy_data=True)


def test_projection_is_effectively_once_and_rebuilds(ray_session, tmp_path):
    es = EventStore.launch(replicas=3, root=f"file://{tmp_path}")
    try:
        with es.client() as c:
            for i in range(120):
                c.append_nowait(f"order-{i % 4}", [EventData(f"o{i}", "OrderPlaced", b"")])
            _until(lambda: es.stats()["events"] == 120, what="the appends")

            def count(event, view):
                key = event.stream.encode()
                view.put(key, b"%d" % (int(view.get(key) or b"0") + 1))

            runner = ProjectionRunner(Projection("per-order", count, stream_prefix="order-"), c, page=16)
            runner.run(until=lambda: runner.checkpoint >= 60)
            # A second runner of the same projection: one page is refused, nothing applied twice.
            rival = ProjectionRunner(Projection("per-order", count), c, page=16)
            rival.run(until=lambda: rival.checkpoint >= 120, timeout_s=60)
            from ddia_ray.errors import ProjectionConflictError

            with pytest.raises(ProjectionConflictError):
                runner.model.commit("per-order", runner.checkpoint, runner.checkpoint + 1, ())
            model = StoreReadModel(c)
            assert model.scan("per-order") == [(b"order-%d" % i, b"30") for i in range(4)]
            assert rival.stats()["lag_events"] == 0
            rival.rebuild(until=lambda: rival.checkpoint >= 120, timeout_s=60)
            assert model.scan("per-order") == [(b"order-%d" % i, b"30") for i in range(4)]
    finally:
        es.shutdown(destroy_data=True)


def test_connect_and_unknown_procedures(ray_session):
    es = EventStore.launch(replicas=1, engine="map")
    plain = ReplicatedStore.launch(replicas=1, protocol="raft")
    try:
        again = EventStore.connect(es.name)
        with again.client() as c:
            assert c.append("s-1", [EventData("a", "T", b"")]).first_position == 0
        with pytest.raises(ComponentNotFoundError):
            EventStore.connect(plain.name)  # a replicated store without the event store's procedures
        with plain.client() as pc:
            with pytest.raises(UnknownProcedureError):
                from ddia_ray.replication.procedures import result_or_raise

                result_or_raise(pc.submit_ops((call_op("events.append", ("s", "any", (), 0)),), single=True)
                                .result(30))
            with pytest.raises(UnknownProcedureError):
                pc.query("events.read_all", (0, False, 10, None, ""))
    finally:
        es.shutdown()
        plain.shutdown()


def test_consumer_group_across_a_failover(ray_session, tmp_path):
    import threading

    from ddia_ray.events.persistent import ConsumerGroups, PersistentSubscription

    es = EventStore.launch(replicas=3, root=f"file://{tmp_path}")
    try:
        with es.client(timeout_s=30) as c:
            groups = ConsumerGroups(c)
            groups.create("billing", stream_prefix="order-", ack_timeout_s=2.0, max_retries=3)
            futures = [c.append_nowait(f"order-{i % 7}", [EventData(f"o{i}", "OrderPlaced", b"")]) for i in range(300)]
            [f.result(60) for f in futures]
            seen: dict[int, int] = {}
            lock = threading.Lock()

            def handle(event):
                with lock:
                    seen[event.position] = seen.get(event.position, 0) + 1

            consumers = [PersistentSubscription(c, "billing", f"worker-{i}", batch=20) for i in range(2)]
            threads = [threading.Thread(target=s.run, args=(handle,), kwargs={"timeout_s": 120}) for s in consumers]
            for t in threads:
                t.start()
            _until(lambda: len(seen) >= 100, what="half the events handled")
            es.kill(es.leader())  # the new leader resumes the group from its last checkpoint in the log
            _until(lambda: groups.info("billing")["checkpoint"] >= 300, timeout_s=90, what="every event settled")
            for s in consumers:
                s.stop()
            for t in threads:
                t.join(30)
            info = groups.info("billing")
            assert set(seen) == set(range(300))  # at least once: every event reached a handler
            assert info["acked"] >= 300 and info["parked"] == 0 and info["in_flight"] == 0
    finally:
        es.shutdown(destroy_data=True)
