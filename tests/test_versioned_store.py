"""Multi-leader and leaderless stores on real Ray actors, under real faults, ending in the checkers' verdicts."""

from __future__ import annotations

import threading

import pytest

from ddia_ray import codec
from ddia_ray.errors import (ConfigError, ForeignContextError, InvalidArgumentError, QuorumConfigError,
                             QuorumNotReachedError, SiblingsError, UnknownRegionError)
from ddia_ray.history.convergence import check_roots
from ddia_ray.history.lost_updates import CounterUpdate, RegisterWrite, check_lost_updates
from ddia_ray.replication import ReplicatedStore
from ddia_ray.replication.leaderless import ring_of

from raywait import wait_for

RESOLUTION = {"": "siblings", "lww/": "lww", "cnt/": "crdt:pncounter"}


def _region_writer(client, region: str, keys: list, rounds: int, history: list, lock: threading.Lock) -> None:
    """Each round: read a key and write a value naming this write (and what it read) with the read's context;
    then bump the counter. Every operation is recorded, acknowledged or not."""
    for i in range(rounds):
        key = keys[i % len(keys)]
        ident = f"{region}-{i}"
        try:
            seen = client.get(key)
            observed = tuple(sorted(x for v in seen.values for x in codec.decode(v)))
        except Exception:  # noqa: BLE001 - a failed read: write blind
            seen, observed = None, ()
        try:
            client.put(key, codec.encode((ident,)), context=seen.context if seen else None)
            acked = True
        except Exception:  # noqa: BLE001 - unknown outcome
            acked = False
        with lock:
            history.append(RegisterWrite(ident, key, acked, observed))
        try:
            client.update(b"cnt/total", "increment", 1)
            acked = True
        except Exception:  # noqa: BLE001
            acked = False
        with lock:
            history.append(CounterUpdate(f"{ident}-inc", b"cnt/total", acked, 1))


def _final(store, keys) -> dict:
    client = store.client(region=store.regions["r1"]) if store.protocol == "multi-leader" else store.client()
    try:
        final = {}
        for key in keys:
            v = client.get(key)
            final[key] = {x for value in v.values for x in codec.decode(value)}
        final[b"cnt/total"] = client.get(b"cnt/total").value
        return final
    finally:
        client.close()


def test_three_regions_behind_a_partition_converge_without_losing_a_write_and_lww_counts_its_losses(ray_session):
    regions = ("us", "eu", "ap")
    with ReplicatedStore.launch(protocol="multi-leader", regions=regions, region_delay_s=0.02,
                                resolution=RESOLUTION, clock_skew_s={"eu": -0.3}) as store:
        assert store.regions == {"r1": "us", "r2": "eu", "r3": "ap"}
        clients = {r: store.client(region=r) for r in regions}
        with pytest.raises(UnknownRegionError):
            store.client(region="mars")
        store.partition_regions([["us"], ["eu"], ["ap"]])
        history: list = []
        lock = threading.Lock()
        for prefix in (b"sib/", b"lww/"):
            keys = [prefix + b"k%d" % i for i in range(3)]
            threads = [threading.Thread(target=_region_writer, args=(clients[r], r + prefix.decode(), keys, 6,
                                                                     history, lock)) for r in regions]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not store.converged()
        store.heal()
        seconds = store.wait_converged(timeout_s=60)
        assert seconds < 60 and check_roots({n: bytes.fromhex(r) for n, r in store.roots().items()}).converged
        keys = sorted({op.key for op in history if isinstance(op, RegisterWrite)})
        final = _final(store, keys)
        sib = check_lost_updates([op for op in history if not op.key.startswith(b"lww/")],
                                 {k: v for k, v in final.items() if not k.startswith(b"lww/")})
        assert sib.ok, sib.summary()  # siblings and the CRDT counter: nothing acknowledged is lost
        assert final[b"cnt/total"] == sum(op.amount for op in history if isinstance(op, CounterUpdate) and op.acked)
        lww = check_lost_updates([op for op in history if op.key.startswith(b"lww/")],
                                 {k: v for k, v in final.items() if k.startswith(b"lww/")})
        stats = store.stats()
        assert lww.lost > 0  # concurrent writes in three regions: LWW keeps one per key...
        assert stats["lww_discarded"] >= lww.lost  # ...and counts every acknowledged write it dropped
        assert stats["siblings_max"] >= 2 and stats["causality_violations"] == 0
        # the application resolves siblings by writing with the read's context
        v = clients["us"].get(b"sib/k0")
        assert v.conflict
        with pytest.raises(SiblingsError):
            _ = v.value
        clients["us"].put(b"sib/k0", b"merged", context=v.context)
        store.wait_converged(timeout_s=30)
        assert clients["ap"].get(b"sib/k0").values == (b"merged",)
        with pytest.raises(ForeignContextError):
            clients["us"].put(b"sib/k0", b"x", context=b"not a context")
        with pytest.raises(ConfigError):
            store.failover()
        other = ReplicatedStore.connect(store.name)
        assert other.protocol == "multi-leader" and other.regions == store.regions
        for c in clients.values():
            c.close()


