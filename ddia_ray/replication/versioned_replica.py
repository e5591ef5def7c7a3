"""What a multi-leader and a leaderless replica share: versions, a hybrid clock, a Merkle tree, persistence.

Theory of operation
-------------------
Both protocols let several replicas accept writes of one key, so a replica keeps
versions (:class:`~.versions.KeyVersions`) rather than applying one ordered log.
This base class is the part of such a replica that does not depend on how writes
travel:

* the versions, with the store's conflict policies;
* a hybrid logical clock (Kulkarni et al. 2014) that stamps each write for
  last-writer-wins. Its physical part is the wall time the driver supplies
  (:attr:`~ddia_ray.runtime.core.BaseCore.wall_ns`) plus ``clock_skew_s``, an
  offset a simulation or a demonstration sets to show what skewed clocks do to
  LWW (DDIA 8.3 "Timestamps for ordering events"). A replica also advances its
  clock on every stamped version it receives, so a write that saw another is
  stamped after it whatever the clocks say;
* a Merkle tree over the encoded versions (:mod:`.merkle`), kept up to date on
  every change, for anti-entropy and the convergence check;
* tombstone collection: a key left with tombstones only is removed once they are
  older than ``tombstone_grace_s`` (:mod:`.tombstones`), by a sweep on the tick;
* persistence: each change is persisted before the replica acknowledges it or
  tells anyone, as the core contract requires; once the log holds
  ``snapshot_changes`` changes and at least as many as there are keys, it is
  rewritten as the latest state of each key (a log compaction in the sense of
  DDIA 3, "Compaction"), in records of :data:`COMPACTED_KEYS_PER_RECORD` keys.
  The rewrite is *derived* (:class:`~ddia_ray.runtime.core.Rewrite`): the shell
  writes it in the background while the replica goes on, as Redis's BGREWRITEAOF.

Reads of a replica's own versions (:class:`~.versioned_records.VRead` with no
quorum) are answered here; subclasses add how writes and repairs travel.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..clocks import DVVSet, HLCTimestamp, HybridClock
from ..codec import prechecked, record, record_fields
from ..error_record import ErrorRecord
from ..errors import ClockDriftError, ConfigError, InvalidArgumentError
from ..runtime.core import BaseCore, Rewrite
from .merkle import MerkleTree, hashes_of
from .tombstones import DEFAULT_GRACE_S, TombstoneSweep
from .versioned_records import VItem
from .state_format import current, decode_state, encode_state, new_states
from .versions import ConflictPolicy, KeyVersions, Policies

__all__ = ["VersionedReplica", "KeyChange", "KeyChanges", "KeyRemoved", "LwwLoss", "VersionsSnapshot",
           "DEFAULT_MAX_DRIFT_S"]

#: A peer's Merkle hashes of a batch of new keys are checked on every this-many-th key (and the first
#: and last): :meth:`VersionedReplica.vouched`. Hashing every key took about 0.8 us of a receiver's
#: 2-3 us per key (bench/conflicts.py profiles, docs/conflicts.md).
HASH_CHECK_EVERY = 64

#: Ticks between two rounds of the tombstone sweep (and updates of the grace horizon).
TOMBSTONE_ROUND_TICKS = 10

#: How far ahead of a replica's clock a received timestamp may be before the clock refuses to follow it.
DEFAULT_MAX_DRIFT_S = 300.0

#: Keys per record of a compacted log. A record per key cost a record object, an encoding and a
#: frame per key: compacting 300,000 keys held the replica's step loop for over a second (measured
#: on this machine, docs/conflicts.md); in records of this many keys the same log is written in
#: about a tenth of that, and a record stays a few hundred kilobytes.
COMPACTED_KEYS_PER_RECORD = 8192


@record("repl.key_change", version=1, fields_checked=True)
class KeyChange:
    """A persisted change: ``key``'s encoded state is now ``state``."""

    key: bytes
    state: bytes

    def __post_init__(self):
        if not isinstance(self.key, bytes) or not isinstance(self.state, bytes):
            raise InvalidArgumentError("a key change holds bytes")


