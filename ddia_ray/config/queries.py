"""The configuration store's reads, as queries one replica answers from its state.

Theory of operation
-------------------
A query (:func:`ddia_ray.replication.procedures.query`) runs on the one replica
the client's read mode picks, against its state at one position of the log,
so everything one query returns is one consistent revision. Each bounds its
own work (a page), and the client reads on from where a page ended, always at
the revision of the first page: a paged read of a prefix is a snapshot, as an
etcd range with a pinned revision is.

* ``config.get`` ``(key, revision)`` -> a kv row or None;
* ``config.range`` ``(prefix, revision, after, limit)`` -> ``(rows, next
  after or None, revision)``;
* ``config.changes`` ``(start, ranges, limit)`` -> ``()`` if the store has no
  revision at or after ``start`` yet, else ``(events, next start)``: the
  watch feed. An empty answer is what lets a *blocking* query wait for the
  next write (the replica holds it until a write makes the answer non-empty);
  when revisions exist but none changed a watched key, the answer still moves
  ``next start`` on, so the client never scans them again;
* ``config.history`` ``(key, limit)``, ``config.revision`` ``()``,
  ``config.leases`` ``(after, limit)``, ``config.lease`` ``(lease,)``.

Kv rows are ``(key, value bytes or None, create, mod, version, lease)``; a
watch event is ``(kind, kv row, prev kv row or None)``.
"""

from __future__ import annotations

from typing import Any

from .._validate import page_limit
from ..errors import CompactedError, InvalidArgumentError
from ..replication.procedures import query
from . import keys
from .keys import PUT, unpack
from .mvcc import Live, check_read_revision, history_row, kv_at, missing_lease, read_meta
from .procedures import check_prefix
from .records import check_key

__all__ = ["get", "range_page", "changes", "history", "revision", "leases", "lease", "MAX_PAGE", "MAX_SCAN"]

#: Rows one read returns at most (a page).
MAX_PAGE = 1000
#: Rows a read looks at before it answers with where to go on (a prefix at a past revision skips keys
#: absent then; a watch skips revisions that changed no watched key).
MAX_SCAN = 4096


@query("config.get")
def get(state, args: Any) -> tuple | None:
    """``key``'s kv row at ``revision`` (0: now), or None."""
    key, revision = args
    check_key(key)
    meta = read_meta(state.get)
    at = check_read_revision(meta, revision)
    if at == meta.revision:
        live = Live.read(state.get(keys.current_key(key)))
        if live is None:
            return None
        row = state.get(keys.row_key(key, live.mod))
        return history_row(key, live.mod, row)[1] if row is not None else None
    return kv_at(state, key, at)


@query("config.range")
def range_page(state, args: Any) -> tuple:
    """One page of the keys under ``prefix`` after key ``after`` ("": from the first) at ``revision``."""
    prefix, revision, after, limit = args
    check_prefix(prefix)
    limit = page_limit(limit, MAX_PAGE)
    if not isinstance(after, str):
        raise InvalidArgumentError("a range page starts after a key (a str, '' for the first page)")
    meta = read_meta(state.get)
    at = check_read_revision(meta, revision)
    if at == meta.revision:
        return _live_page(state, prefix, after, limit) + (at,)
    return _past_page(state, prefix, after, limit, at) + (at,)


def _live_page(state, prefix: str, after: str, limit: int) -> tuple:
    start, end = keys.current_range(prefix)
    if after:
        start = max(start, keys.current_key(after) + b"\x00")
    found, values = state.scan(start, end, limit)
    lives = [Live(*unpack(v, 4, "current key")) for v in values]
    names = [k[1:].decode() for k in found]
    rows = state.get_many(tuple(keys.row_key(n, live.mod) for n, live in zip(names, lives)))
    page = tuple(history_row(n, live.mod, row)[1] for n, live, row in zip(names, lives, rows) if row is not None)
    return page, (names[-1] if len(found) == limit else None)


def _past_page(state, prefix: str, after: str, limit: int, at: int) -> tuple:
    start, end = keys.prefix_range(b"k", prefix)
    if after:
        start = max(start, keys.rows_range(after)[1])
    page: list = []
    for _ in range(MAX_SCAN):
        found, _ = state.scan(start, end, 1)
        if not found:
            return tuple(page), None
        name = keys.key_of_row(found[0])
        kv = kv_at(state, name, at)
        if kv is not None:
            page.append(kv)
        start = keys.rows_range(name)[1]
        if len(page) == limit:
            return tuple(page), name
    return tuple(page), name  # looked at enough keys for one call: the client goes on after this one


