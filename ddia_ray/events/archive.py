"""The archive: old events move to Parquet files through fsspec, and reads still serve them.

Theory of operation
-------------------
An event store only grows. The archive moves a prefix of ``$all`` out of the replicated rows into
immutable Parquet files (``file://``, ``memory://``, ``s3://``: any fsspec URL) that pyarrow and
Ray Data read for analytics, while the client's stream and ``$all`` reads keep returning those
events where they belong. Three numbers order everything, and only grow::

    dropped_upto  <=  archived_upto  <=  next $all position

* below ``dropped_upto`` an event is only in the archive: its ``a`` row is gone and so is it from
  its chunk and index rows (:mod:`.keys`); its ``i`` row stays, so a late retry of its append is still recognised;
* in ``[dropped_upto, archived_upto)`` it is in a committed file *and* still live (reads take it
  live);
* from ``archived_upto`` on it is only live.

Rows (tag ``z`` in :mod:`.keys`)::

    zh                                     -> (archived_upto, dropped_upto, url)
    zf <last position: u64 BE>             -> a committed file: ArchiveFile.row()
    zv <stream> 00 <last version: u64 BE>  -> (first version, file's last position, min, max position)

The ``zv`` rows (one per stream per file) say which files hold a stream's archived versions, so a
stream read opens only those files and, in them, only the row groups between the stream's min and
max position. Keyed by the last version, one scan from a version finds the first file to read.

Archiving one file (:func:`archive`): (1) read ``$all`` from ``archived_upto`` live; (2) write
``events-<first>-<last>.parquet`` in one atomic put (local disk: a temporary name, fsync, rename),
read it back and verify it; (3) ``events.archive_commit`` records it and moves ``archived_upto``,
only from the value read in (1), so of two archivers one is refused
(:class:`~ddia_ray.errors.ArchiveConflictError`); (4) ``events.archive_drop``, repeated, deletes
the live rows below ``archived_upto``, at most :data:`MAX_DROP_POSITIONS` per log entry.

Crash safety, step by step: a crash before (3) leaves a file no manifest names: reads and
:func:`archive_dataset` never see it, and the next run overwrites it or, once its range is
committed under another name, deletes it. A crash between (3) and (4) leaves events both archived
and live: reads take them live, and the next run drops them first. Drops go in position order, so
a stream's archived versions are always the ones below its first live version; that is how a stream
read knows which versions to take from the archive, and why nothing is seen twice or missed.

The files' format and their verified reads are :mod:`.archive_files`'s: the manifest's ``zf`` row
holds each file's size and the CRC-32 of its footer and of each row group, and a reader uses
nothing it has not checked against them (:class:`~ddia_ray.errors.ArchiveCorruptError` otherwise).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._fs import arrow_fs
from .._validate import invariant
from ..errors import ArchiveConflictError, ArchiveCorruptError, CorruptRecordError, InvalidArgumentError
from ..replication.procedures import procedure, query
from ..replication.records import DELETE, PUT
from . import keys
from .archive_files import FILE_ROWS_MAX, ArchiveFile, ArchiveReader, encode_file, filtered, rows_of, schema
from .keys import pack, unpack
from .keys import Head
from .queries import packed_flag, read_all, read_all_packed, read_index, read_stream
from .records import check_stream

__all__ = ["ArchiveRun", "archive", "archive_dataset", "archive_ray_dataset", "committed_files",
           "archived_all_page", "archived_stream", "archive_state", "archive_files", "archive_stream",
           "archive_commit", "archive_drop", "archive_read_stream", "archive_read_all", "archive_read_index",
           "MAX_DROP_POSITIONS", "dropped_upto"]

#: Positions one ``events.archive_drop`` entry deletes at most (an ``a`` row each, plus the chunks and
#: index rows they reach): a bounded log entry.
MAX_DROP_POSITIONS = 1000
_URL_MAX = 4096
_LIST_MAX = 256  # files or stream index rows one query answers
_HEAD = b"zh"


def _file_key(last: int) -> bytes:
    return b"zf" + keys.u64(last)


def _stream_key(stream: str, last_version: int) -> bytes:
    return b"zv" + stream.encode() + b"\x00" + keys.u64(last_version)


def _stream_end(stream: str) -> bytes:
    return b"zv" + stream.encode() + b"\x01"


def _head(get) -> tuple[int, int, str]:
    row = get(_HEAD)
    return (0, 0, "") if row is None else unpack(row, 3, "archive head")


def dropped_upto(get) -> int:
    """The archive's ``dropped_upto`` as of ``get``: below it, events are only in the archive."""
    return _head(get)[1]


