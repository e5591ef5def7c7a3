"""Dots and causal contexts: how the observed-remove CRDTs tell "removed" from "not seen yet".

Theory of operation
-------------------
A *dot* ``(node, counter)`` names one update: the ``counter``-th event of replica ``node``. A
*causal context* is the set of dots a state has seen (Almeida, Shoker, Baquero 2018, "Delta state
replicated data types", section 5). It is kept compact as a version vector (every dot of ``node``
up to ``vv[node]``) plus a *dot cloud* for the dots seen out of order (a delta received before the
deltas that precede it); :meth:`CausalContext.compact` folds the cloud into the vector as the gaps
fill, so the representation of a given set of dots is unique and equal contexts compare equal.

The observed-remove kinds (OR-Set, MV-Register, OR-Map) store their payload against dots (a
"dot store"). Joining two dot stores keeps a dot that both hold, and a dot that one holds and the
other has never seen (:func:`join_dots`); a dot one side has seen but no longer holds was removed
there, and stays removed. That is what makes an add win over a concurrent remove: the remove can
only drop the dots it observed (DDIA 5.4, "Automatic Conflict Resolution"; Shapiro et al. 2011's
OR-Set).
"""

from __future__ import annotations

from typing import Any, Iterable

from .base import COUNTER_MAX, corrupt, p_int, p_row, p_seq

__all__ = ["CausalContext", "join_dots"]

Dot = tuple  # (node: str, counter: int)


class CausalContext:
    """A set of dots, as a version vector ``vv`` plus a ``cloud`` of the dots beyond it (compacted)."""

    __slots__ = ("vv", "cloud")

    def __init__(self, vv: dict[str, int] | None = None, cloud: set[Dot] | None = None) -> None:
        self.vv: dict[str, int] = vv if vv is not None else {}
        self.cloud: set[Dot] = cloud if cloud is not None else set()

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        """The context that has seen exactly ``dots``."""
        ctx = cls(cloud=set(dots))
        ctx.compact()
        return ctx

    def contains(self, node: str, counter: int) -> bool:
        """Whether this context has seen dot ``(node, counter)``."""
        return counter <= self.vv.get(node, 0) or (node, counter) in self.cloud

    def next_dot(self, node: str) -> Dot:
        """The dot of ``node``'s next event: one past every dot of ``node`` this context has seen."""
        top = self.vv.get(node, 0)
        if self.cloud:  # a state rebuilt from an old snapshot may have seen later dots of its own node
            top = max([top] + [c for n, c in self.cloud if n == node])
        return (node, top + 1)

    def add(self, node: str, counter: int) -> None:
        """Record that dot ``(node, counter)`` was seen."""
        top = self.vv.get(node, 0)
        if counter == top + 1:
            self.vv[node] = counter
            if self.cloud:
                self.compact()
        elif counter > top:
            self.cloud.add((node, counter))

    def merge(self, other: CausalContext) -> None:
        """Union ``other`` into this context."""
        vv = self.vv
        for node, c in other.vv.items():
            if c > vv.get(node, 0):
                vv[node] = c
        if other.cloud:
            self.cloud |= other.cloud
        if self.cloud:
            self.compact()

    def compact(self) -> None:
        """Fold the cloud's dots that are contiguous with the vector into it; drop covered ones."""
        vv, keep = self.vv, set()
        for node, c in sorted(self.cloud):  # in counter order per node, so a chain folds in one pass
            top = vv.get(node, 0)
            if c == top + 1:
                vv[node] = c
            elif c > top:
                keep.add((node, c))
        self.cloud = keep

    def copy(self) -> CausalContext:
        """An independent copy."""
        return CausalContext(dict(self.vv), set(self.cloud))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CausalContext) and self.vv == other.vv and self.cloud == other.cloud

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CausalContext({self.vv!r}, {sorted(self.cloud)!r})"

    def payload(self, index: dict[str, int]) -> tuple:
        """``(vv pairs, cloud pairs)`` with nodes as indexes into a node table (``index`` grows)."""
        vv = tuple((_ix(index, n), c) for n, c in sorted(self.vv.items()))
        cloud = tuple((_ix(index, n), c) for n, c in sorted(self.cloud))
        return (vv, cloud)

    @classmethod
    def from_payload(cls, kind: str, x: Any, nodes: tuple[str, ...]) -> CausalContext:
        """Validated inverse of :meth:`payload`."""
        vv_rows, cloud_rows = p_row(kind, x, 2, "causal context")
        vv: dict[str, int] = {}
        for row in p_seq(kind, vv_rows, "version vector"):
            i, c = p_row(kind, row, 2, "version vector entry")
            node = nodes[p_int(kind, i, 0, len(nodes) - 1, "node index")]
            if node in vv:
                raise corrupt(kind, f"version vector repeats node {node!r:.40}")
            vv[node] = p_int(kind, c, 1, COUNTER_MAX, "version vector counter")
        ctx = cls(vv)
        for row in p_seq(kind, cloud_rows, "dot cloud"):
            i, c = p_row(kind, row, 2, "dot")
            ctx.cloud.add((nodes[p_int(kind, i, 0, len(nodes) - 1, "node index")],
                           p_int(kind, c, 1, COUNTER_MAX, "dot counter")))
        ctx.compact()
        return ctx


def _ix(index: dict[str, int], node: str) -> int:
    i = index.get(node)
    if i is None:
        i = index[node] = len(index)
    return i


def join_dots(mine: Iterable[Dot], my_ctx: CausalContext, theirs: Iterable[Dot], their_ctx: CausalContext) -> set:
    """The dots a join keeps: held by both, or held by one side and never seen by the other."""
    mine, theirs = set(mine), set(theirs)
    both = mine & theirs
    both.update(d for d in mine - theirs if not their_ctx.contains(*d))
    both.update(d for d in theirs - mine if not my_ctx.contains(*d))
    return both
