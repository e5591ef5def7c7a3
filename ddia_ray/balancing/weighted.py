"""Smooth weighted round robin, the algorithm of nginx's upstream module.

Theory of operation
-------------------
Every member carries a *current weight*, starting at 0. On each pick, every
eligible member's current weight grows by its weight; the member with the
largest current weight wins (ties go to the earlier member) and its current
weight drops by the total weight of the eligible members. The current weights
therefore always sum to zero, and over any ``sum(weights)`` picks from a reset
each member is chosen exactly ``weight`` times, *interleaved* rather than in a
burst: weights ``{a: 5, b: 1, c: 1}`` give ``a a b a c a a``, not
``a a a a a b c``.

Smoothness, precisely (for a fixed set of eligible members, counted from a
reset): after ``t`` picks, member ``i``'s current weight is
``t*w_i - S*n_i(t)`` (``n_i`` = times picked, ``S`` = total weight). It is
always ``> -S``: only the winner loses weight, and its current weight was the
largest of numbers summing to ``S``, hence positive, before it lost ``S``. So
``n_i(t) <= ceil(t*w_i/S)`` at *every* prefix: no member ever runs ahead of its
exact share by a whole pick, which is what rules out bursts. At ``t = S`` this
bound and ``sum(n_i) = S`` force ``n_i = w_i`` and every current weight back to
0, so the sequence repeats with period ``S``.

Excluded members neither gain nor lose current weight, as nginx skips peers
that are down. Any change of membership or weights resets every current weight
to 0 (nginx re-creates its peers on reconfiguration), so exact cycles restart
from the next pick. nginx's ``effective_weight`` failure penalty is left out:
failures are the outlier detector's business here.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from .pickers import Picker

__all__ = ["SmoothWeightedRoundRobinPicker"]


class SmoothWeightedRoundRobinPicker(Picker):
    """nginx's smooth weighted round robin; deterministic, ignores keys and load."""

    def __init__(self, *, rng=None) -> None:
        super().__init__(rng=rng)
        self._current: dict[str, int] = {}

    def current_weights(self) -> Mapping[str, int]:
        """A snapshot of every member's current weight (they sum to zero)."""
        return dict(self._current)

    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        total = 0
        best = candidates[0]  # never empty (see Picker._choose)
        for member in candidates:
            weight = self._weights[member]
            total += weight
            self._current[member] += weight
            # Strict '>' keeps the earliest member on ties, as nginx does.
            if self._current[member] > self._current[best]:
                best = member
        self._current[best] -= total
        return best

    def _reset(self) -> None:
        self._current = {m: 0 for m in self._weights}

    def _on_add(self, member: str, weight: int) -> None:
        self._reset()

    def _on_remove(self, member: str, index: int) -> None:
        self._reset()

    def _on_weight(self, member: str, old: int, new: int) -> None:
        self._reset()
