"""Persistent subscriptions for users: create a consumer group, consume it with competing consumers,
ack or nack (retry, park, skip, release), list and replay parked events (see :mod:`.consumer_groups`).

Theory of operation
-------------------
:class:`ConsumerGroups` is the operator's side (create, delete, info, parked,
replay). :class:`PersistentSubscription` is one consumer. The groups' state lives
on the store's leader (:mod:`.group_service`, a leader service checkpointed to
the group's row), so each of the consumer's calls is one round trip to the
leader and no commit: a pull answers the runs of positions it handed out *and*
their events, read from the leader's state in the same call. The consumer calls
the handler for each event and settles the batch: a nack for each event that
raised (retry by default, so a failing event is retried until ``max_retries``
and then parked with the handler's error as the reason) at once, and an ack for
the events handled together with the next pull (``ack_pull``), or on the way out
of :meth:`PersistentSubscription.run` (an ack that returns once the group's
checkpoint holding it has committed). It also pulls ahead: after a full batch it
keeps up to ``prefetch`` ack-and-pulls in flight, sent before the batch in hand
is handled, within the room the group's ``max_in_flight`` leaves (what it pulled
ahead and did not handle when ``run`` ends goes back with ``release``, its
attempt uncounted). A consumer that dies mid-batch settles nothing: its events
time out after the group's ``ack_timeout`` and go to another consumer. Delivery
is therefore at least once and unordered across consumers (a leader failover
also hands out again what was delivered or acked since the group's last
checkpoint); a handler must tolerate seeing an event again (make it idempotent,
or record what it handled in the same transaction as its effect, as projections
do).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from itertools import repeat
from typing import Any, Callable

from .._validate import positive
from ..errors import ActorUnavailableError, CallTimeoutError, InvalidArgumentError, MessageDroppedError
from . import keys
from .client import EventStoreClient, _filter
from .consumer_groups import (MAX_READ_POSITIONS, _runs, answer_rows, archive_dropped_of, passes, positions_rows,
                              runs_of)
from .group_service import SERVICE
from .records import RecordedEvent, recorded_event

__all__ = ["ConsumerGroups", "PersistentSubscription"]

_RETRIED = (CallTimeoutError, ActorUnavailableError, MessageDroppedError)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ConsumerGroups:
    """Create, inspect and repair the consumer groups of an event store."""

    def __init__(self, client: EventStoreClient) -> None:
        self.client = client

    def _call(self, method: str, args: Any) -> Any:
        return self.client.service(SERVICE, method, args)

    def _query(self, name: str, args: Any) -> Any:
        return self.client.query(name, args)

    def create(self, group: str, *, from_position: int = 0, stream_prefix: str | None = None,
               type_prefix: str | None = None, max_in_flight: int = 500, max_retries: int = 5,
               ack_timeout_s: float = 30.0) -> bool:
        """Create ``group`` over ``$all`` from ``from_position`` (optionally filtered); again with the
        same settings it is a no-op (returns False). ``max_in_flight``: events handed out and not
        settled, for the whole group; ``max_retries``: attempts before an event is parked;
        ``ack_timeout_s``: how long a consumer has to settle an event before it is handed out again."""
        kind, prefix = _filter(stream_prefix, type_prefix)
        timeout_ms = max(1, int(positive("ack_timeout_s", ack_timeout_s) * 1000))
        return self._call("create",
                          (group, (kind, prefix, max_in_flight, max_retries, timeout_ms), from_position))

    def delete(self, group: str) -> bool:
        """Delete ``group`` with its state and parked events (returns whether it existed)."""
        return self._call("delete", (group,))

    def info(self, group: str) -> dict:
        """The group's settings, ``cursor``, ``checkpoint``, ``in_flight``, ``retry_queue``, ``parked``,
        ``lag_events`` and counters (delivered, acked, retried, timed_out, parks, skipped, released), as
        the leader holds them; ``unsaved``: changes since the group's last checkpoint."""
        return self._call("info", (group,))

    def parked(self, group: str, *, from_position: int = 0, limit: int = 1000) -> list[tuple[int, int, str]]:
        """Parked events as ``(position, attempts, reason)``."""
        return list(self._query("events.group_parked", (group, from_position, limit)))

    def replay_parked(self, group: str, *, limit: int = 1000) -> int:
        """Hand up to ``limit`` parked events out again (fresh attempts); returns how many."""
        positions = tuple(p for p, _, _ in self.parked(group, limit=limit))
        return self._call("unpark", (group, positions)) if positions else 0


