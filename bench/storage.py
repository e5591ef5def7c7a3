"""Storage engines side by side: ddia-ray's LSM-tree (and B+tree) against RocksDB and SQLite.

Same data for every engine: 16-byte keys, 100-byte values, ``--keys`` of them (1M by default),
inserted in random order. Measured in one run:

* random per-key puts (no fsync per write for anyone: RocksDB's default WAL mode, SQLite in WAL
  mode with synchronous=OFF, the LSM with ``sync="none"``);
* batch ingest of all keys (RocksDB WriteBatch, SQLite executemany in one transaction, the LSM's
  ``ingest`` of a pyarrow table);
* random point reads after a full compaction;
* a full ordered scan;
* the same through the storage-node actor, batched (``put_many``/``get_many`` of 1000, paged scan);
* space amplification after a full compaction (bytes on disk / logical bytes).

Ratios are ops/s of ours divided by RocksDB's (via rocksdict) in the same run.
Run: ``python bench/storage.py [--keys N] [--engines lsm,btree] [--no-actor]``
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import tempfile
import time

KEY_BYTES, VALUE_BYTES = 16, 100


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def _timed(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _data(n: int, seed: int):
    rng = random.Random(seed)
    keys = [rng.randbytes(KEY_BYTES) for _ in range(n)]
    values = [rng.randbytes(VALUE_BYTES) for _ in range(n)]
    reads = [keys[rng.randrange(n)] for _ in range(min(n, 200_000))]
    return keys, values, reads


def bench_rocksdb(path, keys, values, reads) -> dict:
    from rocksdict import Options, Rdict, WriteBatch

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
    out["space_amp"] = _dir_bytes(f"{path}/ingest") / (len(keys) * (KEY_BYTES + VALUE_BYTES))
    return out


def bench_sqlite(path, keys, values, reads) -> dict:
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
    out["space_amp"] = _dir_bytes(path) / (len(keys) * (KEY_BYTES + VALUE_BYTES))
    return out


def bench_ours(engine: str, path, keys, values, reads) -> dict:
    import pyarrow as pa

    from ddia_ray.storage import WriteBatch, open_engine

    opts = {"sync": "none"} if engine == "lsm" else {"sync": False}
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
    out["space_amp"] = _dir_bytes(f"{path}/ingest") / (len(keys) * (KEY_BYTES + VALUE_BYTES))
    return out


def bench_actor(engine: str, path, keys, values, reads) -> dict:
    from ddia_ray.storage.node import StorageNode

    opts = {"sync": "none"} if engine == "lsm" else {"sync": False}
    client = StorageNode.launch(f"bench-{engine}-{os.getpid()}", f"file://{path}/actor", engine=engine, **opts)
    out = {}
    step = 1000

    def puts():
        for i in range(0, len(keys), step):
            client.put_many(zip(keys[i:i + step], values[i:i + step]))

    out["put"] = _timed(len(keys), puts)
    client.compact()
    out["get"] = _timed(len(reads), lambda: [client.get_many(reads[i:i + step]) for i in range(0, len(reads), step)])
    out["scan"] = _timed(len(keys), lambda: sum(1 for _ in client.scan(page_size=10_000)))
    client.close()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--engines", default="lsm,btree")
    ap.add_argument("--no-actor", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    keys, values, reads = _data(args.keys, args.seed)
    results = {}
    root = tempfile.mkdtemp(prefix="ddia-bench-")
    try:
        for name, fn in [("rocksdb", bench_rocksdb), ("sqlite3", bench_sqlite)]:
            d = os.path.join(root, name)
            os.makedirs(d)
            results[name] = fn(d, keys, values, reads)
            print(f"{name}: done", flush=True)
        for engine in args.engines.split(","):
            d = os.path.join(root, engine)
            os.makedirs(d)
            results[engine] = bench_ours(engine, d, keys, values, reads)
            print(f"{engine}: done", flush=True)
            if not args.no_actor:
                results[f"{engine} via actor"] = bench_actor(engine, d, keys, values, reads)
                print(f"{engine} via actor: done", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"{args.keys:,} keys of {KEY_BYTES} B, values of {VALUE_BYTES} B")
    cols = ["put", "ingest", "get", "get_many", "scan"]
    print(f"{'engine':<18}" + "".join(f"{c + ' ops/s':>16}" for c in cols) + f"{'space amp':>11}")
    for name, r in results.items():
        print(f"{name:<18}" + "".join(f"{r[c]:>16,.0f}" if c in r else f"{'-':>16}" for c in cols)
              + (f"{r['space_amp']:>11.2f}" if "space_amp" in r else f"{'-':>11}"))
    base = results["rocksdb"]
    print("\nratios to RocksDB (ops/s ours / rocksdict) and targets:")
    targets = {"put": 1.0, "ingest": 2.0, "get": 0.5, "scan": 1.0}
    for name, r in results.items():
        if name in ("rocksdb", "sqlite3"):
            continue
        parts = []
        for c, target in targets.items():
            if c in r:
                ratio = r[c] / base[c]
                parts.append(f"{c} {ratio:.2f}x ({'meets' if ratio >= target else 'below'} {target}x)")
        if "space_amp" in r:
            parts.append(f"space amp {r['space_amp']:.2f} ({'meets' if r['space_amp'] <= 1.5 else 'above'} 1.5)")
        print(f"  {name}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
