"""Run in a subprocess, once for test_runtime_placement and test_partitioning_cluster (the ``three_node_cluster``
fixture in conftest.py): a 3-node local Ray cluster, groups of 3 and 5 members placed on it (placement_cluster.py),
then a partitioned store on it. Prints two JSON lines with what it saw: ``{"member_placement": ...}`` as soon as the
groups are placed, then the partitioned store's results."""

from __future__ import annotations

import json
import tempfile
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from placement_cluster import place, start_cluster

#: The group sizes test_runtime_placement checks.
PLACEMENT_MEMBERS = [3, 5]


def main() -> None:
    cluster = start_cluster()
    # Starting a cluster costs more than a group: the placement test's groups run on this one first.
    print(json.dumps({"member_placement": place(PLACEMENT_MEMBERS)}), flush=True)
    from ddia_ray.partitioning import PartitionedStore

    out: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    store = PartitionedStore.launch(groups=3, replicas=1, partitions=6)
    try:
        out["placement"] = store.placement()
        keys = [f"k{i:05d}".encode() for i in range(3000)]
        table = pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array([k[::-1] for k in keys], pa.binary())})
        out["written"] = store.write_dataset(ray.data.from_arrow(table))
        # Parquet files load through the store's own tasks, which Ray places on any node (the
        # nodes share this machine's disk, as a cluster shares a bucket).
        with tempfile.TemporaryDirectory() as files:
            more = [f"p{i:05d}".encode() for i in range(2000)]
            for i in range(4):
                part = more[i * 500:(i + 1) * 500]
                pq.write_table(pa.table({"key": pa.array(part, pa.binary()), "value": pa.array(part, pa.binary())}),
                               f"{files}/part-{i}.parquet")
            out["written_parquet"] = store.write_dataset(files, ingest_rows=200)
        refs = store.to_ray_dataset().to_arrow_refs()
        got = pa.concat_tables([ray.get(r) for r in refs])
        out["read"] = got.num_rows
        out["read_ok"] = dict(zip(got.column("key").to_pylist(), got.column("value").to_pylist())) == {
            **dict(zip(keys, [k[::-1] for k in keys])), **{k: k for k in more}}
        # Move the first group's replica to another Ray node while a writer runs.
        g1 = sorted(store.groups)[0]
        (old, old_node), = out["placement"][g1].items()
        target = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != old_node)
        stop, acked, errors = threading.Event(), [], []

        def writer():
            with store.client() as c:
                i = 0
                while not stop.is_set():
                    try:
                        c.put(b"during%06d" % i, b"x")
                        acked.append(b"during%06d" % i)
                    except Exception as e:  # noqa: BLE001 - reported in the output
                        errors.append(repr(e))
                    i += 1

        t = threading.Thread(target=writer)
        t.start()
        new = store.move_replica(g1, old, target)
        stop.set()
        t.join(60)
        after = store.placement()[g1]
        out["moved"] = {"new": new, "on_target": after.get(new) == target, "old_gone": old not in after}
        with store.client() as c:
            out["acked_during_move"] = len(acked)
            out["missing_after_move"] = sum(1 for v in c.get_many(acked) if v is None)
        out["writer_errors"] = errors[:3]
        # A node joins: the rebalancer proposes moving a replica onto it, and applies the proposal.
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        reb = store.rebalancer()
        proposals = [p for p in reb.propose() if getattr(p, "action", "") == "relocate"]
        out["relocations"] = [(p.group, p.replica) for p in proposals]
        out["relocated"] = [outcome for _, outcome in reb.apply(proposals)]
        out["nodes_used_after_join"] = len({n for replicas in store.placement().values() for n in replicas.values()})
    finally:
        store.shutdown(destroy_data=True)
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
