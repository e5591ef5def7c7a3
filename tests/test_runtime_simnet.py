"""The deterministic simulated network, driving replica cores in virtual time."""

from __future__ import annotations

import random

import pytest

from ddia_ray.errors import ConfigError, UnknownNodeError
from ddia_ray.demo.replica import Ping, Pong, ReplicaCore, Served, Work, WorkResult, expected_digest
from ddia_ray.runtime.simnet import SeedFailure, SimNetwork, run_seeds

NODES = ("a", "b", "c", "d")
REPLAY = "DDIA_SEED={seed} python -m pytest tests/test_runtime_simnet.py"


def _factory(node_id, *, recovered=(), tick_s=0.01):
    return ReplicaCore(node_id, recovered=recovered, tick_s=tick_s, peers=NODES, heartbeat_every_ticks=1)


def _network(seed, **link) -> SimNetwork:
    net = SimNetwork(seed)
    for n in NODES:
        net.add(n, _factory)
    if link:
        net.link(**link)
    return net


def _trace(seed: int) -> list:
    net = _network(seed, drop=0.2, delay_s=0.002, jitter_s=0.01, duplicate=0.1, reorder=0.2)
    calls = [net.request(NODES[i % 4], Work(str(i))) for i in range(20)]
    net.run_for(0.5)
    return [sorted(net.delivered.items()), [(c.done, c.result) for c in calls]]


def test_same_seed_same_run_and_different_seeds_differ():
    assert _trace(11) == _trace(11)
    assert _trace(11) != _trace(12)


def test_partition_stops_exactly_the_cut_links_then_heals():
    def scenario(seed):
        rng = random.Random(seed)
        net = _network(seed, drop=rng.choice([0.0, 0.1]), delay_s=0.001, jitter_s=0.004)
        net.run_for(0.2)
        side = rng.sample(NODES, rng.randint(1, 3))
        other = [n for n in NODES if n not in side]
        net.partition([side, other])
        net.run_for(0.05)  # let messages sent before the cut land (max delay 5 ms)
        before = dict(net.delivered)
        net.run_for(0.5)
        for (src, dst), count in net.delivered.items():
            crosses = (src in side) != (dst in side)
            if crosses:
                assert count == before.get((src, dst), 0), f"{src}->{dst} delivered across the cut"
            else:
                assert count > before.get((src, dst), 0), f"{src}->{dst} starved inside a group"
        net.heal()
        net.run_for(0.05)
        healed = dict(net.delivered)
        net.run_for(0.3)
        for s in NODES:
            for d in NODES:
                if s != d:
                    assert net.delivered[(s, d)] > healed.get((s, d), 0), f"{s}->{d} not healed"

    assert run_seeds(scenario, range(200), replay=REPLAY) == 200


def test_one_way_cut_blocks_one_direction_only():
    net = _network(3)
    net.cut("a", "b")
    net.run_for(0.05)
    before = dict(net.delivered)
    net.run_for(0.3)
    assert net.delivered.get(("a", "b"), 0) == before.get(("a", "b"), 0) == 0
    assert net.delivered[("b", "a")] > before[("b", "a")]


def test_requests_are_answered_and_lost_across_a_cut():
    net = _network(4)
    ok = net.request("a", Work("k", 2))
    assert net.run_until(lambda: ok.done, timeout_s=1)
    assert ok.result == WorkResult("k", expected_digest(Work("k", 2)), "a")
    net.isolate("b")
    lost = net.request("b", Ping())
    net.run_for(1.0)
    assert not lost.done


def test_reply_lost_on_a_one_way_cut_back_to_the_client():
    net = _network(5)
    net.cut("c", "client")
    call = net.request("c", Work("x"))
    net.run_for(0.5)
    assert not call.done and net.core("c").served == 1  # served, but the answer never arrived


