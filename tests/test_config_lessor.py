"""The pure lessor core: deadlines from the ``now`` it is given, keepalives, expiry handed out once,
revokes retried, and a fresh TTL for every lease on promotion (a lessor restart or a new leader)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.config.lessor import Lessor
from ddia_ray.errors import InvalidArgumentError, LeaseExpiredError, LeaseNotFoundError


def test_a_lease_expires_at_its_ttl_and_not_before():
    lessor = Lessor()
    lessor.grant(1, 2.0, now_s=10.0)
    assert lessor.expired(11.999) == ()
    assert lessor.remaining(1, 11.0) == pytest.approx(1.0)
    assert lessor.expired(12.0) == (1,)
    assert lessor.expired(13.0) == ()  # handed out once
    assert lessor.remaining(1, 13.0) == 0.0


def test_a_keepalive_moves_the_deadline_a_full_ttl_from_now():
    lessor = Lessor()
    lessor.grant(7, 1.0, now_s=0.0)
    assert lessor.renew(7, 0.9) == 1.0
    assert lessor.expired(1.5) == ()
    assert lessor.expired(1.9) == (7,)


def test_a_keepalive_after_the_deadline_is_refused_as_expired():
    lessor = Lessor()
    lessor.grant(3, 1.0, now_s=0.0)
    with pytest.raises(LeaseExpiredError) as e:
        lessor.renew(3, 1.0)
    assert e.value.lease_id == 3
    lessor.expired(1.0)
    with pytest.raises(LeaseExpiredError):  # being revoked: still refused, never revived
        lessor.renew(3, 1.1)


def test_an_unknown_lease_is_not_found():
    with pytest.raises(LeaseNotFoundError) as e:
        Lessor().renew(42, 0.0)
    assert not isinstance(e.value, LeaseExpiredError) and e.value.lease_id == 42


def test_a_revoke_that_did_not_get_through_is_handed_out_again_after_retry_s():
    lessor = Lessor(retry_s=0.5)
    lessor.grant(1, 1.0, now_s=0.0)
    assert lessor.expired(1.0) == (1,)
    assert lessor.retry_due(1.4) == ()
    assert lessor.retry_due(1.5) == (1,)
    assert lessor.retry_due(1.6) == ()
    lessor.revoked(1)
    assert lessor.retry_due(5.0) == () and len(lessor) == 0


def test_sync_times_new_leases_from_now_and_forgets_gone_ones():
    lessor = Lessor()
    lessor.grant(1, 5.0, now_s=0.0)
    lessor.sync({2: 1.0}, now_s=3.0)  # 1 was revoked by its holder, 2 granted elsewhere
    assert 1 not in lessor.leases
    assert lessor.expired(3.9) == () and lessor.expired(4.0) == (2,)


def test_sync_keeps_a_known_lease_deadline():
    lessor = Lessor()
    lessor.grant(1, 2.0, now_s=0.0)
    lessor.sync({1: 2.0}, now_s=1.5)
    assert lessor.expired(2.0) == (1,)


def test_promote_gives_every_lease_a_fresh_ttl_but_keeps_decided_revokes():
    lessor = Lessor()
    lessor.grant(1, 2.0, now_s=0.0)
    lessor.grant(2, 1.0, now_s=0.0)
    assert lessor.expired(1.0) == (2,)
    lessor.promote(1.9)  # a failover just before lease 1's deadline
    assert lessor.expired(3.8) == ()
    assert lessor.expired(3.9) == (1,)
    assert lessor.retry_due(10.0) == (1, 2)  # lease 2's revoke stays decided


def test_next_deadline_is_the_earliest_live_one():
    lessor = Lessor()
    assert lessor.next_deadline_s() is None
    lessor.grant(1, 3.0, now_s=0.0)
    lessor.grant(2, 1.0, now_s=0.5)
    assert lessor.next_deadline_s() == 1.5


@pytest.mark.parametrize("lease, ttl", [(0, 1.0), (-1, 1.0), (1, 0.0), ("1", 1.0)])
def test_bad_grants_are_refused(lease, ttl):
    with pytest.raises(InvalidArgumentError):
        Lessor().grant(lease, ttl, 0.0)


_STEP = st.tuples(st.sampled_from(["grant", "renew", "expire", "promote", "sync"]), st.integers(1, 4),
                  st.floats(0.0, 2.0))


@settings(max_examples=100, deadline=None)
@given(st.lists(_STEP, max_size=60))
def test_no_lease_is_ever_expired_before_ttl_since_its_last_renewal(steps):
    """The lessor's safety property: whatever the order of grants, keepalives, promotions and
    syncs, a lease handed out as expired had no renewal within its TTL."""
    lessor = Lessor()
    now = 0.0
    renewed: dict[int, float] = {}
    ttl = {1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0}
    for action, lease, dt in steps:
        now += dt
        if action == "grant" and lease not in lessor.leases:
            lessor.grant(lease, ttl[lease], now)
            renewed[lease] = now
        elif action == "renew":
            try:
                lessor.renew(lease, now)
                renewed[lease] = now
            except LeaseNotFoundError:
                pass
        elif action == "promote":
            lessor.promote(now)
            for k in lessor.leases:
                if lessor.leases[k].revoking_since_s is None:
                    renewed[k] = now
        elif action == "sync":
            lessor.sync({k: s.ttl_s for k, s in lessor.leases.items()}, now)
        for gone in lessor.expired(now):
            assert now - renewed[gone] >= ttl[gone] - 1e-9


def test_a_keepalive_never_shortens_a_lease():
    lessor = Lessor()
    lessor.grant(4, 2.0, now_s=0.0)
    lessor.promote(1.5)  # a new leader: a full TTL from 1.5
    assert lessor.renew(4, 1.0) == 2.0  # a keepalive that arrived at 1.0, answered after the promotion
    assert lessor.expired(3.2) == ()  # 3.0 would have cut the promoted lease short
    assert lessor.expired(3.5) == (4,)


def _service_without_a_store(monkeypatch):
    from ddia_ray.config.lessor_service import LessorService

    def away(self):
        raise TimeoutError("the store is away")

    monkeypatch.setattr(LessorService, "_pass", away)
    monkeypatch.setattr(LessorService, "_store", lambda self: pytest.fail("a timed lease needs no store lookup"))
    return LessorService("lessor", store="nowhere", interval_s=0.01)


def test_a_keepalive_is_answered_at_once_before_the_lessors_first_sync(monkeypatch):
    # The service used to wait for its first sync (up to 10 s) before renewing anything, and a loaded
    # CI run's lease expired behind that wait. A lease its grant timed is renewed from the arrival.
    import time

    svc = _service_without_a_store(monkeypatch)
    try:
        svc.track(1, 4.0)
        started = time.monotonic()
        assert svc.keepalive(1) == 4.0
        assert time.monotonic() - started < 2.0
        assert svc.remaining(1) > 3.0
        assert svc.stats()["syncs"] == 0
    finally:
        svc.close()


def test_a_keepalive_of_an_expired_lease_is_refused_without_asking_the_store(monkeypatch):
    svc = _service_without_a_store(monkeypatch)
    try:
        svc.track(2, 0.01)
        import time

        time.sleep(0.05)
        with pytest.raises(LeaseExpiredError):
            svc.keepalive(2)
    finally:
        svc.close()
