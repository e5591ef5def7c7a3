"""The partition map: which replica group owns which range of routing keys, at which version.

Theory of operation
-------------------
A :class:`PartitionMap` lists partitions in routing-key order (see :mod:`.keyspace`). They tile
the whole key space: the first starts at ``b""``, each ends where the next starts, the last is
unbounded (``end=None``). Invariant: every routing key belongs to exactly one partition of a
map, so no key has two owners, or none, at any version.

The map is versioned. Every change (a split, a merge, a move to another group) makes a new map
with ``version + 1``, and stamps the partitions it changed with ``since = version``: the version
from which their range and group hold. A replica checks a request against the partition it
serves: a request made with a map older than the partition's ``since`` used a range or group
that no longer holds, so it is refused with :class:`~ddia_ray.errors.StaleMapError` carrying the
current version, and the client refreshes its map and retries (TiKV's region epoch and
CockroachDB's range generation work the same way). A request made with an older map that did
not touch this partition's change is still right, and is served: a change elsewhere in the map
does not stall every client.

The map lives in the coordination service; changes go through compare-and-set on its version,
so two rebalancers cannot both apply a change to the same map.
"""

from __future__ import annotations

import bisect
from typing import Iterable

from ..codec import record
from ..errors import ConfigError, InvalidArgumentError, MapVersionError, StaleMapError, WrongPartitionError
from ..replication.ownership import OwnedRange, Ownership
from ..replication.records import DELETE_RANGE
from .keyspace import HASH_BYTES, SCHEMES, hash_boundaries, routing_key

__all__ = ["Partition", "PartitionMap", "initial_map", "ownership_of"]


@record("partitioning.partition", version=1, fields_checked=True)
class Partition:
    """Partition ``id``: routing keys ``[start, end)`` (``end`` None: to the end of the key space),
    served by replica group ``group`` since map version ``since``."""

    id: int
    start: bytes
    end: bytes | None
    group: str
    since: int = 1

    def __post_init__(self):
        if type(self.id) is not int or self.id < 0:
            raise InvalidArgumentError(f"a partition id is an int >= 0, got {self.id!r}")
        if type(self.start) is not bytes or not (self.end is None or type(self.end) is bytes):
            raise InvalidArgumentError("a partition's start is bytes and its end bytes or None")
        if self.end is not None and self.end <= self.start:
            raise InvalidArgumentError(f"partition {self.id} ends at {self.end!r}, not after its start {self.start!r}")
        if not isinstance(self.group, str) or not self.group:
            raise InvalidArgumentError(f"partition {self.id} names its replica group (a non-empty str)")
        if type(self.since) is not int or self.since < 1:
            raise InvalidArgumentError(f"partition {self.id}: since is a map version >= 1, got {self.since!r}")

    def owns(self, rkey: bytes) -> bool:
        """Whether routing key ``rkey`` falls in this partition."""
        return self.start <= rkey and (self.end is None or rkey < self.end)


