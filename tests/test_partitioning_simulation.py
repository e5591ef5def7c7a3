"""Splits, merges and moves under faults: the pure mover driven by hand (its protocol, retries and
abandon paths), then many seeded simulations of a partitioned store (ddia_ray/partitioning/simulation.py)
on Raft groups and on leader-follower groups (sync, semi-sync and async) that check acknowledged writes
survive, no key has two writable owners, and scans see each key once; and broken variants that the
checks must catch. A failing seed prints its replay command."""

from __future__ import annotations

import collections
import os

import pytest

from ddia_ray._validate import InvariantViolation
from ddia_ray.errors import (CallTimeoutError, ConfigError, InvalidArgumentError, PartitionError,
                             WrongPartitionError)
from ddia_ray.partitioning import mover as mover_module
from ddia_ray.partitioning import sim_groups
from ddia_ray.partitioning import simulation as sim_module
from ddia_ray.partitioning.mover import CasMap, GroupRequest, Mover, ReadMap
from ddia_ray.partitioning.partition_map import initial_map, ownership_of
from ddia_ray.partitioning.simulation import PartitionViolation, simulate
from ddia_ray.replication.ownership import ReplOwnership
from ddia_ray.replication.records import PUT, ReplScan, ReplWrite, ScanResult
from ddia_ray.runtime.simnet import run_seeds

# --- the mover, driven by hand against an in-memory store ---------------------------------------------


class World:
    """Two groups as dicts, their records, and the map with compare-and-set; answers at once.
    ``fail(out)`` returns an error to fail a request with (None: answer it); ``log`` is a transcript."""

    def __init__(self, pmap, fail=lambda out: None):
        self.map, self.fail, self.log = pmap, fail, []
        self.data = {g: {} for g in pmap.groups()}
        self.records = {g: ownership_of(pmap, g, "s") for g in pmap.groups()}

    def answer(self, out):
        if isinstance(out, ReadMap):
            return self.map
        if isinstance(out, CasMap):
            if self.map != out.old:
                return False
            self.map = out.new
            return True
        d, r = self.data[out.group], out.request
        if isinstance(r, ReplScan):
            ks = sorted(k for k in d if k >= r.start and (r.end is None or k < r.end))[:r.limit]
            return ScanResult(tuple(ks), tuple(d[k] for k in ks), len(ks) >= r.limit, 0, 0)
        if isinstance(r, ReplWrite):
            for op in r.ops:
                d.pop(op[1], None) if op[0] != PUT else d.__setitem__(op[1], op[2])
        elif isinstance(r, ReplOwnership):
            self.records[out.group] = r.ownership
        return None

    def run(self, mover, max_steps=10_000):
        for _ in range(max_steps):
            if mover.outcome is not None:
                return mover.outcome
            outs = mover.ready()
            if not outs:
                mover.tick()
            for out in outs:
                self.log.append(describe(out))
                error = self.fail(out)
                if error is not None:
                    self.log[-1] += " -> fails"
                    mover.on_failure(out.token, error)
                else:
                    mover.on_reply(out.token, self.answer(out))
        raise AssertionError("the mover did not end")


def describe(out) -> str:
    """One line of a transcript."""
    if isinstance(out, ReadMap):
        return "read map"
    if isinstance(out, CasMap):
        return f"cas map {out.old.version} -> {out.new.version}"
    r = out.request
    if isinstance(r, ReplScan):
        return f"{out.group}: scan [{r.start!r}, {r.end!r})"
    if isinstance(r, ReplWrite):
        return f"{out.group}: write {len(r.ops)} {'put' if r.ops[0][0] == PUT else 'delete'}"
    own = r.ownership
    ranges = ", ".join(f"{x.pid}{'' if x.writable else ' frozen'} since {x.since}" for x in own.ranges)
    return f"{out.group}: record v{own.version} [{ranges}]"


def _world(keys=(b"a1", b"a2", b"a3"), fail=lambda out: None):
    w = World(initial_map("range", ["a", "b"], boundaries=[b"m"]), fail)
    for k in keys:
        w.data["a"][k] = b"v-" + k
    return w


