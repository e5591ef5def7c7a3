"""The interface every storage engine implements, and the pieces they share.

Theory of operation
-------------------
An engine is an ordered map of ``bytes -> bytes`` with multi-version reads.
Both engines (the LSM-tree in :mod:`ddia_ray.storage.lsm`, the B+tree in
:mod:`ddia_ray.storage.btree`) and the in-memory reference
(:class:`MemoryEngine`, used as the model in property tests) implement
:class:`StorageEngine`, so the storage-node actor and the caches work with
any of them.

Keys and values are ``bytes``; a ``str`` key is encoded as UTF-8 (values
must be bytes-like). Ranges are half-open, ``[start, end)``; ``None`` means
unbounded. A :class:`WriteBatch` applies atomically: after a crash either all
of it or none of it is visible. A :class:`Snapshot` pins a sequence number:
reads through it see exactly the writes acknowledged before it was taken.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import pyarrow as pa

from .. import codec
from ..codec import record
from ..registry import Registry
from ..errors import ConfigError, CorruptRecordError, DatabaseClosedError, InvalidArgumentError

__all__ = [
    "to_key", "to_value", "check_range", "Op", "OpColumns", "encode_ops", "decode_ops", "decode_columns", "WriteBatch",
    "check_batch", "KV_SCHEMA", "pair_batches",
    "Snapshot", "StorageEngine",
    "MemoryEngine", "BatchWrites", "register_engine", "unregister_engine", "open_engine", "ENGINES",
]


def to_key(key: Any) -> bytes:
    """``bytes`` as they are, ``str`` as UTF-8; anything else raises InvalidArgumentError."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgumentError(f"keys must be bytes or str, got {type(key).__name__}")


