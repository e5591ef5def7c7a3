"""Compaction and rollback: the two writes that rewrite history rows rather than add a change.

Theory of operation
-------------------
**Compaction** (etcd's ``Compact``) to revision ``C`` makes every revision below
``C`` unreadable and deletes the rows only those revisions needed. A read at
``R >= C`` of a key needs the key's newest row at or below ``R``; so for each
key the newest row below ``C`` is kept (unless it is a tombstone: then the key
is simply absent at ``C``) and every older row goes. A procedure cannot scan, so
compaction finds the keys to clean in the revision log (:mod:`.keys`): the keys
changed at each revision of ``[old C, new C)``. For each, the newest of those
revisions is the row kept, and one range delete removes the rows older than it
(rows sort newest first, so "older" is a range). The log's own rows below ``C``
go with one range delete. A step takes at most :data:`COMPACT_STEP` revisions so
that one log entry stays small; the client repeats it until the target is
reached, and reads below the compaction revision are refused from the first
step on (:class:`~ddia_ray.errors.CompactedError`).

Nothing a reader at ``R >= C`` follows is removed: a row's ``prev`` points to
the put just before it (never to a tombstone), which is either at or above
``C`` or the newest row below ``C``, which is kept; the revision log from ``C``
on stays, so a watch can start at ``C``.

**Rollback** to revision ``R`` writes, as one new revision, every key as it was
at ``R``. The keys changed since ``R`` are the union of the revision log's rows
``(R, now]``; for each, the first row after ``R`` points (``prev``) to the put
that held the key at ``R``, or to nothing if the key was absent then. A key that
was absent is deleted; one that had a value is put back with it (a new version
of the same key, or a new generation if it was deleted since). A restored key
is attached to no lease: the lease that held the old value may be gone, and a
rollback should not bring back a value that then vanishes on its own. Refused
below the compaction revision (the rows it needs may be gone) and when more than
:data:`ROLLBACK_WINDOW` revisions would be undone (one log entry would read and
write too much: roll back in steps, or restore from a backup).
"""

from __future__ import annotations

from typing import Any

from ..errors import CompactedError, FutureRevisionError, InvalidArgumentError
from ..replication.records import DELETE_RANGE
from ..replication.records import PUT as W_PUT
from . import keys
from .keys import DELETE, unpack
from .mvcc import Revision, history_row, read_meta

__all__ = ["compact_step", "rollback", "COMPACT_STEP", "ROLLBACK_WINDOW"]

#: Revisions one compaction step removes.
COMPACT_STEP = 1000
#: Revisions one rollback may undo.
ROLLBACK_WINDOW = 10_000


def _changed_at(get, revision: int) -> tuple:
    """The keys the revision log says ``revision`` changed (none if it has no row)."""
    row = get(keys.rev_key(revision))
    return unpack(row, 1, "revision log")[0] if row is not None else ()


def _check_revision(revision: Any) -> int:
    if type(revision) is not int or revision < 1:
        raise InvalidArgumentError(f"a revision is an int >= 1, got {revision!r}")
    return revision


def compact_step(get, revision: Any) -> tuple[tuple, tuple]:
    """The effects of one step towards compaction revision ``revision``, and ``(compacted, done)``."""
    _check_revision(revision)
    meta = read_meta(get)
    if revision > meta.revision:
        raise FutureRevisionError(f"cannot compact to revision {revision}: the store is at {meta.revision}",
                                  requested=revision, current=meta.revision)
    if revision <= meta.compacted:
        return (), (meta.compacted, True)
    start, end = meta.compacted, min(revision, meta.compacted + COMPACT_STEP)
    newest: dict[str, int] = {}
    for r in range(max(start, 1), end):
        for key in _changed_at(get, r):
            newest[key] = r
    ops: list[tuple] = []
    for key in sorted(newest):  # sorted: every member writes the same rows in the same order
        kept = newest[key]
        _, rows_end = keys.rows_range(key)
        ops.append((DELETE_RANGE, keys.row_key(key, kept - 1), rows_end))  # every row older than the kept one
        row = get(keys.row_key(key, kept))
        if row is not None and unpack(row, 6, "history")[0] == DELETE:
            # Absent at the compaction revision either way; the put after it (if any) has prev 0.
            ops.append((DELETE_RANGE, keys.row_key(key, kept), keys.row_key(key, kept - 1)))
    ops.append((DELETE_RANGE, keys.rev_key(0), keys.rev_key(end)))
    meta.compacted = end
    ops.append((W_PUT, keys.META, meta.row()))
    return tuple(ops), (end, end >= revision)


def rollback(get, revision: Any) -> tuple[tuple, int]:
    """The effects of rolling every key back to ``revision`` as one new revision, and that revision
    (the current one, with nothing written, if no key changed since)."""
    _check_revision(revision)
    meta = read_meta(get)
    if revision > meta.revision:
        raise FutureRevisionError(f"cannot roll back to revision {revision}: the store is at {meta.revision}",
                                  requested=revision, current=meta.revision)
    if revision < meta.compacted:
        raise CompactedError(f"cannot roll back to revision {revision}: it was compacted (the oldest revision kept "
                             f"is {meta.oldest})", requested=revision, oldest_kept=meta.oldest)
    if meta.revision - revision > ROLLBACK_WINDOW:
        raise InvalidArgumentError(f"a rollback undoes at most {ROLLBACK_WINDOW} revisions; revision {revision} is "
                                   f"{meta.revision - revision} revisions back")
    first_change: dict[str, int] = {}
    for r in range(revision + 1, meta.revision + 1):
        for key in _changed_at(get, r):
            first_change.setdefault(key, r)
    rev = Revision(get)
    for key in sorted(first_change):
        row = get(keys.row_key(key, first_change[key]))
        if row is None:
            raise InvalidArgumentError(f"the history of {key!r:.80} at revision {first_change[key]} is missing")
        _, _, prev = history_row(key, first_change[key], row)
        old = get(keys.row_key(key, prev)) if prev else None
        if old is None:
            rev.delete(key)
        else:
            rev.put(key, history_row(key, prev, old)[1][1], 0)
    return rev.effects(), rev.current
