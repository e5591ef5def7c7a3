"""The messages of Merkle anti-entropy (:mod:`.anti_entropy`) and their byte formats.

Theory of operation
-------------------
An initiator descends the responder's :class:`~.merkle.MerkleTree` by probes, one round per
``step`` levels, then fetches the responder's differing entries and pushes its own (DDIA 5.5,
"Read repair and anti-entropy"; DeCandia et al. 2007, "Dynamo", 4.7). Each message is a codec
record; every field is checked on construction, so also on decode (a hostile frame raises
:class:`~ddia_ray.errors.CorruptRecordError`). What a field means for a given tree (an index in
range, counts that match the bytes) is checked where it is read, by the same error.

Messages (codec records, tag ``repl.ae_*``)::

    initiator                                  responder
    AeProbe(level 0, root, shape)      ->      AeNodes(root; nothing more if the roots are equal)
    AeProbe(level l, nodes, step, ..)  ->      AeNodes(per node: fanout**step - 1 descendant hashes,
        ... one round per `step` levels         or, for a node of <= lmax keys or a leaf, the
                                                 ewidth-byte prefixes of its entry hashes)
    AeFetch(node -> wanted prefixes)   ->      AeValues((key, value) of the wanted entries)
    AeFetch(pairs = pushed values)     ->      AeValues(()): an acknowledgement

The last two merge into one round trip (the fetch carries the pushes) when the initiator could
verify the pass before fetching (see :mod:`.anti_entropy`).

Byte formats inside the records: node lists are sorted indices, each written as the LEB128 varint
of its gap to the previous one minus one (``nodes``, ``listed``, AeFetch's ``nodes`` whose ids
number the nodes of all levels breadth-first); ``counts`` are varints; hashes and prefixes are
fixed-width big-endian, concatenated.

Every varint is at most 10 bytes, and every count is checked against the bytes it describes
before anything is allocated for it, so reading a message costs work in proportion to its size.
Answering a probe costs at most :data:`STEP_DESCENDANTS_MAX` hashes per node it names, and at
most :data:`ANSWER_HASH_BYTES_MAX` bytes of hashes in all (a bigger request is refused as
corrupt: the initiator's cost model never asks for a tenth of it), plus the listed entries.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

from ..codec import record
from ..errors import CorruptRecordError, InvalidArgumentError
from .merkle import DEPTH_MAX

__all__ = ["AeProbe", "AeNodes", "AeFetch", "AeValues", "SESSION_ID_MAX", "STEP_DESCENDANTS_MAX",
           "ANSWER_HASH_BYTES_MAX",
           "write_varints", "read_varints", "write_gaps", "read_gaps", "read_fixed", "node_offset", "node_of",
           "step_for"]

#: Session ids are non-negative ints below this (fits msgpack's uint64).
SESSION_ID_MAX = 1 << 63
#: A round expands each node into at most this many descendants (fanout ** step).
STEP_DESCENDANTS_MAX = 1 << 12
#: The most bytes of hashes one answer may hold: 2 bytes a node of a 4-ary tree of 16M leaves takes 32 MiB.
ANSWER_HASH_BYTES_MAX = 64 << 20


def _uint(name: str, value, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < high:
        raise InvalidArgumentError(f"{name} must be an int within [0, {high}), got {value!r:.60}")


def _within(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an int within [{low}, {high}], got {value!r:.60}")


def _bytes(name: str, value) -> None:
    if not isinstance(value, bytes):
        raise InvalidArgumentError(f"{name} must be bytes, got {type(value).__name__}")


def _pairs(value) -> None:
    if not isinstance(value, tuple) or len(value) % 2:
        raise InvalidArgumentError("pairs must be a flat tuple of key, value, key, value ... bytes")
    for item in value:
        if not isinstance(item, bytes):
            raise InvalidArgumentError(f"pairs hold bytes only, got {type(item).__name__}")


@record("repl.ae_probe", version=1)
class AeProbe:
    """Initiator -> responder: expand nodes ``nodes`` (gap-coded varints) of level ``level`` by ``step``
    levels, hashes ``width`` bytes wide; list nodes of at most ``lmax`` keys as ``ewidth``-byte prefixes.
    At level 0, ``root`` is the initiator's root (as it believes the responder's should be) and
    ``shape`` its ``(fanout, depth)``."""

    sid: int
    level: int
    nodes: bytes
    step: int = 1
    width: int = 2
    ewidth: int = 4
    lmax: int = 4
    root: int | None = None
    shape: tuple | None = None

    def __post_init__(self):
        _uint("sid", self.sid, SESSION_ID_MAX)
        _uint("level", self.level, DEPTH_MAX + 1)
        _bytes("nodes", self.nodes)
        _within("step", self.step, 1, DEPTH_MAX)
        _within("width", self.width, 1, 8)
        _within("ewidth", self.ewidth, 1, 8)
        _uint("lmax", self.lmax, 1 << 32)
        if self.root is not None:
            _uint("root", self.root, 1 << 64)
        if self.shape is not None:
            if not isinstance(self.shape, tuple) or len(self.shape) != 2:
                raise InvalidArgumentError(f"shape is (fanout, depth), got {self.shape!r:.60}")
            _uint("shape fanout", self.shape[0], 1 << 16)
            _uint("shape depth", self.shape[1], DEPTH_MAX + 1)


@record("repl.ae_nodes", version=1)
class AeNodes:
    """Responder -> initiator, the answer to an :class:`AeProbe` of level ``level``: ``root`` (level 0
    only); the positions in the probe's node list of the nodes ``listed`` (gap-coded varints), their
    entry ``counts`` (varints) and ``entries`` (the prefixes, concatenated); and for every other node,
    in order, its descendants' ``hashes`` but the last (concatenated)."""

    sid: int
    level: int
    hashes: bytes = b""
    listed: bytes = b""
    counts: bytes = b""
    entries: bytes = b""
    root: int | None = None

    def __post_init__(self):
        _uint("sid", self.sid, SESSION_ID_MAX)
        _uint("level", self.level, DEPTH_MAX + 1)
        for name in ("hashes", "listed", "counts", "entries"):
            _bytes(name, getattr(self, name))
        if self.root is not None:
            _uint("root", self.root, 1 << 64)


