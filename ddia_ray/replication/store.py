"""A replicated store on Ray: replicas over a storage engine, a coordination service, one handle.

Theory of operation
-------------------
:meth:`ReplicatedStore.launch` starts one :class:`~ddia_ray.runtime.group.NodeGroup`
holding two kinds of shells: ``replicas`` leader-follower replicas
(:class:`~.leader_follower.LeaderFollowerReplica`, nodes ``r1..rn``) and a
small RaftKV cluster (``c1..c3``) that keeps the leader's lease and epoch, the
part ZooKeeper or etcd play in DDIA 8.4. Both kinds are pure cores in the
runtime's one shell, so the one fault-injecting network and nemesis reach the
replication stream, the lease traffic and the clients alike.

Each replica keeps its data in the engine named by ``engine``: ``"lsm"`` or
``"btree"`` under ``root``/``<name>``/data/``<replica>`` (an fsspec URL every
replica can reach, so a follower can copy a leader's checkpoint), or ``"map"``
(a dict rebuilt from the replica's log on restart). The replica log itself is
the shell's durable log under ``root``.

Leadership operations: :meth:`transfer_leadership` asks the leader to stop
taking writes, wait until the target has every entry, and hand it the lease
under a new epoch; :meth:`failover` does that to the most caught-up follower
when the leader answers, and otherwise waits for the followers to take over
once the lease lapses (the only safe way while the old leader might still
believe its lease holds).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

from ..consensus.raft import RaftConfig
from ..errors import (ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError, MessageDroppedError,
                      NotLeaderError, ProposalDroppedError, UnknownNodeError)
from ..runtime import CoreSpec, NodeGroup
from ..runtime.component import Component
from .client import ReplicatedClient
from .engine_state import ENGINE_NAMES
from .leader_follower import MODES, check_sync_replicas
from .ownership import Ownership, ReplOwnership, decode_ownership
from .procedures import load as load_procedures
from .records import ReplAdmin
from ..consensus.sessions import session_ttl_ms

__all__ = ["ReplicatedStore", "PROTOCOLS"]

#: Replication protocols a store can run.
PROTOCOLS = ("leader-follower", "raft", "multi-leader", "leaderless")
_VERSIONED = ("multi-leader", "leaderless")
_REPLICA = "ddia_ray.replication.leader_follower:build"
_RAFT = "ddia_ray.replication.raft_replica:build"
_COORDINATOR = "ddia_ray.kv.member:build"
_names = itertools.count(1)

#: The Raft timing of a store's members (the Raft protocol's replicas, leader-follower's
#: coordination service) unless ``raft=`` says otherwise, in ticks of 10 ms: a heartbeat every
#: 20 ms, an election after 0.3-0.6 s without one. The members' ticks follow the clock
#: (``RaftMember.clock_ticks``), so that is wall time even on a loaded machine. With 10 ticks, a
#: member's event loop stalled by a memtable flush or a large entry for 0.1-0.2 s set off
#: elections (docs/replication.md, "Spurious elections under load"); 50 would tolerate longer
#: stalls, but every store's first election would wait 0.5-1 s.
DEFAULT_RAFT = RaftConfig(election_ticks=30, heartbeat_ticks=2)


def _leader_share(timeout_s: float) -> float:
    """The part of a handle's timeout a leader may spend on a membership change: less than all of it, so
    that the leader's own verdict (why it gave up) reaches the caller before the handle gives up."""
    return max(0.5, 0.9 * timeout_s)


