"""The leaderless core on the simulated network: quorums, sloppy quorums and hinted handoff, read repair,
anti-entropy (DDIA 5.5; Dynamo)."""

from __future__ import annotations

import pytest

from ddia_ray import crdt
from ddia_ray.errors import QuorumConfigError
from ddia_ray.replication.leaderless import ring_of
from ddia_ray.replication.versioned_records import V_PUT, V_UPDATE, VRead, VWrite, check_quorum
from ddia_ray.replication.versions import parse_policies
from ddia_ray.runtime import CoreSpec, SimNetwork

FACTORY = "ddia_ray.replication.leaderless:build"


def _policies(spec):
    return tuple({"prefix": p.prefix, "mode": p.mode, "resolver": p.resolver, "on_read": p.on_read, "kind": p.kind}
                 for p in parse_policies(spec))


def _net(members=("r1", "r2", "r3"), *, spec="siblings", seed=3, **options):
    net = SimNetwork(seed)
    base = {"store": "s", "members": members, "resolution": _policies(spec), "n": 3, "r": 2, "w": 2, **options}
    for m in members:
        net.add(m, CoreSpec(FACTORY, base))
    return net


def _call(net, node, payload, settle_s=0.3):
    call = net.request(node, payload)
    net.run_until(lambda: call.done, 10.0)
    net.run_for(settle_s)
    assert call.done, "no answer"
    return call


def _ok(net, node, payload, settle_s=0.3):
    call = _call(net, node, payload, settle_s)
    assert call.ok, call.error
    return call.result.items


def _held(net, node, key):
    state = net.core(node).versions.data.get(key)
    return tuple(sorted(s.value for s in state.values())) if state is not None else ()


def test_quorum_settings_are_checked():
    check_quorum(3, 2, 2, 5)
    for n, r, w in ((4, 1, 1), (3, 4, 1), (3, 1, 0), (0, 1, 1)):
        with pytest.raises(QuorumConfigError):
            check_quorum(n, r, w, 3)
    net = _net()
    call = _call(net, "r1", VRead((b"k",), n=3, r=4))
    assert not call.ok and call.error.kind == "QuorumConfigError"


def test_a_read_reports_its_quorum_and_whether_w_plus_r_exceeds_n():
    net = _net()
    _ok(net, "r1", VWrite(((V_PUT, b"k", b"v", b""),)))
    item = _ok(net, "r2", VRead((b"k",), r=2))[0]
    assert (item.quorum.n, item.quorum.r, item.quorum.w) == (3, 2, 2) and item.quorum.strict
    assert item.quorum.acks >= 2 and len(item.quorum.nodes) == item.quorum.acks
    item = _ok(net, "r2", VRead((b"k",), r=1))[0]
    assert (item.quorum.n, item.quorum.r, item.quorum.w) == (3, 1, 2) and not item.quorum.strict  # 1 + 2 = n
    item = _ok(net, "r2", VRead((b"k",), r=1, n=2))[0]
    assert (item.quorum.n, item.quorum.r, item.quorum.w) == (2, 1, 2) and item.quorum.strict
    w1 = _net(w=1, r=1)
    _ok(w1, "r1", VWrite(((V_PUT, b"k", b"v", b""),)))
    assert not _ok(w1, "r1", VRead((b"k",)))[0].quorum.strict


def test_a_write_lands_on_the_keys_preference_list():
    members = ("r1", "r2", "r3", "r4", "r5")
    net = _net(members)
    ring = ring_of(members)
    for i in range(20):
        key = b"k%d" % i
        _ok(net, "r1", VWrite(((V_PUT, key, b"v", b""),)), 0.0)
    net.run_for(1.0)
    for i in range(20):
        key = b"k%d" % i
        holders = {m for m in members if key in net.core(m).versions.data}
        assert holders == set(ring.preference_list(key, 3))
    assert net.core("r1").status()["forwarded"] > 0  # keys r1 does not hold went to a coordinator that does


def test_a_write_that_cannot_reach_w_replicas_fails_with_quorum_not_reached():
    net = _net(sloppy=False)
    net.crash("r2")
    net.crash("r3")
    call = _call(net, "r1", VWrite(((V_PUT, b"k", b"v", b""),), w=2, timeout_s=0.5))
    assert call.ok  # the request was answered; the item carries the error
    err = call.result.items[0].error
    assert err.kind == "QuorumNotReachedError" and err.attrs["needed"] == 2 and err.attrs["got"] == 1


