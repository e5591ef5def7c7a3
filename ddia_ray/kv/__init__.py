"""RaftKV: a linearizable replicated key-value store built on the Raft core.

* :mod:`.commands`: what clients send and receive; the log's commands.
* :mod:`.state_machine`: the dict with client sessions (exactly-once writes).
* :mod:`.member`: the pure member core a node shell or the simulator drives.
* :mod:`.simulation`: seeded single-process runs with safety and linearizability checks.
* :mod:`.cluster` and :mod:`.client`: members on Ray, and the batching client.
"""

from .client import RaftKVClient
from .cluster import RaftKV
from .commands import ERROR, OK, RETRY, KVAdmin, KVBatch, KVCommand, KVResults
from .member import RaftMember
from .state_machine import KVStateMachine

__all__ = ["RaftKV", "RaftKVClient", "RaftMember", "KVStateMachine", "KVBatch", "KVCommand", "KVResults", "KVAdmin",
           "OK", "RETRY", "ERROR"]
