"""Replicated writes: our store in each mode against etcd and Redis, in one run, on this machine.

Measured for every system, with 16-byte keys and 100-byte values:

* **throughput**: ``--ops`` writes from one client with up to ``--in-flight`` outstanding;
* **latency**: ``--blocking-ops`` blocking writes one after the other, p50 and p99;
* **batched throughput** (the replicated stores): ``--batched-ops`` writes as ``write_nowait``
  of :class:`~ddia_ray.storage.WriteBatch` es of ``--batch`` puts, 4 batches in flight: the user's
  batches, as Redis's pipelines of 1,000 ``SET`` s are (Redis's pipelined runs send the same count).

Our side: one unreplicated storage node (the LSM behind one actor: the cost of replication is
the difference to it), the leader-follower store in ``async``, ``semi-sync`` (1 of 2 followers)
and ``sync`` mode (3 replicas on the LSM, plus the 3-member coordination service), the store's
Raft protocol (3 members on the LSM), and RaftKV (3 members, a dict) for reference. All keep
their logs on local disk without fsync per write (the OS has them before anything depending on
them is sent), like Redis without ``appendfsync always``; etcd fsyncs by default and is measured
both ways.

Peers (``bench/replication_peers.py``): etcd with 3 members on loopback, driven over gRPC;
Redis, a leader and one replica, pipelined ``SET`` and ``SET`` + ``WAIT 1`` per pipeline. A
peer whose package is missing is skipped with the reason.

Targets, as ratios of this run: Raft throughput >= 3x etcd and blocking p50 <= 2x etcd's; async
leader-follower throughput >= 2x Redis pipelined ``SET``; sync >= 1x Redis with ``WAIT``. Both
leader-follower ratios are printed for single writes with futures in flight (the client batches
them) and for the user's own batches.

Run: ``python bench/replication.py [--ops N] [--in-flight N] [--blocking-ops N] [--batch N]
[--batched-ops N] [--only ours|peers]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VALUE = b"v" * 100  # and bench/raft.py's 16-byte keys, b"key-%012d" % i


class _Adapter:
    """The storage node's client as bench/raft.py's ``_measure`` drives clients (``put_nowait``)."""

    def __init__(self, client):
        self.put_nowait, self.put = client.put_future, client.put


def _drive(client, *, ops: int, in_flight: int, blocking_ops: int) -> dict:
    """bench/raft.py's measurement (warm-up, throughput with futures in flight, blocking latency)."""
    from raft import _measure

    r = _measure(client, payload_bytes=len(VALUE), ops=ops, in_flight=in_flight, blocking_ops=blocking_ops)
    return {"ops_per_s": r["throughput_ops_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}


def bench_node(workdir: str, **kw) -> dict:
    """One storage node (LSM) behind one actor: no replication at all."""
    from ddia_ray.storage import StorageNode

    node = StorageNode.launch(f"bench-node-{os.getpid()}", f"file://{workdir}/node")
    try:
        c = node.client(max_batch=1000)
        try:
            return _drive(_Adapter(c), **kw)
        finally:
            c.close()
    finally:
        node.shutdown(destroy_data=True)


def _batched(client, *, ops: int, batch: int, in_flight: int = 4) -> float:
    """Writes/s of ``ops`` puts sent as ``write_nowait`` batches of ``batch``, ``in_flight`` outstanding."""
    import collections
    import time

    from ddia_ray.storage import WriteBatch

    window: collections.deque = collections.deque()
    t0 = time.perf_counter()
    for start in range(0, ops, batch):
        if len(window) >= in_flight:
            window.popleft().result(60)
        b = WriteBatch()
        for i in range(start, min(ops, start + batch)):
            b.put(b"bat-%012d" % i, VALUE)  # 16-byte keys
        window.append(client.write_nowait(b))
    for f in window:
        f.result(60)
    return ops / (time.perf_counter() - t0)


def bench_store(workdir: str, mode: str, *, batch: int = 1000, batched_ops: int = 2_000_000, **kw) -> dict:
    """Three replicas on the LSM: leader-follower in ``mode``, or the Raft protocol (``mode="raft"``)."""
    from ddia_ray.replication import ReplicatedStore

    if mode == "raft":
        store = ReplicatedStore.launch(replicas=3, protocol="raft", engine="lsm", root=f"file://{workdir}/{mode}")
    else:
        store = ReplicatedStore.launch(replicas=3, mode=mode, engine="lsm", root=f"file://{workdir}/{mode}")
    try:
        store.leader()
        with store.client(max_batch=1000, max_in_flight=4) as c:
            out = _drive(c, **kw)
            out["batched_ops_per_s"] = _batched(c, ops=batched_ops, batch=batch)
        st = store.stats()
        out["max_lag_entries"] = max((v["entries"] or 0 for v in st["lag"].values()), default=0)
        return out
    finally:
        store.shutdown(destroy_data=True)


def bench_raftkv(workdir: str, **kw) -> dict:
    """RaftKV, three members (its state a dict): the Raft core without the engine."""
    from ddia_ray.kv import RaftKV

    kv = RaftKV.launch(3, root=f"file://{workdir}/raft")
    try:
        kv.leader()
        with kv.client(max_batch=1000, max_in_flight_batches=4) as c:
            return _drive(c, **kw)
    finally:
        kv.shutdown(destroy_data=True)


def bench_peers(*, ops: int, in_flight: int, blocking_ops: int, pipelined_ops: int = 400_000) -> dict:
    """etcd (fsync and no fsync) and Redis (pipelined, with and without WAIT 1)."""
    import replication_peers as peers

    out: dict = {}
    reason = peers.etcd_missing()
    if reason:
        print(f"skipping etcd: {reason}")
    else:
        for fsync in (True, False):
            with peers.EtcdCluster(members=3, fsync=fsync) as etcd:
                t = etcd.write_throughput(ops=ops, in_flight=in_flight, seed=0)
                lat = etcd.blocking_latency(ops=blocking_ops, seed=0)
            out[f"etcd ({'fsync' if fsync else 'no fsync'})"] = {"ops_per_s": t["ops_per_s"], "p50_ms": lat["p50_ms"],
                                                                  "p99_ms": lat["p99_ms"]}
    reason = peers.redis_missing()
    if reason:
        print(f"skipping redis: {reason}")
    else:
        with peers.RedisPair() as redis:
            for wait in (False, True):
                t = redis.pipelined_set(ops=pipelined_ops, pipeline=1000, wait=wait)
                lat = redis.blocking_latency(ops=blocking_ops, wait=wait)
                out[f"redis {'SET + WAIT 1' if wait else 'SET'}"] = {"ops_per_s": t["ops_per_s"],
                                                                      "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}
    return out


def _ratio(a: dict, b: dict | None, field: str) -> str:
    if not b or not b.get(field):
        return "n/a (peer skipped)"
    return f"{a[field] / b[field]:.2f}x"


def main(argv=None) -> int:
    """Run every system, print one table and the target ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=4000)
    parser.add_argument("--blocking-ops", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000, help="puts per WriteBatch in the batched runs")
    parser.add_argument("--batched-ops", type=int, default=2_000_000,
                        help="writes of the batched runs and of Redis's pipelines (a few seconds each: a run "
                             "of under a second was decided by whether one flush or failover fell into it)")
    parser.add_argument("--only", choices=("ours", "peers"), default=None)
    args = parser.parse_args(argv)
    kw = {"ops": args.ops, "in_flight": args.in_flight, "blocking_ops": args.blocking_ops}
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"workload: {args.ops} writes, {args.in_flight} in flight; {args.blocking_ops} blocking writes; "
          f"16-byte keys, 100-byte values; {args.batched_ops} writes in batches and in Redis's pipelines")
    results: dict = {}
    workdir = tempfile.mkdtemp(prefix="bench-repl-")
    try:
        if args.only != "peers":
            from ddia_ray.runtime.connect import ensure_ray

            ensure_ray()
            results["storage node (1 replica)"] = bench_node(workdir, **kw)
            for mode in ("async", "semi-sync", "sync"):
                results[f"leader-follower {mode}"] = bench_store(workdir, mode, batch=args.batch,
                                                                 batched_ops=args.batched_ops, **kw)
            results["raft (store, LSM)"] = bench_store(workdir, "raft", batch=args.batch,
                                                       batched_ops=args.batched_ops, **kw)
            results["RaftKV (dict)"] = bench_raftkv(workdir, **kw)
        if args.only != "ours":
            results.update(bench_peers(pipelined_ops=args.batched_ops, **kw))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'system':32} {'writes/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'batched writes/s':>17}")
    for name, r in results.items():
        batched = f"{r['batched_ops_per_s']:17,.0f}" if "batched_ops_per_s" in r else f"{'':>17}"
        print(f"{name:32} {r['ops_per_s']:12,.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {batched}")
    if args.only is None:
        raft, etcd = results.get("raft (store, LSM)"), results.get("etcd (fsync)")
        print("\ntargets (ratios of this run):")
        if raft:
            print(f"  raft throughput vs etcd (fsync)         {_ratio(raft, etcd, 'ops_per_s')}  (target >= 3x)")
            print(f"  raft throughput vs etcd (no fsync)      "
                  f"{_ratio(raft, results.get('etcd (no fsync)'), 'ops_per_s')}")
            print(f"  raft blocking p50 vs etcd (fsync)       {_ratio(raft, etcd, 'p50_ms')}  (target <= 2x)")
        lf_async, lf_sync = results["leader-follower async"], results["leader-follower sync"]
        redis, redis_wait = results.get("redis SET"), results.get("redis SET + WAIT 1")
        # The targets compare like with like: the user's batches against Redis's pipelines (of --batch).
        print(f"  async throughput vs redis SET           {_ratio(lf_async, redis, 'ops_per_s')}  (single writes)")
        print(f"    with batches of {args.batch:<5}               "
              f"{_ratio({'x': lf_async['batched_ops_per_s']}, redis and {'x': redis['ops_per_s']}, 'x')}"
              f"  (target >= 2x)")
        print(f"  sync throughput vs redis SET + WAIT 1   {_ratio(lf_sync, redis_wait, 'ops_per_s')}  (single writes)")
        print(f"    with batches of {args.batch:<5}               "
              f"{_ratio({'x': lf_sync['batched_ops_per_s']}, redis_wait and {'x': redis_wait['ops_per_s']}, 'x')}"
              f"  (target >= 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
