"""Projections: fold events into a read model whose checkpoint moves in the same write as its rows.

Theory of operation
-------------------
A projection (DDIA 11, "Deriving current state from the event log") is a
function from events to changes of a read model: a user's :class:`Projection`
says, for each event, which read-model keys it sets or deletes. A
:class:`ProjectionRunner` feeds it a catch-up subscription's pages (:mod:`.subscription`)
and, after each page, writes the page's changes *and* the checkpoint after the
page in one atomic write (:func:`~.procedures.project`). The write also checks
that the checkpoint is still the one the runner started the page from.

That gives effectively-once processing without two-phase commit (the
"idempotent writes with the offset stored alongside" of DDIA 11, "Fault
tolerance"): if the runner crashes before the write, nothing of the page
happened and the next runner redoes it from the old checkpoint; after the write,
the model and the checkpoint agree and nothing is redone. Two runners of one
projection cannot both apply a page: the second's write finds the checkpoint
moved and is refused (:class:`~ddia_ray.errors.ProjectionConflictError`).

Where the read model lives is a :class:`ReadModel`: by default rows in the event
store itself (its storage engine, replicated with the events), or in any
replicated store launched with the event store's procedures; a user's own store
(a PostgreSQL table, say) fits by implementing :class:`ReadModel`'s three methods
with a transaction that writes the rows and the checkpoint together.

Rebuilding (:meth:`ProjectionRunner.rebuild`) deletes the model and its
checkpoint and folds every event again from position 0: the event log is the
source of truth and the read model is derived state.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from ..errors import InvalidArgumentError
from .client import EventStoreClient
from .records import RecordedEvent
from .subscription import CatchUpSubscription

__all__ = ["ReadModel", "StoreReadModel", "View", "Projection", "ProjectionRunner"]


class ReadModel(Protocol):
    """Where a projection keeps its rows and checkpoint (see the module docstring)."""

    def read(self, name: str, keys: tuple) -> tuple[int, tuple]:
        """The checkpoint and the values of ``keys`` (None where absent), as of one moment."""

    def commit(self, name: str, expected: int, checkpoint: int, changes: tuple) -> None:
        """Apply ``changes`` (``(key, value or None)``) and move the checkpoint from ``expected`` to
        ``checkpoint`` atomically; raise ProjectionConflictError if it is not at ``expected``."""

    def reset(self, name: str) -> None:
        """Delete the rows and the checkpoint."""


class StoreReadModel:
    """A read model kept by an event store (or any replicated store launched with the event store's
    procedures), through its client's backend: replicated like the events themselves."""

    def __init__(self, client: EventStoreClient) -> None:
        self.client = client

    def read(self, name: str, keys: tuple) -> tuple[int, tuple]:
        """See :class:`ReadModel`."""
        return self.client.query("events.read_model", (name, tuple(keys)))

    def commit(self, name: str, expected: int, checkpoint: int, changes: tuple) -> None:
        """See :class:`ReadModel`."""
        self.client.call("events.project", (name, expected, checkpoint, changes))

    def reset(self, name: str) -> None:
        """See :class:`ReadModel`."""
        self.client.call("events.reset_projection", (name,))

    def get(self, name: str, key: bytes) -> bytes | None:
        """The value of ``key`` in projection ``name``'s read model (a query for users)."""
        return self.read(name, (key,))[1][0]

    def scan(self, name: str, start: bytes = b"", end: bytes | None = None, *, limit: int = 1000) -> list:
        """Up to ``limit`` ``(key, value)`` pairs of the read model from ``start`` to ``end``."""
        found, values = self.client.query(
            "events.scan_model", (name, start, end, limit))
        return list(zip(found, values))


