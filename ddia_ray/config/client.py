"""The configuration store's client: reads at revisions, writes, transactions, leases, watches.

Theory of operation
-------------------
Each call is one procedure call or one query (:mod:`.procedures`,
:mod:`.queries`) of the client's *backend*: a :class:`ReplicatedBackend` over
a replicated store's client and the store's lessor on Ray, or a
:class:`~.local.LocalBackend` in one process. Values travel as their
versioned msgpack (:func:`ddia_ray.codec.encode`), encoded here and decoded
here, so a replica stores and compares bytes.

A paged read (a prefix) reads every page at the revision of the first, so
the list it returns is one revision of the store, however many calls it took.
A prefix delete reads the keys, then deletes them if nothing under the prefix
changed since (:class:`~ddia_ray.errors.RevisionConflictError` otherwise),
and reads again until it succeeds or ``timeout_s`` passes.

Keepalives go to the lessor (:mod:`.lessor_service`), not through the log:
they change no state but a deadline, as in etcd; :meth:`ConfigClient.keep_alive`
renews from a thread of its own (:mod:`.lease_keeper`). Watches share one long poll
per client (:mod:`.watch`).

Thread-safe: the backend's client batches concurrent calls; the watch thread
calls the watches' callbacks (see :class:`~.watch.Watch`). The backend and the
client's plumbing (``call``, ``query``, ``wait``, ``close``) are the ones every
service on procedures shares (:mod:`ddia_ray.replication.backend`).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable, Sequence

from .. import codec
from .._validate import positive
from ..replication.backend import ProcedureBackend, ProcedureClient
from ..errors import (ActorUnavailableError, CallTimeoutError, FutureRevisionError, InvalidArgumentError,
                      MessageDroppedError, RevisionConflictError)
from .lease_keeper import LeaseKeeper
from .procedures import MAX_TXN_OPS, check_prefix
from .queries import MAX_PAGE
from .records import Compare, KeyValue, Lease, Op, TxnResult, check_key, kv_from_row
from .watch import Watch, WatchHub

__all__ = ["ConfigClient", "ReplicatedBackend", "Watch"]


class ReplicatedBackend(ProcedureBackend):
    """Procedure calls and (blocking) queries through a :class:`~ddia_ray.replication.ReplicatedClient`
    (:class:`~ddia_ray.replication.backend.ProcedureBackend`), and the lease calls that go to the
    store's lessor (``lessor``, a :class:`~ddia_ray.runtime.service.ServiceRef`)."""

    def __init__(self, client: Any, lessor: Any, *, read: str | None = None) -> None:
        super().__init__(client, read=read)
        self.lessor = lessor

    def keepalive(self, lease: int, timeout_s: float) -> float:
        """Renew ``lease`` at the lessor; its TTL in seconds. A lessor that is restarting (killed,
        unreachable) is asked again until ``timeout_s``: its restart gives every lease a full TTL,
        so the time it was away costs the lease nothing."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return float(self.lessor.call("keepalive", lease, timeout_s=max(0.1, deadline - time.monotonic())))
            except (ActorUnavailableError, MessageDroppedError, CallTimeoutError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def granted(self, lease: int, ttl_s: float, timeout_s: float) -> None:
        """Tell the lessor of a lease just granted, so its deadline starts now rather than at the
        lessor's next sync. If the lessor cannot be reached the lease is granted all the same: its
        next sync (or its restart) finds the lease in the store and times it from then."""
        try:
            self.lessor.call("track", lease, ttl_s, timeout_s=min(timeout_s, 5.0))
        except (ActorUnavailableError, MessageDroppedError, CallTimeoutError):
            pass  # see the docstring: only the deadline's start is later, never earlier

    def revoked(self, lease: int, timeout_s: float) -> None:
        """Tell the lessor of a lease just revoked, so a keepalive of it is refused at once rather than
        from the lessor's next sync (which forgets it anyway)."""
        try:
            self.lessor.call("forget", lease, timeout_s=min(timeout_s, 5.0))
        except (ActorUnavailableError, MessageDroppedError, CallTimeoutError):
            pass  # the lessor restarting knows only the leases the store still has


