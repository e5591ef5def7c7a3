"""``ddia-ray partition``: a range-partitioned store loaded with skewed keys, its hot partition split and
a partition moved while a Jepsen-style workload runs, then the checkers' verdict and the data moved.

Theory of operation
-------------------
:func:`run_demo` takes a running range-scheme :class:`~.store.PartitionedStore` cut at
:func:`hex_boundaries` (even ranges of a key's first hex digit) and:

1. *loads* ``keys`` keys whose first hex digit follows a Zipf law (:func:`skewed_keys`). With the
   default exponent 1, six keys in ten start with ``0``-``3``, so one partition of four holds most
   of the data: the hot spot a key-range scheme gets when keys are not spread evenly (DDIA 6.2);
2. starts a *hot-spot writer*, which overwrites loaded keys picked uniformly, in numbered batches,
   so that the write load is as skewed as the data, and runs
   :func:`~.workload.run_partition_workload` for ``duration_s``, its own nemesis held back (the
   changes here are the scripted ones below);
3. at :data:`SPLIT_AT` of the run (or once a write rate is measured, up to :data:`SPLIT_BY`),
   *splits* the partition with the most writes per second so far at its median key
   (:meth:`~.store.PartitionedStore.split`);
4. after a measuring spell, asks the planner (:func:`~.rebalance.plan`, moves only) which
   partition to *move* from the busiest group to the least loaded one, by the write rates since the
   split, and moves it (:meth:`~.store.PartitionedStore.move`) while ``fault`` (a leader killed or
   cut off, then repaired) hits the group the partition leaves;
5. at the end reads every loaded key back: each must hold its last acknowledged batch's value or a
   later one, so a write that a move's catch-up missed shows up as *stale*.

The write load per partition comes from the counters each group's leader keeps (``stats()``),
sampled by the workload four times a second. :func:`load_rates` turns them into writes per second
over a window; a counter that went down restarted from zero (a new leader, or a partition that just
moved), so its new value is what was written since, as Prometheus reads a counter reset. Everything
after the run is a pure function of the :class:`DemoReport`, so the command line, the Ray job and
the notebook show the same figures. The verdict, :func:`verdict_line`, is ``partitioning: ok`` when
the workload's checkers (durability, scan, and linearizability under Raft) and the read-back pass.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CallTimeoutError, ConfigError, DdiaRayError
from ..kv.workload import FaultSchedule
from .rebalance import PartitionLoad, RebalancePolicy, plan
from .workload import PartitionReport, run_partition_workload

__all__ = ["FAULTS", "SPLIT_AT", "SPLIT_BY", "hex_boundaries", "skewed_keys", "DemoReport", "run_demo", "load_rates",
           "load_series", "group_series", "group_rates", "load_rows", "group_rows", "summary_lines", "verdict_line"]

#: The fault that hits the moving partition's source group while it moves.
FAULTS = ("kill-leader", "partition-leader", "none")
#: When the split comes, as a fraction of the run.
SPLIT_AT = 0.3
#: How late in the run the split may still wait for its first write rates (two load samples): a
#: machine busy enough to starve the workload's sampler has none at ``SPLIT_AT``; past this, the
#: move still has the rest of the run.
SPLIT_BY = 0.6
#: The hex digits a key starts with (the space the Zipf law spreads keys over).
_DIGITS = 16
_SAMPLE_S = 0.25  # the workload's load sampling period
_MEASURE_S_MIN = 1.0  # write rates after the split are measured at least this long before the move
_LOAD_BATCH = 250
_HOT_BATCH = 100
_HOT_PAUSE_S = 0.05  # the hot-spot writer's pace: at most _HOT_BATCH / _HOT_PAUSE_S writes/s
_SHARED_KEYS = 6  # the workload's keys checked for linearizability
#: Moves only: the split is the scripted one, and no merge.
_MOVE_POLICY = RebalancePolicy(split_bytes=0, merge_bytes=0, moves_per_round=1)


def hex_boundaries(partitions: int) -> tuple[bytes, ...]:
    """Boundaries that cut keys into ``partitions`` (1 to 16) even ranges of their first hex digit:
    ``4, 8, c`` for four partitions."""
    if type(partitions) is not int or not 1 <= partitions <= _DIGITS:
        raise ConfigError(f"hex boundaries make 1 to {_DIGITS} partitions, got {partitions!r}")
    return tuple(b"%x" % (_DIGITS * i // partitions) for i in range(1, partitions))


def skewed_keys(count: int, *, skew: float = 1.0, rng: random.Random) -> list[bytes]:
    """``count`` distinct 8-hex-digit keys whose first digit ``d`` has weight ``1 / (d + 1) ** skew``
    (Zipf; 0 spreads them evenly); the other digits are uniform."""
    if type(count) is not int or count < 1:
        raise ConfigError(f"count is an int >= 1, got {count!r}")
    if not isinstance(skew, (int, float)) or not 0 <= skew < math.inf:
        raise ConfigError(f"skew is a Zipf exponent >= 0, got {skew!r}")
    weights = [1 / (d + 1) ** skew for d in range(_DIGITS)]
    seen: set = set()
    out: list[bytes] = []
    while len(out) < count:
        for d in rng.choices(range(_DIGITS), weights, k=count - len(out)):
            key = b"%x%07x" % (d, rng.getrandbits(28))
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


@dataclass
class DemoReport:
    """What :func:`run_demo` did and found, as plain data (maps are :class:`~.partition_map.PartitionMap`).

    Times are seconds since the workload started; ``before`` and ``after`` are the spans of the load
    samples whose write rates ``rates_before`` and ``rates_after`` hold (``{partition: writes/s}``),
    the first up to the split, the second from the end of the move to the end of the run (the fault
    may outlast the move: ``events`` says when it was repaired), or None without two samples."""

    store: str
    groups: tuple
    protocol: str
    keys: int
    skew: float
    duration_s: float
    fault: str
    phase: str = "load"  # load, workload, check, done
    loaded: int = 0
    load_s: float = 0.0
    keys_per_partition: dict = field(default_factory=dict)  # {partition: keys loaded}, under the first map
    partition_map: Any = None  # the newest map the run knows of
    maps: list = field(default_factory=list)  # (seconds, map): the first, and each one the run published
    map_before: Any = None  # when the split began
    map_after: Any = None  # after the move
    events: list = field(default_factory=list)  # (seconds, what): the split and the move
    faults: list = field(default_factory=list)  # (seconds, what) as the nemesis logs them, "repair" last
    fault_group: str | None = None  # the group the fault hit
    split: dict | None = None
    move: dict | None = None
    before: tuple | None = None
    after: tuple | None = None
    rates_before: dict = field(default_factory=dict)
    rates_after: dict = field(default_factory=dict)
    hot_writes_ok: int = 0
    hot_writes_unknown: int = 0
    hot_reroutes: int = 0  # the hot-spot writer's parts refused under an old map and sent again
    checked: int = 0
    missing: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    workload: PartitionReport | None = None

    @property
    def load(self) -> list:
        """The workload's samples: ``(seconds, {partition: writes its group's leader counted})``."""
        return [] if self.workload is None else self.workload.load

    @property
    def data_ok(self) -> bool:
        """Every loaded key read back with its last acknowledged value or a later one."""
        return self.checked == self.loaded == self.keys and not self.missing and not self.stale

    @property
    def ok(self) -> bool:
        """The workload's checkers and the read-back all passed."""
        return self.workload is not None and self.workload.ok and self.data_ok


