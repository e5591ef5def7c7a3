"""The archive's files: their Parquet format, how they are written, and verified reads.

Theory of operation
-------------------
One file holds the events of ``$all`` positions ``first..last`` (every one of them: positions are
gap-free), one row per event with :func:`schema`'s columns, sorted by position, and is named
:func:`file_name` ``(first, last)``. Row groups hold at most ``row_group_rows`` rows and about
:data:`GROUP_BYTES_MAX` bytes, so reading one allocates a bounded amount. Column statistics are
written, so pyarrow and Ray Data prune row groups by position, stream or type on their own.

An :class:`ArchiveFile` is what the manifest (:mod:`.archive`) records about a file: its size and
CRC-32, and the byte span and CRC-32 of the footer and of every row group with the group's first
and last position. :class:`ArchiveReader` trusts only that record, never the file: it checks the
file's size first, reads the footer's span and the row groups' spans (nothing else, so a hostile
file cannot make it read or allocate more than the manifest says), checks each CRC-32 before the
Parquet reader sees the bytes (:class:`~ddia_ray.storage.lsm.rowgroup.Spans` serves only verified
spans), then checks the schema and that each group holds the positions the manifest says. A file
that is missing, truncated, flipped, replaced, not Parquet or of another schema is
:class:`~ddia_ray.errors.ArchiveCorruptError`, never a wrong answer and never another exception.

Writes are one atomic step: an object store's put, or on a local disk a temporary file, fsync and
rename (then the directory's fsync), so a reader never sees half a file. :meth:`ArchiveReader.write`
reads the file back through the verifying path before anyone commits it.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import threading
import zlib
from typing import Any, Iterator

from .._fs import fsync_dir, is_local
from ..errors import ArchiveCorruptError, InvalidArgumentError

__all__ = ["ArchiveFile", "ArchiveReader", "schema", "file_name", "encode_file", "rows_of", "filtered",
           "GROUP_BYTES_MAX", "FILE_ROWS_MAX"]

#: Bytes of event payload one row group holds at most: what one read of a group allocates.
GROUP_BYTES_MAX = 16 << 20
#: Events one file holds at most: one commit writes a stream index row per stream of the file, in one log entry.
FILE_ROWS_MAX = 100_000
_GROUPS_MAX = 4096
_FOOTER_PROBE = 64 * 1024  # the tail the Parquet reader fetches at once (see sstable._footer)
_FOOTER_MAX = 16 << 20
_NAME = re.compile(r"^events-(\d{20})-(\d{20})\.parquet(\.tmp)?$")


def schema() -> Any:
    """The archive files' Arrow schema (one row per event, sorted by position)."""
    import pyarrow as pa

    return pa.schema([pa.field("position", pa.int64(), False), pa.field("stream", pa.string(), False),
                      pa.field("version", pa.int64(), False), pa.field("id", pa.string(), False),
                      pa.field("type", pa.string(), False), pa.field("data", pa.binary(), False),
                      pa.field("metadata", pa.binary(), False), pa.field("created_ms", pa.int64(), False)])


def file_name(first: int, last: int) -> str:
    """The name of the file of positions ``first..last``: zero-padded, so names sort as positions do."""
    return f"events-{first:020d}-{last:020d}.parquet"


def _span_ok(s: Any, lo: int, hi: int) -> bool:
    return (isinstance(s, tuple) and len(s) == 3 and all(type(x) is int for x in s) and lo <= s[0]
            and 0 < s[1] and s[0] + s[1] <= hi and 0 <= s[2] < 1 << 32)


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveFile:
    """A committed archive file as the manifest records it: positions ``first..last`` (``count`` of
    them, gap-free), ``size`` bytes with CRC-32 ``crc32``, the footer's ``(offset, length, crc32)``
    and per row group ``(offset, length, crc32, first position, last position)``."""

    name: str
    first: int
    last: int
    count: int
    size: int
    crc32: int
    footer: tuple
    groups: tuple

    def __post_init__(self) -> None:
        # Runs on every row read back and every commit: a record that would send a reader outside
        # the file, or name a path outside the archive, is refused here.
        ok = (all(type(x) is int for x in (self.first, self.last, self.count, self.size, self.crc32))
              and 0 <= self.first <= self.last and self.count == self.last - self.first + 1
              and self.count <= FILE_ROWS_MAX and self.name == file_name(self.first, self.last)
              and 12 <= self.size < 1 << 40 and 0 <= self.crc32 < 1 << 32
              and _span_ok(self.footer, 4, self.size) and self.footer[0] + self.footer[1] == self.size
              and self.footer[1] <= _FOOTER_MAX and isinstance(self.groups, tuple)
              and 0 < len(self.groups) <= _GROUPS_MAX)
        expect = self.first
        for g in self.groups if ok else ():
            ok = (isinstance(g, tuple) and len(g) == 5 and _span_ok(g[:3], 4, self.footer[0])
                  and g[3] == expect and type(g[4]) is int and g[3] <= g[4] <= self.last)
            if not ok:
                break
            expect = g[4] + 1
        if not ok or expect != self.last + 1:
            raise InvalidArgumentError(f"an archive file record is inconsistent: {self.name!r:.80} "
                                       f"positions {self.first!r}..{self.last!r}")

    def row(self) -> tuple:
        """This record as plain data (a row field, a procedure argument)."""
        return (self.name, self.first, self.last, self.count, self.size, self.crc32, self.footer, self.groups)

    @classmethod
    def of(cls, fields: Any) -> "ArchiveFile":
        """The record of :meth:`row`'s tuple; :class:`~ddia_ray.errors.InvalidArgumentError` if it is not one."""
        if not isinstance(fields, tuple) or len(fields) != 8:
            raise InvalidArgumentError("an archive file record is a tuple of 8 fields")
        return cls(*fields)




