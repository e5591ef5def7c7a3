"""Multi-leader replication: every replica leads for its region and replicates asynchronously (DDIA 5.4).

Theory of operation
-------------------
Each replica stands for a region (a datacenter) and accepts writes of any key on
its own: it stamps the write (:meth:`~.versions.KeyVersions.put`), acknowledges
it once persisted, and appends an :class:`MLEntry` to its *outgoing log*. Entries
are numbered per origin, ``(origin, seq)``, and each replica tracks ``applied``,
the highest contiguous ``seq`` it has applied from every origin: a version vector
over the leaders, the state of Bayou's anti-entropy and of MySQL's GTID sets.

Topologies (DDIA fig. 5-8) decide who sends what to whom (:func:`routes`):

============  ==================================================================
all-to-all    every leader sends its own writes to every other leader
circular      every leader sends everything it has applied to the next one in the
              ring, except what originated there
star          the hub sends everything to every leaf; a leaf sends its own to the hub
============  ==================================================================

Loop prevention uses the origin ids and the versions already seen: an entry is
never sent to its origin, a receiver ignores an entry it has applied
(``seq <= applied[origin]``), and a sender sends a peer only what the peer's
acknowledged ``applied`` vector lacks. Acknowledgements carry that vector, so a
lost or duplicated message only delays: after ``retry_ticks`` without progress
the sender resends from the peer's last acknowledgement.

Causality (DDIA fig. 5-9): with several paths, a write can overtake the write it
depends on (leader 3's update of a row reaches leader 2 before leader 1's insert
of it). Each entry carries ``deps``, the origin's ``applied`` vector when the
write was made (everything the writer could have seen), and a receiver applies
an entry only once its own ``applied`` covers those deps; until then it waits in
``pending``. Version vectors per key already order the writes of one key; the
deps carry the order across keys, so a reader never sees a comment before the
post it answers (causal consistency, as in COPS). ``causal=False`` is the naive
design that applies on arrival; the replica then counts the entries it applied
before one of their causes (``causality_violations``), which the tests show is
not zero under delays between regions, and is always zero with ``causal=True``.

Each entry carries the key's whole state after the write (or, for a CRDT key, the
operation's delta); a receiver merges it (:meth:`~.versions.KeyVersions.merge`),
so applying an entry twice or merging states in any order converges.

Persistence: every applied entry is persisted before it is acknowledged or
forwarded; the key states are rebuilt by merging the entries again, and a
compacted log (every ``snapshot_changes`` entries) keeps the key states, the
``applied`` vector and the entries some peer has not acknowledged yet.
"""

from __future__ import annotations

from typing import Any

from ..clocks import VectorClock
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError, UnknownRegionError
from .versioned_records import V_DELETE, V_PUT, VRead, VReadResult, VWrite, VWriteAck
from .versioned_replica import VersionedReplica
from .versions import decode_context

__all__ = ["TOPOLOGIES", "routes", "MLEntry", "MLReplicate", "MLAck", "MultiLeaderReplica", "build"]

#: How the leaders send each other their writes (DDIA fig. 5-8).
TOPOLOGIES = ("all-to-all", "circular", "star")
_OWN, _ALL = "own", "all"


def routes(topology: str, members: tuple, hub: str | None = None) -> dict[str, dict[str, str]]:
    """For each leader, the peers it sends to and what: ``"own"`` (its own writes) or ``"all"`` (everything
    it has applied but what originated at that peer)."""
    members = tuple(members)
    if len(set(members)) != len(members) or not members:
        raise ConfigError(f"a multi-leader topology needs distinct leaders, got {members}")
    if topology == "all-to-all":
        return {m: {p: _OWN for p in members if p != m} for m in members}
    if topology == "circular":
        if len(members) < 2:
            return {m: {} for m in members}
        return {m: {members[(i + 1) % len(members)]: _ALL} for i, m in enumerate(members)}
    if topology == "star":
        hub = hub or members[0]
        if hub not in members:
            raise UnknownRegionError(hub, members)
        return {m: ({p: _ALL for p in members if p != hub} if m == hub else {hub: _OWN}) for m in members}
    raise ConfigError(f"unknown multi-leader topology {topology!r}; use one of {TOPOLOGIES}")


