"""The event store's row layout: one chunk row per append (``ddia_ray/events/keys.py``), the
rows an append writes, index pages cut inside chunks, and rows the layout cannot read. Runs the
replicas' own procedures over a LocalBackend."""

from __future__ import annotations

import random

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from ddia_ray import codec
from ddia_ray.errors import CorruptRecordError, InvalidArgumentError
from ddia_ray.events import keys
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData

TYPES = ("A", "B", "C")


def _client() -> EventStoreClient:
    return EventStoreClient(LocalBackend())


def test_an_append_writes_one_chunk_and_two_rows_per_event():
    client = _client()
    client.append("user-1", [EventData("seed", "A", b"")])
    before = dict(client.backend.state.data)
    events = [EventData(f"e{i}", TYPES[i % 3], b"%d" % i, b"m") for i in range(100)]
    client.append("user-7", events)
    new = {k: v for k, v in client.backend.state.data.items() if before.get(k) != v}
    by_tag: dict = {}
    for k in new:
        by_tag[k[:1]] = by_tag.get(k[:1], 0) + 1
    # a and i per event; one chunk, one category row, a type row per type; the head and the sequence.
    assert by_tag == {b"a": 100, b"i": 100, b"s": 1, b"c": 1, b"t": 3, b"h": 1, b"g": 1}
    chunk = keys.Chunk.of(new[keys.chunk_key("user-7", 99)])
    assert (chunk.first_version, chunk.first_position, chunk.last_position) == (0, 1, 100)
    assert chunk.event(42)[1:4] == ("e42", "A", b"42")


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.tuples(st.sampled_from(("order-1", "order-2", "user-1")), st.integers(1, 6)),
                        min_size=1, max_size=12),
       seed=st.integers(0, 2**16), start=st.integers(0, 40), max_count=st.none() | st.integers(1, 7))
def test_index_pages_cut_inside_chunks_equal_a_filtered_all(batches, seed, start, max_count):
    rng = random.Random(seed)
    client = _client()
    n = 0
    for stream, count in batches:
        client.append(stream, [EventData(f"e{n + i}", rng.choice(TYPES), b"") for i in range(count)])
        n += count
    everything = client.read_all()
    for kind, name, keep in (("category", "order", lambda e: e.stream.startswith("order-")),
                             ("type", "B", lambda e: e.type == "B")):
        want = [e for e in everything if e.position >= start and keep(e)][:max_count]
        read = client.read_category if kind == "category" else client.read_type
        assert read(name, start, max_count=max_count) == want, (kind, name)


@given(stream=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
       ints=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2))
def test_rows_built_on_a_packed_prefix_are_the_bytes_pack_writes(stream, ints):
    built = keys.pack_prefix(3, stream) + b"".join(keys.int_field(x) for x in ints)
    assert built == keys.pack(stream, *ints)
    assert keys.unpack(built, 3, "row") == (stream, *ints)


def test_a_row_of_the_older_layout_is_refused_not_misread():
    client = _client()
    client.append("user-1", [EventData("e0", "A", b"x")])
    # Format 1 held one event per row under its version: (position, id, type, data, metadata, created).
    client.backend.state.data[keys.chunk_key("user-1", 0)] = codec.encode((1, 0, "e0", "A", b"x", b"", 1))
    with pytest.raises(CorruptRecordError, match="format 1"):
        client.read_stream("user-1")


def test_an_append_whose_created_time_is_not_an_int_is_refused_and_writes_nothing():
    client = _client()
    before = dict(client.backend.state.data)
    for created in ("now", 1.5, None):
        with pytest.raises(InvalidArgumentError, match="created time"):
            client.call("events.append", ("user-1", "any", (("e0", "A", b"x", b""),), created))
    assert client.backend.state.data == before  # a chunk with a bad time would fail every read after it


@pytest.mark.parametrize("fields", [
    (0, 0, 1, ("a", "b"), ("A",), (b"", b""), (b"", b"")),  # a column shorter than the ids
    (0, 0, 1, (), (), (), ()),                               # no event at all
    (0, "0", 1, ("a",), ("A",), (b"",), (b"",)),             # a position that is not an int
])
def test_a_damaged_chunk_is_refused(fields):
    with pytest.raises(CorruptRecordError):
        keys.Chunk.of(keys.pack(*fields))