def _stored_file(row: bytes) -> ArchiveFile:
    try:
        return ArchiveFile.of(unpack(row, 1, "archive file")[0])
    except InvalidArgumentError as e:
        raise CorruptRecordError(f"an archive manifest row is damaged: {e}") from e


def _int(name: str, value: Any, low: int = 0) -> int:
    if type(value) is not int or not low <= value < 1 << 63:  # positions and versions are u64 in keys
        raise InvalidArgumentError(f"{name} is an int in {low}..2**63-1, got {value!r:.40}")
    return value


# --- procedures and queries ----------------------------------------------------------------------


@query("events.archive_state")
def archive_state(state, args: Any) -> tuple:
    """``(archived_upto, dropped_upto, url, next $all position)``; url "" before the first commit."""
    return (*_head(state.get), keys.next_position(state.get))


@query("events.archive_files")
def archive_files(state, args: Any) -> tuple:
    """Up to ``limit`` committed files (as :meth:`ArchiveFile.row`) whose last position is at least
    ``from_position``, in position order: the first one holds ``from_position`` if any does."""
    from_position, limit = args
    _int("from_position", from_position)
    _, values = state.scan(_file_key(from_position), b"zg", min(_int("limit", limit, 1), _LIST_MAX))
    return tuple(_stored_file(v).row() for v in values)


@query("events.archive_stream")
def archive_stream(state, args: Any) -> tuple:
    """Up to ``limit`` ``(first version, last version, min position, max position, file row)`` of
    ``stream``'s archived versions from the file holding ``from_version`` on, in version order."""
    stream, from_version, limit = args
    check_stream(stream)
    found, values = state.scan(_stream_key(stream, _int("from_version", from_version)), _stream_end(stream),
                               min(_int("limit", limit, 1), _LIST_MAX))
    entries = [unpack(v, 4, "archive stream index") for v in values]
    files = state.get_many(tuple(_file_key(e[1]) for e in entries))
    out = []
    for k, (first_v, _, lo, hi), f in zip(found, entries, files):
        if f is None:
            raise CorruptRecordError(f"the archive's stream index names a file the manifest lacks ({stream!r})")
        out.append((first_v, keys.version_of(k), lo, hi, _stored_file(f).row()))
    return tuple(out)


@procedure("events.archive_commit")
def archive_commit(get, args: Any) -> tuple[tuple, int]:
    """Record a written, verified file and its stream index, and move ``archived_upto`` past it, if
    ``archived_upto`` is still ``expected`` (else :class:`~ddia_ray.errors.ArchiveConflictError`):
    ``(file row, streams, expected, url)``, streams ``(stream, first version, last version, min
    position, max position)``. The result is the new ``archived_upto``."""
    row, streams, expected, url = args
    f = ArchiveFile.of(row)
    upto, dropped, recorded = _head(get)
    if not isinstance(url, str) or not url or len(url) > _URL_MAX:
        raise InvalidArgumentError(f"an archive url is a non-empty str of at most {_URL_MAX} characters")
    if recorded and recorded != url:
        raise ArchiveConflictError(f"this store archives to {recorded!r}, not {url!r}", archived_upto=upto)
    if expected != upto or f.first != upto:
        raise ArchiveConflictError(f"the archive is at position {upto}, not {expected!r} (another archiver "
                                   f"committed first)", archived_upto=upto)
    if (f.last >= keys.next_position(get) or keys.chunk_holding(get.seek, f.first) is None
            or keys.chunk_holding(get.seek, f.last) is None):
        raise InvalidArgumentError(f"positions {f.first}..{f.last} are not all live events of this store")
    if not isinstance(streams, tuple) or not streams or len(streams) > f.count:
        raise InvalidArgumentError("an archive commit names the streams of its file")
    ops = [(PUT, _file_key(f.last), pack(f.row())), (PUT, _HEAD, pack(f.last + 1, dropped, url))]
    total = 0
    for s in streams:
        if not (isinstance(s, tuple) and len(s) == 5 and all(type(x) is int for x in s[1:])
                and 0 <= s[1] <= s[2] and f.first <= s[3] <= s[4] <= f.last):
            raise InvalidArgumentError("a stream of an archive file is (stream, first version, last version, "
                                       "min position, max position)")
        check_stream(s[0])
        total += s[2] - s[1] + 1
        ops.append((PUT, _stream_key(s[0], s[2]), pack(s[1], f.last, s[3], s[4])))
    if total != f.count:
        raise InvalidArgumentError(f"the streams of an archive file hold {total} events, the file {f.count}")
    return tuple(ops), f.last + 1


