"""The nemesis breaks storage nodes, caches and balancers the way it breaks Raft members.

Every ddia-ray actor runs in the runtime's shell, so the same verbs (partition, pause, kill,
restart) reach each of them, on real Ray actors.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ddia_ray.balancing import BalancerActor
from ddia_ray.caching import ReadThroughCache, WriteBehindCache
from ddia_ray.demo.replica import Work, expected_digest
from ddia_ray.errors import ActorUnavailableError, CallTimeoutError, RetriesExhaustedError
from ddia_ray.runtime import CoreSpec, NodeGroup
from ddia_ray.storage.node import StorageNode
from raywait import wait_for

pytestmark = pytest.mark.ray


def _name(kind: str) -> str:
    return f"nem-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(ray_session, tmp_path):
    with StorageNode.launch(_name("store"), f"file://{tmp_path}/db", engine="lsm", sync="batch") as node:
        yield node


def _paused(component, node: str) -> bool:
    return component.group.status(node)["paused"]


# --- storage node ---------------------------------------------------------------------------

def test_a_partitioned_storage_node_is_unreachable_until_healed(store):
    client = store.client(timeout_s=1.0)
    client.put_many({b"a": b"1"})
    store.nemesis.isolate(store.node)
    with pytest.raises(CallTimeoutError):
        client.get(b"a")
    store.nemesis.heal()
    assert client.get(b"a") == b"1"
    assert store.group.status(store.node)["faults"]["cut"] >= 1
    client.close()


def test_a_paused_storage_node_parks_calls_and_serves_them_on_resume(store):
    client = store.client(timeout_s=30.0)
    client.put_many({b"k": b"v"})
    store.nemesis.pause(store.node)
    assert _paused(store, store.node)
    with pytest.raises(CallTimeoutError):
        store.client(timeout_s=0.5).get(b"k")
    calls = store.group.status(store.node)["counters"]["calls"]
    with ThreadPoolExecutor(1) as pool:
        parked = pool.submit(client.put_many, {b"during": b"pause"})
        wait_for(lambda: store.group.status(store.node)["counters"]["calls"] > calls,
                 what="the put to reach the paused node")
        assert not parked.done()
        store.nemesis.resume(store.node)
        assert parked.result(30) == 1
    assert client.get_many([b"k", b"during"]) == [b"v", b"pause"]
    client.close()


def test_a_killed_storage_node_restarts_from_its_files(store):
    client = store.client()
    client.put_many({b"k%04d" % i: b"v%d" % i for i in range(500)})
    store.nemesis.kill(store.node)
    with pytest.raises(ActorUnavailableError):
        client.get(b"k0001")
    store.nemesis.restart(store.node)
    assert client.get_many([b"k%04d" % i for i in range(500)]) == [b"v%d" % i for i in range(500)]
    assert [h for _, h in store.nemesis.history][-2:] == [f"kill {store.node}", f"restart {store.node}"]
    client.close()


# --- cache ----------------------------------------------------------------------------------

def test_a_cache_cut_off_from_its_store_serves_hits_and_fails_misses_typed(store):
    store.client().put_many({b"hot": b"1", b"cold": b"2"})
    with ReadThroughCache.launch(_name("cache"), store, store_timeout_s=1.0) as cache:
        client = cache.client()
        assert client.get(b"hot") == b"1"
        # The store's shell sees the cache's calls as coming from the cache's node id.
        store.nemesis.partition([[cache.node], ["*"]])
        assert client.get(b"hot") == b"1"  # a hit needs no store
        with pytest.raises(CallTimeoutError) as e:
            client.get(b"cold")
        assert e.value.remote_node == cache.node  # the cache's own answer: its store timed out
        store.nemesis.heal()
        assert client.get(b"cold") == b"2"
        client.close()


def test_a_cache_can_be_partitioned_paused_killed_and_restarted(store):
    store.client().put_many({b"x": b"1"})
    with ReadThroughCache.launch(_name("cache"), store) as cache:
        client = cache.client(timeout_s=1.0)
        assert client.get(b"x") == b"1"
        cache.nemesis.isolate(cache.node)
        with pytest.raises(CallTimeoutError):
            client.get(b"x")
        cache.nemesis.heal()
        cache.nemesis.pause(cache.node)
        assert _paused(cache, cache.node)
        with pytest.raises(CallTimeoutError):
            client.get(b"x")
        cache.nemesis.resume(cache.node)
        assert client.get(b"x") == b"1" and client.stats().hits >= 1
        cache.nemesis.kill(cache.node)
        with pytest.raises(ActorUnavailableError):
            client.get(b"x")
        cache.nemesis.restart(cache.node)
        # A restarted cache starts cold and reads through to the store again.
        assert client.get(b"x") == b"1"
        stats = client.stats()
        assert (stats.hits, stats.loads) == (0, 1)
        client.close()


def test_killing_a_write_behind_cache_loses_only_what_it_had_not_flushed(store):
    with WriteBehindCache.launch(_name("wb"), store, flush_interval_s=60.0, flush_batch_ops=10_000) as cache:
        client = cache.client()
        client.put_many({b"flushed": b"1"})
        client.flush(timeout_s=10)
        client.put_many({b"queued": b"2"})  # acknowledged, still in the queue
        cache.nemesis.kill(cache.node)
        cache.nemesis.restart(cache.node)
        assert client.get_many([b"flushed", b"queued"]) == [b"1", None]  # the documented loss window
        client.close()


# --- balancer -------------------------------------------------------------------------------

@pytest.fixture
def replicas(ray_session):
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})
    group = NodeGroup.launch(_name("replicas"), {n: spec for n in ("r0", "r1", "r2")})
    yield group
    group.shutdown()


def test_a_balancer_can_be_partitioned_paused_killed_and_restarted(replicas):
    with BalancerActor.launch(replicas, replicas.node_ids(), timeout_s=0.5) as lb:
        client = lb.client(timeout_s=1.0)
        assert client.call(Work("a")).digest == expected_digest(Work("a"))
        lb.nemesis.isolate(lb.node)
        with pytest.raises(CallTimeoutError):
            client.call(Work("b"))
        lb.nemesis.heal()
        lb.nemesis.pause(lb.node)
        with pytest.raises(CallTimeoutError):
            client.call(Work("c"))
        lb.nemesis.resume(lb.node)
        assert client.call(Work("d")).digest == expected_digest(Work("d"))
        lb.nemesis.kill(lb.node)
        with pytest.raises(ActorUnavailableError):
            client.call(Work("e"))
        lb.nemesis.restart(lb.node)
        assert client.call(Work("f")).digest == expected_digest(Work("f"))
        assert client.stats()["requests"] == 1  # a restarted balancer starts with fresh statistics


def test_a_balancer_cut_off_from_every_replica_fails_typed_then_recovers(replicas):
    with BalancerActor.launch(replicas, replicas.node_ids(), timeout_s=0.3) as lb:
        client = lb.client(timeout_s=30.0)
        # The replicas' shells see the balancer's calls as coming from the balancer's node id.
        replicas.nemesis.partition([[lb.node], ["*"]])
        with pytest.raises(RetriesExhaustedError):
            client.call(Work("x"))
        replicas.nemesis.heal()
        wait_for(lambda: _serves(client), what="the balancer to reach its replicas again")


def _serves(client) -> bool:
    try:
        return client.call(Work("y")).digest == expected_digest(Work("y"))
    except RetriesExhaustedError:
        return False
