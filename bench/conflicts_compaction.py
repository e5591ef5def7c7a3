"""How long one log compaction holds a versioned replica's step loop, against the number of keys.

A leaderless replica with ``engine="map"`` (ddia_ray/replication/versioned_replica.py) rewrites its
durable log as the latest state of each key once the log holds ``snapshot_changes`` records and
at least as many as it has keys. The core builds the records (``_compacted()``) in its step, and
the shell appends the ``Rewrite`` to its ``DurableLog``. The rewrite is *derived* (it says nothing
the log does not), so the log writes it in a thread of its own and swaps it in later, while the
step loop goes on; this measures:

* **in the background (now)**: the step's stall (building the records, and the append that starts
  the thread), then, while the thread runs, this loop appending one small record at a time as a
  replica taking writes would: the time until the swap, the longest pause between two appends
  (the GIL the thread holds while it encodes one record), and how many appends it made meanwhile;
* **in the step**: the same records written inside the append, as a rewrite that is not derived
  is (what a replica did up to 2026-12-07, evening);
* **in the step, a record per key**: one ``KeyChange`` record per key in key order (what a
  replica wrote up to 2026-12-07, afternoon).

Keys are 14 bytes, states 126 bytes (one sibling of a 100-byte value), seeded. Local disk, no
fsync (the store's default). There is no peer here: this is a stall to keep small, not a
throughput race. Redis rewrites its append-only file in a forked child (BGREWRITEAOF) and keeps
the writes made meanwhile in a buffer; the log's thread does the same within the process.

No Ray: ``python bench/conflicts_compaction.py [--keys 100000,300000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
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


def _measure(build, repeats: int, *, derived: bool = False) -> dict:
    """The best of ``repeats`` compactions: build the records, then append the Rewrite to a log.

    ``stall_ms`` is what the step loop waits for: building the records and the ``append``. With
    ``derived`` the log writes the rewrite in a thread; the loop here then goes on appending one
    small record at a time, as a replica taking writes would, until the rewrite is swapped in:
    ``swap_ms`` is the time from the append to the swap, ``gap_ms`` the longest wait between two
    of those appends (the GIL the thread holds while it encodes a record), ``appends`` their count.
    """
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
            written = log.append([Rewrite(records, derived=derived)])
            t2 = time.perf_counter()
            gap = appends = 0
            job = log._job
            if job is not None:
                last = t2
                while not (job.finished or job.error is not None):
                    log.append([KeyChange(b"k%d" % appends, b"s" * STATE_BYTES)])
                    now = time.perf_counter()
                    gap, last, appends = max(gap, now - last), now, appends + 1
                log.wait_rewrite()
                if job.error is not None:
                    raise RuntimeError(f"the background rewrite failed: {job.error!r}")
                written = os.path.getsize(f"{workdir}/r1/records.log")
            t3 = time.perf_counter()
            log.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        run = {"stall_ms": 1e3 * (t2 - t0), "build_ms": 1e3 * (t1 - t0), "write_ms": 1e3 * (t2 - t1),
               "swap_ms": 1e3 * (t3 - t1), "gap_ms": 1e3 * gap, "appends": appends,
               "records": len(records), "mb": written / 1e6}
        if best is None or run["stall_ms"] < best["stall_ms"]:
            best = run
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", default="100000,300000", help="comma-separated key counts")
    parser.add_argument("--repeats", type=int, default=3, help="compactions per figure; the best is printed")
    args = parser.parse_args(argv)
    print(f"{'keys':>9} {'log written':<30} {'stall ms':>9} {'build ms':>9} {'append ms':>10} {'swap ms':>8} "
          f"{'gap ms':>7} {'appends':>8} {'records':>8} {'MB':>6}")
    for keys in (int(k) for k in args.keys.split(",")):
        core = _replica(keys, seed=keys)
        rows = {"in the background (now)": _measure(core._compacted, args.repeats, derived=True),
                "in the step": _measure(core._compacted, args.repeats),
                "in the step, a record per key": _measure(functools.partial(_per_key, core), args.repeats)}
        for label, r in rows.items():
            background = label.startswith("in the background")
            print(f"{keys:>9,} {label:<30} {r['stall_ms']:>9.0f} {r['build_ms']:>9.0f} {r['write_ms']:>10.1f} "
                  f"{r['swap_ms'] if background else r['stall_ms']:>8.0f} "
                  f"{r['gap_ms'] if background else r['stall_ms']:>7.1f} {r['appends']:>8,} "
                  f"{r['records']:>8,} {r['mb']:>6.1f}")
        ratio = rows["in the step"]["stall_ms"] / rows["in the background (now)"]["stall_ms"]
        print(f"{'':>9} stall, in the step / in the background: {ratio:.1f}x; the longest pause while the "
              f"background rewrite ran: {rows['in the background (now)']['gap_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
