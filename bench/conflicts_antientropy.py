"""Merkle anti-entropy: bytes and time to repair two replicas against the number of divergent keys.

Two in-process Merkle trees (ddia_ray/replication/merkle.py) over stores of ``sizes`` keys
(16-byte keys, 100-byte values, seeded), the same shape on both (``MerkleTree.shape_for(n)``).
Replica B diverges from A in ``d`` keys, for ``d`` from 1 key to 10% of the keys, in two mixes:

* ``mixed``: half of the keys changed on one side (both versions must cross), a quarter present
  only on A (pushed), a quarter only on B (fetched);
* ``one-sided``: every divergent key present only on B: one version crosses per key, the hardest
  case for the bound, as the exchange's own bytes are spread over the fewest minimal bytes.

An :class:`~ddia_ray.replication.anti_entropy.AntiEntropySession` on A runs against
:func:`~ddia_ray.replication.anti_entropy.answer` on B; every message is encoded and decoded
(what crosses the wire). Columns: ``minimal`` = the sum over divergent keys of len(key) +
len(value) of every version that must cross; ``sent`` / ``received`` = encoded bytes of A's
messages and of B's; ``ratio`` = (sent + received) / minimal, the target being <= 2;
``rounds`` = message round trips; ``passes`` = descents (a second one runs when the full-width
root check finds that narrow hashes hid a difference); ``time_s`` / ``cpu_s`` = the exchange's
wall and CPU time in one process, both sides and the codec included (CPU time is the figure to
trust on a shared machine); ``build_s`` = building one tree from a scan (``build_cpu_s`` its CPU).

No Ray: ``python bench/conflicts_antientropy.py [--sizes 10000,100000,1000000] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from ddia_ray import codec
from ddia_ray.replication.anti_entropy import AntiEntropySession, answer
from ddia_ray.replication.merkle import MerkleTree

KEY_FORMAT, VALUE_BYTES = b"key:%012d", 100  # 16-byte keys
FRACTIONS = (0.001, 0.01, 0.1)
COUNTS = (1, 2, 3, 10, 30, 40, 100, 1000)  # 2, 3, 30, 40: either side of the power sums' limits
MIXES = ("mixed", "one-sided")


def _store(n: int, seed: int) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    return {KEY_FORMAT % i: rng.randbytes(VALUE_BYTES) for i in range(n)}


def _diverge(base: dict, tree_a: MerkleTree, tree_b: MerkleTree, count: int, mix: str, rng: random.Random):
    """Overlays (key -> value, None: absent) of A and B that differ from ``base`` in ``count`` keys, applied to
    the trees; and the minimal bytes that must cross."""
    over_a: dict[bytes, bytes | None] = {}
    over_b: dict[bytes, bytes | None] = {}
    minimal = 0
    for j, key in enumerate(rng.sample(range(len(base)), count)):
        key = KEY_FORMAT % key
        size = len(key) + VALUE_BYTES
        kind = j % 4 if mix == "mixed" else 2
        if kind in (0, 3):  # changed on B: both versions cross
            over_b[key] = rng.randbytes(VALUE_BYTES)
            minimal += 2 * size
        elif kind == 1:  # deleted on B (never reached it): A's version is pushed
            over_b[key] = None
            minimal += size
        else:  # only on B: fetched
            over_a[key] = None
            minimal += size
    for tree, over in ((tree_a, over_a), (tree_b, over_b)):
        for key, value in over.items():
            tree.update(key, value)
    return over_a, over_b, minimal


def _lookup(base: dict, over: dict):
    def lookup(keys):
        return [over[k] if k in over else base.get(k) for k in keys]
    return lookup


def exchange(tree_a: MerkleTree, tree_b: MerkleTree, lookup_a, lookup_b, session_id: int = 1) -> AntiEntropySession:
    """Run one session from A to B in process, every message through the codec; returns it, done."""
    session = AntiEntropySession(tree_a, peer="b", session_id=session_id, lookup=lookup_a)
    out = session.start()
    while out:
        replies = []
        for message in out:
            message = codec.decode(codec.encode(message))
            reply = answer(tree_b, message, lookup_b)  # B's caller would then merge pushed_pairs(message)
            replies.append(codec.decode(codec.encode(reply)))
        out = [m for r in replies for m in session.on_message(r)]
    return session


def run(sizes=(10_000, 100_000, 1_000_000), fractions=FRACTIONS, quick=False, counts=COUNTS,
        mixes=MIXES, seed=1) -> list[dict]:
    """One row per (size, divergent keys, mix); see the module doc for the columns."""
    if quick:
        sizes, fractions, counts = tuple(s for s in sizes if s <= 10_000) or (10_000,), (0.01, 0.1), (1, 10)
    rows = []
    for n in sizes:
        base = _store(n, seed)
        shape = MerkleTree.shape_for(n)
        started, build_cpu = time.perf_counter(), time.process_time()
        tree = MerkleTree.build(base.items(), **shape)
        build_s, build_cpu = time.perf_counter() - started, time.process_time() - build_cpu
        divergences = sorted({c for c in counts if c <= n} | {max(1, round(f * n)) for f in fractions})
        for d in divergences:
            for mix in mixes:
                rng = random.Random(seed * 1_000_003 + d)
                tree_a, tree_b = tree.copy(), tree.copy()
                over_a, over_b, minimal = _diverge(base, tree_a, tree_b, d, mix, rng)
                gc.collect()  # a collection of the stores' million objects is not the exchange's cost
                started, cpu = time.perf_counter(), time.process_time()
                session = exchange(tree_a, tree_b, _lookup(base, over_a), _lookup(base, over_b))
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                truth = {k for k in over_a.keys() | over_b.keys()
                         if (over_a[k] if k in over_a else base.get(k)) != (over_b[k] if k in over_b else base.get(k))}
                total = session.bytes_sent + session.bytes_received
                rows.append({"keys": n, "fanout": shape["fanout"], "depth": shape["depth"], "divergent": d,
                             "mix": mix, "minimal": minimal, "sent": session.bytes_sent,
                             "received": session.bytes_received, "total": total, "ratio": total / minimal,
                             "rounds": session.rounds, "passes": session.passes,
                             "exact": set(session.differing_keys) == truth and session.verified,
                             "time_s": elapsed, "cpu_s": cpu, "build_s": build_s, "build_cpu_s": build_cpu})
                del session, tree_a, tree_b  # freed here, not inside the next row's timing
    return rows


def main(argv=None) -> int:
    """Print the table (and whether every row found exactly the divergent keys)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="store sizes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="10,000 keys, a few divergences")
    args = parser.parse_args(argv)
    rows = run(sizes=tuple(int(s) for s in args.sizes.split(",")), quick=args.quick)
    header = (f"{'keys':>9} {'shape':>6} {'divergent':>9} {'mix':>9} {'minimal B':>11} {'sent B':>11} "
              f"{'received B':>11} {'ratio':>6} {'rounds':>6} {'passes':>6} {'time s':>7} {'cpu s':>7} {'build s':>7}")
    print(header)
    for r in rows:
        print(f"{r['keys']:>9} {r['fanout']:>3}^{r['depth']:<2} {r['divergent']:>9} {r['mix']:>9} {r['minimal']:>11,} "
              f"{r['sent']:>11,} {r['received']:>11,} {r['ratio']:>6.2f} {r['rounds']:>6} {r['passes']:>6} "
              f"{r['time_s']:>7.3f} {r['cpu_s']:>7.3f} {r['build_s']:>7.2f}" + ("" if r["exact"] else "  NOT EXACT"))
    within = [r for r in rows if r["ratio"] <= 2]
    print(f"{len(within)} of {len(rows)} rows within 2x of minimal; smallest divergence within it per size: " +
          ", ".join(f"{n}: {min((r['divergent'] for r in within if r['keys'] == n), default='none')}"
                    for n in sorted({r['keys'] for r in rows})))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
