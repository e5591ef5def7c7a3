"""Active anti-entropy for leaderless replicas: Merkle trees per pair of replicas, compared in turn.

Theory of operation
-------------------
Read repair fixes only the keys that are read; a key written while a replica
was away and never read again stays stale there. Anti-entropy finds it (DDIA
5.5 "Read repair and anti-entropy"; Dynamo 4.7; Riak's active anti-entropy):
every ``anti_entropy_ticks`` a replica picks the next peer in turn and runs an
:class:`~.anti_entropy.AntiEntropySession` with it over a Merkle tree of the
keys both replicate, descending only into the ranges that differ. What the
peer holds and this replica lacks is merged here; what this replica holds and
the peer lacks is pushed in the session's last message and merged there.

Two replicas share only the keys whose preference lists (of the store's ``n``)
hold both, so the session compares the tree a replica keeps per peer over exactly
those keys (:meth:`~.leaderless.LeaderlessReplica.tree_for`). A session compares a
snapshot of the tree taken when it starts (:meth:`~.merkle.MerkleTree.snapshot`,
copy-on-write: only the leaves written meanwhile are copied), so the writes that
arrive meanwhile do not disturb it; they are found by the next session.

Sessions run one at a time per replica, and one that hears nothing for
``4 * anti_entropy_ticks`` is abandoned (the peer crashed or the network cut it).

A replica whose tree has not changed since a session with the peer found no
difference skips its turn with that peer (``anti_entropy_unchanged``): if the
two differ now, the peer changed, and the peer's own turn finds it, since its
root is no longer the one it agreed on. An idle store then runs no sessions
(each takes a snapshot and a round trip or more, every ``anti_entropy_s`` on
every replica).

Anti-entropy yields to replication in flight. Under a stream of writes two
replicas' trees differ by every write not yet delivered to both, and a session
then descends into thousands of keys the replication is about to bring anyway:
three replicas taking (3,1,1) writes on two cores spent 40% of their CPU on such
sessions (60 of 154 us a write, measured 2026-12-06, docs/conflicts.md). So a
replica whose keys changed :data:`BUSY_CHANGES` times or more since its previous
turn skips this one, at most :data:`DEFER_ROUNDS_MAX` turns in a row: a write
that missed a replica is still found within ``DEFER_ROUNDS_MAX + 1`` intervals
under any load, and at once when the writes stop. Riak's active anti-entropy
throttles its exchanges by the vnodes' message queues for the same reason.
"""

from __future__ import annotations

from typing import Any

from .anti_entropy import AeFetch, AeNodes, AeProbe, AeValues, AntiEntropySession, answer, pushed_pairs
from .leaderless import LeaderlessReplica

__all__ = ["SyncingLeaderlessReplica", "BUSY_CHANGES", "DEFER_ROUNDS_MAX"]

#: Key changes since its previous turn from which a replica skips its turn (see the module docstring).
BUSY_CHANGES = 1_000
#: Turns a busy replica may skip in a row before it runs a session whatever its load.
DEFER_ROUNDS_MAX = 8


class SyncingLeaderlessReplica(LeaderlessReplica):
    """A :class:`~.leaderless.LeaderlessReplica` that also runs anti-entropy (see the module docstring)."""

    def __init__(self, node_id: str, **options: Any):
        self._session: AntiEntropySession | None = None
        self._session_tick = 0
        self._turn = 0
        self._busy = 0  # key changes since the previous turn
        self._deferred = 0  # turns skipped in a row
        self._agreed: dict[str, bytes] = {}  # peer -> this replica's root when a session found no difference
        self._session_root = b""
        super().__init__(node_id, **options)
        self.counters["anti_entropy_deferred"] = 0
        self.counters["anti_entropy_unchanged"] = 0

    def _changed(self, key: bytes, state: Any) -> None:
        super()._changed(key, state)
        self._busy += 1

    def _changed_new(self, keys: tuple | list, encoded: list, hashes: tuple[list, list]) -> None:
        super()._changed_new(keys, encoded, hashes)
        self._busy += len(keys)

    # --- sessions --------------------------------------------------------------------------------

    def _lookup(self, keys) -> list:
        raw = self.versions.data.raw
        return [raw(k) for k in keys]

    def on_other_tick(self) -> None:
        """Start the next session in turn, or abandon one that went quiet."""
        if self._session is not None:
            if self.ticks - self._session_tick > 4 * self.anti_entropy_ticks:
                self._session = None  # the peer crashed, or the network cut it: try another later
            return
        if self.ticks % self.anti_entropy_ticks:
            return
        peers = [p for p in self.members if p != self.node_id and p not in self.suspected]
        if not peers:
            return
        if self._busy >= BUSY_CHANGES and self._deferred < DEFER_ROUNDS_MAX:
            self._deferred += 1  # writes in flight: replication is about to bring what a session would find
            self.counters["anti_entropy_deferred"] += 1
            self._busy = 0
            return
        self._deferred = self._busy = 0
        peer = peers[self._turn % len(peers)]
        self._turn += 1
        tree = self.tree_for(peer)
        root = tree.root()
        if self._agreed.get(peer) == root:
            # Nothing changed here since a session with this peer found no difference: if the peer
            # changed since, its own turn finds it (its root is not the one it agreed on).
            self.counters["anti_entropy_unchanged"] += 1
            return
        session = AntiEntropySession(tree.snapshot(), peer=peer, session_id=self._id(), lookup=self._lookup)
        self._session, self._session_tick, self._session_root = session, self.ticks, root
        for message in session.start():
            self.send(peer, message)

    def rehash(self, key: bytes) -> None:
        """Set ``key``'s Merkle entries to what its stored bytes hash to. Called for a key an exchange
        found different that merged to no change: then the trees differed, not the data (a tree
        entry a peer's unchecked hash put there, :meth:`~.versioned_replica.VersionedReplica.vouched`),
        and this puts the tree right, so that the next session does not find the key again."""
        raw = self.versions.data.raw(key)
        self.tree.update(key, raw)
        if not self._shares_all() and self._pair_trees is not None:
            self._index(key, raw)

    def on_other_message(self, src: str, payload: Any) -> None:
        """Anti-entropy traffic: answer a peer's session, or advance this replica's."""
        if isinstance(payload, (AeProbe, AeFetch)):
            if src not in self.members or src == self.node_id:
                return
            self.send(src, answer(self.tree_for(src), payload, self._lookup))
            if isinstance(payload, AeFetch):
                for key, value in pushed_pairs(payload):
                    if self.merge_encoded(key, value):
                        self.counters["anti_entropy_keys"] += 1
                    else:
                        self.rehash(key)
            return
        if isinstance(payload, (AeNodes, AeValues)):
            session = self._session
            if session is None or src != session.peer or payload.sid != session.session_id:
                return  # a reply to a session given up, or a duplicate
            self._session_tick = self.ticks
            for message in session.on_message(payload):
                self.send(src, message)
            if session.done:
                self._session = None
                if session.verified and not session.differing_keys:
                    self._agreed[session.peer] = self._session_root
                else:
                    self._agreed.pop(session.peer, None)
                for key, value in session.received:
                    if self.merge_encoded(key, value):
                        self.counters["anti_entropy_keys"] += 1
                    else:
                        self.rehash(key)
                self.counters["anti_entropy_rounds"] += 1
                self.counters["anti_entropy_bytes"] += session.bytes_sent + session.bytes_received
            return
        super().on_other_message(src, payload)
