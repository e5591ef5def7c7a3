"""The LSM-tree storage engine (DDIA ch. 3): WAL, memtable, Parquet SSTables, leveled or tiered compaction.

``LSMTree.open(url, **options)`` or ``open_engine(url, engine="lsm", **options)``;
the tree implements :class:`ddia_ray.storage.engine.StorageEngine` plus
``get_many``, ``ingest``, ``scan_batches`` (Arrow) and ``stats``. Module map:
:mod:`.wal` (log and group commit; its frames are :mod:`ddia_ray.framing`'s),
:mod:`.memtable`, :mod:`.bloom`, :mod:`.sstable` (format, writer, reader),
:mod:`.point_index` (point lookups in a cached row group), :mod:`.rowgroup`,
:mod:`.cache`, :mod:`.manifest` (versions), :mod:`.compaction` (policies),
:mod:`.merge` (merging runs), :mod:`.iterator` (scans, as rows or Arrow batches),
:mod:`.jobs` (flush, compaction, ingest), :mod:`.recovery` (open), :mod:`.checkpoint`
(consistent copies of the files), :mod:`.locks` (the lock order and its checker), :mod:`.tree`
(the engine).
"""

from __future__ import annotations

from ..engine import register_engine
from .options import LSMOptions
from .tree import LSMSnapshot, LSMTree

__all__ = ["LSMTree", "LSMSnapshot", "LSMOptions"]

register_engine("lsm", LSMTree.open)
