"""Which key ranges a replica group owns, kept in its own log: the replica's side of request routing.

Theory of operation
-------------------
A partitioned store (:mod:`ddia_ray.partitioning`) spreads its partitions over replica groups.
Every client request it sends carries a *fence*: the version of the partition map it was routed
with. Each group keeps an :class:`Ownership` record, the partitions it owns now, under one
reserved key of its state (:data:`OWNERSHIP_KEY`), written through the group's log like any
write. So the record changes at one position of the log, every replica sees it change at that
same position, and a checkpoint carries it with the data.

The check (:meth:`Ownership.check_keys`, :meth:`Ownership.check_range`) runs where the write is
ordered against the state it will apply to: the leader-follower leader before it appends (its
state reflects every entry it has ordered), and under Raft when the entry is applied (every
member decides alike). A write the check refuses changes nothing. This is what makes "a request
never silently reaches the wrong partition" hold across moves: the entry that gives a range away
and the writes to that range are ordered in one log, so no write lands after the range left.

A request with map version ``w`` for a key:

* owned here by range ``r``, with ``w >= r.since``: served (a map older than the group's record
  is still right about a range the group has not changed since);
* owned here with ``w < r.since``: :class:`~ddia_ray.errors.StaleMapError` (the range changed
  after the client's map; it refreshes and routes again);
* not owned here, or a write to a range frozen for a move: ``StaleMapError`` when ``w`` is older
  than the record (the client's map predates the change); a
  :class:`~ddia_ray.errors.WrongPartitionError` when ``w`` equals it (the map at that version
  never gave this group the key: a routing bug); :class:`~ddia_ray.errors.MapVersionError` when
  ``w`` is newer (a version this group has not seen: a change it took part in always reaches it
  before the map is published, so the version is from the future, or not this store's).

A frozen range (``writable=False``) still serves reads: during a move its data here is final,
and the move takes the range away from this group before it publishes the map that names the
new owner, so no read here can miss a write the new owner took. Requests without a fence (``0``) are the store's
own (a move's copy, a cleanup) and are not checked; partitioned clients always send one.

The record changes only forward: a new record's version is at least the old one's
(:meth:`Ownership.check_successor`), so a delayed update from an earlier change cannot undo a
later one.
"""

from __future__ import annotations

import bisect

from .. import codec
from ..codec import record
from ..errors import CorruptionError, InvalidArgumentError, MapVersionError, StaleMapError, WrongPartitionError
from .indexing import IndexDef
from .ingest import decode_ingest
from .records import CALL, DELETE_RANGE, INGEST, RESERVED_PREFIX, ReplRead, ReplScan

__all__ = ["OWNERSHIP_KEY", "OwnedRange", "Ownership", "ReplOwnership", "check_fenced_ops", "check_update",
           "decode_ownership", "PartitionLoad", "OwnershipCache", "check_fenced_read"]

#: Where a group keeps its :class:`Ownership` record (a reserved key: clients cannot write it).
OWNERSHIP_KEY = RESERVED_PREFIX + b"ownership"


@record("repl.owned_range", version=1, fields_checked=True)
class OwnedRange:
    """Partition ``pid``'s keys ``[start, end)`` (``end`` None: unbounded), owned since map version
    ``since``; ``writable`` False while the range is frozen for a move (reads only)."""

    pid: int
    start: bytes
    end: bytes | None
    since: int
    writable: bool = True

    def __post_init__(self):
        if type(self.pid) is not int or self.pid < 0:
            raise InvalidArgumentError(f"a partition id is an int >= 0, got {self.pid!r}")
        if type(self.start) is not bytes or not (self.end is None or type(self.end) is bytes):
            raise InvalidArgumentError("an owned range's start is bytes and its end bytes or None")
        if self.end is not None and self.end <= self.start:
            raise InvalidArgumentError(f"owned range {self.pid} ends at {self.end!r}, not after {self.start!r}")
        if type(self.since) is not int or self.since < 1:
            raise InvalidArgumentError(f"owned range {self.pid}: since is a map version >= 1, got {self.since!r}")
        if type(self.writable) is not bool:
            raise InvalidArgumentError("writable is a bool")


def _ownership_v1_to_v2(fields: dict) -> dict:
    """Records of version 1 listed no secondary index."""
    return {**fields, "indexes": ()}


