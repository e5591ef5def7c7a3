"""The configuration store's multi-version rows: one revision's writes, and reads at any revision.

Theory of operation
-------------------
:class:`Revision` is one revision being written: the procedures
(:mod:`.procedures`) open one over the state's ``get``, make their puts and
deletes through it, and :meth:`Revision.effects` returns the rows to write,
all numbered with the one new revision (etcd: a transaction is one revision,
and every key it writes gets that ``mod_revision``). It keeps what it wrote
so far in an overlay, so a later operation of the same revision sees an
earlier one (etcd's transactions read their own writes). If nothing changed,
no revision is used: the store's revision only moves on a real change (a
delete of a missing key writes nothing, as in etcd).

The per-key numbers follow etcd's ``mvcc`` package exactly:

* a put of a missing key starts a new *generation*: ``create_revision`` is the
  new revision and ``version`` 1;
* a put of a live key keeps its ``create_revision`` and adds one to ``version``;
* a delete writes a tombstone row at the new revision and removes the live row:
  the version is back to 0, and the next put starts a new generation.

Leases: a put attaches the key to its lease (and detaches it from the one it
had), a delete detaches it; the lease's row lists its keys, so revoking a lease
deletes exactly its keys without a scan (procedures cannot scan).

The readers take a state with ``get`` and ``scan`` (a replica's, in a query)
and never read more than they are asked for: a key at a revision is one
one-row scan (see :mod:`.keys` for why), a prefix at a past revision two
one-row scans per key.
"""

from __future__ import annotations

from typing import Any, Callable

from .._validate import invariant
from ..errors import (CompactedError, FutureRevisionError, InvalidArgumentError, LeaseExpiredError,
                      LeaseNotFoundError)
from ..replication.records import DELETE as W_DELETE
from ..replication.records import PUT as W_PUT
from . import keys
from .keys import DELETE, PUT, pack, unpack

__all__ = ["Meta", "Live", "Revision", "read_meta", "check_read_revision", "history_row", "kv_at", "missing_lease",
           "MAX_VALUE_BYTES", "MAX_LEASE_KEYS"]

#: A value's encoded size (etcd's default request limit is 1.5 MiB).
MAX_VALUE_BYTES = 1 << 20
#: Keys one lease may hold (its row lists them all, and each put with it rewrites that row).
MAX_LEASE_KEYS = 10_000

Get = Callable[[bytes], "bytes | None"]


class Meta:
    """The store's counters: its revision, the compaction revision, the next lease id."""

    __slots__ = ("revision", "compacted", "next_lease")

    def __init__(self, row: bytes | None):
        if row is None:
            self.revision, self.compacted, self.next_lease = 0, 0, 1
        else:
            self.revision, self.compacted, self.next_lease = unpack(row, 3, "meta")

    def row(self) -> bytes:
        """These counters as their row."""
        return pack(self.revision, self.compacted, self.next_lease)

    @property
    def oldest(self) -> int:
        """The oldest revision still readable (reads and watches below it are compacted)."""
        return max(self.compacted, 1)


def read_meta(get: Get) -> Meta:
    """The store's counters as of ``get``."""
    return Meta(get(keys.META))


class Live:
    """A live key's current row: its create revision, mod revision, version and lease."""

    __slots__ = ("create", "mod", "version", "lease")

    def __init__(self, create: int, mod: int, version: int, lease: int):
        self.create, self.mod, self.version, self.lease = create, mod, version, lease

    @classmethod
    def read(cls, row: bytes | None) -> "Live | None":
        """The live row of a ``c`` row's value (None for None)."""
        return None if row is None else cls(*unpack(row, 4, "current key"))

    def row(self) -> bytes:
        """This state as its ``c`` row."""
        return pack(self.create, self.mod, self.version, self.lease)


