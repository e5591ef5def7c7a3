"""The event store's decisions and reads, as procedures the replicated store runs in its log.

Theory of operation
-------------------
An append is decided where the replicated store decides a compare-and-set
(:mod:`ddia_ray.replication.procedures`): once per log entry, against the state
as of that entry, by the leader (leader-follower) or by every member at apply
time (Raft). So the expected-version check, the idempotency check and the
numbering of positions happen in log order with no lock and no retry loop, and
the log keeps only the rows they wrote. This is how EventStoreDB's single writer
assigns positions, with the replicated log as the writer. Everything here is a
pure function of ``get`` (or of the state's ``get_many``/``scan``) and its
arguments; the appender's clock arrives as an argument.

``events.append`` (``stream, expected, events, created_ms``):

1. A tombstoned stream refuses every append (:class:`~ddia_ray.errors.StreamDeletedError`).
2. If the batch repeats an append the stream holds, the append is a retry: the
   answer is the first one's and nothing is written. What is compared is the
   place the retry names, as EventStoreDB does it (its idempotency by expected
   version): with an exact expected version ``E`` (or ``no_stream``, -1), the
   stored append that starts at version ``E + 1``; with ``any`` or
   ``stream_exists`` (and ``no_stream``, whose stream may have been recreated
   after a soft delete, past version 0), the stream's last
   :data:`~.keys.RECENT_APPENDS` appends, which the head row lists by first id
   (EventStoreDB keeps an in-memory cache of recent ids for this; ours is in
   the replicated head, so it survives a failover). A batch whose first id
   names one of those places but that is not the same ids in the same order is
   :class:`~ddia_ray.errors.DuplicateEventIdError`. Ids are not unique across
   the store: keeping a row per event id forever cost a row write and a lookup
   per event on every member, over half of an append's work (docs/events.md,
   "Idempotency by place").
3. The expected version is checked against the stream's last version (-1 when
   it has no event or was soft-deleted); a mismatch writes nothing and answers
   :class:`~ddia_ray.errors.WrongExpectedVersionError` with the actual version.
4. The events get the next versions and the next ``$all`` positions, and their
   rows (:mod:`.keys`) are written in the same entry as the new head and the
   global sequence: atomically, all or nothing.

The reads are queries, in :mod:`.queries`.
"""

from __future__ import annotations

from typing import Any

from ..errors import (DuplicateEventIdError, InvalidArgumentError, ProjectionConflictError,
                      StreamDeletedError, WrongExpectedVersionError)
from ..replication.procedures import procedure
from ..replication.records import DELETE, DELETE_RANGE, PUT
from . import keys
from .keys import Head, checkpoint_of, pack, unpack
from .records import ANY, MAX_BATCH_EVENTS, NO_STREAM, STREAM_EXISTS, check_expected, check_projection, check_stream

__all__ = ["append", "set_metadata", "delete", "save_snapshot", "project", "reset_projection"]


def _check_expected(stream: str, expected: int | str, head: Head) -> None:
    actual = head.actual
    ok = (expected == ANY or (expected == NO_STREAM and actual == -1)
          or (expected == STREAM_EXISTS and actual >= 0) or expected == actual)
    if not ok:
        raise WrongExpectedVersionError(f"stream {stream!r}: expected version {expected!r}, actual {actual}",
                                        stream=stream, expected=expected, actual=actual)


_EVENT_SHAPE = "an appended event is (id, type, data, metadata): a non-empty id, a non-empty type without NUL, bytes"


def _check_events(events: Any) -> tuple[tuple, tuple, tuple, tuple]:
    """The columns ``(ids, types, datas, metadatas)`` of an append's events, checked column by
    column in C-level passes (the leader checks every event of every append)."""
    if not isinstance(events, tuple) or len(events) > MAX_BATCH_EVENTS:
        raise InvalidArgumentError(f"an append carries a tuple of at most {MAX_BATCH_EVENTS} events")
    if not events:
        return (), (), (), ()
    if set(map(type, events)) != {tuple} or set(map(len, events)) != {4}:
        raise InvalidArgumentError(_EVENT_SHAPE)
    ids, types, datas, metas = zip(*events)
    if (set(map(type, ids)) != {str} or set(map(type, types)) != {str} or set(map(type, datas)) != {bytes}
            or set(map(type, metas)) != {bytes} or not all(ids) or not all(types)
            or any("\x00" in t for t in set(types))):
        raise InvalidArgumentError(_EVENT_SHAPE)
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("an append names one event id twice")
    return ids, types, datas, metas


