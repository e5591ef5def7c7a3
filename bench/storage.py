"""Storage engines side by side: ddia-ray's LSM-tree (and B+tree) against RocksDB and SQLite.

Two data shapes, both measured in one run, every engine on the same data (16-byte keys,
``--keys`` of them, 1M by default, inserted in random order):

* ``fixed``: 100-byte values; every key read is present.
* ``varied``: values of 50 to 300 bytes (seeded, uniform); half of the point reads ask for
  keys that are absent, so the Bloom filters (ours and RocksDB's) do the work.

Per shape and engine:

* random per-key puts (no fsync per write for anyone: RocksDB's default WAL mode, SQLite in WAL
  mode with synchronous=OFF, the LSM with ``sync="none"``);
* batch ingest of all keys (RocksDB WriteBatch, SQLite executemany in one transaction, the LSM's
  ``ingest`` of a pyarrow table);
* random point reads after a full compaction;
* a full ordered scan;
* the same through the storage-node actor, batched (``put_many``/``get_many`` of 1000), its scan
  measured twice: ``scan`` counts the ``(key, value)`` pairs ``client.scan(page_size=10_000)``
  yields, ``scan_arrow`` the rows of the Arrow record batches ``client.scan_batches()`` yields;
* space amplification after a full compaction (bytes on disk / logical bytes).

The LSM's row cache is sized to hold the data set unless ``--row-cache-mib`` says otherwise
(see :func:`_row_cache_bytes`; RocksDB keeps its files in the OS page cache).

Ratios are ops/s of ours divided by RocksDB's (via rocksdict) on the same shape in the same run.
Run: ``python bench/storage.py [--keys N] [--engines lsm,btree] [--shapes fixed,varied] [--no-actor]
[--no-sqlite] [--row-cache-mib M] [--put-rounds R]``

The per-key put figure is the median of ``1 + --put-rounds`` runs per engine (default 3), the
extra runs alternating RocksDB and ours: one run per engine swung 10% on this VM.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import statistics
import sqlite3
import tempfile
import time
from dataclasses import dataclass

KEY_BYTES, VALUE_BYTES = 16, 100
VARIED_VALUE_BYTES = (50, 300)
READS_MAX = 200_000
TARGETS = {"put": 1.0, "ingest": 2.0, "get": 0.6, "scan": 1.0, "scan_arrow": 1.0}


@dataclass
class Shape:
    """One data set: keys and values to write, keys to read (some maybe absent), and its size."""

    name: str
    keys: list
    values: list
    reads: list
    logical_bytes: int
    describe: str


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def _settle() -> None:
    """Start each engine on an even footing: the previous engine's dirty pages written back
    (otherwise the kernel flushes them during the next engine's puts) and its garbage collected."""
    os.sync()
    gc.collect()


def _timed(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _shape(name: str, n: int, seed: int) -> Shape:
    """The data of shape ``name``; seeded, so every engine (and every run) sees the same bytes."""
    rng = random.Random(f"{name}:{seed}")
    keys = [rng.randbytes(KEY_BYTES) for _ in range(n)]
    if name == "fixed":
        values = [rng.randbytes(VALUE_BYTES) for _ in range(n)]
        reads = [keys[rng.randrange(n)] for _ in range(min(n, READS_MAX))]
        describe = f"values of {VALUE_BYTES} B, every read present"
    elif name == "varied":
        lo, hi = VARIED_VALUE_BYTES
        values = [rng.randbytes(rng.randint(lo, hi)) for _ in range(n)]
        present = set(keys)
        reads = []
        for i in range(min(n, READS_MAX)):
            if i % 2:
                reads.append(keys[rng.randrange(n)])
            else:
                k = rng.randbytes(KEY_BYTES)
                while k in present:  # 2**-128 odds, but "absent" must be exact
                    k = rng.randbytes(KEY_BYTES)
                reads.append(k)
        rng.shuffle(reads)
        describe = f"values of {lo}-{hi} B, half the reads absent"
    else:
        raise SystemExit(f"unknown shape {name!r} (fixed, varied)")
    logical = n * KEY_BYTES + sum(map(len, values))
    return Shape(name, keys, values, reads, logical, describe)


def bench_rocksdb(path, d: Shape) -> dict:
    from rocksdict import Options, Rdict, WriteBatch

    keys, values, reads = d.keys, d.values, d.reads
    out = {}
    db = Rdict(f"{path}/put", Options(raw_mode=True))
    out["put"] = _timed(len(keys), lambda: [db.put(k, v) for k, v in zip(keys, values)])
    db.close()
    db = Rdict(f"{path}/ingest", Options(raw_mode=True))

    def ingest():
        wb = WriteBatch(raw_mode=True)
        for k, v in zip(keys, values):
            wb.put(k, v)
        db.write(wb)

    out["ingest"] = _timed(len(keys), ingest)
    db.compact_range(None, None)
    out["get"] = _timed(len(reads), lambda: [db.get(k) for k in reads])
    out["scan"] = _timed(len(keys), lambda: sum(1 for _ in db.items()))
    db.close()
    out["space_amp"] = _dir_bytes(f"{path}/ingest") / d.logical_bytes
    return out


def bench_sqlite(path, d: Shape) -> dict:
    keys, values, reads = d.keys, d.values, d.reads
    out = {}
    db = sqlite3.connect(f"{path}/db.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
    ins = "INSERT OR REPLACE INTO kv VALUES (?, ?)"
    out["put"] = _timed(len(keys), lambda: [db.execute(ins, (k, v)) for k, v in zip(keys, values)])
    db.execute("DELETE FROM kv")

    def ingest():
        db.execute("BEGIN")
        db.executemany(ins, zip(keys, values))
        db.execute("COMMIT")

    out["ingest"] = _timed(len(keys), ingest)
    db.execute("VACUUM")
    q = "SELECT v FROM kv WHERE k = ?"
    out["get"] = _timed(len(reads), lambda: [db.execute(q, (k,)).fetchone() for k in reads])
    out["scan"] = _timed(len(keys), lambda: sum(1 for _ in db.execute("SELECT k, v FROM kv ORDER BY k")))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    out["space_amp"] = _dir_bytes(path) / d.logical_bytes
    return out


def _options(engine: str, d: Shape, row_cache_mib: int) -> dict:
    """Engine options: no fsync per write; the LSM's row cache sized as ``--row-cache-mib`` says."""
    if engine != "lsm":
        return {"sync": False}
    return {"sync": "none", "row_cache_bytes": _row_cache_bytes(d, row_cache_mib)}


def _row_cache_bytes(d: Shape, row_cache_mib: int) -> int:
    """``row_cache_mib`` MiB, or with 0 ("auto") room for the whole data set (1.5x its logical
    bytes: a cached row costs ~21 B besides its key and value), never below the 128 MiB default.

    RocksDB serves a block cache miss from the OS page cache (a 4 KB block); the LSM serves a
    row-cache miss by reading and decoding a whole row group (~1 ms), so at 1M keys and the
    default 128 MiB its random gets fall ~100x. "auto" compares both with the data in memory.
    """
    if row_cache_mib:
        return row_cache_mib << 20
    return max(128 << 20, int(d.logical_bytes * 1.5))


def bench_ours(engine: str, path, d: Shape, row_cache_mib: int = 0) -> dict:
    import pyarrow as pa

    from ddia_ray.storage import WriteBatch, open_engine

    keys, values, reads = d.keys, d.values, d.reads
    opts = _options(engine, d, row_cache_mib)
    out = {}
    db = open_engine(f"file://{path}/put", engine, **opts)
    out["put"] = _timed(len(keys), lambda: [db.put(k, v) for k, v in zip(keys, values)])
    db.close()
    db = open_engine(f"file://{path}/ingest", engine, **opts)
    if hasattr(db, "ingest"):
        table = pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array(values, pa.binary())})
        out["ingest"] = _timed(len(keys), lambda: db.ingest(table))
    else:
        def ingest():
            wb = WriteBatch()
            for k, v in zip(keys, values):
                wb.put(k, v)
            db.write(wb)
        out["ingest"] = _timed(len(keys), ingest)
    db.compact()
    many = getattr(db, "get_many", None)
    out["get"] = _timed(len(reads), lambda: [db.get(k) for k in reads])
    if many is not None:
        out["get_many"] = _timed(len(reads), lambda: many(reads))
    out["scan"] = _timed(len(keys), lambda: sum(1 for _ in db.scan()))
    db.close()
    out["space_amp"] = _dir_bytes(f"{path}/ingest") / d.logical_bytes
    return out


def put_rocksdb(path, d: Shape) -> float:
    """Per-key puts into a fresh RocksDB at ``path``: ops/s."""
    from rocksdict import Options, Rdict

    db = Rdict(path, Options(raw_mode=True))
    rate = _timed(len(d.keys), lambda: [db.put(k, v) for k, v in zip(d.keys, d.values)])
    db.close()
    return rate


def put_ours(engine: str, path, d: Shape, row_cache_mib: int = 0) -> float:
    """Per-key puts into a fresh engine of ours at ``path``: ops/s (close included for neither)."""
    from ddia_ray.storage import open_engine

    db = open_engine(f"file://{path}", engine, **_options(engine, d, row_cache_mib))
    rate = _timed(len(d.keys), lambda: [db.put(k, v) for k, v in zip(d.keys, d.values)])
    db.close()
    return rate


def repeat_puts(per: dict, root: str, d: Shape, engines: list, rounds: int, row_cache_mib: int) -> None:
    """``rounds`` more per-key put runs of RocksDB and of each engine, alternated, so that the
    VM's slow phases (its first-touch memory cost, the kernel's writeback) fall on both sides;
    ``per[name]["put"]`` becomes the median of every run and ``put_runs`` keeps them all."""
    runners = [("rocksdb", lambda path: put_rocksdb(path, d))]
    runners += [(e, lambda path, e=e: put_ours(e, path, d, row_cache_mib)) for e in engines]
    for name, _ in runners:
        per[name]["put_runs"] = [per[name]["put"]]
    for i in range(rounds):
        for name, run in (runners if i % 2 else runners[::-1]):
            path = os.path.join(root, f"put-{name}-{i}")
            _settle()
            per[name]["put_runs"].append(run(path))
            shutil.rmtree(path, ignore_errors=True)
    for name, _ in runners:
        per[name]["put"] = statistics.median(per[name]["put_runs"])


def _warm_up_ray(root: str) -> None:
    """Start Ray and one throwaway LSM storage node before the first timed actor run, and write
    ~300 MiB through it. Ray's own start (its processes, the first worker) would otherwise fall
    inside the first shape's figures, and so would this VM's cost of touching memory no process
    has touched before (~10 ms per MiB, see storage-engines.md): the first actor run's puts
    measured 85,000-92,000/s against 160,000-175,000/s for the same run repeated."""
    from ddia_ray.storage.node import StorageNode

    rng = random.Random(0)
    value = rng.randbytes(1000)
    with StorageNode.launch(f"bench-warm-up-{os.getpid()}", f"file://{root}/warm-up", engine="lsm",
                            sync="none") as node:
        client = node.client()
        for _ in range(300):
            client.put_many((rng.randbytes(KEY_BYTES), value) for _ in range(1000))
        list(client.scan_batches())
        client.close()
    shutil.rmtree(f"{root}/warm-up", ignore_errors=True)


def bench_actor(engine: str, path, d: Shape, row_cache_mib: int = 0) -> dict:
    from ddia_ray.storage.node import StorageNode

    keys, values, reads = d.keys, d.values, d.reads
    opts = _options(engine, d, row_cache_mib)
    node = StorageNode.launch(f"bench-{engine}-{d.name}-{os.getpid()}", f"file://{path}/actor",
                              engine=engine, **opts)
    client = node.client()
    out = {}
    step = 1000

    def puts():
        for i in range(0, len(keys), step):
            client.put_many(zip(keys[i:i + step], values[i:i + step]))

    try:
        out["put"] = _timed(len(keys), puts)
        client.compact()
        out["get"] = _timed(len(reads), lambda: [client.get_many(reads[i:i + step])
                                                 for i in range(0, len(reads), step)])
        out["scan"] = _timed(len(keys), lambda: sum(1 for _ in client.scan(page_size=10_000)))
        rows = []
        out["scan_arrow"] = _timed(len(keys), lambda: rows.append(sum(b.num_rows for b in client.scan_batches())))
        if rows[0] != len(keys):
            raise SystemExit(f"the Arrow scan returned {rows[0]} rows of {len(keys)}")
    finally:
        client.close()
        node.shutdown()
    return out


def _print(results: dict, shapes: dict, n: int, row_cache_mib: int) -> None:
    cols = ["put", "ingest", "get", "get_many", "scan", "scan_arrow"]
    for shape, per_engine in results.items():
        cache = _row_cache_bytes(shapes[shape], row_cache_mib) >> 20
        print(f"\nshape {shape}: {n:,} keys of {KEY_BYTES} B, {shapes[shape].describe}; "
              f"LSM row cache {cache} MiB{' (auto)' if not row_cache_mib else ''}")
        print(f"{'engine':<18}" + "".join(f"{c + ' ops/s':>17}" for c in cols) + f"{'space amp':>11}")
        for name, r in per_engine.items():
            print(f"{name:<18}" + "".join(f"{r[c]:>17,.0f}" if c in r else f"{'-':>17}" for c in cols)
                  + (f"{r['space_amp']:>11.2f}" if "space_amp" in r else f"{'-':>11}"))
    for shape, per_engine in results.items():
        for name, r in per_engine.items():
            if "put_runs" in r:
                runs = ", ".join(f"{x:,.0f}" for x in r["put_runs"])
                print(f"  [{shape}] {name} per-key put runs (median above): {runs}")
    print("\nratios to RocksDB on the same shape (ops/s ours / rocksdict) and targets "
          "(actor scans against RocksDB's local scan):")
    for shape, per_engine in results.items():
        base = per_engine["rocksdb"]
        for name, r in per_engine.items():
            if name in ("rocksdb", "sqlite3"):
                continue
            parts = []
            for c, target in TARGETS.items():
                if c in r:
                    ratio = r[c] / base["scan" if c == "scan_arrow" else c]
                    parts.append(f"{c} {ratio:.2f}x ({'meets' if ratio >= target else 'below'} {target}x)")
            if "space_amp" in r:
                parts.append(f"space amp {r['space_amp']:.2f} ({'meets' if r['space_amp'] <= 1.5 else 'above'} 1.5)")
            print(f"  [{shape}] {name}: " + ", ".join(parts))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--engines", default="lsm,btree")
    ap.add_argument("--shapes", default="fixed,varied")
    ap.add_argument("--no-actor", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--put-rounds", type=int, default=2,
                    help="extra alternated per-key put runs per engine; the put figure is the median")
    ap.add_argument("--row-cache-mib", type=int, default=0,
                    help="the LSM's row cache; 0 (default): room for the data set, at least 128")
    args = ap.parse_args(argv)
    shapes = {name: _shape(name, args.keys, args.seed) for name in args.shapes.split(",")}
    results: dict = {}
    baselines = [("rocksdb", bench_rocksdb)] + ([] if args.no_sqlite else [("sqlite3", bench_sqlite)])
    root = tempfile.mkdtemp(prefix="ddia-bench-")
    try:
        # Every local measurement first, the actor ones last: the Ray processes that the first
        # actor run starts (raylet, GCS, dashboard) take CPU on a 2-core machine, and would
        # otherwise run beside the local figures of whichever engines come after it.
        for shape, d in shapes.items():
            per = results[shape] = {}
            for name, fn in baselines:
                path = os.path.join(root, shape, name)
                os.makedirs(path)
                _settle()
                per[name] = fn(path, d)
                print(f"[{shape}] {name}: done", flush=True)
            for engine in args.engines.split(","):
                path = os.path.join(root, shape, engine)
                os.makedirs(path)
                _settle()
                per[engine] = bench_ours(engine, path, d, args.row_cache_mib)
                print(f"[{shape}] {engine}: done", flush=True)
            if args.put_rounds:
                repeat_puts(per, os.path.join(root, shape), d, args.engines.split(","),
                            args.put_rounds, args.row_cache_mib)
                print(f"[{shape}] put rounds: done", flush=True)
        if not args.no_actor:
            _warm_up_ray(root)
        for shape, d in ([] if args.no_actor else shapes.items()):
            for engine in args.engines.split(","):
                _settle()
                results[shape][f"{engine} via actor"] = bench_actor(
                    engine, os.path.join(root, shape, engine), d, args.row_cache_mib)
                print(f"[{shape}] {engine} via actor: done", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    _print(results, shapes, args.keys, args.row_cache_mib)


if __name__ == "__main__":
    main()