def encode_file(rows: list, row_group_rows: int, compression: str) -> tuple[bytes, ArchiveFile]:
    """``rows`` (read rows of ``$all``, consecutive positions) as a Parquet file and its record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*rows))  # stream, version, position, id, type, data, metadata, created_ms
    order = (2, 0, 1, 3, 4, 5, 6, 7)
    table = pa.Table.from_arrays([pa.array(columns[i], f.type) for i, f in zip(order, schema())], schema=schema())
    cuts, n, size = [0], 0, 0
    for i, r in enumerate(rows):  # a new group every row_group_rows rows or GROUP_BYTES_MAX bytes
        weight = len(r[5]) + len(r[6]) + len(r[0]) + len(r[3]) + len(r[4]) + 32
        if n and (n == row_group_rows or size + weight > GROUP_BYTES_MAX):
            cuts.append(i)
            n, size = 0, 0
        n, size = n + 1, size + weight
    cuts.append(len(rows))
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema(), compression=compression) as writer:
        for a, b in zip(cuts, cuts[1:]):
            writer.write_table(table.slice(a, b - a), row_group_size=b - a)
    data = sink.getvalue().to_pybytes()
    md = pq.ParquetFile(pa.BufferReader(data)).metadata
    groups = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        rg = md.row_group(i)
        starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
                  for c in (rg.column(j) for j in range(rg.num_columns))]
        ends = [s + rg.column(j).total_compressed_size for j, s in enumerate(starts)]
        lo, hi = min(starts), max(ends)
        groups.append((lo, hi - lo, zlib.crc32(data[lo:hi]), rows[a][2], rows[b - 1][2]))
    footer_off = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    first, last = rows[0][2], rows[-1][2]
    f = ArchiveFile(file_name(first, last), first, last, len(rows), len(data), zlib.crc32(data),
                    (footer_off, len(data) - footer_off, zlib.crc32(data[footer_off:])), tuple(groups))
    return data, f


class ArchiveReader:
    """Reads committed archive files under ``url`` (fsspec; ``storage_options`` go to its filesystem),
    verifying every byte it uses against the manifest (see the module docstring). Thread-safe; keeps
    the parsed footers of the last ``footers`` files it read (a file's footer never changes)."""

    def __init__(self, url: str, *, storage_options: dict | None = None, footers: int = 64) -> None:
        import fsspec

        if not isinstance(url, str) or not url:
            raise InvalidArgumentError(f"an archive url is a non-empty str, got {url!r:.80}")
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self._footers: collections.OrderedDict = collections.OrderedDict()
        self._footers_max = footers
        self._lock = threading.Lock()  # guards _footers only: reads run in parallel

    def path(self, f: ArchiveFile) -> str:
        """Where ``f`` lives in the reader's filesystem."""
        return f"{self.root}/{f.name}"

    def _read(self, f: ArchiveFile, offset: int, length: int) -> bytes:
        try:
            data = self.fs.cat_file(self.path(f), start=offset, end=offset + length)
        except FileNotFoundError:
            raise ArchiveCorruptError("the archive file is missing", self.path(f)) from None
        if len(data) != length:
            raise ArchiveCorruptError(f"truncated: wanted {length} bytes at {offset}, got {len(data)}", self.path(f))
        return data

    def _footer(self, f: ArchiveFile) -> Any:
        with self._lock:
            md = self._footers.get(f.name)
            if md is not None:
                self._footers.move_to_end(f.name)
                return md
        import pyarrow.parquet as pq

        from ..storage.lsm.rowgroup import Spans

        path = self.path(f)
        try:
            size = self.fs.size(path)
        except FileNotFoundError:
            raise ArchiveCorruptError("the archive file is missing", path) from None
        if size != f.size:
            raise ArchiveCorruptError(f"{size} bytes where the manifest says {f.size} (truncated or replaced)", path)
        off, _, crc = f.footer
        start = max(0, min(off, f.size - _FOOTER_PROBE))
        tail = self._read(f, start, f.size - start)
        if zlib.crc32(memoryview(tail)[off - start:]) != crc:
            raise ArchiveCorruptError("Parquet footer checksum mismatch", path)
        try:
            md = pq.ParquetFile(Spans(f.size, [(start, tail)])).metadata
            layout = (md.schema.to_arrow_schema().remove_metadata().equals(schema()),
                      md.num_row_groups == len(f.groups), md.num_rows == f.count,
                      all(md.row_group(i).num_rows == g[4] - g[3] + 1 for i, g in enumerate(f.groups)))
        except Exception as e:  # noqa: BLE001 - whatever the Parquet reader refuses: a damaged file
            raise ArchiveCorruptError(f"Parquet footer does not parse: {e}", path) from e
        if not all(layout):
            raise ArchiveCorruptError("not an event archive file of the manifest's layout (schema, row groups "
                                      "or row counts differ)", path)
        with self._lock:
            self._footers[f.name] = md
            if len(self._footers) > self._footers_max:
                self._footers.popitem(last=False)
        return md

    def check(self, f: ArchiveFile) -> None:
        """Check ``f``'s size, footer, schema and row-group layout against the manifest (a cheap
        check: it reads the footer only; :meth:`table` checks every byte)."""
        self._footer(f)

    def group(self, f: ArchiveFile, i: int) -> Any:
        """Row group ``i`` of ``f`` as an Arrow table, read and verified (one ranged read)."""
        import pyarrow.parquet as pq

        from ..storage.lsm.rowgroup import Spans

        md = self._footer(f)
        off, length, crc, first, last = f.groups[i]
        data = self._read(f, off, length)
        if zlib.crc32(data) != crc:
            raise ArchiveCorruptError(f"row group {i} checksum mismatch", self.path(f))
        try:
            table = pq.ParquetFile(Spans(f.size, [(off, data)]), metadata=md).read_row_group(i)
            positions = table.column("position")
            ok = table.num_rows == last - first + 1 and positions[0].as_py() == first and positions[-1].as_py() == last
        except Exception as e:  # noqa: BLE001 - whatever the Parquet reader refuses: a damaged file
            raise ArchiveCorruptError(f"row group {i} does not decode: {e}", self.path(f)) from e
        if not ok:
            raise ArchiveCorruptError(f"row group {i} holds other positions than the manifest says", self.path(f))
        return table

    def groups(self, f: ArchiveFile, lo: int, hi: int, *, backward: bool = False) -> Iterator[Any]:
        """The verified row groups of ``f`` that hold positions ``lo..hi``, each sliced to them."""
        index = [i for i, g in enumerate(f.groups) if g[3] <= hi and g[4] >= lo]
        for i in reversed(index) if backward else index:
            table, first = self.group(f, i), f.groups[i][3]
            a, b = max(lo, first) - first, min(hi, f.groups[i][4]) - first
            yield table.slice(a, b - a + 1)

    def table(self, f: ArchiveFile) -> Any:
        """The whole file, verified (its CRC-32 too) and decoded."""
        import pyarrow as pa

        data = self._read(f, 0, f.size)
        if zlib.crc32(data) != f.crc32:
            raise ArchiveCorruptError("file checksum mismatch", self.path(f))
        return pa.concat_tables(list(self.groups(f, f.first, f.last)))

    def write(self, f: ArchiveFile, data: bytes) -> None:
        """Put ``data`` as ``f`` in one atomic step (local disk: a temporary file, fsync, rename),
        then read it back through the verifying path."""
        path = self.path(f)
        if is_local(self.fs):
            self.fs.makedirs(self.root, exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            fsync_dir(self.root)
        else:
            self.fs.pipe_file(path, data)
        with self._lock:
            self._footers.pop(f.name, None)
        self.table(f)

    def remove_uncommitted(self, f: ArchiveFile) -> None:
        """Delete the other files that start where committed ``f`` starts: attempts no commit can name now."""
        try:
            found = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return
        for p in found:
            m = _NAME.match(p.rsplit("/", 1)[-1])
            if m and int(m.group(1)) == f.first and p.rsplit("/", 1)[-1] != f.name:
                self.fs.rm_file(p)




def rows_of(table: Any) -> list:
    """A table of :func:`schema`'s columns as read rows ``(stream, version, position, id, type, data,
    metadata, created_ms)``."""
    cols = [table.column(c).to_pylist() for c in ("stream", "version", "position", "id", "type", "data",
                                                  "metadata", "created_ms")]
    return list(zip(*cols))


def filtered(table: Any, kind: str | None, value: str) -> Any:
    """``table``'s rows that pass a filter: a stream or type prefix, a category, or an exact type."""
    import pyarrow.compute as pc

    if kind is None:
        return table
    if kind == "stream":
        keep = pc.starts_with(table.column("stream"), value)
    elif kind == "type":
        keep = pc.starts_with(table.column("type"), value)
    elif kind == "category":
        keep = pc.or_(pc.equal(table.column("stream"), value), pc.starts_with(table.column("stream"), value + "-"))
    else:  # "event_type": the type index's exact match
        keep = pc.equal(table.column("type"), value)
    return table.filter(keep)
