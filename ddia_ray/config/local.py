"""A configuration store in one process: the replicas' own state, procedures and lessor, without Ray.

Theory of operation
-------------------
:class:`LocalBackend` keeps the rows in a replica's :class:`~ddia_ray.replication.state.MapState`
and runs each write through the same :func:`~ddia_ray.replication.state.decide` and the same
registered procedures (:mod:`.procedures`) as a Raft member does, one log entry per call, and each
read through the same queries. Blocking queries are held as a replica holds them: until a write
makes their answer non-empty, or their wait is over. Leases are timed by the same pure
:class:`~.lessor.Lessor` as the store's lessor service, on the clock it is given (a fake one in
tests), and an expired lease is revoked by the same ``config.revoke`` procedure, when any call
next comes in or :meth:`LocalBackend.tick` is called.

So a :class:`~.client.ConfigClient` over it behaves as one over a Raft group, minus the network:
the model-based tests and the documentation's examples use it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable

from .. import codec
from ..errors import LeaseNotFoundError
from ..replication.procedures import call_op, result_or_raise, run_query
from ..replication.state import MapState
from . import procedures as _procedures  # registers the store's procedures and queries in this process
from .lessor import Lessor

__all__ = ["LocalBackend", "LocalConfig"]

assert _procedures  # imported for its registrations


def _empty(answer: Any) -> bool:
    return answer is None or (isinstance(answer, (tuple, list, dict)) and not answer)


class LocalBackend:
    """The store's rows in memory, decided as a replica decides them (thread-safe). ``clock``: the
    lessor's time in seconds (default ``time.monotonic``)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = MapState()
        self.clock = clock
        self.lessor = Lessor()
        self._lock = threading.RLock()
        self._parked: list[tuple[concurrent.futures.Future, str, bytes, float]] = []

    # --- writes -----------------------------------------------------------------------------------

    def _apply(self, name: str, args: Any) -> Any:
        """Run one procedure as one log entry (the lock held); its answer or its ErrorRecord."""
        ops, results = self.state.decide((call_op(name, args),))
        self.state.apply(self.state.applied + 1, ops)
        if ops:
            self._unpark()
        return results[0]

    def call_nowait(self, name: str, args: Any) -> concurrent.futures.Future:
        """Run procedure ``name`` as one log entry; the future holds its result or its refusal."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self.tick()
            answer = self._apply(name, args)
        _settle(fut, answer)
        return fut

    def tick(self) -> tuple[int, ...]:
        """Revoke the leases whose deadline passed on :attr:`clock`; returns their ids."""
        with self._lock:
            expired = self.lessor.expired(self.clock())
            for lease in expired:
                self._apply("config.revoke", (lease,))  # refused if a holder revoked it first: gone either way
                self.lessor.revoked(lease)
            return expired

    # --- reads ------------------------------------------------------------------------------------

    def query_nowait(self, name: str, args: Any, *, wait_s: float = 0.0,
                     read: str | None = None) -> concurrent.futures.Future:
        """Run query ``name``; with ``wait_s`` an empty answer is held until a write or the wait's end
        (``read`` is the replicated store's read mode: one process has one state, it changes nothing)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        encoded = codec.encode(args)
        with self._lock:
            self.tick()
            answer = run_query(name, encoded, self.state)
            if wait_s > 0 and _empty(answer):
                deadline = time.monotonic() + wait_s
                self._parked.append((fut, name, encoded, deadline))
                timer = threading.Timer(wait_s, self._expire_parked)
                timer.daemon = True
                timer.start()
                return fut
        _settle(fut, answer)
        return fut

    def _unpark(self) -> None:
        """Answer the held queries a write made non-empty (the lock held)."""
        still = []
        for fut, name, encoded, deadline in self._parked:
            answer = run_query(name, encoded, self.state)
            if _empty(answer):
                still.append((fut, name, encoded, deadline))
            else:
                _settle(fut, answer)
        self._parked = still

    def _expire_parked(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._parked if p[3] <= now + 0.001]
            self._parked = [p for p in self._parked if p not in due]
            for fut, name, encoded, _ in due:
                _settle(fut, run_query(name, encoded, self.state))

    # --- leases -----------------------------------------------------------------------------------

    def granted(self, lease: int, ttl_s: float, timeout_s: float) -> None:
        """Start timing a lease just granted."""
        with self._lock:
            self.lessor.grant(lease, ttl_s, self.clock())

    def revoked(self, lease: int, timeout_s: float) -> None:
        """Stop timing a lease just revoked."""
        with self._lock:
            self.lessor.revoked(lease)

    def keepalive(self, lease: int, timeout_s: float) -> float:
        """Renew ``lease``; its TTL. Refuses an expired lease (revoking it first if it is due)."""
        with self._lock:
            self.tick()
            try:
                return self.lessor.renew(lease, self.clock())
            except LeaseNotFoundError:
                # Not timed here (revoked, or granted by another backend over these rows): the store decides.
                answer = run_query("config.lease", codec.encode((lease,)), self.state)
                info = result_or_raise(answer)
                self.lessor.grant(lease, info[1] / 1000, self.clock())
                return self.lessor.renew(lease, self.clock())

    def close(self) -> None:
        """Answer every held query (with its empty answer): nothing waits on a closed backend."""
        with self._lock:
            parked, self._parked = self._parked, []
        for fut, name, encoded, _ in parked:
            _settle(fut, run_query(name, encoded, self.state))


def _settle(fut: concurrent.futures.Future, answer: Any) -> None:
    if fut.done():
        return
    try:
        fut.set_result(result_or_raise(answer))
    except Exception as e:  # noqa: BLE001 - the procedure's or query's refusal: the caller's
        fut.set_exception(e)


def LocalConfig(*, clock: Callable[[], float] = time.monotonic, timeout_s: float = 30.0, **options: Any):
    """A :class:`~.client.ConfigClient` over a fresh :class:`LocalBackend` (one process, no Ray)."""
    from .client import ConfigClient

    return ConfigClient(LocalBackend(clock=clock), timeout_s=timeout_s, **options)
