"""The event store against pyeventsourcing (SQLite, PostgreSQL) and Redis Streams, in one run.

Workloads (100-byte payloads; the peers run the same ones, ``bench/events_peers.py``):

* **single appends**: 2,000 appends of one event each, one after the other, each to stream
  ``s-<i % 200>`` with the exact expected version (latency-bound: one Raft commit each);
* **batched appends**: 20,000 events in appends of 100 events, each to its own new stream. Ours
  sends every append as a future (``append_nowait``) and waits for all: the client packs the
  waiting appends into the replicated log's entries, each append still atomic and checked on its
  own (the peers' equivalents: one ``insert_events`` per batch; a pipeline of 100 ``XADD`` s);
* **stream reads**: 200 streams of 100 events, each read whole, one after the other (latency-bound:
  one round trip each);
* **stream reads, batched**: the same 200 streams read by one ``read_streams`` call, which sends
  them as a few batch queries at once (the peers: pyeventsourcing has no read of many streams, so
  its figure is its one-after-the-other loop; Redis: a pipeline of 200 ``XRANGE``, one round trip);
* **$all reads**: every event from position 0 in pages of 1,000;
* **subscription delivery**: a catch-up subscription over 20,000 events from position 0 in
  pages of 1,000 (Redis: ``XREADGROUP COUNT 1000`` and ``XACK``); and our consumer group
  (per batch of 1,000, one call to the leader that acks the last batch and answers the next
  one's events), the same shape as Redis's group. The group lets 5,000
  events be in flight, so the consumer pulls four batches ahead while it handles one
  (``prefetch=4``; the library's default is 2, which leaves a group's room to competing
  consumers). Redis bounds nothing: its pending list grows with every unacked read.

Ours: ``EventStore.launch(replicas=3)`` (Raft, the LSM engine on local disk, no fsync per write:
the OS has the log before anything depending on it is sent). Targets, as ratios of this run:
batched appends >= 10x pyeventsourcing/SQLite and >= 1x Redis pipelined ``XADD``; stream reads
>= 1x pyeventsourcing/SQLite (ours batched against its loop: what each offers for reading many
streams; ours one after the other is printed too); subscription delivery >= 1x Redis ``XREADGROUP``.

Run: ``python bench/events.py [--only ours|peers] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PAYLOAD_BYTES = 100


def _payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(PAYLOAD_BYTES) for _ in range(n)]


_settle = [lambda: None]  # set by bench_ours: waits until every member has applied every entry


def _fill(client, prefix: str, streams: int, per_stream: int, seed: int) -> None:
    """``streams`` streams of ``per_stream`` events, appended as futures; then waits for the members
    to apply them all, so a read workload does not pay for the fill's tail (a follower catching up
    and the engines flushing take the same two cores)."""
    from ddia_ray.events.records import NO_STREAM, EventData

    data = _payloads(streams * per_stream, seed)
    futures = []
    for s in range(streams):
        events = [EventData(f"{prefix}{s}-{i}", "Bench", data[s * per_stream + i]) for i in range(per_stream)]
        futures.append(client.append_nowait(f"{prefix}{s}", events, NO_STREAM))
    for f in futures:
        f.result(120)
    _settle[0]()


def _wait_applied(es, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        applied = [st["applied"] for st in es.store.status().values()]
        if len(applied) == len(es.members) and len(set(applied)) == 1:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # and the engines' flushes that the last entries started


def _single_appends(client, seed: int) -> dict:
    from ddia_ray.events.records import NO_STREAM, EventData

    data = _payloads(2000, seed)
    versions: dict[str, int] = {}
    t = time.perf_counter()
    for i, payload in enumerate(data):
        stream = f"single{seed}-{i % 200}"
        r = client.append(stream, [EventData(f"single{seed}-{i}", "Bench", payload)], versions.get(stream, NO_STREAM))
        versions[stream] = r.next_expected_version
    dt = time.perf_counter() - t
    return {"events_per_s": len(data) / dt, "events": len(data)}


def _batched_appends(client, seed: int) -> dict:
    from ddia_ray.events.records import NO_STREAM, EventData

    data = _payloads(20_000, seed)
    batches = [[EventData(f"batch{seed}-{b}-{i}", "Bench", data[b * 100 + i]) for i in range(100)] for b in range(200)]
    t = time.perf_counter()
    futures = [client.append_nowait(f"batch{seed}-{b}", events, NO_STREAM) for b, events in enumerate(batches)]
    for f in futures:
        f.result(120)
    dt = time.perf_counter() - t
    return {"events_per_s": 20_000 / dt, "events": 20_000, "appends": 200}


def _stream_reads(client, seed: int) -> dict:
    _fill(client, f"read{seed}-", 200, 100, seed)
    t = time.perf_counter()
    n = 0
    for s in range(200):
        n += len(client.read_stream(f"read{seed}-{s}"))
    dt = time.perf_counter() - t
    assert n == 20_000, n
    return {"events_per_s": n / dt, "events": n}


def _stream_reads_batched(client, seed: int) -> dict:
    _fill(client, f"readb{seed}-", 200, 100, seed)
    names = [f"readb{seed}-{s}" for s in range(200)]
    t = time.perf_counter()
    got = client.read_streams(names)
    dt = time.perf_counter() - t
    n = sum(len(events) for events in got.values())
    assert n == 20_000 and all(len(got[s]) == 100 for s in names), n
    return {"events_per_s": n / dt, "events": n}


def _all_reads(client, seed: int) -> dict:
    t = time.perf_counter()
    n = sum(len(rows) for rows, _, _ in client.pages_all(0, page=1000))
    dt = time.perf_counter() - t
    return {"events_per_s": n / dt, "events": n}


def _subscription_delivery(client, seed: int) -> dict:
    from ddia_ray.events.subscription import CatchUpSubscription

    start = client.read_all_page(-1, backward=True, page=1)[0]
    first = start[0][2] + 1 if start else 0
    _fill(client, f"sub{seed}-", 200, 100, seed)
    sub = CatchUpSubscription(client, from_position=first, page=1000)
    got = [0]

    def count(_event) -> None:
        got[0] += 1

    t = time.perf_counter()
    sub.run(count, until=lambda: got[0] >= 20_000, timeout_s=300)
    dt = time.perf_counter() - t
    return {"events_per_s": got[0] / dt, "events": got[0]}


def _group_delivery(client, seed: int) -> dict:
    from ddia_ray.events.persistent import ConsumerGroups, PersistentSubscription

    start = client.read_all_page(-1, backward=True, page=1)[0]
    first = start[0][2] + 1 if start else 0
    _fill(client, f"grp{seed}-", 200, 100, seed)
    groups = ConsumerGroups(client)
    groups.create(f"bench{seed}", from_position=first, max_in_flight=5000)
    consumer = PersistentSubscription(client, f"bench{seed}", "c1", batch=1000, prefetch=4)
    t = time.perf_counter()
    n = consumer.run(lambda e: None, until=lambda: consumer.handled >= 20_000, timeout_s=300)
    dt = time.perf_counter() - t
    return {"events_per_s": n / dt, "events": n}


WORKLOADS = {"single_appends": _single_appends, "batched_appends": _batched_appends, "stream_reads": _stream_reads,
             "stream_reads_batched": _stream_reads_batched, "all_reads": _all_reads,
             "subscription_delivery": _subscription_delivery, "group_delivery": _group_delivery}


def bench_ours(*, repeats: int = 3) -> dict:
    """Each workload ``repeats`` times on one event store (3 Raft members, LSM); the median run's figures."""
    from ddia_ray.events.store import EventStore

    workdir = tempfile.mkdtemp(prefix="bench-events-")
    es = EventStore.launch(replicas=3, root=f"file://{workdir}")
    _settle[0] = lambda: _wait_applied(es)
    try:
        with es.client(timeout_s=120) as c:
            _freeze_heap()
            out = {}
            for name, fn in WORKLOADS.items():
                runs = sorted((fn(c, seed) for seed in range(repeats)), key=lambda r: r["events_per_s"])
                out[name] = runs[len(runs) // 2]
            return out
    finally:
        es.shutdown(destroy_data=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _freeze_heap() -> None:
    """Take every object this driver holds now (Ray's, the peers' clients', the modules') out of
    the garbage collector's full collections (``gc.freeze``), for ours and the peers alike: with
    Ray loaded, one full collection took 48-52 ms here and landed in some runs and not others,
    which made the figures of both sides bimodal (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["ours", "peers"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload; the median is reported")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    ours = bench_ours(repeats=args.repeats) if args.only != "peers" else {}
    peers: dict = {}
    if args.only != "ours":
        import events_peers

        _freeze_heap()
        for peer, result in events_peers.bench_all_peers(repeats=args.repeats).items():
            peers[peer] = result if isinstance(result, str) else result["workloads"]
    systems = {"ours (Raft x3, LSM)": ours, **peers} if ours else dict(peers)
    names = list(WORKLOADS)
    print(f"\n{'events/s':<32}" + "".join(f"{n:>24}" for n in names))
    for system, figures in systems.items():
        if isinstance(figures, str):
            print(f"{system:<32}skipped: {figures}")
            continue
        print(f"{system:<32}" + "".join(f"{_fmt((figures.get(n) or {}).get('events_per_s')):>24}" for n in names))
    if ours and peers:
        print("\ntargets (ratios of this run):")
        for workload, peer, want in (("batched_appends", "pyes-sqlite", 10.0),
                                     ("batched_appends", "redis-streams", 1.0),
                                     ("stream_reads_batched", "pyes-sqlite", 1.0),
                                     ("stream_reads", "pyes-sqlite", None),
                                     ("stream_reads_batched", "redis-streams", None),
                                     ("subscription_delivery", "redis-streams", 1.0),
                                     ("group_delivery", "redis-streams", 1.0)):
            theirs = peers.get(peer)
            peer_workload = {"group_delivery": "subscription_delivery"}.get(workload, workload)
            if workload == "stream_reads_batched" and peer == "pyes-sqlite":
                peer_workload = "stream_reads"  # it has no read of many streams: its loop is its way
            if not isinstance(theirs, dict) or peer_workload not in theirs:
                reason = theirs if isinstance(theirs, str) else "not measured"
                print(f"  {workload} vs {peer}: skipped ({reason})")
                continue
            ratio = ours[workload]["events_per_s"] / theirs[peer_workload]["events_per_s"]
            if want is None:
                print(f"  {workload} vs {peer}: {ratio:.2f}x (no target)")
            else:
                print(f"  {workload} vs {peer}: {ratio:.2f}x (target >= {want:g}x) "
                      f"{'met' if ratio >= want else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
