"""The state machine of the replicated store's Raft members: committed write batches applied to a state.

Every member applies the same entries in the same order (:mod:`.raft_replica`). An entry the
leader decided when it proposed it (:mod:`.speculation`) carries its puts, deletes and answers,
and is only applied; an undecided one is decided here, against the state at the entry's index,
which is the same on every member. Each client write applies once per ``(client, seq)``: a retry
gets the first application's answer (Raft thesis 6.3). A fenced write is checked against the
group's ownership record at this point too (:mod:`.ownership`), for the same reason.

Snapshots are checkpoints of the state: :meth:`ReplStateMachine.snapshot` names one, and a
follower copies its files (:meth:`ReplStateMachine.prepare`) before its Raft core takes it.
"""

from __future__ import annotations

from typing import Callable

from .. import codec
from ..errors import CorruptRecordError, PartitionError
from .indexing import Indexer, index_rows
from .ownership import OWNERSHIP_KEY, Ownership, OwnershipCache, PartitionLoad, check_fenced_ops, check_update
from .pins import ScanPins
from .raft_entries import OWNERSHIP_FENCE, refusal
from .state import ReplicaState

__all__ = ["ReplStateMachine"]


class ReplStateMachine:
    """The state machine of :class:`RaftReplica`: write batches applied to a :class:`~.state.ReplicaState`."""

    def __init__(self, state: ReplicaState, name: str, pins: ScanPins | None = None):
        self.state = state
        self.name = name
        self.pins = pins
        self.applied_writes = 0
        self.duplicates = 0
        # The snapshot indexes followers may still be copying (the Raft member sets it: its leader knows).
        self.sending: Callable[[], frozenset] = frozenset
        self._own = OwnershipCache()
        self.load = PartitionLoad()  # per partition, counted where entries apply and reads are served
        self.indexer = Indexer()

    @property
    def sessions(self):
        """The state's client sessions (their clock is what a leader's stamps start from)."""
        return self.state.sessions

    def read(self, key: bytes) -> bytes | None:
        """The value of ``key`` in this member's state."""
        return self.state.get(key)

    def ownership(self) -> Ownership | None:
        """The group's ownership record as of the last applied entry."""
        return self._own.of(self.state.get(OWNERSHIP_KEY))

    def apply_write(self, index: int, term: int, client: str, seq: int, acked_below: int,
                    ops: tuple, stamp: int = -1, fence: int = 0,
                    decided: tuple | None = None) -> tuple[int, tuple] | None:
        """Apply the write batch at ``index`` once per ``(client, seq)``; returns ``(index it applied at,
        one result per op)``: for a retry, the first application's. None when there is no answer to
        give (applied before a restart, or a retry the client already acknowledged).

        ``decided`` is the leader's answers when it decided the batch at proposal (``ops`` are then
        the decided ones, :mod:`.speculation`); None: decide ``ops`` here.

        A fenced write is checked against the group's ownership record here, at apply time, where
        every member decides alike (:mod:`.ownership`); a refused one applies nothing and its
        results are a :func:`refusal`, remembered like any answer."""
        if client:
            done = self.state.answered(client, seq)
            if done == "stale":
                self.duplicates += 1
                return None
            if done is not None:
                if done[0] != index:
                    self.duplicates += 1
                return done
        if index <= self.state.applied:
            return None  # applied before a restart (the engine said so): nothing to do again
        if fence:
            try:
                if fence == OWNERSHIP_FENCE:
                    new = codec.decode(ops[0][2])
                    if type(new) is not Ownership:
                        raise CorruptRecordError("an ownership entry does not hold a repl.ownership record")
                    check_update(self.ownership(), new)
                else:
                    self.load.wrote(check_fenced_ops(self.ownership(), fence, ops))
            except PartitionError as e:
                results = refusal(e)
                self.state.apply(index, (), (client, seq, acked_below, results, stamp) if client else (), term)
                return index, results
        log_ops, results = self.state.decide(ops) if decided is None else (ops, decided)
        if fence != OWNERSHIP_FENCE:
            own = self.ownership()
            if own is not None and own.indexes:  # local indexes: their rows apply with the data
                log_ops = index_rows(self.indexer, own.indexes, self.state, log_ops)
        self.state.apply(index, log_ops, (client, seq, acked_below, results, stamp) if client else (), term)
        self.applied_writes += 1
        return index, results

    #: A snapshot names a checkpoint's files, which later snapshots prune: the Raft member writes the
    #: log that names it at once, not in the background (kv/member.py's compaction says why).
    snapshot_files = True

    def snapshot(self) -> bytes:
        """What Raft keeps as its snapshot and sends to lagging members: a checkpoint of the state
        (the earlier ones at the indexes in :attr:`sending` are kept: followers are copying them)."""
        keep = frozenset(f"{self.name}-{i}" for i in self.sending())
        return self.state.export(f"{self.name}-{self.state.applied}", keep)

    def restore(self, data: bytes) -> None:
        """Recover from this member's own snapshot."""
        self.state.restore(data)

    def prepare(self, data: bytes) -> None:
        """Copy what a leader's snapshot names before Raft accepts it (a state kept in files; a state
        in memory has nothing to copy). Raises :class:`~ddia_ray.errors.StorageError` if the copy
        fails (the snapshot is then dropped, and nothing changed)."""
        prepare = getattr(self.state, "prepare", None)
        if prepare is not None:
            prepare(data)

    def install(self, data: bytes) -> None:
        """Install a leader's snapshot (copying its checkpoint's files for an engine)."""
        if self.pins is not None:
            self.pins.close_all()  # their views belong to the state being replaced
        self.state.install(data)

    def figures(self) -> dict:
        """For status: the state's figures, writes applied and duplicates recognised."""
        return {**self.state.describe(), "applied_writes": self.applied_writes, "duplicates": self.duplicates}
