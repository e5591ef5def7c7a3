"""Members of a group land on distinct Ray nodes when the cluster has several."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def placements(three_node_cluster):
    """Where the members of each group ran (tests/placement_cluster.py, on the shared 3-node cluster)."""
    lines = [json.loads(line) for line in three_node_cluster.stdout.splitlines() if line.startswith("{")]
    found = [line["member_placement"] for line in lines if "member_placement" in line]
    assert found, three_node_cluster.stderr[-3000:]
    return found[0]


@pytest.mark.parametrize("members", [3, 5])
def test_members_spread_over_the_nodes_of_a_multi_node_cluster(placements, members):
    used = list(placements["placed"][str(members)].values())
    assert len(used) == members
    assert len(set(used)) == min(members, placements["nodes"])  # distinct while nodes last
    assert max(used.count(n) for n in set(used)) - min(used.count(n) for n in set(used)) <= 1
