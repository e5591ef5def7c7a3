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
The sessions are :class:`~ddia_ray.consensus.sessions.Sessions`, the replicated
store's too: with ``session_ttl_ms`` > 0 a session that has not written for that
long in cluster time (each command carries its leader's stamp) is forgotten at
the same command on every member, so many short-lived clients do not pile up.

Snapshots encode the dict and the sessions with the project codec (versioned
msgpack). Keys and values are bytes; a format-1 snapshot, written when keys could
be ``str`` and values any codec value, is read back under that rule
(:func:`~.commands.legacy_key`, :func:`~.commands.legacy_value`). Format 2 kept
sessions without their last write's stamp (read back as stamp 0: the next
stamped write decides whether they lapse).
"""

from __future__ import annotations

from .. import codec
from ..consensus.sessions import Sessions
from ..errors import CorruptRecordError
from .commands import KVCommand, legacy_key, legacy_value

__all__ = ["KVStateMachine", "STALE"]

STALE = "stale"  # the result of a retry whose answer the client has already acknowledged
_SNAPSHOT_FORMAT = 3


class KVStateMachine:
    """Dict state with per-client sessions (see the module docstring)."""

    def __init__(self, session_ttl_ms: int = 0) -> None:
        self.data: dict = {}
        self.sessions = Sessions(session_ttl_ms)
        self.applied_writes = 0
        self.duplicates = 0

    def read(self, key):
        """The value of ``key`` or None (served after a ReadIndex round)."""
        return self.data.get(key)

    def apply(self, cmd: KVCommand, index: int = 0):
        """Apply a committed write (log ``index``) once per ``(client, seq)``; returns its result."""
        done = self.sessions.answered(cmd.client, cmd.seq)
        if done is not None:
            self.duplicates += 1
            result = STALE if done == STALE else done[1]
            # The session's floor may still move, and its clock: a retry is a write like any other.
            self.sessions.remember(index, (cmd.client, cmd.seq, cmd.acked_below, result, cmd.stamp))
            return result
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
        self.sessions.remember(index, (cmd.client, cmd.seq, cmd.acked_below, result, cmd.stamp))
        self.applied_writes += 1
        return result

    def figures(self) -> dict:
        """Keys held, writes applied, duplicates recognised, sessions held and expired (for status)."""
        return {"keys": len(self.data), "applied_writes": self.applied_writes, "duplicates": self.duplicates,
                "sessions": len(self.sessions), "sessions_expired": self.sessions.expired}

    def snapshot(self) -> bytes:
        """The whole state, encoded."""
        return codec.encode((_SNAPSHOT_FORMAT, tuple(self.data.items()), self.sessions.encode()))

    def restore(self, data: bytes) -> None:
        """Replace the state by a snapshot made by :meth:`snapshot`."""
        decoded = codec.decode(data)
        if not isinstance(decoded, tuple) or len(decoded) != 3 or decoded[0] not in (1, 2, _SNAPSHOT_FORMAT):
            raise CorruptRecordError("not a RaftKV state-machine snapshot (or one of an unknown format)")
        fmt, items, sessions = decoded
        if fmt == 1:
            items = ((legacy_key(k), legacy_value(v)) for k, v in items)
        if fmt in (1, 2):  # (client, floor, ((seq, result), ...)): no log index, no stamp
            try:
                sessions = tuple((c, floor, tuple((seq, 0, r) for seq, r in answers)) for c, floor, answers in sessions)
            except (TypeError, ValueError) as e:
                raise CorruptRecordError(f"a RaftKV snapshot's sessions are malformed: {e}") from e
        self.data = dict(items)
        self.sessions.restore(sessions)
