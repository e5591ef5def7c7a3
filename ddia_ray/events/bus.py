"""The event bus users launch: publish/subscribe by event type, and the client that batches publishes.

Theory of operation
-------------------
``EventBus.launch(name, mode="fire-and-forget")`` starts one runtime shell
hosting a :class:`~ddia_ray.events.bus_service.BusService` and returns the
handle of the one handle convention
(:class:`~ddia_ray.runtime.component.Component`): ``client()``, ``stats()``,
``nemesis``, ``shutdown()``, and ``EventBus.connect(name)`` from any driver.
``mode="durable"`` (topics, partitions, offsets and consumer groups on the
event store) is the other mode the handle is shaped for; until it exists it
is refused with a :class:`~ddia_ray.errors.ConfigError`.

:class:`EventBusClient` is what code calls. An event is any codec record and
its type is the record's tag; the client encodes each event in the caller's
thread (a bad event fails its own call) and a background thread sends what
is waiting as one ``publish`` call, so one publisher thread or many cross
the actor boundary in batches: while one batch is on its way, the next one
fills. ``publish`` returns once the bus has *accepted* the event (queued it
for every matching subscription), never waiting for a handler. Each batch
carries an id the bus remembers, so the client retries a publish whose
answer was lost (timeout, dropped message, bus restarting) without the bus
accepting it twice. At most ``pending_max`` events wait in the client; a
publisher finding it full waits up to ``timeout_s``, then gets
:class:`~ddia_ray.errors.BackpressureError` (nothing is dropped silently).
One client keeps its publishes in order; several clients are not ordered.

Delivery guarantees of fire-and-forget mode (docs/events-bus.md has the rest):
at-least-once per handler while the bus runs (an event is delivered, or
dead-lettered, or counted as dropped); at-most-once across a crash of the
bus (its queues and subscriptions are in memory); each handler's events in
publish order when its ``concurrency`` is 1; no order between handlers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
import uuid
from typing import Any, Iterable, Mapping

from .. import codec
from .._validate import at_least, integer, positive
from ..errors import (ActorUnavailableError, BackpressureError, CallTimeoutError, CodecError, ComponentNotFoundError,
                      ConfigError, InvalidArgumentError, MessageDroppedError)
from ..resilience import Retrier, RetryPolicy
from ..runtime.component import ServiceComponent
from ..runtime.service import ServiceRef
from .bus_core import BusCore
from .bus_handlers import named_handler
from .bus_records import BusStats, DeadLetter, PublishBatch, SubscriptionSpec, event_type, retry_data

__all__ = ["EventBus", "EventBusClient", "MODES", "DEFAULT_PUBLISH_RETRY"]

#: The bus's delivery modes; only fire-and-forget runs for now.
MODES = ("fire-and-forget", "durable")
_FACTORY = "ddia_ray.events.bus_service:BusService"
#: A function handler travels pickled with each of its deliveries: this bounds what it may capture.
_CODE_MAX_BYTES = 1 << 20
#: A publish is retried on what says its outcome is unknown; the batch id makes the retry safe.
DEFAULT_PUBLISH_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=1.0,
                                    retry_on=(CallTimeoutError, MessageDroppedError, ActorUnavailableError))


class EventBus(ServiceComponent):
    """A running event bus; start it with :meth:`launch`, find it from another driver with ``connect``."""

    factories = (_FACTORY,)
    #: The mode this bus runs in (see :data:`MODES`).
    mode = "fire-and-forget"

    @classmethod
    def launch(cls, name: str, *, mode: str = "fire-and-forget", seed: int = 0, dead_letters_max: int = 10_000,
               dedupe_batches: int = 1024, threads: int = 8, detached: bool = False, config=None,
               actor_options: Mapping[str, Any] | None = None, **durable_options: Any) -> Any:
        """Start the bus ``name``.

        ``seed`` seeds the retry jitter; ``dead_letters_max`` bounds the dead-letter list;
        ``dedupe_batches`` is how many recent publish batches are recognised when retried;
        ``threads`` calls run at once. Bad settings raise here, before any actor starts.

        ``mode="durable"`` returns a :class:`~.bus_durable.DurableEventBus` instead: topics on the
        event store, with ``durable_options`` (``replicas``, ``root``, ``engine``, ``partitions``,
        and :meth:`~.store.EventStore.launch`'s options) in place of the settings above.
        """
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "durable":
            from .bus_durable import DurableEventBus

            return DurableEventBus.launch(name, detached=detached, config=config, **durable_options)
        if durable_options:
            raise ConfigError(f"{sorted(durable_options)} are durable-mode settings; this bus is fire-and-forget")
        BusCore(seed=seed, dead_letters_max=dead_letters_max, dedupe_batches=dedupe_batches)
        at_least("threads", integer("threads", threads), 2)  # drain() holds one while others publish
        options = {"seed": seed, "dead_letters_max": dead_letters_max, "dedupe_batches": dedupe_batches}
        return cls._launch_service(name, options, threads, detached=detached, config=config,
                                   actor_options=actor_options)

    @classmethod
    def connect(cls, name: str, *, timeout_s: float = 30.0) -> Any:
        """The running bus ``name``, in whichever mode it was launched."""
        try:
            return super().connect(name, timeout_s=timeout_s)
        except ComponentNotFoundError:
            from .bus_durable import DurableEventBus

            return DurableEventBus.connect(name, timeout_s=timeout_s)

    def client(self, *, src: str = "client", **options: Any) -> "EventBusClient":
        """A new client (see :class:`EventBusClient` for the options), calling as ``src``."""
        return EventBusClient(self._ref(src), **options)


def _describe(handler: Any, method: str) -> tuple[str, str]:
    """``(kind, description)`` of a handler: a Ray actor handle, a Ray remote function or a function."""
    from ray.actor import ActorHandle
    from ray.remote_function import RemoteFunction

    if isinstance(handler, ActorHandle):
        if not isinstance(method, str) or not method:
            raise InvalidArgumentError(f"an actor handler needs the method to call, got {method!r}")
        try:
            getattr(handler, method)
        except AttributeError:
            raise InvalidArgumentError(f"the handler actor has no method {method!r}") from None
        # Ray keeps the class name only privately; a missing one just makes a plainer description.
        cls = getattr(getattr(handler, "_ray_actor_creation_function_descriptor", None), "class_name", "actor")
        return "actor", f"{cls}.{method}"
    if isinstance(handler, RemoteFunction):
        return "function", str(getattr(handler, "_function_name", "") or "remote function")
    if callable(handler):
        return "function", f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', 'function')}"
    raise InvalidArgumentError(f"a handler is a Ray actor handle (with method=...), a Ray remote function or a "
                               f"function, got {type(handler).__name__}")


def _function_code(handler: Any, ray_options: dict) -> tuple[bytes, dict]:
    """A function handler as ``(code, task options)``: the function pickled by Ray's cloudpickle.

    Code can only travel as pickled code (Ray ships every remote function so). The bus never
    unpickles it, so it needs none of the function's imports; only the task that runs it does.
    A Ray remote function gives its function and its options (``ray_options`` win).
    """
    import ray
    from ray.remote_function import RemoteFunction

    fn, options = handler, dict(ray_options)
    if isinstance(handler, RemoteFunction):
        # Ray keeps these only privately; without them the handler cannot be unwrapped.
        fn = getattr(handler, "_function", None)
        options = {**dict(getattr(handler, "_default_options", None) or {}), **options}
        if not callable(fn):
            raise InvalidArgumentError("this Ray remote function does not expose its function: pass the plain "
                                       "function, with its options as ray_options")
    try:
        ray.remote(fn).options(**options)  # Ray's own check of the options, here rather than at delivery
    except (ValueError, TypeError) as e:
        raise ConfigError(f"ray_options: {e}") from e
    code = ray.cloudpickle.dumps(fn)
    if len(code) > _CODE_MAX_BYTES:
        raise ConfigError(f"the handler function pickles to {len(code)} bytes, shipped with every delivery; "
                          f"capture less than {_CODE_MAX_BYTES} bytes in it, or use an actor handler")
    return code, options


class EventBusClient:
    """A client of an event bus (``bus.client()``); thread-safe. See the module docstring.

    ``timeout_s`` bounds each call to the bus (and a publisher's wait for room); ``max_batch``
    events travel per publish call, after lingering ``linger_s`` for more (0: send at once,
    batching only while a call is on its way); ``publish_retry`` (None: no retry) governs
    retries of a publish whose outcome is unknown.
    """

    def __init__(self, target: ServiceRef, *, timeout_s: float = 30.0, max_batch: int = 1000,
                 linger_s: float = 0.0, pending_max: int = 100_000,
                 publish_retry: RetryPolicy | None = DEFAULT_PUBLISH_RETRY):
        if not isinstance(target, ServiceRef):
            raise InvalidArgumentError(f"an EventBusClient calls a ServiceRef, got {type(target).__name__}")
        self.target = target
        self.timeout_s = float(positive("timeout_s", timeout_s))
        self.max_batch = at_least("max_batch", integer("max_batch", max_batch), 1)
        self.linger_s = float(at_least("linger_s", linger_s, 0.0))
        self.pending_max = at_least("pending_max", integer("pending_max", pending_max), self.max_batch)
        if publish_retry is not None and not isinstance(publish_retry, RetryPolicy):
            raise InvalidArgumentError("publish_retry must be a RetryPolicy or None")
        self._retrier = Retrier(publish_retry) if publish_retry is not None else None
        attempts = publish_retry.max_attempts if publish_retry is not None else 1
        # How long a publisher waits for its future: every attempt's timeout and backoff, plus slack.
        self._result_wait_s = attempts * (self.timeout_s + (publish_retry.max_delay_s if publish_retry else 0)) + 5
        self._client_id = uuid.uuid4().hex[:16]
        self._batch_numbers = itertools.count(1)
        self._cv = threading.Condition()
        self._pending: collections.deque[tuple[str, bytes, concurrent.futures.Future]] = collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._sender, name="ddia-ray-bus-client", daemon=True)
        self._thread.start()

    def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        return self.target.call(method, *args, timeout_s=self.timeout_s if timeout_s is None else timeout_s)

    # --- publishing -----------------------------------------------------------------

    def publish_future(self, event: Any) -> concurrent.futures.Future:
        """A future of ``event``'s sequence number in the bus, completed once the bus accepted it."""
        return self._enqueue([(event_type(event), codec.encode(event))])[0]

    def publish(self, event: Any) -> int:
        """Publish one event; returns its sequence number once the bus accepted it (handlers run later)."""
        return self.publish_future(event).result(self._result_wait_s)

    def publish_many(self, events: Iterable[Any]) -> tuple[int, ...]:
        """Publish ``events`` in order; returns their sequence numbers once the bus accepted them all.

        Every event is encoded before any is sent, so a bad one fails the call with nothing published.
        """
        encoded = [(event_type(e), codec.encode(e)) for e in events]
        futures: list[concurrent.futures.Future] = []
        for i in range(0, len(encoded), self.max_batch):
            futures += self._enqueue(encoded[i:i + self.max_batch])
        return tuple(f.result(self._result_wait_s) for f in futures)

    def _enqueue(self, items: list[tuple[str, bytes]]) -> list[concurrent.futures.Future]:
        futures: list[concurrent.futures.Future] = [concurrent.futures.Future() for _ in items]
        deadline_s = time.monotonic() + self.timeout_s
        with self._cv:
            self._check_open()
            while len(self._pending) + len(items) > self.pending_max:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    raise BackpressureError(
                        f"{len(self._pending)} events have waited to be sent for {self.timeout_s}s (the bus is slow "
                        "or unreachable); nothing of this call was published, retry later")
                self._cv.wait(remaining_s)
                self._check_open()
            self._pending.extend((t, d, f) for (t, d), f in zip(items, futures))
            self._cv.notify_all()
        return futures

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this EventBusClient is closed")

    def _take(self) -> list | None:
        """The next batch to send (waiting for one, and lingering for more); None once closed and empty."""
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if not self._pending:
                return None
            deadline_s = time.monotonic() + self.linger_s
            while len(self._pending) < self.max_batch and not self._closed:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    break
                self._cv.wait(remaining_s)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            self._cv.notify_all()  # room for publishers waiting on a full client
            return batch

    def _sender(self) -> None:
        while (batch := self._take()) is not None:
            request = PublishBatch(f"{self._client_id}:{next(self._batch_numbers)}",
                                   tuple(t for t, _, _ in batch), tuple(d for _, d, _ in batch))
            encoded = codec.encode(request)
            try:
                first, _ = (self._retrier.call(self._call, "publish", encoded) if self._retrier is not None
                            else self._call("publish", encoded))
            except BaseException as e:  # noqa: BLE001 - every publisher of the batch learns the failure
                for _, _, f in batch:
                    f.set_exception(e)
                continue
            for i, (_, _, f) in enumerate(batch):
                f.set_result(first + i)

    # --- subscriptions --------------------------------------------------------------

    def subscribe(self, event_type_pattern: Any, handler: Any, *, method: str = "handle", name: str | None = None,
                  concurrency: int = 1, queue_max: int = 10_000, overflow: str = "drop_oldest", batch_max: int = 1,
                  timeout_s: float = 30.0, retry: RetryPolicy | None = None, no_retry_on: Iterable[str] = (),
                  ray_options: Mapping[str, Any] | None = None) -> str:
        """Deliver every event whose type matches ``event_type_pattern`` to ``handler``; returns the id.

        The pattern is a type (``"user.created"``, or a record class), or a prefix ending in ``*``
        (``"user.*"``, ``"*"``). ``handler`` is a Ray actor handle (its ``method`` is called with the
        event), a Ray remote function or a plain function (run as a Ray task with ``ray_options``),
        or the name of a function registered with :func:`~ddia_ray.events.bus_handlers.register_handler`.
        With ``batch_max > 1`` it gets a tuple of up to that many events. The other knobs are
        :class:`SubscriptionSpec`'s; ``no_retry_on`` names exception classes dead-lettered at once.
        """
        pattern = event_type_pattern if isinstance(event_type_pattern, str) else event_type(event_type_pattern)
        if isinstance(handler, str):
            handler = named_handler(handler)
        kind, description = _describe(handler, method)
        options = dict(ray_options or {})
        target = handler
        if kind == "actor" and options:
            raise ConfigError("ray_options are for function handlers; an actor's options are its own")
        if kind == "function":
            target, options = _function_code(handler, options)
        sub_id = uuid.uuid4().hex
        spec = SubscriptionSpec(sub_id, pattern, name if name is not None else f"{description}#{sub_id[:8]}",
                                description, kind, method if kind == "actor" else "", concurrency, queue_max,
                                overflow, batch_max, timeout_s, retry_data(retry), tuple(no_retry_on), options)
        try:
            encoded = codec.encode(spec)
        except CodecError as e:
            raise InvalidArgumentError(f"ray_options must be plain data (str, numbers, dicts): {e}") from e
        # Idempotent by id: a retry after a lost answer finds the subscription made and changes nothing.
        call = self._retrier.call if self._retrier is not None else (lambda fn, *a: fn(*a))
        call(self._call, "subscribe", encoded, target)
        return sub_id

    def unsubscribe(self, subscription: str) -> int:
        """End a subscription (id or name); returns how many of its events were dead-lettered as
        ``"unsubscribed"``. Raises :class:`~ddia_ray.errors.UnknownSubscriptionError` if none runs."""
        return self._call("unsubscribe", subscription)

    def subscriptions(self) -> tuple[SubscriptionSpec, ...]:
        """Every live subscription of the bus."""
        return codec.decode(self._call("subscriptions"), tuple)

    # --- dead letters and figures ---------------------------------------------------

    def dead_letters(self, *, subscription: str | None = None, after: int = 0,
                     limit: int = 1000) -> tuple[DeadLetter, ...]:
        """Up to ``limit`` dead letters with an id above ``after``, oldest first (of one subscription,
        by id or name, when given); page with ``after=letters[-1].id``."""
        return codec.decode(self._call("dead_letters", subscription, after, limit), tuple)

    def replay_dead_letters(self, ids: Iterable[int] | None = None, *, subscription: str | None = None) -> int:
        """Put dead letters (all, or ``ids``; of ``subscription`` when given) back in their queues;
        returns how many. A letter whose subscription ended stays in the list."""
        return self._call("replay_dead_letters", None if ids is None else tuple(ids), subscription)

    def discard_dead_letters(self, ids: Iterable[int] | None = None, *, subscription: str | None = None) -> int:
        """Remove dead letters for good; returns how many."""
        return self._call("discard_dead_letters", None if ids is None else tuple(ids), subscription)

    def stats(self) -> BusStats:
        """The bus's counters and every subscription's (immutable)."""
        return codec.decode(self._call("bus_stats"), BusStats)

    def drain(self, timeout_s: float | None = None) -> None:
        """Wait until the bus has no event queued or in delivery (each delivered, dead-lettered or
        dropped). Raises :class:`~ddia_ray.errors.CallTimeoutError` if some still are after ``timeout_s``."""
        wait_s = self.timeout_s if timeout_s is None else float(positive("timeout_s", timeout_s))
        self._call("drain", wait_s, timeout_s=wait_s + self.timeout_s)

    def close(self) -> None:
        """Send what is waiting, then stop this client's thread (the bus keeps running)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(self._result_wait_s)

    def __enter__(self) -> "EventBusClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
