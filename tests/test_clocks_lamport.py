"""Lamport clock and timestamp: rules, total order, codec, bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.clocks import LamportClock, LamportTimestamp
from ddia_ray.codec import FORMAT_1, decode, encode
from ddia_ray.errors import ConfigError, CorruptRecordError, InvalidArgumentError

node_ids = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
times = st.integers(min_value=0, max_value=2**62)


def test_tick_counts_local_events():
    clock = LamportClock("a")
    assert clock.time == 0
    assert [clock.tick() for _ in range(3)] == [1, 2, 3]
    assert clock.time == 3


def test_observe_takes_max_plus_one():
    clock = LamportClock("a", time=5)
    assert clock.observe(9) == 10  # remote ahead: jump past it
    assert clock.observe(2) == 11  # remote behind: still advance
    assert clock.observe(LamportTimestamp(11, "b")) == 12  # equal times: +1
    assert clock.time == 12


def test_stamp_does_not_tick():
    clock = LamportClock("n1", time=4)
    assert clock.stamp() == LamportTimestamp(4, "n1")
    assert clock.time == 4


def test_timestamps_ordered_by_time_then_node():
    stamps = [LamportTimestamp(2, "a"), LamportTimestamp(1, "z"), LamportTimestamp(2, "b")]
    stamps.append(LamportTimestamp(1, "a"))
    assert sorted(stamps) == [
        LamportTimestamp(1, "a"),
        LamportTimestamp(1, "z"),
        LamportTimestamp(2, "a"),
        LamportTimestamp(2, "b"),
    ]
    assert LamportTimestamp(1, "z") < LamportTimestamp(2, "a")
    assert LamportTimestamp(2, "b") >= LamportTimestamp(2, "a")
    assert not LamportTimestamp(2, "b") <= LamportTimestamp(2, "a")


def test_comparison_with_other_types_is_refused():
    with pytest.raises(TypeError):
        LamportTimestamp(1, "a") < 2  # noqa: B015


@settings(max_examples=200)
@given(times, node_ids, times, node_ids)
def test_order_is_total_and_matches_tuple_order(t1, n1, t2, n2):
    a, b = LamportTimestamp(t1, n1), LamportTimestamp(t2, n2)
    assert (a < b) == ((t1, n1) < (t2, n2))
    assert (a > b) == ((t1, n1) > (t2, n2))
    assert (a <= b) == ((t1, n1) <= (t2, n2))
    assert (a >= b) == ((t1, n1) >= (t2, n2))
    assert sum([a < b, a == b, a > b]) == 1


@settings(max_examples=100)
@given(times, node_ids)
def test_codec_round_trip(t, n):
    stamp = LamportTimestamp(t, n)
    back = decode(encode(stamp), expect=LamportTimestamp)
    assert back == stamp and hash(back) == hash(stamp)


@settings(max_examples=100)
@given(st.lists(st.one_of(st.none(), times.map(lambda t: t % 1000)), max_size=30))
def test_clock_never_goes_backwards(ops):
    clock = LamportClock("a")
    previous = clock.time
    for op in ops:
        now = clock.tick() if op is None else clock.observe(op)
        assert now > previous
        if op is not None:
            assert now > op
        previous = now


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: LamportTimestamp(-1, "a"), ConfigError),
        (lambda: LamportTimestamp(1.0, "a"), InvalidArgumentError),
        (lambda: LamportTimestamp(True, "a"), InvalidArgumentError),
        (lambda: LamportTimestamp(1, 7), InvalidArgumentError),
        (lambda: LamportTimestamp(1, ""), ConfigError),
        (lambda: LamportClock(3), InvalidArgumentError),
        (lambda: LamportClock("a", time=-2), ConfigError),
        (lambda: LamportClock("a").observe("3"), InvalidArgumentError),
        (lambda: LamportClock("a").observe(-1), ConfigError),
        (lambda: LamportClock("a").observe(2.5), InvalidArgumentError),
    ],
)
def test_bad_input_raises_project_errors(make, error):
    with pytest.raises(error):
        make()


def test_decode_validates_fields():
    body = msgpack.packb({"t": "clock.lamport", "v": 1, "f": {"time": -5, "node": "a"}})
    with pytest.raises(CorruptRecordError, match="invalid field values"):
        decode(msgpack.packb(msgpack.ExtType(FORMAT_1, body)))
