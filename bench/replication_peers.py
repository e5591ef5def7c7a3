"""The peer side of ``bench/replication.py``: etcd (3 Raft members) and Redis (a leader and one replica).

Theory of operation: every server is a real process started here, on free loopback ports, with
its files in a fresh temporary directory; the bench waits until the group can take writes,
measures it from this process, then stops every process and removes the directory. The workload
is the same for both: 16-byte keys ``b"k%015d" % i`` (distinct for every write of a group's life)
and 100-byte values cycled from a pool drawn from ``random.Random(seed)``.

**etcd** (:class:`EtcdCluster`, Debian's ``etcd-server``, ``/usr/bin/etcd``): ``members`` members
bootstrapped statically (``--initial-cluster``, state ``new``), client and peer URLs on
127.0.0.1, ``ETCD*`` variables removed from their environment so only our flags count. Ready
once every member's ``Maintenance/Status`` names the same leader; the leader is the member whose
own id that is. The client speaks gRPC through ``grpcio`` alone: no generated stubs, no ``etcd3``
package. A ``PutRequest`` is encoded here (the grammar below) and the reply is kept as raw bytes;
only ``Status`` replies are decoded. Every Put goes to the leader's client URL.

* throughput: ``in_flight`` coroutines on one ``grpc.aio`` channel, each with one Put
  outstanding, so exactly ``in_flight`` are in flight until the tail. ``grpc.aio`` because it was
  the faster client on this 2-core machine (about 14,000 against 11,000 Puts/s at 256 in flight
  for ``.future()`` calls refilled from done-callbacks): a completion resumes a coroutine on the
  event loop, where a future's callback runs on a gRPC thread that fights the submitting thread
  for the GIL. ops/s = acknowledged Puts / time from the first submit to the last reply, after a
  warm-up on the same channel. The leader's store revision must grow by at least the number of
  acknowledged Puts, and the bench waits until every member has applied up to the leader's.
* latency: sequential blocking Puts on a plain ``grpc`` channel; nearest-rank p50 / p99.

Durability of etcd. ``fsync=True`` is etcd's default: each member fsyncs its WAL (a batch of
entries per Raft ``Ready``, so concurrent Puts share a sync) before it acknowledges them to the
leader. The leader sends the entries before writing its own WAL (Raft thesis 10.2.1), but it
counts them committed only in a later ``Ready``, which its loop takes after that write, so an
acknowledged Put is in the fsync'd WAL of a majority (read from 3.4's ``etcdserver/raft.go``,
not tested by pulling the power). The Put returns once it is applied to the leader's bbolt store, whose own fsync'd
commit comes later (every 100 ms); the WAL is what a restart replays. ``fsync=False`` adds the
hidden ``--unsafe-no-fsync`` (etcd >= 3.4.10, not listed by ``etcd --help``): the WAL and bbolt
are still written but never fsync'd, so a write survives a crashed process, not a power loss.

PutRequest and the replies, as protobuf (field numbers from etcd's ``rpc.proto``)::

    varint         := 7-bit groups, least significant first, high bit set on all but the last
    PutRequest     := 0x0a varint(len(key)) key  0x12 varint(len(value)) value
    PutResponse    := [0x0a varint(len) ResponseHeader] [0x12 ... prev_kv, unused]
    ResponseHeader := [0x08 cluster_id] [0x10 member_id] [0x18 revision] [0x20 raft_term]
    StatusRequest  := (empty)
    StatusResponse := [0x0a varint(len) ResponseHeader] [0x12 version] [0x18 db_size]
                      [0x20 leader] [0x28 raft_index] [0x30 raft_term] (later fields skipped)

**Redis** (:class:`RedisPair`, Debian's ``redis-server``, through ``redis-py``): a leader and a
replica started with ``--replicaof``, no config file, ``--save ''`` (no RDB snapshots) and
``--appendonly no`` by default: nothing of the data set ever reaches the disk, the baseline of our
async replication mode. ``appendonly=True`` turns on the AOF with Redis's ``appendfsync
everysec``. Ready once the replica reports ``master_link_status:up``.

* pipelined SET: ``ops`` SETs in pipelines of ``pipeline`` (``transaction=False``), one pipeline
  per round trip; ops/s over the whole run, after a warm-up;
* the same with ``WAIT 1 <timeout_ms>`` as the last command of every pipeline: the reply comes
  once the replica acknowledges every write before it (synchronous to the replica's memory, not
  to any disk). A WAIT that returns 0 means the timeout passed first; those pipelines are
  counted, never hidden;
* blocking: one SET per round trip, and SET followed by ``WAIT 1`` (both sent in one round trip,
  as a client that wants the acknowledgement would); nearest-rank p50 / p99.

After each run the bench waits until the replica's offset reaches the leader's and checks both
hold the same number of keys.

Lifetimes: each server runs in its own process group, started through ``setpriv --pdeathsig
KILL`` when util-linux has it, so the kernel kills it if the thread that started it dies (start
and use a group from one long-lived thread). ``with`` blocks, ``finally`` and an ``atexit`` hook
stop the groups: SIGTERM to the process group, SIGKILL after a grace period.

Determinism: keys, values and the order of writes come from ``seed``; timing is wall-clock
(``perf_counter``). Run alone: ``python bench/replication_peers.py [--ops N] [--in-flight N]
[--blocking-ops N] [--redis-ops N] [--pipeline N] [--peer etcd|redis|all]``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ddia_ray._validate import at_least, integer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from raft_peers import free_ports  # noqa: E402 - the sibling bench module, found through the line above

__all__ = [
    "KEY_BYTES",
    "VALUE_BYTES",
    "EtcdCluster",
    "RedisPair",
    "etcd_missing",
    "redis_missing",
    "main",
]

#: Every key is this many bytes, as in the rest of the benchmarks.
KEY_BYTES = 16
#: Every value is this many bytes.
VALUE_BYTES = 100

_ETCD_BINARY = "etcd"
_REDIS_BINARY = "redis-server"
_VALUE_POOL_SIZE = 256
_START_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 30.0
_CATCH_UP_TIMEOUT_S = 60.0
_STOP_GRACE_S = 5.0
_POLL_S = 0.05
_BLOCKING_WARMUP_OPS = 20
# failed writes above this share make the figures meaningless (a leader change mid-run, say)
_MAX_FAILED_SHARE = 0.01

_PUT_METHOD = "/etcdserverpb.KV/Put"
_STATUS_METHOD = "/etcdserverpb.Maintenance/Status"
# grpc honours http_proxy for every target unless told not to, and retries a refused connection
# after 1 s, then ever longer: these servers are on loopback and may just be starting
_GRPC_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.initial_reconnect_backoff_ms", 50),
                 ("grpc.min_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 500)]


# ---------------------------------------------------------------------------------------------
# Skip path


def _binary(name: str) -> str | None:
    """The path of executable ``name`` on ``PATH`` or in /usr/sbin, /usr/bin; None if absent."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _module_missing(module: str, package: str) -> str | None:
    """A message if Python module ``module`` cannot be imported (``package`` provides it)."""
    if importlib.util.find_spec(module) is None:
        return (f"the Python module {module} is not installed: pip install {package} "
                "(or pip install -e '.[bench]')")
    return None


