"""Persistent subscriptions: consumer groups whose state the store keeps, and the rules that change it.

Theory of operation
-------------------
A persistent subscription (EventStoreDB's name; a Kafka consumer group with
per-event acknowledgement, or a Redis Streams group) lets competing consumers
share the events of ``$all`` (or of a filtered ``$all``) while the *store*
remembers what each event's fate is. The group's state is one row. Clients
change it through the leader, which holds it in memory and checkpoints it to
the row (:mod:`.group_service`, a leader service); the procedures below change
the row in the log directly, with the same functions, and stay registered for
the log entries that name them. The row holds:

* ``cursor``: the next ``$all`` position never handed out;
* ``inflight``: events handed to a consumer, with the attempt number and a
  deadline (``ack_timeout``) after which they are handed out again;
* ``retry``: events to hand out again (nacked with ``retry``, or timed out);
* ``checkpoint``: every position below it is settled (acked, skipped or
  parked): the group's lag is measured from it.

``pull`` (``events.group_pull``) first moves timed-out events to ``retry``,
then hands out retries, then new events from the cursor, to at most
``max_in_flight`` events in flight for the group (backpressure: a slow group
stops taking events; nothing buffers in the store beyond that bound). An event
that reaches ``max_retries`` attempts is *parked*: it gets its own row with the
reason, is counted, and waits until an operator replays it (``unpark``). So
delivery is **at least once**: an event is settled only by an ack, a skip or a
park, and a consumer that crashes after handling an event but before acking it
sees it again. Nothing is parked silently: every park has a row and a count.

Time is the consumers' clock, passed as an argument (the procedure must be
deterministic); a consumer whose clock runs ahead only times events out sooner.
"""

from __future__ import annotations

from typing import Any

from ..errors import CorruptRecordError, InvalidArgumentError, NotDeliveredError, UnknownConsumerGroupError
from ..replication.procedures import procedure, query
from ..replication.records import DELETE, DELETE_RANGE, PUT
from . import keys
from .inflight import InFlight
from .keys import pack, unpack
from .queries import _all_forward, _bodies

__all__ = ["group_create", "group_delete", "group_pull", "group_ack", "group_ack_pull", "group_nack", "group_unpark",
           "group_info", "group_parked", "read_positions", "positions_rows", "answer_rows", "archive_dropped_of",
           "passes", "spans_of", "runs_of", "NACK_ACTIONS", "MAX_SETTLE", "MAX_READ_POSITIONS", "Group"]

#: What a nack asks: hand the event out again, park it now, settle it without handling, or hand
#: it back unhandled (``release``: a consumer that stops with a batch it pulled ahead and never
#: started; the attempt it was handed out with is not counted, so it can never be parked for it).
NACK_ACTIONS = ("retry", "park", "skip", "release")
_SCAN = 4096  # positions one pull looks at past the cursor (a filter that matches nothing ends a pull early)
#: The most positions one ack or nack may name (its runs spanned out): a call's work stays bounded.
MAX_SETTLE = 100_000
#: The most positions one :func:`read_positions` reads.
MAX_READ_POSITIONS = 4096


def _group_key(group: str) -> bytes:
    return b"p" + group.encode()


def _parked_key(group: str, position: int) -> bytes:
    return b"q" + group.encode() + b"\x00" + keys.u64(position)


def _parked_range(group: str) -> tuple[bytes, bytes]:
    return b"q" + group.encode() + b"\x00", b"q" + group.encode() + b"\x01"


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 256 or "\x00" in name:
        raise InvalidArgumentError(f"a {what} name is a non-empty str without NUL, got {name!r:.80}")
    return name


