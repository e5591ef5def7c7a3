"""Typed configuration: defaults, validation on write (an invalid value is never stored), validation
on read (a raw put around the schema is reported, never handed to a watcher), pydantic models and
plain dataclasses alike."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pydantic
import pytest

from ddia_ray.config import LocalConfig
from ddia_ray.config.typed import TypedConfig, validate
from ddia_ray.errors import InvalidArgumentError, InvalidConfigValueError, RevisionConflictError


class Breaker(pydantic.BaseModel):
    failure_threshold: int = pydantic.Field(5, ge=1)
    reset_s: float = pydantic.Field(10.0, gt=0)
    mode: Literal["count", "rate"] = "count"


@dataclasses.dataclass
class Cache:
    ttl_s: float = 60.0
    size: int = 1000

    def __post_init__(self):
        if self.size < 1:
            raise ValueError("size must be at least 1")


@pytest.fixture
def client():
    c = LocalConfig(watch_wait_s=0.2)
    yield c
    c.close()


def test_an_absent_key_reads_as_the_defaults(client):
    assert TypedConfig(client, "breaker", Breaker).get() == Breaker()
    assert TypedConfig(client, "cache", Cache).get() == Cache()


def test_a_valid_value_is_stored_as_a_plain_dict_and_read_back(client):
    cfg = TypedConfig(client, "breaker", Breaker)
    rev = cfg.set({"failure_threshold": "3"})  # unambiguous coercion, as from a command line
    kv = client.get("breaker")
    assert kv.mod_revision == rev and kv.value == {"failure_threshold": 3, "reset_s": 10.0, "mode": "count"}
    assert cfg.get() == Breaker(failure_threshold=3)
    cfg.set(Breaker(mode="rate"))
    assert cfg.get().mode == "rate"


@pytest.mark.parametrize("value, field", [({"failure_threshold": 0}, "failure_threshold"),
                                          ({"reset_s": "soon"}, "reset_s"),
                                          ({"mode": "random"}, "mode")])
def test_an_invalid_value_names_its_field_and_is_never_stored(client, value, field):
    cfg = TypedConfig(client, "breaker", Breaker)
    with pytest.raises(InvalidConfigValueError) as e:
        cfg.set(value)
    assert e.value.field == field and e.value.reason and field in str(e.value)
    assert client.get("breaker") is None and client.revision() == 0


def test_a_dataclass_validator_refuses_too(client):
    cfg = TypedConfig(client, "cache", Cache)
    with pytest.raises(InvalidConfigValueError) as e:
        cfg.set({"size": 0})
    assert "size must be at least 1" in e.value.reason
    with pytest.raises(InvalidConfigValueError):
        cfg.set("not a dict")
    assert client.revision() == 0


def test_a_raw_put_around_the_schema_is_reported_on_read(client):
    reported = []
    cfg = TypedConfig(client, "breaker", Breaker, on_invalid=reported.append)
    client.put("breaker", {"failure_threshold": -1})
    with pytest.raises(InvalidConfigValueError):
        cfg.get()
    assert len(reported) == 1 and cfg.invalid == 1


def test_a_watcher_never_sees_an_invalid_value(client):
    reported = []
    cfg = TypedConfig(client, "breaker", Breaker, on_invalid=reported.append)
    seen = []
    w = cfg.watch(seen.append)
    cfg.set({"failure_threshold": 2})
    client.put("breaker", {"failure_threshold": 0})  # invalid, written around the schema
    client.put("breaker", "garbage")
    cfg.set({"failure_threshold": 4})
    client.delete("breaker")                          # reads as the defaults again
    assert w.wait_revision(client.revision())
    assert [b.failure_threshold for b in seen] == [2, 4, 5]
    assert len(reported) == 2


def test_set_with_an_expected_revision_is_a_compare_and_set(client):
    cfg = TypedConfig(client, "cache", Cache)
    first = cfg.set({"size": 5}, expect_revision=0)  # create only if absent
    with pytest.raises(RevisionConflictError):
        cfg.set({"size": 6}, expect_revision=0)
    cfg.set({"size": 7}, expect_revision=first)
    assert cfg.get().size == 7


def test_update_changes_some_fields_and_repairs_an_invalid_value(client):
    cfg = TypedConfig(client, "cache", Cache, on_invalid=lambda e: None)
    cfg.set({"ttl_s": 5.0})
    cfg.update(size=10)
    assert cfg.get() == Cache(ttl_s=5.0, size=10)
    client.put("cache", {"size": -1})
    cfg.update(ttl_s=1.0)
    assert cfg.get() == Cache(ttl_s=1.0) and cfg.invalid == 1
    with pytest.raises(InvalidConfigValueError):
        cfg.update(size=0)


def test_a_schema_is_a_model_or_a_dataclass():
    with pytest.raises(InvalidArgumentError):
        validate(dict, {})
    assert validate(Cache, Cache(size=3)) == Cache(size=3)
