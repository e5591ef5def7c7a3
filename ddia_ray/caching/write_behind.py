"""Write-behind (write-back) cache service: acknowledge at once, flush to the store in batches.

Theory of operation
-------------------
A write is acknowledged as soon as it is in the cache and in a bounded
:class:`~ddia_ray.caching.coalescing.CoalescingQueue` (latest value per
key wins, deletes included). A background flusher thread sends the oldest
queued operations to the store as one ``write`` when ``flush_batch_ops``
are pending, when the oldest has waited ``flush_interval_s``, when a writer
is blocked on a full queue, or when :meth:`~WriteBehindService.flush` or
:meth:`~WriteBehindService.close` asks. Reads see queued writes first, then
the cache, then the store (read-through).

Backpressure, never loss: a write that needs room in a full queue blocks
for up to ``put_timeout_s``, then raises
:class:`~ddia_ray.errors.BackpressureError`; nothing is dropped silently.
A failed flush puts its batch back at the head of the queue and the
flusher retries after an exponential backoff (``retry_backoff_s`` doubling
up to ``retry_backoff_max_s``), for as long as it takes: a store outage
fills the queue, then writers feel backpressure. ``flush()`` waits until
the queue has been empty (with steady writers that can take a while: it is
bounded by its timeout); ``close()`` refuses new writes, drains, and stops
the flusher.

The loss window
---------------
Acknowledged writes live only in this actor's memory until flushed. If the
actor process dies (node lost, OOM, ``ray.kill``, the nemesis' ``kill``), every acknowledged but
unflushed write is lost: at most ``queue_capacity_keys`` keys, normally
those written in the last ``flush_interval_s`` (plus the duration of a
store outage, while the queue backs up). Callers that cannot accept that
must use :class:`~ddia_ray.caching.handles.WriteThroughCache`, or call
``flush()`` before they report a write as durable (DDIA ch. 5: a write is
durable only once the system of record has it).
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

from .. import codec
from .._validate import integer, positive
from ..errors import BackpressureError, CallTimeoutError, ConfigError, DatabaseClosedError
from ..storage.engine import Op, WriteBatch
from .actors import ReadThroughService, _decode_keys
from .coalescing import CoalescingQueue
from .patterns import CacheFront

__all__ = ["WriteBehindService"]

_DEFAULTS = {"queue_capacity_keys": 10_000, "flush_batch_ops": 500, "flush_interval_s": 0.05,
             "put_timeout_s": 10.0, "retry_backoff_s": 0.05, "retry_backoff_max_s": 2.0}


class WriteBehindService(ReadThroughService):
    """The write-behind cache service: a coalescing, bounded queue in front of the store (module doc)."""

    def __init__(self, node_id: str, *, queue_capacity_keys: int = 10_000, flush_batch_ops: int = 500,
                 flush_interval_s: float = 0.05, put_timeout_s: float = 10.0, retry_backoff_s: float = 0.05,
                 retry_backoff_max_s: float = 2.0, **cache_options):
        super().__init__(node_id, **cache_options)
        self.check_options(queue_capacity_keys=queue_capacity_keys, flush_batch_ops=flush_batch_ops,
                            flush_interval_s=flush_interval_s, put_timeout_s=put_timeout_s,
                            retry_backoff_s=retry_backoff_s, retry_backoff_max_s=retry_backoff_max_s)
        self.queue = CoalescingQueue(queue_capacity_keys)
        self.flush_batch_ops = flush_batch_ops
        self.flush_interval_s = float(flush_interval_s)
        self.put_timeout_s = float(put_timeout_s)
        self.retry_backoff_s = float(retry_backoff_s)
        self.retry_backoff_max_s = float(retry_backoff_max_s)
        # One lock for the cache, the queue and the flusher: reads consult both atomically.
        self._cv = threading.Condition(self.front.lock)
        self._blocked_writers = 0
        self._drain_waiters = 0
        self._closing = False
        self._stopped = False
        self._retry_at_s: float | None = None
        self._backoff_s = self.retry_backoff_s
        self._flushes = 0
        self._flushed_ops = 0
        self._flush_failures = 0
        self.last_flush_error: str | None = None
        self._thread = threading.Thread(target=self._flusher, name="ddia-ray-write-behind", daemon=True)
        self._thread.start()

    @classmethod
    def check_options(cls, **options) -> None:
        """Validate the queue and flush settings (``launch`` calls it before any actor starts)."""
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise ConfigError(f"WriteBehindCache got unknown options {sorted(unknown)}")
        o = {**_DEFAULTS, **options}
        positive("queue_capacity_keys", integer("queue_capacity_keys", o["queue_capacity_keys"]))
        positive("flush_batch_ops", integer("flush_batch_ops", o["flush_batch_ops"]))
        for name in ("flush_interval_s", "put_timeout_s", "retry_backoff_s", "retry_backoff_max_s"):
            positive(name, o[name])
        if o["retry_backoff_max_s"] < o["retry_backoff_s"]:
            raise ConfigError("retry_backoff_max_s must be >= retry_backoff_s")

    # --- reads and writes -----------------------------------------------------------

    def _overlay(self, key: bytes):
        op = self.queue.lookup(key)
        if op is None:
            return CacheFront.MISSING
        return op.value if op.kind == "put" else None

    def get_many(self, keys: bytes) -> bytes:
        """Like the read-through cache, but queued (unflushed) writes are seen first."""
        self._check_open()
        values = self.front.get_many(_decode_keys(keys), self.store.get_many, overlay=self._overlay)
        return codec.encode(tuple(values))

    def _write_ops(self, ops: tuple[Op, ...]) -> int:
        """Queue ``ops`` (blocking while the queue is full, up to ``put_timeout_s``); acknowledge."""
        deadline_s = time.monotonic() + self.put_timeout_s
        with self._cv:
            self._check_writable()
            needed = self.queue.room_needed(ops)  # refuses delete_range
            if needed > self.queue.capacity_keys:
                raise ConfigError(f"a batch of {needed} new keys can never fit a queue of "
                                  f"{self.queue.capacity_keys}; split it or raise queue_capacity_keys")
            while needed > self.queue.room:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    raise BackpressureError(
                        f"write-behind queue full ({len(self.queue)}/{self.queue.capacity_keys} keys) for "
                        f"{self.put_timeout_s}s: the store is slow or down; nothing was written, retry later")
                self._blocked_writers += 1
                self._cv.notify_all()  # a blocked writer is a flush trigger
                try:
                    self._cv.wait(remaining_s)
                finally:
                    self._blocked_writers -= 1
                self._check_writable()
                needed = self.queue.room_needed(ops)
            self.queue.offer(ops, time.monotonic())
            self.front.fill_acknowledged(ops)
            self._cv.notify_all()  # the flusher recomputes when its next flush is due
        return len(ops)

    def _check_writable(self) -> None:
        self._check_open()
        if self._closing:
            raise DatabaseClosedError("this WriteBehindCache is closing: it accepts no more writes")

    # --- the flusher ------------------------------------------------------------------

    def _due(self, now_s: float) -> float | None:
        """0 if a flush is due now, else how long to wait (None: until notified). Caller holds the lock."""
        if self._retry_at_s is not None and now_s < self._retry_at_s:
            return self._retry_at_s - now_s
        oldest_s = self.queue.oldest_s()
        if oldest_s is None:  # nothing pending
            return None
        if (self.queue.pending >= self.flush_batch_ops or self._closing or self._drain_waiters
                or self._blocked_writers):
            return 0.0
        return max(0.0, oldest_s + self.flush_interval_s - now_s)

    def _flusher(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closing and not len(self.queue):
                        self._stopped = True
                        self._cv.notify_all()
                        return
                    wait_s = self._due(time.monotonic())
                    if wait_s == 0.0:
                        break
                    self._cv.wait(wait_s)
                batch = self.queue.take(self.flush_batch_ops)
            try:
                self.store.write(WriteBatch(batch))
            except Exception as e:  # noqa: BLE001 - keep the writes: requeue, back off, retry (never drop)
                with self._cv:
                    self.queue.requeue()
                    self._flush_failures += 1
                    self.last_flush_error = f"{type(e).__name__}: {e}"
                    self._retry_at_s = time.monotonic() + self._backoff_s
                    self._backoff_s = min(self.retry_backoff_max_s, self._backoff_s * 2)
                continue
            with self._cv:
                self.queue.ack()
                self._flushes += 1
                self._flushed_ops += len(batch)
                self._retry_at_s = None
                self._backoff_s = self.retry_backoff_s
                self._cv.notify_all()  # wake blocked writers and drain waiters

    # --- control ----------------------------------------------------------------------

    def _wait_drained(self, timeout_s: float | None, what: str) -> int:
        deadline_s = time.monotonic() + (self.put_timeout_s if timeout_s is None else timeout_s)
        with self._cv:
            start = self._flushed_ops
            self._drain_waiters += 1
            self._cv.notify_all()
            try:
                while len(self.queue):
                    remaining_s = deadline_s - time.monotonic()
                    if remaining_s <= 0:
                        raise CallTimeoutError(
                            f"{what}: {len(self.queue)} writes still queued after the timeout "
                            f"(last flush error: {self.last_flush_error}); they stay queued and are retried")
                    self._cv.wait(remaining_s)
            finally:
                self._drain_waiters -= 1
            return self._flushed_ops - start

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until the queue is empty; returns ops flushed meanwhile. CallTimeoutError if it is not."""
        self._check_open()
        return self._wait_drained(timeout_s, "flush")

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new writes, drain the queue into the store, stop the flusher, then close."""
        with self._cv:
            if self._closed:
                return
            self._closing = True
            self._cv.notify_all()
        self._wait_drained(timeout_s, "close")
        self._thread.join(timeout=self.put_timeout_s if timeout_s is None else timeout_s)
        super().close()

    def _extra_stats(self) -> Mapping[str, int]:
        with self._cv:
            return {"flushes": self._flushes, "flushed_ops": self._flushed_ops,
                    "flush_failures": self._flush_failures, "queue_depth": len(self.queue),
                    "coalesced_writes": self.queue.coalesced}
