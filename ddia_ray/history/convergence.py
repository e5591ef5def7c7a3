"""Convergence: do the replicas of an eventually consistent store hold the same data once writes stop?

Theory of operation
-------------------
Multi-leader and leaderless stores promise *eventual* consistency: when writes stop and every
message (replication, hinted handoff, anti-entropy) has been delivered, all replicas hold the
same values (DDIA 5.4, "Converging toward a consistent state"; 5.5; Vogels 2009; the strong
eventual consistency of CRDTs, Shapiro et al. 2011). The checker states the criterion by Merkle
roots: replicas have converged iff their roots are equal.

A replica's root is the sum modulo 2**64 of the 64-bit *entry hashes* of its ``(key, value)``
pairs (:func:`entry_hash`), the value being the replica's encoded versions of the key. It is the
root of a :class:`ddia_ray.replication.merkle.MerkleTree` of any shape over the same entries, so
a store that keeps such a tree for anti-entropy reports its root for :func:`check_roots` at no
cost, and :func:`check_convergence` computes the same from a dump of each replica. The entry hash
is defined here, on the lower floor, and imported by the tree, so both always agree.

Two replicas with different data have equal roots with probability 2**-64 (for data not chosen
against BLAKE2b): equal roots are the verdict. From dumps, :func:`check_convergence` also names
the divergent keys (a sorted sample, capped) by comparing the values key by key, which costs one
pass over the union of keys.

Values must be *canonical*: two replicas holding the same siblings must encode them to the same
bytes (sorted siblings, canonical clocks), or they are reported divergent. That is a requirement on
the stores' encodings, which this checker makes visible.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

from ..codec import record
from ..errors import InvalidArgumentError

__all__ = ["ConvergenceResult", "check_convergence", "check_roots", "entry_hash", "entry_hashes", "root_of",
           "SAMPLE_MAX"]

#: Default cap of the divergent keys a result lists.
SAMPLE_MAX = 20
_MASK = (1 << 64) - 1
_blake2b = hashlib.blake2b


_ENTRY_HASH = _blake2b(digest_size=8, person=b"ddia-mk-entry")


def entry_hash(key: bytes, value: bytes) -> int:
    """The 64-bit hash of one entry ``(key, value)``: BLAKE2b of the key's length, the key and the value."""
    if not isinstance(key, bytes) or not isinstance(value, bytes):
        raise InvalidArgumentError(f"an entry is (bytes, bytes), got ({type(key).__name__}, {type(value).__name__})")
    return entry_hashes((key,), (value,))[0]


def entry_hashes(keys: Iterable[bytes], values: Iterable[bytes]) -> list[int]:
    """:func:`entry_hash` of each ``(keys[i], values[i])`` (bytes, unchecked: the caller checked the
    columns): copies of one keyed hasher, which costs a third less than making one per entry."""
    copy, from_bytes = _ENTRY_HASH.copy, int.from_bytes
    out = []
    for key, value in zip(keys, values):
        h = copy()
        h.update(len(key).to_bytes(4, "big"))  # the length keeps (b"ab", b"c") and (b"a", b"bc") apart
        h.update(key)
        h.update(value)
        out.append(from_bytes(h.digest(), "big"))
    return out


