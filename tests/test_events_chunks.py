"""The event store's row layout: one chunk row per append (``ddia_ray/events/keys.py``), the
rows an append writes, index pages cut inside chunks, and rows the layout cannot read. Runs the
replicas' own procedures over a LocalBackend."""

from __future__ import annotations

import random

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from ddia_ray import codec
from ddia_ray.errors import (CodecError, CorruptRecordError, DuplicateEventIdError, InvalidArgumentError,
                             WrongExpectedVersionError)
from ddia_ray.events import consumer_groups, keys, procedures, queries
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import NO_STREAM, STREAM_EXISTS, EventData, RecordedEvent

TYPES = ("A", "B", "C")


def _client() -> EventStoreClient:
    return EventStoreClient(LocalBackend())


def _filled(batches, rng: random.Random) -> tuple[EventStoreClient, int]:
    """A store holding one append per ``(stream, count)`` of ``batches`` (event ``e<n>`` has data
    ``b"<n>"`` and a random type), and how many events that is."""
    client = _client()
    n = 0
    for stream, count in batches:
        client.append(stream, [EventData(f"e{n + i}", rng.choice(TYPES), b"%d" % (n + i)) for i in range(count)])
        n += count
    return client, n


def test_an_append_writes_one_chunk_and_no_row_per_event():
    client = _client()
    client.append("user-1", [EventData("seed", "A", b"")])
    before = dict(client.backend.state.data)
    events = [EventData(f"e{i}", TYPES[i % 3], b"%d" % i, b"m") for i in range(100)]
    client.append("user-7", events)
    new = {k: v for k, v in client.backend.state.data.items() if before.get(k) != v}
    by_tag: dict = {}
    for k in new:
        by_tag[k[:1]] = by_tag.get(k[:1], 0) + 1
    # one chunk, its $all row, one category row, a type row per type; the head and the sequence:
    # nothing per event.
    assert by_tag == {b"s": 1, b"b": 1, b"c": 1, b"t": 3, b"h": 1, b"g": 1}
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


@settings(max_examples=80, deadline=None)
@given(batches=st.lists(st.tuples(st.sampled_from(("order-1", "order-2", "user-1")), st.integers(1, 9)),
                        min_size=1, max_size=12),
       seed=st.integers(0, 2**16), start=st.integers(0, 60), page=st.integers(1, 12),
       kind=st.sampled_from((None, "stream", "type")))
def test_all_pages_read_by_chunk_are_the_events_in_position_order(batches, seed, start, page, kind):
    client, n = _filled(batches, random.Random(seed))
    # The model: every stream read whole, merged by position (reads that never touch $all's rows).
    streams = {stream for stream, _ in batches}
    model = sorted((e for s in streams for e in client.read_stream(s)), key=lambda e: e.position)
    assert [e.position for e in model] == list(range(n))
    prefix = {"stream": "order-", "type": "B", None: ""}[kind]
    keep = {"stream": lambda e: e.stream.startswith("order-"), "type": lambda e: e.type.startswith("B"),
            None: lambda e: True}[kind]
    got, pages, position, ended = [], 0, start, False
    for rows, position, at_end in client.pages_all(start, page=page, stream_prefix=prefix if kind == "stream" else None,
                                                   type_prefix=prefix if kind == "type" else None):
        assert len(rows) <= page
        assert all(r[2] < position for r in rows)  # the next page starts after every row of this one
        got += rows
        pages += 1
        ended = at_end
        assert pages <= n + 2, "the pages do not advance"
    assert ended and position == max(n, start)  # a read from beyond the end stays where it was asked to start
    assert [e.position for e in model if e.position >= start and keep(e)] == [r[2] for r in got]
    assert [tuple(e.__getattribute__(f) for f in ("stream", "version", "id", "data")) for e in model
            if e.position >= start and keep(e)] == [(r[0], r[1], r[3], r[5]) for r in got]


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.tuples(st.sampled_from(("order-1", "order-2", "user-1")), st.integers(1, 20)),
                        min_size=1, max_size=8),
       picks=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 30)), min_size=1, max_size=6),
       seed=st.integers(0, 2**16))
