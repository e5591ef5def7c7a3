"""A seeded byte mutator: every input is a pure function of ``(seed bytes, random.Random)``.

Theory of operation
-------------------
A fuzz input is a valid file or payload (a *seed*, built through the public
APIs) with one to three *mutations* applied. Each mutation is a small record
(:class:`Mutation`) so a failure can say exactly what was done to the bytes;
replaying the same seed and iteration rebuilds the same ``random.Random`` and
so the same mutations (the campaign never reads a clock or the global random).

The operators are the damage real storage and real attackers produce:

=============  =================================================================
``flip``       one bit flipped (media errors, a bad cable)
``set``        one byte set to an "interesting" value (0, 0x7f, 0x80, 0xff, ...)
``truncate``   the file cut short (a torn append, a crash before the tail landed)
``zero``       a range zeroed, possibly to the end (unwritten pages, preallocation)
``splice``     a range copied over another (a misdirected write)
``dup``        a range inserted again (a replayed append, a duplicated page)
``delete``     a range removed (a lost write in the middle of a stream)
``insert``     random bytes inserted
``huge``       a length field set to 0xffffffff / 2**31 / 2**31-1 (little or big endian),
               or a msgpack header claiming a huge bin/str/array/map/ext
=============  =================================================================

Offsets are drawn uniformly half of the time and near a *hint* (a frame or page
boundary, a header field) the other half: damage to headers is where parsers
are weakest, and uniform offsets would rarely land there in a big file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Mutation", "OPERATORS", "mutate", "apply_one"]

_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC1, 0xC7, 0xD4, 0xDC, 0xDD, 0xDE, 0xDF, 0x91, 0x81)
_HUGE_INTS = (0xFFFFFFFF, 1 << 31, (1 << 31) - 1, 0xFFFFFFF0)
# msgpack headers that announce far more data than any input holds: bin32, str32, array32, map32, ext32.
_HUGE_MSGPACK = (b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xdd\x80\x00\x00\x00",
                 b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xdc\xff\xff", b"\xde\xff\xff")
_MAX_RANGE = 256


@dataclass(frozen=True)
class Mutation:
    """One operator applied at ``offset``: ``length`` bytes touched, ``detail`` says what was written."""

    op: str
    offset: int
    length: int = 0
    detail: str = ""

    def describe(self) -> str:
        """A short human-readable form, e.g. ``flip@37(bit 3)``."""
        extra = f"({self.detail})" if self.detail else ""
        size = f"+{self.length}" if self.length else ""
        return f"{self.op}@{self.offset}{size}{extra}"


def _offset(rng: random.Random, n: int, hints: tuple) -> int:
    """An offset in ``[0, n)``: uniform, or within a few bytes of a hint (boundaries, header fields)."""
    if n <= 0:
        return 0
    usable = [h for h in hints if 0 <= h < n]
    if usable and rng.random() < 0.5:
        return min(n - 1, max(0, rng.choice(usable) + rng.choice((0, 0, 0, 1, 2, 4, 8, -1))))
    return rng.randrange(n)


def _span(rng: random.Random, n: int) -> int:
    return max(1, min(n, int(rng.paretovariate(1.2)) if rng.random() < 0.8 else rng.randint(1, _MAX_RANGE)))


def _flip(rng, data: bytearray, hints):
    i = _offset(rng, len(data), hints)
    bit = rng.randrange(8)
    data[i] ^= 1 << bit
    return data, Mutation("flip", i, 1, f"bit {bit}")


def _set(rng, data: bytearray, hints):
    i = _offset(rng, len(data), hints)
    value = rng.choice(_INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
    data[i] = value
    return data, Mutation("set", i, 1, f"0x{value:02x}")


def _truncate(rng, data: bytearray, hints):
    cut = _offset(rng, len(data), hints)
    return data[:cut], Mutation("truncate", cut, len(data) - cut)


def _zero(rng, data: bytearray, hints):
    i = _offset(rng, len(data), hints)
    length = len(data) - i if rng.random() < 0.25 else min(len(data) - i, _span(rng, len(data)))
    data[i:i + length] = bytes(length)
    return data, Mutation("zero", i, length)


def _splice(rng, data: bytearray, hints):
    src = _offset(rng, len(data), hints)
    dst = _offset(rng, len(data), hints)
    length = min(_span(rng, len(data)), len(data) - src, len(data) - dst)
    data[dst:dst + length] = data[src:src + length]
    return data, Mutation("splice", dst, length, f"from {src}")


def _dup(rng, data: bytearray, hints):
    src = _offset(rng, len(data), hints)
    length = min(_span(rng, len(data)), len(data) - src)
    dst = _offset(rng, len(data) + 1, hints) if rng.random() < 0.8 else len(data)
    data[dst:dst] = data[src:src + length]
    return data, Mutation("dup", dst, length, f"copy of {src}")


def _delete(rng, data: bytearray, hints):
    i = _offset(rng, len(data), hints)
    length = min(_span(rng, len(data)), len(data) - i)
    del data[i:i + length]
    return data, Mutation("delete", i, length)


def _insert(rng, data: bytearray, hints):
    i = _offset(rng, len(data) + 1, hints)
    blob = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    data[i:i] = blob
    return data, Mutation("insert", i, len(blob), blob.hex())


def _huge(rng, data: bytearray, hints):
    i = _offset(rng, len(data), hints)
    if rng.random() < 0.5:
        value = rng.choice(_HUGE_INTS)
        blob = value.to_bytes(4, rng.choice(("little", "big")))
    else:
        blob = rng.choice(_HUGE_MSGPACK)
    if rng.random() < 0.7:
        data[i:i + len(blob)] = blob  # overwrite a header field in place
        op = "huge"
    else:
        data[i:i] = blob
        op = "huge-insert"
    return data, Mutation(op, i, len(blob), blob.hex())


#: Operator name -> (weight, function). In-place damage dominates: it keeps the framing aligned,
#: so it reaches deeper into a parser than shifts, which most inputs reject at the first frame.
OPERATORS = {
    "flip": (6, _flip), "set": (4, _set), "truncate": (3, _truncate), "zero": (3, _zero),
    "splice": (2, _splice), "dup": (2, _dup), "delete": (1, _delete), "insert": (1, _insert),
    "huge": (3, _huge),
}


def apply_one(rng: random.Random, data: bytes, hints: tuple = (), *, op: str | None = None) -> tuple[bytes, Mutation]:
    """Apply one operator (``op``, or one drawn by weight) to ``data``; returns the new bytes and the record."""
    if op is None:
        names = list(OPERATORS)
        op = rng.choices(names, weights=[OPERATORS[n][0] for n in names])[0]
    buf = bytearray(data)
    if not buf and op not in ("insert", "dup", "huge"):
        op = "insert"  # nothing to damage: grow instead
    out, mutation = OPERATORS[op][1](rng, buf, hints)
    return bytes(out), mutation


def mutate(rng: random.Random, data: bytes, hints: tuple = (), *, max_ops: int = 3) -> tuple[bytes, tuple]:
    """One to ``max_ops`` mutations of ``data`` (one most often: a single fault is the common case)."""
    count = 1 if rng.random() < 0.6 else rng.randint(1, max_ops)
    done = []
    for _ in range(count):
        data, m = apply_one(rng, data, hints)
        done.append(m)
    return data, tuple(done)
