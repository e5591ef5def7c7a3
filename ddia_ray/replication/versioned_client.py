"""The client of a multi-leader or leaderless store: batched puts, gets and CRDT updates, with futures.

Theory of operation
-------------------
Every call queues one operation and returns (``*_nowait``) or waits for a
:class:`concurrent.futures.Future`; a loop thread (:class:`~ddia_ray.runtime.client_loop.LoopClient`)
drains the queue into one request per replica and sends them concurrently, so a
thousand puts cost a few actor calls, not a thousand (DDIA's batching, and a Ray
call costs about a millisecond).

Where an operation goes:

* **multi-leader**: to a leader of the client's ``region`` (round robin over the
  region's leaders); the write is acknowledged once that leader holds it and
  reaches the other regions asynchronously;
* **leaderless**: to the first replica of the key's preference list, computed on
  the same ring as the replicas' (:func:`~.leaderless.ring_of`), so the replica
  that stamps the write holds the key and no hop is wasted. A read that finds its
  coordinator unreachable tries the next replica of the list.

A write is never retried by the client: its outcome is unknown after a timeout
(it may have reached some replicas), and retrying a put would make it a sibling
of itself. The caller decides, with the error in hand.

A read answers :class:`Versions`: the live siblings, the causal context to pass
back to :meth:`VersionedClient.put`, the CRDT value for CRDT keys, and (leaderless)
the quorum the read met.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import threading
from typing import Any, Iterable

from .. import codec, crdt
from ..codec import prechecked
from ..errors import (ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError,
                      MessageDroppedError, ResolverFailedError, SiblingsError)
from ..runtime.client_loop import LoopClient
from ..runtime.core import Reply
from ..runtime.futures import settle
from .leaderless import ring_of
from .versioned_records import (MAX_BATCH, V_DELETE, V_PUT, V_UPDATE, QuorumReport, VItem, VRead, VWrite,
                                check_quorum)

__all__ = ["VersionedClient", "Versions"]

_ids = itertools.count(1)
#: Calls a client keeps in flight at once (each a batch of up to ``max_batch`` operations to one replica).
_CALLS_IN_FLIGHT = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Versions:
    """What a store holds for ``key``: ``siblings`` (the live concurrent values, each a
    :class:`~.resolvers.Sibling` with its timestamp and node), ``context`` (pass it to ``put`` to replace
    what was read), ``crdt`` (the CRDT object, for a CRDT key), ``error`` (a read-side resolver's failure:
    the siblings are unresolved) and ``quorum`` (leaderless: the quorum the request met)."""

    key: bytes
    siblings: tuple = ()
    context: bytes = b""
    crdt: Any = None
    kind: str = ""
    error: ResolverFailedError | None = None
    quorum: QuorumReport | None = None

    @property
    def values(self) -> tuple:
        """The siblings' values."""
        return tuple(s.value for s in self.siblings)

    @property
    def exists(self) -> bool:
        """Whether the key holds a value (a CRDT key: whether it was ever updated)."""
        return bool(self.siblings) or self.crdt is not None

    @property
    def conflict(self) -> bool:
        """Whether concurrent values are waiting for the application to merge them."""
        return len(self.siblings) > 1

    @property
    def value(self) -> Any:
        """The one value: a CRDT's value, the only sibling, or None if absent. Raises the resolver's
        :class:`~ddia_ray.errors.ResolverFailedError` if it failed, and
        :class:`~ddia_ray.errors.SiblingsError` when several values are concurrent."""
        if self.crdt is not None:
            return self.crdt.value()
        if self.error is not None:
            raise self.error
        if len(self.siblings) > 1:
            raise SiblingsError(f"{self.key!r} holds {len(self.siblings)} concurrent values: read .values, merge "
                                f"them and put the result with .context", count=len(self.siblings))
        return self.siblings[0].value if self.siblings else None