def etcd_missing() -> str | None:
    """Why the etcd peer cannot run here, or None if it can (the bench prints this and skips)."""
    if _binary(_ETCD_BINARY) is None:
        return "etcd-server is not installed: apt-get install etcd-server"
    return _module_missing("grpc", "grpcio")


def redis_missing() -> str | None:
    """Why the Redis peer cannot run here, or None if it can (the bench prints this and skips)."""
    if _binary(_REDIS_BINARY) is None:
        return "redis-server is not installed: apt-get install redis-server"
    return _module_missing("redis", "redis")


# ---------------------------------------------------------------------------------------------
# Workload and statistics


def _key(i: int) -> bytes:
    """The ``i``-th key: always ``KEY_BYTES`` long, distinct per write."""
    return b"k%015d" % i


def _value_pool(seed: int) -> list:
    """A few hundred seeded random values of ``VALUE_BYTES``, cycled through by the writes."""
    rng = random.Random(seed)
    return [rng.randbytes(VALUE_BYTES) for _ in range(_VALUE_POOL_SIZE)]


def _percentile(sorted_values: list, q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending, non-empty list."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency_summary(latencies_ms: list) -> dict:
    """p50, p99, mean and max of a list of latencies in ms (sorted in place)."""
    latencies_ms.sort()
    return {"p50_ms": _percentile(latencies_ms, 50), "p99_ms": _percentile(latencies_ms, 99),
            "mean_ms": sum(latencies_ms) / len(latencies_ms), "max_ms": latencies_ms[-1]}


def _check_failures(what: str, failed: int, attempted: int) -> None:
    """Refuse figures where too many writes failed."""
    if failed > _MAX_FAILED_SHARE * attempted:
        raise RuntimeError(f"{what}: {failed} of {attempted} writes failed")


# ---------------------------------------------------------------------------------------------
# Protobuf, by hand: the few messages of etcd's API the bench needs


def _put_varint(n: int) -> bytes:
    """Encode a non-negative int as a protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _get_varint(buf: bytes, pos: int) -> tuple:
    """Decode the varint at ``buf[pos:]``; returns ``(value, position after it)``."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_put_request(key_value: tuple) -> bytes:
    """Serialize ``(key, value)`` as an etcd ``PutRequest`` (fields 1 and 2, length-delimited)."""
    key, value = key_value
    return b"\x0a" + _put_varint(len(key)) + key + b"\x12" + _put_varint(len(value)) + value


def _accept_bytes(reply: bytes) -> bytes:
    """Response deserializer for Puts: keep the raw reply (no decoding on the hot path)."""
    return reply


def _decode_fields(buf: bytes) -> dict:
    """Field number -> last value of a protobuf message (varints as ints, lengths as bytes)."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = _get_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            fields[number], pos = _get_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _get_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            fields[number], pos = buf[pos:pos + length], pos + length
        elif wire_type in (1, 5):  # fixed64 / fixed32: none in these messages, skipped anyway
            pos += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
    return fields


def _decode_header(buf: bytes) -> dict:
    """Decode an etcd ``ResponseHeader``."""
    f = _decode_fields(buf)
    return {"cluster_id": f.get(1, 0), "member_id": f.get(2, 0), "revision": f.get(3, 0),
            "raft_term": f.get(4, 0)}


def _decode_put_revision(reply: bytes) -> int:
    """The store revision an etcd ``PutResponse`` reports (the revision of that Put)."""
    return _decode_header(_decode_fields(reply).get(1, b""))["revision"]


def _decode_status(buf: bytes) -> dict:
    """Decode an etcd ``StatusResponse`` (the fields the bench uses)."""
    f = _decode_fields(buf)
    return {"header": _decode_header(f.get(1, b"")), "version": f.get(2, b"").decode(),
            "db_size": f.get(3, 0), "leader": f.get(4, 0), "raft_index": f.get(5, 0),
            "raft_term": f.get(6, 0)}


# ---------------------------------------------------------------------------------------------
# Server processes


class _Server:
    """One server process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list, log_path: str, env: dict | None = None):
        self.name = name
        self.log_path = log_path
        guard = shutil.which("setpriv")
        if guard and sys.platform == "linux":
            # the kernel kills the server if our starting thread dies, even by SIGKILL
            argv = [guard, "--pdeathsig", "KILL", "--", *argv]
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except BaseException:
            self._log.close()
            raise

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the server's log, for error messages."""
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-max_chars:]

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n"
                               f"{self.log_tail()}")

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after ``grace_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        if not self._log.closed:
            self._log.close()


