"""The example domain of the seed: users (its ``UserAggregate``) and orders, as event-sourced aggregates.

Theory of operation
-------------------
:class:`User` is the seed's ``UserAggregate``: ``create_user(email, name)`` records a
:class:`UserCreated`, ``update_email(email)`` a :class:`UserEmailUpdated`. The seed bumped the
version and set the fields in the command itself; here the command only decides, and the apply
method changes the state, so a reload folds the same events into the same state (DDIA chapter 11,
"Event Sourcing": the state is derived from the log, never written beside it).

:class:`Order` has a life cycle, kept in one table, :data:`ORDER_LIFECYCLE`, that drives the code:
each command may run only in the statuses its event's row allows (it raises
:class:`~ddia_ray.errors.CommandRejectedError` otherwise), and each apply method sets the status
its row names. Drawn::

    new --place--> open --pay--> paid --ship--> shipped
                   |  ^           |
          add_line +--+  cancel   +--cancel--> cancelled
                   +-----------------cancel--> cancelled

Events check their shape (types) in ``__post_init__``, which also runs when they are read back;
they never check the domain's rules, which belong to the commands: a rule may change, and every
event recorded under the old rule must still load.

The tags (``seed.*``) are the events' types in the store, stable across renames of the classes.
Amounts are integer cents: floats do not add up money exactly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..codec import record
from ..errors import CommandRejectedError, InvalidArgumentError
from .aggregate import Aggregate, applies

__all__ = ["UserCreated", "UserEmailUpdated", "UserState", "User",
           "OrderPlaced", "OrderLineAdded", "OrderPaid", "OrderShipped", "OrderCancelled",
           "OrderLine", "OrderState", "Order", "ORDER_LIFECYCLE", "MAX_ORDER_LINES"]

#: Distinct products one order holds: an aggregate is a consistency boundary, not a warehouse.
MAX_ORDER_LINES = 100


def _text(what: str, value: object, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value) or len(value) > 1024:
        raise InvalidArgumentError(f"{what} is a {'' if empty else 'non-empty '}str of at most 1024 characters, "
                                   f"got {value!r:.80}")


def _whole(what: str, value: object) -> None:
    if type(value) is not int:
        raise InvalidArgumentError(f"{what} is an int, got {value!r:.80}")


# --- users -----------------------------------------------------------------------------------------


@record("seed.user_created", version=1)
class UserCreated:
    """A user was created with ``email`` and ``name`` (the seed's ``UserCreated``)."""

    email: str
    name: str

    def __post_init__(self):
        _text("a user's email", self.email)
        _text("a user's name", self.name)


@record("seed.user_email_updated", version=1)
class UserEmailUpdated:
    """A user's email changed to ``email`` (the seed's ``UserEmailUpdated``)."""

    email: str

    def __post_init__(self):
        _text("a user's email", self.email)


@record("seed.user_state", version=1)
class UserState:
    """What a :class:`User` knows: whether it exists, its email and its name."""

    created: bool = False
    email: str = ""
    name: str = ""


def _check_email(user_id: str, email: str) -> None:
    _text("an email", email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or "@" in domain or any(c.isspace() for c in email):
        raise CommandRejectedError(f"user {user_id!r}: {email!r:.80} is no email address (name@domain.tld)",
                                   aggregate_id=user_id)


class User(Aggregate[UserState]):
    """The seed's ``UserAggregate``: created once, then its email may change."""

    def create_user(self, email: str, name: str) -> None:
        """Create this user (the seed's ``CreateUser``); a user is created once."""
        if self.state.created:
            raise CommandRejectedError(f"user {self.id!r} exists already (as {self.state.email!r}); update it "
                                       f"instead", aggregate_id=self.id)
        _check_email(self.id, email)
        self.trigger(UserCreated(email, name))

    def update_email(self, email: str) -> None:
        """Change the user's email (the seed's ``UpdateEmail``); the same email again records nothing."""
        if not self.state.created:
            raise CommandRejectedError(f"user {self.id!r} does not exist yet: create it first", aggregate_id=self.id)
        _check_email(self.id, email)
        if email != self.state.email:  # an event is a change that happened: no change, no event
            self.trigger(UserEmailUpdated(email))

    @applies
    def _(self, e: UserCreated) -> None:
        self.state = UserState(True, e.email, e.name)

    @applies
    def _(self, e: UserEmailUpdated) -> None:  # noqa: F811 - apply methods are found by their event class
        self.state = replace(self.state, email=e.email)


# --- orders ----------------------------------------------------------------------------------------


@record("seed.order_placed", version=1)
class OrderPlaced:
    """User ``user_id`` placed the order."""

    user_id: str

    def __post_init__(self):
        _text("an order's user id", self.user_id)


@record("seed.order_line_added", version=1)
class OrderLineAdded:
    """``quantity`` of ``sku`` at ``unit_price_cents`` each were added to the order."""

    sku: str
    quantity: int
    unit_price_cents: int

    def __post_init__(self):
        _text("a sku", self.sku)
        _whole("a quantity", self.quantity)
        _whole("a unit price in cents", self.unit_price_cents)


@record("seed.order_paid", version=1)
class OrderPaid:
    """The order was paid ``amount_cents``."""

    amount_cents: int

    def __post_init__(self):
        _whole("an amount in cents", self.amount_cents)


@record("seed.order_shipped", version=1)
class OrderShipped:
    """The order was shipped (``tracking``: the carrier's number, if any)."""

    tracking: str = ""

    def __post_init__(self):
        _text("a tracking number", self.tracking, empty=True)


@record("seed.order_cancelled", version=1)
class OrderCancelled:
    """The order was cancelled, for ``reason``."""

    reason: str = ""

    def __post_init__(self):
        _text("a cancellation reason", self.reason, empty=True)


@record("seed.order_line", version=1)
class OrderLine:
    """One product of an order: ``quantity`` of ``sku`` at ``unit_price_cents`` each."""

    sku: str
    quantity: int
    unit_price_cents: int


@record("seed.order_state", version=1)
class OrderState:
    """What an :class:`Order` knows: its status (a row of :data:`ORDER_LIFECYCLE`), user, lines and payment."""

    status: str = "new"
    user_id: str = ""
    lines: tuple = ()
    paid_cents: int = 0
    tracking: str = ""
    cancel_reason: str = ""

    @property
    def total_cents(self) -> int:
        """What the order costs: the sum of its lines."""
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


#: The order's life cycle, one row per event: the statuses its command may run in, and the status
#: after it. The commands check the first column and the apply methods set the second.
ORDER_LIFECYCLE: dict[type, tuple[frozenset[str], str]] = {
    OrderPlaced: (frozenset({"new"}), "open"),
    OrderLineAdded: (frozenset({"open"}), "open"),
    OrderPaid: (frozenset({"open"}), "paid"),
    OrderShipped: (frozenset({"paid"}), "shipped"),
    OrderCancelled: (frozenset({"open", "paid"}), "cancelled"),
}


class Order(Aggregate[OrderState]):
    """An order: placed by a user, lines added while open, paid the exact total, then shipped;
    cancelled any time before it ships."""

    def _allow(self, event_cls: type, verb: str) -> None:
        allowed = ORDER_LIFECYCLE[event_cls][0]
        if self.state.status not in allowed:
            raise CommandRejectedError(f"order {self.id!r} is {self.state.status}: it cannot be {verb} (only when "
                                       f"{' or '.join(sorted(allowed))})", aggregate_id=self.id)

    def _reject(self, why: str) -> None:
        raise CommandRejectedError(f"order {self.id!r}: {why}", aggregate_id=self.id)

    def place(self, user_id: str) -> None:
        """Place this order for ``user_id``."""
        self._allow(OrderPlaced, "placed")
        self.trigger(OrderPlaced(user_id))

    def add_line(self, sku: str, quantity: int, unit_price_cents: int) -> None:
        """Add ``quantity`` of ``sku`` at ``unit_price_cents`` (more of a sku it has adds to its line)."""
        self._allow(OrderLineAdded, "changed")
        event = OrderLineAdded(sku, quantity, unit_price_cents)
        if quantity < 1:
            self._reject(f"a line adds at least 1 item, got {quantity}")
        if unit_price_cents < 0:
            self._reject(f"a price is >= 0 cents, got {unit_price_cents}")
        same = [line for line in self.state.lines if line.sku == sku]
        if same and same[0].unit_price_cents != unit_price_cents:
            self._reject(f"{sku!r} is in the order at {same[0].unit_price_cents} cents, not {unit_price_cents}")
        if not same and len(self.state.lines) >= MAX_ORDER_LINES:
            self._reject(f"an order holds at most {MAX_ORDER_LINES} products")
        self.trigger(event)

    def pay(self, amount_cents: int) -> None:
        """Pay the order: exactly its total, and only once it has a line."""
        self._allow(OrderPaid, "paid")
        event = OrderPaid(amount_cents)
        if not self.state.lines:
            self._reject("an empty order cannot be paid: add a line first")
        if amount_cents != self.state.total_cents:
            self._reject(f"pays {amount_cents} cents, its total is {self.state.total_cents}")
        self.trigger(event)

    def ship(self, tracking: str = "") -> None:
        """Ship the order (it must be paid)."""
        self._allow(OrderShipped, "shipped")
        self.trigger(OrderShipped(tracking))

    def cancel(self, reason: str = "") -> None:
        """Cancel the order (while open or paid: a shipped order is returned, not cancelled)."""
        self._allow(OrderCancelled, "cancelled")
        self.trigger(OrderCancelled(reason))

    def _moved(self, event: object, **changes: Any) -> None:
        self.state = replace(self.state, status=ORDER_LIFECYCLE[type(event)][1], **changes)

    @applies
    def _(self, e: OrderPlaced) -> None:
        self._moved(e, user_id=e.user_id)

    @applies
    def _(self, e: OrderLineAdded) -> None:  # noqa: F811 - apply methods are found by their event class
        lines = list(self.state.lines)
        for i, line in enumerate(lines):
            if line.sku == e.sku:
                lines[i] = replace(line, quantity=line.quantity + e.quantity)
                break
        else:
            lines.append(OrderLine(e.sku, e.quantity, e.unit_price_cents))
        self._moved(e, lines=tuple(lines))

    @applies
    def _(self, e: OrderPaid) -> None:  # noqa: F811
        self._moved(e, paid_cents=e.amount_cents)

    @applies
    def _(self, e: OrderShipped) -> None:  # noqa: F811
        self._moved(e, tracking=e.tracking)

    @applies
    def _(self, e: OrderCancelled) -> None:  # noqa: F811
        self._moved(e, cancel_reason=e.reason)