def test_a_group_reads_runs_and_scattered_positions_as_one_lookup_each(batches, picks, seed):
    client, n = _filled(batches, random.Random(seed))
    by_position = {e.position: e for e in client.read_all()}
    # Runs long enough to go by chunk, short ones and single positions, past the end too, shuffled.
    positions = list(dict.fromkeys(p for start, length in picks for p in range(start, start + length)))
    random.Random(seed).shuffle(positions)
    answer = client.backend.query_nowait("events.read_positions", (tuple(positions),)).result()
    rows = consumer_groups.positions_rows(positions, answer)
    assert [r[2] for r in rows] == [p for p in positions if p < n]
    assert all(by_position[r[2]] == RecordedEvent(*r) for r in rows)


def test_a_retry_is_recognised_at_the_place_it_names():
    client = _client()
    batch = [EventData("a", "A", b"1"), EventData("b", "A", b"2")]
    first = client.append("user-1", batch, NO_STREAM)
    later = client.append("user-1", [EventData("c", "A", b"3")], 1)
    for i in range(3 * keys.RECENT_APPENDS):
        client.append("user-1", [EventData(f"x{i}", "B", b"")])
    kept = dict(client.backend.state.data)
    # An exact expected version names the place: recognised however late, nothing written.
    assert client.append("user-1", batch, NO_STREAM) == first
    assert client.append("user-1", [EventData("c", "A", b"3")], 1) == later
    # The same first id at that place with other ids is not a retry: refused whole.
    with pytest.raises(DuplicateEventIdError) as e:
        client.append("user-1", [EventData("a", "A", b"1")], NO_STREAM)
    assert e.value.event_id == "a"
    # Other ids at a place that is taken: the expected version is what is wrong.
    with pytest.raises(WrongExpectedVersionError):
        client.append("user-1", [EventData("z", "A", b"")], NO_STREAM)
    assert client.backend.state.data == kept


def test_a_retry_under_any_is_recognised_among_the_streams_recent_appends():
    client = _client()
    batch = [EventData("a", "A", b"1"), EventData("b", "A", b"2")]
    first = client.append("user-1", batch)
    for i in range(keys.RECENT_APPENDS - 1):
        client.append("user-1", [EventData(f"x{i}", "B", b"")])
        client.append("order-1", [EventData(f"o{i}", "B", b"")])  # other streams' appends do not count
    kept = dict(client.backend.state.data)
    assert client.append("user-1", batch) == first
    assert client.append("user-1", batch, STREAM_EXISTS) == first
    with pytest.raises(DuplicateEventIdError):
        client.append("user-1", batch[:1])  # starts as that append, but is not it
    assert client.backend.state.data == kept
    # One more append and it is out of the window: the same ids are new events now (ids are not
    # unique across the store; docs/events.md says so).
    client.append("user-1", [EventData("y", "B", b"")])
    again = client.append("user-1", batch)
    assert again.first_version == first.next_expected_version + keys.RECENT_APPENDS + 1
    assert [e.id for e in client.read_stream("user-1")].count("a") == 2


def test_a_head_row_whose_recent_appends_are_damaged_is_refused():
    client = _client()
    client.append("user-1", [EventData("a", "A", b"")])
    head = keys.Head(client.backend.state.data[keys.head_key("user-1")])
    assert head.recent == (("a", 0),)
    for damaged in ((("a",),), ["a", 0], (("a", 0), 5), ((0, "a"),)):
        head.recent = damaged
        client.backend.state.data[keys.head_key("user-1")] = head.row()
        with pytest.raises(CorruptRecordError, match="recent appends"):
            client.append("user-1", [EventData("b", "A", b"")])


@given(types=st.lists(st.sampled_from([f"T{i}" for i in range(12)]), min_size=1, max_size=60),
       first=st.integers(0, 2**40))
def test_type_positions_are_each_types_positions_in_order(types, first):
    n = len(types)
    chunk = keys.Chunk(0, first, 1, tuple(f"e{i}" for i in range(n)), tuple(types), (b"",) * n, (b"",) * n)
    want: dict = {}
    for j, t in enumerate(types):
        want.setdefault(t, []).append(first + j)
    got = chunk.type_positions()
    assert got == want and list(got) == list(want)  # the same positions, the types in first-seen order


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
    # A column holding another type (found by fuzzing: it decoded, and a reader got an int for data).
    (0, 0, 1, ("a", "b"), ("A", "A"), (b"x", 4), (b"", b"")),
    (0, 0, 1, ("a",), ("A",), (b"x",), (0,)),
    (0, 0, 1, (7,), ("A",), (b"x",), (b"",)),
    (0, 0, 1, ("a",), (b"A",), (b"x",), (b"",)),
])
def test_a_damaged_chunk_is_refused(fields):
    with pytest.raises(CorruptRecordError):
        keys.Chunk.of(keys.pack(*fields))


