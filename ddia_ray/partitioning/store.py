"""A partitioned store on Ray: replica groups, a versioned partition map in RaftKV, one handle.

Theory of operation
-------------------
:meth:`PartitionedStore.launch` starts ``groups`` replica groups
(:class:`~ddia_ray.replication.ReplicatedStore`, each its own Raft or leader-follower group of
``replicas`` replicas, named ``<name>-g1``, ``<name>-g2``, ...) and one small RaftKV cluster,
``<name>-map``, the coordination service that holds the partition map (DDIA 6.4: ZooKeeper's
part in HBase, SolrCloud and Kafka). The map deals many partitions over the groups; a group
serves every partition the map gives it.

Every group keeps its own ownership record in its log (:mod:`ddia_ray.replication.ownership`),
so a replica refuses a key it does not own at the request's map version, whatever the client
believed. A change of the map (:mod:`.changes`: split, merge, move) updates the records of the
groups it touches *before* it publishes the new map with compare-and-set on its version, so a
client can never hold a map newer than what the groups it reaches know.

Clients (:class:`~.client.PartitionedClient`) cache the map, route each key to its group with
the map's version as a fence, and on a refusal read the map again and route again.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import uuid
from typing import Any

from .. import codec
from ..errors import ComponentNotFoundError, ConfigError, InvalidArgumentError, UnknownNodeError
from ..kv import RaftKV
from ..replication import CAS, PROTOCOLS, ReplicatedStore
from .keyspace import SCHEMES, sample_boundaries
from .partition_map import PartitionMap, initial_map, ownership_of

__all__ = ["PartitionedStore", "map_key"]

_names = itertools.count(1)


def map_key(store: str) -> bytes:
    """Where the coordination service keeps ``store``'s partition map."""
    return b"ddia/partitions/" + store.encode() + b"/map"


def _lock_key(store: str) -> bytes:
    return b"ddia/partitions/" + store.encode() + b"/change"


def _groups_key(store: str) -> bytes:
    return b"ddia/partitions/" + store.encode() + b"/groups"


def _instance_key(store: str) -> bytes:
    return b"ddia/partitions/" + store.encode() + b"/instance"


def _indexes_key(store: str) -> bytes:
    return b"ddia/partitions/" + store.encode() + b"/indexes"


