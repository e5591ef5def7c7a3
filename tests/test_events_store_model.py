"""The event store's decisions against a plain model: random appends with expected versions,
retries, reads both ways, $all pages and filters, metadata, soft and hard deletes, and restarts
(the rows rebuilt from a snapshot). Runs the replicas' own procedures over a LocalBackend."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ddia_ray.errors import (DuplicateEventIdError, InvalidArgumentError, StreamDeletedError,
                             WrongExpectedVersionError)
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.keys import RECENT_APPENDS
from ddia_ray.events.records import ANY, NO_STREAM, STREAM_EXISTS, EventData, StreamMetadata
from ddia_ray.replication.state import MapState

STREAMS = ("user-1", "order-1", "order")
TYPES = ("UserCreated", "EmailChanged", "OrderPlaced")


class Stream:
    """The model of one stream."""

    def __init__(self):
        self.events: list[tuple[int, EventData]] = []  # (position, event), version = index
        self.deleted = False
        self.tombstoned = False
        self.truncate_before: int | None = None
        self.max_count: int | None = None
        self.meta_version = -1

    @property
    def last(self) -> int:
        return len(self.events) - 1

    @property
    def actual(self) -> int:
        return -1 if self.deleted else self.last

    def visible(self) -> list[tuple[int, int, EventData]]:
        first = self.truncate_before or 0
        if self.max_count is not None:
            first = max(first, self.last - self.max_count + 1)
        return [(v, p, e) for v, (p, e) in enumerate(self.events) if v >= first]


class EventStoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.backend = LocalBackend()
        self.client = EventStoreClient(self.backend)
        self.streams = {s: Stream() for s in STREAMS}
        self.all: list[tuple[str, int, EventData]] = []
        self.ids: dict[str, tuple[str, int, int]] = {}
        self.batches: list[tuple[str, tuple, object, tuple]] = []  # appended batches and their answers
        self.appended: dict[str, list[tuple[tuple, object]]] = {s: [] for s in STREAMS}  # (ids, answer)
        self.next_id = 0

    @initialize(sizes=st.lists(st.integers(0, 7), min_size=len(STREAMS), max_size=len(STREAMS)))
    def start(self, sizes):
        """Streams start with a history, so retention, paging and backward reads have events to act on
        (hypothesis's runs are short: without it most reads met empty streams)."""
        for stream, n in zip(STREAMS, sizes):
            self._append(stream, self._events([TYPES[i % len(TYPES)] for i in range(n)]), ANY)

    def _events(self, types: list[str]) -> list[EventData]:
        out = []
        for t in types:
            self.next_id += 1
            out.append(EventData(f"e{self.next_id}", t, b"%d" % self.next_id, b"m" if self.next_id % 3 else b""))
        return out

    @rule(stream=st.sampled_from(STREAMS), types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=4),
          how=st.sampled_from(["any", "right", "right", "no_stream", "stream_exists", "behind", "ahead"]))
    def append(self, stream, types, how):
        m = self.streams[stream]
        right = m.actual if m.actual >= 0 else NO_STREAM
        expected = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS, "right": right,
                    "behind": max(m.actual - 1, 0), "ahead": m.actual + 1}[how]
        events = self._events(types)
        self._append(stream, events, expected)

    def _append(self, stream, events, expected):
        m = self.streams[stream]
        if m.tombstoned:
            with pytest.raises(StreamDeletedError):
                self.client.append(stream, events, expected)
            return
        ok = (expected == ANY or (expected == NO_STREAM and m.actual == -1)
              or (expected == STREAM_EXISTS and m.actual >= 0) or expected == m.actual)
        if not ok:
            with pytest.raises(WrongExpectedVersionError) as e:
                self.client.append(stream, events, expected)
            assert e.value.actual == m.actual and e.value.stream == stream
            return
        got = self.client.append(stream, events, expected)
        if not events:
            assert (got.first_position, got.next_expected_version) == (-1, m.actual)
            return
        first_version, first_position = m.last + 1, len(self.all)
        for i, e in enumerate(events):
            m.events.append((first_position + i, e))
            self.all.append((stream, first_version + i, e))
            self.ids[e.id] = (stream, first_version + i, first_position + i)
        m.deleted = False
        assert (got.first_version, got.next_expected_version, got.first_position, got.last_position) == \
            (first_version, m.last, first_position, len(self.all) - 1)
        self.batches.append((stream, tuple(events), expected, got))
        self.appended[stream].append((tuple(e.id for e in events), got))

    def _recent(self, stream, first_id):
        """The newest of ``stream``'s last RECENT_APPENDS appends that starts with ``first_id``: where a
        retry under ``any`` is recognised (procedures.py), or None."""
        return next((a for a in reversed(self.appended[stream][-RECENT_APPENDS:]) if a[0][0] == first_id), None)

    def _append_recent(self, stream, batch, expected):
        """An append under ``any``, ``stream_exists`` or ``no_stream`` of ``batch``, which may repeat ids: a retry of a
        recent append of the stream if it starts as one does, else new events (ids are not unique
        across the store)."""
        recent = self._recent(stream, batch[0].id)
        if recent is None:
            self._append(stream, batch, expected)
        elif recent[0] == tuple(e.id for e in batch):
            assert self.client.append(stream, batch, expected) == recent[1]
        else:
            with pytest.raises(DuplicateEventIdError):
                self.client.append(stream, batch, expected)

    @rule(data=st.data())
    def retry_an_append(self, data):
        """A retry of an acknowledged append (same ids): with an exact expected version, the first
        answer and nothing written; under ``any`` or ``stream_exists`` (or ``no_stream`` past version
        0) the same while it is among the stream's recent appends, and new events after."""
        if not self.batches:
            return
        stream, events, expected, first = data.draw(st.sampled_from(self.batches))
        m = self.streams[stream]
        if m.tombstoned:
            with pytest.raises(StreamDeletedError):
                self.client.append(stream, events, expected)
        elif expected not in (ANY, STREAM_EXISTS, NO_STREAM) or (expected == NO_STREAM and first.first_version == 0):
            assert self.client.append(stream, events, expected) == first  # the place it names
        else:  # NO_STREAM past version 0 is a stream recreated after a soft delete
            self._append_recent(stream, list(events), expected)

    @rule(data=st.data())
    def reuse_an_id_elsewhere(self, data):
        """An old id in a new batch, or at another stream, under ``any``: a retry if the batch starts
        as one of the stream's recent appends and is it, refused if it starts as one and is not,
        else new events with an id seen before."""
        if not self.ids:
            return
        old = data.draw(st.sampled_from(sorted(self.ids)))
        stream = data.draw(st.sampled_from(STREAMS))
        fresh = self._events(["UserCreated"])
        batch = data.draw(st.sampled_from([[*fresh, EventData(old, "X", b"")], [EventData(old, "X", b"")]]))
        if self.streams[stream].tombstoned:
            with pytest.raises(StreamDeletedError):
                self.client.append(stream, batch, ANY)
        else:
            self._append_recent(stream, batch, ANY)

    # Deletes end a stream's story, so most draws skip: the other rules then see long streams.
    @rule(stream=st.sampled_from(STREAMS), what=st.sampled_from(["skip"] * 4 + ["soft", "soft", "hard"]),
          exact=st.booleans())
    def delete(self, stream, what, exact):
        if what == "skip":
            return
        hard = what == "hard"
        m = self.streams[stream]
        expected = m.actual if exact and m.actual >= 0 else ANY
        call = self.client.tombstone_stream if hard else self.client.delete_stream
        if m.tombstoned:
            with pytest.raises(StreamDeletedError):
                call(stream, expected)
            return
        assert call(stream, expected) == m.last
        if hard:
            m.tombstoned = True
        elif m.last >= 0:
            m.deleted, m.truncate_before = True, m.last + 1

    @rule(stream=st.sampled_from(STREAMS), max_count=st.none() | st.integers(1, 4),
          truncate=st.none() | st.integers(0, 6))
    def set_metadata(self, stream, max_count, truncate):
        m = self.streams[stream]
        if m.tombstoned:
            with pytest.raises(StreamDeletedError):
                self.client.set_metadata(stream, StreamMetadata(max_count=max_count, truncate_before=truncate))
            return
        got = self.client.set_metadata(stream, StreamMetadata(max_count=max_count, truncate_before=truncate),
                                       expected_metadata_version=m.meta_version)
        m.meta_version += 1
        assert got == m.meta_version
        m.max_count = max_count
        m.truncate_before = max(truncate or 0, m.last + 1 if m.deleted else 0) or None
        with pytest.raises(WrongExpectedVersionError):
            self.client.set_metadata(stream, StreamMetadata(), expected_metadata_version=m.meta_version + 5)

    @rule(stream=st.sampled_from(STREAMS), backward=st.booleans(), start=st.none() | st.integers(0, 8),
          max_count=st.none() | st.integers(0, 5))
    def read_stream(self, stream, backward, start, max_count):
        m = self.streams[stream]
        if m.tombstoned:
            with pytest.raises(StreamDeletedError):
                self.client.read_stream(stream)
            return
        want = m.visible()
        if backward:
            want = [w for w in reversed(want) if start is None or w[0] <= start]
        else:
            want = [w for w in want if start is None or w[0] >= start]
        if max_count is not None:
            want = want[:max_count]
        got = self.client.read_stream(stream, start, backward=backward, max_count=max_count)
        assert [(g.version, g.position, g.id, g.type, g.data, g.metadata) for g in got] == \
            [(v, p, e.id, e.type, e.data, e.metadata) for v, p, e in want]

    @rule(streams=st.lists(st.sampled_from(STREAMS), min_size=1, max_size=3),
          starts=st.none() | st.lists(st.integers(0, 8), min_size=3, max_size=3))
    def read_streams(self, streams, starts):
        """Many streams in one read: each as a forward read of it from its start would answer."""
        wanted = dict.fromkeys(streams, 0) if starts is None else dict(zip(streams, starts))
        if any(self.streams[s].tombstoned for s in wanted):
            with pytest.raises(StreamDeletedError):
                self.client.read_streams(wanted if starts is not None else streams)
            return
        got = self.client.read_streams(wanted if starts is not None else streams)
        assert list(got) == list(wanted)
        for stream, start in wanted.items():
            want = [w for w in self.streams[stream].visible() if w[0] >= start]
            assert [(g.stream, g.version, g.position, g.id, g.data) for g in got[stream]] == \
                [(stream, v, p, e.id, e.data) for v, p, e in want]

    @rule(backward=st.booleans(), start=st.none() | st.integers(0, 30), page=st.integers(1, 4),
          flt=st.sampled_from([None, ("stream", "user"), ("type", "Order"), ("stream", "zzz")]))
    def read_all(self, backward, start, page, flt):
        kind, prefix = flt if flt else (None, "")
        want = list(enumerate(self.all))
        if backward:
            want = [w for w in reversed(want) if start is None or w[0] <= start]
        else:
            want = [w for w in want if start is None or w[0] >= start]
        if kind == "stream":
            want = [w for w in want if w[1][0].startswith(prefix)]
        elif kind == "type":
            want = [w for w in want if w[1][2].type.startswith(prefix)]
        got = list(self.client.iter_all((-1 if backward else 0) if start is None else start, backward=backward,
                                        page=page, stream_prefix=prefix if kind == "stream" else None,
                                        type_prefix=prefix if kind == "type" else None))
        assert [(g.position, g.stream, g.version, g.id) for g in got] == \
            [(p, s, v, e.id) for p, (s, v, e) in want]

    @rule(category=st.sampled_from(["user", "order"]), start=st.integers(0, 10))
    def read_category(self, category, start):
        got = self.client.read_category(category, start)
        want = [(p, s) for p, (s, _, _) in enumerate(self.all) if s.split("-", 1)[0] == category and p >= start]
        assert [(g.position, g.stream) for g in got] == want

    @rule(event_type=st.sampled_from(TYPES))
    def read_type(self, event_type):
        got = self.client.read_type(event_type)
        assert [g.position for g in got] == [p for p, (_, _, e) in enumerate(self.all) if e.type == event_type]

    @rule()
    def restart(self):
        """A member restarts from its snapshot: the rows decode as they were written."""
        snap = self.backend.state.snapshot()
        state = MapState()
        state.restore(snap)
        self.backend.state = state

    @invariant()
    def versions_agree(self):
        for name, m in self.streams.items():
            if not m.tombstoned:
                assert self.client.stream_version(name) == m.actual


EventStoreModel.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
TestEventStoreModel = EventStoreModel.TestCase


def test_bad_input_is_refused_precisely():
    c = EventStoreClient(LocalBackend())
    with pytest.raises(InvalidArgumentError, match="codec record"):
        c.append("s-1", [{"not": "a record"}])
    with pytest.raises(InvalidArgumentError, match="expected version"):
        c.append("s-1", [EventData("a", "T", b"")], "latest")
    with pytest.raises(InvalidArgumentError, match="expected version"):
        c.append("s-1", [EventData("a", "T", b"")], -1)
    with pytest.raises(InvalidArgumentError, match="stream name"):
        c.append("bad\x00name", [EventData("a", "T", b"")])
    with pytest.raises(InvalidArgumentError, match=r"'\$'"):
        c.append("$all", [EventData("a", "T", b"")])
    with pytest.raises(InvalidArgumentError, match="twice"):
        c.append("s-1", [EventData("a", "T", b""), EventData("a", "T", b"")])
    c.tombstone_stream("s-2")
    with pytest.raises(StreamDeletedError) as e:
        c.append("s-2", [EventData("b", "T", b"")])
    assert e.value.stream == "s-2"
    assert c.read_all() == []  # nothing above wrote anything
