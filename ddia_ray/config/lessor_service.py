"""The lessor service: the pure :class:`~.lessor.Lessor` on a clock, next to the store's Raft members.

Theory of operation
-------------------
:class:`LessorService` is a runtime service (:mod:`ddia_ray.runtime.service`):
the store's one shell hosts it as node ``lessor`` of the store's group, so
the nemesis kills and restarts it like a member. It owns a
:class:`~.lessor.Lessor` and a thread that, every ``interval_s``:

1. lists the store's leases (``config.leases``, read at the leader) and
   :meth:`~.lessor.Lessor.sync` s with them: a lease it did not know (granted
   through another client, or before this lessor started) is timed from now;
2. proposes ``config.revoke`` for every lease past its deadline
   (:meth:`~.lessor.Lessor.expired`), and again for those whose revoke did not
   get through (:meth:`~.lessor.Lessor.retry_due`); the revoke deletes the
   lease's keys at one revision, which watchers see as deletes;
3. watches the Raft term the answers carry: when it changes (a new leader),
   every lease gets a fresh full TTL (:meth:`~.lessor.Lessor.promote`), as
   etcd's new leader does, so a failover never expires a lease early.

A restarted lessor starts empty: its first sync times every lease from then
(a full TTL again). A lease therefore lives at least its TTL after its last
keepalive, and at most about TTL plus one ``interval_s`` plus the time to
commit its revoke, or longer across a lessor restart or a failover (etcd
gives the same guarantee). The lessor keeps no state the group does not: the
group's rows say which leases exist; only deadlines are the lessor's.

Keepalives (``keepalive``), grants (``track``) and revokes (``forget``) are its
methods, answered in the shell's worker threads under one lock. A client that
revokes a lease tells the lessor at once; a lease revoked by another client is
forgotten at the next sync, so a keepalive of it may still succeed for up to
``interval_s`` (it changes nothing: the lease and its keys are gone).

Lock order: ``_lock`` guards the lessor core; it is never held while calling the store.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import DdiaRayError, LeaseExpiredError, LeaseNotFoundError

__all__ = ["LessorService", "FACTORY", "NODE"]

#: The service's factory, and its node name in the store's group.
FACTORY = "ddia_ray.config.lessor_service:LessorService"
NODE = "lessor"
_log = logging.getLogger(__name__)


class LessorService:
    """The lessor of configuration store ``store`` (see the module docstring)."""

    component = "config-lessor"
    methods = ("ping", "keepalive", "track", "forget", "remaining", "stats")

    def __init__(self, node_id: str, *, store: str, interval_s: float = 0.05, retry_s: float = 1.0):
        from .lessor import Lessor

        self.node_id, self.store_name = node_id, store
        self.interval_s = float(interval_s)
        self._lock = threading.Lock()
        self.core = Lessor(retry_s=retry_s)
        self._client: Any = None
        self._term = -1
        self._stop = threading.Event()
        self.figures: dict[str, Any] = {"syncs": 0, "revokes_proposed": 0, "revoked": 0, "promotions": 0,
                                        "keepalives": 0, "errors": 0, "last_error": ""}
        # The store is reached from the thread, not here: the shell builds this object in its actor's
        # constructor, before the group it belongs to can be described to a connecting handle.
        self._thread = threading.Thread(target=self._run, name=f"lessor-{store}", daemon=True)
        self._thread.start()

    # --- methods -----------------------------------------------------------------------------------

    def ping(self) -> str:
        """Liveness probe: the node id."""
        return self.node_id

    def keepalive(self, lease: int) -> float:
        """Renew ``lease`` for its full TTL from the keepalive's arrival; its TTL in seconds. A lease
        not timed yet (granted since the last sync, or this lessor has just started) is looked up in
        the store, so a keepalive right after a grant or a restart is never refused.

        The renewal counts from when the keepalive arrived, and nothing waits before it: the lessor
        used to wait for its first sync with the store, up to 10 s. In a loaded CI run the first
        keepalive of a lease with a 4 s TTL got no answer for more than 5 s, and its keeper then
        stopped with the lease lost; that wait was the one step of the call that could last so
        long for a lease its grant had already timed."""
        arrived = time.monotonic()
        with self._lock:
            self.figures["keepalives"] += 1
            try:
                return self.core.renew(lease, arrived)
            except LeaseExpiredError:
                raise  # known and past its deadline: no lookup can revive it
            except LeaseNotFoundError:
                pass  # not timed here yet: looked up below, outside the lock
        _, ttl_ms, _ = self._store().query("config.lease", (lease,), read="leader")  # raises if gone
        with self._lock:
            self.core.grant(lease, ttl_ms / 1000, arrived)
            return self.core.renew(lease, arrived)

    def track(self, lease: int, ttl_s: float) -> None:
        """Time a lease a client has just granted, from now."""
        with self._lock:
            self.core.grant(lease, float(ttl_s), time.monotonic())

    def forget(self, lease: int) -> None:
        """Stop timing a lease a client has just revoked (a keepalive of it is refused from now on;
        without this call, from the next sync)."""
        with self._lock:
            self.core.revoked(lease)

    def remaining(self, lease: int) -> float:
        """Seconds until ``lease`` expires, as this lessor times it."""
        with self._lock:
            return self.core.remaining(lease, time.monotonic())

    def stats(self) -> dict:
        """The lessor's figures: leases timed, syncs, revokes, promotions, keepalives, errors."""
        with self._lock:
            return {**self.figures, "leases": len(self.core), "term": self._term}

    def close(self) -> None:
        """Stop the thread and close the store's client."""
        self._stop.set()
        self._thread.join(5.0)
        if self._client is not None:
            self._client.close()

    # --- the thread ----------------------------------------------------------------------------------

    def _store(self) -> Any:
        if self._client is None:
            from ..replication.store import ReplicatedStore
            from ..runtime import NodeGroup

            store = ReplicatedStore._attached(NodeGroup.connect(self.store_name))
            self._client = store.client(read="leader", timeout_s=10.0)
        return self._client

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception as e:  # noqa: BLE001 - a failover, a timeout, a node restarting: the next pass tries again
                if not isinstance(e, (DdiaRayError, TimeoutError)):
                    _log.error("lessor pass failed unexpectedly; retrying", exc_info=e)
                with self._lock:
                    self.figures["errors"] += 1
                    self.figures["last_error"] = f"{type(e).__name__}: {e}"[:500]
            self._stop.wait(self.interval_s)

    def _pass(self) -> None:
        client = self._store()
        live: dict[int, float] = {}
        after = 0
        term = self._term
        while True:
            fut = client.query_nowait("config.leases", (after, 1000), read="leader")
            page = _result(fut)
            term = max(term, client.session.read_epoch)
            live.update((lease, ttl_ms / 1000) for lease, ttl_ms, _ in page)
            if len(page) < 1000:
                break
            after = page[-1][0]
        now = time.monotonic()
        with self._lock:
            self.core.sync(live, now)
            if term != self._term:
                if self._term != -1:
                    self.core.promote(now)  # a new leader: nobody loses time to the failover
                    self.figures["promotions"] += 1
                self._term = term
            due = self.core.expired(now) + self.core.retry_due(now)
            self.figures["syncs"] += 1
        for lease in due:
            self._revoke(client, lease)

    def _revoke(self, client: Any, lease: int) -> None:
        from ..replication.procedures import call_op, result_or_raise

        with self._lock:
            self.figures["revokes_proposed"] += 1
        try:
            result_or_raise(_result(client.submit_ops((call_op("config.revoke", (lease,)),), single=True)))
        except LeaseNotFoundError:
            pass  # revoked by its holder meanwhile: gone all the same
        with self._lock:
            self.core.revoked(lease)
            self.figures["revoked"] += 1


def _result(fut: Any, timeout_s: float = 10.0) -> Any:
    """A future's result, a timeout raised as :class:`~ddia_ray.errors.CallTimeoutError`."""
    import concurrent.futures

    from ..errors import CallTimeoutError

    try:
        return fut.result(timeout_s)
    except concurrent.futures.TimeoutError:
        raise CallTimeoutError(f"the store did not answer the lessor within {timeout_s}s") from None