@procedure("events.archive_drop")
def archive_drop(get, args: Any) -> tuple[tuple, int]:
    """Delete the live rows of archived events (``s``, ``b``, ``c`` and ``t`` or, for a chunk that
    keeps events, their trimmed rewrites; ``i`` stays) from ``dropped_upto`` to ``upto`` (never past
    ``archived_upto``), at most
    :data:`MAX_DROP_POSITIONS` of them; the result is the new ``dropped_upto``. Drops go in position
    order only, so a retried or repeated call is harmless."""
    (upto,) = args
    archived, dropped, url = _head(get)
    end = min(_int("upto", upto), archived, dropped + MAX_DROP_POSITIONS)
    ops: list = []
    chunks: dict = {}  # (stream, chunk's last version) -> the chunk, for the chunks the drop reaches
    position = dropped
    while position < end:  # a chunk at a time: every position from dropped_upto on is live until dropped
        held = keys.chunk_holding(get.seek, position)
        invariant(held is not None, f"archived position {position} has no $all chunk row to drop")
        _, top, stream, last = held or (0, 0, "", 0)  # (held: the invariant above)
        body = get(keys.chunk_key(stream, last))
        invariant(body is not None, f"archived position {position} has no event chunk to drop")
        chunks[stream, last] = keys.Chunk.of(body)
        position = top + 1
    for (stream, last), chunk in chunks.items():
        ops += _drop_chunk(stream, last, chunk, end)
    if end <= dropped:
        return (), dropped
    ops.append((PUT, _HEAD, pack(archived, end, url)))
    return tuple(ops), end


def _drop_chunk(stream: str, last: int, chunk: keys.Chunk, end: int) -> list:
    """The ops that drop ``chunk``'s events before position ``end``: the whole chunk and its index
    rows, or, when some of its events stay, the chunk and its index rows rewritten without the
    dropped ones (under the same keys: they name the chunk's last position and version, which stay)."""
    category = keys.category_key(keys.category_of(stream), chunk.last_position)
    page = keys.page_key(chunk.last_position)
    before = chunk.type_positions()
    if chunk.last_position < end:
        return [(DELETE, keys.chunk_key(stream, last), b""), (DELETE, category, b""), (DELETE, page, b""),
                *((DELETE, keys.type_key(t, ps[-1]), b"") for t, ps in before.items())]
    kept = chunk.slice(end, chunk.last_position)
    after = kept.type_positions()
    pointer = pack(end, stream, last)
    ops = [(PUT, keys.chunk_key(stream, last), kept.row()), (PUT, category, pointer), (PUT, page, pointer)]
    for t, ps in before.items():
        key = keys.type_key(t, ps[-1])
        ops.append((PUT, key, pack(tuple(after[t]), stream, last, chunk.last_position)) if t in after
                   else (DELETE, key, b""))
    return ops


