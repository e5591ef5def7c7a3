"""The service replica the demo balances load over: a small pure core.

Theory of operation: a replica answers :class:`Work` requests with a
deterministic digest (so a client can check every answer, and a retried
request is harmless: the work is idempotent), answers :class:`Ping` health
checks, and broadcasts a :class:`Heartbeat` to its peers every
``heartbeat_every_ticks`` ticks. It counts what it served in a durable
:class:`Served` record written *before* the reply leaves, so a replica killed
and restarted reports the requests it served in its earlier life too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from .._validate import integer, positive
from ..codec import record
from ..errors import InvalidArgumentError
from ..runtime.core import BaseCore

__all__ = ["Work", "WorkResult", "Ping", "Pong", "Heartbeat", "Served", "ReplicaCore", "expected_digest"]


@record("demo.work", version=1)
class Work:
    """A unit of work: hash ``key`` ``rounds`` times."""

    key: str
    rounds: int = 1

    def __post_init__(self):
        if not isinstance(self.key, str):
            raise InvalidArgumentError("Work.key must be a str")
        positive("rounds", integer("rounds", self.rounds))


@record("demo.work_result", version=1)
class WorkResult:
    """The digest of a :class:`Work` and the replica that computed it."""

    key: str
    digest: bytes
    replica: str


@record("demo.ping", version=1)
class Ping:
    """A health check."""

    seq: int = 0


@record("demo.pong", version=1)
class Pong:
    """Answer to :class:`Ping`: who answered and how much it served in all its lives."""

    replica: str
    seq: int
    served: int


@record("demo.heartbeat", version=1)
class Heartbeat:
    """Sent to every peer periodically; lets peers (and tests) see which links carry traffic."""

    sender: str
    tick: int


@record("demo.served", version=1)
class Served:
    """Durable: ``count`` more requests were served."""

    count: int


def expected_digest(work: Work) -> bytes:
    """What a correct replica answers for ``work`` (clients use it to verify replies)."""
    digest = work.key.encode()
    for _ in range(work.rounds):
        digest = hashlib.blake2b(digest, digest_size=16).digest()
    return digest


class ReplicaCore(BaseCore):
    """A stateless-service replica with a durable served-request counter."""

    def __init__(self, node_id: str, *, recovered: tuple = (), tick_s: float = 0.01,
                 peers: tuple = (), heartbeat_every_ticks: int = 5, clock_ticks: bool = False):
        super().__init__(node_id, tick_s=tick_s)
        if not isinstance(clock_ticks, bool):
            raise InvalidArgumentError("clock_ticks is a bool")
        # True: ticked by the clock, as a lease holder is (long Work blocks the loop; see runtime.ticks).
        self.clock_ticks = clock_ticks
        self.peers = tuple(p for p in peers if p != node_id)
        self.heartbeat_every_ticks = positive("heartbeat_every_ticks", integer("heartbeat_every_ticks",
                                                                               heartbeat_every_ticks))
        self.served = sum(r.count for r in recovered if isinstance(r, Served))
        self.served_this_life = 0
        self.heartbeats_from: dict[str, int] = {}

    def on_tick(self) -> None:
        """Broadcast a heartbeat every ``heartbeat_every_ticks`` ticks."""
        if self.ticks % self.heartbeat_every_ticks == 0:
            for peer in self.peers:
                self.send(peer, Heartbeat(self.node_id, self.ticks))

    def on_message(self, src: str, payload: Any) -> None:
        """Count heartbeats per sender."""
        if isinstance(payload, Heartbeat):
            self.heartbeats_from[src] = self.heartbeats_from.get(src, 0) + 1
        else:
            super().on_message(src, payload)

    def on_request(self, request_id: int, payload: Any) -> None:
        """Serve :class:`Work` and :class:`Ping`; refuse anything else with an error reply."""
        if isinstance(payload, Work):
            self.served += 1
            self.served_this_life += 1
            self.persist(Served(1))
            self.reply(request_id, WorkResult(payload.key, expected_digest(payload), self.node_id))
        elif isinstance(payload, Ping):
            self.reply(request_id, Pong(self.node_id, payload.seq, self.served))
        else:
            self.reply(request_id, error=InvalidArgumentError(f"replica cannot serve {type(payload).__name__}"))

    def status(self) -> Mapping[str, Any]:
        """Served counts and heartbeats seen per peer."""
        return {"node": self.node_id, "ticks": self.ticks, "served": self.served,
                "served_this_life": self.served_this_life, "heartbeats_from": dict(self.heartbeats_from)}