# --- load per partition (pure) ---------------------------------------------------------------------


def _increments(load) -> list:
    """``(seconds, {partition: writes since the previous sample, or None})`` for each sample after the first.

    The counters come from whichever replica led each group when sampled, so they are read with
    care: a zero after a positive count is a sample taken while the group had no leader (``stats()``
    then counts nothing): None, not measured; any other drop is a counter from another replica (a
    new leader, or the partition's new group after a move), which counts nothing for that interval
    and is the baseline from then on. A partition new since the last sample (a split) counts from
    zero."""
    out = []
    prev: dict | None = None
    for t, counts in load:
        if prev is None:
            prev = dict(counts)
            continue
        inc: dict[int, int | None] = {}
        for pid, n in counts.items():
            before = prev.get(pid, 0)
            if n == 0 and before > 0:
                inc[pid] = None
                continue  # no leader at that moment: not measured, and the baseline stays
            inc[pid] = n - before if n >= before else 0
            prev[pid] = n
        out.append((t, inc))
    return out


def _span(load, start_s: float, end_s: float) -> tuple | None:
    """The times of the first and last samples from ``start_s`` to ``end_s`` (None: fewer than two)."""
    times = [t for t, _ in load if start_s <= t <= end_s]
    return (times[0], times[-1]) if len(times) >= 2 else None


