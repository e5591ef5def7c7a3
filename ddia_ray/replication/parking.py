"""Blocking queries: a replica holds a query whose answer is empty until a write changes it.

Theory of operation
-------------------
A watcher (a config watch, an event subscription at the head of ``$all``) asks
"what changed after revision R?" again and again. Polling answers that at the
cost of a delay (half the poll interval on average) and of queries that find
nothing. Consul's blocking queries and etcd's watches avoid both; this is the
replicated store's form of them: a :class:`~.records.ReplQuery` with
``wait_s > 0`` whose result is *empty* (``None`` or an empty tuple, list or
dict) is not answered at once. The replica parks it and runs it again each
time its applied position moves; the first non-empty result is the answer,
and when ``wait_s`` passes the (empty) result is. So a change reaches a
parked watcher in the time it takes the serving replica to apply it, and an
idle watcher costs one request per ``wait_s``.

The query function is unchanged: it must already answer "nothing yet" with an
empty value and bound its own work. Re-running every parked query after each
applied batch costs one query run per parked request; a client keeps one
parked request however many watches it serves (see the config store's watch
thread), and :data:`MAX_PARKED` bounds a replica's: past it a query is
answered at once, which degrades a blocking query to a poll, never to an
error.

A parked query keeps the read mode it came with. A ``leader`` read is answered
with :class:`~ddia_ray.errors.NotLeaderError` when its replica stops leading
(the client asks the new leader, from the position it had); any other read
stays parked on its replica, whose state still moves as it applies the log.

This module is pure: the replica gives it the current tick and position, and
it gives back the requests to answer.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["ParkedQueries", "is_empty", "MAX_PARKED"]

#: Queries one replica holds at most; later ones are answered at once.
MAX_PARKED = 4096


def is_empty(result: Any) -> bool:
    """Whether a query's result means "nothing yet" (``None`` or an empty tuple, list or dict)."""
    return result is None or (type(result) in (tuple, list, dict) and not result)


class ParkedQueries:
    """The blocking queries one replica holds (see the module docstring)."""

    def __init__(self, tick_s: float):
        self.tick_s = tick_s
        # request id -> (request, deadline tick, the applied position its empty result was read at)
        self._parked: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, rid: int, req: Any, now: int, applied: int) -> bool:
        """Hold request ``rid``, a query whose result at position ``applied`` came back empty, until
        ``req.wait_s`` passes; False when the replica holds :data:`MAX_PARKED` already (answer it at once)."""
        if len(self._parked) >= MAX_PARKED:
            return False
        self._parked[rid] = (req, now + max(1, round(req.wait_s / self.tick_s)), applied)
        return True

    def wake(self, now: int, applied: int, run: Callable[[Any], Any],
             answer: Callable[[int, Any], None]) -> None:
        """Answer what is due: a parked query runs again once the applied position moved past the one
        it was read at (``run(req)`` gives its :class:`~.records.QueryResult`; one whose ``result`` is
        not empty is the answer), and a query whose wait ran out is answered with its result now."""
        for rid, (req, deadline, seen) in list(self._parked.items()):
            if applied == seen and now < deadline:
                continue
            result = run(req)
            if now >= deadline or not is_empty(result.result):
                del self._parked[rid]
                answer(rid, result)
            else:
                self._parked[rid] = (req, deadline, applied)

    def drop(self, keep: Callable[[Any], bool], refuse: Callable[[int], None]) -> None:
        """Refuse (``refuse(rid)``) every parked query ``keep(req)`` rejects, such as a leader read
        on a replica that no longer leads."""
        for rid, (req, _, _) in list(self._parked.items()):
            if not keep(req):
                del self._parked[rid]
                refuse(rid)