@record("repl.ae_fetch", version=1)
class AeFetch:
    """Initiator -> responder: send the entries of nodes ``nodes`` (breadth-first ids, gap-coded) whose
    hash prefixes (``ewidth`` bytes, ``counts`` per node, concatenated in ``want``) are wanted; and take
    ``pairs`` (flat key, value, ...), the initiator's versions of the keys the responder lacks."""

    sid: int
    nodes: bytes = b""
    counts: bytes = b""
    want: bytes = b""
    ewidth: int = 4
    pairs: tuple = ()

    def __post_init__(self):
        _uint("sid", self.sid, SESSION_ID_MAX)
        for name in ("nodes", "counts", "want"):
            _bytes(name, getattr(self, name))
        _within("ewidth", self.ewidth, 1, 8)
        _pairs(self.pairs)


@record("repl.ae_values", version=1)
class AeValues:
    """Responder -> initiator: ``pairs`` (flat key, value, ...), the wanted entries' values."""

    sid: int
    pairs: tuple = ()

    def __post_init__(self):
        _uint("sid", self.sid, SESSION_ID_MAX)
        _pairs(self.pairs)


# --- byte formats ----------------------------------------------------------------


def write_varints(values) -> bytes:
    """``values`` (ints >= 0) as LEB128 varints, concatenated."""
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read_varints(data: bytes, what: str) -> list[int]:
    """The varints of ``data``; each at most 10 bytes (64 bits)."""
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift >= 70:
                raise CorruptRecordError(f"anti-entropy {what}: a varint longer than 10 bytes")
        else:
            values.append(value)
            value, shift = 0, 0
    if shift:
        raise CorruptRecordError(f"anti-entropy {what}: the last varint is truncated")
    return values


def write_gaps(sorted_indices) -> bytes:
    """Strictly increasing ``sorted_indices`` as the varints of their gaps minus one."""
    prev, gaps = -1, []
    for i in sorted_indices:
        gaps.append(i - prev - 1)
        prev = i
    return write_varints(gaps)


def read_gaps(data: bytes, limit: int, what: str) -> list[int]:
    """The indices :func:`write_gaps` wrote, each checked to be below ``limit``."""
    out, prev = [], -1
    for gap in read_varints(data, what):
        prev += gap + 1
        if prev >= limit:
            raise CorruptRecordError(f"anti-entropy {what}: index {prev} is out of range (< {limit})")
        out.append(prev)
    return out


def read_fixed(data: bytes, width: int, what: str) -> list[int]:
    """``data`` cut into big-endian ints of ``width`` bytes."""
    if len(data) % width:
        raise CorruptRecordError(f"anti-entropy {what}: {len(data)} bytes is not a multiple of {width}")
    return [int.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]


def node_offset(fanout: int, level: int) -> int:
    """Breadth-first id of node 0 of ``level``."""
    return (fanout ** level - 1) // (fanout - 1)


def node_of(fanout: int, depth: int, gid: int) -> tuple[int, int]:
    """``(level, index)`` of the node of breadth-first id ``gid``."""
    for level in range(depth + 1):
        if gid < node_offset(fanout, level + 1):
            return level, gid - node_offset(fanout, level)
    raise CorruptRecordError(f"anti-entropy: node id {gid} is past the tree")


def step_for(fanout: int, depth: int, level: int, step: int) -> int:
    """The levels a probe of ``level`` asking for ``step`` expands: at least one, never past the leaves."""
    return max(1, min(step, depth - level))