class Group:
    """A consumer group's row (see the module docstring).

    The row's fields: settings, cursor, (in-flight events of the first layout: none now), retries,
    counters, parked count, and the in-flight events as runs ``(first, last, consumer, attempts,
    deadline)`` of consecutive positions that share the rest. A pull hands out up to a batch of
    consecutive positions to one consumer with one deadline, so a thousand events in flight are
    one run: the row a consumer's every ack-and-pull rewrites (and every member applies) stays
    small, where a tuple per event made it 17 KB and its decoding and encoding most of the pull's
    1.2 ms (measured in one process). In memory too they stay runs (:class:`~.inflight.InFlight`).
    Rows of the first layout (six fields) are still read."""

    __slots__ = ("settings", "cursor", "inflight", "retry", "counters", "parked", "foreign")

    def __init__(self, row: bytes):
        fields = unpack(row, (6, 7), "consumer group")
        settings, self.cursor, inflight, retry, counters, self.parked = fields[:6]
        # Every field's shape is checked here, where the row is read, so a damaged row is refused as
        # such rather than failing later in a comparison or a loop (both found by fuzzing).
        if not (isinstance(settings, tuple) and len(settings) == 5 and settings[0] in (None, "stream", "type")
                and type(settings[1]) is str and all(type(v) is int for v in settings[2:])
                and type(self.cursor) is int and type(self.parked) is int
                and isinstance(retry, tuple) and isinstance(counters, dict) and isinstance(inflight, tuple)
                and all(type(k) is str and type(v) is int for k, v in counters.items())):
            raise CorruptRecordError("a consumer group's row has fields of other types than a group's")
        self.settings = settings
        self.inflight = InFlight()
        try:
            for p, c, a, d in inflight:
                self.inflight.add(p, p, c, a, d)
            for first, last, c, a, d in (fields[6] if len(fields) == 7 else ()):
                self.inflight.add(first, last, c, a, d)
            self.retry = dict(retry)  # position -> attempts so far
        except (TypeError, ValueError) as e:
            raise CorruptRecordError(f"a consumer group's events in flight or retries are damaged: {e}") from None
        if not all(type(p) is int and type(a) is int for p, a in self.retry.items()):
            raise CorruptRecordError("a consumer group's retry queue holds other things than positions")
        if any(p in self.inflight for p in self.retry):  # an event is in flight or waiting, never both
            raise CorruptRecordError("a consumer group's row holds an event both in flight and in its retry queue")
        self.counters = dict(counters)
        self.counters.setdefault("released", 0)  # a row written before the release action
        #: Positions below it may have been handed out by an earlier leader's service, after the
        #: checkpoint this row is (:mod:`.group_service`): not in the row, never part of it.
        self.foreign = 0

    def copy(self) -> "Group":
        """An independent copy: a leader service changes a copy and keeps it only if the whole call
        succeeded, as a procedure's effects are kept only if it returns."""
        other = object.__new__(Group)
        other.settings, other.cursor, other.parked = self.settings, self.cursor, self.parked
        other.foreign = self.foreign
        other.inflight, other.retry, other.counters = self.inflight.copy(), dict(self.retry), dict(self.counters)
        return other

    @staticmethod
    def new(settings: tuple, start: int) -> bytes:
        """The row of a new group."""
        counters = {"delivered": 0, "acked": 0, "retried": 0, "timed_out": 0, "parks": 0, "skipped": 0,
                    "released": 0}
        return pack(settings, start, (), (), counters, 0, ())

    def row(self) -> bytes:
        """This group as its row value."""
        return pack(self.settings, self.cursor, (), tuple(sorted(self.retry.items())), self.counters, self.parked,
                    self.inflight.runs())

    @property
    def checkpoint(self) -> int:
        """Every position below it is settled."""
        low = self.inflight.lowest()
        return min(self.cursor, self.cursor if low is None else low, min(self.retry, default=self.cursor))


def _load(get, group: str) -> Group:
    row = get(_group_key(group))
    if row is None:
        raise UnknownConsumerGroupError(f"no consumer group {group!r}: create it first", group=group)
    return Group(row)


