"""The tick pacer: a core that asks for it gets every tick the clock says is due, however late the
shell wakes; on Ray, a lease holder's tick count keeps pace with the clock while its loop is blocked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import ConfigError
from ddia_ray.runtime.ticks import TickPacer


def test_ticks_fall_due_by_the_clock_not_by_the_wake_ups():
    p = TickPacer(0.01, 100.0)
    assert p.delay(100.0) == pytest.approx(0.01)
    assert p.due(100.005) == 0
    assert p.due(100.0101) == 1
    assert p.due(100.5) == 49  # woke half a second late: every missed tick at once
    assert p.ticks == 50
    assert p.delay(100.5) == pytest.approx(0.01)
    with pytest.raises(ConfigError):
        TickPacer(0, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0.001, 0.01, 0.05]), st.lists(st.floats(0, 0.3), max_size=60))
def test_the_count_stays_within_one_tick_of_the_elapsed_time(tick_s, gaps):
    start = 5.0
    p, now = TickPacer(tick_s, start), start
    for gap in gaps:
        now += gap
        p.due(now)
        assert -1e-6 <= (now - start) / tick_s - p.ticks < 1 + 1e-6  # float rounding either side


@pytest.mark.ray
def test_on_ray_a_clock_ticked_core_keeps_pace_while_its_loop_is_blocked(ray_session, tmp_path):
    import time
    import uuid

    from ddia_ray.demo.replica import Work
    from ddia_ray.runtime import CoreSpec, NodeGroup

    specs = {n: CoreSpec("ddia_ray.demo.replica:ReplicaCore", {"clock_ticks": n == "paced"})
             for n in ("paced", "plain")}
    group = NodeGroup.launch(f"t{uuid.uuid4().hex[:8]}", specs, root=f"file://{tmp_path}")
    try:
        behind = {}
        for node in ("paced", "plain"):
            before = group.status()[node]["core"]["ticks"]
            t0 = time.monotonic()
            # Hashing in on_request holds the shell's event loop for about a second: no timer fires.
            group.request(node, Work("spin", rounds=2_000_000), timeout_s=120)
            elapsed = time.monotonic() - t0
            counted = group.status()[node]["core"]["ticks"] - before
            behind[node] = elapsed / 0.01 - counted  # ticks the core is short of the clock
            assert elapsed > 0.3, "the work did not block the loop long enough to tell"
        assert behind["paced"] <= 5, behind
        assert behind["plain"] >= 20, behind  # what the pacer is for: the plain timer lost them
    finally:
        group.shutdown(destroy_data=True)
