"""Consumer groups (persistent subscriptions) in a seeded simulation: competing consumers whose
handlers fail at random and who crash between pulling and settling, on a fake clock. Every event
must end acked, skipped or parked (with a row and a reason), at least once, and the group's
counters must account for every one. A failing seed prints its replay command."""

from __future__ import annotations

import concurrent.futures
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import (CallTimeoutError, CorruptRecordError, InvalidArgumentError, NotDeliveredError,
                             UnknownConsumerGroupError)
from ddia_ray.events import keys
from ddia_ray.events.consumer_groups import Group
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.persistent import ConsumerGroups, PersistentSubscription
from ddia_ray.events.records import EventData

SEEDS = range(40)


def _simulate(seed: int) -> None:
    rnd = random.Random(seed)
    client = EventStoreClient(LocalBackend())
    now = [1_000_000]
    groups = ConsumerGroups(client)
    max_retries = rnd.randint(1, 4)
    groups.create("g", max_in_flight=rnd.randint(1, 12), max_retries=max_retries, ack_timeout_s=1.0,
                  stream_prefix="order-" if seed % 3 == 0 else None)
    consumers = [PersistentSubscription(client, "g", f"c{i}", batch=rnd.randint(1, 5), clock=lambda: now[0])
                 for i in range(3)]
    poison = set()
    appended = []
    handled: dict[int, int] = {}
    deferred: dict = {}  # consumer -> acks it sends with its next pull (events.group_ack_pull)
    for _ in range(400):
        if rnd.random() < 0.3 and len(appended) < 60:
            stream = rnd.choice(["order-1", "order-2", "user-1"])
            r = client.append(stream, [EventData(f"e{len(appended)}", "T", b"")])
            appended.append((r.first_position, stream))
            if rnd.random() < 0.1:
                poison.add(r.first_position)  # fails every time: must end parked, never lost
        c = rnd.choice(consumers)
        got = c.ack_and_pull(deferred.pop(c)) if c in deferred else c.pull()
        assert all(attempt <= max_retries for _, attempt in got), "an event went past max_retries unparked"
        crash = rnd.random() < 0.15  # the consumer dies before settling: the batch times out
        if not crash:
            ok, bad = [], []
            for event, _ in got:
                if event.position in poison or rnd.random() < 0.1:
                    bad.append(event.position)
                else:
                    ok.append(event.position)
                    handled[event.position] = handled.get(event.position, 0) + 1
            if ok and rnd.random() < 0.5:
                deferred[c] = ok
            elif ok:
                c.ack(ok)
            for p in bad:
                c.nack((p,), rnd.choice(["retry", "retry", "retry", "park", "skip"]) if p not in poison else "retry",
                       "failed")
        now[0] += rnd.randint(0, 600)
    # Drain: no more failures or crashes; time passes so every timed-out event comes back.
    for _ in range(500):
        now[0] += 1100
        for c in consumers:
            got = c.ack_and_pull(deferred.pop(c)) if c in deferred else c.pull()
            assert all(attempt <= max_retries for _, attempt in got), "an event went past max_retries unparked"
            ok = [e.position for e, _ in got if e.position not in poison]
            for p in ok:
                handled[p] = handled.get(p, 0) + 1
            if ok:
                c.ack(ok)
            for e, _ in got:
                if e.position in poison:
                    c.nack((e.position,), "retry", "poison")
    info = groups.info("g")
    wanted = [p for p, s in appended if seed % 3 != 0 or s.startswith("order-")]
    parked = {p for p, _, _ in groups.parked("g")}
    assert info["in_flight"] == 0 and info["retry_queue"] == 0 and info["checkpoint"] == info["end"], info
    assert poison & set(wanted) <= parked, "a poison event was not parked"
    settled = set(handled) | parked
    skipped = set(wanted) - settled
    assert len(skipped) == info["skipped"], "an event vanished: neither handled, parked nor skipped"
    assert all(reason for _, _, reason in groups.parked("g"))
    assert info["parked"] == len(parked) and info["parks"] >= len(parked)
    assert set(handled) <= set(wanted)  # the filter held


@pytest.mark.parametrize("seed", SEEDS)
def test_every_event_is_settled_at_least_once(seed):
    try:
        _simulate(seed)
    except AssertionError:
        print(f"replay: pytest 'tests/test_events_consumer_groups.py::test_every_event_is_settled_at_least_once"
              f"[{seed}]'")
        raise