@procedure("events.group_create")
def group_create(get, args: Any) -> tuple[tuple, bool]:
    """Create ``group`` over ``$all`` from ``start`` with ``settings`` = ``(filter kind, prefix,
    max_in_flight, max_retries, ack_timeout_ms)``; creating it again with the same settings is a
    no-op (the result says whether it was created), with others an error."""
    group, settings, start = args
    _check_name("consumer group", group)
    kind, prefix, max_in_flight, max_retries, ack_timeout_ms = settings
    if kind not in (None, "stream", "type") or not isinstance(prefix, str):
        raise InvalidArgumentError(f"a group's filter is None, 'stream' or 'type' with a str prefix, got {kind!r}")
    for name, value, low in (("max_in_flight", max_in_flight, 1), ("max_retries", max_retries, 1),
                             ("ack_timeout_ms", ack_timeout_ms, 1), ("start", start, 0)):
        if type(value) is not int or value < low:
            raise InvalidArgumentError(f"a group's {name} is an int >= {low}, got {value!r}")
    old = get(_group_key(group))
    if old is not None:
        if Group(old).settings != tuple(settings):
            raise InvalidArgumentError(f"consumer group {group!r} exists with other settings "
                                       f"{Group(old).settings}; delete it first to change them")
        return (), False
    return ((PUT, _group_key(group), Group.new(tuple(settings), start)),), True


@procedure("events.group_delete")
def group_delete(get, args: Any) -> tuple[tuple, bool]:
    """Delete ``group``, its state and its parked events; the result says whether it existed."""
    (group,) = args
    _check_name("consumer group", group)
    if get(_group_key(group)) is None:
        return (), False
    lo, hi = _parked_range(group)
    return ((DELETE, _group_key(group), b""), (DELETE_RANGE, lo, hi)), True


def _matches(get, g: Group, position: int, finder: keys.ChunkFinder, chunks: dict) -> bool | None:
    """Whether the event at ``position`` passes the group's filter (None: no event there yet);
    ``finder`` finds the chunks this pull goes through, ``chunks`` keeps those it decoded."""
    pointer = finder.pointer(position)
    if pointer is None:
        return None
    stream, version, last = pointer
    kind, prefix = g.settings[0], g.settings[1]
    if kind is None:
        return True
    if kind == "stream":
        return stream.startswith(prefix)
    if (stream, last) not in chunks:
        body = get(keys.chunk_key(stream, last))
        chunks[stream, last] = keys.Chunk.of(body) if body is not None else None
    chunk = chunks[stream, last]
    event = chunk.event(version) if chunk is not None else None
    return event is not None and event[2].startswith(prefix)


def _archive_dropped(get) -> int:
    """The archive's ``dropped_upto``: no event below it is in the rows any more (:mod:`.archive`)."""
    from .archive import dropped_upto  # imported here: the archive's module imports the procedures'

    return dropped_upto(get)


def _park(g: Group, group: str, position: int, attempts: int, reason: str) -> tuple:
    g.parked += 1
    g.counters["parks"] += 1
    return (PUT, _parked_key(group, position), pack(attempts, reason[:500]))


@procedure("events.group_pull")
def group_pull(get, args: Any) -> tuple[tuple, tuple]:
    """Hand ``consumer`` up to ``n`` events of ``group`` at time ``now_ms`` (see the module docstring);
    the result is runs ``((first, last, attempt), ...)`` of consecutive positions handed out with
    the same attempt (the events themselves are read with a query, so the log and the session
    table do not carry their bodies; a batch of new events is one run, not a pair per event)."""
    group, consumer, n, now_ms = args
    _check_name("consumer group", group)
    g = _load(get, group)
    ops, handed = _pull(get, g, group, consumer, n, now_ms)
    ops.append((PUT, _group_key(group), g.row()))
    return tuple(ops), handed