@record("repl.ml_entry", version=1, fields_checked=True)
class MLEntry:
    """Write ``seq`` of leader ``origin``: ``key``'s encoded state after it (a CRDT key: the delta), the
    origin's ``applied`` vector when it was made (``deps``, ``((origin, seq), ...)``) and its hybrid
    timestamp."""

    origin: str
    seq: int
    key: bytes
    state: bytes
    deps: tuple = ()
    wall_ns: int = 0
    logical: int = 0

    def __post_init__(self):
        if not isinstance(self.origin, str) or type(self.seq) is not int or self.seq < 1:
            raise InvalidArgumentError("an entry names its origin (str) and seq (int >= 1)")
        if not isinstance(self.key, bytes) or not isinstance(self.state, bytes):
            raise InvalidArgumentError("an entry's key and state are bytes")
        if type(self.wall_ns) is not int or type(self.logical) is not int or not 0 <= self.wall_ns < 1 << 63 \
                or not 0 <= self.logical < 1 << 32:
            raise InvalidArgumentError("an entry's hybrid timestamp is two ints (wall_ns, logical) >= 0")
        if not isinstance(self.deps, tuple) or not all(
                isinstance(d, tuple) and len(d) == 2 and isinstance(d[0], str) and type(d[1]) is int
                for d in self.deps):
            raise InvalidArgumentError("an entry's deps are ((origin, seq), ...)")


@record("repl.ml_replicate", version=1)
class MLReplicate:
    """Entries for the receiver, in per-origin order."""

    entries: tuple

    def __post_init__(self):
        if not isinstance(self.entries, tuple) or not all(isinstance(e, MLEntry) for e in self.entries):
            raise InvalidArgumentError("a replicate message carries MLEntry records")


@record("repl.ml_ack", version=1)
class MLAck:
    """The receiver's ``applied`` vector after the entries: ``((origin, seq), ...)``."""

    applied: tuple