@query("events.archive_read_stream")
def archive_read_stream(state, args: Any) -> tuple:
    """:func:`~.queries.read_stream` plus what a reader needs to take archived versions from the
    archive: ``(found, last, rows, first live version, first visible version, max_age_ms)``. The
    first live version is 0 for a stream with nothing archived (one empty one-row scan)."""
    found, last, rows = read_stream(state, args[:5])  # rows, not packed: the reader merges them with the archive's
    stream = args[0]
    head = Head(state.get(keys.head_key(stream)))
    first_live = 0
    archived, _ = state.scan(_stream_key(stream, 0), _stream_end(stream), 1)
    if archived:
        start, end = keys.stream_range(stream)
        _, live = state.scan(start, end, 1)
        first_live = keys.Chunk.of(live[0]).first_version if live else head.last + 1
    return (found, last, rows, first_live, head.first_visible(), head.max_age_ms)


@query("events.archive_read_all")
def archive_read_all(state, args: Any) -> tuple:
    """:func:`~.queries.read_all` where it is live: ``(page or None, dropped_upto, url, next position)``.
    None says the page starts below ``dropped_upto``: the reader takes it from the archive. A
    backward page that reached the archived positions stops just above them. With a sixth
    argument ``packed`` True (forward pages only), the page's events come as chunk parts
    (:func:`~.queries.read_all_packed`)."""
    args, packed = packed_flag(args, "an $all page is asked with (from position, backward, page, kind, prefix"
                                     "[, packed])")
    from_position, backward = args[0], args[1]
    _, dropped, url = _head(state.get)
    end = keys.next_position(state.get)
    start = end - 1 if backward and from_position == -1 else from_position
    if dropped and type(start) is int and 0 <= start < dropped:
        return (None, dropped, url, end)
    rows, pos, at_end = read_all_packed(state, args) if packed else read_all(state, args)
    if backward and dropped and pos < dropped - 1:
        pos, at_end = dropped - 1, False
    return ((rows, pos, at_end), dropped, url, end)


@query("events.archive_read_index")
def archive_read_index(state, args: Any) -> tuple:
    """:func:`~.queries.read_index` where it is live: ``(page or None, dropped_upto, url)``."""
    _, dropped, url = _head(state.get)
    if type(args[2]) is int and 0 <= args[2] < dropped:
        return (None, dropped, url)
    return (read_index(state, args), dropped, url)


# --- files ---------------------------------------------------------------------------------------


# --- reading archived events (the client's side) ------------------------------------------------


def _ask(client: Any, name: str, args: Any, timeout_s: float | None = None) -> Any:
    return client.query(name, args, timeout_s=timeout_s)


def _call(client: Any, name: str, args: Any, timeout_s: float | None = None) -> Any:
    return client.call(name, args, timeout_s=timeout_s)


def _covering(client: Any, lo: int, hi: int, timeout_s: float | None) -> list[ArchiveFile]:
    """The committed files holding positions ``lo..hi``, which must all be archived."""
    files: list[ArchiveFile] = []
    at = lo
    while at <= hi:
        got = [ArchiveFile.of(r) for r in _ask(client, "events.archive_files", (at, _LIST_MAX), timeout_s)]
        got = [f for f in got if f.first <= hi]
        if not got or got[0].first > at:
            raise CorruptRecordError(f"the archive manifest has no file for position {at} (below dropped_upto)")
        for f in got:
            invariant(f.first <= at, f"archive files leave a gap before position {f.first}")
            files.append(f)
            at = f.last + 1
    return files


def archived_all_page(client: Any, reader: ArchiveReader, start: int, *, backward: bool, page: int,
                      kind: str | None, prefix: str, dropped_upto: int, scan_max: int,
                      timeout_s: float | None = None) -> tuple:
    """One page of ``$all`` below ``dropped_upto`` from the archive, as the live query answers one:
    ``(rows, next position, at end)``. It looks at ``page`` positions, or ``scan_max`` with a filter."""
    span = page if kind is None else scan_max
    lo, hi = (max(0, start - span + 1), start) if backward else (start, min(dropped_upto - 1, start + span - 1))
    rows: list = []
    files = _covering(client, lo, hi, timeout_s)
    for f in reversed(files) if backward else files:
        for table in reader.groups(f, max(lo, f.first), min(hi, f.last), backward=backward):
            got = rows_of(filtered(table, kind, prefix))
            for row in reversed(got) if backward else got:
                if len(rows) == page:  # the first row this page cannot take: the next one starts there
                    return tuple(rows), row[2], False
                rows.append(row)
    nxt = lo - 1 if backward else hi + 1
    return tuple(rows), nxt, backward and nxt < 0


