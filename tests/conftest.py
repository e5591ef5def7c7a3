"""Shared fixtures: one Ray instance for the whole test session, and one multi-node cluster run.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadgroup``, the README's command): every
test that takes the session's Ray (:data:`RAY_FIXTURES`) or is marked ``ray`` is in the xdist group
``ray``, so they all run in one worker, one after the other, on one Ray instance, as they would
without xdist. The tests that run a Ray of their own in other processes (:func:`_own_ray`: the job
tests' private head, the three-node cluster, the notebooks' kernels) are the group ``own-ray``: one
after the other too, in the other worker, beside the pure cores, simulations, model and property
tests and fuzzing. The ``ray`` group alone took 18 to 20 minutes of a 20-minute budget; moving the
own-Ray tests (about 260 s) out of it lets the other worker, which finished about 8 minutes
earlier, carry them (docs/testing.md). A test outside both groups that starts Ray anyway fails at
once (:func:`_ray_only_with_its_fixture`) instead of racing the group's Ray.
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

#: The fixture that gives a test the session's Ray: such a test runs in the xdist group "ray".
RAY_FIXTURES = frozenset({"ray_session"})
#: Fixtures that run a Ray of their own in another process: their tests run in the group "own-ray".
OWN_RAY_FIXTURES = frozenset({"three_node_cluster"})


def _own_ray(item) -> bool:
    """Whether the test runs a Ray of its own in other processes (marked ``own_ray`` or taking
    :data:`OWN_RAY_FIXTURES`), never the session's: it can run beside the ``ray`` group."""
    return (not OWN_RAY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
            or item.get_closest_marker("own_ray") is not None)


def _uses_ray(item) -> bool:
    return (_own_ray(item) or not RAY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
            or item.get_closest_marker("ray") is not None)


def _group(item) -> str | None:
    """The xdist group of a test: ``own-ray``, ``ray``, or none."""
    if _own_ray(item):
        if not RAY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            raise RuntimeError(f"{item.nodeid} runs a Ray of its own (own_ray) and also takes the session's")
        return "own-ray"
    return "ray" if _uses_ray(item) else None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Put every test that uses Ray in its xdist group, ``ray`` or ``own-ray`` (a worker runs each
    group's tests, in order)."""
    for item in items:
        group = _group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
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
    worker. Nor may an ``own-ray`` test start one in this process: its Ray runs in processes of its
    own. And under ``--dist loadgroup`` a test that uses Ray must have been grouped: otherwise each
    worker would start a Ray of its own, and both would share the two cores unseen."""
    group = _group(request.node)
    if group is not None and request.config.getoption("loadgroup", False) \
            and not request.node.nodeid.endswith(f"@{group}"):
        raise RuntimeError(f"{request.node.nodeid} uses Ray but is not in the xdist group {group!r}")
    if group == "ray":
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray in the test's process but takes no Ray fixture "
                           f"({', '.join(sorted(RAY_FIXTURES))}) and is not marked ray")

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
    # cluster named in /tmp/ray/ray_current_cluster, which the own-ray group's three-node cluster
    # (ray.cluster_utils) writes while this group may be starting, in the other worker.
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
