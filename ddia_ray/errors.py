"""Every exception ddia-ray raises on purpose.

Theory of operation: callers catch by *meaning*, not by module. Every error
derives from :class:`DdiaRayError`; errors that are the caller's fault also
derive from the matching built-in (``ValueError``, ``TypeError``,
``TimeoutError``) so generic handlers keep working. Messages say what was
wrong *and* what to do about it. Errors that wrap another failure (a timeout
around a dead actor, retries exhausted after a circuit opened) chain it as
``__cause__`` and keep it in an attribute so it survives pickling across Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DdiaRayError",
    "ConflictReplicationError",
    "UnknownRegionError",
    "QuorumConfigError",
    "QuorumNotReachedError",
    "ForeignContextError",
    "ResolverFailedError",
    "SiblingsError",
    "CRDTTypeError",
    "MerkleShapeError",
    "PartitionError",
    "MapVersionError",
    "StaleMapError",
    "WrongPartitionError",
    "PartialBatchError",
    "ChangeInProgressError",
    "ScanExpiredError",
    "ConfigError",
    "InvalidArgumentError",
    "CodecError",
    "UnknownTypeError",
    "UnknownVersionError",
    "CorruptRecordError",
    "RuntimeNotReadyError",
    "UnknownNodeError",
    "ComponentNotFoundError",
    "ActorUnavailableError",
    "RemoteError",
    "MessageDroppedError",
    "CallTimeoutError",
    "CircuitOpenError",
    "CallNotPermittedError",
    "RetriesExhaustedError",
    "RetryBudgetExhaustedError",
    "NoReplicaAvailableError",
    "ClockDriftError",
    "ListenerError",
    "StorageError",
    "CorruptionError",
    "NotADatabaseError",
    "DatabaseClosedError",
    "WriteStallError",
    "BackpressureError",
    "ConsensusError",
    "NotLeaderError",
    "ProposalDroppedError",
    "ReplicationError",
    "StaleEpochError",
    "WriteOutcomeUnknownError",
    "ReplicaBehindError",
    "StalenessBoundError",
    "SessionError",
    "UnknownProcedureError",
    "EventStoreError",
    "WrongExpectedVersionError",
    "StreamDeletedError",
    "DuplicateEventIdError",
    "EventBusError",
    "UnknownSubscriptionError",
    "BusClosedError",
    "ProjectionConflictError",
    "UnknownConsumerGroupError",
    "NotDeliveredError",
    "AggregateNotFoundError",
    "UnhandledEventError",
    "CommandRejectedError",
    "ArchiveCorruptError",
    "ArchiveConflictError",
    "ConfigStoreError",
    "CompactedError",
    "FutureRevisionError",
    "LeaseNotFoundError",
    "LeaseExpiredError",
    "InvalidConfigValueError",
    "RevisionConflictError",
    "SchemaError",
    "MalformedSchemaError",
    "IncompatibleSchemaError",
    "SchemaMappingError",
    "MigrationError",
    "UnknownConversionError",
    "UnknownSubjectError",
    "UnknownSchemaError",
    "PluginError",
    "PluginLoadError",
    "PluginVersionError",
    "PluginConflictError",
    "PluginStateError",
    "UnknownPluginError",
]


def _restore(cls: type[Exception], args: tuple, state: dict) -> Exception:
    """An exception rebuilt from its args and attributes without calling its ``__init__`` (whose
    parameters are not its message): how pickling brings back the codec's errors."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class DdiaRayError(Exception):
    """Base class of every error raised by ddia-ray on purpose."""


# --- caller mistakes -------------------------------------------------------


class ConfigError(DdiaRayError, ValueError):
    """A configuration value is out of range or inconsistent (e.g. a negative threshold)."""


class InvalidArgumentError(DdiaRayError, TypeError):
    """An argument has the wrong type or shape (e.g. a non-bytes payload)."""


# --- codec -----------------------------------------------------------------