def archived_stream(client: Any, reader: ArchiveReader, stream: str, lo: int, hi: int,
                    timeout_s: float | None = None) -> list:
    """Versions ``lo..hi`` of ``stream`` from the archive (all of them must be archived), in version
    order. Only the files the stream index names are opened, and in them only the row groups between
    the stream's first and last position there."""
    import pyarrow.compute as pc

    rows: list = []
    at = lo
    while at <= hi:
        entries = _ask(client, "events.archive_stream", (stream, at, _LIST_MAX), timeout_s)
        if not entries or entries[0][0] > at:
            break
        for first_v, last_v, pmin, pmax, frow in entries:
            if first_v > hi:
                break
            f = ArchiveFile.of(frow)
            want = min(hi, last_v)
            for table in reader.groups(f, max(pmin, f.first), min(pmax, f.last)):
                s, v = table.column("stream"), table.column("version")
                keep = pc.and_(pc.equal(s, stream), pc.and_(pc.greater_equal(v, at), pc.less_equal(v, want)))
                rows.extend(rows_of(table.filter(keep)))
                if rows and rows[-1][1] == want:
                    break
            at = want + 1
            if at > hi:
                break
    if [r[1] for r in rows] != list(range(lo, hi + 1)):
        raise ArchiveCorruptError(f"the archive should hold versions {lo}..{hi} of stream {stream!r} and does "
                                  f"not (the manifest or a file disagrees with the store)", reader.url)
    return rows


# --- archiving -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveRun:
    """What one :func:`archive` call did: the ``files`` it committed, and where the archive is now."""

    files: tuple
    archived_upto: int
    dropped_upto: int


def _drop(client: Any, upto: int, timeout_s: float | None) -> int:
    """Drop the live rows of every archived event, one bounded log entry at a time."""
    while True:
        _, dropped, _, _ = _ask(client, "events.archive_state", (), timeout_s)
        if dropped >= upto:
            return dropped
        _call(client, "events.archive_drop", (upto,), timeout_s)


def _live(client: Any, first: int, last: int, timeout_s: float | None) -> list:
    """``$all`` rows ``first..last``, read live (none is dropped yet: they are not archived)."""
    from .queries import MAX_PAGE_ROWS

    rows: list = []
    while len(rows) < last - first + 1:
        at = first + len(rows)
        page, _, _ = _ask(client, "events.read_all", (at, False, min(MAX_PAGE_ROWS, last - at + 1), None, ""),
                          timeout_s)
        if not page:
            break
        rows.extend(page)
    invariant([r[2] for r in rows] == list(range(first, last + 1)), f"$all {first}..{last} is not gap-free live")
    return rows


def _streams(rows: list) -> tuple:
    """The stream index of a file's rows: ``(stream, first version, last version, min, max position)``."""
    seen: dict[str, list] = {}
    for stream, version, position, *_ in rows:
        e = seen.get(stream)
        if e is None:
            seen[stream] = [stream, version, version, position, position]
        else:
            e[2], e[4] = version, position
    return tuple(tuple(e) for e in seen.values())


