"""The event store's client: appends with expected versions, stream and ``$all`` reads, metadata.

Theory of operation
-------------------
The client turns each request into one procedure call or one query of the
store's backend (:mod:`.procedures`): a :class:`ReplicatedBackend` over a
replicated store's client in a Ray cluster, or a :class:`~.local.LocalBackend`
in one process. Appends go out as futures (``append_nowait``), so many appends
to different streams share the replicated store's batches: a Ray call costs
about a millisecond, and the store's client packs every write that waits into
one log entry (each append stays atomic on its own, and one append's refusal does
not touch the others in its entry).

Reads come back in pages (at most :data:`~.queries.MAX_PAGE_ROWS` events per
call); the iterators here read on from where a page ended. A stream read is one
query that reads the stream's head and its events on one replica, at one
position of the log, so the retention it applies and the events it returns agree.

Archived events (:mod:`.archive`) are served where they belong: every read asks the store, in the
same query, where the archive's dropped prefix ends, and takes what is below it from the archive's
files (a stream's versions below its first live one; ``$all`` and index pages below
``dropped_upto``). A read that touches no archived event costs no archive lookup. The archive's
URL is the one the store recorded, or the ``archive`` the client was given (a URL, with
``archive_options`` for its filesystem, or an :class:`~.archive_files.ArchiveReader`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import operator
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from ..errors import CorruptRecordError, InvalidArgumentError
from ..replication.backend import ProcedureBackend, ProcedureClient
from . import keys
from .records import (ANY, AppendResult, RecordedEvent, StreamMetadata, check_expected, check_stream,
                      event_data, recorded_event)

__all__ = ["EventStoreClient", "ReplicatedBackend"]

#: The backend on Ray: the event store's procedures and queries through a replicated store's client.
ReplicatedBackend = ProcedureBackend

_PAGE = 1000
_FIELDS = operator.attrgetter("id", "type", "data", "metadata")  # an EventData as an appended event
_EVENT_FIELD_TYPES = frozenset({str, bytes})
_chain = itertools.chain.from_iterable


def _now_ms() -> int:
    return int(time.time() * 1000)


class EventStoreClient(ProcedureClient):
    """Append to and read an event store (see the module docstring). ``timeout_s``: how long a
    blocking call waits for its answer. ``archive``: where archived events are read (a URL or an
    :class:`~.archive_files.ArchiveReader`; default: the URL the store recorded), ``archive_options``:
    its fsspec storage options (credentials, endpoint)."""

    timeout_message = ("the event store did not answer in time; an append's outcome is unknown (retry it with the "
                       "same event ids and expected version: a repeat at that place is recognised)")

    def __init__(self, backend: Any, *, timeout_s: float = 30.0, archive: Any = None,
                 archive_options: dict | None = None) -> None:
        from .archive_files import ArchiveReader

        super().__init__(backend, timeout_s=timeout_s)
        if not (archive is None or isinstance(archive, ArchiveReader) or (isinstance(archive, str) and archive)):
            raise InvalidArgumentError(f"archive is a URL, an ArchiveReader or None, got {archive!r:.80}")
        if archive_options is not None and not isinstance(archive_options, dict):
            raise InvalidArgumentError("archive_options is a dict of fsspec storage options")
        self._archive: Any = archive
        self._archive_options = archive_options
        self._archive_lock = threading.Lock()

    def archive_reader(self, recorded: str | None = None, *, timeout_s: float | None = None) -> Any:
        """The reader of the store's archive: the one given, one for the URL given, or one for the URL
        the store recorded (``recorded``, or asked for)."""
        from .archive_files import ArchiveReader

        with self._archive_lock:
            if isinstance(self._archive, ArchiveReader):
                return self._archive
        url = self._archive
        if url is None:
            url = recorded or self.wait(self.backend.query_nowait("events.archive_state", ()), timeout_s)[2]
        if not url:
            raise CorruptRecordError("the store has archived events but no archive URL recorded")
        reader = ArchiveReader(url, storage_options=self._archive_options)
        with self._archive_lock:
            if not isinstance(self._archive, ArchiveReader):
                self._archive = reader
            return self._archive

    # --- appends -----------------------------------------------------------------------------------

    def append_nowait(self, stream: str, events: Iterable[Any], expected: int | str = ANY, *,
                      created_ms: int | None = None) -> concurrent.futures.Future:
        """Start appending ``events`` (codec records or :class:`~.records.EventData`) to ``stream``
        atomically if ``expected`` holds; the future holds an :class:`~.records.AppendResult`."""
        check_stream(stream)
        check_expected(expected)
        if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
            raise InvalidArgumentError("append takes an iterable of events")
        batch = tuple(map(_FIELDS, map(event_data, events)))
        # EventData checked its fields when made, but a dataclass can be changed after: one C-level
        # pass over them all lets the call skip the codec's general walk (call_op's ``checked``).
        if not _EVENT_FIELD_TYPES.issuperset(map(type, _chain(batch))):
            raise InvalidArgumentError("an event's id and type are str, its data and metadata bytes")
        created = _now_ms() if created_ms is None else created_ms
        if type(created) is not int or created < 0:
            raise InvalidArgumentError(f"created_ms is milliseconds since the epoch (an int >= 0), got {created!r}")
        inner = self.backend.call_nowait("events.append", (stream, expected, batch, created), checked=True)
        outer: concurrent.futures.Future = concurrent.futures.Future()

        def done(f: concurrent.futures.Future) -> None:
            try:
                outer.set_result(AppendResult(*f.result()))
            except BaseException as e:  # noqa: BLE001 - the store's refusal: the caller's
                outer.set_exception(e)

        inner.add_done_callback(done)
        return outer

    def append(self, stream: str, events: Iterable[Any], expected: int | str = ANY, *,
               timeout_s: float | None = None, created_ms: int | None = None) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if ``expected`` holds (see :meth:`append_nowait`).

        Raises :class:`~ddia_ray.errors.WrongExpectedVersionError` (with the actual version) when it
        does not, :class:`~ddia_ray.errors.StreamDeletedError` for a tombstoned stream. A retry of
        the same events (same ids) answers the first append's result and writes nothing."""
        return self.wait(self.append_nowait(stream, events, expected, created_ms=created_ms), timeout_s)

    # --- stream reads ------------------------------------------------------------------------------

    def read_stream(self, stream: str, from_version: int | None = None, *, backward: bool = False,
                    max_count: int | None = None, timeout_s: float | None = None) -> list[RecordedEvent]:
        """``stream``'s events from ``from_version`` (default: the first, or backward the last; backward
        reads go down from it), at most ``max_count``; [] for a stream with no events."""
        return list(self.iter_stream(stream, from_version, backward=backward, max_count=max_count,
                                     timeout_s=timeout_s))

    def read_streams(self, streams: Iterable[str] | dict[str, int], *,
                     timeout_s: float | None = None) -> dict[str, list[RecordedEvent]]:
        """Each of ``streams`` read forward and whole: ``{stream: its events}`` in the order given
        ([] for a stream with no events). ``streams`` is an iterable of names (each read from version
        0) or a dict ``{name: from_version}`` (after a snapshot, say).

        Loading many aggregates at once: the streams go in a few ``events.read_streams`` queries
        (:mod:`.stream_batch`, up to :data:`~.stream_batch.MAX_BATCH_STREAMS` streams each) sent
        together as futures, so they cost a round trip per query rather than one per stream.
        Retention, deletion and archived versions are applied as :meth:`read_stream` applies them (a
        stream longer than a page, or with archived versions, is read on by it). Each query reads
        one state of the leader; two streams of different queries may be read at different log
        positions, as two pages of one stream may. A tombstoned stream raises
        :class:`~ddia_ray.errors.StreamDeletedError`."""
        from .stream_batch import MAX_BATCH_STREAMS

        if isinstance(streams, (str, bytes)) or not isinstance(streams, Iterable):
            raise InvalidArgumentError(f"read_streams takes an iterable of stream names or a dict of "
                                       f"{{stream: from_version}}, got {type(streams).__name__}")
        wanted = dict(streams) if isinstance(streams, dict) else dict.fromkeys(streams, 0)
        for stream, version in wanted.items():
            check_stream(stream)
            if type(version) is not int or version < 0:
                raise InvalidArgumentError(f"stream {stream!r}: from_version is an int >= 0, got {version!r}")
        out: dict[str, list[RecordedEvent]] = {s: [] for s in wanted}
        pending = list(wanted.items())
        while pending:
            now = _now_ms()
            groups = [tuple(pending[i:i + MAX_BATCH_STREAMS]) for i in range(0, len(pending), MAX_BATCH_STREAMS)]
            futures = [self.backend.query_nowait("events.read_streams", (g, _PAGE, now)) for g in groups]
            pending = []
            for group, future in zip(groups, futures):
                for (stream, start), answer in zip(group, self.wait(future, timeout_s)):
                    if answer is None:  # past the call's budget: asked for again in the next round
                        pending.append((stream, start))
                        continue
                    _, last, parts = answer
                    rows = keys.part_rows(parts)
                    if _short(rows, start, False, _PAGE, last):
                        # Archived or retention-cut versions: the single-stream reader tells them apart.
                        out[stream].extend(self.iter_stream(stream, start, timeout_s=timeout_s))
                        continue
                    out[stream].extend([recorded_event(*row) for row in rows])
                    if rows and rows[-1][1] < last:  # a page's worth, or cut by the budget: read on
                        pending.append((stream, rows[-1][1] + 1))
        return out

    def iter_stream(self, stream: str, from_version: int | None = None, *, backward: bool = False,
                    max_count: int | None = None, page: int = _PAGE,
                    timeout_s: float | None = None) -> Iterator[RecordedEvent]:
        """Iterate ``stream``'s events page by page (see :meth:`read_stream`)."""
        check_stream(stream)
        remaining = _count(max_count)
        version = (-1 if backward else 0) if from_version is None else from_version
        if type(version) is not int or version < (-1 if backward else 0):
            raise InvalidArgumentError(f"from_version is a version >= 0 (or None), got {from_version!r}")
        while remaining is None or remaining > 0:
            n = page if remaining is None else min(page, remaining)
            args = (stream, version, backward, n, _now_ms())
            # The page comes packed (the chunks' stored bytes, expanded here); rows lead with the stream.
            found, last, parts = self.query("events.read_stream", args + (True,), timeout_s=timeout_s)
            rows = keys.part_rows(parts)
            if backward:
                rows.reverse()
            start = (last if version == -1 else min(version, last)) if backward else version
            if _short(rows, start, backward, n, last):
                # The page does not start (or, backward, end) where it could: retention, or archived
                # versions. Ask again with what tells them apart (the live path never gets here).
                found, last, plain, first_live, first_visible, max_age_ms = self.wait(self.backend.query_nowait(
                    "events.archive_read_stream", args), timeout_s)
                rows = [(stream, *row) for row in plain]
                start = (last if version == -1 else min(version, last)) if backward else max(version, first_visible)
            else:
                first_live = first_visible = 0
            if first_visible <= start < first_live:
                # Archived and dropped: every version below the first live one is in the archive.
                lo, hi = ((max(first_visible, start - n + 1), start) if backward
                          else (start, min(first_live - 1, start + n - 1)))
                got = self._archived_versions(stream, lo, hi, backward, max_age_ms, args[4], timeout_s)
                yield from got
                if remaining is not None:
                    remaining -= len(got)
                version = lo - 1 if backward else hi + 1
                if backward and version < first_visible:
                    return
                continue
            for row in rows:
                yield recorded_event(*row)
            if remaining is not None:
                remaining -= len(rows)
            if not rows:
                return
            version = rows[-1][1] - 1 if backward else rows[-1][1] + 1
            if version < 0 or (not backward and version > last):
                return

    def _archived_versions(self, stream: str, lo: int, hi: int, backward: bool, max_age_ms: int | None, now: int,
                           timeout_s: float | None) -> list[RecordedEvent]:
        """Versions ``lo..hi`` of ``stream`` from the archive, in read order, with the live read's
        ``max_age`` applied on the same clock."""
        from .archive import archived_stream

        rows = archived_stream(self, self.archive_reader(timeout_s=timeout_s), stream, lo, hi, timeout_s)
        return [RecordedEvent(*row) for row in (reversed(rows) if backward else rows)
                if max_age_ms is None or row[7] >= now - max_age_ms]

    def stream_version(self, stream: str, *, timeout_s: float | None = None) -> int:
        """The version of ``stream``'s last event (-1: none, or soft-deleted); the value an exact
        expected version compares with."""
        info = self._info(stream, timeout_s)
        return -1 if info[1] else info[0]

    # --- $all and the indexes ----------------------------------------------------------------------

    def read_all(self, from_position: int | None = None, *, backward: bool = False, max_count: int | None = None,
                 stream_prefix: str | None = None, type_prefix: str | None = None,
                 timeout_s: float | None = None) -> list[RecordedEvent]:
        """Events of ``$all`` in commit order from ``from_position`` (default: the first, or backward
        the last; backward reads go down from it), optionally only those whose stream or type starts
        with a prefix."""
        start = (-1 if backward else 0) if from_position is None else from_position
        return list(self.iter_all(start, backward=backward, max_count=max_count, stream_prefix=stream_prefix,
                                  type_prefix=type_prefix, timeout_s=timeout_s))

    def iter_all(self, from_position: int = 0, *, backward: bool = False, max_count: int | None = None,
                 stream_prefix: str | None = None, type_prefix: str | None = None, page: int = _PAGE,
                 timeout_s: float | None = None) -> Iterator[RecordedEvent]:
        """Iterate ``$all`` page by page (see :meth:`read_all`); stops at the end of what is committed."""
        remaining = _count(max_count)
        for rows, _, _ in self.pages_all(from_position, backward=backward, stream_prefix=stream_prefix,
                                         type_prefix=type_prefix, page=page, timeout_s=timeout_s):
            for row in rows:
                if remaining is not None:
                    if remaining == 0:
                        return
                    remaining -= 1
                yield recorded_event(*row)

    def pages_all(self, from_position: int = 0, *, backward: bool = False, stream_prefix: str | None = None,
                  type_prefix: str | None = None, page: int = _PAGE,
                  timeout_s: float | None = None) -> Iterator[tuple[tuple, int, bool]]:
        """``$all`` as ``(rows, next position, at end)`` pages until the end of what is committed: what a
        subscription reads (it keeps the next position as its checkpoint, filter or not)."""
        kind, prefix = _filter(stream_prefix, type_prefix)
        position = from_position
        while True:
            rows, position, at_end = self.read_all_page(position, backward=backward, page=page, kind=kind,
                                                        prefix=prefix, timeout_s=timeout_s)
            yield rows, position, at_end
            if at_end:
                return

    def read_all_page(self, from_position: int, *, backward: bool = False, page: int = _PAGE,
                      kind: str | None = None, prefix: str = "", timeout_s: float | None = None) -> tuple:
        """One page of ``$all``: ``(rows, next position, at end)`` (rows as RecordedEvent fields); a page
        below the archive's ``dropped_upto`` comes from the archive."""
        return self.read_all_page_nowait(from_position, backward=backward, page=page, kind=kind,
                                         prefix=prefix)(timeout_s)

    def read_all_page_nowait(self, from_position: int, *, backward: bool = False, page: int = _PAGE,
                             kind: str | None = None, prefix: str = "") -> Callable[..., tuple]:
        """Start reading one page of ``$all`` (:meth:`read_all_page`) and return at once: the result is
        a function of an optional ``timeout_s`` that waits for the page and returns it (what lets a
        subscription ask for its next page while its consumer handles this one)."""
        from .archive import archived_all_page
        from .queries import MAX_PAGE_ROWS, MAX_SCAN_ROWS

        if type(page) is not int or page < 1:
            raise InvalidArgumentError(f"a page is an int >= 1, got {page!r}")
        # A forward page comes packed: the chunks' stored bytes, expanded here (keys.part_rows).
        args = (from_position, backward, page, kind, prefix) + (() if backward else (True,))
        pending = self.backend.query_nowait("events.archive_read_all", args)

        def result(timeout_s: float | None = None) -> tuple:
            live, dropped, url, end = self.wait(pending, timeout_s)
            if live is not None:
                if backward:
                    return live
                parts, nxt, at_end = live
                return keys.part_rows(parts, prefix if kind == "type" else ""), nxt, at_end
            start = end - 1 if backward and from_position == -1 else from_position
            return archived_all_page(self, self.archive_reader(url, timeout_s=timeout_s), start, backward=backward,
                                     page=min(page, MAX_PAGE_ROWS), kind=kind, prefix=prefix, dropped_upto=dropped,
                                     scan_max=MAX_SCAN_ROWS, timeout_s=timeout_s)

        return result

    def read_category(self, category: str, from_position: int = 0, *, max_count: int | None = None,
                      timeout_s: float | None = None) -> list[RecordedEvent]:
        """The events of every stream of ``category`` (``order`` for ``order-42``; EventStoreDB's
        ``$ce-order``), in ``$all`` order from ``from_position``."""
        return self._index("category", category, from_position, max_count, timeout_s)

    def read_type(self, event_type: str, from_position: int = 0, *, max_count: int | None = None,
                  timeout_s: float | None = None) -> list[RecordedEvent]:
        """The events of type ``event_type`` (EventStoreDB's ``$et-<type>``), in ``$all`` order."""
        return self._index("type", event_type, from_position, max_count, timeout_s)

    def _index(self, kind: str, name: str, position: int, max_count: int | None,
               timeout_s: float | None) -> list[RecordedEvent]:
        remaining = _count(max_count)
        out: list[RecordedEvent] = []
        while remaining is None or remaining > 0:
            n = _PAGE if remaining is None else min(_PAGE, remaining)
            live, dropped, url = self.wait(self.backend.query_nowait(
                "events.archive_read_index", (kind, name, position, n)), timeout_s)
            if live is not None:
                rows, position, at_end = live
            else:  # below the archive's dropped_upto: the index rows are gone, the archive filters
                from .archive import archived_all_page
                from .queries import MAX_SCAN_ROWS

                rows, position, at_end = archived_all_page(
                    self, self.archive_reader(url, timeout_s=timeout_s), position, backward=False, page=n,
                    kind="category" if kind == "category" else "event_type", prefix=name, dropped_upto=dropped,
                    scan_max=MAX_SCAN_ROWS, timeout_s=timeout_s)
            out.extend(recorded_event(*r) for r in rows)
            if remaining is not None:
                remaining -= len(rows)
            if at_end:
                break
        return out

    # --- snapshots ---------------------------------------------------------------------------------

    def save_snapshot(self, stream: str, version: int, state: bytes, *, timeout_s: float | None = None) -> bool:
        """Keep ``state`` (the aggregate folded up to ``version``) as ``stream``'s snapshot, unless a
        newer one is kept already; returns whether it was kept. Snapshots are no events: they are in
        no stream and not in ``$all``."""
        check_stream(stream)
        return self.call("events.save_snapshot", (stream, version, state), timeout_s=timeout_s)

    def load_snapshot(self, stream: str, *, timeout_s: float | None = None) -> tuple[int, bytes] | None:
        """``stream``'s latest snapshot as ``(version, state)``, or None."""
        check_stream(stream)
        return self.query("events.load_snapshot", (stream,), timeout_s=timeout_s)

    def load_snapshot_nowait(self, stream: str) -> concurrent.futures.Future:
        """Start :meth:`load_snapshot`; the future holds its answer (many loads share round trips)."""
        check_stream(stream)
        return self.backend.query_nowait("events.load_snapshot", (stream,))

    # --- metadata and deletion ---------------------------------------------------------------------

    def _info(self, stream: str, timeout_s: float | None) -> tuple:
        check_stream(stream)
        return self.query("events.stream_info", (stream,), timeout_s=timeout_s)

    def get_metadata(self, stream: str, *, timeout_s: float | None = None) -> tuple[StreamMetadata, int]:
        """``stream``'s metadata and its metadata version (-1: never set)."""
        _, _, _, tb, max_count, max_age_ms, custom, meta_version = self._info(stream, timeout_s)
        return StreamMetadata(max_count, None if max_age_ms is None else max_age_ms / 1000, tb, custom), meta_version

    def set_metadata(self, stream: str, metadata: StreamMetadata, *, expected_metadata_version: int | None = None,
                     timeout_s: float | None = None) -> int:
        """Replace ``stream``'s metadata (if its metadata version is ``expected_metadata_version``, when
        given); returns the new metadata version."""
        check_stream(stream)
        if type(metadata) is not StreamMetadata:
            raise InvalidArgumentError(f"metadata is a StreamMetadata, got {type(metadata).__name__}")
        expected = -2 if expected_metadata_version is None else expected_metadata_version
        if type(expected) is not int or expected < -2:
            raise InvalidArgumentError(f"expected_metadata_version is an int >= -1 or None, got {expected!r}")
        age = None if metadata.max_age_s is None else max(1, int(metadata.max_age_s * 1000))
        args = (stream, (metadata.max_count, age, metadata.truncate_before, metadata.custom), expected)
        return self.call("events.set_metadata", args, timeout_s=timeout_s)

    def delete_stream(self, stream: str, expected: int | str = ANY, *, timeout_s: float | None = None) -> int:
        """Soft-delete ``stream``: its events disappear from reads (``$all`` keeps them until removed),
        and a later append starts after them. Returns its last version."""
        check_stream(stream)
        check_expected(expected)
        return self.call("events.delete", (stream, expected, False), timeout_s=timeout_s)

    def tombstone_stream(self, stream: str, expected: int | str = ANY, *, timeout_s: float | None = None) -> int:
        """Hard-delete ``stream``: it can never be read or appended to again."""
        check_stream(stream)
        check_expected(expected)
        return self.call("events.delete", (stream, expected, True), timeout_s=timeout_s)


def _short(rows: list, start: int, backward: bool, n: int, last: int) -> bool:
    """Whether a stream page (read rows, the stream first) may be missing archived versions: forward,
    it does not start at ``start``; backward, it is short of ``n`` events and does not end at version 0."""
    if backward:
        return start >= 0 and len(rows) < n and (not rows or rows[-1][1] > 0)
    return start <= last and (not rows or rows[0][1] != start)


def _count(max_count: Any) -> int | None:
    if max_count is None:
        return None
    if type(max_count) is not int or max_count < 0:
        raise InvalidArgumentError(f"max_count is an int >= 0 or None, got {max_count!r}")
    return max_count


def _filter(stream_prefix: Any, type_prefix: Any) -> tuple[str | None, str]:
    if stream_prefix is not None and type_prefix is not None:
        raise InvalidArgumentError("filter $all by a stream prefix or by a type prefix, not both")
    for p in (stream_prefix, type_prefix):
        if p is not None and (not isinstance(p, str) or not p):
            raise InvalidArgumentError(f"a filter prefix is a non-empty str, got {p!r}")
    if stream_prefix is not None:
        return "stream", stream_prefix
    if type_prefix is not None:
        return "type", type_prefix
    return None, ""
