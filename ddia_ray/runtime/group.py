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
the same name that rebuilds its core from its durable log (a service
rebuilds itself from its spec: a storage node reopens its engine).

A group launched with ``detached=True`` outlives the driver that started it
(Ray's detached actors). :meth:`NodeGroup.connect` attaches to a running
group by name from any driver, notebook or job on the same Ray cluster: it
lists the named actors ``"<group>/..."`` and asks one of them to describe the
group (spec, durable root, tick, the nemesis' current config).
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
    ComponentNotFoundError,
    ConfigError,
    InvalidArgumentError,
    UnknownNodeError,
)
from .calls import get_result
from .connect import NAMESPACE, ensure_ray
from .controls import NetworkControls
from ..error_record import ErrorRecord
from .core import CoreSpec, Reply
from .faults import NetworkConfig
from .service import ServiceSpec, call_service, stream_service

__all__ = ["NodeGroup", "Nemesis", "assign_nodes", "running_groups"]

#: How long a kill waits for the shell to halt before killing it anyway (a hung shell never answers).
HALT_TIMEOUT_S = 5.0


def assign_nodes(members: Sequence[str], ray_nodes: Sequence[str], offset: int = 0) -> dict[str, str | None]:
    """Map each member to a Ray node id: distinct nodes when there are enough, round-robin otherwise,
    starting ``offset`` nodes along (so the first members of several groups do not all share the
    first node: a partitioned store gives each of its groups its own offset).

    With fewer than two Ray nodes every member maps to ``None`` (no constraint: packed).
    """
    if len(ray_nodes) < 2:
        return {m: None for m in members}
    ordered = sorted(ray_nodes)
    return {m: ordered[(i + offset) % len(ordered)] for i, m in enumerate(members)}


def _check_spec(node: str, spec: Any) -> None:
    if not isinstance(spec, (CoreSpec, ServiceSpec)):
        raise InvalidArgumentError(f"node {node!r}: expected a CoreSpec or a ServiceSpec, got {type(spec).__name__}")


def running_groups() -> tuple[str, ...]:
    """Names of the ddia-ray groups with a live node on this Ray cluster."""
    from ray.util import list_named_actors

    ensure_ray()
    return tuple(sorted({a["name"].split("/", 1)[0] for a in list_named_actors(all_namespaces=True)
                         if a.get("namespace") == NAMESPACE and "/" in a["name"]}))


def _alive_ray_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


class NodeGroup:
    """Handles on the shells of one group, with request helpers and a :class:`Nemesis`."""

    def __init__(self, name: str, specs: Mapping[str, CoreSpec | ServiceSpec], *, root: str | None, tick_s: float,
                 seed: int, actor_options: Mapping[str, Any] | None = None, sync: bool = False,
                 detached: bool = False):
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidArgumentError(f"group name must be a non-empty str without '/', got {name!r}")
        if not specs:
            raise ConfigError("a group needs at least one node")
        for node, spec in specs.items():
            if not isinstance(node, str) or not node or "/" in node:
                raise InvalidArgumentError(f"node ids must be non-empty str without '/', got {node!r}")
            _check_spec(node, spec)
        self.name = name
        self.specs = dict(specs)
        self.root = root
        self.tick_s = positive("tick_s", tick_s)
        self.seed = seed
        self.actor_options = dict(actor_options or {})
        self.sync = bool(sync)
        self.detached = bool(detached)
        self.handles: dict[str, Any] = {}
        self.restarts: dict[str, int] = {n: 0 for n in specs}
        self.nemesis = Nemesis(self)
        self.offset = 0  # where this group's members start among the Ray nodes (assign_nodes)
        self.pinned: dict[str, str] = {}  # node -> the Ray node it was asked to run on (add(ray_node=...))

    @classmethod
    def launch(cls, name: str, specs: Mapping[str, CoreSpec | ServiceSpec], *, root: str | None = None,
               tick_s: float = 0.01, seed: int = 0, config: NetworkConfig | None = None,
               actor_options: Mapping[str, Any] | None = None, sync: bool = False,
               detached: bool = False, timeout_s: float = 60.0, spread_offset: int = 0) -> "NodeGroup":
        """Start one shell per entry of ``specs``, all at once, and wait until all run.

        ``specs`` map node ids to a :class:`CoreSpec` (a pure core) or a :class:`ServiceSpec`.
        ``root`` is an fsspec URL for durable records (``None``: volatile
        cores, restart starts empty); ``sync=True`` fsyncs every append on a
        local disk. ``detached=True`` lets the group outlive this driver (find it again with
        :meth:`connect`). ``spread_offset``: see :func:`assign_nodes`. Starts a local Ray first if
        needed. A node that cannot be built (bad options, corrupt data) raises its own error here,
        after every shell is killed.
        """
        ensure_ray()
        group = cls(name, specs, root=root, tick_s=tick_s, seed=seed, actor_options=actor_options, sync=sync,
                    detached=detached)
        if config is not None:
            group.nemesis.config = config
        group.offset = spread_offset
        placement = assign_nodes(list(specs), _alive_ray_nodes(), spread_offset)
        for node in specs:  # every actor is created before any is awaited: their processes start in parallel
            group.handles[node] = group._create(node, placement[node])
        try:
            group._await_started(list(specs), timeout_s)
        except BaseException:
            group.shutdown()
            raise
        return group

    @classmethod
    def connect(cls, name: str, *, timeout_s: float = 30.0) -> "NodeGroup":
        """Attach to the running group ``name`` (started by any driver on this Ray cluster).

        The returned group has handles on every live node and a nemesis holding the group's
        current network config; its ``restart`` and ``add`` work as in the launching driver.
        Raises :class:`~ddia_ray.errors.ComponentNotFoundError` when no such group runs.
        """
        import ray
        from ray.util import list_named_actors

        ensure_ray()
        prefix = f"{name}/"
        names = [a["name"] for a in list_named_actors(all_namespaces=True)
                 if a.get("namespace") == NAMESPACE and a["name"].startswith(prefix)]
        nodes = sorted(n[len(prefix):] for n in names if "/" not in n[len(prefix):])
        if not nodes:
            raise ComponentNotFoundError(name, running_groups())
        handles = {n: ray.get_actor(prefix + n, namespace=NAMESPACE) for n in nodes}
        try:
            described = ray.get([h.describe.remote() for h in handles.values()], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            raise CallTimeoutError(f"group {name!r} did not describe itself within {timeout_s}s") from e
        except ray.exceptions.RayActorError as e:
            raise ActorUnavailableError(f"group {name!r}: a node died while connecting: {e}") from e
        first = described[0]
        specs = {d["node"]: codec.decode(d["spec"]) for d in described}
        group = cls(name, specs, root=first["root"], tick_s=first["tick_s"], seed=0, sync=first["sync"],
                    detached=True)
        group.handles.update(handles)
        group.nemesis.config = max((codec.decode(d["config"], NetworkConfig) for d in described),
                                   key=lambda c: c.epoch)
        return group

    def _create(self, node: str, ray_node: str | None):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .shell import NodeShell, actor_name

        options = {"name": actor_name(self.name, node), "namespace": NAMESPACE, "num_cpus": 0,
                   "max_restarts": 0, "max_concurrency": 1000}
        if self.detached:
            options["lifetime"] = "detached"
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
            started = ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            raise CallTimeoutError(f"group {self.name!r}: shells did not start within {timeout_s}s") from e
        except ray.exceptions.RayActorError as e:
            raise ActorUnavailableError(f"group {self.name!r}: a shell died while starting: {e}") from e
        for node, status in zip(nodes, started):
            if status.get("error") is not None:
                raise codec.decode(status["error"], ErrorRecord).exception(f"{self.name}/{node}")

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
            if r.error is not None:  # a reply is not ok exactly when it carries an error record
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

    def call(self, node: str, method: str, *args: Any, src: str = "client", timeout_s: float | None = 60.0) -> Any:
        """Call ``method(*args)`` of the service on ``node`` as ``src``, through the faulty network."""
        return call_service(self.handle(node), src, method, args, timeout_s=timeout_s, where=f"{self.name}/{node}")

    def stream(self, node: str, method: str, *args: Any, src: str = "client", timeout_s: float | None = 60.0):
        """Iterate the generator ``method(*args)`` of the service on ``node``, streamed as it is made."""
        return stream_service(self.handle(node), src, method, args, timeout_s=timeout_s,
                              where=f"{self.name}/{node}")

    def stats(self, *, timeout_s: float = 10.0) -> dict:
        """``stats()`` of every live shell: its calls and latencies, and the component's own figures."""
        import ray

        nodes = list(self.alive())
        try:
            got = ray.get([self.handles[n].stats.remote() for n in nodes], timeout=timeout_s)
        except ray.exceptions.RayActorError as e:
            raise ActorUnavailableError(f"group {self.name!r}: a node died during stats(): {e}") from e
        except ray.exceptions.GetTimeoutError as e:
            raise CallTimeoutError(f"group {self.name!r}: stats() did not answer within {timeout_s}s") from e
        return dict(zip(nodes, got))

    # --- lifecycle ------------------------------------------------------------

    def kill(self, node: str, *, timeout_s: float = 60.0) -> None:
        """``ray.kill`` the shell of ``node`` and wait until Ray has released it: its volatile state is gone.

        ``ray.kill`` only asks, and Ray releases the name before the worker process is gone; until
        then it could still answer on a direct link (:mod:`~ddia_ray.runtime.links`), which Ray's
        refusal of new calls does not cover. So the shell is first told to halt (it stops taking
        input, as a crashed process does), then killed.
        """
        import ray

        handle = self.handle(node)
        try:
            ray.get(handle.halt.remote(), timeout=HALT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - dead, hung or unreachable already: the kill settles it
            pass
        ray.kill(handle, no_restart=True)
        self.handles[node] = None
        self._await_released([node], timeout_s)

    def restart(self, node: str, *, timeout_s: float = 60.0) -> None:
        """Start a new shell for a killed ``node``; its core recovers from durable records."""
        if node not in self.specs:
            raise UnknownNodeError(node, self.specs)
        if self.handles.get(node) is not None:
            raise ConfigError(f"node {node!r} is running; kill it before restarting")
        self._await_released([node], timeout_s)
        self.restarts[node] += 1
        self.handles[node] = self._create(node, self._place(node))
        self._await_started([node], timeout_s)

    def _place(self, node: str) -> str | None:
        """The Ray node for ``node``: where it was pinned if that node is alive, else the spread."""
        alive = _alive_ray_nodes()
        if self.pinned.get(node) in alive:
            return self.pinned[node]
        return assign_nodes(list(self.specs), alive, self.offset)[node]

    def _await_released(self, nodes: Iterable[str], timeout_s: float) -> None:
        """Wait until the killed shells' actor names are free (``ray.kill`` is asynchronous)."""
        import ray

        from .shell import actor_name

        deadline = time.monotonic() + timeout_s
        for node in nodes:
            while True:
                try:
                    ray.get_actor(actor_name(self.name, node), namespace=NAMESPACE)
                except ValueError:
                    break
                if time.monotonic() > deadline:
                    raise CallTimeoutError(f"{self.name}/{node}: the killed actor's name was not released")
                time.sleep(0.02)

    def add(self, node: str, spec: CoreSpec | ServiceSpec, *, timeout_s: float = 60.0,
            ray_node: str | None = None) -> None:
        """Start a shell for a new ``node`` (a member joining the group) and wait until it runs;
        on Ray node ``ray_node`` when given (an id of an alive node: a replica moved to a chosen
        machine), where restarts also put it while that node lives."""
        if not isinstance(node, str) or not node or "/" in node:
            raise InvalidArgumentError(f"node ids must be non-empty str without '/', got {node!r}")
        if node in self.specs:
            raise ConfigError(f"node {node!r} is already in group {self.name!r}")
        _check_spec(node, spec)
        if ray_node is not None and ray_node not in _alive_ray_nodes():
            raise UnknownNodeError(ray_node, tuple(_alive_ray_nodes()))
        self.specs[node] = spec
        self.restarts[node] = 0
        if ray_node is not None:
            self.pinned[node] = ray_node
        self.handles[node] = self._create(node, self._place(node))
        self._await_started([node], timeout_s)

    def forget(self, node: str) -> None:
        """Kill ``node`` if it runs and drop it from the group (a member that was removed)."""
        if node not in self.specs:
            raise UnknownNodeError(node, self.specs)
        if self.handles.get(node) is not None:
            self.kill(node)
        del self.specs[node], self.handles[node], self.restarts[node]
        self.pinned.pop(node, None)

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
        # Once shutdown returns the names are free: launching the same name again, or connect()
        # from another driver, sees the group gone rather than a dying actor.
        self._await_released(live, 30.0)
        if destroy_data and self.root:
            for node in self.specs:
                DurableLog(self.root, f"{self.name}/{node}").destroy()


class Nemesis(NetworkControls):
    """Fault injection over a :class:`NodeGroup`: network faults, pauses, kills and restarts."""

    config: NetworkConfig  # the config in force on every live shell (set by _install and connect)

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