class PersistentSubscription:
    """One consumer ``consumer`` of ``group`` (see the module docstring); thread-safe :meth:`stop`.
    ``prefetch``: how many batches :meth:`run` pulls ahead of the one it handles (0: none)."""

    def __init__(self, client: EventStoreClient, group: str, consumer: str, *, batch: int = 100,
                 idle_s: float = 0.002, max_idle_s: float = 0.1, retry_s: float = 0.2,
                 clock: Callable[[], int] = _now_ms, prefetch: int = 2) -> None:
        if type(batch) is not int or batch < 1:
            raise InvalidArgumentError(f"batch is an int >= 1, got {batch!r}")
        self.client, self.group, self.consumer, self.batch = client, group, consumer, batch
        if type(prefetch) is not int or prefetch < 0:
            raise InvalidArgumentError(f"prefetch is an int >= 0 (batches pulled ahead), got {prefetch!r}")
        self.prefetch = prefetch
        self.prefetched = 0  # batches pulled while an earlier one was handled (see run)
        self.released = 0  # events pulled ahead and handed back unhandled when run ended
        self._depth: int | None = None  # batches run pulls ahead: prefetch, as far as max_in_flight allows
        self.idle_s = positive("idle_s", idle_s)
        self.max_idle_s = max(positive("max_idle_s", max_idle_s), self.idle_s)
        self.retry_s = positive("retry_s", retry_s)
        self.handled = self.failed = self.redelivered = self.retries = 0
        self.filtered = 0  # archived events handed out that the group's filter leaves out: acked unhandled
        self._group_filter: tuple | None = None  # the group's (kind, prefix), read when first needed
        self._clock = clock  # milliseconds since the epoch: the group's deadlines are on the consumers' clocks
        self._stop = threading.Event()

    def stop(self) -> None:
        """End :meth:`run` after the current batch."""
        self._stop.set()

    def pull(self) -> list[tuple[RecordedEvent, int]]:
        """Take up to ``batch`` events from the group: ``(event, attempt)`` pairs (attempt 1 is the
        first delivery). They are this consumer's to settle until the group's ack timeout."""
        _, handed, answer = self.client.service(SERVICE, "pull", (self.group, self.consumer, self.batch,
                                                                 self._clock()))
        return self._events(handed, answer)

    def ack_and_pull(self, positions) -> list[tuple[RecordedEvent, int]]:
        """:meth:`ack` ``positions`` and :meth:`pull` in one call: what :meth:`run` does after each
        batch. The ack is the group's at once, saved with its next checkpoint (see the module
        docstring)."""
        _, handed, answer = self.client.service(
            SERVICE, "ack_pull", (self.group, runs_of(positions), self.consumer, self.batch, self._clock()))
        return self._events(handed, answer)

    def _service_nowait(self, method: str, args: tuple) -> Any:
        return self.client.backend.service_nowait(SERVICE, method, args)

    def _ack_and_pull_nowait(self, positions) -> tuple:
        """:meth:`ack_and_pull` sent: ``(positions, its future)``."""
        call = self._service_nowait(
            "ack_pull", (self.group, runs_of(positions), self.consumer, self.batch, self._clock()))
        return tuple(positions), call

    def _finish(self, sent: tuple) -> list[tuple[RecordedEvent, int]]:
        """The events of an :meth:`_ack_and_pull_nowait` (its failure raised here)."""
        _, handed, answer = self.client.wait(sent[1])
        return self._events(handed, answer)

    def _events(self, handed: tuple, answer: Any = None) -> list[tuple[RecordedEvent, int]]:
        """The events of the runs ``(first, last, attempt)`` a pull handed out, with their attempts:
        from the pull's ``answer`` (:func:`~.consumer_groups.read_positions`'s, read by the leader),
        the rest (archived events, or a batch too large for one answer) read now."""
        if not handed:
            return []
        if len(handed) == 1 and answer is not None and not answer[1]:
            # The usual batch: one run, all of it in the stretch of chunk parts read with it (the
            # events built straight from the chunks' columns).
            first, last, attempt = handed[0]
            events = keys.part_rows(answer[0], make=recorded_event)
            if events:
                lo, hi = events[0].position, events[-1].position
                if hi - lo == len(events) - 1 and lo <= first and last <= hi:
                    return [(e, attempt) for e in events[first - lo:last - lo + 1]]
        positions: list = []
        attempts: list = []
        for first, last, attempt in handed:
            positions.extend(range(first, last + 1))
            attempts.extend(repeat(attempt, last - first + 1))
        if answer is not None:
            # Read with the pull: what it lacks is archived (below dropped_upto) or removed.
            have = answer_rows(answer)
            dropped = archive_dropped_of(answer)
            lacking = sorted({p for p in positions if p < dropped and p not in have})
            if lacking:
                for r in self._archived(lacking, dropped):
                    have[r[2]] = r
            return [(recorded_event(*have[p]), a) for p, a in zip(positions, attempts) if p in have]
        have = {}
        todo = tuple(positions)
        for lo in range(0, len(todo), MAX_READ_POSITIONS):
            part = todo[lo:lo + MAX_READ_POSITIONS]
            read = self.client.query("events.read_positions", (part,))
            dropped = archive_dropped_of(read)
            archived: list = []
            if dropped and min(part) < dropped:
                archived = self._archived(sorted(p for p in set(part) if p < dropped), dropped)
            for r in positions_rows(part, read, archived):
                have[r[2]] = r
        return [(recorded_event(*have[p]), a) for p, a in zip(positions, attempts) if p in have]

    def _archived(self, positions: list, dropped: int) -> list:
        """The rows of archived ``positions`` (ascending, all below ``dropped``) that pass the group's
        filter, read from the archive a run of consecutive positions at a time; the others were handed
        out unfiltered (the pull cannot see an archived event's stream or type) and are acked here."""
        from .archive import archived_all_page
        from .queries import MAX_PAGE_ROWS, MAX_SCAN_ROWS

        if self._group_filter is None:
            self._group_filter = tuple(ConsumerGroups(self.client).info(self.group)["filter"])
        reader = self.client.archive_reader()
        wanted = set(positions)
        rows: list = []
        for lo, hi in _runs(positions):
            at = lo
            while at <= hi:
                page, at, _ = archived_all_page(self.client, reader, at, backward=False,
                                                page=min(hi - at + 1, MAX_PAGE_ROWS), kind=None, prefix="",
                                                dropped_upto=dropped, scan_max=MAX_SCAN_ROWS)
                rows.extend(r for r in page if r[2] in wanted)
                if not page:
                    break
        keep = [r for r in rows if passes(self._group_filter, r)]
        if len(keep) < len(rows):
            kept = {r[2] for r in keep}
            self.filtered += len(rows) - len(keep)
            self.ack(tuple(r[2] for r in rows if r[2] not in kept))
        return keep

    def ack(self, positions) -> int:
        """Settle ``positions`` as handled; returns the group's checkpoint once the group's state
        holding the ack is committed (it survives a leader failover from then on)."""
        return self.client.service(SERVICE, "ack", (self.group, runs_of(positions)))

    def nack(self, positions, action: str = "retry", reason: str = "") -> int:
        """Refuse ``positions``: ``"retry"``, ``"park"``, ``"skip"`` or ``"release"`` (handed back
        unhandled: the attempt is not counted); returns the group's checkpoint."""
        return self.client.service(SERVICE, "nack", (self.group, runs_of(positions), action, reason))

    def run(self, handler: Callable[[RecordedEvent], Any], *, until: Callable[[], bool] | None = None,
            timeout_s: float | None = None, on_error: str = "retry") -> int:
        """Consume until :meth:`stop`, ``until()`` or ``timeout_s``: each event is passed to ``handler``;
        the batch's handled events are acked together and each one that raised is nacked with
        ``on_error`` (``"retry"``, ``"park"`` or ``"skip"``) and the exception as the reason. Returns
        how many events were handled.

        After a full batch, ``run`` keeps up to ``prefetch`` ack-and-pulls in flight (as many as the
        group's ``max_in_flight`` leaves room for beside the batch in hand), sent *before* the batch
        in hand is handled: the commits overlap one another and the handler instead of following
        them (Kafka's consumer fetches ahead the same way). Each carries the acks of the batch
        handled before it. The events pulled ahead are this consumer's until it settles them: if
        ``run`` ends before handling them, they are handed back (``release``: the attempt is not
        counted)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done = until or (lambda: False)
        wait = self.idle_s
        handled = 0
        ok: list = []  # positions handled and not acked yet: acked with the next pull, or on the way out
        sent: deque = deque()  # ack-and-pulls sent ahead of the batch in hand, oldest first
        try:
            while not self._stop.is_set() and not done() and (deadline is None or time.monotonic() < deadline):
                try:
                    if sent:
                        got = self._finish(sent[0])
                        sent.popleft()
                    else:
                        got = self.ack_and_pull(ok) if ok else self.pull()
                        ok = []
                except _RETRIED:
                    # The store is failing over: its state is intact, ask again (acking twice is harmless;
                    # what a lost pull handed out times out and is handed out again). The calls sent
                    # ahead are settled first: their acks are sent again, their events handed back.
                    ok = self._hand_back(sent, ok)
                    self.retries += 1
                    self._stop.wait(self.retry_s)
                    continue
                if not got:
                    self._stop.wait(wait)
                    wait = min(wait * 2, self.max_idle_s)
                    continue
                wait = self.idle_s
                if len(got) == self.batch:  # a full batch: more is likely waiting
                    while len(sent) < self._prefetch_depth():
                        sent.append(self._ack_and_pull_nowait(ok))
                        ok = []
                        self.prefetched += 1
                failed = []
                before = len(ok)  # acks of an earlier batch may wait here too (no call went ahead)
                for event, attempt in got:
                    if attempt > 1:
                        self.redelivered += 1
                    try:
                        handler(event)
                        ok.append(event.position)
                    except Exception as e:  # noqa: BLE001 - the handler's failure is the event's fate, not ours
                        failed.append(((event.position,), f"{type(e).__name__}: {e}"))
                self._settle([], failed, on_error)
                handled += len(ok) - before
                self.handled += len(ok) - before
                self.failed += len(failed)
        finally:
            ok = self._hand_back(sent, ok)
            self._settle(ok, [], on_error)  # the last batch's acks
        return handled

    def _prefetch_depth(self) -> int:
        """How many batches :meth:`run` pulls ahead: ``prefetch``, less what the group's
        ``max_in_flight`` has no room for beside the batch in hand (a pull with no room would be
        handed nothing, each time). The group's settings are read once (0 until they could be)."""
        if self._depth is None:
            if not self.prefetch:
                self._depth = 0
            else:
                try:
                    room = ConsumerGroups(self.client).info(self.group)["max_in_flight"] // self.batch - 1
                except _RETRIED:
                    return 0  # asked again at the next full batch
                self._depth = max(0, min(self.prefetch, room))
        return self._depth

    def _hand_back(self, sent: deque, ok: list) -> list:
        """Settle the pulls sent ahead (on the way out of :meth:`run`, or when one failed): wait for
        each and hand its events back unhandled (``release``); returns ``ok`` with the acks of those
        that failed, to send again (what a failed one handed out times out)."""
        while sent:
            positions, call = sent.popleft()
            try:
                got = self._finish((positions, call))
            except Exception:  # noqa: BLE001 - its acks are sent again; what it handed out times out
                ok = [*positions, *ok]
                continue
            if got:
                self._settle([], [(tuple(e.position for e, _ in got), "pulled ahead, not handled")], "release")
                self.released += len(got)
        return ok

    def _settle(self, ok: list, failed: list, on_error: str) -> None:
        """Ack and nack a batch; a call lost to a failover is repeated (settling twice is harmless)."""
        while True:
            try:
                if ok:
                    self.ack(ok)
                for positions, reason in failed:
                    self.nack(positions, on_error, reason)
                return
            except _RETRIED:
                self.retries += 1
                if self._stop.wait(self.retry_s):
                    return  # stopping: the unsettled events time out and go to another consumer
