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

Keys and values are bytes, as in every ddia-ray store (docs/design-notes.md,
"Keys and values"): a client may name a key with a ``str``, which is the same
key as its UTF-8 bytes. Data written before this rule (``kv.batch`` version 1,
log command format 1, snapshot format 1, where keys could be ``str`` and values
any codec value) is read back under it: a ``str`` key becomes its UTF-8 bytes,
a value that is not bytes becomes its codec encoding (``codec.decode`` gives
the original back).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import codec
from ..codec import record
from ..errors import CorruptRecordError, InvalidArgumentError, UnknownVersionError

__all__ = ["KVBatch", "KVCommand", "KVResults", "KVAdmin", "KVCall", "KVCallResult", "OK", "RETRY", "ERROR",
           "OP_KINDS", "WRITE_KINDS", "COMMAND_FORMAT", "check_op", "encode_command", "decode_command"]

OK, RETRY, ERROR = 0, 1, 2
COMMAND_FORMAT = 3  # 3 added the leader's cluster-time stamp (session expiry)
OP_KINDS = frozenset({"get", "get_local", "put", "delete", "cas"})
WRITE_KINDS = frozenset({"put", "delete", "cas"})
ADMIN_ACTIONS = frozenset({"add_learner", "add_voter", "remove", "transfer", "status"})


_BYTES_OR_NONE = (bytes, type(None))


def legacy_key(key: Any) -> Any:
    """A key as format 1 wrote it, under today's rule: a ``str`` is its UTF-8 bytes."""
    return key.encode("utf-8") if type(key) is str else key


def legacy_value(value: Any) -> Any:
    """A value as format 1 wrote it, under today's rule: bytes and None stay, anything else is encoded.

    A value the codec refuses (too deep, a map with foreign keys) raises CodecError: format 1 never
    held one, so such input is damage, not data.
    """
    if type(value) in _BYTES_OR_NONE:
        return value
    codec.check_value(value, "a format-1 value")
    return codec.encode(value)


def check_op(op) -> tuple:
    """Validate one operation tuple ``(kind, key, seq, value, expected)``; returns it."""
    if not isinstance(op, tuple) or len(op) != 5:
        raise InvalidArgumentError(f"an operation is (kind, key, seq, value, expected), got {op!r}")
    kind, key, seq = op[0], op[1], op[2]
    if kind not in OP_KINDS:
        raise InvalidArgumentError(f"unknown operation {kind!r}; use one of {sorted(OP_KINDS)}")
    if type(key) is not bytes:
        raise InvalidArgumentError(f"keys are bytes (or str, sent as UTF-8), got {type(key).__name__}")
    if type(seq) is not int or seq <= 0:
        raise InvalidArgumentError("an operation's seq is a positive int")
    if type(op[3]) not in _BYTES_OR_NONE or type(op[4]) not in _BYTES_OR_NONE:
        bad = op[3] if type(op[3]) not in _BYTES_OR_NONE else op[4]
        raise InvalidArgumentError(f"values are bytes, got {type(bad).__name__}: encode structured values "
                                   f"first (ddia_ray.codec.encode gives versioned msgpack)")
    return op


def _batch_v1_to_v2(fields: dict) -> dict:
    """Version 1 allowed str keys and any codec value: normalise them (see the module docstring)."""
    ops = tuple((kind, legacy_key(key), seq, legacy_value(value), legacy_value(expected))
                for kind, key, seq, value, expected in fields.get("ops", ()))
    return {**fields, "ops": ops}


@record("kv.batch", version=2, fields_checked=True, upgrades={1: _batch_v1_to_v2})
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
    """A write in the log: the session that sent it, its sequence number, the operation, and the
    leader's cluster-time stamp (milliseconds; -1 for entries written before stamps), from which
    every member expires idle sessions alike (:class:`~ddia_ray.consensus.sessions.ClusterClock`)."""

    client: str
    seq: int
    acked_below: int
    kind: str
    key: Any
    value: Any
    expected: Any
    stamp: int = -1


def encode_command(client: str, acked_below: int, op: tuple, stamp: int = -1) -> bytes:
    """The log entry of a write: versioned msgpack ``[COMMAND_FORMAT, client, seq, acked_below, kind, key,
    value, expected, stamp]`` (a plain array: it is decoded once per member per write, so no record
    framing). Format 2 had no stamp; format 1 had no stamp and looser keys and values."""
    kind, key, seq, value, expected = op
    return codec.encode((COMMAND_FORMAT, client, seq, acked_below, kind, key, value, expected, stamp))


def decode_command(data: bytes) -> KVCommand:
    """The inverse of :func:`encode_command`; raises if the entry is not a command of a known format."""
    fields = codec.decode(data)
    if not isinstance(fields, tuple) or not fields or type(fields[0]) is not int:
        raise CorruptRecordError("a RaftKV log entry is not a command")
    if fields[0] not in (1, 2, COMMAND_FORMAT) or len(fields) != (9 if fields[0] == COMMAND_FORMAT else 8):
        raise UnknownVersionError("kv.command", fields[0], f"formats 1 to {COMMAND_FORMAT}")
    if fields[0] == 1:  # written before keys and values were bytes (see the module docstring)
        client, seq, acked_below, kind, key, value, expected = fields[1:]
        return KVCommand(client, seq, acked_below, kind, legacy_key(key), legacy_value(value),
                         legacy_value(expected))
    if fields[0] == COMMAND_FORMAT and type(fields[8]) is not int:
        raise CorruptRecordError(f"a RaftKV command's stamp is an int, got {fields[8]!r:.40}")
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


@record("kv.call", version=1)
class KVCall:
    """A :class:`KVBatch` sent to a member as a *message* by another core, not by a client.

    How a core uses RaftKV as its coordination service (a replica group's leader lease, as
    ZooKeeper or etcd serve in DDIA 8.4): the member answers with a :class:`KVCallResult`
    message carrying the same ``call_id``.
    """

    call_id: int
    batch: KVBatch


@record("kv.call_result", version=1)
class KVCallResult:
    """The answer to a :class:`KVCall`: the batch's :class:`KVResults`, or an ``error`` record."""

    call_id: int
    results: KVResults | None = None
    error: Any = None