class CodecError(DdiaRayError):
    """Bytes could not be encoded or decoded as a ddia-ray record."""


class UnknownTypeError(CodecError):
    """A record names a type tag this process has not registered.

    Usually a newer ddia-ray (or an application module not imported yet)
    wrote it: upgrade, or import the module that registers the type.
    """

    def __init__(self, tag: str, known: int = 0):
        self.tag = tag
        super().__init__(
            f"unknown record type {tag!r}: no class is registered under this tag "
            f"({known} types known); import the module that defines it or upgrade ddia-ray"
        )

    def __reduce__(self):  # pickled by Ray across actors: rebuilt as it is, not from its message
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UnknownVersionError(CodecError):
    """A record's schema version (or the wire format version) cannot be read here."""

    def __init__(self, tag: str, version: int, supported: str):
        self.tag = tag
        self.version = version
        super().__init__(
            f"record type {tag!r} has version {version}, this reader supports {supported}; "
            "upgrade the reader or register an upgrade step for that version"
        )

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class CorruptRecordError(CodecError):
    """Stored or received bytes fail their checksum, are truncated, or are not a record."""


# --- runtime and network ---------------------------------------------------


class RuntimeNotReadyError(DdiaRayError):
    """Ray could not be started or reached (check RAY_ADDRESS)."""


class UnknownNodeError(DdiaRayError, KeyError):
    """A node id is not a member of the group or network it was used with."""

    def __init__(self, node: str, known=()):
        self.node = node
        super().__init__(f"unknown node {node!r}; known nodes: {sorted(known)}")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.args[0]


class ComponentNotFoundError(DdiaRayError, LookupError):
    """``connect(name)`` found no running component of that name and kind on this Ray cluster."""

    def __init__(self, name: str, running=(), kind: str = ""):
        self.name = name
        self.kind = kind
        what = f"{kind} {name!r}" if kind else repr(name)
        super().__init__(f"no running component {what}; running: {sorted(running)}")


class ActorUnavailableError(DdiaRayError):
    """The actor behind a handle is dead or unreachable (killed, crashed, node lost)."""


class RemoteError(DdiaRayError):
    """A component refused a request with an error of a type this process does not define.

    ``kind`` is the type's name where it was raised (a built-in exception a component did not
    expect, or a newer peer's new error), ``node`` the node that raised it. Errors that ddia-ray
    defines arrive as their own class instead (see :mod:`ddia_ray.error_record`).
    """

    def __init__(self, message: str, kind: str = "", node: str = ""):
        self.kind = kind
        self.node = node
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.kind, self.node))


class MessageDroppedError(DdiaRayError):
    """The fault-injecting network dropped a request or its reply."""


# --- resilience ------------------------------------------------------------


class CallTimeoutError(DdiaRayError, TimeoutError):
    """A call did not complete within its timeout."""


class CallNotPermittedError(DdiaRayError):
    """A circuit breaker refused the call (open, forced open, or half-open and full)."""

    def __init__(self, breaker: str, state: str, retry_after_s: float | None = None):
        self.breaker = breaker
        self.state = state
        self.retry_after_s = retry_after_s
        wait = f"; retry after {retry_after_s:.3f}s" if retry_after_s is not None else ""
        super().__init__(f"circuit breaker {breaker!r} is {state} and refused the call{wait}")

    def __reduce__(self):
        return (type(self), (self.breaker, self.state, self.retry_after_s))


class CircuitOpenError(CallNotPermittedError):
    """Alias kept for readability: the breaker is open."""


class RetriesExhaustedError(DdiaRayError):
    """Every attempt allowed by the retry policy failed; ``last_error`` is the final cause."""

    last_result: Any  # set only when the last attempt returned a result the policy refused

    def __init__(self, message: str, attempts: int = 0, last_error: BaseException | None = None):
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(message)
        self.__cause__ = last_error

    def __reduce__(self):
        return (type(self), (self.args[0], self.attempts, self.last_error))