@procedure("events.append")
def append(get, args: Any) -> tuple[tuple, tuple]:
    """Append ``events`` to ``stream`` if ``expected`` holds (see the module docstring); the result is
    ``(stream, first version, last version, first position, last position)``."""
    stream, expected, events, created_ms = args
    check_stream(stream)
    check_expected(expected)
    ids, types, datas, metas = _check_events(events)
    if type(created_ms) is not int:
        raise InvalidArgumentError(f"an append's created time is an int of milliseconds, got {created_ms!r:.40}")
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if ids and head.last >= 0:
        first = _retried(get, stream, expected, ids, head)
        if first is not None:
            return (), first
    _check_expected(stream, expected, head)
    if not events:
        return (), (stream, -1, head.actual, -1, -1)
    n = len(events)
    first_version, first_position = head.last + 1, keys.next_position(get)
    last_version, last_position = first_version + n - 1, first_position + n - 1
    # One chunk row holds the events (keys.py: why chunks).
    chunk = keys.Chunk(first_version, first_position, created_ms, ids, types, datas, metas)
    ops = [(PUT, keys.chunk_key(stream, last_version), chunk.row())]
    chunk_pointer = pack(first_position, stream, last_version)
    ops.append((PUT, keys.page_key(last_position), chunk_pointer))
    ops.append((PUT, keys.category_key(keys.category_of(stream), last_position), chunk_pointer))
    for event_type, positions in chunk.type_positions().items():
        ops.append((PUT, keys.type_key(event_type, positions[-1]),
                    pack(tuple(positions), stream, last_version, last_position)))
    head.last = last_version
    head.deleted = False  # an append brings a soft-deleted stream back, after its old events
    head.remember(ids[0], last_version)
    ops.append((PUT, keys.head_key(stream), head.row()))
    ops.append((PUT, keys.GLOBAL, pack(last_position + 1)))
    return tuple(ops), (stream, first_version, last_version, first_position, last_position)


def _retried(get, stream: str, expected: Any, ids: tuple, head: Head) -> tuple | None:
    """The first answer of the append that ``ids`` repeat at the place ``expected`` names (see the
    module docstring), or None if they repeat none there."""
    if type(expected) is int or expected == NO_STREAM:
        version = (-1 if expected == NO_STREAM else expected) + 1
        if version <= head.last:  # else nothing is stored at that place yet: not a retry
            found = get.seek(keys.chunk_key(stream, version), keys.stream_range(stream)[1])
            chunk = keys.Chunk.of(found[1]) if found is not None else None
            if chunk is not None and chunk.first_version == version:
                if chunk.ids == ids:
                    return _answer(stream, chunk)
                if chunk.ids[0] == ids[0]:
                    raise _not_that_append(stream, chunk, ids)
        if expected != NO_STREAM:
            return None  # the place holds other events: the expected version is what is wrong
        # A stream recreated after a soft delete starts past version 0: its first append is
        # recognised among the recent ones, as an ``any`` append is.
    last = next((v for first_id, v in reversed(head.recent) if first_id == ids[0]), None)
    row = get(keys.chunk_key(stream, last)) if last is not None else None
    if row is None:
        return None  # not a recent append (or dropped by an archive since): not recognised
    chunk = keys.Chunk.of(row)
    if chunk.ids != ids:
        raise _not_that_append(stream, chunk, ids)
    return _answer(stream, chunk)


def _answer(stream: str, chunk: keys.Chunk) -> tuple:
    return (stream, chunk.first_version, chunk.last_version, chunk.first_position, chunk.last_position)


def _not_that_append(stream: str, chunk: keys.Chunk, ids: tuple) -> DuplicateEventIdError:
    return DuplicateEventIdError(f"event id {ids[0]!r} starts the append at {stream!r} version {chunk.first_version}, "
                                 f"which holds other ids: a retry repeats its whole batch", event_id=ids[0])


@procedure("events.set_metadata")
def set_metadata(get, args: Any) -> tuple[tuple, int]:
    """Replace ``stream``'s retention and custom metadata if its metadata version is
    ``expected_meta`` (-2: any); the result is the new metadata version."""
    stream, (max_count, max_age_ms, truncate_before, custom), expected_meta = args
    check_stream(stream)
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if expected_meta != -2 and expected_meta != head.meta_version:
        raise WrongExpectedVersionError(f"stream {stream!r}'s metadata: expected version {expected_meta}, actual "
                                        f"{head.meta_version}", stream=stream, expected=expected_meta,
                                        actual=head.meta_version)
    head.max_count, head.max_age_ms, head.custom = max_count, max_age_ms, custom
    # A soft delete's truncation stays: new metadata can move it forward, never back over deleted events.
    floor = head.last + 1 if head.deleted else 0
    head.truncate_before = max(truncate_before or 0, floor) or None
    head.meta_version += 1
    return ((PUT, keys.head_key(stream), head.row()),), head.meta_version