def to_value(value: Any) -> bytes:
    """Values must be bytes-like; anything else (str included) raises InvalidArgumentError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentError(f"values must be bytes, got {type(value).__name__} (encode it first)")


def check_range(start: Any, end: Any) -> tuple[bytes | None, bytes | None]:
    """Normalise a half-open ``[start, end)`` range; ``start > end`` is a ConfigError."""
    s = None if start is None else to_key(start)
    e = None if end is None else to_key(end)
    if s is not None and e is not None:
        _check_order(s, e)
    return s, e


def _check_order(start: bytes, end: bytes) -> None:
    # One message for every path to a reversed range (engine call, batch, Op, wire), so a
    # caller can match it whichever way the range arrived.
    if start > end:
        raise ConfigError(f"range start {start!r} is after its end {end!r}")


@record("storage.op", version=1)
class Op:
    """One operation of a batch: ``put`` (key, value), ``delete`` (key) or ``delete_range`` (key, end).

    Validated at construction, and so on decode too: an unknown kind, a non-bytes
    field or a field the kind does not use (``value`` of a delete or a range, ``end``
    of a put or a delete) raise InvalidArgumentError; a range whose ``end`` sorts
    before its ``key`` raises the ConfigError that ``delete_range(start, end)`` raises.
    """

    kind: str
    key: bytes
    value: bytes = b""
    end: bytes = b""

    def __post_init__(self):
        if self.kind not in ("put", "delete", "delete_range"):
            raise InvalidArgumentError(f"unknown batch operation {self.kind!r}")
        if not isinstance(self.key, bytes) or not isinstance(self.value, bytes) or not isinstance(self.end, bytes):
            raise InvalidArgumentError("batch operation keys and values must be bytes")
        # An ignored field is a caller's slip, not data: Op("delete_range", b"a", b"z") puts the
        # end in ``value`` and would otherwise delete nothing without a word.
        if self.value and self.kind != "put":
            hint = "; pass the range's end as end=" if self.kind == "delete_range" else ""
            raise InvalidArgumentError(f"a {self.kind} has no value{hint}")
        if self.kind == "delete_range":
            _check_order(self.key, self.end)  # delete_range(b"z", b"a") raises; so must its Op
        elif self.end:
            raise InvalidArgumentError(f"a {self.kind} has no end; only delete_range takes one")


_KIND_CODES = {"put": 0, "delete": 1, "delete_range": 2}
_new_object = object.__new__
_ONLY_BYTES = frozenset({bytes})  # exact bytes: a subclass would be sent as plain bytes, unnoticed


# The slots' own setters: object.__setattr__ looks each descriptor up again (0.36 us a put
# against 0.25 us this way, timeit, 2026-12-05).
_SET_KIND, _SET_KEY, _SET_VALUE, _SET_END, _SET_UNKNOWN = (
    Op.__dict__[name].__set__ for name in ("kind", "key", "value", "end", "_unknown"))


def _put_op(key: bytes, value: bytes) -> Op:
    """``Op("put", key, value)`` for a key and value already made bytes by :func:`to_key` and
    :func:`to_value`: a put's only checks, so ``__post_init__`` is skipped (a third of the cost of
    ``WriteBatch.put``, which a client calls per key)."""
    op = _new_object(Op)
    _SET_KIND(op, "put")
    _SET_KEY(op, key)
    _SET_VALUE(op, value)
    _SET_END(op, b"")
    _SET_UNKNOWN(op, None)
    return op


@record("storage.op_columns", version=1)
class OpColumns:
    """A :class:`WriteBatch` as three columns: how batches cross an actor boundary.

    One record per operation costs the codec a field map each; three columns are
    packed and unpacked by msgpack in C (measured at a fifth of the cost per op).
    ``kinds`` holds one byte per op (0 put, 1 delete, 2 delete_range); ``tails``
    the put's value, the range's end, or ``b""`` for a delete.
    """

    kinds: bytes
    keys: tuple
    tails: tuple

    def __post_init__(self):
        if not isinstance(self.kinds, bytes) or not isinstance(self.keys, tuple) \
                or not isinstance(self.tails, tuple):
            raise InvalidArgumentError("op columns must be bytes, tuple and tuple")
        if not len(self.kinds) == len(self.keys) == len(self.tails):
            raise InvalidArgumentError(f"op columns differ in length: {len(self.kinds)} kinds, "
                                       f"{len(self.keys)} keys, {len(self.tails)} tails")
        if self.kinds and max(self.kinds) > 2:
            raise InvalidArgumentError(f"unknown batch operation code {max(self.kinds)}")
        if not _ONLY_BYTES.issuperset(map(type, self.keys)) or not _ONLY_BYTES.issuperset(map(type, self.tails)):
            raise InvalidArgumentError("batch operation keys and values must be bytes")

    @classmethod
    def from_batch(cls, batch: "WriteBatch") -> "OpColumns":
        """The columns of ``batch``'s operations, in order."""
        ops = batch.ops
        return cls(bytes([_KIND_CODES[op.kind] for op in ops]), tuple([op.key for op in ops]),
                   tuple([op.end if op.kind == "delete_range" else op.value for op in ops]))

    @classmethod
    def puts(cls, keys: tuple, values: tuple) -> "OpColumns":
        """Columns of puts only (``keys`` and ``values`` already bytes)."""
        return cls(bytes(len(keys)), keys, values)

    def check_kinds(self) -> None:
        """Refuse what :class:`Op` refuses per kind: a delete with a tail, a range whose end is
        before its start. A batch of puts only (the usual one) is checked at C speed."""
        if self.kinds.strip(b"\x00"):  # not puts only
            for kind, key, tail in zip(self.kinds, self.keys, self.tails):
                if kind == 1 and tail:
                    raise InvalidArgumentError("a delete has no value")
                if kind == 2:
                    _check_order(key, tail)

    def checked_ops(self) -> tuple:
        """The operations as ``(code, key, tail)`` tuples (code 0 put, 1 delete, 2 delete_range),
        after :meth:`check_kinds`."""
        self.check_kinds()
        return tuple(zip(self.kinds, self.keys, self.tails))

    def to_batch(self) -> "WriteBatch":
        """The :class:`WriteBatch` these columns describe."""
        ops = []
        for kind, key, tail in zip(self.kinds, self.keys, self.tails):
            if kind == 0:
                ops.append(Op("put", key, tail))
            elif kind == 1:
                ops.append(Op("delete", key, tail))  # a delete's tail must be empty: Op refuses one that is not
            else:
                ops.append(Op("delete_range", key, b"", tail))
        return WriteBatch(ops)


def encode_ops(batch: "WriteBatch | OpColumns") -> bytes:
    """A batch as the ``write`` payload of the storage node and the caches: encoded :class:`OpColumns`."""
    return codec.encode(batch if isinstance(batch, OpColumns) else OpColumns.from_batch(batch))


def decode_columns(data: bytes) -> OpColumns:
    """The batch of a ``write`` payload as columns (a tuple of :class:`Op`, from older clients, is
    converted); what :func:`decode_ops` refuses, this refuses too."""
    try:
        decoded = codec.decode(data, (OpColumns, tuple))
    except CorruptRecordError as e:
        # The codec reports a record that fails its own checks as corrupt. For a batch that
        # check is the engine's argument check, so raise what the same ops built locally raise.
        cause = e.__cause__
        if isinstance(cause, (ConfigError, InvalidArgumentError)) and len(cause.args) == 1:
            raise type(cause)(cause.args[0]) from e
        raise
    if isinstance(decoded, OpColumns):
        decoded.check_kinds()  # refused here as decode_ops refuses them
        return decoded
    if not all(isinstance(op, Op) for op in decoded):
        raise InvalidArgumentError("write() takes storage.op_columns or a tuple of storage.op records")
    return OpColumns.from_batch(WriteBatch(decoded))


