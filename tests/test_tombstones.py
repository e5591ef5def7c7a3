"""Tombstone collection after a grace period (replication/tombstones.py): the rule, the sweep, and both
protocols on the simulated network, through restarts and a replica that missed the delete."""

from __future__ import annotations

import pytest

from ddia_ray.clocks.dotted import DVVSet
from ddia_ray.errors import ConfigError
from ddia_ray.replication.resolvers import Sibling
from ddia_ray.replication.tombstones import TombstoneSweep, expired_tombstone
from ddia_ray.replication.versioned_records import V_DELETE, V_PUT, VRead, VWrite
from ddia_ray.replication.versions import parse_policies
from ddia_ray.runtime import CoreSpec, SimNetwork

from test_leaderless import _call

S = 1_000_000_000


def _state(*siblings):
    state = DVVSet()
    for i, (value, ts) in enumerate(siblings):
        state = state.update(DVVSet.new(Sibling(value, ts, f"n{i}")), f"n{i}")
    return state


def test_only_a_state_of_old_tombstones_has_expired():
    assert expired_tombstone(_state((None, 5 * S)), 6 * S)
    assert not expired_tombstone(_state((None, 5 * S)), 5 * S)  # not before the horizon yet
    assert not expired_tombstone(_state((None, 1 * S), (b"live", 1 * S)), 6 * S)  # a live sibling stays
    assert not expired_tombstone(_state((None, 1 * S), (None, 7 * S)), 6 * S)  # the newest decides
    assert not expired_tombstone(_state((None, 0)), 6 * S)  # never stamped: no age to judge
    assert not expired_tombstone(b"not a state", 6 * S)


def test_the_sweep_walks_a_dict_in_rounds_and_rests_between_passes():
    sweep = TombstoneSweep(grace_s=10, keys_per_round=2, pass_s=5)
    data = {b"c": 1, b"a": 1, b"b": 1}
    assert sweep.next_keys(data, 0) == [b"a", b"b"]
    data[b"0"] = 1  # a key added during the pass waits for the next one
    assert sweep.next_keys(data, 1) == [b"c"] and sweep.passes == 1
    assert sweep.next_keys(data, 2 * S) == []  # resting: the pass began at 0, pass_s is 5 s
    assert sweep.next_keys(data, 5 * S) == [b"0", b"a"]
    assert sweep.horizon(20 * S) == 10 * S


class _Engine:
    """A storage engine's mapping as the sweep sees it: keys in order, after a cursor."""

    def __init__(self, keys):
        self.keys = sorted(keys)

    def keys_after(self, key, limit):
        return [k for k in self.keys if key is None or k > key][:limit]


def test_the_sweep_walks_an_engine_by_cursor():
    sweep = TombstoneSweep(grace_s=10, keys_per_round=2, pass_s=0)
    engine = _Engine([b"a", b"b", b"c", b"d"])
    rounds = [sweep.next_keys(engine, t) for t in range(4)]
    assert rounds == [[b"a", b"b"], [b"c", b"d"], [], [b"a", b"b"]] and sweep.passes == 1


