"""Logical clocks for ordering events without trusting wall clocks (DDIA ch. 8-9).

* :mod:`.lamport`: Lamport clocks and totally ordered Lamport timestamps.
* :mod:`.vector`: vector clocks that tell "happened before" from "concurrent".
* :mod:`.hybrid`: hybrid logical clocks (Kulkarni et al. 2014): causal order
  with timestamps that stay within a bounded drift of physical time.
* :mod:`.dotted`: dotted version vectors (DVVSet, Almeida et al. 2014): the
  concurrent versions of one key, each stamped with its coordinator's dot.

Each timestamp type is a codec record, so it can travel between actors and
be persisted.
"""

from .dotted import DVVSet, Dot
from .hybrid import DEFAULT_LOGICAL_LIMIT, DEFAULT_MAX_DRIFT_NS, HLCTimestamp, HybridClock
from .lamport import LamportClock, LamportTimestamp
from .vector import Ordering, VectorClock

__all__ = [
    "LamportClock",
    "LamportTimestamp",
    "VectorClock",
    "Ordering",
    "HybridClock",
    "HLCTimestamp",
    "DEFAULT_MAX_DRIFT_NS",
    "DEFAULT_LOGICAL_LIMIT",
    "Dot",
    "DVVSet",
]