class RetryBudgetExhaustedError(RetriesExhaustedError):
    """A retry was needed but the retry budget is spent (protects a struggling backend)."""


class NoReplicaAvailableError(DdiaRayError):
    """A balancer has no replica it may route to (pool empty or every replica ejected)."""


# --- clocks ----------------------------------------------------------------


class ClockDriftError(DdiaRayError):
    """A remote hybrid-logical-clock timestamp is further ahead than the drift bound allows."""

    # Set by the clock that raises it: always the first two, then max_drift_ns (a remote timestamp
    # too far ahead) or logical_limit (the logical counter would overflow).
    remote_node: str | None
    ahead_ns: int
    max_drift_ns: int
    logical_limit: int


# --- membership ------------------------------------------------------------


class ListenerError(DdiaRayError):
    """One or more event listeners raised; every listener still saw every event.

    ``events`` are the events the call produced (its state change already
    happened), ``errors`` every listener failure in call order; the first one
    is chained as ``__cause__``.
    """

    def __init__(self, message: str, events: tuple = (), errors: tuple = ()):
        self.events = tuple(events)
        self.errors = tuple(errors)
        super().__init__(message)
        if self.errors:
            self.__cause__ = self.errors[0]

    def __reduce__(self):
        return (type(self), (self.args[0], self.events, self.errors))


# --- storage ---------------------------------------------------------------


class StorageError(DdiaRayError):
    """Base class of storage-engine errors."""


class CorruptionError(StorageError):
    """Stored data fails a checksum, is truncated where it must not be, or is not in the expected format.

    Raised instead of ever returning a wrong answer; ``path`` names the damaged file when known.
    """

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message if path is None else f"{path}: {message}")

    def __reduce__(self):
        return (type(self), (self.args[0], None))


class NotADatabaseError(StorageError):
    """The path holds something that is not a database of the requested engine."""


class DatabaseClosedError(StorageError):
    """The database (or snapshot/iterator) was used after ``close()``/``release()``."""


class WriteStallError(StorageError, TimeoutError):
    """Writes stalled (flush or compaction behind) for longer than the caller allowed."""


class BackpressureError(DdiaRayError, TimeoutError):
    """A bounded queue stayed full for longer than the caller allowed; nothing was dropped."""


class ConsensusError(DdiaRayError):
    """A consensus group could not take a request; the message says whether retrying can help."""


class NotLeaderError(ConsensusError):
    """The member asked is not the leader; ``leader_hint`` names the leader it knows of, if any.

    Retry on the hinted leader (clients do this themselves) or, without a hint, after an election.
    """

    def __init__(self, message: str, leader_hint: str | None = None):
        self.leader_hint = leader_hint
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.leader_hint))


class ProposalDroppedError(ConsensusError):
    """The leader refused a proposal for now (a leadership transfer or a membership change is under way)."""


class ReplicationError(DdiaRayError):
    """A replica group could not serve a request as asked; the subclass says why and what to do."""


class StaleEpochError(ReplicationError):
    """A request or message carried an older epoch (fencing token) than this replica has seen.

    A deposed leader gets this from its former followers: it must step down. ``epoch`` is the
    stale one, ``current`` the newest this replica knows (DDIA 8.4, "Fencing tokens").
    """

    def __init__(self, message: str, epoch: int = 0, current: int = 0):
        self.epoch = epoch
        self.current = current
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.epoch, self.current))


class WriteOutcomeUnknownError(ReplicationError):
    """The leader lost its lease or leadership before the write had the acknowledgements it needed.

    The write is in the old leader's log and may reach a replica, or may be discarded: read the key
    to learn which. A client history records it as indeterminate (Jepsen's ``info``).
    """