@procedure("events.group_ack_pull")
def group_ack_pull(get, args: Any) -> tuple[tuple, tuple]:
    """Settle ``positions`` of ``group`` as handled, then hand ``consumer`` up to ``n`` more events,
    in one entry: a consumer's loop commits once per batch rather than twice (Kafka's and Redis's
    consumers also fetch and commit in one round trip). The result is ``(checkpoint, handed)``:
    :func:`group_ack`'s and :func:`group_pull`'s."""
    group, positions, consumer, n, now_ms = args
    _check_name("consumer group", group)
    g = _load(get, group)
    _ack(g, group, positions)
    checkpoint = g.checkpoint
    ops, handed = _pull(get, g, group, consumer, n, now_ms)
    ops.append((PUT, _group_key(group), g.row()))
    return tuple(ops), (checkpoint, handed)


def _pull(get, g: Group, group: str, consumer: Any, n: Any, now_ms: Any) -> tuple[list, tuple]:
    """What a pull changes in ``g`` and writes besides its row (parks), and what it hands out."""
    _check_name("consumer", consumer)
    if type(n) is not int or n < 1 or type(now_ms) is not int:
        raise InvalidArgumentError("a pull asks for n >= 1 events at a time now_ms (int)")
    _, _, max_in_flight, max_retries, ack_timeout_ms = g.settings
    ops = []
    for first, last, _, attempts, _ in g.inflight.take_expired(now_ms):
        # Its consumer did not answer in time: hand it out again, or park it.
        g.counters["timed_out"] += last - first + 1
        for pos in range(first, last + 1):
            if attempts >= max_retries:
                ops.append(_park(g, group, pos, attempts, f"no ack within {ack_timeout_ms} ms, {attempts} times"))
            else:
                g.retry[pos] = attempts
    room = min(n, max_in_flight - len(g.inflight))
    handed: list = []
    for pos in sorted(g.retry)[:max(room, 0)]:
        attempts = g.retry.pop(pos) + 1
        g.inflight.add(pos, pos, consumer, attempts, now_ms + ack_timeout_ms)
        g.counters["retried"] += 1
        _handed(handed, pos, pos, attempts)
    room -= sum(last - first + 1 for first, last, _ in handed)  # what is left for new events
    dropped = _archive_dropped(get)
    if g.cursor < dropped:
        # The archive moved these events out of the rows (the group started below its drop, or
        # lagged behind it): every position below dropped_upto is an event, in the archive, but its
        # stream and type are not here to filter by. They are handed out as they are; the consumer
        # reads them from the archive and acks at once those its group's filter leaves out
        # (PersistentSubscription). Before, such a group's pull found no row and never moved.
        take = max(0, min(room, dropped - g.cursor, _SCAN))
        _hand_out(g, consumer, take, now_ms + ack_timeout_ms, handed)
    elif g.settings[0] is None:
        # No filter: every position from the cursor to the end of $all is an event ($all is
        # gap-free and only an archive drop removes events, below dropped_upto), so the pull needs
        # the global sequence rather than a row per position (each member runs this procedure).
        take = max(0, min(room, keys.next_position(get) - g.cursor, _SCAN))
        _hand_out(g, consumer, take, now_ms + ack_timeout_ms, handed)
    else:
        _pull_row_by_row(get, g, consumer, room, now_ms + ack_timeout_ms, handed)
    g.counters["delivered"] += sum(last - first + 1 for first, last, _ in handed)
    return ops, tuple(handed)


def _handed(handed: list, first: int, last: int, attempt: int) -> None:
    """Add ``first..last`` (one attempt) to the runs a pull hands out, merged with the last one
    when it follows it."""
    if handed and handed[-1][1] == first - 1 and handed[-1][2] == attempt:
        handed[-1] = (handed[-1][0], last, attempt)
    else:
        handed.append((first, last, attempt))


def _hand_out(g: Group, consumer: str, take: int, deadline: int, handed: list) -> None:
    """Hand ``consumer`` the ``take`` positions from the cursor, each a first attempt: one run."""
    if take > 0:
        g.inflight.add(g.cursor, g.cursor + take - 1, consumer, 1, deadline)
        _handed(handed, g.cursor, g.cursor + take - 1, 1)
        g.cursor += take


