"""The configuration store's watches against etcd's, in one run: writes/s, notifications/s, latency.

For 1, 10 and 100 watchers (``--watchers``) on one key prefix, each system runs two phases:

* **latency** (sequential): ``--latency-writes`` sets, one at a time; each waits until every
  watcher's callback has seen it before the next is sent, so nothing queues. The latency of a
  notification is the time its watcher's callback ran minus the time its ``set`` started, both
  ``time.perf_counter()`` in this process. p50 and p99 (nearest rank) over every (watcher, set) pair;
* **throughput** (concurrent): ``--writes`` sets with ``--in-flight`` outstanding. writes/s = sets
  acknowledged / time from the first send to the last acknowledgement; notifications/s = events
  delivered to all watchers / time from the first send to the last callback. A notification is
  one revision delivered to one watcher (a callback may carry several); every watcher must see
  every set exactly once, and a missing or duplicated one is counted and printed.

Each value is ``VALUE_BYTES`` long and starts with the set's sequence number, which is how a
callback finds its set's start time. Writes go to ``KEYS`` keys under a prefix of their own
(``bench/cfg/<watchers>/k<seq % KEYS>``); every watcher watches that prefix from the current
revision. Before a phase is timed, ``WARMUP_WRITES`` sets go through every watcher. Each phase
runs ``--repeats`` times on the same watchers and the median run is reported (by p50 for latency,
by notifications/s for throughput).

**Ours**: ``ConfigStore.launch(replicas=3)`` (three Raft members on the LSM engine on local disk,
no fsync per write, as ``bench/events.py`` runs the event store). One client writes; another holds
the watchers, each a separate ``ConfigClient.watch(prefix, callback, prefix=True)``. Concurrent
sets are the client's ``put_nowait`` futures when it has them, else ``--in-flight`` threads each
doing blocking ``put`` s (the client batches what they send).

**etcd** (``bench/config_peers.py``): three members on loopback (Debian's ``etcd-server``, with
etcd's default WAL fsync; ``--etcd-fsync off`` or ``both`` for ``--unsafe-no-fsync``), driven from this
process over gRPC with hand-encoded protobuf. Sets are ``KV/Put`` s to the leader (concurrent:
``--in-flight`` ``Put`` futures on one channel); watchers are watch ids on one
``Watch/Watch`` stream to the leader, multiplexed as etcd's Go client does for one client
(``--etcd-streams per-watcher``: one stream each). A missing etcd is skipped with the reason.

Targets, as ratios of this run: notification latency p50 <= 2x etcd's; notifications/s >= 1x etcd's.

Run: ``python bench/config.py [--repeats N] [--quick] [--only ours|peers] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication_peers import _percentile  # noqa: E402 - the sibling bench module

#: Every value is this many bytes: the sequence number, zero-padded, then filler.
VALUE_BYTES = 100
#: Sets cycle over this many keys under the run's prefix.
KEYS = 16
#: Sets delivered to every watcher before a timed phase (not counted).
WARMUP_WRITES = 20
_SEQ_DIGITS = 16
_DELIVERY_TIMEOUT_S = 120.0
_WAIT_SLICE_S = 1.0


def encode_value(seq: int) -> bytes:
    """The value of set number ``seq``: its number in ``_SEQ_DIGITS`` digits, padded to ``VALUE_BYTES``."""
    return (b"%0*d" % (_SEQ_DIGITS, seq)).ljust(VALUE_BYTES, b".")


def decode_seq(value: bytes) -> int:
    """The set number a value carries (the inverse of :func:`encode_value`)."""
    return int(value[:_SEQ_DIGITS])


class Tally:
    """Send times of sets ``first .. first + count - 1`` and the times each watcher saw them.

    ``deliver`` runs on the watchers' threads; the writer waits with :meth:`wait_delivered`.
    Sets outside the range (a late event of the previous run) are counted in ``strays`` only.
    """

    def __init__(self, watchers: int, first: int, count: int):
        self.watchers, self.first, self.count = watchers, first, count
        self.sent = [0.0] * count
        self.received: list = [[] for _ in range(watchers)]  # per watcher: (seq, t), one thread each
        self.callbacks = 0
        self.strays = 0
        self._delivered = 0
        self._cond = threading.Condition()

    def mark_sent(self, seq: int, t: float) -> None:
        """Record that set ``seq`` started at ``t``."""
        self.sent[seq - self.first] = t

    def deliver(self, watcher: int, seqs: list, t: float) -> None:
        """One callback of ``watcher`` at ``t`` with the sets ``seqs``."""
        lo, hi = self.first, self.first + self.count
        mine = [s for s in seqs if lo <= s < hi]
        got = self.received[watcher]
        for s in mine:
            got.append((s, t))
        with self._cond:
            self.callbacks += 1
            self.strays += len(seqs) - len(mine)
            self._delivered += len(mine)
            self._cond.notify_all()

    def wait_delivered(self, n: int, timeout_s: float = _DELIVERY_TIMEOUT_S, check=None) -> bool:
        """Wait until ``n`` notifications arrived; False after ``timeout_s``. ``check()`` runs between
        waits (a watcher's failure raises there instead of being waited out)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._delivered < n:
                if check is not None:
                    check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _WAIT_SLICE_S))
        return True

    def summary(self, t_first: float | None = None) -> dict:
        """Latency p50/p99 (ms), notifications/s from ``t_first`` (default: the first send) to the
        last callback, and the missing and duplicated deliveries."""
        return summarize(self.sent, self.received, self.first, t_first=t_first) | {
            "callbacks": self.callbacks, "strays": self.strays}


