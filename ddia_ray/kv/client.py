"""The RaftKV client: blocking and non-blocking operations, batched into few actor calls.

Theory of operation
-------------------
Every operation gets the next sequence number of this client's *session* and
a :class:`concurrent.futures.Future`. A background asyncio loop (one thread
per client) drains the queue into :class:`~.commands.KVBatch` es of up to
``max_batch`` operations and keeps up to ``max_in_flight_batches`` actor
calls outstanding, so one client can keep thousands of operations in flight
while paying about one millisecond of actor call per batch, not per op.

Where a batch goes: the member believed to lead. An answer of ``RETRY``
carries the member's leader hint; a call that fails or does not answer within
``rpc_timeout_s`` moves the guess to another member. Retried operations keep
their sequence number, so a write applies exactly once even when an earlier
attempt did apply (the state machine's session returns the first result).
An operation that has not succeeded by its ``timeout_s`` fails with
:class:`~ddia_ray.errors.CallTimeoutError`; its outcome is then unknown (it
may still apply), which is what a history must record as ``info``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import threading
import time
import uuid
from typing import Any

from .. import codec
from .._validate import positive
from ..errors import CallTimeoutError, ConfigError, InvalidArgumentError
from ..runtime.client_loop import LoopClient, wait_doorbell
from ..runtime.core import Reply
from ..runtime.futures import settle
from .commands import ERROR, OK, KVBatch, KVResults, check_op

__all__ = ["RaftKVClient"]


class _Pending:
    __slots__ = ("op", "future", "deadline_s")

    def __init__(self, op: tuple, future: concurrent.futures.Future, deadline_s: float):
        self.op, self.future, self.deadline_s = op, future, deadline_s


class RaftKVClient(LoopClient):
    """A session on a :class:`~.cluster.RaftKV` cluster; thread-safe. Close it (or use ``with``)."""

    def __init__(self, cluster, *, timeout_s: float = 10.0, rpc_timeout_s: float = 1.0, max_batch: int = 1000,
                 max_in_flight_batches: int = 8, name: str | None = None):
        self.cluster = cluster
        self.timeout_s = positive("timeout_s", timeout_s)
        self.rpc_timeout_s = positive("rpc_timeout_s", rpc_timeout_s)
        if max_batch < 1 or max_in_flight_batches < 1:
            raise ConfigError("max_batch and max_in_flight_batches must be >= 1")
        ttl_s = getattr(cluster, "options", {}).get("session_ttl_s", 0)
        if ttl_s and self.timeout_s + self.rpc_timeout_s >= ttl_s:
            # A retry sent after the members forgot the session would apply a second time.
            raise ConfigError(f"timeout_s + rpc_timeout_s ({self.timeout_s + self.rpc_timeout_s}s) must be shorter "
                              f"than the cluster's session_ttl_s ({ttl_s}s)")
        self.max_batch, self.max_in_flight = max_batch, max_in_flight_batches
        self.session = name or f"client-{uuid.uuid4().hex[:12]}"
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._outstanding: dict[int, _Pending] = {}
        self._queue: collections.deque = collections.deque()
        self._leader: str | None = None
        self._in_flight = 0
        self._kick_pending = False
        self._expired_at_s = 0.0
        self._closed = False
        self.stats: collections.Counter[str] = collections.Counter()
        self._start_loop(f"raftkv-{self.session}")

    # --- public API -------------------------------------------------------------

    def get(self, key, *, linearizable: bool = True, timeout_s: float | None = None):
        """The value of ``key`` (None if absent).

        By default the read is linearizable: the leader confirms it still leads with a quorum
        (ReadIndex) and answers once it has applied everything committed before the read began.
        ``linearizable=False`` is answered by whichever member the client reaches, from its own
        state: cheaper, but it may be stale (a follower behind, or a deposed leader).
        """
        return self._wait(self.get_nowait(key, linearizable=linearizable), timeout_s)

    def put(self, key, value, *, timeout_s: float | None = None) -> None:
        """Set ``key`` to ``value`` (bytes; None is refused: use delete)."""
        self._wait(self.put_nowait(key, value), timeout_s)

    def delete(self, key, *, timeout_s: float | None = None) -> bool:
        """Remove ``key``; returns whether it existed."""
        return self._wait(self.delete_nowait(key), timeout_s)

    def cas(self, key, expected, new, *, timeout_s: float | None = None) -> bool:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: absent); returns whether it did.

        ``new=None`` deletes the key when the comparison succeeds.
        """
        return self._wait(self.cas_nowait(key, expected, new), timeout_s)

    def get_nowait(self, key, *, linearizable: bool = True) -> concurrent.futures.Future:
        """Start a :meth:`get`; the future holds the value."""
        return self._submit("get" if linearizable else "get_local", key)

    def put_nowait(self, key, value) -> concurrent.futures.Future:
        """Start a :meth:`put`; the future resolves to None once the write is committed and applied."""
        if value is None:
            raise InvalidArgumentError("put(key, None) is ambiguous; use delete(key)")
        return self._submit("put", key, value)

    def delete_nowait(self, key) -> concurrent.futures.Future:
        """Start a :meth:`delete`."""
        return self._submit("delete", key)

    def cas_nowait(self, key, expected, new) -> concurrent.futures.Future:
        """Start a :meth:`cas`."""
        return self._submit("cas", key, new, expected)

    def close(self) -> None:
        """Fail what is still pending and stop the background loop (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._outstanding.values())
            self._outstanding.clear()
        for p in pending:
            settle(p.future, exc=CallTimeoutError("client closed before the operation completed"))
        self._stop_loop_thread()

    # --- machinery --------------------------------------------------------------

    def _submit(self, kind: str, key, value=None, expected=None) -> concurrent.futures.Future:
        if self._closed:
            raise ConfigError("the client is closed")
        fut = self._new_future()
        with self._lock:
            seq = next(self._seq)
            op = check_op((kind, key.encode("utf-8") if type(key) is str else key, seq, value, expected))
            p = _Pending(op, fut, time.monotonic() + self.timeout_s)
            self._outstanding[seq] = p
            self._queue.append(p)
            kick, self._kick_pending = not self._kick_pending, True
        if kick:  # one wake-up for a burst of submissions, not one per operation
            self._loop.call_soon_threadsafe(self._kick)
        return fut

    def _kick(self) -> None:
        self._wake.set()

    async def _pump(self) -> None:
        while True:
            await wait_doorbell(self._wake, 0.05)
            self._wake.clear()
            with self._lock:
                self._kick_pending = False  # from here on, new submissions must wake the loop again
            self._expire()
            while self._queue and self._in_flight < self.max_in_flight:
                batch: list[_Pending] = []
                with self._lock:
                    while self._queue and len(batch) < self.max_batch:
                        p = self._queue.popleft()
                        if not p.future.done():
                            batch.append(p)
                if not batch:
                    break
                self._in_flight += 1
                self._loop.create_task(self._send(batch))

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._expired_at_s < 0.05:
            return  # a scan of every outstanding operation is not worth doing more often
        self._expired_at_s = now
        with self._lock:
            late = [p for p in self._outstanding.values() if p.deadline_s < now]
        for p in late:
            self._resolve(p, exc=CallTimeoutError(f"{p.op[0]} {p.op[1]!r} did not succeed within "
                                                  f"{self.timeout_s}s; its outcome is unknown"))

    def _resolve(self, p: _Pending, value: Any = None, exc: BaseException | None = None) -> None:
        with self._lock:
            self._outstanding.pop(p.op[2], None)
        settle(p.future, value, exc)

    async def _send(self, batch: list) -> None:
        member = self._leader or self.cluster._any_member()
        with self._lock:
            acked_below = min(self._outstanding, default=0)  # the lowest seq still unanswered
        payload = KVBatch(self.session, tuple(p.op for p in batch), acked_below)
        retry: list[_Pending] = []
        hint: str | None = None
        try:
            data = await self._request(member, self.cluster._handle(member), self.session, codec.encode(payload),
                                       self.rpc_timeout_s, f"{self.cluster.name}/{member}")
            reply = codec.decode(data)
            if not isinstance(reply, Reply) or not reply.ok or not isinstance(reply.payload, KVResults):
                raise ConfigError(f"unexpected answer from {member}: {reply!r}")
            results = reply.payload
            hint = results.leader or None
            for p, (code, value) in zip(batch, results.results):
                if code == OK:
                    self._resolve(p, value)
                elif code == ERROR:
                    self._resolve(p, exc=InvalidArgumentError(str(value)))
                else:
                    retry.append(p)
            self.stats["batches"] += 1
        except Exception:  # noqa: BLE001 -- dead member, lost call, timeout: try elsewhere
            retry = batch
            self.stats["failed_calls"] += 1
        if retry:
            self.stats["retried_ops"] += len(retry)
            self._leader = hint if hint and hint != member else self.cluster._other_member(member)
            with self._lock:
                self._queue.extendleft(reversed(retry))
            if hint is None:
                await asyncio.sleep(0.01)  # nobody knows a leader yet (an election is running)
        else:
            self._leader = member
        self._in_flight -= 1
        self._wake.set()
