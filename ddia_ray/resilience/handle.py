"""A Ray actor handle with timeouts, retries, a circuit breaker and a retry budget.

Theory of operation
-------------------
``ResilientHandle(actor)`` wraps an ``ActorHandle``; ``h.method`` is a proxy
with three ways to call ``actor.method.remote(...)``:

* ``h.method(*args)`` blocks and returns the result;
* ``h.method.future(*args)`` returns a ``concurrent.futures.Future``;
* ``await h.method.aio(*args)`` for asyncio code.

The last two run the asyncio path; ``future`` schedules it on one shared
background event loop thread, so thousands of outstanding futures cost no
threads (an ``ObjectRef`` is awaitable). Every *attempt* does:

1. ``breaker.acquire()``: a refusal raises :class:`CircuitOpenError` (or
   :class:`CallNotPermittedError` when half-open and full) before any remote
   call is made; it is not retried unless ``RetryPolicy.retry_on_circuit_open``;
2. ``actor.method.remote(...)`` and a wait of at most ``timeout_s``;
3. translation of Ray's errors into what the caller can act on:
   ``GetTimeoutError``/asyncio timeout -> :class:`CallTimeoutError` (the task
   is cancelled best-effort: queued or ``async`` actor tasks stop, a running
   sync task cannot be interrupted); ``RayActorError`` and its subclasses
   (``ActorDiedError``, Ray's ``ActorUnavailableError``) ->
   :class:`ddia_ray.errors.ActorUnavailableError` naming actor and method;
   ``RayTaskError`` -> the exception the method raised (its original class,
   with the ``RayTaskError`` and its remote traceback as ``__cause__``);
4. the outcome and its duration are reported to the breaker.

The :class:`Retrier` retries attempts per the policy and raises
:class:`RetriesExhaustedError` whose ``last_error`` is the last translated
error. A timeout is *not* proof the method did not run (DDIA ch. 8): retry
only idempotent methods.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
from typing import Any, Callable

from .._validate import positive
from ..errors import (ActorUnavailableError, CallNotPermittedError, CallTimeoutError, ConfigError,
                      InvalidArgumentError)
from .breaker import CircuitBreaker
from .budget import RetryBudget
from .retry import Retrier, RetryPolicy

__all__ = ["ResilientHandle", "HandleStats"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class HandleStats:
    """Immutable counters of a :class:`ResilientHandle` since it was created.

    ``failures`` counts failed attempts (timeouts, dead actors and errors raised
    by the method), ``rejected`` attempts the breaker refused before any call.
    """

    calls: int
    attempts: int
    retries: int
    successes: int
    failures: int
    timeouts: int
    actor_unavailable: int
    rejected: int


class _BackgroundLoop:
    """One daemon thread running an event loop, shared by every handle's ``future()``."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ddia-ray-resilient-handle",
                                 daemon=True).start()
                cls._loop = loop
            return cls._loop


def _default_name(actor) -> str:
    # ActorHandle exposes these only as private attributes; a missing one just means a plainer name.
    cls = getattr(getattr(actor, "_ray_actor_creation_function_descriptor", None), "class_name", None)
    actor_id: Any = getattr(actor, "_actor_id", None)
    short = actor_id.hex()[:8] if hasattr(actor_id, "hex") else None
    return ":".join(p for p in (cls or type(actor).__name__, short) if p)


