"""Jepsen-style test of RaftKV on real Ray actors: concurrent clients read, write and cas a few
keys while a nemesis partitions, kills, restarts and pauses members (the leader included); each
fault schedule must end with a linearizable verdict from the checker."""

from __future__ import annotations

import os

import pytest

from ddia_ray.kv import RaftKV
from ddia_ray.kv.workload import run_workload

pytestmark = pytest.mark.ray

DURATION_S = float(os.environ.get("DDIA_JEPSEN_S", "6"))
SCHEDULES = ["partition-leader", "kill-leader", "kill-follower", "pause-leader", "partition-halves", "mixed"]


@pytest.fixture(scope="module")
def cluster(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("jepsen")
    kv = RaftKV.launch(3, root=f"file://{root}", tick_s=0.02)
    kv.leader()
    yield kv
    kv.shutdown(destroy_data=True)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_linearizable_under_faults(cluster, schedule):
    report = run_workload(cluster, clients=4, keys=3, duration_s=DURATION_S, schedule=schedule,
                          seed=SCHEDULES.index(schedule))
    assert report.linearizable is True, report.verdict
    assert report.faults, "the nemesis did nothing"
    assert report.ok > 50, f"too little work to judge: {report.ok} ok ops"
    if schedule in ("partition-leader", "kill-leader", "pause-leader"):
        assert report.elections >= 2, report.terms  # the fault really cost the leader its job
