"""Checkpoints of the B-tree: copy the page file as of one pinned commit, while writes go on.

Theory of operation
-------------------
bbolt's ``Tx.WriteTo``, on this engine's page file. A copy of the file is consistent
without stopping the writer because of copy-on-write: a committed page is never
overwritten while a snapshot reads its tree (:mod:`.pagefile`). So:

1. Under the engine lock (one short critical section): take a snapshot of the
   current commit ``N`` (this pins its pages, and its page file if a compaction
   swaps in a new one), note its ``page_count``, and take the few pages the pin does
   *not* protect (:meth:`~.pagefile.PageFile.commit_pages`): both meta pages, each
   rewritten to hold commit ``N``, and commit ``N``'s free-list pages.
2. Copy pages ``2 .. page_count - 1`` of the pinned file in chunks of
   :data:`~ddia_ray.storage.checkpoints.COPY_CHUNK_BYTES`, each chunk read under the
   engine lock (``memory://`` files have one file position for every user, and
   ``close()`` must not release the file mid-read); writes go on between chunks.
   Pages of tree ``N`` read back exactly as committed. Any other page is free in
   commit ``N``'s free list and may hold whatever a later commit put there: the copy
   never reads a free page before writing it. The captured pages replace theirs.
3. Write the destination's ``data.btree`` in page order, then the checkpoint
   descriptor; release the snapshot.

Opening the copy verifies commit ``N`` as it verifies any commit: its meta record,
every page it wrote and their digest. The copy is never hard-linked, even on the
same disk: a page file is updated in place, so both names would see one file change.

Cost: the copy reads and writes ``page_count * page_size`` bytes (free pages
included: ``compact()`` first to shrink it); writers wait at most one chunk's read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from ...errors import CorruptionError, DatabaseClosedError
from .. import checkpoints as _checkpoints
from ..checkpoints import CheckpointWriter
from ._backend import DATA_FILE

if TYPE_CHECKING:
    from .engine import BTreeEngine, BTreeSnapshot

__all__ = ["checkpoint_engine", "ENGINE_NAME"]

#: The engine name a B-tree checkpoint's descriptor records.
ENGINE_NAME = "btree"


def checkpoint_engine(engine: BTreeEngine, dst_url: str, storage_options: dict | None = None) -> dict:
    """What :meth:`BTreeEngine.checkpoint` does (see the module docstring)."""
    with CheckpointWriter(dst_url, storage_options) as out:  # refuses a non-empty destination first
        with engine._lock:  # step 1: one short critical section
            snap = engine.snapshot()
            try:
                pf = snap._gen.pf
                captured = pf.commit_pages()
                page_size, page_count = pf.page_size, pf.meta.page_count
            except BaseException:
                snap.release()
                raise
        try:
            out.write_chunks(DATA_FILE, _pages(engine, snap, captured, page_size, page_count),
                             page_count * page_size)
            summary = out.finish(ENGINE_NAME, snap.seq)
        finally:
            snap.release()
    return summary


def _pages(engine: BTreeEngine, snap: BTreeSnapshot, captured: dict[int, bytes], page_size: int,
           page_count: int) -> Iterator[bytes]:
    """The copy's bytes in page order (step 2 of the module docstring)."""
    yield captured[0] + captured[1]
    per_chunk = max(1, _checkpoints.COPY_CHUNK_BYTES // page_size)
    for first in range(2, page_count, per_chunk):
        n = min(per_chunk, page_count - first)
        chunk = bytearray(_read_pinned(engine, snap, first * page_size, n * page_size))
        for page in range(first, first + n):
            if page in captured:
                chunk[(page - first) * page_size:(page - first + 1) * page_size] = captured[page]
        yield bytes(chunk)


def _read_pinned(engine: BTreeEngine, snap: BTreeSnapshot, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of the snapshot's page file, read under the engine lock."""
    with engine._lock:
        if snap.released:  # close() released it and closed the file: its descriptor may be reused
            raise DatabaseClosedError("the database was closed during the checkpoint")
        data = snap._gen.pf.backend.read(offset, length)
    if len(data) != length:
        raise CorruptionError(f"the page file ends before the pinned commit's {offset + length} bytes",
                              snap._gen.pf.path)
    return data
