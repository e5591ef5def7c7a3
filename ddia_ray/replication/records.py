"""The leader-follower replication log's entries and operations, what a replica persists, and
client sessions. What replicas send each other is in :mod:`.replica_messages`, what clients ask
in :mod:`.requests`; both are importable from here too.

Theory of operation
-------------------
The replication log is a sequence of *entries* ``(epoch, lsn, ops, acks,
origin)``: the epoch (fencing token) of the leader that ordered it, its log
sequence number, the operations, how many follower acknowledgements the leader
waited for before answering the client (0: answered on its own persist, as in
async mode), and the client write it came from, ``(client, seq, acked_below,
results, stamp)`` or ``()``; the stamp is the leader's cluster time, from which
every replica expires idle sessions alike (:class:`~ddia_ray.consensus.sessions.ClusterClock`).
The origin makes writes exactly-once across retries, duplicated messages and
failovers: every replica's state remembers the answer of each client sequence
number not yet acknowledged (Raft thesis 6.3, as RaftKV's sessions do), so a
new leader recognises a retry too. Operations are
``(code, key, tail)`` tuples, the storage node's wire columns
(:meth:`~ddia_ray.storage.engine.OpColumns.checked_ops`): ``PUT``, ``DELETE``
or ``DELETE_RANGE`` (tail is the range's end), or ``INGEST``, a batch of rows
for a bulk load (:mod:`.ingest`). A client's ``cas`` is decided
by the leader against its state and enters the log as the put or delete it
became (a logical, row-based log; DDIA 5.1, "Implementation of replication
logs"), so followers never re-evaluate it.

A *position* ``(epoch, lsn)`` names one entry in one history: after a failover
the new leader continues the lsn sequence under a higher epoch, so the same
lsn can name two different writes, and only the pair identifies one. Sessions
carry positions for this reason.

Every record here is versioned msgpack (``ddia_ray.codec``); messages are
checked on arrival by their ``__post_init__``.
"""

from __future__ import annotations

import operator
from typing import Any

from .. import codec
from ..codec import record
from ..errors import InvalidArgumentError, SessionError

__all__ = ["PUT", "DELETE", "DELETE_RANGE", "CAS", "INGEST", "CALL", "Append", "AppendAck", "PositionProbe",
           "PositionReport", "CheckpointRequest", "Checkpoint", "ReplicaMeta", "LogEntries", "LostWrites", "Base",
           "ReplWrite", "ReplRead", "ReplScan", "ScanResult", "ReplQuery", "QueryResult", "QUERY_WAIT_MAX_S",
           "ReplAdmin", "ADMIN_ACTIONS", "WriteAck", "ReadResult", "ReplStatus", "Session", "READ_MODES",
           "RESERVED_PREFIX", "AFTER_RESERVED", "OUTBOX_PREFIX", "around_reserved", "check_entries", "check_ops",
           "MAX_APPEND_BYTES", "append_slice", "int_field"]

PUT, DELETE, DELETE_RANGE, CAS = 0, 1, 2, 3
#: A bulk load: ``(INGEST, smallest key, batch blob)``, alone in its write (:mod:`.ingest`).
INGEST = 4
#: A procedure call: ``(CALL, name, msgpack args)``, decided into puts and deletes before it enters
#: the log (:mod:`.procedures`); only a client's write carries one.
CALL = 5
#: Keys under this prefix belong to the replicas (an engine state keeps its position there), not to clients.
RESERVED_PREFIX = b"\x00ddia\x00"
#: A global index's pending changes (:mod:`.indexing`): the one reserved range a client may write,
#: and only to compare-and-delete a row (the indexer's acknowledgement).
OUTBOX_PREFIX = RESERVED_PREFIX + b"gx/"
#: How a read may be served (see :class:`ReplRead`).
READ_MODES = ("leader", "linearizable", "follower", "session")


def int_field(name: str, value: Any, low: int = 0) -> None:
    """A message field that must be an int (not a bool) >= ``low``; else InvalidArgumentError."""
    if type(value) is not int or value < low:
        raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")


