"""Concurrent writes behind a partition, resolved six ways over the same history: ``ddia-ray conflicts``.

Theory of operation
-------------------
DDIA 5.4 ("Handling Write Conflicts") and 5.5 ("Detecting Concurrent Writes") compare the ways a
store that accepts writes in several places can make concurrent writes of one key agree again.
This demonstration runs them side by side on ONE store (multi-leader by default, one leader per
region, ``region_delay_s`` between regions), whose conflict resolution is chosen per key prefix:

=========  ======================  ============================================================
prefix     resolution              what the final state keeps
=========  ======================  ============================================================
``lww/``   last writer wins        one write per key; the others are discarded, and counted
``sib/``   siblings                every concurrent write, until the application merges them
``res/``   ``resolver:set_union``  the union of the ids the concurrent values carry
``cnt/``   CRDT PN-counter         every increment (Shapiro et al. 2011)
``set/``   CRDT OR-set             every add not removed by a remove that saw it (fig. 5-14)
``txt/``   CRDT text (RGA)         every inserted character not deleted (Roh et al. 2011)
=========  ======================  ============================================================

The regions are cut apart (:meth:`~ddia_ray.replication.VersionedStore.partition_regions`), and
one client thread per region applies the SAME seeded steps (:func:`plan`) to every prefix, so each
resolution sees the same history. A step reads the key, then writes what it read plus its own
write id (``us.7``): a register write carries its id as its value (the resolver's value is a codec
tuple of ids) and the context of its read, so it knowingly replaces exactly what it read; a CRDT
step increments, adds the id (and sometimes removes an element its region added) or inserts
``"us.7;"`` into the text (and sometimes deletes a token of its region). One region's clock is
skewed (``skew_s``), so LWW visibly prefers the other regions' writes whatever their real order
(DDIA 8.3, "Timestamps for ordering events").

Then the partition heals, the run measures how long the replicas take to converge (equal Merkle
roots), reads every key, and for the siblings row performs the application's resolution step:
read the siblings, merge their ids into one value, put it with the read's context (DDIA fig. 5-13).
The lost-update checker (:mod:`ddia_ray.history.lost_updates`) then judges each row from the
history and the final state. The verdict (:attr:`ConflictsReport.ok`): the replicas converged,
nothing was lost under siblings, the resolver and the CRDTs, and every LWW loss was counted by the
store (``lww_discarded`` >= the writes the checker found lost: never silent).

Under ``protocol="leaderless"`` the replicas (one per region) are partitioned instead, and the
clients use ``n=3, r=1, w=1``; a key's writes are then coordinated by its first replica, so the
conflicts come from the threads' interleaved read-modify-writes. Text inserts then go to the start
(index 0) and no text delete is made, since a position read earlier may have moved meanwhile.

The pure part (:func:`plan`, :func:`value_ids`, :func:`text_chars`, :func:`judge`,
:func:`summary_lines`) takes no Ray; :func:`run_conflicts` is the I/O shell, used by the command
line, the Ray job and the notebook.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast

from .. import codec
from ..errors import DdiaRayError, InvalidArgumentError
from ..history.convergence import check_roots
from ..history.lost_updates import CounterUpdate, RegisterWrite, SetUpdate, TextUpdate, check_lost_updates

__all__ = ["Row", "ROWS", "RESOLUTION", "Step", "plan", "key_of", "register_value", "value_ids", "text_chars",
           "RowResult", "ConflictsReport", "judge", "summary_lines", "verdict_line", "run_conflicts"]


@dataclass(frozen=True)
class Row:
    """One resolution compared: its ``name``, table ``label``, key ``prefix``, store ``resolution`` spec,
    the checker's ``kind`` of history and the ``unit`` its losses count in."""

    name: str
    label: str
    prefix: bytes
    resolution: str
    kind: str
    unit: str