def test_a_move_follows_the_protocol_step_by_step():
    w = _world()
    outcome = w.run(Mover.move("s", 0, "b", page_rows=10))
    assert w.log == [
        "read map",
        "b: scan [b'', b'm')",  # 1. clear the destination's range (nothing there)
        "a: scan [b'', b'm')",  # 1. copy, page by page, while the source serves
        "b: write 3 put",
        "a: record v2 [0 frozen since 1]",  # 2. freeze: no more writes to partition 0 at the source
        "a: scan [b'', b'm')",  # 3. catch up: both copies compared in key order
        "b: scan [b'', b'm')",
        "b: record v2 [0 since 2, 1 since 1]",  # 4. the destination takes it, the source lets it go,
        "a: record v2 []",                      #    and only then the map says so (reads stay linearizable)
        "cas map 1 -> 2",
        "a: scan [b'', b'm')",  # 5. the source deletes its keys
        "a: write 3 delete",
    ]
    assert outcome.state == "done" and outcome.published == w.map and w.map.partition(0).group == "b"
    assert (outcome.copied, outcome.caught_up, outcome.cleaned) == (3, 0, 3)
    assert w.data == {"a": {}, "b": {k: b"v-" + k for k in (b"a1", b"a2", b"a3")}}


class Publishing(World):
    """A World that, at each publish, asks every group to serve a read of each key with the map the
    publish replaces: only the key's owner in the new map may (what linearizable reads need)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served: list = []

    def answer(self, out):
        if isinstance(out, CasMap) and self.map == out.old:
            for key in (b"a1", b"z1"):
                for group, record in self.records.items():
                    try:
                        record.check_keys(out.old.version, [key], write=False)
                        self.served.append((key, group))
                    except PartitionError:
                        pass
        return super().answer(out)


@pytest.mark.parametrize("pid, to", [(0, "b"), (1, "a")])
def test_when_a_move_publishes_only_the_new_owner_serves_reads_of_the_old_map(pid, to):
    w = Publishing(initial_map("range", ["a", "b"], boundaries=[b"m"]))
    outcome = w.run(Mover.move("s", pid, to, page_rows=10))
    assert outcome.state == "done"
    # The moved partition's key: nobody (the source let it go, the destination needs the new map);
    # the other partition's key: its owner alone (the group the move went to).
    moved, kept = (b"a1", b"z1") if pid == 0 else (b"z1", b"a1")
    assert [g for k, g in w.served if k == moved] == []
    assert [g for k, g in w.served if k == kept] == [to]


def test_the_catch_up_brings_over_every_write_made_during_the_copy():
    w = _world(keys=[b"a%02d" % i for i in range(20)])
    frozen = {}

    def during_copy(out):
        if isinstance(out, GroupRequest) and isinstance(out.request, ReplOwnership) and not frozen:
            a = w.data["a"]  # the writes the source took while the copy ran, just before its freeze
            a[b"a01"], a[b"zz-new"] = b"changed", b"new"
            del a[b"a02"]
            frozen.update(a)
        return None

    w.fail = during_copy
    outcome = w.run(Mover.move("s", 0, "b", page_rows=3, max_in_flight=2))
    assert outcome.state == "done" and outcome.caught_up == 2  # a01 changed, a02 deleted (zz-new is not in 0)
    assert w.data["b"] == {k: v for k, v in frozen.items() if k < b"m"}
    assert w.data["a"] == {b"zz-new": b"new"}  # the source kept what is not partition 0's


def test_splits_find_the_middle_and_refusals_touch_nothing():
    w = World(initial_map("range", ["a"]))
    w.data["a"] = {b"k%d" % i: b"v" for i in range(9)}
    assert w.run(Mover.split("s", 0, page_rows=4)).published.partition(1).start == b"k4"  # the median key
    h = World(initial_map("hash", ["a"], partitions=2))
    new = h.run(Mover.split("s", 1)).published
    assert new.partition(2).start == (3 << 62).to_bytes(8, "big")  # the middle of [2^63, 2^64)
    for mover, error in [(Mover.split("s", 0, b"z"), "outside partition"), (Mover.move("s", 0, "a"), "already"),
                         (Mover.merge("s", 0, 7), "no partition 7")]:
        w.log.clear()
        outcome = w.run(mover)
        assert outcome.state == "failed" and w.log == ["read map"]  # refused from the map alone
        assert isinstance(outcome.error, (InvalidArgumentError, WrongPartitionError)) and error in str(outcome.error)
    empty = World(initial_map("range", ["a"]))
    assert "no split point" in str(empty.run(Mover.split("s", 0)).error)


def test_a_failed_request_is_sent_again_after_its_ticks():
    mover = Mover.move("s", 0, "b", retries=1, retry_ticks=3)
    (read,) = mover.ready()
    mover.on_reply(read.token, initial_map("range", ["a", "b"], boundaries=[b"m"]))
    (scan,) = mover.ready()
    mover.on_failure(scan.token, CallTimeoutError("lost"))
    for _ in range(2):
        mover.tick()
        assert mover.ready() == ()
    mover.tick()
    (again,) = mover.ready()
    assert (again.token, again.request, again.attempt) == (scan.token, scan.request, 1)
    with pytest.raises(InvariantViolation):
        mover.on_reply(99, None)
    with pytest.raises(InvalidArgumentError):
        Mover("s", "resize", 0)
    with pytest.raises(InvalidArgumentError, match="page_rows"):
        Mover.move("s", 0, "b", page_rows=0)


def test_a_destination_unreachable_before_publish_abandons_the_move():
    down = {"b": 0}

    def fail(out):  # b stops answering when it is asked to take the partition, for four requests
        if isinstance(out, GroupRequest) and out.group == "b":
            if isinstance(out.request, ReplOwnership) and not down["b"] and out.request.ownership.ranges[0].pid == 0:
                down["b"] = 4
            if down["b"]:
                down["b"] -= 1
                return CallTimeoutError("b is unreachable")
        return None

    w = _world(fail=fail)
    old = w.map
    outcome = w.run(Mover.move("s", 0, "b", retries=1, settle_retries=5, retry_ticks=2))
    assert w.log[7:] == [
        "b: record v2 [0 since 2, 1 since 1] -> fails",
        "b: record v2 [0 since 2, 1 since 1] -> fails",  # (a resend) then abandoned:
        "b: record v2 [1 since 1] -> fails",  # the destination gives 0 up first (it may have taken it),
        "b: record v2 [1 since 1] -> fails",
        "b: record v2 [1 since 1]",
        "a: record v2 [0 since 1]",  # then the source takes writes again,
        "cas map 1 -> 2",  # the old map is published one version up,
        "b: scan [b'', b'm')",  # and the copy is deleted
        "b: write 3 delete",
    ]
    assert outcome.state == "abandoned" and isinstance(outcome.error, CallTimeoutError)
    assert w.map == old.bumped() == outcome.published
    assert w.records["a"].range(0).writable and w.records["b"].range(0) is None
    assert w.data["b"] == {} and len(w.data["a"]) == 3


def test_a_refused_compare_and_set_abandons_and_a_rival_map_fails_loudly():
    refusals = {"n": 1}
    w = _world()
    real = w.answer

    def answer(out):
        if isinstance(out, CasMap) and refusals["n"]:
            refusals["n"] -= 1
            return False  # the map is not what the change read (here: once)
        return real(out)

    w.answer = answer
    outcome = w.run(Mover.move("s", 0, "b"))
    assert outcome.state == "abandoned" and "changed under this move" in str(outcome.error)
    assert w.log[-5:] == ["b: record v2 [1 since 1]", "a: record v2 [0 since 1]", "cas map 1 -> 2",
                          "b: scan [b'', b'm')", "b: write 3 delete"]
    assert w.map.version == 2 and w.map.partition(0).group == "a" and w.data["b"] == {}
    # A rival changed the map: the abandon cannot publish either, and says so.
    w2 = _world()
    w2.answer = lambda out, real=w2.answer: False if isinstance(out, CasMap) else real(out)
    outcome = w2.run(Mover.split("s", 0, b"a2"))
    assert outcome.state == "failed" and "changed meanwhile" in str(outcome.error)


@pytest.mark.parametrize("applied", [True, False])
def test_an_unknown_publish_is_resolved_by_reading_the_map(applied):
    w = _world()
    first = {"cas": True}

    def fail(out):
        if isinstance(out, CasMap) and first.pop("cas", False):
            if applied:
                w.answer(out)
            return CallTimeoutError("outcome unknown")
        return None

    w.fail = fail
    outcome = w.run(Mover.split("s", 0, b"a2"))
    expected = ["cas map 1 -> 2 -> fails", "read map"] + ([] if applied else ["cas map 1 -> 2"])
    assert w.log[-len(expected):] == expected
    assert outcome.state == "done" and w.map.version == 2 and len(w.map.partitions) == 3


def test_an_unknown_publish_with_an_unreadable_map_fails_without_abandoning():
    w = _world()
    w.fail = lambda out: CallTimeoutError("coordinator down") if isinstance(out, CasMap) or (
        isinstance(out, ReadMap) and len(w.log) > 1) else None
    outcome = w.run(Mover.move("s", 0, "b", retries=1, settle_retries=2))
    assert outcome.state == "failed" and "may have published map version 2" in str(outcome.error)
    assert not any("record v2 [1 since 1]" in line for line in w.log)  # the destination kept its record
    assert w.records["b"].range(0).since == 2


def test_an_abandon_waits_for_the_requests_still_in_flight():
    mover = Mover.move("s", 0, "b", page_rows=1, max_in_flight=2, retries=0)
    w = _world()
    held = []
    while len(held) < 2:
        for out in mover.ready():
            if isinstance(out, GroupRequest) and isinstance(out.request, ReplWrite):
                held.append(out)  # the copy's writes: sent, not answered yet
            else:
                mover.on_reply(out.token, w.answer(out))
    mover.on_failure(held[0].token, CallTimeoutError("lost"))
    assert mover.phase == "abandon: records" and mover.ready() == ()  # held[1] may still apply
    mover.on_reply(held[1].token, None)
    (cas,) = mover.ready()  # no record was sent, so none to undo: the bumped map goes out
    assert isinstance(cas, CasMap) and cas.new == cas.old.bumped()


# --- seeded simulations ------------------------------------------------------------------------------

#: Seeds of a faulty Raft configuration (CI: the default); the other faulty ones scale with it, and
#: ``DDIA_PARTITIONING_SEEDS=50`` runs 50, 60 and 40.
SEEDS = int(os.environ.get("DDIA_PARTITIONING_SEEDS", "34"))

#: (protocol, mode, scheme, faults, seeds). Leader-follower groups: sync mode on both schemes, semi-sync
#: and async (whose acknowledged writes a failover may lose, reported) on one each.
CONFIGS = [("raft", None, "range", True, SEEDS), ("raft", None, "hash", True, SEEDS),
           ("raft", None, "range", False, 10), ("raft", None, "hash", False, 10),
           ("leader_follower", "sync", "range", True, SEEDS * 6 // 5),
           ("leader_follower", "sync", "hash", True, SEEDS * 6 // 5),
           ("leader_follower", "semi-sync", "range", True, SEEDS * 4 // 5),
           ("leader_follower", "async", "hash", True, SEEDS * 4 // 5),
           ("leader_follower", "sync", "range", False, 8), ("leader_follower", "sync", "hash", False, 8)]


def _config_id(protocol, mode, scheme, faults) -> str:
    return "-".join([protocol, *([mode] if mode else []), scheme, "faults" if faults else "no-faults"])


@pytest.mark.parametrize("protocol, mode, scheme, faults, seeds", CONFIGS,
                         ids=[_config_id(*c[:4]) for c in CONFIGS])
def test_changes_under_load_keep_every_invariant_across_seeds(protocol, mode, scheme, faults, seeds):
    replay = (f"DDIA_SEED={{seed}} python -m pytest tests/test_partitioning_simulation.py -k "
              f"'across_seeds and {_config_id(protocol, mode, scheme, faults)}'")
    reports = []
    ran = run_seeds(lambda seed: reports.append(simulate(seed, protocol=protocol, mode=mode, scheme=scheme,
                                                         faults=faults)), range(seeds), replay=replay)
    raft = protocol == "raft"
    # Leader-follower failovers take about a lease (0.5 s) and sync mode waits for every follower,
    # so a faulty run acknowledges fewer writes and finishes fewer moves than under Raft.
    assert ran == len(reports) and all(r.writes_acked > (20 if raft else 10) and r.reads_ok > 20 for r in reports)
    total = sum((r.changes for r in reports), start=collections.Counter())
    if ran > 1:  # (a replayed seed is checked by its run alone): the runs exercised what they check
        assert total["move"] > (3 if raft else 1.5) * ran and total["split"] > ran and total["merge"] > ran // 2
        assert sum(r.reroutes for r in reports) > 10 * ran
        if faults:
            assert total["abandoned"] > ran // 4  # changes did fail and were undone
            assert sum(r.cas_unknown for r in reports) > 0 and sum(r.writes_unknown for r in reports) > 0
        if faults and not raft:
            assert sum(r.epochs for r in reports) > 4 * ran  # leaders failed over (3 groups: 3 epochs at least)
        if mode == "async":
            assert sum(r.lost_reported for r in reports) > 0  # acknowledged writes were lost, and reported
    if not faults:
        assert total["abandoned"] == 0 and all(r.writes_unknown == 0 for r in reports)
    assert all(r.lost_reported == 0 for r in reports) or mode == "async"


@pytest.mark.parametrize("protocol, mode", [("raft", None), ("leader_follower", "semi-sync")])
def test_a_seed_replays_exactly(protocol, mode):
    assert simulate(11, protocol=protocol, mode=mode, scheme="hash") == simulate(11, protocol=protocol, mode=mode,
                                                                                  scheme="hash")


def test_a_protocol_or_mode_the_simulation_does_not_know_is_refused():
    for options in [{"protocol": "paxos"}, {"protocol": "raft", "mode": "sync"},
                    {"protocol": "leader_follower", "mode": "quorum"}]:
        with pytest.raises(ConfigError):
            simulate(0, **options)


def _without_freeze(monkeypatch):
    plan = tuple(p for p in mover_module.PLANS["move"] if p != mover_module.FREEZE)
    monkeypatch.setattr(mover_module, "PLANS", {**mover_module.PLANS, "move": plan})


@pytest.mark.parametrize("protocol", ["raft", "leader_follower"])
def test_a_move_without_its_freeze_is_caught_with_two_writable_owners(monkeypatch, protocol):
    _without_freeze(monkeypatch)
    with pytest.raises(PartitionViolation, match="owned writable by group .* and by group"):
        simulate(0, protocol=protocol, faults=False)


def _first_violation(seeds, what: str, **options) -> PartitionViolation:
    """The violation of the first of ``seeds`` whose run raises one (a broken variant must be caught)."""
    for seed in seeds:
        try:
            simulate(seed, **options)
        except PartitionViolation as e:
            return e
    pytest.fail(f"no seed of {len(seeds)} caught {what}")


@pytest.mark.parametrize("protocol", ["raft", "leader_follower"])
def test_a_move_without_its_freeze_is_caught_losing_acknowledged_writes(monkeypatch, protocol):
    """With the ownership check off too, the end-of-run check must find the writes the source took
    after the catch-up read them (acknowledged, then lost when the map named the destination)."""
    _without_freeze(monkeypatch)
    monkeypatch.setattr(sim_groups.Groups, "check_disjoint", lambda self: None)
    e = _first_violation(range(20), "a move without its freeze losing writes", protocol=protocol, faults=False)
    assert "lost" in str(e)


def test_leader_follower_records_acknowledged_by_the_leader_alone_are_caught_lost_in_a_failover(monkeypatch):
    """The store asks every follower of an async group to acknowledge an ownership record. With the
    leader's acknowledgement alone, a failover loses acknowledged records: a new leader starts
    without one, which the per-leader check must catch."""

    class LeaderAloneOperator(sim_module.Operator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ownership_acks = 0

    monkeypatch.setattr(sim_module, "Operator", LeaderAloneOperator)
    e = _first_violation(range(20, 40), "an acknowledged record lost in a failover", protocol="leader_follower",
                         mode="async")
    assert "starts to lead" in str(e) and "without the entry" in str(e)


def test_async_leader_follower_loses_acknowledged_writes_and_only_reported_ones_are_excused(monkeypatch):
    """Async mode loses acknowledged writes in failovers by design, and check (a) excuses exactly the
    keys whose lost writes the replicas reported. Without the excuse (the reports still checked),
    check (a) must find a lost acknowledged write: the excuse is needed, and the check can fail."""
    checked = sim_groups.LeaderFollowerGroups.check_end

    def without_excuse(self, report):
        checked(self, report)  # the reports themselves are still checked
        return set()

    monkeypatch.setattr(sim_groups.LeaderFollowerGroups, "check_end", without_excuse)
    e = _first_violation(range(100, 120), "an acknowledged write lost in async mode", protocol="leader_follower",
                         mode="async")
    assert "lost" in str(e) and "acknowledged" in str(e)