def load_rates(load, start_s: float, end_s: float) -> dict:
    """``{partition: writes/s}`` over the samples of ``load`` taken from ``start_s`` to ``end_s``
    (empty when fewer than two fall in the window; see :func:`_increments` for how counters from
    different leaders are read)."""
    samples = [(t, counts) for t, counts in load if start_s <= t <= end_s]
    span = _span(samples, start_s, end_s)
    if span is None or span[1] <= span[0]:
        return {}
    totals: dict = {}
    for _, inc in _increments(samples):
        for pid, n in inc.items():
            totals[pid] = totals.get(pid, 0) + (n or 0)
    return {pid: n / (span[1] - span[0]) for pid, n in sorted(totals.items())}


def load_series(load) -> tuple:
    """``(times, {partition: [writes/s between a sample and the one before]})`` for plotting; NaN
    where a partition did not exist (before its split) or its group had no leader, so a plotted line
    starts at the split and breaks where nothing was measured."""
    incs = _increments(load)
    times = [t for t, _ in incs]
    pids = sorted({pid for _, inc in incs for pid in inc})
    prev_t = [t for t, _ in load[:len(incs)]]
    series = {pid: [inc[pid] / (t - t0) if inc.get(pid) is not None and t > t0 else math.nan
                    for (t, inc), t0 in zip(incs, prev_t)] for pid in pids}
    return times, series


def group_series(load, maps) -> tuple:
    """``(times, {group: [writes/s]})``: :func:`load_series` summed per group under the map in force
    at each sample (``maps``: ``(seconds, map)`` in time order, the first in force from the start);
    a partition with nothing measured at a sample adds nothing."""
    times, series = load_series(load)
    groups = sorted({g for _, m in maps for g in m.groups()})
    out: dict = {g: [] for g in groups}
    for i, t in enumerate(times):
        pmap = next(m for s, m in reversed(maps) if s <= t or m is maps[0][1])
        totals = dict.fromkeys(groups, 0.0)
        for p in pmap.partitions:
            v = series[p.id][i] if p.id in series else math.nan
            if not math.isnan(v):
                totals[p.group] += v
        for g in groups:
            out[g].append(totals[g])
    return times, out


def group_rates(rates: dict, pmap) -> dict:
    """``{group: writes/s}``: ``rates`` (per partition) summed by the group ``pmap`` gives each."""
    out = {g: 0.0 for g in pmap.groups()}
    for p in pmap.partitions:
        out[p.group] = out.get(p.group, 0.0) + rates.get(p.id, 0.0)
    return out


# --- the run ---------------------------------------------------------------------------------------


