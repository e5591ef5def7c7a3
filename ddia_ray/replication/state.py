"""The state a replica applies its log to: a key-value map with the log position it reflects.

Theory of operation
-------------------
A replica's state is a pure function of the log prefix it has applied (DDIA 5.1: a
follower "applies all writes in the same order as they were processed on the
leader"). Two states implement one interface, :class:`ReplicaState`:

* :class:`MapState` keeps the data in a dict; the simulation and small groups use
  it. It is rebuilt on restart from the replica's base and the log entries after
  it, so it needs no durability of its own; its snapshot is the whole map.
* :class:`~.engine_state.EngineState` keeps the data in a storage engine (LSM or
  B-tree) that holds more than memory and is durable by itself; its snapshot is
  only the sessions, and a checkpoint is a copy of the engine's files.

``apply`` takes the operations of one entry, already decided (a ``cas`` was turned
into a put or a delete by the leader), so applying the same entries in the same
order gives the same state on every replica. :func:`decide` is the leader's half:
it evaluates a client's cas against the state before the entry is ordered.

The :class:`Sessions` table remembers the answer of every client write a client
may still ask for again (Raft thesis 6.3), so a retried write applies once. It
changes with every applied entry that came from a client, *including* entries a
durable state had applied before a restart: :meth:`ReplicaState.remember` is
called for those.
"""

from __future__ import annotations

import collections
import operator
from typing import Any, Callable, Protocol

from .. import codec
from ..errors import ConfigError, CorruptRecordError
from .records import CAS, DELETE, DELETE_RANGE, PUT

_code = operator.itemgetter(0)

__all__ = ["ReplicaState", "MapState", "Sessions", "ClusterClock", "decide", "session_ttl_ms"]

_SNAPSHOT_FORMAT = 1


