"""The bytes of a key's versions (ddia_ray/replication/state_format.py): canonical format 2, format 1
still read, and every malformed shape refused with a codec error naming it."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray import codec, crdt
from ddia_ray.clocks import DVVSet
from ddia_ray.errors import CorruptRecordError, UnknownVersionError
from ddia_ray.replication.resolvers import Sibling
from ddia_ray.replication.state_format import STATE_FORMAT, current, decode_state, encode_state

siblings = st.builds(Sibling, st.one_of(st.none(), st.binary(max_size=12)), st.integers(-2**63, 2**63 - 1),
                     st.text(max_size=4), st.integers(0, 2**32))


@st.composite
def states(draw):
    nodes = sorted(draw(st.sets(st.text(min_size=1, max_size=5), max_size=4)))
    entries = []
    for node in nodes:
        values = tuple(draw(st.lists(siblings, max_size=3)))
        counter = draw(st.integers(max(1, len(values)), 2**63 - 1))
        entries.append((node, counter, values))
    return DVVSet(tuple(entries), tuple(draw(st.lists(siblings, max_size=3))))


@settings(max_examples=300, deadline=None)
@given(states())
def test_a_state_round_trips_in_format_2_and_its_bytes_are_canonical(state):
    data = encode_state(state)
    assert data[:2] == bytes((0x93, STATE_FORMAT))
    back = decode_state(data)
    assert back == state and encode_state(back) == data
    # what replicas wrote before format 2 reads as the same state, and is encoded again to format 2
    old = codec.encode(state)
    assert decode_state(old) == state
    assert current(old, state) == data and current(data, state) is data


def test_format_2_is_smaller_than_the_codec_record():
    state = DVVSet((("r0", 1, (Sibling(b"v" * 100, 1_700_000_000_000_000_000, "r0", 0),)),), ())
    assert len(encode_state(state)) == 126 < len(codec.encode(state)) == 220


def test_crdt_states_and_dvvsets_of_other_values_keep_their_records():
    counter = crdt.new("pncounter")
    counter.increment("n", 3)
    assert decode_state(encode_state(counter)) == counter
    assert current(encode_state(counter), counter) == encode_state(counter)
    plain = DVVSet((("r0", 1, (b"raw",)),), ())  # a DVVSet of plain values: the codec's record
    assert encode_state(plain) == codec.encode(plain) and decode_state(encode_state(plain)) == plain


def _packed(*top) -> bytes:
    return msgpack.packb(top, use_bin_type=True)


S = (b"v", 1, "n", 0)


@pytest.mark.parametrize("data, says", [
    (_packed(2, [("b", 1, [S]), ("a", 1, [S])], []), "sorted by node"),
    (_packed(2, [("a", 1, [S]), ("a", 2, [S])], []), "sorted by node"),
    (_packed(2, [("a", 0, [])], []), "counter"),
    (_packed(2, [("a", 1, [S, S])], []), "more siblings than its counter"),
    (_packed(2, [("", 1, [S])], []), "node is not a str"),
    (_packed(2, [("a", 1, [("v", 1, "n", 0)])], []), "value is a str"),
    (_packed(2, [("a", 1, [(b"v", True, "n", 0)])], []), "wrong type"),
    (_packed(2, [("a", 1, [(b"v", 1, "n", -1)])], []), "negative"),
    (_packed(2, [("a", 1, [(b"v", 1, "n")])], []), "is not [value, timestamp, node, logical]"),
    (_packed(2, [("a", 1)], []), "is not [node, counter, siblings]"),
    (_packed(2, [], [(b"y", 2, "c", 0), (b"x", 1, "", 0)]), "canonical order"),
    (_packed(2, {"a": 1}, []), "not [format, entries, anonymous]"),
    (_packed(2, [("a", 1, [S])], [])[:-3], "not valid msgpack"),
])
def test_a_malformed_state_is_refused_with_what_is_wrong(data, says):
    with pytest.raises(CorruptRecordError, match=re.escape(says)):
        decode_state(data)


def test_a_state_of_a_format_this_reader_does_not_know_names_it():
    with pytest.raises(UnknownVersionError, match="version 3") as caught:
        decode_state(_packed(3, [], []))
    assert caught.value.version == 3
    with pytest.raises(CorruptRecordError):
        decode_state(_packed("two", [], []))
