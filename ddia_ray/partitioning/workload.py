"""A Jepsen-style workload on a partitioned store: clients write and read while partitions move and
replica groups lose leaders and links, ending in the checkers' verdicts.

Theory of operation
-------------------
:func:`run_partition_workload` starts ``clients`` threads, each with its own partition-aware
client reading linearizably. Each thread mixes:

* a *ledger* write: a put of a key no one else writes. At the end every acknowledged ledger key
  is read back; a missing one is an acknowledged write the store lost;
* a write of one of a few shared keys (spread over the partitions) with a value unique to it;
* a read of a shared key.

The shared-key operations go into a :class:`~ddia_ray.history.HistoryRecorder`; under the Raft
protocol the history is checked for linearizability, key by key
(:func:`~ddia_ray.history.check`). An operation whose outcome is unknown (a timeout) is recorded
as such and its process is retired, as Jepsen does.

Meanwhile a nemesis runs cycles of: a fault in one replica group (its leader killed, or cut off
from everyone), a *rebalance* at the same time (a partition moved to another group; under the
range scheme now and then a split or a merge), then the repair and a calm spell. A change that
meets a fault may fail and be abandoned (:mod:`.changes`); that is recorded, not an error.

At the end the faults are repaired and the verdicts are: **durability** (no acknowledged ledger
write missing), **scan** (a full scan returns every key once, and every acknowledged ledger key),
and **linearizability** (Raft).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from ..errors import CallTimeoutError, ConfigError, DdiaRayError
from ..history import HistoryRecorder, check, describe
from ..kv.workload import FaultSchedule, wind_down

__all__ = ["run_partition_workload", "PartitionReport", "FAULTS"]

#: Faults the nemesis injects into one group per cycle, next to a rebalance.
FAULTS = ("kill-leader", "partition-leader", "none")


@dataclass
class PartitionReport:
    """What a partitioned workload run did and what the checkers said."""

    scheme: str
    protocol: str
    duration_s: float
    writes_ok: int = 0
    reads_ok: int = 0
    unknown: int = 0
    reroutes: int = 0
    throughput_ops_s: float = 0.0
    faults: list = field(default_factory=list)  # (seconds since start, what)
    changes: list = field(default_factory=list)  # (seconds since start, what, outcome)
    load: list = field(default_factory=list)  # (seconds since start, {pid: writes counted})
    acked_ledger: int = 0
    missing: list = field(default_factory=list)
    scanned: int = 0
    duplicates: int = 0
    durability_ok: bool | None = None
    scan_ok: bool | None = None
    linearizable: bool | None = None
    verdict: str = ""

    @property
    def ok(self) -> bool:
        """Every verdict passed (linearizability only where it was checked)."""
        return bool(self.durability_ok) and bool(self.scan_ok) and self.linearizable is not False

    def summary(self) -> list[str]:
        """Lines for a terminal."""
        moved = sum(1 for _, _, outcome in self.changes if outcome == "ok")
        return [f"{self.writes_ok} writes, {self.reads_ok} reads acknowledged ({self.throughput_ops_s} ops/s), "
                f"{self.unknown} with an unknown outcome, {self.reroutes} reroutes",
                f"{len(self.faults)} faults, {len(self.changes)} changes ({moved} done)",
                f"durability: {len(self.missing)} of {self.acked_ledger} acknowledged ledger writes missing",
                f"scan: {self.scanned} keys, {self.duplicates} returned twice",
                f"linearizability: {self.verdict or 'not checked (leader-follower)'}",
                f"partitioning: {'ok' if self.ok else 'FAILED'}"]


class _Worker(threading.Thread):
    def __init__(self, store, idx: int, clients: int, run: str, keys: list, rec: HistoryRecorder, rng: random.Random,
                 stop: threading.Event, op_timeout_s: float):
        super().__init__(daemon=True, name=f"partition-workload-{idx}")
        self.store, self.idx, self.clients, self.run_id, self.keys = store, idx, clients, run, keys
        self.rec, self.rng, self.stop, self.op_timeout_s = rec, rng, stop, op_timeout_s
        self.acked: list[bytes] = []
        self.writes = self.reads = self.unknown = self.reroutes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Issue operations until stopped; an unexpected error is kept for the caller."""
        try:
            with self.store.client(read="linearizable", timeout_s=self.op_timeout_s, rpc_timeout_s=0.5) as c:
                process, n = self.idx, 0
                while not self.stop.is_set():
                    n += 1
                    process = self._one(c, process, n)
                self.reroutes = c.stats["reroutes"]
        except BaseException as e:  # noqa: BLE001 -- reported by run_partition_workload
            self.error = e

    def _one(self, c, process: int, n: int) -> int:
        r = self.rng.random()
        if r < 0.4:
            key = f"{self.run_id}:w:{self.idx}:{n}".encode()
            try:
                c.put(key, b"1")
            except (CallTimeoutError, DdiaRayError):
                self.unknown += 1
                return process
            self.acked.append(key)
            self.writes += 1
        elif r < 0.7:
            key = self.rng.choice(self.keys)
            value = b"%d:%d" % (self.idx, n)
            op = self.rec.invoke(process, "write", key, value)
            try:
                c.put(key, value)
            except (CallTimeoutError, DdiaRayError) as e:
                self.rec.info(op, e)
                self.unknown += 1
                return process + self.clients  # its outcome is unknown: a new process from here (Jepsen)
            self.rec.ok(op, None)
            self.writes += 1
        else:
            key = self.rng.choice(self.keys)
            op = self.rec.invoke(process, "read", key, None)
            try:
                value = c.get(key)
            except (CallTimeoutError, DdiaRayError) as e:
                self.rec.fail(op, e)  # a read changes nothing: leave it out
                return process
            self.rec.ok(op, value)
            self.reads += 1
        return process


