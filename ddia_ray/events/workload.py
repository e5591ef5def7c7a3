"""An order-processing workload on an event store under a fault schedule, ending in the checkers' verdicts.

Theory of operation
-------------------
:func:`run_workload` drives a launched :class:`~.store.EventStore` the way an application would:

* ``clients`` threads run the seed's :class:`~.domain.Order` commands through one
  :class:`~.repository.Repository` (place, add a line, pay, ship, cancel). Each command decides
  from the order's state, and the threads pick orders from a small shared pool, so two threads
  often work on the same order: one save conflicts on its expected version and the repository
  decides again on the reloaded order. That is the optimistic concurrency of DDIA 7 ("Detecting
  lost updates") at the scale of one aggregate. The ids of the events each returned command saved
  are kept: those appends are *acknowledged*.
* a :class:`~.projection.ProjectionRunner` folds the order events into a read model of each
  order's status and the count of orders per status, in a thread;
* a consumer group (``billing``, only ``OrderPaid`` events) is consumed by two competing
  :class:`~.persistent.PersistentSubscription` consumers, which count what they handle;
* a fault schedule (:class:`~ddia_ray.kv.workload.FaultSchedule` on the event store's
  replicated store) kills and restarts the leader, kills a follower, pauses the leader and
  partitions the group, one fault per cycle;
* the calling thread samples the end of ``$all``, the projection's and the group's lag.

At the end the faults are repaired, the command threads stop, and the projection and the group
are given ``settle_s`` to catch up. Then every event is read from ``$all`` and checked:

* **events lost**: every acknowledged event id is in ``$all``, in its order's stream;
* **$all gap-free**: positions 0..n-1 with none missing or repeated, each stream's versions
  0..k-1, and no event id twice (a resent append landed once);
* **projection**: the read model equals a fold of every event from scratch, and its checkpoint
  is the end of ``$all`` (so every event was folded once: effectively once);
* **consumer group**: every ``OrderPaid`` event reached a handler and was acked (at least once),
  none is parked, none is in flight; redeliveries are counted, not judged.

The report (:class:`~.report.EventsReport`) is plain data; :mod:`.report` judges it
(:func:`~.report.judge`, pure, from what this module read back) and turns it into text.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable

from ..errors import (ActorUnavailableError, CommandRejectedError, ConfigError, DdiaRayError, RetriesExhaustedError,
                      WrongExpectedVersionError)
from ..kv.workload import SCHEDULES, FaultSchedule, wind_down
from .domain import Order, OrderPaid
from .persistent import ConsumerGroups, PersistentSubscription
from .projection import Projection, ProjectionRunner, StoreReadModel, View
from .records import RecordedEvent
from .report import GROUP, PAID_TYPE, EventsReport, judge, status_after
from .repository import Repository

__all__ = ["run_workload", "EventsReport", "OrdersByStatus", "SCHEDULES", "CYCLE", "PROJECTION", "GROUP"]

#: The faults the ``cycle`` schedule applies in turn (a short run still sees a leader killed first).
CYCLE = ("kill-leader", "kill-follower", "pause-leader", "partition-leader", "partition-halves")
#: The projection's name (its read model and checkpoint in the store).
PROJECTION = "orders-by-status"
_SKUS = ("book", "lamp", "mug", "pen", "desk")


class OrdersByStatus(Projection):
    """Each order's status (``o:<order>``) and the number of orders in each status (``s:<status>``)."""

    def __init__(self, name: str = PROJECTION) -> None:
        super().__init__(name, stream_prefix="order-")

    def handle(self, event: RecordedEvent, view: View) -> None:
        """Move the order from its old status's count to its new one's."""
        new = status_after(event)
        if new is None:
            return
        key = b"o:" + event.stream.encode()
        old = view.get(key)
        if old is not None:
            _bump(view, b"s:" + old, -1)
        view.put(key, new.encode())
        _bump(view, b"s:" + new.encode(), +1)


def _bump(view: View, key: bytes, delta: int) -> None:
    n = int(view.get(key) or b"0") + delta
    if n:
        view.put(key, b"%d" % n)
    else:
        view.delete(key)  # a status no order is in has no row, as in a fold from scratch


class _Stoppable(threading.Thread):
    """A daemon thread that keeps the error that ended it (``wind_down`` raises it) and counts the
    times it started its work again after a failover (``restarts``)."""

    def __init__(self, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=name)
        self.stop = stop
        self.error: BaseException | None = None
        self.restarts = 0

    def run(self) -> None:
        """Run :meth:`loop`, keeping an unexpected error for the caller."""
        try:
            self.loop()
        except BaseException as e:  # noqa: BLE001 -- raised again by wind_down in the caller's thread
            self.error = e

    def loop(self) -> None:  # pragma: no cover - every subclass defines it
        """The thread's work, until ``stop`` is set."""
        raise NotImplementedError


