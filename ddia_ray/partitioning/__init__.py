"""A store partitioned over replica groups (DDIA chapter 6).

* :mod:`.keyspace`: routing keys under the key-range and hash schemes, and boundaries chosen
  evenly (hash) or from a sample of the data (range);
* :mod:`.partition_map`: the versioned :class:`PartitionMap` (which group owns which range),
  its changes (split, merge, move), the check a replica makes before serving a request, and a
  :class:`Locator` that routes keys, ranges and batches;
* :mod:`.rebalance`: the planner that proposes splits, merges and moves from measured loads.

The pieces on Ray (the store's handle, its partition-aware client and router tier, rebalancing
and the Ray Data paths) build on these. See docs/partitioning.md.
"""

from .keyspace import HASH_BYTES, SCHEMES, hash_boundaries, hash_of, routing_key, sample_boundaries
from .partition_map import Locator, Partition, PartitionMap, initial_map
from .rebalance import PartitionLoad, Proposal, RebalancePolicy, apply_proposal, plan

__all__ = ["SCHEMES", "HASH_BYTES", "hash_of", "routing_key", "hash_boundaries", "sample_boundaries", "Partition",
           "PartitionMap", "Locator", "initial_map", "PartitionLoad", "Proposal", "RebalancePolicy", "plan",
           "apply_proposal"]
