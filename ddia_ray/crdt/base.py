"""The CRDT base class, the registry of kinds, and the functions a replicated store calls.

Theory of operation
-------------------
A state-based CRDT (Shapiro, Preguica, Baquero, Zawirski 2011, "A comprehensive study of
Convergent and Commutative Replicated Data Types") is a value whose states form a
join-semilattice: :meth:`CRDT.merge` computes the least upper bound of two states, so it is
commutative, associative and idempotent, and replicas that have received the same updates hold
the same state whatever the order, the duplication or the grouping of the messages (strong
eventual consistency). That is DDIA 5.4's "Automatic Conflict Resolution": concurrent writes are
combined by the data type instead of being kept as siblings or dropped by last-writer-wins.

Shipping whole states is wasteful, so every mutator also returns a *delta* (Almeida, Shoker,
Baquero 2018, "Delta state replicated data types"): a small state of the same class that, joined
into any replica, carries exactly that operation. Deltas are states, so they may be merged into
each other (a delta group), reordered, duplicated and lost-then-resent like any state.

A store does not hold the classes: it holds a kind name (:data:`KINDS`), applies an operation by
name (:func:`apply`), joins (:func:`merge`) and moves states as bytes (:func:`encode`,
:func:`decode`). The bytes are one ``crdt.state`` codec record: the kind, the payload's format
number and a payload of plain msgpack values that each kind validates on decode, so hostile bytes
raise a :class:`~ddia_ray.errors.CodecError` and never build a state that breaks an invariant.

Items, map keys and register values are immutable scalars (bytes, str, int, bool, None, float
but NaN) and tuples of them. Internally they are identified by their msgpack bytes, which gives
a total order across types (for deterministic values and encodings) and keys whose hash is
seeded per process (a crafted set of colliding ints or tuples cannot make a merge quadratic).
So ``1``, ``1.0`` and ``True`` are three distinct items, even though Python compares them equal.

This module is pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

import inspect
import math
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import msgpack

from .. import codec
from ..codec import record
from ..errors import (
    CodecError,
    CorruptRecordError,
    CRDTTypeError,
    DdiaRayError,
    InvalidArgumentError,
    UnknownVersionError,
)

__all__ = ["CRDT", "CRDTState", "KINDS", "new", "apply", "merge", "encode", "decode", "ops",
           "COUNTER_MAX", "ITEM_DEPTH_MAX"]

#: Counters, timestamps and ids fit a msgpack int64.
COUNTER_MAX = 2**63 - 1
#: How deep tuples may nest inside an item (a flat tuple is depth 1).
ITEM_DEPTH_MAX = 8

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack packs as an int

_KINDS: dict[str, type[CRDT]] = {}
#: kind name -> CRDT class; filled as each module of the package is imported.
KINDS: Mapping[str, type[CRDT]] = MappingProxyType(_KINDS)


class CRDT:
    """Base class of every CRDT: a join-semilattice state with delta mutators.

    A subclass sets ``kind`` (its registry name) and ``mutators`` (the names of its mutator
    methods, each taking the acting replica ``node`` first and returning the delta), and
    implements ``merge``, ``value``, ``copy``, ``__eq__``, ``_payload`` and ``_from_payload``.
    States are mutable (``merge`` and mutators change them in place) and so unhashable.
    """

    kind: ClassVar[str] = ""
    mutators: ClassVar[frozenset[str]] = frozenset()
    #: Version of the payload layout written by ``_payload``.
    format: ClassVar[int] = 1
    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _KINDS and _KINDS[cls.kind].__qualname__ != cls.__qualname__:
                raise CRDTTypeError(f"CRDT kind {cls.kind!r} is already registered by {_KINDS[cls.kind]!r}")
            _KINDS[cls.kind] = cls

    def merge(self, other: Any) -> Any:
        """Join ``other`` (a state of this kind) into this state (in place) and return self."""
        raise NotImplementedError

    def merge_bytes(self, data: bytes) -> Any:
        """Join the state or delta in ``data`` (bytes from :func:`encode` of this kind) into this
        state and return self: the receiving end of a replication stream, as Yjs's ``applyUpdate``.

        The same as ``self.merge(decode(data, self.kind))``, with its errors (CorruptRecordError,
        CRDTTypeError for another kind); a kind may join its commonest deltas without building the
        intermediate state (:class:`~ddia_ray.crdt.text.Text` does for one edit's delta).
        """
        return self.merge(decode(data, self.kind))

    def value(self) -> Any:
        """The plain Python value the state represents."""
        raise NotImplementedError

    def copy(self) -> CRDT:
        """An independent copy of this state."""
        raise NotImplementedError

    def _payload(self) -> Any:
        """The state as plain msgpack-able values (deterministic for equal states)."""
        raise NotImplementedError

    @classmethod
    def _from_payload(cls, payload: Any) -> CRDT:
        """A state from ``_payload``'s output, validated; raises a ddia_ray error on bad shapes."""
        raise NotImplementedError

    def _check_same(self, other: Any) -> None:
        """Raise CRDTTypeError unless ``other`` is a state of this very class."""
        if type(other) is not type(self):
            got = other.kind if isinstance(other, CRDT) else type(other).__name__
            raise CRDTTypeError(f"cannot merge a {got!r} into a {self.kind!r}: CRDTs merge only with their own kind",
                                expected=self.kind, got=got)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r})"


