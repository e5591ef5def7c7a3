"""Live reconfiguration of the balancer core: picker switches and weights, with state carried over."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.balancing import (PICKERS, BalancerCore, BalancerSettings, OutlierDetector, RoundRobinPicker,
                                SmoothWeightedRoundRobinPicker, WeightedLeastConnectionsPicker)
from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError, UnknownNodeError


def core(n=3, picker=None, **detector_kwargs) -> BalancerCore:
    c = BalancerCore(RoundRobinPicker() if picker is None else picker, detector=OutlierDetector(**detector_kwargs))
    for i in range(n):
        c.add_replica(f"r{i}")
    return c


def picks(c: BalancerCore, n: int, now_s: float = 1.0) -> Counter:
    out: Counter = Counter()
    for _ in range(n):
        member = c.begin(now_s=now_s)
        c.end(member, True, now_s)
        out[member] += 1
    return out


# --- settings ------------------------------------------------------------------------------


def test_settings_name_a_known_picker_and_positive_int_weights():
    s = BalancerSettings("weighted_round_robin", {"r0": 5})
    assert decode(encode(s), BalancerSettings) == s
    assert s.weight_of("r0") == 5 and s.weight_of("r9") == 1
    with pytest.raises(ConfigError, match="unknown picker 'fastest'"):
        BalancerSettings("fastest")
    with pytest.raises(ConfigError, match=r"weights\['r0'\] must be > 0"):
        BalancerSettings(weights={"r0": 0})
    with pytest.raises(InvalidArgumentError, match=r"weights\['r0'\] must be an int"):
        BalancerSettings(weights={"r0": 2.0})
    with pytest.raises(InvalidArgumentError, match="weights must map"):
        BalancerSettings(weights=[("r0", 1)])


# --- the core ------------------------------------------------------------------------------


def test_new_weights_take_effect_on_the_next_picks():
    c = core(3, picker=SmoothWeightedRoundRobinPicker())
    assert picks(c, 30) == {"r0": 10, "r1": 10, "r2": 10}
    c.reconfigure(weights={"r0": 4})
    assert picks(c, 60) == {"r0": 40, "r1": 10, "r2": 10}
    assert c.stats().by_name()["r0"].weight == 4
    c.check_invariants()


def test_a_picker_switch_keeps_health_ejections_and_in_flight_counts():
    c = core(4, consecutive_failures=1, base_ejection_s=100)
    c.mark_health("r1", False)
    m = c.begin(now_s=0.0)
    assert m == "r0"
    c.end(m, False, 0.0)  # r0 ejected until 100
    busy = c.begin(now_s=0.0)  # in flight across the switch
    assert busy == "r2"
    c.reconfigure(picker=WeightedLeastConnectionsPicker(), weights={"r3": 2})
    assert isinstance(c.picker, WeightedLeastConnectionsPicker)
    assert c.routable(1.0) == {"r2", "r3"}, "r0 stays ejected and r1 unhealthy"
    assert c.begin(now_s=1.0) == "r3", "least connections sees r2's request in flight"
    stats = c.stats().by_name()
    assert stats["r2"].in_flight == 1 and stats["r0"].ejected and not stats["r1"].healthy
    c.end("r2", True, 1.0)  # a request begun under the old picker ends under the new one
    c.end("r3", True, 1.0)
    assert c.picker.members == ("r0", "r1", "r2", "r3") and c.picker.weight("r3") == 2
    c.check_invariants()


def test_draining_replicas_stay_out_of_the_new_picker_and_still_finish():
    c = core(3)
    first = c.begin(now_s=0.0)
    c.remove_replica(first)
    c.reconfigure(picker=SmoothWeightedRoundRobinPicker())
    assert first not in c.picker
    with pytest.raises(UnknownNodeError):
        c.reconfigure(weights={first: 3})
    c.end(first, True, 1.0)
    assert first not in c.stats().by_name()
    c.check_invariants()


@pytest.mark.parametrize("bad, error, match", [
    ({"weights": {"r9": 2}}, UnknownNodeError, "r9"),
    ({"weights": {"r0": 2, "r1": 0}}, ConfigError, "weight"),
    ({"weights": {"r0": "2"}}, InvalidArgumentError, "weight"),
    ({"picker": "round_robin"}, InvalidArgumentError, "must be a Picker"),
    ({"panic_threshold_percent": 101}, ConfigError, "panic_threshold_percent"),
])
def test_an_invalid_change_raises_and_changes_nothing(bad, error, match):
    c = core(3, picker=SmoothWeightedRoundRobinPicker())
    c.reconfigure(weights={"r0": 3})
    old_picker, before = c.picker, c.stats()
    with pytest.raises(error, match=match):
        c.reconfigure(**{"picker": RoundRobinPicker(), **bad})  # a valid picker beside the invalid part
    assert c.picker is old_picker and c.stats() == before
    assert dict(c.picker.weights) == {"r0": 3, "r1": 1, "r2": 1}


def test_a_picker_that_already_has_members_is_refused():
    c = core(2)
    taken = RoundRobinPicker()
    taken.add("x")
    with pytest.raises(ConfigError, match="empty picker"):
        c.reconfigure(picker=taken)


def test_unchanged_weights_keep_the_pickers_rotation():
    c = core(3, picker=SmoothWeightedRoundRobinPicker())
    c.reconfigure(weights={"r0": 3})
    sequence = [c.begin(now_s=0.0) for _ in range(2)]
    c.reconfigure(weights={"r0": 3, "r1": 1})  # the same weights: no reset of the smooth weights
    sequence += [c.begin(now_s=0.0) for _ in range(3)]
    fresh = core(3, picker=SmoothWeightedRoundRobinPicker())
    fresh.reconfigure(weights={"r0": 3})
    assert sequence == [fresh.begin(now_s=0.0) for _ in range(5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(PICKERS)),
                          st.dictionaries(st.sampled_from(["r0", "r1", "r2", "r3"]), st.integers(1, 5)),
                          st.integers(0, 6)), min_size=1, max_size=8),
       st.integers(0, 2**32))
def test_in_flight_requests_survive_any_sequence_of_switches(steps, seed):
    rng = random.Random(seed)
    c = core(4)
    in_flight: list[str] = []
    for picker, weights, n in steps:
        c.reconfigure(picker=PICKERS[picker](random.Random(seed)), weights=weights)
        assert all(c.picker.weight(m) == weights.get(m, c.stats().by_name()[m].weight) for m in c.picker.members)
        for _ in range(n):
            in_flight.append(c.begin(key=str(rng.random()), now_s=1.0))
        if in_flight and rng.random() < 0.5:
            c.end(in_flight.pop(rng.randrange(len(in_flight))), True, 1.0)
        c.check_invariants()
        assert sum(r.in_flight for r in c.stats().replicas) == len(in_flight)