class ReplicatedStore(Component):
    """A running replica group (see the module docstring). Create it with :meth:`launch`.

    The handle of the one handle convention: ``client()``, ``stats()``, ``nemesis``,
    ``shutdown()``, a context manager, and :meth:`connect` from another driver.
    """

    factories = (_REPLICA, _COORDINATOR, _RAFT, "ddia_ray.replication.multi_leader:build",
                 "ddia_ray.replication.leaderless:build")

    def __init__(self, group: NodeGroup, options: dict):
        super().__init__(group)
        self.options = options
        self._rr = itertools.count()
        self._removed: set[str] = set()  # replicas this handle removed (their names are not reused)

    @classmethod
    def _attached(cls, group: NodeGroup) -> "ReplicatedStore":
        from .versioned_store import VERSIONED_FACTORIES, VersionedStore

        versioned = {VERSIONED_FACTORIES[s.factory] for s in group.specs.values() if s.factory in VERSIONED_FACTORIES}
        if versioned:
            return VersionedStore._from_group(group, versioned.pop())
        replicas = [(n, s) for n, s in group.specs.items() if s.factory in (_REPLICA, _RAFT)]
        if not replicas:
            raise ConfigError(f"group {group.name!r} runs no replica")
        options = dict(replicas[0][1].options)
        options["members"] = tuple(n for n, _ in replicas)  # the specs: launched, added, not removed
        if replicas[0][1].factory == _RAFT:
            options.update(protocol="raft", mode="raft", coordinators=())
        return cls(group, options)

    @classmethod
    def launch(cls, name: str | None = None, replicas: int | None = None, *, protocol: str = "leader-follower",
               mode: str | None = None, sync_replicas: int = 1, engine: str = "map", root: str | None = None,
               coordinators: int = 3, lease_s: float = 1.0, tick_s: float = 0.01, seed: int = 0,
               sync: bool = False, engine_options: dict | None = None, config=None, detached: bool = False,
               session_ttl_s: float = 3600.0, spread_offset: int = 0, procedures: tuple = (),
               **replica_options: Any) -> "ReplicatedStore":
        """Start ``replicas`` replicas (default 3; for the multi-leader and leaderless protocols with
        ``regions``, as many as the regions name) and, for leader-follower, ``coordinators``
        coordination members.

        ``protocol``: ``"leader-follower"``, ``"raft"`` (every write committed by a majority;
        ``mode`` does not apply, and ``raft``, ``snapshot_entries`` and ``catch_up_entries`` go to the Raft members),
        ``"multi-leader"`` or ``"leaderless"`` (every replica accepts writes; concurrent writes are kept as
        versions and resolved by ``resolution``; see :mod:`.versioned_store` for their options: ``regions``,
        ``region_delay_s``, ``topology``, ``hub``, ``causal``, ``n``/``r``/``w``, ``sloppy``, ``read_repair``,
        ``anti_entropy_s``, ``clock_skew_s``, ``resolver_modules``, ``tombstone_grace_s``).
        ``mode`` (leader-follower, default ``"async"``): ``"sync"`` (a write is acknowledged once every
        follower has it), ``"semi-sync"`` (``sync_replicas`` followers) or ``"async"`` (the leader alone).
        ``engine``: ``"lsm"``, ``"btree"`` (data under ``root``) or ``"map"``.
        ``lease_s``: the leader's lease; a failover
        takes about 1.5 leases. ``sync=True`` fsyncs the replica logs and the engines before a
        write is acknowledged. ``session_ttl_s``: a client session that has not written for that
        long (in the log's cluster time) is forgotten by every replica (0: never); a client's
        ``timeout_s + rpc_timeout_s`` must be shorter. ``replica_options`` go to
        :class:`~.leader_follower.LeaderFollowerReplica` (``drift``, ``retain_entries``, ...);
        ``procedures``: modules that register :mod:`.procedures` (deterministic functions a
        write may call, e.g. ``"ddia_ray.events.procedures"``); every replica imports them as it starts.
        ``config`` is the network's :class:`~ddia_ray.runtime.NetworkConfig`. ``spread_offset``: where
        the replicas start among the Ray nodes (:func:`~ddia_ray.runtime.group.assign_nodes`), so
        that the groups of a partitioned store do not all put their first replica on one node.
        """
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown replication protocol {protocol!r}; use one of {PROTOCOLS}")
        if protocol in _VERSIONED:
            from .versioned_store import VersionedStore

            if mode is not None or procedures:
                raise ConfigError(f"the {protocol} protocol takes neither mode nor procedures (they order writes "
                                  f"through one leader)")
            return VersionedStore.launch_versioned(name, replicas, protocol=protocol, engine=engine, root=root,
                                                   engine_options=engine_options,
                                                   tick_s=tick_s, seed=seed, sync=sync, config=config,
                                                   detached=detached, spread_offset=spread_offset,
                                                   **replica_options)
        if protocol == "raft" and mode not in (None, "raft"):
            raise ConfigError(f"mode {mode!r} is a leader-follower setting; the Raft protocol acknowledges a write "
                              f"once a majority has it")
        if protocol == "leader-follower" and mode is None:
            mode = "async"
        if protocol == "leader-follower" and mode not in MODES:
            raise ConfigError(f"unknown replication mode {mode!r}; use one of {MODES}")
        if replicas is None:
            replicas = 3
        if type(replicas) is not int or replicas < 1:
            raise ConfigError(f"a store needs at least one replica, got {replicas!r}")
        if protocol == "leader-follower":
            check_sync_replicas(mode, sync_replicas, replicas - 1)  # before any actor starts
        if type(coordinators) is not int or coordinators < 1:
            raise ConfigError(f"the coordination service needs at least one member, got {coordinators!r}")
        if engine != "map" and engine not in ENGINE_NAMES:
            raise ConfigError(f"unknown storage engine {engine!r}; use 'map' or one of {ENGINE_NAMES}")
        if engine != "map" and root is None:
            raise ConfigError(f"the {engine!r} engine keeps its files under root: pass root= (an fsspec URL)")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise InvalidArgumentError(f"a store's name is a non-empty str without '/', got {name!r}")
        session_ttl_ms(session_ttl_s)  # checked here, so a bad TTL fails before any actor starts
        replica_options["session_ttl_s"] = session_ttl_s
        load_procedures(procedures)  # here too: a module that does not import fails the caller, not an actor
        replica_options["procedures"] = tuple(procedures)
        name = name or f"repl-{next(_names)}-{int(time.time() * 1000) % 1_000_000}"
        members = tuple(f"r{i}" for i in range(1, replicas + 1))
        data_url = f"{root.rstrip('/')}/{name}/data" if root else ""
        if protocol == "raft":
            return cls._launch_raft(name, members, engine, data_url, engine_options, root=root, tick_s=tick_s,
                                    seed=seed, sync=sync, config=config, detached=detached,
                                    spread_offset=spread_offset, **replica_options)
        coords = tuple(f"c{i}" for i in range(1, coordinators + 1))
        options = {"group": name, "members": members, "coordinators": coords, "mode": mode,
                   "sync_replicas": sync_replicas, "lease_s": lease_s, "engine": engine,
                   "data_url": data_url,
                   "engine_options": dict(engine_options or {}), "sync": bool(sync), **replica_options}
        raft = DEFAULT_RAFT
        coord_options = {"seed": seed, "snapshot_entries": 10_000, "voters": coords,
                         "raft": {f.name: getattr(raft, f.name) for f in dataclasses.fields(raft)}}
        specs = {**{c: CoreSpec(_COORDINATOR, coord_options) for c in coords},
                 **{r: CoreSpec(_REPLICA, options) for r in members}}
        group = NodeGroup.launch(name, specs, root=root, tick_s=tick_s, seed=seed, config=config, sync=sync,
                                 detached=detached, spread_offset=spread_offset)
        return cls(group, options)

    @classmethod
    def _launch_raft(cls, name: str, members: tuple, engine: str, data_url: str, engine_options: dict | None, *,
                     root: str | None, tick_s: float, seed: int, sync: bool, config, detached: bool,
                     spread_offset: int = 0, raft: RaftConfig | None = None, snapshot_entries: int = 10_000,
                     **replica_options: Any) -> "ReplicatedStore":
        if raft is None:
            raft = DEFAULT_RAFT
        elif not isinstance(raft, RaftConfig):
            raise InvalidArgumentError(f"raft must be a RaftConfig, got {type(raft).__name__}")
        options = {"group": name, "voters": members, "seed": seed, "snapshot_entries": snapshot_entries,
                   "raft": {f.name: getattr(raft, f.name) for f in dataclasses.fields(raft)}, "engine": engine,
                   "data_url": data_url, "engine_options": dict(engine_options or {}), "sync": bool(sync),
                   **replica_options}
        group = NodeGroup.launch(name, {r: CoreSpec(_RAFT, options) for r in members}, root=root, tick_s=tick_s,
                                 seed=seed, config=config, sync=sync, detached=detached, spread_offset=spread_offset)
        return cls(group, {**options, "protocol": "raft", "mode": "raft", "members": members, "coordinators": ()})

    # --- inspection --------------------------------------------------------------------------------

    @property
    def members(self) -> tuple:
        """The replicas (``r1..rn``)."""
        return tuple(self.options["members"])

    @property
    def coordinators(self) -> tuple:
        """The coordination service's members (``c1..``)."""
        return tuple(self.options["coordinators"])

    @property
    def mode(self) -> str:
        """The store's replication mode (``"raft"`` under the Raft protocol)."""
        return self.options["mode"]

    @property
    def session_ttl_s(self) -> float:
        """How long a client session may be idle before the replicas forget it (0: never)."""
        return float(self.options.get("session_ttl_s", 0.0))

    @property
    def protocol(self) -> str:
        """``"leader-follower"`` or ``"raft"``."""
        return self.options.get("protocol", "leader-follower")

    def status(self) -> dict:
        """Every live replica's status (role, epoch, positions, lag, lost writes, counters)."""
        alive = set(self.group.alive())
        nodes = [r for r in self.members if r in alive]
        got = {}
        for node in nodes:
            try:
                got[node] = self.group.status(node, timeout_s=2.0)["core"]
            except (ActorUnavailableError, CallTimeoutError):
                continue  # dead or paused: not part of this answer
        return got

    def leader(self, *, timeout_s: float = 15.0) -> str:
        """The replica that leads now (waits for a failover if none does)."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.status()
            leaders = {n: s for n, s in statuses.items() if s["role"] == "leader"}
            if leaders:
                return max(leaders, key=lambda n: leaders[n]["epoch"])
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"no replica of {self.name!r} leads after {timeout_s}s")
            time.sleep(0.02)

    def client(self, **options) -> ReplicatedClient:
        """A new client session (see :class:`~.client.ReplicatedClient` for the options)."""
        return ReplicatedClient(self, **options)

    def stats(self) -> dict:
        """The group's replication figures, and every node's call figures.

        ``lag``: per follower, entries behind the leader and seconds since it last had caught up
        (the leader's view and the follower's, DDIA 5.2 "Problems with replication lag");
        ``lost_writes``/``lost``: writes acknowledged in async mode and then discarded by a
        failover, counted exactly, with their keys (the newest 1,000 per replica);
        ``uncounted_removals``: async replicas removed with ``force=True`` before they had compared
        their logs with the leader's: what each held alone is not in the count.
        ``sessions``/``sessions_expired``: client sessions the leader's state keeps, and how many it
        has forgotten after ``session_ttl_s`` idle.
        """
        statuses = self.status()
        leaders = {n: s for n, s in statuses.items() if s["role"] == "leader"}
        leader = max(leaders, key=lambda n: leaders[n]["epoch"]) if leaders else None
        lead = statuses.get(leader, {}) if leader else {}
        lag = {}
        for node, st in statuses.items():
            if node == leader:
                continue
            lag[node] = {"entries": lead.get("lag_entries", {}).get(node), "seconds": st.get("staleness_s"),
                         "applied": st["applied"]}
        lost = sorted({tuple(x) for st in statuses.values() for x in st["lost"]})
        uncounted = sorted({tuple(x) for st in statuses.values() for x in st.get("uncounted_removals", ())})
        return {"leader": leader, "epoch": max((s["epoch"] for s in statuses.values()), default=0),
                "mode": self.mode, "replicas": statuses, "lag": lag,
                "lost_writes": sum(s["lost_writes"] for s in statuses.values()),
                "lost": [{"epoch": e, "lsn": lsn, "keys": list(keys)} for e, lsn, keys in lost],
                "uncounted_removals": [{"node": n, "epoch": e, "lsn": lsn} for n, e, lsn in uncounted],
                "sessions": lead.get("sessions"), "sessions_expired": lead.get("sessions_expired"),
                "nodes": self.group.stats()}

    # --- leadership ------------------------------------------------------------------------------

    def transfer_leadership(self, target: str, *, timeout_s: float = 15.0) -> None:
        """Make ``target`` the leader: the leader stops taking writes, waits until ``target`` has every
        entry, and hands it the lease under a new epoch. Raises if ``target`` cannot catch up in time."""
        if target not in self.members:
            raise UnknownNodeError(target, self.members)
        deadline = time.monotonic() + timeout_s
        while True:
            leader = self.leader(timeout_s=max(0.1, deadline - time.monotonic()))
            if leader == target:
                return
            try:
                left = deadline - time.monotonic()
                self.group.request(leader, ReplAdmin("transfer", target, max(0.1, min(5.0, left))),
                                   timeout_s=max(1.0, left))
            except (NotLeaderError, ActorUnavailableError, CallTimeoutError, MessageDroppedError):
                pass  # leadership moved meanwhile, or the leader stopped answering: look again
            while time.monotonic() < deadline:
                st = self.status().get(target, {})
                if st.get("role") == "leader":
                    return
                if self.leader(timeout_s=max(0.1, deadline - time.monotonic())) not in (leader, target):
                    break  # someone else took over (a failover crossed the transfer): try again
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"leadership of {self.name!r} did not move to {target!r} within {timeout_s}s")

    def failover(self, *, timeout_s: float = 30.0) -> str:
        """Move leadership to the most caught-up follower; returns the new leader.

        With a leader that answers, this is a transfer (no acknowledged write is lost, in any
        mode). With one that does not (killed, paused, cut off), it waits for the followers to
        take over once the lease lapses: nothing faster is safe while the old leader may still
        believe it holds the lease.
        """
        deadline = time.monotonic() + timeout_s
        statuses = self.status()
        leaders = {n: s for n, s in statuses.items() if s["role"] == "leader"}
        if leaders:
            leader = max(leaders, key=lambda n: leaders[n]["epoch"])
            lag = leaders[leader]["lag_entries"]
            followers = [m for m in self.members if m != leader and m in statuses]
            if followers:
                best = min(followers, key=lambda m: (1 << 62 if lag.get(m) is None else lag[m], self.members.index(m)))
                self.transfer_leadership(best, timeout_s=timeout_s)
                return best
            raise ConfigError(f"{self.name!r} has no live follower to fail over to")
        # The newest epoch anyone has *led* (of its last entry): a replica's own epoch may be one a
        # candidate claimed in a probe and nobody leads yet, which the winner of the round then leads.
        old_epoch = max((s.get("last_epoch", s["epoch"]) for s in statuses.values()), default=0)
        while time.monotonic() < deadline:
            leaders = {n: s for n, s in self.status().items() if s["role"] == "leader" and s["epoch"] > old_epoch}
            if leaders:
                return max(leaders, key=lambda n: leaders[n]["epoch"])
            time.sleep(0.02)
        raise CallTimeoutError(f"no follower of {self.name!r} took over within {timeout_s}s")

    # --- membership ------------------------------------------------------------------------------

    def _admin(self, req: ReplAdmin | ReplOwnership, *, timeout_s: float) -> None:
        """Send ``req`` to the leader, following it through elections, until it is applied."""
        deadline = time.monotonic() + timeout_s
        what = f"{req.action} {req.target!r}" if isinstance(req, ReplAdmin) else "the ownership update"
        own_wait = req.timeout_s if isinstance(req, ReplAdmin) else 0.0
        while True:
            leader = self.leader(timeout_s=max(0.1, deadline - time.monotonic()))
            try:
                # Long enough for the leader's own verdict on a change it works on until req.timeout_s.
                wait = min(max(5.0, own_wait + 1.0), deadline - time.monotonic() + 1.0)
                self.group.request(leader, req, timeout_s=max(1.0, wait))
                return
            except (NotLeaderError, ProposalDroppedError, ActorUnavailableError, CallTimeoutError,
                    MessageDroppedError):
                pass  # leadership moved, a change is under way, or the call was lost: ask again
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"{what} did not complete within {timeout_s}s")
            time.sleep(0.05)

    def set_ownership(self, ownership: Ownership, *, timeout_s: float = 30.0) -> None:
        """Make ``ownership`` the group's record of the partitions it owns (:mod:`.ownership`), through
        the log, acknowledged as durably as a failover needs: a Raft majority, or the sync and
        semi-sync modes' own acknowledgements; in async mode every follower, since an async failover
        may lose what the leader alone had (so a change waits while an async follower is down). A
        partitioned store calls this; a record older than the group's is refused
        (:class:`~ddia_ray.errors.StaleMapError`). Repeating an update is harmless."""
        if type(ownership) is not Ownership:
            raise InvalidArgumentError(f"set_ownership takes an Ownership record, got {type(ownership).__name__}")
        acks = len(self.members) - 1 if self.mode == "async" else -1
        self._admin(ReplOwnership(ownership, acks), timeout_s=timeout_s)

    def ownership(self) -> Ownership | None:
        """The ownership record the leader's state holds (None: the group serves no partitioned store)."""
        leader = self.leader()
        status = self.group.status(leader)["core"]
        raw = status.get("ownership")
        return decode_ownership(raw) if raw is not None else None

    def add_replica(self, node: str | None = None, *, timeout_s: float = 60.0, ray_node: str | None = None) -> str:
        """Start a new replica and add it to the group while writes go on; returns its name. ``ray_node``:
        the id of the Ray node to run it on (default: the group's spread over the alive nodes).

        Under Raft it joins as a learner, catches up with the leader's commit index (a checkpoint if
        the log was compacted) and then becomes a voter, so a slow newcomer never weakens the quorum
        (Raft thesis 4.2.1). Under leader-follower it is replicated to (checkpoint plus log tail)
        until it has caught up, and only then counts for the mode's acknowledgements and the failover
        quorum, the member list being written with the lease (see :mod:`.membership`). A newcomer
        that has not caught up by ``timeout_s`` is stopped and the members stay as they were.
        """
        members = self.members
        if node is None:  # a fresh name: not one this handle removed (that replica's files may remain)
            used = {int(n[1:]) for n in (*self.group.specs, *self._removed) if n[:1] == "r" and n[1:].isdigit()}
            node = f"r{max(used, default=0) + 1}"
        if node in self.group.specs:
            raise ConfigError(f"{node!r} is already a replica of {self.name!r}")
        spec = next(s for n, s in self.group.specs.items() if n in members)
        raft = self.protocol == "raft"
        options = {**spec.options, "voters": ()} if raft else {**spec.options, "members": (*members, node)}
        self.group.add(node, CoreSpec(spec.factory, options), ray_node=ray_node)
        deadline = time.monotonic() + timeout_s
        try:
            if raft:
                self._admin(ReplAdmin("add_learner", node), timeout_s=timeout_s)
                while True:
                    st = self.group.status(self.leader(timeout_s=max(0.1, deadline - time.monotonic())))["core"]
                    progress = st.get("progress", {}).get(node)
                    if progress and progress["match"] >= st["commit"]:
                        break
                    if time.monotonic() > deadline:
                        raise CallTimeoutError(f"the new replica {node!r} did not catch up within {timeout_s}s")
                    time.sleep(0.05)
                self._admin(ReplAdmin("add_voter", node), timeout_s=max(1.0, deadline - time.monotonic()))
            else:
                self._admin(ReplAdmin("add", node, timeout_s=_leader_share(timeout_s)), timeout_s=timeout_s)
        except BaseException:
            self.group.forget(node)  # never left running half-added
            raise
        self.options["members"] = (*members, node)
        return node

    def remove_replica(self, node: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        """Remove ``node`` from the group's members (moving leadership away first), then stop it.

        Refuses the last replica, and under semi-sync one that would leave fewer followers than
        ``sync_replicas``. Under leader-follower the leader first waits until the remaining followers
        hold every acknowledged write as the mode promises (see :mod:`.membership`). In async mode
        it also waits until ``node`` has answered the leader, so that the writes it may hold alone
        (as a deposed leader) are counted as lost; ``force=True`` is for a replica gone for good: the
        removal goes ahead and ``stats()["uncounted_removals"]`` names it (the lost-write count may
        then be short by what it alone held).
        """
        members = self.members
        if node not in members:
            raise UnknownNodeError(node, members)
        if len(members) == 1:
            raise ConfigError(f"{node!r} is the last replica of {self.name!r}: removing it would lose the store")
        if self.leader(timeout_s=timeout_s) == node:
            if self.protocol == "raft":
                self.transfer_leadership(next(m for m in members if m != node), timeout_s=timeout_s)
            else:  # to the most caught-up follower (a newcomer may still be installing a checkpoint)
                self.failover(timeout_s=timeout_s)
        action = "remove_forced" if force and self.protocol != "raft" else "remove"
        self._admin(ReplAdmin(action, node, timeout_s=_leader_share(timeout_s)), timeout_s=timeout_s)
        self.group.forget(node)
        self._removed.add(node)
        self.options["members"] = tuple(m for m in members if m != node)

    # --- nemesis ---------------------------------------------------------------------------------

    def _node(self, node: str) -> str:
        if node not in self.group.node_ids():
            raise UnknownNodeError(node, self.group.node_ids())
        return node

    def kill(self, node: str) -> None:
        """``ray.kill`` a replica (or a coordinator)."""
        self.nemesis.kill(self._node(node))

    def restart(self, node: str) -> None:
        """Restart a killed node; it recovers from its log (and its engine)."""
        self.nemesis.restart(self._node(node))

    def partition(self, groups) -> None:
        """Cut the network between groups of nodes (``"*"``: everyone else, clients included)."""
        self.nemesis.partition(groups)

    def heal(self) -> None:
        """Remove every partition and cut."""
        self.nemesis.heal()

    def pause(self, node: str) -> None:
        """Freeze a node (no ticks, input held): a process pause (DDIA 8.3)."""
        self.nemesis.pause(self._node(node))

    def resume(self, node: str) -> None:
        """Let a paused node run again."""
        self.nemesis.resume(self._node(node))

    # --- for the client ----------------------------------------------------------------------------

    def _handle(self, node: str):
        try:
            return self.group.handle(node)
        except UnknownNodeError:  # removed since the client last heard of it: for a client, it is gone
            raise ActorUnavailableError(f"{node!r} is no longer a replica of {self.name!r}") from None

    def _any_replica(self) -> str:
        alive = [r for r in self.members if r in set(self.group.alive())]
        if not alive:
            raise ActorUnavailableError(f"no replica of {self.name!r} is running")
        return alive[next(self._rr) % len(alive)]
