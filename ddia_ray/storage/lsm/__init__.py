"""The LSM-tree storage engine (DDIA ch. 3): WAL, memtable, Parquet SSTables, leveled or tiered compaction.

``LSMTree.open(url, **options)`` or ``open_engine(url, engine="lsm", **options)``;
the tree implements :class:`ddia_ray.storage.engine.StorageEngine` plus
``get_many``, ``ingest`` and ``stats``. Module map: :mod:`.wal` (log and group
commit framing), :mod:`.memtable`, :mod:`.bloom`, :mod:`.sstable` (format,
writer, reader), :mod:`.cache`, :mod:`.manifest` (versions), :mod:`.compaction`
(policies), :mod:`.merge` (merging runs), :mod:`.jobs` (flush, compaction,
ingest), :mod:`.recovery` (open), :mod:`.tree` (the engine).
"""

from __future__ import annotations

from ..engine import register_engine
from .options import LSMOptions
from .tree import LSMSnapshot, LSMTree

__all__ = ["LSMTree", "LSMSnapshot", "LSMOptions"]

register_engine("lsm", LSMTree.open)
