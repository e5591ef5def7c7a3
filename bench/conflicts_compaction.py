"""How long one log compaction holds a versioned replica's step loop, against the number of keys.

A leaderless replica with ``engine="map"`` (ddia_ray/replication/versioned_replica.py) rewrites its
durable log as the latest state of each key once the log holds ``snapshot_changes`` records and
at least as many as it has keys. The rewrite is built by the core (``_compacted()``) and written
by the shell (``DurableLog.append`` of the ``Rewrite``) inside one step: nothing else runs on the
replica meanwhile. This measures both halves on a local disk, for the compacted log as the replica
writes it (``KeyChanges`` records of ``COMPACTED_KEYS_PER_RECORD`` keys) and, as the reference,
the same log written as one ``KeyChange`` record per key in key order (what a replica wrote up to
2026-12-07). Keys are 14 bytes, states 126 bytes (one sibling of a 100-byte value), seeded.

There is no peer here: this is a stall to keep small, not a throughput race. (Redis rewrites its
append-only file in a forked child, BGREWRITEAOF, and keeps the writes made meanwhile in a buffer;
a replica here rewrites in its own step, so the rewrite's own cost is the stall.)

No Ray: ``python bench/conflicts_compaction.py [--keys 100000,300000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import shutil
import tempfile
import time

from ddia_ray.replication.versioned_replica import KeyChange, VersionsSnapshot
from ddia_ray.runtime import CoreSpec
from ddia_ray.runtime.core import Rewrite
from ddia_ray.runtime.durable import DurableLog

STATE_BYTES = 126


def _replica(keys: int, seed: int):
    """A leaderless core holding ``keys`` states (put straight into its map: the writes' path is not
    what is measured)."""
    core = CoreSpec("ddia_ray.replication.leaderless:build",
                    {"store": "s", "members": ("r1", "r2", "r3"), "n": 3, "r": 1, "w": 1}).build("r1")
    rng = random.Random(seed)
    names = [b"key%010d" % i for i in range(keys)]
    rng.shuffle(names)  # the map holds keys in the order they came, not sorted
    for key in names:
        core.versions.data._raw_put(key, rng.randbytes(STATE_BYTES))
    return core


def _per_key(core) -> tuple:
    head = VersionsSnapshot({}, 0, 0)
    return (head, *(KeyChange(k, v) for k, v in sorted(core.versions.data.raw_items())))


def _measure(build, repeats: int) -> dict:
    """The best of ``repeats`` compactions: build the records, then append the Rewrite to a log."""
    best = None
    for _ in range(repeats):
        workdir = tempfile.mkdtemp(prefix="bench-compaction-")
        try:
            log = DurableLog(f"file://{workdir}", "r1")
            log.append([KeyChange(b"k", b"s")])
            gc.collect()
            t0 = time.perf_counter()
            records = build()
            t1 = time.perf_counter()
            written = log.append([Rewrite(records)])
            t2 = time.perf_counter()
            log.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        run = {"stall_ms": 1e3 * (t2 - t0), "build_ms": 1e3 * (t1 - t0), "write_ms": 1e3 * (t2 - t1),
               "records": len(records), "mb": written / 1e6}
        if best is None or run["stall_ms"] < best["stall_ms"]:
            best = run
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", default="100000,300000", help="comma-separated key counts")
    parser.add_argument("--repeats", type=int, default=3, help="compactions per figure; the best is printed")
    args = parser.parse_args(argv)
    print(f"{'keys':>9} {'log written as':<26} {'stall ms':>9} {'build ms':>9} {'write ms':>9} "
          f"{'records':>8} {'MB':>6}")
    for keys in (int(k) for k in args.keys.split(",")):
        core = _replica(keys, seed=keys)
        rows = {"KeyChanges (now)": _measure(core._compacted, args.repeats),
                "a KeyChange per key": _measure(functools.partial(_per_key, core), args.repeats)}
        for label, r in rows.items():
            print(f"{keys:>9,} {label:<26} {r['stall_ms']:>9.0f} {r['build_ms']:>9.0f} {r['write_ms']:>9.0f} "
                  f"{r['records']:>8,} {r['mb']:>6.1f}")
        ratio = rows["a KeyChange per key"]["stall_ms"] / rows["KeyChanges (now)"]["stall_ms"]
        print(f"{'':>9} stall, a record per key / now: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