def check_ops(ops: Any, *, client: bool) -> tuple:
    """``ops`` as a tuple of ``(code, key, tail)`` (a client's may hold ``(CAS, key, new, expected)``)."""
    if _puts_only(ops, client):
        return ops
    if not isinstance(ops, tuple):
        raise InvalidArgumentError("operations are a tuple of tuples")
    for op in ops:
        if not isinstance(op, tuple) or len(op) < 3 or type(op[1]) is not bytes:
            raise InvalidArgumentError(f"an operation is (code, key, ...) with a bytes key, got {op!r}")
        code = op[0]
        if client and code != DELETE_RANGE and op[1].startswith(RESERVED_PREFIX) \
                and not (code == CAS and len(op) == 4 and op[2] is None and op[1].startswith(OUTBOX_PREFIX)):
            raise InvalidArgumentError(f"keys starting with {RESERVED_PREFIX!r} are reserved for the replicas")
        if client and code == DELETE_RANGE and len(op) == 3 and type(op[2]) is bytes \
                and op[1] < AFTER_RESERVED and op[2] > RESERVED_PREFIX:
            raise InvalidArgumentError(f"a client's range delete may not cover the reserved keys (prefix "
                                       f"{RESERVED_PREFIX!r}): cut it around them (records.around_reserved)")
        if code == INGEST:
            if len(ops) != 1 or len(op) != 3:
                raise InvalidArgumentError("an ingest is (INGEST, smallest key, batch), alone in its write")
            from .ingest import decode_ingest  # here, not at the top: ingest imports this module

            decode_ingest(op[2], op[1])
        elif code == CALL and client:
            if len(op) != 3 or type(op[2]) is not bytes:
                raise InvalidArgumentError("a procedure call is (CALL, name, msgpack arguments)")
        elif code == CAS and client:
            if len(op) != 4 or not all(v is None or type(v) is bytes for v in op[2:]):
                raise InvalidArgumentError("a cas is (CAS, key, new value or None, expected value or None)")
        elif code in (PUT, DELETE, DELETE_RANGE):
            if len(op) != 3 or type(op[2]) is not bytes:
                raise InvalidArgumentError(f"operation {op!r} is (code, key, bytes tail)")
            if code == DELETE and op[2]:
                raise InvalidArgumentError("a delete has no value")
            if code == DELETE_RANGE and op[1] > op[2]:
                raise InvalidArgumentError(f"range start {op[1]!r} is after its end {op[2]!r}")
        else:
            raise InvalidArgumentError(f"unknown operation code {code!r}")
    return ops


#: The most key and value bytes one Append carries once it holds an entry (etcd raft's
#: ``MaxSizePerMsg``, 1 MiB there). A follower behind by many 1,000-write entries otherwise got
#: ``max_append_entries`` of them in one message: 30 MB at 256 entries of 116 KB, past the direct
#: link's frame limit, so it went through Ray at several times the cost and fell further behind.
MAX_APPEND_BYTES = 4 << 20
_CODE, _KEY, _TAIL = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_THREE = {3}


def append_slice(log, start: int, max_entries: int, max_bytes: int) -> tuple:
    """Log entries ``(epoch, lsn, ops, ...)`` from index ``start`` for one Append: at most
    ``max_entries``, and no more than ``max_bytes`` of keys and tails after the first entry.

    Only a catch-up sends more than one entry, so only a catch-up sizes them. ``log`` is indexed
    (a deque reaches an index from its nearer end: the usual slice is the newest entry), not
    walked from its start as ``islice`` would.
    """
    entries = tuple(log[i] for i in range(start, min(len(log), start + max_entries)))
    if len(entries) <= 1:
        return entries
    total = 0
    for n, entry in enumerate(entries):
        ops = entry[2]
        total += sum(map(len, map(_KEY, ops))) + sum(map(len, map(_TAIL, ops)))
        if total > max_bytes and n:
            return entries[:n]
    return entries


_TUPLE, _BYTES = frozenset({tuple}), frozenset({bytes})
_RESULTS = frozenset({type(None), bool})  # what an entry's origin may answer per op
#: Every key at or above this sorts after each key under :data:`RESERVED_PREFIX`.
AFTER_RESERVED = RESERVED_PREFIX[:-1] + bytes([RESERVED_PREFIX[-1] + 1])


def around_reserved(ops: tuple) -> tuple:
    """``ops`` with every range delete that covers the reserved keys cut into the parts before and
    after them (a client's ``delete_range(b"", ...)`` must not erase a replica's own rows)."""
    if not any(op[0] == DELETE_RANGE for op in ops):
        return ops
    out = []
    for op in ops:
        if op[0] == DELETE_RANGE and op[1] < AFTER_RESERVED and op[2] > RESERVED_PREFIX:
            if op[1] < RESERVED_PREFIX:
                out.append((DELETE_RANGE, op[1], RESERVED_PREFIX))
            if op[2] > AFTER_RESERVED:
                out.append((DELETE_RANGE, AFTER_RESERVED, op[2]))
        else:
            out.append(op)
    return tuple(out)


