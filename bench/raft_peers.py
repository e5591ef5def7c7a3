"""The peer side of ``bench/raft.py``: a 3-member PySyncObj cluster measured on this machine.

Theory of operation: three PySyncObj members run in three processes (this file, started by
``subprocess`` with ``_member``) on free loopback ports, each with a journal and a full-dump file
(``SyncObjConf(journalFile=..., fullDumpFile=...)``). The replicated object is a dict with one
``@replicated set(key, value)``: 16-byte keys, ``payload_bytes`` values (a seeded pool). The parent
speaks one JSON line per request (``status``, ``run``, ``stop``) over each child's stdin/stdout,
waits until all three name the same leader and that member says it leads, then sends ``run`` to
the leader's process: the client calls the leader's own ``SyncObj`` (no forwarding hop, the most
favourable placement for PySyncObj). After a warm-up it measures

* throughput: ``ops`` writes with ``callback=`` (async), at most ``in_flight`` outstanding (a
  semaphore the callback releases); successful ops / time from first submit to last callback;
* latency: ``blocking_ops`` sequential ``sync=True`` writes; nearest-rank p50 / p99.

``appendEntriesUseBatch`` decides when the leader ships entries. Batched (PySyncObj's default),
they wait for the next heartbeat (``appendEntriesPeriod``, 100 ms): good throughput with many in
flight, ~100 ms per blocking write. Unbatched, each command wakes the tick thread and leaves at
once (what its docs advise for "single request speed"), but per-command sends cost throughput at
high concurrency. By default (``append_entries_use_batch=None``) throughput is the better of both
settings and latency is unbatched, each measured on a fresh cluster, so PySyncObj is given its best
documented configuration for every figure.

Durability, read from the PySyncObj 0.3.17 source: ``FileJournal.add`` writes each entry into an
``mmap`` of the journal, i.e. into the page cache; ``FileJournal.flush`` (msync) exists but the
Raft code never calls it (only ``_destroy`` at shutdown). Followers acknowledge right after that
write and the leader counts itself in the quorum without a flush. Term and vote (``.meta``,
persisted only since 0.3.16) are written on every change, with a ``rename`` but no ``fsync``; the
commit index once a second; the full dump (log compaction every 5000 entries, in a forked child)
is a gzip pickle and a ``rename``, no fsync either. So its durable journal survives a crash of
the process but not of the machine: writes acknowledged as committed can vanish if a majority
loses power. If our Raft fsyncs before acknowledging, the stock comparison is tilted toward
PySyncObj (a ratio reached against it is conservative). ``fsync=True`` is the like-for-like
variant: a member msyncs its journal before any message leaves it whenever entries were written
since the last flush (the "persist before send" rule of etcd's raft ``Ready``; one flush per
outgoing batch, so it group-commits as PySyncObj batches), and term/vote writes are fsync'd. It
reaches private attributes (``_SyncObj__raftLog``, ``_SyncObj__transport``), hence ``<0.4``.

Determinism: values come from ``random.Random(seed)``; member ``i`` seeds the global ``random``
(PySyncObj's election timeouts) with ``seed + i``. Timing is wall-clock (``perf_counter``). If the
parent dies, members see EOF on stdin and are gone within ``_EXIT_GRACE_S``.
Run alone: ``python bench/raft_peers.py [--ops N] [--in-flight N] [--blocking-ops N] [--fsync]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ddia_ray._validate import at_least, integer

__all__ = ["KEY_BYTES", "bench_pysyncobj", "main"]

#: Every key is this many bytes, as in the rest of the benchmarks.
KEY_BYTES = 16
_MEMBERS = 3
_VALUE_POOL_SIZE = 256
_ELECTION_WAIT_S = 30.0
_REQUEST_TIMEOUT_S = 5.0
_SYNC_WRITE_TIMEOUT_S = 10.0
_EXIT_GRACE_S = 3.0
_WARMUP_OPS = 500
# failed writes above this share make the figures meaningless (a leader change mid-run, say)
_MAX_FAILED_SHARE = 0.01


def _kv_class():
    """Build the replicated dict class (lazily, so importing this file needs no pysyncobj)."""
    from pysyncobj import SyncObj, replicated

    class _KV(SyncObj):
        """A replicated key-value dict with one replicated write."""

        def __init__(self, self_address, partner_addresses, conf):
            super().__init__(self_address, partner_addresses, conf)
            self._data = {}  # replicated state: PySyncObj dumps every attribute it didn't own

        @replicated
        def set(self, key, value):
            """Store ``value`` under ``key`` (applied on every member once committed)."""
            self._data[key] = value

        def size(self):
            """Number of keys applied on this member."""
            return len(self._data)

    return _KV


def _install_fsync(obj) -> dict:
    """Make ``obj`` flush its journal before any message leaves it; return live counters."""
    from pysyncobj.journal import FileJournal

    journal = getattr(obj, "_SyncObj__raftLog", None)
    transport = getattr(obj, "_SyncObj__transport", None)
    meta = getattr(journal, "_FileJournal__metaStorer", None)
    if not isinstance(journal, FileJournal) or transport is None or meta is None:
        raise RuntimeError("this PySyncObj version has other internals; fsync=True needs 0.3.x")
    counters = {"journal_flushes": 0}
    dirty = [True]  # the constructor already wrote the initial no-op entry

    def _marking(method):
        def wrapper(*args, **kwargs):
            dirty[0] = True  # set before the write: at worst one flush too many
            return method(*args, **kwargs)

        return wrapper

    # instance attributes shadow the bound methods, also for the journal's own internal calls
    for name in ("add", "clear", "deleteEntriesFrom"):
        setattr(journal, name, _marking(getattr(journal, name)))
    send = transport.send

    def flushing_send(node, message):
        # Raft safety needs the log on disk before the ack (follower) or before the entries
        # count toward a quorum (leader, whose entries are only counted once peers answer).
        if dirty[0]:
            journal.flush()
            dirty[0] = False
            counters["journal_flushes"] += 1
        return send(node, message)

    transport.send = flushing_send
    path = meta.getPath()

    def store_meta_synced(data):
        # same file layout as MetaStorer.storeMeta, plus the fsyncs a durable rename needs
        from pysyncobj.pickle import dumps

        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(dumps(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)  # makes the rename durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    meta.storeMeta = store_meta_synced
    return counters


def _percentile(sorted_values: list, q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending, non-empty list."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _key(i: int) -> bytes:
    """The ``i``-th key: always ``KEY_BYTES`` long, distinct per write."""
    return b"k%015d" % i


def _value_pool(payload_bytes: int, seed: int) -> list:
    """A few hundred seeded random values, cycled through by the writes."""
    import random

    rng = random.Random(seed)
    return [rng.randbytes(payload_bytes) for _ in range(_VALUE_POOL_SIZE)]


def _run_windowed(kv, pool, first: int, count: int, in_flight: int, timeout_s: float) -> dict:
    """``count`` async writes with at most ``in_flight`` outstanding; ops/s from callbacks."""
    from pysyncobj import FAIL_REASON

    window = threading.Semaphore(in_flight)
    finished = threading.Event()
    tally = {"ok": 0, "failed": 0, "reasons": {}, "end": 0.0}
    lock = threading.Lock()

    def on_done(_result, error):
        # callbacks run on PySyncObj's tick thread, or the caller's on QUEUE_FULL: hence the lock
        with lock:
            if error == FAIL_REASON.SUCCESS:
                tally["ok"] += 1
            else:
                tally["failed"] += 1
                tally["reasons"][str(error)] = tally["reasons"].get(str(error), 0) + 1
            if tally["ok"] + tally["failed"] == count:
                tally["end"] = time.perf_counter()
                finished.set()
        window.release()

    start = time.perf_counter()
    deadline = start + timeout_s
    for i in range(first, first + count):
        if not window.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            break
        kv.set(_key(i), pool[i % len(pool)], callback=on_done)
    if not finished.wait(max(0.0, deadline - time.perf_counter())):
        raise RuntimeError(f"windowed writes timed out after {timeout_s:.0f} s: {tally}")
    elapsed_s = tally["end"] - start
    return {"ok": tally["ok"], "failed": tally["failed"], "fail_reasons": tally["reasons"],
            "elapsed_s": elapsed_s, "ops_s": tally["ok"] / elapsed_s}


def _run_blocking(kv, pool, first: int, count: int) -> dict:
    """``count`` sequential ``sync=True`` writes; latencies of the successful ones, in ms."""
    from pysyncobj import SyncObjException

    latencies_ms, failed = [], 0
    for i in range(first, first + count):
        t0 = time.perf_counter()
        try:
            kv.set(_key(i), pool[i % len(pool)], sync=True, timeout=_SYNC_WRITE_TIMEOUT_S)
        except SyncObjException:
            failed += 1
            continue
        latencies_ms.append((time.perf_counter() - t0) * 1e3)
    latencies_ms.sort()
    out = {"ok": len(latencies_ms), "failed": failed}
    if latencies_ms:
        out.update(p50_ms=_percentile(latencies_ms, 50), p99_ms=_percentile(latencies_ms, 99),
                   mean_ms=sum(latencies_ms) / len(latencies_ms), max_ms=latencies_ms[-1])
    return out


def _member_main(spec: dict) -> int:
    """Child process: run one member and serve ``status``/``run``/``stop`` requests over stdio."""
    import random

    from pysyncobj import SyncObjConf

    # the protocol owns the real stdout; anything else printed goes to the stderr log
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    random.seed(spec["seed"] + spec["index"])
    # PySyncObj's defaults otherwise (heartbeat 100 ms, compaction every 5000 entries); the quick
    # reconnect only matters at start-up, when a peer may not listen yet (default 5 s wait)
    conf = SyncObjConf(journalFile=os.path.join(spec["dir"], "journal.bin"),
                       fullDumpFile=os.path.join(spec["dir"], "dump.bin"),
                       appendEntriesUseBatch=spec["batch"], maxBindRetries=5,
                       connectionRetryTime=0.5)
    kv = _kv_class()(spec["self"], spec["partners"], conf)
    counters = _install_fsync(kv) if spec["fsync"] else {}
    kv.waitBinded()
    pool = _value_pool(spec["payload_bytes"], spec["seed"])

    def reply(**fields):
        proto.write(json.dumps(fields) + "\n")

    requests: queue.Queue = queue.Queue()

    def read_requests():
        for line in sys.stdin:
            requests.put(json.loads(line))
        # EOF: the parent asked us to stop or died. A member busy in a run (whose peers are gone
        # too) would wait for its callbacks for minutes: no member outlives the parent by much.
        requests.put({"cmd": "stop"})
        time.sleep(_EXIT_GRACE_S)
        os._exit(1)

    threading.Thread(target=read_requests, daemon=True).start()
    reply(event="bound")
    while (request := requests.get())["cmd"] != "stop":
        try:
            if request["cmd"] == "status":
                leader = kv._getLeader()
                reply(leader=None if leader is None else leader.id, is_leader=kv._isLeader(),
                      applied_keys=kv.size(), **counters)
            elif request["cmd"] == "run":
                reply(**_member_run(kv, pool, request), **counters)
        except Exception as exc:  # reported to the parent, which raises it there
            reply(error=f"{type(exc).__name__}: {exc}")
    kv.destroy_synchronous()
    reply(event="stopped")
    return 0


def _time_budget_s(ops: int, in_flight: int) -> float:
    """A generous limit for ``ops`` writes, ``in_flight`` at a time (0.5 s a round trip)."""
    return 60.0 + 0.5 * ops / in_flight


def _member_run(kv, pool, request: dict) -> dict:
    """Warm up, then the throughput and/or latency phases the request asks for."""
    # warm-up: commits the leader's no-op, grows the journal mmap, warms the connections
    _run_blocking(kv, pool, 0, 20)
    next_key, out = 20, {}
    if request["ops"]:
        warmup_ops, in_flight = min(_WARMUP_OPS, request["ops"]), request["in_flight"]
        _run_windowed(kv, pool, next_key, warmup_ops, in_flight,
                      _time_budget_s(warmup_ops, in_flight))
        next_key += warmup_ops
        out["throughput"] = _run_windowed(kv, pool, next_key, request["ops"], in_flight,
                                          _time_budget_s(request["ops"], in_flight))
        next_key += request["ops"]
    if request["blocking_ops"]:
        out["latency"] = _run_blocking(kv, pool, next_key, request["blocking_ops"])
    out["applied_keys"] = kv.size()
    return out


class _Member:
    """One member process and its line-per-request JSON channel."""

    def __init__(self, spec: dict):
        self.address = spec["self"]
        self.log_path = os.path.join(spec["dir"], "member.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_member", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, timeout_s: float) -> dict:
        """The next reply; raises with the member's log tail if it died or stayed silent."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        if line is None:
            raise RuntimeError(f"member {self.address} gave no reply:\n{self.log_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"member {self.address}: {reply['error']}\n{self.log_tail()}")
        return reply

    def request(self, timeout_s: float = _REQUEST_TIMEOUT_S, **request) -> dict:
        """Send one request and wait for its reply."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.receive(timeout_s)

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the member's stderr log, for error messages."""
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-max_chars:]

    def close(self, grace_s: float = 5.0):
        """Stop politely, then terminate, then kill: no member outlives the benchmark."""
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
                self.proc.wait(grace_s)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        for stop in (self.proc.terminate, self.proc.kill):
            if self.proc.poll() is not None:
                break
            stop()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


