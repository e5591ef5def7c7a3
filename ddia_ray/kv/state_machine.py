"""The replicated state machine of RaftKV: a dict, plus client sessions for exactly-once writes.

Theory of operation
-------------------
Every member applies the same committed :class:`~.commands.KVCommand` s in
the same order, so every member's dict is the same at the same index (Raft's
state-machine safety). Retries would break that promise for writes that are
not idempotent (a ``cas``, or a ``put`` that overwrote a later ``put``), so
each session remembers the result of every sequence number it has not yet
acknowledged (thesis §6.3): a duplicate returns the remembered result and
changes nothing. ``acked_below`` lets the session forget results the client
already has; an operation below that floor is a stale retry and is ignored.

Snapshots encode the dict and the sessions with the project codec (versioned
msgpack). Keys and values are bytes; a format-1 snapshot, written when keys could
be ``str`` and values any codec value, is read back under that rule
(:func:`~.commands.legacy_key`, :func:`~.commands.legacy_value`).
"""

from __future__ import annotations

from .. import codec
from ..errors import CorruptRecordError
from .commands import KVCommand, legacy_key, legacy_value

__all__ = ["KVStateMachine", "STALE"]

STALE = "stale"  # the result of a retry whose answer the client has already acknowledged
_SNAPSHOT_FORMAT = 2


class KVStateMachine:
    """Dict state with per-client sessions (see the module docstring)."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.sessions: dict[str, tuple[int, dict]] = {}  # client -> (acked_below, {seq: result})
        self.applied_writes = 0
        self.duplicates = 0

    def read(self, key):
        """The value of ``key`` or None (served after a ReadIndex round)."""
        return self.data.get(key)

    def apply(self, cmd: KVCommand):
        """Apply a committed write once per ``(client, seq)``; returns its result."""
        floor, results = self.sessions.get(cmd.client, (0, {}))
        if cmd.acked_below > floor:
            floor = cmd.acked_below
            results = {s: r for s, r in results.items() if s >= floor}
        self.sessions[cmd.client] = (floor, results)
        if cmd.seq < floor:
            self.duplicates += 1
            return STALE
        if cmd.seq in results:
            self.duplicates += 1
            return results[cmd.seq]
        kind, key = cmd.kind, cmd.key
        if kind == "put":
            self.data[key] = cmd.value
            result = None
        elif kind == "delete":
            result = self.data.pop(key, None) is not None
        else:  # cas
            result = self.data.get(key) == cmd.expected
            if result:
                if cmd.value is None:
                    self.data.pop(key, None)
                else:
                    self.data[key] = cmd.value
        results[cmd.seq] = result
        self.applied_writes += 1
        return result

    def figures(self) -> dict:
        """Keys held, writes applied and duplicates recognised (for status)."""
        return {"keys": len(self.data), "applied_writes": self.applied_writes, "duplicates": self.duplicates}

    def snapshot(self) -> bytes:
        """The whole state, encoded."""
        sessions = tuple((c, floor, tuple(results.items())) for c, (floor, results) in self.sessions.items())
        return codec.encode((_SNAPSHOT_FORMAT, tuple(self.data.items()), sessions))

    def restore(self, data: bytes) -> None:
        """Replace the state by a snapshot made by :meth:`snapshot`."""
        decoded = codec.decode(data)
        if not isinstance(decoded, tuple) or len(decoded) != 3 or decoded[0] not in (1, _SNAPSHOT_FORMAT):
            raise CorruptRecordError("not a RaftKV state-machine snapshot (or one of an unknown format)")
        fmt, items, sessions = decoded
        if fmt == 1:
            items = ((legacy_key(k), legacy_value(v)) for k, v in items)
        self.data = dict(items)
        self.sessions = {c: (floor, dict(results)) for c, floor, results in sessions}
