"""What a configuration store takes and gives: key-values, watch events, transactions, leases.

Theory of operation
-------------------
These are etcd v3's messages, as codec records (versioned msgpack), so they can
be stored, sent to actors and read back by a newer version:

* :class:`KeyValue`: a key, its value (any value :func:`ddia_ray.codec.encode`
  takes), and its three revisions (etcd's ``mvccpb.KeyValue``):
  ``create_revision`` (the revision that created this incarnation of the key),
  ``mod_revision`` (the revision of its last change) and ``version`` (how many
  times it was written since it was created: 1 after the first put, back to 0
  when it is deleted); ``lease`` is the lease it is attached to (0: none).
* :class:`WatchEvent`: a put or a delete at one revision, with the previous
  value when the store still has it (etcd's ``prev_kv``). A delete's ``kv``
  holds the key and the delete's revision, nothing else.
* :class:`Compare` and :class:`Op`: the two halves of a transaction (etcd's
  ``Txn``): if every comparison holds, the ``success`` operations run,
  otherwise the ``failure`` ones, all at one revision. :class:`TxnResult` is
  the answer.
* :class:`Lease`: a granted lease's id and TTL.

On the wire between the client and the store's procedures the same facts
travel as plain tuples (:func:`kv_row`, :func:`kv_from_row`), values as their
encoded bytes, so a replica never decodes a user's value except to compare it.
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..codec import record
from ..errors import InvalidArgumentError

__all__ = ["KeyValue", "WatchEvent", "Compare", "Op", "TxnResult", "Lease", "check_key", "kv_from_row",
           "event_from_row", "COMPARE_TARGETS", "COMPARE_RESULTS", "MAX_KEY_BYTES"]

#: What a comparison may look at (etcd's ``Compare.target``).
COMPARE_TARGETS = ("mod_revision", "create_revision", "version", "value", "lease")
#: How it compares (etcd's ``Compare.result``).
COMPARE_RESULTS = ("==", "!=", "<", ">")
#: A key's size in UTF-8 bytes (etcd's default request limit is 1.5 MiB for the whole request).
MAX_KEY_BYTES = 4096


def check_key(key: Any, what: str = "a key") -> str:
    """``key`` if it is a valid key: a str of 1..:data:`MAX_KEY_BYTES` UTF-8 bytes without NUL (the
    row layout ends a key with NUL, so no key's rows fall inside another's)."""
    if not isinstance(key, str) or not key or "\x00" in key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"{what} is a non-empty str of at most {MAX_KEY_BYTES} UTF-8 bytes without "
                                   f"NUL, got {key!r:.80}")
    return key


@record("config.kv", version=1)
class KeyValue:
    """A key's value and revisions at some revision (see the module docstring)."""

    key: str
    value: Any = None
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    def __post_init__(self):
        if not isinstance(self.key, str):
            raise InvalidArgumentError(f"a KeyValue's key is a str, got {type(self.key).__name__}")
        for name in ("create_revision", "mod_revision", "version", "lease"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise InvalidArgumentError(f"a KeyValue's {name} is an int >= 0, got {v!r}")


@record("config.watch_event", version=1)
class WatchEvent:
    """One change a watcher receives: ``kind`` ``"put"`` or ``"delete"``, the key-value after it
    (for a delete: the key and the delete's revision), and the value before it (None when the key
    did not exist, or the history holding it was compacted)."""

    kind: str
    kv: KeyValue
    prev: KeyValue | None = None

    def __post_init__(self):
        if self.kind not in ("put", "delete"):
            raise InvalidArgumentError(f"a watch event is a 'put' or a 'delete', got {self.kind!r}")
        if not isinstance(self.kv, KeyValue) or not (self.prev is None or isinstance(self.prev, KeyValue)):
            raise InvalidArgumentError("a watch event's kv (and prev) are KeyValue records")

    @property
    def revision(self) -> int:
        """The revision of this change."""
        return self.kv.mod_revision


@record("config.compare", version=1)
class Compare:
    """One comparison of a transaction: ``key``'s ``target`` compared with ``result`` to ``value``.

    Revisions and versions of a missing key are 0 (so ``Compare(k, "version", "==", 0)`` means
    "k does not exist", etcd's create-if-absent idiom); a value comparison on a missing key fails.
    ``"<"`` and ``">"`` on values compare numbers with numbers, str with str, bytes with bytes.
    """

    key: str
    target: str
    result: str
    value: Any = None

    def __post_init__(self):
        check_key(self.key, "a comparison's key")
        if self.target not in COMPARE_TARGETS:
            raise InvalidArgumentError(f"a comparison's target is one of {COMPARE_TARGETS}, got {self.target!r}")
        if self.result not in COMPARE_RESULTS:
            raise InvalidArgumentError(f"a comparison's result is one of {COMPARE_RESULTS}, got {self.result!r}")
        if self.target != "value" and (type(self.value) is not int or self.value < 0):
            raise InvalidArgumentError(f"a {self.target} comparison's value is an int >= 0, got {self.value!r:.80}")

    def row(self) -> tuple:
        """The comparison as the procedure takes it (a value target as its encoded bytes)."""
        target = codec.encode(self.value) if self.target == "value" else self.value
        return (self.key, self.target, self.result, target)


@record("config.op", version=1)
class Op:
    """One operation of a transaction: build it with :meth:`put`, :meth:`delete` or :meth:`get`."""

    kind: str
    key: str
    value: Any = None
    lease: int = 0

    def __post_init__(self):
        if self.kind not in ("put", "delete", "get"):
            raise InvalidArgumentError(f"a transaction's operation is a put, a delete or a get, got {self.kind!r}")
        check_key(self.key, "an operation's key")
        if type(self.lease) is not int or self.lease < 0:
            raise InvalidArgumentError(f"a lease id is an int >= 0, got {self.lease!r}")

    @classmethod
    def put(cls, key: str, value: Any, *, lease: int = 0) -> "Op":
        """Set ``key`` to ``value`` (attached to ``lease``, 0: none)."""
        return cls("put", key, value, lease)

    @classmethod
    def delete(cls, key: str) -> "Op":
        """Delete ``key`` (nothing if it does not exist)."""
        return cls("delete", key)

    @classmethod
    def get(cls, key: str) -> "Op":
        """Read ``key`` as the transaction's earlier operations left it."""
        return cls("get", key)

    def row(self) -> tuple:
        """The operation as the procedure takes it (a put's value as its encoded bytes)."""
        value = codec.encode(self.value) if self.kind == "put" else b""
        return (self.kind, self.key, value, self.lease)


@record("config.txn_result", version=1)
class TxnResult:
    """A transaction's answer: whether its comparisons held, its revision (the new one if it wrote,
    else the current one), and one response per operation run: the revision of a put, the number
    of keys a delete removed (0 or 1), the :class:`KeyValue` (or None) of a get."""

    succeeded: bool
    revision: int
    responses: tuple = ()


@record("config.lease", version=1)
class Lease:
    """A lease the store granted: its ``id`` and its time to live in seconds."""

    id: int
    ttl_s: float

    def __post_init__(self):
        if type(self.id) is not int or self.id < 1:
            raise InvalidArgumentError(f"a lease id is an int >= 1, got {self.id!r}")


def kv_from_row(row: tuple | None) -> KeyValue | None:
    """The :class:`KeyValue` of a procedure's ``(key, value bytes, create, mod, version, lease)`` row
    (None for None); a delete's row has no value bytes (None)."""
    if row is None:
        return None
    key, raw, create, mod, version, lease = row
    return KeyValue(key, None if raw is None else codec.decode(raw), create, mod, version, lease)


def event_from_row(row: tuple) -> WatchEvent:
    """The :class:`WatchEvent` of a ``changes`` query's ``(kind, kv row, prev row)``."""
    kind, kv, prev = row
    return WatchEvent(kind, kv_from_row(kv), kv_from_row(prev))  # type: ignore[arg-type]
