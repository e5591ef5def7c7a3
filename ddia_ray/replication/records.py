"""What replicas of a leader-follower group send each other, persist and answer.

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
           "MAX_APPEND_BYTES", "append_slice"]

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


def _check_read(req: Any) -> None:
    """The fields every read request shares: its mode, its session position and its staleness bound."""
    if req.read not in READ_MODES:
        raise InvalidArgumentError(f"unknown read mode {req.read!r}; use one of {READ_MODES}")
    _int("after_epoch", req.after_epoch)
    _int("after_lsn", req.after_lsn)
    if not isinstance(req.max_staleness_s, (int, float)):
        raise InvalidArgumentError("max_staleness_s is a number of seconds (< 0: no bound)")


def _int(name: str, value: Any, low: int = 0) -> None:
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
        _int("an entry's epoch", e[0])
        _int("an entry's lsn", e[1], 1)
        _int("an entry's acks", e[3])
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


# --- messages between replicas ----------------------------------------------------------------


# Append, LogEntries and ReplWrite carry every op of the replication stream, and their
# ``__post_init__`` checks each field down to its leaves (check_entries, check_ops): they are
# ``fields_checked``, so the codec does not walk the same ops again to bound their nesting (that
# walk cost more than packing or unpacking them, at 1,000 ops an entry).


@record("repl.append", version=2, upgrades={1: _stamp_origins}, fields_checked=True)
class Append:
    """The leader's replication stream (and heartbeat, when ``entries`` is empty).

    ``prev`` is the position just before ``entries`` (the log-matching check, as in Raft);
    ``leader_last`` the leader's last lsn, from which a follower knows it is caught up.
    """

    epoch: int
    prev_lsn: int
    prev_epoch: int
    entries: tuple
    leader_last: int

    def __post_init__(self):
        _int("epoch", self.epoch, 1)
        _int("prev_lsn", self.prev_lsn)
        _int("prev_epoch", self.prev_epoch)
        _int("leader_last", self.leader_last)
        check_entries(self.entries)


@record("repl.ack", version=1)
class AppendAck:
    """A follower's answer: ``ok`` with its last position, or a refusal (a newer ``epoch``, or a gap)."""

    epoch: int
    ok: bool
    last_lsn: int
    last_epoch: int

    def __post_init__(self):
        _int("epoch", self.epoch)
        _int("last_lsn", self.last_lsn)
        _int("last_epoch", self.last_epoch)


def _probe_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried no epoch: 0, which claims nothing (the peer adopts no epoch from it)."""
    return {**fields, "epoch": 0}


def _probe_v2_to_v3(fields: dict) -> dict:
    """Version 2 asked for no entries (a candidate of that version never catches up from a peer)."""
    return {**fields, "catch_up": False, "last_lsn": 0, "last_epoch": 0}


@record("repl.probe", version=3, upgrades={1: _probe_v1_to_v2, 2: _probe_v2_to_v3})
class PositionProbe:
    """A candidate asks its peers how far their logs reach, before it takes the lease.

    ``epoch`` is the epoch the candidate will claim (0: none). A peer adopts it, persisted, before
    it answers, as a Raft voter adopts a vote's term: from then on it refuses appends of any older
    epoch, so a deposed leader can no longer gather the acknowledgements of a write that the new
    leader's history, taken from these answers, would not hold.

    ``catch_up``: the candidate has waited ``defer_s`` for a peer further ahead to take the lease,
    and asks for the entries after its own last entry, ``last_lsn`` of epoch ``last_epoch``; a
    peer whose log holds that entry answers with the entries after it (:class:`PositionReport`).
    (False, 0, 0 otherwise.)
    """

    seq: int
    epoch: int
    catch_up: bool = False
    last_lsn: int = 0
    last_epoch: int = 0

    def __post_init__(self):
        _int("seq", self.seq)
        _int("epoch", self.epoch)
        if type(self.catch_up) is not bool:
            raise InvalidArgumentError(f"catch_up is a bool, got {self.catch_up!r}")
        _int("last_lsn", self.last_lsn)
        _int("last_epoch", self.last_epoch)


def _position_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried no entries (a peer of that version gives a candidate none)."""
    return {**fields, "entries": ()}


