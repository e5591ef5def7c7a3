"""RaftKV on Ray: member actors, membership and leadership operations, and the nemesis.

Theory of operation
-------------------
:meth:`RaftKV.launch` starts one :class:`~ddia_ray.runtime.shell.NodeShell`
per member through :class:`~ddia_ray.runtime.NodeGroup` (so members are
spread over Ray nodes when there are several, and share the runtime's
fault-injecting network and nemesis). Each shell hosts a
:class:`~.member.RaftMember` and persists its records under ``root`` (an
fsspec URL) before sending anything; a member restarted after ``ray.kill``
rebuilds itself from them.

Membership: :meth:`add_member` starts an empty member, adds it as a
*learner*, waits until it has caught up with the leader's commit index and
only then promotes it to voter, so a slow newcomer never weakens the quorum.
:meth:`remove_member` refuses to remove the last voter.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from ..consensus.raft import RaftConfig
from ..consensus.sessions import session_ttl_ms
from ..errors import (ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError, MessageDroppedError,
                      NotLeaderError, ProposalDroppedError, UnknownNodeError)
from ..runtime import CoreSpec, NodeGroup
from ..runtime.component import Component
from .client import RaftKVClient
from .commands import KVAdmin

__all__ = ["RaftKV"]

_FACTORY = "ddia_ray.kv.member:build"
_names = itertools.count(1)


class RaftKV(Component):
    """A running RaftKV cluster (see the module docstring). Create it with :meth:`launch`.

    The handle of the one handle convention (:class:`~ddia_ray.runtime.component.Component`):
    ``client()``, ``stats()``, ``nemesis``, ``shutdown()``, a context manager, and
    :meth:`connect` from another driver.
    """

    factories = (_FACTORY,)

    def __init__(self, group: NodeGroup, options: dict):
        super().__init__(group)
        self.options = options
        self._rr = itertools.count()
        self._ids = itertools.count(len(group.node_ids()) + 1)

    @classmethod
    def _attached(cls, group: NodeGroup) -> "RaftKV":
        spec = next(iter(group.specs.values()))
        options = {k: v for k, v in spec.options.items() if k != "voters"}
        return cls(group, options)

    @classmethod
    def launch(cls, members: int = 3, *, root: str | None = None, name: str | None = None, tick_s: float = 0.01,
               seed: int = 0, election_ticks: int = 10, heartbeat_ticks: int = 2, snapshot_entries: int = 10_000,
               config=None, sync: bool = False, raft: RaftConfig | None = None,
               detached: bool = False, session_ttl_s: float = 3600.0) -> "RaftKV":
        """Start ``members`` members (``root``: fsspec URL for their durable logs; None = in memory only).

        ``election_ticks``: ticks of ``tick_s`` a follower waits for its leader before it campaigns
        (randomized up to twice that, in wall time: the shell keeps a member's ticks in step with
        the clock); ``heartbeat_ticks``: the leader's heartbeat period.
        ``sync=True`` fsyncs every record before anything that depends on it is sent, so committed
        writes survive a power cut too; the default hands records to the OS (they survive
        ``ray.kill`` and process crashes), as stock PySyncObj does. ``raft`` is a whole
        :class:`~ddia_ray.consensus.raft.RaftConfig` (pre-vote, check-quorum, batching and
        pipelining limits); when given, its election and heartbeat ticks are the ones used.
        ``config`` is the fault-injecting network's :class:`~ddia_ray.runtime.NetworkConfig`.
        ``detached=True`` keeps the members running after this driver exits (:meth:`connect`).
        ``session_ttl_s``: a client session that has not written for this long (cluster time) is
        forgotten by every member at the same log entry (0: never), so short-lived clients do not
        pile up; a client's ``timeout_s`` must be shorter, or a late retry could apply twice.
        """
        session_ttl_ms(session_ttl_s)  # refused here, not in every member
        if type(members) is not int or members < 1:
            raise ConfigError("a RaftKV cluster needs at least one member")
        if raft is None:
            raft = RaftConfig(election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks)
        elif not isinstance(raft, RaftConfig):
            raise InvalidArgumentError(f"raft must be a RaftConfig, got {type(raft).__name__}")
        name = name or f"raftkv-{next(_names)}-{int(time.time() * 1000) % 1_000_000}"
        ids = [f"m{i}" for i in range(1, members + 1)]
        options = {"seed": seed, "snapshot_entries": snapshot_entries, "session_ttl_s": session_ttl_s,
                   "raft": {f.name: getattr(raft, f.name) for f in dataclasses.fields(raft)}}
        specs = {n: CoreSpec(_FACTORY, {**options, "voters": ids}) for n in ids}
        group = NodeGroup.launch(name, specs, root=root, tick_s=tick_s, seed=seed, config=config, sync=sync,
                                 detached=detached)
        return cls(group, options)

    # --- inspection ---------------------------------------------------------

    @property
    def members(self) -> tuple:
        """Every member this handle started and has not removed."""
        return self.group.node_ids()

    def status(self) -> dict:
        """Status of every live member (Raft role, term, log marks, timeline)."""
        return {n: s["core"] for n, s in self.group.status().items()}

    def leader(self, *, timeout_s: float = 15.0) -> str:
        """The member that leads now (waits for an election if there is none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                statuses = self.status()
            except (ActorUnavailableError, CallTimeoutError):  # a member died or hung while asked: ask again
                statuses = {}
            leaders = {n: s for n, s in statuses.items() if s["role"] == "leader"}
            if leaders:
                return max(leaders, key=lambda n: leaders[n]["term"])
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"no leader elected within {timeout_s}s")
            time.sleep(0.05)

    def client(self, **options) -> RaftKVClient:
        """A new client session (see :class:`~.client.RaftKVClient` for the options)."""
        return RaftKVClient(self, **options)

    # --- membership and leadership ------------------------------------------

    def _admin(self, req: KVAdmin, *, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        target = None
        while True:
            target = target or self.leader(timeout_s=max(0.1, deadline - time.monotonic()))
            try:
                return self.group.request(target, req, timeout_s=5.0)
            except NotLeaderError as e:  # answered by a follower: go where it points, or find the leader again
                target = e.leader_hint
            except ProposalDroppedError:  # a transfer or another change under way: ask again shortly
                target = None
                time.sleep(0.05)
            except UnknownNodeError as e:
                if hasattr(e, "remote_node"):  # the member refused: the change names a node it does not know
                    raise
                target = None  # the leader we knew was removed from the group: find the new one
            except (CallTimeoutError, ActorUnavailableError, MessageDroppedError):
                target = None  # the leader died or the call was lost: find it again
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"{req.action} {req.node!r} did not complete within {timeout_s}s")

    def add_member(self, node: str | None = None, *, timeout_s: float = 60.0) -> str:
        """Start a new member, add it as a learner, wait until it caught up, then make it a voter."""
        node = node or f"m{next(self._ids)}"
        if node in self.group.node_ids():
            raise ConfigError(f"{node!r} is already a member")
        self.group.add(node, CoreSpec(_FACTORY, {**self.options, "voters": ()}))
        deadline = time.monotonic() + timeout_s
        self._admin(KVAdmin("add_learner", node), timeout_s=timeout_s)
        while True:
            leader = self.leader()
            st = self.group.status(leader)["core"]
            progress = st.get("progress", {}).get(node)
            if progress and progress["match"] >= st["commit"]:
                break
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"learner {node!r} did not catch up within {timeout_s}s")
            time.sleep(0.05)
        self._admin(KVAdmin("add_voter", node), timeout_s=max(1.0, deadline - time.monotonic()))
        return node

    def remove_member(self, node: str, *, timeout_s: float = 30.0) -> None:
        """Remove ``node`` from the configuration, then stop its actor."""
        if node not in self.group.node_ids():
            raise UnknownNodeError(node, self.group.node_ids())
        self._admin(KVAdmin("remove", node), timeout_s=timeout_s)
        self.group.forget(node)

    def transfer_leadership(self, target: str, *, timeout_s: float = 15.0) -> None:
        """Make ``target`` the leader (it is brought up to date first)."""
        if target not in self.group.node_ids():
            raise UnknownNodeError(target, self.group.node_ids())
        deadline = time.monotonic() + timeout_s
        while self.leader(timeout_s=timeout_s) != target:
            self._admin(KVAdmin("transfer", target), timeout_s=timeout_s)
            end = time.monotonic() + 1.0
            while time.monotonic() < end and self.leader(timeout_s=timeout_s) != target:
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"leadership did not move to {target!r} within {timeout_s}s")

    # --- nemesis ---------------------------------------------------------------

    def kill(self, node: str) -> None:
        """``ray.kill`` the member's actor."""
        self.nemesis.kill(node)

    def restart(self, node: str) -> None:
        """Restart a killed member; it recovers from its durable log."""
        self.nemesis.restart(node)

    def partition(self, groups) -> None:
        """Cut the network between groups of members (``"*"``: everyone else, clients included)."""
        self.nemesis.partition(groups)

    def heal(self) -> None:
        """Remove every partition and cut."""
        self.nemesis.heal()

    def pause(self, node: str) -> None:
        """Freeze a member (no ticks, input held)."""
        self.nemesis.pause(node)

    def resume(self, node: str) -> None:
        """Let a paused member run again."""
        self.nemesis.resume(node)

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop every member (and delete their logs with ``destroy_data``)."""
        self.group.shutdown(destroy_data=destroy_data)

    # --- for the client ----------------------------------------------------------

    def _handle(self, node: str):
        return self.group.handle(node)

    def _any_member(self) -> str:
        alive = self.group.alive()
        if not alive:
            raise CallTimeoutError("no member is running")
        return alive[next(self._rr) % len(alive)]

    def _other_member(self, node: str) -> str:
        alive = [n for n in self.group.alive() if n != node] or list(self.group.alive())
        if not alive:
            return node
        return alive[next(self._rr) % len(alive)]
