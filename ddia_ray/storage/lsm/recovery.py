"""Opening a database directory: pick the manifest, check the files, collect garbage, replay WALs.

Theory of operation
-------------------
1. List the directory. The current state is the newest manifest that reads
   back whole (see :mod:`.manifest` for torn versus corrupt). No manifest at
   all: an empty (or missing) directory becomes a new database when
   ``create_if_missing``; a directory holding other files is
   :class:`NotADatabaseError`.
2. Load the sidecar of every live SSTable (Bloom filters, row-group index,
   range tombstones); a missing or damaged sidecar is :class:`CorruptionError`.
3. Garbage: SSTables no manifest names (a flush or compaction that crashed
   before its commit), WALs below the manifest's ``log_number`` (already
   flushed), older and torn manifests. Only names this engine writes are
   touched, and one already gone (a stale S3 listing) is no error.
4. Replay every WAL from ``log_number`` on, in order, into a fresh memtable;
   the WALs stay until that memtable is flushed (the tree keeps their object
   names and deletes them by name: this listing is the engine's only one). A
   new WAL takes new writes.
"""

from __future__ import annotations

import re

from ...errors import ConfigError, CorruptionError, NotADatabaseError, StorageError
from .manifest import ENGINE_NAME, MANIFEST_RE, ManifestRecord, Version, manifest_name
from .memtable import Memtable
from .sstable import sst_name
from .wal import open_wal, read_wal, wal_objects

__all__ = ["recover"]

_TABLE_RE = re.compile(r"^(\d{6,})\.(parquet|sstmeta)$")
_WAL_RE = re.compile(r"^(\d{6,})\.log(\.\d+)?$")
_LISTING_ATTEMPTS = 5


def _listing(fs, directory: str) -> list[str]:
    """The names in ``directory``, sorted; ``[]`` when it does not exist.

    The only listing the engine makes: at open, before its own threads start. ``memory://``
    raises ``KeyError`` when a file vanishes while it lists (say a closed tree's last deletion),
    so the listing is retried; it is the directory's state at some instant either way.
    """
    attempts = 0
    while True:
        fs.invalidate_cache(directory)  # object stores cache listings; we need the truth
        try:
            if not fs.isdir(directory):
                if fs.exists(directory):
                    raise NotADatabaseError(f"{directory} is a file, not a database directory")
                return []
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False))
        except FileNotFoundError:
            return []
        except KeyError as e:
            attempts += 1
            if attempts >= _LISTING_ATTEMPTS:
                raise StorageError(f"{directory} kept changing while it was listed: {e!r}") from e


def recover(tree) -> None:
    """Fill ``tree``'s version, tables, memtable, WAL and counters from its directory."""
    fs, d, opts = tree._fs, tree._dir, tree._opts
    listing = _listing(fs, d)
    rec, torn = tree._manifests.load_current(listing)
    if rec is None:
        others = [n for n in listing if not MANIFEST_RE.match(n)]
        if others:
            raise NotADatabaseError(f"{tree.url} holds {len(others)} files but no LSM manifest "
                                    f"(e.g. {others[0]!r}): not a database of this engine")
        if not opts.create_if_missing:
            raise NotADatabaseError(f"no database at {tree.url} (create_if_missing=False)")
        fs.makedirs(d, exist_ok=True)
        rec = ManifestRecord(ENGINE_NAME, max(torn, default=0) + 1, 0, 1, 1, opts.compaction,
                             ((),) * opts.num_levels)
        tree._manifests.write(rec)
        tree._delete_paths(f"{d}/{manifest_name(n)}" for n in torn)  # gone already (stale listing): fine
        listing = [manifest_name(rec.number)]
    else:
        if opts.error_if_exists:
            raise ConfigError(f"a database already exists at {tree.url} (error_if_exists=True)")
        if rec.compaction != opts.compaction:
            raise ConfigError(f"the database at {tree.url} uses compaction={rec.compaction!r}; "
                              f"open it with that policy")
        if any(rec.levels[opts.num_levels:]):
            raise ConfigError(f"the database has {len(rec.levels)} levels; num_levels={opts.num_levels} is too few")
    levels = (list(rec.levels) + [()] * opts.num_levels)[:opts.num_levels]
    version = Version(levels)
    present = set(listing)
    for _, f in version.files():
        if sst_name(f.number) not in present:
            raise CorruptionError("a live SSTable is missing", f"{d}/{sst_name(f.number)}")
    tree._tables = {f.number: tree._open_table(f) for _, f in version.files()}

    garbage, wal_numbers, highest = [], set(), rec.next_file - 1
    for name in listing:
        if (m := MANIFEST_RE.match(name)) is not None:
            if int(m.group(1)) != rec.number:
                garbage.append(name)
        elif (m := _TABLE_RE.match(name)) is not None:
            n = int(m.group(1))
            highest = max(highest, n)
            if n not in version.numbers:
                garbage.append(name)
        elif (m := _WAL_RE.match(name)) is not None:
            n = int(m.group(1))
            highest = max(highest, n)
            if n < rec.log_number:
                garbage.append(name)
            else:
                wal_numbers.add(n)
    tree._delete_paths(f"{d}/{name}" for name in garbage)

    mem = Memtable(min(wal_numbers, default=0))
    last_seq, skipped = rec.last_seq, 0
    for n in sorted(wal_numbers):
        # read_wal checks each batch's shape (wal._decode_batch): what comes out is safe to apply.
        for first_seq, ops, lost in read_wal(fs, d, n, listing, skip=opts.wal_recovery == "skip"):
            skipped += lost
            if ops:
                last_seq = max(last_seq, mem.apply(first_seq, ops))
    tree._version = version
    tree._manifest_number = rec.number
    tree._log_number = rec.log_number
    tree._last_seq = last_seq
    tree._next_file = max(rec.next_file, highest + 1)
    wal_number = tree._new_file_number()
    if not wal_numbers:
        mem = Memtable(wal_number)
    tree._mem = mem
    tree._wal_files = {n: wal_objects(d, n, listing) for n in wal_numbers}  # deleted by name once flushed
    tree._wal = open_wal(fs, d, wal_number, opts)
    tree._flushed_seq = last_seq  # what recovery found is in SSTables or in WALs kept until flushed
    tree._counters["wal_skipped_records"] += skipped
    tree._counters["wal_replayed_entries"] += len(mem)
