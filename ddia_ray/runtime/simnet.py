"""A deterministic, single-process network of pure cores in virtual time.

Theory of operation
-------------------
:class:`SimNetwork` drives cores exactly as a Ray node shell does (persist,
then send, then reply, then ``advance``) but all in one thread, with a heap
of timed events instead of real actors and clocks. Every random choice comes
from one ``random.Random(seed)``, so a run is a function of its seed and of
the test's script: a failing seed replays exactly.

Faults come from the same :class:`~ddia_ray.runtime.faults.FaultModel` the
Ray shells use, plus crashes: :meth:`crash` stops a node and discards
messages that reach it (``during_write=True`` makes the crash strike while
the node is persisting, so an unsynced suffix of that write is lost);
:meth:`restart` rebuilds its core from the records it persisted. Requests from
clients are sent with :meth:`request` and come back
as :class:`SimCall` objects completed (or not, if lost) as time passes.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from .._validate import invariant, non_negative, positive
from ..errors import ConfigError, UnknownNodeError
from .controls import NetworkControls
from .core import CoreSpec, Envelope, Ready
from .durable import apply_records
from .faults import FaultModel, NetworkConfig

__all__ = ["SimNetwork", "SimCall", "SeedFailure", "run_seeds", "WALL_EPOCH_NS"]

_TICK, _DELIVER, _REQUEST, _REPLY = range(4)
#: The wall time (ns) at which every simulation starts: a fixed date, so a run replays exactly.
WALL_EPOCH_NS = 1_767_225_600 * 10**9


@dataclass
class SimCall:
    """A client request in flight in the simulator."""

    node: str
    payload: Any
    sent_at_s: float
    done: bool = False
    ok: bool = False
    result: Any = None
    error: Any = None  # the reply's ErrorRecord when not ok
    completed_at_s: float | None = None


@dataclass
class _Node:
    factory: Callable[..., Any]
    core: Any = None
    log: list = field(default_factory=list)
    alive: bool = True
    backlog: list = field(default_factory=list)
    incarnation: int = 0


class SimNetwork(NetworkControls):
    """N cores over a faulty network in virtual time; fully determined by ``seed``."""

    def __init__(self, seed: int, *, tick_s: float = 0.01, config: NetworkConfig | None = None):
        self.seed = seed
        self.tick_s = positive("tick_s", tick_s)
        self.rng = random.Random(seed)
        self.model = FaultModel(config, random.Random(self.rng.getrandbits(64)))
        self.now_s = 0.0
        self.nodes: dict[str, _Node] = {}
        self.delivered: dict[tuple[str, str], int] = {}
        self._queue: list = []
        self._seq = itertools.count()
        self._calls: dict[int, SimCall] = {}
        self._request_ids = itertools.count(1)
        self._reply_to: dict[int, str] = {}  # request id -> who asked, for the reply's route
        #: Names that send requests without being nodes; they are valid ends of cuts and links.
        self.clients: set[str] = {"client"}
        self._torn: set[str] = set()  # nodes whose next persisting ready is cut short by a crash
        self.torn_writes = 0

    # --- NetworkControls -----------------------------------------------------

    # Read-only: the config changes only through the NetworkControls verbs, which call _install().
    @property
    def config(self) -> NetworkConfig:
        """The network config in force."""
        return self.model.config

    def node_ids(self) -> tuple[str, ...]:
        """Ids of every node added, alive or crashed."""
        return tuple(self.nodes)

    def _known(self, node: str) -> str:
        return node if node in self.clients else super()._known(node)

    def _install(self, config: NetworkConfig) -> None:
        was_paused = set(self.model.config.paused)
        self.model.config = config
        for node in was_paused - set(config.paused):
            self._drain_backlog(node)

    # --- building -----------------------------------------------------------

    def add(self, node_id: str, factory: Callable[..., Any] | CoreSpec) -> Any:
        """Add a node whose core is ``factory(node_id, recovered=(), tick_s=...)``."""
        if node_id in self.nodes:
            raise ConfigError(f"node {node_id!r} already exists")
        build = factory.build if isinstance(factory, CoreSpec) else factory
        node = _Node(build)
        node.core = build(node_id, recovered=(), tick_s=self.tick_s)
        self._clock(node.core)
        self.nodes[node_id] = node
        # Stagger ticks so nodes do not run in lockstep (which would hide races).
        self._schedule(self.rng.uniform(0, self.tick_s), _TICK, (node_id, 0))
        return node.core

    def _clock(self, core: Any) -> None:
        """Give a core the simulation's wall clock: virtual time from :data:`WALL_EPOCH_NS`, the same for
        every node (a core that models clock skew adds its own offset)."""
        if hasattr(core, "wall_source"):
            core.wall_source = lambda: WALL_EPOCH_NS + int(self.now_s * 1e9)

    def core(self, node_id: str) -> Any:
        """The current core object of ``node_id``."""
        return self._node(node_id).core

    def _node(self, node_id: str) -> _Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise UnknownNodeError(node_id, self.nodes) from None

    # --- faults beyond the network -----------------------------------------

    def crash(self, node_id: str, *, during_write: bool = False) -> None:
        """Stop ``node_id``: its volatile state is gone, messages to it are lost.

        With ``during_write`` the crash strikes in the middle of the node's next ready: a random
        prefix of the records it was persisting reaches the disk, the rest (not yet synced) is
        lost, and none of that ready's messages or replies leave. Until then the node runs.
        """
        node = self._node(node_id)
        if during_write and node.alive:
            self._torn.add(node_id)
            return
        self._torn.discard(node_id)
        node.alive = False
        node.core = None
        node.backlog.clear()

    def restart(self, node_id: str) -> Any:
        """Rebuild a crashed node's core from its persisted records."""
        node = self._node(node_id)
        if node_id in self._torn:
            self.crash(node_id)  # its torn write never came: it crashes between two writes instead
        if node.alive:
            raise ConfigError(f"node {node_id!r} is running; crash it first")
        node.alive = True
        node.incarnation += 1
        node.core = node.factory(node_id, recovered=tuple(node.log), tick_s=self.tick_s)
        self._clock(node.core)
        self._schedule(self.rng.uniform(0, self.tick_s), _TICK, (node_id, node.incarnation))
        return node.core

    # --- clients --------------------------------------------------------------

    def request(self, node_id: str, payload: Any, *, src: str = "client") -> SimCall:
        """Send a client request from ``src`` to ``node_id``; returns its :class:`SimCall`."""
        self._node(node_id)
        self.clients.add(src)
        call = SimCall(node_id, payload, self.now_s)
        rid = next(self._request_ids)
        self._calls[rid] = call
        for delay in self.model.route(src, node_id):
            self._schedule(delay, _REQUEST, (src, node_id, rid))
        return call

    # --- running ------------------------------------------------------------

    def _schedule(self, delay_s: float, kind: int, data: tuple) -> None:
        heapq.heappush(self._queue, (self.now_s + delay_s, next(self._seq), kind, data))

    def step(self) -> bool:
        """Process the next event; False when nothing is left to do."""
        if not self._queue:
            return False
        at, _, kind, data = heapq.heappop(self._queue)
        invariant(at >= self.now_s, "simulated time went backwards")
        self.now_s = at
        if kind == _TICK:
            node_id, incarnation = data
            node = self.nodes[node_id]
            if node.alive and node.incarnation == incarnation:
                self._schedule(self.tick_s, _TICK, data)
                if not self.config.is_paused(node_id):
                    node.core.tick()
                    self._process(node_id)
        elif kind == _REPLY:
            rid, reply = data
            call = self._calls.pop(rid, None)
            if call is not None:  # a duplicated reply completes the call once
                call.done, call.ok, call.result, call.error = True, reply.ok, reply.payload, reply.error
                call.completed_at_s = self.now_s
        else:
            self._input(kind, data)
        return True

    def _input(self, kind: int, data: tuple) -> None:
        dst = data[1]
        node = self.nodes[dst]
        if not node.alive:
            return
        if self.config.is_paused(dst):
            node.backlog.append((kind, data))
            return
        if kind == _DELIVER:
            env = data[2]
            self.delivered[(env.src, env.dst)] = self.delivered.get((env.src, env.dst), 0) + 1
            node.core.step(env)
        else:
            src, _, rid = data
            call = self._calls.get(rid)
            if call is None:
                return  # the call already completed (this is a duplicate)
            node.core.request(rid, call.payload)
            self._reply_to[rid] = src
        self._process(dst)

    def _drain_backlog(self, node_id: str) -> None:
        node = self.nodes[node_id]
        backlog, node.backlog = node.backlog, []
        for kind, data in backlog:
            self._schedule(0.0, kind, data)

    def _process(self, node_id: str) -> None:
        node = self.nodes[node_id]
        ready: Ready = node.core.ready()
        if not ready:
            return
        if node_id in self._torn and ready.persist:
            kept = self.rng.randrange(len(ready.persist) + 1)
            apply_records(node.log, ready.persist[:kept])  # the synced prefix; the rest is lost
            self.torn_writes += 1
            self.crash(node_id)
            return
        apply_records(node.log, ready.persist)  # persisted (and synced) before anything is sent
        for env in ready.messages:
            if not isinstance(env, Envelope):
                raise ConfigError(f"{node_id}: ready.messages must hold Envelopes, got {type(env).__name__}")
            if env.dst not in self.nodes:
                raise UnknownNodeError(env.dst, self.nodes)
            for delay in self.model.route(env.src, env.dst):
                self._schedule(delay, _DELIVER, (env.src, env.dst, env))
        for reply in ready.replies:
            src = self._reply_to.pop(reply.request_id, "client")
            for delay in self.model.route(node_id, src):
                self._schedule(delay, _REPLY, (reply.request_id, reply))
        node.core.advance(ready)

    def run_for(self, seconds: float) -> None:
        """Run every event up to ``now + seconds`` of virtual time."""
        end = self.now_s + non_negative("seconds", seconds)
        while self._queue and self._queue[0][0] <= end:
            self.step()
        self.now_s = max(self.now_s, end)

    def run_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Run until ``condition()`` holds (True) or ``timeout_s`` of virtual time pass (False)."""
        end = self.now_s + positive("timeout_s", timeout_s)
        while not condition():
            if not self._queue or self._queue[0][0] > end:
                self.now_s = max(self.now_s, end)
                return condition()
            self.step()
        return True


class SeedFailure(AssertionError):
    """A simulated scenario failed for ``seed``; the message says how to replay it."""

    def __init__(self, seed: int, replay: str, cause: BaseException):
        self.seed = seed
        super().__init__(f"seed {seed} failed: {type(cause).__name__}: {cause}\n  replay with: {replay}")


def run_seeds(scenario: Callable[[int], None], seeds, *, replay: str = "DDIA_SEED={seed} python -m pytest") -> int:
    """Run ``scenario(seed)`` for every seed; the first failure raises :class:`SeedFailure`.

    ``DDIA_SEED=<n>`` in the environment runs only seed ``n`` (to replay a
    failure); ``replay`` is the command printed with a failure, where
    ``{seed}`` is replaced by the failing seed. Returns how many seeds ran.
    """
    import os

    only = os.environ.get("DDIA_SEED")
    chosen = [int(only)] if only else list(seeds)
    for seed in chosen:
        try:
            scenario(seed)
        except Exception as e:  # AssertionError and any bug the scenario uncovered
            raise SeedFailure(seed, replay.format(seed=seed), e) from e
    return len(chosen)
