"""Checkpoints of the LSM-tree: pin a version, copy its immutable files, write a manifest naming exactly them.

Theory of operation
-------------------
RocksDB's Checkpoint, on a tree whose files never change once written:

1. :meth:`LSMTree.flush`: the memtable's writes go to an SSTable while writers carry on
   into the next memtable. This is the bulk of the flushing, and it blocks nobody.
2. As head of the write queue (writers wait, as they do for an ingest), flush what arrived
   during step 1 and, with every memtable empty, pin the current version and read
   ``last_seq``: that is the *cut*. Sequence numbers are handed out in order and flushes
   complete in order, so the pinned version holds every write up to the cut, none after
   it, and the copy needs no WAL. Writers go on as soon as the pin is taken.
3. Copy the pinned version's SSTables and their ``.sstmeta`` sidecars. A compaction may
   drop them from the current version meanwhile, but a file stays on disk while any
   pinned version names it (``_collect_obsolete``), exactly as for a snapshot.
4. Write ``MANIFEST-000001`` naming exactly those files, with ``last_seq`` = the cut and
   ``log_number`` = ``next_file`` (no WAL to replay), then the checkpoint's descriptor
   (:mod:`ddia_ray.storage.checkpoints`); unpin. Opening the directory replays nothing
   and reads the copied files as they are.

Cost: writers wait only for step 2 (a flush of the writes that arrived during step 1),
and the copy is one read and one write of the live SSTables (a hard link each when source
and destination are on the same local disk), plus a CRC-32 read for the descriptor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._validate import invariant
from ..checkpoints import CheckpointWriter
from .manifest import ENGINE_NAME, ManifestRecord, Version, manifest_bytes, manifest_name
from .sstable import meta_name, sst_name

if TYPE_CHECKING:
    from .tree import LSMTree

__all__ = ["checkpoint_tree"]


def _cut(tree: LSMTree) -> tuple[Version, int, int]:
    """Steps 1 and 2: ``(pinned version, last sequence number it holds, next file number)``."""
    tree.flush()
    cut: list[tuple[Version, int, int]] = []

    def pin() -> None:  # as head of the write queue, memtables flushed (see LSMTree._commit)
        with tree._mutex:
            invariant(not tree._imms and not len(tree._mem), "a checkpoint's cut needs flushed memtables")
            cut.append((tree._pin_locked(), tree._last_seq, tree._next_file))

    tree._commit((), exclusive=pin)
    return cut[0]


def checkpoint_tree(tree: LSMTree, dst_url: str, storage_options: dict | None = None) -> dict:
    """What :meth:`LSMTree.checkpoint` does (see the module docstring)."""
    # The writer refuses a non-empty destination before anything is flushed.
    with CheckpointWriter(dst_url, storage_options) as out:
        version, seq, next_file = _cut(tree)
        try:
            for _, f in version.files():
                for name, size in ((sst_name(f.number), f.size), (meta_name(f.number), f.meta_size)):
                    # A hard link is safe: an SSTable and its sidecar are written whole before any
                    # manifest names them and never modified afterwards; both trees only ever delete
                    # them by name, and deleting one name leaves the other's file intact.
                    out.copy_file(tree._fs, f"{tree._dir}/{name}", name, size, link=True)
            rec = ManifestRecord(ENGINE_NAME, 1, seq, next_file, next_file, tree._opts.compaction, version.levels)
            data = manifest_bytes(rec)
            out.write_chunks(manifest_name(rec.number), [data], len(data))  # the commit point of the copy
            summary = out.finish(ENGINE_NAME, seq)
        finally:
            tree._unpin(version)
    tree._count("checkpoints")
    tree._count("checkpoint_bytes", summary["bytes"])
    return summary
