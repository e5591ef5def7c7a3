"""Repositories (issue 14, item 3): loads from snapshots, saves with expected versions, conflict
retries, idempotent resends and upcasting of events written by an older class definition.

Every test runs the real event store procedures in one process (``LocalBackend``); faults come from
a backend wrapper that records every call and can add a rival append or lose a reply.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode, record
from ddia_ray.errors import (AggregateNotFoundError, CallTimeoutError, CommandRejectedError, ConfigError,
                             InvalidArgumentError, RetriesExhaustedError, StreamDeletedError,
                             WrongExpectedVersionError)
from ddia_ray.events.aggregate import Aggregate, applies
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.domain import Order, OrderLineAdded, User, UserState
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import ANY, NO_STREAM, EventData, event_data
from ddia_ray.events.repository import Repository


class Backend:
    """A LocalBackend that records every call; ``rivals`` appends a rival's event to the stream before
    each of that many appends, ``lost_replies`` performs that many appends and then answers with a
    timeout, ``snapshot_down`` fails every snapshot write."""

    def __init__(self, *, rivals: int = 0, lost_replies: int = 0, snapshot_down: bool = False) -> None:
        self.inner = LocalBackend()
        self.calls: list[tuple[str, tuple]] = []
        self.rivals, self.lost_replies, self.snapshot_down = rivals, lost_replies, snapshot_down

    def call_nowait(self, name, args, *, checked=False):
        self.calls.append((name, args))
        if name == "events.append" and self.rivals:
            self.rivals -= 1
            rival = event_data(OrderLineAdded(f"rival-{self.rivals}", 1, 100))
            self.inner.call_nowait(name, (args[0], ANY, ((rival.id, rival.type, rival.data, b""),), 0)).result()
        if name == "events.save_snapshot" and self.snapshot_down:
            return _failed(CallTimeoutError("the event store did not answer in time"))
        fut = self.inner.call_nowait(name, args, checked=checked)
        if name == "events.append" and self.lost_replies and fut.exception() is None:
            self.lost_replies -= 1
            return _failed(CallTimeoutError("the event store did not answer in time; an append's outcome is unknown"))
        return fut

    def query_nowait(self, name, args):
        self.calls.append((name, args))
        return self.inner.query_nowait(name, args)

    def close(self) -> None:
        pass

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _failed(error: Exception) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_exception(error)
    return fut


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def client(backend) -> EventStoreClient:
    return EventStoreClient(backend)


def _open_order(repo: Repository, id: str = "order-1", lines: int = 0) -> None:
    repo.execute(id, lambda o: o.place("user-1"), create=True)
    for i in range(lines):
        repo.execute(id, lambda o, i=i: o.add_line(f"sku-{i}", 1, 100))


# --- round trips -------------------------------------------------------------------------------------


def test_a_saved_aggregate_loads_with_its_state_and_version(client):
    users = Repository(client, User)
    users.execute("user-1", lambda u: u.create_user("ann@example.com", "Ann"), create=True)
    u = users.execute("user-1", lambda u: u.update_email("ann@example.org"))
    assert u.version == 1 and u.pending == ()
    loaded = Repository(client, User).get("user-1")
    assert (loaded.state, loaded.version) == (UserState(True, "ann@example.org", "Ann"), 1)
    assert [e.type for e in client.read_stream("user-1")] == ["seed.user_created", "seed.user_email_updated"]


def test_a_new_aggregate_saves_as_a_new_stream_only(client):
    users = Repository(client, User)
    first, second = User("user-1"), User("user-1")
    first.create_user("ann@example.com", "Ann")
    second.create_user("bob@example.com", "Bob")
    result = users.save(first)
    assert (result.first_version, result.next_expected_version) == (0, 0)
    with pytest.raises(WrongExpectedVersionError) as e:
        users.save(second)
    assert (e.value.expected, e.value.actual) == (NO_STREAM, 0)
    assert users.save(users.get("user-1")) is None  # nothing pending: nothing to write


def test_an_unknown_aggregate_is_not_found(client):
    with pytest.raises(AggregateNotFoundError, match="no User 'user-9'.*create=True") as e:
        Repository(client, User).get("user-9")
    assert e.value.aggregate_id == "user-9" and isinstance(e.value, LookupError)
    with pytest.raises(AggregateNotFoundError):
        Repository(client, User).execute("user-9", lambda u: u.update_email("a@b.co"))
    assert client.read_stream("user-9") == []


def test_get_at_a_version_folds_only_up_to_it(client):
    orders = Repository(client, Order, snapshot_every=2)
    _open_order(orders, lines=4)  # versions 0..4, snapshots at 1 and 3
    for version in range(5):
        plain = Repository(client, Order).get("order-1", version=version)
        snap = orders.get("order-1", version=version)
        assert plain.version == snap.version == version
        assert plain.state == snap.state and len(snap.state.lines) == version


def test_a_tombstoned_stream_says_so(client):
    _open_order(Repository(client, Order))
    client.tombstone_stream("order-1")
    with pytest.raises(StreamDeletedError):
        Repository(client, Order).get("order-1")


def test_save_refuses_another_aggregate_class_and_bad_settings(client):
    with pytest.raises(InvalidArgumentError, match="saves User aggregates, got Order"):
        Repository(client, User).save(Order("order-1"))
    with pytest.raises(ConfigError, match="snapshot_every"):
        Repository(client, User, snapshot_every=0)
    with pytest.raises(ConfigError, match="max_retries"):
        Repository(client, User, max_retries=-1)
    with pytest.raises(InvalidArgumentError, match="subclass of Aggregate"):
        Repository(client, UserState)


# --- snapshots ---------------------------------------------------------------------------------------


def test_a_snapshot_is_kept_every_n_events_and_loads_read_only_the_events_after_it(backend, client):
    orders = Repository(client, Order, snapshot_every=3)
    _open_order(orders, lines=7)  # versions 0..7
    saved = [args[1] for name, args in backend.calls if name == "events.save_snapshot"]
    assert saved == [2, 5]
    assert client.load_snapshot("order-1")[0] == 5
    backend.calls.clear()
    before = orders.stats()
    loaded = orders.get("order-1")
    assert backend.names() == ["events.load_snapshot", "events.read_stream"]
    assert backend.calls[1][1][1] == 6  # the read starts after the snapshot
    after = orders.stats()
    assert (after.events_replayed - before.events_replayed, after.snapshot_loads - before.snapshot_loads) == (2, 1)
    full = Repository(client, Order).get("order-1")
    assert (loaded.version, loaded.state) == (full.version, full.state) == (7, full.state)


def test_a_batch_that_crosses_a_multiple_takes_one_snapshot(backend, client):
    orders = Repository(client, Order, snapshot_every=4)
    o = Order("order-1")
    o.place("user-1")
    for i in range(9):
        o.add_line(f"sku-{i}", 1, 100)  # versions 0..9 in one save
    orders.save(o)
    assert [args[1] for name, args in backend.calls if name == "events.save_snapshot"] == [9]
    assert orders.get("order-1").state == o.state


def test_a_load_with_no_event_after_the_snapshot_checks_the_stream_is_there(backend, client):
    orders = Repository(client, Order, snapshot_every=3)
    _open_order(orders, lines=2)  # versions 0..2, snapshot at 2
    backend.calls.clear()
    assert orders.get("order-1").version == 2
    assert backend.names() == ["events.load_snapshot", "events.read_stream", "events.stream_info"]
    client.delete_stream("order-1")
    with pytest.raises(AggregateNotFoundError):
        orders.get("order-1")


def test_an_unreadable_snapshot_falls_back_to_every_event(client):
    orders = Repository(client, Order, snapshot_every=3)
    _open_order(orders, lines=3)  # snapshot at 2
    client.save_snapshot("order-1", 3, encode(UserState()))  # another class's state
    before = orders.stats()
    loaded = orders.get("order-1")
    assert loaded.state == Repository(client, Order).get("order-1").state and loaded.version == 3
    after = orders.stats()
    assert (after.snapshot_fallbacks - before.snapshot_fallbacks, after.events_replayed - before.events_replayed,
            after.snapshot_loads - before.snapshot_loads) == (1, 4, 0)


def test_a_soft_delete_drops_the_snapshot(client):
    orders = Repository(client, Order, snapshot_every=3)
    _open_order(orders, lines=3)  # versions 0..3, snapshot at 2
    assert client.load_snapshot("order-1") is not None
    client.delete_stream("order-1")  # soft delete at 3: the snapshot covered deleted events, so it goes
    assert client.load_snapshot("order-1") is None
    fresh = Repository(client, Order)
    reborn = fresh.execute("order-1", lambda o: o.place("user-2"), create=True)
    assert reborn.version == 4  # the store numbers the new life after the old one
    loaded = orders.get("order-1")
    assert (loaded.state.user_id, loaded.state.lines, loaded.version) == ("user-2", (), 4)
    assert orders.stats().snapshot_fallbacks == 0


def test_a_stream_recreated_after_a_soft_delete_at_its_snapshot_ignores_the_snapshot(client):
    orders = Repository(client, Order, snapshot_every=3)
    _open_order(orders, lines=2)  # versions 0..2, snapshot at 2
    client.delete_stream("order-1")
    orders.execute("order-1", lambda o: o.place("user-2"), create=True)  # version 3
    assert orders.get("order-1").state.lines == ()


@pytest.mark.parametrize("snapshot_every", [None, 3])
def test_get_many_loads_what_get_loads_in_a_few_round_trips(backend, client, snapshot_every):
    orders = Repository(client, Order, snapshot_every=snapshot_every)
    ids = [f"order-{i}" for i in range(12)]
    for i, id in enumerate(ids):
        _open_order(orders, id, lines=i % 7)  # with snapshots: some at their snapshot, some past it
    client.save_snapshot("order-11", 4, encode(UserState()))  # unreadable: every event is folded
    client.delete_stream("order-10")  # its snapshot goes; it comes back below in a new life
    orders.execute("order-10", lambda o: o.place("user-9"), create=True)
    backend.calls.clear()
    many = orders.get_many(reversed(ids))
    assert list(many) == ids[::-1]
    names = backend.names()
    # One batch read for all; then single reads only where get's own path must look closer: order-10,
    # whose new life starts past version 0 (and, with snapshots, order-11's unreadable one and those
    # with no event after their snapshot).
    assert names.count("events.read_streams") == 1
    after = backend.calls[names.index("events.read_streams") + 1:]
    if snapshot_every is None:
        assert names[0] == "events.read_streams" and {args[0] for _, args in after} == {"order-10"}
    else:
        assert names[:len(ids)] == ["events.load_snapshot"] * len(ids)
        assert len({args[0] for _, args in after}) < len(ids) // 2, sorted({args[0] for _, args in after})
    for id in ids:
        one = Repository(client, Order, snapshot_every=snapshot_every).get(id)
        assert (many[id].version, many[id].state) == (one.version, one.state), id


def test_get_many_refuses_a_missing_aggregate_and_bad_ids(client):
    users = Repository(client, User, snapshot_every=2)
    users.execute("user-1", lambda u: u.create_user("ann@example.com", "Ann"), create=True)
    assert users.get_many([]) == {}
    with pytest.raises(AggregateNotFoundError) as info:
        users.get_many(["user-1", "user-404"])
    assert info.value.aggregate_id == "user-404"
    with pytest.raises(InvalidArgumentError):
        users.get_many("user-1")
    with pytest.raises(InvalidArgumentError):
        users.get_many(["user-1", "bad\x00id"])


def test_a_failed_snapshot_write_does_not_fail_the_save():
    backend = Backend(snapshot_down=True)
    client = EventStoreClient(backend)
    orders = Repository(client, Order, snapshot_every=2)
    _open_order(orders, lines=1)
    stats = orders.stats()
    assert (stats.saves, stats.snapshots_saved, stats.snapshot_errors) == (2, 0, 1)
    assert "CallTimeoutError" in stats.last_snapshot_error
    assert client.load_snapshot("order-1") is None and len(client.read_stream("order-1")) == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(every=st.integers(1, 5), groups=st.lists(st.lists(st.one_of(
    st.tuples(st.just("place"), st.sampled_from(["u1", "u2"])),
    st.tuples(st.just("add"), st.sampled_from(["a", "b", "c"]), st.integers(1, 3), st.sampled_from([100, 250])),
    st.tuples(st.just("pay_total")),
    st.tuples(st.just("pay"), st.integers(0, 1000)),
    st.tuples(st.just("ship")),
    st.tuples(st.just("cancel")),
), min_size=1, max_size=3), max_size=15))
def test_loading_from_snapshots_gives_the_fold_of_every_event(every, groups):
    client = EventStoreClient(LocalBackend())
    with_snapshots = Repository(client, Order, snapshot_every=every)
    without = Repository(client, Order)
    committed = []

    def run(order: Order, group) -> None:
        for command, *args in group:
            if command == "add":
                order.add_line(*args)
            elif command == "pay_total":
                order.pay(order.state.total_cents)
            else:
                getattr(order, command)(*args)

    for group in groups:
        try:
            with_snapshots.execute("order-1", lambda o, g=group: run(o, g), create=True)
            committed.append(group)
        except CommandRejectedError:
            pass
        if committed:
            replayed = with_snapshots.stats().events_replayed
            with_snapshots.get("order-1")
            assert with_snapshots.stats().events_replayed - replayed < every  # the tail stays short
    model = Order("order-1")
    for group in committed:
        run(model, group)
    if not committed:
        with pytest.raises(AggregateNotFoundError):
            with_snapshots.get("order-1")
        return
    a, b = with_snapshots.get("order-1"), without.get("order-1")
    assert (a.version, a.state) == (b.version, b.state) == (model.version, model.state)


# --- conflicts and retries ---------------------------------------------------------------------------


def test_of_two_writers_of_one_version_the_second_conflicts(client):
    orders = Repository(client, Order)
    _open_order(orders)
    first, second = orders.get("order-1"), Repository(client, Order).get("order-1")
    first.add_line("book", 1, 100)
    second.add_line("pen", 1, 200)
    orders.save(first)
    with pytest.raises(WrongExpectedVersionError) as e:
        orders.save(second)
    assert (e.value.expected, e.value.actual) == (0, 1)
    assert second.pending != ()  # kept: nothing of it was written
    assert [line.sku for line in orders.get("order-1").state.lines] == ["book"]
    assert orders.stats().conflicts == 1


def test_execute_decides_again_until_the_conflict_clears():
    backend = Backend()
    orders = Repository(EventStoreClient(backend), Order, max_retries=3)
    _open_order(orders)
    backend.rivals = 2
    runs = []
    o = orders.execute("order-1", lambda o: (runs.append(o.version), o.add_line("book", 1, 100)))
    assert runs == [0, 1, 2]  # each run saw the rival's latest line
    assert [line.sku for line in o.state.lines] == ["rival-1", "rival-0", "book"]
    assert orders.get("order-1").state == o.state
    assert (orders.stats().conflicts, orders.stats().retries) == (2, 2)


def test_execute_gives_up_after_max_retries_with_the_last_conflict_as_cause():
    backend = Backend()
    orders = Repository(EventStoreClient(backend), Order, max_retries=2)
    _open_order(orders)
    backend.rivals = 10
    runs = []
    with pytest.raises(RetriesExhaustedError, match="3 attempts failed.*raise max_retries") as e:
        orders.execute("order-1", lambda o: (runs.append(1), o.add_line("book", 1, 100)))
    assert e.value.attempts == 3 and len(runs) == 3
    assert isinstance(e.value.last_error, WrongExpectedVersionError) and e.value.__cause__ is e.value.last_error
    assert "book" not in [line.sku for line in orders.get("order-1").state.lines]


def test_a_command_refused_after_a_reload_is_refused(client):
    orders = Repository(client, Order)
    _open_order(orders, lines=1)
    stale = orders.get("order-1")
    orders.execute("order-1", lambda o: o.pay(100))
    stale.add_line("pen", 1, 1)
    with pytest.raises(WrongExpectedVersionError):
        orders.save(stale)
    with pytest.raises(CommandRejectedError, match="is paid: it cannot be changed"):
        orders.execute("order-1", lambda o: o.add_line("pen", 1, 1))


def test_two_creators_one_wins_the_other_sees_it(client):
    users = Repository(client, User)
    loser = User("user-1")
    loser.create_user("bob@example.com", "Bob")
    users.execute("user-1", lambda u: u.create_user("ann@example.com", "Ann"), create=True)
    with pytest.raises(WrongExpectedVersionError):
        users.save(loser)
    with pytest.raises(CommandRejectedError, match="exists already"):
        users.execute("user-1", lambda u: u.create_user("bob@example.com", "Bob"), create=True)


# --- idempotent resends ------------------------------------------------------------------------------


def test_a_save_retried_after_a_lost_reply_writes_nothing_twice():
    backend = Backend(lost_replies=1)
    client = EventStoreClient(backend)
    orders = Repository(client, Order)
    o = Order("order-1")
    o.place("user-1")
    o.add_line("book", 1, 100)
    ids = [d.id for d in o.pending_event_data()]
    with pytest.raises(CallTimeoutError):
        orders.save(o)  # the append landed, its answer was lost
    assert o.pending != ()
    result = orders.save(o)  # same ids: recognised
    assert (result.first_version, result.next_expected_version, result.first_position) == (0, 1, 0)
    assert [e.id for e in client.read_stream("order-1")] == ids
    assert o.pending == () and o.version == 1


def test_execute_resends_after_a_lost_reply_and_runs_the_command_once():
    backend = Backend()
    client = EventStoreClient(backend)
    orders = Repository(client, Order)
    _open_order(orders)
    backend.lost_replies = 1
    runs = []
    o = orders.execute("order-1", lambda o: (runs.append(1), o.add_line("book", 1, 100)))
    assert len(runs) == 1 and o.version == 1
    assert [e.type for e in client.read_stream("order-1")] == ["seed.order_placed", "seed.order_line_added"]
    assert orders.stats().resends == 1


# --- upcasting: events and snapshots written by an older class definition ----------------------------

_TAG, _STATE_TAG = "test.events_repo.renamed", "test.events_repo.person_state"


def _split(name: str) -> dict:
    first, _, last = name.partition(" ")
    return {"first": first, "last": last}


@record(_TAG, version=2, upgrades={1: lambda f: _split(f["name"])})
class Renamed:
    """Version 2 splits version 1's ``name`` in two."""

    first: str
    last: str


