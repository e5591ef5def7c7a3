"""Bloom filters for SSTables: built vectorised with NumPy, probed per key in Python.

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

Building computes every probe position for every key with NumPy (from an
Arrow array the CRCs too, see :mod:`.crc`; from Python bytes one ``crc32``
per key, through ``map``) and sets them in a boolean array of ``m`` slots,
packed little-endian into the filter: bit ``p`` is byte ``p >> 3``, mask
``1 << (p & 7)``.
"""

from __future__ import annotations

import math
import zlib
from typing import Iterable

import numpy as np
import pyarrow as pa

from .crc import crc32_of_keys

__all__ = ["BloomFilter", "key_hash"]

_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


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
        h: np.ndarray  # uint64 hashes (NumPy's stubs would promote the shifts below to signed)
        if isinstance(keys, (pa.Array, pa.ChunkedArray)):
            h = crc32_of_keys(keys).astype(np.uint64)
        else:
            h = np.asarray(list(map(zlib.crc32, keys)), np.uint64)
        n = len(h)
        k = cls.probes_for(bits_per_key)
        if n == 0:
            return cls(b"", 0, k)
        m = max(64, int(n * bits_per_key))
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & _M32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & _M32
        h ^= h >> 16
        delta = ((h >> 17) | (h << 15)) & _M32
        bits = np.zeros(m, np.bool_)
        for _ in range(k):
            bits[(h * m) >> 32] = True  # h < 2**32 and m < 2**32: the product fits in 64 bits
            h = (h + delta) & _M32
        return cls(np.packbits(bits, bitorder="little").tobytes(), m, k)

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
