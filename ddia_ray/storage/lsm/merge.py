"""Merging sorted runs for compaction: vectorised with pyarrow, snapshot-aware garbage collection.

Theory of operation
-------------------
A compaction reads its input SSTables whole, concatenates them and sorts the
rows by ``(key asc, seq desc)`` with one Arrow sort (measured several times
faster in this engine than a Python heap merge over rows, which costs a few
microseconds per row). Which versions may then be dropped depends on the live
snapshots ``s1 < s2 < ...``: they cut sequence numbers into *stripes*
(``stripe(q)`` = number of snapshots below ``q``); two versions in the same
stripe are seen by exactly the same readers, so only the newest one per key
and stripe is kept (RocksDB's rule). Then:

* a range tombstone ``[s, e)@q`` removes the versions it covers *in its own
  stripe* (older stripes still serve snapshots that predate it);
* at the bottommost level (nothing older below this key range), a point
  tombstone that is the oldest surviving version of its key hides nothing and
  is dropped (repeatedly), and a range tombstone covering no surviving row is
  dropped.

:func:`split_outputs` cuts the result into files of about
``target_file_bytes`` at key boundaries (never between versions of one key)
and *fragments* range tombstones at the cuts, so files of one level never
overlap and a tombstone never reaches past its file's last key.
"""

from __future__ import annotations

import bisect

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .memtable import DELETE, RANGE_DELETE, SCHEMA, sort_rows

__all__ = ["sort_rows", "merge_runs", "split_outputs"]

_ROW_OVERHEAD_BYTES = 13  # seq + op + offsets, roughly, per row


def _stripes(seqs: pa.Array, snapshots: list[int]):
    stripe = None
    for s in snapshots:
        above = pc.cast(pc.greater(seqs, s), pa.uint32())
        stripe = above if stripe is None else pc.add(stripe, above)
    return stripe


def _boundary_mask(keys: pa.Array, stripe) -> pa.Array:
    """True where a row starts a new (key, stripe) group."""
    n = len(keys)
    if n <= 1:
        return pa.array([True] * n, pa.bool_())
    change = pc.not_equal(keys.slice(1), keys.slice(0, n - 1))
    if stripe is not None:
        change = pc.or_(change, pc.not_equal(stripe.slice(1), stripe.slice(0, n - 1)))
    return pa.concat_arrays([pa.array([True]), change])


def merge_runs(tables: list[pa.Table], snapshots: list[int], bottommost: bool,
               pool: pa.MemoryPool | None = None) -> pa.Table:
    """Merge sorted runs into one sorted run, dropping what no reader can see.

    ``pool`` serves the row-sized buffers (the concatenation, the sort, the filters).
    """
    table = pa.concat_tables([t.select(SCHEMA.names).cast(SCHEMA) for t in tables], memory_pool=pool)
    table = table.combine_chunks(memory_pool=pool)
    if table.num_rows == 0:
        return table
    table = sort_rows(table, pool)
    snapshots = sorted(set(snapshots))
    is_range = pc.equal(table.column("op"), RANGE_DELETE)
    ranges = table.filter(is_range)
    points = pc.filter(table, pc.invert(is_range), memory_pool=pool).combine_chunks(memory_pool=pool)
    keys = points.column("key").combine_chunks()
    seqs = points.column("seq").combine_chunks()
    stripe = _stripes(seqs, snapshots)
    keep = _boundary_mask(keys, stripe)
    tombstones = list(zip(ranges.column("key").to_pylist(), ranges.column("value").to_pylist(),
                          ranges.column("seq").to_pylist()))
    for s, e, q in tombstones:
        covered = pc.and_(pc.and_(pc.greater_equal(keys, pa.scalar(s, pa.binary())),
                                  pc.less(keys, pa.scalar(e, pa.binary()))), pc.less(seqs, q))
        if stripe is not None:
            covered = pc.and_(covered, pc.equal(stripe, bisect.bisect_left(snapshots, q)))
        keep = pc.and_(keep, pc.invert(covered))
    points = pc.filter(points, keep, memory_pool=pool)
    if bottommost:
        points = _drop_bottom_tombstones(points)
        live = []
        pkeys, pseqs = points.column("key"), points.column("seq")
        for s, e, q in tombstones:
            hit = pc.and_(pc.and_(pc.greater_equal(pkeys, pa.scalar(s, pa.binary())),
                                  pc.less(pkeys, pa.scalar(e, pa.binary()))), pc.less(pseqs, q))
            if pc.any(hit).as_py():
                live.append((s, e, q))
        if len(live) != len(tombstones):
            ranges = _range_rows(live)
    if ranges.num_rows:
        return sort_rows(pa.concat_tables([points, ranges]).combine_chunks(), pool)
    return points


