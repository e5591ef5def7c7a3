"""Hybrid logical clock: the paper's rules case by case, drift and overflow rejection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.clocks import HLCTimestamp, HybridClock
from ddia_ray.codec import decode, encode
from ddia_ray.errors import ClockDriftError, ConfigError, InvalidArgumentError


class FakeClock:
    """A settable physical clock in integer nanoseconds."""

    def __init__(self, now_ns: int = 1_000) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def make(pt: int = 1_000, drift: int = 100, **kw) -> tuple[HybridClock, FakeClock]:
    fake = FakeClock(pt)
    return HybridClock("a", fake, drift, **kw), fake


def test_local_events_follow_physical_time():
    clock, fake = make(1_000)
    assert clock.now() == HLCTimestamp(1_000, 0, "a")
    assert clock.now() == HLCTimestamp(1_000, 1, "a")  # physical clock did not move
    fake.now_ns = 1_500
    assert clock.now() == HLCTimestamp(1_500, 0, "a")  # counter resets when pt advances


def test_local_event_when_physical_clock_goes_backwards():
    clock, fake = make(2_000)
    clock.now()
    fake.now_ns = 1_200  # NTP stepped the clock back
    assert clock.now() == HLCTimestamp(2_000, 1, "a")


@settings(max_examples=100)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3_000)), max_size=30))
def test_now_pair_is_now_without_the_timestamp(steps):
    # Two clocks fed the same physical readings: one stamps with now(), the other with now_pair().
    (a, fa), (b, fb) = make(1_000, logical_limit=8), make(1_000, logical_limit=8)
    for pair, pt in steps:
        fa.now_ns = fb.now_ns = pt
        try:
            want = a.now()
        except ClockDriftError:
            with pytest.raises(ClockDriftError, match="logical_limit=8"):
                b.now_pair()
        else:
            assert (b.now_pair() if pair else b.now()) in ((want.wall_ns, want.logical), want)
        assert a.last == b.last


def test_receive_remote_ahead_within_bound():
    clock, _ = make(1_000, drift=100)
    clock.now()
    assert clock.update(HLCTimestamp(1_050, 7, "b")) == HLCTimestamp(1_050, 8, "a")  # l == l_m


def test_receive_all_equal_takes_max_counter():
    clock, _ = make(1_000)
    clock.now()
    clock.now()  # (1000, 1)
    assert clock.update(HLCTimestamp(1_000, 5, "b")) == HLCTimestamp(1_000, 6, "a")
    assert clock.update(HLCTimestamp(1_000, 2, "b")) == HLCTimestamp(1_000, 7, "a")


def test_receive_local_ahead_keeps_local_wall_time():
    clock, fake = make(5_000)
    clock.now()
    fake.now_ns = 4_000
    assert clock.update(HLCTimestamp(3_000, 9, "b")) == HLCTimestamp(5_000, 1, "a")  # l == l'


def test_receive_physical_ahead_resets_counter():
    clock, fake = make(1_000)
    clock.now()
    fake.now_ns = 9_000
    assert clock.update(HLCTimestamp(2_000, 3, "b")) == HLCTimestamp(9_000, 0, "a")


def test_drift_rejection_names_node_distance_and_bound_and_keeps_state():
    clock, _ = make(1_000, drift=100)
    clock.now()
    clock.update(HLCTimestamp(1_100, 0, "b"))  # exactly at the bound: accepted
    before = clock.last
    with pytest.raises(ClockDriftError) as info:
        clock.update(HLCTimestamp(1_101, 0, "rogue"))
    message = str(info.value)
    assert "'rogue'" in message and "101 ns" in message and "max_drift_ns=100" in message
    assert (info.value.remote_node, info.value.ahead_ns, info.value.max_drift_ns) == ("rogue", 101, 100)
    assert clock.last == before
    assert clock.now() == HLCTimestamp(1_100, before.logical + 1, "a")


@settings(max_examples=100)
@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 50))
def test_any_far_future_timestamp_is_rejected_without_effect(ahead, drift, logical):
    clock, fake = make(10**7, drift=drift)
    clock.now()
    before = clock.last
    with pytest.raises(ClockDriftError):
        clock.update(HLCTimestamp(fake.now_ns + drift + ahead, logical, "b"))
    assert clock.last == before


def test_logical_overflow_on_local_events():
    clock, _ = make(1_000, logical_limit=3)
    stamps = [clock.now() for _ in range(3)]
    assert [s.logical for s in stamps] == [0, 1, 2]
    with pytest.raises(ClockDriftError, match="logical_limit=3"):
        clock.now()
    assert clock.last == stamps[-1]


def test_logical_overflow_on_receive_names_remote_and_keeps_state():
    clock, _ = make(1_000, logical_limit=10)
    clock.now()
    with pytest.raises(ClockDriftError, match="'b'") as info:
        clock.update(HLCTimestamp(1_000, 9, "b"))
    assert info.value.remote_node == "b"
    assert clock.last == HLCTimestamp(1_000, 0, "a")


def test_default_logical_limit_is_two_to_the_sixteen():
    clock = HybridClock("a", FakeClock(5))
    assert clock.logical_limit == 2**16
    assert clock.update(HLCTimestamp(5, 2**16 - 2, "b")).logical == 2**16 - 1
    with pytest.raises(ClockDriftError):
        clock.now()


def test_timestamps_ordered_by_wall_logical_node():
    a = HLCTimestamp(10, 5, "z")
    b = HLCTimestamp(11, 0, "a")
    c = HLCTimestamp(11, 0, "b")
    d = HLCTimestamp(11, 1, "a")
    assert sorted([d, c, b, a]) == [a, b, c, d]
    assert a < b <= c < d and d > a and c >= b


@settings(max_examples=100)
@given(st.integers(0, 2**63), st.integers(0, 2**16), st.text("xyz", min_size=1, max_size=3))
def test_codec_round_trip(wall, logical, node):
    stamp = HLCTimestamp(wall, logical, node)
    assert decode(encode(stamp), expect=HLCTimestamp) == stamp


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: HLCTimestamp(-1, 0, "a"), ConfigError),
        (lambda: HLCTimestamp(1, -1, "a"), ConfigError),
        (lambda: HLCTimestamp(1.5, 0, "a"), InvalidArgumentError),
        (lambda: HLCTimestamp(1, 0, b"a"), InvalidArgumentError),
        (lambda: HybridClock(1), InvalidArgumentError),
        (lambda: HybridClock("a", physical_clock=42), InvalidArgumentError),
        (lambda: HybridClock("a", FakeClock(), -1), ConfigError),
        (lambda: HybridClock("a", FakeClock(), 1.0), InvalidArgumentError),
        (lambda: HybridClock("a", FakeClock(), logical_limit=0), ConfigError),
        (lambda: HybridClock("a", lambda: 1.5).now(), InvalidArgumentError),
        (lambda: HybridClock("a", lambda: -1).now(), ConfigError),
        (lambda: HybridClock("a", FakeClock()).update((1, 0)), InvalidArgumentError),
    ],
)
def test_bad_input_raises_project_errors(build, error):
    with pytest.raises(error):
        build()
