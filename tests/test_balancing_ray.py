"""The balanced handle and balancer actor on real Ray replicas, with real faults."""

from __future__ import annotations

import uuid

import pytest

from ddia_ray.balancing import BalancedHandle, BalancerActor
from ddia_ray.demo.replica import Ping, Work, WorkResult, expected_digest
from ddia_ray.errors import ConfigError, InvalidArgumentError, RetriesExhaustedError
from ddia_ray.resilience import CircuitBreakerConfig, RetryPolicy
from ddia_ray.runtime import CoreSpec, NodeGroup

from raywait import wait_for

pytestmark = pytest.mark.ray
NODES = ("r0", "r1", "r2")
BREAKER = CircuitBreakerConfig(window_type="count", window_size=10, minimum_calls=3, failure_rate_threshold=50,
                               wait_in_open_s=60, permitted_calls_in_half_open=1)


@pytest.fixture
def group(ray_session):
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})
    g = NodeGroup.launch(f"b{uuid.uuid4().hex[:8]}", {n: spec for n in NODES})
    yield g
    g.shutdown()


def _routed(handle) -> dict:
    return {r.name: r.requests for r in handle.stats().balancer.replicas}


def test_breaker_opens_on_a_failing_replica_and_traffic_routes_around_it(group):
    h = BalancedHandle(group.name, NODES, picker="round_robin", timeout_s=0.3, breaker=BREAKER)
    try:
        group.nemesis.isolate("r1")
        work = [Work(str(i)) for i in range(60)]
        results = h.call_batch(work)
        assert [r.digest for r in results] == [expected_digest(w) for w in work]  # nothing lost
        assert h.breakers["r1"].state.value == "open"
        before = _routed(h)
        h.call_batch([Work(f"after-{i}") for i in range(30)])
        after = _routed(h)
        assert after["r1"] == before["r1"], "an open breaker still let requests through"
        assert after["r0"] + after["r2"] - before["r0"] - before["r2"] == 30
        assert any(t.to_state == "open" and t.breaker.endswith("/r1") for t in h.stats().transitions)
    finally:
        h.close()


def test_killed_replica_is_routed_around_and_found_again_after_restart(group):
    quick = CircuitBreakerConfig(window_type="count", window_size=10, minimum_calls=3, wait_in_open_s=0.2,
                                 permitted_calls_in_half_open=1)
    h = BalancedHandle(group.name, NODES, timeout_s=0.5, breaker=quick)
    try:
        group.nemesis.kill("r2")
        results = h.call_batch([Work(str(i)) for i in range(40)])
        assert all(isinstance(r, WorkResult) for r in results)
        group.nemesis.restart("r2")

        def r2_serves():
            h.call_batch([Work("probe")] * 10)
            return group.status("r2")["core"]["served_this_life"] > 0

        wait_for(r2_serves, timeout_s=30, what="restarted replica back in rotation")
    finally:
        h.close()


def test_health_checks_mark_an_isolated_replica_unhealthy_then_healthy(group):
    h = BalancedHandle(group.name, NODES, timeout_s=0.3, health_interval_s=0.05)
    try:
        group.nemesis.isolate("r0")
        wait_for(lambda: not h.stats().balancer.by_name()["r0"].healthy, what="r0 marked unhealthy")
        group.nemesis.heal()
        wait_for(lambda: h.stats().balancer.by_name()["r0"].healthy, what="r0 healthy again")
    finally:
        h.close()


def test_service_errors_are_final_and_exhausted_retries_carry_the_cause(group):
    h = BalancedHandle(group.name, NODES, timeout_s=0.2, health_interval_s=None,
                       retry=RetryPolicy(max_attempts=2, base_delay_s=0.0))
    try:
        with pytest.raises(InvalidArgumentError, match="cannot serve"):
            h.call("not a request")
        group.nemesis.partition([["balancer"], ["*"]])
        with pytest.raises(RetriesExhaustedError) as info:
            h.call(Ping())
        assert info.value.last_error is not None
    finally:
        h.close()


def test_replicas_can_be_taken_out_and_put_back_while_running(group):
    h = BalancedHandle(group.name, NODES, picker="round_robin", health_interval_s=None)
    try:
        h.remove_replica("r0")
        before = _routed(h).get("r0", 0)
        h.call_batch([Work(str(i)) for i in range(12)])
        assert _routed(h).get("r0", 0) == before
        h.add_replica("r0")
        h.call_batch([Work(str(i)) for i in range(12)])
        assert _routed(h)["r0"] > before
    finally:
        h.close()


def test_balancer_actor_serves_batches_and_answers_errors_as_their_own_class(group):
    with BalancerActor.launch(group, NODES, name=f"{group.name}-lb") as actor:
        client = actor.client()
        out = client.call_batch([Work("a"), "bad"], return_exceptions=True)
        assert out[0].digest == expected_digest(Work("a"))
        assert isinstance(out[1], InvalidArgumentError) and "cannot serve" in str(out[1])
        assert out[1].remote_node in NODES  # the replica that refused it, not the balancer
        with pytest.raises(InvalidArgumentError, match="cannot serve"):
            client.call_batch([Work("b"), "bad"])
        futures = [client.call_batch_future([Work(f"f{i}")]) for i in range(5)]
        assert [f.result(30)[0].digest for f in futures] == [expected_digest(Work(f"f{i}")) for i in range(5)]
        assert sum(r["requests"] for r in client.stats()["replicas"].values()) == 9
        with pytest.raises(InvalidArgumentError, match="not plain data"):
            BalancerActor.launch(group, NODES, retry=RetryPolicy(retry_if=lambda e: True))


def test_bad_configuration_is_refused(ray_session):
    with pytest.raises(ConfigError, match="at least one replica"):
        BalancedHandle("g", [])
    with pytest.raises(ConfigError, match="unknown picker"):
        BalancedHandle("g", ["a"], picker="fastest")
