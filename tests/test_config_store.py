"""The configuration store on real Ray actors (a Raft group plus its lessor): reads, writes and
transactions; a lease kept alive past its TTL, then expiring into deletes a watcher sees; a watch
that keeps every revision once and in order while the leader is killed; a watcher that reconnects
from its revision; the lessor killed and restarted; compaction; connect()."""

from __future__ import annotations

import threading
import time

import pytest

from ddia_ray.config import Compare, ConfigStore, Op
from ddia_ray.errors import CompactedError, FutureRevisionError, LeaseExpiredError, LeaseNotFoundError
from tests.raywait import until as _until

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    s = ConfigStore.launch(replicas=3, engine="map", root=f"file://{root}", lessor_interval_s=0.05)
    yield s
    s.shutdown(destroy_data=True)


def test_reads_writes_and_transactions(store):
    with store.client() as c:
        r1 = c.put("svc/a", {"port": 1})
        r2 = c.put("svc/a", {"port": 2})
        assert c.get("svc/a").value == {"port": 2} and c.get("svc/a", revision=r1).value == {"port": 1}
        assert (c.get("svc/a").create_revision, c.get("svc/a").version) == (r1, 2)
        res = c.txn([Compare("svc/a", "mod_revision", "==", r2)], [Op.put("svc/b", "x"), Op.get("svc/a")])
        assert res.succeeded and res.revision == r2 + 1 and res.responses[1].value == {"port": 2}
        lost = c.txn([Compare("svc/a", "mod_revision", "==", r1)], [Op.put("svc/b", "y")], [Op.get("svc/b")])
        assert not lost.succeeded and lost.responses[0].value == "x"
        assert [kv.key for kv in c.get_prefix("svc/")] == ["svc/a", "svc/b"]
        with pytest.raises(FutureRevisionError):
            c.get("svc/a", revision=c.revision() + 1)


def test_a_kept_alive_lease_outlives_its_ttl_then_expires_into_deletes(store):
    with store.client() as c:
        events: list = []
        w = c.watch("eph/", events.extend, prefix=True)
        # The lease is renewed from a keeper thread of its own, as a registered service would, so a slow
        # read in the foreground cannot delay a renewal; a TTL of seconds leaves a loaded 2-core machine
        # room for the keeper's thread to stall.
        lease = c.grant(4.0)
        c.put("eph/worker-1", "up", lease=lease.id)
        c.put("eph/worker-2", "up", lease=lease.id)
        keeper = c.keep_alive(lease.id, every_s=0.25)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:  # longer than the TTL, kept alive
            assert c.get("eph/worker-1") is not None
            assert keeper.alive, keeper.error
            time.sleep(0.3)
        keeper.cancel()
        assert keeper.renewals >= 5 and keeper.error is None
        last = keeper.last_renewed_s  # the lessor renewed no earlier than this
        _until(lambda: not c.get_prefix("eph/"), 15.0, "the expired lease's keys gone")
        assert time.monotonic() - last >= 4.0  # not before a TTL after the last keepalive
        _until(lambda: len([e for e in events if e.kind == "delete"]) >= 2, 10.0, "the deletes delivered")
        deletes = [e for e in events if e.kind == "delete"]
        assert sorted(e.kv.key for e in deletes) == ["eph/worker-1", "eph/worker-2"]
        assert len({e.revision for e in deletes}) == 1  # one revision for the lease's keys
        assert all(e.prev.value == "up" for e in deletes)
        with pytest.raises(LeaseExpiredError):
            c.keepalive(lease.id)
        with pytest.raises(LeaseExpiredError):
            c.put("eph/worker-3", "up", lease=lease.id)
        with pytest.raises(LeaseNotFoundError):
            c.put("eph/worker-3", "up", lease=10_000)
        w.cancel()


def test_a_watch_keeps_every_revision_across_a_leader_kill_and_a_reconnect(store):
    with store.client(timeout_s=30) as writer, store.client() as watcher:
        start = writer.revision() + 1
        first: list = []
        w = watcher.watch("load/", first.extend, prefix=True, start_revision=start)
        acked: list[int] = []

        def write():
            for i in range(150):
                acked.append(writer.put(f"load/k{i % 7}", i))

        t = threading.Thread(target=write)
        t.start()
        _until(lambda: len(acked) >= 40, 30.0, "writes before the kill")
        old = store.leader()
        store.kill(old)
        _until(lambda: len(first) >= 80, 30.0, "deliveries after the kill")
        # The watching process goes away; a new one resumes from the revision it reached.
        resume_at = w.revision + 1
        watcher.close()
        t.join(60)
        store.restart(old)
        end = writer.revision()
        with store.client(read="follower") as again:
            second: list = []
            w2 = again.watch("load/", second.extend, prefix=True, start_revision=resume_at)
            assert w2.wait_revision(end, 30.0)
        revisions = [e.revision for e in first if e.revision < resume_at] + [e.revision for e in second]
        assert revisions == list(range(start, end + 1)), "a revision was skipped or repeated"
        assert sorted(acked) == list(range(start, end + 1))  # every acknowledged put is one of them
        values = {e.revision: e.kv.value for e in first + second}
        assert [values[r] for r in sorted(acked)] == list(range(150))


def test_the_lessor_restarted_times_every_lease_afresh(store):
    with store.client() as c:
        lease = c.grant(2.0)
        c.put("node/1", "up", lease=lease.id)
        killed = time.monotonic()
        store.kill("lessor")
        # No lessor for longer than the TTL (no keepalive possible): the restarted one must not count it.
        time.sleep(max(0.0, 2.2 - (time.monotonic() - killed)))
        store.restart("lessor")
        assert c.keepalive(lease.id) == 2.0
        assert c.get("node/1").value == "up"
        c.revoke(lease.id)
        assert c.get("node/1") is None
        with pytest.raises(LeaseExpiredError):
            c.keepalive(lease.id)


def test_compaction_refuses_old_reads_and_watches(store):
    with store.client() as c:
        c.put("cmp/k", 1)
        rev = c.put("cmp/k", 2)
        c.compact(rev)
        with pytest.raises(CompactedError) as e:
            c.watch("cmp/k", lambda events: None, start_revision=rev - 1)
        assert e.value.oldest_kept == rev and e.value.requested == rev - 1
        with pytest.raises(CompactedError):
            c.get("cmp/k", revision=rev - 1)
        assert c.get("cmp/k", revision=rev).value == 2


def test_connect_from_another_handle(store):
    other = ConfigStore.connect(store.name)
    with other.client() as c:
        assert c.revision() >= 1
    assert "lessor" in other.stats()


def test_a_plain_replicated_store_is_not_a_config_store(ray_session):
    from ddia_ray.errors import ComponentNotFoundError
    from ddia_ray.replication import ReplicatedStore

    plain = ReplicatedStore.launch(replicas=1, protocol="raft", engine="map")
    try:
        with pytest.raises(ComponentNotFoundError):
            ConfigStore.connect(plain.name)
    finally:
        plain.shutdown()
