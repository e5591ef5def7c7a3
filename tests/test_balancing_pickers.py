"""Pickers: exact cycles, weighted shares, load awareness, ring stability, errors."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.balancing import (
    ConsistentHashPicker,
    Picker,
    PowerOfTwoChoicesPicker,
    RoundRobinPicker,
    SmoothWeightedRoundRobinPicker,
    WeightedLeastConnectionsPicker,
)
from ddia_ray.errors import ConfigError, InvalidArgumentError, NoReplicaAvailableError, UnknownNodeError

ALL_PICKERS = [
    RoundRobinPicker,
    SmoothWeightedRoundRobinPicker,
    WeightedLeastConnectionsPicker,
    PowerOfTwoChoicesPicker,
    ConsistentHashPicker,
]

# 1..8 members named m0.., each with a weight in 1..12.
weight_lists = st.lists(st.integers(1, 12), min_size=1, max_size=8)


def build(cls, weights, **kwargs) -> Picker:
    picker = cls(**kwargs)
    for i, w in enumerate(weights):
        picker.add(f"m{i}", w)
    return picker


# --- errors shared by every picker -------------------------------------------


@pytest.mark.parametrize("cls", ALL_PICKERS)
def test_empty_pool_and_all_excluded_raise_no_replica(cls):
    picker = cls()
    with pytest.raises(NoReplicaAvailableError):
        picker.pick("k")
    picker.add("a")
    picker.add("b", 2)
    with pytest.raises(NoReplicaAvailableError):
        picker.pick("k", exclude=frozenset({"a", "b"}))
    picker.remove("a")
    picker.remove("b")
    with pytest.raises(NoReplicaAvailableError):
        picker.pick("k")


@pytest.mark.parametrize("cls", ALL_PICKERS)
def test_membership_errors(cls):
    picker = cls()
    picker.add("a")
    with pytest.raises(ConfigError):
        picker.add("a")
    with pytest.raises(UnknownNodeError):
        picker.remove("zz")
    with pytest.raises(UnknownNodeError):
        picker.set_weight("zz", 2)
    for bad in (0, -3):
        with pytest.raises(ConfigError):
            picker.add("b", bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(InvalidArgumentError):
            picker.add("b", bad)
    with pytest.raises(ConfigError):
        picker.add("")
    with pytest.raises(InvalidArgumentError):
        picker.add(7)
    with pytest.raises(InvalidArgumentError):
        picker.pick(12)
    with pytest.raises(InvalidArgumentError):
        picker.pick("k", exclude=["a"])
    with pytest.raises(InvalidArgumentError):
        picker.pick("k", load=[("a", 1)])
    assert picker.members == ("a",)  # failed calls changed nothing


@pytest.mark.parametrize("cls", [WeightedLeastConnectionsPicker, PowerOfTwoChoicesPicker])
def test_load_must_be_a_non_negative_int(cls):
    picker = build(cls, [1, 1])
    with pytest.raises(ConfigError):
        picker.pick(load={"m0": -1, "m1": -1})
    with pytest.raises(InvalidArgumentError):
        picker.pick(load={"m0": 0.5, "m1": 0.5})


@pytest.mark.parametrize("cls", ALL_PICKERS)
@settings(max_examples=15, deadline=None)
@given(
    weights=weight_lists,
    seed=st.integers(0, 2**32),
    ops=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 7), st.integers(1, 5)), max_size=60),
)
def test_same_seed_same_choices_and_exclusions_respected(cls, weights, seed, ops):
    def run():
        picker = build(cls, weights, rng=random.Random(seed))
        trace = []
        for op, i, n in ops:
            member = f"m{i}"
            if op == 0 and member not in picker:
                picker.add(member, n)
            elif op == 1 and member in picker and len(picker) > 1:
                picker.remove(member)
            elif op == 2 and member in picker:
                picker.set_weight(member, n)
            else:
                exclude = frozenset(m for j, m in enumerate(picker.members) if (j + n) % 3 == 0)
                load = {m: (j * n) % 4 for j, m in enumerate(picker.members)}
                try:
                    chosen = picker.pick(f"key{op}{i}{n}", exclude=exclude, load=load)
                except NoReplicaAvailableError:
                    assert set(picker.members) <= exclude
                    chosen = None
                else:
                    assert chosen in picker.members and chosen not in exclude
                trace.append(chosen)
        return trace

    assert run() == run()


# --- round robin ---------------------------------------------------------------


def test_round_robin_cycles_and_skips_excluded_without_losing_its_place():
    picker = build(RoundRobinPicker, [1, 1, 1, 1])
    assert [picker.pick() for _ in range(6)] == ["m0", "m1", "m2", "m3", "m0", "m1"]
    assert picker.pick(exclude=frozenset({"m2"})) == "m3"
    assert picker.pick() == "m0"
    picker.remove("m0")  # the cursor (now at m1) stays on m1
    assert [picker.pick() for _ in range(4)] == ["m1", "m2", "m3", "m1"]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 10), rounds=st.integers(1, 5))
def test_round_robin_gives_each_member_one_pick_per_round(n, rounds):
    picker = build(RoundRobinPicker, [1] * n)
    picks = [picker.pick() for _ in range(n * rounds)]
    assert Counter(picks) == {f"m{i}": rounds for i in range(n)}


# --- smooth weighted round robin -------------------------------------------------


def test_swrr_matches_the_nginx_sequence():
    picker = SmoothWeightedRoundRobinPicker()
    for member, weight in (("a", 5), ("b", 1), ("c", 1)):
        picker.add(member, weight)
    # The example from nginx's ngx_http_upstream_round_robin.c, twice over.
    assert "".join(picker.pick() for _ in range(14)) == "aabacaa" * 2


@settings(max_examples=60, deadline=None)
@given(weights=weight_lists, cycles=st.integers(1, 3))
def test_swrr_exact_per_cycle_and_never_ahead_of_its_share(weights, cycles):
    picker = build(SmoothWeightedRoundRobinPicker, weights)
    total = sum(weights)
    picks = [picker.pick() for _ in range(total * cycles)]
    expected = {f"m{i}": w for i, w in enumerate(weights)}
    for c in range(cycles):
        assert Counter(picks[c * total:(c + 1) * total]) == expected
    assert picks[:total] * cycles == picks  # periodic with period sum(weights)
    # Smoothness: at every prefix t, n_i(t) <= ceil(t * w_i / S).
    counts = Counter()
    for t, member in enumerate(picks, start=1):
        counts[member] += 1
        for name, w in expected.items():
            assert counts[name] <= math.ceil(Fraction(t * w, total)), (t, name)
    assert sum(picker.current_weights().values()) == 0


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 12), min_size=2, max_size=8), data=st.data())
def test_swrr_exclusion_cycles_over_the_eligible_members(weights, data):
    picker = build(SmoothWeightedRoundRobinPicker, weights)
    names = picker.members
    excluded = data.draw(st.sets(st.sampled_from(names), max_size=len(names) - 1))
    eligible = {m: picker.weight(m) for m in names if m not in excluded}
    total = sum(eligible.values())
    picks = [picker.pick(exclude=frozenset(excluded)) for _ in range(total)]
    assert Counter(picks) == eligible


def test_swrr_weight_change_restarts_a_clean_cycle():
    picker = build(SmoothWeightedRoundRobinPicker, [3, 1])
    picker.pick()
    picker.set_weight("m1", 2)
    assert Counter(picker.pick() for _ in range(5)) == {"m0": 3, "m1": 2}


# --- weighted least connections ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(weights=weight_lists, data=st.data())
def test_wlc_picks_a_minimum_of_load_plus_one_over_weight(weights, data):
    picker = build(WeightedLeastConnectionsPicker, weights)
    load = {m: data.draw(st.integers(0, 20)) for m in picker.members}
    chosen = picker.pick(load=load)
    score = {m: Fraction(load[m] + 1, picker.weight(m)) for m in picker.members}
    assert score[chosen] == min(score.values())


@settings(max_examples=40, deadline=None)
@given(weights=weight_lists, picks=st.integers(50, 400))
def test_wlc_shares_follow_weights_when_every_request_costs_the_same(weights, picks):
    """Requests that never finish: load = picks so far. Pairwise n_i/w_i <= (n_j+1)/w_j holds throughout."""
    picker = build(WeightedLeastConnectionsPicker, weights)
    load = Counter()
    for _ in range(picks):
        load[picker.pick(load=load)] += 1
        for a in picker.members:
            for b in picker.members:
                assert Fraction(load[a], picker.weight(a)) <= Fraction(load[b] + 1, picker.weight(b))
    total = sum(weights)
    for m in picker.members:
        assert abs(load[m] - picks * picker.weight(m) / total) <= len(weights)


@settings(max_examples=30, deadline=None)
@given(weights=weight_lists, rounds=st.integers(1, 30))
def test_wlc_equal_load_goes_to_the_heaviest_round_robin(weights, rounds):
    picker = build(WeightedLeastConnectionsPicker, weights)
    heaviest = [m for m in picker.members if picker.weight(m) == max(weights)]
    load = {m: 3 for m in picker.members}
    counts = Counter(picker.pick(load=load) for _ in range(rounds * len(heaviest)))
    assert counts == {m: rounds for m in heaviest}


# --- power of two choices ------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(weights=st.lists(st.integers(1, 6), min_size=2, max_size=6), seed=st.integers(0, 2**32))
def test_p2c_idle_pool_is_sampled_in_proportion_to_weight(weights, seed):
    picker = build(PowerOfTwoChoicesPicker, weights, rng=random.Random(seed))
    n = 6000
    counts = Counter(picker.pick() for _ in range(n))
    total = sum(weights)
    for m in picker.members:
        assert abs(counts[m] / n - picker.weight(m) / total) < 0.04, (m, counts)


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 6), min_size=2, max_size=6), seed=st.integers(0, 2**32), data=st.data())
def test_p2c_never_picks_the_unique_most_loaded(weights, seed, data):
    picker = build(PowerOfTwoChoicesPicker, weights, rng=random.Random(seed))
    load = {m: data.draw(st.integers(0, 10)) for m in picker.members}
    score = {m: Fraction(load[m], picker.weight(m)) for m in picker.members}
    worst = max(score.values())
    for _ in range(20):
        chosen = picker.pick(load=load)
        if [s for s in score.values() if s == worst] == [worst]:
            assert score[chosen] < worst


def test_p2c_prefers_the_idle_member_as_often_as_it_is_sampled():
    picker = build(PowerOfTwoChoicesPicker, [1, 1, 1], rng=random.Random(7))
    n = 6000
    hits = sum(picker.pick(load={"m0": 0, "m1": 9, "m2": 9}) == "m0" for _ in range(n))
    # m0 loses only when the pair drawn is {m1, m2}: probability 1/3.
    assert abs(hits / n - 2 / 3) < 0.03


# --- consistent hashing ----------------------------------------------------------------

KEYS = [f"key-{i}" for i in range(10_000)]


def owners(picker: ConsistentHashPicker) -> list[str]:
    return [picker.pick(k) for k in KEYS]


def test_consistent_hash_needs_a_key_and_is_stable():
    picker = build(ConsistentHashPicker, [1, 1, 1])
    with pytest.raises(InvalidArgumentError):
        picker.pick()
    with pytest.raises(InvalidArgumentError):
        picker.preference_list(None, 2)
    assert picker.pick("user:42") == picker.pick(b"user:42")
    assert picker.ring_size == 3 * 160
    again = build(ConsistentHashPicker, [1, 1, 1])
    assert owners(again)[:500] == owners(picker)[:500]


names_3_to_20 = st.lists(st.text("abcdefghij", min_size=1, max_size=6), min_size=3, max_size=20, unique=True)


@settings(max_examples=12, deadline=None)
@given(names=names_3_to_20, data=st.data())
def test_consistent_hash_leave_moves_only_the_leavers_keys_about_1_over_n(names, data):
    ring = ConsistentHashPicker()
    for name in names:
        ring.add(name)
    before = owners(ring)
    leaver = data.draw(st.sampled_from(names))
    ring.remove(leaver)
    after = owners(ring)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(before[i] == leaver for i in moved)
    assert all(after[i] == before[i] for i in range(len(KEYS)) if before[i] != leaver)
    n = len(names)
    assert 0.5 / n <= len(moved) / len(KEYS) <= 1.6 / n


@settings(max_examples=12, deadline=None)
@given(names=names_3_to_20)
def test_consistent_hash_join_moves_keys_only_to_the_newcomer_about_1_over_n(names):
    ring = ConsistentHashPicker()
    for name in names[:-1]:
        ring.add(name)
    before = owners(ring)
    ring.add(names[-1])
    after = owners(ring)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(after[i] == names[-1] for i in moved)
    n = len(names)
    assert 0.5 / n <= len(moved) / len(KEYS) <= 1.6 / n


@settings(max_examples=20, deadline=None)
@given(names=st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=2, max_size=8, unique=True), data=st.data())
def test_consistent_hash_exclusion_equals_removal(names, data):
    full, reduced = ConsistentHashPicker(virtual_nodes=20), ConsistentHashPicker(virtual_nodes=20)
    excluded = data.draw(st.sets(st.sampled_from(names), max_size=len(names) - 1))
    for name in names:
        full.add(name)
        if name not in excluded:
            reduced.add(name)
    for key in KEYS[:300]:
        assert full.pick(key, exclude=frozenset(excluded)) == reduced.pick(key)


@settings(max_examples=20, deadline=None)
@given(names=st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
       n=st.integers(1, 10), data=st.data())
def test_preference_list_is_distinct_and_starts_with_pick(names, n, data):
    ring = ConsistentHashPicker(virtual_nodes=20)
    for name in names:
        ring.add(name)
    excluded = frozenset(data.draw(st.sets(st.sampled_from(names), max_size=len(names) - 1)))
    for key in KEYS[:50]:
        prefs = ring.preference_list(key, n, exclude=excluded)
        assert len(prefs) == len(set(prefs)) == min(n, len(names) - len(excluded))
        assert not excluded & set(prefs)
        assert prefs[0] == ring.pick(key, exclude=excluded)
        assert ring.owner(key) == ring.preference_list(key, 1)[0]
        # Dropping the first owner promotes the rest: the list is a clockwise walk.
        if len(prefs) > 1:
            assert ring.preference_list(key, n, exclude=excluded | {prefs[0]})[: len(prefs) - 1] == prefs[1:]
    with pytest.raises(NoReplicaAvailableError):
        ring.preference_list("k", 2, exclude=frozenset(names))
    with pytest.raises(NoReplicaAvailableError):
        ConsistentHashPicker().owner("k")


def test_consistent_hash_weight_multiplies_share():
    ring = ConsistentHashPicker()
    ring.add("big", 3)
    ring.add("small", 1)
    assert ring.ring_size == 4 * 160
    share = owners(ring).count("big") / len(KEYS)
    assert 0.65 < share < 0.85
    before = owners(ring)
    ring.set_weight("big", 4)  # only gains points, so keys only move to "big"
    after = owners(ring)
    assert all(a == "big" for b, a in zip(before, after) if a != b)