def decode_ops(data: bytes) -> "WriteBatch":
    """The batch of a ``write`` payload: :class:`OpColumns`, or a tuple of :class:`Op` (older clients).

    A payload that is not a batch raises a CodecError; a batch that a local ``write``
    would refuse (a reversed range, an unknown operation) raises the same ConfigError
    or InvalidArgumentError here, whichever of the two formats carried it.
    """
    return decode_columns(data).to_batch()


class WriteBatch:
    """Operations applied atomically by :meth:`StorageEngine.write`, in order.

    ``ops`` must be :class:`Op` records (InvalidArgumentError otherwise), so every
    engine meets the same checked operations; ``put``/``delete``/``delete_range``
    normalise keys like the engines' own methods do.

    While a batch holds only puts it keeps them as two lists, keys and values, and
    makes the :class:`Op` records when ``ops`` is first read: a client of a
    replicated store sends such a batch as two columns (:meth:`puts`) without ever
    making them (0.06 us a put against 0.33 us with a record each, timeit, 2026-12-05).
    """

    __slots__ = ("_ops", "_keys", "_values")

    def __init__(self, ops: Iterable[Op] = ()):
        if isinstance(ops, (str, bytes, bytearray, memoryview, Op)) or not hasattr(ops, "__iter__"):
            raise InvalidArgumentError(f"WriteBatch takes a sequence of Op records, got {type(ops).__name__}")
        listed: list[Op] = list(ops)
        _check_ops(listed)
        # _ops is None while the batch is puts only, kept as the two lists.
        self._ops: list[Op] | None = listed or None
        self._keys: list[bytes] = []
        self._values: list[bytes] = []

    @property
    def ops(self) -> list[Op]:
        """The operations, in order: a list the caller may append :class:`Op` records to."""
        if self._ops is None:
            self._ops = list(map(_put_op, self._keys, self._values))
            self._keys, self._values = [], []
        return self._ops

    def puts(self) -> tuple[list[bytes], list[bytes]] | None:
        """``(keys, values)`` while the batch holds only puts (read-only views: append with
        :meth:`put`), else None; the puts' keys and values are bytes (:func:`to_key`, :func:`to_value`)."""
        return (self._keys, self._values) if self._ops is None else None

    def put(self, key, value) -> "WriteBatch":
        """Add ``key = value``."""
        if self._ops is None and type(key) is bytes and type(value) is bytes:
            self._keys.append(key)
            self._values.append(value)
            return self
        key, value = to_key(key), to_value(value)  # both checked before either is kept
        if self._ops is None:
            self._keys.append(key)
            self._values.append(value)
        else:
            self._ops.append(_put_op(key, value))
        return self

    def delete(self, key) -> "WriteBatch":
        """Add a deletion of ``key``."""
        self.ops.append(Op("delete", to_key(key)))
        return self

    def delete_range(self, start, end) -> "WriteBatch":
        """Add a deletion of every key in ``[start, end)``."""
        s, e = check_range(start, end)
        if s is None or e is None:
            raise InvalidArgumentError("delete_range needs both ends")
        self.ops.append(Op("delete_range", s, b"", e))
        return self

    def __len__(self) -> int:
        return len(self._keys) if self._ops is None else len(self._ops)


def _check_ops(ops: list) -> None:
    for op in ops:
        if not isinstance(op, Op):
            raise InvalidArgumentError(f"a WriteBatch may only hold Op records, got {type(op).__name__}")


def check_batch(batch) -> list:
    """The ops of ``batch``, what every engine's ``write`` applies; InvalidArgumentError unless it is a
    :class:`WriteBatch` of :class:`Op` records (``ops`` is a public list: what was appended after the
    batch was built is checked here, so every engine refuses the same things)."""
    if not isinstance(batch, WriteBatch):
        raise InvalidArgumentError(f"write() takes a WriteBatch, got {type(batch).__name__}")
    _check_ops(batch.ops)
    return batch.ops


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
#: The columns of every record batch an Arrow scan yields (an engine's ``scan_batches``, the storage node).
KV_SCHEMA = pa.schema([("key", pa.binary()), ("value", pa.binary())])