#: The rows of the table, in order.
ROWS = (
    Row("lww", "LWW", b"lww/", "lww", "register", "writes"),
    Row("siblings", "siblings", b"sib/", "siblings", "register", "writes"),
    Row("resolver", "resolver set_union", b"res/", "resolver:set_union", "register", "writes"),
    Row("counter", "CRDT counter", b"cnt/", "crdt:pncounter", "counter", "increments"),
    Row("set", "CRDT OR-set", b"set/", "crdt:orset", "set", "adds/removes"),
    Row("text", "CRDT text", b"txt/", "crdt:text", "text", "characters"),
)
#: The store's conflict resolution per key prefix.
RESOLUTION = {"": "siblings", **{r.prefix.decode(): r.resolution for r in ROWS}}
_BY_NAME = {r.name: r for r in ROWS}
#: Lost ids a row keeps (every one, for a history of this size; the summary shows a few).
LOST_IDS_KEPT = 1_000_000
_REGION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # ids are "<region>.<n>": no separator inside a region name


@dataclass(frozen=True)
class Step:
    """One step of a region's client: write ``id`` on key number ``key`` of every prefix; the counter
    moves by ``amount``; ``remove`` / ``delete``: also remove a set element (delete a text token) its region
    wrote; ``pick`` in [0, 1) chooses which element, token or insert position, from what the step reads."""

    id: str
    key: int
    amount: int
    remove: bool
    delete: bool
    pick: float


def plan(regions: tuple, writes: int, keys: int, seed: int) -> dict[str, tuple[Step, ...]]:
    """Each region's steps: ``writes`` of them over ``keys`` keys, drawn from ``seed`` alone."""
    if not regions or len(set(regions)) != len(regions) or not all(isinstance(r, str) and _REGION.match(r)
                                                                   for r in regions):
        raise InvalidArgumentError(f"regions are distinct names of letters, digits, '-' and '_', got {regions!r}")
    for name, n in (("writes", writes), ("keys", keys)):
        if type(n) is not int or not 0 < n <= 100_000:
            raise InvalidArgumentError(f"{name} is an int in [1, 100000], got {n!r}")
    out = {}
    for i, region in enumerate(regions):
        rng = random.Random(f"{seed}/{i}")  # per region, so adding a region leaves the others' steps alone
        out[region] = tuple(Step(f"{region}.{n}", rng.randrange(keys), rng.choice((1, 1, 2, 3, -1)),
                                 rng.random() < 0.2, rng.random() < 0.15, rng.random()) for n in range(writes))
    return out


def key_of(row: Row, index: int) -> bytes:
    """The key number ``index`` of ``row``."""
    return row.prefix + b"k%d" % index


def register_value(row: Row, ids) -> bytes:
    """A register value naming the write ``ids`` it stands for (the resolver's: a codec tuple)."""
    ids = tuple(sorted(ids))
    return codec.encode(ids) if row.name == "resolver" else ",".join(ids).encode()


def value_ids(row: Row, value: bytes | None) -> tuple:
    """The write ids a register value names (InvalidArgumentError for a value this demo did not write)."""
    if value is None:
        return ()
    if row.name == "resolver":
        ids = codec.decode(value)
        if not isinstance(ids, tuple) or not all(isinstance(i, str) for i in ids):
            raise InvalidArgumentError(f"a {row.prefix!r} value is a codec tuple of ids, got {type(ids).__name__}")
        return ids
    return tuple(value.decode("utf-8", errors="replace").split(","))


def text_chars(text: str, inserts) -> set:
    """The characters ``(insert id, offset)`` present in ``text``, whose tokens are ``"<id>;"``: a piece
    that is not one of ``inserts`` (characters interleaved or torn) accounts for no character, so the
    checker reports its insert's characters lost."""
    present: set = set()
    known = set(inserts)
    for piece in text.split(";")[:-1]:
        if piece in known:
            present.update((piece, off) for off in range(len(piece) + 1))
    return present


@dataclass
class RowResult:
    """One row of the table: acked and unacked operations, the checker's verdict (``checked``, ``lost`` in
    the row's unit, a sample of ``lost_ids``, a counter's ``excess``), siblings per key (registers),
    ``resolutions`` (the application's merges for siblings, the store's for the resolver) and the final
    ``value`` of one key, as a sample."""

    row: Row
    ops: int = 0
    unacked: int = 0
    checked: int = 0
    lost: int = 0
    lost_ids: tuple = ()
    excess: int = 0
    siblings_max: int | None = None
    siblings_mean: float | None = None
    resolutions: int | None = None
    value: str = ""

    @property
    def ok(self) -> bool:
        """Nothing acknowledged was lost, and no counter over-counted."""
        return self.lost == 0 and self.excess == 0