class Sessions:
    """Per client: the floor below which it has every answer, the answers at or above it, and
    when it last wrote, in cluster time (see :class:`ClusterClock`).

    ``ttl_ms`` > 0 expires a session that has not written for that long: applying a write
    stamped ``t`` forgets every session whose last write is older than ``t - ttl_ms`` (Raft
    thesis 6.3, as LogCabin does). The stamps come from the log, so every replica expires the
    same sessions at the same entry. A forgotten session that writes again simply starts a new
    row: that is safe as long as no write is retried, or delivered, more than ``ttl_ms`` after
    it was first sent, which the client guarantees by refusing a ``timeout_s`` that is not
    shorter than the store's session TTL (docs/replication.md, "Client sessions and their expiry").
    """

    def __init__(self, ttl_ms: int = 0) -> None:
        if type(ttl_ms) is not int or ttl_ms < 0:
            raise ConfigError(f"a session TTL is an int of milliseconds >= 0 (0: never), got {ttl_ms!r}")
        self.ttl_ms = ttl_ms
        # client -> (acked_below, {seq: (lsn, results)})
        self.table: dict[str, tuple[int, dict]] = {}
        # client -> cluster time of its last write, oldest first (stamps are applied in log order,
        # so moving a client to the end on every write keeps this ordered without sorting).
        self.active: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.clock = 0  # the newest stamp applied
        self.expired = 0

    def answered(self, client: str, seq: int):
        """``(lsn, results)`` if the client's write ``seq`` was applied, ``"stale"`` if the client has
        acknowledged it already (``seq`` below its floor), else None."""
        floor, seen = self.table.get(client, (0, {}))
        if seq < floor:
            return "stale"
        return seen.get(seq)

    def remember(self, lsn: int, origin: tuple) -> list[str]:
        """Record the answer of the client write ``origin`` = ``(client, seq, acked_below, results, t)``
        applied at ``lsn``; idempotent (replaying an entry twice changes nothing). Returns the
        clients whose sessions expired at this write (their rows are gone from the table)."""
        client, seq, acked_below, results, t = origin
        floor, seen = self.table.get(client, (0, {}))
        if acked_below > floor:
            floor = acked_below
            seen = {s: r for s, r in seen.items() if s >= floor}
        if seq >= floor:
            seen[seq] = (lsn, results)
        self.table[client] = (floor, seen)
        return self.touch(client, t)

    def touch(self, client: str, t: int) -> list[str]:
        """``client`` wrote at cluster time ``t`` (< 0: unknown, an entry from before stamps: now);
        expire the sessions idle for longer than the TTL and return their clients."""
        t = self.clock if t < 0 else max(t, self.active.get(client, 0))
        self.active[client] = t
        self.active.move_to_end(client)
        if t > self.clock:
            self.clock = t
        return self.expire(self.clock)

    def expire(self, now: int) -> list[str]:
        """Forget the sessions whose last write is older than ``now - ttl_ms``; their clients."""
        gone: list[str] = []
        if not self.ttl_ms:
            return gone
        horizon = now - self.ttl_ms
        active = self.active
        while active:
            client, last = next(iter(active.items()))
            if last >= horizon:
                break
            del active[client]
            self.table.pop(client, None)
            gone.append(client)
        self.expired += len(gone)
        return gone

    def load(self, client: str, row: tuple[int, dict], last: int) -> None:
        """Put a row read from durable storage into the table (its activity is known already)."""
        self.table[client] = row
        if client not in self.active:
            self.note(client, last)

    def note(self, client: str, last: int) -> None:
        """Record that ``client`` exists with its last write at ``last`` (rebuilding the order after a
        restart; any order is fixed by sorting once, see :meth:`reorder`)."""
        self.active[client] = last
        if last > self.clock:
            self.clock = last

    def reorder(self) -> None:
        """Sort the activity index oldest first (after :meth:`note` calls in any order)."""
        self.active = collections.OrderedDict(sorted(self.active.items(), key=lambda item: item[1]))

    @staticmethod
    def encode_rows(table: dict, active: dict) -> tuple:
        """``{client: (floor, {seq: (lsn, results)})}`` and the clients' last stamps as plain tuples."""
        return tuple((c, floor, tuple((s, lsn, res) for s, (lsn, res) in seen.items()), active.get(c, 0))
                     for c, (floor, seen) in table.items())

    @staticmethod
    def decode_rows(rows: Any) -> dict:
        """The inverse of :meth:`encode_rows`: ``{client: ((floor, answers), last stamp)}``; rows of
        the first format (no stamp) get stamp 0. Malformed rows raise CorruptRecordError."""
        try:
            table = {}
            for row in rows:
                c, floor, seen = row[:3]
                last = row[3] if len(row) == 4 else 0
                if len(row) not in (3, 4) or type(last) is not int:
                    raise ValueError(f"a row is (client, floor, answers[, last stamp]), got {row!r}")
                table[c] = ((floor, {s: (lsn, res) for s, lsn, res in seen}), last)
        except (TypeError, ValueError) as e:
            raise CorruptRecordError(f"session rows are malformed: {e}") from e
        if not all(isinstance(c, str) and type(f) is int for c, ((f, _), _) in table.items()):
            raise CorruptRecordError("session rows are (client, floor, answers)")
        return table

    def encode(self) -> tuple:
        """The table as plain tuples (for a snapshot)."""
        return self.encode_rows(self.table, self.active)

    def restore(self, rows: Any) -> None:
        """Replace the table by rows of :meth:`encode`; malformed rows raise CorruptRecordError."""
        decoded = self.decode_rows(rows)
        self.table = {c: row for c, (row, _) in decoded.items()}
        self.active = collections.OrderedDict()
        self.clock = 0
        for c, (_, last) in decoded.items():
            self.note(c, last)
        self.reorder()

    def __len__(self) -> int:
        return len(self.table)


