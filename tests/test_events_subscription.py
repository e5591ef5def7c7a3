"""A catch-up subscription's one page of read-ahead: the next page is asked for before the consumer
handles this one, never more than one page ahead, and a consumer that stops inside a page loses
and repeats nothing when it resumes from its checkpoint. Runs over a LocalBackend."""

from __future__ import annotations

from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData
from ddia_ray.events.subscription import CatchUpSubscription


class Recording(LocalBackend):
    """A LocalBackend that logs each ``$all`` page asked for, in one log with the handler's calls."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def query_nowait(self, name, args):
        if name == "events.archive_read_all":
            self.log.append(("ask", args[0]))
        return super().query_nowait(name, args)


def _store(events: int, log: list) -> EventStoreClient:
    client = EventStoreClient(Recording(log))
    for i in range(events):
        client.append(f"order-{i % 4}", [EventData(f"e{i}", "OrderPlaced", b"%d" % i)])
    log.clear()
    return client


def test_the_next_page_is_asked_for_before_this_one_is_handled():
    log: list = []
    sub = CatchUpSubscription(_store(25, log), from_position=0, page=10)
    sub.run(lambda e: log.append(("handle", e.position)), until=lambda: sub.checkpoint >= 25)
    asks = [i for i, (what, _) in enumerate(log) if what == "ask"]
    handles = {pos: i for i, (what, pos) in enumerate(log) if what == "handle"}
    assert [log[i][1] for i in asks[:3]] == [0, 10, 20]
    assert asks[1] < handles[0] and asks[2] < handles[10]  # one page ahead of the consumer...
    assert handles[9] < asks[2]  # ...and no more: page 3 waits until page 1 is handled
    assert sorted(handles) == list(range(25))


def test_a_consumer_stopping_inside_a_page_resumes_with_nothing_lost_or_repeated():
    log: list = []
    client = _store(30, log)
    seen: list = []
    first = CatchUpSubscription(client, from_position=0, page=8)
    first.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 13)  # inside page 2
    assert first._ahead is not None  # page 3 was read ahead; it is not the resumed one's
    resumed = CatchUpSubscription(client, from_position=first.checkpoint, page=8)
    resumed.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 30)
    assert seen == list(range(30))
    # The same subscription going on from inside a page drops its read-ahead and asks again.
    again: list = []
    sub = CatchUpSubscription(client, from_position=0, page=8)
    sub.run(lambda e: again.append(e.position), until=lambda: len(again) >= 13)
    sub.run(lambda e: again.append(e.position), until=lambda: len(again) >= 30)
    assert again == list(range(30))
