"""Client histories, and checkers of linearizability and session guarantees for any ddia-ray key-value store.

* :mod:`.recorder`: :class:`HistoryRecorder` records invoke / ok / fail / info
  events (Jepsen's history model) from threads or a simulation's virtual
  clock, and pairs them into :class:`Operation` intervals.
* :mod:`.model`: sequential specifications (:class:`Model`); :data:`KV_MODEL`
  is a map of registers with read, write, cas and delete.
* :mod:`.linearizability`: :func:`check` decides whether a history is
  linearizable (Wing & Gong's search with Lowe's cache, one key at a time),
  and :func:`describe` explains the verdict.
* :mod:`.convergence`: :func:`check_convergence` decides whether replicas of an eventually
  consistent store converged (equal Merkle roots) and names the divergent keys;
  :func:`check_roots` decides it from the roots alone.
* :mod:`.lost_updates`: :func:`check_lost_updates` counts acknowledged writes that were neither kept
  nor knowingly replaced (LWW's silent losses, DDIA 5.4), for registers, counters, sets and text.
* :mod:`.sessions`: :func:`check_sessions` checks the session guarantees
  read-your-writes and monotonic reads (DDIA ch. 5) per client session, by
  the versions the store gave the writes; :func:`describe_sessions` words it.

Events, operations, counterexamples and session verdicts are codec records,
so histories can be saved with :func:`save_history` and checked later.
"""

from .convergence import ConvergenceResult, check_convergence, check_roots
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
from .lost_updates import (
    CounterUpdate,
    LostUpdateResult,
    RegisterWrite,
    SetUpdate,
    TextUpdate,
    check_lost_updates,
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
    "check_convergence",
    "check_roots",
    "ConvergenceResult",
    "check_lost_updates",
    "LostUpdateResult",
    "RegisterWrite",
    "CounterUpdate",
    "SetUpdate",
    "TextUpdate",
]
