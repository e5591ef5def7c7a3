"""The multi-leader core on the simulated network: topologies, loop prevention, causal delivery (DDIA 5.4)."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import ConfigError, ForeignContextError, InvalidArgumentError, UnknownRegionError
from ddia_ray.replication.multi_leader import TOPOLOGIES, MLEntry, routes
from ddia_ray.replication.versioned_records import V_PUT, VRead, VWrite
from ddia_ray.replication.versions import encode_context, parse_policies
from ddia_ray.clocks import VectorClock
from ddia_ray.runtime import CoreSpec, SimNetwork
from ddia_ray.runtime.faults import NetworkConfig

MEMBERS = ("r1", "r2", "r3")


def _policies(spec="siblings"):
    return tuple({"prefix": p.prefix, "mode": p.mode, "resolver": p.resolver, "on_read": p.on_read, "kind": p.kind}
                 for p in parse_policies(spec))


def _net(*, topology="all-to-all", causal=True, config=None, members=MEMBERS, spec="siblings", seed=1, **extra):
    net = SimNetwork(seed, config=config)
    for m in members:
        net.add(m, CoreSpec("ddia_ray.replication.multi_leader:build",
                            {"store": "s", "members": members, "resolution": _policies(spec),
                             "topology": topology, "causal": causal, **extra}))
    return net


def _call(net, node, payload, wait_s=0.5):
    call = net.request(node, payload)
    net.run_until(lambda: call.done, 5.0)
    net.run_for(wait_s)
    assert call.ok, call.error
    return call.result


def _values(net, node, key):
    return tuple(s.value for s in _call(net, node, VRead((key,)), 0.0).items[0].siblings)


def test_routes_follow_the_topologies_of_figure_5_8():
    assert routes("all-to-all", MEMBERS) == {"r1": {"r2": "own", "r3": "own"}, "r2": {"r1": "own", "r3": "own"},
                                             "r3": {"r1": "own", "r2": "own"}}
    assert routes("circular", MEMBERS) == {"r1": {"r2": "all"}, "r2": {"r3": "all"}, "r3": {"r1": "all"}}
    assert routes("star", MEMBERS, "r2") == {"r2": {"r1": "all", "r3": "all"}, "r1": {"r2": "own"},
                                             "r3": {"r2": "own"}}
    with pytest.raises(UnknownRegionError):
        routes("star", MEMBERS, "r9")
    with pytest.raises(ConfigError):
        routes("mesh", MEMBERS)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_topology_delivers_every_write_to_every_leader_exactly_once(topology):
    members = ("r1", "r2", "r3", "r4")
    net = _net(topology=topology, members=members)
    for i, m in enumerate(members):
        _call(net, m, VWrite(tuple((V_PUT, f"k{i}-{j}".encode(), b"v", b"") for j in range(5))), 0.0)
    net.run_for(2.0)
    for m in members:
        core = net.core(m)
        assert core.applied == {x: 5 for x in members}, (m, core.applied)
        # Loop prevention: an entry reaches a leader once per path at most, and is applied once.
        assert core.entries_applied == 15
        assert len(core.versions.data) == 20
    roots = {net.core(m).tree.root() for m in members}
    assert len(roots) == 1


def test_concurrent_writes_become_siblings_and_a_write_with_the_context_replaces_them():
    net = _net()
    _call(net, "r1", VWrite(((V_PUT, b"k", b"a", b""),)), 0.0)
    _call(net, "r2", VWrite(((V_PUT, b"k", b"b", b""),)), 1.0)
    read = _call(net, "r3", VRead((b"k",)), 0.0).items[0]
    assert sorted(s.value for s in read.siblings) == [b"a", b"b"]
    _call(net, "r3", VWrite(((V_PUT, b"k", b"ab", read.context),)), 1.0)
    assert all(_values(net, m, b"k") == (b"ab",) for m in MEMBERS)


def test_a_write_that_saw_another_is_never_a_conflict_with_it():
    net = _net()
    first = _call(net, "r1", VWrite(((V_PUT, b"k", b"a", b""),)), 1.0).items[0]
    _call(net, "r2", VWrite(((V_PUT, b"k", b"b", first.context),)), 1.0)
    assert all(_values(net, m, b"k") == (b"b",) for m in MEMBERS)


def test_a_context_from_another_store_is_refused_and_nothing_is_written():
    net = _net()
    foreign = encode_context("other-store", VectorClock({"r1": 1}))
    call = net.request("r1", VWrite(((V_PUT, b"k", b"a", b""), (V_PUT, b"j", b"b", foreign))))
    net.run_until(lambda: call.done, 2.0)
    assert not call.ok and call.error.kind == "ForeignContextError"
    assert not net.core("r1").versions.data
    with pytest.raises(ForeignContextError):
        raise call.error.exception()


def _figure_5_9(causal: bool):
    """r1 inserts a row; r3 sees it quickly and writes an update that depends on it; the r1 -> r2 link is slow,
    so the update reaches r2 before the insert (DDIA fig. 5-9, as a post and a comment on it)."""
    config = NetworkConfig().with_link("r1", "r2", delay_s=1.0)
    net = _net(causal=causal, config=config)
    _call(net, "r1", VWrite(((V_PUT, b"post", b"hello", b""),)), 0.2)
    assert _values(net, "r3", b"post") == (b"hello",)
    _call(net, "r3", VWrite(((V_PUT, b"comment", b"re: hello", b""),)), 0.3)
    seen_at_r2 = (_values(net, "r2", b"comment"), _values(net, "r2", b"post"))
    net.run_for(2.0)
    return net, seen_at_r2


def test_naive_multi_leader_applies_a_write_before_its_cause():
    net, (comment, post) = _figure_5_9(causal=False)
    assert comment == (b"re: hello",) and post == ()  # the comment is visible without its post
    assert net.core("r2").causality_violations == 1


def test_causal_delivery_holds_the_write_until_its_cause_arrives():
    net, (comment, post) = _figure_5_9(causal=True)
    assert comment == () and post == ()  # neither yet: the comment waits in pending
    assert all(net.core(m).causality_violations == 0 for m in MEMBERS)
    assert _values(net, "r2", b"comment") == (b"re: hello",) and _values(net, "r2", b"post") == (b"hello",)


def test_lost_and_duplicated_messages_only_delay_replication():
    config = NetworkConfig()
    for a in MEMBERS:
        for b in MEMBERS:
            if a != b:  # between leaders only: the clients' requests arrive
                config = config.with_link(a, b, drop=0.3, duplicate=0.3, reorder=0.3, jitter_s=0.02)
    net = _net(config=config, retry_ticks=5, seed=7)
    for i in range(30):
        _call(net, MEMBERS[i % 3], VWrite(((V_PUT, b"k%d" % i, b"v", b""),)), 0.0)
    net.run_for(10.0)
    assert [net.core(m).applied for m in MEMBERS] == [{"r1": 10, "r2": 10, "r3": 10}] * 3
    assert sum(net.core(m).duplicates for m in MEMBERS) > 0  # duplicates arrived, and were ignored
    assert len({net.core(m).tree.root() for m in MEMBERS}) == 1


def test_a_restarted_leader_recovers_its_writes_and_the_ones_it_applied():
    net = _net(snapshot_changes=7)
    for i in range(20):
        _call(net, MEMBERS[i % 3], VWrite(((V_PUT, b"k%d" % i, b"v%d" % i, b""),)), 0.0)
    net.run_for(1.0)
    before = net.core("r2").tree.root()
    net.crash("r2")
    net.restart("r2")
    assert net.core("r2").tree.root() == before
    assert net.core("r2").applied == net.core("r1").applied


def test_a_partitioned_leader_keeps_accepting_writes_and_catches_up_after_healing():
    net = _net()
    net.partition([["r1"], ["r2", "r3", "client"]])
    call = net.request("r2", VWrite(((V_PUT, b"k", b"during", b""),)))
    net.run_until(lambda: call.done, 1.0)
    assert call.ok
    net.run_for(1.0)
    assert b"k" not in net.core("r1").versions.data
    net.heal()
    net.run_for(2.0)
    assert _values(net, "r1", b"k") == (b"during",)


def test_entries_are_validated_on_arrival():
    with pytest.raises(InvalidArgumentError):
        MLEntry("r1", 0, b"k", b"")
    with pytest.raises(InvalidArgumentError):
        MLEntry("r1", 1, b"k", b"", deps=(("r2", "x"),))
    entry = MLEntry("r1", 1, b"k", b"s", (("r2", 3),), 5, 0)
    assert codec.decode(codec.encode(entry)) == entry


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_leaders_keep_their_versions_in_a_storage_engine_across_restarts(engine, tmp_path):
    net = _net(engine=engine, data_url=f"file://{tmp_path}", snapshot_changes=10)
    for i in range(40):
        _call(net, MEMBERS[i % 3], VWrite(((V_PUT, b"k%02d" % i, b"v%d" % i, b""),)), 0.0)
    net.run_for(1.0)
    before = {m: net.core(m).tree.root() for m in MEMBERS}
    for m in MEMBERS:
        assert len(net.core(m).versions.data) == 40 and net.core(m).durable_versions
        net.core(m).close()
        net.crash(m)
        net.restart(m)  # the tree comes back from one scan of the engine; the log holds entries only
    assert {m: net.core(m).tree.root() for m in MEMBERS} == before
    assert _values(net, "r2", b"k07") == (b"v7",)
    assert all(net.core(m).applied == {"r1": 14, "r2": 13, "r3": 13} for m in MEMBERS)


def test_regions_place_replicas_and_an_explicit_count_must_agree_with_them():
    from ddia_ray.errors import ConfigError
    from ddia_ray.replication.versioned_store import assign_regions

    assert assign_regions(None, None, "multi-leader") == {"r1": "dc1", "r2": "dc2", "r3": "dc3"}
    assert assign_regions(2, None, "leaderless") == {"r1": "dc1", "r2": "dc1"}
    assert assign_regions(None, ["eu", "us"], "multi-leader") == {"r1": "eu", "r2": "us"}
    assert assign_regions(3, {"eu": 2, "us": 1}, "multi-leader") == {"r1": "eu", "r2": "eu", "r3": "us"}
    # An explicit replicas=3 that the regions contradict is refused, like any other count (it used to
    # pass as if it had not been given, because 3 is the default).
    for replicas in (3, 4):
        with pytest.raises(ConfigError, match="disagrees"):
            assign_regions(replicas, ["eu", "us"], "multi-leader")
    with pytest.raises(ConfigError):
        assign_regions(0, None, "leaderless")
