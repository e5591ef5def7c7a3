"""A workload with a fault schedule on a replicated store, ending in the checkers' verdicts.

Theory of operation
-------------------
:func:`run_workload` starts ``clients`` threads, each with its own
:class:`~.client.ReplicatedClient` session reading as ``read`` says. Each
thread mixes three operations:

* a *ledger* write: a put of a key no one else writes (``<run>:w:<client>:<n>``).
  At the end, every acknowledged ledger key is read back from the leader: a
  missing one is an acknowledged write the store lost;
* a write of one of a few shared keys with a value unique to this write; its
  *version* is the position ``(lsn, epoch)`` the store acknowledged it at;
* a read of a shared key.

The shared-key operations go into a :class:`~ddia_ray.history.HistoryRecorder`
and are checked for read-your-writes and monotonic reads with
:func:`~ddia_ray.history.check_sessions` (meaningful for ``session``,
``leader`` and ``linearizable`` reads; ``follower`` reads promise neither,
so their violations are reported as observations, not failures).

Meanwhile :class:`~ddia_ray.kv.workload.FaultSchedule` (the same one the
RaftKV workload uses) applies one of its schedules in cycles, and a sampler
records every replica's role, epoch, applied position and staleness, and the
leader's lag per follower, for plots. At the end the faults are repaired, the
followers catch up, and the verdicts are:

* **durability**: in ``sync`` and ``semi-sync`` mode no acknowledged ledger
  write is missing; in ``async`` mode the missing ones are exactly the lost
  writes the store reports (its promise: count them, list them, hide none);
* **sessions**: no session-guarantee violation;
* **linearizability** (the Raft protocol): the shared-key history is checked
  with :func:`~ddia_ray.history.check`, as the RaftKV workload's is.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..errors import CallTimeoutError, ConfigError, DdiaRayError, SessionError
from ..history import HistoryRecorder, check, check_sessions, describe, describe_sessions
from ..kv.workload import SCHEDULES, FaultSchedule, wind_down

__all__ = ["run_workload", "ReplicationReport", "SCHEDULES"]


@dataclass
class ReplicationReport:
    """What a workload run did and what the checkers said."""

    mode: str
    read: str
    schedule: str
    duration_s: float
    writes_ok: int = 0
    reads_ok: int = 0
    unknown: int = 0
    broken_sessions: int = 0  # sessions told (SessionError) that a write they saw was lost; each started anew
    throughput_ops_s: float = 0.0
    write_latency_ms: dict = field(default_factory=dict)
    read_latency_ms: dict = field(default_factory=dict)
    faults: list = field(default_factory=list)
    samples: list = field(default_factory=list)  # (t, node, role, epoch, applied, staleness_s)
    lag: list = field(default_factory=list)  # (t, follower, entries behind the leader)
    failovers: list = field(default_factory=list)  # (t, epoch, leader)
    acked_ledger: int = 0
    missing: list = field(default_factory=list)  # acknowledged ledger keys not in the store at the end
    reported_lost: int = 0  # lost writes the store reported
    reported_missing: int = 0  # of the missing keys, how many the store reported as lost
    durability_ok: bool | None = None
    durability: str = ""
    sessions_ok: bool | None = None
    sessions: str = ""
    linearizable: bool | None = None  # checked under the Raft protocol only
    verdict: str = ""

    @property
    def ok(self) -> bool:
        """Both verdicts passed (sessions only where the read mode promises them)."""
        return (bool(self.durability_ok) and (self.sessions_ok is not False or self.read == "follower")
                and self.linearizable is not False)


def _percentiles(values: list) -> dict:
    if not values:
        return {}
    v = sorted(values)
    return {q: round(v[min(len(v) - 1, int(f * len(v)))] * 1000, 2)
            for q, f in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}


class _Worker(threading.Thread):
    def __init__(self, store, idx: int, clients: int, run: str, keys: list, rec: HistoryRecorder, rng: random.Random,
                 stop: threading.Event, read: str, op_timeout_s: float):
        super().__init__(daemon=True, name=f"repl-workload-{idx}")
        self.store, self.idx, self.clients, self.run_id, self.keys = store, idx, clients, run, keys
        self.rec, self.rng, self.stop, self.read, self.op_timeout_s = rec, rng, stop, read, op_timeout_s
        self.acked: list[bytes] = []
        self.write_lat: list[float] = []
        self.read_lat: list[float] = []
        self.unknown = 0
        self.broken_sessions = 0  # sessions the store told that a write they saw was lost
        self.error: BaseException | None = None

    def run(self) -> None:
        """Issue operations until stopped; an unexpected error is kept for run_workload."""
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 -- reported by run_workload
            self.error = e

    def _client(self, generation: int):
        return self.store.client(read=self.read, timeout_s=self.op_timeout_s, rpc_timeout_s=0.5,
                                 name=f"workload-{self.run_id}-{self.idx}-{generation}")

    def _loop(self) -> None:
        process, n, generation = self.idx, 0, 0
        c = self._client(generation)
        try:
            while not self.stop.is_set():
                n += 1
                try:
                    process = self._one(c, process, n)
                except SessionError:
                    # The store says a write this session saw was lost (async failover): the session's
                    # guarantees cannot hold any more. Start a new one, as an application would.
                    self.broken_sessions += 1
                    process += self.clients
                    c.close()
                    generation += 1
                    c = self._client(generation)
        finally:
            c.close()

    def _one(self, c, process: int, n: int) -> int:
        """One operation; returns the Jepsen process to use from now on."""
        r = self.rng.random()
        t0 = time.monotonic()
        if r < 0.4:
            key = f"{self.run_id}:w:{self.idx}:{n}".encode()
            try:
                c.put(key, b"1")
            except SessionError:
                raise  # refused before it was ordered: it did not happen
            except (CallTimeoutError, DdiaRayError):
                self.unknown += 1
                return process
            self.acked.append(key)
            self.write_lat.append(time.monotonic() - t0)
        elif r < 0.7:
            key = self.rng.choice(self.keys)
            value = b"%d:%d" % (self.idx, n)
            op = self.rec.invoke(process, "write", key, value)
            try:
                c.put(key, value)
            except SessionError as e:
                self.rec.fail(op, e)  # the leader refused it before ordering it
                raise
            except (CallTimeoutError, DdiaRayError) as e:
                self.rec.info(op, e)
                self.unknown += 1
                return process + self.clients  # its outcome is unknown: a new process from here (Jepsen)
            s = c.session
            # Its position, epoch first (records.later); a session that has just seen two histories is
            # lost, and its write acknowledged at a position it cannot tell: no version, undetermined.
            self.rec.ok(op, None if s.lost else (s.write_epoch, s.write_lsn))
            self.write_lat.append(time.monotonic() - t0)
        else:
            key = self.rng.choice(self.keys)
            op = self.rec.invoke(process, "read", key, None)
            try:
                value = c.get(key)
            except SessionError as e:
                self.rec.fail(op, e)
                raise
            except (CallTimeoutError, DdiaRayError) as e:
                self.rec.fail(op, e)  # a read changes nothing: leave it out
                return process
            self.rec.ok(op, value)
            self.read_lat.append(time.monotonic() - t0)
        return process


def run_workload(store, *, clients: int = 4, keys: int = 3, duration_s: float = 10.0, schedule: str = "mixed",
                 read: str = "session", seed: int = 0, fault_s: float = 1.5, calm_s: float = 1.0,
                 op_timeout_s: float = 5.0, sample_s: float = 0.1, settle_s: float = 30.0,
                 progress=None) -> ReplicationReport:
    """Run the workload (see the module docstring) and return its :class:`ReplicationReport`."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown nemesis schedule {schedule!r}; use one of {SCHEDULES}")
    rng = random.Random(seed)
    rec = HistoryRecorder()
    run_id = uuid.uuid4().hex[:8]
    shared = [f"{run_id}:k{i}".encode() for i in range(keys)]
    stop, nemesis_stop = threading.Event(), threading.Event()
    report = ReplicationReport(store.mode, read, schedule, duration_s)
    start = time.monotonic()
    workers = [_Worker(store, i, clients, run_id, shared, rec, random.Random(rng.getrandbits(64)), stop, read,
                       op_timeout_s) for i in range(clients)]
    nemesis = FaultSchedule(store, schedule, random.Random(rng.getrandbits(64)), nemesis_stop, start, fault_s, calm_s)
    for w in workers:
        w.start()
    if schedule != "none":
        nemesis.start()
    last_epoch = 0
    while time.monotonic() - start < duration_s:
        now = round(time.monotonic() - start, 3)
        try:
            statuses = store.status()
        except DdiaRayError:
            statuses = {}
        for node, st in statuses.items():
            report.samples.append((now, node, st["role"], st["epoch"], st["applied"], st["staleness_s"]))
            if st["role"] == "leader":
                for follower, behind in st["lag_entries"].items():
                    if behind is not None:  # None: the new leader has not heard from it yet
                        report.lag.append((now, follower, behind))
                if st["epoch"] > last_epoch:
                    last_epoch = st["epoch"]
                    report.failovers.append((now, st["epoch"], node))
        if progress is not None:
            progress(now, sum(len(w.write_lat) + len(w.read_lat) for w in workers))
        time.sleep(sample_s)
    wind_down(nemesis, nemesis_stop, stop, workers, worker_join_s=op_timeout_s + 10)
    elapsed = time.monotonic() - start
    report.faults = nemesis.log
    report.writes_ok = sum(len(w.write_lat) for w in workers)
    report.reads_ok = sum(len(w.read_lat) for w in workers)
    report.unknown = sum(w.unknown for w in workers)
    report.broken_sessions = sum(w.broken_sessions for w in workers)
    report.throughput_ops_s = round((report.writes_ok + report.reads_ok) / elapsed, 1)
    report.write_latency_ms = _percentiles([x for w in workers for x in w.write_lat])
    report.read_latency_ms = _percentiles([x for w in workers for x in w.read_lat])
    _check_durability(store, report, [k for w in workers for k in w.acked], settle_s)
    ops = rec.operations()
    result = check_sessions(ops)
    report.sessions_ok = result.ok
    report.sessions = describe_sessions(result)
    if store.protocol == "raft" and read in ("linearizable", "leader"):
        lin = check(ops, timeout_s=120)
        report.linearizable = lin.ok
        report.verdict = describe(lin)
    return report