def summarize(sent: list, received: list, first: int, *, t_first: float | None = None) -> dict:
    """Figures of one run: ``sent[i]`` is when set ``first + i`` started, ``received[w]`` the
    ``(seq, t)`` pairs watcher ``w`` got. Latencies are ``t - sent`` in ms, nearest-rank p50/p99."""
    count, watchers = len(sent), len(received)
    latencies, duplicates, last = [], 0, None
    for got in received:
        seen = set()
        for seq, t in got:
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            latencies.append((t - sent[seq - first]) * 1e3)
            last = t if last is None else max(last, t)
    delivered = len(latencies)
    out = {"writes": count, "watchers": watchers, "notifications": delivered,
           "missing": count * watchers - delivered, "duplicates": duplicates}
    if not latencies:
        return out | {"p50_ms": None, "p99_ms": None, "max_ms": None, "notifications_per_s": None}
    latencies.sort()
    start = min((t for t in sent if t), default=0.0) if t_first is None else t_first
    seconds = (last - start) if last is not None else 0.0
    return out | {"p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
                  "max_ms": latencies[-1], "seconds": seconds,
                  "notifications_per_s": delivered / seconds if seconds > 0 else None}


def median_run(runs: list, key: str) -> dict:
    """The run with the median ``key`` (the lower middle one for an even count; runs without a
    figure sort last), with every run's ``key`` beside it."""
    ordered = sorted(runs, key=lambda r: (r.get(key) is None, r.get(key) or 0.0))
    measured = [r for r in ordered if r.get(key) is not None] or ordered
    out = dict(measured[(len(measured) - 1) // 2])
    out[f"{key}_runs"] = [r.get(key) for r in runs]
    return out


# ---------------------------------------------------------------------------------------------
# The systems, behind one small interface: watchers(prefix, n, deliver), put, put_window


class _Ours:
    """Our ConfigStore: three Raft members on the LSM; a writing client and a watching client."""

    NAME = "ours (Raft x3, LSM)"

    def __init__(self, writer, watching, close=lambda: None):
        self.name = self.NAME
        self.writer, self.watching, self._close = writer, watching, close
        self.concurrency = "put_nowait futures" if hasattr(self.writer, "put_nowait") else "threads"

    @classmethod
    def launch(cls, workdir: str) -> "_Ours":
        """A fresh store under ``workdir`` and two clients of it."""
        from ddia_ray.config import ConfigStore
        from ddia_ray.runtime.connect import ensure_ray

        ensure_ray()
        store = ConfigStore.launch(replicas=3, root=f"file://{workdir}/config", engine="lsm")
        try:
            store.leader()  # waits for the first election
            return cls(store.client(), store.client(), lambda: store.shutdown(destroy_data=True))
        except BaseException:
            store.shutdown(destroy_data=True)
            raise

    def close(self) -> None:
        for c in (self.writer, self.watching):
            with contextlib.suppress(Exception):  # the store goes down next anyway
                c.close()
        self._close()

    @contextlib.contextmanager
    def watchers(self, prefix: str, n: int, deliver):
        def callback_for(index: int):
            def callback(events) -> None:
                t = time.perf_counter()
                deliver(index, [decode_seq(e.kv.value) for e in events if e.kind == "put"], t)
            return callback

        watches = [self.watching.watch(prefix, callback_for(i), prefix=True) for i in range(n)]
        try:
            yield lambda: None
        finally:
            for w in watches:
                w.cancel()

    def put(self, key: str, value: bytes) -> None:
        self.writer.put(key, value)

    def put_window(self, items: list, in_flight: int, mark_sent) -> tuple:
        """Send ``(seq, key, value)`` items, ``in_flight`` outstanding; returns (first send, last ack, failed)."""
        t_first = time.perf_counter()
        failed = 0
        if hasattr(self.writer, "put_nowait"):
            window: collections.deque = collections.deque()
            for seq, key, value in items:
                if len(window) >= in_flight:
                    failed += _result_failed(window.popleft())
                mark_sent(seq, time.perf_counter())
                window.append(self.writer.put_nowait(key, value))
            while window:
                failed += _result_failed(window.popleft())
            return t_first, time.perf_counter(), failed
        work = iter(items)
        lock = threading.Lock()

        def worker() -> int:
            bad = 0
            while True:
                with lock:
                    item = next(work, None)
                if item is None:
                    return bad
                seq, key, value = item
                mark_sent(seq, time.perf_counter())
                try:
                    self.writer.put(key, value)
                except Exception:  # noqa: BLE001 - counted and reported as failed writes
                    bad += 1

        with concurrent.futures.ThreadPoolExecutor(in_flight, thread_name_prefix="bench-put") as pool:
            failed = sum(pool.map(lambda _: worker(), range(in_flight)))
        return t_first, time.perf_counter(), failed


def _result_failed(future) -> int:
    try:
        future.result(_DELIVERY_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - counted and reported as failed writes
        return 1
    return 0


class _Etcd:
    """A ``members``-member etcd on loopback (3 in the bench); Puts and watches on the leader, over raw gRPC."""

    def __init__(self, *, fsync: bool, streams: str, members: int = 3):
        import grpc
        import replication_peers as rp

        self._cluster = rp.EtcdCluster(members=members, fsync=fsync)
        self._cluster.__enter__()
        try:
            self.streams = streams
            self.name = f"etcd {self._cluster.version} x{members} ({'fsync' if fsync else 'no fsync'})"
            self.target = self._cluster.leader_url[len("http://"):]
            self._channel = grpc.insecure_channel(self.target, options=rp._GRPC_OPTIONS)
            self._put = self._channel.unary_unary(rp._PUT_METHOD, request_serializer=rp._encode_put_request,
                                                  response_deserializer=rp._accept_bytes)
            self.concurrency = "Put futures on one channel"
        except BaseException:
            self._cluster.stop()
            raise

    def close(self) -> None:
        try:
            self._channel.close()
        finally:
            self._cluster.stop()

    @contextlib.contextmanager
    def watchers(self, prefix: str, n: int, deliver):
        import config_peers

        def callback(index: int, events: tuple, t: float) -> None:
            deliver(index, [decode_seq(e.kv.value) for e in events if e.type == 0], t)

        with config_peers.EtcdWatchers(self.target, prefix.encode(), n, callback, streams=self.streams) as w:
            yield w.check

    def put(self, key: str, value: bytes) -> None:
        self._put((key.encode(), value), timeout=_DELIVERY_TIMEOUT_S)

    def put_window(self, items: list, in_flight: int, mark_sent) -> tuple:
        """Send ``(seq, key, value)`` items as Put futures, ``in_flight`` outstanding."""
        slots = threading.Semaphore(in_flight)
        lock = threading.Lock()
        state = {"failed": 0, "pending": len(items), "last": 0.0}
        done = threading.Event()

        def finished(future) -> None:
            t = time.perf_counter()
            slots.release()
            with lock:
                state["failed"] += future.exception() is not None
                state["pending"] -= 1
                state["last"] = max(state["last"], t)
                if state["pending"] == 0:
                    done.set()

        t_first = time.perf_counter()
        for seq, key, value in items:
            slots.acquire()
            mark_sent(seq, time.perf_counter())
            self._put.future((key.encode(), value), timeout=_DELIVERY_TIMEOUT_S).add_done_callback(finished)
        if items and not done.wait(_DELIVERY_TIMEOUT_S):
            raise RuntimeError(f"etcd: {state['pending']} Puts unanswered after {_DELIVERY_TIMEOUT_S:.0f} s")
        return t_first, state["last"] or time.perf_counter(), state["failed"]


# ---------------------------------------------------------------------------------------------
# The measurement


class _Sequence:
    """Hands out increasing set numbers, so no two runs on one prefix share one."""

    def __init__(self):
        self.next = 0

    def take(self, n: int) -> int:
        first, self.next = self.next, self.next + n
        return first


def _key(prefix: str, seq: int) -> str:
    return f"{prefix}k{seq % KEYS:02d}"


def _latency_run(system, prefix: str, n: int, writes: int, seqs: _Sequence, holder: list, check) -> dict:
    """``writes`` sets one at a time, each delivered to all ``n`` watchers before the next."""
    tally = Tally(n, seqs.take(writes), writes)
    holder[0] = tally
    acks = []
    for i in range(writes):
        seq = tally.first + i
        t0 = time.perf_counter()
        tally.mark_sent(seq, t0)
        system.put(_key(prefix, seq), encode_value(seq))
        acks.append((time.perf_counter() - t0) * 1e3)
        if not tally.wait_delivered(n * (i + 1), check=check):
            break  # the summary counts what is missing
    acks.sort()
    return tally.summary() | {"put_p50_ms": _percentile(acks, 50), "put_p99_ms": _percentile(acks, 99)}


def _throughput_run(system, prefix: str, n: int, writes: int, in_flight: int, seqs: _Sequence,
                    holder: list, check) -> dict:
    """``writes`` sets with ``in_flight`` outstanding; waits for every notification."""
    tally = Tally(n, seqs.take(writes), writes)
    holder[0] = tally
    items = [(seq, _key(prefix, seq), encode_value(seq)) for seq in range(tally.first, tally.first + writes)]
    cpu0 = time.process_time()
    t_first, t_acked, failed = system.put_window(items, in_flight, tally.mark_sent)
    complete = tally.wait_delivered(n * (writes - failed), check=check)
    cpu_s = time.process_time() - cpu0
    out = tally.summary(t_first)
    return out | {"writes_per_s": (writes - failed) / (t_acked - t_first), "failed_writes": failed,
                  "complete": complete, "in_flight": in_flight, "client_cpu_s": cpu_s}


def _dispatcher(holder: list):
    """A ``deliver(index, seqs, t)`` handing each callback to the tally in ``holder[0]`` (if any)."""
    def deliver(index: int, seqs: list, t: float) -> None:
        tally = holder[0]
        if tally is not None:
            tally.deliver(index, seqs, t)
    return deliver


def bench_system(system, *, watchers: tuple, latency_writes: int, writes: int, in_flight: int,
                 repeats: int, progress=print) -> dict:
    """Both phases for each watcher count on ``system``; the median run of each."""
    out: dict = {}
    for n in watchers:
        prefix = f"bench/cfg/{n}/"
        seqs = _Sequence()
        holder: list = [None]  # the tally of the run in progress; the watchers' callbacks feed it
        t_open = time.perf_counter()
        with system.watchers(prefix, n, _dispatcher(holder)) as check:
            opened_s = time.perf_counter() - t_open
            warm = _latency_run(system, prefix, n, WARMUP_WRITES, seqs, holder, check)
            if warm["missing"]:
                raise RuntimeError(f"{system.name}: {warm['missing']} warm-up notifications missing "
                                   f"with {n} watchers")
            lat_runs, thr_runs = [], []
            for _ in range(repeats):
                lat_runs.append(_latency_run(system, prefix, n, latency_writes, seqs, holder, check))
                thr_runs.append(_throughput_run(system, prefix, n, writes, in_flight, seqs, holder, check))
            holder[0] = None
        lat = median_run(lat_runs, "p50_ms")
        thr = median_run(thr_runs, "notifications_per_s")
        out[n] = {"latency": lat, "throughput": thr, "watch_open_s": opened_s}
        progress(f"  {system.name}, {n} watchers: p50 {_ms(lat['p50_ms'])} ms, p99 {_ms(lat['p99_ms'])} ms; "
                 f"{_num(thr['writes_per_s'])} writes/s, {_num(thr['notifications_per_s'])} notifications/s"
                 f"{_problems(lat, thr)}")
    return out


def _problems(*runs: dict) -> str:
    missing = sum(r["missing"] for r in runs)
    dups = sum(r["duplicates"] for r in runs)
    return f" (MISSING {missing}, DUPLICATED {dups})" if missing or dups else ""


def _ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _num(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _ratio(a, b) -> float | None:
    return None if a is None or not b else a / b


def _print_table(results: dict, watchers: tuple) -> None:
    head = (f"{'watchers':>8}  {'system':34} {'writes/s':>10} {'notif/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'conc p50':>9} {'conc p99':>9}  missing/dup")
    print("\n" + head)
    for n in watchers:
        for name, figures in results.items():
            if isinstance(figures, str):
                continue
            r = figures.get(n)
            if r is None:
                continue
            lat, thr = r["latency"], r["throughput"]
            print(f"{n:>8}  {name:34} {_num(thr['writes_per_s']):>10} {_num(thr['notifications_per_s']):>10} "
                  f"{_ms(lat['p50_ms']):>8} {_ms(lat['p99_ms']):>8} {_ms(thr['p50_ms']):>9} {_ms(thr['p99_ms']):>9}"
                  f"  {lat['missing'] + thr['missing']}/{lat['duplicates'] + thr['duplicates']}")
    for name, figures in results.items():
        if isinstance(figures, str):
            print(f"{name}: skipped: {figures}")


def targets(ours: dict, etcd: dict, watchers: tuple) -> list:
    """The two targets per watcher count: latency p50 ratio (<= 2) and notifications/s ratio (>= 1)."""
    rows = []
    for n in watchers:
        if n not in ours or n not in etcd:
            continue
        lat = _ratio(ours[n]["latency"]["p50_ms"], etcd[n]["latency"]["p50_ms"])
        thr = _ratio(ours[n]["throughput"]["notifications_per_s"], etcd[n]["throughput"]["notifications_per_s"])
        wr = _ratio(ours[n]["throughput"]["writes_per_s"], etcd[n]["throughput"]["writes_per_s"])
        rows.append({"watchers": n, "latency_p50_ratio": lat, "latency_met": lat is not None and lat <= 2.0,
                     "notifications_ratio": thr, "notifications_met": thr is not None and thr >= 1.0,
                     "writes_ratio": wr})
    return rows


def main(argv=None) -> int:
    """Run ours and etcd, print one table and the target ratios (and write ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, nargs="+", default=None, help="watcher counts (default 1 10 100)")
    parser.add_argument("--latency-writes", type=int, default=None, help="sequential sets per latency run (200)")
    parser.add_argument("--writes", type=int, default=None, help="sets per throughput run (2000)")
    parser.add_argument("--in-flight", type=int, default=32, help="sets outstanding in the throughput runs")
    parser.add_argument("--repeats", type=int, default=None, help="runs per phase; the median is reported (3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 and 10 watchers, few sets, 1 repeat")
    parser.add_argument("--only", choices=("ours", "peers"), default=None)
    parser.add_argument("--etcd-streams", choices=("shared", "per-watcher"), default="shared",
                        help="etcd watchers on one gRPC stream (clientv3's way) or one stream each")
    parser.add_argument("--etcd-fsync", choices=("on", "off", "both"), default="on",
                        help="etcd's default WAL fsync (on), --unsafe-no-fsync (off), or a cluster of each")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    watchers = tuple(args.watchers or ((1, 10) if args.quick else (1, 10, 100)))
    kw = {"watchers": watchers,
          "latency_writes": args.latency_writes or (30 if args.quick else 200),
          "writes": args.writes or (200 if args.quick else 2000),
          "in_flight": args.in_flight,
          "repeats": args.repeats or (1 if args.quick else 3)}
    # the load average says how much else ran on these cores (a run beside a busy test suite is slower)
    load_start = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load_start[0]:.1f}")
    print(f"workload: watchers {list(watchers)}; {kw['latency_writes']} sequential sets per latency run, "
          f"{kw['writes']} sets with {args.in_flight} in flight per throughput run; {VALUE_BYTES}-byte values "
          f"over {KEYS} keys; median of {kw['repeats']} runs", flush=True)
    results: dict = {}
    detail: dict = {}
    if args.only != "peers":
        workdir = tempfile.mkdtemp(prefix="bench-config-")
        try:
            ours = _Ours.launch(workdir)
            try:
                detail[ours.name] = {"concurrency": ours.concurrency}
                results[ours.name] = bench_system(ours, **kw)
            finally:
                ours.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.only != "ours":
        import replication_peers

        reason = replication_peers.etcd_missing()
        if reason:
            print(f"skipping etcd: {reason}")
            results["etcd"] = reason
        else:
            for fsync in {"on": (True,), "off": (False,), "both": (True, False)}[args.etcd_fsync]:
                etcd = _Etcd(fsync=fsync, streams=args.etcd_streams)
                try:
                    detail[etcd.name] = {"concurrency": etcd.concurrency, "watch_streams": args.etcd_streams}
                    results[etcd.name] = bench_system(etcd, **kw)
                finally:
                    etcd.close()
    _print_table(results, watchers)
    load_end = os.getloadavg()
    print(f"\nload average {load_end[0]:.1f} at the end (1 min), {load_end[1]:.1f} (5 min)")
    rows: list = []
    ours_figures = results.get(_Ours.NAME)
    peers = {k: v for k, v in results.items() if k != _Ours.NAME and isinstance(v, dict)}
    if args.only is None and isinstance(ours_figures, dict) and peers:
        print("\ntargets (ours / etcd, this run):")
        for peer, theirs in peers.items():
            for r in targets(ours_figures, theirs, watchers):
                rows.append({"peer": peer, **r})
                print(f"  vs {peer}, {r['watchers']:>3} watchers: latency p50 {_x(r['latency_p50_ratio'])} "
                      f"(target <= 2x) {'met' if r['latency_met'] else 'NOT met'}; notifications/s "
                      f"{_x(r['notifications_ratio'])} (target >= 1x) "
                      f"{'met' if r['notifications_met'] else 'NOT met'}; "
                      f"writes/s {_x(r['writes_ratio'])}")
    elif args.only is None:
        print("\ntargets: not evaluated (a system was skipped)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"arch": platform.machine(), "cores": os.cpu_count(),
                                   "python": platform.python_version(), "load_start": load_start,
                                   "load_end": load_end},
                       "settings": {**kw, "watchers": list(watchers), "etcd_streams": args.etcd_streams,
                                    "etcd_fsync": args.etcd_fsync},
                       "systems": detail,
                       "results": {k: (v if isinstance(v, str) else {str(n): r for n, r in v.items()})
                                   for k, v in results.items()},
                       "targets": rows}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


def _x(r) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