def check_read_revision(meta: Meta, revision: Any) -> int:
    """The revision a read at ``revision`` (0: the current one) reads at; raises
    :class:`CompactedError` below the compaction and :class:`FutureRevisionError` past the current."""
    if type(revision) is not int or revision < 0:
        raise InvalidArgumentError(f"a revision is an int >= 1 (0 or None: the current one), got {revision!r}")
    if revision == 0:
        return meta.revision
    if revision > meta.revision:
        raise FutureRevisionError(f"revision {revision} is in the future: the store is at revision {meta.revision}",
                                  requested=revision, current=meta.revision)
    if revision < meta.compacted:
        raise CompactedError(f"revision {revision} was compacted: the oldest revision kept is {meta.oldest}",
                             requested=revision, oldest_kept=meta.oldest)
    return revision


def history_row(key: str, revision: int, value: bytes) -> tuple:
    """A history row's value as the ``(kind, kv row, prev rev)`` of a read; a kv row is ``(key, value
    bytes or None, create, mod, version, lease)``."""
    kind, raw, create, version, lease, prev = unpack(value, 6, "history")
    if kind == DELETE:
        return DELETE, (key, None, 0, revision, 0, 0), prev
    return PUT, (key, raw, create, revision, version, lease), prev


def kv_at(state: Any, key: str, revision: int) -> tuple | None:
    """``key``'s kv row as of ``revision`` (None: absent then), from the newest row at or below it."""
    start, end = keys.rows_range(key)
    found, values = state.scan(keys.row_key(key, revision), end, 1)
    if not found:
        return None
    kind, kv, _ = history_row(key, keys.revision_of_row(found[0]), values[0])
    return kv if kind == PUT else None