class _HotWriter(threading.Thread):
    """Overwrites loaded keys picked uniformly, in batches numbered 1, 2, ...: a key's value is the
    number of the last batch that wrote it (``acked`` keeps the last acknowledged one per key)."""

    def __init__(self, store, keys: list, rng: random.Random):
        super().__init__(daemon=True, name="partition-demo-hot-writer")
        self.store, self.keys, self.rng = store, keys, rng
        self.acked: dict[bytes, int] = {}
        self.ok = self.unknown = self.reroutes = 0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Write until stopped; an unexpected error is kept for run_demo."""
        try:
            with self.store.client(timeout_s=10.0) as c:
                batch_no = 0
                while not self.stop_event.wait(_HOT_PAUSE_S):
                    batch_no += 1
                    keys = self.rng.sample(self.keys, min(_HOT_BATCH, len(self.keys)))
                    value = b"%d" % batch_no
                    try:
                        c.write([("put", k, value) for k in keys], across_partitions=True)
                    except (CallTimeoutError, DdiaRayError):
                        self.unknown += len(keys)  # some parts may have applied: a later value is fine
                        continue
                    for k in keys:
                        self.acked[k] = batch_no
                    self.ok += len(keys)
                self.reroutes = c.stats["reroutes"]
        except BaseException as e:  # noqa: BLE001 -- raised by run_demo
            self.error = e


class _Scenario(threading.Thread):
    """The scripted changes: split the hottest partition, then move one while a fault hits its group."""

    def __init__(self, store, report: DemoReport, hot: _HotWriter, rng: random.Random, fault_s: float,
                 keys: list):
        super().__init__(daemon=True, name="partition-demo-scenario")
        self.store, self.report, self.hot, self.rng, self.fault_s, self.keys = store, report, hot, rng, fault_s, keys
        self.abort = threading.Event()
        self.start_s = time.monotonic()
        self.error: BaseException | None = None
        self.moved_s: float | None = None  # when the move ended

    def _now(self) -> float:
        return round(time.monotonic() - self.start_s, 3)

    def _wait_until(self, t_s: float) -> bool:
        return not self.abort.wait(max(0.0, t_s - self._now()))

    def run(self) -> None:
        """Split, measure, move; stop the hot-spot writer at the end of the run."""
        try:
            d = self.report.duration_s
            if self._wait_until(SPLIT_AT * d):
                split_done = self._split()
                if self._wait_until(split_done + max(_MEASURE_S_MIN, 0.15 * d)):
                    self._move(split_done)
                    self._wait_until(d)
        except BaseException as e:  # noqa: BLE001 -- raised by run_demo
            self.error = e
        finally:
            self.hot.stop_event.set()

    def _split(self) -> float:
        report, store = self.report, self.store
        pmap = store.partition_map()
        report.map_before = pmap
        live = {p.id for p in pmap.partitions}
        while True:  # the split is decided by the write rates: wait for them, up to SPLIT_BY
            now = self._now()
            load = list(report.load)
            rates = {pid: r for pid, r in load_rates(load, 0.0, now).items() if pid in live}
            if rates or now >= SPLIT_BY * report.duration_s or not self._wait_until(now + _SAMPLE_S):
                break
        report.before = _span(load, 0.0, now)
        report.rates_before = rates
        if not rates:
            report.events.append((now, "no write load measured yet: no split"))
            return now
        hottest = max(sorted(rates), key=lambda pid: rates[pid])
        try:
            new = store.split(hottest)
            outcome = "ok"
        except DdiaRayError as e:  # met a fault, or the partition has one key: recorded, not an error
            new, outcome = None, f"{type(e).__name__}: {str(e)[:160]}"
        done = self._now()
        split: dict = {"partition": hottest, "t_s": now, "took_s": round(done - now, 3), "outcome": outcome,
                       "at": None, "new": None}
        if new is not None:
            at = new.partition(hottest).end
            split.update(at=at, new=next(p.id for p in new.partitions if p.start == at))
            report.partition_map = new
            report.maps.append((done, new))
            report.events.append((now, f"split {hottest} at {_key(at)!r}: {hottest} + {split['new']}"))
        else:
            report.events.append((now, f"split {hottest}: {outcome}"))
        report.split = split
        return done

    def _choose_move(self, pmap, since_s: float) -> tuple:
        """``(partition, group, reason)``: the planner's move by the write rates since ``since_s``, or,
        when no move narrows the gap enough, the busiest group's hottest partition anyway."""
        rates = load_rates(list(self.report.load), since_s, self._now())
        loads = [PartitionLoad(p.id, 0, rates.get(p.id, 0.0)) for p in pmap.partitions]
        moves = [p for p in plan(pmap, loads, sorted(self.store.groups), _MOVE_POLICY) if p.action == "move"]
        if moves:
            return moves[0].partition, moves[0].arg, f"planner: {moves[0].reason}"
        totals = {g: 0.0 for g in sorted(self.store.groups)}
        totals.update(group_rates(rates, pmap))
        heavy = max(sorted(totals), key=lambda g: totals[g])
        light = min(sorted(g for g in totals if g != heavy), key=lambda g: totals[g])
        pid = max(sorted(p.id for p in pmap.partitions if p.group == heavy), key=lambda i: rates.get(i, 0.0))
        return pid, light, "no move narrows the gap between the groups much: the busiest group's hottest anyway"

    def _move(self, since_s: float) -> None:
        report, store = self.report, self.store
        pmap = store.partition_map()
        pid, target, reason = self._choose_move(pmap, since_s + _SAMPLE_S)
        source = pmap.partition(pid).group
        fault = _FaultDuring(store.group(source), report.fault, self.rng, self.start_s, self.fault_s)
        now = self._now()
        fault.start()
        try:
            move_report = store.move(pid, target)
            outcome = "ok"
        except DdiaRayError as e:  # a move that met the fault is abandoned: recorded, not an error
            move_report, outcome = None, f"{type(e).__name__}: {str(e)[:160]}"
        done = self._now()
        fault.join()
        if fault.error is not None:
            raise fault.error
        report.faults.extend(fault.log)
        report.fault_group = source if fault.log else None
        after = store.partition_map()
        p = after.partition(pid)
        moved_keys = sum(1 for k in self.keys if p.owns(k))
        report.move = {"partition": pid, "source": source, "target": target, "reason": reason, "t_s": now,
                       "outcome": outcome, "report": move_report, "keys_loaded_in_it": moved_keys}
        report.events.append((now, f"move {pid} {_short(source, report.store)} -> {_short(target, report.store)}: "
                                   f"{outcome}"))
        report.map_after = report.partition_map = after
        if after.version != pmap.version:
            report.maps.append((done, after))
        self.moved_s = done


