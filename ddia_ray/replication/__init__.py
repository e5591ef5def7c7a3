"""Replica groups over a storage state: leader-follower replication with a fenced leader lease.

* :mod:`.leader_follower`: the pure core of one replica (sync, semi-sync and async modes, the
  log, epochs as fencing tokens, writes and their acknowledgements), built of the parts below;
* :mod:`.failover`: how a follower takes a lapsed lease (probe, quorum, catching up from a peer
  ahead, compare-and-set);
* :mod:`.leadership`: the lease once held (renewals, stepping down, leadership transfer);
* :mod:`.divergence`: a follower resynced from a checkpoint, and lost-write accounting;
* :mod:`.replica_reads`: leader, follower, session and bounded-staleness reads;
* :mod:`.replica_parts`: what those parts use of the core, declared once for the type checker;
* :mod:`.ingest`: bulk loads as one operation of Arrow buffers that every replica ingests;
* :mod:`.indexing`: local secondary indexes and the outbox of global ones;
* :mod:`.coordination`: how a core calls the coordination service (RaftKV) by messages;
* :mod:`.records`: the messages, log records, client requests and the portable :class:`Session`;
* :mod:`.raft_replica`: the Raft protocol's member (RaftKV's member over the store's state), whose
  entries :mod:`.raft_state_machine` applies;
* :mod:`.state`: the state a replica applies its log to (a dict), and the interface of states;
* :mod:`.engine_state`: the same state in a storage engine (LSM or B-tree), with file checkpoints;
* :mod:`.store`: :class:`ReplicatedStore`, the group on Ray (replicas plus a coordination service);
* :mod:`.client`: :class:`ReplicatedClient`, batched writes and reads with futures and sessions;
* :mod:`.write_batches`: what the client packs into one request; :mod:`.routing`: where it sends
  it, and how it retries without applying twice;
* :mod:`.simulation`: seeded runs under faults with the replication invariants checked.
* services built on procedures (the event store, the schema registry, the configuration store):
  :mod:`.service_store` (their handle), :mod:`.backend` (their clients' backend and common part),
  :mod:`.row_format` (their rows' value format), :mod:`.service_simulation` (their seeded runs).

See docs/replication.md.
"""

from .coordination import CoordinationClient
from .leader_follower import MODES, LeaderFollowerReplica
from .client import ReplicatedClient
from .engine_state import EngineState
from .records import CAS, DELETE, DELETE_RANGE, PUT, READ_MODES, ReadResult, ReplAdmin, ReplRead, ReplScan, \
    ReplStatus, ReplWrite, ScanResult, Session, WriteAck
from .simulation import LFSimReport, ReplicationViolation, simulate
from .state import MapState, ReplicaState
from .store import PROTOCOLS, ReplicatedStore

__all__ = ["LeaderFollowerReplica", "MODES", "CoordinationClient", "MapState", "Session", "ReplWrite", "ReplRead",
           "ReplStatus", "WriteAck", "ReadResult", "READ_MODES", "PUT", "DELETE", "DELETE_RANGE", "CAS",
           "simulate", "LFSimReport", "ReplicationViolation", "ReplicatedStore", "ReplicatedClient", "PROTOCOLS",
           "EngineState", "ReplicaState", "ReplScan", "ScanResult", "ReplAdmin"]
