"""Shared fixtures: one Ray instance for the whole test session, and one multi-node cluster run."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from ddia_ray.storage.lsm.locks import LOCK_CHECK_ENV

# Every LSM the suite opens checks the engine's lock order (storage/lsm/locks.py): an inversion
# raises at the acquisition that breaks the order instead of waiting for the schedule that deadlocks.
# Child processes (crash and stress tests) inherit it. It is off by default because it slows puts.
os.environ.setdefault(LOCK_CHECK_ENV, "1")


@pytest.fixture(scope="session")
def ray_session():
    """Start (or join) a single local Ray for every integration test in the run."""
    import ray

    from ddia_ray.runtime.connect import ensure_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Workers report metrics every second instead of every ten: the metrics test reads them back.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def three_node_cluster():
    """tests/partitioning_cluster.py, run once for the tests that need a multi-node cluster: it starts a
    3-node local Ray cluster of its own in a subprocess (apart from ``ray_session``), places the groups
    test_runtime_placement checks, then runs the partitioned store on it. Returns the finished process."""
    pytest.importorskip("ray.data")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    script = pathlib.Path(__file__).with_name("partitioning_cluster.py")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=540, env=env)
