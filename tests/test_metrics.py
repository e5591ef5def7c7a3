"""Every shell's figures reach Ray's metrics export (what Prometheus scrapes) and equal stats()."""

from __future__ import annotations

import uuid

import pytest

from ddia_ray.balancing import BalancerActor
from ddia_ray.demo.replica import Work
from ddia_ray.runtime import CoreSpec, NodeGroup
from ddia_ray.runtime.metrics import metric_name, parse_prometheus, read_exported
from ddia_ray.storage.node import StorageNode
from raywait import wait_for

pytestmark = pytest.mark.ray


def test_prometheus_text_is_parsed_with_labels_and_escapes():
    text = '\n'.join([
        '# HELP ray_ddia_ray_calls_total calls',
        'ray_ddia_ray_calls_total{component="storage",group="g\\"1",node="n"} 3.0',
        'ray_other_total{a="b"} 1',
        'ray_ddia_ray_puts 7',
        'ray_ddia_ray_bad{a="b"} not-a-number',
    ])
    assert parse_prometheus(text, "ray_ddia_ray_") == [
        ("ray_ddia_ray_calls_total", {"component": "storage", "group": 'g"1', "node": "n"}, 3.0),
        ("ray_ddia_ray_puts", {}, 7.0)]
    assert metric_name("lsm", "rows written") == "ddia_ray_lsm_rows_written"


def _total(samples, name: str, **labels) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def test_a_running_demo_exports_its_calls_latencies_and_figures(ray_session):
    tag = uuid.uuid4().hex[:6]
    replicas = NodeGroup.launch(f"met-replicas-{tag}", {
        n: CoreSpec("ddia_ray.demo.replica:ReplicaCore", {}) for n in ("r0", "r1", "r2")})
    try:
        with BalancerActor.launch(replicas, replicas.node_ids()) as lb, \
                StorageNode.launch(f"met-store-{tag}", None, engine="memory") as store:
            lb.client().call_batch([Work(f"w{i}") for i in range(30)])
            client = store.client()
            client.put_many({b"k%d" % i: b"v" for i in range(100)})
            assert client.get_many([b"k1", b"k2"]) == [b"v", b"v"]
            stats = {**store.stats(), **lb.stats(), **replicas.stats()}
            assert stats[store.node]["calls"]["write"]["count"] == 1
            assert stats[lb.node]["calls"]["call_batch"]["count"] == 1
            served = sum(s["calls"].get("Work", {}).get("count", 0) for n, s in stats.items() if n.startswith("r"))
            assert served >= 30

            def exported() -> bool:
                samples = read_exported()
                return (_total(samples, "ray_ddia_ray_calls_total", group=store.name, method="write") == 1
                        and _total(samples, "ray_ddia_ray_calls_total", component="balancer", group=lb.name) >= 1
                        and _total(samples, "ray_ddia_ray_calls_total", group=replicas.name, method="Work")
                        == served
                        and _total(samples, "ray_ddia_ray_call_latency_seconds_count", group=store.name,
                                   method="get_many") == 1
                        and _total(samples, "ray_ddia_ray_versions", component="storage", group=store.name) == 100)

            wait_for(exported, 60, what="the demo's figures in Ray's metrics export")
            client.close()
    finally:
        replicas.shutdown()


class _Recorder:
    """A stand-in for a Ray counter or histogram: what it was given, with its tags."""

    def __init__(self):
        self.records: list = []

    def inc(self, value, tags):
        self.records.append((value, tags["method"]))

    def observe(self, value, tags):
        self.records.append((value, tags["method"]))


def test_counts_reach_ray_whole_and_the_latency_histogram_is_sampled_past_its_rate(monkeypatch):
    """Calls are summed and added to Ray's counters at each flush, none lost; the histogram takes
    every call of a method below LATENCY_SAMPLES_PER_S a second, and every k-th above it."""
    from ddia_ray.runtime import metrics

    now = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: now[0])
    m = metrics.ShellMetrics("storage", "g", "n")
    rec = m._ray = {"calls": _Recorder(), "errors": _Recorder(), "latency": _Recorder()}
    for i in range(50):  # a slow second: every call sampled
        m.observe("get", 0.001 * (i + 1), 1, i % 10 == 0)
        now[0] += 0.02
    assert [v for v, _ in rec["latency"].records] == [0.001 * (i + 1) for i in range(50)]
    assert rec["calls"].records == []  # not a second yet: nothing added to Ray's counters
    m.flush()
    assert sum(v for v, _ in rec["calls"].records) == 50 and sum(v for v, _ in rec["errors"].records) == 5
    rec["latency"].records.clear()
    per_s = 40 * metrics.LATENCY_SAMPLES_PER_S
    for second in range(3):  # a busy spell: the first second teaches the rate, the next two are sampled
        for _ in range(per_s):
            m.observe("get", 0.002, 2)
            now[0] += 1.0 / per_s
    m.flush()
    assert sum(v for v, _ in rec["calls"].records) == 50 + 3 * per_s * 2  # every call counted
    sampled = len(rec["latency"].records)
    assert per_s < sampled < per_s + 3 * metrics.LATENCY_SAMPLES_PER_S
    assert m.calls()["get"]["count"] == 50 + 3 * per_s * 2  # stats() see every call as before