def root_of(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root a Merkle tree of any shape has over ``items`` (pairs with distinct keys): the sum of their
    entry hashes modulo 2**64, as 8 bytes big-endian."""
    total = 0
    for key, value in items:
        total += entry_hash(key, value)
    return (total & _MASK).to_bytes(8, "big")


@record("history.convergence", version=1)
class ConvergenceResult:
    """The verdict of a convergence check.

    ``converged``: every replica has the same root. ``roots``: replica -> 8-byte root. ``groups``: the
    replicas grouped by equal root (sorted), one group when converged. ``divergent_keys``: a sorted
    sample (at most the cap) of keys whose values differ between replicas, ``divergent_count`` how many
    there are in all (both empty and -1 when only roots were given), ``keys_checked`` the keys compared.
    """

    converged: bool
    roots: dict
    groups: tuple = ()
    divergent_keys: tuple = ()
    divergent_count: int = -1
    keys_checked: int = -1

    def __post_init__(self):
        if not isinstance(self.converged, bool):
            raise InvalidArgumentError("converged is a bool")
        if not isinstance(self.roots, dict) or not all(
                isinstance(k, str) and isinstance(v, bytes) for k, v in self.roots.items()):
            raise InvalidArgumentError("roots map replica names (str) to roots (bytes)")
        if not isinstance(self.groups, tuple) or not all(
                isinstance(g, tuple) and all(isinstance(r, str) for r in g) for g in self.groups):
            raise InvalidArgumentError("groups is a tuple of tuples of replica names")
        if not isinstance(self.divergent_keys, tuple) or not all(isinstance(k, bytes) for k in self.divergent_keys):
            raise InvalidArgumentError("divergent_keys is a tuple of bytes")
        for name in ("divergent_count", "keys_checked"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < -1:
                raise InvalidArgumentError(f"{name} is an int >= -1")

    def summary(self) -> str:
        """One line: the verdict, the replica groups and the divergent keys."""
        if self.converged:
            return f"converged: {len(self.roots)} replicas, root {next(iter(self.roots.values()), b'').hex()}"
        groups = " | ".join(",".join(g) for g in self.groups)
        if self.divergent_count < 0:
            return f"diverged: {len(self.groups)} distinct roots among {len(self.roots)} replicas ({groups})"
        sample = ", ".join(repr(k) for k in self.divergent_keys[:5])
        return (f"diverged: {self.divergent_count} of {self.keys_checked} keys differ across {len(self.groups)} "
                f"distinct roots ({groups}); e.g. {sample}")


def _groups(roots: Mapping[str, bytes]) -> tuple:
    by_root: dict[bytes, list[str]] = {}
    for name, root in roots.items():
        by_root.setdefault(root, []).append(name)
    return tuple(sorted(tuple(sorted(g)) for g in by_root.values()))


def check_roots(roots: Mapping[str, bytes]) -> ConvergenceResult:
    """The verdict from the replicas' roots alone (``replica -> root``, e.g. each replica's
    ``MerkleTree.root()``): converged iff they are all equal. Names no keys."""
    if not isinstance(roots, Mapping) or not roots:
        raise InvalidArgumentError("check_roots needs a non-empty mapping of replica name -> root")
    clean = {}
    for name, root in roots.items():
        if not isinstance(name, str) or not isinstance(root, bytes):
            raise InvalidArgumentError(f"roots map str -> bytes, got {type(name).__name__} -> {type(root).__name__}")
        clean[name] = root
    groups = _groups(clean)
    return ConvergenceResult(len(groups) == 1, clean, groups)


def check_convergence(replicas: Mapping[str, Mapping[bytes, bytes]], *,
                      sample_max: int = SAMPLE_MAX) -> ConvergenceResult:
    """The verdict over dumps of every replica (``replica -> {key: encoded versions}``): their roots, and
    the keys whose values differ (a sorted sample of at most ``sample_max``, and their count)."""
    if not isinstance(replicas, Mapping) or not replicas:
        raise InvalidArgumentError("check_convergence needs a non-empty mapping of replica name -> data")
    if isinstance(sample_max, bool) or not isinstance(sample_max, int) or sample_max < 0:
        raise InvalidArgumentError(f"sample_max is an int >= 0, got {sample_max!r}")
    roots: dict[str, bytes] = {}
    for name, data in replicas.items():
        if not isinstance(name, str) or not isinstance(data, Mapping):
            raise InvalidArgumentError("replicas map a name (str) to a mapping of key -> value")
        roots[name] = root_of(data.items())
    groups = _groups(roots)
    dumps = list(replicas.values())
    keys: set = set()
    for data in dumps:
        keys.update(data.keys())
    missing = object()
    if len(groups) == 1:
        divergent: list[bytes] = []  # equal roots are the verdict; the keys agree with probability 1 - 2**-64
    else:
        first = dumps[0]
        divergent = [k for k in keys if any(d.get(k, missing) != first.get(k, missing) for d in dumps[1:])]
    divergent.sort()
    return ConvergenceResult(len(groups) == 1, roots, groups, tuple(divergent[:sample_max]), len(divergent), len(keys))
