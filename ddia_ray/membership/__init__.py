"""Failure detection and group membership (DDIA ch. 8, "Detecting Faults").

* :mod:`.phi`: the phi accrual failure detector for one monitored node.
* :mod:`.view`: a membership view over many nodes with a HEALTHY / SUSPECT /
  UNREACHABLE state machine, events and listeners.

Both are pure cores: time is always passed in as ``now_s``.
"""

from .phi import PhiAccrualDetector, PhiStats
from .view import TRANSITIONS, MemberEvent, MembershipView, MemberState, MemberStatus, Observation

__all__ = [
    "PhiAccrualDetector",
    "PhiStats",
    "MembershipView",
    "MemberEvent",
    "MemberState",
    "MemberStatus",
    "Observation",
    "TRANSITIONS",
]
