"""Consistent hashing on a ring of virtual nodes (Karger et al.; DDIA ch. 6).

Theory of operation
-------------------
Every member owns ``virtual_nodes * weight`` points on a 64-bit ring; point
``i`` of member ``m`` sits at ``hash(f"{m}#{i}")``. A key hashes to a position
and belongs to the first point clockwise from it (wrapping past the top). The
ring is two parallel sorted lists, positions and owners, searched with
:func:`bisect.bisect_right`.

Why it is used: when a member joins it takes over only the arcs just before
its own points, and when one leaves only its arcs pass to their clockwise
successors, so about ``1/N`` of the keys move and *no key moves between two
members that stayed*. Many virtual nodes per member (160 by default, as
ketama) keep each member's share of the ring close to ``weight / total``.
Point ``i`` of a member never depends on its weight, so raising a weight
only adds points and lowering one only removes some.

Excluded members are skipped by walking clockwise to the next allowed owner,
which is exactly where the key would go if the member were removed.
:meth:`ConsistentHashPicker.preference_list` continues that walk to collect
``n`` distinct members, the "preference list" Dynamo replicates a key to.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Mapping, Set

from .._validate import integer, positive
from ..errors import InvalidArgumentError, NoReplicaAvailableError
from .pickers import Picker, _normalise_key

__all__ = ["ConsistentHashPicker", "blake2b_64"]


def blake2b_64(data: bytes) -> int:
    """The 64-bit BLAKE2b digest of ``data`` as an unsigned int (the default ring hash)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHashPicker(Picker):
    """A hash ring with ``virtual_nodes`` points per unit of weight; ``pick`` needs a key.

    ``hash_fn`` maps bytes to a non-negative int position (default
    :func:`blake2b_64`); it must be stable across processes, so Python's
    salted built-in ``hash`` is unsuitable.
    """

    def __init__(self, *, virtual_nodes: int = 160, hash_fn: Callable[[bytes], int] = blake2b_64, rng=None):
        super().__init__(rng=rng)
        integer("virtual_nodes", virtual_nodes)
        positive("virtual_nodes", virtual_nodes)
        if not callable(hash_fn):
            raise InvalidArgumentError(f"hash_fn must be callable, got {type(hash_fn).__name__}")
        self.virtual_nodes = virtual_nodes
        self._hash = hash_fn
        self._points: list[int] = []
        self._owners: list[str] = []
        self._by_member: dict[str, list[tuple[int, str]]] = {}

    @property
    def ring_size(self) -> int:
        """How many virtual nodes are on the ring (``virtual_nodes * total weight``)."""
        return len(self._points)

    def position(self, key: bytes | str) -> int:
        """Where ``key`` lands on the ring."""
        data = _normalise_key(key)
        if data is None:
            raise InvalidArgumentError("consistent hashing needs a key (bytes or str), got None")
        return self._hash(data)

    def owner(self, key: bytes | str) -> str:
        """The first member clockwise from ``key``: ``preference_list(key, 1)[0]``, in one search (a
        client routing every key of a batch asks this once a key)."""
        if not self._points:
            raise NoReplicaAvailableError("no member on the ring")
        return self._owners[bisect_right(self._points, self.position(key)) % len(self._points)]

    def preference_list(self, key: bytes | str, n: int, *, exclude: Set = frozenset()) -> tuple[str, ...]:
        """The first ``n`` distinct members clockwise from ``key``, skipping ``exclude``.

        The first entry is what :meth:`pick` returns for the same ``key`` and
        ``exclude``. Fewer than ``n`` are returned when fewer members are
        eligible; none eligible raises :class:`NoReplicaAvailableError`.
        """
        integer("n", n)
        positive("n", n)
        if not isinstance(exclude, Set):
            raise InvalidArgumentError(f"exclude must be a set of member names, got {type(exclude).__name__}")
        eligible = sum(1 for m in self._weights if m not in exclude)
        if eligible == 0:
            raise NoReplicaAvailableError(
                f"no eligible member on the ring ({len(self._weights)} members, all excluded or none added)"
            )
        wanted = min(n, eligible)
        found: list[str] = []
        for owner in self._walk(self.position(key)):
            if owner not in exclude and owner not in found:
                found.append(owner)
                if len(found) == wanted:
                    break
        return tuple(found)

    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        if key is None:
            raise InvalidArgumentError("ConsistentHashPicker.pick needs a key (bytes or str)")
        for owner in self._walk(self._hash(key)):
            if owner not in exclude:
                return owner
        raise AssertionError("unreachable: Picker.pick checked that a candidate exists")

    def _walk(self, position: int):
        """Owners of the ring's points, clockwise from the first point after ``position``."""
        size = len(self._points)
        start = bisect_right(self._points, position)
        for step in range(size):
            yield self._owners[(start + step) % size]

    def _member_points(self, member: str, weight: int) -> list[tuple[int, str]]:
        return [(self._hash(f"{member}#{i}".encode("utf-8")), member) for i in range(self.virtual_nodes * weight)]

    def _rebuild(self) -> None:
        # Rebuilding costs O(V log V) per membership change, which is rare; picks stay O(log V).
        # Sorting (position, member) pairs makes even a 64-bit collision resolve deterministically.
        ring = sorted(p for points in self._by_member.values() for p in points)
        self._points = [position for position, _ in ring]
        self._owners = [owner for _, owner in ring]

    def _on_add(self, member: str, weight: int) -> None:
        self._by_member[member] = self._member_points(member, weight)
        self._rebuild()

    def _on_remove(self, member: str, index: int) -> None:
        del self._by_member[member]
        self._rebuild()

    def _on_weight(self, member: str, old: int, new: int) -> None:
        self._by_member[member] = self._member_points(member, new)
        self._rebuild()
