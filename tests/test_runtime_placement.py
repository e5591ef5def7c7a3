"""Members of a group land on distinct Ray nodes when the cluster has several."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize("members", [3, 5])
def test_members_spread_over_the_nodes_of_a_multi_node_cluster(members):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    script = pathlib.Path(__file__).with_name("placement_cluster.py")
    out = subprocess.run([sys.executable, str(script), str(members)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    used = list(result["placed"].values())
    assert len(set(used)) == min(members, result["nodes"])  # distinct while nodes last
    assert max(used.count(n) for n in set(used)) - min(used.count(n) for n in set(used)) <= 1