def versions_of(item: VItem) -> Versions:
    """A reply item as :class:`Versions` (raising the error a write item carries)."""
    error = item.error.exception() if item.error is not None else None
    if error is not None and not isinstance(error, ResolverFailedError):
        raise error
    state = crdt.decode(item.crdt, item.kind or None) if item.crdt is not None else None
    return Versions(item.key, item.siblings, item.context, state, item.kind, error, item.quorum)


@dataclasses.dataclass(slots=True)
class _Unit:
    write: bool
    item: Any  # a write item (code, key, payload, context) or a key
    future: concurrent.futures.Future
    tried: int = 0
    body: bool = True


def _context(context: Any) -> bytes:
    if context is None:
        return b""
    if type(context) is not bytes:
        raise InvalidArgumentError(f"a causal context is the bytes a get returned, got {type(context).__name__}")
    return context


def _key(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if not isinstance(key, bytes):
        raise InvalidArgumentError(f"a key is bytes or str, got {type(key).__name__}")
    return key


class VersionedClient(LoopClient):
    """A client of a multi-leader or leaderless store (see the module docstring). ``region``: the
    multi-leader region it writes in (default: any); ``n``, ``r``, ``w``: leaderless quorum of its requests
    (default: the store's); ``timeout_s``: how long a request may take; ``max_batch``: items per request."""

    def __init__(self, store: Any, *, region: str | None = None, n: int | None = None, r: int | None = None,
                 w: int | None = None, timeout_s: float = 5.0, max_batch: int = 1000):
        self.store = store
        self.protocol = store.protocol
        self.name = f"vclient-{next(_ids)}"
        self.timeout_s = float(timeout_s)
        if not 0 < self.timeout_s <= 3600:
            raise InvalidArgumentError(f"timeout_s is in (0, 3600], got {timeout_s!r}")
        if type(max_batch) is not int or not 0 < max_batch <= MAX_BATCH:
            raise InvalidArgumentError(f"max_batch is an int in [1, {MAX_BATCH}], got {max_batch!r}")
        self.max_batch = max_batch
        self.region = region
        self._nodes = store.region_nodes(region) if region is not None else tuple(store.members)
        opts = store.options
        if self.protocol == "leaderless":
            self.n = n if n is not None else opts["n"]
            self.r = r if r is not None else min(opts["r"], self.n)
            self.w = w if w is not None else min(opts["w"], self.n)
            check_quorum(self.n, self.r, self.w, len(store.members))
            self._ring = ring_of(tuple(store.members), opts.get("virtual_nodes", 64))
            # Every replica holds every key: any of them coordinates any request, so batches go to the
            # replicas in turn instead of to each key's first replica on the ring (a ring walk per key,
            # and a batch split in as many requests as there are replicas).
            self._any_coordinates = self.n >= len(store.members)
        elif any(x is not None for x in (n, r, w)):
            raise ConfigError("n, r and w are leaderless settings; a multi-leader write is acknowledged by the "
                              "leader of its region")
        self._rr = itertools.count()
        self._lock = threading.Lock()  # close() against itself; the queue itself takes no lock (see _submit)
        self._queue: collections.deque[_Unit] = collections.deque()
        self._kick_pending = False  # the pump was woken and has not yet begun to drain
        self._closed = False
        self._start_loop(self.name)

    # --- writes -------------------------------------------------------------------------------------

    def put_nowait(self, key: Any, value: bytes, *, context: bytes | None = None,
                   return_body: bool = True) -> concurrent.futures.Future:
        """Queue a write of ``value``; its future gives the key's :class:`Versions` after the write (None
        with ``return_body=False``, which spares encoding them: bulk loads). Pass the ``context`` of the
        read the value is based on: the write then replaces exactly what was read."""
        if not isinstance(value, bytes):
            raise InvalidArgumentError(f"a value is bytes, got {type(value).__name__}")
        return self._submit(True, (V_PUT, _key(key), value, _context(context)), bool(return_body))

    def put(self, key: Any, value: bytes, *, context: bytes | None = None, return_body: bool = True) -> Any:
        """Write ``value`` (see :meth:`put_nowait`) and wait."""
        return self._wait(self.put_nowait(key, value, context=context, return_body=return_body), 2 * self.timeout_s)

    def put_many(self, items: Iterable[tuple], *, return_body: bool = True) -> list:
        """Write ``(key, value)`` or ``(key, value, context)`` items, batched; their :class:`Versions`."""
        futures = [self.put_nowait(i[0], i[1], context=i[2] if len(i) > 2 else None, return_body=return_body)
                   for i in items]
        return [self._wait(f, 2 * self.timeout_s) for f in futures]

    def delete_nowait(self, key: Any, *, context: bytes | None = None) -> concurrent.futures.Future:
        """Queue a deletion (a tombstone sibling, so that it cannot be undone by a stale replica)."""
        return self._submit(True, (V_DELETE, _key(key), b"", _context(context)))

    def delete(self, key: Any, *, context: bytes | None = None) -> Versions:
        """Delete ``key`` (see :meth:`delete_nowait`) and wait."""
        return self._wait(self.delete_nowait(key, context=context), 2 * self.timeout_s)

    def update_nowait(self, key: Any, op: str, *args: Any) -> concurrent.futures.Future:
        """Queue CRDT operation ``op(*args)`` on ``key`` (a key under a ``"crdt:KIND"`` resolution)."""
        if not isinstance(op, str):
            raise InvalidArgumentError(f"a CRDT operation is named by a str, got {type(op).__name__}")
        codec.check_value(args)  # what cannot cross the wire fails here, in the caller's thread
        return self._submit(True, (V_UPDATE, _key(key), (op, tuple(args)), b""))

    def update(self, key: Any, op: str, *args: Any) -> Versions:
        """Apply CRDT operation ``op(*args)`` to ``key`` and wait; the key's :class:`Versions` after it."""
        return self._wait(self.update_nowait(key, op, *args), 2 * self.timeout_s)

    # --- reads ------------------------------------------------------------------------------------

    def get_nowait(self, key: Any) -> concurrent.futures.Future:
        """Queue a read; its future gives :class:`Versions`."""
        return self._submit(False, _key(key))

    def get(self, key: Any) -> Versions:
        """Read ``key``: every concurrent value, and the context to write back."""
        return self._wait(self.get_nowait(key), 2 * self.timeout_s)

    def get_many(self, keys: Iterable[Any]) -> list[Versions]:
        """Read many keys, batched."""
        futures = [self.get_nowait(k) for k in keys]
        return [self._wait(f, 2 * self.timeout_s) for f in futures]

    # --- the loop ----------------------------------------------------------------------------------

    def _submit(self, write: bool, item: Any, body: bool = True) -> concurrent.futures.Future:
        if self._closed:
            raise ConfigError("this client is closed")
        fut = self._new_future()
        # No lock: a deque's append and popleft are atomic, and a lock here was a quarter of a caller's
        # time, taken in turn with the pump draining thousands of units. The pump clears the flag
        # before it drains, so a unit appended after the clear is drained or rings the bell again.
        self._queue.append(_Unit(write, item, fut, 0, body))
        if self._closed:  # closed meanwhile: close() may have missed this unit
            self._fail_left()
        elif not self._kick_pending:  # one wake-up per burst, not per call
            self._kick_pending = True
            self._loop.call_soon_threadsafe(self._wake.set)
        return fut

    def _target(self, unit: _Unit) -> str | None:
        """The replica to send ``unit`` to; None when any replica will do (the pump deals those out)."""
        if self.protocol == "leaderless":
            if not unit.tried:
                if self._any_coordinates:
                    return None
                return self._ring.owner(unit.item[1] if unit.write else unit.item)
            key = unit.item[1] if unit.write else unit.item
            order = self._ring.preference_list(key, self.n)
            if self._any_coordinates:  # the first try went to whichever replica: now each in the key's order
                return order[(unit.tried - 1) % len(order)]
            return order[unit.tried % len(order)]
        return self._nodes[(next(self._rr) + unit.tried) % len(self._nodes)]

    async def _pump(self) -> None:
        slots = asyncio.Semaphore(_CALLS_IN_FLIGHT)
        running: set = set()

        async def call(coro) -> None:
            try:
                await coro
            finally:
                slots.release()

        while True:
            await self._wake.wait()
            self._wake.clear()
            self._kick_pending = False
            while True:
                queue = self._queue
                units = [queue.popleft() for _ in range(min(len(queue), 20 * self.max_batch))]
                if not units:
                    break
                groups: dict[tuple, list[_Unit]] = {}
                for u in units:
                    if u.future.done():
                        continue
                    groups.setdefault((self._target(u), u.write, u.body), []).append(u)
                # Calls go out as slots free up, without waiting for a whole round: a slow replica holds
                # back its own batches, not everyone's.
                for (target, write, body), group in groups.items():
                    for i in range(0, len(group), self.max_batch):
                        node = target if target is not None else self._nodes[next(self._rr) % len(self._nodes)]
                        await slots.acquire()
                        task = asyncio.ensure_future(call(self._send(node, write, group[i:i + self.max_batch], body)))
                        running.add(task)
                        task.add_done_callback(running.discard)

    async def _send(self, node: str, write: bool, units: list[_Unit], body: bool = True) -> None:
        if write:
            # Each item was checked when it was queued (put_nowait and its kin): not again per item here.
            leaderless = self.protocol == "leaderless"
            payload: Any = prechecked(VWrite, tuple(u.item for u in units), self.n if leaderless else 0,
                                      self.w if leaderless else 0, self.timeout_s, body)
        else:
            payload = VRead(tuple(u.item for u in units), timeout_s=self.timeout_s,
                            **({"n": self.n, "r": self.r} if self.protocol == "leaderless" else {}))
        try:
            handle = self.store._handle(node)
        except ActorUnavailableError as e:  # known to be down: nothing was sent, so a write may go elsewhere too
            self._retry_or_fail(units, False, e)
            return
        try:
            data = await self._request(node, handle, self.name, codec.encode(payload),
                                       2 * self.timeout_s + 1.0, f"{self.store.name}/{node}")
            reply = codec.decode(data)
            if not isinstance(reply, Reply):
                raise ConfigError(f"unexpected answer from {node}: {type(reply).__name__}")
            if reply.error is not None:
                raise reply.error.exception(node)
        except (ActorUnavailableError, CallTimeoutError, MessageDroppedError) as e:
            self._retry_or_fail(units, write, e)
            return
        except Exception as e:  # noqa: BLE001 - the replica's refusal, of its own class, reaches each caller
            self._finish([(u.future, None, e) for u in units])
            return
        outcomes: list[tuple[concurrent.futures.Future, Any, BaseException | None]] = []
        for u, item in zip(units, reply.payload.items):
            try:
                outcomes.append((u.future, versions_of(item) if item is not None else None, None))
            except Exception as e:  # noqa: BLE001 - a write item's error (a quorum not reached)
                outcomes.append((u.future, None, e))
        self._finish(outcomes)

    def _retry_or_fail(self, units: list[_Unit], write: bool, error: BaseException) -> None:
        """A read tries the next replica (of the key's preference list, or of the region); a write that
        was sent (``write``), whose outcome is unknown, fails with the error."""
        again = []
        for u in units:
            u.tried += 1
            if self.protocol == "leaderless":
                limit = self.n + 1 if self._any_coordinates else self.n  # (the first try, then every replica)
            else:
                limit = len(self._nodes)
            if write or u.tried >= limit:
                settle(u.future, exc=error)
            else:
                again.append(u)
        if again:
            self._queue.extendleft(reversed(again))
            self._wake.set()

    def close(self) -> None:
        """Fail what is still queued and stop the loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._fail_left()
        self._stop_loop_thread()

    def _fail_left(self) -> None:
        """Fail the units still queued (the client is closed)."""
        queue, left = self._queue, []
        while queue:
            try:
                left.append(queue.popleft())
            except IndexError:  # emptied by another thread meanwhile
                break
        self._finish([(u.future, None, ConfigError("the client was closed before the operation was sent"))
                      for u in left])
