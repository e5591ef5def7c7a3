"""Leaderless replication, Dynamo-style: N replicas per key, R and W quorums, sloppy quorums (DDIA 5.5).

Theory of operation
-------------------
Every replica may coordinate. A key's *preference list* is the first ``n``
distinct replicas clockwise from the key on a consistent-hash ring (the balancing
package's :class:`~ddia_ray.balancing.consistent_hash.ConsistentHashPicker`, the
same ring on every replica and client). Per request:

* a **write** is stamped by a coordinator in the key's preference list (a dotted
  version vector needs the coordinator to hold the key, so a replica outside the
  list forwards the write, as Riak does), stored there, and sent to the other
  replicas of the list; it is acknowledged once ``w`` replicas hold it, and fails
  with :class:`~ddia_ray.errors.QuorumNotReachedError` if they do not within its
  timeout (the write may still have reached some: DDIA 5.5 "Limitations of
  quorum consistency");
* a **read** asks the ``n`` replicas and answers once ``r`` have answered, with the
  merge of their versions (siblings and a causal context, or the resolved value),
  and reports the quorum it met, ``w + r > n`` included.

**Sloppy quorums and hinted handoff** (Dynamo 4.6): a replica the coordinator
suspects (it missed a deadline; it stops being suspected as soon as it is heard
from) is replaced by the next replica on the ring, which stores the write as a
*hint* for its home. The holder of hints offers them to their home every
``handoff_ticks``; the home merges them and acknowledges, and the hint is dropped.
A hint is never lost for want of the home: it stays until delivered.

**Read repair**: after a read has its ``r`` answers the coordinator waits for the
others until the deadline and sends the merged versions to every replica whose
own versions were behind (DDIA 5.5 "Read repair and anti-entropy").

**Anti-entropy**: every ``anti_entropy_ticks`` a replica compares, with the next
peer in turn, a Merkle tree over the keys both of them replicate
(:mod:`.anti_entropy`), descending only into ranges that differ, and both merge
the differing keys. Data crosses in proportion to the difference.

Conflicting writes are detected by dotted version vectors and resolved as the
store's policy says (:mod:`.versions`), exactly as under multi-leader.
"""

from __future__ import annotations

import collections
import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from ..balancing.consistent_hash import ConsistentHashPicker
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError, QuorumNotReachedError
from .versioned_records import (V_PUT, V_UPDATE, QuorumReport, VItem, VRead, VReadResult, VWrite,
                                VWriteAck, check_quorum)
from .leaderless_messages import (HintChange, LLCoordinate, LLCoordinated, LLFetch, LLFetched, LLHandoff,
                                 LLHandoffAck, LLPing, LLStore, LLStored, LLStoreNew)
from .merkle import MerkleTree
from .versioned_replica import VersionedReplica
from .state_format import decode_state, encode_state, new_states
from .versions import decode_context

__all__ = ["LeaderlessReplica", "ring_of", "build"]

_SUSPECT_PING_TICKS = 20


def ring_of(members: tuple, virtual_nodes: int = 64) -> ConsistentHashPicker:
    """The store's ring: every replica and client builds the same one from the member names."""
    ring = ConsistentHashPicker(virtual_nodes=virtual_nodes)
    for m in members:
        ring.add(m)
    return ring


@dataclass(slots=True)
class _Request:
    """A client request, or one forwarded by another replica, and its keys' answers."""

    reply_to: tuple  # ("client", request id) or ("replica", node, op id)
    write: bool
    items: list
    left: int
    answered: bool = False
    body: bool = True  # a write's acknowledgements carry the keys' versions
    settled: list = field(default_factory=list)

    def __post_init__(self):
        self.settled = [False] * len(self.items)


