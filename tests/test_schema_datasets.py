"""Parquet datasets read at any registered version: columnar migration steps up and down, against the
field-map migration as the model; datasets written, read back and rewritten through fsspec; and an
event archive whose events were written at two versions, read at either."""

from __future__ import annotations

import uuid

import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from ddia_ray.errors import MigrationError
from ddia_ray.events.archive import archive, archive_dataset
from ddia_ray.events.client import EventStoreClient
from ddia_ray.events.local import LocalBackend
from ddia_ray.events.records import EventData
from ddia_ray.schema import AddField, ChangeType, RemoveField, RenameField, conversion
from ddia_ray.schema.datasets import (METADATA_KEY, dataset_version, events_table, iter_dataset, migrate_table,
                                      read_dataset, rewrite_dataset, write_dataset)
from ddia_ray.schema.registry import RegistryClient
from ddia_ray.schema.upcasting import frame_record

CALLS: list = []


@conversion("tests.datasets.to_cents")
def _to_cents(value):
    CALLS.append(value)
    return int(round(value * 100))


@conversion("tests.datasets.from_cents")
def _from_cents(value):
    return value / 100


def _row(*fields) -> dict:
    return {"type": "record", "name": "shop.Order", "fields": list(fields)}


V1 = _row({"name": "id", "type": "long"}, {"name": "mail", "type": "string"}, {"name": "price", "type": "double"},
          {"name": "fax", "type": ["null", "string"], "default": None})
V2 = _row({"name": "id", "type": "long"}, {"name": "email", "type": "string"}, {"name": "price", "type": "double"},
          {"name": "fax", "type": ["null", "string"], "default": None},
          {"name": "country", "type": "string", "default": "NL"})
V3 = _row({"name": "id", "type": "long"}, {"name": "email", "type": "string"}, {"name": "price", "type": "long"},
          {"name": "country", "type": "string", "default": "NL"})


@pytest.fixture(scope="module")
def history():
    c = RegistryClient(LocalBackend())
    c.set_compatibility("NONE")
    c.register("shop.order", V1)
    c.register("shop.order", V2, migration=(RenameField("mail", "email"), AddField("country", "NL")))
    cents = ChangeType("price", "long", "tests.datasets.to_cents", "tests.datasets.from_cents")
    c.register("shop.order", V3, migration=(RemoveField("fax", "-"), cents))
    return c.history("shop.order")


def _v1(n: int, seed: int = 0) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "mail": f"u{(i + seed) % 3}@x", "price": (i % 4) * 1.25,
                                  "fax": None if i % 2 else f"f{i}"} for i in range(n)],
                                schema=pa.schema([pa.field("id", pa.int64(), False),
                                                  pa.field("mail", pa.string(), False),
                                                  pa.field("price", pa.float64(), False),
                                                  pa.field("fax", pa.string(), True)]))


def test_a_table_goes_up_the_chain_as_each_row_would(history):
    table = _v1(6)
    got = migrate_table(table, history, 1, 3)
    assert got.schema == history.schema(3).to_arrow()
    want = [history.migrate(row, 1, 3) for row in table.to_pylist()]
    assert got.to_pylist() == want  # the field-map migration is the model


def test_a_table_comes_back_down_for_an_old_reader(history):
    v3 = migrate_table(_v1(5), history, 1, 3)
    back = migrate_table(v3, history, 3, 1)
    assert back.column_names == ["id", "mail", "price", "fax"]
    assert back["fax"].to_pylist() == ["-"] * 5  # the removed field's default for old readers
    assert back["price"].to_pylist() == _v1(5)["price"].to_pylist()
    assert back.to_pylist() == [history.migrate(row, 3, 1) for row in v3.to_pylist()]


def test_a_conversion_runs_once_per_distinct_value(history):
    CALLS.clear()
    migrate_table(_v1(1000), history, 2 - 1, 3)
    assert sorted(CALLS) == [0.0, 1.25, 2.5, 3.75]  # 1000 rows, four prices


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 1 << 40), st.text(max_size=5), st.integers(0, 10_000),
                               st.none() | st.text(max_size=3)), max_size=20),
       start=st.integers(1, 3), end=st.integers(1, 3))