class Revision:
    """One revision being written over ``get`` (see the module docstring)."""

    def __init__(self, get: Get):
        self.get = get
        self.meta = read_meta(get)
        self.revision = self.meta.revision + 1
        self.changed: list[str] = []
        self._live: dict[str, Live | None] = {}
        self._values: dict[str, bytes] = {}
        self._leases: dict[int, tuple[int, set] | None] = {}
        self._dirty: set[int] = set()  # leases whose rows this revision changes
        self._ops: list[tuple] = []
        self._granted = False

    # --- reads through the overlay -------------------------------------------------------------

    def live(self, key: str) -> Live | None:
        """``key``'s current state, with this revision's earlier writes."""
        if key not in self._live:
            self._live[key] = Live.read(self.get(keys.current_key(key)))
        return self._live[key]

    def value(self, key: str) -> bytes | None:
        """``key``'s current value bytes (None: absent), with this revision's earlier writes."""
        live = self.live(key)
        if live is None:
            return None
        if key in self._values:
            return self._values[key]
        row = self.get(keys.row_key(key, live.mod))
        if row is None:
            invariant(False, f"live key {key!r} has no history row at its mod revision {live.mod}")
            return None
        return history_row(key, live.mod, row)[1][1]

    def kv(self, key: str) -> tuple | None:
        """``key``'s current kv row (None: absent)."""
        live = self.live(key)
        if live is None:
            return None
        return (key, self.value(key), live.create, live.mod, live.version, live.lease)

    def lease(self, lease: int) -> tuple[int, set]:
        """Lease ``lease``'s ``(ttl_ms, keys)``; raises if it does not exist (see :func:`missing_lease`)."""
        if lease not in self._leases:
            row = self.get(keys.lease_key(lease))
            if row is None:
                self._leases[lease] = None
            else:
                ttl_ms, attached = unpack(row, 2, "lease")
                self._leases[lease] = (ttl_ms, set(attached))
        got = self._leases[lease]
        if got is None:
            raise missing_lease(lease, self.meta)
        return got

    # --- writes ----------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Set ``key`` to ``value`` (attached to ``lease``, 0: none); returns the revision."""
        if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
            raise InvalidArgumentError(f"a value is at most {MAX_VALUE_BYTES} encoded bytes")
        if type(lease) is not int or lease < 0:
            raise InvalidArgumentError(f"a lease id is an int >= 0, got {lease!r}")
        if lease:
            self.lease(lease)  # refuses a missing lease before anything changes
        old = self.live(key)
        self._mark(key)
        if old is None:
            live, prev = Live(self.revision, self.revision, 1, lease), 0
        else:
            live, prev = Live(old.create, self.revision, old.version + 1, lease), old.mod
            if old.lease and old.lease != lease:
                self._detach(old.lease, key)
        if lease and (old is None or old.lease != lease):
            ttl_ms, attached = self.lease(lease)
            if len(attached) >= MAX_LEASE_KEYS:
                raise InvalidArgumentError(f"lease {lease} holds {MAX_LEASE_KEYS} keys already")
            attached.add(key)
            self._leases[lease] = (ttl_ms, attached)
            self._dirty.add(lease)
        self._live[key] = live
        self._values[key] = value
        self._ops.append((W_PUT, keys.row_key(key, self.revision),
                          pack(PUT, value, live.create, live.version, lease, prev)))
        self._ops.append((W_PUT, keys.current_key(key), live.row()))
        return self.revision

    def delete(self, key: str) -> int:
        """Delete ``key``; returns how many keys that removed (0: it did not exist, nothing written)."""
        old = self.live(key)
        if old is None:
            return 0
        self._mark(key)
        if old.lease:
            self._detach(old.lease, key)
        self._live[key] = None
        self._values.pop(key, None)
        self._ops.append((W_PUT, keys.row_key(key, self.revision), pack(DELETE, None, 0, 0, 0, old.mod)))
        self._ops.append((W_DELETE, keys.current_key(key), b""))
        return 1

    def grant(self, ttl_ms: int) -> int:
        """A new lease of ``ttl_ms``; returns its id (leases are not revisions, as in etcd)."""
        lease = self.meta.next_lease
        self.meta.next_lease += 1
        self._granted = True
        self._leases[lease] = (ttl_ms, set())
        self._dirty.add(lease)
        return lease

    def revoke(self, lease: int) -> int:
        """Delete lease ``lease`` and every key attached to it; returns how many keys were deleted."""
        _, attached = self.lease(lease)
        deleted = 0
        for key in sorted(attached):  # sorted: every member must write the same rows in the same order
            live = self.live(key)
            if live is not None and live.lease == lease:
                deleted += self.delete(key)
        self._leases[lease] = None
        self._dirty.add(lease)
        return deleted

    def _mark(self, key: str) -> None:
        if key in self.changed:
            # etcd refuses a transaction that writes one key twice ("duplicate key given in txn request").
            raise InvalidArgumentError(f"key {key!r} is written twice in one revision")
        self.changed.append(key)

    def _detach(self, lease: int, key: str) -> None:
        try:
            ttl_ms, attached = self.lease(lease)
        except LeaseNotFoundError:
            return  # revoked already: its keys were deleted, or detached from it before
        attached.discard(key)
        self._leases[lease] = (ttl_ms, attached)
        self._dirty.add(lease)

    def effects(self) -> tuple:
        """The rows to write: this revision's (if anything changed), the leases', the counters'."""
        ops = list(self._ops)
        if self.changed:
            # In write order: a watcher gets a revision's events in the order they were made (etcd's sub-revisions).
            ops.append((W_PUT, keys.rev_key(self.revision), pack(tuple(self.changed))))
            self.meta.revision = self.revision
        for lease in sorted(self._dirty):
            got = self._leases[lease]
            if got is None:
                ops.append((W_DELETE, keys.lease_key(lease), b""))
            else:
                ops.append((W_PUT, keys.lease_key(lease), pack(got[0], tuple(sorted(got[1])))))
        if self.changed or self._granted:
            ops.append((W_PUT, keys.META, self.meta.row()))
        return tuple(ops)

    @property
    def current(self) -> int:
        """The revision the store is at once this one is written (unchanged if nothing was)."""
        return self.revision if self.changed else self.meta.revision


def missing_lease(lease: int, meta: Meta) -> LeaseNotFoundError:
    """The error for a lease that has no row: expired (or revoked) if the store granted it once,
    never granted otherwise (lease ids are given out in order, so the next id tells which)."""
    if 0 < lease < meta.next_lease:
        return LeaseExpiredError(f"lease {lease} expired or was revoked (its keys were deleted); grant a new one",
                                 lease_id=lease)
    return LeaseNotFoundError(f"no lease {lease} was ever granted by this store", lease_id=lease)