@record("repl.ownership", version=2, upgrades={1: _ownership_v1_to_v2}, fields_checked=True)
class Ownership:
    """The ranges a group owns at map ``version``, in key order, not overlapping (see the module
    docstring). ``store`` names the partitioned store, so a record is never taken for another's.
    ``indexes``: the local secondary indexes the group keeps (:mod:`.indexing`)."""

    store: str
    version: int
    ranges: tuple
    indexes: tuple = ()

    def __post_init__(self):
        if not isinstance(self.indexes, tuple) or not all(type(d) is IndexDef for d in self.indexes):
            raise InvalidArgumentError("an ownership record's indexes are a tuple of repl.index_def records")
        if len({d.name for d in self.indexes}) != len(self.indexes):
            raise InvalidArgumentError("index names are unique")
        if not isinstance(self.store, str) or not self.store:
            raise InvalidArgumentError("an ownership record names its store (a non-empty str)")
        if type(self.version) is not int or self.version < 1:
            raise InvalidArgumentError(f"an ownership record's version is an int >= 1, got {self.version!r}")
        if not isinstance(self.ranges, tuple) or not all(type(r) is OwnedRange for r in self.ranges):
            raise InvalidArgumentError("an ownership record holds a tuple of repl.owned_range records")
        for a, b in zip(self.ranges, self.ranges[1:]):
            if a.end is None or a.end > b.start:
                raise InvalidArgumentError(f"owned ranges {a.pid} and {b.pid} overlap or are out of order")
        if any(r.since > self.version for r in self.ranges):
            raise InvalidArgumentError("no owned range changed after its record's version")

    def owner(self, key: bytes, starts: list | None = None) -> OwnedRange | None:
        """The owned range holding ``key``, or None (``starts``: the ranges' starts, when the caller
        looks up many keys)."""
        i = bisect.bisect_right([r.start for r in self.ranges] if starts is None else starts, key) - 1
        if i < 0:
            return None
        r = self.ranges[i]
        return r if r.end is None or key < r.end else None

    def range(self, pid: int) -> OwnedRange | None:
        """Owned range ``pid``, or None."""
        return next((r for r in self.ranges if r.pid == pid), None)

    def _refuse(self, version: int, what: str) -> None:
        if version < self.version:
            raise StaleMapError(f"{what} is not served here since map version {self.version}; the request used "
                                f"version {version}: refresh the map and retry", version=version,
                                current=self.version)
        if version == self.version:
            raise WrongPartitionError(f"{what} is not this group's at map version {version}", version=version)
        raise MapVersionError(f"the request used map version {version}, which this group has not seen (it knows "
                              f"{self.version}): a version from the future, or another store's",
                              version=version, current=self.version)

    def _check_range_version(self, r: OwnedRange, version: int) -> None:
        if version < r.since:
            raise StaleMapError(f"partition {r.pid} changed at map version {r.since}; the request used version "
                                f"{version}: refresh the map and retry", version=version, current=self.version)

    def check_keys(self, version: int, keys, *, write: bool) -> dict[int, int]:
        """Refuse (see the module docstring) a request routed with map ``version`` for ``keys``;
        returns how many of the keys each owned partition holds (the partitions' load figures)."""
        owner, starts = self.owner, [r.start for r in self.ranges]
        counts: dict[int, int] = {}
        for key in keys:
            r = owner(key, starts)
            if r is None or (write and not r.writable):
                self._refuse(version, f"key {key[:64]!r}" + (" (frozen for a move)" if r is not None else ""))
            else:
                self._check_range_version(r, version)
                counts[r.pid] = counts.get(r.pid, 0) + 1
        return counts

    def check_range(self, version: int, start: bytes, end: bytes | None, *, write: bool) -> int:
        """Refuse a scan or range delete of ``[start, end)`` unless one owned range holds all of it;
        returns that range's partition id."""
        r = self.owner(start)
        inside = r is not None and (r.end is None or (end is not None and end <= r.end))
        what = f"range [{start[:64]!r}, {end if end is None else end[:64]!r})"
        if not inside or (write and not r.writable):  # type: ignore[union-attr]
            self._refuse(version, what)
        self._check_range_version(r, version)  # type: ignore[arg-type]
        return r.pid  # type: ignore[union-attr]

    def check_successor(self, new: "Ownership") -> None:
        """Refuse ``new`` as the next record unless it is the same store's, at a version not older."""
        if new.store != self.store:
            raise InvalidArgumentError(f"the group serves store {self.store!r}, not {new.store!r}")
        if new.version < self.version:
            raise StaleMapError(f"an ownership update for map version {new.version} arrived after version "
                                f"{self.version}: it is out of date", version=new.version, current=self.version)


