"""The event bus's actor: a runtime service that drives a :class:`~.bus_core.BusCore` and calls handlers.

Theory of operation
-------------------
:class:`BusService` is hosted by the runtime's one shell
(:mod:`ddia_ray.runtime.shell`), like a cache or a storage node: its listed
methods run in the shell's worker threads, pass the nemesis' fault model,
and answer refusals as :class:`~ddia_ray.error_record.ErrorRecord` s. Those
methods only change the core, under one lock, and ring a doorbell. All the
calling of handlers happens on the service's own asyncio loop, in a thread
of its own, where ``_pump`` loops:

1. take ``core.start_due(now)`` and start one task per delivery;
2. sleep until the doorbell rings (a publish, an outcome, a subscription)
   or the earliest retry is due (``core.next_due_s()``).

A delivery task calls the handler once, waits at most the subscription's
``timeout_s``, and reports the outcome to the core (which retries or
dead-letters). The publisher's call returned long before: it only waited
for the lock and the core's bookkeeping, never for a handler.

Handlers
--------
* An **actor** handler is ``actor.<method>.remote(event)``. Ray keeps one
  actor's calls in submission order, and the core sends at most
  ``concurrency`` at once.
* A **function** handler runs as a Ray task (``max_retries=0``: the bus
  retries, per its policy, and counts it), not in this actor's threads. A
  task can be cancelled when it overruns its timeout, it cannot crash, hang
  or starve the bus (a function stuck in a thread of the bus could never be
  stopped, and would hold the GIL the pump needs), and it gets the
  resources its ``ray_options`` ask for, anywhere on the cluster. The
  price is a task launch per delivery (about a millisecond): raise
  ``batch_max`` to spread it over several events. The function arrives as
  its pickled code (the client pickles it with Ray's cloudpickle, as Ray
  ships any remote function); the bus never unpickles it, so it needs none
  of the application's modules: :func:`_run_function` loads it in the task.

An event crosses to its handler still encoded, and is decoded in the
handler's process: by Ray, from a :class:`_Wire` rebuilt as
``codec.decode(bytes)``, for an actor; by :func:`_run_function`, after it
loaded the function (whose imports register the event classes), for a
function. The bus never decodes (it needs no application class) and no
event is ever pickled. A handler process that does not know the event's
class (its module is not imported there) fails the delivery with
:class:`~ddia_ray.errors.UnknownTypeError`, which is dead-lettered.

A failed call becomes an :class:`ErrorRecord`: a timeout is
:class:`~ddia_ray.errors.CallTimeoutError` (the call is cancelled
best-effort and may still have run: delivery is at-least-once), a dead or
unreachable actor :class:`~ddia_ray.errors.ActorUnavailableError`, and an
exception the handler raised keeps its class (an application's own class
travels as a ``RemoteError`` naming it, which ``no_retry_on`` matches).

Lock order: one lock, ``_cv``, guards the core and the handler table. It
is never held across a Ray call, an ``await`` or a wait for the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from typing import Any

from .. import codec
from .._validate import positive
from ..error_record import ErrorRecord
from ..errors import BusClosedError, CallTimeoutError, InvalidArgumentError, UnknownSubscriptionError
from ..runtime.calls import await_result
from ..runtime.client_loop import run_pump
from .bus_core import BusCore, Delivery
from .bus_records import PublishBatch, SubscriptionSpec

__all__ = ["BusService"]

#: How long ``close`` waits for the loop thread to cancel its deliveries and stop.
_STOP_WAIT_S = 5.0


class _Wire:
    """An encoded event on its way to a handler: Ray rebuilds it there as ``codec.decode(data)``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return (codec.decode, (self.data,))


def _run_function(code: bytes, data: tuple, batched: bool) -> Any:
    """The body of a function handler's Ray task: load the function, then decode and hand it the events.

    The function is loaded first, in the task's worker: its imports register the event classes
    there before the events are decoded.
    """
    fn = _load_function(code)
    events = tuple(codec.decode(d) for d in data)
    return fn(events if batched else events[0])


@functools.lru_cache(maxsize=64)
def _load_function(code: bytes) -> Any:
    """A handler function from its pickled code (cached per worker process: tasks repeat)."""
    import ray

    return ray.cloudpickle.loads(code)


@functools.lru_cache(maxsize=1)
def _function_task() -> Any:
    """:func:`_run_function` as a Ray remote function, made once per process."""
    import ray

    return ray.remote(_run_function)


