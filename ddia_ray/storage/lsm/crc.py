"""CRC-32 of every key of a binary Arrow array at once, bit-identical to ``zlib.crc32``.

Theory of operation
-------------------
For messages of one length ``L``, CRC-32 (with its initial and final inversion)
is affine over GF(2): ``crc(a ^ b) = crc(a) ^ crc(b) ^ crc(0^L)``. So the CRC of
an ``L``-byte key is ``crc(0^L)`` XOR, for every position ``j``, a table entry
``T[j][byte_j] = crc(byte_j at j, zeros elsewhere) ^ crc(0^L)`` — ``L`` gathers
from 256-entry tables per key, which NumPy does for a million keys in a few
tens of milliseconds, against a Python object and a ``zlib.crc32`` call per key.

When every key has the same length the keys are a contiguous byte matrix, read
two bytes at a time through 65,536-entry tables ``T[j][b0] ^ T[j+1][b1]`` (half
the gathers; 256 KiB per table stays in cache). Otherwise keys are grouped by
length. The tables of a length are built once (``256 * L`` ``zlib.crc32``
calls) and cached. Lengths above :data:`MAX_TABLE_BYTES` and
groups too small to pay for their tables go through ``zlib.crc32`` per key.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pyarrow as pa

__all__ = ["crc32_of_keys", "MAX_TABLE_BYTES"]

#: Keys longer than this are hashed per key (their tables would cost more than they save).
MAX_TABLE_BYTES = 64
_MIN_GROUP_ROWS = 256  # below this many keys of one length, building that length's tables costs more


@functools.lru_cache(maxsize=MAX_TABLE_BYTES + 1)
def _tables(length: int) -> tuple[int, np.ndarray]:
    """``(crc(0^length), T)`` with ``T[j][b]`` as in the module docstring, shape ``(length, 256)``."""
    zero = zlib.crc32(bytes(length))
    t = np.empty((length, 256), np.uint32)
    msg = bytearray(length)
    for j in range(length):
        for b in range(256):
            msg[j] = b
            t[j, b] = zlib.crc32(msg) ^ zero
        msg[j] = 0
    return zero, t


@functools.lru_cache(maxsize=MAX_TABLE_BYTES + 1)
def _pair_tables(length: int) -> tuple[np.ndarray, ...]:
    """For even ``length``: per byte pair ``i``, ``P[b0 + 256 * b1] = T[2i][b0] ^ T[2i+1][b1]``."""
    _, t = _tables(length)
    return tuple((t[j][None, :] ^ t[j + 1][:, None]).reshape(-1) for j in range(0, length, 2))


def crc32_of_keys(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``zlib.crc32`` of every value of a binary array without nulls, as a ``uint32`` array."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if not pa.types.is_binary(keys.type):
        raise TypeError(f"crc32_of_keys needs a binary array, got {keys.type}")
    n = len(keys)
    out = np.zeros(n, np.uint32)  # crc32(b"") == 0
    if n == 0:
        return out
    offsets = np.frombuffer(keys.buffers()[1], np.int32, n + 1, keys.offset * 4).astype(np.int64)
    data = keys.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    first = int(lengths[0])
    uniform = bool((lengths == first).all())
    for length in ([first] if uniform else np.unique(lengths).tolist()):
        rows = None if uniform else np.flatnonzero(lengths == length)
        count = n if rows is None else len(rows)
        if length == 0:
            continue
        if length > MAX_TABLE_BYTES or count < _MIN_GROUP_ROWS:
            # An ndarray is a buffer; NumPy's stubs declare __buffer__ only for Python >= 3.12.
            for i in (range(n) if rows is None else rows.tolist()):
                out[i] = zlib.crc32(data[offsets[i]:offsets[i + 1]])  # type: ignore[arg-type]
            continue
        zero, table = _tables(length)
        if rows is None:  # one length: the keys are a contiguous (n, length) byte matrix
            base = int(offsets[0])
            matrix = data[base:base + n * length].reshape(n, length)
            if length % 2 == 0:  # little-endian uint16 pairs index the pair tables: b0 + 256 * b1
                pairs = (matrix if base % 2 == 0 else matrix.copy()).view("<u2")
                for i, pair_table in enumerate(_pair_tables(length)):
                    out ^= pair_table[pairs[:, i]]
            else:
                for j in range(length):
                    out ^= table[j][matrix[:, j]]
            out ^= np.uint32(zero)
        else:
            starts = offsets[rows]
            h = np.full(count, zero, np.uint32)
            for j in range(length):
                h ^= table[j][data[starts + j]]
            out[rows] = h
    return out