class _FaultDuring(threading.Thread):
    """Injects ``kind`` into one replica group at once, repairs it ``fault_s`` later (or never: none)."""

    def __init__(self, group, kind: str, rng: random.Random, start_s: float, fault_s: float):
        super().__init__(daemon=True, name="partition-demo-fault")
        self.schedule = FaultSchedule(group, kind, rng, threading.Event(), start_s, fault_s, 0.0)
        self.kind, self.fault_s = kind, fault_s
        self.error: BaseException | None = None

    @property
    def log(self) -> list:
        return self.schedule.log

    def run(self) -> None:
        """Fault, wait, repair (the repair runs whatever happened)."""
        if self.kind == "none":
            return
        try:
            self.schedule.inject(self.kind)
            time.sleep(self.fault_s)  # the fault lasts this long, whatever the move does
        except BaseException as e:  # noqa: BLE001 -- raised by the scenario
            self.error = e
        finally:
            try:
                self.schedule.repair()
            except BaseException as e:  # noqa: BLE001 -- raised by the scenario
                self.error = self.error or e


def _short(group: str, store: str) -> str:
    """``g1`` for ``<store>-g1``."""
    return group[len(store) + 1:] if group.startswith(store + "-") else group


def run_demo(store, *, keys: int = 2000, skew: float = 1.0, clients: int = 3, duration_s: float = 20.0,
             seed: int = 0, fault: str = "kill-leader", fault_s: float = 2.0,
             progress: Callable[[DemoReport, float], None] | None = None) -> DemoReport:
    """Load, run the workload with the split and the move, read back (see the module docstring).

    ``store`` is a running range-scheme store with two groups or more. ``progress(report, seconds)``
    is called after each loaded batch (seconds since the load began) and at each load sample of the
    workload (seconds since it began); it must not block."""
    if store.scheme != "range":
        raise ConfigError("the demo splits a hot key range: launch the store with scheme='range'")
    if len(store.groups) < 2:
        raise ConfigError("the demo moves a partition to another replica group: launch two groups or more")
    if fault not in FAULTS:
        raise ConfigError(f"unknown fault {fault!r}; use one of {FAULTS}")
    if not isinstance(duration_s, (int, float)) or not 0 < duration_s < math.inf:
        raise ConfigError(f"duration_s is a positive number of seconds, got {duration_s!r}")
    rng = random.Random(seed)
    data = skewed_keys(keys, skew=skew, rng=rng)
    pmap = store.partition_map()
    report = DemoReport(store.name, tuple(sorted(store.groups)), store.options["protocol"], keys, float(skew),
                        float(duration_s), fault, partition_map=pmap, maps=[(0.0, pmap)])
    locator = pmap.locator()
    for k in data:
        pid = locator.locate(k).id
        report.keys_per_partition[pid] = report.keys_per_partition.get(pid, 0) + 1

    began = time.monotonic()
    with store.client(timeout_s=30.0) as c:
        for i in range(0, len(data), _LOAD_BATCH):
            part = data[i:i + _LOAD_BATCH]
            c.write([("put", k, b"0") for k in part], across_partitions=True)
            report.loaded += len(part)
            if progress is not None:
                progress(report, time.monotonic() - began)
    report.load_s = round(time.monotonic() - began, 3)

    report.phase = "workload"
    hot = _HotWriter(store, data, random.Random(rng.getrandbits(64)))
    scenario = _Scenario(store, report, hot, random.Random(rng.getrandbits(64)), fault_s, data)

    def on_sample(now_s: float, workload: PartitionReport) -> None:
        report.workload = workload  # the workload's report, filled as it runs: its load samples
        if progress is not None:
            progress(report, now_s)

    hot.start()
    scenario.start()
    try:
        # The workload's own nemesis makes no change (rebalance=False): the changes are the scenario's.
        workload = run_partition_workload(store, clients=clients, keys=_SHARED_KEYS, duration_s=duration_s,
                                          seed=seed, faults=("none",), rebalance=False,
                                          sample_s=_SAMPLE_S, progress=on_sample)
        scenario.join(max(120.0, duration_s))  # done already, unless its move outlasted the run
    finally:
        scenario.abort.set()
        hot.stop_event.set()
        scenario.join(120)
        hot.join(60)
    for err in (scenario.error, hot.error):
        if err is not None:
            raise err
    report.workload = workload
    report.hot_writes_ok, report.hot_writes_unknown, report.hot_reroutes = hot.ok, hot.unknown, hot.reroutes
    if scenario.moved_s is not None:
        start = scenario.moved_s + 2 * _SAMPLE_S  # the first sample after the move is the baseline
        report.after = _span(report.load, start, duration_s)
        report.rates_after = load_rates(report.load, start, duration_s)

    report.phase = "check"
    _read_back(store, report, data, hot.acked)
    report.phase = "done"
    return report