@record(_STATE_TAG, version=2, upgrades={1: lambda f: {**_split(f["name"]), "renames": f["renames"]}})
class PersonState:
    first: str = ""
    last: str = ""
    renames: int = 0


class Person(Aggregate[PersonState]):
    def rename(self, first: str, last: str) -> None:
        self.trigger(Renamed(first, last))

    @applies
    def _(self, e: Renamed) -> None:
        self.state = PersonState(e.first, e.last, self.state.renames + 1)


_OLD_WRITER = textwrap.dedent(f"""
    import sys
    from ddia_ray.codec import encode, record

    @record({_TAG!r}, version=1)
    class Renamed:
        name: str

    @record({_STATE_TAG!r}, version=1)
    class PersonState:
        name: str = ""
        renames: int = 0

    events = tuple(encode(Renamed(n)) for n in ("Ada Byron", "Ada Lovelace"))
    sys.stdout.buffer.write(encode((events, encode(PersonState("Ada Byron", 1)))))
""")


@pytest.fixture(scope="module")
def old_bytes() -> tuple[tuple[bytes, ...], bytes]:
    """Two events and a state, encoded by version 1 of their classes in another interpreter."""
    out = subprocess.run([sys.executable, "-c", _OLD_WRITER], capture_output=True, check=True)
    events, state = decode(out.stdout)
    for payload in (*events, state):
        assert msgpack.unpackb(msgpack.unpackb(payload).data)["v"] == 1  # written by version 1 indeed
    return events, state