class ScanExpiredError(ReplicationError):
    """A pinned scan's view is gone from the replica that held it (it expired unused, or the replica
    restarted): start a new scan after the last key read. ``pin`` is the lost pin's id."""

    def __init__(self, message: str, pin: int = 0):
        self.pin = pin
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.pin))


class ReplicaBehindError(ReplicationError):
    """The replica has not applied the position a read needs (a session's last write or read).

    Retry on another replica (clients do) or later. ``needed`` and ``applied`` are log positions.
    """

    def __init__(self, message: str, needed: int = 0, applied: int = 0):
        self.needed = needed
        self.applied = applied
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.needed, self.applied))


class StalenessBoundError(ReplicationError):
    """The replica may be further behind the leader than the read's ``bounded_staleness_s`` allows.

    ``lag_s`` is how stale it may be (time since it last knew itself caught up), ``bound_s`` the bound.
    """

    def __init__(self, message: str, lag_s: float = 0.0, bound_s: float = 0.0):
        self.lag_s = lag_s
        self.bound_s = bound_s
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.lag_s, self.bound_s))


class PartitionError(DdiaRayError):
    """A partitioned store could not route or serve a request as asked; the subclass says why."""


class MapVersionError(PartitionError):
    """A request and the side serving it disagree on the partition map's version.

    ``version`` is the request's, ``current`` the server's. This class itself means the request's
    map is *newer* than the server's: the server has not learned the change yet (it refreshes), or
    the version was never this store's. :class:`StaleMapError` is the usual, older case.
    """

    def __init__(self, message: str, version: int = 0, current: int = 0):
        self.version = version
        self.current = current
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.version, self.current))


class StaleMapError(MapVersionError):
    """The request was routed with a partition map older than the target partition's last change
    (a split, merge or move): refresh the map (``current`` is the newest version) and retry.
    Partition-aware clients do this by themselves (DDIA 6.4, "Request Routing")."""


class WrongPartitionError(PartitionError, ValueError):
    """A key was sent to a partition that does not own it, or a partition id the map does not have.

    ``partition`` and ``version`` name the partition and the map version that refused it.
    """

    def __init__(self, message: str, partition: int = -1, version: int = 0):
        self.partition = partition
        self.version = version
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.partition, self.version))


class ChangeInProgressError(PartitionError):
    """Another change of the partition map (a split, merge, move or index change) holds the store's
    change lock; ``holder`` says which and since when. Wait for it, or ``force_unlock`` a dead one."""

    def __init__(self, message: str, holder: str = ""):
        self.holder = holder
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.holder))


class PartialBatchError(PartitionError):
    """A batch written across partitions (``across_partitions=True``) applied in some partitions and
    not in others: each partition's part is atomic, the whole is not (DDIA 6: a transaction across
    partitions needs a commit protocol, chapter 9).

    ``applied`` names the partitions whose part applied; ``failed`` maps the others to their error.
    """

    def __init__(self, message: str, applied: tuple = (), failed: dict | None = None):
        self.applied = tuple(applied)
        self.failed = dict(failed or {})
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.applied, self.failed))


class SessionError(ReplicationError, ValueError):
    """A session cannot be used here: it belongs to another store, or a write it made was lost in a
    failover (its position is not in this store's history), so its guarantees cannot be kept."""


class UnknownProcedureError(ReplicationError, LookupError):
    """A write called a procedure this store was not launched with (``procedures=``); ``name`` says which."""

    def __init__(self, message: str, name: str = ""):
        self.name = name
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0], self.name))


# --- events ----------------------------------------------------------------


class EventStoreError(DdiaRayError):
    """An event store refused a request (the subclasses say why)."""


class WrongExpectedVersionError(EventStoreError):
    """An append's expected version did not hold: ``stream``, what was ``expected`` (a version, or
    ``"no_stream"`` / ``"stream_exists"``) and the stream's ``actual`` version (-1: no event yet).
    Nothing of the batch was written; reload the stream (or aggregate) and decide again."""

    def __init__(self, message: str, stream: str = "", expected: int | str = "", actual: int = -1):
        self.stream, self.expected, self.actual = stream, expected, actual
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.stream, self.expected, self.actual))


