"""The configuration store's Raft group in the seeded simulation under faults: every watcher sees
every revision of its keys exactly once and in order, across failovers of the replicas it asks and
its own reconnects; the history follows etcd's rules; no acknowledged write is lost; leases expire
through the lessor and their keys with them; and proof that the checks catch a broken watch feed,
a broken history or a lease that keeps its keys.

Replay a failing seed with the command the failure prints (``DDIA_SEED=<n> python -m pytest ...``).
"""

from __future__ import annotations

import os

import pytest

from ddia_ray.config import mvcc, queries
from ddia_ray.config.simulation import ConfigViolation, check_etcd_rules, simulate
from service_seeds import assert_replays_exactly, run_service_seeds

SEEDS = int(os.environ.get("DDIA_CONFIG_SEEDS", "100"))


def test_many_seeds_keep_the_watch_guarantees():
    reports = run_service_seeds(simulate, SEEDS, "tests/test_config_simulation.py -k many_seeds", duration_s=2.5)
    if len(reports) == SEEDS:  # the runs did real work under real faults
        assert sum(r.revisions for r in reports) > 5 * SEEDS
        assert sum(sum(r.delivered.values()) for r in reports) > 10 * SEEDS
        assert sum(r.failed_rounds for r in reports) > SEEDS  # watch rounds failed over to other replicas
        assert sum(r.reconnects for r in reports) > 0
        assert sum(r.leases_expired for r in reports) > SEEDS // 2  # the lessor revoked expired leases


def test_a_seed_replays_exactly():
    assert_replays_exactly(simulate, 7, "revisions", "writes_acked", "delivered")


def test_the_checks_catch_a_feed_that_skips_a_revision(monkeypatch):
    real = queries._matches

    def lossy(key, ranges):  # the feed forgets changes of one key for the filtered watchers
        return real(key, ranges) and not (ranges is not None and key == "app/b")

    monkeypatch.setattr(queries, "_matches", lossy)
    with pytest.raises(ConfigViolation):
        for seed in range(20):
            simulate(seed)


def test_the_checks_catch_a_version_that_skips(monkeypatch):
    real = mvcc.Live

    class Skipping(real):  # a second write of a key counts it twice
        def __init__(self, create, mod, version, lease):
            super().__init__(create, mod, version + 1 if version == 2 else version, lease)

    monkeypatch.setattr(mvcc, "Live", Skipping)
    with pytest.raises(ConfigViolation):
        for seed in range(20):
            simulate(seed)


def test_the_checks_catch_a_revoke_that_leaves_keys_behind(monkeypatch):
    from ddia_ray.config import mvcc

    class Forgetful(mvcc.Revision):
        def revoke(self, lease):  # drops the lease row but deletes none of its keys
            self.lease(lease)
            self._leases[lease] = None
            self._dirty.add(lease)
            return 0

    from ddia_ray.config import procedures
    monkeypatch.setattr(procedures, "Revision", Forgetful)
    with pytest.raises(ConfigViolation):
        for seed in range(40):
            simulate(seed)


def test_the_etcd_rules_checker_refuses_a_bad_history():
    good = [("put", "k", 1, b"v", 1, 1), ("put", "k", 2, b"w", 1, 2), ("delete", "k", 3, None, 0, 0),
            ("put", "k", 4, b"x", 4, 1)]
    check_etcd_rules(good)
    for bad in ([("put", "k", 1, b"v", 1, 1), ("put", "k", 2, b"w", 1, 3)],
                [("delete", "k", 1, None, 0, 0)],
                [("put", "k", 1, b"v", 1, 1), ("delete", "k", 2, None, 0, 0), ("put", "k", 3, b"x", 1, 2)],
                [("put", "k", 2, b"v", 2, 1), ("put", "j", 1, b"v", 1, 1)]):
        with pytest.raises(ConfigViolation):
            check_etcd_rules(bad)