def session_ttl_ms(ttl_s: float) -> int:
    """A session TTL in seconds (0: sessions never expire) as the milliseconds :class:`Sessions` takes."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 <= ttl_s < 10 ** 9:
        raise ConfigError(f"session_ttl_s is a number of seconds >= 0 (0: never expire), got {ttl_s!r}")
    return int(ttl_s * 1000)


class ClusterClock:
    """The leader's stamp for a client write: cluster time in milliseconds, carried in the log.

    Cores have no clock, only ticks, and ticks of different replicas are unrelated. A leader
    therefore stamps ``base + ticks since it began leading (this term or epoch)``, where ``base``
    is the newest stamp its state had applied when it began: cluster time never runs faster
    than real time (a delayed tick only slows it), which is the direction that keeps expiry
    safe (a session lives at least its TTL of real time). A stamp is never below one already
    applied, so stamps rise along the log. LogCabin's cluster time works the same way.
    """

    def __init__(self, tick_s: float) -> None:
        self.tick_ms = tick_s * 1000.0
        self._term = -1
        self._base = 0
        self._since = 0

    def stamp(self, term: int, ticks: int, applied_clock: int) -> int:
        """The stamp of a write ordered now by the leader of ``term`` at tick ``ticks``."""
        if term != self._term:
            self._term, self._base, self._since = term, applied_clock, ticks
        return max(applied_clock, self._base + int((ticks - self._since) * self.tick_ms))


def decide(ops: tuple, get: Callable[[bytes], bytes | None]) -> tuple[tuple, tuple]:
    """A client's ops as log ops plus one result each: a cas becomes its put/delete (result
    True) or nothing (False); the other ops stay as they are (result None).

    ``get`` reads the state before the batch; later ops of the batch see the effects of earlier
    ones, as they will when applied.
    """
    if CAS not in map(_code, ops):  # no cas (the usual batch): nothing to decide, in one C-level pass
        return ops, (None,) * len(ops)
    log_ops, results = [], []
    pending: dict[bytes, bytes | None] = {}
    ranges: list[tuple[bytes, bytes]] = []  # ranges deleted earlier in the batch

    def current(key: bytes) -> bytes | None:
        if key in pending:
            return pending[key]
        if any(s <= key < e for s, e in ranges):
            return None
        return get(key)

    for op in ops:
        if op[0] == CAS:
            _, key, new, expected = op
            ok = current(key) == expected
            if ok:
                log_ops.append((PUT, key, new) if new is not None else (DELETE, key, b""))
                pending[key] = new
            results.append(ok)
        else:
            log_ops.append(op)
            if op[0] == PUT:
                pending[op[1]] = op[2]
            elif op[0] == DELETE:
                pending[op[1]] = None
            else:  # a range covers keys decided earlier in this batch and keys of the state
                for k in [k for k in pending if op[1] <= k < op[2]]:
                    pending[k] = None
                ranges.append((op[1], op[2]))
            results.append(None)
    return tuple(log_ops), tuple(results)


class ReplicaState(Protocol):
    """What a replica needs from its state (see the module docstring)."""

    applied: int         # lsn of the last entry applied
    applied_epoch: int   # epoch of that entry: with ``applied``, the position the state is at
    sessions: Sessions

    def answered(self, client: str, seq: int) -> Any:
        """``(lsn, results)`` of the client's write ``seq`` if applied, ``"stale"`` below its floor, else None."""

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """A client's ops as log ops (a cas decided against this state) and one result per op."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""

    def get_many(self, keys: tuple) -> tuple:
        """The values of ``keys`` (None where absent)."""

    def scan(self, start: bytes, end: bytes | None, limit: int) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)`` in order, and their values."""

    def apply(self, lsn: int, ops: tuple, origin: tuple = (), epoch: int = 0) -> None:
        """Apply the decided ops of entry ``lsn`` of ``epoch``; remember ``origin``'s answer."""

    def remember(self, lsn: int, origin: tuple) -> None:
        """An entry at or below ``applied`` seen again: record only its session answer."""

    def durable_lsn(self) -> int:
        """The newest lsn a crash keeps without the replica's log (entries after it are replayed)."""

    def request_durable(self) -> None:
        """Start making :meth:`durable_lsn` reach ``applied`` (in the background)."""

    def snapshot(self) -> bytes:
        """What a replica's own log keeps as its base (recovered by :meth:`restore`)."""

    def restore(self, data: bytes) -> None:
        """Recover from this replica's own :meth:`snapshot`."""

    def export(self, name: str) -> bytes:
        """What a lagging follower installs (named ``name`` where files are written)."""

    def install(self, data: bytes) -> None:
        """Replace this state by a leader's :meth:`export`."""

    def describe(self) -> dict:
        """Figures for status."""

    def close(self) -> None:
        """Release what the state holds open."""