def _pull_row_by_row(get, g: Group, consumer: Any, room: int, deadline: int, handed: list) -> None:
    """Hand out up to ``room`` events from the cursor that pass the group's filter, one ``$all`` row
    per position, looking at most at :data:`_SCAN` positions (a filter that matches nothing ends a
    pull early)."""
    looked = 0
    finder = keys.ChunkFinder(get.seek)
    chunks: dict = {}
    taken = 0
    while taken < room and looked < _SCAN:
        match = _matches(get, g, g.cursor, finder, chunks)
        if match is None:
            break  # the end of $all
        looked += 1
        if match:
            g.inflight.add(g.cursor, g.cursor, consumer, 1, deadline)
            _handed(handed, g.cursor, g.cursor, 1)
            taken += 1
        g.cursor += 1


def _settle(g: Group, group: str, position: Any) -> int:
    """Take ``position`` out of flight (or out of the retry queue); its attempts so far."""
    if type(position) is not int or position < 0:
        raise InvalidArgumentError(f"positions are ints >= 0, got {position!r}")
    if position in g.inflight:
        return g.inflight.pop(position)[1]
    if position in g.retry:
        return g.retry.pop(position)
    if position >= g.cursor and position >= g.foreign:
        raise NotDeliveredError(f"group {group!r} never delivered position {position} (its cursor is at "
                                f"{g.cursor})", group=group, position=position)
    # Settled already (an ack repeated after a timeout and a redelivery's ack), or handed out by an
    # earlier leader after its last checkpoint (it will be handed out again): nothing to do.
    return -1


@procedure("events.group_ack")
def group_ack(get, args: Any) -> tuple[tuple, int]:
    """Settle ``positions`` of ``group`` as handled; the result is the group's checkpoint after."""
    group, positions = args
    _check_name("consumer group", group)
    g = _load(get, group)
    _ack(g, group, positions)
    return ((PUT, _group_key(group), g.row()),), g.checkpoint


def spans_of(positions: Any, what: str = "acks") -> list[tuple[int, int]]:
    """The ``(first, last)`` spans a settling call names: ``positions`` is a tuple whose items are
    positions (ints) or runs ``(first, last)`` of consecutive ones (what a consumer sends for the
    batch it was handed). At most :data:`MAX_SETTLE` positions in all."""
    if not isinstance(positions, tuple):
        raise InvalidArgumentError(f"{what} name a tuple of positions or (first, last) runs")
    spans = []
    total = 0
    for item in positions:
        if type(item) is int:
            first = last = item
        elif type(item) is tuple and len(item) == 2 and type(item[0]) is int and type(item[1]) is int \
                and item[0] <= item[1]:
            first, last = item
        else:
            raise InvalidArgumentError(f"{what} name positions (ints >= 0) or (first, last) runs, got {item!r:.80}")
        if first < 0:
            raise InvalidArgumentError(f"positions are ints >= 0, got {first!r}")
        total += last - first + 1
        if total > MAX_SETTLE:
            raise InvalidArgumentError(f"one call settles at most {MAX_SETTLE} positions")
        spans.append((first, last))
    return spans


def runs_of(positions) -> tuple:
    """``positions`` (ints) as a consumer sends them to settle: runs ``(first, last)`` of consecutive
    ones, a lone position as itself (anything but ints is sent as it is, for the store to refuse)."""
    positions = tuple(positions)
    if not positions or set(map(type, positions)) != {int}:
        return positions
    return tuple(p if p == q else (p, q) for p, q in _runs(sorted(set(positions))))


def _ack(g: Group, group: str, positions: Any) -> None:
    acked = 0
    for first, last in spans_of(positions):
        # The usual ack: a run a consumer was handed, still in flight within one run.
        if g.inflight.take_span(first, last) is not None:
            acked += last - first + 1
            continue
        for pos in range(first, last + 1):
            if _settle(g, group, pos) >= 0:
                acked += 1
    g.counters["acked"] += acked


