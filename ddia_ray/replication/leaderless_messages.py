"""The messages leaderless replicas exchange, and the hint record they persist (:mod:`.leaderless`).

A coordinator sends :class:`LLStore` to the replicas of a write's preference list and
:class:`LLFetch` to those of a read's; a replica outside a key's list hands the request to one
inside it with :class:`LLCoordinate`. A stand-in offers the hints it holds to their home with
:class:`LLHandoff`, and a suspected replica is pinged with :class:`LLPing`. The codec checks
every field's type when a message is decoded; the messages that carry ``items`` also check that
each item is a tuple of its width, so a malformed one is refused with
:class:`~ddia_ray.errors.InvalidArgumentError` before a replica reads it.
"""

from __future__ import annotations

from typing import Any

from ..codec import record
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError

__all__ = ["LLStore", "LLStored", "LLFetch", "LLFetched", "LLCoordinate", "LLCoordinated", "LLHandoff",
           "LLHandoffAck", "LLPing", "HintChange"]


def _items(value: Any, width: int, what: str) -> tuple:
    if not isinstance(value, tuple) or not all(isinstance(i, tuple) and len(i) == width for i in value):
        raise InvalidArgumentError(f"{what} carries a tuple of {width}-tuples")
    return value


@record("repl.ll_store", version=1)
class LLStore:
    """Store these versions: ``items`` of ``(op, key, state, hint)``; ``op`` 0 asks for no acknowledgement
    (a repair); ``hint`` names the home replica the receiver stands in for ("" when it is a home)."""

    items: tuple

    def __post_init__(self):
        _items(self.items, 4, "a store message")


@record("repl.ll_stored", version=1)
class LLStored:
    """The ops of an :class:`LLStore` now held (persisted) by the sender."""

    ops: tuple


@record("repl.ll_fetch", version=1)
class LLFetch:
    """Send your versions: ``items`` of ``(op, key)``."""

    items: tuple

    def __post_init__(self):
        _items(self.items, 2, "a fetch message")


@record("repl.ll_fetched", version=1)
class LLFetched:
    """The answers to an :class:`LLFetch`: ``items`` of ``(op, key, state or None)``."""

    items: tuple

    def __post_init__(self):
        _items(self.items, 3, "a fetched message")


@record("repl.ll_coordinate", version=1)
class LLCoordinate:
    """Coordinate this client request for me (the keys' preference lists hold you, not me)."""

    op: int
    request: Any


@record("repl.ll_coordinated", version=1)
class LLCoordinated:
    """The answer to an :class:`LLCoordinate`: the result, or the error as a record."""

    op: int
    result: Any = None
    error: ErrorRecord | None = None


@record("repl.ll_handoff", version=1)
class LLHandoff:
    """Hints for the receiver, whose writes the sender held while it was unreachable: ``((key, state), ...)``."""

    items: tuple

    def __post_init__(self):
        _items(self.items, 2, "a handoff message")


@record("repl.ll_handoff_ack", version=1)
class LLHandoffAck:
    """The hints of an :class:`LLHandoff` the home now holds: ``((key, state), ...)`` as they were offered."""

    items: tuple


@record("repl.ll_ping", version=1)
class LLPing:
    """Are you there? (to a suspected replica; any message back clears the suspicion)."""

    reply: bool = True


@record("repl.hint_change", version=1)
class HintChange:
    """A persisted hint: ``key``'s versions held for ``home`` (``state`` empty: delivered, dropped)."""

    home: str
    key: bytes
    state: bytes = b""