class _Pool:
    """The orders the command threads share (few, so that commands on one order meet)."""

    def __init__(self, run_id: str, size: int) -> None:
        self.run_id, self.size = run_id, size
        self.lock = threading.Lock()
        self.active: list[str] = []
        self.n = 0

    def pick(self, rng: random.Random) -> str:
        with self.lock:
            if len(self.active) < self.size:
                self.n += 1
                self.active.append(f"order-{self.run_id}-{self.n}")
            return rng.choice(self.active)

    def retire(self, order: str) -> None:
        with self.lock:
            if order in self.active:
                self.active.remove(order)


class _Commander(_Stoppable):
    """One client thread: commands on random orders of the pool, until stopped."""

    def __init__(self, idx: int, repo: Repository, pool: _Pool, rng: random.Random, stop: threading.Event):
        super().__init__(f"events-commands-{idx}", stop)
        self.repo, self.pool, self.rng = repo, pool, rng
        self.acked: list[tuple[str, str]] = []  # (stream, event id) of every returned command
        self.kinds: Counter = Counter()
        self.latencies: list[float] = []
        self.unknown = self.failed = 0

    def _decide(self, order: Order, decided: list) -> None:
        """The command for the order as it is now (run again on a reload after a conflict)."""
        s = order.state
        r = self.rng.random()
        if s.status == "new":
            kind = "place"
            order.place(f"user-{self.rng.randrange(50)}")
        elif s.status == "open" and (not s.lines or r < 0.55):
            kind = "add_line"
            sku = self.rng.choice(_SKUS)
            order.add_line(sku, self.rng.randint(1, 3), 100 * (1 + _SKUS.index(sku)))
        elif s.status == "open" and r < 0.9:
            kind = "pay"
            order.pay(s.total_cents)
        elif s.status == "paid" and r < 0.85:
            kind = "ship"
            order.ship(f"trk-{self.rng.randrange(10**6)}")
        elif s.status in ("open", "paid"):
            kind = "cancel"
            order.cancel("changed their mind")
        else:
            kind = "none"  # shipped or cancelled: nothing left to do
        decided[:] = [kind, tuple(d.id for d in order.pending_event_data())]

    def loop(self) -> None:
        while not self.stop.is_set():
            order_id = self.pool.pick(self.rng)
            decided: list = []
            t0 = time.monotonic()
            try:
                self.repo.execute(order_id, functools.partial(self._decide, decided=decided), create=True)
            except RetriesExhaustedError as e:
                if isinstance(e.last_error, WrongExpectedVersionError):
                    self.failed += 1  # the last attempt conflicted: nothing of it was written
                else:
                    self.unknown += 1  # resent until the budget ran out: it may have been written
                continue
            except (CommandRejectedError, DdiaRayError):
                self.failed += 1  # refused, or a load failed during a failover: nothing of it written
                continue
            kind, ids = decided
            if kind == "none":
                self.pool.retire(order_id)
                continue
            self.latencies.append(time.monotonic() - t0)
            self.kinds[kind] += 1
            self.acked.extend((order_id, i) for i in ids)


class _Projector(_Stoppable):
    """Keeps the projection running across failovers: a failed page is redone from the checkpoint."""

    def __init__(self, runner: ProjectionRunner, stop: threading.Event, retry_s: float) -> None:
        super().__init__("events-projection", stop)
        self.runner, self.retry_s = runner, retry_s

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.runner.run(until=self.stop.is_set)
            except DdiaRayError:
                # A read or the commit failed (a failover), or a commit whose answer was lost did land
                # (the retry then finds the checkpoint moved). run() starts again from the stored
                # checkpoint, so no event is folded twice or skipped.
                self.restarts += 1
                self.stop.wait(self.retry_s)


class _Consumer(_Stoppable):
    """One competing consumer of the group; ``seen`` counts the deliveries of each position, and
    ``failure_rate`` of the deliveries fail in the handler (and are nacked for a retry)."""

    def __init__(self, sub: PersistentSubscription, seen: Counter, lock: threading.Lock, stop: threading.Event,
                 retry_s: float, rng: random.Random, failure_rate: float) -> None:
        super().__init__(f"events-consumer-{sub.consumer}", stop)
        self.sub, self.seen, self.lock, self.retry_s = sub, seen, lock, retry_s
        self.rng, self.failure_rate = rng, failure_rate

    def _handle(self, event: RecordedEvent) -> None:
        if not isinstance(event.decode(), OrderPaid):
            raise ConfigError(f"group {GROUP!r} handed out {event.type} at {event.position}: its filter is "
                              f"{PAID_TYPE}")
        with self.lock:
            self.seen[event.position] += 1
            fail = self.rng.random() < self.failure_rate
        if fail:
            # A payment service that fails now and then: the consumer nacks, the group hands the event
            # out again (to either consumer), so redeliveries are real, and none may end parked.
            raise ActorUnavailableError(f"the payment service did not answer for event {event.position} "
                                        f"(simulated)")

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.sub.run(self._handle, until=self.stop.is_set)
            except DdiaRayError:
                self.restarts += 1  # a pull's outcome was unknown: its events time out and come back
                self.stop.wait(self.retry_s)


