"""Compaction policies: *which* files to merge next, leveled or size-tiered, behind one interface.

Theory of operation
-------------------
A policy looks at a :class:`~.manifest.Version` and returns a
:class:`CompactionJob` (inputs, output level, whether the output is the
bottommost data for its key range) or None; the tree runs the job (see
:mod:`.merge`) and installs the result. DDIA ch. 3 ("Compaction strategies"):

* :class:`LeveledPolicy` (LevelDB/RocksDB): level 0 holds flushed files that
  may overlap; when it has ``l0_compaction_trigger`` files they are all merged
  into level 1. Level ``L >= 1`` holds non-overlapping files and should stay
  under ``level_base_bytes * fanout ** (L - 1)``; the level most over its
  target (score = bytes / target) gives up the file whose overlap with level
  ``L + 1`` is smallest relative to its own size (RocksDB's
  ``kMinOverlappingRatio``), merged with those overlapping files. A file with
  no overlap below is moved down without rewriting it.
* :class:`TieredPolicy` (size-tiered, like RocksDB universal compaction):
  every flush adds a sorted run to level 0, newest first; a window of
  consecutive runs, each no larger than ``size_ratio`` times the window so far,
  is merged once it holds ``l0_compaction_trigger`` runs; with no such window,
  reaching ``l0_slowdown_trigger`` runs merges the newest ones anyway. Merging only
  consecutive runs keeps "a newer run holds newer versions" true.

Both report ``pressure_files`` (level-0 files or runs) for write backpressure
and offer :meth:`full` (every file into one bottommost run) for ``compact()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .manifest import Version
from .sstable import FileMeta

__all__ = ["CompactionJob", "CompactionPolicy", "LeveledPolicy", "TieredPolicy", "make_policy", "POLICIES"]


@dataclass(frozen=True)
class CompactionJob:
    """Merge ``inputs`` ``((level, meta), ...)`` into ``output_level``."""

    inputs: tuple
    output_level: int
    bottommost: bool
    target_file_bytes: int | None
    reason: str
    trivial_move: bool = False


def _key_range(files) -> tuple[bytes, bytes]:
    return min(f.smallest for f in files), max(f.largest for f in files)


def _nothing_below(version: Version, level: int, lo: bytes, hi: bytes) -> bool:
    return not any(version.overlapping(lv, lo, hi) for lv in range(level + 1, len(version.levels)))


class LeveledPolicy:
    """Leveled compaction: L0 by file count, deeper levels by size targets growing by ``fanout``."""

    name = "leveled"

    def __init__(self, *, l0_compaction_trigger: int, level_base_bytes: int, level_fanout: int,
                 num_levels: int, target_file_bytes: int, **_):
        self.l0_trigger = l0_compaction_trigger
        self.base_bytes = level_base_bytes
        self.fanout = level_fanout
        self.num_levels = num_levels
        self.target_file_bytes = target_file_bytes

    def target_bytes(self, level: int) -> int:
        """Size target of ``level`` (>= 1)."""
        return self.base_bytes * self.fanout ** (level - 1)

    def pressure_files(self, version: Version) -> int:
        """Files in level 0 (what write backpressure watches)."""
        return len(version.levels[0])

    def scores(self, version: Version) -> list[float]:
        """Compaction score per level (>= 1 means it needs compacting); the last level scores 0."""
        out = [len(version.levels[0]) / self.l0_trigger]
        for level in range(1, self.num_levels - 1):
            out.append(version.level_bytes(level) / self.target_bytes(level))
        return out + [0.0]

    def pick(self, version: Version) -> CompactionJob | None:
        """The most urgent job, or None."""
        scores = self.scores(version)
        level = max(range(len(scores)), key=lambda i: scores[i])
        if scores[level] < 1:
            return None
        if level == 0:
            l0 = version.levels[0]
            lo, hi = _key_range(l0)
            below = version.overlapping(1, lo, hi)
            lo, hi = _key_range(list(l0) + below)
            inputs = tuple((0, f) for f in l0) + tuple((1, f) for f in below)
            return CompactionJob(inputs, 1, _nothing_below(version, 1, lo, hi), self.target_file_bytes, "L0 files")
        best: tuple[float, FileMeta, list] | None = None
        for f in version.levels[level]:
            below = version.overlapping(level + 1, f.smallest, f.largest)
            ratio = sum(b.size for b in below) / max(1, f.size)
            if best is None or ratio < best[0]:
                best = (ratio, f, below)
        if best is None:  # not reached: a level scoring >= 1 holds files
            return None
        _, f, below = best
        if not below:
            return CompactionJob(((level, f),), level + 1, False, None, f"L{level} size", trivial_move=True)
        lo, hi = _key_range([f] + below)
        inputs = ((level, f),) + tuple((level + 1, b) for b in below)
        return CompactionJob(inputs, level + 1, _nothing_below(version, level + 1, lo, hi),
                             self.target_file_bytes, f"L{level} size")

    def full(self, version: Version) -> CompactionJob | None:
        """Every file merged into the deepest non-empty level (at least 1)."""
        files = version.files()
        if not files:
            return None
        out = max(1, max(level for level, _ in files))
        return CompactionJob(tuple(files), out, True, self.target_file_bytes, "full")

    def ingest_level(self, version: Version, lo: bytes, hi: bytes) -> int:
        """The deepest level a bulk load of ``[lo, hi]`` can go to with nothing overlapping above it."""
        if version.overlapping(0, lo, hi):
            return 0
        level = 0
        for lv in range(1, self.num_levels):
            if version.overlapping(lv, lo, hi):
                break
            level = lv
        return level


class TieredPolicy:
    """Size-tiered compaction: merge windows of similar-sized consecutive runs."""

    name = "tiered"

    def __init__(self, *, l0_compaction_trigger: int, size_ratio: float, max_runs: int, **_):
        self.min_width = max(2, l0_compaction_trigger)
        self.size_ratio = size_ratio
        self.max_runs = max(self.min_width, max_runs)  # writes slow down beyond this: merge anyway

    def pressure_files(self, version: Version) -> int:
        """Number of sorted runs."""
        return len(version.levels[0])

    def pick(self, version: Version) -> CompactionJob | None:
        """The newest window of at least ``min_width`` similar-sized runs, or None."""
        runs = version.levels[0]
        for start in range(len(runs)):
            total, end = runs[start].size, start + 1
            while end < len(runs) and runs[end].size <= total * self.size_ratio:
                total += runs[end].size
                end += 1
            if end - start >= self.min_width:
                return self._job(runs, start, end, "similar sizes")
        if len(runs) >= self.max_runs:  # sizes too uneven for a window: bound the run count anyway
            return self._job(runs, 0, len(runs) - self.min_width + 2, "run count")
        return None

    def _job(self, runs, start: int, end: int, reason: str) -> CompactionJob:
        return CompactionJob(tuple((0, f) for f in runs[start:end]), 0, end == len(runs), None, reason)

    def full(self, version: Version) -> CompactionJob | None:
        """Every run merged into one."""
        files = version.files()
        if not files:
            return None
        return CompactionJob(tuple(files), 0, True, None, "full")

    def ingest_level(self, version: Version, lo: bytes, hi: bytes) -> int:
        """Bulk loads become the newest run."""
        return 0


#: What :func:`make_policy` returns: both policies answer the same questions.
CompactionPolicy = Union[LeveledPolicy, TieredPolicy]
POLICIES: dict[str, type[CompactionPolicy]] = {"leveled": LeveledPolicy, "tiered": TieredPolicy}


def make_policy(name: str, **options) -> CompactionPolicy:
    """The policy called ``name`` configured from the tree's options."""
    return POLICIES[name](**options)
