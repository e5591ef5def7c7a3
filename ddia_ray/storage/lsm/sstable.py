"""SSTables: immutable sorted Parquet files plus a checksummed sidecar read at open.

Theory of operation
-------------------
An SSTable (DDIA ch. 3) is ``<number>.parquet`` with the columns of
:data:`.memtable.SCHEMA`, rows sorted by key ascending then ``seq``
descending (newest first). A range tombstone ``[s, e)@q`` is a row
``(s, q, RANGE_DELETE, e)``. Row groups hold about ``row_group_rows`` rows and
never split the versions of one key, so a point lookup decodes exactly one
row group. Files are written whole from memory with one ``put`` of the bytes
(S3 has no append), and only become part of the database when a manifest
names them.

Everything a lookup needs *before* touching the Parquet file lives in the
sidecar ``<number>.sstmeta`` (a framed codec record, :class:`TableMeta`),
loaded when the database opens: the Bloom filter, the first key of each row
group (binary search), the range tombstones, and a CRC-32 of every row
group's byte span and of the footer. The Parquet reader sees the file through
:class:`~.rowgroup.Spans`, a file object that serves only byte spans already read *and
verified*, so a flipped or missing byte is reported as
:class:`CorruptionError` on the first read instead of decoded into a wrong
answer; a short read (truncated file) is reported the same way. Arrow scans
read a window of row groups with one ranged read instead and decode them from
memory (:meth:`SSTable.arrow_chunks`): each span is verified first and the
reader only goes where the verified footer points, inside those spans.

The row-group cache holds ``(RowGroup, PointIndex | None, table)`` per row
group, one set of Arrow buffers behind all three; :class:`PointIndex` makes
point lookups in groups of fixed-width keys cheap (see its docstring).
"""

from __future__ import annotations

import bisect
import os
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..._fs import is_local
from ..._validate import InvariantViolation
from ...codec import decode, encode, record
from ...errors import CodecError, CorruptionError, InvalidArgumentError, NotADatabaseError
from .bloom import BloomFilter
from .cache import ChargedLRU
from ...framing import TornObjectError, frame_object, read_object
from .memtable import PUT, RANGE_DELETE, SCHEMA
from .merge import past_versions
from .point_index import PointIndex
from .rowgroup import RowGroup, Spans, visible_rows
from .tombstones import TombstoneIndex

__all__ = ["FileMeta", "TableMeta", "SSTable", "NOT_CACHED", "write_sstable", "sst_name", "meta_name", "put_object"]

_META_MAGIC = b"LSMSST01"
#: What :meth:`SSTable.get_cached` returns when answering would need a read.
NOT_CACHED = object()
_FOOTER_PROBE_BYTES = 64 * 1024  # Parquet readers fetch this much of the tail at once
_SCAN_WINDOW_GROUPS = 16  # row groups a scan reads with one ranged read (~8 MB at 4096 rows of 116 B)
# The decoded ``pa.Table`` kept beside them for Arrow scans shares their buffers, but its own Python
# wrapper, C++ table, schema and chunked arrays cost about this much (measured with one-row groups
# by tests/test_storage_small_defects.py, which holds the cache to its byte bound).
_TABLE_OVERHEAD_BYTES = 3584


def sst_name(number: int) -> str:
    """The object name of SSTable ``number``."""
    return f"{number:06d}.parquet"


def meta_name(number: int) -> str:
    """The object name of the sidecar of SSTable ``number``."""
    return f"{number:06d}.sstmeta"


@record("storage.lsm.file", version=1)
class FileMeta:
    """What a manifest records about one live SSTable (its key range bounds are inclusive)."""

    number: int
    size: int
    meta_size: int
    smallest: bytes
    largest: bytes
    min_seq: int
    max_seq: int
    rows: int
    logical_bytes: int
    range_tombstones: int = 0
    clean: bool = False      # only puts, each key once: a scan may skip the merge (see :mod:`.reads`)

    def __post_init__(self):
        if self.number < 1 or self.size < 0 or self.rows < 0 or self.min_seq > self.max_seq:
            raise InvalidArgumentError(f"inconsistent SSTable metadata for file {self.number}")

    def overlaps(self, lo: bytes, hi: bytes) -> bool:
        """Whether ``[smallest, largest]`` meets the inclusive range ``[lo, hi]``."""
        return not (self.largest < lo or self.smallest > hi)


