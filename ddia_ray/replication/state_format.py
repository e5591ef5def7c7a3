"""The bytes of a key's versions: what a versioned replica stores, hashes, logs and sends.

Theory of operation
-------------------
A multi-leader or leaderless replica handles a key's state (:mod:`.versions`) as bytes at every
step of a write: the coordinator encodes it once, each other replica decodes it to merge it, and
all of them store those bytes, log them and hash them into their Merkle trees (:mod:`.merkle`),
whose sums agree only if equal states are equal bytes everywhere. So the encoding is canonical (a
state has one), checked on read like anything from the wire or the disk, and cheap.

* **Format 2** (written): a :class:`~ddia_ray.clocks.dotted.DVVSet` whose values are all
  :class:`~.resolvers.Sibling` is the msgpack array ``[2, entries, anonymous]``, ``entries`` as
  ``[[node, counter, [sibling, ...]], ...]`` and a sibling as ``[value, timestamp, node,
  logical]``. Positional, with the format number first: for a 100-byte value the state is 126
  bytes where the codec's self-describing record took 220, and it reads in 1.4 us against 6.1 us
  and writes in 2.0 us against 4.2 us (this machine, 2026-12-06, docs/conflicts.md). A replica
  decodes the state of every write it receives, so this is a replica's largest cost per write.
* **Format 1** (read): the codec's record of the DVVSet (``clock.dvvset``), what replicas wrote
  before format 2, and what a DVVSet holding other values is still written as.
* CRDT states are the CRDT's own record (:func:`ddia_ray.crdt.encode`).

A reader knows format 2 by its first two bytes (a three-element array whose first element is 2);
an array naming another format raises :class:`~ddia_ray.errors.UnknownVersionError`. Every value
is checked as :class:`~ddia_ray.clocks.dotted.DVVSet` and :class:`~.resolvers.Sibling` check
theirs, in time and memory linear in the bytes' length; anything else raises
:class:`~ddia_ray.errors.CorruptRecordError`.

Bytes of format 1 met on recovery or from an older replica are re-encoded before a replica hashes
or keeps them (:func:`current`), so the trees of upgraded replicas agree. During a rolling upgrade
an old and a new replica hash the same state differently: anti-entropy between them exchanges
keys that merge to no change, until the old one is upgraded and restarted.

Pure: no Ray, no clock.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .. import codec, crdt
from ..clocks import DVVSet
from ..clocks.dotted import COUNTER_MAX, NODE_ID_CHARS_MAX, NODES_MAX, VALUES_MAX, _canonical
from ..crdt.base import from_state
from ..errors import CorruptRecordError, UnknownVersionError
from .resolvers import Sibling

__all__ = ["STATE_FORMAT", "encode_state", "decode_state", "current", "new_states"]

#: The format :func:`encode_state` writes for a DVVSet of siblings.
STATE_FORMAT = 2
_HEAD = b"\x93\x02"  # a fixarray of 3, then the fixint 2
_ARRAY3 = 0x93
_sibling = codec.prechecked_maker(Sibling)
_dvvset = codec.prechecked_maker(DVVSet)


def encode_state(state: Any) -> bytes:
    """A key's state as bytes: a DVVSet of siblings in format 2, a CRDT as its record, any other DVVSet
    as the codec's record (format 1)."""
    if type(state) is DVVSet:
        entries = []
        for node, counter, values in state.entries:
            rows = _rows(values)
            if rows is None:
                return codec.encode(state)  # values that are not siblings: the codec's record
            entries.append((node, counter, rows))
        anonymous = _rows(state.anonymous)
        if anonymous is None:
            return codec.encode(state)
        return msgpack.packb((STATE_FORMAT, entries, anonymous), use_bin_type=True)
    return crdt.encode(state) if isinstance(state, crdt.CRDT) else codec.encode(state)


def new_states(node: str, values: tuple | list, wall_ns: int, logical: int) -> list[bytes]:
    """The bytes :func:`encode_state` gives, for each ``values[i]``, of the state of a key whose first
    write ``node`` coordinates with that value, stamped ``(wall_ns, logical + i)``: one entry
    ``(node, 1)`` holding that one sibling (``versions._new_state``). Built from the packed pieces
    that every such state shares, a third of the time of packing each state whole (a batch of new
    keys is the common bulk write); equal bytes, so every replica stores and hashes the same."""
    pack = msgpack.Packer(use_bin_type=True).pack  # one per call: a Packer is not safe across threads
    head = b"\x93\x02\x91\x93" + pack(node) + b"\x01\x91\x94"  # [2, [[node, 1, [[
    middle = pack(wall_ns) + pack(node)
    return [head + pack(v) + middle + pack(logical + i) + b"\x90" for i, v in enumerate(values)]