def archive(client: Any, url: str, *, before_position: int, rows_per_file: int = 10_000,
            row_group_rows: int = 1024, compression: str = "zstd", storage_options: dict | None = None,
            timeout_s: float | None = None) -> ArchiveRun:
    """Move the events of ``$all`` below ``before_position`` to Parquet files under ``url`` (see the
    module docstring), ``rows_per_file`` events a file; then drop their live rows. Safe to call
    again after a crash at any step (it finishes the drops first), and from a Ray task (it keeps no
    state between calls: give it a client of the store). Raises
    :class:`~ddia_ray.errors.ArchiveConflictError` if another archiver moves the archive meanwhile."""
    _int("before_position", before_position)
    if type(rows_per_file) is not int or not 1 <= rows_per_file <= FILE_ROWS_MAX:
        raise InvalidArgumentError(f"rows_per_file is an int in 1..{FILE_ROWS_MAX}, got {rows_per_file!r}")
    _int("row_group_rows", row_group_rows, 1)
    reader = ArchiveReader(url, storage_options=storage_options)
    upto, _, recorded, end = _ask(client, "events.archive_state", (), timeout_s)
    if recorded and recorded != reader.url:
        raise ArchiveConflictError(f"this store archives to {recorded!r}, not {reader.url!r}", archived_upto=upto)
    dropped = _drop(client, upto, timeout_s)
    target = min(before_position, end)
    files = []
    while upto < target:
        rows = _live(client, upto, min(upto + rows_per_file, target) - 1, timeout_s)
        data, f = encode_file(rows, row_group_rows, compression)
        reader.write(f, data)
        upto = _call(client, "events.archive_commit", (f.row(), _streams(rows), f.first, reader.url), timeout_s)
        reader.remove_uncommitted(f)
        dropped = _drop(client, upto, timeout_s)
        files.append(f)
    return ArchiveRun(tuple(files), upto, dropped)


def committed_files(client: Any, timeout_s: float | None = None) -> list[ArchiveFile]:
    """Every committed archive file, in position order (the manifest)."""
    files: list[ArchiveFile] = []
    while True:
        got = _ask(client, "events.archive_files", (files[-1].last + 1 if files else 0, _LIST_MAX), timeout_s)
        files += [ArchiveFile.of(r) for r in got]
        if len(got) < _LIST_MAX:
            return files


def _checked_files(client: Any, url: str | None, storage_options: dict | None,
                   verify: bool) -> tuple[ArchiveReader, list[ArchiveFile]]:
    recorded = _ask(client, "events.archive_state", ())[2]
    if not (url or recorded):
        raise InvalidArgumentError("this store has no archive yet (and no url was given)")
    reader = ArchiveReader(url or recorded, storage_options=storage_options)
    files = committed_files(client)
    for f in files:  # size, footer, schema and layout (verify: every byte) before any analytics run
        reader.table(f) if verify else reader.check(f)
    return reader, files


def _arrow_fs(reader: ArchiveReader) -> Any:
    """The archive's filesystem for Arrow (:func:`~ddia_ray._fs.arrow_fs`; over ``memory://`` scan
    with ``use_threads=False``)."""
    return arrow_fs(reader.fs)


def archive_dataset(client: Any, url: str | None = None, *, storage_options: dict | None = None,
                    verify: bool = False) -> Any:
    """The committed archive as a ``pyarrow.dataset.Dataset`` (exactly the files the manifest names,
    never an uncommitted leftover), for analytics with pyarrow filters and projections. Each file's
    size, footer and layout are checked first; ``verify`` also checks every byte's CRC-32.
    ``url`` defaults to the one the store recorded."""
    import pyarrow.dataset as ds

    reader, files = _checked_files(client, url, storage_options, verify)
    return ds.dataset([reader.path(f) for f in files], schema=schema(), format="parquet", filesystem=_arrow_fs(reader))


def archive_ray_dataset(client: Any, url: str | None = None, *, storage_options: dict | None = None,
                        verify: bool = False, **read_options: Any) -> Any:
    """The committed archive as a Ray Data dataset (``ray.data.read_parquet`` of the manifest's files
    through the archive's filesystem; ``read_options`` go to it). ``memory://`` lives in one process,
    so Ray's workers read ``file://`` (a disk they share) or object stores."""
    import ray.data

    reader, files = _checked_files(client, url, storage_options, verify)
    if not files:
        return ray.data.from_arrow(schema().empty_table())
    return ray.data.read_parquet([reader.path(f) for f in files], schema=schema(), filesystem=_arrow_fs(reader),
                                 **read_options)
