"""Raft consensus as a pure state machine (etcd raft's design), with its data types.

See :mod:`.node` for the theory of operation. A driver (the Ray member actor
or the simulator) persists, sends and applies what :meth:`RaftNode.ready`
returns; nothing here performs I/O or reads a clock.
"""

from .log import RaftLog
from .messages import CONF_CHANGE, NOOP, NORMAL, ConfChange, ConfState, Entry, HardState, Message, ReadState, \
    RaftSnapshot, SnapshotMeta, LogAppend, recover
from .node import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, ROLE_TRANSITIONS, RaftConfig, RaftNode, RaftReady
from .progress import Progress

__all__ = ["RaftNode", "RaftConfig", "RaftReady", "RaftLog", "Progress", "Entry", "ConfChange", "ConfState",
           "HardState", "Message", "ReadState", "RaftSnapshot", "SnapshotMeta", "LogAppend", "recover", "NORMAL",
           "CONF_CHANGE", "NOOP",
           "FOLLOWER", "PRE_CANDIDATE", "CANDIDATE", "LEADER", "ROLE_TRANSITIONS"]
