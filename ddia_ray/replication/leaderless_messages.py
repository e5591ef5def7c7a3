"""The messages leaderless replicas exchange, and the hint record they persist (:mod:`.leaderless`).

A coordinator sends :class:`LLStore` (or, for blind writes of keys new to it, the columns of
:class:`LLStoreNew`) to the replicas of a write's preference list and
:class:`LLFetch` to those of a read's; a replica outside a key's list hands the request to one
inside it with :class:`LLCoordinate`. A stand-in offers the hints it holds to their home with
:class:`LLHandoff`, and a suspected replica is pinged with :class:`LLPing`. The codec checks
every field's type when a message is decoded; the messages that carry ``items`` also check that
each item is a tuple of its width, so a malformed one is refused with
:class:`~ddia_ray.errors.InvalidArgumentError` before a replica reads it.
"""

from __future__ import annotations

import struct
from typing import Any

from ..clocks.dotted import NODE_ID_CHARS_MAX
from ..codec import record
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError
from .versioned_records import MAX_BATCH

__all__ = ["LLStore", "LLStoreNew", "LLStored", "LLFetch", "LLFetched", "LLCoordinate", "LLCoordinated", "LLHandoff",
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


@record("repl.ll_store_new", version=1, fields_checked=True)
class LLStoreNew:
    """Store the first write of each of ``keys``, for op ``op``: ``values[i]`` coordinated by ``node``,
    stamped ``(wall_ns, logical + i)``. What :class:`LLStore` would carry for a batch of blind writes
    of keys new at the coordinator, in columns: the receiver builds each state itself (the bytes
    :func:`~.state_format.new_states` gives), instead of decoding one per key. A key the receiver
    already holds is merged as such a state would be.

    ``hashes``: the Merkle key hash and entry hash of each state as the coordinator computed them
    (:func:`~.merkle.hashes_of`), 16 bytes a key, big-endian, key hashes first: a receiver checks a
    sample (:meth:`~.versioned_replica.VersionedReplica.vouched`) instead of hashing every key."""

    op: int
    node: str
    wall_ns: int
    logical: int
    keys: tuple
    values: tuple
    hashes: bytes = b""

    def __post_init__(self):
        keys, values = self.keys, self.values
        if (type(self.op) is not int or self.op < 0 or type(self.node) is not str
                or not 0 < len(self.node) <= NODE_ID_CHARS_MAX or type(self.wall_ns) is not int
                or not 0 <= self.wall_ns < _INT63 or type(self.logical) is not int
                or not 0 <= self.logical < _INT63 - MAX_BATCH):
            raise InvalidArgumentError("a store of new keys names an op >= 0, its coordinator (a str of "
                                       f"1 to {NODE_ID_CHARS_MAX} characters) and a stamp of two ints in "
                                       "[0, 2**63)")
        if (type(keys) is not tuple or type(values) is not tuple or not 0 < len(keys) <= MAX_BATCH
                or len(keys) != len(values)):
            raise InvalidArgumentError(f"a store of new keys carries two tuples of 1 to {MAX_BATCH} keys and values")
        if not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, values)):
            raise InvalidArgumentError("a store of new keys carries bytes keys and bytes values")
        if len(set(keys)) != len(keys):
            raise InvalidArgumentError("a store of new keys names a key twice")
        if type(self.hashes) is not bytes or len(self.hashes) not in (0, 16 * len(keys)):
            raise InvalidArgumentError("a store of new keys carries no hashes, or 16 bytes of them a key")

    def hash_columns(self) -> tuple[list, list] | None:
        """``(key hashes, entry hashes)`` as ints, or None when the message carries none."""
        if not self.hashes:
            return None
        n = len(self.keys)
        both = struct.unpack(f">{2 * n}Q", self.hashes)
        return list(both[:n]), list(both[n:])

    @staticmethod
    def pack_hashes(hashes: tuple[list, list]) -> bytes:
        """The ``hashes`` field of ``(key hashes, entry hashes)``."""
        khs, ehs = hashes
        return struct.pack(f">{len(khs) + len(ehs)}Q", *khs, *ehs)


_BYTES = frozenset({bytes})
_INT63 = 1 << 63


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
