"""Awaiting conditions in integration tests (polling a predicate, never a bare sleep)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def actor_dead(actor_id: str) -> bool:
    """Whether Ray reports actor ``actor_id`` (hex) dead, asking this session's Ray by its address: with
    no address the state API looks for every local Ray on the machine and refuses when it finds two
    (another test's own head, or a developer's Ray running beside the suite)."""
    import ray
    from ray.util.state import get_actor

    state = get_actor(actor_id, address=ray.get_runtime_context().gcs_address)
    return state is not None and state.state == "DEAD"