class MapState:
    """A dict-backed replica state; ``applied`` is the lsn of the last entry applied."""

    def __init__(self, session_ttl_ms: int = 0) -> None:
        self.data: dict[bytes, bytes] = {}
        self.applied = 0
        self.applied_epoch = 0
        self.sessions = Sessions(session_ttl_ms)

    def answered(self, client: str, seq: int):
        """See :meth:`Sessions.answered`."""
        return self.sessions.answered(client, seq)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        return self.data.get(key)

    def get_many(self, keys: tuple) -> tuple:
        """The values of ``keys`` (None where absent)."""
        return tuple(self.data.get(k) for k in keys)

    def scan(self, start: bytes, end: bytes | None, limit: int) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)`` in order, and their values."""
        keys = sorted(k for k in self.data if k >= start and (end is None or k < end))[:limit]
        return tuple(keys), tuple(self.data[k] for k in keys)

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """See :func:`decide`."""
        return decide(ops, self.data.get)

    def apply(self, lsn: int, ops: tuple, origin: tuple = (), epoch: int = 0) -> None:
        """Apply the decided ops of entry ``lsn`` (of ``epoch``); ``origin`` is remembered for
        exactly-once retries."""
        if origin:
            self.sessions.remember(lsn, origin)
        data = self.data
        for code, key, tail in ops:
            if code == PUT:
                data[key] = tail
            elif code == DELETE:
                data.pop(key, None)
            elif code == DELETE_RANGE:
                for k in [k for k in data if key <= k < tail]:
                    del data[k]
        self.applied, self.applied_epoch = lsn, epoch

    def remember(self, lsn: int, origin: tuple) -> None:
        """An entry at or below ``applied`` seen again: only its session answer may be new."""
        if origin:
            self.sessions.remember(lsn, origin)

    def durable_lsn(self) -> int:
        """``applied``: a snapshot holds the whole map."""
        return self.applied

    def request_durable(self) -> None:
        """Nothing to do (see :meth:`durable_lsn`)."""

    def snapshot(self) -> bytes:
        """The whole state, encoded (with the position it reflects)."""
        return codec.encode((_SNAPSHOT_FORMAT, self.applied, tuple(self.data.items()), self.sessions.encode(),
                             self.applied_epoch))

    def restore(self, data: bytes) -> None:
        """Replace the state by a :meth:`snapshot`."""
        decoded = codec.decode(data)
        if not (isinstance(decoded, tuple) and len(decoded) in (4, 5) and decoded[0] == _SNAPSHOT_FORMAT
                and type(decoded[1]) is int and isinstance(decoded[2], tuple) and isinstance(decoded[3], tuple)):
            raise CorruptRecordError("not a replica state snapshot (or one of an unknown format)")
        applied, items, sessions = decoded[1:4]
        if not all(isinstance(p, tuple) and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes
                   for p in items):
            raise CorruptRecordError("a replica state snapshot holds (bytes, bytes) pairs")
        self.sessions.restore(sessions)
        self.data = dict(items)
        self.applied = applied
        self.applied_epoch = decoded[4] if len(decoded) == 5 and type(decoded[4]) is int else 0

    def export(self, name: str) -> bytes:
        """What a lagging follower installs: the snapshot itself (``name`` is unused here)."""
        return self.snapshot()

    def install(self, data: bytes) -> None:
        """Install a leader's :meth:`export`."""
        self.restore(data)

    def describe(self) -> dict:
        """Figures for status: the number of keys and client sessions."""
        return {"keys": len(self.data), "sessions": len(self.sessions), "sessions_expired": self.sessions.expired}

    def close(self) -> None:
        """Nothing to release."""