# groups not yet stopped; the atexit hook stops whatever a caller forgot
_LIVE_GROUPS: set = set()
_LIVE_LOCK = threading.Lock()


def _stop_live_groups() -> None:
    """``atexit`` hook: stop every group still running."""
    with _LIVE_LOCK:
        groups = list(_LIVE_GROUPS)
    for group in groups:
        group.stop()


atexit.register(_stop_live_groups)


class _ServerGroup:
    """Servers started together under one temporary directory, stopped together."""

    def __init__(self, prefix: str, workdir: str | None):
        self._prefix = prefix
        self._workdir = workdir
        self.root: str | None = None
        self.servers: list = []

    def _open(self) -> None:
        """Create the temporary directory and register for the ``atexit`` hook."""
        self.root = tempfile.mkdtemp(prefix=self._prefix, dir=self._workdir)
        with _LIVE_LOCK:
            _LIVE_GROUPS.add(self)

    def _close_clients(self) -> None:
        """Subclasses close their client connections here, before the servers stop."""

    def stop(self) -> None:
        """Stop every server and remove the temporary directory (safe to call twice)."""
        try:
            self._close_clients()
        finally:
            for server in self.servers:
                server.stop()
            self.servers = []
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            with _LIVE_LOCK:
                _LIVE_GROUPS.discard(self)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Start the servers and wait until they take writes."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# etcd