def _check_durability(store, report: ReplicationReport, acked: list, settle_s: float) -> None:
    """Read every acknowledged ledger key back from the leader once the group has settled."""
    deadline = time.monotonic() + settle_s
    leader = store.leader(timeout_s=settle_s)
    while time.monotonic() < deadline:  # let every follower catch up (and a deposed leader resync)
        statuses = store.status()
        if leader in statuses and all(s["applied"] >= statuses[leader]["applied"] and not s["needs_checkpoint"]
                                      for s in statuses.values()):
            break
        time.sleep(0.1)
    report.acked_ledger = len(acked)
    with store.client(read="leader", timeout_s=settle_s) as c:
        present = []
        for i in range(0, len(acked), 1000):
            present += c.get_many(acked[i:i + 1000])
    missing = [k for k, v in zip(acked, present) if v is None]
    stats = store.stats()
    lost_keys = {k for e in stats["lost"] for k in e["keys"]}
    report.missing = missing
    report.reported_lost = stats["lost_writes"]
    report.reported_missing = sum(1 for k in missing if k in lost_keys)
    if store.mode != "async":  # sync, semi-sync, and Raft (a majority has every acknowledged write)
        report.durability_ok = not missing
        report.durability = (f"{len(missing)} of {len(acked)} acknowledged writes missing; "
                             f"{store.mode} mode allows 0")
    else:
        hidden = len(missing) - report.reported_missing
        report.durability_ok = hidden == 0
        report.durability = (f"{len(missing)} of {len(acked)} acknowledged writes missing, {report.reported_missing} "
                             f"of them reported lost by the store ({hidden} hidden); async mode allows losses "
                             f"only if reported")
