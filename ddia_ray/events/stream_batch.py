"""Many streams read in one query: ``events.read_streams``, what loading many aggregates costs.

Theory of operation
-------------------
A stream read is one round trip to the leader (``events.read_stream``), and for
the short streams an aggregate usually has, the round trip is most of its cost:
on this project's 2-core VM a 100-event stream took 430-510 us to read, of which
a bare query's round trip was 205-227 us (docs/events.md, "What it costs").
Reading 200 aggregates one after another pays that 200 times. This query reads a
batch of streams in one call, against one state of the replica, and answers each
as ``events.read_stream`` answers one packed page (:func:`~.queries.stream_page`):
so a reader pays a round trip per batch, and the per-stream work is the same.

Bounded work per call: at most :data:`MAX_BATCH_STREAMS` streams, and a budget
of :data:`BATCH_EVENTS` stored events over all of them. A stream the budget cuts
short gets a short page (its reader reads on from where it ends, as it does
after any page); a stream reached when the budget is spent is answered ``None``,
and its reader asks again for it. The first stream of a call always gets a page,
so a reader that asks again for what is left always gets further.

Retention, deletion and archived versions work as in a single stream read,
since each stream's page is that read's page; a tombstoned stream refuses the
whole call with :class:`~ddia_ray.errors.StreamDeletedError`, as reading the
streams one by one would refuse at that stream.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError
from ..replication.procedures import query
from .queries import MAX_PAGE_ROWS, stream_page

__all__ = ["read_streams", "MAX_BATCH_STREAMS", "BATCH_EVENTS"]

#: Streams one ``events.read_streams`` call reads at most; a reader sends more as several calls.
MAX_BATCH_STREAMS = 256
#: Stored events one call reads at most over all its streams (four single pages' worth: a reply of
#: about 2.5 MB at 100-byte events, well under a link's frame limit).
BATCH_EVENTS = 4 * MAX_PAGE_ROWS

_SHAPE = ("a batch stream read is asked with (((stream, from_version), ...), page, now_ms): at most "
          f"{MAX_BATCH_STREAMS} (str, int >= 0) pairs, an int page >= 1 and an int clock in ms")


@query("events.read_streams")
def read_streams(state, args: Any) -> tuple:
    """The first page (at most ``page`` events) of each stream of ``pairs``, forward from its
    ``from_version``, for ``args = (pairs, page, now_ms)``: a tuple with one answer per pair in
    order, each ``(found, last version, parts)`` as ``events.read_stream`` answers a packed page,
    or ``None`` for a stream this call's budget (:data:`BATCH_EVENTS`) did not reach."""
    if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], tuple)
            and 1 <= len(args[0]) <= MAX_BATCH_STREAMS and type(args[1]) is int and args[1] >= 1
            and type(args[2]) is int):
        raise InvalidArgumentError(_SHAPE)
    pairs, page, now_ms = args
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and type(pair[1]) is int and pair[1] >= 0):
            raise InvalidArgumentError(f"{_SHAPE}; got the pair {pair!r:.80}")
    page = min(page, MAX_PAGE_ROWS)
    budget = BATCH_EVENTS
    answers: list = []
    for stream, from_version in pairs:
        if budget <= 0:
            answers.append(None)
            continue
        answer = stream_page(state, stream, from_version, False, min(page, budget), now_ms, True)
        # What the page stored counts (a part is a chunk's events lo..hi), retention-hidden ones not:
        # they cost a header read each, bounded by the chunks a page scans.
        budget -= sum(hi - lo + 1 for _, lo, hi, _ in answer[2])
        answers.append(answer)
    return tuple(answers)