@dataclass
class ConflictsReport:
    """What a run did and found (see the module docstring); every figure is plain data."""

    protocol: str
    regions: tuple
    writes: int
    keys: int
    delay_s: float
    skews: dict  # region -> clock offset in seconds (the regions not named run on time)
    seed: int
    rows: dict = field(default_factory=dict)  # row name -> RowResult
    steps: int = 0
    elapsed_s: float = 0.0
    write_latency_ms: dict = field(default_factory=dict)  # p50, p99, max of a step's writes
    convergence_s: float | None = None
    converged: bool | None = None
    convergence: str = ""
    resolution_convergence_s: float | None = None
    siblings_per_key: dict = field(default_factory=dict)  # sib/ key -> siblings, before the merge
    stats: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)

    @property
    def lww_counted(self) -> bool:
        """Every LWW loss the checker found, the store counted (``lww_discarded`` >= it)."""
        lww = self.rows.get("lww")
        return lww is not None and self.stats.get("lww_discarded", -1) >= lww.lost

    @property
    def ok(self) -> bool:
        """Converged, nothing lost but under LWW, and every LWW loss counted by the store."""
        return (self.converged is True and len(self.rows) == len(ROWS) and self.lww_counted
                and all(r.ok for name, r in self.rows.items() if name != "lww"))


def judge(report: ConflictsReport, history: Mapping[str, list], finals: Mapping[str, dict]) -> None:
    """Fill ``report.rows``' verdicts from each row's ``history`` (checker operations) and ``finals``
    (key -> final state, in the checker's form)."""
    for row in ROWS:
        ops = history.get(row.name, [])
        res = check_lost_updates(ops, finals.get(row.name, {}), lost_ids_max=LOST_IDS_KEPT)
        r = report.rows.setdefault(row.name, RowResult(row))
        r.ops = sum(1 for o in ops if o.acked)
        r.unacked = len(ops) - r.ops
        r.checked, r.lost, r.lost_ids, r.excess = res.checked, res.lost, res.lost_ids, res.excess_amount


def _fmt(x, spec: str = "") -> str:
    return "-" if x is None else format(x, spec)


def summary_lines(report: ConflictsReport) -> list[str]:
    """The table, the convergence and store lines, the checks, and :func:`verdict_line` last."""
    lat = report.write_latency_ms
    lines = [f"{report.protocol}: {len(report.regions)} regions {','.join(report.regions)}, "
             f"{report.writes} steps each over {report.keys} keys, delay {report.delay_s:g} s, clock skew "
             f"{', '.join(f'{r} {s:+g} s' for r, s in report.skews.items()) or 'none'}, seed {report.seed}",
             f"{report.steps} steps in {report.elapsed_s:.2f} s; write latency p50 "
             f"{_fmt(lat.get('p50'), '.1f')} ms, p99 {_fmt(lat.get('p99'), '.1f')} ms",
             f"{'resolution':<20} {'prefix':<6} {'acked':>6} {'lost':>5} {'unit':<12} {'sib max':>7} {'sib mean':>8} "
             f"{'resolutions':>11}  final value of k0 (sample)"]
    for row in ROWS:
        r = report.rows.get(row.name)
        if r is None:
            lines.append(f"{row.label:<20} {row.prefix.decode():<6} not run")
            continue
        lines.append(f"{row.label:<20} {row.prefix.decode():<6} {r.ops:>6} {r.lost:>5} {row.unit:<12} "
                     f"{_fmt(r.siblings_max):>7} {_fmt(r.siblings_mean, '.2f'):>8} {_fmt(r.resolutions):>11}  "
                     f"{r.value[:60]}")
    s = report.stats
    own = (("hinted", "handoffs", "read_repairs", "anti_entropy_rounds", "anti_entropy_keys", "anti_entropy_bytes")
           if report.protocol == "leaderless" else ("causality_violations",))
    lines.append("store: " + ", ".join(f"{k} {s.get(k, '-')}" for k in (
        "lww_discarded", "resolutions", "resolver_failures", "siblings_max", *own)))
    conv = "did not converge" if report.convergence_s is None else f"{report.convergence_s:.2f} s"
    lines.append(f"convergence after healing: {conv} ({report.convergence or 'not checked'})")
    for e in report.errors[:5]:
        lines.append(f"error: {e}")
    lww = report.rows.get("lww")
    if lww is not None:
        lines.append(f"LWW writes lost: {lww.lost} of {lww.ops}, counted by the store: "
                     f"{'yes' if report.lww_counted else 'NO'} ({s.get('lww_discarded', '-')} discarded)")
    others = [r for n, r in report.rows.items() if n != "lww"]
    bad = [f"{r.row.name} {r.lost}{f' (+{r.excess})' if r.excess else ''}" for r in others if not r.ok]
    lines.append(f"lost under siblings, resolver and CRDTs: {'0' if not bad else ', '.join(bad)}"
                 f"{'' if len(others) == len(ROWS) - 1 else ' (not every row ran)'}")
    lines.append(f"converged: {'yes' if report.converged else 'NO'}")
    lines.append(verdict_line(report))
    return lines


