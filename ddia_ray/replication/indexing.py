"""Local secondary indexes: each replica group indexes its own data, in the same entries as the data.

Theory of operation
-------------------
A *document-partitioned* (local) index (DDIA 6.1) is kept by each group for the keys it holds.
The group's ownership record (:mod:`.ownership`) lists the indexes (:class:`IndexDef`: a name
and an importable ``"module:callable"`` that maps a value to its index *terms*, a tuple of
bytes). For every put or delete of an entry, the index's own rows change in the same entry:

* the terms of the old value lose the key, the terms of the new value gain it;
* an index row is a reserved key ``ix/<name>\\0<len(term)><term><key>`` with an empty value, so
  the rows of one term are one contiguous range, scanned in key order.

Where the rows are computed is where the write is decided: the leader-follower leader computes
them before it appends and logs them with the data, so followers apply them without running the
function; Raft members compute them when the entry is applied (every member computes alike,
provided the function is deterministic, which the docs ask of it; the leader decides a batch's
procedures as it proposes it, :mod:`.speculation`, but not its index rows, which stay in reserved
keys its view does not hold: a group with local indexes decides its batches at apply). So an index is never behind
its partition's data (no index lag for local indexes: the lag DDIA discusses is the global
index's, updated asynchronously).

An index function that raises, or returns something that is not bytes terms, does not stop the
write: the key is left out of that index, the error is counted per index and the last one kept
for the group's status ("reported, not fatal to the partition").

A query asks every group for a term's rows (scatter) and merges the answers (gather); each group
answers in pages of keys after a cursor, with the keys' values (:class:`ReplIndexScan`).

**Global indexes: the change outbox.** A *global* (term-partitioned) index lives outside the
groups (:mod:`ddia_ray.partitioning.global_index`) and is updated asynchronously. What a group
keeps for it, in the same entries as the data, is an *outbox* row per changed key:
``gx/<name>\0<key>`` holding the terms the key's older values had since the global index last
caught up with it (the terms that may be stale there) and how many writes made it so. The
indexer reads a group's outbox (:class:`ReplOutboxScan`), publishes each key's current terms,
removes the stale ones, and deletes the outbox row with a compare-and-set on its value (the one
write a client may make to a replica's reserved keys, :func:`~.records.check_ops`), so a key
written again meanwhile keeps its row (the count changed) and is processed again. The
transactional outbox pattern: the change and the record of it commit together, so no change is
lost between the data and the index.
"""

from __future__ import annotations

import functools
import importlib
import struct
from typing import Any, Callable

from .. import codec
from ..codec import record
from ..errors import CorruptRecordError, InvalidArgumentError
from .ingest import ingest_puts
from .records import DELETE, DELETE_RANGE, OUTBOX_PREFIX, PUT, RESERVED_PREFIX

__all__ = ["IndexDef", "INDEX_PREFIX", "INDEX_SCOPES", "index_row", "term_range", "Indexer", "ReplIndexScan",
           "ReplOutboxScan", "IndexPage", "index_page", "index_rows", "outbox_row", "outbox_value", "decode_outbox"]

#: Every index row starts with this (a reserved key: clients cannot write it, scans skip it).
INDEX_PREFIX = RESERVED_PREFIX + b"ix/"
_LEN = struct.Struct(">I")
#: ``"local"``: rows in each group beside the data; ``"global"``: an outbox per group, rows elsewhere.
INDEX_SCOPES = ("local", "global")


@record("repl.index_def", version=2, upgrades={1: lambda f: {**f, "scope": "local"}})
class IndexDef:
    """Index ``name``: ``function`` (``"module:callable"``, importable on every replica) maps a value
    (bytes) to the terms (an iterable of bytes) under which its key is found, called as
    ``function(value, **options)``; ``scope`` is ``"local"`` or ``"global"`` (module docstring)."""

    name: str
    function: str
    options: dict | None = None
    scope: str = "local"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name or len(self.name) > 200:
            raise InvalidArgumentError(f"an index name is a non-empty str without NUL, got {self.name!r}")
        if not isinstance(self.function, str) or self.function.count(":") != 1:
            raise InvalidArgumentError(f"an index function is 'module:callable', got {self.function!r}")
        if self.options is not None and not (isinstance(self.options, dict)
                                             and all(type(k) is str for k in self.options)):
            raise InvalidArgumentError("an index's options map str names to plain values")
        if self.scope not in INDEX_SCOPES:
            raise InvalidArgumentError(f"an index's scope is one of {INDEX_SCOPES}, got {self.scope!r}")


