"""The messages of Merkle anti-entropy (:mod:`.anti_entropy`) and their byte formats.

Theory of operation
-------------------
An initiator descends the responder's :class:`~.merkle.MerkleTree` by probes, one round per
``step`` levels, then fetches the responder's differing entries and pushes its own (DDIA 5.5,
"Read repair and anti-entropy"; DeCandia et al. 2007, "Dynamo", 4.7); power sums of the keys
(:mod:`.power_sums`) short-cut the descent when at most 30 keys differ. Each message is a codec
record; every field is checked on construction, so also on decode (a hostile frame raises
:class:`~ddia_ray.errors.CorruptRecordError`). What a field means for a given tree (an index in
range, counts that match the bytes) is checked where it is read, by the same error.

Messages (codec records, tag ``repl.ae_*``, version 2)::

    initiator                                  responder
    AeProbe(level 0, root, shape, sums) ->     AeNodes(root; nothing more if the roots are equal)
                                               AeNodes(root, pairs, ids): the probe's 5 power sums
                                                 named the differing keys (up to 2): their values
                                               AeNodes(root, sums, hashes/listing): 25 sums and the
                                                 first hashes of the descent
    AeProbe(level l, nodes, step, ask?) ->     AeNodes(per node: fanout**step - 1 descendant hashes,
        ... one round per `step` levels         or, for a node of <= lmax keys or a leaf, the
                                                 ewidth-byte prefixes of its entry hashes; and the
                                                 sums asked for, once: up to 30 keys)
    AeFetch(node -> wanted prefixes,   ->      AeValues((key, value) of the wanted entries)
            ids -> every key of the id)
    AeFetch(pairs = pushed values)     ->      AeValues(()): an acknowledgement

The last two merge into one round trip (the fetch carries the pushes) when the initiator could
verify the pass before fetching, or the power sums named every differing key (see
:mod:`.anti_entropy`).

Layout. Each message is a record of one field ``b`` (bytes), so the framing of a round trip is
about 78 bytes rather than the 183 of named msgpack fields (version 1; a version-1 message now
fails to decode with :class:`~ddia_ray.errors.UnknownVersionError`)::

    b       := sid:varint  present:varint  field*    # field i is there iff bit i of present is set
    field   := varint | u64 | blob | pairs | pair    # by the class's _SCHEMA, in its order
    u64     := 8 bytes big-endian
    blob    := length:varint  bytes
    pairs   := count:varint  blob*                   # flat key, value, key, value ...
    pair    := varint varint                         # shape (fanout, depth), ask (first, end)

An absent field takes its default; a bit past the class's fields, a length past the end of ``b``,
a count of items larger than the bytes left, or bytes after the last field is
:class:`~ddia_ray.errors.CorruptRecordError`. Inside the fields: node lists are sorted indices,
each written as the LEB128 varint of its gap to the previous one minus one (``nodes``,
``listed``, AeFetch's ``nodes`` whose ids number the nodes of all levels breadth-first);
``counts`` are varints; hashes and prefixes are fixed-width big-endian, concatenated; ``sums`` are
4-byte big-endian power sums, each below ``P``; ``ids`` 4-byte key ids.

Every varint is at most 10 bytes, and every count is checked against the bytes it describes
before anything is allocated for it, so reading a message costs work in proportion to its size.
Answering a probe costs at most :data:`STEP_DESCENDANTS_MAX` hashes per node it names, and at
most :data:`ANSWER_HASH_BYTES_MAX` bytes of hashes in all (a bigger request is refused as
corrupt: the initiator's cost model never asks for a tenth of it), plus the listed entries.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..codec import record
from ..errors import CorruptRecordError, InvalidArgumentError
from .power_sums import SUM_BYTES, SUMS, P
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


def _sums(name: str, value) -> None:
    if not isinstance(value, bytes) or len(value) % SUM_BYTES or len(value) > SUMS * SUM_BYTES:
        raise InvalidArgumentError(f"{name} are up to {SUMS} power sums of {SUM_BYTES} bytes, got {value!r:.60}")
    for i in range(0, len(value), SUM_BYTES):
        if int.from_bytes(value[i:i + SUM_BYTES], "big") >= P:
            raise InvalidArgumentError(f"{name}: a power sum is not below {P}")


def _ids(value) -> None:
    """Sketch ids, 4 bytes each (:func:`.power_sums.key_id`)."""
    _bytes("ids", value)
    if len(value) % 4:
        raise InvalidArgumentError(f"ids are 4 bytes each, got {len(value)} bytes")


def _pairs(value) -> None:
    if not isinstance(value, tuple) or len(value) % 2:
        raise InvalidArgumentError("pairs must be a flat tuple of key, value, key, value ... bytes")
    for item in value:
        if not isinstance(item, bytes):
            raise InvalidArgumentError(f"pairs hold bytes only, got {type(item).__name__}")


# --- the compact layout of a message ----------------------------------------------------

# A field's kind: "uint" (a varint), "u64" (8 bytes, big-endian), "bytes" (a varint length, then
# the bytes), "pairs" (a varint count, then each item as "bytes"), "shape" (two varints).
_KINDS = ("uint", "u64", "bytes", "pairs", "shape")


def _pack(schema, values: dict) -> bytes:
    """``values`` in the layout of ``schema``: the sid, a varint bitmap of the other fields that differ
    from their defaults, then those fields in order."""
    out, present = bytearray(), 0
    body = bytearray()
    for bit, (name, kind, default) in enumerate(schema[1:]):
        value = values[name]
        if value == default:
            continue
        present |= 1 << bit
        if kind == "uint":
            body += write_varints((value,))
        elif kind == "u64":
            body += value.to_bytes(8, "big")
        elif kind == "bytes":
            body += write_varints((len(value),)) + value
        elif kind == "pairs":
            body += write_varints((len(value),))
            for item in value:
                body += write_varints((len(item),)) + item
        else:
            body += write_varints(value)
    out += write_varints((values[schema[0][0]], present))
    return bytes(out + body)


def _unpack(schema, data: bytes) -> dict:
    """The fields :func:`_pack` wrote; every length is checked against the bytes left before it is used."""
    if not isinstance(data, bytes):
        raise InvalidArgumentError(f"an anti-entropy message is bytes, got {type(data).__name__}")
    at = 0

    def varint() -> int:
        nonlocal at
        value, shift = 0, 0
        while True:
            if at >= len(data):
                raise InvalidArgumentError("truncated: a varint runs past the end")
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift >= 70:
                raise InvalidArgumentError("a varint longer than 10 bytes")

    def blob() -> bytes:
        nonlocal at
        n = varint()
        if n > len(data) - at:
            raise InvalidArgumentError(f"truncated: {n} bytes announced, {len(data) - at} left")
        at += n
        return data[at - n:at]

    values: dict[str, Any] = {schema[0][0]: varint()}
    present = varint()
    if present >> (len(schema) - 1):
        raise InvalidArgumentError(f"fields beyond the {len(schema) - 1} this version defines")
    for bit, (name, kind, default) in enumerate(schema[1:]):
        if not present >> bit & 1:
            values[name] = default
        elif kind == "uint":
            values[name] = varint()
        elif kind == "u64":
            if len(data) - at < 8:
                raise InvalidArgumentError("truncated: a 64-bit field runs past the end")
            values[name] = int.from_bytes(data[at:at + 8], "big")
            at += 8
        elif kind == "bytes":
            values[name] = blob()
        elif kind == "pairs":
            count = varint()
            if count > len(data) - at:  # every item takes at least its length byte
                raise InvalidArgumentError(f"truncated: {count} items announced, {len(data) - at} bytes left")
            items, size = [], len(data)
            for _ in range(count):
                n = data[at] if at < size else 0x80
                if n < 0x80 and at + 1 + n <= size:  # the common case, a short item: no call
                    at += 1 + n
                    items.append(data[at - n:at])
                else:
                    items.append(blob())
            values[name] = tuple(items)
        else:
            values[name] = (varint(), varint())
    if at != len(data):
        raise InvalidArgumentError(f"{len(data) - at} bytes past the last field")
    return values


def _compact(cls):
    """Give a one-field (``b``) message class its fields as properties and an ``of(...)`` constructor."""
    schema = cls._SCHEMA
    names = [name for name, _, _ in schema]
    for index, name in enumerate(names):
        setattr(cls, name, property(lambda self, i=index: self._fields()[i],
                                    doc=f"The message's ``{name}`` field (parsed from ``b``)."))
    # The sid leads the layout: read alone, so that routing a reply does not parse all of it.
    cls.sid = property(_sid, doc="The message's session id (its first varint).")
    return cls


def _sid(message) -> int:
    value = 0
    for shift, byte in zip(range(0, 70, 7), message.b):  # checked on construction: a whole varint
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return value


class _Compact:
    """What the four messages share: one bytes field ``b`` in a compact layout, parsed and checked
    on construction (so on decode), read through properties named as the fields."""

    __slots__ = ()
    if TYPE_CHECKING:  # the fields are properties that _compact adds per class, from _SCHEMA
        def __getattr__(self, name: str) -> Any: ...
    _SCHEMA: tuple = ()  # (name, kind, default) in the layout's order: the fields most often set first
    _ARGS: tuple = ()  # the names in the order ``of`` takes them positionally

    @classmethod
    def of(cls, *args, **kwargs):
        """The message of these field values (positional in the order of ``_ARGS``, or by name)."""
        names = list(cls._ARGS)
        if len(args) > len(names):
            raise InvalidArgumentError(f"{cls.__name__} has {len(names)} fields, got {len(args)} values")
        values = {name: default for name, _, default in cls._SCHEMA}
        for name in kwargs:
            if name not in values:
                raise InvalidArgumentError(f"{cls.__name__} has no field {name!r}")
        values.update(zip(names, args))
        values.update(kwargs)
        for name, _, _ in cls._SCHEMA:
            if values[name] is _REQUIRED:
                raise InvalidArgumentError(f"{cls.__name__} needs its {name!r}")
        cls._check(values)
        return cls(_pack(cls._SCHEMA, values))  # type: ignore[call-arg]

    def view(self) -> SimpleNamespace:
        """Every field parsed at once, as attributes: for a reader of many fields of a long message
        (each property parses ``b`` again)."""
        return SimpleNamespace(**_unpack(self._SCHEMA, self.b))  # type: ignore[attr-defined]

    def _fields(self) -> tuple:
        values = _unpack(self._SCHEMA, self.b)  # type: ignore[attr-defined]
        return tuple(values[name] for name, _, _ in self._SCHEMA)

    def __post_init__(self):
        type(self)._check(_unpack(self._SCHEMA, self.b))  # type: ignore[attr-defined]

    @staticmethod
    def _check(values: dict) -> None:
        raise NotImplementedError


_REQUIRED = object()


@_compact
@record("repl.ae_probe", version=2)
class AeProbe(_Compact):
    """Initiator -> responder: expand nodes ``nodes`` (gap-coded varints) of level ``level`` by ``step``
    levels, hashes ``width`` bytes wide; list nodes of at most ``lmax`` keys as ``ewidth``-byte prefixes.
    At level 0, ``root`` is the initiator's root (as it believes the responder's should be) and
    ``shape`` its ``(fanout, depth)``. In a session's first pass, the level-0 probe carries ``sums``,
    the initiator's power sums ``S_0 .. S_4`` (:mod:`.power_sums`, 4 bytes each), and asks for the
    responder's ``S_0 .. S_24``; a later probe may ``ask`` for the range ``(first, end)`` of them.
    Build one with ``AeProbe.of(sid, level, nodes, step=...)``."""

    b: bytes
    _SCHEMA = (("sid", "uint", _REQUIRED), ("root", "u64", None), ("shape", "shape", None), ("sums", "bytes", b""),
               ("ask", "shape", None), ("step", "uint", 1), ("ewidth", "uint", 4), ("level", "uint", 0),
               ("nodes", "bytes", b"\x00"), ("width", "uint", 2), ("lmax", "uint", 4))
    _ARGS = ("sid", "level", "nodes", "step", "width", "ewidth", "lmax", "root", "shape", "sums", "ask")

    @staticmethod
    def _check(v: dict) -> None:
        _uint("sid", v["sid"], SESSION_ID_MAX)
        _uint("level", v["level"], DEPTH_MAX + 1)
        _bytes("nodes", v["nodes"])
        _within("step", v["step"], 1, DEPTH_MAX)
        _within("width", v["width"], 1, 8)
        _within("ewidth", v["ewidth"], 1, 8)
        _uint("lmax", v["lmax"], 1 << 32)
        if v["root"] is not None:
            _uint("root", v["root"], 1 << 64)
        for name, high in (("shape", (1 << 16, DEPTH_MAX + 1)), ("ask", (SUMS + 1, SUMS + 1))):
            pair = v[name]
            if pair is not None:
                if not isinstance(pair, tuple) or len(pair) != 2:
                    raise InvalidArgumentError(f"{name} is a pair of ints, got {pair!r:.60}")
                _uint(f"{name}[0]", pair[0], high[0])
                _uint(f"{name}[1]", pair[1], high[1])
        if v["ask"] is not None and not v["ask"][0] < v["ask"][1]:
            raise InvalidArgumentError(f"ask is a range (first, end) of sums, first < end, got {v['ask']}")
        _sums("sums", v["sums"])


@_compact
@record("repl.ae_nodes", version=2)
class AeNodes(_Compact):
    """Responder -> initiator, the answer to an :class:`AeProbe` of level ``level``: ``root`` (level 0
    only); the positions in the probe's node list of the nodes ``listed`` (gap-coded varints), their
    entry ``counts`` (varints) and ``entries`` (the prefixes, concatenated); for every other node, in
    order, its descendants' ``hashes`` but the last (concatenated); and the responder's power ``sums``
    the probe asked for. When the probe's own sums named the few differing keys, the level-0 answer
    holds instead only their ``pairs`` (flat key, value, ...) here and the ``ids`` (4 bytes each) of
    those of them this replica does not hold, for the initiator to push."""

    b: bytes
    _SCHEMA = (("sid", "uint", _REQUIRED), ("root", "u64", None), ("pairs", "pairs", ()), ("ids", "bytes", b""),
               ("sums", "bytes", b""), ("level", "uint", 0), ("hashes", "bytes", b""), ("listed", "bytes", b""),
               ("counts", "bytes", b""), ("entries", "bytes", b""))
    _ARGS = ("sid", "level", "hashes", "listed", "counts", "entries", "root", "sums", "pairs", "ids")

    @staticmethod
    def _check(v: dict) -> None:
        _uint("sid", v["sid"], SESSION_ID_MAX)
        _uint("level", v["level"], DEPTH_MAX + 1)
        for name in ("hashes", "listed", "counts", "entries"):
            _bytes(name, v[name])
        if v["root"] is not None:
            _uint("root", v["root"], 1 << 64)
        _sums("sums", v["sums"])
        _ids(v["ids"])
        _pairs(v["pairs"])


@_compact
@record("repl.ae_fetch", version=2)
class AeFetch(_Compact):
    """Initiator -> responder: send the entries of nodes ``nodes`` (breadth-first ids, gap-coded) whose
    hash prefixes (``ewidth`` bytes, ``counts`` per node, concatenated in ``want``) are wanted, and every
    entry of the keys of sketch ids ``ids`` (4 bytes each); and take ``pairs`` (flat key, value, ...),
    the initiator's versions of the keys the responder lacks."""

    b: bytes
    _SCHEMA = (("sid", "uint", _REQUIRED), ("pairs", "pairs", ()), ("ids", "bytes", b""), ("nodes", "bytes", b""),
               ("counts", "bytes", b""), ("want", "bytes", b""), ("ewidth", "uint", 4))
    _ARGS = ("sid", "nodes", "counts", "want", "ewidth", "pairs", "ids")

    @staticmethod
    def _check(v: dict) -> None:
        _uint("sid", v["sid"], SESSION_ID_MAX)
        for name in ("nodes", "counts", "want"):
            _bytes(name, v[name])
        _within("ewidth", v["ewidth"], 1, 8)
        _ids(v["ids"])
        _pairs(v["pairs"])


@_compact
@record("repl.ae_values", version=2)
class AeValues(_Compact):
    """Responder -> initiator: ``pairs`` (flat key, value, ...), the wanted entries' values."""

    b: bytes
    _SCHEMA = (("sid", "uint", _REQUIRED), ("pairs", "pairs", ()))
    _ARGS = ("sid", "pairs")

    @staticmethod
    def _check(v: dict) -> None:
        _uint("sid", v["sid"], SESSION_ID_MAX)
        _pairs(v["pairs"])


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