class _Handler:
    """How to call one subscription's handler: ``submit(encoded events)`` returns an ``ObjectRef``."""

    def __init__(self, spec: SubscriptionSpec, target: Any):
        from ray.actor import ActorHandle

        self.description = spec.handler
        self.batched = spec.batch_max > 1
        self._code = b""
        if spec.kind == "actor":
            if not isinstance(target, ActorHandle):
                raise InvalidArgumentError(f"an actor handler is a Ray actor handle, got {type(target).__name__}")
            self._call = getattr(target, spec.method)
            return
        if not isinstance(target, bytes):
            raise InvalidArgumentError(f"a function handler arrives as its pickled code, got {type(target).__name__}")
        self._code = target
        # The bus retries, counts and dead-letters: Ray's own task retries would hide attempts from it.
        self._call = _function_task().options(**{**spec.ray_options, "max_retries": 0, "retry_exceptions": False})

    def submit(self, data: tuple) -> Any:
        if self._code:
            return self._call.remote(self._code, data, self.batched)
        arg = tuple(_Wire(d) for d in data) if self.batched else _Wire(data[0])
        return self._call.remote(arg)


def _cause(exc: BaseException) -> BaseException:
    """What the handler itself raised, when Ray wrapped it in a ``RayTaskError``; or what failed to
    decode its argument, which Ray wraps in a ``RaySystemError`` (an event class unknown there)."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    if isinstance(exc, ray.exceptions.RaySystemError) and isinstance(exc.client_exc, BaseException):
        exc = exc.client_exc
    return exc


class BusService:
    """The fire-and-forget event bus as a runtime service (see the module docstring)."""

    component = "event_bus"
    methods = ("ping", "publish", "subscribe", "unsubscribe", "subscriptions", "dead_letters",
               "replay_dead_letters", "discard_dead_letters", "bus_stats", "drain", "stats")

    def __init__(self, node_id: str, *, seed: int = 0, dead_letters_max: int = 10_000,
                 dedupe_batches: int = 1024):
        self.node_id = node_id
        self.core = BusCore(seed=seed, dead_letters_max=dead_letters_max, dedupe_batches=dedupe_batches)
        self._cv = threading.Condition()
        self._handlers: dict[str, _Handler] = {}
        self._closed = False
        self._faults = 0
        self._last_fault = ""
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"ddia-ray-bus-{node_id}",
                                        daemon=True)
        self._thread.start()
        started.wait()

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    # --- the loop -----------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        run_pump(self._loop, self._pump, started)  # cancelled deliveries finish cancelling there

    def _ring(self) -> None:
        """Wake the pump from any thread (a no-op once the loop is closed)."""
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass  # the loop is closed: the bus is shutting down and starts nothing more

    def _fault(self, exc: BaseException) -> None:
        """Keep a failure of the bus's own loop (a bug) where ``stats()`` shows it: it has no caller."""
        with self._cv:
            self._faults += 1
            self._last_fault = f"{type(exc).__name__}: {exc}"[:500]

    async def _pump(self) -> None:
        while True:
            self._wake.clear()  # before reading the core, so a ring from now on is never missed
            try:
                with self._cv:
                    deliveries = self.core.start_due(self._now())
                    due_s = self.core.next_due_s()
            except Exception as e:  # noqa: BLE001 - a bug must not stop every delivery: counted in stats()
                self._fault(e)
                await asyncio.sleep(0.1)
                continue
            for d in deliveries:
                task = self._loop.create_task(self._deliver(d))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout_s = None if due_s is None else max(0.0, due_s - self._now())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass  # a retry is due

    async def _deliver(self, d: Delivery) -> None:
        with self._cv:
            handler = self._handlers.get(d.subscription)
        where = handler.description if handler is not None else d.subscription
        error: ErrorRecord | None = None
        try:
            if handler is None:
                raise UnknownSubscriptionError(f"subscription {d.subscription!r} has no handler here", d.subscription)
            await await_result(handler.submit(d.data), d.timeout_s, where)
        except Exception as e:  # noqa: BLE001 - a handler's failure is data: retried, then dead-lettered with it
            error = ErrorRecord.of(_cause(e), where)
        try:
            with self._cv:
                if error is None:
                    self.core.succeeded(d.id, self._now())
                else:
                    self.core.failed(d.id, error, self._now())
                if not self.core.has_subscription(d.subscription):
                    self._handlers.pop(d.subscription, None)
                self._cv.notify_all()  # drain() waits for outcomes
        except Exception as e:  # noqa: BLE001 - a bug must not kill the loop silently: counted in stats()
            self._fault(e)
        self._wake.set()

    # --- the actor's methods ------------------------------------------------------------

    def ping(self) -> str:
        """Liveness probe: the component's kind."""
        return self.component

    def publish(self, batch: bytes) -> tuple[int, int]:
        """Accept an encoded :class:`PublishBatch`; returns ``(first_seq, count)`` (see the core)."""
        decoded = codec.decode(batch, PublishBatch)
        with self._cv:
            accepted = self.core.publish(decoded, self._now())
        self._ring()
        return accepted

    def subscribe(self, spec: bytes, handler: Any) -> bool:
        """Add the encoded :class:`SubscriptionSpec` with its handler (a Ray actor handle, or a function's
        pickled code); False if this very subscription exists already (a retried call)."""
        decoded = codec.decode(spec, SubscriptionSpec)
        built = _Handler(decoded, handler)
        with self._cv:
            new = self.core.subscribe(decoded)
            if new:
                self._handlers[decoded.id] = built
        return new

    def unsubscribe(self, subscription: str) -> int:
        """End a subscription (id or name); returns the events it dead-lettered (see the core)."""
        with self._cv:
            moved = self.core.unsubscribe(subscription, self._now())
            for sub_id in [s for s in self._handlers if not self.core.has_subscription(s)]:
                del self._handlers[sub_id]
            self._cv.notify_all()
        return moved

    def subscriptions(self) -> bytes:
        """The encoded tuple of every live :class:`SubscriptionSpec`."""
        with self._cv:
            return codec.encode(self.core.subscriptions())

    def dead_letters(self, subscription: str | None = None, after: int = 0, limit: int = 1000) -> bytes:
        """The encoded tuple of dead letters (see :meth:`BusCore.dead_letters`), stamped in Unix time."""
        with self._cv:
            letters = self.core.dead_letters(subscription=subscription, after=after, limit=limit)
        # The core keeps monotonic time (retries must not jump with the wall clock); people read dates.
        offset_s = time.time() - self._now()
        return codec.encode(tuple(dataclasses.replace(d, at_s=d.at_s + offset_s) for d in letters))

    def replay_dead_letters(self, ids: tuple | None = None, subscription: str | None = None) -> int:
        """Re-enqueue dead letters (see :meth:`BusCore.replay_dead_letters`); returns how many."""
        with self._cv:
            replayed = self.core.replay_dead_letters(ids, subscription=subscription, now_s=self._now())
        self._ring()
        return replayed

    def discard_dead_letters(self, ids: tuple | None = None, subscription: str | None = None) -> int:
        """Drop dead letters for good; returns how many."""
        with self._cv:
            return self.core.discard_dead_letters(ids, subscription=subscription)

    def bus_stats(self) -> bytes:
        """The encoded :class:`~.bus_records.BusStats`."""
        with self._cv:
            return codec.encode(self.core.stats())

    def drain(self, timeout_s: float = 30.0) -> int:
        """Wait until no event is queued or in a delivery; returns 0. CallTimeoutError if some still are."""
        positive("timeout_s", timeout_s)
        deadline_s = self._now() + timeout_s
        with self._cv:
            while self.core.pending():
                if self._closed:
                    raise BusClosedError(f"drain: the bus is shutting down with {self.core.pending()} events "
                                         "still queued or in delivery; they are lost with it")
                remaining_s = deadline_s - self._now()
                if remaining_s <= 0:
                    raise CallTimeoutError(
                        f"drain: {self.core.pending()} events still queued or in delivery after {timeout_s}s "
                        "(slow or failing handlers); they stay queued and keep being delivered")
                self._cv.wait(remaining_s)
        return 0

    def stats(self) -> dict:
        """The bus's figures as plain data (the shell exports the numbers as metrics)."""
        with self._cv:
            s = self.core.stats()
            faults, last_fault = self._faults, self._last_fault
        figures: dict[str, Any] = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                                   if f.name != "subscriptions"}
        figures["subscriptions"] = len(s.subscriptions)
        figures["loop_faults"] = faults  # failures of the bus's own loop (bugs), with the last one
        figures["last_loop_fault"] = last_fault
        for counter in ("matched", "delivered", "dead_lettered", "dropped", "retried", "queued", "in_flight"):
            figures[counter] = s.total(counter)
        figures["by_subscription"] = {x.name: {"queued": x.queued, "in_flight": x.in_flight,
                                               "delivered": x.delivered, "dead_lettered": x.dead_lettered,
                                               "dropped": x.dropped, "retried": x.retried} for x in s.subscriptions}
        return figures

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse further requests, stop calling handlers (running calls are abandoned) and stop the loop.

        What was still queued is lost with the actor, as fire-and-forget allows; call ``drain``
        first to deliver it.
        """
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self.core.close()
            self._cv.notify_all()
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:
            return  # the loop is closed already
        self._thread.join(_STOP_WAIT_S if timeout_s is None else max(0.1, float(timeout_s)))
