"""The rebalance planner: splits at the reported middle, merges of small neighbours, moves that
fill new groups and drain retired ones, all proposals applicable in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.partitioning import PlacementMove, initial_map, plan_placement
from ddia_ray.partitioning.rebalance import PartitionLoad, Proposal, RebalancePolicy, apply_proposal, plan


def _rounds(pmap, groups, loads_of, policy, rounds=20):
    for _ in range(rounds):
        proposals = plan(pmap, loads_of(pmap), groups, policy)
        if not proposals:
            return pmap
        for p in proposals:
            pmap = apply_proposal(pmap, p)
    raise AssertionError("the planner did not settle")


def _counts(pmap, groups):
    return {g: sum(p.group == g for p in pmap.partitions) for g in groups}


def test_a_new_group_fills_up_and_a_retired_one_is_drained_a_move_at_a_time():
    m = initial_map("hash", ["g1", "g2"], partitions=12)
    policy = RebalancePolicy(moves_per_round=1)
    first = plan(m, [], ["g1", "g2", "g3"], policy)
    assert [(p.action, p.arg) for p in first] == [("move", "g3")]  # the pace: one per round
    settled = _rounds(m, ["g1", "g2", "g3"], lambda pm: [], policy)
    assert sorted(_counts(settled, ["g1", "g2", "g3"]).values()) == [4, 4, 4]
    drained = _rounds(settled, ["g1", "g3"], lambda pm: [], RebalancePolicy(moves_per_round=3))
    assert _counts(drained, ["g1", "g2", "g3"]) == {"g1": 6, "g2": 0, "g3": 6}


def test_moves_follow_measured_load_not_partition_counts():
    m = initial_map("range", ["g1", "g2"], boundaries=[b"c", b"f", b"m"])  # g1: 0, 2; g2: 1, 3
    hot = {0: 900.0, 2: 800.0, 1: 10.0, 3: 10.0}
    proposals = plan(m, [PartitionLoad(p.id, 1000, hot[p.id]) for p in m.partitions], ["g1", "g2"])
    assert [(p.action, p.partition, p.arg) for p in proposals] == [("move", 2, "g2")]


def test_a_big_range_partition_splits_at_its_middle_and_a_hash_one_at_its_hash_midpoint():
    m = initial_map("range", ["g"], boundaries=[b"m"])
    policy = RebalancePolicy(split_bytes=1000, merge_bytes=0)
    out = plan(m, [PartitionLoad(0, 5000, middle=b"f"), PartitionLoad(1, 10)], ["g"], policy)
    assert [(p.action, p.partition, p.arg) for p in out] == [("split", 0, b"f")]
    assert plan(m, [PartitionLoad(0, 5000, middle=b"q")], ["g"], policy) == []  # middle outside: stale report
    assert plan(m, [PartitionLoad(0, 5000)], ["g"], policy) == []  # no middle reported
    hot = plan(m, [PartitionLoad(1, 10, 5000.0, b"x")], ["g"], RebalancePolicy(split_ops_per_s=1000))
    assert [(p.action, p.arg) for p in hot] == [("split", b"x")]
    h = initial_map("hash", ["g"], partitions=2)
    (split,) = plan(h, [PartitionLoad(1, 5000)], ["g"], policy)
    assert split.arg == (3 << 62).to_bytes(8, "big")  # the middle of [2^63, 2^64)


def test_small_neighbours_of_one_group_merge_and_others_do_not():
    m = initial_map("range", ["g"], boundaries=[b"c", b"f", b"m"])
    policy = RebalancePolicy(split_bytes=1000, merge_bytes=100)
    loads = [PartitionLoad(0, 10), PartitionLoad(1, 20), PartitionLoad(2, 500), PartitionLoad(3, 30)]
    out = plan(m, loads, ["g"], policy)
    assert [(p.action, p.partition, p.arg) for p in out] == [("merge", 0, 1)]
    two = initial_map("range", ["g1", "g2"], boundaries=[b"c"])
    assert not [p for p in plan(two, [PartitionLoad(0, 1), PartitionLoad(1, 1)], ["g1", "g2"], policy)
                if p.action == "merge"]


def test_bad_policies_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="half of split_bytes"):
        RebalancePolicy(split_bytes=100, merge_bytes=60)
    with pytest.raises(ConfigError):
        RebalancePolicy(moves_per_round=-1)
    with pytest.raises(ConfigError):
        RebalancePolicy(tolerance=0)
    m = initial_map("range", ["g"])
    with pytest.raises(ConfigError, match="replica groups"):
        plan(m, [], [])
    with pytest.raises(InvalidArgumentError, match="PartitionLoad"):
        plan(m, [{"partition": 0}], ["g"])
    with pytest.raises(InvalidArgumentError, match="unknown proposal"):
        apply_proposal(m, Proposal("shuffle", 0, None, ""))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["range", "hash"]), st.lists(st.tuples(st.integers(0, 3000), st.floats(0, 100)), min_size=4,
                                                    max_size=4), st.integers(1, 4))
def test_every_plan_applies_in_order_to_a_valid_map(scheme, measured, new_groups):
    m = initial_map(scheme, ["g1", "g2"], **({"partitions": 4} if scheme == "hash" else
                                              {"boundaries": [b"d", b"h", b"p"]}))
    middles = [b"b", b"f", b"k", b"t"]
    loads = [PartitionLoad(p.id, b, o, middles[i]) for i, (p, (b, o)) in enumerate(zip(m.partitions, measured))]
    groups = ["g1", "g2"] + [f"n{i}" for i in range(new_groups)]
    proposals = plan(m, loads, groups, RebalancePolicy(split_bytes=2000, merge_bytes=500, moves_per_round=3))
    for i, p in enumerate(proposals):
        m2 = apply_proposal(m, p)
        assert m2.version == m.version + 1, (i, p)
        m = m2
    assert all(p.group in groups for p in m.partitions)


# --- replicas over Ray nodes ---------------------------------------------------------------------


def test_a_joining_node_takes_replicas_one_move_at_a_time_never_two_of_a_group():
    placement = {"g1": {"r1": "A", "r2": "B"}, "g2": {"r1": "A", "r2": "B"}, "g3": {"r1": "A", "r2": "B"}}
    moves = plan_placement(placement, ["A", "B", "C"], max_moves=3)
    assert moves and all(m.action == "relocate" and m.to == "C" for m in moves)
    assert len({m.group for m in moves}) == len(moves)  # never two replicas of one group onto C
    assert plan_placement(placement, ["A", "B", "C"], max_moves=1) == moves[:1]
    balanced = {"g1": {"r1": "A", "r2": "B"}, "g2": {"r1": "B", "r2": "C"}, "g3": {"r1": "C", "r2": "A"}}
    assert plan_placement(balanced, ["A", "B", "C"]) == []


def test_a_replica_whose_node_left_is_replaced_and_one_merely_down_is_not():
    placement = {"g1": {"r2": "B"}, "g2": {"r1": "B", "r2": "C"}}
    lost = {"g1": {"r1": "A"}}
    (move,) = plan_placement(placement, ["B", "C"], lost=lost)
    assert move == PlacementMove("replace", "g1", "r1", "A", "C", move.reason) and "left" in move.reason
    assert plan_placement(placement, ["A", "B", "C"], lost=lost, max_moves=1)[0].action != "replace"
    with pytest.raises(ConfigError):
        plan_placement(placement, [])
