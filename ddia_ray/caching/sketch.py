"""The frequency sketch behind W-TinyLFU admission: 4-bit count-min with aging.

Theory of operation
-------------------
TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache
Admission Policy", ACM ToS 2017) needs an approximate access count of every
key seen recently, including keys no longer cached, in a few bits per key:

* a count-min sketch (Cormode & Muthukrishnan 2005): ``depth`` rows of
  ``width`` counters; a key increments one counter per row and its estimate
  is the minimum over its rows (collisions only ever over-estimate);
* 4-bit saturating counters, two per byte (the paper's observation: telling
  "15 or more" apart is useless for an admission decision);
* conservative update (Estan & Varghese 2002): only the counters equal to
  the current minimum are incremented, which reduces over-estimation;
* aging by reset (paper section 3.3): after ``sample_size`` recorded
  accesses every counter is halved, so the sketch tracks recent frequency,
  not all-time frequency. Halving a byte of two nibbles is one table lookup;
* an optional doorkeeper (section 3.4.2): a Bloom filter absorbs the first
  access of each key, so one-hit wonders never reach the counters; it is
  cleared at every reset.

Row indices come from one 64-bit hash by double hashing (Kirsch &
Mitzenmacher 2006). The hash is stable across processes (blake2b for bytes
and str, a splitmix64 finaliser for ints), unlike Python's salted ``hash``,
so a seeded sketch behaves identically on every run.
"""

from __future__ import annotations

import hashlib
from typing import Hashable

from .._validate import at_least, integer, positive

__all__ = ["FrequencySketch", "stable_hash64"]

_MASK64 = (1 << 64) - 1
_COUNTER_MAX = 15  # 4-bit counters
# Halve both nibbles of a byte at once: shift right, then clear the bit that crossed over.
_HALVE = bytes(((b >> 1) & 0x77) for b in range(256))


def _mix64(z: int) -> int:
    # splitmix64 finaliser (Steele et al., "Fast splittable pseudorandom number generators", 2014).
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stable_hash64(key: Hashable, seed: int = 0) -> int:
    """A 64-bit hash of ``key`` that is the same in every process (unlike ``hash``)."""
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, int) and not isinstance(key, bool):
        return _mix64((key ^ seed) & _MASK64)
    else:
        data = repr(key).encode("utf-8")
    digest = hashlib.blake2b(data, digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little")


class FrequencySketch:
    """Approximate recent access counts (0..15) of arbitrary keys; see the module docstring."""

    __slots__ = ("width", "depth", "sample_size", "seed", "_mask", "_table", "_door", "_door_bits",
                 "_additions", "resets")

    def __init__(self, width: int, *, depth: int = 4, sample_size: int | None = None,
                 doorkeeper: bool = False, seed: int = 0):
        at_least("width", integer("width", width), 1)
        at_least("depth", integer("depth", depth), 1)
        self.seed = integer("seed", seed) & _MASK64
        # A power of two lets a mask replace the modulo.
        self.width = 1 << max(4, (width - 1).bit_length())
        self.depth = depth
        self._mask = self.width - 1
        self.sample_size = 10 * self.width if sample_size is None else positive(
            "sample_size", integer("sample_size", sample_size))
        self._table = bytearray((self.width * depth + 1) // 2)
        self._door_bits = 8 * self.width if doorkeeper else 0
        self._door = bytearray(self._door_bits // 8) if doorkeeper else None
        self._additions = 0
        #: How many times the counters were halved.
        self.resets = 0

    def _indices(self, h: int) -> list[int]:
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1  # odd, so the rows never collapse onto one index
        w, m = self.width, self._mask
        return [row * w + ((h1 + row * h2) & m) for row in range(self.depth)]

    def _door_positions(self, h: int) -> tuple[int, int]:
        # Two probes from the bits the row indices use least.
        rotated = ((h >> 17) | (h << 47)) & _MASK64
        return (rotated % self._door_bits, (rotated >> 32) % self._door_bits)

    def _counter(self, i: int) -> int:
        return (self._table[i >> 1] >> ((i & 1) << 2)) & 0xF

    def increment(self, key: Hashable) -> None:
        """Record one access of ``key`` (may trigger an aging reset)."""
        h = stable_hash64(key, self.seed)
        if self._door is not None:
            a, b = self._door_positions(h)
            door = self._door
            seen = (door[a >> 3] >> (a & 7)) & 1 and (door[b >> 3] >> (b & 7)) & 1
            if not seen:
                door[a >> 3] |= 1 << (a & 7)
                door[b >> 3] |= 1 << (b & 7)
                self._count_addition()
                return
        idx = self._indices(h)
        values = [self._counter(i) for i in idx]
        low = min(values)
        if low < _COUNTER_MAX:
            table = self._table
            for i, v in zip(idx, values):
                if v == low:  # conservative update
                    shift = (i & 1) << 2
                    table[i >> 1] += 1 << shift  # v < 15, so the nibble cannot carry
        self._count_addition()

    def _count_addition(self) -> None:
        self._additions += 1
        if self._additions >= self.sample_size:
            self.reset()

    def frequency(self, key: Hashable) -> int:
        """Estimated recent access count of ``key`` (never under the truth since the last reset, before halving)."""
        h = stable_hash64(key, self.seed)
        estimate = min(self._counter(i) for i in self._indices(h))
        if self._door is not None:
            a, b = self._door_positions(h)
            door = self._door
            if (door[a >> 3] >> (a & 7)) & 1 and (door[b >> 3] >> (b & 7)) & 1:
                estimate += 1
        return estimate

    def reset(self) -> None:
        """Halve every counter, clear the doorkeeper, halve the addition count (paper section 3.3)."""
        self._table = bytearray(self._table.translate(_HALVE))
        if self._door is not None:
            self._door = bytearray(len(self._door))
        self._additions //= 2
        self.resets += 1
