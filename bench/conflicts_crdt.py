"""CRDT merge rates per kind, and our text CRDT against pycrdt (Yjs) on one typing trace.

**Merge rates** (``kind`` rows), one core, no Ray, for ``N = 20,000 x scale`` operations of each
kind spread over 3 writers (counters: increments; sets: adds and removes over 1,000 items; LWW
and MV registers: assignments; OR-Map: PN-Counter updates of 100 keys; text: the trace below):

* ``ops/s``: mutators at the writers, each returning its delta;
* ``delta merges/s``: each delta merged into one other replica, in order (in memory);
* ``wire merges/s``: the same with every delta encoded, and merged from its bytes (``merge_bytes``: what a store ships);
* ``state merges/s``: whole-state joins of two replicas that each saw every other delta
  (anti-entropy), each join on fresh copies. A worst case for the kinds with causal contexts and
  for text: each half's context is full of gaps, and half of its characters wait for origins.

**Text vs pycrdt** (``text`` rows): one typing trace of ``N`` edits at one replica: mostly
single-character appends, some inserts of 1-5 characters at random positions, some deletes of
1-3 characters at random positions (80/10/10, seeded). For both systems: the edits themselves
(``local``; ``local+wire`` adds encoding each of our deltas to bytes, which pycrdt's edits
already produce through its update observer), then (a) the whole document merged into an empty
replica from bytes (``state``: ``merge_bytes`` / ``apply_update`` of ``get_update()``), and
(b) each edit's delta or update merged one by one into a second replica from bytes (``deltas``:
``merge_bytes`` / ``apply_update`` per edit; ``merge_bytes`` decodes and joins, as
``apply_update`` does). Rates are edits per second; ``ratio`` is ours / pycrdt's (target
>= 0.5x). Every replica's text is checked against the trace's own string.

pycrdt (the ``bench`` extra; Python bindings of Yrs, the Rust port of Yjs) is skipped with a
message when it is not installed.

Run: ``python bench/conflicts_crdt.py [--scale S] [--repeats R]`` (no Ray).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import time

from ddia_ray import crdt

WRITERS = ("n1", "n2", "n3")


def _best(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn()`` in seconds (fn rebuilds its own inputs)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()  # the garbage of the previous run is not this run's to collect
        elapsed = fn()
        best = min(best, elapsed)
    return best


def _ops(kind: str, n: int, rng: random.Random) -> list[tuple[str, str, tuple]]:
    """``n`` (node, op, args) of ``kind`` at the writers; text edits come from :func:`typing_trace`."""
    out = []
    for i in range(n):
        node = WRITERS[i % len(WRITERS)]
        if kind in ("gcounter", "pncounter"):
            op = "increment" if kind == "gcounter" or rng.random() < 0.7 else "decrement"
            out.append((node, op, (rng.randint(1, 5),)))
        elif kind == "gset":
            out.append((node, "add", (rng.randrange(10 * n),)))
        elif kind in ("2pset", "orset"):
            out.append((node, "add" if rng.random() < 0.7 else "remove", (rng.randrange(1000),)))
        elif kind == "lww":
            out.append((node, "assign", (rng.randrange(1000), i)))
        elif kind == "mvregister":
            out.append((node, "assign", (rng.randrange(1000),)))
        elif kind == "ormap":
            out.append((node, "update", (f"k{rng.randrange(100)}", "pncounter", "increment", 1)))
    return out


def _merge_rates(kind: str, n: int, repeats: int) -> dict:
    if kind == "text":
        edits = typing_trace(n, 1)
        ops = [("n1", op, args) for op, args in edits]
    else:
        ops = _ops(kind, n, random.Random(7))
    replicas = {w: crdt.new(kind) for w in WRITERS}
    deltas = []

    def local() -> float:
        nonlocal deltas
        for w in WRITERS:
            replicas[w] = crdt.new(kind)
        deltas = []
        started = time.perf_counter()
        held: dict[str, set] = {w: set() for w in WRITERS}  # what each 2P-Set writer holds
        gone: dict[str, set] = {w: set() for w in WRITERS}  # and what it removed for good
        for node, op, args in ops:
            state = replicas[node]
            if kind == "2pset":
                if op == "remove" and args[0] in held[node]:
                    held[node].discard(args[0])
                    gone[node].add(args[0])
                elif op == "remove":
                    op = "add"  # a 2P-Set refuses removing what it does not hold
                if op == "add" and args[0] not in gone[node]:
                    held[node].add(args[0])
            deltas.append(getattr(state, op)(node, *args))
        return time.perf_counter() - started

    local_s = _best(local, repeats)
    wire = [crdt.encode(d) for d in deltas]

    def delta_merges() -> float:
        r = crdt.new(kind)
        started = time.perf_counter()
        for d in deltas:
            r.merge(d)
        return time.perf_counter() - started

    def wire_merges() -> float:
        r = crdt.new(kind)
        started = time.perf_counter()
        for b in wire:
            r.merge_bytes(b)
        return time.perf_counter() - started

    left, right = crdt.new(kind), crdt.new(kind)
    for i, d in enumerate(deltas):
        (left if i % 2 else right).merge(d)
    joins = max(1, min(200, 2_000_000 // max(1, len(crdt.encode(left)))))

    def state_merges() -> float:
        pairs = [(left.copy(), right.copy()) for _ in range(joins)]
        started = time.perf_counter()
        for a, b in pairs:
            a.merge(b)
        return time.perf_counter() - started

    delta_s, wire_s, state_s = (_best(f, repeats) for f in (delta_merges, wire_merges, state_merges))
    joined = left.copy().merge(right)
    full = crdt.new(kind)
    for d in deltas:
        full.merge(d)
    assert joined == full, f"{kind}: the two halves do not join to the whole"
    return {"bench": "merge", "kind": kind, "ops": len(ops), "ops_per_s": len(ops) / local_s,
            "delta_merges_per_s": len(deltas) / delta_s, "wire_merges_per_s": len(wire) / wire_s,
            "state_merges_per_s": joins / state_s, "state_bytes": len(crdt.encode(full))}


def typing_trace(n: int, seed: int) -> list[tuple[str, tuple]]:
    """``n`` edits (op, args) of one writer: 80% one-character appends, 10% inserts of 1-5 characters at
    random positions, 10% deletes of 1-3 characters at random positions."""
    rng = random.Random(seed)
    length, out = 0, []
    letters = "abcdefghijklmnopqrstuvwxyz     "
    for _ in range(n):
        r = rng.random()
        if r < 0.1 and length > 3:
            i = rng.randrange(length)
            k = min(rng.randint(1, 3), length - i)
            out.append(("delete", (i, k)))
            length -= k
        elif r < 0.2:
            s = "".join(rng.choice(letters) for _ in range(rng.randint(1, 5)))
            out.append(("insert", (rng.randint(0, length), s)))
            length += len(s)
        else:
            out.append(("insert", (length, rng.choice(letters))))
            length += 1
    return out


def _expected(trace) -> str:
    chars: list[str] = []
    for op, args in trace:
        if op == "insert":
            chars[args[0]:args[0]] = args[1]
        else:
            del chars[args[0]:args[0] + args[1]]
    return "".join(chars)


def _ours_text(trace, repeats: int, expected: str) -> dict:
    holder: dict = {}

    def local() -> float:
        holder.clear()
        gc.collect()
        t = crdt.Text()
        started = time.perf_counter()
        deltas = [t.insert("a", *args) if op == "insert" else t.delete("a", *args) for op, args in trace]
        elapsed = time.perf_counter() - started
        holder["t"], holder["deltas"] = t, deltas
        return elapsed

    local_s = _best(local, repeats)
    t = holder["t"]
    assert t.value() == expected
    full = crdt.encode(t)

    def wire() -> float:
        started = time.perf_counter()
        holder["updates"] = [crdt.encode(d) for d in holder["deltas"]]
        return time.perf_counter() - started

    wire_s = _best(wire, repeats)
    updates = holder["updates"]
    del holder["deltas"]  # only bytes travel; the objects would only weigh on the garbage collector

    def state() -> float:
        started = time.perf_counter()
        r = crdt.Text().merge_bytes(full)
        elapsed = time.perf_counter() - started
        assert r.value() == expected
        return elapsed

    def deltas() -> float:
        r = crdt.Text()
        started = time.perf_counter()
        for u in updates:
            r.merge_bytes(u)
        elapsed = time.perf_counter() - started
        assert r.value() == expected
        return elapsed

    return {"local_s": local_s, "local+wire_s": local_s + wire_s, "state_s": _best(state, repeats),
            "deltas_s": _best(deltas, repeats), "state_bytes": len(full), "update_bytes": sum(map(len, updates))}


def _pycrdt_text(trace, repeats: int, expected: str) -> dict | None:
    try:
        import pycrdt
    except ImportError:
        return None
    holder: dict = {}

    def local() -> float:
        holder.clear()
        gc.collect()
        doc = pycrdt.Doc()
        text = doc.get("t", type=pycrdt.Text)
        updates: list[bytes] = []
        sub = doc.observe(lambda event: updates.append(event.update))
        started = time.perf_counter()
        for op, args in trace:
            if op == "insert":
                text.insert(args[0], args[1])
            else:
                del text[args[0]:args[0] + args[1]]
        elapsed = time.perf_counter() - started
        doc.unobserve(sub)
        holder["doc"], holder["text"], holder["updates"] = doc, text, updates
        return elapsed

    local_s = _best(local, repeats)
    assert str(holder["text"]) == expected
    full = holder["doc"].get_update()
    updates = holder["updates"]

    def state() -> float:
        doc = pycrdt.Doc()
        text = doc.get("t", type=pycrdt.Text)
        started = time.perf_counter()
        doc.apply_update(full)
        elapsed = time.perf_counter() - started
        assert str(text) == expected
        return elapsed

    def deltas() -> float:
        doc = pycrdt.Doc()
        text = doc.get("t", type=pycrdt.Text)
        started = time.perf_counter()
        for u in updates:
            doc.apply_update(u)
        elapsed = time.perf_counter() - started
        assert str(text) == expected
        return elapsed

    # pycrdt's edits already produce their updates as bytes (the observer), so both local phases are one
    return {"local_s": local_s, "local+wire_s": local_s, "state_s": _best(state, repeats),
            "deltas_s": _best(deltas, repeats), "state_bytes": len(full), "update_bytes": sum(map(len, updates)),
            "version": getattr(pycrdt, "__version__", "")}


def _text_vs_pycrdt(n: int, repeats: int) -> list[dict]:
    trace = typing_trace(n, 1)
    expected = _expected(trace)
    ours = _ours_text(trace, repeats, expected)
    peer = _pycrdt_text(trace, repeats, expected)
    rows = []
    for phase in ("local", "local+wire", "state", "deltas"):
        row = {"bench": "text", "phase": phase, "edits": n, "ours_per_s": n / ours[f"{phase}_s"],
               "pycrdt_per_s": None, "ratio": None}
        if peer is not None:
            row["pycrdt_per_s"] = n / peer[f"{phase}_s"]
            row["ratio"] = row["ours_per_s"] / row["pycrdt_per_s"]
        rows.append(row)
    rows.append({"bench": "text-bytes", "ours_state": ours["state_bytes"], "ours_updates": ours["update_bytes"],
                 "pycrdt_state": peer and peer["state_bytes"], "pycrdt_updates": peer and peer["update_bytes"],
                 "pycrdt": peer is not None})
    return rows


def run(scale: float = 1.0, repeats: int = 3) -> list[dict]:
    """Every row: merge rates per kind, then the text trace against pycrdt (see the module doc)."""
    n = max(100, int(20_000 * scale))
    rows = [_merge_rates(kind, n, repeats) for kind in crdt.KINDS]
    rows += _text_vs_pycrdt(n, repeats)
    return rows


def main(argv=None) -> int:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="operations = 20,000 x scale")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per figure")
    args = parser.parse_args(argv)
    rows = run(args.scale, args.repeats)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {platform.python_version()} on {platform.machine()}, one core, best of {args.repeats}; "
          f"load average {load} on {os.cpu_count()} CPUs")
    print(f"{'kind':>10} {'ops':>7} {'ops/s':>11} {'delta merges/s':>15} {'wire merges/s':>14} "
          f"{'state merges/s':>15} {'state bytes':>12}")
    for r in rows:
        if r["bench"] == "merge":
            print(f"{r['kind']:>10} {r['ops']:>7,} {r['ops_per_s']:>11,.0f} {r['delta_merges_per_s']:>15,.0f} "
                  f"{r['wire_merges_per_s']:>14,.0f} {r['state_merges_per_s']:>15,.1f} {r['state_bytes']:>12,}")
    print()
    text_rows = [r for r in rows if r["bench"] == "text"]
    print(f"text: {text_rows[0]['edits']:,} edits of a typing trace (edits/s)")
    print(f"{'phase':>10} {'ours':>12} {'pycrdt':>12} {'ratio':>7}")
    for r in text_rows:
        peer = "-" if r["pycrdt_per_s"] is None else f"{r['pycrdt_per_s']:,.0f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['phase']:>10} {r['ours_per_s']:>12,.0f} {peer:>12} {ratio:>7}")
    b = rows[-1]
    if not b["pycrdt"]:
        print("pycrdt is not installed (pip install pycrdt, or the bench extra): its column is skipped")
    else:
        print(f"bytes: our state {b['ours_state']:,}, updates {b['ours_updates']:,}; "
              f"pycrdt state {b['pycrdt_state']:,}, updates {b['pycrdt_updates']:,}")
        worst = min(r["ratio"] for r in text_rows)
        print(f"target >= 0.5x pycrdt: {'met' if worst >= 0.5 else 'NOT met'} (lowest ratio {worst:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