def _rows(values: tuple) -> list | None:
    """``values`` as format 2's sibling rows; None if one is not a :class:`~.resolvers.Sibling`."""
    rows = []
    for v in values:
        if type(v) is not Sibling:
            return None
        rows.append((v.value, v.timestamp, v.node, v.logical))
    return rows


def decode_state(data: bytes) -> Any:
    """The inverse of :func:`encode_state` (and the reader of format 1), validated."""
    if type(data) is bytes and data[:1] == b"\x93":
        if data[:2] == _HEAD:
            return _read(data)
        version = _format_of(data)
        raise UnknownVersionError("repl.state", version, f"formats 1 and {STATE_FORMAT}")
    obj = codec.decode(data)
    if isinstance(obj, DVVSet):
        return obj
    if isinstance(obj, crdt.CRDTState):  # a CRDT's record, decoded once: rebuilt (and checked) by its kind
        return from_state(obj)
    return crdt.decode(data)  # anything else: refused with decode's own error


def current(data: bytes, state: Any) -> bytes:
    """``data`` (the bytes ``state`` was decoded from) as :func:`encode_state` writes that state now:
    ``data`` itself unless it is a DVVSet of an older format, which is encoded again."""
    if type(state) is DVVSet and data[:2] != _HEAD:
        return encode_state(state)
    return data


def _format_of(data: bytes) -> int:
    try:
        first = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)[0]
    except Exception:  # noqa: BLE001 - bytes that are not even an array: corrupt, not another format
        raise CorruptRecordError("a key's versions are not valid msgpack") from None
    if type(first) is not int:
        raise CorruptRecordError(f"a key's versions name no format (got a {type(first).__name__})")
    return first


def _corrupt(what: str) -> CorruptRecordError:
    return CorruptRecordError(f"a key's versions (format {STATE_FORMAT}): {what}")


def _read(data: bytes) -> DVVSet:
    try:
        top = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types on garbage
        raise _corrupt(f"not valid msgpack ({type(e).__name__}: {e})") from None
    if type(top) is not tuple or len(top) != 3 or type(top[1]) is not tuple or type(top[2]) is not tuple:
        raise _corrupt("not [format, entries, anonymous]")
    _, entries, anonymous = top
    if len(entries) > NODES_MAX:
        raise _corrupt(f"{len(entries)} entries, over {NODES_MAX}")
    total = len(anonymous)
    previous = ""
    out = []
    for entry in entries:
        if type(entry) is not tuple or len(entry) != 3:
            raise _corrupt("an entry is not [node, counter, siblings]")
        node, counter, values = entry
        if type(node) is not str or not node or len(node) > NODE_ID_CHARS_MAX:
            raise _corrupt(f"an entry's node is not a str of 1 to {NODE_ID_CHARS_MAX} characters")
        if node <= previous:
            raise _corrupt("entries are not sorted by node, each node once")
        if type(counter) is not int or not 1 <= counter <= COUNTER_MAX:
            raise _corrupt(f"the counter of {node!r:.40} is not an int in [1, 2**63 - 1]")
        if type(values) is not tuple or len(values) > counter:
            raise _corrupt(f"entry {node!r:.40} holds more siblings than its counter, or not a list")
        previous = node
        total += len(values)
        out.append((node, counter, tuple(map(_sibling_of, values))))
    if total > VALUES_MAX:
        raise _corrupt(f"{total} siblings, over {VALUES_MAX}")
    anon = tuple(map(_sibling_of, anonymous))
    if len(anon) > 1 and _canonical(anon) != anon:
        raise _corrupt("anonymous siblings are not in their canonical order")
    return _dvvset(tuple(out), anon)


def _sibling_of(v: Any) -> Sibling:
    if type(v) is not tuple or len(v) != 4:
        raise _corrupt("a sibling is not [value, timestamp, node, logical]")
    value, timestamp, node, logical = v
    if value is not None and type(value) is not bytes:
        raise _corrupt(f"a sibling's value is a {type(value).__name__}, not bytes or nil")
    if type(timestamp) is not int or type(node) is not str or type(logical) is not int or logical < 0:
        raise _corrupt("a sibling's timestamp, node or logical counter has the wrong type or a negative counter")
    return _sibling(value, timestamp, node, logical)
