"""Client sessions for exactly-once writes, and the cluster time that expires them.

Theory of operation
-------------------
A replicated state machine applies each committed write once per ``(client, seq)``: a retry, or a
duplicate the network made, finds the first application's answer and changes nothing (Raft thesis
6.3). :class:`Sessions` keeps, per client, the floor below which the client has every answer and
the answers at or above it. The client moves the floor up with ``acked_below``.

Sessions are forgotten after ``ttl_ms`` of cluster time without a write, so a store with many
short-lived clients does not keep them all forever. Cluster time is a stamp the leader puts on
each write (:class:`ClusterClock`), so every replica expires the same sessions at the same entry.
RaftKV (``ddia_ray.kv``) and the replicated store (``ddia_ray.replication``) both keep their
sessions here: one implementation of the rule, on the floor below both.
"""

from __future__ import annotations

import collections
from typing import Any

from ..errors import ConfigError, CorruptRecordError

__all__ = ["Sessions", "ClusterClock", "session_ttl_ms"]


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
