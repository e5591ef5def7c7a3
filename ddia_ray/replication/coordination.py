"""Calling the coordination service (a RaftKV group) from inside a pure core, by messages.

Theory of operation
-------------------
A leader-follower group keeps its leader lease in a linearizable store, as DDIA 8.4
("The leader and the lock") and 9.4 ("Membership and coordination services") put
it in ZooKeeper or etcd. Here that store is a RaftKV group, and a core talks to it
the way it talks to anything: by messages. :class:`CoordinationClient` sends a
:class:`~ddia_ray.kv.commands.KVCall` to one member, follows the ``RETRY`` hint to
the leader, and after ``timeout_ticks`` without an answer sends the same batch to
the next member. Every operation carries a sequence number of the client's
RaftKV session, so a batch sent twice is applied once (a ``cas`` that succeeded
on the first try does not fail on the second). The session name includes the
replica's incarnation, so a restarted replica never reuses a sequence number of
its previous life.

One call is outstanding at a time: the lease needs no more, and it keeps the
order of a renewal and a read obvious.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from ..kv.commands import ERROR, OK, RETRY, KVBatch, KVCall, KVCallResult

__all__ = ["CoordinationClient"]


class CoordinationClient:
    """One RaftKV client session driven by a core's ticks and messages (see the module docstring)."""

    def __init__(self, send: Callable[[str, Any], None], coordinators: tuple, session: str, *,
                 timeout_ticks: int):
        if not coordinators:
            raise ConfigError("a coordination client needs at least one coordinator")
        self._send = send
        self.coordinators = tuple(coordinators)
        self.session = session
        self.timeout_ticks = timeout_ticks
        self._target = 0
        self._seq = 0
        self._call_id = 0
        self._pending: tuple | None = None  # (call id, batch, done, ticks waited)
        self.calls = self.retries = 0

    @property
    def busy(self) -> bool:
        """Whether a call is outstanding."""
        return self._pending is not None

    def call(self, ops: list, done: Callable[[tuple | None], None]) -> None:
        """Send ``ops`` (``(kind, key, value, expected)`` each); ``done(values)`` gets one value per op,
        or None when the service refused the batch as malformed (a bug, reported by the caller)."""
        if self._pending is not None:
            raise ConfigError("a coordination call is already outstanding")
        first = self._seq + 1
        batch_ops = []
        for kind, key, value, expected in ops:
            self._seq += 1
            batch_ops.append((kind, key, self._seq, value, expected))
        self._call_id += 1
        batch = KVBatch(self.session, tuple(batch_ops), first)  # every earlier seq was answered
        self._pending = (self._call_id, batch, done, 0)
        self.calls += 1
        self._send(self.coordinators[self._target], KVCall(self._call_id, batch))

    def on_result(self, src: str, msg: KVCallResult) -> None:
        """A coordinator's answer (stale answers, to calls already done, are ignored)."""
        pending = self._pending
        if pending is None or msg.call_id != pending[0]:
            return
        call_id, batch, done, _ = pending
        results = msg.results.results if msg.results is not None else ()
        if msg.error is not None or any(code == ERROR for code, _ in results):
            self._pending = None
            done(None)
            return
        if any(code == RETRY for code, _ in results):
            hint = next((v for code, v in results if code == RETRY and v), "")
            if hint in self.coordinators:
                self.retries += 1
                self._target = self.coordinators.index(hint)
                self._pending = (call_id, batch, done, 0)
                self._send(self.coordinators[self._target], KVCall(call_id, batch))
            else:
                # No leader known (an election is under way): on_tick asks the next member a tick
                # from now, not at once, or an answer-and-resend loop would spin without time passing.
                self._pending = (call_id, batch, done, self.timeout_ticks - 1)
            return
        self._pending = None
        done(tuple(v for code, v in results if code == OK))

    def on_tick(self) -> None:
        """Time passes: an unanswered call goes to the next coordinator (same batch, same seqs)."""
        pending = self._pending
        if pending is None:
            return
        call_id, batch, done, waited = pending
        if waited + 1 < self.timeout_ticks:
            self._pending = (call_id, batch, done, waited + 1)
            return
        self.retries += 1
        self._target = (self._target + 1) % len(self.coordinators)
        self._pending = (call_id, batch, done, 0)
        self._send(self.coordinators[self._target], KVCall(call_id, batch))