def _read_back(store, report: DemoReport, keys: list, acked: dict) -> None:
    """Every loaded key must hold the value of its last acknowledged batch or a later one."""
    values: list = []
    with store.client(read="linearizable", timeout_s=30.0) as c:
        for i in range(0, len(keys), 1000):
            values += c.get_many(keys[i:i + 1000])
    for k, v in zip(keys, values):
        if v is None:
            report.missing.append(k)
        elif int(v) < acked.get(k, 0):
            report.stale.append(k)
    report.checked = len(values)


# --- reading the report (pure) ----------------------------------------------------------------------


def verdict_line(report: DemoReport) -> str:
    """``partitioning: ok`` or ``partitioning: FAILED`` (the workload's checkers and the read-back)."""
    return f"partitioning: {'ok' if report.ok else 'FAILED'}"


def _key(k: bytes | None) -> str:
    return "-" if not k else k.decode(errors="backslashreplace")[:8]


def load_rows(pmap, rates: dict, store: str) -> list:
    """``(partition, "[start, end)", group, writes/s, share)`` for each partition of ``pmap`` in key
    order, under ``rates``; groups are named without the store's name (``g1``)."""
    total = sum(rates.values()) or 1.0
    return [(p.id, f"[{_key(p.start)}, {_key(p.end)})", _short(p.group, store), rates.get(p.id, 0.0),
             rates.get(p.id, 0.0) / total) for p in pmap.partitions]