def free_ports(n: int) -> list:
    """``n`` distinct loopback ports the kernel just handed out (all held until all are known)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for_leader(members: list) -> _Member:
    """Poll until every member names the same leader and that member says it leads."""
    deadline, statuses = time.monotonic() + _ELECTION_WAIT_S, []
    while time.monotonic() < deadline:
        statuses = [m.request(cmd="status") for m in members]
        leaders = {s["leader"] for s in statuses}
        if len(leaders) == 1 and None not in leaders:
            (leader_address,) = leaders
            leader = next(m for m in members if m.address == leader_address)
            if statuses[members.index(leader)]["is_leader"]:
                return leader
        time.sleep(0.05)
    raise RuntimeError(f"no agreed leader after {_ELECTION_WAIT_S:.0f} s: {statuses}")


def _wait_replicated(members: list, applied_keys: int) -> None:
    """Check the writes really reached every member: all apply as many keys as the leader."""
    deadline = time.monotonic() + _REQUEST_TIMEOUT_S
    while True:
        counts = [m.request(cmd="status")["applied_keys"] for m in members]
        if all(c == applied_keys for c in counts):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"members applied {counts} keys, the leader {applied_keys}")
        time.sleep(0.05)


def _run_cluster(root: str, tag: str, *, batch: bool, fsync: bool, payload_bytes: int,
                 seed: int, request: dict) -> dict:
    """Start 3 members, wait for a leader, run ``request`` on the leader, stop everything."""
    ports = free_ports(_MEMBERS)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    members = []
    try:
        for i, address in enumerate(addresses):
            member_dir = os.path.join(root, f"{tag}-member{i}")
            os.makedirs(member_dir)
            members.append(_Member({
                "index": i, "self": address, "partners": [a for a in addresses if a != address],
                "dir": member_dir, "batch": batch, "fsync": fsync,
                "payload_bytes": payload_bytes, "seed": seed}))
        for m in members:
            m.receive(_REQUEST_TIMEOUT_S * 4)  # "bound": the member listens on its port
        t0 = time.perf_counter()
        leader = _wait_for_leader(members)
        election_s = time.perf_counter() - t0
        budget_s = (_time_budget_s(request["ops"] + _WARMUP_OPS, request["in_flight"])
                    + _time_budget_s(request["blocking_ops"] + 20, 1))
        result = leader.request(timeout_s=budget_s, cmd="run", **request)
        result.update(election_s=election_s, leader=leader.address)
        _wait_replicated(members, result["applied_keys"])
        return result
    finally:
        for m in members:
            m.close()


def _pysyncobj_version() -> str:
    """The version of the PySyncObj that is imported (members run the same interpreter)."""
    from pysyncobj.version import VERSION

    return VERSION


def bench_pysyncobj(*, payload_bytes: int = 100, ops: int = 20000, in_flight: int = 1000,
                    blocking_ops: int = 2000, workdir: str, fsync: bool = False,
                    append_entries_use_batch: bool | None = None, seed: int = 0) -> dict:
    """Measure a 3-member PySyncObj cluster with its journal files under ``workdir``.

    Returns ``throughput_ops_s`` (``ops`` writes, ``in_flight`` outstanding), ``p50_ms`` and
    ``p99_ms`` (``blocking_ops`` sequential blocking writes), plus the configuration and
    diagnostics. ``fsync=False`` is stock PySyncObj (journal in the page cache, never fsync'd);
    ``fsync=True`` flushes the journal before every outgoing message (see the module docstring).
    ``append_entries_use_batch=None``: throughput is the better of batched and unbatched, latency
    is unbatched; every measurement runs on a fresh cluster in a new directory under ``workdir``,
    removed afterwards.
    """
    for name, value in (("payload_bytes", payload_bytes), ("ops", ops), ("in_flight", in_flight),
                        ("blocking_ops", blocking_ops)):
        at_least(name, integer(name, value), 1)
    auto = append_entries_use_batch is None
    throughput_batches = (True, False) if auto else (append_entries_use_batch,)
    latency_batch = False if auto else append_entries_use_batch
    common = {"fsync": fsync, "payload_bytes": payload_bytes, "seed": seed}
    root = tempfile.mkdtemp(prefix="pysyncobj-", dir=workdir)
    try:
        tput_runs = {
            batch: _run_cluster(root, f"tput-{batch}", batch=batch, **common, request={
                "ops": ops, "in_flight": in_flight, "blocking_ops": 0})
            for batch in throughput_batches
        }
        lat_run = _run_cluster(root, "lat", batch=latency_batch, **common, request={
            "ops": 0, "in_flight": in_flight, "blocking_ops": blocking_ops})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best_batch = max(tput_runs, key=lambda b: tput_runs[b]["throughput"]["ops_s"])
    tput, lat = tput_runs[best_batch]["throughput"], lat_run["latency"]
    failed = sum(r["throughput"]["failed"] for r in tput_runs.values()) + lat["failed"]
    if failed > _MAX_FAILED_SHARE * (ops + blocking_ops) or "p50_ms" not in lat:
        raise RuntimeError(f"too many failed PySyncObj writes: {tput_runs}, {lat}")
    return {
        "system": "pysyncobj", "version": _pysyncobj_version(), "members": _MEMBERS,
        "durable": True, "fsync": fsync,
        "durability": ("journal msync'd before each outgoing message, term/vote fsync'd" if fsync
                       else "mmap journal in the page cache, never fsync'd (survives process "
                            "crash, not power loss)"),
        "client": "in the leader's process, calling its SyncObj (no forwarding hop)",
        "payload_bytes": payload_bytes, "key_bytes": KEY_BYTES,
        "ops": ops, "in_flight": in_flight, "blocking_ops": blocking_ops,
        "throughput_ops_s": tput["ops_s"], "throughput_elapsed_s": tput["elapsed_s"],
        "throughput_append_entries_use_batch": best_batch,
        "throughput_ops_s_by_batch": {str(b): run["throughput"]["ops_s"]
                                      for b, run in tput_runs.items()},
        "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
        "mean_ms": lat["mean_ms"], "max_ms": lat["max_ms"],
        "latency_append_entries_use_batch": latency_batch,
        "failed_ops": failed,
        "journal_flushes_leader": tput_runs[best_batch].get("journal_flushes"),
        "election_s_max": max(r["election_s"] for r in (*tput_runs.values(), lat_run)),
    }


def main(argv: list | None = None) -> int:
    """Command line: run :func:`bench_pysyncobj` once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--blocking-ops", type=int, default=2000)
    parser.add_argument("--fsync", action="store_true", help="msync the journal before sending")
    parser.add_argument("--batch", choices=("auto", "on", "off"), default="auto",
                        help="appendEntriesUseBatch (auto: best for throughput, off for latency)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="parent of the journals (default: /tmp)")
    args = parser.parse_args(argv)
    batch = {"auto": None, "on": True, "off": False}[args.batch]
    with tempfile.TemporaryDirectory(prefix="raft-peers-", dir=args.workdir) as workdir:
        t0 = time.perf_counter()
        r = bench_pysyncobj(payload_bytes=args.payload_bytes, ops=args.ops,
                            in_flight=args.in_flight, blocking_ops=args.blocking_ops,
                            workdir=workdir, fsync=args.fsync, append_entries_use_batch=batch,
                            seed=args.seed)
        wall_s = time.perf_counter() - t0
    print(f"PySyncObj {r['version']}, {r['members']} members, {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} cores; {r['durability']}")
    print(f"  throughput  {r['throughput_ops_s']:10.0f} ops/s   ({r['ops']} x {KEY_BYTES}+"
          f"{r['payload_bytes']} B, {r['in_flight']} in flight, "
          f"batch={r['throughput_append_entries_use_batch']})")
    print(f"  blocking    p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
          f"mean {r['mean_ms']:.2f} ms  max {r['max_ms']:.2f} ms   ({r['blocking_ops']} writes, "
          f"batch={r['latency_append_entries_use_batch']})")
    others = ", ".join(f"batch={b}: {v:.0f}" for b, v in r["throughput_ops_s_by_batch"].items())
    print(f"  throughput by appendEntriesUseBatch: {others} ops/s")
    print(f"  failed ops {r['failed_ops']}, slowest election {r['election_s_max']:.2f} s, "
          f"wall {wall_s:.1f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_member":
        sys.exit(_member_main(json.loads(sys.argv[2])))
    sys.exit(main())
