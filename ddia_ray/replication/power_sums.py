"""Power sums of a replica's keys: the few keys two replicas differ in, named in one message.

Theory of operation
-------------------
A Merkle descent (:mod:`.anti_entropy`) pays one round trip per ``step`` levels whatever the number
``d`` of differing keys; for a handful of keys those rounds cost more than the keys themselves.
Set reconciliation by power sums (the characteristic-polynomial method of Minsky, Trachtenberg and
Zippel 2003, in the weighted form of a Reed-Solomon syndrome decoder) names up to ``t`` differing
keys from ``2t + 1`` numbers, with no round trip in between.

Each key is a point ``x = id + 1`` (``id`` = the top :data:`ID_BITS` bits of its key hash,
:func:`key_id`, so the id also names its Merkle node) with a weight ``w = entry_hash mod P``
(``P = 2**32 - 5``, a prime). A replica keeps ``S_j = sum(w * x**j) mod P`` for ``j < SUMS``
(:data:`SUMS` = 61). Subtract the peer's sums from yours: the keys both hold alike cancel, and
what is left is ``D_j = sum(w_i * x_i**j)`` over the keys whose values differ, ``w_i`` the
difference of their weights (both versions of a key changed on both sides make one term). If at
most ``t`` keys differ, ``D_0 .. D_2t`` determine them: Berlekamp-Massey finds the recurrence
``D`` obeys, whose characteristic polynomial has the ``x_i`` as roots (found by Cantor-Zassenhaus
splitting over GF(P)), and a Vandermonde system gives the ``w_i``. :func:`decode` refuses (None)
when the recurrence needs more than ``(L - 1) / 2`` terms for ``L`` sums (the last sum is then a
check, wrong with probability about ``1/P``) or its polynomial does not split into distinct roots
that are ids: more keys differ than the sums can name, and the exchange falls back to the descent.
A wrong decode is caught by the exchange's check of the full 64-bit root.

Updates are O(SUMS): a write adds ``(new - old) * x**j`` of its weights to each sum
(:meth:`PowerSums.add`), buffered until the sums are read so that many writes fold at once in
numpy (about 1 us a write, against 9 us for 61 Python steps); :meth:`PowerSums.from_arrays` sums a
storage scan with numpy. Wire form:
4 bytes a sum, big-endian; :func:`read_sums` checks each is below ``P``. Decoding ``t`` keys costs
O(t**2) for the recurrence and O(t**2 log P) per round of splitting the polynomial (about
``log2 t + 3`` rounds; the products run as big-int multiplications): in pure Python, under 0.1 ms
for t <= 2 (the quadratic formula), about 1 ms at t = 3, 4 ms at 12 and 17 ms at 30.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

from typing import Iterable

from ..errors import CorruptRecordError

__all__ = ["PowerSums", "P", "SUMS", "SUM_BYTES", "ID_BITS", "key_id", "read_sums", "decode"]

#: The prime modulus of the sums (2**32 - 5): sums travel as 4 bytes.
P = 4294967291
#: Sums a replica keeps: up to (SUMS - 1) // 2 = 30 differing keys decode from them.
SUMS = 61
#: Bytes a sum takes on the wire.
SUM_BYTES = 4
#: Bits of a key id (the top bits of its key hash).
ID_BITS = 31
#: Writes buffered before they are folded into the sums (and the fold's numpy sums cannot wrap).
_PENDING_MAX = 1 << 16
#: Below this many buffered writes, a fold loops in Python (numpy's fixed cost is ~100 us a fold).
_FOLD_NUMPY_MIN = 64
_SPLIT_TRIES = 64  # rounds of splitting: each halves every factor but with probability 2**-(roots - 1)


def key_id(kh: int) -> int:
    """The id of a key of 64-bit key hash ``kh``: its top :data:`ID_BITS` bits."""
    return kh >> (64 - ID_BITS)


class PowerSums:
    """The sums ``S_j`` of one replica's keys (see the module doc), kept up to date by :meth:`add`.

    Writes are buffered and folded into the sums when they are next read (or the buffer is full):
    a fold of many writes runs in numpy, so a write costs about a microsecond, not SUMS steps."""

    __slots__ = ("_s", "_xs", "_ts")

    def __init__(self) -> None:
        self._s = [0] * SUMS
        # Writes not yet folded in, as two columns (x = id + 1, t = weight mod P): numpy reads a list
        # of ints in one C pass, where a list of pairs took a generator pass per column.
        self._xs: list[int] = []
        self._ts: list[int] = []

    def add(self, kid: int, dw: int) -> None:
        """Add ``dw`` (the change of a key's weight: new entry hash minus old, any int) for the key of
        id ``kid``. O(1), and O(SUMS) amortized when the sums are read."""
        t = dw % P
        if t:
            self._xs.append(kid + 1)
            self._ts.append(t)
            if len(self._xs) >= _PENDING_MAX:
                self._fold()

    def add_many(self, kids: Iterable[int], dws: Iterable[int]) -> None:
        """:meth:`add` for each ``(kids[i], dws[i])``, in one pass (a weight of 0 mod P adds nothing,
        and is kept all the same: it changes no sum)."""
        self._xs.extend([kid + 1 for kid in kids])
        self._ts.extend([dw % P for dw in dws])
        if len(self._xs) >= _PENDING_MAX:
            self._fold()

    def _fold(self) -> None:
        xs_list, ts_list = self._xs, self._ts
        if not xs_list:
            return
        self._xs, self._ts = [], []
        s = self._s
        if len(xs_list) < _FOLD_NUMPY_MIN:
            for x, t in zip(xs_list, ts_list):
                for j in range(SUMS):
                    s[j] = (s[j] + t) % P
                    t = t * x % P
            return
        import numpy as np

        p = np.uint64(P)
        xs = np.array(xs_list, dtype=np.uint64)
        ts = np.array(ts_list, dtype=np.uint64)
        for j in range(SUMS):  # at most _PENDING_MAX values below 2**32 a sum: no wrap
            s[j] = (s[j] + int(ts.sum(dtype=np.uint64))) % P
            ts = ts * xs % p

    @classmethod
    def from_arrays(cls, ids, hashes) -> "PowerSums":
        """The sums of the keys of ids ``ids`` and entry hashes ``hashes`` (numpy uint64 arrays)."""
        sums = cls()
        if len(ids) < _FOLD_NUMPY_MIN:  # a small scan: numpy's fixed cost per sum is more than the loop
            for kid, h in zip(ids.tolist(), hashes.tolist()):
                sums.add(kid, h)
            sums._fold()
            return sums
        import numpy as np  # only large builds need it

        p = np.uint64(P)
        x = ids.astype(np.uint64) + np.uint64(1)  # < 2**31 + 1: products with values < P stay below 2**64
        t = hashes.astype(np.uint64) % p
        for j in range(SUMS):
            # Chunks of 2**31 values below 2**32 sum below 2**63: no wrap before the modulo.
            total = 0
            for start in range(0, len(t), 1 << 31):
                total += int(t[start:start + (1 << 31)].sum(dtype=np.uint64))
            sums._s[j] = total % P
            t = t * x % p
        return sums

    def copy(self) -> "PowerSums":
        """An independent copy."""
        other = PowerSums.__new__(PowerSums)
        other._s, other._xs, other._ts = list(self._s), list(self._xs), list(self._ts)  # folded when read
        return other

    def sums(self, first: int = 0, end: int = SUMS) -> list[int]:
        """Sums ``S_first .. S_(end - 1)``."""
        self._fold()
        return self._s[first:end]

    def to_bytes(self, first: int = 0, end: int = SUMS) -> bytes:
        """Sums ``S_first .. S_(end - 1)``, 4 bytes each."""
        self._fold()
        return b"".join(s.to_bytes(SUM_BYTES, "big") for s in self._s[first:end])

    def __eq__(self, other: object) -> bool:
        """Equal when every sum is."""
        if not isinstance(other, PowerSums):
            return NotImplemented
        self._fold()
        other._fold()
        return self._s == other._s

    __hash__ = None  # type: ignore[assignment]  # mutable


def read_sums(data: bytes, what: str) -> list[int]:
    """Sums from their wire form, each checked to be below ``P``."""
    if len(data) % SUM_BYTES or len(data) > SUMS * SUM_BYTES:
        raise CorruptRecordError(f"anti-entropy {what}: {len(data)} bytes are not up to {SUMS} sums of 4")
    out = [int.from_bytes(data[i:i + SUM_BYTES], "big") for i in range(0, len(data), SUM_BYTES)]
    if out and max(out) >= P:
        raise CorruptRecordError(f"anti-entropy {what}: a sum of {max(out)} is not below {P}")
    return out


# --- decoding ---------------------------------------------------------------------------------


def decode(mine: list[int], theirs: list[int]) -> list[tuple[int, int]] | None:
    """``(id, w)`` of every key whose values differ between the replicas of sums ``mine`` and
    ``theirs`` (the same count of them, from ``S_0``), ``w`` = my weight minus theirs mod P; or None
    if more keys differ than these sums can name. Empty when every sum is equal."""
    if len(mine) != len(theirs) or not mine:
        raise CorruptRecordError(f"anti-entropy: {len(mine)} sums against {len(theirs)}")
    d = [(a - b) % P for a, b in zip(mine, theirs)]
    if not any(d):
        return []
    conn = _berlekamp_massey(d)
    t = len(conn) - 1
    if 2 * t >= len(d):
        return None  # no sum is left to check the recurrence: too many keys differ
    # conn(z) = prod(1 - x_i z): its reverse is prod(z - x_i), monic.
    f = conn[::-1]
    roots = _roots(f)
    if roots is None or len(roots) != t or any(not 1 <= x <= 1 << ID_BITS for x in roots):
        return None
    weights = _vandermonde(roots, d[:t])
    if weights is None or not all(weights):
        return None
    return [(x - 1, w) for x, w in zip(roots, weights)]


def _berlekamp_massey(s: list[int]) -> list[int]:
    """The shortest connection polynomial ``C`` (``C[0] = 1``) with ``sum(C[i] s[n - i]) = 0``."""
    c, b = [1], [1]
    length, m, bb = 0, 1, 1
    for n in range(len(s)):
        delta = s[n]
        for i in range(1, length + 1):
            delta = (delta + c[i] * s[n - i]) % P
        if not delta:
            m += 1
            continue
        coef = delta * pow(bb, -1, P) % P
        t = list(c)
        if len(c) < len(b) + m:
            c += [0] * (len(b) + m - len(c))
        for i, bi in enumerate(b):
            c[i + m] = (c[i + m] - coef * bi) % P
        if 2 * length <= n:
            length, b, bb, m = n + 1 - length, t, delta, 1
        else:
            m += 1
    return (c + [0] * (length + 1))[:length + 1]


def _trim(a: list[int]) -> list[int]:
    while a and not a[-1]:
        a.pop()
    return a


def _mod(a: list[int], f: list[int]) -> list[int]:
    """``a`` mod the monic ``f`` (coefficients low to high)."""
    a = list(a)
    n = len(f) - 1
    for i in range(len(a) - 1, n - 1, -1):
        c = a[i]
        if c:
            for j in range(n):
                a[i - n + j] = (a[i - n + j] - c * f[j]) % P
        a[i] = 0
    return _trim(a[:n] if len(a) > n else a)


# Polynomials modulo f are multiplied by Kronecker substitution: coefficients packed into one int,
# 12 bytes a slot (a slot sums at most SUMS products below P**2 < 2**64: far below 2**96), so that
# the O(n**2) work runs inside CPython's integer multiply rather than in Python loops.
_SLOT = 12


def _pack(a: list[int]) -> int:
    return int.from_bytes(b"".join(c.to_bytes(_SLOT, "little") for c in a), "little")


def _unpack(x: int, n: int) -> list[int]:
    data = x.to_bytes(_SLOT * n, "little")
    return [int.from_bytes(data[i:i + _SLOT], "little") % P for i in range(0, _SLOT * n, _SLOT)]


class _Ring:
    """Arithmetic modulo the monic ``f``: ``z**k mod f`` for the k a product reaches, packed once."""

    def __init__(self, f: list[int]):
        self.f, self.n = f, len(f) - 1
        n = self.n
        rows, row = [], _mod([0] * n + [1], f)  # z**n mod f
        for _ in range(n - 1):
            rows.append(_pack(row + [0] * (n - len(row))))
            row = _mod([0] + row, f)  # times z
        self.rows = rows

    def mulmod(self, a: list[int], b: list[int]) -> list[int]:
        n = self.n
        if not a or not b:
            return []
        c = _unpack(_pack(a) * _pack(b), len(a) + len(b) - 1)
        if len(c) <= n:
            return _trim(c)
        acc = _pack(c[:n])
        for k in range(n, len(c)):
            if c[k]:
                acc += c[k] * self.rows[k - n]
        return _trim(_unpack(acc, n))

    def powmod(self, a: int, e: int) -> list[int]:
        """``(z + a) ** e`` mod f: left to right, so each step is a squaring and, for a set bit, a
        multiplication by ``z + a``, which is O(n)."""
        f, n = self.f, self.n
        result = [1]
        for bit in bin(e)[2:]:
            result = self.mulmod(result, result)
            if bit == "1":
                shifted = [0] + result  # times z, plus a times the old one, then mod f
                for i, c in enumerate(result):
                    shifted[i] = (shifted[i] + a * c) % P
                if len(shifted) > n:
                    top = shifted.pop()
                    if top:
                        for j in range(n):
                            shifted[j] = (shifted[j] - top * f[j]) % P
                result = _trim(shifted)
        return result


def _monic(a: list[int]) -> list[int]:
    inv = pow(a[-1], -1, P)
    return [v * inv % P for v in a]


def _gcd(a: list[int], b: list[int]) -> list[int]:
    a, b = _trim(list(a)), _trim(list(b))
    while b:
        a, b = b, _mod(a, _monic(b))
    return _monic(a) if a else a


def _divide(a: list[int], f: list[int]) -> list[int]:
    """``a / f`` for a monic ``f`` that divides ``a``."""
    a = list(a)
    n = len(f) - 1
    q = [0] * (len(a) - n)
    for i in range(len(a) - 1, n - 1, -1):
        c = a[i]
        q[i - n] = c
        if c:
            for j in range(n + 1):
                a[i - n + j] = (a[i - n + j] - c * f[j]) % P
    return q


def _roots(f: list[int]) -> list[int] | None:
    """Every root of the monic ``f`` over GF(P) if it has ``deg f`` distinct ones, else None."""
    n = len(f) - 1
    if n == 0:
        return []
    if n == 1:
        return [-f[0] % P]
    if n == 2:  # the quadratic formula; P = 3 mod 4, so a square root is one power
        disc = (f[1] * f[1] - 4 * f[0]) % P
        r = pow(disc, (P + 1) // 4, P)
        if not disc or r * r % P != disc:
            return None  # a double root, or none in GF(P)
        half = pow(2, -1, P)
        return sorted(((-f[1] + r) * half % P, (-f[1] - r) * half % P))
    # gcd(f, z**P - z) keeps the distinct linear factors: all of f, or f does not split as it should.
    zp = _Ring(f).powmod(0, P)
    zp += [0] * (2 - len(zp))
    zp[1] = (zp[1] - 1) % P
    if len(_gcd(f, _trim(zp))) - 1 != n:
        return None
    # Split every factor by gcd(g, (z + a)**((P - 1) / 2) - 1), which keeps the roots r with r + a a
    # square: about half of each factor's. One power modulo f serves every factor of a round, so a
    # round costs one power whatever the number of factors: about log2(n) + 2 rounds in all.
    ring, factors = _Ring(f), [f]
    for a in range(1, _SPLIT_TRIES + 1):
        if all(len(g) == 2 for g in factors):
            return sorted(-g[0] % P for g in factors)
        h = ring.powmod(a, (P - 1) // 2)
        h = h + [0] * (1 - len(h)) if h else [0]
        h[0] = (h[0] - 1) % P
        h = _trim(h)
        split = []
        for g in factors:
            if len(g) > 2:
                d = _gcd(g, _mod(h, g)) if h else g
                if 1 < len(d) < len(g):
                    split += [d, _divide(g, d)]
                    continue
            split.append(g)
        factors = split
    return None


def _vandermonde(xs: list[int], d: list[int]) -> list[int] | None:
    """The ``w`` with ``sum(w_i * xs_i**j) = d_j`` for ``j < len(xs)`` (Gaussian elimination mod P)."""
    n = len(xs)
    rows = [[pow(x, j, P) for x in xs] + [d[j]] for j in range(n)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col]), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inv = pow(rows[col][col], -1, P)
        rows[col] = [v * inv % P for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col]:
                c = rows[r][col]
                rows[r] = [(a - c * b) % P for a, b in zip(rows[r], rows[col])]
    return [rows[i][n] for i in range(n)]