def test_a_sloppy_quorum_stores_a_hint_and_hands_it_off_when_the_home_returns():
    members = ("r1", "r2", "r3", "r4")
    net = _net(members, handoff_ticks=5)
    ring = ring_of(members)
    key = next(b"k%d" % i for i in range(100) if ring.preference_list(b"k%d" % i, 3)[0] == "r1")
    home = ring.preference_list(key, 3)[2]
    net.crash(home)
    # the first write finds the home silent (its deadline passes), the coordinator suspects it...
    _call(net, "r1", VWrite(((V_PUT, key, b"first", b""),), w=3, timeout_s=0.3))
    # ...and the next one goes to the fallback, which holds it as a hint for the home
    items = _ok(net, "r1", VWrite(((V_PUT, key, b"second", b""),), w=3))
    assert items[0].error is None and items[0].quorum.fallbacks
    fallback = items[0].quorum.fallbacks[0]
    assert net.core(fallback).hints[home]
    net.restart(home)
    net.run_for(2.0)
    assert b"second" in _held(net, home, key)
    assert not net.core(fallback).hints and net.core(fallback).status()["handoffs"] >= 1


def test_read_repair_brings_a_stale_replica_up_to_date():
    net = _net(w=1)
    net.partition([["r3"], ["r1", "r2", "client"]])
    _ok(net, "r1", VWrite(((V_PUT, b"k", b"new", b""),), w=2))
    assert _held(net, "r3", b"k") == ()
    net.heal()
    items = _ok(net, "r1", VRead((b"k",), r=3), settle_s=0.5)
    assert [s.value for s in items[0].siblings] == [b"new"]
    assert _held(net, "r3", b"k") == (b"new",)
    assert net.core("r1").status()["read_repairs"] >= 1


def test_anti_entropy_repairs_keys_nobody_reads_and_sends_only_the_difference():
    net = _net(anti_entropy_ticks=20)
    net.partition([["r3"], ["r1", "r2", "client"]])
    for i in range(200):
        _ok(net, "r1", VWrite(((V_PUT, b"k%03d" % i, b"x" * 50, b""),)), 0.0)
    net.run_for(0.5)
    assert len(net.core("r3").versions.data) == 0
    net.heal()
    assert net.run_until(lambda: len({net.core(m).tree.root() for m in ("r1", "r2", "r3")}) == 1, 20.0)
    stats = {m: net.core(m).status() for m in ("r1", "r2", "r3")}
    assert sum(s["anti_entropy_keys"] for s in stats.values()) >= 200
    assert all(s["read_repairs"] == 0 for s in stats.values())  # no read did it


def test_crdt_updates_merge_across_coordinators_without_loss():
    net = _net(spec={"": "siblings", "c/": "crdt:pncounter"})
    for i in range(30):
        _ok(net, ("r1", "r2", "r3")[i % 3], VWrite(((V_UPDATE, b"c/n", ("increment", (2,)), b""),)), 0.0)
    net.run_for(1.0)
    item = _ok(net, "r2", VRead((b"c/n",), r=3))[0]
    assert crdt.decode(item.crdt).value() == 60


def test_a_restarted_replica_keeps_its_versions_and_hints():
    net = _net(snapshot_changes=5)
    for i in range(12):
        _ok(net, "r1", VWrite(((V_PUT, b"k%d" % i, b"v", b""),)), 0.0)
    net.run_for(0.5)
    before = net.core("r2").tree.root()
    net.crash("r2")
    net.restart("r2")
    assert net.core("r2").tree.root() == before


def test_a_compacted_log_holds_many_keys_per_record_and_restores_every_one(monkeypatch):
    from ddia_ray.replication import versioned_replica
    from ddia_ray.replication.versioned_replica import KeyChange, KeyChanges, VersionsSnapshot

    monkeypatch.setattr(versioned_replica, "COMPACTED_KEYS_PER_RECORD", 4)
    net = _net(snapshot_changes=10)
    for i in range(11):
        _ok(net, "r1", VWrite(((V_PUT, b"k%d" % i, b"v%d" % i, b""),)), 0.0)
    net.run_for(0.5)
    log = net._node("r2").log
    # The tenth change compacted the log: its header, then the ten keys in records of 4, 4 and 2,
    # then the eleventh change as it came.
    assert isinstance(log[0], VersionsSnapshot)
    compacted = log[1:4]
    assert [type(r) for r in compacted] == [KeyChanges] * 3 and [len(r.keys) for r in compacted] == [4, 4, 2]
    assert sorted(k for r in compacted for k in r.keys) == sorted(b"k%d" % i for i in range(10))
    assert isinstance(log[-1], KeyChange) and log[-1].key == b"k10"
    before = net.core("r2").tree.root()
    net.crash("r2")
    net.restart("r2")
    assert net.core("r2").tree.root() == before
    assert [_held(net, "r2", b"k%d" % i) for i in range(11)] == [(b"v%d" % i,) for i in range(11)]


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_replicas_keep_their_versions_and_hints_in_a_storage_engine(engine, tmp_path):
    members = ("r1", "r2", "r3", "r4")
    net = _net(members, engine=engine, data_url=f"file://{tmp_path}", snapshot_changes=10)
    for i in range(30):
        _ok(net, "r1", VWrite(((V_PUT, b"k%d" % i, b"v", b""),)), 0.0)
    net.run_for(0.5)
    before = {m: net.core(m).tree.root() for m in members}
    for m in members:
        net.core(m).close()
        net.crash(m)
        net.restart(m)
    assert {m: net.core(m).tree.root() for m in members} == before
    assert [s.value for s in _ok(net, "r3", VRead((b"k5",)))[0].siblings] == [b"v"]


