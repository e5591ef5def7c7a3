"""Weighted least connections: send the request where it waits least.

Theory of operation
-------------------
Each pick chooses the candidate minimising ``(load + 1) / weight``, where
``load`` is the member's in-flight count. The ``+ 1`` (as in Envoy's
least-request balancer and HAProxy's ``leastconn``) scores the request being
placed, not only those already there: with plain ``load / weight`` every idle
member scores 0 and weights would not matter until members got busy, whereas
``1 / weight`` sends the first request to the biggest member and keeps
``load / weight`` balanced as requests pile up. If nothing ever finishes, the
picks keep the invariant ``n_i / w_i <= (n_j + 1) / w_j`` for every pair, so
shares converge to the weights.

Scores are compared exactly by cross-multiplying integers (no float ties).
Ties are broken round robin, from a cursor that moves past each winner, so
equally scored members share the traffic evenly and the picker stays
deterministic without consuming randomness.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from .pickers import Picker, _Cursor, _load_of

__all__ = ["WeightedLeastConnectionsPicker"]


class WeightedLeastConnectionsPicker(Picker):
    """Pick the member with the least ``(in-flight + 1) / weight``; ties round robin."""

    def __init__(self, *, rng=None):
        super().__init__(rng=rng)
        self._cursor = _Cursor()

    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        best_index = -1
        best_member = ""
        best_num = best_den = 0
        for index, member in self._cursor.rotated(self.members):
            if member in exclude:
                continue
            num, den = _load_of(load, member) + 1, self._weights[member]
            # num/den < best_num/best_den, exactly; strict so the earliest in rotation wins ties.
            if best_index < 0 or num * best_den < best_num * den:
                best_index, best_member, best_num, best_den = index, member, num, den
        self._cursor.advance_past(best_index)
        return best_member

    def _on_remove(self, member: str, index: int) -> None:
        self._cursor.on_remove(index)