def _matches(key: str, ranges: tuple | None) -> bool:
    if ranges is None:
        return True
    return any(key == k or (p and key.startswith(k)) for k, p in ranges)


@query("config.changes")
def changes(state, args: Any) -> tuple:
    """The watch feed from revision ``start`` for the keys ``ranges`` names (see the module docstring)."""
    start, ranges, limit = args
    if type(start) is not int or start < 1:
        raise InvalidArgumentError(f"a watch starts at a revision >= 1, got {start!r}")
    if ranges is not None:
        if not isinstance(ranges, tuple) or not all(isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str)
                                                    and isinstance(r[1], bool) for r in ranges):
            raise InvalidArgumentError("a watch feed's ranges are (key or prefix, is_prefix) pairs, or None")
    limit = page_limit(limit, MAX_PAGE)
    meta = read_meta(state.get)
    if start < meta.compacted:
        raise CompactedError(f"revision {start} was compacted: the oldest revision kept is {meta.oldest}",
                             requested=start, oldest_kept=meta.oldest)
    if start > meta.revision:
        return ()  # nothing yet: a blocking query waits here for the next write
    lo, hi = keys.rev_range(start, meta.revision + 1)
    found, values = state.scan(lo, hi, MAX_SCAN)
    wanted: list[tuple[str, int]] = []
    nxt = start
    for k, v in zip(found, values):
        r = keys.revision_of(k)
        if len(wanted) >= limit:
            break  # a page ends between revisions: a revision's events are delivered together
        wanted.extend((name, r) for name in unpack(v, 1, "revision log")[0] if _matches(name, ranges))
        nxt = r + 1
    rows = state.get_many(tuple(keys.row_key(n, r) for n, r in wanted))
    events = []
    prevs = []
    for (name, r), row in zip(wanted, rows):
        if row is None:
            raise CompactedError(f"revision {r} was compacted while it was read", requested=r,
                                 oldest_kept=read_meta(state.get).oldest)
        kind, kv, prev = history_row(name, r, row)
        events.append((kind, kv))
        prevs.append(prev)
    prev_rows = state.get_many(tuple(keys.row_key(n, p) for (n, _), p in zip(wanted, prevs) if p))
    it = iter(prev_rows)
    out = []
    for (name, _), (kind, kv), p in zip(wanted, events, prevs):
        prev_kv = None
        if p:
            raw = next(it)
            prev_kv = history_row(name, p, raw)[1] if raw is not None else None  # compacted: no prev
        out.append(("put" if kind == PUT else "delete", kv, prev_kv))
    return (tuple(out), nxt)


@query("config.history")
def history(state, args: Any) -> tuple:
    """``key``'s newest ``limit`` changes, oldest first: kv rows (a delete's has value None, version 0)."""
    key, limit = args
    check_key(key)
    limit = page_limit(limit, MAX_PAGE)
    start, end = keys.rows_range(key)
    found, values = state.scan(start, end, limit)
    return tuple(history_row(key, keys.revision_of_row(k), v)[1] for k, v in reversed(list(zip(found, values))))


@query("config.revision")
def revision(state, args: Any) -> tuple:
    """``(revision, compacted, next lease id)``: the store's counters."""
    meta = read_meta(state.get)
    return (meta.revision, meta.compacted, meta.next_lease)


@query("config.leases")
def leases(state, args: Any) -> tuple:
    """Up to ``limit`` live leases with ids above ``after``: ``((id, ttl_ms, keys attached), ...)``."""
    after, limit = args
    if type(after) is not int or after < 0:
        raise InvalidArgumentError(f"a lease page starts after an id >= 0, got {after!r}")
    limit = page_limit(limit, MAX_PAGE)
    start, end = keys.lease_range(after)
    found, values = state.scan(start, end, limit)
    out = []
    for k, v in zip(found, values):
        ttl_ms, attached = unpack(v, 2, "lease")
        out.append((keys.lease_of(k), ttl_ms, len(attached)))
    return tuple(out)


@query("config.lease")
def lease(state, args: Any) -> tuple:
    """Lease ``lease``'s ``(id, ttl_ms, keys)``; raises if it expired, was revoked or never existed."""
    (lease_id,) = args
    if type(lease_id) is not int or lease_id < 1:
        raise InvalidArgumentError(f"a lease id is an int >= 1, got {lease_id!r}")
    row = state.get(keys.lease_key(lease_id))
    if row is None:
        raise missing_lease(lease_id, read_meta(state.get))
    ttl_ms, attached = unpack(row, 2, "lease")
    return (lease_id, ttl_ms, attached)