def test_columnar_and_row_migration_agree(history, rows, start, end):
    base = pa.Table.from_pylist([{"id": i, "mail": m, "price": p / 4, "fax": f} for i, m, p, f in rows],
                                schema=_v1(0).schema)
    table = migrate_table(base, history, 1, start)  # data as version `start` wrote it
    got = migrate_table(table, history, start, end)
    assert got.to_pylist() == [history.migrate(r, start, end) | _defaults(history, start, end, r)
                               for r in table.to_pylist()]


def _defaults(history, start, end, row) -> dict:
    """Fields of ``end`` that the field-map migration leaves to the reader's defaults."""
    out = {}
    for f in history.schema(end).avro["fields"]:
        if f["name"] not in history.migrate(row, start, end) and "default" in f:
            out[f["name"]] = f["default"]
    return out


def test_write_read_and_rewrite_a_dataset(history):
    url = f"memory://ds-{uuid.uuid4().hex}"
    assert write_dataset([_v1(3), _v1(4, seed=1)], f"{url}/v1", history, 1) == 7
    assert dataset_version(pq.read_schema(f"{url}/v1/part-00000.parquet".replace("memory://", ""),
                                          filesystem=_memfs()), history) == 1
    v3 = read_dataset(f"{url}/v1", history)  # the latest, by default
    assert v3.num_rows == 7 and v3.column_names == ["id", "email", "price", "country"]
    batches = list(iter_dataset(f"{url}/v1", history, version=2, batch_rows=2))
    assert len(batches) >= 4 and sum(b.num_rows for b in batches) == 7
    assert rewrite_dataset(f"{url}/v1", f"{url}/v3", history) == 7
    meta = pq.read_schema(f"{url}/v3/part-00000.parquet".replace("memory://", ""), filesystem=_memfs()).metadata
    assert b'"version": 3' in meta[METADATA_KEY]
    # read back as version 1: all but fax, which version 3 no longer holds (its default for old readers)
    assert read_dataset(f"{url}/v3", history, version=1).to_pylist() == \
        [r | {"fax": "-"} for r in read_dataset(f"{url}/v1", history, version=1).to_pylist()]


def test_a_dataset_without_metadata_is_matched_by_its_columns(history, tmp_path):
    pq.write_table(migrate_table(_v1(2), history, 1, 2), tmp_path / "plain.parquet")
    plain = pq.read_schema(tmp_path / "plain.parquet")
    assert dataset_version(plain.remove_metadata(), history) == 2
    with pytest.raises(MigrationError, match="name the version"):
        dataset_version(pa.schema([("other", pa.int32())]), history)
    foreign = plain.with_metadata({METADATA_KEY: b'{"subject": "users", "version": 1}'})
    with pytest.raises(MigrationError, match="users"):
        dataset_version(foreign, history)


def _memfs():
    import fsspec

    return fsspec.filesystem("memory")


def test_an_event_archive_read_at_either_version(history):
    """Events appended by writers at versions 1 and 3 of the record, archived to Parquet, then read
    as a table at version 1 (an old reader) and at version 3 (a new one)."""
    store = EventStoreClient(LocalBackend())
    written = []
    for i in range(8):
        v = 1 if i < 5 else 3
        fields = {"id": i, "mail": f"u{i}@x", "price": i * 0.5, "fax": None}
        fields = history.migrate(fields, 1, v)
        written.append((v, fields))
        store.append(f"order-{i % 2}", [EventData(f"e{i}", "shop.order", frame_record("shop.order", v, fields))])
        store.append("noise", [EventData(f"n{i}", "other", b"not a record")])
    url = f"memory://archive-{uuid.uuid4().hex}"
    archive(store, url, before_position=16, rows_per_file=5)
    data = archive_dataset(store, url)
    new = events_table(data, history, version=3)
    assert new.num_rows == 8 and new["event_position"].to_pylist() == sorted(new["event_position"].to_pylist())
    assert new.select(["id", "email", "price", "country"]).to_pylist() == \
        [history.migrate(f, v, 3) | ({"country": "NL"} if v == 1 else {}) for v, f in written]
    old = events_table(data, history, version=1)
    assert old.column_names[:4] == ["id", "mail", "price", "fax"]
    assert old["mail"].to_pylist() == [f"u{i}@x" for i in range(8)]
    assert old["fax"].to_pylist() == [None] * 5 + ["-"] * 3  # a v3 event lost its fax: the default
    assert set(old["event_stream"].to_pylist()) == {"order-0", "order-1"}
    assert events_table(data, history, event_type="missing").num_rows == 0
