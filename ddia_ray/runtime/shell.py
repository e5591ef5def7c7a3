"""The Ray actor that hosts every ddia-ray component: a pure core or a service.

Theory of operation
-------------------
A :class:`NodeShell` is an asyncio Ray actor named ``"<group>/<node>"``. It
hosts one of two things, and treats both the same way at its boundary:

* a pure *core* built from a :class:`~ddia_ray.runtime.core.CoreSpec` and the
  records in its :class:`~ddia_ray.runtime.durable.DurableLog` (Raft members,
  replicas): the shell only moves bytes, keeps time and persists;
* a *service* built from a :class:`~ddia_ray.runtime.service.ServiceSpec`
  (storage nodes, caches, balancers): an object that owns its I/O, whose
  listed methods :meth:`call` and :meth:`call_stream` run in the shell's
  worker threads (see :mod:`ddia_ray.runtime.service`).

For a core, the shell loops:

* a timer calls ``core.tick()`` every ``tick_s`` (a core with ``clock_ticks`` set, a lease
  holder, also gets every tick the timer woke too late for: see :mod:`.ticks`);
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
A service's calls pass the same routing both ways and the same pause.

Every answer that leaves a shell is a value or an
:class:`~ddia_ray.error_record.ErrorRecord`, never text to parse. The shell
is also where observability lives (:mod:`ddia_ray.runtime.metrics`): it counts
and times every request and call, and exports them with the component's own
figures through ``ray.util.metrics``; :meth:`NodeShell.stats` returns the
same figures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import itertools
import os
import random
import time
import zlib
from collections import defaultdict
from typing import Any

from .. import codec
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError, MessageDroppedError
from .connect import NAMESPACE
from .core import CoreSpec, Envelope, Reply, load_factory
from .durable import DurableLog
from .faults import FaultModel, NetworkConfig
from .links import LinkServer, Links, endpoint_record
from .metrics import ShellMetrics
from .ticks import TickPacer
from .service import ServiceSpec

__all__ = ["NodeShell", "actor_name", "LOST_HOLD_S", "GC_THRESHOLDS"]

#: How long a shell keeps a lost request open before failing it; callers time out sooner.
LOST_HOLD_S = 30.0
#: The cyclic garbage collector's thresholds in a shell's process (CPython's are 700, 10, 10). A
#: replica keeps hundreds of thousands of small objects (memtable versions, log entries) and
#: allocates thousands per batch of writes; at the defaults the collector ran often and its older
#: generations walked that heap. Measured on an async leader-follower group (800,000 batched writes,
#: two runs each, docs/replication.md): 184,305-190,003 writes/s and 9.5-10.1 us of CPU a write at
#: the defaults, 203,608-222,197 and 8.5-9.0 us at these. Reference cycles live longer before they
#: are found (up to this many container allocations), which costs little memory.
GC_THRESHOLDS = (10_000, 20, 100)


def actor_name(group: str, node: str) -> str:
    """The Ray actor name of ``node`` in ``group``."""
    return f"{group}/{node}"


class NodeShell:
    """Hosts one core (see the module docstring). Create it through :class:`NodeGroup`."""

    def __init__(self, group: str, node_id: str, spec: bytes, root: str | None, tick_s: float,
                 seed: int, config: bytes, sync: bool = False):
        gc.set_threshold(*GC_THRESHOLDS)  # a shell owns its actor's process (see GC_THRESHOLDS)
        self.group = group
        self.node_id = node_id
        self.tick_s = tick_s
        self.root = root
        self.sync = sync
        self.spec_bytes = spec
        self.spec: CoreSpec | ServiceSpec = codec.decode(spec)
        self.model = FaultModel(codec.decode(config, NetworkConfig),
                                random.Random(seed ^ zlib.crc32(node_id.encode())))
        self.core: Any = None
        self.service: Any = None
        self.log: DurableLog | None = None
        self.recovered_records = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # A failure to build (bad options, a corrupt database, a missing module) is kept and
        # answered by start(), so the launcher raises it with its own class and fields instead
        # of Ray's "actor died" with a traceback in text.
        self.start_error: ErrorRecord | None = None
        try:
            self._build()
        except Exception as e:  # noqa: BLE001 - answered by start(), raised by the launcher with its class
            self.start_error = ErrorRecord.of(e, node_id)
        hosted = self.service if self.service is not None else self.core
        self.component = str(getattr(hosted, "component", "") or type(hosted).__name__.lower())
        self.metrics = ShellMetrics(self.component, group, node_id)
        self._peers: dict[str, Any] = {}
        # Direct links to peers (a core's shells only; see runtime.links), set up by start().
        self._link_server: LinkServer | None = None
        self._links: Links | None = None
        self._ray_node = ""
        self._ip = ""
        self._outbox: list = []  # messages produced this turn of the event loop (see _process)
        self._flush_scheduled = False
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        # Set while the node runs, clear while paused: every input waits on it.
        self._running = asyncio.Event()
        if not self.model.config.is_paused(node_id):
            self._running.set()
        self._started = False
        self._halted = False  # set by halt(): the shell is about to be killed and takes no more input
        self._ticker: asyncio.Task | None = None
        self.counters: dict[str, int] = defaultdict(int)
        self.received_from: dict[str, int] = defaultdict(int)

    def _build(self) -> None:
        spec = self.spec
        if not isinstance(spec, (CoreSpec, ServiceSpec)):
            raise InvalidArgumentError(f"a shell hosts a CoreSpec or a ServiceSpec, got {type(spec).__name__}")
        # Import the factory's module first: it registers the record types its log holds.
        factory = load_factory(spec.factory)
        if isinstance(spec, ServiceSpec):
            # A service blocks on Ray calls (a cache on its store) in the shell's worker threads,
            # never on the event loop; Ray warns about any blocking get in an async actor.
            os.environ["RAY_WARN_BLOCKING_GET_INSIDE_ASYNC"] = "0"
            self._pool = concurrent.futures.ThreadPoolExecutor(
                spec.threads, thread_name_prefix=f"ddia-ray-{self.node_id}")
            self.service = factory(self.node_id, **dict(spec.options))
            self._methods = frozenset(getattr(self.service, "methods", ()))
            self._streams = frozenset(getattr(self.service, "streams", ()))
            return
        self.log = DurableLog(self.root, f"{self.group}/{self.node_id}", sync=self.sync) if self.root else None
        recovered = tuple(self.log.read_all()) if self.log else ()
        self.recovered_records = len(recovered)
        self.core = factory(self.node_id, recovered=recovered, tick_s=self.tick_s, **dict(spec.options))
        if hasattr(self.core, "wall_source"):
            self.core.wall_source = time.time_ns  # the host's clock: the one place a core's wall time comes from

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> dict:
        """Start the tick timer (idempotent); returns :meth:`status`, or the build error as a record.

        The answer carries ``error``: the encoded :class:`ErrorRecord` of what prevented building
        the core or service (None when it runs).
        """
        if self.start_error is not None:
            return {"node": self.node_id, "error": codec.encode(self.start_error)}
        if not self._started:
            self._started = True
            loop = asyncio.get_running_loop()
            if self.core is not None:
                import ray

                self._ray_node = ray.get_runtime_context().get_node_id()
                self._ip = ray.util.get_node_ip_address()
                self._link_server = LinkServer(self.deliver, self._link_request)
                await self._link_server.start(self._ip)
                self._links = Links(self.node_id, self._ray_node, self._peer_endpoint)
                self._ticker = loop.create_task(self._tick_loop())
            # A service's stats() may wait on its locks: read it in a worker thread, not on the loop.
            run = functools.partial(loop.run_in_executor, self._pool) if self.service is not None else None
            self.metrics.start(loop, self._figures, run)
        return {**await self.status(), "error": None}

    async def _tick_loop(self) -> None:
        if getattr(self.core, "clock_ticks", False):
            return await self._paced_tick_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            await self._running.wait()
            self.core.tick()
            self._process()

    async def _paced_tick_loop(self) -> None:
        """Tick a core whose tick count must follow the clock (a lease holder; see :mod:`.ticks`):
        every tick missed while the loop was late, or the node paused, is delivered on waking."""
        loop = asyncio.get_running_loop()
        pacer = TickPacer(self.tick_s, loop.time())
        while True:
            await asyncio.sleep(pacer.delay(loop.time()))
            await self._running.wait()
            for _ in range(pacer.due(loop.time())):
                self.core.tick()
            self._process()

    async def stop(self) -> None:
        """A clean shutdown before the actor is killed: stop the timer, close the service (or the core's engine)."""
        # Await the cancelled tasks: a task still pending when the actor exits is reported as
        # "destroyed but pending" in the worker's log.
        tasks = [t for t in (self._ticker, self.metrics.stop()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ticker = None
        await self._close_links()
        close = getattr(self.service, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, close)
        release = getattr(self.core, "close", None)  # a core over a storage engine closes it
        if release is not None:
            release()
        if self.log is not None:
            self.log.close()  # a rewrite under way in the background is finished and swapped in

    async def halt(self) -> None:
        """Stop as a crash would, at once: the nemesis calls this just before ``ray.kill``.

        ``ray.kill`` returns (and Ray releases the actor's name) before the worker process has
        exited; meanwhile the old process could still answer on its direct links and append to
        its durable log, which the restarted node is reading. After ``halt`` it does neither:
        every input waits forever (as on a paused node, but no resume undoes it), the timer
        stops and the links close, and a log rewrite under way in the background gives up
        before its rename. Messages already handed to the network still arrive, as after a
        real crash.
        """
        self._halted = True
        self._running.clear()
        if self.log is not None:
            self.log.abandon_rewrite()
        if self._ticker is not None:
            self._ticker.cancel()
        await self._close_links()

    async def _close_links(self) -> None:
        """Close the links to peers and stop listening (idempotent)."""
        if self._links is not None:
            await self._links.close()
        if self._link_server is not None:
            await self._link_server.close()

    async def describe(self) -> dict:
        """What another driver needs to attach to this node's group (see ``NodeGroup.connect``)."""
        return {"group": self.group, "node": self.node_id, "spec": self.spec_bytes, "root": self.root,
                "tick_s": self.tick_s, "sync": self.sync, "config": codec.encode(self.model.config),
                "component": self.component}

    async def configure(self, config: bytes) -> int:
        """Install a new network config from the nemesis; returns its epoch."""
        cfg = codec.decode(config, NetworkConfig)
        self.model.config = cfg
        if cfg.is_paused(self.node_id) or self._halted:
            self._running.clear()
        else:
            self._running.set()
        return cfg.epoch

    async def status(self) -> dict:
        """Plain data: node, core status, counters, pause state, config epoch."""
        import ray

        return {
            "node": self.node_id,
            "component": self.component,
            "ray_node": ray.get_runtime_context().get_node_id(),
            "core": dict(self.core.status()) if self.core is not None else {},
            "paused": not self._running.is_set(),
            "epoch": self.model.config.epoch,
            "recovered_records": self.recovered_records,
            "counters": dict(self.counters),
            "log": dict(self.log.counters) if self.log is not None else {},
            "links": self.links(),
            "received_from": dict(self.received_from),
            "faults": dict(self.model.counters()),
        }

    def _figures(self) -> dict:
        """The hosted component's own figures: a service's ``stats()``, a core's ``status()``."""
        if self.service is not None:
            stats = getattr(self.service, "stats", None)
            return dict(stats()) if stats is not None else {}
        return dict(self.core.status()) if self.core is not None else {}

    async def stats(self) -> dict:
        """The figures this shell exports as metrics: its calls, their latency, the component's own.

        ``calls`` maps each method (a service's) or request type (a core's) to its count, errors
        and latency; ``component`` holds the hosted object's figures, ``counters`` the shell's.
        """
        if self.service is not None:
            figures = await asyncio.get_running_loop().run_in_executor(self._pool, self._figures)
        else:
            figures = self._figures()
        self.metrics.export_figures(figures)
        return {"component": self.component, "group": self.group, "node": self.node_id,
                "calls": self.metrics.calls(), "stats": figures,
                "counters": {**self.counters, "metric_export_errors": self.metrics.export_errors},
                "faults": dict(self.model.counters())}

    async def endpoint(self) -> dict | None:
        """Where a peer opens a direct link to this shell (see :mod:`~ddia_ray.runtime.links`); None
        for a service, which has no peers."""
        if self._link_server is None:
            return None
        return endpoint_record(self._link_server, self._ray_node, self._ip)

    def links(self) -> dict:
        """The peers with a link up, and the links' counters (both directions)."""
        if self._links is None or self._link_server is None:
            return {"up": [], "counters": {}}
        return {"up": self._links.up(), "counters": {**self._links.counters, **self._link_server.counters}}

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

    async def _link_request(self, src: str, data: bytes) -> bytes | None:
        """:meth:`request` for a client link: the encoded reply, a refusal as a failed
        :class:`Reply`, or None when the fault model lost the request or its reply."""
        try:
            return await self.request(src, data)
        except MessageDroppedError:
            return None
        except Exception as e:  # noqa: BLE001 - over Ray this would be the call's error: send it as a record
            return codec.encode(Reply(0, None, False, ErrorRecord.of(e, self.node_id)))

    async def _requests(self, src: str, payloads: tuple) -> tuple:
        if self.core is None:
            return await self._service_requests(src, payloads)
        self.counters["requests"] += len(payloads)
        delays = await self._arrive(src)
        started = time.perf_counter()  # as for service calls: network faults are not the node's latency
        futures = [self._submit(p) for p in payloads]
        for _ in delays[1:]:  # a duplicated packet is processed again; its replies go nowhere
            for p in payloads:
                self._submit(p)
        self._process()  # one ready() round for the whole batch: one log append, one send per peer
        if all(f.done() for f in futures):  # the usual case: the core answered at once
            replies = tuple(f.result() for f in futures)
        else:
            replies = tuple(await asyncio.gather(*futures))
        self.metrics.observe(type(payloads[0]).__name__ if payloads else "empty", time.perf_counter() - started,
                             len(payloads), sum(1 for r in replies if not r.ok))
        await self._depart(src)
        return replies

    async def _service_requests(self, src: str, payloads: tuple) -> tuple:
        """Requests to a service that takes them (``handle_requests(payloads) -> replies``, in a worker
        thread): what lets a service such as a partitioned store's router stand behind a balancer,
        which speaks requests. The same fault model and pause as a core's requests."""
        handler = getattr(self.service, "handle_requests", None)
        if handler is None:
            raise InvalidArgumentError(f"{self.group}/{self.node_id} hosts a service: use call()")
        self.counters["requests"] += len(payloads)
        delays = await self._arrive(src)
        loop = asyncio.get_running_loop()
        for _ in delays[1:]:
            loop.run_in_executor(self._pool, handler, payloads)
        started = time.perf_counter()
        replies = tuple(await loop.run_in_executor(self._pool, handler, payloads))
        self.metrics.observe(type(payloads[0]).__name__ if payloads else "empty", time.perf_counter() - started,
                             len(payloads), sum(1 for r in replies if not r.ok))
        await self._depart(src)
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

    # --- service calls ---------------------------------------------------------

    def _refusal(self, exc: BaseException) -> tuple:
        return None, codec.encode(ErrorRecord.of(exc, self.node_id))

    def _offered(self, method: str, names: frozenset) -> bool:
        return self.service is not None and isinstance(method, str) and method in names

    async def _arrive(self, src: str) -> tuple:
        """The way in of a request or call: the fault model ``src -> node``, then the pause; the delays."""
        delays = self.model.route(src, self.node_id)
        if not delays:
            await self._lost("request", src)
        if delays[0]:
            await asyncio.sleep(delays[0])
        await self._running.wait()
        return delays

    async def _depart(self, src: str) -> None:
        """The way out of a reply or answer: the fault model ``node -> src``."""
        back = self.model.route(self.node_id, src)
        if not back:
            await self._lost("reply", src)
        if back[0]:
            await asyncio.sleep(back[0])

    async def call(self, src: str, method: str, args: tuple) -> tuple:
        """Run ``method(*args)`` of the hosted service for ``src``; answers ``(value, error)``.

        ``error`` is an encoded :class:`ErrorRecord` (the refusal, of its own class) or None.
        A lost request or reply is never answered, as over a real network; a duplicated request
        runs twice (its second answer goes nowhere).
        """
        self.counters["calls"] += 1
        if not self._offered(method, self._methods):
            return self._refusal(InvalidArgumentError(
                f"{self.group}/{self.node_id} offers no method {method!r}"))
        delays = await self._arrive(src)
        fn = functools.partial(getattr(self.service, method), *args)
        loop = asyncio.get_running_loop()
        for _ in delays[1:]:
            loop.run_in_executor(self._pool, fn)
        started = time.perf_counter()
        try:
            answer = (await loop.run_in_executor(self._pool, fn), None)
        except Exception as e:  # noqa: BLE001 - the service's refusal travels to the caller as a record
            answer = self._refusal(e)
        self.metrics.observe(method, time.perf_counter() - started, 1, answer[1] is not None)
        await self._depart(src)
        return answer

    async def call_stream(self, src: str, method: str, args: tuple):
        """Stream what the generator ``method(*args)`` yields, each item as ``(item, None)``.

        Call it with ``num_returns="streaming"``. The generator advances in a worker thread, one
        item at a time, so the consumer reads one item while the next is made. A failure ends
        the stream with ``(None, error)``; a pause parks the stream between items.
        """
        self.counters["calls"] += 1
        if not self._offered(method, self._streams):
            yield self._refusal(InvalidArgumentError(
                f"{self.group}/{self.node_id} offers no stream {method!r}"))
            return
        await self._arrive(src)
        loop = asyncio.get_running_loop()
        done = object()
        started = time.perf_counter()
        failed = False
        try:
            items = await loop.run_in_executor(self._pool, functools.partial(getattr(self.service, method), *args))
            while True:
                item = await loop.run_in_executor(self._pool, next, items, done)
                if item is done:
                    break
                await self._running.wait()
                await self._depart(src)
                yield item, None
        except Exception as e:  # noqa: BLE001 - the refusal ends the stream as a record
            failed = True
            yield self._refusal(e)
        finally:
            self.metrics.observe(method, time.perf_counter() - started, 1, failed)

    # --- outputs ------------------------------------------------------------

    def _process(self) -> None:
        ready = self.core.ready()
        if not ready:
            return
        if ready.persist and self.log is not None:
            self.log.append(ready.persist)  # durable before any message that depends on it
            self.counters["persisted"] += len(ready.persist)
        # Replies go first: they need only what was just persisted. Messages go to the outbox, sent
        # once this turn of the event loop is over: an actor call costs ~0.6 ms here, which a client
        # waiting for its reply would otherwise pay for every message, and the messages of every
        # request handled in this turn leave together, one call per peer (the persist-before-send
        # rule holds: what they depend on was appended above).
        for reply in ready.replies:
            fut = self._pending.pop(reply.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        if ready.messages:
            self._outbox.extend(ready.messages)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_outbox)
        self.core.advance(ready)

    def _flush_outbox(self) -> None:
        """Send everything in the outbox, one packet per peer, in the order it was produced."""
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        by_dst: dict[str, list] = defaultdict(list)
        for env in outbox:
            by_dst[env.dst].append(env)
        for dst, envs in by_dst.items():
            self._send(dst, tuple(envs))

    def _peer(self, dst: str) -> Any:
        """``dst``'s actor handle (looked up once, again after it died); None if there is no such actor."""
        import ray

        handle = self._peers.get(dst)
        if handle is None:
            try:
                handle = ray.get_actor(actor_name(self.group, dst), namespace=NAMESPACE)
            except ValueError:
                return None
            self._peers[dst] = handle
        return handle

    async def _peer_endpoint(self, dst: str) -> dict | None:
        handle = self._peer(dst)
        if handle is None:
            raise ConnectionError(f"no actor {actor_name(self.group, dst)!r}")
        return await handle.endpoint.remote()

    def _send(self, dst: str, envelopes: tuple) -> None:
        data = codec.encode(envelopes)
        if self._links is not None and self._links.send(dst, data):
            self.counters["sent"] += len(envelopes)
            self.counters["sent_by_link"] += len(envelopes)
            return
        handle = self._peer(dst)
        if handle is None:
            self.counters["unreachable"] += len(envelopes)  # peer dead or not started
            return
        self.counters["sent"] += len(envelopes)
        ref = handle.deliver.remote(self.node_id, data)

        def _done(fut, dst=dst, handle=handle):
            if fut.exception() is not None and self._peers.get(dst) is handle:
                # The peer died: look it up again next time (it may have been restarted), and
                # open a new link to whatever answers to its name then.
                self._peers.pop(dst, None)
                if self._links is not None:
                    self._links.forget(dst)

        ref.future().add_done_callback(_done)

