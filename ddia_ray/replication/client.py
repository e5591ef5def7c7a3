"""The client of a replicated store: blocking calls and futures, batched into few actor calls.

Theory of operation
-------------------
Every call becomes a *unit*: the operations of one ``put``, ``delete``, ``cas``,
``delete_range`` or ``write(batch)`` with a :class:`concurrent.futures.Future`.
A background asyncio loop (one thread per client, as the RaftKV client has)
packs consecutive units that ask for the same acknowledgements into one
:class:`~.records.ReplWrite` of up to ``max_batch`` operations and
``max_batch_bytes`` bytes of keys, values and procedure arguments, gives it the
next sequence number of this client's session, and keeps up to
``max_in_flight`` actor calls outstanding. So one client keeps thousands of
writes in flight for about one millisecond of actor call per batch. A batch
is one log entry: its operations apply atomically, and a unit is never split.

What one request packs, and why it is bounded in bytes as well: :mod:`.write_batches`.
Where a batch goes, and how it is retried without applying twice: :mod:`.routing`.

Reads are batched the same way, per read mode. ``leader`` and ``linearizable``
reads go to the leader; ``follower`` reads to a follower chosen by a balancing
picker (the seed's ``LoadBalancer.GetSlave()``), within ``max_staleness_s``
when given; ``session`` reads to any replica that has applied the session's
position (read-your-writes, monotonic reads; DDIA 5.2), else to the next one,
and to the leader when none has. A :class:`~.records.Session` is the client's
position; ``client.session`` can be encoded and handed to another process,
which passes it as ``session=`` to its own client and keeps the guarantees.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import threading
import time
import uuid
from typing import Any, Iterator

from .. import codec
from .._validate import positive
from ..balancing import RoundRobinPicker
from ..errors import (ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError, MessageDroppedError,
                      NotLeaderError, PartitionError, ReplicaBehindError,
                      StalenessBoundError)
from ..runtime.client_loop import LoopClient, wait_doorbell
from ..runtime.direct_links import DirectLinks
from ..runtime.futures import settle
from ..storage.engine import KV_SCHEMA, WriteBatch
from .arrow_pages import read_page
from .ingest import columns_op, ingest_op, puts_op
from .leader_services import ReplServiceCall
from .procedures import result_or_raise
from .routing import ClientRouting
from .write_batches import MAX_BATCH_BYTES, Batch, Unit, batch_ops, key_bytes, ops_bytes, value_bytes
from .records import (CAS, DELETE, DELETE_RANGE, INGEST, PUT, READ_MODES, QueryResult, ReplQuery, ReplRead, ReplScan,
                      ReplWrite, ScanResult,
                      Session, around_reserved, check_ops)

__all__ = ["ReplicatedClient"]



class ReplicatedClient(ClientRouting, LoopClient):
    """A session on a :class:`~.store.ReplicatedStore`; thread-safe. Close it (or use ``with``).

    ``read``: the default read mode (``"linearizable"``, the default; ``"leader"``, ``"follower"``
    or ``"session"``); ``max_staleness_s``: the default bound of follower and session reads (None:
    none). ``session``: a :class:`~.records.Session` (or its encoding) to continue, from this or
    another process. ``acks``: the default follower acknowledgements a write asks for (-1: the
    store's mode). ``timeout_s`` bounds each operation; ``rpc_timeout_s`` each actor call.
    ``max_batch`` and ``max_batch_bytes`` bound what one write packs (operations, and bytes as
    :func:`ops_bytes` counts them); ``max_in_flight``: the batches outstanding at once.
    """

    def __init__(self, store, *, read: str | None = None, max_staleness_s: float | None = None,
                 session: Session | bytes | None = None, acks: int = -1, timeout_s: float = 10.0,
                 rpc_timeout_s: float = 2.0, max_batch: int = 1000, max_in_flight: int = 8,
                 name: str | None = None, max_batch_bytes: int = MAX_BATCH_BYTES):
        self.store = store
        if read is None:  # linearizable by default; under leader-follower that is the leader's lease read
            read = "linearizable"
        if read not in READ_MODES:
            raise ConfigError(f"unknown read mode {read!r}; use one of {READ_MODES}")
        self.read = read
        self.max_staleness_s = self._check_staleness(max_staleness_s)
        self.acks = self._check_acks(acks)
        self.timeout_s = positive("timeout_s", timeout_s)
        self.rpc_timeout_s = positive("rpc_timeout_s", rpc_timeout_s)
        ttl = getattr(store, "session_ttl_s", 0.0)
        if ttl and self.timeout_s + self.rpc_timeout_s >= ttl:
            # A write retried (or delivered) after its session expired would apply a second time.
            raise ConfigError(f"timeout_s + rpc_timeout_s ({self.timeout_s + self.rpc_timeout_s}s) must be shorter "
                              f"than the store's session_ttl_s ({ttl}s)")
        if type(max_batch) is not int or type(max_in_flight) is not int or max_batch < 1 or max_in_flight < 1:
            raise ConfigError("max_batch and max_in_flight must be ints >= 1")
        self.max_batch, self.max_in_flight = max_batch, max_in_flight
        if type(max_batch_bytes) is not int or max_batch_bytes < 1:
            raise ConfigError(f"max_batch_bytes must be an int >= 1, got {max_batch_bytes!r}")
        self.max_batch_bytes = max_batch_bytes
        if isinstance(session, bytes):
            session = Session.decode(session)
        if session is None:
            session = Session(store.name)
        elif not isinstance(session, Session):
            raise InvalidArgumentError(f"session is a Session or its encoding, got {type(session).__name__}")
        session.check_store(store.name)
        self._session = session
        #: The partition-map version every request carries (0: none). A partitioned store's client
        #: sets it; the group then refuses keys it does not own at that version (see .ownership).
        self.fence = 0
        #: Called as ``on_refused(ops, future, single, read, error)`` for each unit a group refused for
        #: its partition map (a PartitionError: nothing applied); ``ops`` is a write's operations or
        #: a read's key, ``read`` the read's (mode, staleness bound). True means the caller took the
        #: unit over and will settle ``future`` (after routing it to another group, say).
        self.on_refused: Any = None
        self.name = name or f"client-{uuid.uuid4().hex[:12]}"
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._writes: collections.deque = collections.deque()  # (acks, Unit)
        self._reads: collections.deque = collections.deque()   # (mode, staleness, key, Unit)
        self._unacked: set[int] = set()
        self._leader: str | None = None
        self._picker = RoundRobinPicker()
        self._in_flight = 0
        self._kick_pending = False
        self._closed = False
        self.stats: collections.Counter[str] = collections.Counter()
        self._direct: DirectLinks | None = None  # the callers' threads' own links, for leader reads
        self._start_loop(f"repl-{self.name}")

    # --- checks ------------------------------------------------------------------------------

    @staticmethod
    def _check_staleness(bound: float | None) -> float:
        if bound is None:
            return -1.0
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound < 0:
            raise InvalidArgumentError(f"max_staleness_s is a number of seconds >= 0 (or None), got {bound!r}")
        return float(bound)

    def _check_acks(self, acks: int) -> int:
        followers = len(self.store.members) - 1
        if type(acks) is not int or acks < -1 or acks > followers:
            raise ConfigError(f"acks is -1 (the store's mode) or 0..{followers} follower acknowledgements, "
                              f"got {acks!r}")
        return acks

    def _mode(self, read: str | None) -> str:
        mode = self.read if read is None else read
        if mode not in READ_MODES:
            raise ConfigError(f"unknown read mode {mode!r}; use one of {READ_MODES}")
        return mode

    # --- the session -----------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """This client's position (encode it to continue the session in another process)."""
        with self._lock:
            return self._session

    def _saw(self, write: bool, epoch: int, lsn: int) -> None:
        with self._lock:
            self._session = self._session.saw(write, epoch, lsn)

    # --- writes ------------------------------------------------------------------------------------

    def put(self, key, value, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Set ``key`` to ``value`` (bytes); returns once the store's mode (or ``acks``) is satisfied."""
        self._wait(self.put_nowait(key, value, acks=acks), timeout_s)

    def delete(self, key, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Remove ``key``."""
        self._wait(self.delete_nowait(key, acks=acks), timeout_s)

    def delete_range(self, start, end, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Remove every key in ``[start, end)``."""
        self._wait(self.delete_range_nowait(start, end, acks=acks), timeout_s)

    def cas(self, key, expected, new, *, acks: int | None = None, timeout_s: float | None = None) -> bool:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: absent); returns whether it did.
        ``new=None`` deletes the key when the comparison succeeds."""
        return self._wait(self.cas_nowait(key, expected, new, acks=acks), timeout_s)

    def write(self, batch, *, acks: int | None = None, timeout_s: float | None = None) -> tuple:
        """Apply ``batch`` (a :class:`~ddia_ray.storage.WriteBatch`, or ``(kind, key, value_or_end)``
        tuples) atomically, as one log entry; returns one result per operation."""
        return self._wait(self.write_nowait(batch, acks=acks), timeout_s)

    def put_nowait(self, key, value, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`put`; the future resolves to None once acknowledged."""
        return self._submit_write(((PUT, key_bytes(key), value_bytes(value)),), acks, single=True)

    def delete_nowait(self, key, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`delete`."""
        return self._submit_write(((DELETE, key_bytes(key), b""),), acks, single=True)

    def delete_range_nowait(self, start, end, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`delete_range`."""
        return self._submit_write(((DELETE_RANGE, key_bytes(start), key_bytes(end)),), acks, single=True)

    def cas_nowait(self, key, expected, new, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`cas`; the future holds whether it set the key."""
        exp = None if expected is None else value_bytes(expected, "expected values")
        val = None if new is None else value_bytes(new, "new values")
        return self._submit_write(((CAS, key_bytes(key), val, exp),), acks, single=True)

    def write_nowait(self, batch, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start a :meth:`write`; the future holds the tuple of results."""
        # A WriteBatch of many puts goes from its two lists straight into one ingest operation: no op
        # tuple per put, and columns_op checks what check_ops would (exact bytes, no reserved key).
        # Not when fenced: the puts may span two partitions of this group (see _take_writes).
        cols = batch.puts() if isinstance(batch, WriteBatch) and not self.fence else None
        op = columns_op(*cols) if cols is not None else None
        if op is not None:
            return self._submit_write((op,), acks, single=False, puts=len(batch))
        return self._submit_write(batch_ops(batch), acks, single=False)

    def ingest(self, keys, values, *, acks: int | None = None, timeout_s: float | None = None) -> None:
        """Bulk-load ``keys[i] -> values[i]`` (binary Arrow columns or lists of bytes) as one log entry
        that every replica ingests whole (:mod:`.ingest`): atomic, exactly once like any write, and
        without a step per row on the LSM engine. A key repeated in the batch keeps its last value."""
        self._wait(self.ingest_nowait(keys, values, acks=acks), timeout_s)

    def ingest_nowait(self, keys, values, *, acks: int | None = None) -> concurrent.futures.Future:
        """Start an :meth:`ingest`; the future resolves to None once acknowledged."""
        return self._submit_write((ingest_op(keys, values),), acks, single=True)

    def submit_ops(self, ops: tuple, *, acks: int | None = None, single: bool = False,
                   future: concurrent.futures.Future | None = None) -> concurrent.futures.Future:
        """Start one atomic write of ready-made ``(code, key, tail)`` operations (``(CAS, key, new,
        expected)`` for a cas), as :func:`batch_ops` makes them; the future holds one result per
        operation, or the only one with ``single``; ``future``: settle this one instead of a new
        one (an operation rerouted from another client keeps its caller's future). For layers
        above that route operations themselves (a partitioned store's client)."""
        if not isinstance(ops, tuple) or not ops:
            raise InvalidArgumentError("submit_ops takes a non-empty tuple of operations")
        return self._submit_write(ops, acks, single=single, fut=future)

    def _submit_write(self, ops: tuple, acks: int | None, *, single: bool,
                      fut: concurrent.futures.Future | None = None, puts: int = 0) -> concurrent.futures.Future:
        ops = around_reserved(ops)  # a range over the replicas' own keys skips them
        check_ops(ops, client=True)  # refused here, alone, rather than failing a whole packed batch
        acks = self.acks if acks is None else self._check_acks(acks)
        return self._enqueue(self._writes, (acks,), ops, single, fut, puts, ops_bytes(ops))

    # --- reads -------------------------------------------------------------------------------------

    def get(self, key, *, read: str | None = None, max_staleness_s: float | None = None,
            timeout_s: float | None = None) -> bytes | None:
        """The value of ``key`` (None if absent), read as ``read`` says (default: the client's mode)."""
        return self._wait(self.get_nowait(key, read=read, max_staleness_s=max_staleness_s), timeout_s)

    def get_many(self, keys, *, read: str | None = None, max_staleness_s: float | None = None,
                 timeout_s: float | None = None) -> list:
        """The values of ``keys``, in order."""
        futures = [self.get_nowait(k, read=read, max_staleness_s=max_staleness_s) for k in keys]
        return [self._wait(f, timeout_s) for f in futures]

    def get_nowait(self, key, *, read: str | None = None, max_staleness_s: float | None = None,
                   future: concurrent.futures.Future | None = None) -> concurrent.futures.Future:
        """Start a :meth:`get` (``future``: as for :meth:`submit_ops`)."""
        mode = self._mode(read)
        bound = self.max_staleness_s if max_staleness_s is None else self._check_staleness(max_staleness_s)
        return self._enqueue(self._reads, (mode, bound), key_bytes(key), True, future)

    def scan(self, start=None, end=None, *, read: str | None = None, page_rows: int = 1000,
             max_staleness_s: float | None = None, timeout_s: float | None = None,
             pinned: bool = False) -> Iterator:
        """The pairs of ``[start, end)`` as Arrow record batches (columns ``key``, ``value``), one or
        more per page of ``page_rows`` rows (a replica's page holds a batch per row-group slice).

        Each page is read at one position of one replica; pages are read one after the other, so
        a scan that spans pages sees writes made between them (as a paginated etcd range without a
        pinned revision does). ``pinned=True`` reads every page from one view of the replica that
        served the first (:mod:`.pins`): the whole scan then reflects one position of the log; if
        that replica loses the view (it restarted, or the scan paused past the pin's TTL), the scan
        raises :class:`~ddia_ray.errors.ScanExpiredError`.
        """
        import pyarrow as pa

        mode = self._mode(read)
        bound = self.max_staleness_s if max_staleness_s is None else self._check_staleness(max_staleness_s)
        if type(page_rows) is not int or page_rows < 1:
            raise InvalidArgumentError("page_rows is an int >= 1")
        s = b"" if start is None else key_bytes(start)
        e = None if end is None else key_bytes(end)
        if e is not None and s > e:
            raise ConfigError(f"range start {s!r} is after its end {e!r}")
        pin, holder = (-1 if pinned else 0), ""
        while True:
            epoch, lsn = self.session.position() if mode == "session" else (0, 0)
            # Pages as Arrow (arrow_pages): no Python object per row on either side.
            request = ReplScan(s, e, page_rows, mode, epoch, lsn, bound, self.fence, pin, arrow=True)
            call = self._call_read(request) if pin <= 0 else self._call_holder(holder, request)
            page: ScanResult = self._wait(call, timeout_s)
            if page.batch:
                batches = read_page(page.batch)
            elif page.keys:  # a replica of a version before Arrow pages
                batches = [pa.record_batch([pa.array(page.keys, pa.binary()), pa.array(page.values, pa.binary())],
                                           schema=KV_SCHEMA)]
            else:
                batches = []
            yield from batches
            if not page.more or not batches:
                return
            last = batches[-1].column(0)
            s = last[len(last) - 1].as_py() + b"\x00"  # the next key after the last one
            if pinned:
                pin, holder = page.pin, page.node

    def query_nowait(self, name: str, args: Any = None, *, read: str | None = None,
                     max_staleness_s: float | None = None, wait_s: float = 0.0) -> concurrent.futures.Future:
        """Start a read-only procedure (:func:`~.procedures.query`) on one replica, served as ``read``
        says; the future holds its result, or raises the error it refused with.

        ``wait_s`` > 0 makes it a blocking query (:mod:`.parking`): an empty result (``None``, or an
        empty tuple, list or dict) is held by the replica until a write it applies gives a non-empty
        one, or for ``wait_s`` seconds at most; the future then holds that result."""
        mode = self._mode(read)
        bound = self.max_staleness_s if max_staleness_s is None else self._check_staleness(max_staleness_s)
        codec.check_value(args, f"the arguments of query {name!r}")
        epoch, lsn = self.session.position() if mode == "session" else (0, 0)
        return self._call_answered(ReplQuery(name, codec.encode(args), mode, epoch, lsn, bound, wait_s))

    def service_nowait(self, service: str, method: str, args: Any = None) -> concurrent.futures.Future:
        """Call ``method`` of leader service ``service`` (:mod:`.leader_services`) on the leader; the
        future holds its result, or raises the error it refused with. A call the leader could not
        answer (it stopped leading) is sent to the new one, so a call may run twice: a service's
        methods are written to be repeated."""
        codec.check_value(args, f"the arguments of {service}.{method}")
        return self._call_answered(ReplServiceCall(service, method, codec.encode(args)))

    def _call_answered(self, payload: ReplQuery | ReplServiceCall) -> concurrent.futures.Future:
        """Send a query or a leader service's call; the future holds the result its
        :class:`~.records.QueryResult` carries, or raises the error it refused with."""
        inner = self._call_read(payload)
        outer: concurrent.futures.Future = concurrent.futures.Future()

        def done(f: concurrent.futures.Future) -> None:
            try:
                outer.set_result(result_or_raise(f.result().result))
            except BaseException as e:  # noqa: BLE001 - the refusal or the call's failure: the caller's
                outer.set_exception(e)

        inner.add_done_callback(done)
        return outer

    def query(self, name: str, args: Any = None, *, read: str | None = None, max_staleness_s: float | None = None,
              timeout_s: float | None = None, wait_s: float = 0.0) -> Any:
        """Run a read-only procedure on one replica and return its result (see :meth:`query_nowait`,
        which also says what ``wait_s`` does). A leader read goes on this thread's direct link
        when it can (:meth:`query_direct`)."""
        if not wait_s:
            served, result = self.query_direct(name, args, read=read, timeout_s=timeout_s)
            if served:
                return result
        fut = self.query_nowait(name, args, read=read, max_staleness_s=max_staleness_s, wait_s=wait_s)
        return self._wait(fut, (timeout_s or self.timeout_s) + wait_s)

    def query_direct(self, name: str, args: Any = None, *, read: str | None = None,
                     timeout_s: float | None = None) -> tuple[bool, Any]:
        """Run a read-only procedure on the leader from the calling thread, on its own blocking link
        to the leader's shell (:mod:`~ddia_ray.runtime.direct_links`), without the loop thread's two
        hops: ``(True, result)``, or ``(False, None)`` when it could not be served so and the caller
        should take :meth:`query_nowait`'s routed path (another read mode, no leader known yet, the
        loop thread itself calling, no link, or a refusal that path handles by asking elsewhere:
        not the leader, a replica behind). The query's own refusal is raised, as the routed path
        would raise it. A read may be sent twice, so a request lost on the link is simply sent
        again by the routed path. It waits ``rpc_timeout_s`` for the answer, or ``timeout_s`` if
        that is shorter."""
        mode = self._mode(read)
        if mode not in ("leader", "linearizable"):
            return False, None
        codec.check_value(args, f"the arguments of query {name!r}")
        return self._call_direct(ReplQuery(name, codec.encode(args), mode, 0, 0, self.max_staleness_s, 0.0), timeout_s)

    def service_direct(self, service: str, method: str, args: Any = None, *,
                       timeout_s: float | None = None) -> tuple[bool, Any]:
        """Call ``method`` of leader service ``service`` from the calling thread on its direct link to
        the leader, as :meth:`query_direct` runs a query: ``(True, result)``, or ``(False, None)`` to
        take :meth:`service_nowait`'s routed path. A service's methods are written to be repeated
        (:mod:`.leader_services`), so a call whose answer the link lost is sent again that way."""
        codec.check_value(args, f"the arguments of {service}.{method}")
        return self._call_direct(ReplServiceCall(service, method, codec.encode(args)), timeout_s)

    def _call_direct(self, payload: ReplQuery | ReplServiceCall, timeout_s: float | None) -> tuple[bool, Any]:
        """Send ``payload`` to the leader on this thread's direct link: see :meth:`query_direct`."""
        target = self._leader
        if target is None or self._closed or threading.current_thread() is self._thread:
            return False, None
        try:
            handle = self.store._handle(target)
        except ActorUnavailableError:
            return False, None
        wait = self.rpc_timeout_s if timeout_s is None else min(self.rpc_timeout_s, positive("timeout_s", timeout_s))
        data = self._direct_links().request(target, handle, codec.encode(payload), wait)
        if data is None:
            return False, None
        try:
            result = self._reply_payload(target, data)
        except (NotLeaderError, StalenessBoundError, ReplicaBehindError, PartitionError,
                ActorUnavailableError, MessageDroppedError, CallTimeoutError):
            return False, None  # what the routed path retries, reroutes or asks elsewhere
        if not isinstance(result, QueryResult):
            raise ConfigError(f"unexpected answer from {target}: {result!r}")
        self._saw(False, result.epoch, result.lsn)
        with self._lock:
            self.stats["direct_reads" if isinstance(payload, ReplQuery) else "direct_service_calls"] += 1
        return True, result_or_raise(result.result)

    def _direct_links(self) -> DirectLinks:
        links = self._direct
        if links is None:
            with self._lock:
                if self._direct is None:
                    import ray

                    self._direct = DirectLinks(self.name, ray.get_runtime_context().get_node_id(),
                                               lambda handle, timeout_s: ray.get(handle.endpoint.remote(),
                                                                                 timeout=timeout_s))
                links = self._direct
        return links

    def call_leader(self, payload: Any) -> concurrent.futures.Future:
        """Send one request the leader answers (an index page, say), following the leader through
        redirects and failed calls until the client's ``timeout_s``; the future holds the answer."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + self.timeout_s

        async def ask() -> None:
            while True:
                try:
                    target = self._leader or self.store._any_replica()
                    answer = await self._call(target, payload)
                    self._leader = target
                    fut.set_result(answer)
                    return
                except NotLeaderError as e:
                    self._leader = e.leader_hint if e.leader_hint and e.leader_hint != target else None
                except (ActorUnavailableError, MessageDroppedError, CallTimeoutError):
                    self._leader = None
                except BaseException as e:  # noqa: BLE001 - the request's own refusal: the caller's
                    fut.set_exception(e)
                    return
                if time.monotonic() > deadline:
                    fut.set_exception(CallTimeoutError(f"no leader answered within {self.timeout_s}s"))
                    return
                await asyncio.sleep(0.02)

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(ask()))
        return fut

    def _call_holder(self, node: str, payload: ReplScan) -> concurrent.futures.Future:
        """A pinned scan's next page, from the replica that holds the pin (no other has its view)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        async def ask() -> None:
            try:
                fut.set_result(await self._call(node, payload))
            except BaseException as e:  # noqa: BLE001 - the caller's: a lost pin, a dead replica
                fut.set_exception(e)

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(ask()))
        return fut

    def _call_read(self, payload: ReplScan | ReplQuery | ReplServiceCall) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        # A blocking query may be held for its wait: the deadline starts after it.
        unit = Unit((payload,), fut, time.monotonic() + self.timeout_s + getattr(payload, "wait_s", 0.0), True)
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._send_read_batch(payload, [unit])))
        return fut

    # --- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Fail what is still pending and stop the background loop (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = [u for _, u in self._writes] + [r[-1] for r in self._reads]
            self._writes.clear()
            self._reads.clear()
        for u in pending:
            settle(u.future, exc=CallTimeoutError("client closed before the operation completed"))
        self._stop_loop_thread()
        if self._direct is not None:
            self._direct.close()

    # --- machinery ---------------------------------------------------------------------------------

    def _enqueue(self, queue: collections.deque, group: tuple, what: Any, single: bool,
                 fut: concurrent.futures.Future | None = None, puts: int = 0,
                 size: int = 0) -> concurrent.futures.Future:
        if self._closed:
            raise ConfigError("the client is closed")
        if fut is None:
            fut = self._new_future()
        unit = Unit(what, fut, time.monotonic() + self.timeout_s, single, puts, size)
        with self._lock:
            queue.append((*group, unit))
            kick, self._kick_pending = not self._kick_pending, True
        if kick:  # one wake-up for a burst of submissions, not one per operation
            self._loop.call_soon_threadsafe(self._wake.set)
        return fut

    async def _pump(self) -> None:
        while True:
            await wait_doorbell(self._wake, 0.05)
            self._wake.clear()
            with self._lock:
                self._kick_pending = False
            while self._in_flight < self.max_in_flight and (self._writes or self._reads):
                if self._writes:
                    batch = self._take_writes()
                    if batch is not None:
                        self._in_flight += 1
                        self._loop.create_task(self._send_write(batch))
                if self._reads and self._in_flight < self.max_in_flight:
                    payload, units = self._take_reads()
                    if units:
                        self._in_flight += 1
                        self._loop.create_task(self._send_read_batch(payload, units))

    def _take_writes(self) -> Batch | None:
        units: list[Unit] = []
        ops: list = []
        size = 0
        with self._lock:
            acks = self._writes[0][0]
            while self._writes and self._writes[0][0] == acks and (
                    not units or (len(ops) + len(self._writes[0][1].ops) <= self.max_batch
                                  and size + self._writes[0][1].size <= self.max_batch_bytes)):
                unit = self._writes[0][1]
                bulk = unit.ops[0][0] == INGEST
                if units and (bulk or ops[0][0] == INGEST):
                    break  # an ingest is alone in its write (records.check_ops)
                self._writes.popleft()
                if unit.future.done():
                    continue
                units.append(unit)
                ops.extend(unit.ops)
                size += unit.size
            if not units:
                return None
            seq = next(self._seq)
            self._unacked.add(seq)
            acked_below = min(self._unacked)
            epoch, lsn = self._session.position()
        # Each unit's ops were checked when submitted (_submit_write), the rest is this client's own.
        # Many puts go as columns (an ingest), unless routed by a partition map: the fence checks
        # an ingest as one partition's range, and the puts may span two partitions of this group.
        run = None if self.fence else puts_op(ops)
        return Batch(codec.prechecked(ReplWrite, tuple(ops) if run is None else (run,), acks, 0, self.name, seq,
                                       acked_below, epoch, lsn, self.fence),
                      units, units[0].puts if run is None else len(ops))  # a unit of columns is alone

    def _take_reads(self) -> tuple[Any, list]:
        units: list[Unit] = []
        keys: list[bytes] = []
        with self._lock:
            mode, bound = self._reads[0][0], self._reads[0][1]
            while self._reads and self._reads[0][:2] == (mode, bound) and len(keys) < self.max_batch:
                unit = self._reads.popleft()[2]
                if unit.future.done():
                    continue
                units.append(unit)
                keys.append(unit.ops)
            epoch, lsn = self._session.position() if mode == "session" else (0, 0)
        return ReplRead(tuple(keys), mode, epoch, lsn, bound, self.fence), units