class StreamDeletedError(EventStoreError):
    """The stream was tombstoned (hard-deleted): it can never be read or written again."""

    def __init__(self, message: str, stream: str = ""):
        self.stream = stream
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.stream))


class DuplicateEventIdError(EventStoreError):
    """An event id of an append was already written, but not as this same append at this same place
    (a retry is recognised only whole: same ids, same stream, same position). ``event_id`` names it."""

    def __init__(self, message: str, event_id: str = ""):
        self.event_id = event_id
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.event_id))


class EventBusError(DdiaRayError):
    """An event bus refused a request (the subclasses say why)."""


class UnknownSubscriptionError(EventBusError, LookupError):
    """No subscription of this id or name runs on the bus (it was never made, it was unsubscribed,
    or the bus restarted and lost it: subscribe again). ``subscription`` names it."""

    def __init__(self, message: str, subscription: str = ""):
        self.subscription = subscription
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0], self.subscription))


class BusClosedError(EventBusError):
    """The event bus is shutting down and accepts no more events or subscriptions; nothing of the
    refused request was accepted."""


class ProjectionConflictError(EventStoreError):
    """A projection's checkpoint moved under its runner (another runner of the same projection, or a
    reset): the batch was not applied. ``checkpoint`` is where the read model is now."""

    def __init__(self, message: str, projection: str = "", checkpoint: int = 0):
        self.projection, self.checkpoint = projection, checkpoint
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.projection, self.checkpoint))


class UnknownConsumerGroupError(EventStoreError, LookupError):
    """No persistent subscription group of that name exists (create it first); ``group`` names it."""

    def __init__(self, message: str, group: str = ""):
        self.group = group
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0], self.group))


class NotDeliveredError(EventStoreError):
    """An ack or nack named an event the group never delivered (``position``): a consumer's bug, since
    a settled event cannot be settled again by mistake and an undelivered one cannot be settled at all."""

    def __init__(self, message: str, group: str = "", position: int = -1):
        self.group, self.position = group, position
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.group, self.position))


class AggregateNotFoundError(EventStoreError, LookupError):
    """No aggregate has this id: its stream has no event (never written, or soft-deleted). Create it
    (save a new aggregate, or ``Repository.execute(..., create=True)``); ``aggregate_id`` names it."""

    def __init__(self, message: str, aggregate_id: str = ""):
        self.aggregate_id = aggregate_id
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.aggregate_id))


class UnhandledEventError(EventStoreError, TypeError):
    """An aggregate has no apply method for an event's type, so it can neither record nor replay it:
    add one (``@applies`` on a method taking that event). ``aggregate`` and ``event_type`` name them."""

    def __init__(self, message: str, aggregate: str = "", event_type: str = ""):
        self.aggregate, self.event_type = aggregate, event_type
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.aggregate, self.event_type))


class CommandRejectedError(EventStoreError, ValueError):
    """An aggregate refused a command because its current state breaks a rule of its domain (the
    message names the rule). Nothing was recorded, and the same command fails again until the state
    changes. ``aggregate_id`` names the aggregate."""

    def __init__(self, message: str, aggregate_id: str = ""):
        self.aggregate_id = aggregate_id
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.aggregate_id))


class ArchiveCorruptError(EventStoreError, CorruptionError):
    """An event archive file is missing, truncated, fails its checksum, or is not the Parquet file
    the archive's manifest names (``path``). Nothing of it was returned: restore the file from a
    copy (its size and CRC-32 are in the manifest), or re-archive from a replica that still has
    the events. Also a :class:`CorruptionError`, so storage-level handlers catch it."""

    def __init__(self, message: str, path: str | None = None):
        CorruptionError.__init__(self, message, path)

    def __reduce__(self):
        return (type(self), (self.args[0], None))