def verdict_line(report: ConflictsReport) -> str:
    """``conflicts: ok`` or ``conflicts: FAILED``."""
    return f"conflicts: {'ok' if report.ok else 'FAILED'}"


# --- the run on Ray ------------------------------------------------------------------------------------


def _quantiles(xs: list) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)
    return {"p50": xs[len(xs) // 2], "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))], "max": xs[-1]}


def _outcome(future: concurrent.futures.Future, timeout_s: float) -> bool:
    """Whether a write was acknowledged (a failure leaves its outcome unknown: recorded as unacked)."""
    try:
        future.result(timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - an unacknowledged write may or may not have landed; the checker knows
        return False


def _region_steps(client, region: str, steps: tuple, front_only: bool, timeout_s: float) -> tuple:
    """Run ``steps`` with ``client``; returns (history per row, write latencies ms, errors)."""
    rows = _BY_NAME
    hist: dict[str, list] = {r.name: [] for r in ROWS}
    latencies, errors = [], []
    for st in steps:
        read_rows = [rows[n] for n in ("lww", "siblings", "resolver", "set", "text")]
        try:
            got = dict(zip([r.name for r in read_rows], client.get_many([key_of(r, st.key) for r in read_rows])))
        except Exception as e:  # noqa: BLE001 - a failed read skips its step; the error is reported
            errors.append(f"{region} {st.id}: read failed: {type(e).__name__}: {e}")
            continue
        started = time.monotonic()
        pending: list[tuple[str, Any, concurrent.futures.Future]] = []  # (row, its operation, the future)
        for name in ("lww", "siblings", "resolver"):
            row, v = rows[name], got[name]
            seen = tuple(sorted({i for s in v.siblings for i in value_ids(row, s.value)}))
            fut = client.put_nowait(key_of(row, st.key), register_value(row, (st.id,)), context=v.context)
            pending.append((name, RegisterWrite(st.id, key_of(row, st.key), True, seen), fut))
        cnt = key_of(rows["counter"], st.key)
        fut = client.update_nowait(cnt, "increment" if st.amount > 0 else "decrement", abs(st.amount))
        pending.append(("counter", CounterUpdate(st.id, cnt, True, st.amount), fut))
        skey = key_of(rows["set"], st.key)
        mine = sorted(e for e in (got["set"].crdt.value() if got["set"].crdt is not None else ())
                      if e.startswith(f"{region}.".encode()))
        if st.remove and mine:
            elem = mine[int(st.pick * len(mine))]
            fut = client.update_nowait(skey, "remove", elem)
            pending.append(("set", SetUpdate(f"{st.id}.rm", skey, True, "remove", elem, (elem.decode(),)), fut))
        fut = client.update_nowait(skey, "add", st.id.encode())
        pending.append(("set", SetUpdate(st.id, skey, True, "add", st.id.encode()), fut))
        tkey = key_of(rows["text"], st.key)
        text = got["text"].crdt.value() if got["text"].crdt is not None else ""
        tokens = text.split(";")[:-1]
        own = [i for i, t in enumerate(tokens) if t.startswith(f"{region}.") and t[len(region) + 1:].isdigit()]
        if st.delete and own and not front_only:
            i = own[int(st.pick * len(own))]
            start = sum(len(t) + 1 for t in tokens[:i])
            tok = tokens.pop(i)
            fut = client.update_nowait(tkey, "delete", start, len(tok) + 1)
            pending.append(("text", TextUpdate(f"{st.id}.del", tkey, True, "delete", "",
                                               tuple((tok, o) for o in range(len(tok) + 1))), fut))
        slot = 0 if front_only else int(st.pick * (len(tokens) + 1))
        fut = client.update_nowait(tkey, "insert", sum(len(t) + 1 for t in tokens[:slot]), f"{st.id};")
        pending.append(("text", TextUpdate(st.id, tkey, True, "insert", f"{st.id};"), fut))
        for name, op, fut in pending:
            if not _outcome(fut, timeout_s + 2.0):
                errors.append(f"{region} {st.id}: {name} write not acknowledged: {fut.exception()!r:.200}")
                op = dataclasses.replace(op, acked=False)  # sent, maybe applied: the checker must not require it
            hist[name].append(op)
        latencies.append((time.monotonic() - started) * 1000)
    return hist, latencies, errors


def _finals(reader, keys: int) -> tuple[dict, dict]:
    """Every key's final state in the checker's form (per row), and the Versions read (per key)."""
    wanted = [key_of(r, k) for r in ROWS for k in range(keys)]
    versions = dict(zip(wanted, reader.get_many(wanted)))
    finals: dict[str, dict] = {}
    for row in ROWS:
        out = finals.setdefault(row.name, {})
        for k in range(keys):
            v = versions[key_of(row, k)]
            if row.kind == "register":
                out[v.key] = {i for s in v.siblings for i in value_ids(row, s.value)}
            elif row.kind == "counter":
                out[v.key] = v.crdt.value() if v.crdt is not None else 0
            elif row.kind == "set":
                out[v.key] = set(v.crdt.value()) if v.crdt is not None else set()
    return finals, versions


def run_conflicts(*, protocol: str = "multi-leader", regions: tuple = ("us", "eu", "ap"), writes: int = 40,
                  keys: int = 4, delay_s: float = 0.05, skew_s: float = -0.5, skew_region: str | None = None,
                  seed: int = 0, timeout_s: float = 5.0, converge_timeout_s: float = 60.0,
                  progress: Callable[[str], None] | None = None) -> ConflictsReport:
    """Launch the store, run the partitioned workload, heal, converge, resolve, judge, shut down (see the
    module docstring). ``skew_region``: whose clock is off by ``skew_s`` (default: the second region)."""
    from ..replication import ReplicatedStore
    from ..replication.versioned_store import VersionedStore
    from ..runtime import ensure_ray

    regions = tuple(regions)
    steps = plan(regions, writes, keys, seed)
    if protocol not in ("multi-leader", "leaderless"):
        raise InvalidArgumentError(f"protocol is 'multi-leader' or 'leaderless', got {protocol!r}")
    skew_region = skew_region if skew_region is not None else regions[min(1, len(regions) - 1)]
    skews = {skew_region: float(skew_s)} if skew_s else {}
    report = ConflictsReport(protocol, regions, writes, keys, float(delay_s), skews, seed)
    say = progress or (lambda _msg: None)
    ensure_ray()
    leaderless = protocol == "leaderless"
    n = min(3, len(regions))
    quorum: dict[str, Any] = {"n": n, "r": 1, "w": 1} if leaderless else {}
    store = cast(VersionedStore, ReplicatedStore.launch(protocol=protocol, regions=regions, region_delay_s=delay_s,
                                                        resolution=RESOLUTION, clock_skew_s=skews, seed=seed,
                                                        **quorum))
    clients = []
    try:
        say(f"launched {store.name!r}: {protocol}, replicas {store.regions}")
        if leaderless:
            store.partition([[m] for m in store.members])
        else:
            store.partition_regions([[r] for r in regions])
        say("partitioned every region apart; writing")
        clients = [store.client(timeout_s=timeout_s, **quorum) if leaderless
                   else store.client(region=r, timeout_s=timeout_s) for r in regions]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(regions), thread_name_prefix="conflicts") as pool:
            # Text positions read before a write stay exact only if no other writer reaches the key meanwhile:
            # partitioned regions of a multi-leader store. Leaderless: inserts go to the front, no deletes.
            runs = list(pool.map(lambda rc: _region_steps(rc[1], rc[0], steps[rc[0]], leaderless, timeout_s),
                                 zip(regions, clients)))
        report.elapsed_s = time.monotonic() - started
        history: dict[str, list] = {r.name: [] for r in ROWS}
        latencies: list[float] = []
        for hist, lat, errs in runs:
            for name, ops in hist.items():
                history[name] += ops
            latencies += lat
            report.errors += errs
        report.steps = len(latencies)
        report.write_latency_ms = _quantiles(latencies)
        say(f"{report.steps} steps in {report.elapsed_s:.2f} s; healing")
        store.heal()
        report.convergence_s, report.converged = _converge(store, converge_timeout_s, report)
        say(f"converged in {_fmt(report.convergence_s, '.2f')} s; the application merges the siblings")
        reader = clients[0]
        finals, versions = _finals(reader, keys)
        _measure_siblings(report, versions, keys)
        _resolve_siblings(report, reader, versions, keys, history, timeout_s)
        if report.rows["siblings"].resolutions:
            report.resolution_convergence_s, ok = _converge(store, converge_timeout_s, report)
            report.converged = report.converged and ok
            finals, versions = _finals(reader, keys)
        text = _BY_NAME["text"]
        inserts = [o.id for o in history["text"] if o.op == "insert"]
        finals["text"] = {key_of(text, k): text_chars(versions[key_of(text, k)].crdt.value()
                                                      if versions[key_of(text, k)].crdt is not None else "", inserts)
                          for k in range(keys)}
        judge(report, history, finals)
        for row in ROWS:
            v = versions[key_of(row, 0)]
            report.rows[row.name].value = _sample(row, v)
        stats = store.stats()
        report.stats = {k: v for k, v in stats.items() if k not in ("replicas", "regions", "nodes")}
        report.rows["resolver"].resolutions = stats.get("resolutions", 0)
        report.convergence = check_roots({n: bytes.fromhex(r) for n, r in store.roots().items()}).summary()
    finally:
        for c in clients:
            c.close()
        store.shutdown()
    return report


def _converge(store, timeout_s: float, report: ConflictsReport) -> tuple[float | None, bool]:
    try:
        return store.wait_converged(timeout_s=timeout_s), True
    except DdiaRayError as e:
        report.errors.append(f"convergence: {type(e).__name__}: {e}")
        return None, False


def _measure_siblings(report: ConflictsReport, versions: dict, keys: int) -> None:
    """Siblings per key of the register rows, as read after convergence (before any merge)."""
    for row in (r for r in ROWS if r.kind == "register"):
        counts = [len(versions[key_of(row, k)].siblings) for k in range(keys) if versions[key_of(row, k)].exists]
        r = report.rows.setdefault(row.name, RowResult(row))
        r.siblings_max = max(counts, default=0)
        r.siblings_mean = sum(counts) / len(counts) if counts else 0.0
        if row.name == "siblings":
            report.siblings_per_key = {key_of(row, k).decode(): len(versions[key_of(row, k)].siblings)
                                       for k in range(keys)}


def _resolve_siblings(report: ConflictsReport, client, versions: dict, keys: int, history: dict,
                      timeout_s: float) -> None:
    """The application's resolution step (DDIA fig. 5-13): merge each key's siblings, put with the context."""
    row = _BY_NAME["siblings"]
    merges = []
    for k in range(keys):
        v = versions[key_of(row, k)]
        if len(v.siblings) < 2:
            continue
        seen = tuple(sorted({i for s in v.siblings for i in value_ids(row, s.value)}))
        merge_id = f"merge-{k}"  # no '.': never the id of a region's write
        fut = client.put_nowait(v.key, register_value(row, (*seen, merge_id)), context=v.context)
        merges.append((RegisterWrite(merge_id, v.key, True, seen), fut))
    for op, fut in merges:
        acked = _outcome(fut, timeout_s + 2.0)
        history["siblings"].append(RegisterWrite(op.id, op.key, acked, op.observed))
        if not acked:
            report.errors.append(f"merge of {op.key!r} not acknowledged")
    report.rows[row.name].resolutions = sum(1 for op in history["siblings"] if op.id.startswith("merge-") and op.acked)


def _sample(row: Row, v) -> str:
    if v.crdt is not None:
        value = v.crdt.value()
        return (f"{len(value)} elements" if isinstance(value, frozenset) else
                f"{len(value)} chars" if isinstance(value, str) else str(value))
    ids = [i for s in v.siblings for i in value_ids(row, s.value)]
    return f"{len(v.siblings)} sibling(s) naming {len(ids)} write(s)" if ids else "absent"
