"""The partition-aware client: a cached map, one replicated-store session per group, refresh on refusal.

Theory of operation
-------------------
The client reads the partition map once and keeps it. Each operation is routed by the cached
map: keys become the keys the groups store (:func:`~.keyspace.stored_key`), a batch is cut
into one part per partition, and each part goes to its partition's group through that group's
:class:`~ddia_ray.replication.ReplicatedClient`, which batches, retries and keeps the session's
exactly-once guarantees as for an unpartitioned store. Every request carries the map's version
as its fence, and the group checks the keys against the ownership record in its log
(:mod:`ddia_ray.replication.ownership`).

When a group refuses a part (:class:`~ddia_ray.errors.StaleMapError`, ``WrongPartitionError``
or ``MapVersionError``: the map changed, or this client's copy is behind), nothing of that part
was applied, so the client reads the map again, routes the part again and resends it (the
routing path of DDIA 6.4 where "the client is aware of the partitioning"). While a change is
being published a part can be refused more than once; the client waits a little between
attempts, up to ``max_attempts`` and the operation's ``timeout_s``.

**Atomicity.** A part is one write to one group: it applies atomically. A batch whose keys lie
in more than one partition is refused unless the caller passes ``across_partitions=True``:
then each partition's part applies atomically and independently, and if some fail the call
raises :class:`~ddia_ray.errors.PartialBatchError` naming what applied and what did not. A part
that a split cut in two while it was being routed again is refused the same way (not applied)
unless ``across_partitions=True``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable, Iterator

from .._validate import positive
from ..errors import (CallTimeoutError, ConfigError, InvalidArgumentError, MapVersionError, PartialBatchError,
                      PartitionError, StaleMapError, WrongPartitionError)
from ..replication.write_batches import batch_ops
from ..replication.records import CAS, DELETE, DELETE_RANGE, INGEST, PUT
from ..runtime.futures import settle as settle_future
from .keyspace import HASH_BYTES, stored_key, user_key
from .partition_map import Locator, PartitionMap

__all__ = ["PartitionedClient"]

#: Refusals after which the client reads the map again and routes again (nothing was applied).
_REROUTE = (MapVersionError, WrongPartitionError)


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str and what == "keys":
        return value.encode("utf-8")
    raise InvalidArgumentError(f"{what} are bytes" + (" (or str, sent as UTF-8)" if what == "keys" else "") +
                               f", got {type(value).__name__}")


class PartitionedClient:
    """A client of a :class:`~.store.PartitionedStore` (see the module docstring); thread-safe.

    ``timeout_s`` bounds each operation, reroutes included; ``max_attempts`` bounds the routing
    attempts of one part; the other options (``read``, ``acks``, ``max_batch``, ``max_in_flight``,
    ``rpc_timeout_s``...) go to every group's :class:`~ddia_ray.replication.ReplicatedClient`.
    """

    def __init__(self, store, *, timeout_s: float = 10.0, max_attempts: int = 50, **group_options: Any):
        self.store = store
        self.timeout_s = positive("timeout_s", timeout_s)
        if type(max_attempts) is not int or max_attempts < 1:
            raise ConfigError(f"max_attempts is an int >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self._group_options = {"timeout_s": timeout_s, **group_options}
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._index_stores: dict[str, tuple[Any, Any]] = {}  # global indexes' stores: (handle, client)
        self._tries: dict[concurrent.futures.Future, tuple] = {}  # (reroutes, first refusal) per operation
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="partitioned-client")
        self.stats: dict[str, int] = {"reroutes": 0, "map_refreshes": 0}
        self._set_map(store.partition_map())

    # --- the map -----------------------------------------------------------------------------------

    @property
    def partition_map(self) -> PartitionMap:
        """The map this client routes with."""
        return self._map

    def _set_map(self, pmap: PartitionMap) -> None:
        with self._lock:
            self._map, self._locator = pmap, Locator(pmap)
            for c in self._clients.values():
                c.fence = pmap.version

    def _count(self, name: str) -> None:
        """Add one to ``stats[name]``: under the lock, as the pool's threads, the loop's and the
        caller's all count (``+=`` on a dict entry is a read and a write another thread can split)."""
        with self._lock:
            self.stats[name] += 1

    def refresh(self, *, at_least: int = 0) -> PartitionMap:
        """Read the map again (once for several threads asking together); returns the newest."""
        with self._refreshing:
            if self._map.version <= at_least or at_least == 0:
                pmap = self.store.partition_map()
                self._count("map_refreshes")
                if pmap.version > self._map.version:
                    self._set_map(pmap)
        return self._map

    def _refresh_after_refusal(self, tries: int, refused: BaseException | None = None) -> None:
        """After a group refused a route: read the map again, and if no newer one is published yet
        (the change is between its records and its publish), wait a moment, longer each try.

        A request refused as routed with an older map than this client holds now (``refused``, a
        :class:`~ddia_ray.errors.StaleMapError`, names the version it carried) needs no new read:
        another refusal brought the newer map meanwhile. Without that check, the 2,530 gets of one
        ``get_many`` after a move each read the map again: 2,529 reads of the coordination
        service, 15 s, where the same call on a fresh client took 0.11 s.

        A :class:`~ddia_ray.errors.WrongPartitionError` for the map this client holds needs no read
        either: a request routed with the old map can leave after the group clients' fences moved to
        the new one, and the group then refuses it as not its own at the new version; located again
        with the map held, it goes where it belongs. Reading the map for each such refusal made
        420 reads (a sleep each) of one ``get_many`` after a move.

        A refusal for a map *newer* than the group knows (a plain
        :class:`~ddia_ray.errors.MapVersionError`: the group has not learned the change yet) needs
        no read: a read brings the same map again; the request waits a moment and goes again."""
        carried = refused.version if isinstance(refused, (MapVersionError, WrongPartitionError)) else 0
        if 0 < carried < self._map.version or (isinstance(refused, WrongPartitionError)
                                               and 0 < carried == self._map.version):
            return
        if isinstance(refused, MapVersionError) and not isinstance(refused, StaleMapError):
            time.sleep(min(0.2, 0.005 * 2 ** min(tries, 6)))
            return
        before = self._map.version
        if self.refresh(at_least=before).version == before:
            time.sleep(min(0.2, 0.005 * 2 ** min(tries, 6)))

    def _group_client(self, group: str):
        client = self._clients.get(group)  # the usual case, without the lock (a dict read is atomic)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(group)
            if client is None:
                if self._closed:
                    raise ConfigError("the client is closed")
                client = self.store.group(group).client(**self._group_options)
                client.fence = self._map.version
                client.on_refused = self._on_refused
                self._clients[group] = client
            return client

    # --- routing with retries ----------------------------------------------------------------------

    def _routed(self, attempt: Callable[[Locator], concurrent.futures.Future],
                finish: Callable[[Any], Any] = lambda v: v) -> concurrent.futures.Future:
        """A future for ``attempt(locator)``, run again on a fresh map after each reroute refusal."""
        outer: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + self.timeout_s
        tries = [0]

        def run() -> None:
            tries[0] += 1
            try:
                inner = attempt(self._locator)
            except BaseException as e:  # noqa: BLE001 - bad input or a routing refusal: the caller's
                outer.set_exception(e)
                return
            inner.add_done_callback(done)

        def done(f: concurrent.futures.Future) -> None:
            exc = f.exception()
            if exc is None:
                try:
                    outer.set_result(finish(f.result()))
                except BaseException as e:  # noqa: BLE001
                    outer.set_exception(e)
                return
            if not isinstance(exc, _REROUTE) or tries[0] >= self.max_attempts or time.monotonic() > deadline \
                    or self._closed:
                outer.set_exception(exc)
                return
            self._count("reroutes")
            self._pool.submit(again, exc)

        def again(exc: PartitionError) -> None:
            try:
                self._refresh_after_refusal(tries[0], exc)
                run()
            except BaseException as e:  # noqa: BLE001 - the coordination service failed: the caller's error
                settle_future(outer, exc=e)

        run()
        return outer

    def _stored(self, key: bytes) -> bytes:
        return stored_key(self._map.scheme, key)

    # --- writes --------------------------------------------------------------------------------------

    def _parts(self, loc: Locator, ops: tuple) -> dict[int, list[int]]:
        """Indices of ``ops`` per partition under ``loc``."""
        parts: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            if op[0] == DELETE_RANGE:
                covered = loc.overlapping(op[1], op[2])
                if len(covered) != 1:
                    raise PartitionError(f"a range delete of [{op[1][:64]!r}, {op[2][:64]!r}) spans {len(covered)} "
                                         f"partitions; use delete_range(), which cuts it")
                parts.setdefault(covered[0].id, []).append(i)
            else:
                parts.setdefault(loc.locate(op[1]).id, []).append(i)
        return parts

    def _stored_op(self, op: tuple) -> tuple:
        scheme = self._map.scheme
        if op[0] == DELETE_RANGE:
            return op  # range scheme only (the hash scheme refuses range deletes)
        return (op[0], stored_key(scheme, op[1]), *op[2:])

    def _write_one(self, op: tuple, acks: int | None) -> concurrent.futures.Future:
        """One operation (a put, delete or cas): the hot path. Its future is the group client's own;
        a refusal is routed again by :meth:`_on_refused`, which keeps that future."""
        group = self._locator.locate(op[1]).group
        return self._group_client(group).submit_ops((self._stored_op(op),), acks=acks, single=True)

    def _on_refused(self, ops, fut: concurrent.futures.Future, single: bool, read: tuple | None,
                    exc: BaseException) -> bool:
        """A group client's hook: a single operation or a read it was refused for the map (nothing
        applied) is sent again, to the group of a fresh map, with the same future. Batches of
        several operations are left to their :meth:`_routed` caller (they may need cutting)."""
        if isinstance(ops, bytes):
            if read is None:
                return False
        elif not (isinstance(ops, tuple) and len(ops) == 1 and isinstance(ops[0], tuple)
                  and ops[0][0] != DELETE_RANGE and ops[0][0] != INGEST):  # those may need cutting
            return False
        if not isinstance(exc, _REROUTE) or self._closed:
            return False
        now = time.monotonic()
        with self._lock:  # attempts and time are counted from the first refusal, as _routed counts them
            tries, since = self._tries.get(fut, (0, now))
            tries += 1
            if tries >= self.max_attempts or now - since > self.timeout_s:
                self._tries.pop(fut, None)
                return False
            self._tries[fut] = (tries, since)
        self._count("reroutes")
        self._pool.submit(self._resend, ops, fut, single, read, tries, exc)
        return True

    def _resend(self, ops, fut: concurrent.futures.Future, single: bool, read: tuple | None, tries: int,
                refused: BaseException | None = None) -> None:
        try:
            self._refresh_after_refusal(tries, refused)
            scheme = self._map.scheme
            stored = ops if isinstance(ops, bytes) else ops[0][1]
            group = self._locator.locate(user_key(scheme, stored)).group
            client = self._group_client(group)
            if isinstance(ops, bytes):
                assert read is not None  # _on_refused takes a read only with its mode
                client.get_nowait(stored, read=read[0], max_staleness_s=None if read[1] < 0 else read[1],
                                  future=fut)
            else:
                client.submit_ops(ops, single=single, future=fut)
        except BaseException as e:  # noqa: BLE001 - the map could not be read, or the client closed: the caller's
            settle_future(fut, exc=e)
        finally:
            if fut.done():
                with self._lock:
                    self._tries.pop(fut, None)

    def _write_part(self, ops: tuple, acks: int | None, across: bool) -> concurrent.futures.Future:
        """Write ``ops`` (of one partition when routed) atomically; rerouted on refusal."""

        def attempt(loc: Locator) -> concurrent.futures.Future:
            parts = self._parts(loc, ops)
            if len(parts) > 1:
                if not across:
                    raise PartitionError(f"the batch's keys now lie in {len(parts)} partitions (a split happened "
                                         f"while it was routed); nothing was applied. Retry it, or pass "
                                         f"across_partitions=True")
                return self._write(ops, acks, across=True)
            (pid,) = parts
            group = loc.map.partition(pid).group
            return self._group_client(group).submit_ops(tuple(self._stored_op(op) for op in ops), acks=acks)

        return self._routed(attempt)

    def _write(self, ops: tuple, acks: int | None, *, across: bool) -> concurrent.futures.Future:
        parts = self._parts(self._locator, ops)
        if len(parts) == 1:
            return self._write_part(ops, acks, across)
        if not across:
            raise PartitionError(f"the batch's keys lie in {len(parts)} partitions ({sorted(parts)}); a batch is "
                                 f"atomic within one partition only. Pass across_partitions=True to apply each "
                                 f"partition's part atomically and independently")
        results: list = [None] * len(ops)

        def settle(idx: list[int], got: tuple) -> None:
            for i, r in zip(idx, got):
                results[i] = r

        return self._gather({pid: (idx, self._write_part(tuple(ops[i] for i in idx), acks, True))
                             for pid, idx in parts.items()}, settle, lambda: tuple(results), "batch")

    @staticmethod
    def _gather(parts: dict[int, tuple[Any, concurrent.futures.Future]], settle: Callable[[Any, Any], None],
                result: Callable[[], Any], what: str) -> concurrent.futures.Future:
        """One future for the parts of an operation across partitions: ``parts[pid] = (tag, future)``;
        ``settle(tag, value)`` takes each part's value, ``result()`` is the whole's once every part
        succeeded; otherwise :class:`~ddia_ray.errors.PartialBatchError` names what applied."""
        outer: concurrent.futures.Future = concurrent.futures.Future()
        left = [len(parts)]
        applied: list[int] = []
        failed: dict[int, BaseException] = {}
        lock = threading.Lock()

        def part_done(pid: int, tag: Any, f: concurrent.futures.Future) -> None:
            exc = f.exception()
            with lock:
                if exc is None:
                    settle(tag, f.result())
                    applied.append(pid)
                else:
                    failed[pid] = exc
                left[0] -= 1
                last = left[0] == 0
            if last:
                if failed:
                    outer.set_exception(PartialBatchError(
                        f"{len(failed)} of {len(parts)} partitions' parts of the {what} failed "
                        f"({', '.join(f'{p}: {type(e).__name__}' for p, e in sorted(failed.items()))}); "
                        f"partitions {sorted(applied)} applied theirs", applied=tuple(sorted(applied)),
                        failed=dict(failed)))
                else:
                    outer.set_result(result())

        def callback(pid: int, tag: Any) -> Callable[[concurrent.futures.Future], None]:
            return lambda f: part_done(pid, tag, f)

        for pid, (tag, fut) in parts.items():
            fut.add_done_callback(callback(pid, tag))
        return outer

    # --- bulk loads ----------------------------------------------------------------------------------

    def ingest(self, keys, values, *, acks: int | None = None, timeout_s: float | None = None) -> int:
        """Bulk-load ``keys[i] -> values[i]`` (binary Arrow columns or lists of bytes); returns the rows
        loaded. The rows are cut by partition and each partition's rows are one ingest entry of its
        group (:mod:`ddia_ray.replication.ingest`), atomic per partition: if some partitions' parts
        fail, :class:`~ddia_ray.errors.PartialBatchError` names which applied (see :mod:`.bulk`)."""
        return self._wait(self.ingest_nowait(keys, values, acks=acks), timeout_s)

    def ingest_nowait(self, keys, values, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start an :meth:`ingest`; the future holds the rows loaded."""
        from .bulk import ingest

        return ingest(self, keys, values, acks)

    def put_nowait(self, key, value, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`put`."""
        return self._write_one((PUT, _bytes(key, "keys"), _bytes(value, "values")), acks)

    def delete_nowait(self, key, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`delete`."""
        return self._write_one((DELETE, _bytes(key, "keys"), b""), acks)

    def cas_nowait(self, key, expected, new, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`cas`; the future holds whether it set the key."""
        exp = None if expected is None else _bytes(expected, "expected values")
        val = None if new is None else _bytes(new, "new values")
        return self._write_one((CAS, _bytes(key, "keys"), val, exp), acks)

    def write_nowait(self, batch, *, acks: int | None = None,
                     across_partitions: bool = False) -> concurrent.futures.Future:
        """Start a :meth:`write`; the future holds one result per operation."""
        ops = batch_ops(batch)
        if any(op[0] == DELETE_RANGE for op in ops) and self._map.scheme == "hash":
            raise ConfigError("a hash-partitioned store keeps no key order across partitions: delete keys one "
                              "by one, or use the range scheme for range deletes")
        return self._write(ops, acks, across=across_partitions)

    def delete_range_nowait(self, start, end, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`delete_range` (range scheme): one atomic delete per partition it covers."""
        if self._map.scheme == "hash":
            raise ConfigError("a hash-partitioned store keeps no key order across partitions: delete_range needs "
                              "the range scheme")
        s, e = _bytes(start, "keys"), _bytes(end, "keys")
        if s > e:
            raise InvalidArgumentError(f"range start {s!r} is after its end {e!r}")
        ops = tuple((DELETE_RANGE, max(s, p.start), e if p.end is None else min(e, p.end))
                    for p in self._locator.overlapping(s, e))
        ops = tuple(op for op in ops if op[1] < op[2])
        if not ops:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(None)
            return done
        return _first(self._write(ops, acks, across=True), single=False)

    def put(self, key, value, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Set ``key`` to ``value`` (bytes)."""
        self._wait(self.put_nowait(key, value, acks=acks), timeout_s)

    def delete(self, key, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Remove ``key``."""
        self._wait(self.delete_nowait(key, acks=acks), timeout_s)

    def cas(self, key, expected, new, *, acks: int | None = None, timeout_s: float | None = None) -> bool:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: absent); ``new=None`` deletes."""
        return self._wait(self.cas_nowait(key, expected, new, acks=acks), timeout_s)

    def write(self, batch, *, acks: int | None = None, across_partitions: bool = False,
              timeout_s: float | None = None) -> tuple:
        """Apply ``batch`` (a :class:`~ddia_ray.storage.WriteBatch` or ``(kind, key, value_or_end)``
        tuples); atomic when its keys lie in one partition (see the module docstring)."""
        return self._wait(self.write_nowait(batch, acks=acks, across_partitions=across_partitions), timeout_s)

    def delete_range(self, start, end, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Remove every key in ``[start, end)`` (range scheme; atomic per partition)."""
        self._wait(self.delete_range_nowait(start, end, acks=acks), timeout_s)

    # --- reads ---------------------------------------------------------------------------------------

    def get_nowait(self, key, *, read: str | None = None,
                   max_staleness_s: float | None = None) -> concurrent.futures.Future:
        """Start a :meth:`get`."""
        k = _bytes(key, "keys")  # the hot path, as for _write_one: a refusal is routed again by _on_refused
        group = self._locator.locate(k).group
        return self._group_client(group).get_nowait(self._stored(k), read=read, max_staleness_s=max_staleness_s)

    def get(self, key, *, read: str | None = None, max_staleness_s: float | None = None,
            timeout_s: float | None = None) -> bytes | None:
        """The value of ``key`` (None if absent), read as ``read`` says."""
        return self._wait(self.get_nowait(key, read=read, max_staleness_s=max_staleness_s), timeout_s)

    def get_many(self, keys, *, read: str | None = None, max_staleness_s: float | None = None,
                 timeout_s: float | None = None) -> list:
        """The values of ``keys``, in order (the reads of every partition go out together)."""
        futures = [self.get_nowait(k, read=read, max_staleness_s=max_staleness_s) for k in keys]
        return [self._wait(f, timeout_s) for f in futures]

    def scan(self, start=None, end=None, *, read: str | None = None, page_rows: int = 1000,
             timeout_s: float | None = None, pinned: bool = False) -> Iterator:
        """The pairs of ``[start, end)`` as Arrow record batches (``key``, ``value``), one per page.

        Range scheme: in key order, partition after partition. Hash scheme: every partition is
        read, in the order of key hashes (not key order), and keys outside ``[start, end)`` are
        left out. Each page is read at one position of one group (as the replicated store's scan);
        ``pinned=True`` reads each partition from one view of its group (a consistent snapshot per
        partition, :mod:`ddia_ray.replication.pins`). A partition that moves or splits during the
        scan, or a pin that is lost, is followed: the scan goes on after the last key it returned,
        under the new map (from a new view), so no key is returned twice or skipped."""
        s = b"" if start is None else _bytes(start, "keys")
        e = None if end is None else _bytes(end, "keys")
        if e is not None and s > e:
            raise ConfigError(f"range start {s!r} is after its end {e!r}")
        if self._map.scheme == "hash":  # every partition, in stored-key order, keeping [s, e)
            return self.scan_stored(b"", None, keep=(s, e), read=read, page_rows=page_rows, timeout_s=timeout_s,
                                    pinned=pinned)
        return self.scan_stored(s, e, read=read, page_rows=page_rows, timeout_s=timeout_s, pinned=pinned)

    def scan_stored(self, start: bytes, stop: bytes | None, *, keep: tuple | None = None, read: str | None = None,
                    page_rows: int = 1000, timeout_s: float | None = None, pinned: bool = False) -> Iterator:
        """:meth:`scan` over the groups' stored keys ``[start, stop)`` (the range of one partition, say,
        as a Ray Data read task asks); batches carry users' keys. ``keep``: ``(s, e)`` users' keys to
        keep (the hash scheme, whose stored order is not the keys' order)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from ..errors import ScanExpiredError

        hashed = self._map.scheme == "hash"
        cursor = start
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        stuck_since: float | None = None
        while stop is None or cursor < stop:
            # A partition's [start, end) bounds its stored keys under both schemes (keyspace.stored_key).
            p = next(q for q in self._map.partitions if q.end is None or cursor < q.end)
            sub_end = p.end if stop is None else (stop if p.end is None else min(stop, p.end))
            client = self._group_client(p.group)
            try:
                for batch in client.scan(cursor, sub_end, read=read, page_rows=page_rows, timeout_s=timeout_s,
                                         pinned=pinned):
                    stuck_since = None
                    keys = batch.column(0)
                    cursor = keys[len(keys) - 1].as_py() + b"\x00"
                    if hashed:
                        users = pc.binary_slice(keys, HASH_BYTES, 1 << 31)  # stop: past any key
                        batch = pa.record_batch([users, batch.column(1)], schema=batch.schema)
                    if keep is not None and (keep[0] or keep[1] is not None):  # (b"", None) keeps all: no copy
                        mask = pc.greater_equal(batch.column(0), pa.scalar(keep[0], pa.binary()))
                        if keep[1] is not None:
                            mask = pc.and_(mask, pc.less(batch.column(0), pa.scalar(keep[1], pa.binary())))
                        batch = batch.filter(mask)
                        if batch.num_rows == 0:
                            continue
                    yield batch
            except (*_REROUTE, ScanExpiredError):
                now = time.monotonic()
                stuck_since = now if stuck_since is None else stuck_since
                if now - stuck_since > limit_s:
                    raise
                self._count("reroutes")
                self._refresh_after_refusal(2)
                continue  # from the cursor, under the new map
            if p.end is None or (stop is not None and p.end >= stop):
                return
            cursor = p.end

    # --- secondary indexes ---------------------------------------------------------------------------

    def query(self, index: str, term, *, page_rows: int = 1000) -> Iterator[tuple[bytes, bytes]]:
        """The ``(key, value)`` pairs whose value index ``index`` files under ``term``.

        A local index: every group is asked at once (a local index is scattered, DDIA 6.1), page
        after page, and the answers are gathered in no particular order across groups (key order
        within each). Keys outside a group's partitions at this client's map version are left out,
        so a key that moved is returned once, by its owner. A global index: the partitions of the
        index store that hold the term are read, in key order, and each key is checked against its
        current value (:mod:`.global_index`: never a key whose value lost the term; a key whose
        value gained it shows once the indexer has caught up)."""
        from ..replication.indexing import ReplIndexScan

        t = _bytes(term, "keys")
        if type(page_rows) is not int or page_rows < 1:
            raise InvalidArgumentError("page_rows is an int >= 1")
        found = [d for d in self.store.indexes() if d.name == index]
        if not found:
            raise ConfigError(f"{self.store.name!r} has no index {index!r}")
        if found[0].scope == "global":
            from .global_index import query_global

            yield from query_global(self, found[0], t, page_rows)
            return
        scheme = self._map.scheme
        cursors = {g: b"" for g in self.store.groups}
        while cursors:
            version = self._map.version
            asked = {g: self._group_client(g).call_leader(ReplIndexScan(index, t, after, page_rows, version))
                     for g, after in cursors.items()}
            for g, fut in asked.items():
                page = fut.result(self.timeout_s + 5.0)
                for k, v in zip(page.keys, page.values):
                    if v is not None:  # deleted between the index row and the read: not a match any more
                        yield (k[HASH_BYTES:] if scheme == "hash" else k), v
                if page.more:
                    cursors[g] = page.cursor
                else:
                    del cursors[g]

    def _index_client(self, name: str):
        """A client of the partitioned store ``name`` (a global index's rows), opened on first use."""
        with self._lock:
            if self._closed:
                raise ConfigError("the client is closed")
            if name not in self._index_stores:
                from .store import PartitionedStore

                handle = PartitionedStore.connect(name, routers=False)
                self._index_stores[name] = (handle, handle.client(timeout_s=self.timeout_s))
            return self._index_stores[name][1]

    # --- lifecycle -------------------------------------------------------------------------------------

    def _wait(self, future: concurrent.futures.Future, timeout_s: float | None) -> Any:
        try:
            return future.result(self.timeout_s + 5.0 if timeout_s is None else timeout_s)
        except concurrent.futures.TimeoutError:
            raise CallTimeoutError("the operation did not complete within its timeout; outcome unknown") from None

    def close(self) -> None:
        """Close every group's session (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._clients.values())
            stores = list(self._index_stores.values())
        for c in clients:
            c.close()
        for handle, client in stores:
            client.close()
            handle.close()
        self._pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _first(f: concurrent.futures.Future, single: bool = True) -> concurrent.futures.Future:
    """A future of ``f``'s first result (``single``) or of None."""
    out: concurrent.futures.Future = concurrent.futures.Future()

    def done(inner: concurrent.futures.Future) -> None:
        exc = inner.exception()
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(inner.result()[0] if single else None)

    f.add_done_callback(done)
    return out
