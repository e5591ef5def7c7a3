"""Changing a running store's partitions: split, merge and move, while clients read and write.

Theory of operation
-------------------
A change makes map version ``v + 1`` from the current map ``v``. The invariant every step
keeps: *a group never serves a key at a map version at which it does not own it, and a client
never holds a map newer than the ownership records of the groups the change touched.* So:

1. the change takes the store's change lock (a key in the coordination service, set with
   compare-and-set), so two handles cannot change the map at once;
2. it writes the new ownership records of the groups it touches, through their logs
   (:mod:`ddia_ray.replication.ownership`);
3. only then it publishes map ``v + 1`` with compare-and-set on the old map.

A split or merge moves no data: one group's record changes its ranges. A client still routing
with map ``v`` is refused for the changed partition (its range is newer than the request's map)
and reads the map again; between steps 2 and 3 that read still gives ``v`` and it retries after
a moment, so writes to that partition pause for about one coordination round trip.

**A move** gives partition ``p`` from group A to group B (DDIA 6.3, "Rebalancing"):

1. *copy*: B's range for ``p`` is cleared, then ``p``'s keys are copied from A's leader to B,
   page after page, while A keeps serving reads and writes;
2. *freeze*: A's record marks ``p`` read-only at version ``v + 1``; from that entry of A's log on,
   A refuses every write to ``p`` (so the data A holds for ``p`` is final) and still serves reads;
3. *catch up*: A's and B's copies of ``p`` are compared in key order and B gets every difference
   (the writes made during the copy), so B now holds exactly A's final data;
4. *switch*: B's record takes ``p`` at ``v + 1``, then map ``v + 1`` (``p`` in B) is published;
5. *clean up*: A's record drops ``p`` and A deletes ``p``'s keys.

Writes to ``p`` are refused (and retried by the clients) from step 2 to step 4: the time of
the catch-up scan, measured by :func:`move`'s report. Reads never stop, and at every moment one
group owns ``p``: A until the map says B. A change that fails before it publishes is abandoned:
the groups it touched get records of the old map at ``v + 1`` (every range writable where it
was), and the old map is published as ``v + 1``, so no version a group saw is ever reused.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from ..errors import ConfigError, InvalidArgumentError, UnknownNodeError
from ..replication.records import DELETE, PUT
from .keyspace import HASH_BYTES, stored_key
from .partition_map import PartitionMap, ownership_of
from .store import PartitionedStore, _lock_key

__all__ = ["split", "merge", "move", "change_lock", "force_unlock"]

_PAGE_ROWS = 2000


@contextlib.contextmanager
def change_lock(store: PartitionedStore, what: str):
    """Hold ``store``'s change lock for the ``with`` block (ConfigError if another change holds it)."""
    token = f"{what} by {uuid.uuid4().hex[:12]} at {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode()
    key = _lock_key(store.name)
    if not store._kv.cas(key, None, token):
        holder = store._kv.get(key)
        raise ConfigError(f"a change of {store.name!r} is under way ({(holder or b'').decode(errors='replace')}); "
                          f"wait for it to finish, or force_unlock() if its handle died")
    try:
        yield
    finally:
        store._kv.cas(key, token, None)


def force_unlock(store: PartitionedStore) -> bool:
    """Remove the change lock a dead handle left behind; returns whether there was one. Run it only
    when no change is running: a change that is still running would then race another."""
    return store._kv.delete(_lock_key(store.name))


def _abandon(store: PartitionedStore, pmap: PartitionMap, groups: tuple[str, ...]) -> None:
    """Undo a change that did not publish: the touched groups get records of ``pmap`` at its next
    version (see the module docstring), then that version is published."""
    bumped = pmap.bumped()
    for g in groups:
        store._set_ownership(g, ownership_of(bumped, g, store.name))
    store._publish(pmap, bumped)


def _reshape(store: PartitionedStore, pmap: PartitionMap, new: PartitionMap, group: str) -> PartitionMap:
    """Apply a change that moves no data (split, merge) to ``group`` and publish it."""
    try:
        store._set_ownership(group, ownership_of(new, group, store.name))
        store._publish(pmap, new)
    except BaseException:
        _abandon(store, pmap, (group,))
        raise
    return new


