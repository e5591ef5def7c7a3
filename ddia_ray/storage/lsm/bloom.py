"""Bloom filters for SSTables: built vectorised with pyarrow, probed per key in Python.

Theory of operation
-------------------
A point lookup must not open an SSTable that cannot hold its key, so each
table carries a Bloom filter (DDIA ch. 3, "Performance optimizations"). With
``b`` bits per key and ``k = round(b * ln 2)`` probes the false-positive rate
is about ``0.6185 ** b``: 10 bits/key gives ~1 %.

Hashing: ``h = fmix32(crc32(key))`` (the MurmurHash3 finaliser spreads CRC's
linear structure), then double hashing as in LevelDB: probe ``i`` tests bit
``reduce(h + i * delta)`` with ``delta = rotl32(h, 15)`` and the
multiply-shift range reduction ``reduce(x) = (x * m) >> 32`` (no modulo).

Building computes every probe position for every key with pyarrow kernels
(one ``crc32`` per key is the only Python loop) and scatters ``True`` into a
boolean array of ``m`` slots; Arrow stores booleans as a little-endian bitmap,
which *is* the filter: bit ``p`` is byte ``p >> 3``, mask ``1 << (p & 7)``.
"""

from __future__ import annotations

import math
import zlib
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from ..._validate import invariant

__all__ = ["BloomFilter", "key_hash"]

_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _fmix32_vec(h: pa.Array) -> pa.Array:
    h = pc.bit_wise_xor(h, pc.shift_right(h, 16))
    h = pc.bit_wise_and(pc.multiply(h, 0x85EBCA6B), _M32)
    h = pc.bit_wise_xor(h, pc.shift_right(h, 13))
    h = pc.bit_wise_and(pc.multiply(h, 0xC2B2AE35), _M32)
    return pc.bit_wise_xor(h, pc.shift_right(h, 16))


def key_hash(key: bytes) -> int:
    """The 32-bit hash every filter derives its probes from."""
    return _fmix32(zlib.crc32(key))


class BloomFilter:
    """An immutable Bloom filter over byte keys; ``may_contain`` never says no to a member."""

    __slots__ = ("bits", "num_bits", "num_probes")

    def __init__(self, bits: bytes, num_bits: int, num_probes: int):
        if num_bits < 0 or len(bits) * 8 < num_bits or not 1 <= num_probes <= 30:
            raise ValueError("inconsistent bloom filter parameters")
        self.bits = bytes(bits)
        self.num_bits = num_bits
        self.num_probes = num_probes

    @staticmethod
    def probes_for(bits_per_key: float) -> int:
        """The probe count that minimises false positives for ``bits_per_key``."""
        return max(1, min(30, round(bits_per_key * math.log(2))))

    @classmethod
    def build(cls, keys: "pa.Array | Iterable[bytes]", bits_per_key: float = 10.0) -> "BloomFilter":
        """A filter holding every key of ``keys`` (a binary Arrow array or an iterable of bytes)."""
        if isinstance(keys, (pa.Array, pa.ChunkedArray)):
            keys = keys.to_pylist()
        crc = list(map(zlib.crc32, keys))
        n = len(crc)
        k = cls.probes_for(bits_per_key)
        if n == 0:
            return cls(b"", 0, k)
        m = max(64, int(n * bits_per_key))
        h = _fmix32_vec(pa.array(crc, pa.uint64()))
        delta = pc.bit_wise_and(pc.bit_wise_or(pc.shift_right(h, 17), pc.shift_left(h, 15)), _M32)
        positions = []
        for i in range(k):
            hi = h if i == 0 else pc.bit_wise_and(pc.add(h, pc.multiply(delta, i)), _M32)
            positions.append(pc.shift_right(pc.multiply(hi, m), 32))
        pos = pa.chunked_array(positions).combine_chunks()
        ones = pc.equal(pos, pos)  # an all-True boolean array of the same length
        bitmap = pc.fill_null(pc.scatter(ones, pos, max_index=m - 1), False)
        invariant(bitmap.offset == 0, "scatter returned a sliced bitmap")
        return cls(bitmap.buffers()[1].to_pybytes()[: (m + 7) // 8], m, k)

    def may_contain(self, key: bytes) -> bool:
        """False only if ``key`` was certainly not added."""
        return self.may_contain_hash(key_hash(key))

    def may_contain_hash(self, h: int) -> bool:
        """:meth:`may_contain` for a key whose :func:`key_hash` is ``h`` (hash once, probe many filters)."""
        m = self.num_bits
        if m == 0:
            return False
        delta = ((h >> 17) | (h << 15)) & _M32
        bits = self.bits
        for _ in range(self.num_probes):
            p = (h * m) >> 32
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
            h = (h + delta) & _M32
        return True