@procedure("events.delete")
def delete(get, args: Any) -> tuple[tuple, int]:
    """Delete ``stream`` if ``expected`` holds: soft (its events disappear from reads, and a later
    append starts after them) or, with ``hard``, a tombstone (it can never be used again). The result
    is the stream's last version."""
    stream, expected, hard = args
    check_stream(stream)
    check_expected(expected)
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    _check_expected(stream, expected, head)
    if hard:
        head.tombstoned = True
    elif head.last >= 0:
        head.deleted = True
        head.truncate_before = head.last + 1
    # The snapshot folds events that are gone now: a stream recreated after a soft delete must not
    # start from it (its versions continue, so the repository could not tell).
    return ((PUT, keys.head_key(stream), head.row()), (DELETE, keys.snapshot_key(stream), b"")), head.last


@procedure("events.save_snapshot")
def save_snapshot(get, args: Any) -> tuple[tuple, bool]:
    """Keep ``state`` as ``stream``'s snapshot at ``version`` unless a newer one is kept already (two
    writers racing never move it back); the result says whether it was kept. A snapshot is a cache
    of the events up to ``version``: it must be one the stream has."""
    stream, version, state = args
    check_stream(stream)
    if type(version) is not int or version < 0 or type(state) is not bytes:
        raise InvalidArgumentError("a snapshot is a version >= 0 and bytes")
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if version > head.last:
        raise InvalidArgumentError(f"stream {stream!r} has no version {version} to snapshot (its last is "
                                   f"{head.last})")
    old = get(keys.snapshot_key(stream))
    if old is not None and unpack(old, 2, "snapshot")[0] >= version:
        return (), False
    return ((PUT, keys.snapshot_key(stream), pack(version, state)),), True


@procedure("events.project")
def project(get, args: Any) -> tuple[tuple, int]:
    """Apply a projection's read-model ``changes`` (``(key, value or None)``) and move its checkpoint
    from ``expected`` to ``checkpoint`` in one entry, or refuse both if the checkpoint is not
    ``expected`` (another runner of the projection got there first): the read model and its
    checkpoint never disagree, so each event changes the model once (effectively once)."""
    name, expected, checkpoint, changes = args
    check_projection(name)
    if type(expected) is not int or type(checkpoint) is not int or not 0 <= expected <= checkpoint:
        raise InvalidArgumentError(f"a projection moves its checkpoint forward, got {expected!r} -> {checkpoint!r}")
    current = checkpoint_of(get, name)
    if current != expected:
        raise ProjectionConflictError(f"projection {name!r} is at checkpoint {current}, not {expected}: another "
                                      f"runner wrote it (or it was reset); reload and go on from there",
                                      projection=name, checkpoint=current)
    ops = []
    for change in changes:
        if not (isinstance(change, tuple) and len(change) == 2 and type(change[0]) is bytes
                and (change[1] is None or type(change[1]) is bytes)):
            raise InvalidArgumentError("a read-model change is (bytes key, bytes value or None)")
        key = keys.model_key(name, change[0])
        ops.append((PUT, key, change[1]) if change[1] is not None else (DELETE, key, b""))
    ops.append((PUT, keys.checkpoint_key(name), pack(checkpoint)))
    return tuple(ops), checkpoint


@procedure("events.reset_projection")
def reset_projection(get, args: Any) -> tuple[tuple, int]:
    """Delete a projection's read model and checkpoint (to rebuild it from zero); the result is the
    checkpoint it had."""
    (name,) = args
    check_projection(name)
    start, end = keys.model_range(name)
    return ((DELETE_RANGE, start, end), (DELETE, keys.checkpoint_key(name), b"")), checkpoint_of(get, name)


# --- reads -------------------------------------------------------------------------------------------


# The queries and the consumer groups' procedures register with these: the store is launched with
# this one module.
from . import queries  # noqa: E402, F401
from . import consumer_groups  # noqa: E402, F401
from . import group_service  # noqa: E402, F401  (the consumer groups' leader service)
from . import archive  # noqa: E402, F401
from . import stream_batch  # noqa: E402, F401
