"""Range tombstones, fragmented so "is this key deleted?" is one binary search.

Theory of operation
-------------------
``delete_range(s, e)`` at sequence number ``q`` writes one range tombstone
``[s, e)@q``: every version of a key in the range with a sequence number
below ``q`` is deleted for readers at ``q`` or later. Tombstones may overlap
arbitrarily, so sorting them by start (or end) does not let a reader find the
covering one. As RocksDB's DeleteRange does, :class:`TombstoneIndex` cuts the
key space at every start and end into disjoint *fragments*; each fragment
keeps the ascending sequence numbers of the tombstones covering it. A reader
at snapshot ``S`` asks :meth:`TombstoneIndex.cover` for the highest covering
sequence number ``<= S`` (two bisections); a version ``v`` of the key is
deleted iff that number is greater than ``v.seq``.
"""

from __future__ import annotations

import bisect
from typing import Iterable

__all__ = ["RangeTombstone", "TombstoneIndex"]

#: ``(start, end, seq)``: keys in ``[start, end)`` older than ``seq`` are deleted.
RangeTombstone = tuple


class TombstoneIndex:
    """An immutable, fragmented index of range tombstones."""

    __slots__ = ("_bounds", "_seqs", "tombstones")

    def __init__(self, tombstones: Iterable[RangeTombstone] = ()):
        self.tombstones = tuple((s, e, q) for s, e, q in tombstones if s < e)
        bounds = sorted({b for s, e, _ in self.tombstones for b in (s, e)})
        seqs: list[list[int]] = [[] for _ in range(max(0, len(bounds) - 1))]
        for s, e, q in self.tombstones:
            for i in range(bisect.bisect_left(bounds, s), bisect.bisect_left(bounds, e)):
                seqs[i].append(q)
        self._bounds = bounds
        self._seqs = [sorted(x) for x in seqs]

    def __bool__(self) -> bool:
        return bool(self.tombstones)

    def cover(self, key: bytes, snapshot_seq: int) -> int:
        """The highest sequence number ``<= snapshot_seq`` of a tombstone covering ``key`` (0: none)."""
        i = bisect.bisect_right(self._bounds, key) - 1
        if i < 0 or i >= len(self._seqs):
            return 0
        seqs = self._seqs[i]
        j = bisect.bisect_right(seqs, snapshot_seq)
        return seqs[j - 1] if j else 0

    def visible(self, snapshot_seq: int) -> list:
        """The tombstones a reader at ``snapshot_seq`` sees."""
        return [t for t in self.tombstones if t[2] <= snapshot_seq]
