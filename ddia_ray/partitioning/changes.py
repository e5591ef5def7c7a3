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
4. *switch*: B's record takes ``p`` at ``v + 1``, A's record drops ``p`` (from that entry of
   A's log on, A refuses reads of ``p`` too), then map ``v + 1`` (``p`` in B) is published;
5. *clean up*: A deletes ``p``'s keys.

Writes to ``p`` are refused (and retried by the clients) from step 2 to step 4: the time of
the catch-up scan, measured by :func:`move`'s report. Reads of ``p`` are refused from A's
release to the publish, one coordination round trip; a client refused reads the map again and
retries after a moment. A's release must come before the publish for reads to stay linearizable:
once the map names B, a client may write to B, and a client still holding map ``v`` must not
then read A's frozen copy (a Jepsen run of this store caught that stale read when A released
after the publish). At every moment at most one group serves ``p``, and none between A's
release and the publish. A change that fails before it publishes is abandoned:
the groups it touched get records of the old map at ``v + 1`` (every range writable where it
was; in the reverse order of their first records, so a move's destination gives ``p`` up before
its source takes writes again), the old map is published as ``v + 1``, so no version a group saw is ever
reused, and a move's copy is deleted from the destination.

The steps live in :mod:`.mover`: a pure step machine that takes the answers of the groups and of
the coordination service and gives out the next requests, so that the seeded simulation
(:mod:`.simulation`) runs the very same protocol under faults. This module drives it on Ray:
group requests go through the store's admin clients (scans and unfenced writes) and
``_set_ownership``, the map's reads and compare-and-set through the coordination service.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
import uuid
from typing import Any

from .. import codec
from ..errors import ChangeInProgressError, ConfigError, UnknownNodeError
from ..replication.ownership import ReplOwnership
from ..replication.records import ReplScan, ReplWrite, ScanResult
from .keyspace import stored_key
from .mover import CATCH_UP, CLEAN_SRC, DONE, FREEZE, CasMap, GroupRequest, Mover, Outcome, ReadMap
from .partition_map import PartitionMap
from .store import PartitionedStore, _lock_key, map_key

__all__ = ["split", "merge", "move", "change_lock", "force_unlock"]

_PAGE_ROWS = 2000
_TICK_S = 0.05  # the mover's tick here: its retries wait retry_ticks of these
#: On Ray each group request already retries inside the replicated client (for its timeout), so a
#: failure the mover sees is final: it abandons at once, and retries only to abandon or finish.
_OPTIONS = {"page_rows": _PAGE_ROWS, "max_in_flight": 4, "retries": 0, "settle_retries": 3, "retry_ticks": 4}


@contextlib.contextmanager
def change_lock(store: PartitionedStore, what: str):
    """Hold ``store``'s change lock for the ``with`` block (:class:`~ddia_ray.errors.ChangeInProgressError`
    if another change holds it)."""
    token = f"{what} by {uuid.uuid4().hex[:12]} at {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode()
    key = _lock_key(store.name)
    if not store._kv.cas(key, None, token):
        holder = (store._kv.get(key) or b"").decode(errors="replace")
        raise ChangeInProgressError(f"a change of {store.name!r} is under way ({holder}); wait for it to "
                                    f"finish, or force_unlock() if its handle died", holder=holder)
    try:
        yield
    finally:
        store._kv.cas(key, token, None)


def force_unlock(store: PartitionedStore) -> bool:
    """Remove the change lock a dead handle left behind; returns whether there was one. Run it only
    when no change is running: a change that is still running would then race another."""
    return store._kv.delete(_lock_key(store.name))


def _scan_page(client: Any, req: ReplScan) -> ScanResult:
    """One page of ``req`` through a replicated client: its first ``req.limit`` rows (``more`` when
    there are that many), gathered from as many record batches as they come in.

    A replica's Arrow page holds several batches (one per row-group slice, and one on each side of
    the reserved keys), so the first batch alone is not the page: taking it lost every key of a
    moved partition after the reserved keys' range (measured: 157 of 24,969 keys copied; a
    regression test in tests/test_partitioning_store.py)."""
    keys: list = []
    values: list = []
    scan = client.scan(req.start, req.end, page_rows=req.limit)
    try:
        for batch in scan:
            keys += batch.column(0).to_pylist()
            values += batch.column(1).to_pylist()
            if len(keys) >= req.limit:
                break
    finally:
        scan.close()  # stops before reading a page it does not need
    full = len(keys) >= req.limit
    return ScanResult(tuple(keys[:req.limit]), tuple(values[:req.limit]), full, 0, 0)


