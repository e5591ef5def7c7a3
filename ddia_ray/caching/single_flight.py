"""Single flight: concurrent loads of one key share a single in-flight load.

Theory of operation
-------------------
Without it, a popular key that expires (or a cold cache after a restart)
sends every concurrent reader to the backing store at once: the "thundering
herd" or cache stampede (Nishtala et al., "Scaling Memcache at Facebook",
NSDI 2013, section 3.2.1, solve it with leases; Go's ``singleflight`` package
is the in-process form copied here).

The first caller for a key becomes its *leader* and runs the load; callers
arriving while it runs *join* and wait for the leader's result, or its
exception, which they see re-raised. The key is forgotten the moment the
load completes (before the waiters are woken), so the next caller after
that starts a fresh load and never sees a stale result.

Two layers: :meth:`SingleFlight.claim` / :meth:`~SingleFlight.resolve` /
:meth:`~SingleFlight.fail` for callers that load many keys in one batch
(the read-through cache claims every missing key, loads the ones it leads
with one ``get_many``, and waits on the rest), and :meth:`~SingleFlight.do`
/ :meth:`~SingleFlight.do_many` that wrap the whole protocol.
:class:`SingleFlight` is thread-safe and hands out
``concurrent.futures.Future``; :class:`AsyncSingleFlight` is its asyncio twin
(one event loop, no locks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, Hashable, Iterable, Mapping, Sequence

from .._validate import invariant
from ..errors import InvalidArgumentError

__all__ = ["SingleFlight", "AsyncSingleFlight"]


def _check_values(owned: Sequence, values: Any) -> list:
    values = list(values)
    invariant(len(values) == len(owned), f"load_many returned {len(values)} values for {len(owned)} keys")
    return values


class SingleFlight:
    """Thread-safe single flight over ``concurrent.futures.Future`` (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, concurrent.futures.Future] = {}
        self._waiters: dict[Hashable, int] = {}
        self.loads = 0   #: keys whose load this object started
        self.shared = 0  #: joins: callers that waited on someone else's load

    def claim(self, keys: Iterable[Hashable]) -> tuple[list, dict]:
        """Split ``keys`` (duplicates ignored) into ``(owned, joined)``.

        ``owned`` lists the keys the caller now leads: it MUST later
        :meth:`resolve` or :meth:`fail` each of them. ``joined`` maps every
        other key to the future of the load already in flight.
        """
        owned: list = []
        joined: dict = {}
        with self._lock:
            for key in keys:
                if key in joined or key in owned:
                    continue
                fut = self._calls.get(key)
                if fut is None:
                    self._calls[key] = concurrent.futures.Future()
                    self._waiters[key] = 0
                    owned.append(key)
                else:
                    self._waiters[key] += 1
                    joined[key] = fut
            self.loads += len(owned)
            self.shared += len(joined)
        return owned, joined

    def _finish(self, keys: Iterable[Hashable]) -> list[concurrent.futures.Future]:
        with self._lock:
            futures = []
            for key in keys:
                fut = self._calls.pop(key, None)
                if fut is None:
                    raise InvalidArgumentError(f"key {key!r} has no load in flight (resolved twice?)")
                del self._waiters[key]
                futures.append(fut)
            return futures

    def resolve(self, results: Mapping[Hashable, Any]) -> None:
        """Complete the loads of ``results``' keys with their values; forgets the keys first."""
        for fut, value in zip(self._finish(results), results.values()):
            fut.set_result(value)

    def fail(self, keys: Iterable[Hashable], error: BaseException) -> None:
        """Complete the loads of ``keys`` with ``error`` (every joined caller sees it raised)."""
        for fut in self._finish(list(keys)):
            fut.set_exception(error)

    def in_flight(self, key: Hashable) -> bool:
        """True while a load of ``key`` runs."""
        with self._lock:
            return key in self._calls

    def waiters(self, key: Hashable) -> int:
        """How many callers joined the load of ``key`` now in flight (0 if none)."""
        with self._lock:
            return self._waiters.get(key, 0)

    def do(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """``load()``'s result for ``key``, shared with every concurrent caller for the same key."""
        return self.do_many([key], lambda keys: [load()])[key]

    def do_many(self, keys: Iterable[Hashable], load_many: Callable[[tuple], Sequence[Any]],
                timeout_s: float | None = None) -> dict:
        """Values of ``keys``: one ``load_many(owned_keys)`` for the keys nobody is loading, then the rest.

        ``timeout_s`` bounds the wait for other callers' loads
        (``concurrent.futures.TimeoutError``); the leader's own load is bounded by ``load_many``.
        """
        owned, joined = self.claim(keys)
        out: dict = {}
        if owned:
            try:
                values = _check_values(owned, load_many(tuple(owned)))
            except BaseException as e:
                self.fail(owned, e)
                raise
            results = dict(zip(owned, values))
            self.resolve(results)
            out.update(results)
        for key, fut in joined.items():
            out[key] = fut.result(timeout=timeout_s)
        return out


class AsyncSingleFlight:
    """asyncio single flight for one event loop (see the module docstring)."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future] = {}
        self.loads = 0   #: keys whose load this object started
        self.shared = 0  #: joins: callers that awaited someone else's load

    def in_flight(self, key: Hashable) -> bool:
        """True while a load of ``key`` runs."""
        return key in self._calls

    async def do(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        """``await load()`` for ``key``, shared with every concurrent caller for the same key."""
        async def one(keys: tuple) -> list:
            return [await load()]
        return (await self.do_many([key], one))[key]

    async def do_many(self, keys: Iterable[Hashable],
                      load_many: Callable[[tuple], Awaitable[Sequence[Any]]]) -> dict:
        """Like :meth:`SingleFlight.do_many`, awaiting ``load_many(owned_keys)``."""
        loop = asyncio.get_running_loop()
        owned: list = []
        joined: dict = {}
        for key in keys:  # no await in this loop: claiming is atomic on one event loop
            if key in joined or key in owned:
                continue
            fut = self._calls.get(key)
            if fut is None:
                self._calls[key] = loop.create_future()
                owned.append(key)
            else:
                joined[key] = fut
        self.loads += len(owned)
        self.shared += len(joined)
        out: dict = {}
        if owned:
            try:
                values = _check_values(owned, await load_many(tuple(owned)))
            except BaseException as e:
                for key in owned:
                    fut = self._calls.pop(key)
                    fut.set_exception(e)
                    fut.exception()  # mark it retrieved: the leader re-raises it, joiners may be none
                raise
            for key, value in zip(owned, values):
                self._calls.pop(key).set_result(value)
                out[key] = value
        for key, fut in joined.items():
            # shield: one waiter being cancelled must not cancel the shared load's future
            out[key] = await asyncio.shield(fut)
        return out