def test_events_written_by_an_older_class_are_upcast_on_load(client, old_bytes):
    events, _ = old_bytes
    client.append("person-1", [EventData(f"old-{i}", _TAG, b) for i, b in enumerate(events)], NO_STREAM)
    people = Repository(client, Person)
    people.execute("person-1", lambda p: p.rename("Ada", "King"))  # a version 2 event after them
    assert [e.decode() for e in client.read_stream("person-1")] == \
        [Renamed("Ada", "Byron"), Renamed("Ada", "Lovelace"), Renamed("Ada", "King")]
    person = Repository(client, Person).get("person-1")
    assert (person.state, person.version) == (PersonState("Ada", "King", 3), 2)


def test_a_snapshot_written_by_an_older_state_class_is_upcast_on_load(client, old_bytes):
    events, state = old_bytes
    client.append("person-1", [EventData(f"old-{i}", _TAG, b) for i, b in enumerate(events)], NO_STREAM)
    assert client.save_snapshot("person-1", 0, state)
    people = Repository(client, Person, snapshot_every=10)
    person = people.get("person-1")
    assert (person.state, person.version) == (PersonState("Ada", "Lovelace", 2), 1)
    assert (people.stats().snapshot_loads, people.stats().snapshot_fallbacks, people.stats().events_replayed) == \
        (1, 0, 1)
