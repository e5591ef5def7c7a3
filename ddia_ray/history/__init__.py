"""Client histories, and checkers of linearizability and session guarantees for any ddia-ray key-value store.

* :mod:`.recorder`: :class:`HistoryRecorder` records invoke / ok / fail / info
  events (Jepsen's history model) from threads or a simulation's virtual
  clock, and pairs them into :class:`Operation` intervals.
* :mod:`.model`: sequential specifications (:class:`Model`); :data:`KV_MODEL`
  is a map of registers with read, write, cas and delete.
* :mod:`.linearizability`: :func:`check` decides whether a history is
  linearizable (Wing & Gong's search with Lowe's cache, one key at a time),
  and :func:`describe` explains the verdict.
* :mod:`.sessions`: :func:`check_sessions` checks the session guarantees
  read-your-writes and monotonic reads (DDIA ch. 5) per client session, by
  the versions the store gave the writes; :func:`describe_sessions` words it.

Events, operations, counterexamples and session verdicts are codec records,
so histories can be saved with :func:`save_history` and checked later.
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
from .sessions import SESSION_GUARANTEES, SessionCheck, SessionViolation, check_sessions, describe_sessions

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
    "check_sessions",
    "describe_sessions",
    "SessionCheck",
    "SessionViolation",
    "SESSION_GUARANTEES",
]