@procedure("events.group_nack")
def group_nack(get, args: Any) -> tuple[tuple, int]:
    """Refuse ``positions`` of ``group``: ``retry`` (parked once it has had ``max_retries``
    attempts), ``park``, ``skip`` or ``release`` (back to the retry queue, the attempt uncounted),
    with ``reason``; the result is the checkpoint after."""
    group, positions, action, reason = args
    _check_name("consumer group", group)
    g = _load(get, group)
    ops = _nack(g, group, positions, action, reason)
    ops.append((PUT, _group_key(group), g.row()))
    return tuple(ops), g.checkpoint


def _nack(g: Group, group: str, positions: Any, action: Any, reason: Any) -> list:
    """What a nack changes in ``g``; the parks it writes besides the group's row."""
    if action not in NACK_ACTIONS or not isinstance(reason, str) or not isinstance(positions, tuple):
        raise InvalidArgumentError(f"a nack names positions, an action of {NACK_ACTIONS} and a str reason")
    spans = spans_of(positions, "nacks")
    max_retries = g.settings[3]
    ops = []
    for pos in (p for first, last in spans for p in range(first, last + 1)):
        was_out = pos in g.inflight
        attempts = _settle(g, group, pos)
        if attempts < 0:
            continue
        if action == "release" and not was_out:  # not handed out (waiting for a retry already): stays as is
            g.retry[pos] = attempts
        elif action == "skip":
            g.counters["skipped"] += 1
        elif action == "release":  # never handled: as if it had not been handed out
            g.retry[pos] = max(attempts - 1, 0)
            g.counters["released"] += 1
        elif action == "park" or attempts >= max_retries:
            why = reason if action == "park" else f"{attempts} attempts failed; last: {reason}"
            ops.append(_park(g, group, pos, attempts, why))
        else:
            g.retry[pos] = attempts
    return ops


@procedure("events.group_unpark")
def group_unpark(get, args: Any) -> tuple[tuple, int]:
    """Hand parked ``positions`` of ``group`` out again (with a fresh count of attempts); the result
    is how many were parked."""
    group, positions = args
    _check_name("consumer group", group)
    g = _load(get, group)
    ops, moved = _unpark(get, g, group, positions)
    ops.append((PUT, _group_key(group), g.row()))
    return tuple(ops), moved


def _unpark(get, g: Group, group: str, positions: Any) -> tuple[list, int]:
    """What an unpark changes in ``g``: the parked rows it deletes, and how many it moved."""
    if not isinstance(positions, tuple):
        raise InvalidArgumentError("an unpark names a tuple of positions")
    ops = []
    moved = 0
    for pos in positions:
        if type(pos) is not int or get(_parked_key(group, pos)) is None:
            continue
        ops.append((DELETE, _parked_key(group, pos), b""))
        g.retry[pos] = 0
        g.parked -= 1
        moved += 1
    return ops, moved


@query("events.group_info")
def group_info(state, args: Any) -> dict:
    """``group``'s settings, positions and counters (``parks``: events ever parked; ``parked``: parked
    now), with the end of ``$all`` to measure lag from."""
    (group,) = args
    _check_name("consumer group", group)
    return info_of(_load(state.get, group), group, keys.next_position(state.get))


def info_of(g: Group, group: str, end: int) -> dict:
    """``group``'s settings, positions and counters, with ``end`` (the end of ``$all``) to measure lag from."""
    kind, prefix, max_in_flight, max_retries, ack_timeout_ms = g.settings
    return {"group": group, "filter": (kind, prefix), "max_in_flight": max_in_flight, "max_retries": max_retries,
            "ack_timeout_ms": ack_timeout_ms, "cursor": g.cursor, "checkpoint": g.checkpoint,
            "in_flight": len(g.inflight), "retry_queue": len(g.retry), "end": end,
            "lag_events": end - g.checkpoint, **g.counters, "parked": g.parked}