def test_bad_input():
    client = EventStoreClient(LocalBackend())
    groups = ConsumerGroups(client)
    with pytest.raises(UnknownConsumerGroupError) as e:
        groups.info("missing")
    assert e.value.group == "missing"
    with pytest.raises(UnknownConsumerGroupError):
        PersistentSubscription(client, "missing", "c").pull()
    groups.create("g")
    with pytest.raises(InvalidArgumentError, match="other settings"):
        groups.create("g", max_retries=9)
    c = PersistentSubscription(client, "g", "c")
    with pytest.raises(NotDeliveredError) as nd:
        c.ack((0,))  # nothing was appended, so nothing was delivered
    assert nd.value.position == 0
    with pytest.raises(InvalidArgumentError):
        c.nack((0,), "explode")
    client.append("s-1", [EventData("a", "T", b"")])
    (event, attempt), = c.pull()
    assert attempt == 1 and c.ack((event.position,)) == 1
    assert c.ack((event.position,)) == 1  # a repeated ack settles nothing twice
    assert groups.info("g")["acked"] == 1
    client.append("s-1", [EventData("b", "T", b"")])
    (event, _), = c.pull()
    with pytest.raises(InvalidArgumentError):
        c.ack((float(event.position),))  # equal to the position in flight, and still not a position
    assert c.ack((event.position,)) == 2
    assert groups.delete("g") and not groups.delete("g")


_SETTINGS = (None, "", 1000, 5, 30000)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 60), st.tuples(st.sampled_from(["c1", "c2"]), st.integers(1, 3),
                                                     st.sampled_from([100, 200])), max_size=40),
       st.dictionaries(st.integers(61, 90), st.integers(1, 3), max_size=5))
def test_a_group_row_keeps_its_events_in_flight_as_runs(inflight, retry):
    g = Group(Group.new(_SETTINGS, 0))
    for p, held in sorted(inflight.items(), key=lambda kv: -kv[0]):  # added out of order: merged all the same
        g.inflight.add(p, p, *held)
    g.retry.update(retry)
    g.cursor = 91
    back = Group(g.row())
    assert dict(back.inflight.items()) == inflight and back.retry == retry and back.cursor == 91
    assert len(back.inflight) == len(inflight) and back.checkpoint == min([91, *inflight, *retry])
    runs = keys.unpack(g.row(), 7, "consumer group")[6]
    # Each run is maximal: consecutive positions with the same consumer, attempts and deadline.
    assert all(not (a[1] + 1 == b[0] and a[2:] == b[2:]) for a, b in zip(runs, runs[1:]))
    assert sum(last - first + 1 for first, last, *_ in runs) == len(inflight)
    # A row of the first layout (a tuple per event in flight, six fields) is read the same.
    old = keys.pack(_SETTINGS, 91, tuple((p, *v) for p, v in sorted(inflight.items())),
                    tuple(sorted(retry.items())), g.counters, 0)
    assert dict(Group(old).inflight.items()) == inflight and Group(old).retry == retry


def test_a_batch_in_flight_is_one_run_and_a_row_of_another_layout_is_refused():
    g = Group(Group.new(_SETTINGS, 0))
    g.inflight.add(0, 999, "c1", 1, 5000)
    assert len(g.row()) < 120 and keys.unpack(g.row(), 7, "consumer group")[6] == ((0, 999, "c1", 1, 5000),)
    with pytest.raises(CorruptRecordError, match="8 fields"):
        Group(keys.pack(_SETTINGS, 0, (), (), {}, 0, (), ()))


def test_ack_and_pull_is_one_write_and_run_acks_its_last_batch():
    client = EventStoreClient(LocalBackend())
    groups = ConsumerGroups(client)
    groups.create("g", max_in_flight=4)
    for i in range(10):
        client.append(f"s-{i}", [EventData(f"e{i}", "T", b"")])
    c = PersistentSubscription(client, "g", "c", batch=4)
    first = [e.position for e, _ in c.pull()]
    with pytest.raises(NotDeliveredError):
        c.ack_and_pull((first[0], 9))  # 9 was never handed out: nothing is acked and nothing pulled
    assert groups.info("g")["in_flight"] == 4
    second = [e.position for e, _ in c.ack_and_pull(first)]  # max_in_flight 4: room only after the ack
    assert (first, second) == ([0, 1, 2, 3], [4, 5, 6, 7]) and groups.info("g")["checkpoint"] == 4
    c.ack(second)
    seen: list = []
    assert c.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 2) == 2
    info = groups.info("g")  # run acked the batch it handled before it returned
    assert seen == [8, 9] and info["in_flight"] == 0 and info["checkpoint"] == 10 and info["acked"] == 10


class _Logged(LocalBackend):
    """A LocalBackend that logs each consumer group call (by method) and each read of positions, in order."""

    def __init__(self):
        super().__init__()
        self.log: list = []

    def service_nowait(self, service, method, args):
        self.log.append(method)
        return super().service_nowait(service, method, args)

    def query_nowait(self, name, args):
        if name == "events.read_positions":
            self.log.append(("read", args[0][0], len(args[0])))
        return super().query_nowait(name, args)


def test_a_pull_answers_with_its_events_one_call_per_batch():
    backend = _Logged()
    client = EventStoreClient(backend)
    ConsumerGroups(client).create("g", max_in_flight=10)
    for i in range(50):
        client.append(f"s-{i}", [EventData(f"e{i}", "T", b"%d" % i)])
    c = PersistentSubscription(client, "g", "c", batch=10)
    seen: list = []
    assert c.run(lambda e: seen.append((e.position, e.data)), until=lambda: len(seen) >= 50) == 50
    assert seen == [(p, b"%d" % p) for p in range(50)]
    # The leader reads the events it hands out into the pull's answer: no read of positions at all,
    # and one call per batch (the last batch's ack on the way out).
    # (info: the consumer reads the group's max_in_flight once, to know how far it may pull ahead.)
    assert backend.log == ["create", "pull", "info", "ack_pull", "ack_pull", "ack_pull", "ack_pull", "ack"]
    assert ConsumerGroups(client).info("g")["checkpoint"] == 50


def test_a_pull_larger_than_one_answer_reads_the_rest(monkeypatch):
    from ddia_ray.events import group_service

    monkeypatch.setattr(group_service, "MAX_ANSWER_EVENTS", 5)
    backend = _Logged()
    client = EventStoreClient(backend)
    ConsumerGroups(client).create("g", max_in_flight=100, stream_prefix="order-")
    for i in range(24):
        client.append("order-1" if i % 2 else "user-1", [EventData(f"e{i}", "T", b"%d" % i)])
    c = PersistentSubscription(client, "g", "c", batch=4)
    got = c.pull()  # four events: within one answer, nothing read after
    assert [(e.position, e.data) for e, _ in got] == [(p, b"%d" % p) for p in (1, 3, 5, 7)]
    assert backend.log[-1] == "pull"
    big = PersistentSubscription(client, "g", "d", batch=8)
    got = big.pull()  # eight scattered events: more than an answer carries, read by the consumer
    assert [(e.position, e.data) for e, _ in got] == [(p, b"%d" % p) for p in range(9, 24, 2)]
    assert backend.log[-2:] == ["pull", ("read", 9, 8)]


def _store(n: int, *, backend=None, **group) -> tuple[EventStoreClient, ConsumerGroups]:
    client = EventStoreClient(backend or LocalBackend())
    groups = ConsumerGroups(client)
    groups.create("g", **group)
    for i in range(n):
        client.append(f"s-{i}", [EventData(f"e{i}", "T", b"%d" % i)])
    return client, groups


def test_acks_settle_runs_whole_in_part_and_across_runs():
    client, groups = _store(30, max_in_flight=100)
    a = PersistentSubscription(client, "g", "a", batch=10, clock=lambda: 1000)
    b = PersistentSubscription(client, "g", "b", batch=10, clock=lambda: 1000)
    assert [e.position for e, _ in a.pull()] == list(range(10))
    assert [e.position for e, _ in b.pull()] == list(range(10, 20))
    assert [e.position for e, _ in a.pull()] == list(range(20, 30))
    a.ack(range(3, 6))  # inside a run: it splits
    assert groups.info("g")["in_flight"] == 27
    b.ack([8, 9, 10, 11])  # across two consumers' runs: settled one by one
    a.ack(range(30 - 10, 30))  # a whole run
    info = groups.info("g")
    assert (info["in_flight"], info["acked"], info["checkpoint"]) == (13, 17, 0)
    a.ack([0, 1, 2, 6, 7])
    b.ack(range(12, 20))
    info = groups.info("g")
    assert (info["in_flight"], info["acked"], info["checkpoint"]) == (0, 30, 30)