def test_crash_and_restart_recover_persisted_state():
    net = _network(6)
    calls = [net.request("a", Work(str(i))) for i in range(5)]
    net.run_until(lambda: all(c.done for c in calls), timeout_s=1)
    net.crash("a")
    lost = net.request("a", Ping())
    net.run_for(0.1)
    assert not lost.done
    core = net.restart("a")
    assert core.served == 5 and core.served_this_life == 0
    pong = net.request("a", Ping())
    net.run_until(lambda: pong.done, timeout_s=1)
    assert pong.result == Pong("a", 0, 5)


def test_pause_holds_input_until_resume():
    net = _network(7)
    net.pause("a")
    call = net.request("a", Ping(3))
    ticks = net.core("a").ticks
    net.run_for(0.5)
    assert not call.done and net.core("a").ticks == ticks
    net.resume("a")
    assert net.run_until(lambda: call.done, timeout_s=0.1)
    assert call.result.seq == 3


def test_bad_use_is_refused():
    net = _network(8)
    with pytest.raises(UnknownNodeError):
        net.partition([["a"], ["zz"]])
    with pytest.raises(ConfigError):
        net.add("a", _factory)
    with pytest.raises(ConfigError, match="running"):
        net.restart("a")


def test_failing_seed_is_reported_with_a_replay_command():
    def scenario(seed):
        assert seed != 3, "boom"

    with pytest.raises(SeedFailure, match=r"(?s)seed 3 failed.*replay with: DDIA_SEED=3 "):
        run_seeds(scenario, range(10), replay=REPLAY)


def test_the_simulation_example_runs_and_shows_the_partition():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "simulate_partition.py"
    spec = importlib.util.spec_from_file_location("simulate_partition", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    report = example.main(5)
    assert report["a->c during the partition"] <= 1  # at most one in flight at the cut
    assert report["a->b during the partition"] > 50
    assert report["answer from c"] == "c" and report["c served after restart"] == 1
    assert example.main(5) == report  # deterministic


def test_every_core_answers_a_probe_through_the_network():
    from ddia_ray.runtime import BaseCore, Probe, ProbeAck

    net = SimNetwork(9)
    net.add("plain", lambda node, recovered=(), tick_s=0.01: BaseCore(node, tick_s=tick_s))
    call = net.request("plain", Probe(4))
    assert net.run_until(lambda: call.done, timeout_s=1)
    assert call.result == ProbeAck("plain", 4)
    net.isolate("plain")
    lost = net.request("plain", Probe(5))
    net.run_for(1.0)
    assert not lost.done
    net.heal()
    refused = net.request("plain", "anything else")
    assert net.run_until(lambda: refused.done, timeout_s=1) and not refused.ok
    assert refused.error.kind == "InvalidArgumentError" and "takes no requests" in refused.error.message


def _writer_factory(node_id, *, recovered=(), tick_s=0.01):
    from ddia_ray.runtime.core import BaseCore

    class Writer(BaseCore):
        def on_request(self, request_id, payload):
            for i in range(3):
                self.persist(Served(10 * payload + i))
            self.send("b", Ping(payload))
            self.reply(request_id, payload)

        def on_message(self, src, payload):
            self.persist(Served(-1))

    core = Writer(node_id, tick_s=tick_s)
    core.recovered = recovered
    return core


def test_a_crash_during_a_write_keeps_a_prefix_and_sends_nothing():
    prefixes = set()
    for seed in range(40):
        sim = SimNetwork(seed)
        sim.add("a", _writer_factory)
        sim.add("b", _writer_factory)
        sim.request("a", 1)  # a first write that completes
        sim.run_for(0.05)
        sim.crash("a", during_write=True)
        call = sim.request("a", 2)
        sim.run_for(0.05)
        assert not sim.nodes["a"].alive and sim.torn_writes == 1
        assert not call.done  # neither the reply ...
        assert sim.nodes["b"].log == [Served(-1)]  # ... nor the message of the torn write left
        log = sim.nodes["a"].log
        assert log[:3] == [Served(10), Served(11), Served(12)]
        torn = log[3:]
        assert torn == [Served(20), Served(21), Served(22)][:len(torn)]  # a prefix survived
        prefixes.add(len(torn))
        assert sim.restart("a").recovered == tuple(log)
    assert len(prefixes) > 1  # different seeds cut the write at different points