class ResilientHandle:
    """Wraps a Ray ``ActorHandle``: ``h.method(...)``, ``h.method.future(...)``, ``await h.method.aio(...)``."""

    def __init__(self, actor_handle, *, timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 breaker: CircuitBreaker | None = None, budget: RetryBudget | None = None,
                 name: str | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic):
        positive("timeout_s", timeout_s)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError("retry must be a RetryPolicy or None")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise InvalidArgumentError("breaker must be a CircuitBreaker or None")
        if budget is not None and retry is None:
            raise ConfigError("a retry budget needs a retry policy (retry=RetryPolicy(...))")
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidArgumentError("name must be a non-empty string or None")
        self._actor = actor_handle
        self._timeout_s = float(timeout_s)
        self._breaker = breaker
        self._clock = clock
        self._retrier = None if retry is None else Retrier(retry, budget, rng=rng, clock=clock)
        self.name = name or _default_name(actor_handle)
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    # --- public surface ---------------------------------------------------------

    def __getattr__(self, method: str) -> "_MethodProxy":
        if method.startswith("_"):
            raise AttributeError(method)
        getattr(self._actor, method)  # fail now, not on the first attempt, for a typo
        return _MethodProxy(self, method)

    @property
    def actor(self):
        """The wrapped ``ActorHandle``."""
        return self._actor

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker guarding this handle, if any."""
        return self._breaker

    def stats(self) -> HandleStats:
        """Immutable counters: calls, attempts, retries, outcomes, timeouts, breaker rejections."""
        with self._lock:
            return HandleStats(**{f.name: self._counts[f.name] for f in dataclasses.fields(HandleStats)})

    def __repr__(self) -> str:
        return f"ResilientHandle({self.name!r}, timeout_s={self._timeout_s})"

    # --- internals ----------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._counts.update(deltas)

    def _acquire(self, attempt_no: list):
        attempt_no[0] += 1
        self._count(attempts=1, retries=1 if attempt_no[0] > 1 else 0)
        if self._breaker is None:
            return None
        try:
            return self._breaker.acquire()
        except CallNotPermittedError:
            self._count(rejected=1)
            raise

    def _cancel(self, ref) -> None:
        import ray

        try:
            ray.cancel(ref)
        except Exception as e:  # noqa: BLE001 - best-effort by design: the timeout error is what the caller needs
            _log.debug("could not cancel %s on %s: %r", ref, self.name, e)

    def _translate(self, exc: BaseException, method: str, ref) -> BaseException:
        """Map a Ray error to the project's error; returns ``exc`` itself when nothing maps."""
        import ray.exceptions as rex

        where = f"{self.name}.{method}()"
        if isinstance(exc, rex.RayTaskError):  # checked first: its dual class may also be a TimeoutError
            cause = exc.cause
            return cause if isinstance(cause, BaseException) else exc.as_instanceof_cause()
        if isinstance(exc, rex.RayActorError):
            self._count(actor_unavailable=1)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return ActorUnavailableError(
                f"actor {self.name!r} is unavailable while calling {method}(): {first} "
                "(it was killed, crashed or its node was lost; recreate it or wait for a restart)")
        if isinstance(exc, (rex.GetTimeoutError, asyncio.TimeoutError)):
            self._count(timeouts=1)
            if ref is not None:
                self._cancel(ref)
            return CallTimeoutError(f"{where} got no reply within {self._timeout_s}s; "
                                    "the request was cancelled best-effort but may still have run")
        return exc

    def _finish(self, permit, start_s: float, exc: BaseException | None, value: Any = None) -> None:
        duration_s = max(0.0, self._clock() - start_s)
        if exc is None:
            self._count(successes=1)
            if self._breaker is not None:
                self._breaker.on_result(duration_s, value, permit)
            return
        if isinstance(exc, Exception):
            self._count(failures=1)
        if self._breaker is not None:
            self._breaker.on_error(duration_s, exc, permit)

    def _attempt(self, method: str, args: tuple, kwargs: dict, attempt_no: list) -> Any:
        import ray

        permit = self._acquire(attempt_no)
        start_s, ref = self._clock(), None
        try:
            ref = getattr(self._actor, method).remote(*args, **kwargs)
            value = ray.get(ref, timeout=self._timeout_s)
        except BaseException as e:
            err = self._translate(e, method, ref)
            self._finish(permit, start_s, err)
            if err is e:
                raise
            raise err from e
        self._finish(permit, start_s, None, value)
        return value

    async def _attempt_async(self, method: str, args: tuple, kwargs: dict, attempt_no: list) -> Any:
        permit = self._acquire(attempt_no)
        start_s, ref = self._clock(), None
        try:
            ref = getattr(self._actor, method).remote(*args, **kwargs)
            value = await asyncio.wait_for(ref, self._timeout_s)
        except asyncio.CancelledError:
            if ref is not None:  # the caller gave up: stop the remote work too
                self._cancel(ref)
            self._finish(permit, start_s, asyncio.CancelledError())
            raise
        except BaseException as e:
            err = self._translate(e, method, ref)
            self._finish(permit, start_s, err)
            if err is e:
                raise
            raise err from e
        self._finish(permit, start_s, None, value)
        return value

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        self._count(calls=1)
        attempt_no = [0]
        if self._retrier is None:
            return self._attempt(method, args, kwargs, attempt_no)
        return self._retrier.call(self._attempt, method, args, kwargs, attempt_no)

    async def _call_async(self, method: str, args: tuple, kwargs: dict) -> Any:
        self._count(calls=1)
        attempt_no = [0]
        if self._retrier is None:
            return await self._attempt_async(method, args, kwargs, attempt_no)
        return await self._retrier.call_async(self._attempt_async, method, args, kwargs, attempt_no)


class _MethodProxy:
    """``h.method``: call it, or use ``.future(...)`` / ``.aio(...)``."""

    __slots__ = ("_handle", "_method")

    def __init__(self, handle: ResilientHandle, method: str):
        self._handle = handle
        self._method = method

    def __call__(self, *args, **kwargs) -> Any:
        """Call the method and block for its result (retries and breaker included)."""
        return self._handle._call(self._method, args, kwargs)

    def future(self, *args, **kwargs) -> concurrent.futures.Future:
        """Start the call on the shared background loop; returns a ``concurrent.futures.Future``."""
        coro = self._handle._call_async(self._method, args, kwargs)
        return asyncio.run_coroutine_threadsafe(coro, _BackgroundLoop.get())

    async def aio(self, *args, **kwargs) -> Any:
        """Await the call from asyncio code (retries sleep with ``asyncio.sleep``)."""
        return await self._handle._call_async(self._method, args, kwargs)

    def __repr__(self) -> str:
        return f"<resilient method {self._handle.name}.{self._method}>"