def test_run_pulls_batches_ahead_while_it_handles_one():
    backend = _Logged()
    client, groups = _store(50, backend=backend, max_in_flight=30)
    c = PersistentSubscription(client, "g", "c", batch=10, prefetch=2)
    seen: list = []

    def handle(e):
        backend.log.append(("handle", e.position))
        seen.append((e.position, e.data))

    assert c.run(handle, until=lambda: len(seen) >= 50) == 50
    assert seen == [(p, b"%d" % p) for p in range(50)]  # in order, each once
    log = [x for x in backend.log if x not in ("create", "info")]
    # Both pulls ahead go out before the first event is handled: their calls overlap the handler.
    first = log.index(("handle", 0))
    assert [x for x in log[:first] if x == "ack_pull"] == ["ack_pull"] * 2, log
    # Each later batch's pull goes out before the batch in hand is handled.
    assert log.index("ack_pull", first) < log.index(("handle", 10))
    info = groups.info("g")
    assert (info["checkpoint"], info["in_flight"], info["acked"], info["released"]) == (50, 0, 50, 0)
    assert c.prefetched >= 4 and c.released == 0


def test_events_pulled_ahead_are_handed_back_when_run_ends():
    client, groups = _store(100, max_in_flight=30, max_retries=1)
    c = PersistentSubscription(client, "g", "c", batch=10, prefetch=2)
    seen: list = []
    assert c.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 30) == 30
    info = groups.info("g")
    # The two batches pulled ahead (30..49) went back unhandled: nothing in flight waits for a
    # timeout, and the attempt they were handed out with is not counted.
    assert seen == list(range(30)) and c.released == 20
    assert (info["in_flight"], info["retry_queue"], info["checkpoint"], info["released"]) == (0, 20, 30, 20)
    other = PersistentSubscription(client, "g", "d", batch=20, prefetch=0)
    got = other.pull()
    # max_retries is 1: a counted attempt would have parked them at their next failure; they come
    # back as first attempts.
    assert [(e.position, a) for e, a in got] == [(p, 1) for p in range(30, 50)]
    other.nack(tuple(e.position for e, _ in got), "release")
    assert groups.info("g")["parks"] == 0 and [(e.position, a) for e, a in other.pull()][:1] == [(30, 1)]


@pytest.mark.parametrize("max_in_flight, prefetch, depth", [(15, 2, 0), (20, 2, 1), (30, 2, 2), (100, 2, 2),
                                                             (100, 0, 0)])
def test_pulls_ahead_stay_within_the_groups_max_in_flight(max_in_flight, prefetch, depth):
    client, groups = _store(60, max_in_flight=max_in_flight)
    c = PersistentSubscription(client, "g", "c", batch=10, prefetch=prefetch)
    seen: list = []
    assert c.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 60) == 60
    assert sorted(seen) == list(range(60)) and c._prefetch_depth() == depth
    assert (c.prefetched > 0) == (depth > 0) and groups.info("g")["checkpoint"] == 60
    with pytest.raises(InvalidArgumentError, match="prefetch"):
        PersistentSubscription(client, "g", "c", prefetch=-1)


class _Lossy(LocalBackend):
    """A LocalBackend whose chosen ack-and-pulls fail with a timeout: ``"lost"`` never ran, ``"late"``
    ran and lost its answer (what a failover does to a call in flight)."""

    def __init__(self, faults: dict):
        super().__init__()
        self.faults, self.calls = faults, 0

    def service_nowait(self, service, method, args):
        if method != "ack_pull":
            return super().service_nowait(service, method, args)
        self.calls += 1
        fault = self.faults.get(self.calls)
        if fault == "late":
            super().service_nowait(service, method, args)
        fut = super().service_nowait(service, method, args) if fault is None else concurrent.futures.Future()
        if fault is not None:
            fut.set_exception(CallTimeoutError("lost in a failover"))
        return fut


@pytest.mark.parametrize("faults, timed_out", [({3: "lost"}, 0), ({3: "late"}, 10),
                                               ({2: "late", 4: "lost", 5: "late"}, None)])
def test_a_pull_ahead_lost_in_a_failover_loses_no_event(faults, timed_out):
    now = [1_000_000]
    client, groups = _store(120, backend=_Lossy(faults), max_in_flight=30, ack_timeout_s=1.0)
    c = PersistentSubscription(client, "g", "c", batch=10, prefetch=2, retry_s=0.001, clock=lambda: now[0])
    seen: list = []
    until = [60]
    c.run(lambda e: seen.append(e.position), until=lambda: len(set(seen)) >= until[0], timeout_s=30)
    assert c.retries >= 1
    now[0] += 2_000  # what a call that ran handed out, and nobody saw, times out
    until[0] = 120
    c.run(lambda e: seen.append(e.position), until=lambda: len(set(seen)) >= until[0], timeout_s=30)
    info = groups.info("g")
    assert set(seen) == set(range(120)), "an event was never handled"
    assert (info["checkpoint"], info["in_flight"], info["parks"]) == (120, 0, 0)
    if timed_out is not None:
        # A lost call's acks are sent again (nothing it carried times out); a late one handed out a
        # batch nobody saw, and only that batch times out.
        assert info["timed_out"] == timed_out and c.redelivered == timed_out