@record("partitioning.map", version=1, fields_checked=True)
class PartitionMap:
    """Every partition of a store, in routing-key order, at map ``version`` (see the module docstring).

    ``next_id`` is the id the next new partition gets (ids are never reused, so a stale request
    for a merged-away partition cannot reach a new one of the same number)."""

    version: int
    scheme: str
    partitions: tuple
    next_id: int

    def __post_init__(self):
        if type(self.version) is not int or self.version < 1:
            raise InvalidArgumentError(f"a map version is an int >= 1, got {self.version!r}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown partitioning scheme {self.scheme!r}; choose one of {SCHEMES}")
        parts = self.partitions
        if not isinstance(parts, tuple) or not parts or not all(type(p) is Partition for p in parts):
            raise InvalidArgumentError("a map holds a non-empty tuple of partitioning.partition records")
        if parts[0].start != b"" or parts[-1].end is not None:
            raise InvalidArgumentError("a map's partitions cover the whole key space: from b'' to no end")
        for a, b in zip(parts, parts[1:]):
            if a.end != b.start:
                raise InvalidArgumentError(f"partitions {a.id} and {b.id} leave a gap or overlap: "
                                           f"{a.end!r} != {b.start!r}")
        ids = [p.id for p in parts]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError("partition ids are unique within a map")
        if type(self.next_id) is not int or self.next_id <= max(ids):
            raise InvalidArgumentError(f"next_id must be above every partition id, got {self.next_id!r}")
        if any(p.since > self.version for p in parts):
            raise InvalidArgumentError("no partition changed after its map's version")
        if self.scheme == "hash" and any(len(p.start) != HASH_BYTES for p in parts[1:]):
            raise InvalidArgumentError(f"hash partitions start at {HASH_BYTES}-byte hashes")

    # --- lookups -------------------------------------------------------------------------------

    def partition(self, pid: int) -> Partition:
        """Partition ``pid``; :class:`~ddia_ray.errors.WrongPartitionError` if this map has none."""
        for p in self.partitions:
            if p.id == pid:
                return p
        raise WrongPartitionError(f"map version {self.version} has no partition {pid} (split, merged or "
                                  f"never made); refresh the map", partition=pid, version=self.version)

    def groups(self) -> tuple[str, ...]:
        """The replica groups the map uses, in order of first appearance."""
        return tuple(dict.fromkeys(p.group for p in self.partitions))

    def locator(self) -> "Locator":
        """A :class:`Locator` for fast lookups in this map."""
        return Locator(self)

    # --- changes (each returns the next version) -------------------------------------------------

    def split(self, pid: int, at: bytes, *, group: str | None = None) -> "PartitionMap":
        """Cut partition ``pid`` at routing key ``at``: it keeps ``[start, at)``, and a new partition
        (id ``next_id``, in ``group`` or the same group) takes ``[at, end)``.

        ``at`` must lie strictly inside the partition (InvalidArgumentError otherwise): a split at
        its start or outside it would leave an empty partition or steal a neighbour's keys."""
        p = self.partition(pid)
        if type(at) is not bytes:
            raise InvalidArgumentError(f"a split point is a bytes routing key, got {type(at).__name__}")
        if self.scheme == "hash" and len(at) != HASH_BYTES:
            raise InvalidArgumentError(f"a hash partition splits at a {HASH_BYTES}-byte hash, got {len(at)} bytes")
        if not (p.start < at and (p.end is None or at < p.end)):
            raise InvalidArgumentError(f"split point {at!r} is outside partition {pid} [{p.start!r}, {p.end!r}): "
                                       f"it must lie strictly inside it")
        v = self.version + 1
        left = Partition(p.id, p.start, at, p.group, v)
        right = Partition(self.next_id, at, p.end, group or p.group, v)
        return self._replace(p, (left, right), v, self.next_id + 1)

    def merge(self, left: int, right: int) -> "PartitionMap":
        """Join partition ``right`` into its left neighbour ``left`` (both in the same group: move one
        first otherwise). The merged partition keeps ``left``'s id; ``right``'s id is retired."""
        a, b = self.partition(left), self.partition(right)
        if a.end != b.start:
            raise InvalidArgumentError(f"partitions {left} and {right} are not neighbours (left, then right)")
        if a.group != b.group:
            raise InvalidArgumentError(f"partitions {left} and {right} are in groups {a.group!r} and {b.group!r}: "
                                       f"move one into the other's group before merging")
        v = self.version + 1
        i = self.partitions.index(a)
        merged = Partition(a.id, a.start, b.end, a.group, v)
        return PartitionMap(v, self.scheme, self.partitions[:i] + (merged,) + self.partitions[i + 2:], self.next_id)

    def move(self, pid: int, group: str) -> "PartitionMap":
        """Give partition ``pid`` to replica group ``group`` (the switch at the end of a move, once
        ``group`` holds the partition's data)."""
        p = self.partition(pid)
        if group == p.group:
            raise InvalidArgumentError(f"partition {pid} is in group {group!r} already")
        v = self.version + 1
        return self._replace(p, (Partition(p.id, p.start, p.end, group, v),), v, self.next_id)

    def bumped(self) -> "PartitionMap":
        """The same partitions at the next version (what an abandoned change publishes, so that the
        versions the groups saw during it stay below the map's)."""
        return PartitionMap(self.version + 1, self.scheme, self.partitions, self.next_id)

    def _replace(self, old: Partition, new: tuple, version: int, next_id: int) -> "PartitionMap":
        i = self.partitions.index(old)
        return PartitionMap(version, self.scheme, self.partitions[:i] + new + self.partitions[i + 1:], next_id)

    # --- checks at the replica -----------------------------------------------------------------

    def check_request(self, pid: int, request_version: int, keys: Iterable[bytes]) -> Partition:
        """What a replica of partition ``pid`` checks before serving a request made with map
        ``request_version`` for ``keys``: returns the partition, or raises

        * :class:`~ddia_ray.errors.StaleMapError` when the request's map predates the partition's
          last change (the client refreshes and retries);
        * :class:`~ddia_ray.errors.MapVersionError` when the request's map is newer than this one
          (this side must refresh first; a version no coordinator has made is refused too);
        * :class:`~ddia_ray.errors.WrongPartitionError` when a key is not the partition's (a client
          bug, or a map that was never this store's)."""
        if type(request_version) is not int or request_version < 1:
            raise InvalidArgumentError(f"a request's map version is an int >= 1, got {request_version!r}")
        if request_version > self.version:
            raise MapVersionError(f"the request used map version {request_version}, newer than this side's "
                                  f"{self.version}; refresh this side's map, or the version is not this store's",
                                  version=request_version, current=self.version)
        p = self.partition(pid)
        if request_version < p.since:
            raise StaleMapError(f"partition {pid} changed at map version {p.since}; the request used version "
                                f"{request_version}: refresh the map and retry", version=request_version,
                                current=self.version)
        for k in keys:
            if not p.owns(routing_key(self.scheme, k)):
                raise WrongPartitionError(f"key {k[:64]!r} is not in partition {pid} at map version {self.version}",
                                          partition=pid, version=self.version)
        return p


