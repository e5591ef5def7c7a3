"""The event store's Raft group in the seeded simulation under faults: no acknowledged append lost,
$all gap-free, catch-up subscribers (unfiltered and filtered) exactly once and in order across
failovers and restarts, the consumer group at least once with nothing parked silently; and proof
that the checks catch broken procedures.

Replay a failing seed with the command the failure prints (``DDIA_SEED=<n> python -m pytest ...``).
"""

from __future__ import annotations

import os

import pytest

from ddia_ray.events import keys, queries
from ddia_ray.events.simulation import EventStoreViolation, simulate
from service_seeds import assert_replays_exactly, run_service_seeds

SEEDS = int(os.environ.get("DDIA_EVENTS_SEEDS", "200"))


def test_many_seeds_keep_the_event_store_guarantees():
    reports = run_service_seeds(simulate, SEEDS, "tests/test_events_simulation.py -k many_seeds", duration_s=3.0)
    if len(reports) == SEEDS:  # the runs did real work under real faults
        assert sum(r.events for r in reports) > 10 * SEEDS
        assert sum(r.group_redelivered for r in reports) > 0  # consumers crashed mid-batch, events came back


def test_a_seed_replays_exactly():
    assert_replays_exactly(simulate, 7, "events", "appends_acked", "delivered")


def test_the_checks_catch_a_gap_in_all(monkeypatch):
    real = keys.next_position

    def skipping(get):  # the global sequence reads one too high now and then: a gap
        got = real(get)
        return got + 1 if got % 5 == 4 else got

    monkeypatch.setattr(keys, "next_position", skipping)
    with pytest.raises(EventStoreViolation):
        for seed in range(20):
            simulate(seed)


def test_the_checks_catch_a_lost_filtered_event(monkeypatch):
    real = queries._all_forward

    def lossy(state, pos, end, limit, kind, prefix):  # drops the last chunk of a filtered page
        parts, nxt = real(state, pos, end, limit, kind, prefix)
        return (parts[:-1] if kind and len(parts) > 1 else parts), nxt

    monkeypatch.setattr(queries, "_all_forward", lossy)
    with pytest.raises(EventStoreViolation):
        for seed in range(20):
            simulate(seed)


def test_the_checks_catch_a_group_leader_that_resumes_past_what_the_old_one_handed_out(monkeypatch):
    from ddia_ray.events import group_service

    real = group_service.GroupService._load

    def naive(self, state, group):  # a new leader skips to the end of $all instead of the last checkpoint
        fresh = group not in self.groups
        g = real(self, state, group)
        if fresh and g.foreign > g.cursor:
            g.cursor = g.foreign
            self.groups[group] = g.copy()
        return g

    monkeypatch.setattr(group_service.GroupService, "_load", naive)
    with pytest.raises(EventStoreViolation):
        for seed in range(20):
            simulate(seed)
