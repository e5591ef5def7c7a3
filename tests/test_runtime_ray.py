"""Node shells on real Ray actors: partitions, cuts, pauses, kills and restarts."""

from __future__ import annotations

import uuid

import pytest

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError, UnknownNodeError
from ddia_ray.demo.replica import Ping, Work, WorkResult, expected_digest
from ddia_ray.runtime import CoreSpec, NodeGroup, assign_nodes

from raywait import wait_for

pytestmark = pytest.mark.ray
NODES = ("a", "b", "c")


@pytest.fixture
def group(ray_session, tmp_path):
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {"peers": NODES, "heartbeat_every_ticks": 1})
    g = NodeGroup.launch(f"t{uuid.uuid4().hex[:8]}", {n: spec for n in NODES}, root=f"file://{tmp_path}")
    yield g
    g.shutdown(destroy_data=True)


def _heard(group):
    return {n: s["received_from"] for n, s in group.status().items()}


def test_partition_drops_exactly_the_cut_links_and_heals(group):
    wait_for(lambda: all(len(h) == 2 for h in _heard(group).values()), what="all links carrying heartbeats")
    group.nemesis.partition([["a"], ["b", "c"]])
    start = _heard(group)
    # b and c keep talking; wait for that, then check nothing crossed the cut meanwhile.
    wait_for(lambda: _heard(group)["b"]["c"] > start["b"]["c"] + 20, what="b<-c heartbeats during the partition")
    now = _heard(group)
    assert now["a"] == start["a"], "a heard someone across the partition"
    assert now["b"]["a"] == start["b"]["a"] and now["c"]["a"] == start["c"]["a"]
    assert now["c"]["b"] > start["c"]["b"]
    group.nemesis.heal()
    wait_for(lambda: _heard(group)["a"].get("b", 0) > now["a"].get("b", 0) + 5
             and _heard(group)["b"]["a"] > now["b"]["a"] + 5, what="heartbeats after heal")


def test_one_way_cut_and_client_isolation(group):
    group.nemesis.cut("client", "a")
    with pytest.raises(CallTimeoutError):
        group.request("a", Ping(), timeout_s=0.5)
    assert group.request("b", Ping(1)).seq == 1
    group.nemesis.heal()
    group.nemesis.cut("a", "client")  # the request arrives and is served; the reply is lost
    with pytest.raises(CallTimeoutError):
        group.request("a", Work("w"), timeout_s=0.5)
    group.nemesis.heal()
    assert group.request("a", Ping()).served == 1


def test_kill_and_restart_recovers_durable_state(group):
    results = group.request_batch("b", [Work(str(i)) for i in range(50)])
    assert results[7] == WorkResult("7", expected_digest(Work("7")), "b")
    group.nemesis.kill("b")
    with pytest.raises(ActorUnavailableError):
        group.request("b", Ping())
    group.nemesis.restart("b")
    status = group.status("b")
    assert status["recovered_records"] == 50
    assert status["core"]["served"] == 50 and status["core"]["served_this_life"] == 0
    wait_for(lambda: group.status("a")["received_from"].get("b", 0) > 0, what="restarted b heard by a")


def test_pause_holds_requests_until_resume(group):
    import ray

    group.nemesis.pause("c")
    ref = group.handle("c").request.remote("client", encode(Ping(9)))
    ready, _ = ray.wait([ref], timeout=0.5)
    assert not ready
    group.nemesis.resume("c")
    assert decode(ray.get(ref, timeout=10)).payload.seq == 9


def test_link_delay_applies_to_requests(group):
    import time

    group.nemesis.link("client", "a", delay_s=0.3)
    t0 = time.monotonic()
    group.request("a", Ping())
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    group.request("b", Ping())
    assert time.monotonic() - t0 < 0.3


def test_bad_use_gives_clear_errors(group):
    with pytest.raises(UnknownNodeError):
        group.nemesis.pause("zz")
    with pytest.raises(ConfigError, match="running"):
        group.nemesis.restart("a")
    with pytest.raises(ConfigError, match="at least one node"):
        NodeGroup.launch("empty", {})


def test_members_spread_over_distinct_nodes_when_there_are_several():
    assert assign_nodes(["a", "b", "c"], ["n1"]) == {"a": None, "b": None, "c": None}
    spread = assign_nodes(["a", "b", "c"], ["n2", "n1", "n3"])
    assert sorted(spread.values()) == ["n1", "n2", "n3"]
    assert list(assign_nodes(["a", "b", "c"], ["n1", "n2"]).values()).count("n1") == 2


def test_duplication_and_loss_on_a_link(group):
    group.nemesis.link("client", "a", duplicate=1.0)  # every request arrives twice
    group.request("a", Work("dup"))
    assert group.request("b", Ping()).served == 0
    assert group.status("a")["core"]["served"] == 2
    group.nemesis.link("client", "a", duplicate=0.0, drop=1.0)
    with pytest.raises(CallTimeoutError):
        group.request("a", Ping(), timeout_s=0.3)
    group.nemesis.reset_links()
    assert group.request("a", Ping()).served == 2


def test_named_partition_groups(group):
    group.nemesis.partition({"majority": ["b", "c"], "minority": ["a"]})
    assert group.nemesis.config.is_cut("a", "b") and not group.nemesis.config.is_cut("b", "c")
    assert all(s["epoch"] == group.nemesis.config.epoch for s in group.status().values())


def test_a_refusal_on_a_real_actor_is_raised_as_its_own_class(group):
    """No text to parse: the replica's InvalidArgumentError arrives as one, naming the node that raised it."""
    with pytest.raises(InvalidArgumentError, match="cannot serve") as info:
        group.request("b", "not a request")
    assert info.value.remote_node == "b" and str(info.value).startswith(f"{group.name}/b: ")


def test_a_shell_sets_its_processes_garbage_collector_thresholds(group):
    import gc

    import ray

    from ddia_ray.runtime.shell import GC_THRESHOLDS

    handle = group.handle("a")
    assert tuple(ray.get(handle.__ray_call__.remote(lambda shell: gc.get_threshold()), timeout=30)) == GC_THRESHOLDS
    assert GC_THRESHOLDS != (700, 10, 10)  # not CPython's defaults, which the replicas paid for