def test_leaderless_quorums_survive_a_killed_replica_and_hand_its_writes_back(ray_session, tmp_path):
    with ReplicatedStore.launch(protocol="leaderless", replicas=4, n=3, r=2, w=2, handoff_s=0.1,
                                anti_entropy_s=0.5, resolution=RESOLUTION, engine="lsm",
                                root=f"file://{tmp_path}") as store:
        with pytest.raises(QuorumConfigError):
            store.client(n=3, r=4)
        client = store.client(timeout_s=2.0)
        client.put_many([(b"k%d" % i, b"before") for i in range(50)])
        store.kill("r2")
        # writes go on: a fallback stands in for r2 (a sloppy quorum) where a request finds it gone
        written = 0
        for i in range(50):
            try:
                client.put(b"k%d" % i, b"during", context=client.get(b"k%d" % i).context)
                written += 1
            except QuorumNotReachedError:
                pass  # the first requests to find r2 gone wait out their deadline
        assert written >= 45
        # a write's copy for the silent r2 goes to the next replica on the ring, as a hint
        wait_for(lambda: store.stats()["hinted"] > 0, what="hints for the killed replica")
        store.restart("r2")
        store.wait_converged(timeout_s=60)
        stats = store.stats()
        assert stats["handoffs"] > 0 or stats["anti_entropy_keys"] > 0
        strict = store.client(n=3, r=3, w=1)
        read = strict.get(b"k0")
        assert read.quorum.n == 3 and read.quorum.acks == 3 and read.quorum.strict
        assert read.values == (b"during",)  # the restarted replica kept its LSM files and caught up
        client.close()
        strict.close()


def test_replicas_compacting_their_logs_in_the_background_lose_nothing_to_a_kill(ray_session, tmp_path):
    """A replica's log is compacted once it holds as many records as the replica has keys: with
    30 keys written over and over, every replica rewrites its log several times, in the background
    (a derived Rewrite), while the writes go on. A replica killed and restarted recovers from its
    own log alone (no anti-entropy, no hints): every write it acknowledged (W=3) is there, as the
    reads it alone serves once the other two are killed show."""
    keys = 30
    latest = {}
    with ReplicatedStore.launch(protocol="leaderless", replicas=3, n=3, r=1, w=3, snapshot_changes=5, resolution="lww",
                                anti_entropy_s=0, root=f"file://{tmp_path}") as store:
        client = store.client(timeout_s=10.0)
        for call in range(120):
            batch = [(b"k%02d" % ((call * 10 + j) % keys), b"v%d" % call) for j in range(10)]
            client.put_many(batch)
            latest.update(batch)
        logs = {m: st["log"] for m, st in store.group.status().items()}
        assert all(log["rewrites_in_background"] >= 2 and log["rewrite_failures"] == 0 for log in logs.values()), logs
        store.kill("r2")
        store.restart("r2")
        store.kill("r1")
        store.kill("r3")
        alone = store.client(n=3, r=1, w=1, timeout_s=10.0)
        got = alone.get_many(list(latest))
        assert {k: v.values for k, v in zip(latest, got)} == {k: (v,) for k, v in latest.items()}
        client.close()
        alone.close()


def test_a_write_that_cannot_reach_its_quorum_fails_loudly(ray_session):
    with ReplicatedStore.launch(protocol="leaderless", replicas=3, sloppy=False, anti_entropy_s=0) as store:
        client = store.client(w=3, timeout_s=3.0)
        client.put(b"k", b"v")
        ring = ring_of(store.members)
        key = next(b"k%d" % i for i in range(100) if ring.preference_list(b"k%d" % i, 3)[0] != "r3")
        store.pause("r3")  # a replica of the key, not its coordinator
        try:
            with pytest.raises(QuorumNotReachedError) as caught:
                client.put(key, b"v")
            assert caught.value.needed == 3 and caught.value.got < 3
        finally:
            store.resume("r3")
        # Bad items are refused in the caller's thread, before they can join (and fail) a batch.
        for bad in (lambda: client.put_nowait(b"k", "text"), lambda: client.put_nowait(b"k", b"v", context="ctx"),
                    lambda: client.delete_nowait(b"k", context=7), lambda: client.put_nowait(3, b"v")):
            with pytest.raises(InvalidArgumentError):
                bad()
        assert client.put(b"k", b"after") is not None  # the client still works
        client.close()