class _Nemesis(threading.Thread):
    """Cycles of: a fault in one group and a rebalance at once, then repair and calm."""

    def __init__(self, store, faults: tuple, rng: random.Random, stop: threading.Event, start: float,
                 fault_s: float, calm_s: float, report: PartitionReport, rebalance: bool = True):
        super().__init__(daemon=True, name="partition-nemesis")
        self.store, self.faults, self.rng, self.stop_event = store, faults, rng, stop
        self.start_s, self.fault_s, self.calm_s, self.report = start, fault_s, calm_s, report
        self.rebalance = rebalance
        self.error: BaseException | None = None
        self._active: list[FaultSchedule] = []

    def _t(self) -> float:
        return round(time.monotonic() - self.start_s, 3)

    def run(self) -> None:
        """Cycle until stopped (an exception is kept for the caller)."""
        try:
            while not self.stop_event.wait(self.calm_s):
                began = time.monotonic()
                kind = self.rng.choice(self.faults)
                if kind != "none":
                    group = self.rng.choice(sorted(self.store.groups))
                    schedule = FaultSchedule(self.store.group(group), kind, self.rng, threading.Event(),
                                             self.start_s, self.fault_s, self.calm_s)
                    schedule.inject(kind)
                    self._active.append(schedule)
                    self.report.faults.extend((t, f"{group}: {what}") for t, what in schedule.log)
                if self.rebalance:
                    self._rebalance()
                left = self.fault_s - (time.monotonic() - began)
                if left > 0 and self.stop_event.wait(left):
                    break
                self.repair()
        except BaseException as e:  # noqa: BLE001 -- reported by run_partition_workload
            self.error = e

    def _rebalance(self) -> None:
        store = self.store
        pmap = store.partition_map()
        p = self.rng.choice(pmap.partitions)
        others = [g for g in sorted(store.groups) if g != p.group]
        r = self.rng.random()
        try:
            if pmap.scheme == "range" and r < 0.2:
                what = f"split {p.id}"
                store.split(p.id)
            elif pmap.scheme == "range" and r < 0.35 and len(pmap.partitions) > 2:
                i = self.rng.randrange(len(pmap.partitions) - 1)
                a, b = pmap.partitions[i], pmap.partitions[i + 1]
                what = f"merge {a.id}+{b.id}"
                if a.group != b.group:
                    store.move(b.id, a.group)
                store.merge(a.id, b.id)
            elif others:
                target = self.rng.choice(others)
                what = f"move {p.id} to {target}"
                store.move(p.id, target)
            else:
                return
            outcome = "ok"
        except DdiaRayError as e:  # a change that met the fault: abandoned, or refused as input
            outcome = f"{type(e).__name__}: {str(e)[:120]}"
        self.report.changes.append((self._t(), what, outcome))

    def repair(self) -> None:
        """Undo every fault this nemesis injected."""
        for schedule in self._active:
            schedule.repair()
            self.report.faults.extend((t, f"{schedule.cluster.name}: {what}") for t, what in schedule.log
                                      if what == "repair")
        self._active.clear()