class PartitionedStore:
    """A running partitioned store (see the module docstring). Create it with :meth:`launch`,
    attach to it with :meth:`connect`; ``client()``, ``stats()``, the nemesis operations per group,
    ``shutdown()``, and a context manager, as every ddia-ray handle."""

    def __init__(self, name: str, coordinator: RaftKV, groups: dict[str, ReplicatedStore], options: dict):
        self.name = name
        self.coordinator = coordinator
        self.groups = groups
        self.options = options
        self._kv = coordinator.client()
        self._admin_clients: dict[str, Any] = {}
        self._admin_lock = threading.Lock()
        self.routers: Any = None  # the routing tier (.router.RouterTier), when launched with routers > 0
        #: This launch of the store: a store launched again under the same name has another one
        #: (a process that keeps connections by name tells the two apart by it). "" for a store
        #: launched by a version that did not record it.
        self.instance = ""
        self._global: dict[str, tuple] = {}  # global indexes this handle launched: (index store, indexer)

    # --- starting and attaching ------------------------------------------------------------------

    @classmethod
    def launch(cls, name: str | None = None, *, partitions: int | None = None, scheme: str = "hash",
               groups: int = 2, replicas: int = 3, protocol: str = "raft", mode: str | None = None,
               engine: str = "map", root: str | None = None, boundaries=None, sample=None,
               map_members: int = 3, routers: int = 0, detached: bool = False,
               **group_options: Any) -> "PartitionedStore":
        """Start ``groups`` replica groups of ``replicas`` replicas and the map's coordination service.

        ``scheme="hash"``: ``partitions`` equal ranges of key hashes (default 8 per group), dealt
        round-robin over the groups; rebalancing moves whole partitions and never rehashes a key.
        ``scheme="range"``: partitions of key ranges, cut at ``boundaries`` (ascending keys) or at
        boundaries chosen from ``sample`` (keys of the data to come) into ``partitions`` ranges of
        about equal count; without either, one partition per group is cut later by splits.
        ``protocol``, ``mode``, ``engine``, ``root`` and ``group_options`` go to every group's
        :meth:`~ddia_ray.replication.ReplicatedStore.launch` (leader-follower groups take their own
        ``coordinators`` there); ``map_members`` RaftKV members hold the map. ``routers`` > 0 starts
        a routing tier (:mod:`.router`) of that many routers behind a balancer, for
        :meth:`router_client`.
        """
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown partitioning scheme {scheme!r}; choose one of {SCHEMES}")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown replication protocol {protocol!r}; use one of {PROTOCOLS}")
        if type(groups) is not int or groups < 1:
            raise ConfigError(f"a partitioned store needs at least one replica group, got {groups!r}")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise InvalidArgumentError(f"a store's name is a non-empty str without '/', got {name!r}")
        name = name or f"parts-{next(_names)}-{int(time.time() * 1000) % 1_000_000}"
        names = tuple(f"{name}-g{i}" for i in range(1, groups + 1))
        if scheme == "range" and sample is not None:
            if boundaries is not None:
                raise ConfigError("give boundaries= or sample=, not both")
            boundaries = sample_boundaries(sample, partitions or groups)
            partitions = None if partitions is None else len(boundaries) + 1
        elif scheme == "range" and boundaries is None and partitions is None:
            partitions = 1
        pmap = initial_map(scheme, names, partitions=partitions,
                           boundaries=None if boundaries is None else tuple(boundaries))
        coordinator = RaftKV.launch(map_members, root=root, name=f"{name}-map", detached=detached)
        started: dict[str, ReplicatedStore] = {}
        store = None
        try:
            for i, g in enumerate(names):  # each group starts at its own Ray node: leaders spread out
                started[g] = ReplicatedStore.launch(g, replicas, protocol=protocol, mode=mode, engine=engine,
                                                    root=root, detached=detached, spread_offset=i, **group_options)
            launch_options = {"replicas": replicas, "protocol": protocol, "mode": mode, "engine": engine,
                              "root": root, "detached": detached, **group_options}
            store = cls(name, coordinator, started, {"scheme": scheme, "protocol": protocol,
                                                     "group_launch": launch_options})
            for g in names:  # every group learns its partitions before any client can see the map
                store._set_ownership(g, ownership_of(pmap, g, name))
            store._kv.put(_groups_key(name), codec.encode(names))
            store.instance = uuid.uuid4().hex
            store._kv.put(_instance_key(name), store.instance.encode())
            if not store._kv.cas(map_key(name), None, codec.encode(pmap)):
                raise ConfigError(f"a partition map for {name!r} exists already in {coordinator.name!r}")
            if routers:
                from .router import RouterTier

                store.routers = RouterTier.launch(name, routers, detached=detached)
        except BaseException:
            if store is not None:
                store._kv.close()
            for s in started.values():
                s.shutdown(destroy_data=True)
            coordinator.shutdown(destroy_data=True)
            raise
        return store

    @classmethod
    def connect(cls, name: str, *, timeout_s: float = 30.0, routers: bool = True) -> "PartitionedStore":
        """A handle on the running store ``name`` from any driver on this Ray cluster (``routers=False``:
        without attaching to its routing tier, as the routers themselves and Ray Data tasks do)."""
        coordinator = RaftKV.connect(f"{name}-map", timeout_s=timeout_s)
        kv = coordinator.client()
        try:
            raw, raw_groups, instance = kv.get(map_key(name)), kv.get(_groups_key(name)), kv.get(_instance_key(name))
        finally:
            kv.close()
        if raw is None or raw_groups is None:
            raise ComponentNotFoundError(name, [coordinator.name], kind=cls.__name__)
        pmap = decode_map(raw)
        names = codec.decode(raw_groups)
        if not (isinstance(names, tuple) and all(isinstance(g, str) for g in names)):
            raise ConfigError(f"the coordination service holds no group list for {name!r}")
        groups = {g: ReplicatedStore.connect(g, timeout_s=timeout_s) for g in names}
        protocol = next(iter(groups.values())).protocol
        store = cls(name, coordinator, groups, {"scheme": pmap.scheme, "protocol": protocol})
        store.instance = instance.decode("ascii", "replace") if instance else ""
        if routers:
            from .router import RouterTier

            try:
                store.routers = RouterTier.connect(name)
            except ComponentNotFoundError:
                pass  # launched without a routing tier
        return store

    # --- the map ------------------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``"hash"`` or ``"range"``."""
        return self.options["scheme"]

    def partition_map(self) -> PartitionMap:
        """The current partition map, read (linearizably) from the coordination service."""
        raw = self._kv.get(map_key(self.name))
        if raw is None:
            raise ComponentNotFoundError(self.name, [self.coordinator.name], kind=type(self).__name__)
        return decode_map(raw)

    def _publish(self, old: PartitionMap, new: PartitionMap) -> None:
        """Replace map ``old`` by ``new`` in the coordination service (compare-and-set)."""
        if not self._kv.cas(map_key(self.name), codec.encode(old), codec.encode(new)):
            raise ConfigError(f"the partition map of {self.name!r} changed under this change (another handle "
                              f"changed it without the change lock?)")

    def _set_ownership(self, group: str, own, *, timeout_s: float = 30.0) -> None:
        """Make ``own`` the ownership record of ``group``, listing the store's indexes (so no change
        of partitions drops them)."""
        own = dataclasses.replace(own, indexes=self.indexes())
        self.group(group).set_ownership(own, timeout_s=timeout_s)

    # --- local secondary indexes (ddia_ray.replication.indexing) -------------------------------------

    def indexes(self) -> tuple:
        """The store's secondary indexes (:class:`~ddia_ray.replication.indexing.IndexDef` records)."""
        raw = self._kv.get(_indexes_key(self.name))
        return () if raw is None else tuple(codec.decode(raw))

    def create_index(self, name: str, function: str, options: dict | None = None, *,
                     scope: str = "local", backfill: bool = True, index_options: dict | None = None) -> int:
        """Declare index ``name``: ``function`` (``"module:callable"``, importable on every replica
        and client, deterministic; see :mod:`.index_functions`) maps a value to its terms, called as
        ``function(value, **options)``. Returns the keys backfilled. Query with
        :meth:`~.client.PartitionedClient.query`.

        ``scope="local"``: every group keeps the index for its own keys in the same log entries as
        the data (queries ask every group). ``scope="global"``: a term-partitioned index in a
        store of its own, updated asynchronously by an indexer service from the groups' outboxes
        (:mod:`.global_index`; queries ask the partitions of the term; ``index_options`` go to that
        store's launch, e.g. ``boundaries=`` over encoded terms, ``groups=``, ``map_members=``).
        ``backfill`` indexes the keys already stored (each rewritten as it is, with compare-and-set,
        so a concurrent write is never undone)."""
        from ..replication.indexing import IndexDef

        new = IndexDef(name, function, dict(options) if options else None, scope)
        if index_options is not None and scope != "global":
            raise ConfigError("index_options configure a global index's store; this index is local")
        with self._change_lock(f"create index {name}"):
            current = self.indexes()
            if any(d.name == name for d in current):
                raise ConfigError(f"{self.name!r} has an index {name!r} already")
            self._kv.put(_indexes_key(self.name), codec.encode((*current, new)))
            self._spread_indexes()  # from here every write of a global index's key fills an outbox
            if scope == "global":
                from .global_index import launch_global_index

                try:
                    self._global[name] = launch_global_index(self, new, dict(index_options or {}))
                except BaseException:
                    self._kv.put(_indexes_key(self.name), codec.encode(current))
                    self._spread_indexes()
                    raise
        return self._backfill() if backfill else 0

    def drop_index(self, name: str) -> None:
        """Stop keeping index ``name``: a local index's rows stay until their keys are next written;
        a global index's indexer and store are shut down and its data deleted."""
        with self._change_lock(f"drop index {name}"):
            current = self.indexes()
            found = [d for d in current if d.name == name]
            if not found:
                raise ConfigError(f"{self.name!r} has no index {name!r}")
            self._kv.put(_indexes_key(self.name), codec.encode(tuple(d for d in current if d.name != name)))
            self._spread_indexes()
            if found[0].scope == "global":
                from .global_index import drop_global_index

                drop_global_index(self.name, name, self._global.pop(name, None), destroy_data=True)

    def index_stats(self, name: str) -> dict:
        """Global index ``name``'s indexer figures, the index lag among them (:mod:`.global_index`)."""
        from .global_index import index_stats

        return index_stats(self.name, name)

    def indexer(self, name: str):
        """The node group running global index ``name``'s indexer (node ``"indexer"``), for the
        nemesis (kill, restart, pause, partition) and its figures."""
        from .global_index import indexer

        return self._global[name][1] if name in self._global else indexer(self.name, name)

    def catch_up(self, name: str, *, timeout_s: float = 60.0) -> dict:
        """Wait until global index ``name`` holds every change written before the call (its indexer
        finds nothing left to do); returns its figures."""
        from .global_index import catch_up

        return catch_up(self.name, name, timeout_s)

    def _change_lock(self, what: str):
        from .changes import change_lock

        return change_lock(self, what)

    def _spread_indexes(self) -> None:
        pmap = self.partition_map()
        for g in self.groups:  # the record at the map's version: same ranges, the new index list
            self._set_ownership(g, ownership_of(pmap, g, self.name))

    def _backfill(self) -> int:
        n = 0
        for p in self.partition_map().partitions:
            client = self.admin_client(p.group)
            futures = []
            for batch in client.scan(p.start, p.end, page_rows=2000):
                keys, values = batch.column(0).to_pylist(), batch.column(1).to_pylist()
                futures.append(client.submit_ops(tuple((CAS, k, v, v) for k, v in zip(keys, values))))
                n += len(keys)
            for f in futures:
                f.result()
        return n

    # --- changes (see .changes) ----------------------------------------------------------------------

    def split(self, pid: int, at: bytes | None = None) -> PartitionMap:
        """Cut partition ``pid`` in two at ``at`` (default: its middle); see :func:`.changes.split`."""
        from .changes import split

        return split(self, pid, at)

    def merge(self, left: int, right: int) -> PartitionMap:
        """Join neighbouring partitions of one group; see :func:`.changes.merge`."""
        from .changes import merge

        return merge(self, left, right)

    def move(self, pid: int, group: str) -> dict:
        """Give partition ``pid`` to ``group`` while clients go on; see :func:`.changes.move`."""
        from .changes import move

        return move(self, pid, group)

    # --- Ray Data (see .datasets) -------------------------------------------------------------------

    def to_ray_dataset(self, start=None, end=None, **options):
        """The store (or ``[start, end)``) as a Ray Dataset, one read task per partition, each a
        consistent snapshot of its partition; see :func:`.datasets.to_ray_dataset`."""
        return _datasets().to_ray_dataset(self, start, end, **options)

    def write_dataset(self, data, **options) -> int:
        """Write a Ray Dataset or Parquet files into the store in parallel, routed per partition;
        see :func:`.datasets.write_dataset`."""
        return _datasets().write_dataset(self, data, **options)

    # --- groups -------------------------------------------------------------------------------------

    def group(self, name: str) -> ReplicatedStore:
        """The replica group ``name`` (``<store>-g1``...)."""
        if name not in self.groups:
            raise UnknownNodeError(name, tuple(self.groups))
        return self.groups[name]

    def add_group(self) -> str:
        """Start one more replica group, launched as the store's first groups were, with no
        partition yet (a rebalance fills it: :mod:`.rebalancer`); returns its name. Only the
        handle that launched the store knows how its groups were launched."""
        launch = self.options.get("group_launch")
        if launch is None:
            raise ConfigError("only the handle that launched the store can add a group (it knows the groups' "
                              "launch options)")
        numbers = [int(g.rsplit("-g", 1)[1]) for g in self.groups]
        name = f"{self.name}-g{max(numbers) + 1}"
        opts = dict(launch)
        replicas = opts.pop("replicas")
        group = ReplicatedStore.launch(name, replicas, spread_offset=len(self.groups), **opts)
        try:
            pmap = self.partition_map()
            group.set_ownership(ownership_of(pmap, name, self.name))  # owns nothing, knows the version
            self.groups[name] = group
            self._kv.put(_groups_key(self.name), codec.encode(tuple(self.groups)))
        except BaseException:
            self.groups.pop(name, None)
            group.shutdown(destroy_data=True)
            raise
        return name

    def rebalancer(self, policy=None, **options):
        """A :class:`~.rebalancer.Rebalancer` of this store (manual rounds, or ``start()`` for automatic)."""
        from .rebalancer import Rebalancer

        return Rebalancer(self, policy, **options)

    def placement(self) -> dict:
        """``{group: {replica: Ray node id}}``: where every live replica runs."""
        out = {}
        for g, st in self.groups.items():
            statuses = st.group.status()
            out[g] = {n: s.get("ray_node") for n, s in statuses.items()}
        return out

    def move_replica(self, group: str, replica: str, ray_node: str, *, timeout_s: float = 60.0) -> str:
        """Move ``group``'s ``replica`` to Ray node ``ray_node`` while in use (DDIA 6.3): a new replica
        there joins (under Raft as a learner that catches up from a checkpoint and the log tail, then
        a voter), then the old one is removed (leadership first moved away if it led). Returns the
        new replica's name; reads and writes go on throughout."""
        store = self.group(group)
        if replica not in store.members:
            raise UnknownNodeError(replica, store.members)
        new = store.add_replica(ray_node=ray_node, timeout_s=timeout_s)
        store.remove_replica(replica, timeout_s=timeout_s)
        return new

    def admin_client(self, group: str):
        """An unfenced client of ``group`` for the store's own copies and cleanups (not for users:
        it bypasses the routing check)."""
        with self._admin_lock:  # a change's threads may ask at once: one client per group
            if group not in self._admin_clients:
                self._admin_clients[group] = self.group(group).client(read="linearizable", max_in_flight=4)
            return self._admin_clients[group]

    # --- the one handle convention ----------------------------------------------------------------

    def client(self, **options):
        """A new :class:`~.client.PartitionedClient` (options as for the replicated store's client,
        plus ``max_attempts`` routing attempts per operation)."""
        from .client import PartitionedClient

        return PartitionedClient(self, **options)

    def router_client(self, **options):
        """A client of the routing tier: it knows no map (see :mod:`.router`)."""
        if self.routers is None:
            raise ConfigError(f"{self.name!r} runs no routing tier: launch it with routers=N")
        return self.routers.client(**options)

    def stats(self, *, sizes: bool = False) -> dict:
        """The map and, per partition, its group, range and the load its group's leader counted
        (keys read and operations written through fenced requests since that replica started), plus
        every group's replication figures. ``sizes=True`` also counts each partition's ``keys`` and
        ``bytes`` (keys plus values), reading every key once: skew in size next to skew in load."""
        pmap = self.partition_map()
        groups = {g: s.stats() for g, s in self.groups.items()}
        partitions = {}
        for p in pmap.partitions:
            st = groups.get(p.group, {})
            lead = st.get("replicas", {}).get(st.get("leader"), {})
            load = lead.get("partitions", {}).get(str(p.id), {})
            partitions[p.id] = {"group": p.group, "start": p.start, "end": p.end, "since": p.since,
                                "leader": st.get("leader"), "reads": load.get("reads", 0),
                                "writes": load.get("writes", 0)}
            if sizes:
                keys, size, _ = self.partition_size(p)
                partitions[p.id].update(keys=keys, bytes=size)
        out = {"version": pmap.version, "scheme": pmap.scheme, "partitions": partitions, "groups": groups}
        global_defs = [d.name for d in self.indexes() if d.scope == "global"]
        if global_defs:
            out["global_indexes"] = {n: self.index_stats(n) for n in global_defs}
        return out

    def partition_size(self, partition, *, middle: bool = False) -> tuple[int, int, bytes | None]:
        """``(keys, bytes, middle)`` of ``partition`` (a :class:`~.partition_map.Partition`), read once
        from its group's leader with a pinned scan: its keys, their bytes plus their values', and
        with ``middle=True`` the key where half the bytes lie before it (a split point by size)."""
        import numpy as np
        import pyarrow.compute as pc

        keys, sizes = [], []
        for batch in self.admin_client(partition.group).scan(partition.start, partition.end, page_rows=5000,
                                                             pinned=True):
            keys.append(batch.column(0))
            sizes.append(pc.add(pc.binary_length(batch.column(0)), pc.binary_length(batch.column(1))).to_numpy())
        if not keys:
            return 0, 0, None
        run = np.cumsum(np.concatenate(sizes), dtype=np.int64)
        total = int(run[-1])
        if not middle:
            return len(run), total, None
        at = int(np.searchsorted(run * 2, total))  # the first key whose running bytes reach half
        for column in keys:
            if at < len(column):
                return len(run), total, column[at].as_py()
            at -= len(column)
        return len(run), total, None

    def close(self) -> None:
        """Let go of this handle's clients; the store keeps running (for a handle from :meth:`connect`)."""
        for c in self._admin_clients.values():
            c.close()
        self._admin_clients.clear()
        self._kv.close()

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop every group, the global indexes and the coordination service."""
        global_defs = [d.name for d in self.indexes() if d.scope == "global"]
        self.close()
        if global_defs:
            from .global_index import drop_global_index

            for n in global_defs:
                drop_global_index(self.name, n, self._global.pop(n, None), destroy_data=destroy_data)
        if self.routers is not None:
            self.routers.shutdown()
        for s in self.groups.values():
            s.shutdown(destroy_data=destroy_data)
        self.coordinator.shutdown(destroy_data=destroy_data)

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"PartitionedStore({self.name!r}, groups={list(self.groups)})"

    # --- nemesis (per group) -------------------------------------------------------------------------

    def kill(self, group: str, node: str) -> None:
        """``ray.kill`` replica ``node`` of ``group``."""
        self.group(group).kill(node)

    def restart(self, group: str, node: str) -> None:
        """Restart a killed replica; it recovers from its log."""
        self.group(group).restart(node)

    def pause(self, group: str, node: str) -> None:
        """Freeze a replica (a process pause)."""
        self.group(group).pause(node)

    def resume(self, group: str, node: str) -> None:
        """Let a paused replica run again."""
        self.group(group).resume(node)

    def partition(self, group: str, sides) -> None:
        """Cut the network inside ``group`` between ``sides`` (as :meth:`ReplicatedStore.partition`)."""
        self.group(group).partition(sides)

    def heal(self) -> None:
        """Remove every network cut in every group."""
        for s in self.groups.values():
            s.heal()


def decode_map(raw: bytes) -> PartitionMap:
    """A map read from the coordination service (refused precisely if it is not one)."""
    pmap = codec.decode(raw)
    if type(pmap) is not PartitionMap:
        raise ConfigError(f"the coordination service holds a {type(pmap).__name__} where a partition map belongs")
    return pmap


def _datasets():
    """:mod:`.datasets`, which needs Ray Data (the ``data`` extra)."""
    try:
        from . import datasets
    except ImportError as e:
        raise ConfigError(f"Ray Data is not installed ({e}); pip install 'ddia-ray[data]'") from e
    return datasets
