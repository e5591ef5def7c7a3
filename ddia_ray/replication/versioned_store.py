"""The handle of a multi-leader or leaderless store: the same handle as the leader protocols', other replicas.

Theory of operation
-------------------
``ReplicatedStore.launch(protocol="multi-leader")`` and ``protocol="leaderless"``
return a :class:`VersionedStore`: a :class:`~.store.ReplicatedStore` whose
replicas are :class:`~.multi_leader.MultiLeaderReplica` or
:class:`~.leaderless.LeaderlessReplica` cores in the runtime's one shell, so the
nemesis (kill, restart, partition, pause) and the fault-injecting network reach
them like any other. What differs:

* **regions**: each replica carries a region label (a datacenter). Between
  replicas of different regions the network adds ``region_delay_s`` of one-way
  latency through the fault model (:meth:`~ddia_ray.runtime.faults.NetworkConfig.with_link`),
  so a demonstration on one machine behaves like one spread over continents;
  :meth:`partition_regions` cuts regions apart. A client names its region and
  writes to the leaders there.
* **no leader**: every replica accepts writes, so leadership operations
  (``leader``, ``failover``, ``transfer_leadership``) refuse with a ConfigError,
  as do membership changes (the ring and the topology are fixed at launch).
* **convergence**: :meth:`roots` gives every replica's Merkle root and
  :meth:`wait_converged` waits until they agree, measuring how long that took
  (the convergence checker of :mod:`ddia_ray.history.convergence` reads the same roots).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Mapping, NoReturn

from ..errors import (CallTimeoutError, ConfigError, InvalidArgumentError,
                      UnknownRegionError)
from ..runtime import CoreSpec, NodeGroup
from ..runtime.faults import NetworkConfig
from .multi_leader import TOPOLOGIES
from .procedures import load as load_modules
from .store import ReplicatedStore
from .versioned_records import check_quorum
from .version_store import VERSION_ENGINES
from .versions import parse_policies
from .tombstones import DEFAULT_GRACE_S, TombstoneSweep

__all__ = ["VersionedStore", "MULTI_LEADER", "LEADERLESS", "VERSIONED_FACTORIES", "assign_regions"]

MULTI_LEADER = "ddia_ray.replication.multi_leader:build"
LEADERLESS = "ddia_ray.replication.leaderless:build"
#: Factory -> protocol, for :meth:`~.store.ReplicatedStore.connect`.
VERSIONED_FACTORIES = {MULTI_LEADER: "multi-leader", LEADERLESS: "leaderless"}
_names = itertools.count(1)


def assign_regions(replicas: int | None, regions: Any, protocol: str) -> dict[str, str]:
    """Replica name -> region. ``regions``: None (multi-leader: one region per replica, ``dc1..``;
    leaderless: one region), a sequence of region names (one replica each), or a mapping region ->
    number of replicas (several leaders per region). ``replicas`` None: 3, or as many as ``regions``
    names; given with ``regions``, it must agree with them."""
    if regions is None:
        replicas = 3 if replicas is None else replicas
        if type(replicas) is not int or replicas < 1:
            raise ConfigError(f"a store needs at least one replica, got {replicas!r}")
        labels = [f"dc{i}" for i in range(1, replicas + 1)] if protocol == "multi-leader" else ["dc1"] * replicas
    elif isinstance(regions, Mapping):
        labels = []
        for region, count in regions.items():
            if not isinstance(region, str) or not region or type(count) is not int or count < 1:
                raise ConfigError(f"regions maps a region name to its number of replicas (>= 1), got "
                                  f"{region!r}: {count!r}")
            labels.extend([region] * count)
    elif isinstance(regions, (list, tuple)) and all(isinstance(r, str) and r for r in regions):
        labels = list(regions)
    else:
        raise ConfigError(f"regions is a list of region names or a mapping region -> replicas, got {regions!r}")
    if regions is not None and replicas is not None and replicas != len(labels):
        raise ConfigError(f"replicas={replicas} disagrees with the {len(labels)} replicas the regions name")
    if not labels:
        raise ConfigError("a store needs at least one replica")
    return {f"r{i}": region for i, region in enumerate(labels, 1)}


def _converged(protocol: str, statuses: dict, replicas: int) -> bool:
    if len(statuses) != replicas:
        return False
    if protocol == "multi-leader":
        return len({st["merkle_root"] for st in statuses.values()}) == 1
    for a, st in statuses.items():
        if st.get("hints"):
            return False
        for b, root in st["pair_roots"].items():
            if statuses[b]["pair_roots"][a] != root:
                return False
    return True


class VersionedStore(ReplicatedStore):
    """A multi-leader or leaderless store (see the module docstring). Create it with
    ``ReplicatedStore.launch(protocol=...)``."""

    # --- launching -----------------------------------------------------------------------------

    @classmethod
    def launch_versioned(cls, name: str | None, replicas: int | None, *, protocol: str, engine: str = "map",
                         root: str | None = None, tick_s: float = 0.01, seed: int = 0, sync: bool = False,
                         config=None, detached: bool = False, spread_offset: int = 0, regions: Any = None,
                         region_delay_s: float = 0.0, resolution: Any = "siblings",
                         clock_skew_s: Mapping[str, float] | None = None, resolver_modules: tuple = (),
                         topology: str = "all-to-all", hub: str | None = None, causal: bool = True,
                         n: int | None = None, r: int | None = None, w: int | None = None, sloppy: bool = True,
                         read_repair: bool = True, anti_entropy_s: float = 1.0, handoff_s: float = 0.2,
                         tombstone_grace_s: float = DEFAULT_GRACE_S, **options: Any) -> "VersionedStore":
        """Start the replicas (see ``ReplicatedStore.launch`` for the options of these protocols)."""
        if engine != "map" and engine not in VERSION_ENGINES:
            raise ConfigError(f"unknown storage engine {engine!r}; use 'map' or one of {VERSION_ENGINES}")
        if engine != "map" and root is None:
            raise ConfigError(f"the {engine!r} engine keeps its files under root: pass root= (an fsspec URL)")
        load_modules(resolver_modules)  # the caller's process resolves too (a client's read-side resolver)
        policies = parse_policies(resolution)
        TombstoneSweep(grace_s=tombstone_grace_s)  # a bad grace fails here, before any replica starts
        placed = assign_regions(replicas, regions, protocol)
        members = tuple(placed)
        region_names = sorted(set(placed.values()))
        skew = dict(clock_skew_s or {})
        for where in skew:
            if where not in placed and where not in region_names:
                raise UnknownRegionError(where, region_names)
        if isinstance(region_delay_s, bool) or not isinstance(region_delay_s, (int, float)) or region_delay_s < 0:
            raise ConfigError(f"region_delay_s is seconds >= 0, got {region_delay_s!r}")
        name = name or f"{protocol}-{next(_names)}-{int(time.time() * 1000) % 1_000_000}"
        if name is not None and (not isinstance(name, str) or "/" in name):
            raise InvalidArgumentError(f"a store's name is a non-empty str without '/', got {name!r}")
        base = {"store": name, "members": members, "regions": placed, "engine": engine, "sync": bool(sync),
                "data_url": f"{root.rstrip('/')}/{name}/data" if root else "",
                "engine_options": dict(options.pop("engine_options", None) or {}),
                "resolution": tuple({"prefix": p.prefix, "mode": p.mode, "resolver": p.resolver,
                                     "on_read": p.on_read, "kind": p.kind} for p in policies),
                "resolver_modules": tuple(resolver_modules), "tombstone_grace_s": float(tombstone_grace_s),
                **options}
        if protocol == "multi-leader":
            if topology not in TOPOLOGIES:
                raise ConfigError(f"unknown multi-leader topology {topology!r}; use one of {TOPOLOGIES}")
            if hub is not None and hub not in members and hub not in region_names:
                raise UnknownRegionError(hub, region_names)
            hub_node = next((m for m in members if placed[m] == hub), hub) if hub in region_names else hub
            base.update(topology=topology, hub=hub_node, causal=bool(causal))
            factory = MULTI_LEADER
        else:
            n = min(3, len(members)) if n is None else n
            r = (n // 2 + 1) if r is None else r
            w = (n // 2 + 1) if w is None else w
            check_quorum(n, r, w, len(members))
            base.update(n=n, r=r, w=w, sloppy=bool(sloppy), read_repair=bool(read_repair),
                        handoff_ticks=max(1, round(handoff_s / tick_s)),
                        anti_entropy_ticks=max(0, round(anti_entropy_s / tick_s)) if anti_entropy_s else 0)
            factory = LEADERLESS
        specs = {}
        for m in members:
            offset = skew.get(m, skew.get(placed[m], 0.0))
            specs[m] = CoreSpec(factory, {**base, "clock_skew_s": float(offset)})
        net = config or NetworkConfig()
        if region_delay_s:
            for a in members:
                for b in members:
                    if placed[a] != placed[b]:
                        net = net.with_link(a, b, delay_s=float(region_delay_s))
        group = NodeGroup.launch(name, specs, root=root, tick_s=tick_s, seed=seed, config=net, sync=sync,
                                 detached=detached, spread_offset=spread_offset)
        return cls(group, {**base, "protocol": protocol, "mode": protocol, "coordinators": (),
                           "region_delay_s": float(region_delay_s)})

    @classmethod
    def _from_group(cls, group: NodeGroup, protocol: str) -> "VersionedStore":
        spec = next(s for s in group.specs.values() if s.factory in VERSIONED_FACTORIES)
        options = dict(spec.options)
        options.pop("clock_skew_s", None)
        return cls(group, {**options, "protocol": protocol, "mode": protocol, "coordinators": ()})

    # --- inspection --------------------------------------------------------------------------------

    @property
    def regions(self) -> dict[str, str]:
        """Replica -> region."""
        return dict(self.options["regions"])

    def region_nodes(self, region: str) -> tuple[str, ...]:
        """The replicas of ``region`` (UnknownRegionError for a region the store does not have)."""
        nodes = tuple(m for m, r in self.options["regions"].items() if r == region)
        if not nodes:
            raise UnknownRegionError(region, sorted(set(self.options["regions"].values())))
        return nodes

    def client(self, **options) -> Any:
        """A client (:class:`~.versioned_client.VersionedClient`): ``region`` (multi-leader: whose leaders
        it writes to), ``n``/``r``/``w`` (leaderless defaults for its requests), ``timeout_s``."""
        from .versioned_client import VersionedClient
        return VersionedClient(self, **options)

    def roots(self, *, timeout_s: float = 5.0) -> dict[str, str]:
        """Every live replica's Merkle root (hex)."""
        return {n: s["merkle_root"] for n, s in self.status().items()}

    def converged(self) -> bool:
        """Whether every replica (all running) holds the same versions. Multi-leader: every replica's Merkle
        root agrees. Leaderless: for every pair of replicas, their trees of the keys both replicate agree,
        and no replica still holds hints for another."""
        return _converged(self.protocol, self.status(), len(self.members))

    def wait_converged(self, *, timeout_s: float = 60.0, poll_s: float = 0.05) -> float:
        """Wait until :meth:`converged`; returns the seconds it took (CallTimeoutError past ``timeout_s``)."""
        start = time.monotonic()
        while not self.converged():
            if time.monotonic() - start > timeout_s:
                raise CallTimeoutError(f"the replicas of {self.name!r} did not converge within {timeout_s}s: "
                                       f"roots {self.roots()}")
            time.sleep(poll_s)
        return time.monotonic() - start

    def stats(self) -> dict:
        """The store's figures: per replica and summed. ``lww_discarded`` counts each version LWW dropped
        once, over all replicas (DDIA 5.4: never silently); ``resolutions``/``resolver_failures``;
        ``siblings_max``; multi-leader ``causality_violations`` (0 with ``causal=True``) and ``lag``;
        leaderless ``read_repairs``, ``hinted``, ``handoffs``, ``anti_entropy_*``; ``tombstones_collected``
        (deleted keys removed after ``tombstone_grace_s``, counted at each replica) and ``tombstones_ignored``."""
        statuses = self.status()
        lost: set[tuple] = set()
        untracked = 0
        for st in statuses.values():
            lost.update(tuple(x) for x in st.get("lww_lost", ()))
            untracked += st.get("lww_lost_untracked", 0)
        summed = {}
        for field in ("resolutions", "resolver_failures", "causality_violations", "read_repairs", "hinted",
                      "handoffs", "forwarded", "quorum_failures", "anti_entropy_rounds", "anti_entropy_keys",
                      "anti_entropy_bytes", "clock_refusals", "tombstones_collected", "tombstones_ignored"):
            summed[field] = sum(st.get(field, 0) for st in statuses.values())
        replicas = {n: {k: v for k, v in st.items() if k != "lww_lost"} for n, st in statuses.items()}
        return {"protocol": self.protocol, "replicas": replicas, "regions": self.regions,
                "lww_discarded": len(lost) + untracked, **summed,
                "siblings_max": max((st.get("siblings_max", 0) for st in statuses.values()), default=0),
                "converged": _converged(self.protocol, statuses, len(self.members)),
                "nodes": self.group.stats()}

    # --- what does not apply -------------------------------------------------------------------------

    def _no_leader(self, what: str) -> NoReturn:
        raise ConfigError(f"{what}: every replica of a {self.protocol} store accepts writes; there is no leader")

    def leader(self, *, timeout_s: float = 15.0) -> str:
        """Refused: there is no leader."""
        self._no_leader("leader()")

    def failover(self, *, timeout_s: float = 30.0) -> str:
        """Refused: there is no leader."""
        self._no_leader("failover()")

    def transfer_leadership(self, target: str, *, timeout_s: float = 15.0) -> None:
        """Refused: there is no leader."""
        self._no_leader("transfer_leadership()")

    def add_replica(self, node: str | None = None, **_: Any) -> str:
        """Refused: the ring and the topology are fixed at launch."""
        raise ConfigError(f"a {self.protocol} store's replicas are fixed at launch (its ring or topology names them)")

    def remove_replica(self, node: str, **_: Any) -> None:
        """Refused: the ring and the topology are fixed at launch."""
        raise ConfigError(f"a {self.protocol} store's replicas are fixed at launch (its ring or topology names them)")

    def set_ownership(self, ownership, **_: Any) -> None:
        """Refused: a partitioned store is built on leader protocols."""
        raise ConfigError(f"a {self.protocol} store does not serve a partitioned store")

    # --- nemesis by region ------------------------------------------------------------------------

    def partition_regions(self, groups) -> None:
        """Cut the network between groups of regions (``[["us"], ["eu", "ap"]]``); clients stay with their region."""
        node_groups = []
        for g in groups:
            if isinstance(g, str):
                raise InvalidArgumentError("partition_regions takes groups of region names: [['us'], ['eu']]")
            node_groups.append([n for region in g for n in self.region_nodes(region)])
        self.partition(node_groups)