def test_each_kind_of_row_stays_out_of_the_ranges_other_kinds_scan():
    from ddia_ray.events import archive, consumer_groups

    names = ("a", "b", "user-1", "zz", "p", "order")
    rows = {
        "global": [keys.GLOBAL], "head": [keys.head_key(n) for n in names],
        "chunk": [keys.chunk_key(n, v) for n in names for v in (0, 7, 2**40)],
        "page": [keys.page_key(p) for p in (0, 1, 2**40)],
        "category": [keys.category_key(n, p) for n in names for p in (0, 9)],
        "type": [keys.type_key(n, p) for n in names for p in (0, 9)],
        "snapshot": [keys.snapshot_key(n) for n in names], "checkpoint": [keys.checkpoint_key(n) for n in names],
        "model": [keys.model_key(n, b"k") for n in names],
        "group": [consumer_groups._group_key(n) for n in names],
        "parked": [consumer_groups._parked_key(n, 3) for n in names],
        "archive": [archive._HEAD, archive._file_key(5), *(archive._stream_key(n, 2) for n in names)],
    }
    scanned = {"page": [keys.page_range()],
               "chunk": [keys.stream_range(n) for n in names],
               "category": [keys.index_range("category", n) for n in names],
               "type": [keys.index_range("type", n) for n in names],
               "model": [keys.model_range(n) for n in names],
               "parked": [consumer_groups._parked_range(n) for n in names]}
    for kind, ranges in scanned.items():
        for lo, hi in ranges:
            strangers = [(other, k) for other, ks in rows.items() if other != kind for k in ks if lo <= k < hi]
            assert not strangers, (kind, lo, strangers[:3])


def test_a_page_that_takes_a_few_events_of_a_big_chunk_ships_only_those():
    client = _client()
    client.append("big-1", [EventData(f"e{i}", TYPES[i % 3], b"x" * 50) for i in range(1000)])
    state = client.backend.state
    body = state.get(keys.chunk_key("big-1", 999))
    parts, nxt, at_end = queries.read_all_packed(state, (500, False, 10, None, ""))
    assert (nxt, at_end) == (510, False) and len(parts) == 1
    stream, lo, hi, sent = parts[0]
    assert (stream, lo, hi) == ("big-1", 500, 509) and len(sent) < len(body) // 50
    assert [r[3] for r in keys.part_rows(parts)] == [f"e{i}" for i in range(500, 510)]
    # Most of a chunk: its stored bytes as they are, not decoded and packed again.
    parts, _, _ = queries.read_all_packed(state, (100, False, 1000, None, ""))
    assert [p[3] for p in parts] == [body]
    assert [r[2] for r in keys.part_rows(parts)] == list(range(100, 1000))
    # A type filter keeps the page's matches, and the reader applies it inside the part.
    parts, nxt, _ = queries.read_all_packed(state, (0, False, 5, "type", "B"))
    assert [r[2] for r in keys.part_rows(parts, "B")] == [1, 4, 7, 10, 13] and nxt == 14


@pytest.mark.parametrize("part", [
    ("s", 0, 0),  # too short
    ["s", 0, 0, b""],  # not a tuple
    ("s", "0", 0, b""),  # a position that is not an int
    ("s", 0, 0, "chunk"),  # a chunk that is not bytes
    ("s", 0, 0, b"\x93\x01\x02"),  # bytes that are no chunk row
    ("s", 0, 0, codec.encode((3, 0, 0, 1, ("a",), ("A",), (b"",), (b"",)))),  # a row of format 3
    ("s", 0, 0, codec.encode((4, 0, 0, 1, ("a", "b"), ("A",), (b"",), (b"",)))),  # columns of two lengths
])
def test_a_corrupt_page_part_is_refused(part):
    with pytest.raises(CorruptRecordError):
        keys.part_rows((part,))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), lo=st.integers(-5, 50), hi=st.integers(-5, 50))
def test_page_parts_of_any_bytes_decode_or_are_refused(data, lo, hi):
    try:
        rows = keys.part_rows((("s", lo, hi, data),))
    except CodecError:  # CorruptRecordError, or UnknownVersionError for another format's frame
        return
    assert all(lo <= r[2] <= hi for r in rows)