def _middle(store: PartitionedStore, pmap: PartitionMap, pid: int) -> bytes:
    """A split point that halves partition ``pid``: the middle of its hashes (hash scheme), or its
    median key, found by one scan (range scheme)."""
    p = pmap.partition(pid)
    if pmap.scheme == "hash":
        lo = int.from_bytes(p.start.ljust(HASH_BYTES, b"\0"), "big")
        hi = 1 << (8 * HASH_BYTES) if p.end is None else int.from_bytes(p.end, "big")
        if hi - lo < 2:
            raise InvalidArgumentError(f"partition {pid} covers one hash; it cannot be split")
        return ((lo + hi) // 2).to_bytes(HASH_BYTES, "big")
    keys = [k for batch in store.admin_client(p.group).scan(p.start, p.end, page_rows=_PAGE_ROWS)
            for k in batch.column(0).to_pylist()]
    mid = keys[len(keys) // 2] if keys else b""
    if not keys or mid <= p.start:
        raise InvalidArgumentError(f"partition {pid} holds {len(keys)} key(s): no split point inside it; pass at=")
    return mid


def split(store: PartitionedStore, pid: int, at: bytes | None = None) -> PartitionMap:
    """Cut partition ``pid`` at ``at`` (a key for the range scheme, an 8-byte hash for the hash
    scheme; default: the middle) into two partitions of the same group; returns the new map."""
    with change_lock(store, f"split {pid}"):
        pmap = store.partition_map()
        p = pmap.partition(pid)
        if at is None:
            at = _middle(store, pmap, pid)
        return _reshape(store, pmap, pmap.split(pid, at), p.group)


def merge(store: PartitionedStore, left: int, right: int) -> PartitionMap:
    """Join partition ``right`` into its left neighbour ``left`` (both in one group); returns the new map."""
    with change_lock(store, f"merge {left}+{right}"):
        pmap = store.partition_map()
        new = pmap.merge(left, right)
        return _reshape(store, pmap, new, pmap.partition(left).group)


def _pairs(store: PartitionedStore, group: str, start: bytes, end: bytes | None):
    """``(stored key, value)`` of ``group`` in ``[start, end)``, in key order, page by page."""
    for batch in store.admin_client(group).scan(start, end, page_rows=_PAGE_ROWS):
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())


def _flush(client, ops: list, futures: list) -> None:
    if ops:
        futures.append(client.submit_ops(tuple(ops)))
        ops.clear()


def _clear(store: PartitionedStore, group: str, start: bytes, end: bytes | None) -> int:
    """Delete ``group``'s keys in ``[start, end)``; returns how many it found."""
    client = store.admin_client(group)
    n = 0
    futures: list = []
    ops: list = []
    for key, _ in _pairs(store, group, start, end):
        ops.append((DELETE, key, b""))
        n += 1
        if len(ops) >= _PAGE_ROWS:
            _flush(client, ops, futures)
    _flush(client, ops, futures)
    for f in futures:
        f.result()
    return n


def _copy(store: PartitionedStore, src: str, dst: str, start: bytes, end: bytes | None) -> int:
    """Copy ``src``'s keys in ``[start, end)`` to ``dst`` (pipelined batches); returns the count."""
    client = store.admin_client(dst)
    n = 0
    futures: list = []
    ops: list = []
    for key, value in _pairs(store, src, start, end):
        ops.append((PUT, key, value))
        n += 1
        if len(ops) >= _PAGE_ROWS:
            _flush(client, ops, futures)
    _flush(client, ops, futures)
    for f in futures:
        f.result()
    return n


def _catch_up(store: PartitionedStore, src: str, dst: str, start: bytes, end: bytes | None) -> int:
    """Make ``dst``'s keys in ``[start, end)`` equal ``src``'s (a merge of both in key order); returns
    how many operations that took. ``src`` takes no writes to the range any more (it is frozen)."""
    client = store.admin_client(dst)
    futures: list = []
    ops: list = []
    a, b = _pairs(store, src, start, end), _pairs(store, dst, start, end)
    x: tuple | None = next(a, None)
    y: tuple | None = next(b, None)
    changes = 0
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):  # only the source has it
            assert x is not None
            ops.append((PUT, x[0], x[1]))
            x = next(a, None)
        elif x is None or y[0] < x[0]:  # only the copy has it: deleted at the source since
            ops.append((DELETE, y[0], b""))
            y = next(b, None)
        else:
            if x[1] != y[1]:
                ops.append((PUT, x[0], x[1]))
            x, y = next(a, None), next(b, None)
        if len(ops) >= _PAGE_ROWS:
            changes += len(ops)
            _flush(client, ops, futures)
    changes += len(ops)
    _flush(client, ops, futures)
    for f in futures:
        f.result()
    return changes


def move(store: PartitionedStore, pid: int, group: str) -> dict:
    """Give partition ``pid`` to replica group ``group`` while clients go on (see the module
    docstring); returns a report: the new map ``version``, keys ``copied``, ``caught_up``
    operations, and the seconds spent copying, ``frozen_s`` (writes to ``pid`` refused) and in all."""
    if group not in store.groups:
        raise UnknownNodeError(group, tuple(store.groups))
    t0 = time.monotonic()
    with change_lock(store, f"move {pid} to {group}"):
        pmap = store.partition_map()
        p = pmap.partition(pid)
        new = pmap.move(pid, group)  # refuses a move to the group that has it
        src, lo, hi = p.group, p.start, p.end
        touched: tuple[str, ...] = (src, group)
        published = False
        try:
            _clear(store, group, lo, hi)
            copied = _copy(store, src, group, lo, hi)
            t_copy = time.monotonic()
            store._set_ownership(src, ownership_of(pmap, src, store.name, version=new.version, frozen={pid}))
            t_frozen = time.monotonic()
            caught_up = _catch_up(store, src, group, lo, hi)
            store._set_ownership(group, ownership_of(new, group, store.name))
            store._publish(pmap, new)
            published = True
            t_switched = time.monotonic()
        finally:
            if not published:
                _abandon(store, pmap, touched)
                _clear(store, group, lo, hi)
        store._set_ownership(src, ownership_of(new, src, store.name))
        _clear(store, src, lo, hi)
    return {"version": new.version, "copied": copied, "caught_up": caught_up, "copy_s": t_copy - t0,
            "frozen_s": t_switched - t_frozen, "total_s": time.monotonic() - t0}


def key_of(store: PartitionedStore, key: bytes) -> bytes:
    """The key a group stores user key ``key`` under (for inspecting a group directly)."""
    return stored_key(store.scheme, key)