def _count_encodings(monkeypatch) -> list:
    """The states encoded from now on (by the mappings and the replicas), as a list that grows."""
    from ddia_ray.replication import version_store, versioned_replica

    calls: list = []
    real = version_store.encode_state

    def counting(state):
        calls.append(state)
        return real(state)

    monkeypatch.setattr(version_store, "encode_state", counting)
    monkeypatch.setattr(versioned_replica, "encode_state", counting)
    return calls


def test_an_engine_backed_replica_encodes_each_changed_state_once(tmp_path, monkeypatch):
    # The engine stores the encoded state and the Merkle tree hashes the same bytes: one encoding
    # per change, not one for each. (Writes of one key each: a batch of new keys is built in columns,
    # test_leaderless_new_keys.py.)
    calls = _count_encodings(monkeypatch)
    net = _net(("r1",), engine="lsm", data_url=f"file://{tmp_path}", n=1, r=1, w=1)
    core = net.core("r1")
    before = len(calls)
    _ok(net, "r1", VWrite(((V_PUT, b"k", b"v1", b""),)), 0.0)
    _ok(net, "r1", VWrite(((V_PUT, b"j", b"v2", b""),)), 0.0)
    assert len(calls) - before == 2  # two keys changed, each encoded once
    assert core.tree.root() != 0 and core.versions.data.engine.get(b"k") is not None
    core.close()


def test_a_replica_merging_a_new_key_keeps_the_bytes_it_came_in(monkeypatch):
    # The coordinator encodes a write once; a replica new to the key stores, hashes and logs the bytes
    # it received (encoding the decoded state again would give the same bytes, at a cost per write).
    # (Writes of one key each: a batch of new keys crosses as columns, test_leaderless_new_keys.py.)
    calls = _count_encodings(monkeypatch)
    net = _net(w=3)
    before = len(calls)
    for i in range(5):
        _ok(net, "r1", VWrite(((V_PUT, b"k%d" % i, b"v", b""),)), 0.2)
    assert len(calls) - before == 5  # at the coordinator, once a key
    roots = {m: net.core(m).tree.root() for m in ("r1", "r2", "r3")}
    assert len(set(roots.values())) == 1
    for m in ("r2", "r3"):
        data = net.core(m).versions.data
        assert all(data.raw(b"k%d" % i) == net.core("r1").versions.data.raw(b"k%d" % i) for i in range(5))


def test_a_step_of_changes_is_logged_as_one_record_and_replayed_in_order():
    from ddia_ray.replication.versioned_replica import KeyChange, KeyChanges

    net = _net(w=3)
    _ok(net, "r1", VWrite(tuple((V_PUT, b"k%d" % i, b"v%d" % i, b"") for i in range(4))), 0.2)
    _ok(net, "r2", VWrite(((V_PUT, b"k1", b"again", b""),)), 0.2)
    logged = [r for r in net.nodes["r3"].log if isinstance(r, (KeyChange, KeyChanges))]
    assert isinstance(logged[0], KeyChanges) and logged[0].keys == tuple(b"k%d" % i for i in range(4))
    assert isinstance(logged[-1], KeyChange) and logged[-1].key == b"k1"
    before = net.core("r3").tree.root()
    net.crash("r3")
    net.restart("r3")
    assert net.core("r3").tree.root() == before
    assert _held(net, "r3", b"k1") == (b"again", b"v1")  # siblings: the second write saw nothing