def test_run_counts_each_handled_event_once_when_a_short_batch_follows_a_pull_ahead():
    # 25 events, batches of 10, two pulls ahead: the third batch is short, so no call goes out with
    # the second batch's acks, which wait in the same list as the third's.
    client, groups = _store(25, max_in_flight=30)
    c = PersistentSubscription(client, "g", "c", batch=10, prefetch=2)
    seen: list = []
    assert c.run(lambda e: seen.append(e.position), until=lambda: len(seen) >= 25) == 25
    assert c.handled == 25 and seen == list(range(25))
    assert groups.info("g")["acked"] == 25


def test_a_new_leader_resumes_from_the_last_checkpoint_and_accepts_acks_of_what_the_old_one_handed_out():
    from ddia_ray.events.group_service import GroupService

    backend = LocalBackend()
    client = EventStoreClient(backend)
    for i in range(30):
        client.append(f"s-{i}", [EventData(f"e{i}", "T", b"")])
    state = backend.state

    def call(svc, method, *args):
        return svc.call(state, method, args)[0]

    def save(svc):
        state.apply(state.applied + 1, svc.checkpoint())

    old = GroupService()
    assert call(old, "create", "g", (None, "", 100, 3, 60_000), 0) is True
    assert call(old, "pull", "g", "c", 10, 1000)[1] == ((0, 9, 1),)
    save(old)  # the last checkpoint: 0..9 in flight
    assert call(old, "ack_pull", "g", ((0, 9),), "c", 10, 1000)[1] == ((10, 19, 1),)  # never saved
    new = GroupService()  # a failover: the old leader's memory is gone
    info = call(new, "info", "g")
    assert (info["cursor"], info["in_flight"], info["acked"]) == (10, 10, 0)
    # The old leader handed 10..19 out after the checkpoint: acking them is accepted and changes nothing.
    assert call(new, "ack", "g", ((10, 19),)) == 0 and call(new, "info", "g")["in_flight"] == 10
    with pytest.raises(NotDeliveredError):
        call(new, "ack", "g", (30,))  # past the end of $all when the new leader took over: no one handed it out
    assert call(new, "pull", "g", "c", 10, 1000)[1] == ((10, 19, 1),)  # handed out again
    # 0..9 (acked on the old leader, unsaved) come back once their ack timeout passes: at least once.
    assert call(new, "pull", "g", "c", 10, 70_000)[1] == ((0, 9, 2),)
    # A call that fails halfway changes nothing (the service works on a copy of the group).
    before = call(new, "info", "g")
    with pytest.raises(NotDeliveredError):
        call(new, "ack", "g", ((0, 9), 40))  # 0..9 would settle, 40 is refused: the call as a whole is
    assert call(new, "info", "g") == before and (before["in_flight"], before["retry_queue"]) == (10, 10)


def test_malformed_group_service_calls_are_refused_and_change_nothing():
    from ddia_ray.errors import UnknownConsumerGroupError
    from ddia_ray.events.group_service import SERVICE

    backend = LocalBackend()
    client = EventStoreClient(backend)
    ConsumerGroups(client).create("g")
    client.append("s-1", [EventData("e1", "T", b"")])
    before = ConsumerGroups(client).info("g")
    for method, args, error in (("steal", ("g",), InvalidArgumentError),     # no such method
                                ("pull", "g", InvalidArgumentError),         # args not a tuple
                                ("pull", (), InvalidArgumentError),          # no group named
                                ("pull", (7, "c", 1, 0), InvalidArgumentError),  # a group name of another type
                                ("pull", ("g", "c", 1), InvalidArgumentError),   # too few arguments
                                ("pull", ("g", "c", 0, 0), InvalidArgumentError),  # n < 1
                                ("ack", ("g", ("x",)), InvalidArgumentError),  # not positions
                                ("nack", ("g", (0,), "explode", ""), InvalidArgumentError),
                                ("pull", ("nope", "c", 1, 0), UnknownConsumerGroupError)):
        with pytest.raises(error):
            client.service(SERVICE, method, args)
    assert ConsumerGroups(client).info("g") == before
