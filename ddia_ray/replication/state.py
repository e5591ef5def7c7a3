"""The state a replica applies its log to: a key-value map with the log position it reflects.

Theory of operation
-------------------
A replica's state is a pure function of the log prefix it has applied (DDIA 5.1: a
follower "applies all writes in the same order as they were processed on the
leader"). :class:`MapState` keeps it in a dict, which the simulation and small
groups use: it is rebuilt on restart from the replica's base checkpoint and the
log entries after it, so it needs no durability of its own. ``snapshot`` and
``restore`` move the whole state as bytes: a lagging follower installs the
leader's checkpoint this way.

``apply`` takes the operations of one entry, already decided (a ``cas`` was turned
into a put or a delete by the leader), so applying the same entries in the same
order gives the same state on every replica. ``decide`` is the leader's half: it
evaluates a client's cas against the state before the entry is ordered.
"""

from __future__ import annotations

from .. import codec
from ..errors import CorruptRecordError
from .records import CAS, DELETE, DELETE_RANGE, PUT

__all__ = ["MapState"]

_SNAPSHOT_FORMAT = 1


class MapState:
    """A dict-backed replica state; ``applied`` is the lsn of the last entry applied."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.applied = 0
        # client -> (acked_below, {seq: (lsn, results)}): the answers a client may still ask for again.
        self.sessions: dict[str, tuple[int, dict]] = {}

    def answered(self, client: str, seq: int):
        """``(lsn, results)`` if the client's write ``seq`` was applied, ``"stale"`` if the client has
        acknowledged it already (``seq`` below its floor), else None."""
        floor, seen = self.sessions.get(client, (0, {}))
        if seq < floor:
            return "stale"
        return seen.get(seq)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        return self.data.get(key)

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """A client's ops as log ops plus one result each: a cas becomes its put/delete (result
        True) or nothing (False); the other ops stay as they are (result None).

        Later ops of the batch see the effects of earlier ones, as they will when applied.
        """
        log_ops, results = [], []
        pending: dict[bytes, bytes | None] = {}
        for op in ops:
            if op[0] == CAS:
                _, key, new, expected = op
                current = pending[key] if key in pending else self.data.get(key)
                ok = current == expected
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
                else:  # a range may cover keys decided earlier in this batch
                    for k in [k for k in pending if op[1] <= k < op[2]]:
                        pending[k] = None
                results.append(None)
        return tuple(log_ops), tuple(results)

    def apply(self, lsn: int, ops: tuple, origin: tuple = ()) -> None:
        """Apply the decided ops of entry ``lsn``; ``origin`` ``(client, seq, acked_below, results)``
        is remembered for exactly-once retries."""
        if origin:
            client, seq, acked_below, results = origin
            floor, seen = self.sessions.get(client, (0, {}))
            if acked_below > floor:
                floor = acked_below
                seen = {s: r for s, r in seen.items() if s >= floor}
            seen[seq] = (lsn, results)
            self.sessions[client] = (floor, seen)
        data = self.data
        for code, key, tail in ops:
            if code == PUT:
                data[key] = tail
            elif code == DELETE:
                data.pop(key, None)
            elif code == DELETE_RANGE:
                for k in [k for k in data if key <= k < tail]:
                    del data[k]
        self.applied = lsn

    def snapshot(self) -> bytes:
        """The whole state, encoded (with the lsn it reflects)."""
        sessions = tuple((c, floor, tuple((s, lsn, res) for s, (lsn, res) in seen.items()))
                         for c, (floor, seen) in self.sessions.items())
        return codec.encode((_SNAPSHOT_FORMAT, self.applied, tuple(self.data.items()), sessions))

    def restore(self, data: bytes) -> None:
        """Replace the state by a :meth:`snapshot`."""
        decoded = codec.decode(data)
        if not (isinstance(decoded, tuple) and len(decoded) == 4 and decoded[0] == _SNAPSHOT_FORMAT
                and type(decoded[1]) is int and isinstance(decoded[2], tuple) and isinstance(decoded[3], tuple)):
            raise CorruptRecordError("not a replica state snapshot (or one of an unknown format)")
        _, applied, items, sessions = decoded
        if not all(isinstance(p, tuple) and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes
                   for p in items):
            raise CorruptRecordError("a replica state snapshot holds (bytes, bytes) pairs")
        try:
            self.sessions = {c: (floor, {s: (lsn, res) for s, lsn, res in seen}) for c, floor, seen in sessions}
        except (TypeError, ValueError) as e:
            raise CorruptRecordError(f"a replica state snapshot's sessions are malformed: {e}") from e
        self.data = dict(items)
        self.applied = applied
