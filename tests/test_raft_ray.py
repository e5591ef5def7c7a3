"""RaftKV on real Ray actors: the client API, recovery after ray.kill and whole-cluster restarts,
membership and leadership operations, and bad input."""

from __future__ import annotations

import concurrent.futures

import pytest

from ddia_ray.errors import CallTimeoutError, ConfigError, InvalidArgumentError, UnknownNodeError
from ddia_ray.kv import RaftKV
from raywait import wait_for

pytestmark = pytest.mark.ray


@pytest.fixture()
def cluster(ray_session, tmp_path):
    kv = RaftKV.launch(3, root=f"file://{tmp_path}/raft", tick_s=0.02)
    yield kv
    kv.shutdown(destroy_data=True)


def test_get_put_delete_cas_and_thousands_in_flight(cluster):
    with cluster.client() as c:
        assert c.get("absent") is None
        c.put("k", b"v1")
        assert c.get("k") == b"v1"
        assert c.cas("k", b"v1", b"v2") is True
        assert c.cas("k", b"v1", b"v3") is False
        assert c.get("k") == b"v2"
        assert c.delete("k") is True and c.delete("k") is False
        assert c.cas("k", None, b"fresh") is True  # expected None: the key must be absent
        futures = [c.put_nowait(f"bulk{i}", b"%d" % i) for i in range(3000)]
        concurrent.futures.wait(futures, timeout=60)
        assert all(f.exception() is None for f in futures)
        reads = [c.get_nowait(f"bulk{i}") for i in range(0, 3000, 7)]
        assert [f.result(30) for f in reads] == [b"%d" % i for i in range(0, 3000, 7)]
        assert c.stats["batches"] < 3000 // 10  # batched: far fewer actor calls than operations


def test_a_killed_leader_is_replaced_and_recovers_its_log(cluster):
    with cluster.client() as c:
        for i in range(50):
            c.put(f"a{i}", b"%d" % i)
        old = cluster.leader()
        cluster.kill(old)
        c.put("after-kill", b"1")  # a new leader is elected and the client finds it
        assert wait_for(lambda: cluster.leader() != old, what="a new leader")
        cluster.restart(old)
        wait_for(lambda: cluster.status()[old]["applied"] >= cluster.status()[cluster.leader()]["commit"],
                 what="the restarted member to catch up")
        st = cluster.status()[old]
        assert st["keys"] >= 51  # its state machine was rebuilt from its durable log and the leader
        assert [c.get(f"a{i}") for i in range(50)] == [b"%d" % i for i in range(50)]


def test_whole_cluster_restart_keeps_every_committed_write(cluster):
    with cluster.client() as c:
        futures = [c.put_nowait(f"w{i}", b"%d" % i) for i in range(200)]
        c.put("last", b"done")
        concurrent.futures.wait(futures, timeout=30)
        assert all(f.exception() is None for f in futures)  # acknowledged: they must survive
        for m in cluster.members:
            cluster.kill(m)
        for m in cluster.members:
            cluster.restart(m)
        assert c.get("last") == b"done"
        assert [c.get(f"w{i}") for i in range(0, 200, 10)] == [b"%d" % i for i in range(0, 200, 10)]


def test_membership_and_leadership(cluster):
    with cluster.client() as c:
        c.put("x", b"1")
        new = cluster.add_member()
        assert new in cluster.members
        wait_for(lambda: new in cluster.status()[cluster.leader()]["voters"], what="the learner's promotion")
        cluster.transfer_leadership(new)
        assert cluster.leader() == new
        victim = next(m for m in cluster.members if m != new)
        cluster.remove_member(victim)
        assert victim not in cluster.members
        assert victim not in cluster.status()[cluster.leader()]["voters"]
        assert c.get("x") == b"1"
        c.put("y", b"2")
        assert c.get("y") == b"2"


def test_bad_input_is_refused_clearly(cluster):
    with pytest.raises(UnknownNodeError):
        cluster.remove_member("nobody")
    with pytest.raises(UnknownNodeError):
        cluster.transfer_leadership("nobody")
    with pytest.raises(ConfigError):
        RaftKV.launch(0)
    with cluster.client() as c:
        with pytest.raises(InvalidArgumentError):
            c.put("k", None)
        with pytest.raises(InvalidArgumentError):
            c.put(3, b"v")  # keys are bytes, or str sent as UTF-8
        with pytest.raises(InvalidArgumentError, match="values are bytes"):
            c.put("k", 3)
        with pytest.raises(InvalidArgumentError, match="values are bytes"):
            c.cas("k", 1, b"v")
        c.put("same", b"1")  # a str key is its UTF-8 bytes: one key, not two
        assert c.get(b"same") == b"1"


def test_removing_the_last_voter_is_refused(ray_session):
    kv = RaftKV.launch(1, tick_s=0.02)
    try:
        with pytest.raises(ConfigError, match="last voter"):
            kv.remove_member(kv.leader())
    finally:
        kv.shutdown()


def test_an_operation_without_a_quorum_times_out(cluster):
    with cluster.client(timeout_s=1.0) as c:
        c.put("k", b"1")
        leader = cluster.leader()
        others = [m for m in cluster.members if m != leader]
        for m in others:
            cluster.kill(m)
        with pytest.raises(CallTimeoutError):
            c.put("k", b"2")  # no majority: it may never commit, and the client says so
        for m in others:
            cluster.restart(m)
        assert c.get("k") in (b"1", b"2")  # the timed-out write's outcome is unknown either way


