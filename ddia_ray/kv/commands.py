"""What RaftKV clients send and receive, and the commands its log holds.

Theory of operation
-------------------
A client sends one :class:`KVBatch` per actor call: many operations from one
client *session*. Every operation carries the session's sequence number, so
a retried write is recognised by the state machine and applied once (Raft
thesis §6.3); ``acked_below`` tells the state machine which results the
client has already received, so it can forget them. Each write becomes one
:class:`KVCommand` log entry; reads use ReadIndex and never touch the log.

The answer is a :class:`KVResults` with one ``(code, value)`` per operation:
``OK`` (value is the result), ``RETRY`` (not done here: ask ``leader`` or
retry later with the same sequence number; safe for writes because of the
session) or ``ERROR`` (the operation itself is wrong; value says why).
"""

from __future__ import annotations

from typing import Any

from ..codec import record
from ..errors import InvalidArgumentError

__all__ = ["KVOp", "KVBatch", "KVCommand", "KVResults", "KVAdmin", "OK", "RETRY", "ERROR", "OP_KINDS",
           "WRITE_KINDS"]

OK, RETRY, ERROR = 0, 1, 2
OP_KINDS = frozenset({"get", "put", "delete", "cas"})
WRITE_KINDS = frozenset({"put", "delete", "cas"})
ADMIN_ACTIONS = frozenset({"add_learner", "add_voter", "remove", "transfer", "status"})


def _check_key(key) -> None:
    if not isinstance(key, (str, bytes)):
        raise InvalidArgumentError(f"keys are str or bytes, got {type(key).__name__}")


@record("kv.op", version=1)
class KVOp:
    """One client operation: ``get``, ``put``, ``delete`` or ``cas`` (value is the new value)."""

    kind: str
    key: Any
    seq: int
    value: Any = None
    expected: Any = None

    def __post_init__(self):
        if self.kind not in OP_KINDS:
            raise InvalidArgumentError(f"unknown operation {self.kind!r}; use one of {sorted(OP_KINDS)}")
        _check_key(self.key)
        if type(self.seq) is not int or self.seq <= 0:
            raise InvalidArgumentError("an operation's seq is a positive int")


@record("kv.batch", version=1)
class KVBatch:
    """Operations of one client session; ``acked_below``: every seq below it has had its answer."""

    client: str
    ops: tuple
    acked_below: int = 0

    def __post_init__(self):
        if not isinstance(self.client, str) or not self.client:
            raise InvalidArgumentError("a batch names its client session (a non-empty str)")
        if not isinstance(self.ops, tuple) or not all(isinstance(op, KVOp) for op in self.ops):
            raise InvalidArgumentError("a batch holds a tuple of KVOp")


@record("kv.command", version=1)
class KVCommand:
    """A write in the log: the session that sent it, its sequence number and the operation."""

    client: str
    seq: int
    acked_below: int
    op: KVOp


@record("kv.results", version=1)
class KVResults:
    """Answers to a :class:`KVBatch`, in order: ``(code, value)`` each; ``leader`` is a hint for retries."""

    results: tuple
    leader: str = ""


@record("kv.admin", version=1)
class KVAdmin:
    """A membership or leadership request to the leader (``node`` names the member concerned)."""

    action: str
    node: str = ""

    def __post_init__(self):
        if self.action not in ADMIN_ACTIONS:
            raise InvalidArgumentError(f"unknown admin action {self.action!r}; use one of {sorted(ADMIN_ACTIONS)}")
