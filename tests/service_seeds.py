"""What the tests of a service's seeded simulation share (the event store's, the configuration store's):
many seeds with every report kept, the proof that the runs met real faults, and exact replays.

A service's run (:func:`ddia_ray.replication.service_simulation.run_service`) reports the Raft run it
stood on (``report.raft``); its leaders and faults show whether the seeds exercised failovers and
crashes at all, since checks that never meet a fault prove nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from ddia_ray.runtime.simnet import run_seeds


def run_service_seeds(simulate: Callable[..., Any], seeds: int, test: str, **options: Any) -> list:
    """The reports of ``simulate(seed, **options)`` for seeds ``0..seeds-1`` (``DDIA_SEED=<n>``
    replays one; a failure prints ``DDIA_SEED=<n> python -m pytest <test>``). When every seed ran,
    asserts that leadership changed in more than half of the runs and a member crashed in more
    than a third."""
    reports: list = []
    run_seeds(lambda seed: reports.append(simulate(seed, **options)), range(seeds),
              replay=f"DDIA_SEED={{seed}} python -m pytest {test}")
    if len(reports) == seeds:
        assert sum(len(r.raft.leaders) >= 2 for r in reports) > seeds // 2  # leadership changed
        assert sum(any(f.startswith("crash") for _, f in r.raft.faults) for r in reports) > seeds // 3
    return reports


def assert_replays_exactly(simulate: Callable[..., Any], seed: int, *figures: str) -> None:
    """Two runs of ``seed`` agree on the Raft run's faults and on each of the report's ``figures``."""
    a, b = simulate(seed), simulate(seed)
    assert [getattr(a, f) for f in figures] + [a.raft.faults] == [getattr(b, f) for f in figures] + [b.raft.faults]