class ConfigClient(ProcedureClient):
    """Read, write, transact, lease and watch a configuration store (see the module docstring).

    ``timeout_s``: how long a blocking call waits for its answer. A context manager: :meth:`close`
    stops the watches and releases the backend.
    """

    timeout_message = ("the configuration store did not answer within {timeout_s}s; a write's outcome is "
                       "unknown (read the key, or its history, to find out)")

    def __init__(self, backend: Any, *, timeout_s: float = 30.0, watch_wait_s: float = 5.0,
                 watch_page: int = MAX_PAGE) -> None:
        super().__init__(backend, timeout_s=timeout_s)
        self._hub = WatchHub(self, wait_s=positive("watch_wait_s", watch_wait_s), page=watch_page)
        self._keepers: list[LeaseKeeper] = []
        self._keepers_lock = threading.Lock()

    def close(self) -> None:
        """Cancel every watch and lease keeper, stop the watch thread and release the backend
        (idempotent)."""
        with self._keepers_lock:
            keepers, self._keepers = self._keepers, []
        for keeper in keepers:
            keeper.cancel()
        self._hub.close()
        super().close()

    @staticmethod
    def _revision_arg(revision: int | None) -> int:
        if revision is None:
            return 0
        if type(revision) is not int or revision < 1:
            raise InvalidArgumentError(f"a revision is an int >= 1 (or None: the current one), got {revision!r}")
        return revision

    # --- reads -------------------------------------------------------------------------------------

    def revision(self) -> int:
        """The store's current revision (0 before the first write)."""
        return self.query("config.revision", ())[0]

    def status(self) -> dict:
        """The store's counters: ``revision``, ``compacted`` (the compaction revision: reads and
        watches need revisions at or above it) and ``next_lease``."""
        revision, compacted, next_lease = self.query("config.revision", ())
        return {"revision": revision, "compacted": compacted, "next_lease": next_lease}

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None:
        """``key`` as of ``revision`` (None: now), or None if it did not exist then. Raises
        :class:`~ddia_ray.errors.CompactedError` below the compaction revision and
        :class:`~ddia_ray.errors.FutureRevisionError` past the current one."""
        check_key(key)
        return kv_from_row(self.query("config.get", (key, self._revision_arg(revision))))

    def get_prefix(self, prefix: str, *, revision: int | None = None, limit: int = 1000) -> list[KeyValue]:
        """Up to ``limit`` keys starting with ``prefix`` ("": every key) as of ``revision`` (None:
        now), in key order, all read at one revision."""
        rows, _ = self._range(prefix, revision, limit)
        return [kv for kv in (kv_from_row(r) for r in rows) if kv is not None]

    def _range(self, prefix: str, revision: int | None, limit: int) -> tuple[list[tuple], int]:
        """The kv rows under ``prefix`` (at most ``limit``) and the revision they were all read at."""
        check_prefix(prefix)
        if type(limit) is not int or limit < 1:
            raise InvalidArgumentError(f"limit is an int >= 1, got {limit!r}")
        at, after = self._revision_arg(revision), ""
        rows: list[tuple] = []
        while len(rows) < limit:
            page, nxt, at = self.query("config.range", (prefix, at, after, min(MAX_PAGE, limit - len(rows))))
            rows.extend(page)
            if nxt is None:
                break
            after = nxt
        return rows[:limit], at

    def history(self, key: str, limit: int = 100) -> list[KeyValue]:
        """``key``'s newest ``limit`` changes still kept, oldest first; a delete appears as a
        :class:`KeyValue` with value None, version 0 and the delete's ``mod_revision``."""
        check_key(key)
        rows = self.query("config.history", (key, limit))
        return [kv for kv in (kv_from_row(r) for r in rows) if kv is not None]

    # --- writes ------------------------------------------------------------------------------------

    def put(self, key: str, value: Any, *, lease: int = 0) -> int:
        """Set ``key`` to ``value`` (any value the codec encodes), attached to ``lease`` (0: none);
        returns the new revision. A lease that expired raises
        :class:`~ddia_ray.errors.LeaseExpiredError`, one never granted
        :class:`~ddia_ray.errors.LeaseNotFoundError`."""
        check_key(key)
        return self.call("config.put", (key, codec.encode(value), lease))

    def put_nowait(self, key: str, value: Any, *, lease: int = 0) -> concurrent.futures.Future:
        """Start :meth:`put` and return at once; the future holds the new revision (or raises the
        refusal). Puts in flight together share the replicated store's batches, so many of them
        commit in a few log entries: the way to write fast from one thread (:meth:`wait` collects one)."""
        check_key(key)
        return self.backend.call_nowait("config.put", (key, codec.encode(value), lease))

    def delete(self, key: str) -> int:
        """Delete ``key``; returns the revision of the delete (the current one if the key was absent:
        nothing is written then, as in etcd)."""
        check_key(key)
        return self.call("config.delete", (key,))[0]

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``, at one revision; returns it (the current one if
        no key matched)."""
        check_prefix(prefix)
        deadline = time.monotonic() + self.timeout_s
        backoff = 0.005
        while True:
            rows, at = self._range(prefix, None, MAX_TXN_OPS)
            try:
                return self.call("config.delete_keys", (prefix, at, tuple(r[0] for r in rows)))[0]
            except RevisionConflictError:
                if time.monotonic() + backoff > deadline:
                    raise
                time.sleep(backoff)  # another writer changed the prefix meanwhile: read again
                backoff = min(0.2, backoff * 2)

    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResult:
        """If every comparison holds run ``success``, else ``failure``, all at one revision (etcd's
        ``Txn``); see :class:`~.records.TxnResult` for the answer."""
        if not all(isinstance(c, Compare) for c in compare):
            raise InvalidArgumentError("a transaction's comparisons are Compare records")
        if not all(isinstance(o, Op) for o in (*success, *failure)):
            raise InvalidArgumentError("a transaction's operations are Op records (Op.put, Op.delete, Op.get)")
        succeeded, revision, responses = self.call(
            "config.txn", (tuple(c.row() for c in compare), tuple(o.row() for o in success),
                           tuple(o.row() for o in failure)))
        ran = success if succeeded else failure
        out = tuple(kv_from_row(r) if op.kind == "get" else r for op, r in zip(ran, responses))
        return TxnResult(bool(succeeded), revision, out)

    # --- leases ------------------------------------------------------------------------------------

    def grant(self, ttl_s: float) -> Lease:
        """A new lease that lives ``ttl_s`` seconds unless kept alive (:meth:`keepalive`)."""
        _seconds("a lease's TTL", ttl_s)
        lease, ttl_ms = self.call("config.grant", (int(round(ttl_s * 1000)),))
        self.backend.granted(lease, ttl_ms / 1000, self.timeout_s)
        return Lease(lease, ttl_ms / 1000)

    def keepalive(self, lease_id: int) -> float:
        """Renew the lease for another full TTL; returns the TTL in seconds. Raises
        :class:`~ddia_ray.errors.LeaseExpiredError` once it has expired."""
        return self.backend.keepalive(_lease_id(lease_id), self.timeout_s)

    def keep_alive(self, lease_id: int, *, every_s: float | None = None,
                   on_lost: Callable[[BaseException], Any] | None = None) -> LeaseKeeper:
        """Keep the lease alive from a thread of its own until the keeper is cancelled (or this client
        closes): a :class:`~.lease_keeper.LeaseKeeper` renewing every ``every_s`` seconds (None: a
        third of the TTL, as etcd's client does). If the lease is lost (expired, revoked) the keeper
        stops and calls ``on_lost(error)``, so the holder can register under a new lease."""
        _lease_id(lease_id)
        if on_lost is not None and not callable(on_lost):
            raise InvalidArgumentError("on_lost is a callable")
        if every_s is not None:
            _seconds("every_s", every_s)
        else:
            every_s = self.keepalive(lease_id) / 3  # also refuses a lease already lost, here and now
        keeper = LeaseKeeper(self, lease_id, float(every_s), on_lost)
        with self._keepers_lock:
            self._keepers = [k for k in self._keepers if k.alive] + [keeper]
        return keeper

    def revoke(self, lease_id: int) -> int:
        """Revoke the lease now: its keys are deleted at one new revision (returned)."""
        revision = self.call("config.revoke", (_lease_id(lease_id),))[0]
        self.backend.revoked(lease_id, self.timeout_s)
        return revision

    def lease_keys(self, lease_id: int) -> list[str]:
        """The keys attached to a live lease."""
        return list(self.query("config.lease", (lease_id,))[2])

    def leases(self) -> list[Lease]:
        """Every live lease."""
        out: list[Lease] = []
        after = 0
        while True:
            page = self.query("config.leases", (after, MAX_PAGE))
            out.extend(Lease(lease, ttl_ms / 1000) for lease, ttl_ms, _ in page)
            if len(page) < MAX_PAGE:
                return out
            after = page[-1][0]

    # --- history -----------------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Remove the history below ``revision``: reads and watches below it raise
        :class:`~ddia_ray.errors.CompactedError` from then on."""
        self._revision_arg(revision)
        while True:
            _, done = self.call("config.compact", (revision,))
            if done:
                return

    def rollback(self, revision: int) -> int:
        """Write, as one new revision (returned), every key as it was at ``revision``: values back,
        keys created since deleted."""
        return self.call("config.rollback", (self._revision_arg(revision),))

    # --- watches -----------------------------------------------------------------------------------

    def watch(self, key_or_prefix: str, callback: Callable[[list], Any], *, prefix: bool = False,
              start_revision: int | None = None, on_error: Callable[[BaseException], Any] | None = None) -> Watch:
        """Call ``callback(events)`` with the changes of ``key_or_prefix`` (every key starting with it
        if ``prefix``) from ``start_revision`` (None: the next revision), in revision order, each
        revision once, on this client's watch thread. Raises
        :class:`~ddia_ray.errors.CompactedError` if ``start_revision`` was compacted and
        :class:`~ddia_ray.errors.FutureRevisionError` if it is past the next revision. A watch that
        fails later (its callback raised, its revision was compacted while it lagged) stops and
        reports to ``on_error`` (and keeps the error in ``Watch.error``)."""
        if prefix:
            check_prefix(key_or_prefix)
        else:
            check_key(key_or_prefix)
        if not callable(callback) or (on_error is not None and not callable(on_error)):
            raise InvalidArgumentError("a watch's callback (and on_error) are callables")
        # The store's revision as its leader knows it: a lagging follower would call a revision that
        # exists "in the future" (the watch itself may then be served by any replica).
        current, compacted, _ = self.wait(self.backend.query_nowait("config.revision", (), read="leader"))
        if start_revision is None:
            start = current + 1
        else:
            start = self._revision_arg(start_revision)
            if start > current + 1:
                raise FutureRevisionError(f"a watch from revision {start} is in the future: the store is at "
                                          f"revision {current} (watch from {current + 1} for the next change)",
                                          requested=start, current=current)
            if start < compacted:
                from ..errors import CompactedError

                raise CompactedError(f"revision {start} was compacted: the oldest revision kept is "
                                     f"{max(compacted, 1)}; read the current values and watch from there",
                                     requested=start, oldest_kept=max(compacted, 1))
        return self._hub.add(key_or_prefix, bool(prefix), callback, start, on_error)

    def watches(self) -> list[Watch]:
        """This client's watches that are still running."""
        return self._hub.active()


def _lease_id(lease_id: Any) -> int:
    """``lease_id``, or :class:`~ddia_ray.errors.InvalidArgumentError` if it is not a lease id."""
    if type(lease_id) is not int or lease_id < 1:
        raise InvalidArgumentError(f"a lease id is an int >= 1, got {lease_id!r}")
    return lease_id


def _seconds(what: str, value: Any) -> None:
    """:class:`~ddia_ray.errors.InvalidArgumentError` unless ``value`` is a number of seconds > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise InvalidArgumentError(f"{what} is a number of seconds > 0, got {value!r}")
