"""A store partitioned over replica groups (DDIA chapter 6).

* :mod:`.keyspace`: routing keys under the key-range and hash schemes, the keys groups store,
  and boundaries chosen evenly (hash) or from a sample of the data (range);
* :mod:`.partition_map`: the versioned :class:`PartitionMap` (which group owns which range),
  its changes (split, merge, move), the check a replica makes before serving a request, a
  :class:`Locator` that routes keys, ranges and batches, and each group's ownership record;
* :mod:`.rebalance`: the planners: splits, merges and moves from measured loads, and replica
  moves over Ray nodes when nodes join or leave;
* :mod:`.rebalancer`: measures a running store and applies the proposals, by hand or by itself;
* :mod:`.store`: :class:`PartitionedStore`, the replica groups and the map's coordination service on Ray;
* :mod:`.client`: :class:`PartitionedClient`, the partition-aware client (cached map, refresh on refusal);
* :mod:`.mover`: the pure step machine of one split, merge or move (requests out, replies in);
* :mod:`.changes`: split, merge and move on a running store, driving the mover through Ray;
* :mod:`.router`: the routing tier (routers behind the balancer) for clients that know no map;
* :mod:`.bulk`: bulk loads cut by partition, one ingest entry per partition;
* :mod:`.global_index`: global (term-partitioned) secondary indexes and their indexer service;
* :mod:`.datasets`: Ray Data in and out; :mod:`.workload`: the Jepsen-style workload;
* :mod:`.simulation` (with :mod:`.sim_actors` and :mod:`.sim_groups`, the Raft and
  leader-follower groups): splits, moves and merges under faults, seeded.

See docs/partitioning.md.
"""

from .client import PartitionedClient
from .keyspace import HASH_BYTES, SCHEMES, hash_boundaries, hash_of, routing_key, sample_boundaries, stored_key, \
    user_key
from .partition_map import Locator, Partition, PartitionMap, initial_map, ownership_of
from .rebalance import PartitionLoad, PlacementMove, Proposal, RebalancePolicy, apply_proposal, plan, plan_placement
from .rebalancer import Rebalancer
from .store import PartitionedStore

__all__ = ["SCHEMES", "HASH_BYTES", "hash_of", "routing_key", "stored_key", "user_key", "hash_boundaries",
           "sample_boundaries", "Partition", "PartitionMap", "Locator", "initial_map", "ownership_of",
           "PartitionLoad", "Proposal", "RebalancePolicy", "plan", "apply_proposal", "PartitionedStore",
           "PartitionedClient", "PlacementMove", "plan_placement", "Rebalancer"]
