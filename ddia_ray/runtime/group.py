"""A named group of node shells on Ray, and the nemesis that breaks it on purpose.

Theory of operation
-------------------
:meth:`NodeGroup.launch` creates one :class:`~ddia_ray.runtime.shell.NodeShell`
actor per node, named ``"<group>/<node>"`` in the ddia-ray namespace. When the
cluster has several alive Ray nodes the members are pinned round-robin to
distinct nodes (hard node affinity: Ray's soft affinity was seen to spill
members onto a busier node; the target is chosen among the nodes alive at
each start and restart, so a lost node is never picked again);
on one machine they are packed together. Shells reserve no CPU by default:
they are I/O-bound message pumps, and a laptop with 2 cores must still fit a
5-member group plus its clients.

:class:`Nemesis` owns the group's :class:`~ddia_ray.runtime.faults.NetworkConfig`.
Every change is pushed to every live shell and awaited, so when
``partition(...)`` returns, the cut is in force everywhere. ``kill`` is
``ray.kill`` (no Ray-level restart); ``restart`` starts a fresh actor under
the same name that rebuilds its core from its durable log.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

from .. import codec
from .._validate import positive
from ..errors import (
    ActorUnavailableError,
    CallTimeoutError,
    CodecError,
    ConfigError,
    InvalidArgumentError,
    UnknownNodeError,
)
from .calls import get_result
from .connect import NAMESPACE, ensure_ray
from .controls import NetworkControls
from .core import CoreSpec, Reply
from .faults import NetworkConfig

__all__ = ["NodeGroup", "Nemesis", "assign_nodes"]


def assign_nodes(members: Sequence[str], ray_nodes: Sequence[str]) -> dict[str, str | None]:
    """Map each member to a Ray node id: distinct nodes when there are enough, round-robin otherwise.

    With fewer than two Ray nodes every member maps to ``None`` (no constraint: packed).
    """
    if len(ray_nodes) < 2:
        return {m: None for m in members}
    ordered = sorted(ray_nodes)
    return {m: ordered[i % len(ordered)] for i, m in enumerate(members)}


def _alive_ray_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


class NodeGroup:
    """Handles on the shells of one group, with request helpers and a :class:`Nemesis`."""

    def __init__(self, name: str, specs: Mapping[str, CoreSpec], *, root: str | None, tick_s: float,
                 seed: int, actor_options: Mapping[str, Any] | None = None, sync: bool = False):
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidArgumentError(f"group name must be a non-empty str without '/', got {name!r}")
        if not specs:
            raise ConfigError("a group needs at least one node")
        for node, spec in specs.items():
            if not isinstance(node, str) or not node or "/" in node:
                raise InvalidArgumentError(f"node ids must be non-empty str without '/', got {node!r}")
            if not isinstance(spec, CoreSpec):
                raise InvalidArgumentError(f"node {node!r}: expected a CoreSpec, got {type(spec).__name__}")
        self.name = name
        self.specs = dict(specs)
        self.root = root
        self.tick_s = positive("tick_s", tick_s)
        self.seed = seed
        self.actor_options = dict(actor_options or {})
        self.sync = bool(sync)
        self.handles: dict[str, Any] = {}
        self.restarts: dict[str, int] = {n: 0 for n in specs}
        self.nemesis = Nemesis(self)

    @classmethod
    def launch(cls, name: str, specs: Mapping[str, CoreSpec], *, root: str | None = None,
               tick_s: float = 0.01, seed: int = 0, config: NetworkConfig | None = None,
               actor_options: Mapping[str, Any] | None = None, sync: bool = False) -> "NodeGroup":
        """Start one shell per entry of ``specs`` and wait until all run.

        ``root`` is an fsspec URL for durable records (``None``: volatile
        cores, restart starts empty); ``sync=True`` fsyncs every append on a
        local disk. Starts a local Ray first if needed.
        """
        ensure_ray()
        group = cls(name, specs, root=root, tick_s=tick_s, seed=seed, actor_options=actor_options, sync=sync)
        if config is not None:
            group.nemesis.config = config
        placement = assign_nodes(list(specs), _alive_ray_nodes())
        for node in specs:
            group.handles[node] = group._create(node, placement[node])
        group._await_started(list(specs))
        return group

    def _create(self, node: str, ray_node: str | None):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .shell import NodeShell, actor_name

        options = {"name": actor_name(self.name, node), "namespace": NAMESPACE, "num_cpus": 0,
                   "max_restarts": 0, "max_concurrency": 1000}
        if ray_node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray_node, soft=False)
        options.update(self.actor_options)
        cls = ray.remote(NodeShell)
        return cls.options(**options).remote(
            self.name, node, codec.encode(self.specs[node]), self.root, self.tick_s,
            self.seed + 7919 * self.restarts[node], codec.encode(self.nemesis.config), self.sync)

    def _await_started(self, nodes: Iterable[str], timeout_s: float = 60.0) -> None:
        import ray

        refs = [self.handles[n].start.remote() for n in nodes]
        try:
            ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            raise CallTimeoutError(f"group {self.name!r}: shells did not start within {timeout_s}s") from e

    # --- membership ----------------------------------------------------------

    def node_ids(self) -> tuple[str, ...]:
        """Every node of the group, alive or killed."""
        return tuple(self.specs)

    def alive(self) -> tuple[str, ...]:
        """Nodes with a live shell (not killed since their last start)."""
        return tuple(n for n, h in self.handles.items() if h is not None)

    def handle(self, node: str):
        """The actor handle of ``node``; raises if it was killed and not restarted."""
        if node not in self.specs:
            raise UnknownNodeError(node, self.specs)
        h = self.handles.get(node)
        if h is None:
            raise ActorUnavailableError(f"node {node!r} of group {self.name!r} is killed; restart it first")
        return h

    # --- requests -------------------------------------------------------------

    def request(self, node: str, payload: Any, *, src: str = "client", timeout_s: float = 5.0) -> Any:
        """Send one request to ``node`` through the faulty network and return the reply payload."""
        return self.request_batch(node, [payload], src=src, timeout_s=timeout_s)[0]

    def request_batch(self, node: str, payloads: Sequence[Any], *, src: str = "client",
                      timeout_s: float = 5.0) -> list:
        """Send many requests in one actor call; results in order.

        An error reply raises the error the core refused with, of its own class
        (``NotLeaderError`` with its ``leader_hint``, ...; see :mod:`ddia_ray.error_record`).
        """
        ref = self.handle(node).request_batch.remote(src, codec.encode(tuple(payloads)))
        replies = codec.decode(get_result(ref, timeout_s, f"{self.name}/{node}"), tuple)
        out = []
        for r in replies:
            if not isinstance(r, Reply):
                raise CodecError(f"{self.name}/{node} answered with {type(r).__name__}, not a Reply")
            if not r.ok:
                raise r.error.exception(f"{self.name}/{node}")
            out.append(r.payload)
        return out

    def status(self, node: str | None = None, *, timeout_s: float = 10.0):
        """``status()`` of one node, or a dict of all live nodes' statuses."""
        import ray

        nodes = [node] if node is not None else list(self.alive())
        try:
            got = ray.get([self.handle(n).status.remote() for n in nodes], timeout=timeout_s)
        except ray.exceptions.RayActorError as e:
            raise ActorUnavailableError(f"group {self.name!r}: a node died during status(): {e}") from e
        except ray.exceptions.GetTimeoutError as e:
            raise CallTimeoutError(f"group {self.name!r}: status() did not answer within {timeout_s}s") from e
        return got[0] if node is not None else dict(zip(nodes, got))

    # --- lifecycle ------------------------------------------------------------

    def kill(self, node: str) -> None:
        """``ray.kill`` the shell of ``node``: its volatile state is gone."""
        import ray

        ray.kill(self.handle(node), no_restart=True)
        self.handles[node] = None

    def restart(self, node: str, *, timeout_s: float = 60.0) -> None:
        """Start a new shell for a killed ``node``; its core recovers from durable records."""
        import ray

        from .shell import actor_name

        if node not in self.specs:
            raise UnknownNodeError(node, self.specs)
        if self.handles.get(node) is not None:
            raise ConfigError(f"node {node!r} is running; kill it before restarting")
        # ray.kill is asynchronous: wait until the name is released before reusing it.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get_actor(actor_name(self.name, node), namespace=NAMESPACE)
            except ValueError:
                break
            if time.monotonic() > deadline:
                raise CallTimeoutError(f"{self.name}/{node}: the killed actor's name was not released")
            time.sleep(0.05)
        self.restarts[node] += 1
        placement = assign_nodes(list(self.specs), _alive_ray_nodes())
        self.handles[node] = self._create(node, placement[node])
        self._await_started([node], timeout_s)

    def add(self, node: str, spec: CoreSpec, *, timeout_s: float = 60.0) -> None:
        """Start a shell for a new ``node`` (a member joining the group) and wait until it runs."""
        if not isinstance(node, str) or not node or "/" in node:
            raise InvalidArgumentError(f"node ids must be non-empty str without '/', got {node!r}")
        if node in self.specs:
            raise ConfigError(f"node {node!r} is already in group {self.name!r}")
        if not isinstance(spec, CoreSpec):
            raise InvalidArgumentError(f"node {node!r}: expected a CoreSpec, got {type(spec).__name__}")
        self.specs[node] = spec
        self.restarts[node] = 0
        placement = assign_nodes(list(self.specs), _alive_ray_nodes())
        self.handles[node] = self._create(node, placement[node])
        self._await_started([node], timeout_s)

    def forget(self, node: str) -> None:
        """Kill ``node`` if it runs and drop it from the group (a member that was removed)."""
        if node not in self.specs:
            raise UnknownNodeError(node, self.specs)
        if self.handles.get(node) is not None:
            self.kill(node)
        del self.specs[node], self.handles[node], self.restarts[node]

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Kill every shell; with ``destroy_data`` also delete their durable records."""
        import ray

        from .durable import DurableLog

        live = self.alive()
        try:
            ray.get([self.handles[n].stop.remote() for n in live], timeout=10)
        except ray.exceptions.RayError:
            pass  # a shell that is already dead needs no clean stop
        for node in live:
            ray.kill(self.handles[node], no_restart=True)
            self.handles[node] = None
        if destroy_data and self.root:
            for node in self.specs:
                DurableLog(self.root, f"{self.name}/{node}").destroy()


class Nemesis(NetworkControls):
    """Fault injection over a :class:`NodeGroup`: network faults, pauses, kills and restarts."""

    def __init__(self, group: NodeGroup):
        self.group = group
        self.config = NetworkConfig()
        self.history: list[tuple[float, str]] = []

    def node_ids(self) -> tuple[str, ...]:
        """Nodes of the group (clients such as ``"client"`` may still be named in cuts via ``"*"``)."""
        return self.group.node_ids()

    def _known(self, node: str) -> str:
        # Clients and balancers are not shells but are legitimate link ends.
        if not isinstance(node, str) or not node:
            raise InvalidArgumentError(f"node ids are non-empty str, got {node!r}")
        return node

    def _install(self, config: NetworkConfig) -> None:
        import ray

        self.config = config
        data = codec.encode(config)
        live = self.group.alive()
        refs = [self.group.handles[n].configure.remote(data) for n in live]
        ray.get(refs, timeout=30)
        self.history.append((time.monotonic(), f"config epoch {config.epoch}"))

    def pause(self, node: str) -> None:
        """Freeze the shell of ``node``: no ticks; its input waits until :meth:`resume`."""
        self.group.handle(node)
        super().pause(node)

    def resume(self, node: str) -> None:
        """Let a paused node run again."""
        if node not in self.group.specs:
            raise UnknownNodeError(node, self.group.specs)
        super().resume(node)

    def kill(self, node: str) -> None:
        """Kill the shell of ``node`` (``ray.kill``)."""
        self.group.kill(node)
        self.history.append((time.monotonic(), f"kill {node}"))

    def restart(self, node: str) -> None:
        """Start a fresh shell for ``node`` that recovers from its durable state."""
        self.group.restart(node)
        self.history.append((time.monotonic(), f"restart {node}"))