@dataclass(slots=True)
class _Op:
    """Keys of a request in flight at their coordinator: a read's one key, or the keys of a write batch
    that go to the same replicas (the same targets and stand-ins), which those replicas acknowledge
    with one op id. The quorum is counted per op: each of its replicas stores the whole group in one
    step, persisted before its acknowledgement, so the group reaches ``w`` replicas at once or not."""

    id: int
    req: _Request
    write: bool
    needed: int
    deadline: int
    targets: tuple
    fallbacks: tuple
    n: int
    r: int
    w: int
    indices: list = field(default_factory=list)  # the keys' places in the request
    keys: list = field(default_factory=list)
    answers: dict = field(default_factory=dict)  # node -> state (a read's) or True (a write's)
    states: list = field(default_factory=list)  # a write's states at the coordinator
    encoded: list = field(default_factory=list)  # a write's states as sent
    done: bool = False
    started: int = 0
    handed: bool = False  # its silent replicas were suspected (and, a write's, given hinted stand-ins)
    body: bool = True  # a write's acknowledgement carries the keys' versions


@dataclass(slots=True)
class _Proxy:
    """Keys of a request this replica forwarded to their coordinator: where their answers go."""

    req: _Request
    indices: list
    keys: list
    deadline: int


class LeaderlessReplica(VersionedReplica):
    """One replica of a leaderless store (see the module docstring). ``n``, ``r``, ``w``: the store's
    defaults; ``sloppy``: whether fallbacks stand in for suspected replicas; ``read_repair``;
    ``handoff_ticks``; ``anti_entropy_ticks`` (0: no anti-entropy)."""

    #: A request's deadline is a promise to a client that waits in wall time: the shell keeps this core's
    #: ticks in step with the clock, delivering those a busy loop woke too late for.
    clock_ticks = True

    def __init__(self, node_id: str, *, recovered=(), n: int = 3, r: int = 2, w: int = 2, sloppy: bool = True,
                 read_repair: bool = True, handoff_ticks: int = 20, anti_entropy_ticks: int = 0,
                 suspect_ticks: int = 30, virtual_nodes: int = 64, **options: Any):
        members = tuple(options.get("members", ()))
        check_quorum(n, r, w, len(members))
        self.n, self.r, self.w = n, r, w
        self.sloppy = bool(sloppy)
        self.read_repair = bool(read_repair)
        self.handoff_ticks = max(1, int(handoff_ticks))
        self.suspect_ticks = max(1, int(suspect_ticks))
        self.anti_entropy_ticks = int(anti_entropy_ticks)
        self.ring = ring_of(members, virtual_nodes)
        self.hints: dict[str, dict[bytes, bytes]] = {}
        self.suspected: dict[str, int] = {}
        self._ops: dict[int, _Op] = {}
        self._by_start: collections.deque[_Op] = collections.deque()  # ops in the order they started
        self._by_deadline: list[tuple[int, int]] = []  # heap of (deadline, op id)
        self._proxies: dict[int, _Proxy] = {}
        self._pair_trees: dict[str, Any] | None = None
        self._next_id = 0
        self.counters = {"read_repairs": 0, "hinted": 0, "handoffs": 0, "forwarded": 0, "quorum_failures": 0,
                         "anti_entropy_rounds": 0, "anti_entropy_keys": 0, "anti_entropy_bytes": 0}
        super().__init__(node_id, recovered=recovered, **options)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _deadline(self, timeout_s: float) -> int:
        return self.ticks + max(1, math.ceil(timeout_s / self.tick_s))

    # --- what this replica shares with each peer ------------------------------------------------------

    def _shares_all(self) -> bool:
        return self.n >= len(self.members)

    def _trees(self) -> dict:
        if self._pair_trees is None:
            self._pair_trees = {p: MerkleTree(**self.merkle_shape) for p in self.members if p != self.node_id}
            if not self._shares_all():
                for key, raw in self.versions.data.raw_items():
                    self._index(key, raw)
        return self._pair_trees

    def tree_for(self, peer: str) -> MerkleTree:
        """The Merkle tree of the keys this replica shares with ``peer`` (those whose preference list, of the
        store's ``n``, holds both): what anti-entropy compares, and what convergence means for a pair."""
        return self.tree if self._shares_all() else self._trees()[peer]

    def _index(self, key: bytes, encoded: bytes | None) -> None:
        holders = self.ring.preference_list(key, self.n)
        if self.node_id not in holders:
            return
        trees = self._trees()
        for peer in holders:
            if peer != self.node_id:
                trees[peer].update(key, encoded)

    def _changed(self, key: bytes, state: Any) -> None:
        super()._changed(key, state)
        if not self._shares_all() and self._pair_trees is not None:
            self._index(key, self.encoded(key, state))  # the bytes the base class just encoded

    def _changed_new(self, keys: tuple | list, encoded: list, hashes: tuple[list, list]) -> None:
        super()._changed_new(keys, encoded, hashes)
        if not self._shares_all() and self._pair_trees is not None:
            for key, data in zip(keys, encoded):
                self._index(key, data)

    def _removed(self, key: bytes) -> None:
        super()._removed(key)
        if not self._shares_all() and self._pair_trees is not None:
            self._index(key, None)

    # --- preference lists ------------------------------------------------------------------------

    def preference(self, key: bytes, n: int) -> tuple[tuple, tuple]:
        """``(targets, fallbacks)``: the ``n`` replicas a request for ``key`` goes to. When sloppy, a
        suspected home replica is replaced by the next unsuspected replica on the ring, listed in
        ``fallbacks`` as ``(stand-in, home)``; a suspected home is still asked when no replica is left to
        stand in for it, and always when the store is not sloppy."""
        if n >= len(self.members):
            # Every replica holds every key: the ring has nothing to choose, and no one is left to stand
            # in for a suspected home, which is asked all the same (below). Under load, acknowledgements
            # slower than suspect_ticks make suspicion common, and the ring walk per key was 12% of the
            # samples handling client requests (py-spy, bench/conflicts.py (3,1,1)).
            return self.members, ()
        strict = self.ring.preference_list(key, n)
        down = [m for m in strict if m in self.suspected]
        if not down:
            return strict, ()
        if not self.sloppy:
            return strict, ()  # a suspected home is still asked: it may be back, and no one stands in
        spare = [m for m in self.ring.preference_list(key, len(self.members))
                 if m not in strict and m not in self.suspected]
        fallbacks = tuple(zip(spare, down))
        # A suspected home with no one to stand in for it is asked all the same: suspicion lags recovery.
        stood_in = {home for _, home in fallbacks}
        targets = [m for m in strict if m not in stood_in] + [f for f, _ in fallbacks]
        return tuple(targets), fallbacks

    # --- client requests ---------------------------------------------------------------------

    def on_request(self, request_id: int, payload: Any) -> None:
        """A client's :class:`~.versioned_records.VWrite` or :class:`~.versioned_records.VRead`."""
        try:
            self._start(("client", request_id), payload)
        except Exception as e:  # noqa: BLE001 - refused as a typed record, nothing written
            self.reply(request_id, error=e)

    def _start(self, reply_to: tuple, payload: Any) -> None:
        if isinstance(payload, VWrite):
            n = payload.n or self.n
            w = payload.w or min(self.w, n)
            check_quorum(n, min(self.r, n), w, len(self.members))
            only = self.versions.policies.only
            if only is None or only.mode == "crdt":  # a batch refused for a key's kind writes none of its keys
                for code, key, _, _ in payload.items:
                    self.versions.check_kind(key, code == V_UPDATE)
            new = self._new_writes(payload.items, n)
            req = _Request(reply_to, True, [None] * len(payload.items), len(payload.items))
            req.body = payload.body
            if len(new) == len(payload.items):  # the whole batch: nothing else to do
                self._write_new(req, new, payload, n, w)
                self._maybe_answer(req)
                return
            contexts = [decode_context(self.store, c) if code != V_UPDATE and i not in new else None
                        for i, (code, _, _, c) in enumerate(payload.items)]  # all checked before any write
            if new:
                self._write_new(req, new, payload, n, w)
            away: dict[str, list] = {}
            stores: dict[str, list] = {}  # one store message per replica for the whole batch
            groups: dict[tuple, _Op] = {}  # (targets, fallbacks) -> the op of the keys that go there
            for i, ((code, key, value, _), ctx) in enumerate(zip(payload.items, contexts)):
                if i in new:
                    continue
                targets, fallbacks = self.preference(key, n)
                if self.node_id in targets:
                    op = groups.get((targets, fallbacks))
                    if op is None:
                        op = groups[(targets, fallbacks)] = self._op(req, True, w, payload.timeout_s, targets,
                                                                     fallbacks, n, min(self.r, n), w)
                        op.body = req.body
                    self._write(op, i, code, key, value, ctx, stores)
                else:  # a dot needs a coordinator that holds the key: its first reachable replica
                    away.setdefault(targets[0], []).append(i)
            for node, items in stores.items():
                self.send(node, LLStore(tuple(items)))
            for op in groups.values():
                self._answer(op, self.node_id, True)  # the coordinator's own copy counts towards w
            for node, indices in away.items():
                self._forward(req, node, VWrite(tuple(payload.items[i] for i in indices), n, w, payload.timeout_s,
                                                payload.body),
                              indices, [payload.items[i][1] for i in indices], payload.timeout_s)
        elif isinstance(payload, VRead):
            n = payload.n or self.n
            r = payload.r or min(self.r, n)
            check_quorum(n, r, min(self.w, n), len(self.members))
            req = _Request(reply_to, False, [None] * len(payload.keys), len(payload.keys))
            fetch: dict[str, list] = {}
            for i, key in enumerate(payload.keys):
                targets, fallbacks = self.preference(key, n)
                op = self._op(req, False, r, payload.timeout_s, targets, fallbacks, n, r, min(self.w, n))
                op.indices.append(i)
                op.keys.append(key)
                for t in targets:
                    if t == self.node_id:
                        self._answer(op, t, self._local(key))
                    else:
                        fetch.setdefault(t, []).append((op.id, key))
            for node, items in fetch.items():
                self.send(node, LLFetch(tuple(items)))
        else:
            raise InvalidArgumentError(f"a leaderless replica takes VWrite and VRead, got {type(payload).__name__}")
        self._maybe_answer(req)

    def _op(self, req: _Request, write: bool, needed: int, timeout_s: float, targets: tuple, fallbacks: tuple,
            n: int, r: int, w: int) -> _Op:
        op = _Op(self._id(), req, write, needed, self._deadline(timeout_s), targets, fallbacks, n, r, w,
                 started=self.ticks)
        self._ops[op.id] = op
        self._by_start.append(op)
        heapq.heappush(self._by_deadline, (op.deadline, op.id))
        return op

    def _new_writes(self, items: tuple, n: int) -> dict:
        """The places in ``items`` of the blind puts (no context) of keys this replica does not hold, when
        every replica holds every key (``n`` covers the members) and no key appears twice: the writes
        :meth:`_write_new` takes in columns. Keys may come in any order then, since no two are the same."""
        if n < len(self.members) or len(items) < 2:
            return {}
        codes, keys, _, contexts = zip(*items)
        if len(set(keys)) != len(keys):
            return {}
        fresh = self.versions.new_keys(keys)
        if all(fresh) and codes.count(V_PUT) == len(codes) and not any(contexts):
            return dict.fromkeys(range(len(items)))  # every one (a put's value is bytes: VWrite checks it)
        return {i: None for i, (code, context, ok) in enumerate(zip(codes, contexts, fresh))
                if ok and code == V_PUT and not context}

    def _write_new(self, req: _Request, new: dict, payload: VWrite, n: int, w: int) -> None:
        """Coordinate the writes at the places ``new`` of ``payload`` (:meth:`_new_writes`): stamped in
        one clock reading, stored here in columns (:meth:`store_new`), and sent to every other replica
        as one :class:`~.leaderless_messages.LLStoreNew`, from which each builds the same states. The
        same states, bytes, Merkle sums and log as :meth:`_write` of each; a blind write of a new key is
        a bulk load's every write, and this path costs a fraction of the general one per key."""
        items = payload.items
        keys = tuple(items[i][1] for i in new)
        values = tuple(items[i][2] for i in new)
        wall_ns, logical = self.hlc.now_pairs(len(keys))
        encoded, hashes = self.store_new(keys, values, self.node_id, wall_ns, logical)
        op = self._op(req, True, w, payload.timeout_s, self.members, (), n, min(self.r, n), w)
        op.body = req.body
        op.indices.extend(new)
        op.keys.extend(keys)
        op.states.extend([None] * len(keys))  # built only if the answer carries them (_answer)
        op.encoded.extend(encoded)
        message = LLStoreNew(op.id, self.node_id, wall_ns, logical, keys, values, LLStoreNew.pack_hashes(hashes))
        for t in self.members:
            if t != self.node_id:
                self.send(t, message)
        self._answer(op, self.node_id, True)  # the coordinator's own copy counts towards w

    def _write(self, op: _Op, index: int, code: int, key: bytes, value: Any, ctx, stores: dict) -> None:
        """Stamp and store one write of ``op`` here; queue its copies for the other targets in ``stores``."""
        ts = self.stamp()
        if code == V_UPDATE:
            state, shipped = self.versions.update(key, value[0], value[1], ts)
        else:
            state = shipped = self.versions.put(key, value if code == V_PUT else None, ctx, ts)
        encoded = self.encoded(key, shipped)
        op.indices.append(index)
        op.keys.append(key)
        op.states.append(state)
        op.encoded.append(encoded)
        homes = dict(op.fallbacks)
        for t in op.targets:
            if t != self.node_id:
                stores.setdefault(t, []).append((op.id, key, encoded, homes.get(t, "")))

    def _forward(self, req: _Request, node: str, payload: Any, indices: list, keys: list, timeout_s: float) -> None:
        pid = self._id()
        self._proxies[pid] = _Proxy(req, indices, keys, self._deadline(timeout_s))
        self.counters["forwarded"] += len(indices)
        self.send(node, LLCoordinate(pid, payload))

    # --- answers -------------------------------------------------------------------------------

    def _local(self, key: bytes) -> Any:
        """This replica's versions of ``key``, with the hints it holds for others."""
        state = self.versions.data.get(key)
        held = [decode_state(h[key]) for h in self.hints.values() if key in h]
        return self.versions.combine(key, (state, *held)) if held else state

    def _answer(self, op: _Op, node: str, state: Any) -> None:
        if node in op.answers or node not in op.targets:
            return
        op.answers[node] = state
        self.suspected.pop(node, None)
        if not op.done and len(op.answers) >= op.needed:
            op.done = True
            report = QuorumReport(op.n, op.r, op.w, len(op.answers), tuple(sorted(op.answers)),
                                  tuple(sorted(f for f, _ in op.fallbacks if f in op.answers)))
            if not op.write:
                key = op.keys[0]
                items: Any = (self.item(key, self.versions.combine(key, op.answers.values()), report),)
            elif op.body:
                items = [self.item(key, state if state is not None else decode_state(data), report)
                         for key, state, data in zip(op.keys, op.states, op.encoded)]
            else:
                items = [None] * len(op.keys)
            self._settle(op.req, op.indices, items)
        if op.done and len(op.answers) == len(op.targets):
            self._retire(op)

    def _settle(self, req: _Request, indices: list, items) -> None:
        """The answers of the request's keys at ``indices`` are ``items`` (those settled already stay)."""
        settled, answers = req.settled, req.items
        for index, item in zip(indices, items):
            if not settled[index]:
                settled[index] = True
                answers[index] = item
                req.left -= 1
        self._maybe_answer(req)

    def _maybe_answer(self, req: _Request) -> None:
        if req.left or req.answered:
            return
        req.answered = True
        result = VWriteAck(tuple(req.items)) if req.write else VReadResult(tuple(req.items))
        if req.reply_to[0] == "client":
            self.reply(req.reply_to[1], result)
        else:
            self.send(req.reply_to[1], LLCoordinated(req.reply_to[2], result))

    def _retire(self, op: _Op) -> None:
        self._ops.pop(op.id, None)
        if not op.write and self.read_repair and len(op.answers) > 1:
            self._repair(op)

    def _repair(self, op: _Op) -> None:
        """Send the merged versions to every replica that answered with less (read repair)."""
        key = op.keys[0]
        merged = self.versions.combine(key, op.answers.values())
        if merged is None:
            return
        encoded = b""
        for node, state in op.answers.items():
            if state is not None and state == merged:  # equal states encode alike: nothing to repair
                continue
            self.counters["read_repairs"] += 1
            if node == self.node_id:
                self.versions.merge(key, merged)
            else:
                encoded = encoded or encode_state(merged)
                self.send(node, LLStore(((0, key, encoded, ""),)))

    def _suspect_silent(self, op: _Op) -> None:
        """``suspect_ticks`` after a request went out, suspect the replicas that have not answered it; a
        write's copy for each of them goes, as a hint, to the next replica on the ring (a sloppy quorum
        made after the fact: the write still reaches ``n`` replicas, Dynamo 4.6)."""
        op.handed = True  # looked at once
        missing = [t for t in op.targets if t not in op.answers and t != self.node_id]
        for t in missing:
            self.suspected.setdefault(t, self.ticks)
        if not op.write or not missing or not self.sloppy:
            return
        hints: dict[str, list] = {}
        if len(op.targets) < len(self.members):  # else every replica is a target: no key has a stand-in
            for key, encoded in zip(op.keys, op.encoded):
                spare = [m for m in self.ring.preference_list(key, len(self.members))
                         if m not in op.targets and m not in self.suspected]
                for stand_in, home in zip(spare, missing):
                    hints.setdefault(stand_in, []).append((0, key, encoded, home))
        for stand_in, items in hints.items():
            self.send(stand_in, LLStore(tuple(items)))
        if op.done:
            self._retire(op)

    def _fail(self, op: _Op) -> None:
        """The deadline passed before the quorum: the key's answer is a QuorumNotReachedError."""
        op.done = True
        self.counters["quorum_failures"] += 1
        for t in op.targets:
            if t not in op.answers and t != self.node_id:
                self.suspected.setdefault(t, self.ticks)
        what = "acknowledgements" if op.write else "answers"
        items = []
        for key in op.keys:
            err = QuorumNotReachedError(f"{len(op.answers)} of the {op.needed} {what} needed for {key!r} came in "
                                        f"time (asked {list(op.targets)})", needed=op.needed, got=len(op.answers))
            items.append(VItem(key, error=ErrorRecord.of(err, self.node_id)))
        self._settle(op.req, op.indices, items)

    # --- messages ---------------------------------------------------------------------------------

    def on_message(self, src: str, payload: Any) -> None:
        """Replica-to-replica traffic (see the records above)."""
        self.suspected.pop(src, None)
        if isinstance(payload, LLStore):
            self._on_store(src, payload)
        elif isinstance(payload, LLStoreNew):
            self._on_store_new(src, payload)
        elif isinstance(payload, LLStored):
            for op_id in payload.ops:
                op = self._ops.get(op_id)
                if op is not None and op.write:
                    self._answer(op, src, True)
        elif isinstance(payload, LLFetch):
            self.send(src, LLFetched(tuple((op, key, self._encoded_local(key)) for op, key in payload.items)))
        elif isinstance(payload, LLFetched):
            for op_id, key, data in payload.items:
                op = self._ops.get(op_id)
                if op is not None and not op.write and op.keys[0] == key:
                    self._answer(op, src, decode_state(data) if data is not None else None)
        elif isinstance(payload, LLCoordinate):
            try:
                self._start(("replica", src, payload.op), payload.request)
            except Exception as e:  # noqa: BLE001 - answered as a typed record
                self.send(src, LLCoordinated(payload.op, None, ErrorRecord.of(e, self.node_id)))
        elif isinstance(payload, LLCoordinated):
            self._on_coordinated(payload)
        elif isinstance(payload, LLHandoff):
            for key, data in payload.items:
                self.merge_encoded(key, data)
            self.send(src, LLHandoffAck(payload.items))
        elif isinstance(payload, LLHandoffAck):
            self._on_handoff_ack(src, payload)
        elif isinstance(payload, LLPing):
            if payload.reply:
                self.send(src, LLPing(False))
        else:
            self.on_other_message(src, payload)

    def on_other_message(self, src: str, payload: Any) -> None:
        """A message the base protocol does not know (anti-entropy's, when on)."""
        raise InvalidArgumentError(f"{self.node_id}: unexpected {type(payload).__name__} from {src!r}")

    def _encoded_local(self, key: bytes) -> bytes | None:
        if not any(key in h for h in self.hints.values()):
            return self.versions.data.raw(key)  # as stored: nothing to decode or encode again
        state = self._local(key)
        return encode_state(state) if state is not None else None

    def _on_store(self, src: str, msg: LLStore) -> None:
        acks: dict[int, None] = {}  # the ops held now, each once (an op's keys share its id)
        for op_id, key, data, home in msg.items:
            if home and home != self.node_id:
                self._hint(home, key, data)
            else:
                self.merge_encoded(key, data)
            if op_id:
                acks[op_id] = None
        if acks:
            self.send(src, LLStored(tuple(acks)))

    def _on_store_new(self, src: str, msg: LLStoreNew) -> None:
        """Store a batch of first writes (:meth:`_write_new`): the keys new here in columns, as the
        coordinator did; a key held here already (anti-entropy or a repair brought it first) merged
        with the state the coordinator stored."""
        keys, values = msg.keys, msg.values
        fresh = self.versions.new_keys(keys)
        if all(fresh):
            self.store_new(keys, values, msg.node, msg.wall_ns, msg.logical, msg.hash_columns())
        else:  # rare (anti-entropy or a repair was first): the new keys hashed here, the others merged
            encoded = new_states(msg.node, values, msg.wall_ns, msg.logical)
            self.keep_new([k for k, ok in zip(keys, fresh) if ok], [d for d, ok in zip(encoded, fresh) if ok])
            for key, data, ok in zip(keys, encoded, fresh):
                if not ok:
                    self.merge_encoded(key, data)
        if msg.op:
            self.send(src, LLStored((msg.op,)))

    def _on_coordinated(self, msg: LLCoordinated) -> None:
        proxy = self._proxies.pop(msg.op, None)
        if proxy is None:
            return  # answered after its deadline: the client already has its error
        items = msg.result.items if msg.error is None and msg.result is not None else None
        self._settle(proxy.req, proxy.indices,
                     [items[j] if items is not None and j < len(items) else VItem(key, error=msg.error)
                      for j, key in enumerate(proxy.keys)])

    # --- hinted handoff -------------------------------------------------------------------------------

    def _hint(self, home: str, key: bytes, data: bytes) -> None:
        """Hold ``key``'s versions for ``home`` (merged with what is held already), persisted."""
        held = self.hints.setdefault(home, {})
        old = held.get(key)
        merged = data if old is None else encode_state(self.versions.combine(key, (decode_state(old),
                                                                                   decode_state(data))))
        held[key] = merged
        self.counters["hinted"] += 1
        self.persist(HintChange(home, key, merged))

    def _on_handoff_ack(self, home: str, msg: LLHandoffAck) -> None:
        held = self.hints.get(home, {})
        for key, data in msg.items:
            if held.get(key) == data:  # unchanged since offered: delivered
                del held[key]
                self.counters["handoffs"] += 1
                self.persist(HintChange(home, key, b""))
        if not held:
            self.hints.pop(home, None)

    # --- time ---------------------------------------------------------------------------------------

    def on_tick(self) -> None:
        """Expire requests past their deadline, offer hints to their homes, ping suspected replicas."""
        # Each op is looked at once per clock: the queues hold them in the order their times come due.
        started, due = self._by_start, self._by_deadline
        while started and self.ticks - started[0].started >= self.suspect_ticks:
            op = started.popleft()
            if op.id in self._ops and not op.handed:
                self._suspect_silent(op)
        while due and due[0][0] <= self.ticks:
            expired = self._ops.get(heapq.heappop(due)[1])
            if expired is None:
                continue
            if expired.done:
                self._retire(expired)
            else:
                self._ops.pop(expired.id, None)
                self._fail(expired)
        for pid in [p for p, x in self._proxies.items() if self.ticks >= x.deadline]:
            proxy = self._proxies.pop(pid)
            err = QuorumNotReachedError("the coordinator of these keys did not answer in time", needed=1, got=0)
            self._settle(proxy.req, proxy.indices, [VItem(key, error=ErrorRecord.of(err, self.node_id))
                                                    for key in proxy.keys])
        if self.ticks % self.handoff_ticks == 0:
            for home, held in self.hints.items():
                if held and home not in self.suspected:
                    self.send(home, LLHandoff(tuple(list(held.items())[:512])))
        if self.ticks % _SUSPECT_PING_TICKS == 0:
            for node in self.suspected:
                self.send(node, LLPing())
        self.collect_tombstones()
        self.on_other_tick()

    def on_other_tick(self) -> None:
        """Periodic work beyond the base protocol (anti-entropy, when on)."""

    # --- persistence ----------------------------------------------------------------------------

    def recover_record(self, rec: Any) -> None:
        """A hint held or dropped."""
        if not isinstance(rec, HintChange):
            super().recover_record(rec)
        if rec.state:
            self.hints.setdefault(rec.home, {})[rec.key] = rec.state
        else:
            self.hints.get(rec.home, {}).pop(rec.key, None)

    def snapshot_meta(self) -> dict:
        """Nothing beyond the key states (the hints follow them)."""
        return {}

    def snapshot_tail(self) -> tuple:
        """The hints still held."""
        return tuple(HintChange(h, k, v) for h, held in sorted(self.hints.items()) for k, v in sorted(held.items()))

    def recover_meta(self, meta: dict) -> None:
        """A compacted log starts with no hints; those kept follow it."""
        self.hints.clear()

    def status(self) -> dict:
        """The replica's figures: counters, hints held, suspected peers, requests in flight."""
        return {**super().status(), "role": "replica", "n": self.n, "r": self.r, "w": self.w,
                "pair_roots": {p: self.tree_for(p).root().hex() for p in self.members if p != self.node_id},
                **self.counters, "hints": sum(len(h) for h in self.hints.values()),
                "suspected": sorted(self.suspected), "in_flight": len(self._ops)}


def build(node_id: str, *, recovered=(), tick_s: float = 0.01, resolver_modules: tuple = (), engine: str = "map",
          data_url: str = "", engine_options: dict | None = None, sync: bool = False,
          **options: Any) -> LeaderlessReplica:
    """The :class:`~ddia_ray.runtime.core.CoreSpec` factory of a leaderless replica (with anti-entropy when
    ``anti_entropy_ticks``): ``resolver_modules`` are imported first (they register the store's
    resolvers), then the versions' engine is opened (:func:`~.version_store.open_versions`)."""
    from .procedures import load
    from .version_store import open_versions

    load(resolver_modules)
    versions = open_versions(engine, data_url, node_id, options=engine_options, sync=sync)
    try:
        if options.get("anti_entropy_ticks"):
            from .leaderless_sync import SyncingLeaderlessReplica
            return SyncingLeaderlessReplica(node_id, recovered=recovered, tick_s=tick_s, versions_map=versions,
                                            **options)
        return LeaderlessReplica(node_id, recovered=recovered, tick_s=tick_s, versions_map=versions, **options)
    except BaseException:
        close = getattr(versions, "close", None)
        if close is not None:
            close()
        raise