@record("storage.lsm.sstmeta", version=1)
class TableMeta:
    """The sidecar of one SSTable: Bloom filter, row-group index, tombstones, checksums."""

    number: int
    file_size: int
    rg_first_keys: tuple
    rg_spans: tuple          # ((offset, length, crc32), ...) one per row group
    footer_span: tuple       # (offset, length, crc32) of footer + length + magic
    bloom: bytes
    bloom_bits: int
    bloom_probes: int
    range_tombstones: tuple  # ((start, end, seq), ...)

    def __post_init__(self):
        # Runs on decode too: a sidecar whose checksums verify but whose fields were crafted must be
        # refused here (the codec turns this into CorruptRecordError, the reader into CorruptionError)
        # rather than fail later inside the Bloom filter or the row-group reader with a raw error.
        def span(x) -> bool:
            return isinstance(x, tuple) and len(x) == 3 and all(type(v) is int and v >= 0 for v in x)

        if not (type(self.number) is int and self.number >= 0 and type(self.file_size) is int
                and self.file_size >= 0):
            raise InvalidArgumentError("sidecar number or file size is not a non-negative int")
        if not (isinstance(self.rg_first_keys, tuple) and isinstance(self.rg_spans, tuple)
                and len(self.rg_first_keys) == len(self.rg_spans) and span(self.footer_span)
                and all(isinstance(k, bytes) for k in self.rg_first_keys)
                and all(span(x) for x in self.rg_spans)):
            raise InvalidArgumentError("sidecar row-group index is inconsistent")
        if not (isinstance(self.bloom, bytes) and type(self.bloom_bits) is int
                and type(self.bloom_probes) is int and 0 <= self.bloom_bits <= len(self.bloom) * 8
                and 1 <= self.bloom_probes <= 30):
            raise InvalidArgumentError("sidecar Bloom filter parameters are inconsistent")
        if not (isinstance(self.range_tombstones, tuple) and all(
                isinstance(t, tuple) and len(t) == 3 and isinstance(t[0], bytes) and isinstance(t[1], bytes)
                and type(t[2]) is int and t[2] >= 0 for t in self.range_tombstones)):
            raise InvalidArgumentError("sidecar range tombstones are malformed")


def put_object(fs, path: str, data) -> None:
    """Write a whole object (bytes or a buffer); on a local disk also fsync it (it may soon be named by a manifest)."""
    if is_local(fs):
        with fs.open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    else:
        fs.pipe_file(path, data if isinstance(data, bytes) else bytes(memoryview(data)))


def _row_group_bounds(keys: pa.Array, rows_per_group: int) -> list[int]:
    """Row-group cut points every ``rows_per_group`` rows, moved past the versions of one key."""
    bounds, n, b = [0], len(keys), rows_per_group
    while b < n:
        b = past_versions(keys, b)  # never split the versions of one key
        if b < n:
            bounds.append(b)
        b += rows_per_group
    bounds.append(n)
    return bounds


def _span(md: pq.FileMetaData, i: int) -> tuple[int, int]:
    rg = md.row_group(i)
    lo: int | None = None
    hi = 0
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        lo = start if lo is None else min(lo, start)
        hi = max(hi, start + col.total_compressed_size)
    if lo is None:  # not reached: every row group of SCHEMA has four columns
        raise InvariantViolation(f"row group {i} of a new SSTable has no columns")
    return lo, hi - lo


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (no copy when it already is one chunk)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _count_below(keys, bound: bytes) -> int:
    """How many keys of the sorted column ``keys`` are below ``bound`` (vectorised, no Python rows)."""
    return pc.sum(pc.less(keys, pa.scalar(bound, pa.binary()))).as_py() or 0


def _unique_sorted(keys: pa.Array) -> bool:
    """Whether the sorted binary column ``keys`` holds no duplicates."""
    n = len(keys)
    return n < 2 or bool(pc.all(pc.not_equal(keys.slice(1), keys.slice(0, n - 1))).as_py())


