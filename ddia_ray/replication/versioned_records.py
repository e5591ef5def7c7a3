"""What clients ask of multi-leader and leaderless replicas, and what they answer.

Theory of operation
-------------------
Both protocols keep versions (:mod:`.versions`) rather than one ordered log, so
their client requests differ from the leader protocols' (:mod:`.records`):

* :class:`VWrite` carries a batch of items ``(code, key, payload, context)``:
  ``V_PUT`` (payload: the value), ``V_DELETE`` (payload ``b""``) and ``V_UPDATE``
  (payload ``(op, args)``: an operation of the key's CRDT). ``context`` is the
  opaque causal context a read returned (``b""``: a blind write).
* :class:`VRead` carries a batch of keys.

Leaderless requests also carry their quorum: ``n`` replicas hold a key, a
write waits for ``w`` acknowledgements and a read for ``r`` answers (0: the
store's default). Each answer item (:class:`VItem`) reports the quorum it met
(:class:`QuorumReport`), with the condition ``w + r > n`` (DDIA 5.5 "Quorums
for reading and writing") and whether a sloppy quorum's fallback stood in for
a home replica.

Every record is versioned msgpack, validated on arrival; a batch is bounded
(:data:`MAX_BATCH`), so one message cannot ask for unbounded work.
"""

from __future__ import annotations

from typing import Any

from ..codec import check_value, record
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError
from .resolvers import Sibling

__all__ = ["V_PUT", "V_DELETE", "V_UPDATE", "MAX_BATCH", "VWrite", "VRead", "VItem", "VWriteAck", "VReadResult",
           "QuorumReport", "check_quorum"]

V_PUT, V_DELETE, V_UPDATE = 0, 1, 2
_CODES = (V_PUT, V_DELETE, V_UPDATE)
_CODE_SET = frozenset(_CODES)
_TUPLE, _FOUR, _INT, _BYTES = frozenset({tuple}), frozenset({4}), frozenset({int}), frozenset({bytes})
#: Items of one request: a client splits bigger batches.
MAX_BATCH = 10_000


def _check_count(name: str, value: Any) -> None:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(f"{name} is an int >= 0 (0: the store's default), got {value!r}")


def _check_timeout(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise InvalidArgumentError(f"timeout_s is a number of seconds in (0, 3600], got {value!r}")


def check_quorum(n: int, r: int, w: int, replicas: int) -> None:
    """Raise :class:`~ddia_ray.errors.QuorumConfigError` unless ``1 <= r, w <= n <= replicas``."""
    from ..errors import QuorumConfigError
    if not 1 <= n <= replicas:
        raise QuorumConfigError(f"n={n}: a key lives on 1 to {replicas} replicas (the store has {replicas})",
                                n=n, r=r, w=w)
    if not 1 <= r <= n:
        raise QuorumConfigError(f"r={r} with n={n}: a read waits for 1 to n answers", n=n, r=r, w=w)
    if not 1 <= w <= n:
        raise QuorumConfigError(f"w={w} with n={n}: a write waits for 1 to n acknowledgements", n=n, r=r, w=w)


@record("repl.v_write", version=1, fields_checked=True)
class VWrite:
    """A batch of writes (see the module docstring for ``items``), with a leaderless quorum ``n``/``w``;
    ``body``: whether each acknowledgement carries the key's versions after the write (Riak's
    ``return_body``), or is None (an error item still comes back as one)."""

    items: tuple
    n: int = 0
    w: int = 0
    timeout_s: float = 5.0
    body: bool = True

    def __post_init__(self):
        items = self.items
        if type(items) is not tuple or not 0 < len(items) <= MAX_BATCH:
            raise InvalidArgumentError(f"a write carries 1 to {MAX_BATCH} items in a tuple")
        if type(self.body) is not bool:
            raise InvalidArgumentError("body is a bool")
        # Column by column, in C-level passes: a coordinator decodes a batch of a thousand items, and
        # the checks item by item cost about as much as the rest of a blind write's handling.
        if not _TUPLE.issuperset(map(type, items)) or not _FOUR.issuperset(map(len, items)):
            bad = next(i for i in items if type(i) is not tuple or len(i) != 4)
            raise InvalidArgumentError(f"a write item is (code, key, payload, context), got {bad!r:.100}")
        codes, keys, payloads, contexts = zip(*items)
        if not _INT.issuperset(map(type, codes)) or not _CODE_SET.issuperset(codes):
            raise InvalidArgumentError(f"a write item's code is one of {_CODES}")
        if not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, contexts)):
            raise InvalidArgumentError("a write item's key and context are bytes")
        if V_UPDATE not in codes:
            if not _BYTES.issuperset(map(type, payloads)):
                raise InvalidArgumentError("a put's value is bytes")
        else:
            for code, payload in zip(codes, payloads):
                if code == V_UPDATE:
                    if not (type(payload) is tuple and len(payload) == 2 and type(payload[0]) is str
                            and type(payload[1]) is tuple):
                        raise InvalidArgumentError("an update's payload is (op, args)")
                    check_value(payload[1])  # any values: what the codec refuses is refused here
                elif type(payload) is not bytes:
                    raise InvalidArgumentError("a put's value is bytes")
        _check_count("n", self.n)
        _check_count("w", self.w)
        _check_timeout(self.timeout_s)


