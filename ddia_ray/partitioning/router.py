"""The routing tier: router actors behind a balancer, for clients that should not know the map.

Theory of operation
-------------------
DDIA 6.4 names three ways to find a key's partition: any node forwards, a routing tier, or a
partition-aware client. The partition-aware client (:mod:`.client`) is the fast path; this module
is the routing tier, for clients that should stay simple (another language's service, a web
handler) or that should not each hold a map and a session per group.

A router is a runtime *service* (:class:`RouterService`) hosted by the one actor shell, so the
nemesis partitions, pauses, kills and restarts it like any node. Each router holds one
partition-aware client of the store, so it keeps the map, refreshes it when a group refuses a
stale route, and keeps the groups' sessions. Routers take *requests* (:class:`RoutedGet`,
:class:`RoutedWrite`, :class:`RoutedScan`), so the project's balancer
(:class:`~ddia_ray.balancing.BalancerActor`: breakers, retries, health checks, outlier ejection)
stands in front of them; :class:`RouterClient` talks to the balancer. A router that dies is
ejected by the balancer and restarted by the nemesis or the operator: it keeps no state that
the store does not have.

Retries through the balancer are safe for reads. A write the balancer retries on another router
after a lost reply may apply twice (each router has its own sessions): the balancer here retries
only the network's own errors, and a write whose reply was lost is reported as such (outcome
unknown) to the caller, as every client of every store must handle.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterator

from ..codec import record
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError
from ..runtime import NodeGroup
from ..runtime.core import Reply
from ..runtime.service import ServiceSpec
from .keyspace import stored_key

__all__ = ["RoutedGet", "RoutedWrite", "RoutedScan", "RouterService", "RouterTier", "RouterClient"]

_FACTORY = "ddia_ray.partitioning.router:RouterService"


@record("partitioning.routed_get", version=1)
class RoutedGet:
    """Read ``keys`` (bytes) as ``read`` says (None: the router's default, linearizable)."""

    keys: tuple
    read: str | None = None

    def __post_init__(self):
        if not isinstance(self.keys, tuple) or not self.keys or not all(type(k) is bytes for k in self.keys):
            raise InvalidArgumentError("a routed read names a non-empty tuple of bytes keys")


@record("partitioning.routed_write", version=1)
class RoutedWrite:
    """Write ``ops`` (``(kind, key, value_or_end)`` tuples, as ``write`` takes); ``across``: as
    ``across_partitions``."""

    ops: tuple
    across: bool = False

    def __post_init__(self):
        if not isinstance(self.ops, tuple) or not self.ops:
            raise InvalidArgumentError("a routed write holds a non-empty tuple of operations")
        if type(self.across) is not bool:
            raise InvalidArgumentError("across is a bool")


@record("partitioning.routed_scan", version=1)
class RoutedScan:
    """Up to ``limit`` pairs of ``[start, end)`` in the store's scan order (key order for the range
    scheme, hash order for the hash scheme), from ``cursor`` (None: the beginning; else the cursor
    the previous page's answer gave). The answer is ``(keys, values, next cursor or None)``."""

    start: bytes = b""
    end: bytes | None = None
    limit: int = 1000
    cursor: bytes | None = None

    def __post_init__(self):
        if type(self.start) is not bytes or not (self.end is None or type(self.end) is bytes):
            raise InvalidArgumentError("a routed scan's start is bytes and its end bytes or None")
        if not (self.cursor is None or type(self.cursor) is bytes):
            raise InvalidArgumentError("a routed scan's cursor is bytes or None")
        if type(self.limit) is not int or not 1 <= self.limit <= 100_000:
            raise InvalidArgumentError("a routed scan's limit is an int in [1, 100000]")


class _Gathered:
    """The futures of one routed read's keys, answered together."""

    def __init__(self, futures: list):
        self.futures = futures

    def result(self) -> tuple:
        """Every key's value, in order (the first failure raised)."""
        return tuple(f.result() for f in self.futures)


class RouterService:
    """One router: a partition-aware client of store ``store`` answering routed requests."""

    component = "router"
    methods = ("ping", "stats")

    def __init__(self, node_id: str, *, store: str, timeout_s: float = 10.0):
        from .store import PartitionedStore

        self.node_id = node_id
        self.store = PartitionedStore.connect(store, routers=False)
        self.client = self.store.client(timeout_s=timeout_s)
        self.served = 0

    def ping(self) -> str:
        """Liveness probe: the node id."""
        return self.node_id

    def _start(self, payload: Any):
        c = self.client
        if isinstance(payload, RoutedWrite):
            return c.write_nowait(list(payload.ops), across_partitions=payload.across)
        if isinstance(payload, RoutedGet):
            return _Gathered([c.get_nowait(k, read=payload.read) for k in payload.keys])
        if isinstance(payload, RoutedScan):
            done: concurrent.futures.Future = concurrent.futures.Future()
            try:
                done.set_result(self._scan(payload))
            except Exception as e:  # noqa: BLE001 - the caller's, as a record
                done.set_exception(e)
            return done
        raise InvalidArgumentError(f"a router takes RoutedGet, RoutedWrite or RoutedScan, not {type(payload).__name__}")

    def _scan(self, req: RoutedScan) -> tuple:
        """One page, continued from ``req.cursor``: a position among the groups' stored keys, so the
        hash scheme (whose pages are not in key order) pages without skipping or repeating a key."""
        scheme = self.client.partition_map.scheme
        if scheme == "hash":
            begin, stop, keep = req.cursor or b"", None, (req.start, req.end)
        else:
            begin, stop, keep = req.cursor or req.start, req.end, None
        keys: list = []
        values: list = []
        for batch in self.client.scan_stored(begin, stop, keep=keep, page_rows=min(req.limit, 10_000)):
            keys += batch.column(0).to_pylist()
            values += batch.column(1).to_pylist()
            if len(keys) >= req.limit:
                keys, values = keys[:req.limit], values[:req.limit]
                return tuple(keys), tuple(values), stored_key(scheme, keys[-1]) + b"\x00"
        return tuple(keys), tuple(values), None

    def handle_requests(self, payloads: tuple) -> tuple:
        """Start every request at once (the client batches them per group), then answer in order."""
        started = []
        for p in payloads:
            try:
                started.append(self._start(p))
            except Exception as e:  # noqa: BLE001 - a refused request: its reply carries the error
                f: concurrent.futures.Future = concurrent.futures.Future()
                f.set_exception(e)
                started.append(f)
        replies = []
        for i, f in enumerate(started):
            try:
                replies.append(Reply(i, f.result()))
            except Exception as e:  # noqa: BLE001 - each request's own error, as a record
                replies.append(Reply(i, None, False, ErrorRecord.of(e, self.node_id)))
        self.served += len(payloads)
        return tuple(replies)

    def stats(self) -> dict:
        """Requests served, reroutes and the map version this router routes with."""
        return {"served": self.served, "reroutes": self.client.stats["reroutes"],
                "map_version": self.client.partition_map.version}

    def close(self) -> None:
        """Let go of the client and the store handle (the store keeps running)."""
        self.client.close()
        self.store.close()


class RouterTier:
    """``routers`` router services (``<store>-routers``: ``rt1``...) and a balancer in front of them."""

    def __init__(self, group: NodeGroup, balancer):
        self.group = group
        self.balancer = balancer

    @classmethod
    def launch(cls, store: str, routers: int = 2, *, detached: bool = False, threads: int = 16) -> "RouterTier":
        """Start the routers of ``store`` (a running PartitionedStore's name) and their balancer."""
        from ..balancing import BalancerActor

        if type(routers) is not int or routers < 1:
            raise InvalidArgumentError(f"a routing tier has at least one router, got {routers!r}")
        names = [f"rt{i}" for i in range(1, routers + 1)]
        group = NodeGroup.launch(f"{store}-routers", {n: ServiceSpec(_FACTORY, {"store": store}, threads)
                                                      for n in names}, detached=detached)
        try:
            balancer = BalancerActor.launch(group, names, name=f"{store}-router-balancer", detached=detached,
                                            timeout_s=15.0, records=(__name__,))
        except BaseException:
            group.shutdown()
            raise
        return cls(group, balancer)

    @classmethod
    def connect(cls, store: str) -> "RouterTier":
        """The routing tier of ``store`` from another driver."""
        from ..balancing import BalancerActor

        return cls(NodeGroup.connect(f"{store}-routers"), BalancerActor.connect(f"{store}-router-balancer"))

    def client(self, **options) -> "RouterClient":
        """A client that knows no map: it asks the routers through the balancer."""
        return RouterClient(self.balancer.client(**options))

    def stats(self) -> dict:
        """The balancer's figures and every router's."""
        return {"balancer": self.balancer.stats(), "routers": self.group.stats()}

    def shutdown(self) -> None:
        """Stop the balancer and the routers."""
        self.balancer.shutdown()
        self.group.shutdown()


class RouterClient:
    """The routing tier's client: get, put, delete, write, scan without a partition map."""

    def __init__(self, balancer_client):
        self._bc = balancer_client

    def get_many(self, keys, *, read: str | None = None) -> list:
        """The values of ``keys`` (bytes), in order."""
        return list(self._bc.call(RoutedGet(tuple(keys), read)))

    def get(self, key: bytes, *, read: str | None = None) -> bytes | None:
        """The value of ``key``, or None."""
        return self.get_many([key], read=read)[0]

    def write(self, batch, *, across_partitions: bool = False) -> tuple:
        """Apply ``(kind, key, value_or_end)`` operations (atomic per partition, as the store's client)."""
        return tuple(self._bc.call(RoutedWrite(tuple(batch), across_partitions)))

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        self.write([("put", key, value)])

    def delete(self, key: bytes) -> None:
        """Remove ``key``."""
        self.write([("delete", key)])

    def write_nowait(self, batch, *, across_partitions: bool = False) -> concurrent.futures.Future:
        """Start a :meth:`write`; many may be in flight."""
        inner = self._bc.call_batch_future([RoutedWrite(tuple(batch), across_partitions)])
        out: concurrent.futures.Future = concurrent.futures.Future()

        def done(f: concurrent.futures.Future) -> None:
            try:
                (result,) = f.result()
                if isinstance(result, BaseException):
                    raise result
                out.set_result(tuple(result))
            except BaseException as e:  # noqa: BLE001 - the caller's
                out.set_exception(e)

        inner.add_done_callback(done)
        return out

    def scan(self, start: bytes = b"", end: bytes | None = None, *, page_rows: int = 1000) -> Iterator[tuple]:
        """``(key, value)`` pairs of ``[start, end)``, page by page through the routers (key order
        under the range scheme, hash order under the hash scheme)."""
        cursor = None
        while True:
            keys, values, cursor = self._bc.call(RoutedScan(start, end, page_rows, cursor))
            yield from zip(keys, values)
            if cursor is None:
                return