class EtcdCluster(_ServerGroup):
    """A ``members``-member etcd cluster on loopback, driven over gRPC from this process.

    Use as a context manager (or call :meth:`start` and :meth:`stop`). ``fsync=True`` is etcd's
    default (WAL fsync'd before acknowledging); ``fsync=False`` passes ``--unsafe-no-fsync``.
    ``workdir`` is the parent of the temporary data directories (default: the system's).
    """

    def __init__(self, members: int = 3, *, fsync: bool = True, workdir: str | None = None,
                 binary: str | None = None):
        super().__init__("etcd-peers-", workdir)
        self.members = at_least("members", integer("members", members), 1)
        self.fsync = bool(fsync)
        self._binary_path = binary
        self.client_urls: list = []
        self.member_ids: list = []
        self.leader_index: int | None = None
        self.version: str | None = None
        self._channels: list = []
        self._put_call = None
        self._next_key = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the members, wait until all name one leader, and check a Put succeeds."""
        import grpc

        binary = self._binary_path or _binary(_ETCD_BINARY)
        if binary is None:
            raise RuntimeError(etcd_missing())
        self._open()
        ports = free_ports(2 * self.members)
        names = [f"m{i}" for i in range(self.members)]
        client = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(self.members)]
        peer = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(self.members)]
        initial = ",".join(f"{n}={u}" for n, u in zip(names, peer))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        for i, name in enumerate(names):
            argv = [binary, "--name", name, "--data-dir", os.path.join(self.root, name),
                    "--listen-client-urls", client[i], "--advertise-client-urls", client[i],
                    "--listen-peer-urls", peer[i], "--initial-advertise-peer-urls", peer[i],
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"ddia-ray-bench-{ports[0]}",
                    "--logger", "zap", "--log-level", "warn"]
            if not self.fsync:
                argv.append("--unsafe-no-fsync")
            self.servers.append(_Server(f"etcd member {name}", argv,
                                        os.path.join(self.root, f"{name}.log"), env))
        self.client_urls = client
        self._channels = [grpc.insecure_channel(u[len("http://"):], options=_GRPC_OPTIONS)
                          for u in client]
        self._wait_for_leader()
        self._put_call = self._channels[self.leader_index].unary_unary(
            _PUT_METHOD, request_serializer=_encode_put_request,
            response_deserializer=_accept_bytes)
        self._put_blocking(_key(self._take_keys(1)), _value_pool(0)[0])  # the cluster takes writes

    def _close_clients(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels, self._put_call = [], None

    def _status(self, index: int, timeout_s: float = 2.0) -> dict:
        """``Maintenance/Status`` of member ``index``."""
        call = self._channels[index].unary_unary(
            _STATUS_METHOD, request_serializer=_accept_bytes, response_deserializer=_decode_status)
        return call(b"", timeout=timeout_s)

    def status(self) -> list:
        """``Maintenance/Status`` of every member, in member order (header, leader, revision...)."""
        return [self._status(i) for i in range(self.members)]

    def _wait_for_leader(self) -> None:
        """Poll every member until all answer and name the same leader, one of them."""
        import grpc

        deadline, last = time.monotonic() + _START_TIMEOUT_S, "no answer yet"
        while time.monotonic() < deadline:
            for server in self.servers:
                server.check_alive()
            try:
                statuses = self.status()
            except grpc.RpcError as exc:
                last = f"{exc.code()}: {exc.details()}"
                time.sleep(_POLL_S)
                continue
            ids = [s["header"]["member_id"] for s in statuses]
            leaders = {s["leader"] for s in statuses}
            if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                self.member_ids, self.leader_index = ids, ids.index(leader)
                self.version = statuses[self.leader_index]["version"]
                return
            last = f"leaders named: {[s['leader'] for s in statuses]}, members: {ids}"
            time.sleep(_POLL_S)
        raise RuntimeError(f"etcd: no agreed leader after {_START_TIMEOUT_S:.0f} s ({last})")

    @property
    def leader_url(self) -> str:
        """The client URL of the member that led when the cluster became ready."""
        return self.client_urls[self.leader_index]

    def _leader_target(self) -> str:
        return self.leader_url[len("http://"):]

    def _take_keys(self, n: int) -> int:
        """Reserve ``n`` fresh key indexes; returns the first."""
        first, self._next_key = self._next_key, self._next_key + n
        return first

    def _put_blocking(self, key: bytes, value: bytes) -> bytes:
        """One Put to the leader, waiting for its reply."""
        return self._put_call((key, value), timeout=_CALL_TIMEOUT_S)

    def wait_replicated(self) -> int:
        """Wait until every member has applied up to the leader's revision; returns it."""
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
        target = self._status(self.leader_index)["header"]["revision"]
        while True:
            revisions = [s["header"]["revision"] for s in self.status()]
            if min(revisions) >= target:
                return target
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd members at revisions {revisions}, the leader at {target}")
            time.sleep(_POLL_S)

    def _leader_now(self) -> int:
        """The member id the leader's status names now."""
        return self._status(self.leader_index)["leader"]

    # -- measurements -----------------------------------------------------------------------

    def write_throughput(self, ops: int = 50_000, in_flight: int = 256, seed: int = 0,
                         warmup_ops: int | None = None) -> dict:
        """Puts/s with ``in_flight`` Puts outstanding, over ``ops`` Puts after a warm-up.

        Returns ``ops`` (acknowledged), ``seconds``, ``ops_per_s``, ``failed``, ``in_flight``,
        ``client_cpu_s`` (this process's CPU time over the run: the client's own cost),
        ``last_revision`` (the highest store revision a Put reply reported) and
        ``leader_stable``. Raises if the leader's revision grew by less than the Puts it
        acknowledged, or if more than 1% of the Puts failed.
        """
        at_least("ops", integer("ops", ops), 1)
        at_least("in_flight", integer("in_flight", in_flight), 1)
        warmup = min(ops, 2_000) if warmup_ops is None else integer("warmup_ops", warmup_ops)
        pool = _value_pool(seed)
        warm_first, first = self._take_keys(warmup), self._take_keys(ops)
        leader_before = self._leader_now()
        revision_before = self._status(self.leader_index)["header"]["revision"]
        result = _run_in_fresh_loop(_put_window(
            self._leader_target(), pool, warm_first, warmup, first, ops, in_flight))
        grown = self.wait_replicated() - revision_before
        # every acknowledged Put made one revision: fewer would mean acknowledged writes are lost
        if grown < result["ops"] + result.pop("warmup_ok"):
            raise RuntimeError(f"etcd acknowledged {result['ops']} Puts (and the warm-up) but its "
                               f"revision grew by {grown}")
        _check_failures("etcd write_throughput", result["failed"], ops)
        result.update(in_flight=in_flight, leader_stable=self._leader_now() == leader_before,
                      fsync=self.fsync)
        return result

    def blocking_latency(self, ops: int = 2_000, seed: int = 0) -> dict:
        """``ops`` sequential Puts, each waiting for its reply: ``p50_ms``, ``p99_ms`` (nearest rank).

        Also ``mean_ms``, ``max_ms``, ``ops`` (acknowledged), ``failed`` and ``leader_stable``.
        """
        import grpc

        at_least("ops", integer("ops", ops), 1)
        pool = _value_pool(seed)
        warm_first, first = self._take_keys(_BLOCKING_WARMUP_OPS), self._take_keys(ops)
        for i in range(warm_first, warm_first + _BLOCKING_WARMUP_OPS):
            self._put_blocking(_key(i), pool[i % len(pool)])
        leader_before = self._leader_now()
        latencies_ms, failed = [], 0
        for i in range(first, first + ops):
            key, value = _key(i), pool[i % len(pool)]
            t0 = time.perf_counter()
            try:
                self._put_blocking(key, value)
            except grpc.RpcError:
                failed += 1
                continue
            latencies_ms.append((time.perf_counter() - t0) * 1e3)
        _check_failures("etcd blocking_latency", failed, ops)
        self.wait_replicated()
        return {"ops": len(latencies_ms), "failed": failed, **_latency_summary(latencies_ms),
                "leader_stable": self._leader_now() == leader_before, "fsync": self.fsync}


