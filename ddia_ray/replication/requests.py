"""What a client of the replicated store asks its replicas, and what they answer: writes, point
reads, scans, queries, status and an operator's admin requests.

Theory of operation
-------------------
A request names how it may be served (:data:`~.records.READ_MODES`), the session position it must
see (``after_epoch``, ``after_lsn``: read-your-writes across replicas, :class:`~.records.Session`)
and, under partitioning, the partition map it was routed by (``fence``). The operations a write
carries are the replication log's (:func:`~.records.check_ops`). Each is a versioned codec record
checked on arrival by its ``__post_init__``, with upgrade steps for what older clients send.
"""

from __future__ import annotations

from typing import Any

from ..codec import record
from ..errors import InvalidArgumentError
from .records import READ_MODES, check_ops, int_field

__all__ = ["ReplWrite", "ReplRead", "ReplScan", "ScanResult", "ReplQuery", "QueryResult", "QUERY_WAIT_MAX_S",
           "ReplAdmin", "ADMIN_ACTIONS", "WriteAck", "ReadResult", "ReplStatus"]


def _check_read(req: Any) -> None:
    """The fields every read request shares: its mode, its session position and its staleness bound."""
    if req.read not in READ_MODES:
        raise InvalidArgumentError(f"unknown read mode {req.read!r}; use one of {READ_MODES}")
    int_field("after_epoch", req.after_epoch)
    int_field("after_lsn", req.after_lsn)
    if not isinstance(req.max_staleness_s, (int, float)):
        raise InvalidArgumentError("max_staleness_s is a number of seconds (< 0: no bound)")


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
        int_field("epoch", self.epoch)
        if not isinstance(self.client, str):
            raise InvalidArgumentError("a write's client is a str session name ('' for none)")
        int_field("seq", self.seq, 1 if self.client else 0)
        int_field("acked_below", self.acked_below)
        int_field("after_epoch", self.after_epoch)
        int_field("after_lsn", self.after_lsn)
        int_field("fence", self.fence)


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
        int_field("fence", self.fence)


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
        int_field("limit", self.limit, 1)
        _check_read(self)
        int_field("fence", self.fence)


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
