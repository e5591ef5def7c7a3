"""Run in a subprocess by test_runtime_placement: a 3-node local Ray cluster, one group on it."""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

from ddia_ray.runtime import CoreSpec, NodeGroup


def main() -> None:
    members = int(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="ddia_ray")
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})
    group = NodeGroup.launch("placed", {f"m{i}": spec for i in range(members)})
    placed = {n: s["ray_node"] for n, s in group.status().items()}
    group.shutdown()
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"placed": placed, "nodes": 3}))


if __name__ == "__main__":
    main()
