"""Aggregates (issue 14, item 3): apply dispatch, versions, pending events, the state guard, and the
seed's users and orders with their rules. No store here: the repository's tests load and save."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pytest

from ddia_ray.codec import encode, record
from ddia_ray.errors import CodecError, CommandRejectedError, InvalidArgumentError, UnhandledEventError
from ddia_ray.events.aggregate import Aggregate, applies
from ddia_ray.events.domain import (ORDER_LIFECYCLE, Order, OrderCancelled, OrderLine, OrderPaid, OrderPlaced,
                                    OrderShipped, User, UserCreated, UserEmailUpdated, UserState)
from ddia_ray.events.records import AppendResult, RecordedEvent, event_data


@record("test.agg.opened", version=1)
class Opened:
    owner: str


@record("test.agg.deposited", version=1)
class Deposited:
    cents: int


@record("test.agg.withdrawn", version=1)
class Withdrawn:
    cents: int


@record("test.agg.frozen", version=1)
class Frozen:
    pass


@record("test.agg.noted", version=1)
class Noted:  # no aggregate here applies it
    text: str


@record("test.agg.account_state", version=1)
class AccountState:
    owner: str = ""
    balance: int = 0
    moves: int = 0
    frozen: bool = False


class Account(Aggregate[AccountState]):
    """Every form of declaring an apply method, all of them named ``_``."""

    def open(self, owner: str) -> None:
        self.trigger(Opened(owner))

    def deposit(self, cents: int) -> None:
        self.trigger(Deposited(cents))

    @applies(Opened)  # named by the decorator
    def _(self, e) -> None:
        self.state = replace(self.state, owner=e.owner)

    @applies  # read from the type hint
    def _(self, e: Deposited) -> None:  # noqa: F811
        self.state = replace(self.state, balance=self.state.balance + e.cents, moves=self.state.moves + 1)

    @applies  # a union names several classes
    def _(self, e: Withdrawn | Frozen) -> None:  # noqa: F811
        if isinstance(e, Frozen):
            self.state = replace(self.state, frozen=True)
        else:
            self.state = replace(self.state, balance=self.state.balance - e.cents, moves=self.state.moves + 1)


def _recorded(stream: str, version: int, event) -> RecordedEvent:
    d = event_data(event)
    return RecordedEvent(stream, version, version, d.id, d.type, d.data, b"", 0)


def _result(stream: str, first: int, last: int) -> AppendResult:
    return AppendResult(stream, first, last, first, last)


# --- dispatch ----------------------------------------------------------------------------------------


def test_apply_methods_are_found_by_decorator_by_type_hint_and_by_union():
    a = Account("acct-1")
    a.open("ann")
    a.deposit(500)
    a.trigger(Withdrawn(200))
    a.trigger(Frozen())
    assert a.state == AccountState("ann", 300, 2, True)
    assert set(Account._appliers) == {Opened, Deposited, Withdrawn, Frozen}


def test_an_event_without_apply_method_is_refused_and_not_recorded():
    a = Account("acct-1")
    a.open("ann")
    with pytest.raises(UnhandledEventError, match=r"Account has no apply method for Noted \('test.agg.noted'\)") as e:
        a.trigger(Noted("hi"))
    assert (e.value.aggregate, e.value.event_type) == ("Account", "test.agg.noted")
    assert isinstance(e.value, TypeError)
    assert a.version == 0 and a.pending == (Opened("ann"),)


def test_replaying_a_stored_event_without_apply_method_is_refused():
    a = Account("acct-1")
    with pytest.raises(UnhandledEventError, match="test.agg.noted"):
        a.replay(_recorded("acct-1", 0, Noted("hi")))
    assert a.version == -1


def test_a_stored_event_that_is_no_record_is_refused():
    d = event_data(Deposited(1))
    with pytest.raises(UnhandledEventError, match=r"version 0 \('test.agg.deposited'\) holds a int, not an event"):
        Account("acct-1").replay(RecordedEvent("acct-1", 0, 0, d.id, d.type, encode(7), b"", 0))


def test_an_aggregate_is_neither_copied_nor_pickled():
    a = Account("acct-1")
    a.open("ann")
    with pytest.raises(InvalidArgumentError, match="pass its id and load it"):
        copy.copy(a)
    with pytest.raises(InvalidArgumentError, match="not copied or pickled"):
        pickle.dumps(a)


def test_a_subclass_inherits_apply_methods_and_may_override_them():
    class Audited(Account):
        @applies
        def _(self, e: Deposited) -> None:
            self.state = replace(self.state, balance=self.state.balance + 2 * e.cents)

    b = Audited("acct-2")
    b.open("bo")
    b.deposit(10)
    assert b.state == AccountState("bo", 20, 0, False)
    a = Account("acct-3")
    a.deposit(10)
    assert a.state.balance == 10  # the base class keeps its own


# --- versions and pending events ---------------------------------------------------------------------


def test_version_counts_recorded_events_from_minus_one():
    a = Account("acct-1")
    assert a.version == -1 and a.pending == ()
    a.open("ann")
    a.deposit(1)
    a.deposit(2)
    assert a.version == 2
    assert a.pending == (Opened("ann"), Deposited(1), Deposited(2))


def test_pending_events_are_collected_once():
    a = Account("acct-1")
    a.open("ann")
    a.deposit(1)
    assert a.collect_events() == [Opened("ann"), Deposited(1)]
    assert a.collect_events() == []
    assert a.pending == () and a.pending_event_data() == ()
    assert a.version == 1  # collecting is not un-recording


def test_event_ids_are_chosen_once_when_recorded():
    a = Account("acct-1")
    a.open("ann")
    a.deposit(1)
    first = a.pending_event_data()
    assert first == a.pending_event_data()  # a second save attempt sends the same ids
    assert len({d.id for d in first}) == 2
    assert [d.type for d in first] == ["test.agg.opened", "test.agg.deposited"]
    ids = iter(["id-1", "id-2"])
    b = Account("acct-2", new_event_id=lambda: next(ids))
    b.open("bo")
    b.deposit(3)
    assert [d.id for d in b.pending_event_data()] == ["id-1", "id-2"]


def test_mark_saved_takes_the_stores_numbering_and_checks_the_batch():
    a = Account("acct-1")
    a.open("ann")
    a.deposit(1)
    with pytest.raises(InvalidArgumentError, match="not the append of its 2 pending events"):
        a.mark_saved(_result("acct-1", 0, 0))
    with pytest.raises(InvalidArgumentError, match="not the append"):
        a.mark_saved(_result("acct-other", 0, 1))
    # A stream soft-deleted at version 6 numbers a new life from 7.
    assert a.mark_saved(_result("acct-1", 7, 8)) == [Opened("ann"), Deposited(1)]
    assert a.version == 8 and a.pending == ()


def test_rebuild_folds_snapshot_then_events_in_order():
    events = [_recorded("acct-1", 0, Opened("ann")), _recorded("acct-1", 1, Deposited(5)),
              _recorded("acct-1", 2, Deposited(7))]
    a = Account.rebuild("acct-1", events)
    assert (a.version, a.state, a.pending) == (2, AccountState("ann", 12, 2), ())
    b = Account.rebuild("acct-1", events[2:], snapshot=(1, AccountState("ann", 5, 1)))
    assert (b.version, b.state) == (a.version, a.state)
    with pytest.raises(InvalidArgumentError, match="at version 0 cannot replay version 2"):
        Account.rebuild("acct-1", [events[0], events[2]])
    with pytest.raises(InvalidArgumentError, match="at version 1 cannot replay version 1"):
        Account.rebuild("acct-1", events[1:], snapshot=(1, AccountState()))
    with pytest.raises(InvalidArgumentError, match="of its own stream"):
        Account.rebuild("acct-2", events)
    with pytest.raises(InvalidArgumentError, match="state is a AccountState"):
        Account.rebuild("acct-1", (), snapshot=(0, UserState()))


def test_replay_under_unsaved_events_is_refused():
    a = Account("acct-1")
    a.open("ann")
    with pytest.raises(InvalidArgumentError, match="has unsaved events"):
        a.replay(_recorded("acct-1", 1, Deposited(1)))


# --- state: one record, changed only by apply methods ------------------------------------------------


def test_state_changes_only_inside_apply_methods():
    class Sneaky(Account):
        def cheat(self) -> None:
            self.state = replace(self.state, balance=10**6)

        def stash(self) -> None:
            self.balance = 10**6

    s = Sneaky("acct-1")
    with pytest.raises(InvalidArgumentError, match="assigned outside an apply method"):
        s.cheat()
    with pytest.raises(InvalidArgumentError, match=r"Sneaky.balance cannot be set.*AccountState"):
        s.stash()
    with pytest.raises(InvalidArgumentError, match="cannot be deleted"):
        del s.state
    assert s.state == AccountState()


def test_a_failing_apply_method_changes_nothing():
    class Fragile(Account):
        @applies
        def _(self, e: Deposited) -> None:
            self.state = replace(self.state, balance=self.state.balance + e.cents)
            if e.cents < 0:
                raise ValueError("negative")

    f = Fragile("acct-1")
    f.deposit(5)
    with pytest.raises(ValueError, match="negative"):
        f.deposit(-1)
    assert (f.state.balance, f.version, len(f.pending)) == (5, 0, 1)


def test_an_apply_method_must_leave_a_state_record_of_its_class():
    class Wrong(Account):
        @applies
        def _(self, e: Deposited) -> None:
            self.state = UserState()

    with pytest.raises(InvalidArgumentError, match="state is a AccountState, got UserState"):
        Wrong("acct-1").deposit(1)


def test_state_round_trips_as_snapshot_bytes():
    a = Account("acct-1")
    a.open("ann")
    a.deposit(3)
    assert Account.decode_state(a.encode_state()) == a.state
    with pytest.raises(CodecError, match="expected"):
        Account.decode_state(encode(UserState()))


# --- definitions refused when the class is made ------------------------------------------------------


def test_trigger_refuses_what_is_no_event():
    a = Account("acct-1")
    with pytest.raises(InvalidArgumentError, match="codec record instance; got dict"):
        a.trigger({"cents": 1})
    with pytest.raises(InvalidArgumentError, match="got EventData"):
        a.trigger(event_data(Deposited(1)))


def test_bad_aggregate_definitions_fail_when_the_class_is_made():
    with pytest.raises(InvalidArgumentError, match="is no event class"):
        applies(str)
    with pytest.raises(InvalidArgumentError, match="at least one event class"):
        applies()
    with pytest.raises(InvalidArgumentError, match="no type hint"):
        class NoHint(Aggregate[AccountState]):
            @applies
            def _(self, e) -> None: ...
    with pytest.raises(InvalidArgumentError, match=r"two apply methods take Deposited \(lines \d+ and \d+\)"):
        class Twice(Aggregate[AccountState]):
            @applies
            def _(self, e: Deposited) -> None: ...

            @applies(Deposited)
            def _(self, e) -> None: ...  # noqa: F811
    with pytest.raises(InvalidArgumentError, match="cannot be resolved.*@applies\\(EventClass\\)"):
        class Unresolved(Aggregate[AccountState]):
            @applies
            def _(self, e: NotDefinedAnywhere) -> None: ...  # noqa: F821
    with pytest.raises(InvalidArgumentError, match="defines __init__"):
        class Init(Aggregate[AccountState]):
            def __init__(self, id: str) -> None: ...
    with pytest.raises(InvalidArgumentError, match="is no codec record"):
        class NotRecord(Aggregate[dict]):
            pass
    with pytest.raises(InvalidArgumentError, match="names no state record"):
        Aggregate("x")


def test_a_state_record_with_required_fields_needs_initial_state():
    @record("test.agg.strict_state", version=1)
    class Strict:
        owner: str

    class NeedsStart(Aggregate[Strict]):
        pass

    with pytest.raises(InvalidArgumentError, match="give every field a default, or override"):
        NeedsStart("x-1")

    class Started(NeedsStart):
        @classmethod
        def initial_state(cls) -> Strict:
            return Strict("nobody")

    assert Started("x-1").state == Strict("nobody")


# --- the seed's users --------------------------------------------------------------------------------


def test_the_seeds_user_is_created_once_then_changes_email():
    u = User("user-1")
    u.create_user("ann@example.com", "Ann")
    u.update_email("ann@example.org")
    u.update_email("ann@example.org")  # no change, no event
    assert u.state == UserState(True, "ann@example.org", "Ann")
    assert u.pending == (UserCreated("ann@example.com", "Ann"), UserEmailUpdated("ann@example.org"))
    assert u.version == 1


@pytest.mark.parametrize("setup,command,message", [
    ([], lambda u: u.update_email("a@b.co"), "does not exist yet: create it first"),
    ([lambda u: u.create_user("a@b.co", "A")], lambda u: u.create_user("c@d.co", "C"), "exists already"),
    ([], lambda u: u.create_user("not-an-email", "A"), "is no email address"),
    ([lambda u: u.create_user("a@b.co", "A")], lambda u: u.update_email("a@b"), "is no email address"),
])
def test_user_rules_refuse_commands_and_record_nothing(setup, command, message):
    u = User("user-1")
    for step in setup:
        step(u)
    before = (u.version, u.state, u.pending)
    with pytest.raises(CommandRejectedError, match=message) as e:
        command(u)
    assert e.value.aggregate_id == "user-1" and isinstance(e.value, ValueError)
    assert (u.version, u.state, u.pending) == before


def test_user_event_shapes_are_checked():
    with pytest.raises(InvalidArgumentError, match="email"):
        UserCreated(42, "A")  # type: ignore[arg-type]


# --- orders ------------------------------------------------------------------------------------------


def test_an_order_is_placed_filled_paid_and_shipped():
    o = Order("order-1")
    o.place("user-1")
    o.add_line("book", 2, 1500)
    o.add_line("pen", 1, 200)
    o.add_line("book", 1, 1500)  # the same product adds to its line
    assert o.state.lines == (OrderLine("book", 3, 1500), OrderLine("pen", 1, 200))
    o.pay(4700)
    o.ship("TRK-1")
    assert (o.state.status, o.state.paid_cents, o.state.tracking, o.version) == ("shipped", 4700, "TRK-1", 5)


def _placed(o: Order) -> None:
    o.place("user-1")


def _with_line(o: Order) -> None:
    o.place("user-1")
    o.add_line("book", 1, 1500)


def _paid(o: Order) -> None:
    _with_line(o)
    o.pay(1500)


def _shipped(o: Order) -> None:
    _paid(o)
    o.ship()


def _cancelled(o: Order) -> None:
    _placed(o)
    o.cancel("changed my mind")


@pytest.mark.parametrize("setup,command,message", [
    (_placed, lambda o: o.place("user-2"), "is open: it cannot be placed"),
    (lambda o: None, lambda o: o.add_line("book", 1, 1), "is new: it cannot be changed"),
    (_paid, lambda o: o.add_line("pen", 1, 1), "is paid: it cannot be changed"),
    (_placed, lambda o: o.add_line("book", 0, 1), "at least 1 item, got 0"),
    (_placed, lambda o: o.add_line("book", 1, -5), "a price is >= 0 cents"),
    (_with_line, lambda o: o.add_line("book", 1, 999), "'book' is in the order at 1500 cents, not 999"),
    (_placed, lambda o: o.pay(0), "an empty order cannot be paid"),
    (_with_line, lambda o: o.pay(1499), "pays 1499 cents, its total is 1500"),
    (_paid, lambda o: o.pay(1500), "is paid: it cannot be paid"),
    (_with_line, lambda o: o.ship(), "is open: it cannot be shipped"),
    (_shipped, lambda o: o.cancel(), "is shipped: it cannot be cancelled"),
    (_cancelled, lambda o: o.cancel(), "is cancelled: it cannot be cancelled"),
    (_cancelled, lambda o: o.add_line("pen", 1, 1), "is cancelled: it cannot be changed"),
], ids=["place-twice", "line-before-place", "line-after-pay", "zero-quantity", "negative-price", "price-changed",
        "pay-empty", "pay-wrong-amount", "pay-twice", "ship-unpaid", "cancel-shipped", "cancel-twice",
        "line-after-cancel"])
def test_order_rules_refuse_commands_and_record_nothing(setup, command, message):
    o = Order("order-1")
    setup(o)
    before = (o.version, o.state, o.pending)
    with pytest.raises(CommandRejectedError, match=message):
        command(o)
    assert (o.version, o.state, o.pending) == before


def test_a_paid_order_may_still_be_cancelled():
    o = Order("order-1")
    _paid(o)
    o.cancel("out of stock")
    assert (o.state.status, o.state.cancel_reason) == ("cancelled", "out of stock")


def test_the_lifecycle_table_drives_the_statuses():
    # Each event's apply method sets the status its row names: replay one event of each row.
    o = Order("order-1")
    events = [OrderPlaced("u"), OrderPaid(0), OrderShipped(), OrderCancelled()]
    for version, event in enumerate(events):
        o.replay(_recorded("order-1", version, event))
        assert o.state.status == ORDER_LIFECYCLE[type(event)][1]


def test_order_arguments_of_the_wrong_type_are_refused():
    o = Order("order-1")
    _placed(o)
    with pytest.raises(InvalidArgumentError, match="a quantity is an int"):
        o.add_line("book", 1.5, 100)  # type: ignore[arg-type]
    assert o.version == 0