class MultiLeaderReplica(VersionedReplica):
    """One leader of a multi-leader store (see the module docstring)."""

    persist_changes = False  # the entries are the log: key states are rebuilt by merging them again

    def __init__(self, node_id: str, *, recovered=(), topology: str = "all-to-all", hub: str | None = None,
                 causal: bool = True, batch_max: int = 512, retry_ticks: int = 20, **options: Any):
        members = tuple(options.get("members", ()))
        self.routes = routes(topology, members, hub).get(node_id, {})
        self.topology = topology
        self.causal = bool(causal)
        self.batch_max = int(batch_max)
        self.retry_ticks = int(retry_ticks)
        self.applied: dict[str, int] = {m: 0 for m in members}
        self.log: dict[str, dict[int, MLEntry]] = {m: {} for m in members}
        self.pending: dict[tuple[str, int], MLEntry] = {}
        self.acked: dict[str, dict[str, int]] = {p: {m: 0 for m in members} for p in self.routes}
        self.sent: dict[str, dict[str, int]] = {p: {m: 0 for m in members} for p in self.routes}
        self.progress_tick: dict[str, int] = {p: 0 for p in self.routes}
        self.causality_violations = 0
        self.entries_applied = 0
        self.duplicates = 0
        super().__init__(node_id, recovered=recovered, **options)

    # --- client requests -----------------------------------------------------------------------

    def on_request(self, request_id: int, payload: Any) -> None:
        """Writes are accepted here and replicated later; reads answer from this replica's versions."""
        try:
            if isinstance(payload, VWrite):
                self.reply(request_id, self._write(payload))
            elif isinstance(payload, VRead):
                self.reply(request_id, VReadResult(tuple(self.item(k, self.versions.data.get(k))
                                                         for k in payload.keys)))
            else:
                raise InvalidArgumentError(f"a multi-leader replica takes VWrite and VRead, got "
                                           f"{type(payload).__name__}")
        except Exception as e:  # noqa: BLE001 - refused as a typed record; the replica's state is unchanged
            self.reply(request_id, error=e)

    def _write(self, req: VWrite) -> VWriteAck:
        contexts = [decode_context(self.store, ctx) if code != 2 else None for code, _, _, ctx in req.items]
        items = []
        for (code, key, payload, _), ctx in zip(req.items, contexts):
            ts = self.stamp()
            if code in (V_PUT, V_DELETE):
                state = self.versions.put(key, payload if code == V_PUT else None, ctx or VectorClock(), ts)
                shipped = state
            else:
                op, args = payload
                state, shipped = self.versions.update(key, op, args, ts)
            self._originate(key, self.encoded(key, shipped), ts)
            items.append(self.item(key, state) if req.body else None)
        return VWriteAck(tuple(items))

    def _originate(self, key: bytes, state: bytes, ts: tuple[int, int]) -> None:
        seq = self.applied[self.node_id] + 1
        deps = tuple((o, s) for o, s in self.applied.items() if o != self.node_id and s)
        entry = MLEntry(self.node_id, seq, key, state, deps, ts[0], ts[1])
        self.applied[self.node_id] = seq
        self._keep(entry)
        self.persist(entry)

    # --- replication ---------------------------------------------------------------------------

    def on_message(self, src: str, payload: Any) -> None:
        """Entries from an upstream leader, or a downstream leader's acknowledgement."""
        if isinstance(payload, MLReplicate):
            for entry in payload.entries:
                self._receive(entry)
            self._drain()
            self.send(src, MLAck(tuple(self.applied.items())))
        elif isinstance(payload, MLAck):
            self._acked(src, payload.applied)
        else:
            raise InvalidArgumentError(f"{self.node_id}: unexpected {type(payload).__name__} from {src!r}")

    def _receive(self, entry: MLEntry) -> None:
        if entry.origin not in self.applied:
            return  # not a member of this store (a message from another group): ignored
        if entry.seq <= self.applied[entry.origin] or (entry.origin, entry.seq) in self.pending:
            self.duplicates += 1
            return
        self.pending[(entry.origin, entry.seq)] = entry

    def _ready(self, entry: MLEntry) -> bool:
        return all(self.applied.get(o, 0) >= s for o, s in entry.deps)

    def _drain(self) -> None:
        """Apply every pending entry whose predecessor from its origin is applied (and, causal, whose deps are)."""
        progress = True
        while progress and self.pending:
            progress = False
            for origin in self.members:
                entry = self.pending.get((origin, self.applied[origin] + 1))
                while entry is not None:
                    met = self._ready(entry)
                    if self.causal and not met:
                        break
                    if not met:
                        self.causality_violations += 1
                    del self.pending[(origin, entry.seq)]
                    self._apply(entry)
                    progress = True
                    entry = self.pending.get((origin, self.applied[origin] + 1))

    def _apply(self, entry: MLEntry) -> None:
        self._integrate(entry)
        self.entries_applied += 1
        self.persist(entry)

    def _integrate(self, entry: MLEntry) -> None:
        """Merge ``entry`` into the versions and the applied vector, and keep it for the peers (what a
        delivery and the replay of a persisted entry share)."""
        self.observe(entry.wall_ns, entry.logical, entry.origin)
        self.merge_encoded(entry.key, entry.state)
        self.applied[entry.origin] = entry.seq
        self._keep(entry)

    def _keep(self, entry: MLEntry) -> None:
        """Retain ``entry`` for the peers it must still reach; compact the log now and then."""
        if any(self._carries(p, entry.origin) for p in self.routes):
            self.log[entry.origin][entry.seq] = entry
        if not self._recovering:
            self.count_change()

    def _carries(self, peer: str, origin: str) -> bool:
        """Whether this leader sends ``origin``'s entries to ``peer``."""
        mode = self.routes.get(peer)
        return mode is not None and origin != peer and (mode == _ALL or origin == self.node_id)

    def _acked(self, peer: str, applied: tuple) -> None:
        if peer not in self.acked:
            return
        mine = self.acked[peer]
        moved = False
        for origin, seq in applied:
            if origin in mine and type(seq) is int and seq > mine[origin]:
                mine[origin] = seq
                moved = True
        if moved:
            self.progress_tick[peer] = self.ticks
            self._forget_acked()

    def _forget_acked(self) -> None:
        for origin, entries in self.log.items():
            peers = [p for p in self.routes if self._carries(p, origin)]
            floor = min((self.acked[p][origin] for p in peers), default=self.applied[origin])
            for seq in [s for s in entries if s <= floor]:
                del entries[seq]

    def on_tick(self) -> None:
        """Send each downstream peer what it lacks (resending after ``retry_ticks`` without progress);
        a round of the tombstone sweep."""
        for peer in self.routes:
            self._pump(peer)
        self.collect_tombstones()

    def _pump(self, peer: str) -> None:
        sent, acked = self.sent[peer], self.acked[peer]
        if self.ticks - self.progress_tick[peer] >= self.retry_ticks:
            sent.update(acked)  # nothing acknowledged for a while: the message or its ack was lost
            self.progress_tick[peer] = self.ticks
        batch: list[MLEntry] = []
        for origin in self.members:
            if not self._carries(peer, origin):
                continue
            start = max(sent[origin], acked[origin]) + 1
            entries = self.log[origin]
            for seq in range(start, self.applied[origin] + 1):
                entry = entries.get(seq)
                if entry is None:
                    break  # forgotten after every peer acknowledged it (or never kept)
                batch.append(entry)
                sent[origin] = seq
                if len(batch) >= self.batch_max:
                    break
            if len(batch) >= self.batch_max:
                break
        if batch:
            self.send(peer, MLReplicate(tuple(batch)))

    # --- persistence -------------------------------------------------------------------------

    def recover_record(self, rec: Any) -> None:
        """An entry persisted when it was made or applied: merge it again."""
        if not isinstance(rec, MLEntry):
            super().recover_record(rec)
        if rec.origin not in self.applied:
            return
        if rec.seq > self.applied[rec.origin]:
            self._integrate(rec)
        else:  # kept by a compacted log for a peer that had not acknowledged it: keep it again
            self._keep(rec)

    def snapshot_meta(self) -> dict:
        """The ``applied`` vector."""
        return {"applied": dict(self.applied)}

    def recover_meta(self, meta: dict) -> None:
        """Restore the ``applied`` vector of a compacted log."""
        for origin, seq in dict(meta.get("applied", {})).items():
            if origin in self.applied:
                self.applied[origin] = int(seq)

    def snapshot_tail(self) -> tuple:
        """The entries some peer has not acknowledged."""
        return tuple(e for origin in self.members for _, e in sorted(self.log[origin].items()))

    def status(self) -> dict:
        """The leader's figures: applied vector, pending entries, causality violations, per-peer lag."""
        lag = {p: sum(max(0, self.applied[o] - self.acked[p][o]) for o in self.members if self._carries(p, o))
               for p in self.routes}
        return {**super().status(), "role": "leader", "topology": self.topology, "causal": self.causal,
                "applied": dict(self.applied), "pending": len(self.pending), "lag_entries": lag,
                "causality_violations": self.causality_violations, "entries_applied": self.entries_applied,
                "duplicates": self.duplicates, "retained": sum(len(v) for v in self.log.values())}


def build(node_id: str, *, recovered=(), tick_s: float = 0.01, resolver_modules: tuple = (), engine: str = "map",
          data_url: str = "", engine_options: dict | None = None, sync: bool = False,
          **options: Any) -> MultiLeaderReplica:
    """The :class:`~ddia_ray.runtime.core.CoreSpec` factory of a multi-leader replica: ``resolver_modules``
    are imported first (they register the store's resolvers), then the versions' engine is opened
    (:func:`~.version_store.open_versions`)."""
    from .procedures import load
    from .version_store import open_versions

    load(resolver_modules)
    versions = open_versions(engine, data_url, node_id, options=engine_options, sync=sync)
    try:
        return MultiLeaderReplica(node_id, recovered=recovered, tick_s=tick_s, versions_map=versions, **options)
    except BaseException:
        close = getattr(versions, "close", None)
        if close is not None:
            close()
        raise