def _run_in_fresh_loop(coroutine):
    """Run ``coroutine`` on a new event loop (in a helper thread if this one already has a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict = {}

    def runner():
        try:
            box["result"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=runner, name="etcd-put-window")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


async def _put_window(target: str, pool: list, warm_first: int, warm_ops: int, first: int,
                      ops: int, in_flight: int) -> dict:
    """Warm up, then ``ops`` Puts with ``in_flight`` outstanding, on one ``grpc.aio`` channel."""
    import grpc

    async with grpc.aio.insecure_channel(target, options=_GRPC_OPTIONS) as channel:
        put = channel.unary_unary(_PUT_METHOD, request_serializer=_encode_put_request,
                                  response_deserializer=_accept_bytes)
        await asyncio.wait_for(channel.channel_ready(), _START_TIMEOUT_S)

        async def window(start: int, count: int) -> dict:
            indexes = iter(range(start, start + count))  # shared: each worker takes the next
            tally = {"ok": 0, "failed": 0, "last_revision": 0}

            async def worker():
                reply = b""
                for i in indexes:
                    try:
                        reply = await put((_key(i), pool[i % len(pool)]), timeout=_CALL_TIMEOUT_S)
                    except grpc.aio.AioRpcError:
                        tally["failed"] += 1
                        continue
                    tally["ok"] += 1
                if reply:
                    tally["last_revision"] = max(tally["last_revision"], _decode_put_revision(reply))

            await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))
            return tally

        warm = await window(warm_first, warm_ops) if warm_ops else {"ok": 0}
        cpu0, t0 = time.process_time(), time.perf_counter()
        tally = await window(first, ops)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return {"ops": tally["ok"], "failed": tally["failed"], "seconds": seconds,
            "ops_per_s": tally["ok"] / seconds, "client_cpu_s": cpu_s,
            "last_revision": tally["last_revision"], "warmup_ok": warm["ok"]}


# ---------------------------------------------------------------------------------------------
# Redis


class RedisPair(_ServerGroup):
    """A Redis leader and one replica (``--replicaof``) on loopback, driven with ``redis-py``.

    Use as a context manager (or call :meth:`start` and :meth:`stop`). ``appendonly=False`` (the
    default) keeps the data set in memory only (``--save ''``, ``--appendonly no``);
    ``appendonly=True`` writes an AOF with ``appendfsync everysec`` on both. ``workdir`` is the
    parent of the temporary directories (default: the system's).
    """

    def __init__(self, *, appendonly: bool = False, workdir: str | None = None,
                 binary: str | None = None):
        super().__init__("redis-peers-", workdir)
        self.appendonly = bool(appendonly)
        self._binary_path = binary
        self.ports: list = []
        self.version: str | None = None
        self.leader = None
        self.replica = None
        self._next_key = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the leader and the replica, wait for ``master_link_status:up``."""
        import redis

        binary = self._binary_path or _binary(_REDIS_BINARY)
        if binary is None:
            raise RuntimeError(redis_missing())
        self._open()
        self.ports = free_ports(2)
        for role, port in zip(("leader", "replica"), self.ports):
            data_dir = os.path.join(self.root, role)
            os.makedirs(data_dir)
            argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                    "--daemonize", "no", "--save", "", "--appendonly",
                    "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                    # full sync at once instead of waiting 5 s for more replicas to join
                    "--repl-diskless-sync-delay", "0"]
            if role == "replica":
                argv += ["--replicaof", "127.0.0.1", str(self.ports[0])]
            self.servers.append(_Server(f"redis {role}", argv,
                                        os.path.join(self.root, f"{role}.log")))
        self.leader, self.replica = (
            redis.Redis(host="127.0.0.1", port=p, socket_timeout=_CALL_TIMEOUT_S,
                        socket_connect_timeout=_CALL_TIMEOUT_S) for p in self.ports)
        self._wait_for_link()
        self.version = self.leader.info("server")["redis_version"]

    def _close_clients(self) -> None:
        for client in (self.leader, self.replica):
            if client is not None:
                client.close()
        self.leader = self.replica = None

    def _wait_for_link(self) -> None:
        """Poll until both answer PING and the replica's link to the leader is up."""
        import redis

        deadline, last = time.monotonic() + _START_TIMEOUT_S, "no answer yet"
        while time.monotonic() < deadline:
            for server in self.servers:
                server.check_alive()
            try:
                self.leader.ping()
                link = self.replica.info("replication").get("master_link_status")
                if link == "up":
                    return
                last = f"master_link_status:{link}"
            except redis.ConnectionError as exc:
                last = str(exc)
            time.sleep(_POLL_S)
        raise RuntimeError(f"redis: replica not linked after {_START_TIMEOUT_S:.0f} s ({last})")

    def _take_keys(self, n: int) -> int:
        """Reserve ``n`` fresh key indexes; returns the first."""
        first, self._next_key = self._next_key, self._next_key + n
        return first

    def wait_replicated(self) -> int:
        """Wait until the replica has processed the leader's whole stream; returns the key count."""
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
        while True:
            target = self.leader.info("replication")["master_repl_offset"]
            done = self.replica.info("replication").get("slave_repl_offset", -1)
            if done >= target:
                keys = self.leader.dbsize()
                if self.replica.dbsize() == keys:
                    return keys
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis replica at offset {done}, the leader at {target}")
            time.sleep(_POLL_S)

    # -- measurements -----------------------------------------------------------------------

    def pipelined_set(self, ops: int = 200_000, pipeline: int = 1000, wait: bool = False,
                      wait_timeout_ms: int = 1000, seed: int = 0) -> dict:
        """SETs/s in pipelines of ``pipeline`` (``transaction=False``), over ``ops`` SETs.

        ``wait=True`` ends each pipeline with ``WAIT 1 wait_timeout_ms``. Returns ``ops``,
        ``seconds``, ``ops_per_s``, ``pipelines``, ``wait_short`` (pipelines whose WAIT reported
        no replica), ``client_cpu_s`` and the settings.
        """
        at_least("ops", integer("ops", ops), 1)
        at_least("pipeline", integer("pipeline", pipeline), 1)
        at_least("wait_timeout_ms", integer("wait_timeout_ms", wait_timeout_ms), 0)
        pool = _value_pool(seed)
        warmup = min(ops, 10 * pipeline)
        self._pipelines(pool, self._take_keys(warmup), warmup, pipeline, wait, wait_timeout_ms)
        first = self._take_keys(ops)
        cpu0, t0 = time.process_time(), time.perf_counter()
        pipelines, short = self._pipelines(pool, first, ops, pipeline, wait, wait_timeout_ms)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        self.wait_replicated()
        return {"ops": ops, "seconds": seconds, "ops_per_s": ops / seconds, "pipeline": pipeline,
                "pipelines": pipelines, "wait": wait, "wait_timeout_ms": wait_timeout_ms,
                "wait_short": short, "client_cpu_s": cpu_s, "appendonly": self.appendonly}

    def _pipelines(self, pool: list, first: int, ops: int, pipeline: int, wait: bool,
                   wait_timeout_ms: int) -> tuple:
        """Send ``ops`` SETs in pipelines; returns (pipelines sent, WAITs that reported 0)."""
        pipe = self.leader.pipeline(transaction=False)
        sent = short = 0
        for start in range(first, first + ops, pipeline):
            for i in range(start, min(start + pipeline, first + ops)):
                pipe.set(_key(i), pool[i % len(pool)])
            if wait:
                pipe.execute_command("WAIT", 1, wait_timeout_ms)
            replies = pipe.execute()
            if wait:
                short += replies.pop() < 1
            if not all(replies):
                raise RuntimeError(f"redis: a SET in pipeline {sent} failed: {replies}")
            sent += 1
        return sent, short

    def blocking_latency(self, ops: int = 2_000, wait: bool = False, wait_timeout_ms: int = 1000,
                         seed: int = 0) -> dict:
        """``ops`` SETs, one per round trip: ``p50_ms``, ``p99_ms`` (nearest rank).

        ``wait=True`` sends ``WAIT 1 wait_timeout_ms`` right behind each SET in the same round
        trip and times both replies. Also ``mean_ms``, ``max_ms``, ``wait_short``.
        """
        at_least("ops", integer("ops", ops), 1)
        at_least("wait_timeout_ms", integer("wait_timeout_ms", wait_timeout_ms), 0)
        pool = _value_pool(seed)
        pipe = self.leader.pipeline(transaction=False)

        def one(i: int) -> bool:
            """One blocking write; True if the replica acknowledged it (always True without WAIT)."""
            if not wait:
                if not self.leader.set(_key(i), pool[i % len(pool)]):
                    raise RuntimeError(f"redis: SET {_key(i)!r} failed")
                return True
            pipe.set(_key(i), pool[i % len(pool)])
            pipe.execute_command("WAIT", 1, wait_timeout_ms)
            ok, acked = pipe.execute()
            if not ok:
                raise RuntimeError(f"redis: SET {_key(i)!r} failed")
            return acked >= 1

        warm_first = self._take_keys(_BLOCKING_WARMUP_OPS)
        for i in range(warm_first, warm_first + _BLOCKING_WARMUP_OPS):
            one(i)
        first = self._take_keys(ops)
        latencies_ms, short = [], 0
        for i in range(first, first + ops):
            t0 = time.perf_counter()
            acked = one(i)
            latencies_ms.append((time.perf_counter() - t0) * 1e3)
            short += not acked
        self.wait_replicated()
        return {"ops": ops, "wait": wait, "wait_short": short, **_latency_summary(latencies_ms),
                "appendonly": self.appendonly}


