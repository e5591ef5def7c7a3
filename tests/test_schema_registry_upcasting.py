"""The registry's migrations where data is read: a codec @record class whose upgrade steps come from the
registry, and the event upcaster that carries recorded events up (old events, new reader) and down (new
events, old reader) to the version a reader reads. One process: the event store and the registry
each run their replicas' own procedures over a LocalBackend."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.codec import record
from ddia_ray.errors import ConfigError, CorruptRecordError, UnknownSchemaError, UnknownSubjectError
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData
from ddia_ray.schema import RenameField
from ddia_ray.schema.registry import RegistryClient
from ddia_ray.schema.upcasting import frame_record, record_frame

TAG = "tests.upcast_order"


def _avro(*fields) -> dict:
    return {"type": "record", "name": TAG, "fields": list(fields)}


V1 = _avro({"name": "customer", "type": "string"}, {"name": "total", "type": "long"})
V2 = _avro({"name": "customer", "type": "string"}, {"name": "total", "type": "long"},
           {"name": "currency", "type": "string", "default": "EUR"})
V4 = _avro({"name": "total", "type": "long"}, {"name": "buyer", "type": "string", "default": ""},
           {"name": "currency", "type": "string", "default": "EUR"},
           {"name": "channel", "type": "string", "default": "web"})


def _define(registry):
    """This process's class of the event, version 3: its upgrade steps come from the registry (asked
    only when an old event is decoded, so the class exists before its own version is registered)."""

    @record(TAG, version=3, upgrades=registry.codec_upgrades(TAG, up_to=3))
    class OrderPlaced:
        total: int
        buyer: str = ""  # renamed from customer; a default keeps the rename BACKWARD compatible
        currency: str = "EUR"

    return OrderPlaced


@pytest.fixture
def registry():
    c = RegistryClient(LocalBackend())
    c.register(TAG, V1)
    c.register(TAG, V2)
    cls = _define(c)
    assert c.register_record(cls, migration=(RenameField("customer", "buyer"),)).version == 3
    return c


def _reader_class():
    return codec.registered(TAG).cls


def test_codec_upgrade_steps_come_from_the_registry(registry):
    cls = _reader_class()
    old = codec.decode(frame_record(TAG, 1, {"customer": "ann", "total": 5}))
    assert old == cls(5, "ann", "EUR")
    mid = codec.decode(frame_record(TAG, 2, {"customer": "bob", "total": 7, "currency": "USD"}))
    assert mid == cls(7, "bob", "USD")
    assert record_frame(codec.encode(mid)) == (TAG, 3, {"total": 7, "buyer": "bob", "currency": "USD"})


def test_a_step_the_registry_lacks_fails_the_decode_clearly():
    c = RegistryClient(LocalBackend())
    c.register(TAG, V1)
    _define(c)
    with pytest.raises(CorruptRecordError, match="no migration from version 2"):
        codec.decode(frame_record(TAG, 2, {"customer": "bob", "total": 7}))


def test_register_record_keeps_codec_and_registry_versions_in_step(registry):
    cls = _reader_class()
    assert registry.register_record(cls).version == 3  # the same schema: version 3, nothing written
    assert registry.versions(TAG) == [1, 2, 3]
    with pytest.raises(ConfigError, match="version 3 of the class but version 1"):
        RegistryClient(LocalBackend()).register_record(cls)


def _store_with_history(registry) -> EventStoreClient:
    """Events of one stream written by writers at versions 1, 2 and 3 (before any reader upgraded)."""
    store = EventStoreClient(LocalBackend())
    payloads = [frame_record(TAG, 1, {"customer": "ann", "total": 5}),
                frame_record(TAG, 2, {"customer": "bob", "total": 7, "currency": "USD"}),
                frame_record(TAG, 3, {"total": 9, "buyer": "cy", "currency": "GBP"})]
    store.append("order-1", [EventData(f"e{i}", TAG, p) for i, p in enumerate(payloads)])
    store.append("order-1", [EventData("raw", "note", b"plain bytes")])
    return store


def test_an_old_reader_and_a_new_reader_side_by_side(registry):
    store = _store_with_history(registry)
    events = store.read_stream("order-1")
    new = registry.upcaster(versions={TAG: 3})
    assert [new.fields(e.data)[2] for e in events[:3]] == [
        {"total": 5, "buyer": "ann", "currency": "EUR"}, {"total": 7, "buyer": "bob", "currency": "USD"},
        {"total": 9, "buyer": "cy", "currency": "GBP"}]
    old = registry.upcaster(versions={TAG: 1})  # a consumer still at version 1: downgraded, renames undone
    assert [old.fields(e.data)[2] for e in events[:3]] == [
        {"customer": "ann", "total": 5}, {"customer": "bob", "total": 7}, {"customer": "cy", "total": 9}]
    upcast = list(old.events(events))
    assert [record_frame(e.data)[1] for e in upcast[:3]] == [1, 1, 1]
    assert upcast[3] is events[3]  # not a record: passed through unchanged
    assert [e.position for e in upcast] == [e.position for e in events]


def test_upcast_events_decode_as_the_reader_class_even_when_newer(registry):
    cls = _reader_class()
    registry.register(TAG, V4)  # a writer moved on to version 4 (adds channel)
    store = _store_with_history(registry)
    store.append("order-1", [EventData("e4", TAG, frame_record(TAG, 4, {"buyer": "di", "total": 1,
                                                                       "currency": "EUR", "channel": "shop"}))])
    up = registry.upcaster()  # the target is this process's class version (3)
    decoded = [e.decode() for e in up.events(store.read_stream("order-1")) if e.type == TAG]
    assert decoded == [cls(5, "ann", "EUR"), cls(7, "bob", "USD"), cls(9, "cy", "GBP"), cls(1, "di", "EUR")]
    assert record_frame(codec.encode(decoded[-1]))[1] == 3  # read at 3: the downgrade dropped channel


def test_strict_upcasting_refuses_what_it_cannot_read(registry):
    store = _store_with_history(registry)
    store.append("order-1", [EventData("u", "other.tag", frame_record("other.tag", 1, {"a": 1}))])
    events = store.read_stream("order-1")
    lenient = registry.upcaster(versions={TAG: 2})
    assert lenient(events[4]) is events[4]  # a subject the registry does not know: unchanged
    strict = registry.upcaster(versions={TAG: 2}, strict=True)
    with pytest.raises(CorruptRecordError):
        strict(events[3])
    with pytest.raises(UnknownSubjectError):
        strict(events[4])
    with pytest.raises(UnknownSchemaError):  # no version 9: a reader asking for it is told so
        registry.upcaster(versions={TAG: 9}).fields(events[0].data)
