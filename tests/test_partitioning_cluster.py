"""The partitioned store on a multi-node local Ray cluster: groups on distinct nodes, the Ray Data
round trip across nodes, and a replica moved to another node while a writer runs."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_partitions_spread_over_nodes_and_move_between_them(three_node_cluster):
    out = three_node_cluster  # tests/partitioning_cluster.py, run once (conftest.py)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 3
    nodes = [n for replicas in result["placement"].values() for n in replicas.values()]
    assert len(nodes) == 3 and len(set(nodes)) == 3, result  # one group per Ray node
    assert result["written"] == 3000 and result["written_parquet"] == 2000, result
    assert result["read"] == 5000 and result["read_ok"], result
    assert result["moved"]["on_target"] and result["moved"]["old_gone"], result
    assert result["acked_during_move"] > 0 and result["missing_after_move"] == 0, result
    assert result["writer_errors"] == [], result
    # After a fourth node joined: one replica relocated onto it (3 groups of one replica, 4 nodes).
    assert len(result["relocations"]) == 1 and result["relocated"] == ["ok"], result
    assert result["nodes_used_after_join"] == 3, result
