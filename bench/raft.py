"""RaftKV against PySyncObj, side by side in one run: 3 members each, same payload, durable logs.

Measured for both:

* **throughput**: ``--ops`` writes (16-byte keys, ``--payload-bytes`` values) with ``--in-flight``
  of them outstanding at any time, from one client;
* **latency**: ``--blocking-ops`` single blocking writes, one after the other (p50 and p99).

RaftKV runs as three Ray actors (node shells) on this machine with their records on local disk
(written to the OS before any message depending on them is sent, as PySyncObj's journal is; see
``bench/raft_peers.py`` for how PySyncObj is set up). Targets: throughput >= 2x
PySyncObj, blocking write p50 <= 10 ms.

The replicated store's Raft protocol (RaftKV's member core with its state in the LSM,
``ReplicatedStore.launch(protocol="raft", engine="lsm")``) is measured the same way, target >= 2x
PySyncObj too.

Run: ``python bench/raft.py [--ops N] [--in-flight N] [--blocking-ops N] [--payload-bytes N] [--tick-s S] [--fsync]``
(needs ``pip install -e '.[bench]'`` for pysyncobj).
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _measure(c, *, payload_bytes: int, ops: int, in_flight: int, blocking_ops: int) -> dict:
    """Throughput with ``in_flight`` writes outstanding, then latency of blocking writes, on client ``c``
    (anything with ``put_nowait`` returning futures and a blocking ``put``; bench/replication.py uses it
    too)."""
    value = b"v" * payload_bytes
    for f in [c.put_nowait(b"warmup%09d" % i, value) for i in range(2000)]:
        f.result(60)
    window: collections.deque = collections.deque()
    t0 = time.perf_counter()
    for i in range(ops):
        if len(window) >= in_flight:
            window.popleft().result(60)
        window.append(c.put_nowait(b"key-%012d" % i, value))  # 16-byte keys
    for f in window:
        f.result(60)
    throughput = ops / (time.perf_counter() - t0)
    lat = []
    for i in range(blocking_ops):
        t = time.perf_counter()
        c.put(b"blk-%012d" % i, value)
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"throughput_ops_s": throughput, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def _run(launch, client_options: dict, **load) -> dict:
    """Start a three-member group with ``launch()``, measure it with :func:`_measure`, shut it down."""
    group = launch()
    try:
        group.leader()
        with group.client(**client_options) as c:
            return _measure(c, **load)
    finally:
        group.shutdown(destroy_data=True)


def bench_raftkv(*, workdir: str, tick_s: float, sync: bool = False, **load) -> dict:
    """RaftKV (its state a dict), three members."""
    from ddia_ray.kv import RaftKV

    return _run(lambda: RaftKV.launch(3, root=f"file://{workdir}", tick_s=tick_s, sync=sync),
                {"max_batch": 1000, "max_in_flight_batches": 4}, **load)


def bench_raft_store(*, workdir: str, tick_s: float, sync: bool = False, **load) -> dict:
    """The replicated store's Raft protocol: RaftKV's member core with its state in the LSM."""
    from ddia_ray.replication import ReplicatedStore

    return _run(lambda: ReplicatedStore.launch(replicas=3, protocol="raft", engine="lsm", root=f"file://{workdir}",
                                               tick_s=tick_s, sync=sync),
                {"max_batch": 1000, "max_in_flight": 4}, **load)


def main(argv=None) -> None:
    """Run both systems and print the table and the ratios against the targets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--in-flight", type=int, default=1000)
    ap.add_argument("--blocking-ops", type=int, default=1000)
    ap.add_argument("--payload-bytes", type=int, default=100)
    ap.add_argument("--tick-s", type=float, default=0.02, help="RaftKV tick (heartbeat every 2 ticks)")
    ap.add_argument("--fsync", action="store_true",
                    help="both fsync their logs before acknowledging (RaftKV sync=True, PySyncObj's fsync variant)")
    args = ap.parse_args(argv)
    from raft_peers import bench_pysyncobj

    root = tempfile.mkdtemp(prefix="ddia-raft-bench-")
    try:
        common = {"payload_bytes": args.payload_bytes, "ops": args.ops, "in_flight": args.in_flight,
                  "blocking_ops": args.blocking_ops}
        os.makedirs(os.path.join(root, "pysyncobj"))
        peer = bench_pysyncobj(**common, workdir=os.path.join(root, "pysyncobj"), fsync=args.fsync)
        print("pysyncobj: done", flush=True)
        ours = bench_raftkv(**common, workdir=os.path.join(root, "raftkv"), tick_s=args.tick_s, sync=args.fsync)
        print("raftkv: done", flush=True)
        store = bench_raft_store(**common, workdir=os.path.join(root, "store"), tick_s=args.tick_s, sync=args.fsync)
        print("raft store (LSM): done", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"3 members each, {args.payload_bytes} B values, {args.ops:,} writes with {args.in_flight} in flight, "
          f"{args.blocking_ops:,} blocking writes; logs {'fsynced' if args.fsync else 'written to the OS, not fsynced'}")
    print(f"{'system':<12}{'throughput ops/s':>18}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in (("pysyncobj", peer), ("raftkv", ours), ("raft store", store)):
        print(f"{name:<12}{r['throughput_ops_s']:>18,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    for name, r in (("raftkv", ours), ("raft store (LSM)", store)):
        ratio = r["throughput_ops_s"] / peer["throughput_ops_s"]
        print(f"throughput ratio {name} / pysyncobj: {ratio:.2f}x ({'meets' if ratio >= 2 else 'below'} 2x); "
              f"blocking write p50 {r['p50_ms']:.2f} ms ({'meets' if r['p50_ms'] <= 10 else 'above'} 10 ms)")


if __name__ == "__main__":
    main()