class ArchiveConflictError(EventStoreError):
    """Another archiver moved the archive first (``archived_upto`` is not where this one started), or
    this archive has another location (``url``). Nothing was committed; re-read the archive state
    and go on from ``archived_upto``, with one archiver at a time."""

    def __init__(self, message: str, archived_upto: int = -1):
        self.archived_upto = archived_upto
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.archived_upto))


# --- schemas ---------------------------------------------------------------


# --- configuration store ---------------------------------------------------


class ConfigStoreError(DdiaRayError):
    """A configuration store refused a request (the subclasses say why)."""


class CompactedError(ConfigStoreError):
    """A read or a watch asked for revision ``requested``, older than the oldest revision the store
    still keeps (``oldest_kept``): compaction removed that history. Read at ``oldest_kept`` or later,
    or watch from there after reading the current values (etcd's ``ErrCompacted``)."""

    def __init__(self, message: str, requested: int = 0, oldest_kept: int = 0):
        self.requested, self.oldest_kept = requested, oldest_kept
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.requested, self.oldest_kept))


class FutureRevisionError(ConfigStoreError, ValueError):
    """A read or a watch asked for revision ``requested``, past the store's ``current`` revision (a
    watch may start at ``current + 1``, the next revision to be written; etcd's ``ErrFutureRev``)."""

    def __init__(self, message: str, requested: int = 0, current: int = 0):
        self.requested, self.current = requested, current
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.requested, self.current))


class LeaseNotFoundError(ConfigStoreError, LookupError):
    """No lease of this id was ever granted by the store (``lease_id``); grant one first."""

    def __init__(self, message: str, lease_id: int = 0):
        self.lease_id = lease_id
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0], self.lease_id))


class LeaseExpiredError(LeaseNotFoundError):
    """The lease (``lease_id``) was granted but is gone: it expired (no keepalive within its TTL) or
    was revoked, and its keys were deleted. Grant a new lease and write the keys again. Also a
    :class:`LeaseNotFoundError`, as etcd answers both with ``ErrLeaseNotFound``."""


class InvalidConfigValueError(ConfigStoreError, ValueError):
    """A typed configuration value breaks its schema: ``field`` names the offending field (empty for
    the value as a whole) and ``reason`` says why. Nothing was stored."""

    def __init__(self, message: str, field: str = "", reason: str = ""):
        self.field, self.reason = field, reason
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.field, self.reason))


class RevisionConflictError(ConfigStoreError):
    """A write that depends on a range read (a prefix delete) found the range changed since the
    revision it read (``read_revision``); nothing was written. The client reads again and retries
    (optimistic concurrency control, DDIA 7.4); a caller sees it only if retries ran out."""

    def __init__(self, message: str, read_revision: int = 0):
        self.read_revision = read_revision
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.read_revision))


class SchemaError(DdiaRayError):
    """A schema, a compatibility check or a migration between schema versions failed; the subclass says why."""


class MalformedSchemaError(SchemaError, ValueError):
    """A schema is not valid: bad JSON, an unknown type, a duplicate field, a default that does not
    match its type, or a schema past the size and nesting bounds. The message names the reason; fix
    the schema and submit it again."""


class IncompatibleSchemaError(SchemaError, ValueError):
    """A schema breaks the compatibility mode it was checked under. ``incompatibilities`` lists each
    field (its path, e.g. ``order.items[].price``) and why; the message names them all. Add a default,
    keep the removed field optional, or register under a weaker mode."""

    def __init__(self, message: str, incompatibilities=()):
        self.incompatibilities = list(incompatibilities)
        details = "; ".join(f"{i.path}: {i.reason}" for i in self.incompatibilities)
        super().__init__(f"{message}: {details}" if details else message)

    def __reduce__(self):  # pickled by Ray across actors: rebuilt as it is, not from its message
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class SchemaMappingError(SchemaError, ValueError):
    """A schema has no equivalent in another schema language (an Avro union of two non-null types as an
    Arrow column, an ``Any`` field in a record class): use a type both languages share."""