def test_a_packed_page_is_asked_for_forward_with_a_bool():
    client = _client()
    client.append("user-1", [EventData("e0", "A", b"x")])
    for args in ((0, False, 10, None, "", "yes"), (-1, True, 10, None, "", True), (0, False, 10, None)):
        with pytest.raises(InvalidArgumentError):
            client.backend.query_nowait("events.archive_read_all", args).result()
    for args in (("user-1", 0, False, 10, 0, "yes"), ("user-1", 0, False, 10)):
        with pytest.raises(InvalidArgumentError):
            client.backend.query_nowait("events.read_stream", args).result()


@pytest.mark.parametrize("events", [
    "not a tuple",
    (("id", "T", b"", b""), ["id2", "T", b"", b""]),  # a list for an event
    (("id", "T", b""),),  # three fields
    (("", "T", b"", b""),),  # an empty id
    ((7, "T", b"", b""),),  # an id that is not a str
    (("id", "", b"", b""),),  # an empty type
    (("id", "T\x00x", b"", b""),),  # a NUL in the type: it would end the index key early
    (("id", "T", "text", b""),),  # data that is not bytes
    (("id", "T", b"", None),),  # metadata that is not bytes
    (("id", "T", b"", b""), ("id", "T", b"", b"")),  # one id twice
])
def test_the_append_procedure_refuses_events_of_the_wrong_shape(events):
    _, result = procedures.append({}.get, ("s-1", "no_stream", (("id", "T", b"", b""),), 0))
    assert result == ("s-1", 0, 0, 0, 0)  # the same call with a good event appends it
    with pytest.raises(InvalidArgumentError, match="appended event|tuple of at most|one event id twice"):
        procedures.append({}.get, ("s-1", "no_stream", events, 0))


@settings(max_examples=300, deadline=None)
@given(fv=st.integers(0, 2**40), fp=st.integers(0, 2**40), created=st.integers(0, 2**45),
       n=st.integers(1, 40), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_a_chunk_header_reads_what_the_whole_chunk_says_or_refuses_the_row(fv, fp, created, n, cut, flip):
    c = keys.Chunk(fv, fp, created, tuple(f"e{i}" for i in range(n)), ("T",) * n, (b"x",) * n, (b"",) * n)
    row = c.row()
    assert keys.Chunk.header(row) == (fv, fp, created, n)
    damaged = [row[:cut % len(row)], row[:flip % len(row)] + bytes([row[flip % len(row)] ^ 0x5A])
               + row[flip % len(row) + 1:]]
    for bad in damaged:
        try:
            got = keys.Chunk.header(bad)
        except CorruptRecordError:
            continue
        try:  # a header that reads must agree with the whole row, when the whole row reads
            whole = keys.Chunk.of(bad)
        except (CorruptRecordError, CodecError):
            continue
        assert got == (whole.first_version, whole.first_position, whole.created_ms, len(whole.ids))


def test_a_stream_read_ships_whole_chunks_and_the_reader_checks_them():
    client = _client()
    client.append("s-1", [EventData(f"e{i}", "T", b"%d" % i) for i in range(10)])
    client.append("s-1", [EventData(f"f{i}", "T", b"") for i in range(3)])
    assert [e.version for e in client.read_stream("s-1", 4)] == list(range(4, 13))
    assert [e.id for e in client.read_stream("s-1", 8, max_count=3)] == ["e8", "e9", "f0"]
    found, last, parts = client.query("events.read_stream", ("s-1", 0, False, 100, 0, True))
    assert found and last == 12 and [p[1:3] for p in parts] == [(0, 9), (10, 12)]
    with pytest.raises(CorruptRecordError):  # a part whose chunk is damaged is refused by the reader
        keys.part_rows([(parts[0][0], parts[0][1], parts[0][2], parts[0][3][:-5])])


def test_an_event_changed_after_it_was_made_is_refused_at_the_client_and_nothing_is_written():
    client = _client()
    before = dict(client.backend.state.data)
    for field, value in (("data", 5), ("metadata", ("nested", b"x")), ("id", b"bytes-id")):
        event = EventData("e1", "A", b"x")
        object.__setattr__(event, field, value)  # past the checks EventData ran when it was made
        with pytest.raises(InvalidArgumentError):
            client.append("user-1", [event])
    assert client.backend.state.data == before
