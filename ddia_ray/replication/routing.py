"""Where a replicated store's client sends a batch, and how it retries one without applying it twice.

Theory of operation
-------------------
A batch is retried with the same sequence number wherever it goes: to the
leader another replica names (:class:`~ddia_ray.errors.NotLeaderError`'s hint),
to any replica when the leader is unknown or a call fails, and after
:class:`~ddia_ray.errors.WriteOutcomeUnknownError` (the leader lost its lease
or stepped down with the write unacknowledged). The replicas remember each
session's answers, so a retry of a write that did apply returns its first
answer and applies nothing (exactly once). A unit that has not succeeded by its
``timeout_s`` (counted from submission, so time spent queued behind other
operations counts) fails with :class:`~ddia_ray.errors.CallTimeoutError`,
outcome unknown.

Reads go where their mode says (:mod:`.client`'s module docstring); a follower or session read
that a replica refuses (too stale for the bound, behind the session) is asked of the next
replica the balancing picker gives, then of the leader, which meets any bound and any position.
A read no reachable replica can serve within its staleness bound fails with
:class:`~ddia_ray.errors.StalenessBoundError`; one that every replica is behind for goes round
again until its ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import (ActorUnavailableError, CallTimeoutError, ConfigError, MessageDroppedError,
                      NoReplicaAvailableError, NotLeaderError, PartitionError, ProposalDroppedError, ReplicaBehindError,
                      StalenessBoundError, WriteOutcomeUnknownError)
from ..runtime.core import Reply
from ..runtime.futures import settle
from .leader_services import ReplServiceCall
from .records import QueryResult, ReplQuery, ReplScan, ScanResult, WriteAck
from .write_batches import Batch

__all__ = ["ClientRouting"]


class ClientRouting:
    """Sending batches and retrying them: a part of :class:`~.client.ReplicatedClient` (see the
    module docstring). It reads and writes the client's ``_leader``, ``_in_flight``, ``_unacked``,
    ``stats`` and ``_picker``, and wakes its loop (``_wake``) when a batch is done."""

    if TYPE_CHECKING:  # provided by the client
        store: Any
        name: str
        timeout_s: float
        rpc_timeout_s: float
        on_refused: Any
        stats: Any
        _leader: str | None
        _in_flight: int
        _unacked: set[int]
        _lock: Any
        _picker: Any
        _wake: Any

        async def _request(self, node: str, handle: Any, src: str, data: bytes, timeout_s: float,
                           what: str) -> bytes: ...

        def _saw(self, write: bool, epoch: int, lsn: int) -> None: ...

    async def _call(self, node: str, payload: Any) -> Any:
        """One request to ``node``; the reply's payload, or the error the replica refused with (a blocking
        query's call may last its wait on top of the call's own timeout)."""
        data = await self._request(node, self.store._handle(node), self.name, codec.encode(payload),
                                   self.rpc_timeout_s + getattr(payload, "wait_s", 0.0), f"{self.store.name}/{node}")
        return self._reply_payload(node, data)

    @staticmethod
    def _reply_payload(node: str, data: bytes) -> Any:
        """The payload of ``node``'s encoded reply ``data``, or the error it refused with, raised."""
        reply = codec.decode(data)
        if not isinstance(reply, Reply):
            raise ConfigError(f"unexpected answer from {node}: {reply!r}")
        if reply.error is not None:
            raise reply.error.exception(node)
        return reply.payload

    def _fail(self, units: list, exc: BaseException, read: tuple | None = None) -> None:
        """Fail ``units`` with ``exc``, unless :attr:`on_refused` takes one over (``read``: the read
        mode and staleness bound of refused reads, for the one that routes them again)."""
        hook = self.on_refused if isinstance(exc, PartitionError) else None
        for u in units:
            if not u.future.done() and not (hook is not None and hook(u.ops, u.future, u.single, read, exc)):
                u.future.set_exception(exc)

    def _expired(self, units: list) -> list:
        now = time.monotonic()
        alive = []
        for u in units:
            if u.future.done():
                continue
            if u.deadline_s < now:
                u.future.set_exception(CallTimeoutError(f"the operation did not succeed within {self.timeout_s}s; "
                                                        f"its outcome is unknown"))
            else:
                alive.append(u)
        return alive

    async def _send_write(self, batch: Batch) -> None:
        try:
            while True:
                if not self._expired(batch.units):
                    return
                try:
                    target = self._leader or self.store._any_replica()
                    ack: WriteAck = await self._call(target, batch.payload)
                except NotLeaderError as e:
                    self.stats["redirects"] += 1
                    self._leader = e.leader_hint if e.leader_hint and e.leader_hint != target else None
                    if self._leader is None:
                        await asyncio.sleep(0.02)  # an election or a transfer is under way
                    continue
                except ProposalDroppedError:
                    # The Raft leader refused the entry for now (a leadership transfer or a membership
                    # change is under way): nothing was proposed, and the same seq is safe to send again.
                    self.stats["dropped_retries"] += 1
                    self._leader = None
                    await asyncio.sleep(0.02)
                    continue
                except WriteOutcomeUnknownError:
                    # The leader lost its lease with the write unacknowledged; the same seq is safe to
                    # send again: wherever it applied, the session's answer is returned, not a second apply.
                    self.stats["outcome_unknown_retries"] += 1
                    self._leader = None
                    await asyncio.sleep(0.02)
                    continue
                except (ActorUnavailableError, MessageDroppedError, CallTimeoutError, NoReplicaAvailableError) as e:
                    self.stats["failed_calls"] += 1
                    self._leader = None
                    if isinstance(e, NoReplicaAvailableError):
                        await asyncio.sleep(0.05)
                    continue
                except asyncio.CancelledError:
                    self._fail(batch.units, CallTimeoutError("client closed before the write completed"))
                    raise
                except Exception as e:  # noqa: BLE001 - the refusal is the caller's: give it to every unit
                    self._fail(batch.units, e)
                    return
                self._leader = target
                self._saw(True, ack.epoch, ack.lsn)
                i = 0
                results = (None,) * batch.puts if batch.puts else ack.results  # a put's result is None
                for u in batch.units:
                    n = u.puts or len(u.ops)
                    settle(u.future, results[i] if u.single else results[i:i + n])
                    i += n
                self.stats["write_batches"] += 1
                return
        finally:
            with self._lock:
                self._unacked.discard(batch.payload.seq)
            self._in_flight -= 1
            self._wake.set()

    def _pick(self, mode: str, tried: set) -> str | None:
        """A replica for a follower or session read that has not refused this round (None: all have)."""
        members = self.store.members
        for m in members:
            if m not in self._picker:
                self._picker.add(m)
        for m in [m for m in self._picker.members if m not in members]:
            self._picker.remove(m)  # removed from the group
        exclude = set(tried)
        if mode == "follower" and self._leader:
            exclude.add(self._leader)  # "reads go to a follower": the leader serves only when none can
        try:
            return self._picker.pick(exclude=exclude)
        except NoReplicaAvailableError:
            return None

    async def _send_read_batch(self, payload: Any, units: list) -> None:
        mode = payload.read
        tried: set[str] = set()
        leader_tried = False
        stale: StalenessBoundError | None = None
        try:
            while True:
                units = self._expired(units)
                if not units:
                    return
                if mode in ("leader", "linearizable"):
                    try:
                        target = self._leader or self.store._any_replica()
                    except ActorUnavailableError:
                        await asyncio.sleep(0.05)  # every replica is down: wait for a restart or the deadline
                        continue
                else:
                    picked = self._pick(mode, tried)
                    if picked is None:  # every candidate refused or failed this round
                        if not leader_tried and self._leader:
                            picked, leader_tried = self._leader, True  # the leader meets any bound or position
                        elif stale is not None:
                            self._fail(units, stale)  # no reachable replica within the bound
                            return
                        else:
                            tried.clear()
                            leader_tried = False
                            await asyncio.sleep(0.02)
                            continue
                    target = picked
                try:
                    result = await self._call(target, payload)
                except NotLeaderError as e:
                    self._leader = e.leader_hint if e.leader_hint and e.leader_hint != target else None
                    if self._leader is None:
                        await asyncio.sleep(0.02)
                    continue
                except StalenessBoundError as e:
                    self.stats["read_elsewhere"] += 1
                    stale = e
                    tried.add(target)
                    continue
                except ReplicaBehindError:
                    self.stats["read_elsewhere"] += 1
                    tried.add(target)
                    continue
                except (ActorUnavailableError, MessageDroppedError, CallTimeoutError):
                    self.stats["failed_calls"] += 1
                    tried.add(target)
                    if target == self._leader:
                        self._leader = None
                    continue
                except asyncio.CancelledError:
                    self._fail(units, CallTimeoutError("client closed before the read completed"))
                    raise
                except Exception as e:  # noqa: BLE001 - the refusal is the caller's (SessionError, bad input)
                    self._fail(units, e, (payload.read, payload.max_staleness_s))
                    return
                if mode in ("leader", "linearizable"):
                    self._leader = target
                self._saw(False, result.epoch, result.lsn)
                if isinstance(result, (ScanResult, QueryResult)):
                    for u in units:
                        settle(u.future, result)
                else:
                    for u, v in zip(units, result.values):
                        settle(u.future, v)
                self.stats["read_batches"] += 1
                return
        finally:
            if not isinstance(payload, (ReplScan, ReplQuery, ReplServiceCall)):
                self._in_flight -= 1
            self._wake.set()