def _puts_only(ops: Any, client: bool) -> bool:
    """Whether ``ops`` is a tuple of valid puts (the usual batch), found in a few C-level passes
    over the columns rather than a Python step per op (half the cost at 1,000 ops, which every
    message of the replication stream pays on arrival). False means "look closer", not "bad"."""
    if type(ops) is not tuple or not ops or not _TUPLE.issuperset(map(type, ops)):
        return False
    # Column by column with itemgetter, not zip(*ops): that makes a tuple iterator per op, whose
    # allocations set off garbage collections in a replica's large heap.
    if set(map(len, ops)) != _THREE:
        return False
    try:
        if bytes(map(_CODE, ops)) != bytes(len(ops)):  # TypeError, ValueError: a code is no byte
            return False
    except (ValueError, TypeError):
        return False
    keys = tuple(map(_KEY, ops))
    if not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, map(_TAIL, ops))):
        return False
    # A client's key may not be a replica's own: usually every key sorts above the reserved range,
    # which one min() shows; otherwise each is looked at.
    return not client or min(keys) >= AFTER_RESERVED \
        or not any(map(operator.methodcaller("startswith", RESERVED_PREFIX), keys))


def check_entries(entries: Any) -> tuple:
    """``entries`` as a tuple of ``(epoch, lsn, ops, acks, origin)`` with consecutive lsns."""
    if not isinstance(entries, tuple):
        raise InvalidArgumentError("entries are a tuple")
    last = None
    for e in entries:
        if not isinstance(e, tuple) or len(e) != 5:
            raise InvalidArgumentError(f"an entry is (epoch, lsn, ops, acks, origin), got {e!r}")
        origin = e[4]
        if not (origin == () or (isinstance(origin, tuple) and len(origin) == 5 and isinstance(origin[0], str)
                                 and type(origin[1]) is int and type(origin[2]) is int
                                 and isinstance(origin[3], tuple) and type(origin[4]) is int)):
            raise InvalidArgumentError(f"an entry's origin is () or (client, seq, acked_below, results, stamp), "
                                       f"got {origin!r}")
        if origin and not _RESULTS.issuperset(map(type, origin[3])):
            for result in origin[3]:  # a procedure's answer: any value that travels as a record field
                if type(result) not in _RESULTS:
                    codec.check_value(result, "an entry's result")
        int_field("an entry's epoch", e[0])
        int_field("an entry's lsn", e[1], 1)
        int_field("an entry's acks", e[3])
        check_ops(e[2], client=False)
        if last is not None and e[1] != last + 1:
            raise InvalidArgumentError("entries carry consecutive lsns")
        last = e[1]
    return entries


def _stamp_origins(fields: dict) -> dict:
    """Version 1 entries' origins carried no cluster-time stamp: -1 (unknown; the applying replica
    uses its newest stamp, so such a session is not expired early)."""
    entries = fields.get("entries")
    if isinstance(entries, tuple):
        fields = {**fields, "entries": tuple(
            (*e[:4], (*e[4], -1)) if isinstance(e, tuple) and len(e) == 5 and isinstance(e[4], tuple)
            and len(e[4]) == 4 else e for e in entries)}
    return fields


# --- what a replica persists ------------------------------------------------------------------


@record("repl.meta", version=1)
class ReplicaMeta:
    """The newest epoch a replica has seen (it never accepts an older one again) and its incarnation."""

    epoch: int
    incarnation: int


@record("repl.entries", version=2, upgrades={1: _stamp_origins}, fields_checked=True)
class LogEntries:
    """Entries appended to the replica's log."""

    entries: tuple

    def __post_init__(self):
        check_entries(self.entries)


def _lost_v1_to_v2(fields: dict) -> dict:
    """Version 1 had no ``found``: nothing had come back."""
    return {**fields, "found": ()}


@record("repl.lost", version=2, upgrades={1: _lost_v1_to_v2})
class LostWrites:
    """Writes this replica discarded although they had been acknowledged (async): ``count`` more of
    them, the newest listed as ``(epoch, lsn, keys)``. ``found``: positions ``(epoch, lsn)`` it had
    listed as lost that came back after all (a later leader still held them); the count drops by
    one for each. Persisted, so a restart keeps the account."""

    count: int
    entries: tuple
    found: tuple = ()


@record("repl.base", version=1)
class Base:
    """Where the replica's log starts: after ``lsn`` (of epoch ``lsn_epoch``), with its state (encoded)
    and epoch history. The state may be newer than ``lsn`` (a compacted log keeps entries a
    lagging follower may still need); recovery applies only the entries after the state's own lsn."""

    lsn: int
    lsn_epoch: int
    epochs: tuple
    data: bytes