@record("repl.position", version=2, upgrades={1: _position_v1_to_v2})
class PositionReport:
    """The answer to a :class:`PositionProbe`: the peer's last entry and the newest epoch it knows.

    ``entries``: when the probe asked to catch up and this peer's log holds the candidate's last
    entry, the entries after it (at most ``max_append_entries``; they continue the candidate's log);
    otherwise ``()``.
    """

    seq: int
    epoch: int
    last_lsn: int
    last_epoch: int
    entries: tuple = ()

    def __post_init__(self):
        _int("seq", self.seq)
        _int("epoch", self.epoch)
        _int("last_lsn", self.last_lsn)
        _int("last_epoch", self.last_epoch)
        check_entries(self.entries)


@record("repl.checkpoint_request", version=1)
class CheckpointRequest:
    """A follower that cannot continue from its log asks the leader for a checkpoint."""

    epoch: int


@record("repl.checkpoint", version=1)
class Checkpoint:
    """A copy of the leader's state at ``lsn`` (its entry of epoch ``lsn_epoch``) and its epoch history.

    The follower replaces its state and log with it and continues from ``lsn + 1``.
    """

    epoch: int
    lsn: int
    lsn_epoch: int
    epochs: tuple
    data: bytes


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


# --- client requests and answers -------------------------------------------------------------