class View:
    """The read model as one page of events sees it: reads go to the model once per key, writes
    are kept here until the runner commits them with the checkpoint."""

    def __init__(self, model: ReadModel, name: str) -> None:
        self._model, self._name = model, name
        self._seen: dict[bytes, bytes | None] = {}
        self.changes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` with this page's changes applied."""
        if type(key) is not bytes:
            raise InvalidArgumentError(f"read-model keys are bytes, got {type(key).__name__}")
        if key in self.changes:
            return self.changes[key]
        if key not in self._seen:
            self._seen[key] = self._model.read(self._name, (key,))[1][0]
        return self._seen[key]

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` (committed with the page)."""
        if type(key) is not bytes or type(value) is not bytes:
            raise InvalidArgumentError("read-model keys and values are bytes")
        self.changes[key] = value

    def delete(self, key: bytes) -> None:
        """Remove ``key`` (committed with the page)."""
        if type(key) is not bytes:
            raise InvalidArgumentError(f"read-model keys are bytes, got {type(key).__name__}")
        self.changes[key] = None


class Projection:
    """A named fold of events into a read model: override :meth:`handle` (or pass ``handle=``).
    ``stream_prefix``/``type_prefix`` choose the events it sees (all of ``$all`` by default)."""

    def __init__(self, name: str, handle: Callable[[RecordedEvent, View], Any] | None = None, *,
                 stream_prefix: str | None = None, type_prefix: str | None = None) -> None:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InvalidArgumentError(f"a projection's name is a non-empty str without NUL, got {name!r}")
        self.name = name
        self.stream_prefix, self.type_prefix = stream_prefix, type_prefix
        if handle is not None:
            self.handle = handle  # type: ignore[method-assign,assignment]

    def handle(self, event: RecordedEvent, view: View) -> None:
        """Change the read model for ``event`` through ``view`` (must be deterministic: a rebuild
        must produce the same model)."""
        raise NotImplementedError(f"projection {self.name!r} defines no handle()")


class ProjectionRunner:
    """Runs a :class:`Projection` over an event store's ``$all`` into a :class:`ReadModel`
    (see the module docstring); ``page``: events per atomic commit."""

    def __init__(self, projection: Projection, client: EventStoreClient, model: ReadModel | None = None, *,
                 page: int = 500) -> None:
        self.projection = projection
        self.client = client
        self.model: ReadModel = model if model is not None else StoreReadModel(client)
        if type(page) is not int or page < 1:
            raise InvalidArgumentError(f"page is an int >= 1, got {page!r}")
        self.page = page
        self.processed = 0
        self.commits = 0
        self.checkpoint = 0
        self._last_seen_ms = 0

    def run(self, *, until: Callable[[], bool] | None = None, timeout_s: float | None = None) -> int:
        """Fold events from the stored checkpoint until ``until()`` (checked after each commit) or
        ``timeout_s``; returns how many events it handled. Stops with ProjectionConflictError if
        another runner moved the checkpoint (nothing of the refused page was applied)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.checkpoint = self.model.read(self.projection.name, ())[0]
        sub = CatchUpSubscription(self.client, from_position=self.checkpoint, page=self.page,
                                  stream_prefix=self.projection.stream_prefix,
                                  type_prefix=self.projection.type_prefix)
        done = until or (lambda: False)
        handled = 0
        while not done() and (deadline is None or time.monotonic() < deadline):
            got = sub.next_page(deadline)
            if got is None:
                continue  # nothing new: the subscription waited; look at the clock and until() again
            events, after = got
            view = View(self.model, self.projection.name)
            for event in events:
                self.projection.handle(event, view)
            self.model.commit(self.projection.name, self.checkpoint, after, tuple(view.changes.items()))
            self.checkpoint = after
            self.commits += 1
            handled += len(events)
            self.processed += len(events)
            if events:
                self._last_seen_ms = events[-1].created_ms
        return handled

    def rebuild(self, **run_options: Any) -> int:
        """Delete the read model and fold every event again from position 0 (see :meth:`run`)."""
        self.model.reset(self.projection.name)
        self.checkpoint = 0
        return self.run(**run_options)

    def stats(self) -> dict:
        """``checkpoint``; ``lag_events``: events committed to ``$all`` past the checkpoint;
        ``lag_s``: age of the oldest event not yet folded (0 when caught up); and the counters."""
        rows, _, _ = self.client.read_all_page(-1, backward=True, page=1)
        end = rows[0][2] + 1 if rows else 0
        lag_events = max(0, end - self.checkpoint)
        lag_s = 0.0
        if lag_events:
            first = self.client.read_all_page(self.checkpoint, page=1)[0]
            if first:
                lag_s = max(0.0, time.time() - first[0][7] / 1000)
        return {"name": self.projection.name, "checkpoint": self.checkpoint, "lag_events": lag_events,
                "lag_s": lag_s, "processed": self.processed, "commits": self.commits}
