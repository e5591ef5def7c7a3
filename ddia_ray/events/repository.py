"""Load and save aggregates through an event store: snapshots, expected versions, conflict retries.

Theory of operation
-------------------
A :class:`Repository` keeps aggregates of one class in an event store (any
:class:`~.client.EventStoreClient`: on Ray, or over a :class:`~.local.LocalBackend`). It does the
I/O; the aggregate (:mod:`.aggregate`) does the deciding and the folding.

**Load** (:meth:`Repository.get`): the stream's latest snapshot, if snapshots are on, then the events
after it (``read_stream(id, from_version=snapshot + 1)``); else every event. A snapshot is only a
cache of the fold (DDIA chapter 11, "Event Sourcing": the log is the truth, and any state derived
from it can be rebuilt), so whenever it cannot be used the load folds every event instead, and
:meth:`Repository.stats` counts it: bytes that are no state of this class (a state record changed
with no upgrade step), or a snapshot that does not join the stream (its next event is not
``snapshot + 1``: the stream was deleted and written again, or truncated past it). An empty
stream is :class:`~ddia_ray.errors.AggregateNotFoundError`.

**Save** (:meth:`Repository.save`): the pending events in one atomic append, with the version the
aggregate was loaded at as the exact expected version (``NO_STREAM`` for a new one). If another
writer appended in between, the store refuses with
:class:`~ddia_ray.errors.WrongExpectedVersionError` and writes nothing: optimistic concurrency, as
pyeventsourcing and EventStoreDB do it. The pending events stay pending until an append succeeds,
and their ids were fixed when they were recorded, so a save whose answer was lost (a timeout) can
be called again: the store finds those ids at the version the save names and answers the first
append's result, writing nothing twice.

**Snapshots**, with ``snapshot_every=N``: a save whose events cross a multiple of N events (the
stream's event count goes from below k*N to k*N or more) then keeps the state at the new version.
The state is encoded before the append, so a state that cannot be encoded fails the save before
anything is written. The snapshot is written after the append succeeded; if that write fails
(the store is slow or away), the save still succeeds, since its events are stored and a snapshot
only saves time: the failure is counted in :meth:`Repository.stats` with its message, and the next
multiple of N takes one again.

**Commands** (:meth:`Repository.execute`): load, run the command, save. On a conflict the command
is decided again on the reloaded aggregate (the rival's events may change the decision, or make
the command refused), at most ``max_retries`` more times, with no pause: the rival's append has
committed, so the reload sees it. A save whose outcome is unknown (a timeout) is resent as it is,
within the same budget: same ids, so it lands once. When the budget is spent,
:class:`~ddia_ray.errors.RetriesExhaustedError` is raised, with the attempts and the last error
as its ``last_error`` and ``__cause__``. We chose it over re-raising the last conflict because
what the caller must act on is different: a ``WrongExpectedVersionError`` says "reload and decide
again", which was done; this says the aggregate is too contended for the budget (make the
aggregate smaller, or raise ``max_retries``). A command must therefore have no effect but the
events it records, since it may run several times.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from .._validate import integer, invariant
from ..codec import record
from ..errors import (AggregateNotFoundError, CallTimeoutError, CodecError, ConfigError, DdiaRayError,
                      InvalidArgumentError, RetriesExhaustedError, WriteOutcomeUnknownError,
                      WrongExpectedVersionError)
from .aggregate import Aggregate
from .records import NO_STREAM, AppendResult, RecordedEvent, check_stream

__all__ = ["Repository", "RepositoryStats"]

A = TypeVar("A", bound=Aggregate)

#: The answers to an append that leave its outcome unknown: resending the same ids settles it.
_OUTCOME_UNKNOWN = (CallTimeoutError, WriteOutcomeUnknownError)


@record("events.repository_stats", version=1)
class RepositoryStats:
    """What a :class:`Repository` did since it was made.

    ``loads`` aggregates loaded, ``events_replayed`` events folded by them, ``snapshot_loads`` loads
    that started from a snapshot, ``snapshot_fallbacks`` snapshots that could not be used (see the
    module docstring); ``saves`` appends and ``events_saved`` their events, ``snapshots_saved``,
    ``snapshot_errors`` snapshot writes that failed and ``last_snapshot_error`` the last one's
    message; ``conflicts`` appends refused for their expected version, ``retries`` commands decided
    again after one, ``resends`` appends sent again after an unknown outcome."""

    loads: int = 0
    events_replayed: int = 0
    snapshot_loads: int = 0
    snapshot_fallbacks: int = 0
    saves: int = 0
    events_saved: int = 0
    snapshots_saved: int = 0
    snapshot_errors: int = 0
    last_snapshot_error: str = ""
    conflicts: int = 0
    retries: int = 0
    resends: int = 0


class _Counted:
    """Recorded events (an iterator or a list) that count what they gave."""

    def __init__(self, events: Iterable[RecordedEvent]) -> None:
        self.events = events
        self.n = 0

    def __iter__(self) -> Iterator[RecordedEvent]:
        for e in self.events:
            self.n += 1
            yield e


class Repository(Generic[A]):
    """Aggregates of ``aggregate_class`` in the event store behind ``client`` (see the module docstring).

    ``snapshot_every``: keep a snapshot every that many events (None: no snapshots are read or
    written, one store round trip fewer per load). ``max_retries``: how many more times
    :meth:`execute` decides a command again after a conflict. ``new_event_id``: the id factory
    given to the aggregates it builds (default: random UUIDs). Thread-safe: it holds no aggregate.
    """

    def __init__(self, client: Any, aggregate_class: type[A], *, snapshot_every: int | None = None,
                 max_retries: int = 3, new_event_id: Callable[[], str] | None = None) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, Aggregate)
                and getattr(aggregate_class, "State", None) is not None):
            raise InvalidArgumentError(f"a repository keeps a subclass of Aggregate that names its state record, "
                                       f"got {aggregate_class!r:.80}")
        if snapshot_every is not None and integer("snapshot_every", snapshot_every) < 1:
            raise ConfigError(f"snapshot_every is a number of events >= 1 (or None: no snapshots), got "
                              f"{snapshot_every}")
        if integer("max_retries", max_retries) < 0:
            raise ConfigError(f"max_retries is >= 0, got {max_retries}")
        if new_event_id is not None and not callable(new_event_id):
            raise InvalidArgumentError(f"new_event_id is a function returning an id str, got {new_event_id!r:.80}")
        self.client = client
        self.aggregate_class = aggregate_class
        self.snapshot_every = snapshot_every
        self.max_retries = max_retries
        self.new_event_id = new_event_id
        self._lock = threading.Lock()
        self._stats = RepositoryStats()

    # --- loading -----------------------------------------------------------------------------------

    def get(self, id: str, *, version: int | None = None) -> A:
        """The aggregate ``id`` as of its last event (or of its last event at or before
        ``version``). Raises :class:`~ddia_ray.errors.AggregateNotFoundError` if its stream has no
        event, :class:`~ddia_ray.errors.StreamDeletedError` if the stream was tombstoned."""
        check_stream(id)
        if version is not None and integer("version", version) < 0:
            raise InvalidArgumentError(f"version is an event version >= 0 (or None: the last), got {version}")
        aggregate = self._load(id, version)
        if aggregate is None:
            raise self._not_found(id)
        return aggregate

    def get_many(self, ids: Iterable[str]) -> dict[str, A]:
        """The aggregates ``ids`` as of their last events, ``{id: aggregate}`` in the order given: what
        :meth:`get` returns for each, loaded together. Their snapshots (if on) are asked for as
        futures and the events after them read by one
        :meth:`~.client.EventStoreClient.read_streams`, so a hundred aggregates cost a few round
        trips rather than a hundred or two. They are folded as :meth:`get` folds them:
        an aggregate with no event after its snapshot costs a look at its stream's version, and one
        whose snapshot does not join its stream a read of every event. Raises
        :class:`~ddia_ray.errors.AggregateNotFoundError` for the first id whose stream has no event."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidArgumentError(f"get_many takes an iterable of aggregate ids, got {type(ids).__name__}")
        wanted = list(dict.fromkeys(ids))
        for id in wanted:
            check_stream(id)
        snapshots: dict[str, tuple[int, Any]] = {}
        if self.snapshot_every is not None:
            futures = [(id, self.client.load_snapshot_nowait(id)) for id in wanted]
            for id, future in futures:
                usable = self._usable_snapshot(self.client.wait(future), None)
                if usable is not None:
                    snapshots[id] = usable
        streams = self.client.read_streams({id: snapshots[id][0] + 1 if id in snapshots else 0 for id in wanted})
        out: dict[str, A] = {}
        for id in wanted:
            aggregate = self._fold(id, None, snapshots.get(id), streams[id])
            if aggregate is None:
                raise self._not_found(id)
            out[id] = aggregate
        return out

    def _not_found(self, id: str) -> AggregateNotFoundError:
        name = self.aggregate_class.__name__
        return AggregateNotFoundError(f"no {name} {id!r}: its stream has no event (never written, or deleted); "
                                      f"create it with execute(..., create=True) or save a new {name}",
                                      aggregate_id=id)

    def _load(self, id: str, upto: int | None) -> A | None:
        snapshot = self._snapshot(id, upto)
        return self._fold(id, upto, snapshot, self._events(id, 0 if snapshot is None else snapshot[0] + 1, upto))

    def _fold(self, id: str, upto: int | None, snapshot: tuple[int, Any] | None,
              after: Iterable[RecordedEvent]) -> A | None:
        """The aggregate ``id`` from its usable ``snapshot`` (or None) and ``after``, its stream's events
        after the snapshot (from the first, without one), up to ``upto``; None if the stream has none.
        A snapshot that does not join the stream is counted and every event folded instead."""
        cls = self.aggregate_class
        if snapshot is not None:
            version = snapshot[0]
            events = _Counted(after)
            it = iter(events)
            first = next(it, None)
            if first is None:
                # No event after the snapshot: the stream may have stayed there, or have been deleted.
                actual = self.client.stream_version(id)
                if actual == -1:
                    return None
                joins = (actual if upto is None else min(actual, upto)) == version
            else:
                joins = first.version == version + 1
            if joins:
                aggregate = cls.rebuild(id, _prefixed(first, it), snapshot=snapshot, new_event_id=self.new_event_id)
                self._count(loads=1, snapshot_loads=1, events_replayed=events.n)
                return aggregate
            self._count(snapshot_fallbacks=1)
            after = self._events(id, 0, upto)
        events = _Counted(after)
        aggregate = cls.rebuild(id, events, new_event_id=self.new_event_id)
        if aggregate.version < 0:
            return None
        self._count(loads=1, events_replayed=events.n)
        return aggregate

    def _snapshot(self, id: str, upto: int | None) -> tuple[int, Any] | None:
        """The stream's snapshot as ``(version, state)`` if snapshots are on and it can be used."""
        if self.snapshot_every is None:
            return None
        return self._usable_snapshot(self.client.load_snapshot(id), upto)

    def _usable_snapshot(self, found: tuple[int, bytes] | None, upto: int | None) -> tuple[int, Any] | None:
        """A loaded snapshot ``found`` as ``(version, state)``, or None if there is none, it is past
        ``upto``, or its bytes are no state of this class (counted)."""
        if found is None or (upto is not None and found[0] > upto):
            return None
        version, data = found
        try:
            return version, self.aggregate_class.decode_state(data)
        except CodecError:
            # A cache that cannot be read is rebuilt from the log, the truth; stats() shows it happened.
            self._count(snapshot_fallbacks=1)
            return None

    def _events(self, id: str, from_version: int, upto: int | None) -> Iterator[RecordedEvent]:
        count = None if upto is None else max(0, upto - from_version + 1)
        return self.client.iter_stream(id, from_version, max_count=count)

    # --- saving ------------------------------------------------------------------------------------

    def save(self, aggregate: A) -> AppendResult | None:
        """Append ``aggregate``'s pending events if its stream is still at the version it was loaded
        at (see the module docstring); None if it has none. Raises
        :class:`~ddia_ray.errors.WrongExpectedVersionError` when another writer appended first: reload
        and decide again (:meth:`execute` does). After a timeout, calling it again is safe."""
        if not isinstance(aggregate, self.aggregate_class):
            raise InvalidArgumentError(f"this repository saves {self.aggregate_class.__name__} aggregates, got "
                                       f"{type(aggregate).__name__}")
        batch = aggregate.pending_event_data()
        if not batch:
            return None
        loaded = aggregate.version - len(batch)
        every = self.snapshot_every
        due = every is not None and (aggregate.version + 1) // every > (loaded + 1) // every
        state = aggregate.encode_state() if due else None
        try:
            result = self.client.append(aggregate.id, batch, NO_STREAM if loaded == -1 else loaded)
        except WrongExpectedVersionError:
            self._count(conflicts=1)
            raise
        aggregate.mark_saved(result)
        self._count(saves=1, events_saved=len(batch))
        if state is not None:
            self._save_snapshot(aggregate.id, aggregate.version, state)
        return result

    def _save_snapshot(self, id: str, version: int, state: bytes) -> None:
        try:
            kept = self.client.save_snapshot(id, version, state)
        except DdiaRayError as e:
            # The events are stored: failing the save now would make the caller redo a command that
            # happened. A snapshot only saves time, so count the failure and try at the next multiple.
            with self._lock:
                self._stats = _bumped(self._stats, snapshot_errors=1, last_snapshot_error=f"{type(e).__name__}: {e}")
            return
        if kept:
            self._count(snapshots_saved=1)

    # --- commands ----------------------------------------------------------------------------------

    def execute(self, id: str, command: Callable[[A], Any], *, create: bool = False) -> A:
        """Load ``id``, run ``command(aggregate)``, save; return the saved aggregate.

        With ``create``, a missing aggregate starts new (its first save expects ``NO_STREAM``, so of
        two creators one conflicts, reloads and runs the command on what the other created). On a
        conflict the command runs again on the reloaded aggregate, at most ``max_retries`` more
        times; then :class:`~ddia_ray.errors.RetriesExhaustedError` (``last_error``: the last
        conflict). The command's own errors (e.g. :class:`~ddia_ray.errors.CommandRejectedError`)
        pass through, with nothing saved."""
        check_stream(id)
        if not callable(command):
            raise InvalidArgumentError(f"command is a function of the aggregate, got {command!r:.80}")
        aggregate: A | None = None
        attempts = 0
        while True:
            attempts += 1
            if aggregate is None:
                aggregate = self._load(id, None)
                if aggregate is None:
                    if not create:
                        raise self._not_found(id)
                    aggregate = self.aggregate_class(id, new_event_id=self.new_event_id)
                command(aggregate)
            try:
                self.save(aggregate)
                return aggregate
            except WrongExpectedVersionError as e:
                last: DdiaRayError = e
                aggregate = None  # reload, and decide again on what the rival wrote
                retry = "retries"
            except _OUTCOME_UNKNOWN as e:
                last = e  # resend the same events: if the first append landed, the store says so
                retry = "resends"
            if attempts > self.max_retries:
                raise RetriesExhaustedError(
                    f"{self.aggregate_class.__name__} {id!r}: {attempts} attempts failed, the last with "
                    f"{type(last).__name__}: {last}; the aggregate is contended (or the store unreachable): try "
                    f"later, or raise max_retries ({self.max_retries})", attempts, last) from last
            self._count(**{retry: 1})

    # --- statistics --------------------------------------------------------------------------------

    def stats(self) -> RepositoryStats:
        """What this repository did since it was made (see :class:`RepositoryStats`)."""
        with self._lock:
            return self._stats

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._stats = _bumped(self._stats, **deltas)

    def __repr__(self) -> str:
        return (f"Repository({self.aggregate_class.__name__}, snapshot_every={self.snapshot_every}, "
                f"max_retries={self.max_retries})")


def _bumped(stats: RepositoryStats, **changes: Any) -> RepositoryStats:
    """``stats`` with the int counters in ``changes`` increased and the str fields replaced."""
    fields = {name: getattr(stats, name) for name in RepositoryStats.__dataclass_fields__ if name != "_unknown"}
    for name, value in changes.items():
        invariant(name in fields, f"RepositoryStats has no field {name!r}")
        fields[name] = value if isinstance(value, str) else fields[name] + value
    return RepositoryStats(**fields)


def _prefixed(first: RecordedEvent | None, rest: Iterator[RecordedEvent]) -> Iterator[RecordedEvent]:
    if first is not None:
        yield first
        yield from rest
