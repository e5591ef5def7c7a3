"""Conflict-free replicated data types: state-based CRDTs with delta mutators.

Theory of operation
-------------------
DDIA 5.4, "Automatic Conflict Resolution": data types whose concurrent updates merge by
themselves, so a multi-leader or leaderless store need not keep siblings or drop writes
(Shapiro et al. 2011, "A comprehensive study of CRDTs"; Almeida, Shoker, Baquero 2018, "Delta
state replicated data types"). Pure: no Ray, no clock, no randomness.

Module map (one concept per file):

* :mod:`.base`: the :class:`CRDT` base class, the registry of kinds (:data:`KINDS`) and the
  functions a store calls: :func:`new`, :func:`apply`, :func:`merge`, :func:`encode`,
  :func:`decode`, :func:`ops`;
* :mod:`.dots`: dots and causal contexts, shared by the observed-remove kinds;
* :mod:`.counters`: :class:`GCounter`, :class:`PNCounter`;
* :mod:`.sets`: :class:`GSet`, :class:`TwoPSet`, :class:`ORSet` (add wins);
* :mod:`.registers`: :class:`LWWRegister`, :class:`MVRegister`;
* :mod:`.maps`: :class:`ORMap`, a map of nested CRDTs with observed-remove keys;
* :mod:`.text`: :class:`Text`, our RGA with runs for collaborative text; its parts are in
  :mod:`.runs`, its bytes in :mod:`.text_format`, and the placing of a document that arrives in
  order (checked, its blocks built in bulk or deferred) in :mod:`.text_place`.

Every mutator takes the acting replica ``node`` first, changes the state and returns the delta;
``merge`` joins in place; states travel as ``crdt.state`` codec records.
"""

from .base import CRDT, KINDS, CRDTState, apply, decode, encode, merge, new, ops
from .counters import GCounter, PNCounter
from .maps import MAP_DEPTH_MAX, ORMap
from .registers import LWWRegister, MVRegister
from .sets import GSet, ORSet, TwoPSet
from .text import Text

__all__ = [
    "CRDT", "CRDTState", "KINDS", "new", "apply", "merge", "encode", "decode", "ops",
    "GCounter", "PNCounter", "GSet", "TwoPSet", "ORSet", "LWWRegister", "MVRegister", "ORMap", "Text",
    "MAP_DEPTH_MAX",
]