class MigrationError(SchemaError):
    """Data cannot be migrated between two schema versions: a step of the migration chain is missing
    (the message names it) or a rule does not apply to the data. Register the missing step."""


class UnknownConversionError(MigrationError, LookupError):
    """A type-change rule names a conversion function that this process has not registered with
    ``@conversion(name)``: import the module that registers it."""

    def __init__(self, name: str, known=()):
        self.name = name
        super().__init__(f"unknown conversion {name!r}: no function is registered under this name "
                         f"(known: {sorted(known)}); import the module that registers it with @conversion")

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UnknownSubjectError(SchemaError, LookupError):
    """The schema registry has no subject ``subject`` (no version was ever registered under it, or
    every version was deleted): register a schema under it first, or check the name
    (``ddia-ray schema versions``)."""

    def __init__(self, message: str, subject: str = ""):
        self.subject = subject
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.subject))


class UnknownSchemaError(SchemaError, LookupError):
    """The schema registry has no schema of id ``schema_id``, or subject ``subject`` has no version
    ``version`` (never registered, or deleted). Ids and versions come from a registration's answer."""

    def __init__(self, message: str, schema_id: int = -1, subject: str = "", version: int = -1):
        self.schema_id, self.subject, self.version = schema_id, subject, version
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0], self.schema_id, self.subject, self.version))


# --- plugins ---------------------------------------------------------------


class PluginError(DdiaRayError):
    """A plugin could not be loaded, wants another plugin API, conflicts with another plugin, or was
    driven out of order; the subclass says which."""


class PluginLoadError(PluginError):
    """The entry point ``entry_point`` (``"name = module:attr"`` of group ``ddia_ray.plugins``) could
    not be made a plugin: its module failed to import, the object it names is missing, or the object
    is not a valid plugin (it implements a hook ddia-ray does not define, or a hook with a parameter
    the hook's specification lacks). The message names the cause; fix or uninstall the distribution."""

    def __init__(self, message: str, entry_point: str = ""):
        self.entry_point = entry_point
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class PluginVersionError(PluginError, ValueError):
    """The plugin ``plugin`` needs plugin API ``wanted`` and this ddia-ray offers ``offered``: a plugin
    runs on the same major version and a minor version at least the one it wants. Install a release of
    the plugin built for ``offered``, or a ddia-ray that offers ``wanted``."""

    def __init__(self, plugin: str, wanted: str, offered: str, reason: str = ""):
        self.plugin = plugin
        self.wanted = wanted
        self.offered = offered
        self.reason = reason
        why = reason or (f"it needs plugin API {wanted}, this ddia-ray offers {offered} "
                         f"(same major version, minor <= {offered.split('.')[-1]})")
        super().__init__(f"plugin {plugin!r} refused: {why}")

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class PluginConflictError(PluginError, ValueError):
    """The plugin ``claimant`` provides a ``kind`` named ``name`` that ``owner`` (another plugin, or
    ``"ddia-ray"`` for a built-in) already provides. The claimant is refused as a whole; rename its
    extension or uninstall one of the two."""

    def __init__(self, kind: str, name: str, owner: str, claimant: str):
        self.kind = kind
        self.name = name
        self.owner = owner
        self.claimant = claimant
        super().__init__(f"plugin {claimant!r} refused: {kind} {name!r} is already provided by {owner!r}")

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class PluginStateError(PluginError):
    """The lifecycle step ``action`` is not allowed while the plugin ``plugin`` is ``state`` (start
    before init, init while running, anything after it failed). The message lists the states that allow it."""

    def __init__(self, message: str, plugin: str = "", state: str = "", action: str = ""):
        self.plugin = plugin
        self.state = state
        self.action = action
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UnknownPluginError(PluginError, LookupError):
    """No plugin named ``name`` is registered in this process: check ``ddia-ray plugins`` for what is
    installed, and register or discover it first."""

    def __init__(self, name: str, known=()):
        self.name = name
        super().__init__(f"no plugin named {name!r} is registered (registered: {sorted(known)})")

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