def write_sstable(fs, directory: str, number: int, table: pa.Table, *, row_group_rows: int,
                  bloom_bits_per_key: float, compression: str,
                  pool: pa.MemoryPool | None = None) -> tuple[FileMeta, TableMeta]:
    """Write ``table`` (SSTable-sorted, non-empty) as SSTable ``number`` and its sidecar.

    The keys stay in Arrow: only the row groups' first keys and the file's bounds become
    Python objects (the Bloom filter hashes the key column in NumPy). ``pool`` serves
    the Parquet writer's buffers.

    This runs in a background thread beside writers that hold the GIL between their
    calls, and every call that releases the GIL waits up to the interpreter's switch
    interval (5 ms) to take it back, so the file is written in one Parquet call when
    the row groups are evenly spaced (no key's versions straddle a cut: the common case).
    """
    keys = _one_chunk(table.column("key"))
    bounds = _row_group_bounds(keys, row_group_rows)
    sink = pa.BufferOutputStream(memory_pool=pool)
    with pq.ParquetWriter(sink, SCHEMA, compression=compression, use_dictionary=False,
                          write_statistics=False, memory_pool=pool) as writer:
        if bounds == [*range(0, len(keys), row_group_rows), len(keys)]:
            writer.write_table(table, row_group_size=row_group_rows)
        else:
            for a, b in zip(bounds, bounds[1:]):
                writer.write_table(table.slice(a, b - a), row_group_size=b - a)
    buf = sink.getvalue()
    view = memoryview(buf)
    size = buf.size
    md = pq.ParquetFile(pa.BufferReader(buf)).metadata
    spans = []
    for i in range(md.num_row_groups):
        off, length = _span(md, i)
        spans.append((off, length, zlib.crc32(view[off:off + length])))
    footer_off = size - 8 - int.from_bytes(bytes(view[size - 8:size - 4]), "little")
    footer = (footer_off, size - footer_off, zlib.crc32(view[footer_off:]))

    ops = table.column("op")
    only_puts = pc.max(ops).as_py() == PUT
    is_range = pc.equal(ops, RANGE_DELETE)
    tombstones: tuple[tuple[bytes, bytes, int], ...] = ()
    point_keys = keys
    if not only_puts and pc.any(is_range).as_py():
        rt = table.filter(is_range)
        tombstones = tuple(zip(rt.column("key").to_pylist(), rt.column("value").to_pylist(),
                               rt.column("seq").to_pylist()))
        point_keys = keys.filter(pc.invert(is_range))
    bloom = BloomFilter.build(point_keys, bloom_bits_per_key)
    seqs = table.column("seq")
    puts = table if only_puts else table.filter(pc.equal(ops, PUT))
    clean = only_puts and _unique_sorted(keys)
    logical = (pc.sum(pc.binary_length(puts.column("key"))).as_py() or 0) + \
        (pc.sum(pc.binary_length(puts.column("value"))).as_py() or 0)
    largest = max([keys[len(keys) - 1].as_py()] + [e for _, e, _ in tombstones])
    tmeta = TableMeta(number, size, tuple(keys[a].as_py() for a in bounds[:-1]), tuple(spans), footer,
                      bloom.bits, bloom.num_bits, bloom.num_probes, tombstones)
    meta_bytes = frame_object(_META_MAGIC, encode(tmeta))
    put_object(fs, f"{directory}/{sst_name(number)}", buf)
    put_object(fs, f"{directory}/{meta_name(number)}", meta_bytes)
    fmeta = FileMeta(number, size, len(meta_bytes), keys[0].as_py(), largest, pc.min(seqs).as_py(),
                     pc.max(seqs).as_py(), table.num_rows, logical, len(tombstones), clean)
    return fmeta, tmeta


def load_table_meta(fs, directory: str, number: int) -> TableMeta:
    """Read and verify the sidecar of SSTable ``number``."""
    path = f"{directory}/{meta_name(number)}"
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise CorruptionError("the sidecar of a live SSTable is missing", path) from None
    try:
        meta = decode(read_object(data, _META_MAGIC, where=path), TableMeta)
    except TornObjectError:
        raise CorruptionError("sidecar is truncated", path) from None
    except NotADatabaseError as e:  # a live manifest names this file: whatever is there must be ours
        raise CorruptionError(f"sidecar has a foreign magic: {e}", path) from e
    except CodecError as e:
        raise CorruptionError(f"sidecar does not decode: {e}", path) from e
    if meta.number != number:
        raise CorruptionError(f"sidecar belongs to SSTable {meta.number}", path)
    return meta