def test_compacted_logs_survive_restarts_and_lagging_members_get_a_snapshot(ray_session, tmp_path):
    kv = RaftKV.launch(3, root=f"file://{tmp_path}/raft", tick_s=0.02, snapshot_entries=50)
    try:
        with kv.client() as c:
            for f in [c.put_nowait(f"a{i}", b"%d" % i) for i in range(300)]:
                f.result(30)
            leader = kv.leader()
            lagging = next(m for m in kv.members if m != leader)
            kv.kill(lagging)
            for f in [c.put_nowait(f"b{i}", b"%d" % i) for i in range(300)]:
                f.result(30)
            assert kv.status()[leader]["first_index"] > 300  # the leader's log was compacted past a0..
            # ... and its durable log rewritten each time in the background (a derived Rewrite)
            log = kv.group.status(leader)["log"]
            assert log["rewrites_in_background"] >= 1 and log["rewrite_failures"] == 0, log
            kv.restart(lagging)
            wait_for(lambda: kv.status()[lagging]["keys"] == 600, what="the lagging member to catch up")
            st = kv.status()[lagging]
            assert st["snapshots_installed"] >= 1 or st["first_index"] > 1  # via a snapshot (sent or its own)
            kv.kill(leader)
            kv.restart(leader)  # it rebuilds from its compacted durable log
            wait_for(lambda: kv.status()[leader]["keys"] == 600, what="the restarted leader to rebuild its state")
            assert [c.get(f"b{i}") for i in range(0, 300, 30)] == [b"%d" % i for i in range(0, 300, 30)]
    finally:
        kv.shutdown(destroy_data=True)


def test_local_reads_are_served_by_any_member_and_may_be_stale(cluster):
    from ddia_ray.kv import KVBatch, KVResults

    def local_read(member):
        batch = KVBatch("probe-session", (("get_local", b"k", 1, None, None),))
        res = cluster.group.request(member, batch, src="probe")
        assert isinstance(res, KVResults)
        return res.results[0][1]

    with cluster.client() as c:
        c.put("k", b"1")
        leader = cluster.leader()
        follower = next(m for m in cluster.members if m != leader)
        wait_for(lambda: local_read(follower) == b"1", what="the follower to apply k=1")
        cluster.partition([[follower, "probe"], ["*"]])
        try:
            c.put("k", b"2")  # commits on the majority, without the cut-off follower
            assert local_read(follower) == b"1"  # a local read there is stale ...
            assert c.get("k") == b"2"  # ... a linearizable read is not
        finally:
            cluster.heal()
        wait_for(lambda: local_read(follower) == b"2", what="the follower to catch up")


def test_fsynced_members_keep_committed_writes_through_a_whole_cluster_restart(ray_session, tmp_path):
    kv = RaftKV.launch(3, root=f"file://{tmp_path}/raft", tick_s=0.02, sync=True)
    try:
        with kv.client() as c:
            for f in [c.put_nowait(f"s{i}", b"%d" % i) for i in range(100)]:
                f.result(30)
            for m in kv.members:
                kv.kill(m)
            for m in kv.members:
                kv.restart(m)
            assert [c.get(f"s{i}") for i in range(0, 100, 9)] == [b"%d" % i for i in range(0, 100, 9)]
    finally:
        kv.shutdown(destroy_data=True)


def test_a_whole_raft_config_reaches_every_member(ray_session):
    """RaftKV.launch takes a RaftConfig; every member runs with all of its settings."""
    from ddia_ray.consensus.raft import RaftConfig

    with pytest.raises(InvalidArgumentError):
        RaftKV.launch(1, raft={"election_ticks": 5})
    cfg = RaftConfig(election_ticks=8, heartbeat_ticks=2, pre_vote=False, max_entries_per_msg=7)
    kv = RaftKV.launch(2, tick_s=0.02, raft=cfg)
    try:
        kv.leader()
        settings = {n: s["settings"] for n, s in kv.status().items()}
        assert len(settings) == 2
        for s in settings.values():
            assert (s["election_ticks"], s["heartbeat_ticks"], s["pre_vote"], s["max_entries_per_msg"]) == \
                (8, 2, False, 7)
        with kv.client() as c:
            c.put("k", b"1")
            assert c.get("k") == b"1"
    finally:
        kv.shutdown()


def test_idle_sessions_expire_on_every_member_and_may_write_again(ray_session, tmp_path):
    kv = RaftKV.launch(3, root=f"file://{tmp_path}", session_ttl_s=1.5)
    try:
        kv.leader()
        with pytest.raises(ConfigError, match="session_ttl_s"):
            kv.client(timeout_s=1.5)  # a retry could outlive its session
        idle = kv.client(timeout_s=1.0, rpc_timeout_s=0.4)
        busy = kv.client(timeout_s=1.0, rpc_timeout_s=0.4)
        idle.put(b"idle", b"1")
        n = iter(range(10 ** 6))

        def expired_everywhere():
            busy.put(b"busy", b"%d" % next(n))  # expiry happens as stamped writes apply
            st = kv.status()
            return len(st) == 3 and all(m["sessions_expired"] >= 1 and m["sessions"] == 1 for m in st.values())

        wait_for(expired_everywhere, timeout_s=30, what="the idle session expiring on every member")
        idle.put(b"idle", b"2")  # a forgotten session writes again: a new row, applied once
        assert idle.get(b"idle") == b"2"
        wait_for(lambda: all(m["sessions"] == 2 for m in kv.status().values()), what="the session back everywhere")
        idle.close()
        busy.close()
    finally:
        kv.shutdown(destroy_data=True)
