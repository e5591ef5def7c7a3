"""Plain round robin: every member in turn, skipping the excluded ones.

Theory of operation: a cursor points into the member list (insertion order).
Each pick walks forward from the cursor to the first member not excluded,
returns it and moves the cursor just past it, so excluded members are skipped
without disturbing the rotation of the others. Weights and load are ignored;
use :class:`~ddia_ray.balancing.weighted.SmoothWeightedRoundRobinPicker` when
members differ in capacity.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from .pickers import Picker, _Cursor

__all__ = ["RoundRobinPicker"]


class RoundRobinPicker(Picker):
    """Members in turn, in insertion order; ignores weights, keys and load."""

    def __init__(self, *, rng=None):
        super().__init__(rng=rng)
        self._cursor = _Cursor()

    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        for index, member in self._cursor.rotated(self.members):
            if member not in exclude:
                self._cursor.advance_past(index)
                return member
        raise AssertionError("unreachable: Picker.pick checked that a candidate exists")

    def _on_remove(self, member: str, index: int) -> None:
        self._cursor.on_remove(index)
