"""Outlier detection: consecutive failures, failure rate, growing ejections, the cap."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.balancing import EjectionEvent, OutlierDetector
from ddia_ray.balancing.outlier import EJECTED, ROUTABLE, TRANSITIONS
from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError, UnknownNodeError


def detector(n=4, **kwargs) -> OutlierDetector:
    return OutlierDetector(members=[f"m{i}" for i in range(n)], **kwargs)


def fail(d: OutlierDetector, member: str, times: int, now_s: float) -> None:
    for _ in range(times):
        d.record(member, False, now_s)


def test_ejects_on_the_nth_consecutive_failure_only():
    d = detector(consecutive_failures=3)
    fail(d, "m0", 2, 1.0)
    d.record("m0", True, 1.0)  # a success breaks the streak
    fail(d, "m0", 2, 1.0)
    assert d.ejected(1.0) == frozenset()
    fail(d, "m0", 1, 2.0)
    assert d.ejected(2.0) == {"m0"}
    (event,) = d.tick(2.0)
    assert event == EjectionEvent("m0", True, 2.0, 32.0, "consecutive_failures")
    assert decode(encode(event)) == event
    assert d.tick(3.0) == ()  # events are handed out once


def test_readmission_after_the_ejection_time():
    d = detector(consecutive_failures=1, base_ejection_s=30)
    fail(d, "m1", 1, 10.0)
    assert d.ejected(39.9) == {"m1"}
    assert d.ejected(40.0) == frozenset()  # expired, even before tick()
    d.tick(20.0)
    (event,) = d.tick(40.0)
    assert (event.member, event.ejected, event.reason, event.until_s) == ("m1", False, "expired", None)
    assert d.status("m1").state == ROUTABLE
    assert d.status("m1").consecutive_failures == 0


@settings(max_examples=40, deadline=None)
@given(
    base=st.integers(1, 50),
    cap_factor=st.integers(1, 6),
    ejections=st.integers(1, 10),
)
def test_ejection_time_grows_linearly_up_to_the_cap(base, cap_factor, ejections):
    max_s = base * cap_factor
    d = detector(consecutive_failures=1, base_ejection_s=base, max_ejection_s=max_s, interval_s=1000)
    now = 0.0
    durations = []
    for _ in range(ejections):
        fail(d, "m0", 1, now)
        until = d.status("m0").ejected_until_s
        durations.append(until - now)
        now = until  # readmitted exactly at expiry, then fails again at once
        d.tick(now)
    assert durations == [min(base * k, max_s) for k in range(1, ejections + 1)]


def test_multiplier_decays_one_per_full_healthy_interval():
    d = detector(consecutive_failures=1, base_ejection_s=5, interval_s=10)
    d.tick(0.0)
    fail(d, "m0", 1, 0.0)  # 1st ejection: 5 s
    d.tick(5.0)  # readmitted at 5
    fail(d, "m0", 1, 5.0)  # 2nd ejection: 10 s, until 15
    assert d.status("m0").ejection_multiplier == 2
    d.tick(10.0)
    d.tick(15.0)  # readmitted at 15; the interval [10, 20) is partly ejected: no decay
    d.tick(20.0)
    assert d.status("m0").ejection_multiplier == 2
    d.tick(30.0)  # [20, 30) fully healthy
    assert d.status("m0").ejection_multiplier == 1
    d.record("m0", True, 35.0)
    d.tick(40.0)
    assert d.status("m0").ejection_multiplier == 0
    fail(d, "m0", 1, 41.0)
    assert d.status("m0").ejected_until_s == 41.0 + 5


def test_a_failure_in_the_interval_stops_decay():
    d = detector(consecutive_failures=2, base_ejection_s=5, interval_s=10)
    d.tick(0.0)
    fail(d, "m0", 2, 0.0)
    d.tick(5.0)
    d.tick(20.0)
    assert d.status("m0").ejection_multiplier == 1
    fail(d, "m0", 1, 25.0)  # one failure, not enough to eject, but not healthy either
    d.tick(30.0)
    assert d.status("m0").ejection_multiplier == 1
    d.tick(40.0)
    assert d.status("m0").ejection_multiplier == 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), percent=st.sampled_from([0, 10, 25, 33.3, 50, 75, 99, 100]))
def test_never_ejects_more_than_the_percentage_cap(n, percent):
    d = detector(n, consecutive_failures=1, max_ejection_percent=percent)
    for i in range(n):
        fail(d, f"m{i}", 3, 1.0)
    allowed = math.floor(n * percent / 100 + 1e-9)
    assert d.max_ejected() == allowed
    assert len(d.ejected(1.0)) == allowed
    if percent < 100:
        assert len(d.ejected(1.0)) < n


def test_cap_examples_documented_in_the_module():
    assert detector(3, max_ejection_percent=50).max_ejected() == 1
    assert detector(1, max_ejection_percent=50).max_ejected() == 0
    assert detector(2, max_ejection_percent=50).max_ejected() == 1
    assert detector(5, max_ejection_percent=100).max_ejected() == 5


def test_blocked_member_is_ejected_once_room_frees_up():
    d = detector(2, consecutive_failures=2, max_ejection_percent=50, base_ejection_s=10)
    fail(d, "m0", 2, 0.0)
    fail(d, "m1", 2, 0.0)
    assert d.ejected(0.0) == {"m0"}
    d.tick(10.0)  # m0 readmitted
    fail(d, "m1", 1, 10.0)  # the streak was kept, so the next failure ejects
    assert d.ejected(10.0) == {"m1"}


def test_failure_rate_ejection_at_interval_end():
    d = detector(4, consecutive_failures=None, failure_rate_threshold=50, minimum_requests=10, interval_s=10)
    d.tick(0.0)
    for i in range(10):
        d.record("m0", i % 5 < 3, 1.0)  # 40% failures: below threshold
        d.record("m1", i % 2 == 0, 1.0)  # 50%: at threshold
    for i in range(9):
        d.record("m2", False, 1.0)  # 100% but below minimum_requests
    assert d.tick(9.0) == ()
    events = d.tick(10.0)
    assert [(e.member, e.reason) for e in events] == [("m1", "failure_rate")]
    assert d.ejected(10.0) == {"m1"}
    assert d.status("m0").interval_requests == 0  # counters reset each interval


def test_failure_rate_ejects_the_worst_first_under_the_cap():
    d = detector(4, consecutive_failures=None, failure_rate_threshold=30, minimum_requests=5,
                 max_ejection_percent=25, interval_s=10)
    d.tick(0.0)
    for i in range(10):
        d.record("m0", i % 2 == 0, 1.0)  # 50%
        d.record("m3", i % 5 != 0, 1.0)  # 20%
        d.record("m2", i >= 8, 1.0)  # 80%
    assert d.ejected(10.0) == frozenset()
    d.tick(10.0)
    assert d.ejected(10.0) == {"m2"}


def test_remove_and_add_members():
    d = detector(3, consecutive_failures=1)
    fail(d, "m0", 1, 1.0)
    d.tick(1.0)
    d.remove_member("m0", 2.0)
    (event,) = d.tick(2.0)
    assert (event.member, event.ejected, event.reason) == ("m0", False, "removed")
    assert d.members == ("m1", "m2")
    d.add_member("m0")
    assert d.status("m0").ejection_multiplier == 0
    with pytest.raises(ConfigError):
        d.add_member("m0")
    with pytest.raises(UnknownNodeError):
        d.record("nope", True, 3.0)
    with pytest.raises(UnknownNodeError):
        d.remove_member("nope")
    with pytest.raises(InvalidArgumentError):
        d.record("m1", 1, 3.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"base_ejection_s": 0},
        {"base_ejection_s": 40, "max_ejection_s": 30},
        {"max_ejection_percent": 101},
        {"max_ejection_percent": -1},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 150},
        {"minimum_requests": 0},
        {"interval_s": -1},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        OutlierDetector(**kwargs)


def test_event_validation():
    with pytest.raises(ConfigError):
        EjectionEvent("m", True, 1.0, None, "consecutive_failures")
    with pytest.raises(ConfigError):
        EjectionEvent("m", True, 5.0, 1.0, "consecutive_failures")
    with pytest.raises(ConfigError):
        EjectionEvent("m", False, 1.0, 3.0, "expired")
    with pytest.raises(ConfigError):
        EjectionEvent("m", True, 1.0, 3.0, "bored")


def test_transition_table_is_closed():
    states = {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert {ROUTABLE, EJECTED} <= states
    for (state, _), target in TRANSITIONS.items():
        assert state != target


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    percent=st.sampled_from([20, 50, 100]),
    steps=st.lists(
        st.tuples(st.sampled_from(["ok", "fail", "tick"]), st.integers(0, 5), st.floats(0, 8)), max_size=120
    ),
)
def test_random_histories_keep_every_invariant(n, percent, steps):
    d = detector(n, consecutive_failures=2, base_ejection_s=5, max_ejection_s=20, max_ejection_percent=percent,
                 failure_rate_threshold=60, minimum_requests=3, interval_s=4)
    now = 0.0
    events = []
    for kind, i, dt in steps:
        now += dt
        member = f"m{i % n}"
        if kind == "tick":
            events.extend(d.tick(now))
        else:
            d.record(member, kind == "ok", now)
        d.check_invariants()
        assert len(d.ejected(now)) <= d.max_ejected()
    events.extend(d.tick(now))
    # Per member the event stream alternates eject / readmit, starting with an ejection.
    for i in range(n):
        flags = [e.ejected for e in events if e.member == f"m{i}"]
        assert flags == [k % 2 == 0 for k in range(len(flags))]
    for e in events:
        if e.ejected:
            assert 5 - 1e-9 <= e.until_s - e.at_s <= 20 + 1e-9
    # After the final tick, the members still ejected are exactly those whose last event ejected them.
    last = {}
    for e in events:
        last[e.member] = e.ejected
    assert d.ejected(now) == {m for m, ejected in last.items() if ejected}