def _percentiles(values: list) -> dict:
    if not values:
        return {}
    v = sorted(values)
    return {q: round(v[min(len(v) - 1, int(f * len(v)))] * 1000, 1)
            for q, f in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


def _wait_until(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Whether ``check()`` turned true within ``timeout_s`` (a failing check counts as false)."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        try:
            if check():
                return True
        except DdiaRayError:
            pass  # the store is still settling: ask again
        if time.monotonic() > deadline:
            return False
        pause.wait(poll_s)


class _Sampler:
    """Reads the end of ``$all`` and the lags the report plots (a failed read skips the sample)."""

    def __init__(self, client, runner: ProjectionRunner, groups: ConsumerGroups) -> None:
        self.client, self.runner, self.groups = client, runner, groups

    def end(self) -> int:
        rows, _, _ = self.client.read_all_page(-1, backward=True, page=1)
        return rows[0][2] + 1 if rows else 0

    def sample(self, t: float) -> tuple | None:
        try:
            end = self.end()
            checkpoint = self.runner.checkpoint
            group = self.groups.info(GROUP)["checkpoint"]
            lags = (max(0, end - checkpoint), self._age_s(checkpoint, end), max(0, end - group),
                    self._age_s(group, end))
        except DdiaRayError:
            return None
        return (t, end, *lags)

    def _age_s(self, position: int, end: int) -> float:
        """Seconds since the oldest event not yet taken (at ``position``) was appended; 0 at the end."""
        if position >= end:
            return 0.0
        first = self.client.read_all_page(position, page=1)[0]
        return round(max(0.0, time.time() - first[0][7] / 1000), 3) if first else 0.0


def run_workload(es, *, clients: int = 4, duration_s: float = 15.0, schedule: str = "cycle", seed: int = 0,
                 orders: int | None = None, fault_s: float = 1.5, calm_s: float = 1.0, op_timeout_s: float = 5.0,
                 sample_s: float = 0.25, settle_s: float = 60.0, handler_failure_rate: float = 0.05,
                 progress: Callable[[float, "EventsReport"], Any] | None = None) -> EventsReport:
    """Run the workload (see the module docstring) on event store ``es`` and return its report.

    ``schedule``: ``cycle`` (each fault of :data:`CYCLE` in turn) or one of
    :data:`~ddia_ray.kv.workload.SCHEDULES` (``none``: no faults). ``orders``: how many orders
    are open at once (default ``2 * clients``: few enough that commands meet).
    ``handler_failure_rate``: the share of deliveries the group's handler fails. ``progress(t,
    report)`` is called after each sample, with the report's samples and faults so far."""
    if schedule != "cycle" and (schedule not in SCHEDULES or schedule == "replace-follower"):
        raise ConfigError(f"unknown fault schedule {schedule!r}; use cycle or one of "
                          f"{[s for s in SCHEDULES if s != 'replace-follower']}")
    if type(clients) is not int or clients < 1:
        raise ConfigError(f"clients is an int >= 1, got {clients!r}")
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:6]
    report = EventsReport(schedule, duration_s, clients)
    stop, nemesis_stop, readers_stop = threading.Event(), threading.Event(), threading.Event()
    opened = []
    try:
        def client(timeout_s: float = op_timeout_s):
            c = es.client(timeout_s=timeout_s, rpc_timeout_s=0.5)
            opened.append(c)
            return c

        commands = client()
        repo: Repository = Repository(commands, Order, snapshot_every=8, max_retries=8)
        groups = ConsumerGroups(client())
        groups.create(GROUP, type_prefix=PAID_TYPE, ack_timeout_s=2.0, max_retries=10)
        runner = ProjectionRunner(OrdersByStatus(), client(), page=200)
        pool = _Pool(run_id, orders or 2 * clients)
        workers = [_Commander(i, repo, pool, random.Random(rng.getrandbits(64)), stop) for i in range(clients)]
        seen: Counter = Counter()
        lock = threading.Lock()
        subs = [PersistentSubscription(client(), GROUP, f"worker-{i}", batch=20) for i in range(2)]
        readers: list[_Stoppable] = [_Projector(runner, readers_stop, 0.2)]
        readers += [_Consumer(s, seen, lock, readers_stop, 0.2, random.Random(rng.getrandbits(64)),
                              handler_failure_rate) for s in subs]
        # A short timeout: a sample the store cannot answer now is skipped, not waited for.
        quick = client(1.0)
        sampler = _Sampler(quick, runner, ConsumerGroups(quick))
        start = time.monotonic()
        nemesis = _schedule(es, schedule, random.Random(rng.getrandbits(64)), nemesis_stop, start, fault_s, calm_s)
        for t in (*workers, *readers):
            t.start()
        if schedule != "none":
            nemesis.start()
        while (now := time.monotonic() - start) < duration_s:
            got = sampler.sample(round(now, 3))
            if got is not None:
                report.samples.append(got)
            report.faults = list(nemesis.log)
            if progress is not None:
                progress(now, report)
            stop.wait(sample_s)
        wind_down(nemesis, nemesis_stop, stop, workers, worker_join_s=op_timeout_s * 10 + 10)
        report.elapsed_s = time.monotonic() - start
        report.faults = list(nemesis.log)
        _tally(report, workers, repo)
        # Healed: the readers get settle_s to fold and settle everything appended (sampled meanwhile).
        _wait_until(lambda: _settled(sampler, runner, groups, report, start), settle_s)
        readers_stop.set()
        for t in readers:
            t.join(op_timeout_s * 4 + 10)
        for t in readers:
            if t.error is not None:
                raise t.error
        report.projection_restarts = readers[0].restarts
        report.consumer_restarts = sum(t.restarts for t in readers[1:])
        report.redeliveries = sum(s.redelivered for s in subs)
        report.handler_failures = sum(s.failed for s in subs)
        _check(report, commands, runner, groups, seen, [a for w in workers for a in w.acked])
    finally:
        stop.set()
        nemesis_stop.set()
        readers_stop.set()
        for c in opened:
            c.close()
    return report


def _schedule(es, schedule: str, rng: random.Random, stop: threading.Event, start: float, fault_s: float,
              calm_s: float) -> FaultSchedule:
    """The nemesis on the event store's replicated store (which has every nemesis verb)."""
    if schedule != "cycle":
        return FaultSchedule(es.store, schedule, rng, stop, start, fault_s, calm_s)
    return _CycleSchedule(es.store, "mixed", rng, stop, start, fault_s, calm_s)


class _CycleSchedule(FaultSchedule):
    """:class:`FaultSchedule` applying :data:`CYCLE` in order instead of at random."""

    def run(self) -> None:
        """Cycle calm, fault, repair through :data:`CYCLE` until stopped."""
        try:
            i = 0
            while not self.stop_event.wait(self.calm_s):
                self.inject(CYCLE[i % len(CYCLE)])
                i += 1
                if self.stop_event.wait(self.fault_s):
                    break
                self.repair()
        except BaseException as e:  # noqa: BLE001 -- raised again by wind_down
            self.error = e


def _settled(sampler: _Sampler, runner: ProjectionRunner, groups: ConsumerGroups, report: EventsReport,
             start: float) -> bool:
    got = sampler.sample(round(time.monotonic() - start, 3))
    if got is not None:
        report.samples.append(got)
    end = sampler.end()
    info = groups.info(GROUP)
    return (runner.checkpoint >= end and info["checkpoint"] >= end and not info["in_flight"]
            and not info["retry_queue"])


def _tally(report: EventsReport, workers: list, repo: Repository) -> None:
    kinds: Counter = Counter()
    for w in workers:
        kinds.update(w.kinds)
    report.commands_by_kind = dict(sorted(kinds.items()))
    report.commands_ok = sum(kinds.values())
    report.commands_unknown = sum(w.unknown for w in workers)
    report.commands_failed = sum(w.failed for w in workers)
    report.command_latency_ms = _percentiles([x for w in workers for x in w.latencies])
    report.events_acked = sum(len(w.acked) for w in workers)
    st = repo.stats()
    report.conflicts, report.retries, report.resends = st.conflicts, st.retries, st.resends
    report.snapshots = st.snapshots_saved


def _check(report: EventsReport, client, runner: ProjectionRunner, groups: ConsumerGroups, seen: Counter,
           acked: list) -> None:
    """Read every event of ``$all``, the projection's rows and the group's state, and judge them."""
    events = client.read_all()
    model = dict(_scan_all(StoreReadModel(client), PROJECTION))
    judge(report, events, acked, model, runner.checkpoint, groups.info(GROUP), dict(seen))


def _scan_all(model: StoreReadModel, name: str) -> list:
    """Every ``(key, value)`` of a read model, page by page."""
    out: list = []
    start = b""
    while True:
        page = model.scan(name, start, limit=1000)
        out.extend(page)
        if len(page) < 1000:
            return out
        start = page[-1][0] + b"\x00"