def pair_batches(pairs: Iterator[tuple[bytes, bytes]], batch_rows: int, limit: int | None, *,
                 close: Callable[[], None] | None = None) -> Iterator[pa.RecordBatch]:
    """``(key, value)`` pairs packed into :data:`KV_SCHEMA` record batches of up to ``batch_rows`` rows,
    at most ``limit`` rows in all.

    ``close`` (if given) is called once the pairs are done with: before the last batch is handed
    out (so a scan's pinned state is released while the caller still holds that batch), or when
    packing fails. A generator dropped early does not call it: the pairs' owner releases on its own.
    """
    remaining = limit
    try:
        while remaining is None or remaining > 0:
            want = batch_rows if remaining is None else min(batch_rows, remaining)
            chunk = list(itertools.islice(pairs, want))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            # Not zip(*chunk): that makes a tuple iterator per row, and in a process holding a large
            # heap their allocations set off garbage collections that cost 14x the packing itself
            # (0.224 s against 0.016 s over 500,000 rows of a replica's LSM; docs/replication.md).
            keys, values = list(map(_FIRST, chunk)), list(map(_SECOND, chunk))
            batch = pa.record_batch([pa.array(keys, pa.binary()), pa.array(values, pa.binary())], schema=KV_SCHEMA)
            if close is not None and (len(chunk) < want or remaining == 0):
                close()  # the last batch: release before handing it out
            yield batch
    except GeneratorExit:
        raise
    except BaseException:
        if close is not None:
            close()
        raise
    if close is not None:
        close()


@runtime_checkable
class Snapshot(Protocol):
    """A consistent read view at ``seq``; release it (or use ``with``) so old data can be dropped."""

    seq: int

    def release(self) -> None:
        """Stop pinning old data; reads through a released snapshot raise DatabaseClosedError."""


@runtime_checkable
class StorageEngine(Protocol):
    """What every engine offers (see the module docstring for the semantics)."""

    def put(self, key, value) -> None:
        """Set ``key`` to ``value``."""

    def get(self, key, *, snapshot: Snapshot | None = None) -> bytes | None:
        """The value of ``key`` (as of ``snapshot``), or None."""

    def delete(self, key) -> None:
        """Delete ``key``; a missing key is not an error."""

    def delete_range(self, start, end) -> None:
        """Delete every key in ``[start, end)``."""

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically."""

    def scan(self, start=None, end=None, *, reverse: bool = False,
             snapshot: Snapshot | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Live pairs of ``[start, end)`` in key order (descending with ``reverse``)."""

    def snapshot(self) -> Snapshot:
        """A consistent read view at the current sequence number."""

    def flush(self) -> None:
        """Make buffered writes part of the engine's files."""

    def compact(self) -> None:
        """Run a full compaction and wait for it."""

    def close(self) -> None:
        """Release resources; every later call raises DatabaseClosedError."""

    def stats(self) -> Mapping[str, Any]:
        """Engine statistics (counts, bytes, amplification figures)."""


@dataclass
class _MemSnapshot:
    engine: "MemoryEngine"
    seq: int
    released: bool = False

    def release(self) -> None:
        self.released = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class BatchWrites:
    """``put``, ``delete`` and ``delete_range`` as one-operation batches, for engines whose
    ``write(batch)`` is the only write path."""

    if TYPE_CHECKING:  # provided by the engine class this is mixed into
        def write(self, batch: WriteBatch) -> None: ...

    def put(self, key, value) -> None:
        """Set ``key`` to ``value``."""
        self.write(WriteBatch().put(key, value))

    def delete(self, key) -> None:
        """Delete ``key`` (a missing key is not an error)."""
        self.write(WriteBatch().delete(key))

    def delete_range(self, start, end) -> None:
        """Delete every key in ``[start, end)``."""
        self.write(WriteBatch().delete_range(start, end))