# --- multi-leader and leaderless replication ----------------------------------


class ConflictReplicationError(DdiaRayError):
    """A multi-leader or leaderless store refused a request: the subclass says why (DDIA 5.4, 5.5)."""


class UnknownRegionError(ConflictReplicationError, ConfigError, LookupError):
    """A region named in a launch option, a topology or a request is not one of the store's regions
    (``known``). Use one of them, or launch the store with that region."""

    def __init__(self, region: str, known=()):
        self.region = region
        self.known = tuple(known)
        super().__init__(f"unknown region {region!r}; the store's regions are {sorted(self.known)}")

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class QuorumConfigError(ConflictReplicationError, ConfigError):
    """A request's or store's quorum is impossible: ``n`` is above the number of replicas, or ``r`` or
    ``w`` is below 1 or above ``n``. Choose 1 <= r, w <= n <= replicas (w + r > n for reads that see
    the latest acknowledged write, DDIA 5.5 "Quorums for reading and writing")."""

    def __init__(self, message: str, n: int = 0, r: int = 0, w: int = 0):
        self.n, self.r, self.w = n, r, w
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class QuorumNotReachedError(ConflictReplicationError, TimeoutError):
    """Fewer than ``needed`` replicas acknowledged a leaderless read or write within its timeout
    (``got`` did). A write may still have reached some replicas: it is not acknowledged, and may or may
    not survive (DDIA 5.5 "Limitations of quorum consistency"). Retry, or lower r/w."""

    def __init__(self, message: str, needed: int = 0, got: int = 0):
        self.needed, self.got = needed, got
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ForeignContextError(ConflictReplicationError, InvalidArgumentError):
    """A causal context passed to ``put`` or ``delete`` was not issued by this store (another store's,
    or bytes that are not a context at all). Pass the context a ``get`` of this store returned."""


class ResolverFailedError(ConflictReplicationError):
    """A conflict resolver raised while merging the siblings of ``key``. The failure is isolated: the
    key stays readable as its siblings, and the store's ``stats()`` counts it. Fix the resolver; the
    message carries its error."""

    def __init__(self, message: str, resolver: str = "", key: bytes = b""):
        self.resolver, self.key = resolver, key
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class SiblingsError(ConflictReplicationError, LookupError):
    """A key asked for as one value holds ``count`` concurrent values (siblings). Read them all
    (``Versions.values``), merge them as the application sees fit, and write the result with the
    read's causal context; or launch the store with a resolution that merges them (DDIA 5.4)."""

    def __init__(self, message: str, count: int = 0):
        self.count = count
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class CRDTTypeError(ConflictReplicationError, InvalidArgumentError):
    """A CRDT operation or merge met a value of another type (``expected``, ``got``): a counter
    increment on an OR-Set, a merge of a G-Set with a PN-Counter. Use the operation of the key's type."""

    def __init__(self, message: str, expected: str = "", got: str = ""):
        self.expected, self.got = expected, got
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class MerkleShapeError(ConflictReplicationError, ConfigError):
    """Two replicas compared Merkle trees of different shapes (``fanout`` and ``depth`` of each side,
    ``ours`` and ``theirs``): anti-entropy needs the same shape on every replica of a group. Build the
    trees with the same shape (``MerkleTree.shape_for`` of the group's expected size)."""

    def __init__(self, message: str, ours=(), theirs=()):
        self.ours, self.theirs = tuple(ours), tuple(theirs)
        super().__init__(message)

    def __reduce__(self):
        return (_restore, (type(self), self.args, dict(self.__dict__)))
