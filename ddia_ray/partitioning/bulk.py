"""Bulk loads into a partitioned store: Arrow rows cut by partition, one ingest entry per partition.

Theory of operation
-------------------
:meth:`~.client.PartitionedClient.ingest` takes two binary columns. The keys become the keys the
groups store (:func:`~.keyspace.stored_key`: the hash scheme prefixes each with its routing key),
the rows are sorted by stored key (Arrow's sort is stable, so a key repeated in the batch keeps its
order and its last value wins, the engine ingest's rule), and the sorted rows are cut where each
partition starts: a partition's rows are one contiguous slice, found by binary search, without a
Python step per row for the range scheme. Each slice goes to its partition's group as one
ingest operation (:mod:`ddia_ray.replication.ingest`), fenced with the client's map version like
any write.

A refused slice (the map changed: a split, a merge or a move) was not applied; it is cut again
under a fresh map and sent again, possibly as several slices now, through the client's routing
loop (:meth:`~.client.PartitionedClient._routed`). A bulk load across partitions is atomic per
partition, as a batch with ``across_partitions=True`` is: when some slices fail the future raises
:class:`~ddia_ray.errors.PartialBatchError` naming the partitions that applied theirs, and running
the same load again is safe (an ingest writes the same values again).
"""

from __future__ import annotations

import bisect
import concurrent.futures
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..replication.ingest import MAX_INGEST_ROWS, binary_column, ingest_op
from ..errors import InvalidArgumentError
from .keyspace import hash_of
from .partition_map import Locator

if TYPE_CHECKING:
    from .client import PartitionedClient

__all__ = ["ingest", "stored_keys", "cut"]


def stored_keys(scheme: str, keys: pa.Array) -> pa.Array:
    """The stored keys of a binary column of user keys (see :func:`~.keyspace.stored_key`)."""
    if scheme == "range":
        return keys
    return pa.array([hash_of(k) + k for k in keys.to_pylist()], pa.binary())


class _Keys:
    """A sorted binary column as a sequence of bytes, for :mod:`bisect` (one element read per probe)."""

    def __init__(self, keys: pa.Array):
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i: int) -> bytes:
        return self._keys[i].as_py()


def cut(loc: Locator, keys: pa.Array) -> list[tuple[int, str, int, int]]:
    """``(partition id, group, first row, end row)`` of each partition that sorted stored ``keys``
    touch, in key order (the slices tile the rows)."""
    seq, out = _Keys(keys), []
    n, first = len(keys), 0
    parts = loc.map.partitions
    # Partition starts are routing keys: a stored key's first bytes are its routing key (the whole
    # key for the range scheme, the 8-byte hash for the hash scheme), so "stored >= start" is the
    # routing key's own comparison.
    i = bisect.bisect_right([p.start for p in parts], seq[0]) - 1
    while first < n:
        p = parts[i]
        end = n if p.end is None else bisect.bisect_left(seq, p.end, first)
        if end > first:
            out.append((p.id, p.group, first, end))
        first, i = end, i + 1
    return out


def ingest(client: "PartitionedClient", keys: Any, values: Any, acks: int | None) -> concurrent.futures.Future:
    """The future of a bulk load of ``keys -> values`` through ``client`` (see the module docstring)."""
    k, v = binary_column(keys, "keys"), binary_column(values, "values")
    if len(k) != len(v):
        raise InvalidArgumentError(f"ingest has {len(k)} keys and {len(v)} values")
    if not len(k):
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(0)
        return done
    stored = stored_keys(client.partition_map.scheme, k)
    order = pc.sort_indices(stored)
    return _ingest_sorted(client, stored.take(order), v.take(order), acks)


def _ingest_sorted(client: "PartitionedClient", keys: pa.Array, values: pa.Array,
                   acks: int | None) -> concurrent.futures.Future:
    slices = cut(client._locator, keys)
    if len(slices) == 1 and len(keys) <= MAX_INGEST_ROWS:
        return _ingest_part(client, keys, values, acks)
    parts = {pid: (end - first, _ingest_slice(client, keys.slice(first, end - first),
                                             values.slice(first, end - first), acks))
             for pid, _, first, end in slices}
    return client._gather(parts, _count, lambda: sum(rows for rows, _ in parts.values()), "bulk load")


def _count(rows: int, value: Any) -> None:
    """A part's value needs no settling: the load's result is the rows of its parts."""


def _ingest_slice(client: "PartitionedClient", keys: pa.Array, values: pa.Array,
                  acks: int | None) -> concurrent.futures.Future:
    """One partition's rows: one ingest, or several when they pass one operation's bound."""
    if len(keys) <= MAX_INGEST_ROWS:
        return _ingest_part(client, keys, values, acks)
    chunks = {i: (None, _ingest_part(client, keys.slice(lo, MAX_INGEST_ROWS), values.slice(lo, MAX_INGEST_ROWS), acks))
              for i, lo in enumerate(range(0, len(keys), MAX_INGEST_ROWS))}
    return client._gather(chunks, _count, lambda: len(keys), "partition's bulk load")


def _ingest_part(client: "PartitionedClient", keys: pa.Array, values: pa.Array,
                 acks: int | None) -> concurrent.futures.Future:
    """One partition's slice (as routed now), sent again on a refusal, cut again if the map split it."""

    def attempt(loc: Locator) -> concurrent.futures.Future:
        slices = cut(loc, keys)
        if len(slices) > 1:
            return _ingest_sorted(client, keys, values, acks)
        group = slices[0][1]
        return client._group_client(group).submit_ops((ingest_op(keys, values),), acks=acks, single=True)

    return client._routed(attempt, finish=lambda got: len(keys) if got is None else got)
