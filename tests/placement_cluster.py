"""Run in a subprocess by test_runtime_placement (through tests/partitioning_cluster.py, which starts the
cluster once for both tests): one group per member count on a 3-node local Ray cluster
(``placement_cluster.py 3 5`` on its own starts a cluster and launches a group of 3, then one of 5)."""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

from ddia_ray.runtime import CoreSpec, NodeGroup

NODES = 3


def start_cluster() -> Cluster:
    """A head and two more nodes of one CPU each, with this driver connected to it."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(NODES - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="ddia_ray")
    return cluster


def place(counts: list[int]) -> dict:
    """Launch a group of each size in ``counts``, one after the other (each alone on the cluster: the
    one before is shut down first); returns where each member ran."""
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})
    placed = {}
    for members in counts:
        group = NodeGroup.launch(f"placed-{members}", {f"m{i}": spec for i in range(members)})
        placed[str(members)] = {n: s["ray_node"] for n, s in group.status().items()}
        group.shutdown()
    return {"placed": placed, "nodes": NODES}


def main() -> None:
    cluster = start_cluster()
    try:
        result = place([int(arg) for arg in sys.argv[1:]])
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