def group_rows(pmap, rates: dict, store: str) -> list:
    """``(group, writes/s, share)`` for each group of ``pmap``, in name order (see :func:`load_rows`)."""
    total = sum(rates.values()) or 1.0
    return [(_short(g, store), r, r / total) for g, r in sorted(group_rates(rates, pmap).items())]


def _load_table(title: str, window: tuple | None, pmap, rates: dict, store: str) -> list:
    if window is None or pmap is None or not rates:
        return [f"  {title}: no samples (run longer)"]
    lines = [f"  {title} ({window[0]:.1f}-{window[1]:.1f} s), writes per second:",
             "    partition  range               group   writes/s  share"]
    for pid, span, group, r, share in load_rows(pmap, rates, store):
        lines.append(f"    {pid:>9}  {span:<18}  {group:<6} {r:9.1f}  {share:5.0%}  " + "#" * round(20 * share))
    lines.append("    groups: " + ", ".join(f"{g} {r:.1f}/s ({share:.0%})" for g, r, share in group_rows(pmap, rates,
                                                                                                    store)))
    return lines


def summary_lines(report: DemoReport) -> list:
    """The text summary of ``report``; the last line is :func:`verdict_line`."""
    store = report.store
    lines = [f"range-partitioned store {store!r}: {len(report.groups)} groups ({report.protocol}), {report.keys} keys "
             f"loaded with Zipf skew {report.skew:g} in {report.load_s:.1f} s, {report.duration_s:g} s of workload",
             "  keys loaded per partition: " + ", ".join(f"{pid}: {n}"
                                                          for pid, n in sorted(report.keys_per_partition.items()))]
    lines += _load_table("load before the split", report.before, report.map_before, report.rates_before, store)
    s = report.split
    if s is None:
        lines.append("  split: none (the run ended first)")
    elif s["outcome"] == "ok":
        lines.append(f"  split: partition {s['partition']} (the hottest) at {_key(s['at'])!r} at {s['t_s']:.1f} s "
                     f"into {s['partition']} + {s['new']}, in {s['took_s']:.2f} s")
    else:
        lines.append(f"  split of partition {s['partition']} at {s['t_s']:.1f} s: {s['outcome']}")
    m = report.move
    if m is None:
        lines.append("  move: none (the run ended first)")
    else:
        head = (f"  move: partition {m['partition']} {_short(m['source'], store)} -> {_short(m['target'], store)} "
                f"at {m['t_s']:.1f} s ({m['reason']})")
        r = m["report"]
        if r is None:
            lines += [head, f"    abandoned: {m['outcome']}"]
        else:
            lines += [head, f"    data moved: {r['copied']} keys copied, {r['caught_up']} caught up after the freeze "
                            f"({m['keys_loaded_in_it']} loaded keys live in it); copy {r['copy_s']:.2f} s, writes "
                            f"frozen {r['frozen_s'] * 1000:.0f} ms, {r['total_s']:.2f} s in all, map version "
                            f"{r['version']}"]
    lines += _load_table("load after the move", report.after, report.map_after, report.rates_after, store)
    lines.append("  timeline:")
    where = _short(report.fault_group or "", store)
    lines += [f"    {t:7.2f} s  {what}" for t, what in sorted(report.events + [(t, f"{where}: {what}")
                                                                           for t, what in report.faults])]
    lines.append(f"  hot-spot writer: {report.hot_writes_ok} writes acknowledged, {report.hot_writes_unknown} with an "
                 f"unknown outcome, {report.hot_reroutes} reroutes")
    lines.append(f"  data: {report.checked} of {report.keys} loaded keys read back, {len(report.missing)} missing, "
                 f"{len(report.stale)} older than their last acknowledged write")
    if report.missing or report.stale:
        lines.append("    e.g. " + ", ".join(_key(k) for k in (report.missing + report.stale)[:5]))
    if report.workload is not None:
        lines += ["  workload: " + report.workload.summary()[0]] + \
                 [f"    {line}" for line in report.workload.summary()[2:-1]]
    lines.append(verdict_line(report))
    return lines