def _write_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried no session position: the write checks none (as before)."""
    return {**fields, "after_epoch": 0, "after_lsn": 0}


def _write_v2_to_v3(fields: dict) -> dict:
    """Version 2 carried no partition-map fence: the write is not checked against one."""
    return {**fields, "fence": 0}


def _fence_v1_to_v2(fields: dict) -> dict:
    """Reads and scans of version 1 carried no partition-map fence."""
    return {**fields, "fence": 0}


@record("repl.write", version=3, upgrades={1: _write_v1_to_v2, 2: _write_v2_to_v3}, fields_checked=True)
class ReplWrite:
    """A batch of writes, applied atomically as one entry.

    ``acks`` asks for at least that many follower acknowledgements for this write (-1: the
    store's mode decides); it can raise the mode's durability, never lower it. ``epoch`` (0:
    any) is a fencing token: a replica that has seen a newer epoch refuses the write with
    :class:`~ddia_ray.errors.StaleEpochError` (DDIA 8.4, "Fencing tokens"). ``client`` and
    ``seq`` (a session and its write number, from 1) make a retried or duplicated write apply
    once; ``acked_below``: every seq below it has had its answer, so replicas may forget it.
    ``after_epoch``/``after_lsn``: the client session's position; the leader refuses the write
    with :class:`~ddia_ray.errors.SessionError` if that position is not in its history (a write the
    session saw was lost), so a session never moves past its own lost write without knowing.
    ``fence`` (0: none): the partition-map version a partitioned store's client routed the write
    with; the group refuses keys it does not own at that version (:mod:`.ownership`).
    """

    ops: tuple
    acks: int = -1
    epoch: int = 0
    client: str = ""
    seq: int = 0
    acked_below: int = 0
    after_epoch: int = 0
    after_lsn: int = 0
    fence: int = 0

    def __post_init__(self):
        check_ops(self.ops, client=True)
        if type(self.acks) is not int or self.acks < -1:
            raise InvalidArgumentError("acks is -1 (the store's mode) or a number of followers")
        _int("epoch", self.epoch)
        if not isinstance(self.client, str):
            raise InvalidArgumentError("a write's client is a str session name ('' for none)")
        _int("seq", self.seq, 1 if self.client else 0)
        _int("acked_below", self.acked_below)
        _int("after_epoch", self.after_epoch)
        _int("after_lsn", self.after_lsn)
        _int("fence", self.fence)


@record("repl.read", version=2, upgrades={1: _fence_v1_to_v2})
class ReplRead:
    """Point reads of ``keys`` served as ``read`` says (one of :data:`READ_MODES`).

    ``after_epoch``/``after_lsn``: a session's position; the replica serves only once it has
    applied it. ``max_staleness_s`` >= 0 bounds how stale a follower may be. ``fence``: as for
    :class:`ReplWrite` (a read of keys the group does not own at that map version is refused).
    """

    keys: tuple
    read: str = "leader"
    after_epoch: int = 0
    after_lsn: int = 0
    max_staleness_s: float = -1.0
    fence: int = 0

    def __post_init__(self):
        if not isinstance(self.keys, tuple) or not all(type(k) is bytes for k in self.keys):
            raise InvalidArgumentError("read keys are a tuple of bytes")
        _check_read(self)
        _int("fence", self.fence)


@record("repl.write_ack", version=1)
class WriteAck:
    """A write is acknowledged at position ``(epoch, lsn)``; ``results`` has one value per operation
    (None for puts and deletes, True/False for a cas)."""

    epoch: int
    lsn: int
    results: tuple


@record("repl.read_result", version=1)
class ReadResult:
    """Values of a read, served by ``node`` at its applied position ``(epoch, lsn)``."""

    values: tuple
    epoch: int
    lsn: int
    node: str = ""


@record("repl.status", version=1)
class ReplStatus:
    """Ask a replica for its status (a plain mapping)."""


def _scan_v2_to_v3(fields: dict) -> dict:
    """Scans of version 2 were never pinned."""
    return {**fields, "pin": 0}


def _scan_v3_to_v4(fields: dict) -> dict:
    """Scans of version 3 took their pages as rows."""
    return {**fields, "arrow": False}


@record("repl.scan", version=4, upgrades={1: _fence_v1_to_v2, 2: _scan_v2_to_v3, 3: _scan_v3_to_v4})
class ReplScan:
    """One page of a range read: up to ``limit`` keys of ``[start, end)`` (``end`` None: unbounded),
    served as ``read`` says, with the same session, staleness and fence fields as :class:`ReplRead`
    (a fenced scan must lie inside one range the group owns). ``pin`` (:mod:`.pins`): 0 reads the
    state as it is; -1 pins a view and reads the first page from it; ``n > 0`` reads the next page
    from pin ``n`` (sent to the replica that holds it). ``arrow``: the page comes as one Arrow IPC
    stream in :attr:`ScanResult.batch` (:mod:`.arrow_pages`) instead of rows; a replica of an older
    version ignores it and sends rows, which the client reads as well."""

    start: bytes = b""
    end: bytes | None = None
    limit: int = 1000
    read: str = "leader"
    after_epoch: int = 0
    after_lsn: int = 0
    max_staleness_s: float = -1.0
    fence: int = 0
    pin: int = 0
    arrow: bool = False

    def __post_init__(self):
        if type(self.arrow) is not bool:
            raise InvalidArgumentError(f"a scan's arrow is a bool, got {self.arrow!r}")
        if type(self.pin) is not int or self.pin < -1:
            raise InvalidArgumentError(f"a scan's pin is -1 (pin a view), 0 (none) or a pin id, got {self.pin!r}")
        if type(self.start) is not bytes or not (self.end is None or type(self.end) is bytes):
            raise InvalidArgumentError("a scan's start is bytes and its end bytes or None")
        if self.end is not None and self.start > self.end:
            raise InvalidArgumentError(f"range start {self.start!r} is after its end {self.end!r}")
        _int("limit", self.limit, 1)
        _check_read(self)
        _int("fence", self.fence)


def _scan_result_v1_to_v2(fields: dict) -> dict:
    """Pages of version 1 came from no pin."""
    return {**fields, "pin": 0}


def _scan_result_v2_to_v3(fields: dict) -> dict:
    """Pages of version 2 were rows."""
    return {**fields, "batch": b""}


@record("repl.scan_result", version=3, upgrades={1: _scan_result_v1_to_v2, 2: _scan_result_v2_to_v3})
class ScanResult:
    """A page of a scan: ``keys`` and ``values`` in key order, served by ``node`` at ``(epoch, lsn)``;
    ``more`` says the range may hold keys after the last one (ask again after it); ``pin``: the pin
    to read the next page from (0: none, or the scan is done and its pin released). A page asked
    for as Arrow (``ReplScan.arrow``) has its rows in ``batch``, an Arrow IPC stream of ``key`` and
    ``value`` columns (:func:`.arrow_pages.read_page`), and ``keys`` and ``values`` empty."""

    keys: tuple
    values: tuple
    more: bool
    epoch: int
    lsn: int
    node: str = ""
    pin: int = 0
    batch: bytes = b""

    def __post_init__(self):
        if type(self.batch) is not bytes:
            raise InvalidArgumentError(f"a scan page's batch is bytes, got {type(self.batch).__name__}")


#: The longest a blocking query may wait (seconds): a held request must end well within a client's timeout.
QUERY_WAIT_MAX_S = 60.0


@record("repl.query", version=2, upgrades={1: lambda fields: fields})  # v2 added wait_s (default 0)
class ReplQuery:
    """A read-only procedure (:func:`~.procedures.query`) run by one replica against its state: ``name``
    and its msgpack ``args``, served as ``read`` says, with the session and staleness fields of
    :class:`ReplRead` (one call where a client would need several reads to answer one question).

    ``wait_s`` > 0 makes it a *blocking* query (:mod:`.parking`): an empty result (``None`` or an
    empty tuple, list or dict) is held back until a write applied by the replica gives a non-empty
    one, or for at most ``wait_s`` seconds. A replica of an older version answers at once."""

    name: str
    args: bytes = b""
    read: str = "leader"
    after_epoch: int = 0
    after_lsn: int = 0
    max_staleness_s: float = -1.0
    wait_s: float = 0.0

    #: Never routed by a partition map (its keys are known only once it runs); the read paths
    #: that check a fence find none here.
    fence = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or type(self.args) is not bytes:
            raise InvalidArgumentError("a query is a procedure name (str) and msgpack arguments (bytes)")
        _check_read(self)
        if not isinstance(self.wait_s, (int, float)) or not 0 <= self.wait_s <= QUERY_WAIT_MAX_S:
            raise InvalidArgumentError(f"a query waits 0 to {QUERY_WAIT_MAX_S:g} s, not {self.wait_s!r}")


@record("repl.query_result", version=1)
class QueryResult:
    """A query's answer (its result, or the :class:`~ddia_ray.error_record.ErrorRecord` it refused
    with), served by ``node`` at its applied position ``(epoch, lsn)``."""

    result: Any
    epoch: int
    lsn: int
    node: str = ""


#: What :class:`ReplAdmin` may ask a leader (``add`` and ``remove_forced`` are leader-follower's; ``add_learner``
#: and ``add_voter`` Raft's).
ADMIN_ACTIONS = ("transfer", "add", "remove_forced", "add_learner", "add_voter", "remove")


@record("repl.admin", version=1)
class ReplAdmin:
    """An operator's request to the leader: ``transfer`` leadership to ``target`` (leader-follower:
    stop taking writes, wait until ``target`` has every entry, then hand it the lease under a new
    epoch; Raft: its leadership transfer), or a membership change of ``target``, answered once it
    is made: under leader-follower ``add`` (catch up, then join), ``remove`` and ``remove_forced``
    (see :mod:`.membership`), under Raft ``add_learner``, ``add_voter`` and ``remove``."""

    action: str
    target: str = ""
    timeout_s: float = 5.0

    def __post_init__(self):
        if self.action not in ADMIN_ACTIONS:
            raise InvalidArgumentError(f"unknown admin action {self.action!r}; use one of {ADMIN_ACTIONS}")
        if not isinstance(self.target, str):
            raise InvalidArgumentError("an admin request's target is a replica name")
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise InvalidArgumentError("timeout_s is a positive number of seconds")


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
            _int(name, getattr(self, name))

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