class MemoryEngine(BatchWrites):
    """The reference engine: every version of every key in memory. Volatile; the model in tests."""

    def __init__(self) -> None:
        self._keys: list[bytes] = []           # sorted distinct keys ever written
        self._versions: dict[bytes, list] = {}  # key -> [(seq, value or None)], ascending seq
        self._seq = 0
        self._closed = False
        self._lock = threading.RLock()

    def _check(self) -> None:
        if self._closed:
            raise DatabaseClosedError("the database is closed")

    def _apply(self, op: Op, seq: int) -> None:
        if op.kind == "delete_range":
            lo = bisect.bisect_left(self._keys, op.key)
            hi = bisect.bisect_left(self._keys, op.end)
            for k in self._keys[lo:hi]:
                self._versions[k].append((seq, None))
            return
        if op.key not in self._versions:
            bisect.insort(self._keys, op.key)
            self._versions[op.key] = []
        self._versions[op.key].append((seq, op.value if op.kind == "put" else None))

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically (one sequence number for all of it)."""
        check_batch(batch)  # the refusals of every engine: this one is the model the others are tested against
        with self._lock:
            self._check()
            self._seq += 1
            for op in batch.ops:
                self._apply(op, self._seq)

    def _at(self, key: bytes, seq: int) -> bytes | None:
        for s, v in reversed(self._versions.get(key, ())):
            if s <= seq:
                return v
        return None

    def _seq_of(self, snapshot) -> int:
        if snapshot is None:
            return self._seq
        if not isinstance(snapshot, _MemSnapshot) or snapshot.engine is not self:
            raise InvalidArgumentError("snapshot must come from this engine's snapshot()")
        if snapshot.released:
            raise DatabaseClosedError("the snapshot was released")
        return snapshot.seq

    def get(self, key, *, snapshot=None) -> bytes | None:
        """The value of ``key`` (at ``snapshot``), or None."""
        k = to_key(key)
        with self._lock:
            self._check()
            return self._at(k, self._seq_of(snapshot))

    def scan(self, start=None, end=None, *, reverse=False, snapshot=None) -> Iterator[tuple[bytes, bytes]]:
        """Live ``(key, value)`` pairs in ``[start, end)``, ascending (or descending)."""
        s, e = check_range(start, end)
        with self._lock:
            self._check()
            seq = self._seq_of(snapshot)
            lo = 0 if s is None else bisect.bisect_left(self._keys, s)
            hi = len(self._keys) if e is None else bisect.bisect_left(self._keys, e)
            items = [(k, v) for k in self._keys[lo:hi] if (v := self._at(k, seq)) is not None]
        return iter(reversed(items) if reverse else items)

    def snapshot(self) -> _MemSnapshot:
        """A read view at the current sequence number."""
        with self._lock:
            self._check()
            return _MemSnapshot(self, self._seq)

    def flush(self) -> None:
        """Nothing to flush."""
        self._check()

    def compact(self) -> None:
        """Nothing to compact."""
        self._check()

    def close(self) -> None:
        """Refuse every later call."""
        self._closed = True

    def stats(self) -> Mapping[str, Any]:
        """Key and version counts."""
        with self._lock:
            return {"engine": "memory", "keys": len(self._keys), "seq": self._seq,
                    "versions": sum(len(v) for v in self._versions.values())}


def _callable_opener(name: str, opener: Any) -> Callable[..., Any]:
    if not callable(opener):
        raise InvalidArgumentError(f"engine {name!r}: the opener must be callable, got {type(opener).__name__}")
    return opener


_ENGINES: Registry[Callable[..., Any]] = Registry(
    "storage engine", {"memory": lambda url=None, **options: MemoryEngine()}, check=_callable_opener)
#: Engine name -> opener ``(url, **options) -> StorageEngine``; filled by the engine packages. Read-only:
#: add one with :func:`register_engine`.
ENGINES: Mapping[str, Callable[..., Any]] = _ENGINES.view


def register_engine(name: str, opener: Callable[..., Any], *, replace: bool = True) -> None:
    """Make ``open_engine(url, engine=name)`` call ``opener(url, **options)``.

    With ``replace=False`` (how plugins register) a name that is taken, by another opener or by a
    built-in engine not imported yet, raises ConfigError; registering the same opener again is a no-op.
    """
    if not replace and name in _BUILTIN and name not in _ENGINES:
        raise ConfigError(f"storage engine {name!r} is already registered (built in)")
    _ENGINES.register(name, opener, replace=replace)


def unregister_engine(name: str, opener: Callable[..., Any]) -> bool:
    """Forget engine ``name`` if ``opener`` is what it opens with (a plugin withdrawing its own
    engine never removes another's); returns whether it was removed."""
    return _ENGINES.unregister(name, opener)


def open_engine(url: str | None, engine: str = "lsm", **options) -> Any:
    """Open (or create) a database of ``engine`` at the fsspec ``url``."""
    if engine not in _ENGINES and engine in _BUILTIN:
        import importlib

        importlib.import_module(_BUILTIN[engine])  # registers itself; an import error is a real bug
    if engine not in _ENGINES:
        raise ConfigError(f"unknown storage engine {engine!r}; known: {_ENGINES.names(_BUILTIN)}")
    return _ENGINES.get(engine)(url, **options)


#: The engines that ship with ddia-ray, imported on first use.
_BUILTIN = {"lsm": "ddia_ray.storage.lsm", "btree": "ddia_ray.storage.btree"}
