"""Power of two random choices: sample two, keep the less loaded.

Theory of operation
-------------------
Each pick draws two *distinct* candidates at random, each draw weighted by
member weight (the second draw is made among the members left after the
first), and returns the one with the smaller ``load / weight``. Mitzenmacher's
result: two random choices shrink the worst queue from ``O(log n / log log n)``
to ``O(log log n)`` while needing load information about only two members,
which is why it degrades gracefully when the load figures are stale (many
balancers, each with its own view).

On a tie (for instance no load information at all) the first draw wins, so an
idle pool is sampled exactly in proportion to the weights. Draws use
``rng.randrange`` over the integer total weight, so a seeded
:class:`random.Random` reproduces every choice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Set
from itertools import accumulate

from .pickers import Picker, _load_of

__all__ = ["PowerOfTwoChoicesPicker"]


class PowerOfTwoChoicesPicker(Picker):
    """Sample two distinct members (weighted), route to the lower ``load / weight``."""

    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        if len(candidates) == 1:
            return candidates[0]
        pool = list(candidates)
        first = pool.pop(self._draw(pool))
        second = pool[self._draw(pool)]
        load_1, weight_1 = _load_of(load, first), self._weights[first]
        load_2, weight_2 = _load_of(load, second), self._weights[second]
        # load_2/weight_2 < load_1/weight_1, compared exactly.
        return second if load_2 * weight_1 < load_1 * weight_2 else first

    def _draw(self, pool: list[str]) -> int:
        """Index of one member of ``pool``, drawn with probability weight / total."""
        cumulative = list(accumulate(self._weights[m] for m in pool))
        return bisect_right(cumulative, self._rng.randrange(cumulative[-1]))