class SSTable:
    """Read access to one SSTable through the shared open-file and row-group caches."""

    def __init__(self, fs, directory: str, meta: FileMeta, tmeta: TableMeta, *,
                 files: ChargedLRU, row_groups: ChargedLRU):
        self.fs = fs
        self.meta = meta
        self.tmeta = tmeta
        self.number = meta.number
        self.path = f"{directory}/{sst_name(meta.number)}"
        self.bloom = BloomFilter(tmeta.bloom, tmeta.bloom_bits, tmeta.bloom_probes)
        self.tombstones = TombstoneIndex(tmeta.range_tombstones)
        self.has_tombstones = bool(tmeta.range_tombstones)
        self._first_keys = list(tmeta.rg_first_keys)
        self._files = files
        self._row_groups = row_groups
        self.row_group_reads = 0

    def _read(self, offset: int, length: int) -> bytes:
        try:
            data = self.fs.cat_file(self.path, start=offset, end=offset + length)
        except FileNotFoundError:
            raise CorruptionError("a live SSTable is missing", self.path) from None
        if len(data) != length:
            raise CorruptionError(f"truncated: wanted {length} bytes at {offset}, got {len(data)}", self.path)
        return data

    def _footer(self) -> pq.FileMetaData:
        md = self._files.get(self.number)
        if md is None:
            off, length, crc = self.tmeta.footer_span
            size = self.tmeta.file_size
            start = max(0, min(off, size - _FOOTER_PROBE_BYTES))
            tail = self._read(start, size - start)
            if zlib.crc32(memoryview(tail)[off - start:]) != crc:
                raise CorruptionError("Parquet footer checksum mismatch", self.path)
            try:
                md = pq.ParquetFile(Spans(size, [(start, tail)])).metadata
            except Exception as e:
                raise CorruptionError(f"Parquet footer does not parse: {e}", self.path) from e
            self._files.put(self.number, md)
        return md

    def row_group(self, i: int, *, fill_cache: bool = True) -> RowGroup:
        """Row group ``i``, decoded (from the cache, or read and verified)."""
        return self._cached_group(i, fill_cache)[0]

    def _cached_group(self, i: int, fill_cache: bool) -> tuple:
        """``(RowGroup, PointIndex | None, key-value table)`` of row group ``i``; the cache holds the triple."""
        key = (self.number, i)
        entry = self._row_groups.get(key)
        if entry is not None:
            return entry
        table = self._read_group(i)
        rg = RowGroup(table)
        if not fill_cache:
            return rg, None, table
        point = PointIndex.build(table)
        entry = (rg, point, table)  # one set of Arrow buffers behind all three: RowGroup.nbytes counts them
        charge = rg.nbytes + _TABLE_OVERHEAD_BYTES + (point.nbytes if point is not None else 0)
        self._row_groups.put(key, entry, charge)
        return entry

    def _read_group(self, i: int) -> pa.Table:
        """Row group ``i`` read, verified and decoded into one-chunk columns (not cached)."""
        md = self._footer()
        off, length, crc = self.tmeta.rg_spans[i]
        data = self._read(off, length)
        if zlib.crc32(data) != crc:
            raise CorruptionError(f"row group {i} checksum mismatch", self.path)
        try:
            table = pq.ParquetFile(Spans(self.tmeta.file_size, [(off, data)]), metadata=md).read_row_group(i)
        except Exception as e:
            raise CorruptionError(f"row group {i} does not decode: {e}", self.path) from e
        self.row_group_reads += 1
        return table.combine_chunks()

    def arrow_chunks(self, start: bytes | None, end: bytes | None, reverse: bool = False,
                     columns: tuple = ("key", "value")):
        """Arrow tables of ``columns`` per row group in ``[start, end)``: ``key`` and ``value`` of a
        clean table (every row live), or every column (``SCHEMA``'s) of any table, for a merge.

        Cached row groups are served from the cache, others read without filling it (a scan
        would evict what point reads need). Rows are in scan order (reversed if ``reverse``).
        Row groups are read a window at a time, one ranged read per window; windows start at one
        row group and double up to :data:`_SCAN_WINDOW_GROUPS`, so a scan that stops early (a
        page of a paged scan is a limited one) reads at most about twice what it uses, and a
        long one still reads large windows (measured: 62% of a replica's time serving 10,000-row
        pages went to reading 16-group windows it mostly dropped, docs/partitioning.md).
        """
        names = list(columns)
        first = self._first_keys
        lo = 0 if start is None else max(0, bisect.bisect_right(first, start) - 1)
        hi = len(first) if end is None else bisect.bisect_left(first, end)
        order = list(range(hi - 1, lo - 1, -1) if reverse else range(lo, hi))
        w, size = 0, 1
        while w < len(order):
            window = order[w:w + size]
            w, size = w + size, min(2 * size, _SCAN_WINDOW_GROUPS)
            entries = [self._row_groups.get((self.number, i), count_miss=False) for i in window]
            missing = [i for i, entry in zip(window, entries) if entry is None]
            read = self._read_groups(missing, names) if missing else {}
            for i, entry in zip(window, entries):
                table = (entry[2] if entry is not None else read[i]).select(names)
                keys = table.column("key")
                a = 0 if start is None or i > lo else _count_below(keys, start)
                b = table.num_rows if end is None or i < hi - 1 else _count_below(keys, end)
                if a or b < table.num_rows:
                    table = table.slice(a, b - a)
                if reverse and table.num_rows > 1:
                    table = table.take(pa.array(range(table.num_rows - 1, -1, -1), pa.int64()))
                if table.num_rows:
                    yield table

    def _read_groups(self, groups: list, columns: list) -> dict:
        """``{i: table}`` of row groups ``groups`` read with one ranged read, each span verified.

        The Parquet reader then decodes from memory at C++ speed (through :class:`Spans`, a
        Python file object, it costs ~4x more): the bytes sit at their file offsets in a buffer
        the size of the file, of which only the verified spans were written. The reader goes
        only where the verified footer's column chunks point, inside those spans.
        """
        spans = self.tmeta.rg_spans
        lo = min(spans[i][0] for i in groups)
        hi = max(spans[i][0] + spans[i][1] for i in groups)
        md = self._footer()
        image = pa.allocate_buffer(self.tmeta.file_size)  # not zeroed; never read outside the spans
        view = memoryview(image).cast("B")
        try:
            with self.fs.open(self.path, "rb") as f:
                f.seek(lo)
                got = f.readinto(view[lo:hi])
        except FileNotFoundError:
            raise CorruptionError("a live SSTable is missing", self.path) from None
        if got != hi - lo:
            raise CorruptionError(f"truncated: wanted {hi - lo} bytes at {lo}, got {got}", self.path)
        for i in groups:
            off, length, crc = spans[i]
            if zlib.crc32(view[off:off + length]) != crc:
                raise CorruptionError(f"row group {i} checksum mismatch", self.path)
        try:
            reader = pq.ParquetFile(pa.BufferReader(image), metadata=md)
            out = {i: reader.read_row_group(i, columns=columns).combine_chunks() for i in groups}
        except Exception as e:
            raise CorruptionError(f"row groups {groups} do not decode: {e}", self.path) from e
        self.row_group_reads += len(groups)
        return out

    def get(self, key: bytes, snapshot_seq: int):
        """The newest point version ``(seq, op, value)`` of ``key`` at ``snapshot_seq``, or None."""
        i = bisect.bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        rg, point, _ = self._cached_group(i, True)
        return point.find(key, snapshot_seq) if point is not None else rg.find(key, snapshot_seq)

    def get_cached(self, key: bytes, snapshot_seq: int):
        """Like :meth:`get` if the row group is cached (no I/O); else :data:`NOT_CACHED`."""
        i = bisect.bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        entry = self._row_groups.get((self.number, i), count_miss=False)
        if entry is None:
            return NOT_CACHED
        point = entry[1]
        return point.find(key, snapshot_seq) if point is not None else entry[0].find(key, snapshot_seq)

    def clean_chunks(self, start: bytes | None, end: bytes | None, reverse: bool = False):
        """``(keys, values)`` lists per row group in ``[start, end)`` of a clean table (every row live)."""
        first = self._first_keys
        lo = 0 if start is None else max(0, bisect.bisect_right(first, start) - 1)
        hi = len(first) if end is None else bisect.bisect_left(first, end)
        for i in (range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)):
            rg = self.row_group(i, fill_cache=False)
            keys, values = rg.keys, rg.values_list()
            a = 0 if start is None or i > lo else bisect.bisect_left(keys, start)
            b = len(keys) if end is None or i < hi - 1 else bisect.bisect_left(keys, end)
            if a or b < len(keys):
                keys, values = keys[a:b], values[a:b]
            if keys:
                yield keys, values

    def entries(self, start: bytes | None, end: bytes | None, snapshot_seq: int, reverse: bool = False):
        """Yield the newest visible point version ``(key, seq, op, value)`` per key in ``[start, end)``."""
        groups = range(len(self._first_keys))
        lo = 0 if start is None else max(0, bisect.bisect_right(self._first_keys, start) - 1)
        hi = len(groups) if end is None else bisect.bisect_left(self._first_keys, end)
        order = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        for i in order:
            yield from visible_rows(self.row_group(i, fill_cache=False), start, end, snapshot_seq, reverse)

    def read_all(self) -> pa.Table:
        """The whole table, every span verified (used by compaction)."""
        size = self.tmeta.file_size
        data = self._read(0, size)
        view = memoryview(data)
        for i, (off, length, crc) in enumerate(self.tmeta.rg_spans):
            if zlib.crc32(view[off:off + length]) != crc:
                raise CorruptionError(f"row group {i} checksum mismatch", self.path)
        off, _, crc = self.tmeta.footer_span
        if zlib.crc32(view[off:]) != crc:
            raise CorruptionError("Parquet footer checksum mismatch", self.path)
        try:
            return pq.read_table(pa.BufferReader(data), schema=SCHEMA)
        except Exception as e:
            raise CorruptionError(f"does not decode: {e}", self.path) from e
