"""The pure parts of ``bench/conflicts.py``: the workload, the windowed driver, the figures and the wiring.

The measurements run over an in-process client with the store client's interface (``put_nowait``,
``get_nowait``, ``put``, ``get``, answering the store's own :class:`Versions`), so the harness is
checked without Ray: every write is counted, a read that misses its write is counted as stale, no
more futures are outstanding than asked for, and a failing client fails the run instead of hanging
it. ``main`` is run with the store and Redis parts replaced by stubs, so the printing, the target
verdicts and the JSON are checked too; one test drives a real Redis pair when the Debian package is
installed (about a second) and is skipped otherwise.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.replication.resolvers import Sibling
from ddia_ray.replication.versioned_client import Versions

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import replication_peers as rp  # noqa: E402 - found through the line above


def _load_bench_conflicts():
    # bench/conflicts.py under a name of its own, as tests/test_bench_config.py loads bench/config.py
    spec = importlib.util.spec_from_file_location("bench_conflicts", os.path.join(BENCH, "conflicts.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bc = _load_bench_conflicts()


# ---------------------------------------------------------------------------------------------
# An in-process client with the store client's interface


class _LazyFuture(concurrent.futures.Future):
    """A future that does its work when its result is asked for, so the test sees how many were
    outstanding at once (the driver asks in submission order)."""

    def __init__(self, owner: "_DictClient", work):
        super().__init__()
        self._owner, self._work = owner, work
        with owner.lock:
            owner.outstanding += 1
            owner.max_outstanding = max(owner.max_outstanding, owner.outstanding)

    def result(self, timeout=None):
        if not self.done():
            with self._owner.lock:
                self._owner.outstanding -= 1
            try:
                self.set_result(self._work())
            except Exception as exc:  # noqa: BLE001 - handed to the caller as the store's futures do
                self.set_exception(exc)
        return super().result(timeout)


class _DictClient:
    """Keys in a dict. ``lose``: a write of an index it names is acknowledged but not kept (a stale
    read follows); ``fail``: an operation on such a key index raises."""

    def __init__(self, *, lose=lambda key: False, fail=lambda key: False):
        self.data: dict = {}
        self.lock = threading.Lock()
        self.outstanding = self.max_outstanding = 0
        self.writes = self.reads = 0
        self._lose, self._fail = lose, fail

    def _put(self, key: bytes, value: bytes) -> Versions:
        if self._fail(key):
            raise RuntimeError(f"write of {key!r} refused")
        with self.lock:
            self.writes += 1
            if not self._lose(key):
                self.data[key] = value
        return Versions(key, (Sibling(value, 1, "r1"),))

    def _get(self, key: bytes) -> Versions:
        if self._fail(key):
            raise RuntimeError(f"read of {key!r} refused")
        with self.lock:
            self.reads += 1
            value = self.data.get(key)
        return Versions(key, () if value is None else (Sibling(value, 1, "r1"),))

    def put_nowait(self, key, value, return_body=True):
        return _LazyFuture(self, lambda: self._put(key, value))

    def get_nowait(self, key):
        return _LazyFuture(self, lambda: self._get(key))

    def put(self, key, value, return_body=True):
        return self._put(key, value)

    def get(self, key):
        return self._get(key)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _FakeStore:
    """What the bench asks of a store, over one :class:`_DictClient` per ``client()`` call."""

    launched: list = []

    def __init__(self, **launch):
        self.launch, self.clients, self.down = launch, [], False
        _FakeStore.launched.append(self)

    def client(self, **options):
        c = _DictClient()
        c.options = options
        self.clients.append(c)
        return c

    def wait_converged(self, timeout_s):
        return 0.25 * len(_FakeStore.launched)

    def stats(self):
        keys = sum(len(c.data) for c in self.clients)
        return {"replicas": {"r1": {"keys": keys}, "r2": {"keys": keys - 1}}, "read_repairs": 1,
                "siblings_max": len(_FakeStore.launched), "causality_violations": 0}


@pytest.fixture
def fake_stores(monkeypatch):
    import contextlib

    _FakeStore.launched = []

    @contextlib.contextmanager
    def store(**launch):
        s = _FakeStore(**launch)
        try:
            yield s
        finally:
            s.down = True

    monkeypatch.setattr(bc, "_store", store)
    monkeypatch.setattr(bc, "WARMUP_OPS", 5)
    return _FakeStore.launched


def _index(key: bytes) -> int:
    return int(key[1:])


# ---------------------------------------------------------------------------------------------
# The workload


def test_keys_are_fresh_and_shaped_like_the_redis_peers():
    keys = bc.KeySource(seed=7)
    a, b = keys.take(3), keys.take(2)
    assert list(a) == [0, 1, 2] and list(b) == [3, 4]
    assert keys.key(3) == rp._key(3) and len(keys.key(3)) == rp.KEY_BYTES
    assert keys.value(3) == rp._value_pool(7)[3] and len(keys.value(3)) == rp.VALUE_BYTES
    assert keys.value(3) == keys.value(3 + 256)  # the pool cycles, as the Redis peer's does
    with pytest.raises(ValueError):
        keys.take(-1)


def test_keys_taken_from_threads_never_overlap():
    keys = bc.KeySource()
    got: list = []
    lock = threading.Lock()

    def worker():
        for _ in range(200):
            r = keys.take(3)
            with lock:
                got.extend(r)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(4 * 200 * 3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=4))
def test_quorums_parse_back(quorums):
    valid = [(n, min(r, n), min(w, n)) for n, r, w in quorums]
    text = "/".join(",".join(map(str, q)) for q in valid)
    assert bc.parse_quorums(text) == tuple(valid)


@pytest.mark.parametrize("text", ["", "3,1", "3,1,1,1", "4,1,1", "3,0,1", "3,1,4", "2,3,1", "a,b,c", "3,1,1/"])
def test_bad_quorums_are_refused(text):
    with pytest.raises(ValueError):
        bc.parse_quorums(text)


def test_process_tree_cpu_counts_the_children():
    if bc.process_tree_cpu_s() is None:
        pytest.skip("no /proc here")
    burn = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
            "print('burnt', flush=True)\nsys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "burnt\n"  # it burnt its CPU and now waits, still alive
        own = sum(os.times()[:2])
        theirs = bc.process_tree_cpu_s(child.pid)
        tree = bc.process_tree_cpu_s()
    finally:
        child.communicate("")
    assert theirs >= 0.25
    assert tree >= own + theirs - 0.05  # clock ticks round each process's figure down
    assert bc.process_tree_cpu_s() >= tree - 0.02  # exited and reaped, the child's CPU still counts
    with open("/proc/sys/kernel/pid_max") as f:
        assert bc.process_tree_cpu_s(int(f.read()) + 1) is None  # no such process


# ---------------------------------------------------------------------------------------------
# The driver


@pytest.mark.parametrize("in_flight", [1, 7, 1000])
def test_window_keeps_at_most_in_flight_outstanding_and_counts_every_outcome(in_flight):
    client = _DictClient(fail=lambda key: _index(key) % 10 == 3)
    keys = bc.KeySource()
    r = bc.drive_window(lambda i: client.put_nowait(keys.key(i), keys.value(i)), keys.take(100), in_flight)
    assert client.max_outstanding == min(in_flight, 100)
    assert client.outstanding == 0
    assert (r["ops"], r["failed"], r["wrong"]) == (100, 10, 0)
    assert r["error"].startswith("RuntimeError: write of")
    assert r["ops_per_s"] == pytest.approx(90 / r["seconds"])
    assert r["t_first"] <= r["t_last"]


def test_window_checks_results():
    r = bc.drive_window(lambda i: _done(i), range(10), 3, check=lambda i, result: result == i and i != 4)
    assert (r["ops"], r["failed"], r["wrong"]) == (10, 0, 1)


def test_window_of_nothing_and_a_bad_window():
    r = bc.drive_window(lambda i: _done(i), range(0), 3)
    assert (r["ops"], r["ops_per_s"]) == (0, None)
    with pytest.raises(ValueError):
        bc.drive_window(lambda i: _done(i), range(3), 0)


def _done(value):
    f = concurrent.futures.Future()
    f.set_result(value)
    return f


def test_sequential_latency_counts_failures_and_wrong_answers():
    def call(i):
        if i == 2:
            raise KeyError(i)
        return i

    r = bc.sequential_latency(call, range(5), check=lambda i, result: i != 4)
    assert (r["ops"], r["failed"], r["wrong"]) == (5, 1, 1)
    assert 0 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["error"] == "KeyError: 2"
    nothing = bc.sequential_latency(lambda i: 1 / 0, range(2))
    assert (nothing["failed"], nothing["p50_ms"]) == (2, None)


# ---------------------------------------------------------------------------------------------
# The leaderless and multi-leader runs, over the in-process client


def test_a_tiny_quorum_run_writes_reads_and_finds_no_stale_read():
    client = _DictClient()
    keys = bc.KeySource()
    r = bc.bench_quorum(client, keys, ops=50, in_flight=8, latency_ops=10, warmup_ops=5)
    assert client.writes == 5 + 50 + 10 and client.reads == 50 + 10
    for part in ("write", "read"):
        assert (r[part]["ops"], r[part]["failed"], r[part]["wrong"]) == (50, 0, 0)
        assert r[part]["ops_per_s"] > 0
    for part in ("write_latency", "read_latency"):
        assert (r[part]["ops"], r[part]["failed"], r[part]["wrong"]) == (10, 0, 0)
        assert 0 < r[part]["p50_ms"] <= r[part]["p99_ms"]
    assert client.max_outstanding <= 8
    flat = bc._summary(r)
    assert (flat["failed"], flat["stale_reads"], flat["error"]) == (0, 0, None)


def test_cpu_per_operation_is_what_the_counter_grew_by():
    ticks = iter(range(0, 100, 2))  # the counter grows by 2 s between any two readings
    r = bc.bench_quorum(_DictClient(), bc.KeySource(), ops=40, in_flight=8, latency_ops=1, warmup_ops=0,
                        cpu_s=lambda: float(next(ticks)))
    assert r["write"]["cpu_us_per_op"] == pytest.approx(2 / 40 * 1e6)
    assert r["read"]["cpu_us_per_op"] == pytest.approx(2 / 40 * 1e6)
    unknown = bc.bench_quorum(_DictClient(), bc.KeySource(), ops=4, in_flight=8, latency_ops=1, warmup_ops=0,
                              cpu_s=lambda: None)
    assert unknown["write"]["cpu_us_per_op"] is None and bc._summary(unknown)["write_cpu_us"] is None


def test_a_read_without_its_write_is_stale():
    client = _DictClient(lose=lambda key: _index(key) % 5 == 0)  # one write in 5 acknowledged, then lost
    r = bc.bench_quorum(client, bc.KeySource(), ops=50, in_flight=4, latency_ops=10, warmup_ops=0)
    assert (r["read"]["wrong"], r["read_latency"]["wrong"]) == (10, 2)
    assert bc._summary(r)["stale_reads"] == 12


def test_median_summary_takes_each_figures_median():
    def run(writes, p50):
        lat = {"ops": 1, "failed": 0, "wrong": 0, "error": None, "p50_ms": p50, "p99_ms": p50 * 2}
        thr = {"ops": 1, "failed": 0, "wrong": 0, "error": None, "ops_per_s": writes}
        return {"write": thr, "read": thr, "write_latency": lat, "read_latency": lat}

    m = bc._median_summary([run(300.0, 1.0), run(100.0, 3.0), run(200.0, 2.0)])
    assert (m["write_ops_per_s"], m["write_p50_ms"], m["write_p99_ms"]) == (200.0, 2.0, 4.0)
    assert m["write_ops_per_s_runs"] == [300.0, 100.0, 200.0]


def test_regions_write_concurrently_and_add_up():
    clients = {r: _DictClient() for r in ("us", "eu", "ap")}
    out = bc.bench_regions(clients, bc.KeySource(), ops=40, in_flight=4, warmup_ops=3)
    assert list(out["regions"]) == ["us", "eu", "ap"]
    for region, c in clients.items():
        assert (out["regions"][region]["ops"], out["regions"][region]["failed"]) == (40, 0)
        assert c.writes == 43 and c.max_outstanding <= 4
    written = [k for c in clients.values() for k in c.data]
    assert len(written) == len(set(written)) == 3 * 43  # every region wrote keys of its own
    total = out["total"]
    assert (total["ops"], total["failed"]) == (120, 0)
    assert total["seconds"] >= max(r["seconds"] for r in out["regions"].values())


def test_each_leaderless_run_has_a_fresh_store(fake_stores):
    out = bc.run_leaderless((3, 2, 1), ops=30, in_flight=4, latency_ops=5, repeats=3, seed=0)
    assert len(fake_stores) == 3 and all(s.down for s in fake_stores)
    for s in fake_stores:
        assert s.launch == {"protocol": "leaderless", "replicas": 3, "n": 3, "r": 2, "w": 1}
        (client,) = s.clients
        assert (client.options["n"], client.options["r"], client.options["w"]) == (3, 2, 1) and client.closed
        assert client.writes == bc.WARMUP_OPS + 30 + 5  # the warm-up of the patched module, read at call time
    assert out["keys_at_end"] == 5 + 30 + 5
    assert (out["read_repairs"], out["siblings_max"], out["failed"], out["stale_reads"]) == (3, 3, 0, 0)
    assert out["converge_s_runs"] == [0.25, 0.5, 0.75] and out["converge_s"] == 0.5
    assert len(out["write_ops_per_s_runs"]) == 3


def test_each_multi_leader_run_has_a_fresh_store(fake_stores):
    out = bc.run_multi_leader(ops=30, in_flight=6, region_delay_s=0.05, repeats=2, seed=0)
    assert len(fake_stores) == 2 and all(s.down for s in fake_stores)
    for s in fake_stores:
        assert s.launch == {"protocol": "multi-leader", "regions": bc.REGIONS, "region_delay_s": 0.05}
        assert [c.options["region"] for c in s.clients] == list(bc.REGIONS)
        assert all(c.writes == bc.WARMUP_OPS + 10 and c.closed for c in s.clients)
    assert list(out["regions"]) == list(bc.REGIONS) and out["failed"] == 0
    assert out["total_ops_per_s"] > 0 and out["keys_at_end"] == 3 * (bc.WARMUP_OPS + 10)


def test_a_region_whose_client_breaks_fails_the_run_without_hanging_the_others():
    class Broken(_DictClient):
        def put_nowait(self, key, value, return_body=True):
            raise ConnectionError("no leader in this region")

    clients = {"us": _DictClient(), "eu": Broken()}
    with pytest.raises(ConnectionError, match="no leader"):
        bc.bench_regions(clients, bc.KeySource(), ops=10, in_flight=2, warmup_ops=1)


# ---------------------------------------------------------------------------------------------
# Figures, verdicts and the other modules' rows


def test_median_run_by_a_nested_figure():
    runs = [{"t": {"x": 3.0}}, {"t": {"x": None}}, {"t": {"x": 1.0}}, {"t": {"x": 2.0}}]
    m = bc.median_run(runs, ("t", "x"))
    assert m["t"]["x"] == 2.0
    assert m["runs"] == [3.0, None, 1.0, 2.0]
    assert bc.median_run([{"t": {}}], ("t", "x"))["runs"] == [None]


def test_targets_ratios_and_verdicts():
    ours = {"3,1,1": {"write_ops_per_s": 50_000.0, "write_cpu_us": 40.0}, "3,2,2": {"write_ops_per_s": 30_000.0}}
    redis = {"SET": {"ops_per_s": 100_000.0, "cpu_us_per_op": 10.0}, "SET + WAIT 1": {"ops_per_s": 20_000.0}}
    met, reference, cpu = bc.targets(ours, redis)
    assert (met["ratio"], met["target"], met["met"]) == (0.5, 1.0, False)
    assert (reference["ratio"], reference["target"], reference["met"]) == (1.5, None, None)
    assert (cpu["ours"], cpu["ratio"], cpu["met"]) == ("leaderless (3,1,1) CPU per write", 4.0, None)
    ours["3,1,1"]["write_ops_per_s"] = 100_000.0
    assert bc.targets(ours, redis)[0]["met"] is True
    skipped = bc.targets(ours, None)
    assert [r["ratio"] for r in skipped] == [None, None, None] and skipped[0]["met"] is None


def test_other_modules_rows_become_one_table_per_shape():
    rows = [{"kind": "a", "ops": 1.5}, {"kind": "b", "ops": 20000.0}, {"phase": "x", "ratio": None}]
    groups = bc.table_groups(rows)
    assert [cols for cols, _ in groups] == [("kind", "ops"), ("phase", "ratio")]
    assert groups[0][1] == [["a", "1.5"], ["b", "20,000"]]
    assert groups[1][1] == [["x", ""]]


def test_a_missing_in_process_bench_is_a_reported_hook(monkeypatch, tmp_path):
    monkeypatch.setattr(bc, "BENCH_DIR", str(tmp_path))
    assert bc.in_process_part("crdt", quick=True).startswith("HOOK NOT FILLED: bench/conflicts_crdt.py")
    (tmp_path / "conflicts_crdt.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "conflicts_crdt", raising=False)
    assert "has no run()" in bc.in_process_part("crdt", quick=True)


def test_in_process_benches_are_called_with_their_scale(monkeypatch, tmp_path):
    (tmp_path / "conflicts_crdt.py").write_text("def run(scale=1.0):\n    return [{'scale': scale}]\n")
    (tmp_path / "conflicts_antientropy.py").write_text("def run(quick=False):\n    return [{'quick': quick}]\n")
    monkeypatch.setattr(bc, "BENCH_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("conflicts_crdt", "conflicts_antientropy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert bc.in_process_part("crdt", quick=True) == [{"scale": 0.05}]
    assert bc.in_process_part("crdt", quick=False) == [{"scale": 1.0}]
    assert bc.in_process_part("antientropy", quick=True) == [{"quick": True}]


# ---------------------------------------------------------------------------------------------
# main, with the systems stubbed


def _leaderless_figures(writes: float) -> dict:
    return {"write_ops_per_s": writes, "read_ops_per_s": 2 * writes, "write_p50_ms": 1.0, "write_p99_ms": 2.0,
            "read_p50_ms": 0.5, "read_p99_ms": 1.0, "failed": 0, "stale_reads": 0, "error": None,
            "converge_s": 0.1, "read_repairs": 0, "siblings_max": 1}


def test_main_prints_every_part_and_the_verdict(monkeypatch, capsys, tmp_path):
    quorums_seen = []

    def run_leaderless(quorum, **kw):
        quorums_seen.append((quorum, kw["ops"], kw["repeats"]))
        return _leaderless_figures(1000.0 * quorum[2])

    monkeypatch.setattr(bc, "run_leaderless", run_leaderless)
    monkeypatch.setattr(bc, "run_multi_leader", lambda **kw: {
        "total_ops_per_s": 900.0, "regions": {"us": 300.0, "eu": 300.0, "ap": 300.0}, "failed": 0,
        "converge_s": 0.2, "causality_violations": 0})
    monkeypatch.setattr(bc, "run_redis", lambda **kw: {
        "version": "7", "SET": {"ops_per_s": 2000.0, "p50_ms": 0.1, "p99_ms": 0.2},
        "SET + WAIT 1": {"ops_per_s": 1000.0, "p50_ms": 0.1, "p99_ms": 0.2}})
    monkeypatch.setattr(bc, "in_process_part", lambda part, quick: [{"part": part, "quick": quick}])
    out = tmp_path / "figures.json"
    assert bc.main(["--quick", "--quorums", "3,1,1/3,2,2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert quorums_seen == [((3, 1, 1), 3000, 1), ((3, 2, 2), 3000, 1)]
    assert "leaderless (3,1,1) writes/s vs redis pipelined SET: 0.50x (target >= 1x) NOT met" in printed
    assert "leaderless (3,2,2) writes/s vs redis pipelined SET + WAIT 1: 2.00x (reference)" in printed
    assert "900 writes/s in total (us 300, eu 300, ap 300)" in printed
    assert "CRDT merge rate" in printed and "anti-entropy" in printed
    figures = json.loads(out.read_text())
    assert figures["results"]["crdt"] == [{"part": "crdt", "quick": True}]
    assert figures["targets"][0]["met"] is False
    assert figures["settings"]["quorums"] == [[3, 1, 1], [3, 2, 2]]


def test_a_missing_redis_is_skipped_with_the_reason(monkeypatch, capsys, tmp_path):
    reason = "redis-server is not installed: apt-get install redis-server"
    monkeypatch.setattr(rp, "redis_missing", lambda: reason)
    out = tmp_path / "figures.json"
    assert bc.main(["--only", "peers", "--quick", "--json", str(out)]) == 0
    assert f"skipping redis: {reason}" in capsys.readouterr().out
    assert json.loads(out.read_text())["results"] == {"redis": reason}


def test_unknown_parts_are_refused():
    with pytest.raises(SystemExit):
        bc.main(["--parts", "leaderless,bogus"])


@pytest.mark.skipif(rp.redis_missing() is not None, reason=str(rp.redis_missing()))
def test_a_tiny_redis_run():
    r = bc.run_redis(ops=2000, pipeline=100, latency_ops=20, repeats=1, seed=0)
    for what in ("SET", "SET + WAIT 1"):
        assert r[what]["ops_per_s"] > 0
        assert 0 < r[what]["p50_ms"] <= r[what]["p99_ms"]
    assert r["SET + WAIT 1"]["wait_short"] == 0


def test_the_compaction_bench_writes_the_replicas_log_shape_and_the_per_key_reference(capsys):
    import conflicts_compaction

    from ddia_ray.replication.versioned_replica import COMPACTED_KEYS_PER_RECORD

    assert conflicts_compaction.main(["--keys", "20000", "--repeats", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("20,000")]
    # keys, label..., stall, build, append, swap, gap, appends, records, MB: the header plus
    # ceil(20,000 / per record) records as the replica writes its log, in the background and in the
    # step; the header plus one record per key for the oldest reference.
    compacted = 1 + -(-20_000 // COMPACTED_KEYS_PER_RECORD)
    assert [int(r[-2].replace(",", "")) for r in rows] == [compacted, compacted, 20_001]
    assert all(float(r[-1]) > 20_000 * 126 / 1e6 for r in rows)  # every state was written
    background, in_step = rows[0], rows[1]
    assert background[1:4] == ["in", "the", "background"] and in_step[1:4] == ["in", "the", "step"]