@record("repl.v_read", version=1)
class VRead:
    """A batch of reads of ``keys``, with a leaderless quorum ``n``/``r``."""

    keys: tuple
    n: int = 0
    r: int = 0
    timeout_s: float = 5.0

    def __post_init__(self):
        if not isinstance(self.keys, tuple) or not 0 < len(self.keys) <= MAX_BATCH:
            raise InvalidArgumentError(f"a read carries 1 to {MAX_BATCH} keys in a tuple")
        if not all(isinstance(k, bytes) for k in self.keys):
            raise InvalidArgumentError("keys are bytes")
        _check_count("n", self.n)
        _check_count("r", self.r)
        _check_timeout(self.timeout_s)


@record("repl.quorum_report", version=1)
class QuorumReport:
    """The quorum one key's request met: ``n``, ``r``, ``w`` as used, ``acks`` (answers or acknowledgements
    that counted), ``nodes`` (who answered), ``fallbacks`` (sloppy-quorum stand-ins, holding hints for their
    home replicas), and ``strict``: whether ``w + r > n``, the condition under which a read overlaps every
    acknowledged write (the store's default ``w`` for a read, its default ``r`` for a write)."""

    n: int = 0
    r: int = 0
    w: int = 0
    acks: int = 0
    nodes: tuple = ()
    fallbacks: tuple = ()

    @property
    def strict(self) -> bool:
        """``w + r > n``."""
        return self.w + self.r > self.n

    @property
    def sloppy(self) -> bool:
        """Whether a fallback replica stood in for a home replica."""
        return bool(self.fallbacks)


@record("repl.v_item", version=1)
class VItem:
    """One key's answer: its live ``siblings`` (each a :class:`~.resolvers.Sibling`), the causal
    ``context`` to write back, ``crdt`` (the encoded CRDT state, for a CRDT key, and its ``kind``),
    ``error`` (a resolver's failure on read, as a record) and the ``quorum`` it met (leaderless)."""

    key: bytes
    siblings: tuple = ()
    context: bytes = b""
    crdt: bytes | None = None
    kind: str = ""
    error: ErrorRecord | None = None
    quorum: QuorumReport | None = None

    def __post_init__(self):
        if not isinstance(self.key, bytes) or not isinstance(self.context, bytes):
            raise InvalidArgumentError("an item's key and context are bytes")
        if not isinstance(self.siblings, tuple) or not all(isinstance(s, Sibling) for s in self.siblings):
            raise InvalidArgumentError("an item's siblings are Sibling records")


@record("repl.v_write_ack", version=1)
class VWriteAck:
    """The answer to a :class:`VWrite`: per item, the key's state after the write as the coordinator holds it
    (None when the write asked for no body), or an item carrying the error."""

    items: tuple = ()


@record("repl.v_read_result", version=1)
class VReadResult:
    """The answer to a :class:`VRead`: one :class:`VItem` per key, in order."""

    items: tuple = ()
