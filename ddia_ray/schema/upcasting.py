"""Upcasting events with the registry's migrations: an event recorded at one version, read at another.

Theory of operation
-------------------
An event store keeps each event as it was appended: a codec record's payload, whose frame names
its tag and the version of the class that wrote it (:mod:`ddia_ray.codec`). A reader built
against another version of that class either upgrades it with the class's ``upgrades=`` steps
(take them from the registry with :meth:`RegistryClient.codec_upgrades
<ddia_ray.schema.registry.RegistryClient.codec_upgrades>`) or, when the reader is a generic
consumer with no class (a projection over field maps, an analytics job), asks
:class:`EventUpcaster` for the fields at the version it reads. The upcaster decodes the frame
without building the record, migrates its field map through the subject's chain (up for an old
event, *down* for an event newer than the reader: DDIA 4.1's forward compatibility), and either
returns the map (:meth:`EventUpcaster.fields`) or re-frames the event at the reader's version
(:meth:`EventUpcaster.__call__`), so ``RecordedEvent.decode()`` then builds the reader's class
directly. The subject of an event is its record tag (Confluent's ``RecordNameStrategy``) unless
``subject_of`` says otherwise.

The event store needs no change for this: the upcaster wraps what its reads return
(:meth:`EventUpcaster.events`), as pyeventsourcing's upcasting wraps its mapper.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator

import msgpack

from .. import codec
from ..errors import CorruptRecordError, UnknownSubjectError

__all__ = ["record_frame", "frame_record", "EventUpcaster"]


def _plain_value(value: Any) -> Any:
    """A field value with the records nested in it decoded by the codec (their own upgrades apply)."""
    if isinstance(value, msgpack.ExtType):
        return codec.decode(msgpack.packb(value))
    if isinstance(value, tuple):
        return tuple(_plain_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def record_frame(payload: bytes) -> tuple[str, int, dict]:
    """``(tag, version, fields)`` of a codec record's payload, without building the record (its
    class need not exist in this process). Records nested in the fields are decoded as records.
    :class:`~ddia_ray.errors.CorruptRecordError` for a payload that is not one record."""
    try:
        outer = msgpack.unpackb(payload, ext_hook=msgpack.ExtType, raw=False, strict_map_key=True)
        if not isinstance(outer, msgpack.ExtType) or outer.code != codec.FORMAT_1:
            raise CorruptRecordError("the payload is not a codec record")
        frame = msgpack.unpackb(outer.data, ext_hook=msgpack.ExtType, raw=False, use_list=False,
                                strict_map_key=True)
    except CorruptRecordError:
        raise
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise CorruptRecordError(f"the payload is not a codec record: {type(e).__name__}: {e}") from None
    if not (isinstance(frame, dict) and isinstance(frame.get("t"), str) and type(frame.get("v")) is int
            and isinstance(frame.get("f"), dict)):
        raise CorruptRecordError("the payload's record frame is not a map of tag, version and fields")
    return frame["t"], frame["v"], {k: _plain_value(v) for k, v in frame["f"].items()}


def frame_record(tag: str, version: int, fields: dict) -> bytes:
    """The payload of a codec record ``tag`` at ``version`` holding ``fields`` (:func:`record_frame`'s
    inverse): what the class of that version would encode."""
    inner = codec.encode({"t": tag, "v": version, "f": fields})
    return msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner))


class EventUpcaster:
    """Recorded events at the versions this reader reads (see the module docstring).

    ``history(subject, at_least)``: a subject's :class:`~.history.SubjectHistory` holding at least
    version ``at_least`` (a registry client's :meth:`history`). ``versions``: the version to read
    per subject (default: the version of this process's codec class of that tag, else the
    subject's latest). ``subject_of(tag)``: the subject of a tag (default: the tag itself).
    ``strict``: an event whose payload is no record, or whose subject the registry does not know,
    raises instead of passing through unchanged."""

    def __init__(self, history: Callable[[str, int], Any], *, versions: dict[str, int] | None = None,
                 subject_of: Callable[[str], str] | None = None, strict: bool = False) -> None:
        self._history = history
        self.versions = dict(versions or {})
        self.subject_of = subject_of or (lambda tag: tag)
        self.strict = strict

    def target(self, tag: str, subject: str, written: int) -> int:
        """The version an event of ``tag`` (``subject``) written at ``written`` is read at."""
        if subject in self.versions:
            return self.versions[subject]
        try:
            return codec.registered(tag).version
        except Exception:  # noqa: BLE001 - no class of this tag here: the subject's latest
            return self._history(subject, written).latest

    def fields(self, payload: bytes, version: int | None = None) -> tuple[str, int, dict]:
        """``(tag, version, fields)`` of ``payload`` carried to ``version`` (default: :meth:`target`)."""
        tag, written, fields = record_frame(payload)
        subject = self.subject_of(tag)
        to = self.target(tag, subject, written) if version is None else version
        return tag, to, self._history(subject, max(written, to)).migrate(fields, written, to)

    def __call__(self, event: Any) -> Any:
        """``event`` (a :class:`~ddia_ray.events.records.RecordedEvent`) with its payload re-framed at
        the version this reader reads; the event itself when it is at that version already, or (not
        ``strict``) when it carries no record or one of a subject the registry does not know."""
        try:
            tag, written, _ = record_frame(event.data)
        except CorruptRecordError:
            if self.strict:
                raise
            return event
        subject = self.subject_of(tag)
        try:
            to = self.target(tag, subject, written)
            if to == written:
                return event
            _, _, fields = self.fields(event.data, to)
        except UnknownSubjectError:
            if self.strict:
                raise
            return event
        return dataclasses.replace(event, data=frame_record(tag, to, fields))

    def events(self, events: Iterable[Any]) -> Iterator[Any]:
        """``events`` (a read of the event store: ``read_stream``, ``iter_all``, a subscription's
        batch) each upcast by :meth:`__call__`, lazily."""
        for e in events:
            yield self(e)