def test_anti_entropy_yields_to_a_stream_of_writes_but_not_for_long():
    from ddia_ray.replication.leaderless_sync import BUSY_CHANGES, DEFER_ROUNDS_MAX

    net = _net(anti_entropy_ticks=10, w=1)
    net.partition([["r3"], ["r1", "r2", "client"]])
    _ok(net, "r1", VWrite(((V_PUT, b"missed", b"x", b""),)), 0.0)  # never reaches r3 by replication
    net.heal()
    core = net.core("r3")
    turns = 0
    # A stream of writes, each turn's worth past BUSY_CHANGES: r3 skips turns, but a session still runs
    # once DEFER_ROUNDS_MAX turns were skipped in a row, and finds the key replication never brought.
    while not _held(net, "r3", b"missed"):
        batch = tuple((V_PUT, b"s%d-%d" % (turns, i), b"v", b"") for i in range(BUSY_CHANGES))
        _ok(net, "r1", VWrite(batch, w=1), 0.0)
        net.run_for(10 * core.tick_s)
        turns += 1
        assert turns <= 3 * (DEFER_ROUNDS_MAX + 1), "anti-entropy never ran under the writes"
    assert core.status()["anti_entropy_deferred"] >= DEFER_ROUNDS_MAX // 2


def test_states_logged_or_stored_in_format_1_are_hashed_and_kept_as_format_2(tmp_path):
    # Replicas written before format 2 restart with their old bytes: the log's and the engine's are
    # encoded again, so their trees agree with replicas that only ever wrote format 2.
    from ddia_ray import codec
    from ddia_ray.replication.state_format import decode_state
    from ddia_ray.replication.versioned_replica import KeyChange

    net = _net(w=3)
    _ok(net, "r1", VWrite(tuple((V_PUT, b"k%d" % i, b"v%d" % i, b"") for i in range(6))), 0.2)
    root = net.core("r1").tree.root()
    fresh = dict(net.core("r1").versions.data.raw_items())
    old_log = [KeyChange(k, codec.encode(decode_state(v))) for k, v in sorted(fresh.items())]
    assert all(rec.state[:1] != b"\x93" for rec in old_log)
    node = net.nodes["r2"]
    net.crash("r2")
    node.log[:] = old_log
    net.restart("r2")
    assert net.core("r2").tree.root() == root
    assert dict(net.core("r2").versions.data.raw_items()) == fresh

    engine_net = _net(("r1",), engine="lsm", data_url=f"file://{tmp_path}", n=1, r=1, w=1)
    _ok(engine_net, "r1", VWrite(tuple((V_PUT, b"k%d" % i, b"v", b"") for i in range(4))), 0.0)
    core = engine_net.core("r1")
    for key, raw in list(core.versions.data.raw_items()):
        core.versions.data.engine.put(key, codec.encode(decode_state(raw)))  # as format 1 left them
    before = core.tree.root()
    core.close()
    engine_net.crash("r1")
    engine_net.restart("r1")
    core = engine_net.core("r1")
    assert core.tree.root() == before
    assert all(raw[:1] == b"\x93" for _, raw in core.versions.data.raw_items())


def test_an_unchanged_replica_skips_its_sessions_and_a_changed_peer_still_finds_the_difference(monkeypatch):
    from ddia_ray.replication.merkle import MerkleTree

    net = _net(anti_entropy_ticks=5, w=3)
    _ok(net, "r1", VWrite(tuple((V_PUT, b"k%02d" % i, b"v", b"") for i in range(20))), 0.0)
    net.run_for(1.0)  # every pair agrees once
    copies = []
    real = MerkleTree.snapshot
    monkeypatch.setattr(MerkleTree, "snapshot", lambda self: (copies.append(1), real(self))[1])
    rounds = {m: net.core(m).status()["anti_entropy_rounds"] for m in ("r1", "r2", "r3")}
    net.run_for(2.0)  # 40 turns each, nothing written
    assert copies == [] and all(net.core(m).status()["anti_entropy_rounds"] == rounds[m] for m in rounds)
    assert all(net.core(m).status()["anti_entropy_unchanged"] >= 30 for m in rounds)
    # r3 misses writes: its tree stays the one it agreed on, so it keeps skipping; r1 and r2 changed,
    # and their turns with r3 bring it the keys.
    net.partition([["r3"], ["r1", "r2", "client"]])
    for i in range(10):
        _ok(net, "r1", VWrite(((V_PUT, b"late%d" % i, b"x", b""),), w=2), 0.0)
    net.heal()
    assert net.run_until(lambda: all(_held(net, "r3", b"late%d" % i) == (b"x",) for i in range(10)), 10.0)
    assert net.run_until(lambda: len({net.core(m).tree.root() for m in ("r1", "r2", "r3")}) == 1, 10.0)
