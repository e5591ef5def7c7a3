"""A lease kept alive from the keeper's own thread (``ConfigClient.keep_alive``), on the one-process
store with a fake lessor clock: it renews while the holder does nothing, it stops and reports a lease
that was revoked or expired, and closing the client stops it."""

from __future__ import annotations

import threading
import pytest

from ddia_ray.config import LocalConfig
from ddia_ray.errors import InvalidArgumentError, LeaseExpiredError, LeaseNotFoundError
from tests.raywait import wait_for


@pytest.fixture()
def clocked():
    now = [0.0]
    c = LocalConfig(clock=lambda: now[0])
    yield c, now
    c.close()


def test_a_kept_lease_outlives_many_ttls_without_its_holder_calling(clocked):
    c, now = clocked
    lease = c.grant(2.0)
    c.put("services/api/a", "up", lease=lease.id)
    keeper = c.keep_alive(lease.id, every_s=0.005)
    for step in range(1, 9):  # 8 s of lessor time, four TTLs, one renewal seen per 1.5 s step
        seen = keeper.renewals
        wait_for(lambda seen=seen: keeper.renewals > seen, 10.0, interval_s=0.005, what="a renewal")
        now[0] = step * 1.5
        wait_for(lambda seen=seen: keeper.renewals > seen + 1, 10.0, interval_s=0.005, what="a renewal at the new time")
        assert c.get("services/api/a") is not None, f"expired at lessor time {now[0]} while kept alive"
    keeper.cancel()
    assert not keeper.alive and keeper.error is None
    now[0] += 2.1  # a TTL past the last renewal
    assert c.get("services/api/a") is None


def test_a_keeper_stops_and_reports_a_revoked_lease(clocked):
    c, _ = clocked
    lease = c.grant(5.0)
    lost: list = []
    keeper = c.keep_alive(lease.id, every_s=0.005, on_lost=lost.append)
    c.revoke(lease.id)
    wait_for(lambda: not keeper.alive, 10.0, interval_s=0.005, what="the keeper stopped")
    assert isinstance(keeper.error, LeaseNotFoundError) and lost == [keeper.error]
    assert "lost" in repr(keeper)


def test_a_keeper_stops_on_an_expired_lease_and_a_raising_callback_does_not_hide_why(clocked):
    c, now = clocked
    lease = c.grant(1.0)
    keeper = c.keep_alive(lease.id, every_s=0.005, on_lost=lambda e: 1 / 0)
    wait_for(lambda: keeper.renewals >= 1, 10.0, interval_s=0.005, what="a renewal")
    now[0] = 100.0  # the holder's process stalled past its TTL: the lease is gone
    wait_for(lambda: not keeper.alive, 10.0, interval_s=0.005, what="the keeper stopped")
    assert isinstance(keeper.error, LeaseExpiredError) and keeper.error.lease_id == lease.id


def test_keep_alive_refuses_a_lost_lease_at_once_and_bad_arguments(clocked):
    c, now = clocked
    lease = c.grant(1.0)
    now[0] = 2.0
    with pytest.raises(LeaseExpiredError):
        c.keep_alive(lease.id)  # every_s from the TTL: asks the lessor first
    for bad in ({"every_s": 0}, {"every_s": -1.0}, {"on_lost": "no"}):
        with pytest.raises(InvalidArgumentError):
            c.keep_alive(c.grant(1.0).id, **bad)
    with pytest.raises(InvalidArgumentError):
        c.keep_alive(0)


def test_the_default_beat_is_a_third_of_the_ttl_and_closing_the_client_stops_every_keeper():
    now = [0.0]
    c = LocalConfig(clock=lambda: now[0])
    keepers = [c.keep_alive(c.grant(3.0).id) for _ in range(3)]
    assert [k.every_s for k in keepers] == [1.0, 1.0, 1.0]
    with keepers[0]:
        pass
    assert not keepers[0].alive
    c.close()
    assert not any(k.alive for k in keepers)
    assert {t.name for t in threading.enumerate()}.isdisjoint({f"lease-keeper-{k.lease_id}" for k in keepers})
