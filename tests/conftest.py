"""Shared fixtures: one Ray instance for the whole test session, and one multi-node cluster run.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadgroup``, the README's command): every
test that takes a Ray fixture (:data:`RAY_FIXTURES`) or is marked ``ray`` (the job tests, which start a
head of their own) is in the xdist group ``ray``, so they all run in
one worker, one after the other, on one Ray instance, as they would without xdist; the other tests
(pure cores, simulations, model and property tests, fuzzing) run in the other worker meanwhile. A
test outside the group that starts Ray anyway fails at once (:func:`_ray_only_with_its_fixture`)
instead of racing the group's Ray.
"""

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

#: The fixtures that give a test Ray: such a test runs in the xdist group "ray" (see the module doc).
RAY_FIXTURES = frozenset({"ray_session", "three_node_cluster"})


def _uses_ray(item) -> bool:
    return not RAY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())) or item.get_closest_marker("ray") is not None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Put every test that uses Ray in the xdist group ``ray`` (one worker runs them all, in order)."""
    group = pytest.mark.xdist_group("ray")
    for item in items:
        if _uses_ray(item):
            item.add_marker(group)
    result = yield  # xdist's own hook, among the others, reads the groups into the tests' ids
    # pytest-xdist 3.8 renames a grouped test by setting Node._nodeid to "<id>@ray"; pytest 9 reads ids
    # from Node._id, so the workers would report the old ids and the controller would not group them.
    # Carry the new name over. _ray_only_with_its_fixture fails every Ray test if this ever stops working.
    for item in items:
        renamed = getattr(item, "_nodeid", None)
        if isinstance(renamed, str) and renamed != item.nodeid and hasattr(item, "_id"):
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(renamed)
    return result


@pytest.fixture(autouse=True)
def _ray_only_with_its_fixture(request, monkeypatch):
    """A test that does not use Ray may not start it: it would run beside the group's Ray, in the other
    worker. And under ``--dist loadgroup`` a test that uses Ray must have been grouped: otherwise each
    worker would start a Ray of its own, and both would share the two cores unseen."""
    if _uses_ray(request.node):
        if request.config.getoption("loadgroup", False) and not request.node.nodeid.endswith("@ray"):
            raise RuntimeError(f"{request.node.nodeid} uses Ray but is not in the xdist group 'ray'")
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray but takes no Ray fixture ({', '.join(sorted(RAY_FIXTURES))}) "
                           "and is not marked ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def ray_session():
    """Start (or join) a single local Ray for every integration test in the run."""
    import ray

    from ddia_ray.runtime.connect import ensure_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Workers report metrics every second instead of every ten: the metrics test reads them back.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    # Without RAY_ADDRESS, a Ray of the session's own ("local"): ray.init() with no address joins the
    # cluster named in /tmp/ray/ray_current_cluster, which the three-node cluster (ray.cluster_utils)
    # writes, and which outlives that cluster.
    ensure_ray(**({} if os.environ.get("RAY_ADDRESS") else {"address": "local"}))
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