def run_partition_workload(store, *, clients: int = 3, keys: int = 6, duration_s: float = 10.0, seed: int = 0,
                           faults: tuple = FAULTS, fault_s: float = 2.0, calm_s: float = 1.0,
                           op_timeout_s: float = 5.0, sample_s: float = 0.25, check_s: float = 120.0,
                           rebalance: bool = True, progress=None) -> PartitionReport:
    """Run the workload (see the module docstring) on ``store`` (a PartitionedStore). ``rebalance=False``:
    the nemesis injects its faults without changing the partitions (the caller makes its own changes)."""
    bad = set(faults) - set(FAULTS)
    if bad:
        raise ConfigError(f"unknown fault(s) {sorted(bad)}; use some of {FAULTS}")
    rng = random.Random(seed)
    rec = HistoryRecorder()
    run_id = "%08x" % rng.getrandbits(32)  # from the seed: the same keys, so the same partitions, every run
    shared = [f"{run_id}:k{i}".encode() for i in range(keys)]
    report = PartitionReport(store.scheme, store.options["protocol"], duration_s)
    stop, nemesis_stop = threading.Event(), threading.Event()
    start = time.monotonic()
    workers = [_Worker(store, i, clients, run_id, shared, rec, random.Random(rng.getrandbits(64)), stop,
                       op_timeout_s) for i in range(clients)]
    nemesis = _Nemesis(store, tuple(faults), random.Random(rng.getrandbits(64)), nemesis_stop, start, fault_s,
                       calm_s, report, rebalance)
    for w in workers:
        w.start()
    nemesis.start()
    while time.monotonic() - start < duration_s:
        time.sleep(sample_s)
        now = round(time.monotonic() - start, 3)
        try:
            report.load.append((now, {pid: p["writes"] for pid, p in store.stats()["partitions"].items()}))
        except DdiaRayError:
            pass  # a group without a leader this moment: no sample
        if progress is not None:
            progress(now, report)
    wind_down(nemesis, nemesis_stop, stop, workers, worker_join_s=op_timeout_s + 30, nemesis_join_s=120.0)
    elapsed = time.monotonic() - start
    report.writes_ok = sum(w.writes for w in workers)
    report.reads_ok = sum(w.reads for w in workers)
    report.unknown = sum(w.unknown for w in workers)
    report.reroutes = sum(w.reroutes for w in workers)
    report.throughput_ops_s = round((report.writes_ok + report.reads_ok) / elapsed, 1)
    acked = [k for w in workers for k in w.acked]
    _final_checks(store, report, acked, op_timeout_s)
    if report.protocol == "raft":
        result = check(rec.operations(), timeout_s=check_s)
        report.linearizable = result.ok
        report.verdict = describe(result)
    return report


def _final_checks(store, report: PartitionReport, acked: list, op_timeout_s: float) -> None:
    """Read back every acknowledged ledger key, and scan the whole store once."""
    report.acked_ledger = len(acked)
    with store.client(read="linearizable", timeout_s=max(30.0, op_timeout_s)) as c:
        present: list = []
        for i in range(0, len(acked), 1000):
            present += c.get_many(acked[i:i + 1000])
        scanned = [k for batch in c.scan(pinned=True) for k in batch.column(0).to_pylist()]
    report.missing = [k for k, v in zip(acked, present) if v is None]
    report.durability_ok = not report.missing
    report.scanned = len(scanned)
    report.duplicates = len(scanned) - len(set(scanned))
    report.scan_ok = report.duplicates == 0 and set(acked) <= set(scanned) and (
        store.scheme != "range" or scanned == sorted(scanned))
