"""The responder's side of Merkle anti-entropy (:mod:`.anti_entropy`): each request to its reply.

Theory of operation
-------------------
The responder is stateless: :func:`answer` turns an :class:`AeProbe` into the :class:`AeNodes` of
the nodes it names (hashes of their descendants, or listings of small nodes' entry-hash prefixes,
plus the power sums the probe asks for), and an :class:`AeFetch` into the :class:`AeValues` of the
entries it wants (by node and prefix, or by key id). A first probe's power sums may name the few
keys the replicas differ in at once (:mod:`.power_sums`): the answer then carries their values and
no hashes. Every count and index a request holds is checked against the tree before it is used,
so a hostile request raises :class:`~ddia_ray.errors.CorruptRecordError` and costs work in
proportion to its size (see :mod:`.anti_entropy_messages`). The caller merges the pairs an AeFetch
pushes (:func:`pushed_pairs`) after it has sent the reply.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from ..errors import CorruptRecordError, InvalidArgumentError, MerkleShapeError
from .anti_entropy_messages import (
    ANSWER_HASH_BYTES_MAX,
    STEP_DESCENDANTS_MAX,
    AeFetch,
    AeNodes,
    AeProbe,
    AeValues,
    node_of,
    node_offset,
    read_fixed,
    read_gaps,
    read_varints,
    step_for,
    write_gaps,
    write_varints,
)
from .merkle import MerkleTree
from .power_sums import ID_BITS, decode, read_sums

__all__ = ["answer", "pushed_pairs", "Lookup", "PROBE_SUMS", "ANSWER_SUMS"]

#: Power sums the first probe carries (up to 2 differing keys decode from them at the responder).
PROBE_SUMS = 5
#: Power sums the responder sends with its first answer (up to 12 differing keys), when the probe's did
#: not name the keys; the next probe asks for the rest (up to SUMS = 61: 30 keys).
ANSWER_SUMS = 25

#: What a replica answers for its values: ``lookup(keys)`` -> a value (or None) per key, in order.
Lookup = Callable[[Sequence[bytes]], Sequence["bytes | None"]]


def answer(tree: MerkleTree, message, lookup: Lookup):
    """The responder's reply to ``message`` (an :class:`AeProbe` or :class:`AeFetch`), from ``tree``.

    ``lookup(keys)`` returns the replica's values (encoded versions) of ``keys``, in order, None for
    a key gone meanwhile. An :class:`AeFetch` also carries the initiator's pushed ``pairs``: the caller
    merges them (see :func:`pushed_pairs`) after this returns. Raises :class:`MerkleShapeError` if the
    initiator's tree has another shape, :class:`CorruptRecordError` for a message that does not fit
    this tree, :class:`InvalidArgumentError` for another message type.
    """
    if isinstance(message, AeProbe):
        return _answer_probe(tree, message, lookup)
    if isinstance(message, AeFetch):
        return _answer_fetch(tree, message, lookup)
    raise InvalidArgumentError(f"a responder answers AeProbe and AeFetch, got {type(message).__name__}")


def _answer_probe(tree: MerkleTree, probe: AeProbe, lookup: Lookup) -> AeNodes:
    fanout, depth = tree.fanout, tree.depth
    m = probe.view()
    if m.shape is not None and tuple(m.shape) != (fanout, depth):
        raise MerkleShapeError(f"anti-entropy between trees of shapes {tuple(m.shape)} (initiator) and "
                               f"{(fanout, depth)} (responder): build both with the same fanout and depth",
                               ours=(fanout, depth), theirs=tuple(m.shape))
    if m.level > depth:
        raise CorruptRecordError(f"anti-entropy probe of level {m.level}, past the tree's depth {depth}")
    root = tree.root_int() if m.level == 0 else None
    if m.level == 0 and m.root == root:
        return AeNodes.of(m.sid, 0, root=root)  # equal trees: one round, nothing else to say
    sums = b""
    if m.level == 0 and m.sums:  # a first pass: the power sums may name the few differing keys at once
        theirs = read_sums(m.sums, "probe sums")
        found = decode(theirs, tree.sketch.sums(0, len(theirs)))
        if found:
            return _answer_found(tree, m.sid, root, [kid for kid, _ in found], lookup)
        sums = tree.sketch.to_bytes(0, ANSWER_SUMS)
    elif m.ask is not None:
        sums = tree.sketch.to_bytes(*m.ask)
    nodes = read_gaps(m.nodes, fanout ** m.level, "probe nodes")
    step = step_for(fanout, depth, m.level, m.step)
    span = fanout ** step
    if span > STEP_DESCENDANTS_MAX:
        raise CorruptRecordError(f"anti-entropy probe expands {span} descendants a node, over "
                                 f"STEP_DESCENDANTS_MAX={STEP_DESCENDANTS_MAX}")
    if len(nodes) * (span - 1) * m.width > ANSWER_HASH_BYTES_MAX:
        raise CorruptRecordError(f"anti-entropy probe asks for {len(nodes) * (span - 1) * m.width} bytes of hashes, "
                                 f"over ANSWER_HASH_BYTES_MAX={ANSWER_HASH_BYTES_MAX}")
    counts = tree.level_counts(m.level)
    below = tree.level_sums(m.level + step) if m.level < depth else None
    mask, width, pshift, ewidth = (1 << (8 * m.width)) - 1, m.width, 64 - 8 * m.ewidth, m.ewidth
    hashes, listed, listed_counts, entries = [], [], [], []
    for position, index in enumerate(nodes):
        if m.level == depth or counts[index] <= m.lmax:
            prefixes = [(h >> pshift).to_bytes(ewidth, "big") for _, h in tree.entries_under(m.level, index)]
            listed.append(position)
            listed_counts.append(len(prefixes))
            entries += prefixes
        else:
            first = index * span
            assert below is not None
            hashes += [(below[first + j] & mask).to_bytes(width, "big") for j in range(span - 1)]
    return AeNodes.of(m.sid, m.level, hashes=b"".join(hashes), listed=write_gaps(listed),
                      counts=write_varints(listed_counts), entries=b"".join(entries), root=root, sums=sums)


def _answer_found(tree: MerkleTree, sid: int, root: int | None, kids: list[int], lookup: Lookup) -> AeNodes:
    """The answer when the probe's sums name the keys (of ids ``kids``) the replicas differ in: their
    values here, and the ids of which this replica holds none (the initiator then pushes its own)."""
    pairs: tuple = ()
    lacking = []
    for kid in kids:
        found = _values_of([k for k, _ in tree.entries_with_id(kid)], lookup)
        pairs += found
        if not found:
            lacking.append(kid)
    return AeNodes.of(sid, 0, root=root, pairs=pairs, ids=b"".join(k.to_bytes(4, "big") for k in lacking))


def _values_of(keys: list[bytes], lookup: Lookup) -> tuple:
    """Flat key, value, ... of ``keys`` from ``lookup``, leaving out the keys it has no value for."""
    pairs: list[bytes] = []
    if keys:
        values = list(lookup(keys))
        if len(values) != len(keys):
            raise InvalidArgumentError(f"lookup returned {len(values)} values for {len(keys)} keys")
        for key, value in zip(keys, values):
            if value is not None:
                if not isinstance(value, bytes):
                    raise InvalidArgumentError(f"lookup returns bytes or None, got {type(value).__name__}")
                pairs += (key, value)
    return tuple(pairs)


def _answer_fetch(tree: MerkleTree, fetch: AeFetch, lookup: Lookup) -> AeValues:
    fanout, depth = tree.fanout, tree.depth
    m = fetch.view()
    gids = read_gaps(m.nodes, node_offset(fanout, depth + 1), "fetch nodes")
    counts = read_varints(m.counts, "fetch counts")
    if len(counts) != len(gids) or sum(counts) * m.ewidth != len(m.want):
        raise CorruptRecordError("anti-entropy fetch: its counts do not match its nodes and wanted prefixes")
    prefixes = read_fixed(m.want, m.ewidth, "fetch prefixes")
    pshift, keys, at = 64 - 8 * m.ewidth, [], 0
    for gid, count in zip(gids, counts):
        level, index = node_of(fanout, depth, gid)
        wanted = Counter(prefixes[at:at + count])
        at += count
        for key, h in tree.entries_under(level, index):
            p = h >> pshift
            if wanted.get(p):
                wanted[p] -= 1
                keys.append(key)
    for kid in read_fixed(m.ids, 4, "fetch ids"):
        if kid >> ID_BITS:
            raise CorruptRecordError(f"anti-entropy fetch: key id {kid} is not below 2**{ID_BITS}")
        keys += [k for k, _ in tree.entries_with_id(kid)]
    return AeValues.of(m.sid, _values_of(keys, lookup))


def pushed_pairs(message: AeFetch) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` pairs an :class:`AeFetch` pushes to the responder, for its caller to merge."""
    p = message.pairs
    return list(zip(p[0::2], p[1::2]))