def later(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether position ``a`` = ``(epoch, lsn)`` comes after ``b``: epoch first, then lsn.

    Within one history both orders agree, since epochs only grow along a log. They differ for
    positions from two branches, one of which a failover discarded: ``(2, 79)``, acknowledged by a
    deposed leader in async mode, and ``(3, 71)``, from the leader that replaced it. By lsn first the
    session kept ``(2, 79)`` and forgot its own write at ``(3, 71)``; a follower still holding the
    old tail then served it a value from before that write (replication simulation, async seed
    689). Such pairs no longer meet in one session (:meth:`Session.saw` marks it lost); epoch first
    is the order of positions that can."""
    return a > b


def one_history(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether positions ``a`` and ``b`` can both be in one history. Epochs never decrease along a
    log, so a later epoch at an lsn no higher than an earlier epoch's proves two branches."""
    (ea, la), (eb, lb) = a, b
    return not ((ea > eb and la <= lb) or (eb > ea and lb <= la))


#: The lsn of a session marked lost (:meth:`Session.saw`): beyond every history, so that a leader
#: refuses it with SessionError and a follower sends it to the leader.
LOST_LSN = 2**62


@record("repl.session", version=1)
class Session:
    """A client session's guarantees, portable between processes (encode it with ``ddia_ray.codec``).

    ``write_*`` is the position of its newest write, ``read_*`` the newest position it has read
    from; a replica serves the session only once it has applied the larger of the two
    (read-your-writes and monotonic reads; consistent prefix because every replica's state is a
    prefix of one log). ``store`` names the store the positions belong to.
    """

    store: str
    write_epoch: int = 0
    write_lsn: int = 0
    read_epoch: int = 0
    read_lsn: int = 0

    def __post_init__(self):
        if not isinstance(self.store, str) or not self.store:
            raise InvalidArgumentError("a session names its store")
        for name in ("write_epoch", "write_lsn", "read_epoch", "read_lsn"):
            int_field(name, getattr(self, name))

    def position(self) -> tuple[int, int]:
        """The position a replica must have applied to serve this session: ``(epoch, lsn)``, the later
        of the two by :func:`later`."""
        return max((self.write_epoch, self.write_lsn), (self.read_epoch, self.read_lsn))

    def saw(self, write: bool, epoch: int, lsn: int) -> "Session":
        """This session after a write acknowledged at ``(epoch, lsn)`` (or a read served there).

        A position that no one history can hold together with one the session already has (see
        :func:`one_history`) means a failover discarded one of them, and with it a write or a read
        the session depended on; which one, only the final history tells. Its guarantees cannot hold
        any more, so the session is marked lost (:meth:`lost`): the next replica it asks refuses it
        with :class:`~ddia_ray.errors.SessionError`, and the application starts a new one."""
        pos = (epoch, lsn)
        for seen in ((self.write_epoch, self.write_lsn), (self.read_epoch, self.read_lsn)):
            if seen[1] and lsn and not one_history(pos, seen):
                return Session(self.store, max(epoch, seen[0]), LOST_LSN, self.read_epoch, self.read_lsn)
        if write and later(pos, (self.write_epoch, self.write_lsn)):
            return Session(self.store, epoch, lsn, self.read_epoch, self.read_lsn)
        if not write and later(pos, (self.read_epoch, self.read_lsn)):
            return Session(self.store, self.write_epoch, self.write_lsn, epoch, lsn)
        return self

    @property
    def lost(self) -> bool:
        """Whether this session saw two histories (:meth:`saw`): every replica refuses it."""
        return self.write_lsn == LOST_LSN

    def check_store(self, store: str) -> None:
        """Raise :class:`SessionError` unless this session belongs to ``store``."""
        if self.store != store:
            raise SessionError(f"this session belongs to store {self.store!r}, not {store!r}")

    def encode(self) -> bytes:
        """The session as bytes, to hand to another process (``Session.decode`` reads it back)."""
        return codec.encode(self)

    @staticmethod
    def decode(data: bytes) -> "Session":
        """A session encoded by :meth:`encode`."""
        return codec.decode(data, Session)


# The leader-follower group's messages and its clients' requests live in modules of their own; the
# names stay importable from here, where the store's modules have always found them.
from .replica_messages import (Append, AppendAck, Checkpoint, CheckpointRequest,  # noqa: E402
                               PositionProbe, PositionReport)
from .requests import (ADMIN_ACTIONS, QUERY_WAIT_MAX_S, QueryResult, ReadResult, ReplAdmin,  # noqa: E402
                       ReplQuery, ReplRead, ReplScan, ReplStatus, ReplWrite, ScanResult, WriteAck)
