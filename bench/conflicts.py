"""Conflicts: leaderless quorums, multi-leader regions, CRDT merges and anti-entropy, against Redis, in one run.

Theory of operation
-------------------
DDIA 5.3 (multi-leader replication) and 5.4 (leaderless replication) trade a
single ordering point for availability: every replica accepts writes and the
conflicts are settled later (siblings, last-writer-wins, resolvers, CRDTs;
DDIA 5.3 "Handling Write Conflicts", Shapiro et al. 2011). This bench measures
what that costs on one machine, through the same client an application uses,
with 16-byte keys ``b"k%015d" % i`` (distinct for every write of a store's life,
so no write conflicts with another) and 100-byte values cycled from a pool drawn
from ``random.Random(seed)``: the key and value shapes of
``bench/replication_peers.py``'s Redis peer, whose helpers make both.

* **leaderless** (DDIA 5.4, Dynamo): for each (N, R, W) of ``--quorums``
  (default (3,1,1), (3,2,2), (3,3,3)), each run on a fresh store of three
  replicas (``ReplicatedStore.launch(protocol="leaderless", n=N, r=R, w=W)``)
  and one client with that quorum. A run starts from an empty store and ends
  with ``WARMUP_OPS + --ops + --latency-ops`` keys, printed as ``keys``: what a
  replica spends per write grows with the keys it holds (its periodic log
  compaction re-encodes every key), so figures are comparable at equal ``--ops``:

  - *write throughput*: ``--ops`` ``put_nowait`` s with up to ``--in-flight``
    (``return_body=False``: acknowledged as Redis's ``SET`` is, without the key's versions)
    futures outstanding (the client batches what is queued into one request per
    coordinator); writes/s = acknowledged writes / time from the first submit to
    the last acknowledgement, after ``WARMUP_OPS`` untimed writes;
  - *read throughput*: the same with ``get_nowait`` of the keys just written; a
    read whose siblings do not hold the value written is counted as ``stale``
    (R + W <= N allows it; DDIA 5.4 "Limitations of Quorum Consistency");
  - *latency*: ``--latency-ops`` blocking ``put`` s, then as many blocking
    ``get`` s, one after the other; nearest-rank p50 / p99 in ms;
  - *CPU per operation* during each throughput run: the user + system CPU of
    this process and every process under it (a local Ray's raylet, its daemons
    and the replicas' workers are children of the driver that started it; see
    :func:`process_tree_cpu_s`), divided by the operations. On a machine with
    few cores, writes/s is about cores / CPU per write, and the CPU figure is the
    one a busy machine disturbs least;
  - then the seconds from the end of the last run until every replica's Merkle
    root agrees (``wait_converged``, polled every 50 ms), and the store's
    counters (read repairs, hints, quorum failures, the most siblings a key held).

* **multi-leader** (DDIA 5.3): a fresh store per run over three regions (``us``, ``eu``,
  ``ap``, ``--region-delay-ms`` of one-way delay between regions, all-to-all,
  causal delivery); one client per region, each in its own thread, all started
  together, each writing ``--ops`` / 3 distinct keys with ``--in-flight`` / 3
  futures outstanding to its region's leader. Per region: writes/s over that
  client's own first submit to last acknowledgement; in total: every write over
  the first submit of any to the last acknowledgement of any. Then the seconds
  until the regions converge (the asynchronous replication lag the
  acknowledgements did not wait for), and the CPU per write from the first
  warm-up write to convergence (accepting it in its region and applying it in
  the other two). The three clients share this process's interpreter, so how the
  total splits between regions also says how the threads were scheduled.

* **CRDT merge rate** and **anti-entropy** bytes and time against the number of
  divergent keys (up to 1M keys): pure in-process benches of their own,
  ``bench/conflicts_crdt.py`` (``run(scale)``, with pycrdt as the text CRDT's
  peer) and ``bench/conflicts_antientropy.py`` (``run(quick=...)``); this bench
  imports and calls them and prints the rows they return. A module that is not
  there is reported as a missing hook, and the rest runs.

**Redis** (``bench/replication_peers.py``'s :class:`RedisPair`: Debian's
``redis-server``, a leader and one replica on loopback, no persistence, driven
with ``redis-py``): ``--ops`` pipelined ``SET`` s in pipelines of
``--pipeline`` (the baseline of a W=1 write: acknowledged by one copy, copied
to the other later), and the same ending each pipeline with ``WAIT 1`` (two
copies before the reply, for reference beside W=2); blocking ``SET`` p50 / p99;
the CPU per ``SET`` of this process and both servers (its children), measured
as ours is. A missing Redis is skipped with the reason.

Target, as a ratio of this run: leaderless (3,1,1) writes/s >= 1x Redis's
pipelined ``SET`` s/s; printed beside it for reference, (3,2,2) against ``SET``
+ ``WAIT 1`` and the CPU a (3,1,1) write costs against a ``SET``'s. Each
figure is the median of ``--repeats`` runs (by writes/s or reads/s for
throughput, by p50 for latency). The driver's heap is frozen (:func:`freeze_heap`)
before ours and Redis's runs alike.

Run: ``python bench/conflicts.py [--quick] [--repeats N] [--ops N] [--in-flight N]
[--latency-ops N] [--quorums 3,1,1/3,2,2] [--parts leaderless,multi-leader,crdt,antientropy]
[--only ours|peers] [--json PATH]``. Ray is started by the first store (set
``RAY_ADDRESS`` to join a running cluster).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import importlib
import json
import os
import platform
import sys
import threading
import time
from typing import Any, Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
# the Redis peer's key and value shapes, its statistics and its launcher: one workload for both sides
from replication_peers import _key, _latency_summary, _value_pool  # noqa: E402 - the sibling bench module

__all__ = ["QUORUMS", "REGIONS", "PARTS", "WARMUP_OPS", "KeySource", "process_tree_cpu_s", "parse_quorums",
           "drive_window", "sequential_latency", "bench_quorum", "bench_regions", "median_run", "targets",
           "in_process_part", "table_groups", "freeze_heap", "main"]

#: The (N, R, W) settings the leaderless part measures by default.
QUORUMS = ((3, 1, 1), (3, 2, 2), (3, 3, 3))
#: The multi-leader part's regions, one leader each.
REGIONS = ("us", "eu", "ap")
#: The parts of the bench, in the order they run.
PARTS = ("leaderless", "multi-leader", "crdt", "antientropy")
#: Untimed writes before a timed phase (the client's links open, the replicas' dicts warm up).
WARMUP_OPS = 500
#: Seconds a single future may take before it counts as failed.
RESULT_TIMEOUT_S = 120.0
#: The in-process benches of other modules: part -> bench module.
IN_PROCESS = {"crdt": "conflicts_crdt", "antientropy": "conflicts_antientropy"}
_CONVERGE_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------------------------
# The workload: fresh keys and their values


class KeySource:
    """Hands out indexes of keys never written before in one store (thread-safe), and each index's
    value: ``value(i)`` is always the same bytes, so a read can be checked against its write."""

    def __init__(self, seed: int = 0):
        self._pool = _value_pool(seed)
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> range:
        """``n`` fresh key indexes."""
        if type(n) is not int or n < 0:
            raise ValueError(f"take() needs a count >= 0, got {n!r}")
        with self._lock:
            first, self._next = self._next, self._next + n
        return range(first, first + n)

    @staticmethod
    def key(i: int) -> bytes:
        """Key number ``i`` (16 bytes, as the Redis peer's)."""
        return _key(i)

    def value(self, i: int) -> bytes:
        """The value written to key number ``i`` (100 bytes, as the Redis peer's)."""
        return self._pool[i % len(self._pool)]


def process_tree_cpu_s(root: int | None = None) -> float | None:
    """CPU seconds (user + system) used so far by process ``root`` (default: this one) and every
    process under it, from Linux's ``/proc``; None where there is no ``/proc``. A local Ray's raylet,
    its workers (the replicas' actors) and its daemons are children of the driver that started it,
    so this is what the whole system spent; joined to a running cluster (``RAY_ADDRESS``), only the
    driver's share. A process that exited and was reaped still counts, in its parent's children's
    time (``cutime`` and ``cstime``): without that, a replica's worker exiting between two readings
    made the later one smaller. (Ray's workers are not reaped so: :func:`run_redis` measures its
    servers and this process only.)"""
    root = os.getpid() if root is None else root
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    parent, ticks = {}, {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        except (OSError, IndexError):
            continue  # gone meanwhile
        # utime + stime, and cutime + cstime: the reaped children's, which leave the tree when they exit
        parent[pid], ticks[pid] = int(fields[1]), sum(map(int, fields[11:15]))
    if root not in ticks:
        return None
    children: dict = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks[pid]
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def parse_quorums(text: str) -> tuple:
    """``"3,1,1/3,2,2"`` -> ``((3, 1, 1), (3, 2, 2))``: each N in 1..3 (the store has three replicas)
    and 1 <= R, W <= N. ValueError for anything else (argparse prints it)."""
    out = []
    for part in text.split("/"):
        fields = part.strip().split(",")
        if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
            raise ValueError(f"a quorum is N,R,W (three integers), got {part!r}")
        n, r, w = (int(f) for f in fields)
        if not 1 <= n <= 3 or not 1 <= r <= n or not 1 <= w <= n:
            raise ValueError(f"a quorum needs 1 <= R, W <= N <= 3 (three replicas), got {part!r}")
        out.append((n, r, w))
    if not out:
        raise ValueError("no quorum given")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Measurements over any client with put/get and put_nowait/get_nowait (the store's, or a test's)


def drive_window(submit: Callable[[int], Any], indexes, in_flight: int,
                 check: Callable[[int, Any], bool] | None = None) -> dict:
    """Call ``submit(i)`` (which returns a future) for every index, ``in_flight`` futures outstanding
    at most, and wait for all. ``check(i, result)`` says whether a result is right (a read holding its
    write); results it rejects are counted as ``wrong``, futures that raise as ``failed``.

    Returns ``ops``, ``failed``, ``wrong``, ``seconds`` (first submit to the last result),
    ``ops_per_s`` (the operations that succeeded, over ``seconds``), ``t_first``, ``t_last``,
    and the first failure's text (``error``) if any."""
    if type(in_flight) is not int or in_flight < 1:
        raise ValueError(f"in_flight is an int >= 1, got {in_flight!r}")
    window: collections.deque = collections.deque()
    failed = wrong = 0
    error: str | None = None

    def settle() -> None:
        nonlocal failed, wrong, error
        i, fut = window.popleft()
        try:
            result = fut.result(RESULT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the figures refused past a share
            failed += 1
            error = error or f"{type(exc).__name__}: {exc}"
            return
        if check is not None and not check(i, result):
            wrong += 1

    ops = 0
    t_first = time.perf_counter()
    for i in indexes:
        if len(window) >= in_flight:
            settle()
        window.append((i, submit(i)))
        ops += 1
    while window:
        settle()
    t_last = time.perf_counter()
    seconds = t_last - t_first
    done = ops - failed
    return {"ops": ops, "failed": failed, "wrong": wrong, "seconds": seconds, "t_first": t_first,
            "t_last": t_last, "ops_per_s": done / seconds if seconds > 0 and done else None, "error": error}


def sequential_latency(call: Callable[[int], Any], indexes,
                       check: Callable[[int, Any], bool] | None = None) -> dict:
    """``call(i)`` for every index, one after the other: p50, p99, mean and max in ms (nearest rank)
    over the calls that returned, with ``failed`` and ``wrong`` counted as in :func:`drive_window`."""
    latencies_ms, failed, wrong = [], 0, 0
    error: str | None = None
    for i in indexes:
        t0 = time.perf_counter()
        try:
            result = call(i)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failed += 1
            error = error or f"{type(exc).__name__}: {exc}"
            continue
        latencies_ms.append((time.perf_counter() - t0) * 1e3)
        if check is not None and not check(i, result):
            wrong += 1
    out = {"ops": len(latencies_ms) + failed, "failed": failed, "wrong": wrong, "error": error}
    if not latencies_ms:
        return out | {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return out | _latency_summary(latencies_ms)


def _holds(keys: KeySource) -> Callable[[int, Any], bool]:
    """A read's check: its siblings hold the value written to its key."""
    return lambda i, versions: keys.value(i) in versions.values


def _cpu_per_op(cpu_s: Callable[[], float | None], before: float | None, ops: int) -> float | None:
    """Microseconds of CPU per operation since ``before`` (None if unknown)."""
    after = cpu_s()
    return None if before is None or after is None or not ops else (after - before) / ops * 1e6


def bench_quorum(client: Any, keys: KeySource, *, ops: int, in_flight: int, latency_ops: int,
                 warmup_ops: int | None = None, cpu_s: Callable[[], float | None] = process_tree_cpu_s) -> dict:
    """One run of the leaderless figures through ``client`` (a ``VersionedClient`` with its quorum):
    ``write`` and ``read`` throughput (:func:`drive_window`, with ``cpu_us_per_op``: what ``cpu_s()``
    grew by, per operation), ``write_latency`` and ``read_latency`` (:func:`sequential_latency`).
    Reads read the keys the run wrote; a read without its value is ``wrong`` (a stale read).
    ``warmup_ops`` untimed writes go first (default :data:`WARMUP_OPS`)."""
    holds = _holds(keys)
    warm = keys.take(WARMUP_OPS if warmup_ops is None else warmup_ops)
    drive_window(lambda i: client.put_nowait(keys.key(i), keys.value(i), return_body=False), warm, in_flight)
    written = keys.take(ops)
    before = cpu_s()
    write = drive_window(lambda i: client.put_nowait(keys.key(i), keys.value(i), return_body=False), written, in_flight)
    write["cpu_us_per_op"] = _cpu_per_op(cpu_s, before, write["ops"])
    before = cpu_s()
    read = drive_window(lambda i: client.get_nowait(keys.key(i)), written, in_flight, holds)
    read["cpu_us_per_op"] = _cpu_per_op(cpu_s, before, read["ops"])
    sequential = keys.take(latency_ops)
    write_latency = sequential_latency(lambda i: client.put(keys.key(i), keys.value(i), return_body=False), sequential)
    read_latency = sequential_latency(lambda i: client.get(keys.key(i)), sequential, holds)
    return {"write": write, "read": read, "write_latency": write_latency, "read_latency": read_latency}


def bench_regions(clients: dict, keys: KeySource, *, ops: int, in_flight: int,
                  warmup_ops: int | None = None) -> dict:
    """Every region's client writes at once, from a thread of its own: ``ops`` fresh keys each with
    ``in_flight`` futures outstanding, after ``warmup_ops`` untimed writes (default :data:`WARMUP_OPS`).
    Returns per region the :func:`drive_window` figures, and ``total``: every write over the first
    submit of any region to the last acknowledgement of any."""
    regions = list(clients)
    warmup_ops = WARMUP_OPS if warmup_ops is None else warmup_ops
    start = threading.Barrier(len(regions))
    out: dict = {}
    errors: list = []

    def one(region: str) -> None:
        c = clients[region]
        try:
            drive_window(lambda i: c.put_nowait(keys.key(i), keys.value(i), return_body=False), keys.take(warmup_ops), in_flight)
            mine = keys.take(ops)
            start.wait()
            out[region] = drive_window(lambda i: c.put_nowait(keys.key(i), keys.value(i), return_body=False), mine, in_flight)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            start.abort()
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(r,), name=f"bench-{r}") for r in regions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    t_first = min(r["t_first"] for r in out.values())
    t_last = max(r["t_last"] for r in out.values())
    done = sum(r["ops"] - r["failed"] for r in out.values())
    seconds = t_last - t_first
    total = {"ops": sum(r["ops"] for r in out.values()), "failed": sum(r["failed"] for r in out.values()),
             "seconds": seconds, "t_last": t_last, "ops_per_s": done / seconds if seconds > 0 and done else None}
    return {"regions": {r: out[r] for r in regions}, "total": total}


def median_run(runs: list, path: tuple) -> dict:
    """The run whose figure at ``path`` (keys into nested dicts) is the median (the lower middle one
    for an even count; runs without the figure sort last); the figures of every run ride along as
    ``runs``."""
    def figure(run: dict):
        for k in path:
            run = run.get(k) if isinstance(run, dict) else None
        return run

    ordered = sorted(runs, key=lambda r: (figure(r) is None, figure(r) or 0.0))
    measured = [r for r in ordered if figure(r) is not None] or ordered
    return {**measured[(len(measured) - 1) // 2], "runs": [figure(r) for r in runs]}


def targets(leaderless: dict, redis: dict | None) -> list:
    """The target rows of one run: (3,1,1) writes/s over Redis's pipelined SETs/s (target >= 1x); for
    reference (3,2,2) over SET + WAIT 1, and the CPU a (3,1,1) write costs over what a SET costs (the
    figure a busy machine disturbs least). A row whose figures are missing has ratio None."""
    rows = []
    for quorum, peer, ours_field, theirs_field, target in (
            ("3,1,1", "SET", "write_ops_per_s", "ops_per_s", 1.0),
            ("3,2,2", "SET + WAIT 1", "write_ops_per_s", "ops_per_s", None),
            ("3,1,1", "SET", "write_cpu_us", "cpu_us_per_op", None)):
        ours = (leaderless.get(quorum) or {}).get(ours_field)
        theirs = ((redis or {}).get(peer) or {}).get(theirs_field)
        ratio = ours / theirs if ours and theirs else None
        what = "writes/s" if ours_field == "write_ops_per_s" else "CPU per write"
        rows.append({"ours": f"leaderless ({quorum}) {what}", "peer": f"redis pipelined {peer}", "ratio": ratio,
                     "target": target, "met": None if ratio is None or target is None else ratio >= target})
    return rows


def in_process_part(part: str, quick: bool) -> list | str:
    """Run another module's in-process bench (``IN_PROCESS[part]``) and return its rows, or the
    reason it could not run (a hook not yet filled: the module or its ``run`` is missing)."""
    module_name = IN_PROCESS[part]
    path = os.path.join(BENCH_DIR, f"{module_name}.py")
    if not os.path.exists(path):
        return f"HOOK NOT FILLED: bench/{module_name}.py is not there yet"
    module = importlib.import_module(module_name)
    run = getattr(module, "run", None)
    if run is None:
        return f"HOOK NOT FILLED: bench/{module_name}.py has no run()"
    if part == "crdt":
        return run(0.05 if quick else 1.0)
    return run(quick=quick)


# ---------------------------------------------------------------------------------------------
# The systems


def _summary(run: dict) -> dict:
    """The figures of one leaderless run, flat."""
    return {"write_ops_per_s": run["write"]["ops_per_s"], "read_ops_per_s": run["read"]["ops_per_s"],
            "write_p50_ms": run["write_latency"]["p50_ms"], "write_p99_ms": run["write_latency"]["p99_ms"],
            "read_p50_ms": run["read_latency"]["p50_ms"], "read_p99_ms": run["read_latency"]["p99_ms"],
            "write_cpu_us": run["write"].get("cpu_us_per_op"), "read_cpu_us": run["read"].get("cpu_us_per_op"),
            "failed": sum(run[k]["failed"] for k in ("write", "read", "write_latency", "read_latency")),
            "stale_reads": run["read"]["wrong"] + run["read_latency"]["wrong"],
            "error": next((run[k]["error"] for k in ("write", "read", "write_latency", "read_latency")
                           if run[k]["error"]), None)}


def _median_summary(runs: list) -> dict:
    """Median figures over the runs: throughput by its own median, latency by the p50's median run."""
    flat = [_summary(r) for r in runs]
    out = {}
    for figure, with_it in (("write_ops_per_s", ("write_cpu_us",)), ("read_ops_per_s", ("read_cpu_us",)),
                            ("write_p50_ms", ("write_p99_ms",)), ("read_p50_ms", ("read_p99_ms",))):
        m = median_run(flat, (figure,))
        out[figure] = m[figure]
        out[f"{figure}_runs"] = m["runs"]
        for other in with_it:
            out[other] = m[other]
    out["failed"] = sum(f["failed"] for f in flat)
    out["stale_reads"] = sum(f["stale_reads"] for f in flat)
    out["error"] = next((f["error"] for f in flat if f["error"]), None)
    return out


@contextlib.contextmanager
def _store(**launch: Any):
    """A fresh store (``ReplicatedStore.launch(**launch)``), shut down on leaving."""
    from ddia_ray.replication import ReplicatedStore

    store = ReplicatedStore.launch(**launch)
    try:
        yield store
    finally:
        store.shutdown()


def _keys_held(store: Any) -> int:
    """The most keys a replica of ``store`` holds."""
    return max((st.get("keys", 0) for st in store.stats()["replicas"].values()), default=0)


def run_leaderless(quorum: tuple, *, ops: int, in_flight: int, latency_ops: int, repeats: int, seed: int) -> dict:
    """``repeats`` runs of :func:`bench_quorum`, each on a fresh leaderless store of three replicas
    with ``quorum`` = (N, R, W) (a store's cost per write grows with the keys it holds, so the runs
    start alike); their medians, the seconds each store took to converge after its run, and the
    stores' counters summed (``siblings_max``: the most)."""
    n, r, w = quorum
    runs, converge, counters, keys_held = [], [], collections.Counter(), 0
    for _ in range(repeats):
        with _store(protocol="leaderless", replicas=3, n=n, r=r, w=w) as store:
            with store.client(n=n, r=r, w=w, timeout_s=60.0) as client:
                freeze_heap()
                runs.append(bench_quorum(client, KeySource(seed), ops=ops, in_flight=in_flight,
                                         latency_ops=latency_ops))
            # the run ended with blocking reads: every write was acknowledged before them
            converge.append(store.wait_converged(timeout_s=_CONVERGE_TIMEOUT_S))
            st = store.stats()
            counters.update({k: st.get(k, 0) for k in ("read_repairs", "hinted", "handoffs", "quorum_failures",
                                                       "anti_entropy_rounds", "anti_entropy_keys")})
            counters["siblings_max"] = max(counters["siblings_max"], st.get("siblings_max", 0))
            keys_held = max(keys_held, _keys_held(store))
    return {**_median_summary(runs), "converge_s": sorted(converge)[(len(converge) - 1) // 2],
            "converge_s_runs": converge, "keys_at_end": keys_held, **counters}


def run_multi_leader(*, ops: int, in_flight: int, region_delay_s: float, repeats: int, seed: int) -> dict:
    """``repeats`` runs of :func:`bench_regions`, each on a fresh multi-leader store over :data:`REGIONS`
    (the median by total writes/s), with the seconds from the last acknowledgement until the regions
    agree and the CPU per write."""
    runs = []
    for _ in range(repeats):
        with _store(protocol="multi-leader", regions=REGIONS, region_delay_s=region_delay_s) as store:
            clients = {region: store.client(region=region, timeout_s=60.0) for region in REGIONS}
            try:
                before = process_tree_cpu_s()
                run = bench_regions(clients, KeySource(seed), ops=max(1, ops // len(REGIONS)),
                                    in_flight=max(1, in_flight // len(REGIONS)))
                store.wait_converged(timeout_s=_CONVERGE_TIMEOUT_S)
                run["converge_s"] = time.perf_counter() - run["total"]["t_last"]
                # every write's whole cost: accepted in its region and applied in the two others
                run["cpu_us_per_op"] = _cpu_per_op(process_tree_cpu_s, before,
                                                   run["total"]["ops"] + len(REGIONS) * WARMUP_OPS)
            finally:
                for c in clients.values():
                    c.close()
            st = store.stats()
            run["causality_violations"] = st.get("causality_violations", 0)
            run["siblings_max"] = st.get("siblings_max", 0)
            run["keys_at_end"] = _keys_held(store)
            runs.append(run)
    m = median_run(runs, ("total", "ops_per_s"))
    return {"total_ops_per_s": m["total"]["ops_per_s"], "total_runs": m["runs"],
            "regions": {r: m["regions"][r]["ops_per_s"] for r in REGIONS},
            "failed": sum(run["total"]["failed"] for run in runs), "converge_s": m["converge_s"],
            "cpu_us_per_op": m["cpu_us_per_op"], "region_delay_s": region_delay_s,
            "causality_violations": sum(run["causality_violations"] for run in runs),
            "siblings_max": max(run["siblings_max"] for run in runs), "keys_at_end": m["keys_at_end"]}


def run_redis(*, ops: int, pipeline: int, latency_ops: int, repeats: int, seed: int) -> dict | str:
    """Redis, a leader and one replica: pipelined SET and SET + WAIT 1 (median of ``repeats`` by
    SETs/s), blocking SET latency; or the reason Redis cannot run here."""
    import replication_peers as peers

    reason = peers.redis_missing()
    if reason:
        return reason
    out: dict = {}
    with peers.RedisPair() as redis:
        out["version"] = redis.version
        for wait in (False, True):
            runs = []
            # This process's own CPU and the two servers': the same scope as ours (a driver and the
            # processes serving it). Not this process's whole tree: the local Ray the leaderless part
            # started is in it, and its actors' workers exit meanwhile without their CPU being
            # accounted to a parent (measured: -202.8 and -211.3 us per SET when it was counted).
            servers = [s.proc.pid for s in redis.servers]

            def cpu_s() -> float | None:
                theirs = [process_tree_cpu_s(pid) for pid in servers]
                return None if None in theirs else sum(os.times()[:2]) + sum(theirs)  # type: ignore[arg-type]

            freeze_heap()
            for _ in range(repeats):
                before = cpu_s()
                run = redis.pipelined_set(ops=ops, pipeline=pipeline, wait=wait, seed=seed)
                # pipelined_set writes min(ops, 10 pipelines) untimed SETs first, and waits for the replica
                run["cpu_us_per_op"] = _cpu_per_op(cpu_s, before, ops + min(ops, 10 * pipeline))
                runs.append(run)
            m = median_run(runs, ("ops_per_s",))
            lat = redis.blocking_latency(ops=latency_ops, wait=wait, seed=seed)
            out["SET + WAIT 1" if wait else "SET"] = {"ops_per_s": m["ops_per_s"], "runs": m["runs"],
                                                      "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                                                      "wait_short": m["wait_short"],
                                                      "cpu_us_per_op": m["cpu_us_per_op"]}
    return out


# ---------------------------------------------------------------------------------------------
# Printing


def freeze_heap() -> None:
    """Take every object this driver holds now (Ray's, the clients', the modules') out of the garbage
    collector's full collections (``gc.freeze``), before ours and the peer's runs alike: with Ray
    loaded, a full collection of the driver took 43-54 ms here (a ``gc.callbacks`` probe, 2026-12-08)
    and landed in some runs of 20,000 writes and not others, a third of such a run (bench/events.py
    does the same)."""
    gc.collect()
    gc.freeze()


def _num(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def table_groups(rows: list) -> list:
    """Another module's rows (flat dicts) split into tables: consecutive rows with the same columns
    form one table. Returns ``[(columns, [[cell text, ...], ...]), ...]``."""
    groups: list = []
    for row in rows:
        columns = tuple(row)
        if not groups or groups[-1][0] != columns:
            groups.append((columns, []))
        groups[-1][1].append([_cell(row[c]) for c in columns])
    return groups


def _print_rows(title: str, rows: list | str) -> None:
    """Print another module's rows as tables (:func:`table_groups`), or why there are none."""
    print(f"\n{title}:")
    if isinstance(rows, str):
        print(f"  {rows}")
        return
    for columns, cells in table_groups(rows):
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths)))
        for r in cells:
            print("  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def _print_leaderless(results: dict) -> None:
    print(f"\n{'leaderless (N,R,W)':20} {'writes/s':>10} {'reads/s':>10} {'put p50':>8} {'put p99':>8} "
          f"{'get p50':>8} {'get p99':>8} {'put CPU':>8} {'get CPU':>8} {'stale':>6} {'failed':>6} {'conv s':>7} "
          f"{'repairs':>8} {'siblings':>8} {'keys':>8}")
    for quorum, r in results.items():
        print(f"{quorum:20} {_num(r['write_ops_per_s']):>10} {_num(r['read_ops_per_s']):>10} "
              f"{_num(r['write_p50_ms'], '.2f'):>8} {_num(r['write_p99_ms'], '.2f'):>8} "
              f"{_num(r['read_p50_ms'], '.2f'):>8} {_num(r['read_p99_ms'], '.2f'):>8} "
              f"{_num(r.get('write_cpu_us'), '.0f'):>8} {_num(r.get('read_cpu_us'), '.0f'):>8} {r['stale_reads']:>6} "
              f"{r['failed']:>6} {_num(r['converge_s'], '.2f'):>7} {r['read_repairs']:>8} {r['siblings_max']:>8} "
              f"{_num(r.get('keys_at_end')):>8}")
        if r.get("error"):
            print(f"  first failure: {r['error']}")
    print("(latencies in ms; CPU: microseconds per operation of this process and every process under it, the "
          "local Ray's replicas included, during the throughput runs)")


def main(argv: list | None = None) -> int:
    """Run the parts asked for, print the tables and the target ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs, one repeat (a smoke test, not figures)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure, the median reported (3)")
    parser.add_argument("--ops", type=int, default=None, help="writes (and reads) per throughput run (50,000)")
    parser.add_argument("--in-flight", type=int, default=None, help="futures outstanding (4,000)")
    parser.add_argument("--latency-ops", type=int, default=None, help="blocking calls per latency run (1,000)")
    parser.add_argument("--pipeline", type=int, default=1000, help="SETs per Redis pipeline")
    parser.add_argument("--quorums", type=parse_quorums, default=QUORUMS, help="N,R,W[/N,R,W...]")
    parser.add_argument("--region-delay-ms", type=float, default=50.0, help="one-way delay between regions")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--only", choices=("ours", "peers"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; use {', '.join(PARTS)}")
    kw = {"ops": args.ops or (3000 if args.quick else 50_000),
          "in_flight": args.in_flight or (1000 if args.quick else 4000),
          "latency_ops": args.latency_ops or (100 if args.quick else 1000),
          "repeats": args.repeats or (1 if args.quick else 3), "seed": args.seed}
    load_start = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load_start[0]:.1f}")
    print(f"workload: {kw['ops']} writes and reads per throughput run with {kw['in_flight']} in flight; "
          f"{kw['latency_ops']} blocking calls per latency run; 16-byte keys, 100-byte values, every key fresh; "
          f"median of {kw['repeats']} runs", flush=True)
    results: dict = {}
    if args.only != "peers":
        if "leaderless" in parts:
            results["leaderless"] = {}
            for quorum in args.quorums:
                name = ",".join(map(str, quorum))
                print(f"leaderless ({name}) ...", flush=True)
                results["leaderless"][name] = run_leaderless(quorum, **kw)
            _print_leaderless(results["leaderless"])
        if "multi-leader" in parts:
            print("\nmulti-leader ...", flush=True)
            ml = results["multi-leader"] = run_multi_leader(
                ops=kw["ops"], in_flight=kw["in_flight"], region_delay_s=args.region_delay_ms / 1e3,
                repeats=kw["repeats"], seed=kw["seed"])
            per_region = ", ".join(f"{r} {_num(v)}" for r, v in ml["regions"].items())
            print(f"multi-leader, {len(REGIONS)} regions ({args.region_delay_ms:g} ms apart), clients writing "
                  f"concurrently: {_num(ml['total_ops_per_s'])} writes/s in total ({per_region}); failed "
                  f"{ml['failed']}; converged {_num(ml['converge_s'], '.2f')} s after the last acknowledgement; "
                  f"causality violations {ml['causality_violations']}; CPU {_num(ml.get('cpu_us_per_op'))} us "
                  f"per write (all regions); {_num(ml.get('keys_at_end'))} keys at the end")
        for part in ("crdt", "antientropy"):
            if part in parts:
                rows = in_process_part(part, args.quick)
                results[part] = rows
                _print_rows({"crdt": "CRDT merge rate (bench/conflicts_crdt.py)",
                             "antientropy": "anti-entropy (bench/conflicts_antientropy.py)"}[part], rows)
    if args.only != "ours" and "leaderless" in parts:
        print("\nredis ...", flush=True)
        redis = run_redis(ops=kw["ops"], pipeline=args.pipeline, latency_ops=kw["latency_ops"],
                          repeats=kw["repeats"], seed=kw["seed"])
        results["redis"] = redis
        if isinstance(redis, str):
            print(f"skipping redis: {redis}")
        else:
            for what in ("SET", "SET + WAIT 1"):
                r = redis[what]
                print(f"redis {redis['version']} leader + 1 replica: pipelined {what} {_num(r['ops_per_s'])}/s "
                      f"(pipelines of {args.pipeline}), CPU {_num(r.get('cpu_us_per_op'), '.1f')} us per SET; "
                      f"blocking p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms")
    rows = []
    if args.only is None and "leaderless" in parts:
        print("\ntargets (ratios of this run):")
        rows = targets(results.get("leaderless", {}), results.get("redis") if isinstance(results.get("redis"),
                                                                                          dict) else None)
        for row in rows:
            ratio = "n/a (a figure is missing)" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            verdict = "(reference)" if row["target"] is None else \
                f"(target >= {row['target']:g}x) {'met' if row['met'] else 'NOT met' if row['met'] is False else ''}"
            print(f"  {row['ours']} vs {row['peer']}: {ratio} {verdict}")
    load_end = os.getloadavg()
    print(f"\nload average {load_end[0]:.1f} at the end (1 min), {load_end[1]:.1f} (5 min)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"arch": platform.machine(), "cores": os.cpu_count(),
                                   "python": platform.python_version(), "load_start": load_start,
                                   "load_end": load_end},
                       "settings": {**kw, "pipeline": args.pipeline, "quorums": [list(q) for q in args.quorums],
                                    "region_delay_ms": args.region_delay_ms, "parts": parts},
                       "results": results, "targets": rows}, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
