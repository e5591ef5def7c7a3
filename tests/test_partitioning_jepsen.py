"""Jepsen-style test of the partitioned store on real Ray actors: clients write and read while the
nemesis moves partitions between replica groups, kills a group's leader and cuts another off; the
run ends with the durability, scan and (Raft) linearizability verdicts."""

from __future__ import annotations

import os

import pytest

from ddia_ray.partitioning import PartitionedStore
from ddia_ray.partitioning.workload import run_partition_workload

pytestmark = pytest.mark.ray

DURATION_S = float(os.environ.get("DDIA_JEPSEN_S", "8"))


@pytest.mark.parametrize("scheme", ["hash", "range"])
def test_a_rebalance_under_a_leader_kill_and_a_partition_keeps_every_verdict(ray_session, scheme, tmp_path):
    options = {"partitions": 4} if scheme == "hash" else {"boundaries": [b"4", b"8", b"c"]}
    with PartitionedStore.launch(groups=2, replicas=3, scheme=scheme, engine="lsm", root=f"file://{tmp_path}",
                                 **options) as store:
        report = run_partition_workload(store, clients=3, keys=6, duration_s=DURATION_S, seed=7,
                                        faults=("kill-leader", "partition-leader"), fault_s=2.0, calm_s=0.5)
    text = "\n".join(report.summary() + [str(c) for c in report.changes] + [str(f) for f in report.faults])
    assert report.faults and report.changes, text  # the nemesis really did something
    assert any(outcome == "ok" for _, _, outcome in report.changes), text  # a change went through a fault
    assert report.writes_ok > 30 and report.reads_ok > 10, text
    assert report.durability_ok is True and report.missing == [], text
    assert report.scan_ok is True, text
    assert report.linearizable is True, text
    assert report.summary()[-1] == "partitioning: ok"