# ---------------------------------------------------------------------------------------------
# Command line


def _run_etcd(args, fsync: bool) -> None:
    """Measure one etcd cluster and print a line per figure."""
    with EtcdCluster(members=3, fsync=fsync, workdir=args.workdir) as etcd:
        tag = (f"etcd {etcd.version} x3, "
               + ("WAL fsync (default)" if fsync else "--unsafe-no-fsync"))
        r = etcd.write_throughput(ops=args.ops, in_flight=args.in_flight, seed=args.seed)
        print(f"{tag}: Put throughput {r['ops_per_s']:10,.0f} ops/s  ({r['ops']} Puts, "
              f"{r['in_flight']} in flight, {r['seconds']:.2f} s, client CPU "
              f"{r['client_cpu_s'] / r['seconds']:.0%} of a core, failed {r['failed']}, "
              f"leader stable {r['leader_stable']})", flush=True)
        r = etcd.blocking_latency(ops=args.blocking_ops, seed=args.seed)
        print(f"{tag}: blocking Put p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
              f"(mean {r['mean_ms']:.2f}, max {r['max_ms']:.2f}; {r['ops']} Puts)", flush=True)


def _run_redis(args) -> None:
    """Measure one Redis pair and print a line per figure."""
    with RedisPair(workdir=args.workdir) as pair:
        tag = f"redis {pair.version} leader+1 replica, appendonly no"
        for wait in (False, True):
            r = pair.pipelined_set(ops=args.redis_ops, pipeline=args.pipeline, wait=wait,
                                   seed=args.seed)
            what = "pipelined SET + WAIT 1" if wait else "pipelined SET"
            extra = f", WAIT < 1 in {r['wait_short']} of {r['pipelines']}" if wait else ""
            print(f"{tag}: {what} {r['ops_per_s']:10,.0f} ops/s  ({r['ops']} SETs, pipelines of "
                  f"{r['pipeline']}, {r['seconds']:.2f} s, client CPU "
                  f"{r['client_cpu_s'] / r['seconds']:.0%} of a core{extra})", flush=True)
        for wait in (False, True):
            r = pair.blocking_latency(ops=args.blocking_ops, wait=wait, seed=args.seed)
            what = "blocking SET+WAIT 1" if wait else "blocking SET"
            extra = f", WAIT < 1 in {r['wait_short']}" if wait else ""
            print(f"{tag}: {what} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"(mean {r['mean_ms']:.3f}, max {r['max_ms']:.3f}; {r['ops']} writes{extra})",
                  flush=True)


def main(argv: list | None = None) -> int:
    """Command line: measure every peer (skipping one that is not installed), a line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="etcd Puts for throughput")
    parser.add_argument("--in-flight", type=int, default=256, help="etcd Puts outstanding")
    parser.add_argument("--blocking-ops", type=int, default=2_000,
                        help="sequential writes for p50/p99 (etcd and Redis)")
    parser.add_argument("--redis-ops", type=int, default=200_000, help="Redis SETs for throughput")
    parser.add_argument("--pipeline", type=int, default=1000, help="Redis SETs per pipeline")
    parser.add_argument("--peer", choices=("etcd", "redis", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="parent of the data dirs (default: /tmp)")
    args = parser.parse_args(argv)
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
          f"cores; keys {KEY_BYTES} B, values {VALUE_BYTES} B, seed {args.seed}", flush=True)
    if args.peer in ("etcd", "all"):
        if (reason := etcd_missing()) is not None:
            print(f"etcd: skipped: {reason}")
        else:
            for fsync in (True, False):
                _run_etcd(args, fsync)
    if args.peer in ("redis", "all"):
        if (reason := redis_missing()) is not None:
            print(f"redis: skipped: {reason}")
        else:
            _run_redis(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
