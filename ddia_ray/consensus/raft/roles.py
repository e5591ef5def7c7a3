"""Raft roles and the table of every role change a member can make, with its cause.

The node checks every change against the table (an unlisted change is an InvariantViolation),
so the table is the complete state machine of roles, not a description that may drift.
"""

from __future__ import annotations

__all__ = ["FOLLOWER", "PRE_CANDIDATE", "CANDIDATE", "LEADER", "ROLE_TRANSITIONS"]

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre_candidate", "candidate", "leader"
#: Every role change and its cause.
ROLE_TRANSITIONS = {
    (FOLLOWER, PRE_CANDIDATE): "election timeout (pre-vote on)",
    (FOLLOWER, CANDIDATE): "election timeout (pre-vote off), or timeout_now from the leader",
    (PRE_CANDIDATE, CANDIDATE): "a quorum granted the pre-vote",
    (PRE_CANDIDATE, FOLLOWER): "pre-vote lost, or a leader of this term or any higher term was heard",
    (CANDIDATE, LEADER): "a quorum granted the vote",
    (CANDIDATE, FOLLOWER): "vote lost, or a leader of this term or any higher term was heard",
    (LEADER, FOLLOWER): "a higher term was seen, check-quorum failed, or the leader was removed",
    (CANDIDATE, CANDIDATE): "election timeout (pre-vote off): a new term",
    (CANDIDATE, PRE_CANDIDATE): "election timeout (pre-vote on): a new pre-vote round first",
    (PRE_CANDIDATE, PRE_CANDIDATE): "election timeout: a new pre-vote round",
    (FOLLOWER, FOLLOWER): "a higher term was seen",
}
