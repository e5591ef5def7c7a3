"""Partitioning: throughput with 1, 2, 4 and 8 partitions, a move under load, and Ray Data's own Parquet as the peer.

Measured for each partition count N of ``--partitions`` (default 1,2,4,8): a store of N hash
partitions on N replica groups (``--replicas`` replicas each, default 1: the cost of replication
is bench/replication.py's subject; ``--protocol``, default Raft; ``--engine``, default the LSM,
under a temporary directory), 16-byte random keys and 100-byte values:

* **bulk load**: ``store.write_dataset(path)`` of a Parquet dataset of ``--rows`` rows in
  ``--files`` files, written beforehand: rows/s, the reading of the files included (the store's
  load tasks read them, one per file, with pyarrow: ``write_dataset`` of a path does not use Ray
  Data, docs/partitioning.md "Ray Data");
* **full scan**: ``store.to_ray_dataset().materialize()`` right after the load, when the store
  holds exactly the Parquet rows: rows/s and MB/s (keys and values);
* **random writes**: ``--ops`` ``put_nowait`` of new keys with up to ``--in-flight`` outstanding
  (the client batches them per group, ``max_batch`` 1000);
* **point reads**: ``--ops`` ``get_nowait`` of those keys in random order, as many in flight.

Each figure is printed with its ratio to N=1 and the share of the machine's CPU time that was
busy while it ran (every process on the machine, which is shared): a phase near 100% is capped
by the cores, and N above the core count shares them, so its ratio shows this machine, not the
design. Ray runs a read task per CPU at a time, so a scan reads at most that many partitions at once.

**Rebalance**: a store of 4 partitions on 2 groups holding ``--rebalance-keys`` keys; a writer and
a reader thread (each up to ``--rebalance-in-flight`` operations outstanding, keys of every
partition) for ``--rebalance-s`` seconds, and half-way ``store.move`` of one partition to the
other group. Printed per ``--interval-ms``: writes/s and reads/s, with the move's start, freeze
(writes to the partition refused) and switch (the new map published) marked from its report's
``copy_s`` and ``frozen_s``; then the longest gap between two write completions, for all writes
and for the moved partition's.

Peer, in the same run on the same files: Ray Data's ``read_parquet(path).materialize()`` against
our full scan, and ``read_parquet(path).write_parquet(dir)`` against our bulk load (both read the
same Parquet files; one writes the rows into the store, the other to Parquet).
Skipped with the reason when Ray Data is not installed.

Targets, as ratios of this run: bulk load >= 0.5x Ray Data's Parquet write; full scan >= 0.5x
Ray Data's ``read_parquet`` of the same data.

``--quick`` runs tiny sizes (partitions 1 and 4, 4,000 rows, 2,000 operations, a 4 s series) to
check that everything runs; its figures are mostly start-up (actors, Ray Data's workers), not rates.

Run: ``python bench/partitioning.py [--quick] [--partitions 1,2,4,8] [--rows N] [--files N] [--ops N]
[--in-flight N] [--replicas R] [--protocol raft|leader-follower] [--engine lsm|btree|map]
[--load-concurrency N] [--rebalance-s S] [--rebalance-keys N] [--interval-ms MS] [--only ours|peers]``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time

KEY_BYTES, VALUE_BYTES = 16, 100
TARGET_LOAD, TARGET_SCAN = 0.5, 0.5
CPU_BOUND = 0.9  # busy share of the machine's CPU time above which a phase counts as capped by the cores
QUICK = {"partitions": "1,4", "rows": 4000, "files": 2, "ops": 2000, "in_flight": 500, "rebalance_s": 4.0,
         "rebalance_keys": 2000, "rebalance_in_flight": 64}


# --- the machine -------------------------------------------------------------------------------------


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of every CPU since boot (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is counted in user already
    return total - idle, total


class _Phase:
    """Times a phase and measures the share of the machine's CPU time that was busy during it."""

    def __init__(self):
        self.elapsed_s = 0.0
        self.busy: float | None = None

    def __enter__(self):
        self._cpu, self._t0 = _cpu_times(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed_s = time.perf_counter() - self._t0
        end = _cpu_times()
        if self._cpu and end and end[1] > self._cpu[1]:
            self.busy = (end[0] - self._cpu[0]) / (end[1] - self._cpu[1])


def _machine() -> str:
    mem = _memory_gib()
    return (f"machine: {platform.node()}, {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores, "
            f"{'?' if mem is None else f'{mem:.1f}'} GiB memory, python {platform.python_version()}")


# --- the data ------------------------------------------------------------------------------------------


def _keys(rng: random.Random, n: int) -> list[bytes]:
    buf = rng.randbytes(KEY_BYTES * n)
    return [buf[i:i + KEY_BYTES] for i in range(0, len(buf), KEY_BYTES)]


def _write_parquet(path: str, rows: int, files: int, seed: int) -> None:
    """``rows`` random pairs in ``files`` Parquet files under ``path`` (columns ``key``, ``value``, binary)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(f"parquet:{seed}")
    os.makedirs(path)
    per = -(-rows // files)
    for i, start in enumerate(range(0, rows, per)):
        n = min(per, rows - start)
        values = rng.randbytes(VALUE_BYTES * n)
        table = pa.table({"key": pa.array(_keys(rng, n), pa.binary()),
                          "value": pa.array([values[j:j + VALUE_BYTES] for j in range(0, len(values), VALUE_BYTES)],
                                            pa.binary())})
        pq.write_table(table, os.path.join(path, f"part-{i:03d}.parquet"))


def _ray_data_missing() -> str | None:
    """Why Ray Data cannot be used here, or None."""
    try:
        import ray.data  # noqa: F401
    except ImportError as e:
        return f"Ray Data is not installed ({e}); pip install 'ray[data]'"
    return None


def _quiet_ray_data() -> None:
    """No progress bars or per-dataset log lines between the figures."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# --- pipelined operations ---------------------------------------------------------------------------------


def _pipelined(submit, items, in_flight: int) -> tuple[float, int]:
    """Ops/s of ``submit(item)`` for every item with up to ``in_flight`` futures outstanding, and how
    many of them returned None (for reads: keys missing, which should be none)."""
    window: collections.deque = collections.deque()
    none = 0
    t0 = time.perf_counter()
    for item in items:
        if len(window) >= in_flight:
            none += window.popleft().result(60) is None
        window.append(submit(item))
    for f in window:
        none += f.result(60) is None
    return len(items) / (time.perf_counter() - t0), none


# --- ours: one store per partition count ---------------------------------------------------------------


def _engine_options(args) -> dict:
    """The stores' engine options from the command line (none unless asked)."""
    if args.engine == "lsm" and args.bulk_window_s:
        return {"engine_options": {"bulk_window_s": args.bulk_window_s}}
    return {}


def bench_store(n: int, workdir: str, parquet: str, args, seed: int) -> dict:
    """Bulk load, full scan, random writes and point reads on a store of ``n`` partitions on ``n`` groups."""
    from ddia_ray.partitioning import PartitionedStore

    out: dict = {"n": n}
    store = PartitionedStore.launch(f"bench-parts-{n}-{os.getpid()}", partitions=n, groups=n, scheme="hash",
                                    replicas=args.replicas, protocol=args.protocol, engine=args.engine,
                                    root=f"file://{workdir}/store-{n}", **_engine_options(args))
    try:
        if not args.no_data:
            with _Phase() as ph:
                loaded = store.write_dataset(parquet, concurrency=args.load_concurrency or None)
            if loaded != args.rows:
                raise SystemExit(f"N={n}: write_dataset wrote {loaded} rows of {args.rows}")
            out["load"], out["load_busy"] = loaded / ph.elapsed_s, ph.busy
            with _Phase() as ph:
                scanned = store.to_ray_dataset().materialize().count()
            if scanned != args.rows:
                raise SystemExit(f"N={n}: the full scan returned {scanned} rows of {args.rows}")
            out["scan"], out["scan_busy"] = scanned / ph.elapsed_s, ph.busy
            out["scan_mb"] = out["scan"] * (KEY_BYTES + VALUE_BYTES) / 1e6
        rng = random.Random(f"ops:{seed}:{n}")
        keys, value = _keys(rng, args.ops), rng.randbytes(VALUE_BYTES)
        with store.client(max_batch=1000, max_in_flight=4, timeout_s=60.0) as c:
            _pipelined(lambda k: c.put_nowait(k, value), _keys(rng, min(2000, args.ops)), args.in_flight)  # warm-up
            with _Phase() as ph:
                out["write"], _ = _pipelined(lambda k: c.put_nowait(k, value), keys, args.in_flight)
            out["write_busy"] = ph.busy
            rng.shuffle(keys)
            with _Phase() as ph:
                out["read"], out["read_missing"] = _pipelined(lambda k: c.get_nowait(k), keys, args.in_flight)
            out["read_busy"] = ph.busy
    finally:
        store.shutdown(destroy_data=True)
    return out


# --- the peer: Ray Data's own Parquet read and write --------------------------------------------------------


def bench_peer(parquet: str, workdir: str, rows: int) -> dict:
    """Ray Data's ``read_parquet(...).materialize()`` and ``read_parquet(...).write_parquet(...)`` of the same files."""
    import ray.data

    out: dict = {}
    with _Phase() as ph:
        got = ray.data.read_parquet(parquet).materialize().count()
    if got != rows:
        raise SystemExit(f"read_parquet returned {got} rows of {rows}")
    out["scan"], out["scan_busy"] = rows / ph.elapsed_s, ph.busy
    out["scan_mb"] = out["scan"] * (KEY_BYTES + VALUE_BYTES) / 1e6
    dest = os.path.join(workdir, "peer-out")
    with _Phase() as ph:
        ray.data.read_parquet(parquet).write_parquet(dest)
    out["load"], out["load_busy"] = rows / ph.elapsed_s, ph.busy
    shutil.rmtree(dest, ignore_errors=True)
    return out


def _import_package(seconds: float) -> int:
    """A warm-up task: the package import that the store's load and scan tasks do first, then a
    wait, so that tasks started together hold distinct worker processes; returns the process id."""
    import ddia_ray.partitioning.datasets  # noqa: F401

    time.sleep(seconds)
    return os.getpid()


def _warm_up(parquet: str, workdir: str) -> None:
    """Ray's start, Ray Data's first execution, the files' first read and the package's import in
    Ray's worker processes fall outside every figure.

    The import: a load's and a scan's tasks run on Ray's warm workers, and the first task in each
    imports ddia_ray, 1-2 s of CPU per worker on this machine (where PYTHONDONTWRITEBYTECODE is
    set, so every process compiles the package again). py-spy put three quarters of a task
    worker's samples there during the first load at N=1 (2026-12-05), which made N=1 look slower
    than N=2. One task per CPU imports it, all at once, so each lands in a worker of its own."""
    import ray
    import ray.data

    ray.data.read_parquet(parquet).materialize()
    ray.data.read_parquet(parquet).write_parquet(os.path.join(workdir, "warm-up"))
    shutil.rmtree(os.path.join(workdir, "warm-up"), ignore_errors=True)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ray.get([ray.remote(_import_package).remote(1.0) for _ in range(cpus)])


# --- a move under load, as a time series ---------------------------------------------------------------------


class _Load(threading.Thread):
    """Submits ``op(key)`` for random ``keys`` with up to ``in_flight`` outstanding until stopped;
    records each completion's time (monotonic) and whether its key lies in ``watched``."""

    def __init__(self, op, keys: list, watched: set, in_flight: int, seed: str):
        super().__init__(daemon=True)
        self.op, self.keys, self.watched = op, keys, watched
        self.slots = threading.Semaphore(in_flight)
        self.in_flight = in_flight
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done: list[tuple[float, bool]] = []
        self.errors: list[tuple[float, BaseException]] = []

    def _finished(self, watched: bool):
        def callback(f) -> None:
            exc = f.exception()
            if exc is None:
                self.done.append((time.monotonic(), watched))
            else:
                self.errors.append((time.monotonic(), exc))
            self.slots.release()
        return callback

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.slots.acquire(timeout=0.1):
                continue
            key = self.rng.choice(self.keys)
            try:
                f = self.op(key)
            except Exception as e:  # noqa: BLE001 - counted and printed with the series
                self.errors.append((time.monotonic(), e))
                self.slots.release()
                continue
            f.add_done_callback(self._finished(key in self.watched))
        deadline = time.monotonic() + 90
        for _ in range(self.in_flight):  # every outstanding operation finished (or 90 s passed)
            if not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break


def _longest_gap(times: list[float], t0: float, t1: float) -> tuple[float, float]:
    """The longest time in ``[t0, t1]`` without a completion, and when it began (seconds after t0)."""
    points = [t0] + sorted(t for t in times if t0 <= t <= t1) + [t1]
    gap, at = max((b - a, a) for a, b in zip(points, points[1:]))
    return gap, at - t0


def bench_rebalance(workdir: str, args, seed: int) -> dict:
    """4 partitions on 2 groups, a writer and a reader, one partition moved half-way through."""
    from ddia_ray.partitioning import PartitionedStore

    store = PartitionedStore.launch(f"bench-move-{os.getpid()}", partitions=4, groups=2, scheme="hash",
                                    replicas=args.replicas, protocol=args.protocol, engine=args.engine,
                                    root=f"file://{workdir}/move")
    loads: list[_Load] = []
    clients: list = []
    try:
        rng = random.Random(f"move:{seed}")
        keys, value = _keys(rng, args.rebalance_keys), rng.randbytes(VALUE_BYTES)
        pmap = store.partition_map()
        moved = next(p for p in pmap.partitions if p.group == f"{store.name}-g1")
        to = f"{store.name}-g2"
        locator = pmap.locator()
        watched = {k for k in keys if locator.locate(k).id == moved.id}
        try:
            for _ in range(2):
                clients.append(store.client(max_batch=1000, max_in_flight=4, timeout_s=60.0))
            writer_c, reader_c = clients
            version = itertools.count()

            def overwrite(key: bytes):
                """A new value each time (a write during the copy is a difference the catch-up must send)."""
                return writer_c.put_nowait(key, value[:-8] + next(version).to_bytes(8, "big"))

            _pipelined(lambda k: writer_c.put_nowait(k, value), keys, 1000)
            loads = [_Load(overwrite, keys, watched, args.rebalance_in_flight, "w"),
                     _Load(reader_c.get_nowait, keys, watched, args.rebalance_in_flight, "r")]
            t0 = time.monotonic()
            for load in loads:
                load.start()
            time.sleep(args.rebalance_s / 2)
            t_move = time.monotonic()
            report = store.move(moved.id, to)
            t_moved = time.monotonic()
            time.sleep(max(0.0, t0 + args.rebalance_s - time.monotonic(), min(1.0, args.rebalance_s / 4)))
            t_end = time.monotonic()
            for load in loads:
                load.stop.set()
            for load in loads:
                load.join(120)
            # Every key is still there after the move (the writer only overwrote them): a move that
            # lost keys once went unnoticed here, its report saying 152 copied of 24,989.
            missing = sum(v is None for v in reader_c.get_many(keys))
        finally:
            for load in loads:
                load.stop.set()
            for load in loads:
                load.join(120)
            for c in clients:
                c.close()
    finally:
        store.shutdown(destroy_data=True)
    writer, reader = loads
    marks = {"move starts": t_move - t0, "freeze": t_move + report["freeze_at_s"] - t0,
             "switch": t_move + report["switch_at_s"] - t0, "move done": t_moved - t0}
    return {"t0": t0, "t_end": t_end, "writer": writer, "reader": reader, "report": report, "marks": marks,
            "moved": moved.id, "from": moved.group, "to": to, "watched": len(watched), "missing": missing}


def _print_rebalance(r: dict, interval_s: float) -> None:
    t0, t_end, writer, reader, report = r["t0"], r["t_end"], r["writer"], r["reader"], r["report"]
    print(f"\nrebalance: 4 partitions on 2 groups; partition {r['moved']} ({r['watched']:,} of the keys) moved "
          f"from {r['from']} to {r['to']} under load")
    print(f"  move report: {report['copied']:,} keys copied in {report['copy_s']:.2f} s, {report['caught_up']:,} "
          f"caught up while frozen for {report['frozen_s']:.3f} s, {report['total_s']:.2f} s in all "
          f"(the cleanup after the switch included); map version {report['version']}; "
          f"{r['missing']:,} of the {len(writer.keys):,} keys missing afterwards")
    if r["missing"]:
        print(f"  LOST: {r['missing']:,} keys written before the move are not found after it")
    bins = int((t_end - t0) / interval_s) + 1
    w, rd = [0] * bins, [0] * bins
    for series, counts in ((writer.done, w), (reader.done, rd)):
        for t, _ in series:
            if t0 <= t < t_end:
                counts[min(bins - 1, int((t - t0) / interval_s))] += 1
    marks = collections.defaultdict(list)
    for name, at in r["marks"].items():
        marks[min(bins - 1, max(0, int(at / interval_s)))].append(f"{name} ({at:.2f} s)")
    print(f"  {'t (s)':>7} {'writes/s':>10} {'reads/s':>10}")
    for i in range(bins):
        span = min(interval_s, (t_end - t0) - i * interval_s)
        if span < interval_s / 2:  # the last, partial interval: too short to be a rate
            break
        note = "  <- " + ", ".join(marks[i]) if marks[i] else ""
        print(f"  {i * interval_s:7.2f} {w[i] / span:10,.0f} {rd[i] / span:10,.0f}{note}")
    m0, m1 = t0 + r["marks"]["move starts"], t0 + r["marks"]["move done"]
    print(f"  longest gap between two completions (ms, from when), the whole run | during the move "
          f"({m0 - t0:.2f}-{m1 - t0:.2f} s; the freeze lasted {report['frozen_s'] * 1000:.0f} ms):")
    for name, times in (("writes", [t for t, _ in writer.done]),
                        ("writes to the moved partition", [t for t, mine in writer.done if mine]),
                        ("reads", [t for t, _ in reader.done]),
                        ("reads of the moved partition", [t for t, mine in reader.done if mine])):
        (gap, at), (move_gap, move_at) = _longest_gap(times, t0, t_end), _longest_gap(times, m0, m1)
        print(f"    {name:<32} {gap * 1000:7.0f} ms at {at:5.2f} s | {move_gap * 1000:7.0f} ms at "
              f"{m0 - t0 + move_at:5.2f} s")
    for name, load in (("writes", writer), ("reads", reader)):
        if load.errors:
            t, e = load.errors[0]
            print(f"  {len(load.errors)} {name} failed; the first at {t - t0:.2f} s: {type(e).__name__}: {e}")


# --- the report ---------------------------------------------------------------------------------------------


def _busy(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x * 100:.0f}%" + ("!" if x >= CPU_BOUND else "")


def _print_scaling(results: list[dict], cores: int) -> None:
    rows = [("bulk load rows/s", "load"), ("full scan rows/s", "scan"), ("full scan MB/s", "scan_mb"),
            ("random writes/s", "write"), ("point reads/s", "read")]
    base = results[0]
    head = "".join(f"{'N=' + str(r['n']) + ('*' if r['n'] > cores else ''):>24}" for r in results)
    title = f"figure (ratio to N={base['n']}, CPU busy)"
    print(f"\n{title:<32}{head}")
    for label, field in rows:
        if field not in base:
            continue
        cells = []
        for r in results:
            busy = r.get(field.split("_")[0] + "_busy")
            ratio = r[field] / base[field]
            cells.append(f"{r[field]:,.0f} ({ratio:.2f}x, {_busy(busy)})" if field != "scan_mb"
                         else f"{r[field]:,.2f} ({ratio:.2f}x)")
        print(f"{label:<32}" + "".join(f"{c:>24}" for c in cells))
    missing = [r["n"] for r in results if r.get("read_missing")]
    if missing:
        print(f"  reads that found no value (should be none): N={missing}")
    print(f"  CPU busy: the share of the whole machine's CPU time during the phase; '!' marks >= {CPU_BOUND:.0%}: "
          f"that figure is capped by the {cores} cores, not by the store")
    if any(r["n"] > cores for r in results):
        print(f"  *: more partitions (each a replica group of its own actors) than the machine's {cores} cores: "
              f"they share the cores, so the ratio there shows this machine's limit")


def _print_peer(results: list[dict], peer: dict) -> None:
    print(f"\npeer, Ray Data on the same files: read_parquet().materialize() {peer['scan']:,.0f} rows/s "
          f"({peer['scan_mb']:,.2f} MB/s, CPU {_busy(peer['scan_busy'])}); read_parquet().write_parquet() "
          f"{peer['load']:,.0f} rows/s (CPU {_busy(peer['load_busy'])})")
    if not results or "load" not in results[0]:
        return
    print("targets (ratios of this run):")
    for r in results:
        load, scan = r["load"] / peer["load"], r["scan"] / peer["scan"]
        print(f"  N={r['n']}: bulk load vs Ray Data write_parquet {load:.2f}x "
              f"({'meets' if load >= TARGET_LOAD else 'below'} {TARGET_LOAD}x); full scan vs read_parquet "
              f"{scan:.2f}x ({'meets' if scan >= TARGET_SCAN else 'below'} {TARGET_SCAN}x)")


_STARTED = time.monotonic()


def _done(what: str) -> None:
    print(f"{what}: done ({time.monotonic() - _STARTED:.0f} s since the start)", flush=True)


def _parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs: "
                    + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    ap.add_argument("--partitions", default="1,2,4,8", help="partition counts (each on as many groups)")
    ap.add_argument("--rows", type=int, default=500_000, help="rows of the Parquet dataset (bulk load and scan)")
    ap.add_argument("--files", type=int, default=8, help="Parquet files the rows are written to")
    ap.add_argument("--ops", type=int, default=100_000, help="random writes, then as many point reads")
    ap.add_argument("--in-flight", type=int, default=4000)
    ap.add_argument("--replicas", type=int, default=1, help="replicas per group (replication: bench/replication.py)")
    ap.add_argument("--protocol", choices=("raft", "leader-follower"), default="raft")
    ap.add_argument("--engine", choices=("lsm", "btree", "map"), default="lsm")
    ap.add_argument("--bulk-window-s", type=float, default=0.0,
                    help="the LSM's bulk-load window (engine option bulk_window_s; 0: off, the default)")
    ap.add_argument("--load-concurrency", type=int, default=0,
                    help="write_dataset's write tasks at once (0: as many as the CPUs allow)")
    ap.add_argument("--rebalance-s", type=float, default=20.0, help="length of the time series (0: no rebalance)")
    ap.add_argument("--rebalance-keys", type=int, default=100_000, help="keys in the store before the move")
    ap.add_argument("--rebalance-in-flight", type=int, default=256, help="outstanding operations per thread")
    ap.add_argument("--interval-ms", type=float, default=250.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("ours", "peers"), default=None)
    args = ap.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for k, v in QUICK.items():
            if f"--{k.replace('_', '-')}" not in given:
                setattr(args, k, v)
    args.counts = [int(x) for x in args.partitions.split(",")]
    return args


def main(argv=None) -> int:
    """Run our store at each partition count, the rebalance and the peer; print the tables and ratios."""
    args = _parse(argv)
    cores = os.cpu_count() or 1
    print(_machine(), flush=True)
    print(f"workload: {KEY_BYTES}-byte random keys, {VALUE_BYTES}-byte values; Parquet {args.rows:,} rows in "
          f"{args.files} files; {args.ops:,} writes then {args.ops:,} reads, {args.in_flight} in flight; "
          f"partitions {args.counts}, each on its own group of {args.replicas} {args.protocol} replica(s) on "
          f"{args.engine} (the cost of replication is measured in bench/replication.py); reads linearizable "
          f"(the client's default); LSM bulk-load window {args.bulk_window_s or 'off'}", flush=True)
    missing = _ray_data_missing()
    args.no_data = missing is not None
    if missing:
        print(f"skipping the bulk loads, the scans and the peer (Ray Data): {missing}")
    results: list[dict] = []
    peer = rebalance = None
    workdir = tempfile.mkdtemp(prefix="bench-parts-")
    try:
        from ddia_ray.runtime.connect import ensure_ray

        # A Ray of its own unless RAY_ADDRESS names one: not a cluster someone else started with `ray start`.
        ray = ensure_ray(**({} if os.environ.get("RAY_ADDRESS") else {"address": "local"}))
        _done("ray")
        print(f"ray {ray.__version__}: {ray.cluster_resources().get('CPU', 0):.0f} CPUs for tasks (a scan reads "
              f"that many partitions at a time)", flush=True)
        parquet = os.path.join(workdir, "parquet")
        if not args.no_data:
            _quiet_ray_data()
            _write_parquet(parquet, args.rows, args.files, args.seed)
            _warm_up(parquet, workdir)
        _done("data and Ray Data's warm-up")
        if args.only != "ours" and not args.no_data:
            peer = bench_peer(parquet, workdir, args.rows)
            _done("peer (Ray Data)")
        if args.only != "peers":
            for n in args.counts:
                results.append(bench_store(n, workdir, parquet, args, args.seed))
                _done(f"N={n}")
            if args.rebalance_s > 0:
                rebalance = bench_rebalance(workdir, args, args.seed)
                _done("rebalance")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if results:
        _print_scaling(results, cores)
    if peer is not None:
        _print_peer(results, peer)
    if rebalance is not None:
        _print_rebalance(rebalance, args.interval_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
