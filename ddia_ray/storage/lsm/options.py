"""Options of an LSM-tree, validated when they are built.

Theory of operation: every knob is a field of the frozen :class:`LSMOptions`
with its unit in the name. Building one refuses out-of-range or inconsistent
values with :class:`ConfigError` (wrong types: :class:`InvalidArgumentError`);
:func:`parse_options` also refuses unknown names, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from ..._validate import at_least, integer, non_negative, positive
from ...errors import ConfigError, InvalidArgumentError

__all__ = ["LSMOptions", "parse_options", "arrow_pool"]

_MiB = 1 << 20


@dataclass(frozen=True)
class LSMOptions:
    """Every tunable of :class:`~.tree.LSMTree`; checked when built (``LSMOptions(memtable_bytes=-1)`` raises)."""

    create_if_missing: bool = True
    error_if_exists: bool = False
    compaction: str = "leveled"            # "leveled" | "tiered"
    sync: str = "none"                     # "none" | "batch" | "flush"
    wal_recovery: str = "error"            # "error" | "skip"
    wal: bool = True                       # False: no WAL (the owner replays its own log; see durable_seq)
    memtable_bytes: int = 64 * _MiB            # RocksDB's write_buffer_size default
    max_immutable_memtables: int = 2
    row_group_rows: int = 4096
    bloom_bits_per_key: float = 10.0
    target_file_bytes: int = 16 * _MiB
    l0_compaction_trigger: int = 4
    l0_slowdown_trigger: int = 12
    l0_stop_trigger: int = 20
    bulk_window_s: float = 0.0             # > 0: after an ingest, level 0 waits this long to compact...
    bulk_l0_files: int | None = None       # ...unless it holds this many files (None: bulk_l0_limit's default)
    level_base_bytes: int = 64 * _MiB
    level_fanout: int = 10
    num_levels: int = 7
    tiered_size_ratio: float = 2.0
    stall_timeout_s: float = 30.0
    slowdown_sleep_s: float = 0.001
    row_cache_bytes: int = 128 * _MiB
    max_open_files: int = 512
    compression: str = "lz4"
    memory_pool: str = "system"            # Arrow pool of flushes, compactions, ingests
    wal_segment_bytes: int = 1 * _MiB
    background: bool = True
    storage_options: dict | None = None
    filesystem: Any = None
    clock: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)

    def __post_init__(self):
        _check(self)


_CHOICES = {
    "compaction": ("leveled", "tiered"),
    "sync": ("none", "batch", "flush"),
    "wal_recovery": ("error", "skip"),
    "compression": ("none", "snappy", "lz4", "zstd", "gzip", "brotli"),
    "memory_pool": ("system", "jemalloc", "mimalloc", "default"),
}
_POSITIVE_INTS = ("memtable_bytes", "max_immutable_memtables", "row_group_rows", "target_file_bytes",
                  "l0_compaction_trigger", "level_base_bytes", "max_open_files", "wal_segment_bytes")


def parse_options(**kwargs) -> LSMOptions:
    """Validated options from keyword arguments; unknown names raise :class:`ConfigError`."""
    known = {f.name for f in fields(LSMOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown LSM option(s) {unknown}; known: {sorted(known)}")
    return LSMOptions(**kwargs)


def _check(opts: LSMOptions) -> None:
    """Refuse out-of-range, inconsistent or wrongly typed values (run by ``LSMOptions.__post_init__``)."""
    for name, choices in _CHOICES.items():
        if getattr(opts, name) not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {getattr(opts, name)!r}")
    for name in ("create_if_missing", "error_if_exists", "background", "wal"):
        if not isinstance(getattr(opts, name), bool):
            raise InvalidArgumentError(f"{name} must be a bool")
    for name in _POSITIVE_INTS:
        positive(name, integer(name, getattr(opts, name)))
    integer("row_cache_bytes", opts.row_cache_bytes)
    non_negative("row_cache_bytes", opts.row_cache_bytes)
    at_least("level_fanout", integer("level_fanout", opts.level_fanout), 2)
    at_least("num_levels", integer("num_levels", opts.num_levels), 2)
    at_least("tiered_size_ratio", opts.tiered_size_ratio, 1)
    at_least("bloom_bits_per_key", opts.bloom_bits_per_key, 1)
    positive("stall_timeout_s", opts.stall_timeout_s)
    non_negative("slowdown_sleep_s", opts.slowdown_sleep_s)
    integer("l0_slowdown_trigger", opts.l0_slowdown_trigger)
    integer("l0_stop_trigger", opts.l0_stop_trigger)
    if not opts.l0_compaction_trigger <= opts.l0_slowdown_trigger <= opts.l0_stop_trigger:
        raise ConfigError("need l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger, got "
                          f"{opts.l0_compaction_trigger}, {opts.l0_slowdown_trigger}, {opts.l0_stop_trigger}")
    non_negative("bulk_window_s", opts.bulk_window_s)
    if opts.bulk_l0_files is not None and not (
            opts.l0_compaction_trigger <= integer("bulk_l0_files", opts.bulk_l0_files) <= opts.l0_stop_trigger):
        # Above the stop trigger, writes would stall on a level 0 that the window keeps uncompacted.
        raise ConfigError("need l0_compaction_trigger <= bulk_l0_files <= l0_stop_trigger, got "
                          f"{opts.l0_compaction_trigger}, {opts.bulk_l0_files}, {opts.l0_stop_trigger}")
    if opts.storage_options is not None and not isinstance(opts.storage_options, dict):
        raise InvalidArgumentError("storage_options must be a dict")
    if not callable(opts.clock) or not callable(opts.sleep):
        raise InvalidArgumentError("clock and sleep must be callables")
    arrow_pool(opts.memory_pool)  # a pool this pyarrow build lacks fails at open, not in a flush


#: Level-0 files a bulk-load window lets accumulate when ``bulk_l0_files`` is not given (then
#: clamped to the tree's own triggers): about a million rows of 100-byte values in 62,500-row
#: ingests, merged once, where four at a time rewrote the level below each time (docs/storage-engines.md).
BULK_L0_FILES = 16


def bulk_l0_limit(opts: LSMOptions) -> int:
    """The level-0 file count that ends a bulk-load window early (see jobs, "Bulk loads")."""
    if opts.bulk_l0_files is not None:
        return opts.bulk_l0_files
    return max(opts.l0_compaction_trigger, min(BULK_L0_FILES, opts.l0_stop_trigger))


def arrow_pool(name: str):
    """The Arrow memory pool called ``name``; ``"default"`` is pyarrow's process default.

    The tree's background jobs allocate and free buffers of tens of MiB per flush or
    compaction from their own threads while the writers allocate Python objects. With
    pyarrow's default pool on Linux (mimalloc) that pattern was measured to cost the
    background jobs two to four times the CPU of the same jobs alone, and per-key
    puts a third of their rate (docs/storage-engines.md, "Arrow memory pool");
    the C library's allocator ("system") or jemalloc did not show it.
    """
    import pyarrow as pa

    if name == "default":
        return pa.default_memory_pool()
    factory = {"system": pa.system_memory_pool, "jemalloc": pa.jemalloc_memory_pool,
               "mimalloc": pa.mimalloc_memory_pool}[name]
    try:
        return factory()
    except NotImplementedError as e:  # pyarrow's ArrowNotImplementedError is one
        raise ConfigError(f"memory_pool={name!r} is not available in this pyarrow build: {e}") from None
