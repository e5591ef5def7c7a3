"""Client histories and a linearizability checker for any ddia-ray key-value store.

* :mod:`.recorder`: :class:`HistoryRecorder` records invoke / ok / fail / info
  events (Jepsen's history model) from threads or a simulation's virtual
  clock, and pairs them into :class:`Operation` intervals.
* :mod:`.model`: sequential specifications (:class:`Model`); :data:`KV_MODEL`
  is a map of registers with read, write, cas and delete.
* :mod:`.linearizability`: :func:`check` decides whether a history is
  linearizable (Wing & Gong's search with Lowe's cache, one key at a time),
  and :func:`describe` explains the verdict.

Events, operations and counterexamples are codec records, so histories can be
saved with :func:`save_history` and checked later.
"""

from .linearizability import CheckResult, Counterexample, check, check_events, describe
from .model import KV_MODEL, KVModel, Model
from .recorder import (
    EVENT_KINDS,
    KV_FUNCTIONS,
    OP_STATUSES,
    PROCESS_TRANSITIONS,
    Event,
    HistoryRecorder,
    Operation,
    load_history,
    pair_events,
    save_history,
)

__all__ = [
    "HistoryRecorder",
    "Event",
    "Operation",
    "pair_events",
    "save_history",
    "load_history",
    "KV_FUNCTIONS",
    "EVENT_KINDS",
    "OP_STATUSES",
    "PROCESS_TRANSITIONS",
    "Model",
    "KVModel",
    "KV_MODEL",
    "check",
    "check_events",
    "describe",
    "CheckResult",
    "Counterexample",
]
