"""Leader reads on the caller's own link (ReplicatedClient.query_direct) on real Ray actors: the same
answers as the routed path, refusals raised as they are, and the leader followed through a
transfer and a ``ray.kill``."""

from __future__ import annotations

import threading

import pytest
from raywait import wait_for

from ddia_ray.errors import UnknownProcedureError
from ddia_ray.replication import ReplicatedStore
from ddia_ray.replication.procedures import call_op

pytestmark = pytest.mark.ray


def _append(c, stream: str, expected, n: int, first: int = 0):
    """Append events ``first..first+n-1`` of ``stream`` (their ids name them: a repeated id is a retry)."""
    events = tuple((f"{stream}-{i}", "T", b"x", b"") for i in range(first, first + n))
    return c.submit_ops((call_op("events.append", (stream, expected, events, 0)),), single=True).result(30)


def test_leader_reads_go_direct_and_follow_the_leader_through_a_transfer_and_a_kill(ray_session, tmp_path):
    store = ReplicatedStore.launch(replicas=3, protocol="raft", engine="lsm", root=f"file://{tmp_path}",
                                   procedures=("ddia_ray.events.procedures",))
    try:
        with store.client(read="leader") as c:
            _append(c, "s-1", "no_stream", 3)
            assert c.query("events.stream_info", ("s-1",))[0] == 2
            before = c.stats["direct_reads"]
            answers = [c.query("events.stream_info", ("s-1",))[0] for _ in range(20)]
            assert answers == [2] * 20 and c.stats["direct_reads"] == before + 20
            with pytest.raises(UnknownProcedureError):  # the query's own refusal, raised as the routed path does
                c.query("test.not_registered", ())

            # Threads at once, each on its own link: each sees every append acknowledged before it reads.
            errors: list = []

            def reader(t: int) -> None:
                for i in range(10):
                    _append(c, f"t{t}", "any", 1, i)
                    got = c.query("events.stream_info", (f"t{t}",))[0]
                    if got != i:
                        errors.append((t, i, got))

            threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == []

            old = store.leader()
            store.transfer_leadership(next(m for m in store.members if m != old))
            _append(c, "s-1", 2, 1, 3)  # acknowledged by the new leader
            assert c.query("events.stream_info", ("s-1",))[0] == 3  # the old leader refused: asked again

            killed = store.leader()
            store.kill(killed)
            wait_for(lambda: store.leader(timeout_s=5.0) != killed, 30, what="a new leader")
            _append(c, "s-1", 3, 1, 4)
            assert c.query("events.stream_info", ("s-1",))[0] == 4
            served = c.stats["direct_reads"]
            assert c.query("events.stream_info", ("s-1",))[0] == 4
            assert c.stats["direct_reads"] == served + 1  # on a link to the new leader
    finally:
        store.shutdown()


def test_blocking_leader_service_calls_go_direct_and_follow_the_leader_through_a_transfer(ray_session, tmp_path):
    from ddia_ray.errors import UnknownConsumerGroupError
    from ddia_ray.events import ConsumerGroups, EventData, EventStore, PersistentSubscription

    with EventStore.launch(replicas=3, root=f"file://{tmp_path}") as es, es.client() as client:
        client.append("order-1", [EventData(f"e{i}", "T", b"x") for i in range(30)], "no_stream")
        groups = ConsumerGroups(client)
        groups.create("g")
        repl = client.backend.client  # the replicated store's client under the event store's
        before = repl.stats["direct_service_calls"]
        assert [groups.info("g")["cursor"] for _ in range(5)] == [0] * 5
        sub = PersistentSubscription(client, "g", "c1", batch=10)
        got = sub.pull()  # the pull's answer carries its events, on the same link
        assert [e.position for e, _ in got] == list(range(10))
        assert repl.stats["direct_service_calls"] == before + 6
        with pytest.raises(UnknownConsumerGroupError):  # the service's own refusal, raised as the routed path does
            groups.info("nope")

        old = es.store.leader()
        es.store.transfer_leadership(next(m for m in es.store.members if m != old))
        # The old leader refuses (not the leader): the call goes the routed way to the new one, then
        # direct again. The new leader resumed from the last checkpoint, which holds the pull's hand-out
        # or not; either way the next pull goes on from the cursor it has, with nothing skipped.
        cursor = groups.info("g")["cursor"]
        assert cursor in (0, 10)
        served = repl.stats["direct_service_calls"]
        assert [e.position for e, _ in sub.pull()] == list(range(cursor, cursor + 10))
        assert repl.stats["direct_service_calls"] == served + 1  # on a link to the new leader