@record("repl.key_changes", version=1, fields_checked=True)
class KeyChanges:
    """Persisted changes, in order: ``keys[i]``'s encoded state is now ``states[i]`` (the changes of
    one step of the replica, one record: a record per key cost a frame and an encoding each)."""

    keys: tuple
    states: tuple

    def __post_init__(self):
        keys, states = self.keys, self.states
        if type(keys) is not tuple or type(states) is not tuple or len(keys) != len(states):
            raise InvalidArgumentError("key changes hold two tuples of equal length")
        if not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, states)):
            raise InvalidArgumentError("key changes hold bytes keys and bytes states")


_BYTES = frozenset({bytes})


@record("repl.key_removed", version=1, fields_checked=True)
class KeyRemoved:
    """A persisted removal: ``key``'s tombstones were collected (:mod:`.tombstones`)."""

    key: bytes

    def __post_init__(self):
        if not isinstance(self.key, bytes):
            raise InvalidArgumentError("a key removal holds a bytes key")


@record("repl.lww_loss", version=1)
class LwwLoss:
    """A persisted loss: last-writer-wins dropped version ``(node, counter)`` of ``key`` at this replica."""

    key: bytes
    node: str
    counter: int


@record("repl.versions_snapshot", version=1)
class VersionsSnapshot:
    """A compacted log's header: the protocol's own metadata (``meta``), and the HLC reading to start from."""

    meta: dict
    wall_ns: int = 0
    logical: int = 0