def _drop_bottom_tombstones(points: pa.Table) -> pa.Table:
    """Repeatedly drop point tombstones that are the oldest remaining version of their key."""
    while points.num_rows:
        keys = points.column("key").combine_chunks()
        n = len(keys)
        last = pa.concat_arrays([pc.not_equal(keys.slice(0, n - 1), keys.slice(1)), pa.array([True])]) \
            if n > 1 else pa.array([True])
        drop = pc.and_(last, pc.equal(points.column("op"), DELETE))
        if not pc.any(drop).as_py():
            break
        points = points.filter(pc.invert(drop))
    return points


def _range_rows(tombstones: list) -> pa.Table:
    s = [t[0] for t in tombstones]
    return pa.table([pa.array(s, pa.binary()), pa.array([t[2] for t in tombstones], pa.uint64()),
                     pa.array([RANGE_DELETE] * len(s), pa.uint8()),
                     pa.array([t[1] for t in tombstones], pa.binary())], schema=SCHEMA)


def split_outputs(table: pa.Table, target_file_bytes: int | None) -> list[pa.Table]:
    """Cut a sorted run into files of about ``target_file_bytes``; fragments range tombstones at cuts."""
    if table.num_rows == 0:
        return []
    is_range = pc.equal(table.column("op"), RANGE_DELETE)
    if target_file_bytes is None or not pc.any(pc.invert(is_range)).as_py():
        return [table]
    has_ranges = pc.any(is_range).as_py()
    points = table.filter(pc.invert(is_range)) if has_ranges else table
    keys = points.column("key")
    # Sizes straight from the columns' offsets (no copy of the values): cut points by running total.
    sizes = pc.add(pc.add(pc.binary_length(keys), pc.binary_length(points.column("value"))), _ROW_OVERHEAD_BYTES)
    total = np.cumsum(pc.cast(sizes, pa.int64()).to_numpy())
    n = points.num_rows
    cuts = [0]
    goal = target_file_bytes
    while True:
        i = int(np.searchsorted(total, goal, side="left"))
        if i >= n - 1:
            break
        i = past_versions(keys, i + 1)
        if i >= n:
            break
        cuts.append(i)
        goal = int(total[i - 1]) + target_file_bytes
    cuts.append(n)
    pieces = [points.slice(a, b - a) for a, b in zip(cuts, cuts[1:])]
    if not has_ranges:
        return pieces
    bounds = [None] + [keys[c].as_py() for c in cuts[1:-1]] + [None]
    ranges = table.filter(is_range)
    rts = list(zip(ranges.column("key").to_pylist(), ranges.column("value").to_pylist(),
                   ranges.column("seq").to_pylist()))
    out = []
    for j, piece in enumerate(pieces):
        lo, hi = bounds[j], bounds[j + 1]
        frags = []
        for s, e, q in rts:
            fs = s if lo is None else max(s, lo)
            fe = e if hi is None else min(e, hi)
            if fs < fe:
                frags.append((fs, fe, q))
        out.append(sort_rows(pa.concat_tables([piece, _range_rows(frags)]).combine_chunks()) if frags else piece)
    return out


def past_versions(keys, i: int) -> int:
    """``i``, or if row ``i`` holds the same key as row ``i - 1``, the first row after that key's versions.

    ``keys`` is a sorted binary Arrow (chunked) array; a cut there never splits one key's
    versions. Found by bisection, converting only the keys it probes.
    """
    view = _ScalarView(keys)
    n = len(view)
    if 0 < i < n and view[i] == view[i - 1]:
        return bisect.bisect_right(view, view[i - 1], i, n)
    return i


class _ScalarView:
    """Python values of an Arrow array by index, for :mod:`bisect` (converts only what is probed)."""

    __slots__ = ("_a",)

    def __init__(self, array):
        self._a = array

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, i: int):
        return self._a[i].as_py()
