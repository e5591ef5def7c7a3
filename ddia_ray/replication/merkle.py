"""A Merkle tree over a replica's key space, kept up to date on every write, for anti-entropy.

Theory of operation
-------------------
Replicas that missed writes (a hinted handoff that never came, a node that was down) repair
themselves in the background by *anti-entropy*: two replicas compare a hash tree of their data,
descend only where the hashes differ, and exchange just the keys below the differing leaves
(DDIA 5.5, "Read repair and anti-entropy"; DeCandia et al. 2007, "Dynamo", 4.7; Riak's active
anti-entropy; Cassandra's repair). This module is the tree; :mod:`.anti_entropy` is the exchange.

Shape. Every replica uses the same fixed shape: ``fanout`` (a power of two) children per node and
``depth`` levels below the root, so ``fanout ** depth`` leaves. Leaf ``i`` holds every key whose
64-bit *key hash* (BLAKE2b of the key) has ``i`` as its top ``depth * log2(fanout)`` bits: both
replicas bucket a key alike, whatever else they hold. Node ``(level, index)`` covers the leaves
whose index has ``index`` as its top ``level * log2(fanout)`` bits (level 0 is the root).

Hashes. Each entry ``(key, value)`` has a 64-bit *entry hash* (:func:`entry_hash`, BLAKE2b of the
length-prefixed key and the value). A node's hash is the **sum modulo 2**64** of the entry hashes
below it (an additive multiset hash, Clarke et al. 2003), so:

* a write changes one leaf and its ancestors by the same delta, with no rehash of children:
  :meth:`MerkleTree.update` notes the delta, and the deltas noted since the tree was last read
  are added to every level at once when it is read next (numpy for many, a loop for a few), so
  a burst of writes between two anti-entropy rounds costs one pass per level, not one per write;
* a node's hash is the sum of its children's, also after truncation to its low ``8 * w`` bits
  (sums modulo 2**(8w) commute with truncation), which :mod:`.anti_entropy` uses to send one hash
  fewer per expanded node and to re-check what it found;
* the root is a hash of the set of entries alone, not of the shape: trees of any shape over the
  same entries have the same root, which makes it a convergence criterion
  (:mod:`ddia_ray.history.convergence`).

An absent key (``value=None``) contributes nothing. Two different sets of entries have the same
root with probability 2**-64 for data not chosen against BLAKE2b, which anyone can compute: the
sum is a checksum for replicas that diverged by accident, not an authenticator against an
adversary who chooses keys (a keyed BLAKE2b would be, at the cost of sharing the key).

Shapes. The default (fanout 4, depth 8: 65,536 leaves, 1 MiB) suits stores up to ~100K keys;
:meth:`MerkleTree.shape_for` gives the shape for an expected size (about two keys a leaf), which
is what the exchange's byte bound was measured with (fanout 4 beat 2, 8 and 16 there, see
:mod:`.anti_entropy`); fanout 16 with depth 4, Riak-like, costs 10-20% more bytes per divergent
key.

Power sums. Beside the hashes, a tree keeps 61 power sums of its keys (:mod:`.power_sums`,
:attr:`MerkleTree.sketch`), updated by the same writes and built by the same scan: they name up
to 30 keys two replicas differ in without a descent, which is what keeps a small difference
within twice its bytes (:mod:`.anti_entropy`). :meth:`MerkleTree.entries_with_id` finds the keys
of the ids they name (the top 31 bits of the key hash: under one node).

Cost. :meth:`MerkleTree.build` hashes a storage scan in one pass and sums the leaves with numpy:
2.6 s of CPU for 1M keys of 100-byte values (depth 10; 2.1 s without the power sums), measured
2026-12-05 on this project's 2-core VM; :meth:`MerkleTree.update` takes about 5 us at depth 10
(the power sums buffer a write and fold many at once when read); since the levels are added
to when read, an update is the two hashes and a dict entry. :meth:`MerkleTree.update_many`
takes a batch in one pass: about 1.9 us a key with 200,000 keys held (0.8 of it the hashes,
which a caller that has them passes in), measured 2026-12-08. :meth:`MerkleTree.snapshot` is
what a session compares: copy-on-write (:mod:`.merkle_snapshot`), where :meth:`MerkleTree.copy`
copies every entry (0.14 s at 100,000 keys). Memory: 12 bytes per node (a
64-bit sum and a 32-bit count: 17 MiB at depth 10), plus a dict entry per key in the leaf
segments (the entry hashes the exchange lists).

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from array import array
from typing import Iterable, Iterator

from .._validate import integer
from ..errors import ConfigError, InvalidArgumentError
# The entry hash and the root over a set of entries are defined with the convergence checker, one floor
# down (history), so that the checker and every tree agree on them without history importing replication.
from ..history.convergence import entry_hash, entry_hashes, root_of
from .merkle_snapshot import FrozenSegments
from .power_sums import ID_BITS, PowerSums, key_id

__all__ = ["MerkleTree", "entry_hash", "key_hash", "hashes_of", "key_hashes", "root_of", "FANOUTS", "DEPTH_MAX",
           "NODES_MAX"]

#: Fanouts a tree may have: powers of two, so a node's children are the next bits of the key hash.
FANOUTS = (2, 4, 8, 16, 32, 64, 128, 256)
#: Deepest tree: 64 bits of key hash are split among the levels.
DEPTH_MAX = 32
#: Most nodes a tree may have (about 200 MiB of sums and counts): larger shapes are a mistake.
NODES_MAX = 1 << 24

_MASK = (1 << 64) - 1
#: Deltas noted before the levels are brought up to date even unread (a bound on the list, not a cost).
_PENDING_MAX = 1 << 16
#: Below this many noted deltas a read adds them in a loop (numpy's fixed cost is ~10 us a level).
_FLUSH_NUMPY_MIN = 32
_blake2b = hashlib.blake2b
_BYTES = frozenset({bytes})


_KEY_HASH = _blake2b(digest_size=8, person=b"ddia-mk-key")


def key_hash(key: bytes) -> int:
    """The 64-bit hash of ``key`` that places it in a leaf (the same on every replica)."""
    h = _KEY_HASH.copy()
    h.update(key)
    return int.from_bytes(h.digest(), "big")


def hashes_of(keys: tuple | list, values: tuple | list) -> tuple[list, list]:
    """``(key hashes, entry hashes)`` of each ``(keys[i], values[i])``: what :meth:`MerkleTree.update_many`
    adds (bytes, unchecked)."""
    return key_hashes(keys), entry_hashes(keys, values)


def key_hashes(keys: Iterable[bytes]) -> list[int]:
    """:func:`key_hash` of each of ``keys`` (bytes, unchecked), from copies of one keyed hasher."""
    copy, from_bytes = _KEY_HASH.copy, int.from_bytes
    out = []
    for key in keys:
        h = copy()
        h.update(key)
        out.append(from_bytes(h.digest(), "big"))
    return out


class MerkleTree:
    """An additive Merkle tree of ``fanout ** depth`` leaves over a replica's entries (see the module doc).

    ``update(key, value)`` after every write (``None`` when the key is gone) keeps it current;
    ``build(items)`` makes one from a storage scan. Not thread-safe: one owner updates and reads it.
    """

    __slots__ = ("fanout", "depth", "_bits", "_shift", "_sums", "_counts", "_segments", "_sketch", "_leaves",
                 "_deltas", "_count_deltas", "_frozen")

    def __init__(self, *, fanout: int = 4, depth: int = 8):
        if integer("fanout", fanout) not in FANOUTS:
            raise ConfigError(f"fanout must be a power of two in {FANOUTS}, got {fanout}")
        bits = fanout.bit_length() - 1
        if not 1 <= integer("depth", depth) <= DEPTH_MAX or depth * bits > 64:
            raise ConfigError(f"depth must be within [1, {DEPTH_MAX}] and depth * log2(fanout) <= 64, "
                              f"got depth={depth} with fanout={fanout}")
        nodes = (fanout ** (depth + 1) - 1) // (fanout - 1)
        if nodes > NODES_MAX:
            raise ConfigError(f"a tree of fanout {fanout} and depth {depth} has {nodes} nodes, over "
                              f"NODES_MAX={NODES_MAX}; choose a smaller depth (see MerkleTree.shape_for)")
        self.fanout = fanout
        self.depth = depth
        self._bits = bits
        self._shift = 64 - depth * bits  # key hash >> shift = leaf index
        self._sums = [array("Q", bytes(8 * fanout ** level)) for level in range(depth + 1)]
        self._counts = [array("I", bytes(4 * fanout ** level)) for level in range(depth + 1)]
        self._segments: dict[int, dict[bytes, int]] = {}  # leaf -> key -> entry hash; empty leaves absent
        # The live snapshots' segments (weakly: a snapshot dies with its session), or None in a snapshot.
        self._frozen: list | None = []
        self._sketch = PowerSums()  # the same entries as power sums, that name a few differing keys at once
        # Changes not yet added to the levels, as three columns: the leaf, the change of its sum
        # (modulo 2**64) and of its count (numpy reads each list in one C pass).
        self._leaves: list[int] = []
        self._deltas: list[int] = []
        self._count_deltas: list[int] = []

    # --- shape ---------------------------------------------------------------

    @staticmethod
    def shape_for(keys: int, *, fanout: int = 4, leaf_keys: float = 2.0) -> dict:
        """The shape (``{"fanout", "depth"}``) whose leaves hold about ``leaf_keys`` keys for a store of
        ``keys`` keys: what :mod:`.anti_entropy`'s bound was measured with. Every replica must use the same."""
        if integer("keys", keys) < 0:
            raise ConfigError(f"keys must be >= 0, got {keys}")
        if fanout not in FANOUTS:
            raise ConfigError(f"fanout must be a power of two in {FANOUTS}, got {fanout}")
        if not leaf_keys > 0:
            raise ConfigError(f"leaf_keys must be > 0, got {leaf_keys}")
        depth = max(1, math.ceil(math.log(max(keys / leaf_keys, 2.0), fanout)))
        while depth > 1 and (fanout ** (depth + 1) - 1) // (fanout - 1) > NODES_MAX:
            depth -= 1
        return {"fanout": fanout, "depth": depth}

    @property
    def leaves(self) -> int:
        """How many leaves the tree has (``fanout ** depth``)."""
        return self.fanout ** self.depth

    def leaf_of(self, key: bytes) -> int:
        """The leaf that holds ``key``."""
        return key_hash(key) >> self._shift

    def node_count(self, level: int) -> int:
        """How many nodes level ``level`` has (``fanout ** level``)."""
        return self.fanout ** level

    # --- writes --------------------------------------------------------------

    def update(self, key: bytes, value: bytes | None) -> None:
        """Record that ``key`` now has ``value`` (its encoded versions), or is gone (``None``). O(depth)."""
        if not isinstance(key, bytes):
            raise InvalidArgumentError(f"a key is bytes, got {type(key).__name__}")
        if value is not None and not isinstance(value, bytes):
            raise InvalidArgumentError(f"a value is bytes or None, got {type(value).__name__}")
        if self._frozen is None:
            raise ConfigError("a snapshot of a Merkle tree is read-only; update the live tree")
        kh = key_hash(key)
        leaf = kh >> self._shift
        segment = self._segments.get(leaf)
        old = segment.get(key) if segment is not None else None
        new = entry_hash(key, value) if value is not None else None
        if old == new:
            return
        if self._frozen:
            self._keep((leaf,))
        if new is None:
            del segment[key]  # type: ignore[union-attr]  # old is not None, so the segment exists
            if not segment:
                del self._segments[leaf]
        else:
            if segment is None:
                segment = self._segments[leaf] = {}
            segment[key] = new
        delta = (new or 0) - (old or 0)
        self._leaves.append(leaf)
        self._deltas.append(delta & _MASK)
        self._count_deltas.append((new is not None) - (old is not None))
        if len(self._leaves) >= _PENDING_MAX:
            self._flush()
        self._sketch.add(key_id(kh), delta)

    def update_many(self, keys: tuple | list, values: tuple | list,
                    hashes: tuple[list, list] | None = None) -> None:
        """:meth:`update` for each ``(keys[i], values[i])`` (values are bytes here: no removal; a key
        given twice keeps its last value), as one pass: a batch of writes costs the two hashes and a
        dict entry per key, without a call and its checks per key (the columns' types are checked in
        C-level passes, and the hashers are copies of keyed ones, :func:`key_hashes`).

        ``hashes``: ``(key hashes, entry hashes)`` of these keys and values when the caller has them
        (:func:`hashes_of`, or a peer's that it checked): the tree then hashes nothing."""
        if len(keys) != len(values):
            raise InvalidArgumentError(f"{len(keys)} keys and {len(values)} values")
        if not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, values)):
            raise InvalidArgumentError("keys and values are bytes")
        if hashes is None:
            khs, ehs = hashes_of(keys, values)
        else:
            khs, ehs = hashes
            if len(khs) != len(keys) or len(ehs) != len(keys):
                raise InvalidArgumentError(f"{len(keys)} keys with {len(khs)} key hashes and {len(ehs)} entry hashes")
        if self._frozen is None:
            raise ConfigError("a snapshot of a Merkle tree is read-only; update the live tree")
        shift, segments = self._shift, self._segments
        get = segments.get
        leaves = [kh >> shift for kh in khs]
        if self._frozen:
            self._keep(set(leaves))
        changed: list[int] = []  # places of the keys that were there, now with another value
        for i, (key, leaf, new) in enumerate(zip(keys, leaves, ehs)):
            segment = get(leaf)
            if segment is None:
                segments[leaf] = {key: new}
            elif key in segment:
                changed.append(i)
            else:
                segment[key] = new
        id_shift = 64 - ID_BITS
        if not changed:  # new keys only, the common batch: three columns as they are
            self._leaves += leaves
            self._deltas += ehs
            self._count_deltas += [1] * len(ehs)
            self._sketch.add_many([kh >> id_shift for kh in khs], ehs)
        else:
            # Keys there before (or given twice): each in order, as update() would take it; the keys
            # the first pass added are noted as new.
            mask, sketch = _MASK, self._sketch
            again = set(changed)
            for i, (key, leaf, new, kh) in enumerate(zip(keys, leaves, ehs, khs)):
                if i in again:
                    segment = segments[leaf]
                    old = segment[key]
                    if old == new:
                        continue
                    segment[key] = new
                    self._leaves.append(leaf)
                    self._deltas.append((new - old) & mask)
                    self._count_deltas.append(0)
                    sketch.add(kh >> id_shift, new - old)
                else:
                    self._leaves.append(leaf)
                    self._deltas.append(new)
                    self._count_deltas.append(1)
                    sketch.add(kh >> id_shift, new)
        if len(self._leaves) >= _PENDING_MAX:
            self._flush()

    def _flush(self) -> None:
        """Add the deltas noted since the last read to every level: the readers' first step."""
        leaves, deltas, count_deltas = self._leaves, self._deltas, self._count_deltas
        if not leaves:
            return
        self._leaves, self._deltas, self._count_deltas = [], [], []
        bits = self._bits
        if len(leaves) < _FLUSH_NUMPY_MIN:
            all_sums, all_counts = self._sums, self._counts
            for leaf, delta, count_delta in zip(leaves, deltas, count_deltas):
                index = leaf
                for level in range(self.depth, -1, -1):
                    sums = all_sums[level]
                    sums[index] = (sums[index] + delta) & _MASK
                    if count_delta:
                        all_counts[level][index] = (all_counts[level][index] + count_delta) & 0xFFFFFFFF
                    index >>= bits
            return
        import numpy as np  # only a large burst of writes needs it

        nodes = np.array(leaves, dtype=np.int64)
        # Deltas modulo 2**64 (noted so) and counts modulo 2**32: the arrays' wrapping addition is the tree's.
        sum_deltas = np.array(deltas, dtype=np.uint64)
        counts = np.array(count_deltas, dtype=np.int64).astype(np.uint32)
        for level in range(self.depth, -1, -1):
            np.add.at(np.frombuffer(self._sums[level], dtype=np.uint64), nodes, sum_deltas)
            np.add.at(np.frombuffer(self._counts[level], dtype=np.uint32), nodes, counts)
            nodes >>= bits

    @classmethod
    def build(cls, items: Iterable[tuple[bytes, bytes]], **shape) -> "MerkleTree":
        """A tree of ``items`` (``(key, value)`` pairs, as a storage scan yields them; a repeated key keeps
        its last value). ``shape`` is ``fanout`` and ``depth``. One pass of hashing, then numpy sums."""
        import numpy as np  # only builds need it

        tree = cls(**shape)
        shift, segments = tree._shift, tree._segments
        ids: list[int] = []  # the sketch's ids and values, in scan order
        ehs: list[int] = []
        repeated = False
        for key, value in items:
            if not isinstance(key, bytes) or not isinstance(value, bytes):
                raise InvalidArgumentError(f"items are (bytes, bytes) pairs, got ({type(key).__name__}, "
                                           f"{type(value).__name__})")
            kh = key_hash(key)
            leaf = kh >> shift
            segment = segments.get(leaf)
            if segment is None:
                segment = segments[leaf] = {}
            repeated = repeated or key in segment
            segment[key] = eh = entry_hash(key, value)
            ids.append(kh >> (64 - ID_BITS))
            ehs.append(eh)
        leaves = np.fromiter(((leaf for leaf, seg in segments.items() for _ in range(len(seg)))), dtype=np.int64)
        hashes = np.fromiter((h for seg in segments.values() for h in seg.values()), dtype=np.uint64,
                             count=len(leaves))
        sums = np.zeros(tree.leaves, dtype=np.uint64)
        np.add.at(sums, leaves, hashes)  # uint64 addition wraps: the sum modulo 2**64
        counts = np.bincount(leaves, minlength=tree.leaves).astype(np.uint64)
        if repeated:  # a key's earlier values were summed too: sum the entries kept instead (rare, slower)
            ids = [key_id(key_hash(k)) for seg in segments.values() for k in seg]
            ehs = [h for seg in segments.values() for h in seg.values()]
        tree._sketch = PowerSums.from_arrays(np.array(ids, dtype=np.uint64), np.array(ehs, dtype=np.uint64))
        for level in range(tree.depth, -1, -1):
            tree._sums[level] = array("Q", sums.tobytes())
            tree._counts[level] = array("I", counts.astype(np.uint32).tobytes())
            if level:
                sums = sums.reshape(-1, tree.fanout).sum(axis=1, dtype=np.uint64)
                counts = counts.reshape(-1, tree.fanout).sum(axis=1, dtype=np.uint64)
        return tree

    def copy(self) -> "MerkleTree":
        """An independent copy, of every entry (a benchmark's; a session takes a :meth:`snapshot`)."""
        other = self._empty_copy()
        other._segments = {leaf: dict(seg) for leaf, seg in self._segments.items()}
        other._frozen = []
        return other

    def snapshot(self) -> "MerkleTree":
        """A read-only tree of the entries as they are now, that later writes to this one do not change:
        the levels and power sums copied, the leaf segments shared until this tree changes them
        (:mod:`.merkle_snapshot`). What an anti-entropy session compares while writes go on."""
        if self._frozen is None:
            raise ConfigError("take a snapshot of the live tree, not of a snapshot")
        other = self._empty_copy()
        frozen = FrozenSegments(self._segments)
        other._segments = frozen  # type: ignore[assignment]  # read like the dict it stands for
        other._frozen = None
        self._frozen.append(weakref.ref(frozen))
        return other

    def _empty_copy(self) -> "MerkleTree":
        """A tree of this one's shape, levels and power sums, without segments yet."""
        self._flush()
        other = MerkleTree.__new__(MerkleTree)
        other.fanout, other.depth, other._bits, other._shift = self.fanout, self.depth, self._bits, self._shift
        other._sums = [array("Q", a) for a in self._sums]
        other._counts = [array("I", a) for a in self._counts]
        other._sketch = self._sketch.copy()
        other._leaves, other._deltas, other._count_deltas = [], [], []
        return other

    def _keep(self, leaves) -> None:
        """Before ``leaves``' segments change: hand each live snapshot those it has not kept yet."""
        alive = []
        for ref in self._frozen:  # type: ignore[union-attr]  # a live tree's list
            frozen = ref()
            if frozen is not None:
                alive.append(ref)
                for leaf in leaves:
                    frozen.keep(leaf)
        self._frozen = alive

    # --- reads ---------------------------------------------------------------

    def __len__(self) -> int:
        """How many keys the tree holds."""
        self._flush()
        return self._counts[0][0]

    def root(self) -> bytes:
        """The root hash: 8 bytes, big-endian, the sum of every entry hash (independent of the shape)."""
        self._flush()
        return self._sums[0][0].to_bytes(8, "big")

    def root_int(self) -> int:
        """The root hash as an int."""
        self._flush()
        return self._sums[0][0]

    def hashes(self, level: int, indices: Iterable[int]) -> tuple[bytes, ...]:
        """The 8-byte hashes of nodes ``indices`` of level ``level`` (0 is the root, ``depth`` the leaves)."""
        sums = self._level(level, self._sums)
        return tuple(sums[self._index(level, i)].to_bytes(8, "big") for i in indices)

    def node_hash(self, level: int, index: int) -> int:
        """The hash of node ``(level, index)`` as an int."""
        return self._level(level, self._sums)[self._index(level, index)]

    def level_sums(self, level: int) -> memoryview:
        """A read-only view of level ``level``'s node hashes (ints, indexed by node): for exchanges that
        read many nodes without a check per read."""
        return memoryview(self._level(level, self._sums)).toreadonly()

    def level_counts(self, level: int) -> memoryview:
        """A read-only view of how many keys each node of level ``level`` holds."""
        return memoryview(self._level(level, self._counts)).toreadonly()

    def node_count_of(self, level: int, index: int) -> int:
        """How many keys are under node ``(level, index)``."""
        return self._level(level, self._counts)[self._index(level, index)]

    def segment(self, leaf: int) -> tuple[tuple[bytes, int], ...]:
        """The ``(key, entry_hash)`` pairs of leaf ``leaf``, sorted by key."""
        seg = self._segments.get(self._index(self.depth, leaf))
        return tuple(sorted(seg.items())) if seg else ()

    def entries_under(self, level: int, index: int) -> Iterator[tuple[bytes, int]]:
        """Every ``(key, entry_hash)`` under node ``(level, index)``, in no particular order."""
        index = self._index(level, index)
        span = self.fanout ** (self.depth - level)
        first, segments = index * span, self._segments
        if span > 4 * len(segments):  # few non-empty leaves: scan them rather than the range
            leaves: Iterable[int] = (leaf for leaf in segments if first <= leaf < first + span)
        else:
            leaves = range(first, first + span)
        for leaf in leaves:
            seg = segments.get(leaf)
            if seg:
                yield from seg.items()

    @property
    def sketch(self) -> PowerSums:
        """The power sums of the same entries (:mod:`.power_sums`), that name a few differing keys.
        Read it, do not write it: :meth:`update` keeps it current."""
        return self._sketch

    def entries_with_id(self, kid: int) -> list[tuple[bytes, int]]:
        """Every ``(key, entry_hash)`` whose key has the sketch id ``kid`` (:func:`.power_sums.key_id`): the
        id is the top bits of the key hash, so they are under one node."""
        if isinstance(kid, bool) or not isinstance(kid, int) or not 0 <= kid < 1 << ID_BITS:
            raise InvalidArgumentError(f"a key id is an int within [0, 2**{ID_BITS}), got {kid!r:.40}")
        level = min(self.depth, ID_BITS // self._bits)
        index = kid >> (ID_BITS - level * self._bits)
        return [(k, h) for k, h in self.entries_under(level, index) if key_id(key_hash(k)) == kid]

    def entry(self, key: bytes) -> int | None:
        """The entry hash the tree holds for ``key``, or None if it holds none."""
        seg = self._segments.get(key_hash(key) >> self._shift)
        return seg.get(key) if seg else None

    def keys(self) -> Iterator[bytes]:
        """Every key the tree holds, by leaf."""
        for leaf in sorted(self._segments):
            yield from self._segments[leaf]

    def _level(self, level: int, arrays: list) -> array:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.depth:
            raise InvalidArgumentError(f"level must be an int within [0, {self.depth}], got {level!r}")
        self._flush()
        return arrays[level]

    def _index(self, level: int, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.fanout ** level:
            raise InvalidArgumentError(f"node index of level {level} must be an int within "
                                       f"[0, {self.fanout ** level}), got {index!r}")
        return index

    def __eq__(self, other: object) -> bool:
        """Trees are equal when they have the same shape, sums, counts and entries."""
        if not isinstance(other, MerkleTree):
            return NotImplemented
        self._flush()
        other._flush()
        return (self.fanout, self.depth) == (other.fanout, other.depth) and self._sums == other._sums \
            and self._counts == other._counts and self._segments == other._segments and self._sketch == other._sketch

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"MerkleTree(fanout={self.fanout}, depth={self.depth}, keys={len(self)}, root={self.root().hex()})"