def _start(store: PartitionedStore, pool: concurrent.futures.Executor, out: Any) -> concurrent.futures.Future:
    """Send one of the mover's requests; a future of its answer."""
    if isinstance(out, ReadMap):
        return pool.submit(store.partition_map)
    if isinstance(out, CasMap):
        return pool.submit(store._kv.cas, map_key(store.name), codec.encode(out.old), codec.encode(out.new))
    assert isinstance(out, GroupRequest)
    req = out.request
    if isinstance(req, ReplOwnership):
        return pool.submit(store._set_ownership, out.group, req.ownership)
    client = store.admin_client(out.group)  # made here, on the driver's thread only
    if isinstance(req, ReplWrite):
        return client.submit_ops(req.ops)
    return pool.submit(_scan_page, client, req)


def _drive(store: PartitionedStore, mover: Mover) -> tuple[Outcome, dict[str, float]]:
    """Run ``mover`` against the store until it ends; returns its outcome and when (monotonic) it
    entered each phase it was seen in."""
    entered = {mover.phase: time.monotonic()}
    pending: dict[concurrent.futures.Future, int] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"change-{store.name}")
    try:
        while mover.outcome is None:
            for out in mover.ready():
                pending[_start(store, pool, out)] = out.token
            done: Any = ()
            if pending:
                done, _ = concurrent.futures.wait(pending, timeout=_TICK_S,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            else:
                time.sleep(_TICK_S)  # a resend waits its ticks
            if not done:
                mover.tick()
                entered.setdefault(mover.phase, time.monotonic())
            for f in sorted(done, key=pending.__getitem__):  # in the order they were asked
                token = pending.pop(f)
                exc = f.exception()
                if exc is None:
                    mover.on_reply(token, f.result())
                else:
                    mover.on_failure(token, exc)
                entered.setdefault(mover.phase, time.monotonic())
    finally:
        pool.shutdown(wait=False)  # an abandoned change's last requests finish on their own
    assert mover.outcome is not None
    return mover.outcome, entered


def _finished(outcome: Outcome) -> PartitionMap:
    """The map a change published, or its error raised."""
    if outcome.state != DONE or outcome.published is None:
        raise outcome.error or ConfigError(f"the {outcome.kind} ended {outcome.state}")
    return outcome.published


def split(store: PartitionedStore, pid: int, at: bytes | None = None) -> PartitionMap:
    """Cut partition ``pid`` at ``at`` (a key for the range scheme, an 8-byte hash for the hash
    scheme; default: the middle) into two partitions of the same group; returns the new map."""
    with change_lock(store, f"split {pid}"):
        outcome, _ = _drive(store, Mover.split(store.name, pid, at, **_OPTIONS))
    return _finished(outcome)


def merge(store: PartitionedStore, left: int, right: int) -> PartitionMap:
    """Join partition ``right`` into its left neighbour ``left`` (both in one group); returns the new map."""
    with change_lock(store, f"merge {left}+{right}"):
        outcome, _ = _drive(store, Mover.merge(store.name, left, right, **_OPTIONS))
    return _finished(outcome)


def move(store: PartitionedStore, pid: int, group: str) -> dict:
    """Give partition ``pid`` to replica group ``group`` while clients go on (see the module
    docstring); returns a report: the new map ``version``, keys ``copied``, ``caught_up``
    operations, and the seconds spent copying, ``frozen_s`` (at most this long were writes to ``pid``
    refused), ``freeze_at_s`` and ``switch_at_s`` (when the freeze was asked for and the new map
    published, from the start) and in all."""
    if group not in store.groups:
        raise UnknownNodeError(group, tuple(store.groups))
    t0 = time.monotonic()
    with change_lock(store, f"move {pid} to {group}"):
        outcome, entered = _drive(store, Mover.move(store.name, pid, group, **_OPTIONS))
    new = _finished(outcome)
    t_copy = entered.get(FREEZE, t0)
    t_frozen = entered.get(CATCH_UP, t_copy)
    t_switched = entered.get(CLEAN_SRC, t_frozen)
    # Writes to the partition are refused from when the freeze applies (after t_copy, before
    # t_frozen) until the new map is published (t_switched): frozen_s is that window's upper bound.
    return {"version": new.version, "copied": outcome.copied, "caught_up": outcome.caught_up, "copy_s": t_copy - t0,
            "frozen_s": t_switched - t_copy, "freeze_at_s": t_copy - t0, "switch_at_s": t_switched - t0,
            "total_s": time.monotonic() - t0}


def key_of(store: PartitionedStore, key: bytes) -> bytes:
    """The key a group stores user key ``key`` under (for inspecting a group directly)."""
    return stored_key(store.scheme, key)