class VersionedReplica(BaseCore):
    """The shared base (see the module docstring). ``store``: the store's name (causal contexts carry it);
    ``members``: every replica; ``regions``: replica -> region label; ``resolution``: the store's
    :class:`~.versions.ConflictPolicy` records; ``clock_skew_s``: this replica's clock offset."""

    #: Subclasses that keep their own log of changes set this False and persist their records themselves.
    persist_changes = True

    def __init__(self, node_id: str, *, recovered=(), tick_s: float = 0.01, store: str = "", members: tuple = (),
                 regions: Mapping[str, str] | None = None, resolution: tuple = (), clock_skew_s: float = 0.0,
                 max_drift_s: float = DEFAULT_MAX_DRIFT_S, snapshot_changes: int = 20_000,
                 merkle_shape: dict | None = None, versions_map: Any = None,
                 tombstone_grace_s: float = DEFAULT_GRACE_S, tombstone_sweep_keys: int = 256,
                 tombstone_pass_s: float = 60.0, **unknown: Any):
        super().__init__(node_id, tick_s=tick_s)
        if unknown:
            raise ConfigError(f"unknown replica options {sorted(unknown)}")
        if node_id not in members:
            raise ConfigError(f"{node_id!r} is not one of the members {members}")
        self.store = store
        self.members = tuple(members)
        self.regions = dict(regions or {m: m for m in self.members})
        self.region = self.regions.get(node_id, node_id)
        policies = tuple(p if isinstance(p, ConflictPolicy) else ConflictPolicy(**p) for p in resolution)
        if versions_map is None:
            from .version_store import MemoryVersions  # the "map" engine's
            versions_map = MemoryVersions()
        self.versions = KeyVersions(node_id, store, Policies(policies), on_change=self._changed, data=versions_map)
        self.versions.on_lost = self._lost
        # A storage engine keeps the states itself: the log then holds only the protocol's own records.
        self.durable_versions = bool(getattr(versions_map, "durable", False))
        if self.durable_versions:
            self.persist_changes = False
        self.skew_ns = int(float(clock_skew_s) * 1e9)
        self.hlc = HybridClock(node_id, physical_clock=self._physical_ns, max_drift_ns=int(max_drift_s * 1e9))
        self.merkle_shape = dict(merkle_shape or {})
        self.tree = MerkleTree(**self.merkle_shape)
        if getattr(versions_map, "durable", False):
            stale = []
            for key, raw in versions_map.raw_items():  # one scan of the engine rebuilds the tree
                if raw[:1] != b"\x93" and record_fields(raw, DVVSet) is not None:
                    stale.append(key)  # format 1: written again below, hashed as it is encoded now
                else:
                    self.tree.update(key, raw)
            for key in stale:
                versions_map[key] = versions_map.peek(key)
                self.tree.update(key, versions_map.raw(key))
        self.sweep = TombstoneSweep(grace_s=tombstone_grace_s, keys_per_round=tombstone_sweep_keys,
                                    pass_s=tombstone_pass_s)
        self.snapshot_changes = int(snapshot_changes)
        self._changes = 0
        self._recovering = False
        self._unsaved_keys: list[bytes] = []  # key changes of this step not yet queued (see persist())
        self._unsaved_states: list[bytes] = []
        self.clock_refusals = 0
        self.hash_mismatches = 0  # batches whose peer-computed Merkle hashes failed the check (vouched)
        self._recover(recovered)

    # --- time ---------------------------------------------------------------------------------

    def _physical_ns(self) -> int:
        return max(0, self.wall_ns + self.skew_ns)

    def stamp(self) -> tuple[int, int]:
        """A new hybrid timestamp ``(wall_ns, logical)`` for a write this replica coordinates."""
        return self.hlc.now_pair()

    def observe(self, wall_ns: int, logical: int, node: str) -> None:
        """Advance the clock past a timestamp seen in a message (HLC receive), unless it is too far ahead:
        then the clock stays (DDIA 8.3: one bad clock must not drag every other forward) and it is counted."""
        if wall_ns <= 0:
            return
        try:
            self.hlc.update(HLCTimestamp(wall_ns, logical, node or self.node_id))
        except ClockDriftError:
            self.clock_refusals += 1

    # --- changes and persistence -----------------------------------------------------------------

    def encoded(self, key: bytes, state: Any) -> bytes:
        """``state`` encoded: the bytes the last change of ``key`` encoded when it is that state (a write's
        state is encoded once, for the Merkle tree, the log and the replicas alike)."""
        return self.versions.data.encoded_as(key, state) or encode_state(state)

    def _changed(self, key: bytes, state: Any) -> None:
        # The mapping has just encoded this state to store it (KeyVersions stores, then tells us).
        encoded = self.versions.data.encoded_as(key, state)
        if encoded is None:
            encoded = encode_state(state)
        self.tree.update(key, encoded)
        if self._recovering:
            return
        if self.persist_changes:
            # Held until the step ends or another record is persisted (persist() flushes them first,
            # so the log keeps the order of the changes): one record for the step's changes.
            self._unsaved_keys.append(key)
            self._unsaved_states.append(encoded)
            self.count_change()

    def store_new(self, keys: tuple | list, values: tuple | list, node: str, wall_ns: int, logical: int,
                  hashes: tuple[list, list] | None = None) -> tuple[list, tuple[list, list]]:
        """Store the first write of each of ``keys`` (which :meth:`~.versions.KeyVersions.new_keys` found
        new here): ``values[i]`` coordinated by ``node`` and stamped ``(wall_ns, logical + i)``. The same
        states, bytes, tree and log as a :meth:`~.versions.KeyVersions.put` or a merge of each, in
        columns (:func:`~.state_format.new_states`). ``hashes``: the states' Merkle hashes as the
        coordinator computed them (:meth:`vouched` checked them). Returns the encoded states and
        their hashes ``(key hashes, entry hashes)``."""
        encoded = new_states(node, values, wall_ns, logical)
        if hashes is not None and not self.vouched(keys, encoded, hashes):
            hashes = None
        return encoded, self.keep_new(keys, encoded, hashes)

    def keep_new(self, keys: tuple | list, encoded: list, hashes: tuple[list, list] | None = None) -> tuple[list, list]:
        """Keep ``encoded[i]``, the state of a first write alone, under each of ``keys`` (new here), and
        tell the tree and the log; ``hashes`` their Merkle hashes if known (else hashed here), returned."""
        if hashes is None:
            hashes = hashes_of(keys, encoded)
        self.versions.store_new(keys, encoded)
        self._changed_new(keys, encoded, hashes)
        return hashes

    def vouched(self, keys: tuple | list, encoded: list, hashes: tuple[list, list]) -> bool:
        """Whether a peer's Merkle hashes of a batch of states hold, checked on a sample: the first, the
        last and every :data:`HASH_CHECK_EVERY`-th key (:func:`~.merkle.hashes_of` of those). A batch
        that fails is hashed here in full and counted (``hash_mismatches``): a peer that hashes
        otherwise (a bug, another version) is caught on its first batch, and its trees could only
        make anti-entropy send keys that merge to no change, never change what a replica holds."""
        khs, ehs = hashes
        if len(khs) != len(keys) or len(ehs) != len(keys):
            self.hash_mismatches += 1
            return False
        sample = sorted({0, len(keys) - 1, *range(0, len(keys), HASH_CHECK_EVERY)})
        want_k, want_e = hashes_of([keys[i] for i in sample], [encoded[i] for i in sample])
        if want_k != [khs[i] for i in sample] or want_e != [ehs[i] for i in sample]:
            self.hash_mismatches += 1
            return False
        return True

    def _changed_new(self, keys: tuple | list, encoded: list, hashes: tuple[list, list]) -> None:
        """:meth:`_changed` for a batch of new keys (:meth:`store_new`), with their Merkle hashes."""
        self.tree.update_many(keys, encoded, hashes)
        if self._recovering:
            return
        if self.persist_changes:
            self._unsaved_keys.extend(keys)
            self._unsaved_states.extend(encoded)
            self.count_change(len(keys))

    def persist(self, rec: Any) -> None:
        """Queue ``rec`` for durable storage, after the key changes held so far."""
        if self._unsaved_keys:
            self._save_changes()
        super().persist(rec)

    def ready(self) -> Any:
        """What to persist, send and answer now: the step's key changes first, as one record."""
        if self._unsaved_keys:
            self._save_changes()
        return super().ready()

    def _save_changes(self) -> None:
        keys, states = tuple(self._unsaved_keys), tuple(self._unsaved_states)
        self._unsaved_keys.clear()
        self._unsaved_states.clear()
        super().persist(KeyChange(keys[0], states[0]) if len(keys) == 1 else prechecked(KeyChanges, keys, states))

    def collect_tombstones(self) -> None:
        """One round of the tombstone sweep (:mod:`.tombstones`), every :data:`TOMBSTONE_ROUND_TICKS`
        ticks; subclasses call it from ``on_tick``."""
        sweep = self.sweep
        if not sweep.enabled or self.ticks % TOMBSTONE_ROUND_TICKS:
            return
        now = self._physical_ns()
        self.versions.tombstone_horizon_ns = sweep.horizon(now)
        for key in sweep.next_keys(self.versions.data, now):
            if self.versions.collect(key):
                self._removed(key)

    def _removed(self, key: bytes) -> None:
        """``key`` is gone (collected, or a persisted removal replayed): the trees forget it, the log records it."""
        self.tree.update(key, None)
        if not self._recovering:
            self.persist(KeyRemoved(key))
            self.count_change()

    def _lost(self, ident: tuple) -> None:
        # Persisted, so that the count survives a restart: replaying the states cannot find the loss again.
        if not self._recovering:
            self.persist(LwwLoss(*ident))

    def count_change(self, n: int = 1) -> None:
        """``n`` more changes in the log; compact it (after them) once it holds ``snapshot_changes``
        changes and at least as many as there are keys: a compaction writes every key, so its cost per
        change stays constant however large the store grows (Bitcask merges on the same rule)."""
        self._changes += n
        if self._changes >= self.snapshot_changes and (self.durable_versions
                                                       or self._changes >= len(self.versions.data)):
            self._changes = 0
            # Derived: the log already holds every change the compacted records sum up, so the
            # shell may write them in the background while the log goes on taking changes.
            self.persist(Rewrite(self._compacted(), derived=True))

    def _compacted(self) -> tuple:
        """The log as one record per key, headed by the protocol's metadata."""
        last = self.hlc.last
        head = VersionsSnapshot({**self.snapshot_meta(), "lww_lost": [list(x) for x in self.versions.lww_lost],
                                 "lww_lost_untracked": self.versions.lww_lost_untracked},
                                last.wall_ns, last.logical)
        if self.durable_versions:  # the engine holds every key's state
            return (head, *self.snapshot_tail())
        keys, states = self.versions.data.raw_columns()  # bytes and bytes: the map holds nothing else
        step = COMPACTED_KEYS_PER_RECORD
        parts = (prechecked(KeyChanges, keys[i:i + step], states[i:i + step]) for i in range(0, len(keys), step))
        return (head, *parts, *self.snapshot_tail())

    def snapshot_meta(self) -> dict:
        """The protocol's metadata kept in a compacted log (subclasses add theirs)."""
        return {}

    def snapshot_tail(self) -> tuple:
        """Records kept after the key states in a compacted log (subclasses: their retained log)."""
        return ()

    def _recover(self, recovered) -> None:
        self._recovering = True
        try:
            for rec in recovered:
                if isinstance(rec, KeyChange):
                    self._restore(rec.key, rec.state)
                elif isinstance(rec, KeyChanges):
                    for key, data in zip(rec.keys, rec.states):
                        self._restore(key, data)
                elif isinstance(rec, KeyRemoved):
                    self.versions.data.pop(rec.key, None)
                    self._removed(rec.key)
                elif isinstance(rec, LwwLoss):
                    self.versions.remember_lost((rec.key, rec.node, rec.counter))
                elif isinstance(rec, VersionsSnapshot):
                    if not self.durable_versions:
                        self.versions.data.clear()
                        self.tree = MerkleTree(**self.merkle_shape)
                    for ident in rec.meta.get("lww_lost", ()):
                        self.versions.remember_lost(tuple(ident))
                    self.versions.lww_lost_untracked = int(rec.meta.get("lww_lost_untracked", 0))
                    self.observe(rec.wall_ns, rec.logical, self.node_id)
                    self.recover_meta(rec.meta)
                else:
                    self.recover_record(rec)
        finally:
            self._recovering = False

    def _restore(self, key: bytes, data: bytes) -> None:
        state = decode_state(data)  # checked, though the mapping keeps the bytes
        data = current(data, state)  # a change logged in an older format is kept as it is encoded now
        self.versions.data.offer(key, state, data)
        self.versions.restore(key, state)
        self.tree.update(key, data)

    def recover_meta(self, meta: dict) -> None:
        """Restore the protocol's metadata from a compacted log's header."""

    def recover_record(self, rec: Any) -> None:
        """Replay one of the protocol's own persisted records."""
        raise ConfigError(f"{type(self).__name__} cannot recover a {type(rec).__name__} record")

    # --- answers -------------------------------------------------------------------------------

    def item(self, key: bytes, state: Any, quorum=None) -> VItem:
        """The answer item for ``key`` whose merged state is ``state``."""
        a = self.versions.answer(key, state)
        error = a["error"]
        return VItem(key, a["siblings"], a["context"], a["crdt"], a["kind"],
                     ErrorRecord.of(error, self.node_id) if error is not None else None, quorum)

    def merge_encoded(self, key: bytes, data: bytes) -> bool:
        """Merge another replica's encoded state of ``key``; returns whether anything changed."""
        state = decode_state(data)
        # A merge that takes the state as it came (a key new here) stores these bytes: the sender encoded
        # that very state as this code does (or they are encoded again here: an older replica's).
        self.versions.data.offer(key, state, current(data, state))
        return self.versions.merge(key, state)

    def close(self) -> None:
        """Close the storage engine that holds the versions, if any (the shell calls it on stop)."""
        close = getattr(self.versions.data, "close", None)
        if close is not None:
            close()

    def status(self) -> dict:
        """The replica's figures: its versions' counters, its region, its Merkle root."""
        return {**super().status(), **self.versions.stats(), "region": self.region,
                "merkle_root": self.tree.root().hex(), "clock_refusals": self.clock_refusals,
                "hash_mismatches": self.hash_mismatches,
                "tombstone_passes": self.sweep.passes,
                "lww_lost": [list(x) for x in list(self.versions.lww_lost)[:10_000]]}