# --- arguments and payload checks shared by the kinds --------------------------------


def check_node(node: Any) -> str:
    """A replica id is a non-empty str."""
    if not isinstance(node, str) or not node:
        raise InvalidArgumentError(f"a CRDT node (replica id) is a non-empty str, got {node!r:.80}")
    return node


def check_count(name: str, n: Any, low: int = 0) -> int:
    """An int in [low, COUNTER_MAX] (bools refused)."""
    if type(n) is not int or not low <= n <= COUNTER_MAX:
        raise InvalidArgumentError(f"{name} must be an int in [{low}, 2**63-1], got {n!r:.80}")
    return n


def _check_item(item: Any, what: str, depth: int) -> None:
    t = type(item)
    if t is str or t is bytes or t is bool or item is None:
        return
    if t is int:
        if not _INT_MIN <= item <= _INT_MAX:
            raise InvalidArgumentError(f"{what}: int {item} is outside msgpack's 64-bit range")
        return
    if t is float:
        if math.isnan(item):
            raise InvalidArgumentError(f"{what}: NaN is not equal to itself, so it cannot be an item")
        return
    if t is tuple:
        if depth >= ITEM_DEPTH_MAX:
            raise InvalidArgumentError(f"{what}: tuples nest deeper than ITEM_DEPTH_MAX={ITEM_DEPTH_MAX}")
        for x in item:
            _check_item(x, what, depth + 1)
        return
    raise InvalidArgumentError(f"{what} must be bytes, str, int, bool, None, float or a tuple of them, "
                               f"got {t.__name__}")


_pack = msgpack.Packer(use_bin_type=True).pack


def item_key(item: Any, what: str = "item") -> bytes:
    """Check that ``item`` is an allowed immutable scalar or tuple; return its identity bytes."""
    t = type(item)
    if t is str or t is bytes:  # the common case, without the general walk
        return _pack(item)
    _check_item(item, what, 0)
    return _pack(item)


def corrupt(kind: str, message: str) -> CorruptRecordError:
    """The error for a payload of ``kind`` that is not well-formed."""
    return CorruptRecordError(f"CRDT {kind!r} payload: {message}")


def p_seq(kind: str, x: Any, what: str) -> tuple:
    """``x`` must be an array (a tuple once decoded)."""
    if type(x) is not tuple and type(x) is not list:
        raise corrupt(kind, f"{what} is {type(x).__name__}, not an array")
    return tuple(x)


def p_row(kind: str, x: Any, width: int, what: str) -> tuple:
    """``x`` must be an array of exactly ``width`` values."""
    row = p_seq(kind, x, what)
    if len(row) != width:
        raise corrupt(kind, f"{what} has {len(row)} values, not {width}")
    return row


def p_int(kind: str, x: Any, low: int, high: int, what: str) -> int:
    """``x`` must be an int in [low, high]."""
    if type(x) is not int or not low <= x <= high:
        raise corrupt(kind, f"{what} must be an int in [{low}, {high}], got {x!r:.40}")
    return x


def p_node(kind: str, x: Any, what: str = "node") -> str:
    """``x`` must be a non-empty str."""
    if type(x) is not str or not x:
        raise corrupt(kind, f"{what} must be a non-empty str, got {x!r:.40}")
    return x


def p_item(kind: str, x: Any, what: str = "item") -> tuple[bytes, Any]:
    """``x`` must be an allowed item; returns (identity bytes, item)."""
    try:
        return item_key(x, what), x
    except InvalidArgumentError as e:
        raise corrupt(kind, str(e)) from e


def p_nodes(kind: str, x: Any) -> tuple[str, ...]:
    """A node table: an array of distinct non-empty strs."""
    nodes = p_seq(kind, x, "node table")
    for n in nodes:
        p_node(kind, n)
    if len(set(nodes)) != len(nodes):
        raise corrupt(kind, "node table repeats a node")
    return nodes


def p_map(kind: str, x: Any, keys: frozenset[str]) -> dict:
    """``x`` must be a map with exactly ``keys``."""
    if type(x) is not dict or x.keys() != keys:
        raise corrupt(kind, f"payload must be a map with keys {sorted(keys)}")
    return x


# --- the record and the module-level functions ---------------------------------------


@record("crdt.state", version=1)
class CRDTState:
    """A CRDT state on the wire: its ``kind``, the ``format`` of its payload and the ``payload``
    (plain values the kind validates when the state is rebuilt, :func:`decode`)."""

    kind: str
    format: int
    payload: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise InvalidArgumentError(f"a CRDT state's kind is a non-empty str, got {self.kind!r:.40}")
        if type(self.format) is not int or not 1 <= self.format <= 2**31:
            raise InvalidArgumentError(f"a CRDT state's format is an int >= 1, got {self.format!r:.40}")


