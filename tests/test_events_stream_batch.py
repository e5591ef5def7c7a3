"""Many streams in one read (``read_streams``, the ``events.read_streams`` query): the same events as
reading each stream alone, in a few queries, within the per-call bounds, and bad input refused."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import InvalidArgumentError, StreamDeletedError
from ddia_ray.events import stream_batch
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData, StreamMetadata
from ddia_ray.replication.procedures import result_or_raise, run_query


class CountingBackend(LocalBackend):
    """A local backend that counts the queries it serves, by name."""

    def __init__(self):
        super().__init__()
        self.queries: dict[str, int] = {}

    def query_nowait(self, name, args):
        self.queries[name] = self.queries.get(name, 0) + 1
        return super().query_nowait(name, args)


def _fill(client: EventStoreClient, sizes: dict[str, int]) -> None:
    for stream, n in sizes.items():
        for lo in range(0, n, 500):
            client.append(stream, [EventData(f"{stream}/{v}", "T", b"%d" % v) for v in range(lo, min(n, lo + 500))])


def _fields(events) -> list:
    return [(e.stream, e.version, e.position, e.id, e.data) for e in events]


def test_two_hundred_streams_cost_two_queries_and_read_as_alone():
    backend = CountingBackend()
    c = EventStoreClient(backend)
    sizes = {f"agg-{i}": 100 for i in range(200)}
    _fill(c, sizes)
    backend.queries.clear()
    got = c.read_streams(list(sizes))
    # 200 x 100 events against a budget of 16,384 a call: 163 streams and a cut one in the first
    # call, the rest (and the cut one's tail) in a second.
    assert backend.queries == {"events.read_streams": 2}
    assert list(got) == list(sizes)
    for stream in sizes:
        assert _fields(got[stream]) == _fields(c.read_stream(stream))


def test_long_streams_many_streams_and_a_small_budget(monkeypatch):
    monkeypatch.setattr(stream_batch, "BATCH_EVENTS", 7)
    monkeypatch.setattr(stream_batch, "MAX_BATCH_STREAMS", 3)
    backend = CountingBackend()
    c = EventStoreClient(backend)
    sizes = {"long-1": 2_500, "empty-1": 0, **{f"s-{i}": i % 5 for i in range(10)}}
    _fill(c, sizes)
    backend.queries.clear()
    wanted = {s: (17 if s == "long-1" else 0) for s in sizes}
    got = c.read_streams(wanted)
    assert list(got) == list(wanted)
    for stream, start in wanted.items():
        assert _fields(got[stream]) == _fields(c.read_stream(stream, start)), stream
    assert len(got["long-1"]) == 2_500 - 17
    # Every call makes progress: at least 7 events of the 2,517 stored (or a stream's end) per call.
    assert backend.queries["events.read_streams"] <= 2_500 // 7 + len(sizes)


def test_retention_and_deletes_apply_as_in_a_single_read():
    c = EventStoreClient(LocalBackend())
    _fill(c, {"a-1": 10, "b-1": 4, "c-1": 3})
    c.set_metadata("a-1", StreamMetadata(max_count=3))
    c.delete_stream("b-1")  # soft: reads nothing until the next append
    got = c.read_streams(["a-1", "b-1", "c-1", "never-1"])
    assert [e.version for e in got["a-1"]] == [7, 8, 9]
    assert got["b-1"] == [] and got["never-1"] == []
    assert [e.version for e in got["c-1"]] == [0, 1, 2]
    c.tombstone_stream("c-1")
    with pytest.raises(StreamDeletedError) as info:
        c.read_streams(["a-1", "c-1"])
    assert info.value.stream == "c-1"


def test_bad_input_is_refused_precisely():
    c = EventStoreClient(LocalBackend())
    for bad in ("a-1", b"a-1", 42):
        with pytest.raises(InvalidArgumentError, match="iterable of stream names"):
            c.read_streams(bad)
    with pytest.raises(InvalidArgumentError, match="from_version"):
        c.read_streams({"a-1": -1})
    with pytest.raises(InvalidArgumentError, match="from_version"):
        c.read_streams({"a-1": "0"})
    with pytest.raises(InvalidArgumentError, match="stream name"):
        c.read_streams(["ok-1", "bad\x00name"])
    assert c.read_streams([]) == {}


@pytest.mark.parametrize("args", [
    None,
    ((("a-1", 0),), 10),  # two fields
    ((), 10, 0),  # no stream
    (tuple(("a-1", 0) for _ in range(stream_batch.MAX_BATCH_STREAMS + 1)), 10, 0),
    ((("a-1", 0),), 0, 0),  # page 0
    ((("a-1", 0),), 10, "now"),
    ((("a-1", -1),), 10, 0),
    ((("a-1",),), 10, 0),
    ((("a-1", True),), 10, 0),
    (((7, 0),), 10, 0),  # the stream is not a str
])
def test_the_query_refuses_a_malformed_request(args):
    with pytest.raises(InvalidArgumentError):
        result_or_raise(run_query("events.read_streams", codec.encode(args), LocalBackend().state))
