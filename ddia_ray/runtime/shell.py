"""The Ray actor that hosts one pure core: it only moves bytes, keeps time and persists.

Theory of operation
-------------------
A :class:`NodeShell` is an asyncio Ray actor named ``"<group>/<node>"``. It
builds its core from a :class:`~ddia_ray.runtime.core.CoreSpec` and the
records in its :class:`~ddia_ray.runtime.durable.DurableLog`, then loops:

* a timer calls ``core.tick()`` every ``tick_s``;
* :meth:`deliver` receives a *batch* of encoded envelopes from a peer shell
  (one actor call per destination per round, never one per message);
* :meth:`request` / :meth:`request_batch` receive client requests and
  resolve when the core replies.

After each input the shell drains ``core.ready()`` in the required order:
append ``persist`` to the log, complete ``replies``, send ``messages``,
``advance``.

Fault injection happens on the receiving side, with the same
:class:`~ddia_ray.runtime.faults.FaultModel` as the simulator: an incoming
message or request is routed ``src -> self`` (dropped, delayed, duplicated,
held back) and a reply is routed ``self -> src``. A lost request or reply is
never answered: the caller sees its own timeout, exactly as over a real
network. A paused shell stops ticking and parks its input until resumed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import zlib
from collections import defaultdict
from typing import Any

from .. import codec
from ..errors import MessageDroppedError
from .connect import NAMESPACE
from .core import CoreSpec, Envelope, load_factory
from .durable import DurableLog
from .faults import FaultModel, NetworkConfig

__all__ = ["NodeShell", "actor_name", "LOST_HOLD_S"]

#: How long a shell keeps a lost request open before failing it; callers time out sooner.
LOST_HOLD_S = 30.0


def actor_name(group: str, node: str) -> str:
    """The Ray actor name of ``node`` in ``group``."""
    return f"{group}/{node}"


class NodeShell:
    """Hosts one core (see the module docstring). Create it through :class:`NodeGroup`."""

    def __init__(self, group: str, node_id: str, spec: bytes, root: str | None, tick_s: float,
                 seed: int, config: bytes, sync: bool = False):
        self.group = group
        self.node_id = node_id
        self.tick_s = tick_s
        self.spec: CoreSpec = codec.decode(spec, CoreSpec)
        # Import the core's module first: it registers the record types its log holds.
        factory = load_factory(self.spec.factory)
        self.log = DurableLog(root, f"{group}/{node_id}", sync=sync) if root else None
        recovered = tuple(self.log.read_all()) if self.log else ()
        self.recovered_records = len(recovered)
        self.core = factory(node_id, recovered=recovered, tick_s=tick_s, **dict(self.spec.options))
        self.model = FaultModel(codec.decode(config, NetworkConfig),
                                random.Random(seed ^ zlib.crc32(node_id.encode())))
        self._peers: dict[str, Any] = {}
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._running: asyncio.Event | None = None
        self._ticker: asyncio.Task | None = None
        self.counters: dict[str, int] = defaultdict(int)
        self.received_from: dict[str, int] = defaultdict(int)

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> dict:
        """Start the tick timer (idempotent); returns :meth:`status`."""
        if self._running is None:
            self._running = asyncio.Event()
            if not self.model.config.is_paused(self.node_id):
                self._running.set()
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        return await self.status()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self._running.wait()
            self.core.tick()
            self._process()

    async def stop(self) -> None:
        """Stop the tick timer before the actor is killed (a clean shutdown, not a crash)."""
        if self._ticker is not None:
            self._ticker.cancel()

    async def configure(self, config: bytes) -> int:
        """Install a new network config from the nemesis; returns its epoch."""
        cfg = codec.decode(config, NetworkConfig)
        self.model.config = cfg
        if self._running is not None:
            if cfg.is_paused(self.node_id):
                self._running.clear()
            else:
                self._running.set()
        return cfg.epoch

    async def status(self) -> dict:
        """Plain data: node, core status, counters, pause state, config epoch."""
        import ray

        return {
            "node": self.node_id,
            "ray_node": ray.get_runtime_context().get_node_id(),
            "core": dict(self.core.status()),
            "paused": self._running is not None and not self._running.is_set(),
            "epoch": self.model.config.epoch,
            "recovered_records": self.recovered_records,
            "counters": dict(self.counters),
            "received_from": dict(self.received_from),
            "faults": dict(self.model.counters()),
        }

    async def ping(self) -> str:
        """Liveness probe that bypasses the fault model (used by the nemesis, not by peers)."""
        return self.node_id

    # --- inputs -------------------------------------------------------------

    async def deliver(self, src: str, data: bytes) -> None:
        """Receive a batch of envelopes from ``src`` (one network packet)."""
        envelopes = codec.decode(data, tuple)
        loop = asyncio.get_running_loop()
        for delay in self.model.route(src, self.node_id):
            if delay:
                loop.call_later(delay, lambda: loop.create_task(self._step_all(src, envelopes)))
            else:
                await self._step_all(src, envelopes)

    async def _step_all(self, src: str, envelopes: tuple) -> None:
        await self._running.wait()
        for env in envelopes:
            if isinstance(env, Envelope) and env.dst == self.node_id:
                self.received_from[src] += 1
                self.core.step(env)
            else:
                self.counters["misaddressed"] += 1
        self._process()

    async def request(self, src: str, data: bytes) -> bytes:
        """One client request (encoded payload) from ``src``; returns the encoded :class:`Reply`."""
        replies = await self._requests(src, (codec.decode(data),))
        return codec.encode(replies[0])

    async def request_batch(self, src: str, data: bytes) -> bytes:
        """Many client requests in one call (one packet); returns encoded replies in order."""
        return codec.encode(await self._requests(src, codec.decode(data, tuple)))

    async def _requests(self, src: str, payloads: tuple) -> tuple:
        self.counters["requests"] += len(payloads)
        delays = self.model.route(src, self.node_id)
        if not delays:
            await self._lost("request", src)
        await asyncio.sleep(delays[0])
        await self._running.wait()
        futures = [self._submit(p) for p in payloads]
        for _ in delays[1:]:  # a duplicated packet is processed again; its replies go nowhere
            for p in payloads:
                self._submit(p)
        self._process()  # one ready() round for the whole batch: one log append, one send per peer
        if all(f.done() for f in futures):  # the usual case: the core answered at once
            replies = tuple(f.result() for f in futures)
        else:
            replies = tuple(await asyncio.gather(*futures))
        back = self.model.route(self.node_id, src)
        if not back:
            await self._lost("reply", src)
        await asyncio.sleep(back[0])
        return replies

    def _submit(self, payload: Any) -> asyncio.Future:
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.core.request(rid, payload)
        return fut

    async def _lost(self, what: str, src: str):
        self.counters[f"lost_{what}s"] += 1
        await asyncio.sleep(LOST_HOLD_S)
        raise MessageDroppedError(f"the network lost a {what} between {src!r} and {self.node_id!r}")

    # --- outputs ------------------------------------------------------------

    def _process(self) -> None:
        ready = self.core.ready()
        if not ready:
            return
        if ready.persist and self.log is not None:
            self.log.append(ready.persist)  # durable before any message that depends on it
            self.counters["persisted"] += len(ready.persist)
        # Replies go first: they need only what was just persisted, and each message send costs
        # about 0.3 ms of this event loop, which a waiting client would otherwise pay for.
        for reply in ready.replies:
            fut = self._pending.pop(reply.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        by_dst: dict[str, list] = defaultdict(list)
        for env in ready.messages:
            by_dst[env.dst].append(env)
        for dst, envs in by_dst.items():
            self._send(dst, tuple(envs))
        self.core.advance(ready)

    def _send(self, dst: str, envelopes: tuple) -> None:
        import ray

        handle = self._peers.get(dst)
        if handle is None:
            try:
                handle = ray.get_actor(actor_name(self.group, dst), namespace=NAMESPACE)
            except ValueError:
                self.counters["unreachable"] += len(envelopes)  # peer dead or not started
                return
            self._peers[dst] = handle
        self.counters["sent"] += len(envelopes)
        ref = handle.deliver.remote(self.node_id, codec.encode(envelopes))

        def _done(fut, dst=dst, handle=handle):
            if fut.exception() is not None and self._peers.get(dst) is handle:
                # The peer died: look it up again next time (it may have been restarted).
                self._peers.pop(dst, None)

        ref.future().add_done_callback(_done)