@record("repl.index_scan", version=1, fields_checked=True)
class ReplIndexScan:
    """Up to ``limit`` keys (with their values) that index ``index`` holds under ``term``, after
    ``after`` (exclusive; b"" from the start), as the group's leader has them; ``fence`` as for a
    read (keys outside the group's owned ranges at that map version are left out)."""

    index: str
    term: bytes
    after: bytes = b""
    limit: int = 1000
    fence: int = 0

    def __post_init__(self):
        if not isinstance(self.index, str) or not self.index:
            raise InvalidArgumentError("an index scan names its index")
        if type(self.term) is not bytes or type(self.after) is not bytes:
            raise InvalidArgumentError("an index scan's term and cursor are bytes")
        if type(self.limit) is not int or self.limit < 1:
            raise InvalidArgumentError("an index scan's limit is an int >= 1")
        if type(self.fence) is not int or self.fence < 0:
            raise InvalidArgumentError("fence is a map version (0: none)")


@record("repl.outbox_scan", version=1, fields_checked=True)
class ReplOutboxScan:
    """Up to ``limit`` outbox rows of global index ``index`` after key ``after`` (exclusive), as the
    group's leader has them: the page's ``keys`` are the changed (stored) keys, its ``values`` the
    rows' raw values (what the indexer's compare-and-set expects)."""

    index: str
    after: bytes = b""
    limit: int = 1000

    def __post_init__(self):
        if not isinstance(self.index, str) or not self.index:
            raise InvalidArgumentError("an outbox scan names its index")
        if type(self.after) is not bytes:
            raise InvalidArgumentError("an outbox scan's cursor is bytes")
        if type(self.limit) is not int or self.limit < 1:
            raise InvalidArgumentError("an outbox scan's limit is an int >= 1")


@record("repl.index_page", version=1)
class IndexPage:
    """A page of an index scan: ``keys`` and ``values``; ``more`` says ask again with ``after=cursor``
    (the last key the page looked at, kept or not)."""

    keys: tuple
    values: tuple
    more: bool
    cursor: bytes = b""


def _base(name: str) -> bytes:
    return INDEX_PREFIX + name.encode() + b"\x00"


def index_row(name: str, term: bytes, key: bytes) -> bytes:
    """The reserved key recording that ``key`` holds ``term`` in index ``name``."""
    return _base(name) + _LEN.pack(len(term)) + term + key


def term_range(name: str, term: bytes, after: bytes = b"") -> tuple[bytes, bytes, int]:
    """``(start, end, prefix length)`` of the rows of ``term`` in index ``name`` after key ``after``."""
    prefix = _base(name) + _LEN.pack(len(term)) + term
    start = prefix + after + b"\x00" if after else prefix
    return start, prefix + b"\xff" * 9, len(prefix)  # no key of a reserved row is that long a run of \xff


def outbox_row(name: str, key: bytes) -> bytes:
    """The reserved key of ``key``'s pending change for global index ``name``."""
    return OUTBOX_PREFIX + name.encode() + b"\x00" + key


def _outbox(raw: bytes | None) -> tuple[int, frozenset]:
    """``(writes, stale terms)`` of an outbox row (refused precisely if it is not such a row)."""
    if raw is None:
        return 0, frozenset()
    row = codec.decode(raw)
    if not (isinstance(row, tuple) and len(row) == 2 and type(row[0]) is int and isinstance(row[1], tuple)
            and all(type(t) is bytes for t in row[1])):
        raise CorruptRecordError("an index outbox row holds (writes, a tuple of bytes terms)")
    return row[0], frozenset(row[1])


def decode_outbox(raw: bytes | None) -> frozenset:
    """The stale terms an outbox row holds."""
    return _outbox(raw)[1]


def outbox_value(raw: bytes | None, was: set) -> bytes:
    """The outbox row after one more write of its key whose old value had terms ``was``. The row
    counts the writes: the union of stale terms alone may come out unchanged (a key rewritten to
    a value whose old terms the row names already), and then the indexer's compare-and-set
    would take a row written after its read for the one it read and delete it (an ABA problem,
    found by the model test in tests/test_partitioning_global_index.py)."""
    writes, stale = _outbox(raw)
    return codec.encode((writes + 1, tuple(sorted(stale | was))))


