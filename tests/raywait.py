"""Awaiting conditions in integration tests (polling a predicate, never a bare sleep)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value; fail the test after ``timeout_s``."""
    return until(predicate, timeout_s, what, interval_s=interval_s)


def until(check, timeout_s: float = 60.0, what: str = "condition", describe=None, *, interval_s: float = 0.05):
    """:func:`wait_for` with the argument order the store tests use: ``check()``'s first truthy value,
    or an AssertionError after ``timeout_s`` that names ``what`` (and ``describe()``'s account of
    the state, when given). 60 s by default: the deadline only matters when the condition never
    comes, and on a loaded 2-core machine restarts and checkpoint installs took past 20 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            detail = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"{what} not reached within {timeout_s}s{detail}")
        time.sleep(interval_s)


def actor_dead(actor_id: str) -> bool:
    """Whether Ray reports actor ``actor_id`` (hex) dead, asking this session's Ray by its address: with
    no address the state API looks for every local Ray on the machine and refuses when it finds two
    (another test's own head, or a developer's Ray running beside the suite)."""
    import ray
    from ray.util.state import get_actor

    state = get_actor(actor_id, address=ray.get_runtime_context().gcs_address)
    return state is not None and state.state == "DEAD"