def ownership_of(pmap: PartitionMap, group: str, store: str, *, version: int | None = None,
                 frozen: Iterable[int] = ()) -> Ownership:
    """The ownership record of replica ``group`` under ``pmap``: its partitions (``frozen`` ones
    read-only) at ``version`` (default: the map's). A hash partition's range covers the stored
    keys of its hashes (:func:`~.keyspace.stored_key`), so the group checks stored keys alone."""
    cold = set(frozen)
    ranges = tuple(OwnedRange(p.id, p.start, p.end, p.since, p.id not in cold)
                   for p in pmap.partitions if p.group == group)
    return Ownership(store, pmap.version if version is None else version, ranges)


def initial_map(scheme: str, groups: Iterable[str], *, partitions: int | None = None,
                boundaries: Iterable[bytes] | None = None) -> PartitionMap:
    """Version 1 of a store's map: partitions dealt round-robin over ``groups``.

    ``"hash"``: ``partitions`` equal hash ranges (default: 8 per group). ``"range"``: the given
    ``boundaries`` (ascending, distinct; from :func:`~.keyspace.sample_boundaries` or the user), or
    one partition per group cut nowhere but by later splits if none are given."""
    names = tuple(groups)
    if not names or not all(isinstance(g, str) and g for g in names) or len(set(names)) != len(names):
        raise ConfigError("a store needs one or more distinct replica group names")
    if scheme == "hash":
        if boundaries is not None:
            raise ConfigError("a hash-partitioned store cuts the hash space evenly: give partitions=, not boundaries")
        cuts = hash_boundaries(8 * len(names) if partitions is None else partitions)
    elif scheme == "range":
        cuts = tuple(boundaries or ())
        if partitions is not None and partitions != len(cuts) + 1:
            raise ConfigError(f"{len(cuts)} boundaries make {len(cuts) + 1} range partitions, not {partitions}")
        if not all(type(c) is bytes and c for c in cuts) or list(cuts) != sorted(set(cuts)):
            raise ConfigError("range boundaries are distinct, ascending, non-empty bytes keys")
    else:
        raise ConfigError(f"unknown partitioning scheme {scheme!r}; choose one of {SCHEMES}")
    starts = (b"", *cuts)
    ends = (*cuts, None)
    parts = tuple(Partition(i, s, e, names[i % len(names)], 1) for i, (s, e) in enumerate(zip(starts, ends)))
    return PartitionMap(1, scheme, parts, len(parts))


class Locator:
    """Lookups in one map: the partition of a key, the partitions a range overlaps, a batch split
    by partition. Built once per map version (it keeps the sorted starts for bisection)."""

    def __init__(self, pmap: PartitionMap):
        self.map = pmap
        self.scheme = pmap.scheme
        self._starts = [p.start for p in pmap.partitions]

    def locate(self, key: bytes) -> Partition:
        """The partition that owns ``key``."""
        i = bisect.bisect_right(self._starts, routing_key(self.scheme, key)) - 1
        return self.map.partitions[i]

    def overlapping(self, start: bytes | None, end: bytes | None) -> tuple[Partition, ...]:
        """The partitions a scan of keys ``[start, end)`` must ask, in key order for the range scheme;
        every partition for the hash scheme (a key range says nothing about hashes)."""
        if start is not None and end is not None and end < start:
            raise ConfigError(f"a range's start {start!r} is after its end {end!r}")
        parts = self.map.partitions
        if self.scheme == "hash":
            return parts
        lo = 0 if not start else bisect.bisect_right(self._starts, start) - 1
        hi = len(parts) if end is None else bisect.bisect_left(self._starts, end)
        return parts[lo:max(hi, lo + 1)] if end is None or end > (start or b"") else ()

    def split_ops(self, ops: Iterable[tuple]) -> dict[int, list]:
        """``(code, key, ...)`` operations grouped by the partition that owns each key, each group in
        the batch's order. A range delete ``(code, start, end)`` is cut at the partition boundaries
        of a range map, and sent whole to every partition of a hash map (each deletes its own keys
        in the range). A batch across partitions is atomic per partition only (docs/partitioning.md)."""
        out: dict[int, list] = {}
        for op in ops:
            if op[0] == DELETE_RANGE:
                for p in self.overlapping(op[1], op[2]):
                    if self.scheme == "hash":
                        out.setdefault(p.id, []).append(op)
                    else:
                        s = max(op[1], p.start)
                        e = op[2] if p.end is None else min(op[2], p.end)
                        if s < e:
                            out.setdefault(p.id, []).append((op[0], s, e))
            else:
                out.setdefault(self.locate(op[1]).id, []).append(op)
        return out