class Indexer:
    """A group's indexes: their functions (imported once) and the rows a batch of ops changes."""

    def __init__(self) -> None:
        self.defs: tuple = ()
        self._fns: dict[str, Callable[[bytes], Any]] = {}
        self.errors: dict[str, int] = {}
        self.last_error = ""

    def load(self, defs: tuple) -> None:
        """Use ``defs`` (from the ownership record); a function that cannot be imported is an error
        of every key it would index, counted as such, not a failed replica."""
        if defs == self.defs:
            return
        self.defs = tuple(defs)
        self._fns = {}
        for d in self.defs:
            module, _, attr = d.function.partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
                self._fns[d.name] = functools.partial(fn, **(d.options or {}))
            except Exception as e:  # noqa: BLE001 - reported in status; the data path goes on
                self.last_error = f"index {d.name!r}: cannot import {d.function!r}: {e}"

    def terms(self, name: str, value: bytes | None) -> set:
        """The terms index ``name`` files ``value`` under (none for an absent value, or when its
        function raises: counted as an error of the index, never raised)."""
        if value is None:
            return set()
        fn = self._fns.get(name)
        try:
            if fn is None:
                raise InvalidArgumentError(f"its function {self._def(name).function!r} was not importable")
            terms = set(fn(value))
            if not all(type(t) is bytes for t in terms):
                raise InvalidArgumentError("the function returned terms that are not bytes")
            return terms
        except Exception as e:  # noqa: BLE001 - a user's function: reported, never fatal to the partition
            self.errors[name] = self.errors.get(name, 0) + 1
            self.last_error = f"index {name!r}: {type(e).__name__}: {e}"[:500]
            return set()

    def _def(self, name: str) -> IndexDef:
        return next(d for d in self.defs if d.name == name)

    def rows(self, ops: tuple, get: Callable[[bytes], bytes | None],
             scan: Callable[[bytes, bytes], list]) -> tuple:
        """The index-row operations that go with decided ``ops`` (applied in the same entry, after
        them). ``get`` reads the state before the ops; ``scan(start, end)`` lists its keys and values
        in a range (for a range delete)."""
        if not self.defs:
            return ()
        pending: dict[bytes, bytes | None] = {}
        old: dict[bytes, bytes | None] = {}
        for op in ops:
            if op[0] == DELETE_RANGE:
                for k, v in scan(op[1], op[2]):
                    if k not in old:
                        old[k] = pending.get(k, v)
                    pending[k] = None
                for k in [k for k in pending if op[1] <= k < op[2]]:
                    pending[k] = None
                continue
            key = op[1]
            if key.startswith(RESERVED_PREFIX):  # a replica's own row (an outbox acknowledgement): no data
                continue
            if key not in old:
                old[key] = pending[key] if key in pending else get(key)
            pending[key] = op[2] if op[0] == PUT else None
        out: list = []
        for key, new in pending.items():
            before = old.get(key)
            for d in self.defs:
                now = self.terms(d.name, new)
                was = now if before == new else self.terms(d.name, before)
                if d.scope == "global":  # the outbox: which terms may now be stale in the global index
                    row = outbox_row(d.name, key)
                    raw = get(row)
                    if raw is not None or was or now:  # no terms before or now, nothing pending: no change
                        out.append((PUT, row, outbox_value(raw, was)))
                    continue
                out += [(DELETE, index_row(d.name, t, key), b"") for t in sorted(was - now)]
                # Every term of the new value is written, also when unchanged: rewriting a value as
                # it is (a compare-and-set to itself) is how an index is filled for existing data.
                out += [(PUT, index_row(d.name, t, key), b"") for t in sorted(now)]
        return tuple(out)

    def figures(self) -> dict:
        """For status: the indexes, errors per index and the last error."""
        return {"indexes": [d.name for d in self.defs], "index_errors": dict(self.errors),
                "last_index_error": self.last_error}


def index_rows(indexer: Indexer, defs: tuple, state, ops: tuple) -> tuple:
    """``ops`` followed by the index rows they change in ``state`` (``ops`` alone without indexes; an
    ingest's rows as puts with indexes)."""
    if not defs:
        return ops
    indexer.load(defs)
    ops = ingest_puts(ops)  # every row's terms are computed: a bulk load's rows become puts here

    def scan(start: bytes, end: bytes) -> list:
        keys, values = state.scan(start, end, 1 << 62)
        return list(zip(keys, values))

    return ops + indexer.rows(ops, state.get, scan)


def index_page(state, own: Any, req: "ReplIndexScan | ReplOutboxScan") -> IndexPage:
    """A page of ``req`` from ``state``: the keys ``term`` holds (for a fenced scan, those the
    group's ownership record ``own`` lists) and their values; for an outbox scan, the changed keys
    and their rows' raw values."""
    if isinstance(req, ReplOutboxScan):
        base = OUTBOX_PREFIX + req.index.encode() + b"\x00"
        keys, values = state.scan_rows(base + req.after + b"\x00" if req.after else base, base[:-1] + b"\x01",
                                       req.limit)
        cut = len(base)
        return IndexPage(tuple(k[cut:] for k in keys), tuple(values), len(keys) >= req.limit,
                         keys[-1][cut:] if keys else b"")
    owner = own.owner if req.fence and own is not None else None
    start, end, cut = term_range(req.index, req.term, req.after)
    rows, _ = state.scan_rows(start, end, req.limit)
    seen = [r[cut:] for r in rows]
    keys = seen if owner is None else [k for k in seen if owner(k) is not None]
    return IndexPage(tuple(keys), tuple(state.get_many(tuple(keys))), len(rows) >= req.limit,
                     seen[-1] if seen else b"")
