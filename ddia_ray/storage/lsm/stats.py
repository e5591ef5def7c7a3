"""Statistics of an LSM-tree: counters, amplification figures and the shape of the tree.

Theory of operation: the tree counts bytes and events as they happen (under a
small stats lock); :func:`build_stats` derives the amplification figures from
a consistent copy:

* write amplification = bytes written to storage (WAL, flushed and compacted
  and ingested SSTables with their sidecars, manifests) / bytes the user wrote
  (keys plus values);
* read amplification = SSTables probed per ``get`` (key range matched, so the
  Bloom filter was consulted; ``bloom_negatives`` of them were skipped);
* space amplification = live SSTable bytes (with sidecars) / an estimate of the
  live logical bytes: the logical (key + value) bytes of the last level
  (leveled) or oldest run (tiered), RocksDB's estimate; it is exact right after
  ``compact()``. ``exact_live_bytes(tree)`` scans for the true figure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_stats", "exact_live_bytes"]


def exact_live_bytes(tree) -> int:
    """Sum of ``len(key) + len(value)`` over every live pair (a full scan)."""
    return sum(len(k) + len(v) for k, v in tree.scan())


def build_stats(tree) -> dict[str, Any]:
    """A fresh dict of every statistic (the tree wraps it read-only)."""
    with tree._mutex:
        tree._drain_deferred()
        version = tree._version
        mem_bytes = tree._mem.approx_bytes
        imm_count = len(tree._imms)
        wal_now = tree._wal.bytes_written
        last_seq = tree._last_seq
        snapshots = sum(tree._snapshot_seqs.values())
        pinned = len(tree._pinned)
        pending = len(tree._pending_delete)
        queued = len(tree._writers)
        reads, writes = tuple(tree._read_tally), tuple(tree._write_tally)
    with tree._stats_lock:
        c = dict(tree._counters)
    for name, n in zip(("gets", "sst_probes", "bloom_negatives", "user_bytes", "batches", "group_commits"),
                       reads + writes):
        c[name] = c.get(name, 0) + n
    c["wal_bytes"] = c.get("wal_bytes", 0) + wal_now
    levels = tuple((len(files), sum(f.size + f.meta_size for f in files)) for files in version.levels)
    disk = sum(b for _, b in levels)
    user = c.get("user_bytes", 0)
    written = sum(c.get(k, 0) for k in ("wal_bytes", "flush_bytes", "compaction_bytes_written",
                                        "ingest_bytes", "manifest_bytes"))
    nonempty = [files for files in version.levels if files]
    if tree._opts.compaction == "tiered" and version.levels[0]:
        bottom = [version.levels[0][-1]]
    else:
        bottom = nonempty[-1] if nonempty else []
    live_estimate = sum(f.logical_bytes for f in bottom)
    gets = c.get("gets", 0)
    out = {
        "engine": "lsm",
        "compaction": tree._opts.compaction,
        "seq": last_seq,
        "levels": levels,
        "level_files": tuple(n for n, _ in levels),
        "level_bytes": tuple(b for _, b in levels),
        "memtable_bytes": mem_bytes,
        "immutable_memtables": imm_count,
        "live_snapshots": snapshots,
        "pinned_versions": pinned,
        "files_awaiting_deletion": pending,
        "write_queue": queued,
        "disk_bytes": disk,
        "bytes_written": written,
        "write_amplification": written / user if user else 0.0,
        "read_amplification": c.get("sst_probes", 0) / gets if gets else 0.0,
        "space_amplification": disk / live_estimate if live_estimate else 0.0,
        "row_cache_hits": tree._row_cache.hits,
        "row_cache_misses": tree._row_cache.misses,
        "row_cache_bytes": tree._row_cache.charge,
        "open_files": len(tree._file_cache),
    }
    for key in ("user_bytes", "wal_bytes", "flush_bytes", "compaction_bytes_read", "compaction_bytes_written",
                "ingest_bytes", "manifest_bytes", "gets", "sst_probes", "bloom_negatives", "scans",
                "arrow_merged_scans", "batches", "group_commits", "flushes", "compactions", "compactions_deferred",
                "trivial_moves", "files_deleted",
                "slowdowns", "gil_handoffs", "stalls", "stall_time_s", "wal_skipped_records", "wal_replayed_entries",
                "checkpoints", "checkpoint_bytes"):
        out.setdefault(key, c.get(key, 0))
    return out
