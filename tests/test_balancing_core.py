"""BalancerCore: routing around ejected/unhealthy replicas, draining, panic mode, stats."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.balancing import (
    BalancerCore,
    BalancerStats,
    ConsistentHashPicker,
    OutlierDetector,
    PowerOfTwoChoicesPicker,
    RoundRobinPicker,
)
from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError, NoReplicaAvailableError, UnknownNodeError


def core(n=3, picker=None, **detector_kwargs) -> BalancerCore:
    c = BalancerCore(picker or RoundRobinPicker(), detector=OutlierDetector(**detector_kwargs))
    for i in range(n):
        c.add_replica(f"r{i}")
    return c


def call(c: BalancerCore, now_s: float, ok: bool = True, key=None) -> str:
    member = c.begin(key, now_s=now_s)
    c.end(member, ok, now_s, latency_s=0.01)
    return member


def test_ejected_replica_is_routed_around_then_readmitted():
    c = core(3, consecutive_failures=2, base_ejection_s=30)
    for _ in range(2):
        c.begin(now_s=0.0)  # r0, r1 ...
    c.end("r0", False, 0.0)
    c.end("r1", True, 0.0)
    c.begin(now_s=0.0)  # r2
    c.begin(now_s=0.0)  # r0 again
    c.end("r0", False, 1.0)  # second consecutive failure: ejected until 31
    assert c.routable(1.0) == {"r1", "r2"}
    picks = {call(c, 2.0) for _ in range(20)}
    assert picks == {"r1", "r2"}
    assert c.stats().by_name()["r0"].ejected
    events = c.tick(31.0)
    assert [(e.member, e.ejected) for e in events] == [("r0", True), ("r0", False)]
    assert "r0" in {call(c, 32.0) for _ in range(6)}
    c.end("r2", True, 32.0)
    c.check_invariants()


def test_unhealthy_replica_is_skipped_until_marked_healthy():
    c = core(3)
    c.mark_health("r1", False)
    assert Counter(call(c, 0.0) for _ in range(10)) == {"r0": 5, "r2": 5}
    assert not c.stats().by_name()["r1"].healthy
    c.mark_health("r1", True)
    assert "r1" in {call(c, 0.0) for _ in range(3)}
    with pytest.raises(UnknownNodeError):
        c.mark_health("nope", False)
    with pytest.raises(InvalidArgumentError):
        c.mark_health("r1", "yes")


def test_panic_mode_routes_to_everyone_when_too_few_are_routable():
    c = core(4)
    for name in ("r0", "r1", "r2"):
        c.mark_health(name, False)
    assert c.in_panic(0.0)
    assert c.routable(0.0) == {"r0", "r1", "r2", "r3"}
    assert Counter(call(c, 0.0) for _ in range(8)) == {f"r{i}": 2 for i in range(4)}
    stats = c.stats()
    assert (stats.picks, stats.panic_picks) == (8, 8)
    c.mark_health("r2", True)  # 2 of 4 routable: 50% is not below the threshold
    assert not c.in_panic(0.0)
    assert {call(c, 0.0) for _ in range(4)} == {"r2", "r3"}


def test_panic_disabled_raises_when_nothing_is_routable():
    c = BalancerCore(RoundRobinPicker(), panic_threshold_percent=0)
    with pytest.raises(NoReplicaAvailableError):
        c.begin(now_s=0.0)  # empty pool
    c.add_replica("r0")
    c.mark_health("r0", False)
    with pytest.raises(NoReplicaAvailableError):
        c.begin(now_s=0.0)
    assert c.stats().unavailable == 2
    assert c.routable(0.0) == frozenset()


def test_removed_replica_drains_and_is_never_picked():
    c = core(3)
    in_flight = [c.begin(now_s=0.0) for _ in range(3)]
    assert sorted(in_flight) == ["r0", "r1", "r2"]
    c.remove_replica("r1")
    c.remove_replica("r1")  # idempotent while draining
    assert c.replicas == ("r0", "r2")
    assert "r1" not in {call(c, 1.0) for _ in range(10)}
    assert c.stats().by_name()["r1"].draining
    c.end("r1", False, 2.0)  # the in-flight request may still finish
    assert "r1" not in c.stats().by_name()
    with pytest.raises(UnknownNodeError):
        c.end("r1", True, 2.0)
    with pytest.raises(UnknownNodeError):
        c.remove_replica("r1")
    c.check_invariants()


def test_re_adding_a_draining_replica_cancels_the_drain():
    c = core(2)
    assert c.begin(now_s=0.0) == "r0"
    c.remove_replica("r0")
    c.add_replica("r0", 3)
    r0 = c.stats().by_name()["r0"]
    assert (r0.draining, r0.in_flight, r0.weight) == (False, 1, 3)
    c.end("r0", True, 1.0)
    c.check_invariants()
    with pytest.raises(ConfigError):
        c.add_replica("r0")


def test_end_without_begin_and_bad_arguments():
    c = core(2)
    with pytest.raises(ConfigError):
        c.end("r0", True, 0.0)
    member = c.begin(now_s=0.0)
    with pytest.raises(InvalidArgumentError):
        c.end(member, None, 0.0)
    with pytest.raises(ConfigError):
        c.end(member, True, 0.0, latency_s=-1)
    assert c.stats().by_name()[member].in_flight == 1  # refused calls changed nothing
    with pytest.raises(ConfigError):
        BalancerCore(RoundRobinPicker(), panic_threshold_percent=120)
    used = RoundRobinPicker()
    used.add("x")
    with pytest.raises(ConfigError):
        BalancerCore(used)


def test_caller_exclusions_hold_even_in_panic_mode():
    c = core(4)
    assert {call(c, 0.0) for _ in range(8)} == {"r0", "r1", "r2", "r3"}
    tried = frozenset({"r0", "r2"})
    picks = set()
    for _ in range(6):
        member = c.begin(now_s=0.0, exclude=tried)
        picks.add(member)
        c.end(member, True, 0.0)
    assert picks == {"r1", "r3"}
    for name in ("r1", "r2", "r3"):
        c.mark_health(name, False)
    assert c.in_panic(0.0)
    assert c.begin(now_s=0.0, exclude=frozenset({"r0", "r1", "r2"})) == "r3"
    with pytest.raises(NoReplicaAvailableError):
        c.begin(now_s=0.0, exclude=frozenset(c.replicas))
    with pytest.raises(InvalidArgumentError):
        c.begin(now_s=0.0, exclude=["r0"])


def test_cancel_undoes_a_pick_without_touching_outlier_detection():
    c = core(2, consecutive_failures=2)
    first = c.begin(now_s=0.0)
    c.end(first, False, 0.0)  # one failure: the streak is at 1
    again = c.begin(now_s=1.0, exclude=frozenset(c.replicas) - {first})
    c.cancel(again)  # had it counted as a success, the streak would reset
    assert c.detector.status(first).consecutive_failures == 1
    r = c.stats().by_name()[first]
    assert (r.in_flight, r.requests, r.failures) == (0, 1, 1)
    assert c.stats().cancelled == 1
    with pytest.raises(ConfigError):
        c.cancel(first)
    draining = c.begin(now_s=2.0)
    c.remove_replica(draining)
    c.cancel(draining)
    assert draining not in c.stats().by_name()
    c.check_invariants()


def test_default_core_prefers_the_least_loaded_replica():
    c = BalancerCore()
    c.add_replica("small", 1)
    c.add_replica("big", 3)
    held = [c.begin(now_s=0.0) for _ in range(8)]
    assert Counter(held) == {"big": 6, "small": 2}
    c.set_weight("small", 5)
    assert c.begin(now_s=0.0) == "small"  # (2+1)/5 < (6+1)/3


def test_consistent_hash_key_falls_over_and_comes_back():
    c = BalancerCore(ConsistentHashPicker(), detector=OutlierDetector(consecutive_failures=1, base_ejection_s=10))
    for i in range(4):
        c.add_replica(f"r{i}")
    home = call(c, 0.0, key="user:7")
    assert call(c, 0.0, key="user:7") == home
    member = c.begin("user:7", now_s=1.0)
    c.end(member, False, 1.0)  # ejects home
    fallback = call(c, 2.0, key="user:7")
    assert fallback != home
    assert c.picker.preference_list("user:7", 2)[1] == fallback
    c.tick(11.0)
    assert call(c, 11.0, key="user:7") == home
    with pytest.raises(InvalidArgumentError):
        c.begin(now_s=12.0)


def test_stats_are_immutable_and_encodable():
    c = core(2)
    m = c.begin(now_s=0.0)
    c.end(m, True, 0.5, latency_s=0.2)
    m = c.begin(now_s=1.0)
    c.end(m, False, 1.5, latency_s=0.4)
    stats = c.stats()
    by_name = stats.by_name()
    assert by_name["r0"].latency_avg_s == pytest.approx(0.2)
    assert (by_name["r1"].requests, by_name["r1"].failures) == (1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.picks = 0
    with pytest.raises(TypeError):
        by_name["r0"] = None
    assert decode(encode(stats), BalancerStats) == stats


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(
        st.tuples(st.sampled_from(["begin", "begin", "end", "end", "cancel", "add", "remove", "health", "tick"]),
                  st.integers(0, 5), st.booleans()),
        max_size=150,
    ),
)
def test_random_histories_balance_in_flight_back_to_zero(seed, steps):
    rng = random.Random(seed)
    c = BalancerCore(PowerOfTwoChoicesPicker(rng=rng),
                     detector=OutlierDetector(consecutive_failures=2, base_ejection_s=3, interval_s=2))
    outstanding: list[str] = []
    removed: set[str] = set()
    now = 0.0
    begun = cancelled = 0
    for op, i, flag in steps:
        now += 0.5
        name = f"r{i}"
        if op == "begin":
            exclude = frozenset({name}) if flag else frozenset()
            try:
                member = c.begin(f"k{i}", now_s=now, exclude=exclude)
            except NoReplicaAvailableError:
                # Every routable replica was excluded (unhealthy or ejected ones are not routable outside panic).
                assert c.routable(now) <= exclude
            else:
                assert member not in removed and member not in exclude
                outstanding.append(member)
                begun += 1
        elif op == "end" and outstanding:
            c.end(outstanding.pop(rng.randrange(len(outstanding))), flag, now, latency_s=0.1)
        elif op == "cancel" and outstanding:
            c.cancel(outstanding.pop(rng.randrange(len(outstanding))))
            cancelled += 1
        elif op == "add" and name not in c.replicas:
            c.add_replica(name, 1 + i % 3)
            removed.discard(name)
        elif op == "remove" and name in c.replicas:
            c.remove_replica(name, now)
            removed.add(name)
        elif op == "health" and name in c.replicas:
            c.mark_health(name, flag)
        elif op == "tick":
            c.tick(now)
        c.check_invariants()
        assert sum(r.in_flight for r in c.stats().replicas) == len(outstanding)
    for member in outstanding:
        c.end(member, True, now)
    c.check_invariants()
    stats = c.stats()
    assert all(r.in_flight == 0 for r in stats.replicas)
    assert not any(r.draining for r in stats.replicas)  # drained replicas are forgotten
    assert (stats.picks, stats.cancelled) == (begun, cancelled)