@pytest.mark.parametrize("bad", [{"grace_s": "10"}, {"keys_per_round": 0}, {"pass_s": float("nan")}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        TombstoneSweep(**bad)


def test_a_zero_grace_turns_collection_off():
    sweep = TombstoneSweep(grace_s=0)
    assert not sweep.enabled and sweep.next_keys({b"a": 1}, 10 * S) == [] and sweep.horizon(10 * S) == 0


# --- both protocols on the simulated network ---------------------------------------------------------

def _policies():
    return tuple({"prefix": p.prefix, "mode": p.mode, "resolver": p.resolver, "on_read": p.on_read, "kind": p.kind}
                 for p in parse_policies("siblings"))


def _net(protocol, members=("r1", "r2", "r3"), **options):
    net = SimNetwork(7)
    base = {"store": "s", "members": members, "resolution": _policies(), "tombstone_grace_s": 1.0,
            "tombstone_pass_s": 0.1, **options}
    if protocol == "leaderless":
        factory = "ddia_ray.replication.leaderless:build"
        base.update(n=3, r=2, w=2, anti_entropy_ticks=20)
    else:
        factory = "ddia_ray.replication.multi_leader:build"
    for m in members:
        net.add(m, CoreSpec(factory, base))
    return net


def _do(net, node, payload, settle_s=0.2):
    call = _call(net, node, payload, settle_s)
    assert call.ok, call.error
    return call.result


def _delete(net, node, keys, **quorum):
    """Delete ``keys`` with the context of a read (a blind delete would only be a sibling of the value)."""
    read = _do(net, node, VRead(tuple(keys), **quorum), settle_s=0.0)
    _do(net, node, VWrite(tuple((V_DELETE, item.key, b"", item.context) for item in read.items), **quorum),
        settle_s=0.5)


def _keys(net, node):
    return sorted(k for k, _ in net.core(node).versions.data.items())


@pytest.mark.parametrize("protocol", ["leaderless", "multi-leader"])
@pytest.mark.parametrize("engine", ["map", "lsm"])
def test_deleted_keys_are_collected_everywhere_after_the_grace_and_stay_gone_after_restarts(
        protocol, engine, tmp_path):
    members = ("r1", "r2", "r3")
    net = _net(protocol, members, **({"engine": engine, "data_url": f"file://{tmp_path}"} if engine != "map" else {}))
    _do(net, "r1", VWrite(tuple((V_PUT, b"k%d" % i, b"v", b"") for i in range(6))))
    _delete(net, "r2", [b"k0", b"k1", b"k2"])
    assert all(_keys(net, m) == [b"k%d" % i for i in range(6)] for m in members)  # tombstones, kept for now
    net.run_for(2.0)  # past the 1 s grace, and a sweep pass at each replica
    assert all(_keys(net, m) == [b"k3", b"k4", b"k5"] for m in members)
    assert len({net.core(m).tree.root() for m in members}) == 1
    assert sum(net.core(m).versions.tombstones_collected for m in members) == 9
    for m in members:  # the removals are in each replica's log or engine: a restart does not bring them back
        net.core(m).close()
        net.crash(m)
        net.restart(m)
    assert all(_keys(net, m) == [b"k3", b"k4", b"k5"] for m in members)
    result = _do(net, "r3", VRead((b"k0", b"k4")))
    assert [[s.value for s in item.siblings] for item in result.items] == [[], [b"v"]]
    for m in members:
        net.core(m).close()


def test_a_replica_that_missed_the_delete_gets_the_tombstone_before_anyone_collects_it():
    # r3 is cut off while the key is deleted, and back well within the grace (the rule's assumption:
    # repairs take far less than the grace): anti-entropy brings it the tombstone, so once collected
    # the value does not come back from r3.
    net = _net("leaderless", tombstone_grace_s=3.0)
    _do(net, "r1", VWrite(((V_PUT, b"k", b"old", b""),)))
    net.partition([["r3"], ["r1", "r2", "client"]])
    _delete(net, "r1", [b"k"], n=3)
    assert [s.value for s in net.core("r3").versions.data.get(b"k").values()] == [b"old"]
    net.heal()
    net.run_for(1.5)  # anti-entropy repairs r3 within the grace
    assert all([s.value for s in net.core(m).versions.data.get(b"k").values()] == [None] for m in ("r1", "r2", "r3"))
    net.run_for(3.0)  # then the grace passes and the sweeps collect it
    assert all(net.core(m).versions.data.get(b"k") is None for m in ("r1", "r2", "r3"))
    result = _do(net, "r2", VRead((b"k",), r=3))
    assert result.items[0].siblings == ()


def test_an_expired_tombstone_is_not_taken_back_from_a_replica_that_has_not_collected_it_yet():
    net = _net("multi-leader", tombstone_pass_s=3600.0)  # one pass at start, then a long rest
    _do(net, "r1", VWrite(((V_PUT, b"k", b"v", b""),)))
    _delete(net, "r1", [b"k"])
    net.run_for(1.5)  # past the grace; no replica has swept since
    r1, r2 = net.core("r1"), net.core("r2")
    state = r2.versions.data.get(b"k")
    assert state is not None and r1.versions.collect(b"k")  # r1 collects it (as a sweep would)
    assert not r1.merge_encoded(b"k", r1.encoded(b"k", state))  # r2 offers it back: refused
    assert r1.versions.data.get(b"k") is None and r1.versions.tombstones_ignored == 1


def test_a_store_refuses_a_bad_grace_before_starting_anything():
    from ddia_ray.replication import ReplicatedStore

    with pytest.raises(ConfigError, match="tombstone_grace_s"):
        ReplicatedStore.launch(protocol="leaderless", tombstone_grace_s="ten days")


def test_a_key_removal_record_holds_a_bytes_key():
    from ddia_ray import codec
    from ddia_ray.errors import InvalidArgumentError
    from ddia_ray.replication.versioned_replica import KeyRemoved

    assert codec.decode(codec.encode(KeyRemoved(b"k"))) == KeyRemoved(b"k")
    with pytest.raises(InvalidArgumentError, match="bytes key"):
        KeyRemoved("k")  # the same check runs on every decode of a persisted removal