@query("events.group_parked")
def group_parked(state, args: Any) -> tuple:
    """Up to ``limit`` parked events of ``group`` from ``position``: ``((position, attempts, reason), ...)``."""
    group, position, limit = args
    _check_name("consumer group", group)
    _load(state.get, group)
    if type(position) is not int or position < 0 or type(limit) is not int or limit < 1:
        raise InvalidArgumentError("a parked listing starts at a position >= 0 and takes limit >= 1")
    lo, hi = _parked_range(group)
    found, values = state.scan(lo + keys.u64(position), hi, min(limit, 4096))
    return tuple((keys.position_of(k), *unpack(v, 2, "parked event")) for k, v in zip(found, values))


@query("events.read_positions")
def read_positions(state, args: Any) -> tuple:
    """The events at ``positions`` (removed ones left out) as ``(parts, rows, dropped_upto)``: the
    runs of consecutive positions as chunk parts (:func:`~.keys.part_rows`), the others as rows like
    :func:`~.queries.read_all`'s, and the archive's ``dropped_upto`` (positions below it are read
    from the archive: :meth:`~.persistent.PersistentSubscription.pull`). :func:`positions_rows` puts
    the rows back in the order asked."""
    (positions,) = args
    if not isinstance(positions, tuple) or len(positions) > MAX_READ_POSITIONS \
            or not set(map(type, positions)) <= {int}:
        raise InvalidArgumentError(f"positions are a tuple of at most {MAX_READ_POSITIONS} ints")
    # A pull hands out runs of consecutive positions (new events from the cursor, in order): a run
    # is read a chunk at a time through $all's chunk rows and sent as the chunks' stored bytes; the
    # scattered rest (retries, a filtered group's matches) by pointer, one seek per chunk.
    parts: list = []
    scattered: list[int] = []
    for lo, hi in _runs(sorted(set(positions))):
        if hi - lo + 1 >= _RUN_MIN:
            parts += _all_forward(state, lo, hi + 1, hi - lo + 1, None, "")[0]
        else:
            scattered.extend(range(lo, hi + 1))
    pointers = []
    finder = keys.ChunkFinder(keys.scan_seek(state))
    for p in scattered:  # ascending: one seek per chunk they fall in
        pointer = finder.pointer(p)
        if pointer is not None:
            stream, version, last = pointer
            pointers.append((stream, version, p, last))
    return tuple(parts), tuple(_bodies(state, pointers)), _archive_dropped(state.get)


def positions_rows(positions, answer: tuple, archived: Any = ()) -> list:
    """The rows of :func:`read_positions`'s ``answer`` in the order of ``positions`` (removed
    events left out), with ``archived`` (rows read from the archive) among them."""
    found = answer_rows(answer)
    for row in archived:
        found[row[2]] = row
    return [found[p] for p in dict.fromkeys(positions) if p in found]


def answer_rows(answer: tuple) -> dict:
    """Every row of :func:`read_positions`'s ``answer``, by position."""
    parts, rows = answer[0], answer[1]  # (a store before the archive's position answered two)
    found = {row[2]: row for row in keys.part_rows(parts)}
    for row in rows:
        found[row[2]] = row
    return found


def archive_dropped_of(answer: tuple) -> int:
    """The archive's ``dropped_upto`` in :func:`read_positions`'s ``answer`` (0: none said)."""
    return answer[2] if len(answer) > 2 else 0


def passes(settings_filter: tuple, row: tuple) -> bool:
    """Whether event ``row`` (a read row: stream, version, position, id, type, ...) passes a group's
    filter ``(kind, prefix)``, as a pull judges the events still in the rows (:func:`_matches`)."""
    kind, prefix = settings_filter
    if kind is None:
        return True
    return (row[0] if kind == "stream" else row[4]).startswith(prefix)


#: Consecutive positions that :func:`read_positions` reads by chunk rather than one ``$all`` row each.
_RUN_MIN = 8


def _runs(ordered: list) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive ints in ``ordered`` (ascending, distinct)."""
    if ordered and ordered[-1] - ordered[0] == len(ordered) - 1:
        return [(ordered[0], ordered[-1])]  # ascending and distinct: one run (a batch acked whole)
    runs: list[tuple[int, int]] = []
    for p in ordered:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs
