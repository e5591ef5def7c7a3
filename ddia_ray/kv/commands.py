"""What RaftKV clients send and receive, and the commands its log holds.

Theory of operation
-------------------
A client sends one :class:`KVBatch` per actor call: many operations from one
client *session*. Every operation carries the session's sequence number, so
a retried write is recognised by the state machine and applied once (Raft
thesis §6.3); ``acked_below`` tells the state machine which results the
client has already received, so it can forget them. Each write becomes one
:class:`KVCommand` log entry (see :func:`encode_command`); reads use ReadIndex and never touch the log.

The answer is a :class:`KVResults` with one ``(code, value)`` per operation:
``OK`` (value is the result), ``RETRY`` (not done here: ask ``leader`` or
retry later with the same sequence number; safe for writes because of the
session) or ``ERROR`` (the operation itself is wrong; value says why).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import codec
from ..codec import record
from ..errors import CodecError, CorruptRecordError, InvalidArgumentError, UnknownVersionError

__all__ = ["KVBatch", "KVCommand", "KVResults", "KVAdmin", "OK", "RETRY", "ERROR", "OP_KINDS", "WRITE_KINDS",
           "COMMAND_FORMAT", "check_op", "encode_command", "decode_command"]

OK, RETRY, ERROR = 0, 1, 2
COMMAND_FORMAT = 1
OP_KINDS = frozenset({"get", "get_local", "put", "delete", "cas"})
WRITE_KINDS = frozenset({"put", "delete", "cas"})
ADMIN_ACTIONS = frozenset({"add_learner", "add_voter", "remove", "transfer", "status"})


#: Values that need no walk: every operation is checked on each decode, so the common case is kept short.
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def _check_key(key) -> None:
    if not isinstance(key, (str, bytes)):
        raise InvalidArgumentError(f"keys are str or bytes, got {type(key).__name__}")


def check_op(op) -> tuple:
    """Validate one operation tuple ``(kind, key, seq, value, expected)``; returns it."""
    if not isinstance(op, tuple) or len(op) != 5:
        raise InvalidArgumentError(f"an operation is (kind, key, seq, value, expected), got {op!r}")
    kind, key, seq = op[0], op[1], op[2]
    if kind not in OP_KINDS:
        raise InvalidArgumentError(f"unknown operation {kind!r}; use one of {sorted(OP_KINDS)}")
    _check_key(key)
    if type(seq) is not int or seq <= 0:
        raise InvalidArgumentError("an operation's seq is a positive int")
    # A value the codec would refuse must fail this call: encoded later it would fail the whole
    # batch it shares with other callers, and every member decodes the log entry it becomes.
    if type(op[3]) not in _SCALARS or type(op[4]) not in _SCALARS:
        for what, v in (("value", op[3]), ("expected", op[4])):
            try:
                codec.check_value(v, what)
            except CodecError as e:
                raise InvalidArgumentError(f"the operation's {what} cannot be stored: {e}") from e
    return op


@record("kv.batch", version=1, fields_checked=True)
class KVBatch:
    """Operations of one client session; ``acked_below``: every seq below it has had its answer.

    Each operation is a plain tuple ``(kind, key, seq, value, expected)`` (``kind`` one of
    ``get``, ``get_local``, ``put``, ``delete``, ``cas``; for ``cas`` ``value`` is the new value;
    ``get_local`` is answered by whichever member receives it, from its own state, without
    ReadIndex: possibly stale, never linearizable): one record per
    batch rather than one per operation keeps the decoding cost per operation down.
    """

    client: str
    ops: tuple
    acked_below: int = 0

    def __post_init__(self):
        if not isinstance(self.client, str) or not self.client:
            raise InvalidArgumentError("a batch names its client session (a non-empty str)")
        if not isinstance(self.ops, tuple):
            raise InvalidArgumentError("a batch holds a tuple of operations")
        if type(self.acked_below) is not int or self.acked_below < 0:
            raise InvalidArgumentError("a batch's acked_below is a non-negative int")
        for op in self.ops:  # every field checked: the record is fields_checked (see codec.record)
            check_op(op)


class KVCommand(NamedTuple):
    """A write in the log: the session that sent it, its sequence number and the operation."""

    client: str
    seq: int
    acked_below: int
    kind: str
    key: Any
    value: Any
    expected: Any


def encode_command(client: str, acked_below: int, op: tuple) -> bytes:
    """The log entry of a write: versioned msgpack ``[COMMAND_FORMAT, client, seq, acked_below, kind, key,
    value, expected]`` (a plain array: it is decoded once per member per write, so no record framing)."""
    kind, key, seq, value, expected = op
    return codec.encode((COMMAND_FORMAT, client, seq, acked_below, kind, key, value, expected))


def decode_command(data: bytes) -> KVCommand:
    """The inverse of :func:`encode_command`; raises if the entry is not a command of a known format."""
    fields = codec.decode(data)
    if not isinstance(fields, tuple) or not fields or type(fields[0]) is not int:
        raise CorruptRecordError("a RaftKV log entry is not a command")
    if fields[0] != COMMAND_FORMAT or len(fields) != 8:
        raise UnknownVersionError("kv.command", fields[0], f"format {COMMAND_FORMAT}")
    return KVCommand(*fields[1:])


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
