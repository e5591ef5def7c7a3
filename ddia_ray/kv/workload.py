"""A Jepsen-style workload on a RaftKV cluster on Ray: concurrent clients, a nemesis, a verdict.

Theory of operation
-------------------
:func:`run_workload` starts ``clients`` threads, each with its own
:class:`~.client.RaftKVClient` session, doing random ``read`` / ``write`` /
``cas`` on a few keys (small value domains, so cas often succeeds and reads
can expose stale or lost writes), fresh for every run because the checker
starts from "every key absent". Every operation is recorded in a
:class:`~ddia_ray.history.HistoryRecorder`: ``ok`` with its result, ``fail``
when it certainly did not happen (a read that never got an answer changes
nothing), ``info`` when the outcome is unknown (a write that timed out may
still apply). After an ``info`` the thread continues as a new process, as
Jepsen does.

Meanwhile a nemesis thread runs one of :data:`SCHEDULES` in cycles: a fault,
a pause, the repair. At the end everything is healed and restarted, the
threads drain, and the history is checked for linearizability with
:func:`ddia_ray.history.check`. A sampler records every member's term, role
and commit index over time for plots.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CallTimeoutError, ConfigError
from ..history import HistoryRecorder, check, describe

__all__ = ["run_workload", "WorkloadReport", "SCHEDULES", "FaultSchedule"]

#: The nemesis schedules: each cycle applies the fault, waits, then repairs. ``replace-follower``
#: removes a follower and adds a new member in its place (a membership change under load; the new
#: member catches up from a snapshot or checkpoint); ``mixed`` draws from the faults before it.
SCHEDULES = ("partition-leader", "kill-leader", "kill-follower", "pause-leader", "partition-halves",
             "replace-follower", "mixed", "none")


@dataclass
class WorkloadReport:
    """What a workload run did and what the checker said."""

    schedule: str
    duration_s: float
    ops: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    throughput_ops_s: float = 0.0
    latency_ms: dict = field(default_factory=dict)
    elections: int = 0  # terms that had a leader, begun during the run
    terms: tuple = ()  # (term, leader) of those
    faults: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    linearizable: bool | None = None
    verdict: str = ""
    check_s: float = 0.0


def _percentiles(values: list) -> dict:
    if not values:
        return {}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(v[-1] * 1000, 2)}


class FaultSchedule(threading.Thread):
    """Applies one of :data:`SCHEDULES` in cycles (calm, fault, repair) to any component with
    ``leader()``, ``members`` and the nemesis verbs (RaftKV, a replicated store); ``log`` holds
    ``(seconds since start, what)`` for every fault and repair."""

    def __init__(self, cluster, schedule: str, rng: random.Random, stop: threading.Event, start_s: float,
                 fault_s: float, calm_s: float):
        super().__init__(daemon=True, name="ddia-ray-nemesis")
        self.cluster, self.schedule, self.rng, self.stop_event = cluster, schedule, rng, stop
        self.start_s, self.fault_s, self.calm_s = start_s, fault_s, calm_s
        self.log: list = []
        self.killed: set = set()
        self.paused: set = set()
        self.error: BaseException | None = None

    def _note(self, what: str) -> None:
        self.log.append((round(time.monotonic() - self.start_s, 3), what))

    def run(self) -> None:
        """Cycle fault, wait, repair until stopped (an exception is kept for run_workload)."""
        try:
            kinds = [s for s in SCHEDULES if s not in ("mixed", "none", "replace-follower")]
            while not self.stop_event.wait(self.calm_s):
                kind = self.rng.choice(kinds) if self.schedule == "mixed" else self.schedule
                self.inject(kind)
                if self.stop_event.wait(self.fault_s):
                    break
                self.repair()
        except BaseException as e:  # noqa: BLE001 -- reported by run_workload
            self.error = e

    def inject(self, kind: str) -> None:
        """Apply one fault of schedule ``kind`` now (:meth:`repair` undoes it); a partitioned store's
        nemesis calls this on one replica group at a time."""
        c = self.cluster
        leader = c.leader()
        others = [m for m in c.members if m != leader]
        if kind == "partition-leader":
            c.partition([[leader], ["*"]])
            self._note(f"isolate leader {leader}")
        elif kind == "partition-halves":
            side = self.rng.sample(others, 1) + [leader]
            c.partition([side, ["*"]])
            self._note(f"partition {side} | rest")
        elif kind == "kill-leader":
            c.kill(leader)
            self.killed.add(leader)
            self._note(f"kill leader {leader}")
        elif kind == "kill-follower":
            victim = self.rng.choice(others)
            c.kill(victim)
            self.killed.add(victim)
            self._note(f"kill follower {victim}")
        elif kind == "pause-leader":
            c.pause(leader)
            self.paused.add(leader)
            self._note(f"pause leader {leader}")
        elif kind == "replace-follower":
            victim = self.rng.choice(others)
            # A replicated store names these add_replica/remove_replica, RaftKV add_member/remove_member.
            (getattr(c, "remove_replica", None) or c.remove_member)(victim)
            self._note(f"remove follower {victim}")
            self._note(f"add {(getattr(c, 'add_replica', None) or c.add_member)()}")
        elif kind != "none":
            raise ConfigError(f"unknown nemesis schedule {kind!r}; use one of {SCHEDULES}")

    def repair(self) -> None:
        """Heal the network, resume paused and restart killed members."""
        c = self.cluster
        faulted = bool(self.paused or self.killed or c.nemesis.config.groups)
        c.heal()
        for n in sorted(self.paused):
            c.resume(n)
        for n in sorted(self.killed):
            c.restart(n)
        self.paused.clear()
        self.killed.clear()
        if faulted:
            self._note("repair")


def wind_down(nemesis: threading.Thread, nemesis_stop: threading.Event, stop: threading.Event, workers: list, *,
              worker_join_s: float, nemesis_join_s: float = 60.0) -> None:
    """End a workload run: stop the nemesis and repair its faults, then stop the client threads;
    raise the error that stopped the nemesis or a client (each keeps it in ``error``), if any."""
    nemesis_stop.set()
    if nemesis.is_alive():
        nemesis.join(nemesis_join_s)
    nemesis.repair()  # type: ignore[attr-defined]
    stop.set()
    for w in workers:
        w.join(worker_join_s)
    for err in [getattr(t, "error", None) for t in (nemesis, *workers)]:
        if err is not None:
            raise err


def _client_loop(cluster, idx: int, clients: int, keys: list, rec: HistoryRecorder, rng: random.Random,
                 stop: threading.Event, latencies: list, op_timeout_s: float) -> None:
    process = idx
    with cluster.client(timeout_s=op_timeout_s, rpc_timeout_s=0.5, name=f"jepsen-{idx}-{uuid.uuid4().hex[:12]}") as kv:
        while not stop.is_set():
            key = rng.choice(keys)
            r = rng.random()
            value: Any
            call: Callable[[], Any]
            if r < 0.4:
                f, value, call = "read", None, functools.partial(kv.get, key)
            elif r < 0.8:
                v = b"%d" % rng.randrange(10)  # values are bytes (keys may be str: the client encodes them)
                f, value, call = "write", v, functools.partial(kv.put, key, v)
            else:
                exp, new = b"%d" % rng.randrange(10), b"%d" % rng.randrange(10)
                f, value, call = "cas", (exp, new), functools.partial(kv.cas, key, exp, new)
            op = rec.invoke(process, f, key, value)
            t0 = time.monotonic()
            try:
                result = call()
            except CallTimeoutError as e:
                if f == "read":
                    rec.fail(op, e)  # a read has no effect: it can safely be left out
                else:
                    rec.info(op, e)
                    process += clients  # a process with an unknown outcome is crashed (Jepsen)
                continue
            latencies.append(time.monotonic() - t0)
            rec.ok(op, result)


def run_workload(cluster, *, clients: int = 4, keys: int = 3, duration_s: float = 10.0, schedule: str = "mixed",
                 seed: int = 0, fault_s: float = 1.5, calm_s: float = 1.0, op_timeout_s: float = 3.0,
                 sample_s: float = 0.1, progress=None) -> WorkloadReport:
    """Run the workload (see the module docstring) and return its :class:`WorkloadReport`."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown nemesis schedule {schedule!r}; use one of {SCHEDULES}")
    rng = random.Random(seed)
    rec = HistoryRecorder()
    # Fresh keys for every run: the checker starts from "absent", so earlier runs must not show through.
    run_id = uuid.uuid4().hex[:8]
    key_names = [f"{run_id}:k{i}" for i in range(keys)]
    stop, nemesis_stop = threading.Event(), threading.Event()
    latencies: list = []
    first_term = max((s["term"] for s in cluster.status().values()), default=0)  # elections count from here
    start = time.monotonic()
    threads = [threading.Thread(target=_client_loop, daemon=True,
                                args=(cluster, i, clients, key_names, rec, random.Random(rng.getrandbits(64)), stop,
                                      latencies, op_timeout_s)) for i in range(clients)]
    nemesis = FaultSchedule(cluster, schedule, random.Random(rng.getrandbits(64)), nemesis_stop, start, fault_s, calm_s)
    report = WorkloadReport(schedule, duration_s)
    for t in threads:
        t.start()
    if schedule != "none":
        nemesis.start()
    while time.monotonic() - start < duration_s:
        try:
            statuses = cluster.status()
        except Exception:  # noqa: BLE001 -- a member died between listing and asking
            statuses = {}
        now = round(time.monotonic() - start, 3)
        for n, s in statuses.items():
            report.samples.append((now, n, s["term"], s["role"], s["commit"]))
        if progress is not None:
            progress(now, len(latencies))
        time.sleep(sample_s)
    wind_down(nemesis, nemesis_stop, stop, threads, worker_join_s=op_timeout_s + 10)
    elapsed = time.monotonic() - start
    ops = rec.operations()
    report.faults = nemesis.log
    report.ops = len(ops)
    report.ok = sum(1 for o in ops if o.status == "ok")
    report.failed = sum(1 for o in ops if o.status == "fail")
    report.unknown = len(ops) - report.ok - report.failed
    report.throughput_ops_s = round(report.ok / elapsed, 1)
    report.latency_ms = _percentiles(latencies)
    terms = {}
    for st in cluster.status().values():
        for _, term, _role, lead, _ in st["timeline"]:
            if lead and term > first_term:
                terms[term] = lead
    report.terms = tuple(sorted(terms.items()))
    report.elections = len(terms)
    t0 = time.monotonic()
    result = check(ops, timeout_s=120)
    report.check_s = round(time.monotonic() - t0, 3)
    report.linearizable = result.ok
    report.verdict = describe(result)
    return report
