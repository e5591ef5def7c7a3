"""What an event store takes and gives: events to append, recorded events, append results, metadata.

Theory of operation
-------------------
An event to append is an :class:`EventData`: an id (a UUID string the writer
chooses once, so a retried append is recognised), a type, the payload bytes and
optional metadata bytes. Users normally append their own event classes, which
are codec records (:func:`ddia_ray.codec.record`): the client turns each into
an ``EventData`` whose type is the record's tag and whose payload is its
versioned msgpack, so reading it back runs the record's upgrade steps (an old
event version is upcast on read, as pyeventsourcing's upcasting does).

The store numbers each stream's events from 0 (its *version*, EventStoreDB's
event number) and every event of the store from 0 in one global order, its
*position* in ``$all`` (unique and gap-free among committed events, since the
replicated log applies appends one at a time). A :class:`RecordedEvent` carries
both, the stream, and the creation time the appender stamped (milliseconds
since the epoch, the appender's clock: it only drives ``max_age``).

Expected versions follow EventStoreDB: :data:`ANY`, :data:`NO_STREAM`,
:data:`STREAM_EXISTS`, or the exact version of the stream's last event.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import codec
from ..codec import record
from ..errors import InvalidArgumentError

__all__ = ["ANY", "NO_STREAM", "STREAM_EXISTS", "EventData", "RecordedEvent", "AppendResult", "StreamMetadata",
           "check_stream", "check_projection", "check_expected", "event_data", "recorded_event", "MAX_EVENT_BYTES",
           "MAX_BATCH_EVENTS"]

#: Append whatever the stream's version.
ANY = "any"
#: Append only to a stream that has no event (never written, or soft-deleted).
NO_STREAM = "no_stream"
#: Append only to a stream that has at least one event.
STREAM_EXISTS = "stream_exists"
_EXPECTED_WORDS = (ANY, NO_STREAM, STREAM_EXISTS)

#: One event's payload plus metadata: an event is a fact, not a blob store (EventStoreDB's limit is 16 MiB).
MAX_EVENT_BYTES = 4 << 20
#: Events in one append: one log entry holds them all, and every replica applies it at once.
MAX_BATCH_EVENTS = 10_000
_NAME_MAX = 1024


def check_stream(stream: Any) -> str:
    """``stream`` if it is a valid stream name (a non-empty str without NUL; ``$`` names are the store's)."""
    if not isinstance(stream, str) or not stream or len(stream) > _NAME_MAX or "\x00" in stream:
        raise InvalidArgumentError(f"a stream name is a non-empty str of at most {_NAME_MAX} characters without "
                                   f"NUL, got {stream!r:.80}")
    if stream.startswith("$"):
        raise InvalidArgumentError(f"stream names starting with '$' belong to the store ($all, $ce-...), got "
                                   f"{stream!r:.80}")
    return stream


def check_projection(name: Any) -> str:
    """``name`` if it can name a projection (a non-empty str without NUL, at most 256 characters)."""
    if not isinstance(name, str) or not name or len(name) > 256 or "\x00" in name:
        raise InvalidArgumentError(f"a projection's name is a non-empty str without NUL, got {name!r:.80}")
    return name


def check_expected(expected: Any) -> int | str:
    """``expected`` if it is an expected version: ANY, NO_STREAM, STREAM_EXISTS or an int >= 0."""
    if type(expected) is int and expected >= 0:
        return expected
    if isinstance(expected, str) and expected in _EXPECTED_WORDS:
        return expected
    raise InvalidArgumentError(f"an expected version is one of {_EXPECTED_WORDS} or the int version of the "
                               f"stream's last event (>= 0), got {expected!r:.80}")


@record("events.data", version=1, fields_checked=True)
class EventData:
    """One event to append: ``id`` (a UUID string), ``type``, ``data`` and ``metadata`` (bytes)."""

    id: str
    type: str
    data: bytes
    metadata: bytes = b""

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id or len(self.id) > 128:
            raise InvalidArgumentError(f"an event id is a non-empty str of at most 128 characters, got {self.id!r:.80}")
        if not isinstance(self.type, str) or not self.type or len(self.type) > _NAME_MAX or "\x00" in self.type:
            raise InvalidArgumentError(f"an event type is a non-empty str without NUL, got {self.type!r:.80}")
        if type(self.data) is not bytes or type(self.metadata) is not bytes:
            raise InvalidArgumentError("an event's data and metadata are bytes")
        if len(self.data) + len(self.metadata) > MAX_EVENT_BYTES:
            raise InvalidArgumentError(f"an event holds at most {MAX_EVENT_BYTES} bytes of data and metadata, "
                                       f"got {len(self.data) + len(self.metadata)}")


def event_data(event: Any, *, event_id: str | None = None, metadata: bytes = b"") -> EventData:
    """``event`` as an :class:`EventData`: itself if it is one, else a codec record encoded under its tag."""
    if type(event) is EventData:
        return event
    rt = codec.record_type_of(event)
    if rt is None:
        raise InvalidArgumentError(f"an event is a codec record (a class decorated with ddia_ray.codec.record) or "
                                   f"an EventData, got {type(event).__name__}")
    return EventData(event_id or str(uuid.uuid4()), rt.tag, codec.encode(event), metadata)


@record("events.recorded", version=1)
class RecordedEvent:
    """An event as the store keeps it: its ``stream`` and ``version`` there, its ``position`` in
    ``$all``, and what was appended (``created_ms``: the appender's clock)."""

    stream: str
    version: int
    position: int
    id: str
    type: str
    data: bytes
    metadata: bytes
    created_ms: int

    def decode(self) -> Any:
        """The event as its codec record (upgraded from an older version by the codec's steps)."""
        return codec.decode(self.data)


#: A :class:`RecordedEvent` of a read row's fields, in order (:func:`~ddia_ray.codec.prechecked_maker`:
#: half the time of the dataclass's own ``__init__``, and a page of events builds a thousand). The
#: class has no ``__post_init__``: nothing is skipped but the per-field ``object.__setattr__``.
recorded_event = codec.prechecked_maker(RecordedEvent)


@record("events.append_result", version=1)
class AppendResult:
    """Where an append went: the stream's ``next_expected_version`` (its last event's version) and
    the ``$all`` positions of the batch's first and last event (-1 for an empty batch)."""

    stream: str
    first_version: int
    next_expected_version: int
    first_position: int
    last_position: int


@record("events.stream_metadata", version=1)
class StreamMetadata:
    """A stream's retention and custom metadata (EventStoreDB's ``$maxCount``, ``$maxAge``, ``$tb``).

    Events outside the limits disappear from stream reads at once and are removed (or archived)
    later, as EventStoreDB's scavenge does; ``$all`` keeps them until then."""

    max_count: int | None = None
    max_age_s: float | None = None
    truncate_before: int | None = None
    custom: dict | None = None

    def __post_init__(self):
        if self.max_count is not None and (type(self.max_count) is not int or self.max_count < 1):
            raise InvalidArgumentError(f"max_count is an int >= 1 or None, got {self.max_count!r}")
        if self.max_age_s is not None and (not isinstance(self.max_age_s, (int, float))
                                           or isinstance(self.max_age_s, bool) or not self.max_age_s > 0):
            raise InvalidArgumentError(f"max_age_s is a number of seconds > 0 or None, got {self.max_age_s!r}")
        if self.truncate_before is not None and (type(self.truncate_before) is not int or self.truncate_before < 0):
            raise InvalidArgumentError(f"truncate_before is a version >= 0 or None, got {self.truncate_before!r}")
        if self.custom is not None and not (isinstance(self.custom, dict) and all(type(k) is str for k in self.custom)):
            raise InvalidArgumentError("custom metadata is a dict with str keys")


# The event bus's records share the "events." tag prefix, which the codec maps to this module: a
# process that decodes one of them without having imported the bus finds it through this import.
from . import bus_records  # noqa: E402, F401