def _kind_class(kind: Any) -> type[CRDT]:
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CRDTTypeError(f"unknown CRDT kind {kind!r:.80}; the known kinds are {sorted(_KINDS)}",
                            expected="|".join(sorted(_KINDS)), got=str(kind)[:80])
    return cls


def new(kind: str) -> CRDT:
    """A new, empty CRDT of ``kind`` (CRDTTypeError names the known kinds if it is unknown)."""
    return _kind_class(kind)()


def ops(kind: str) -> frozenset[str]:
    """The mutator names of ``kind``."""
    return _kind_class(kind).mutators


_SIGNATURES: dict[tuple[type, str], inspect.Signature] = {}


def apply(state: CRDT | None, kind: str, node: str, op: str, args: tuple) -> tuple[CRDT, CRDT]:
    """Apply mutator ``op`` with ``args`` at replica ``node`` to ``state`` (None: a new CRDT of ``kind``);
    returns ``(state, delta)``.

    ``state`` of another kind, or an ``op`` that ``kind`` does not have, raises CRDTTypeError naming
    both; arguments of the wrong number, type or value raise InvalidArgumentError. The state is left
    unchanged when the operation is refused.
    """
    cls = _kind_class(kind)
    if state is None:
        state = cls()
    elif type(state) is not cls:
        got = state.kind if isinstance(state, CRDT) else type(state).__name__
        raise CRDTTypeError(f"operation {op!r:.40} of kind {kind!r} applied to a {got!r}",
                            expected=kind, got=got)
    if op not in cls.mutators:
        raise CRDTTypeError(f"a {kind!r} has no operation {op!r:.40}; its operations are {sorted(cls.mutators)}",
                            expected=kind, got=str(op)[:40])
    if type(args) is not tuple and type(args) is not list:
        raise InvalidArgumentError(f"the arguments of {kind}.{op} are a tuple, got {type(args).__name__}")
    try:
        delta = getattr(state, op)(node, *args)
    except DdiaRayError:
        raise
    except TypeError as e:  # the wrong number of arguments: refused before the mutator's body ran
        raise InvalidArgumentError(f"{kind}.{op}{_signature(cls, op)}: {e}") from e
    return state, delta


def _signature(cls: type, op: str) -> inspect.Signature:
    sig = _SIGNATURES.get((cls, op))
    if sig is None:
        sig = _SIGNATURES[(cls, op)] = inspect.signature(getattr(cls, op))
    return sig


def merge(a: CRDT, b: CRDT) -> CRDT:
    """A new state, the join of ``a`` and ``b`` (neither changes); kinds differ -> CRDTTypeError."""
    if not isinstance(a, CRDT):
        raise CRDTTypeError(f"merge needs CRDT states, got {type(a).__name__}", got=type(a).__name__)
    a._check_same(b)
    return a.copy().merge(b)


def encode(c: CRDT) -> bytes:
    """``c`` as versioned msgpack bytes: one ``crdt.state`` record."""
    return codec.encode(to_state(c))


def to_state(c: CRDT) -> CRDTState:
    """``c`` as a ``crdt.state`` record (what :func:`encode` packs, and what maps nest)."""
    if not isinstance(c, CRDT) or not c.kind:
        raise InvalidArgumentError(f"encode needs a CRDT state, got {type(c).__name__}")
    return CRDTState(c.kind, c.format, c._payload())


def decode(data: bytes, kind: str | None = None) -> CRDT:
    """The CRDT state in ``data`` (bytes from :func:`encode`), validated.

    Bytes that are not a well-formed state raise CorruptRecordError (or another CodecError subclass:
    UnknownVersionError for a payload format this reader does not know); a ``kind`` given while the
    data holds another raises CRDTTypeError. Time and memory stay linear in ``len(data)`` (the codec
    bounds what the bytes may expand to; each kind's checks are linear walks).
    """
    state = codec.decode(data)
    if not isinstance(state, CRDTState):
        raise CorruptRecordError(f"expected a 'crdt.state' record, decoded {type(state).__name__}")
    return from_state(state, kind)


def from_state(state: CRDTState, kind: str | None = None) -> CRDT:
    """The CRDT a decoded ``crdt.state`` record holds (see :func:`decode`)."""
    if kind is not None:
        _kind_class(kind)
        if state.kind != kind:
            raise CRDTTypeError(f"expected a {kind!r} state, the data holds a {state.kind!r:.40}",
                                expected=kind, got=state.kind[:40])
    cls = _KINDS.get(state.kind)
    if cls is None:
        raise CorruptRecordError(f"unknown CRDT kind {state.kind!r:.40}; the known kinds are {sorted(_KINDS)}")
    if state.format != cls.format:
        raise UnknownVersionError(f"crdt.state/{cls.kind}", state.format, f"format {cls.format}")
    try:
        return cls._from_payload(state.payload)
    except (CodecError, MemoryError):
        raise
    except DdiaRayError as e:  # an item or a nested state refused by a constructor's checks
        raise corrupt(cls.kind, str(e)) from e
    except RecursionError as e:
        raise corrupt(cls.kind, "nested too deep") from e
