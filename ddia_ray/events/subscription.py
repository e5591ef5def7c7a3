"""Catch-up subscriptions: history from a checkpoint, then live events, with no gap and no repeat.

Theory of operation
-------------------
A catch-up subscription (EventStoreDB's name) reads a stream, ``$all`` or a
filtered ``$all`` from a starting point in pages, and once it reaches the end of
what is committed it keeps reading from the same place as new events commit.
History and live delivery are one loop over one ordered sequence (stream
versions, or ``$all`` positions, which are gap-free), so the switch from one to
the other cannot skip or repeat an event: there is no separate live channel whose
start would have to be stitched to the end of the history read (the classic race
of "read history, then subscribe" designs).

Live delivery polls: when a page comes back empty the subscription waits
``idle_s``, doubling up to ``max_idle_s`` and back to the minimum as soon as an
event arrives, so an idle subscription costs a call every ``max_idle_s`` and a
busy one reads back to back with no wait. Delivery latency is bounded by the
current wait.

Backpressure: the subscription reads a page only when its consumer has taken the
one before the previous (it is an iterator; :meth:`CatchUpSubscription.run`
calls the handler in the reading thread), so a slow consumer slows its own
reads and nothing buffers more than two pages, in the store or here. The one
page of read-ahead (a ``$all`` subscription catching up asks for the next page
as it hands out this one) overlaps the store's read and the round trip with the
consumer's work; a live subscription, at the end of ``$all``, reads none ahead.

Checkpoints: :attr:`CatchUpSubscription.checkpoint` is where to start again to
see every event not yet delivered: the next stream version, or the next ``$all``
position (for a filtered subscription it moves past events the filter skipped,
so a restart does not read them again). A subscriber that stores it after
handling each event, and passes it back after a restart, sees each event
exactly once; stored less often, it sees the events since the stored checkpoint
again (at least once). A store failover only delays reads: a call that times
out is retried from the same checkpoint.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from .._validate import positive
from ..errors import ActorUnavailableError, CallTimeoutError, InvalidArgumentError, MessageDroppedError
from .client import EventStoreClient, _filter
from .records import RecordedEvent, check_stream, recorded_event

__all__ = ["CatchUpSubscription"]

_RETRIED = (CallTimeoutError, ActorUnavailableError, MessageDroppedError)


class CatchUpSubscription:
    """Events of ``stream`` from version ``from_version``, or of ``$all`` from position
    ``from_position`` (optionally only streams or types with a prefix), history first, then live.

    Iterate it, or :meth:`run` a handler; :meth:`stop` ends either (from any thread)."""

    def __init__(self, client: EventStoreClient, *, stream: str | None = None, from_version: int = 0,
                 from_position: int = 0, stream_prefix: str | None = None, type_prefix: str | None = None,
                 page: int = 500, idle_s: float = 0.002, max_idle_s: float = 0.1, retry_s: float = 0.2) -> None:
        self.client = client
        if stream is not None:
            check_stream(stream)
            if stream_prefix is not None or type_prefix is not None:
                raise InvalidArgumentError("a stream subscription takes no filter (filters apply to $all)")
        self.stream = stream
        self.kind, self.prefix = _filter(stream_prefix, type_prefix)
        start = from_version if stream is not None else from_position
        if type(start) is not int or start < 0:
            raise InvalidArgumentError(f"a subscription starts at a version or position >= 0, got {start!r}")
        if type(page) is not int or page < 1:
            raise InvalidArgumentError(f"page is an int >= 1, got {page!r}")
        self.page = page
        self.idle_s = positive("idle_s", idle_s)
        self.max_idle_s = max(positive("max_idle_s", max_idle_s), self.idle_s)
        self.retry_s = positive("retry_s", retry_s)
        #: Where to start again to see every event not delivered yet (see the module docstring).
        self.checkpoint = start
        #: True once the subscription has read up to the end of what was committed (it is live).
        self.caught_up = False
        self.delivered = 0
        self.retries = 0
        self._stop = threading.Event()
        self._wait = self.idle_s  # the current wait between empty polls (see the module docstring)
        self._ahead: tuple[int, Callable[[], tuple]] | None = None  # (position, the page read ahead)

    def stop(self) -> None:
        """End the iteration (the current wait ends at once)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def _page(self) -> tuple[list[RecordedEvent], int, bool]:
        """The next page: its events, the checkpoint after it, and whether it reached the end."""
        if self.stream is not None:
            events = self.client.read_stream(self.stream, self.checkpoint, max_count=self.page)
            nxt = events[-1].version + 1 if events else self.checkpoint
            return events, nxt, len(events) < self.page
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != self.checkpoint:  # none, or the consumer stopped inside a page
            ahead = (self.checkpoint, self._ask(self.checkpoint))
        rows, nxt, at_end = ahead[1]()
        if rows and not at_end:
            self._ahead = (nxt, self._ask(nxt))  # read-ahead: one page (see the module docstring)
        return [recorded_event(*r) for r in rows], nxt, at_end

    def _ask(self, position: int) -> Callable[[], tuple]:
        return self.client.read_all_page_nowait(position, page=self.page, kind=self.kind, prefix=self.prefix)

    def next_page(self, deadline: float | None = None) -> tuple[list[RecordedEvent], int] | None:
        """The next page of events and the checkpoint after it (the subscription's checkpoint moves
        there); None after a wait when nothing new committed (or a failed call, retried next time).
        What :meth:`__iter__` is made of, for consumers that handle a page at a time (projections)."""
        try:
            events, nxt, at_end = self._page()
        except _RETRIED:
            self.retries += 1  # a failover or a slow store: ask again from the same checkpoint
            self._stop.wait(self.retry_s)
            return None
        if at_end:
            self.caught_up = True
        if events:
            self._wait = self.idle_s
        elif at_end:
            remaining = self._wait if deadline is None else max(0.0, min(self._wait, deadline - time.monotonic()))
            self._stop.wait(remaining)
            self._wait = min(self._wait * 2, self.max_idle_s)
            if nxt <= self.checkpoint:
                return None
        self.checkpoint = max(self.checkpoint, nxt)
        self.delivered += len(events)
        return events, self.checkpoint

    def __iter__(self) -> Iterator[RecordedEvent]:
        return self._events(lambda: False, None)

    def _events(self, done: Callable[[], bool], deadline: float | None) -> Iterator[RecordedEvent]:
        while not self._stop.is_set() and not done() and (deadline is None or time.monotonic() < deadline):
            start = self.checkpoint
            got = self.next_page(deadline)
            if got is None:
                continue
            events, after = got
            for i, event in enumerate(events):
                if self._stop.is_set():
                    self.checkpoint = self._at(event)  # not delivered: a restart starts with it
                    return
                # The checkpoint is just past each event as the consumer takes it: a restart after it
                # starts after it (and after the events the filter skipped up to the page's end).
                self.checkpoint = self._at(event) + 1 if i + 1 < len(events) else after
                yield event
                if done():
                    return
            if not events:
                self.checkpoint = max(start, after)

    def _at(self, event: RecordedEvent) -> int:
        return event.version if self.stream is not None else event.position

    def run(self, handler: Callable[[RecordedEvent], Any], *, until: Callable[[], bool] | None = None,
            timeout_s: float | None = None) -> int:
        """Call ``handler`` with each event in order, in this thread, until :meth:`stop`, ``until()``
        turns true (checked after each event and each page) or ``timeout_s`` passes; returns how many
        events it handled. An exception from the handler ends the run and propagates, with
        :attr:`checkpoint` back at the event that failed (a restart delivers it again)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        handled = 0
        for event in self._events(until or (lambda: False), deadline):
            try:
                handler(event)
            except BaseException:
                self.checkpoint = self._at(event)
                raise
            handled += 1
        return handled