@record("repl.ownership_update", version=1, fields_checked=True)
class ReplOwnership:
    """A request to the group's leader: make ``ownership`` the group's record, through the log.

    ``acks`` as for :class:`~.records.ReplWrite` (a partitioned store asks every follower under
    leader-follower, so the change cannot be lost in a failover of an async group)."""

    ownership: Ownership
    acks: int = -1

    def __post_init__(self):
        if type(self.ownership) is not Ownership:
            raise InvalidArgumentError("an ownership update carries a repl.ownership record")
        if type(self.acks) is not int or self.acks < -1:
            raise InvalidArgumentError("acks is -1 (the store's mode) or a number of followers")


class OwnershipCache:
    """A replica's current ownership record, decoded again only when its stored bytes change (the
    check reads the stored record on every fenced request: a decode each time would cost more)."""

    def __init__(self) -> None:
        self._raw: bytes | None = None
        self._own: Ownership | None = None

    def of(self, raw: bytes | None) -> Ownership | None:
        """The record whose encoding is ``raw`` (None: the group has none)."""
        if raw != self._raw:
            self._own, self._raw = decode_ownership(raw), raw
        return self._own


def check_fenced_read(own: Ownership | None, req: ReplRead | ReplScan, load: "PartitionLoad", group: str) -> None:
    """Refuse a read or scan routed with map ``req.fence`` that ``own`` does not allow; count it in ``load``."""
    if own is None:
        raise MapVersionError(f"{group!r} has no partition yet; the read used map version {req.fence}",
                              version=req.fence, current=0)
    if isinstance(req, ReplScan):
        load.read({own.check_range(req.fence, req.start, req.end, write=False): 1})
    else:
        load.read(own.check_keys(req.fence, req.keys, write=False))


def decode_ownership(raw: bytes | None) -> Ownership | None:
    """The record stored under :data:`OWNERSHIP_KEY` (None if the group has none)."""
    if raw is None:
        return None
    try:
        own = codec.decode(raw)
    except Exception as e:  # noqa: BLE001 - any decode failure of this key is damage, reported as such
        raise CorruptionError(f"the group's ownership record is unreadable: {e}") from e
    if type(own) is not Ownership:
        raise CorruptionError(f"the group's ownership record is a {type(own).__name__}, not repl.ownership")
    return own


def check_update(own: Ownership | None, new: Ownership) -> None:
    """Refuse ``new`` as the successor of ``own`` (see :meth:`Ownership.check_successor`)."""
    if own is not None:
        own.check_successor(new)


def check_fenced_ops(own: Ownership | None, version: int, ops: tuple) -> dict[int, int]:
    """Refuse a write of ``ops`` routed with map ``version`` that ``own`` does not allow; returns the
    operations per partition. A group with no record has been given no partition: every fenced
    request is refused."""
    if own is None:
        raise MapVersionError(f"this replica group has no partition yet; the request used map version {version}",
                              version=version, current=0)
    keys = []
    ranges: dict[int, int] = {}
    for op in ops:
        if op[0] == DELETE_RANGE:
            pid = own.check_range(version, op[1], op[2], write=True)
            ranges[pid] = ranges.get(pid, 0) + 1
        elif op[0] == CALL:  # its keys are known only once it runs: nothing to check them against here
            raise InvalidArgumentError("a procedure call cannot be routed by a partition map: send it to one "
                                       "replica group's own client")
        elif op[0] == INGEST:  # a bulk load: the range [smallest, largest key] must be one partition's
            rows = decode_ingest(op[2])
            pid = own.check_range(version, rows.lo, rows.hi + b"\x00", write=True)
            ranges[pid] = ranges.get(pid, 0) + rows.count  # rows, for the load figures
        else:
            keys.append(op[1])
    counts = own.check_keys(version, keys, write=True)
    for pid, n in ranges.items():
        counts[pid] = counts.get(pid, 0) + n
    return counts


class PartitionLoad:
    """Reads and writes a replica counted per partition through fenced requests (for the store's
    per-partition statistics: skew and hot spots, DDIA 6.2)."""

    def __init__(self) -> None:
        self.reads: dict[int, int] = {}
        self.writes: dict[int, int] = {}

    @staticmethod
    def _add(into: dict[int, int], counts: dict[int, int]) -> None:
        for pid, n in counts.items():
            into[pid] = into.get(pid, 0) + n

    def wrote(self, counts: dict[int, int]) -> None:
        """Count a write's operations per partition."""
        self._add(self.writes, counts)

    def read(self, counts: dict[int, int]) -> None:
        """Count a read's keys (or a scan page, as one) per partition."""
        self._add(self.reads, counts)

    def figures(self) -> dict:
        """``{"<pid>": {"reads": n, "writes": n}}`` for status (str keys: status travels as msgpack)."""
        return {str(pid): {"reads": self.reads.get(pid, 0), "writes": self.writes.get(pid, 0)}
                for pid in sorted(set(self.reads) | set(self.writes))}
