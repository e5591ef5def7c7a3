"""Ray Data in and out of the partitioned store: a Dataset and a Parquet dataset written through the
routed writers, read back with one task per partition, each a snapshot of its partition."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.partitioning import PartitionedStore

ray_data = pytest.importorskip("ray.data")


def _table(n, prefix="k"):
    keys = [f"{prefix}{i:06d}".encode() for i in range(n)]
    return pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array([k[::-1] for k in keys], pa.binary())})


def _pairs(ds):
    import ray

    t = pa.concat_tables([ray.get(r) for r in ds.to_arrow_refs()])
    return dict(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))


@pytest.mark.parametrize("scheme", ["hash", "range"])
def test_a_dataset_round_trips_through_the_store(ray_session, tmp_path, scheme):
    options = {"partitions": 4} if scheme == "hash" else {"boundaries": [b"k001000", b"k002500"]}
    with PartitionedStore.launch(groups=2, replicas=1, scheme=scheme, **options) as store:
        table = _table(4000)
        assert store.write_dataset(ray_data.from_arrow(table)) == 4000
        pq.write_table(_table(500, "p"), tmp_path / "part-0.parquet")
        assert store.write_dataset(str(tmp_path)) == 500
        ds = store.to_ray_dataset()
        parts = len(store.partition_map().partitions)
        assert ds.materialize().num_blocks() == parts  # one read task, one block (< 100,000 rows) per partition
        got = _pairs(ds)
        want = dict(zip(table.column("key").to_pylist(), table.column("value").to_pylist()))
        assert len(got) == 4500 and all(got[k] == v for k, v in want.items())
        some = _pairs(store.to_ray_dataset(b"k001500", b"k003000"))
        assert set(some) == {k for k in want if b"k001500" <= k < b"k003000"}
        with store.client() as c:
            assert c.get(b"p000007") == b"700000p"
        with pytest.raises(InvalidArgumentError, match="no column"):
            store.write_dataset(ray_data.from_arrow(table), key="id")
        with pytest.raises(InvalidArgumentError, match="Ray Dataset or a Parquet path"):
            store.write_dataset([1, 2])
        with pytest.raises(InvalidArgumentError, match="ingest_rows must be an int"):
            store.write_dataset(ray_data.from_arrow(table), ingest_rows=2.5)
        with pytest.raises(ConfigError, match="batch_rows must be > 0"):
            store.write_dataset(ray_data.from_arrow(table), batch_rows=0)
        # A column of another type is refused whole, before any row of its batch is sent.
        with pytest.raises(Exception, match="binary column"):
            store.write_dataset(ray_data.from_arrow(pa.table({"key": [1, 2], "value": [b"a", b"b"]})))


def test_parquet_files_load_through_one_task_per_file(ray_session, tmp_path):
    """A Parquet path is read by the store's own tasks, one per file (files in subdirectories
    too, Spark's ``_SUCCESS`` marker skipped): row groups smaller than an ingest are joined, and
    every row arrives, whatever the number of tasks at once. Bad paths and columns are refused
    before any task runs; a column of another type fails in the task with the ingest's error."""
    data = tmp_path / "data"
    (data / "day=2").mkdir(parents=True)
    tables = [_table(700, "a"), _table(450, "b"), _table(30, "c")]
    for i, (t, where) in enumerate(zip(tables, ["", "day=2/", ""])):
        pq.write_table(t, data / f"{where}part-{i}.parquet", row_group_size=100)
    (data / "_SUCCESS").write_bytes(b"")
    with PartitionedStore.launch(partitions=4, groups=2, replicas=1) as store:
        assert store.write_dataset(str(data), ingest_rows=250, concurrency=1) == 1180
        assert store.write_dataset(f"file://{data / 'day=2'}", ingest_rows=10_000) == 450  # one file, as a URL
        want = {}
        for t in tables:
            want.update(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))
        with store.client() as c:
            assert c.get_many(list(want)) == list(want.values())
        assert sum(p["keys"] for p in store.stats(sizes=True)["partitions"].values()) == 1180
        with pytest.raises(InvalidArgumentError, match="cannot read a Parquet dataset"):
            store.write_dataset(str(tmp_path / "nowhere"))
        with pytest.raises(InvalidArgumentError, match=r"no column\(s\) \['id'\]"):
            store.write_dataset(str(data), key="id")
        with pytest.raises(ConfigError, match="in_flight must be > 0"):
            store.write_dataset(str(data), in_flight=0)
        odd = tmp_path / "odd"
        odd.mkdir()
        pq.write_table(pa.table({"key": [1, 2], "value": [b"a", b"b"]}), odd / "part-0.parquet")
        with pytest.raises(InvalidArgumentError, match="binary column"):
            store.write_dataset(str(odd))


def test_a_datasets_blocks_are_cut_and_grouped_into_load_tasks(ray_session):
    """A Dataset's blocks become load tasks of about ``batch_rows`` rows: one large block is cut
    into slices loaded in parallel, small ones are grouped; every row arrives once."""
    from ddia_ray.partitioning import datasets

    with PartitionedStore.launch(partitions=4, groups=2, replicas=1) as store:
        one_block = ray_data.from_arrow(_table(4000))
        tasks = list(datasets._block_tasks(store, one_block, "key", "value", 1500, 500, 8))
        assert [[(first, rows) for _, first, rows in t.args[2]] for t in tasks] == [
            [(0, 1500)], [(1500, 1500)], [(3000, 1000)]]
        small = ray_data.from_arrow([_table(300, f"s{i}") for i in range(7)])  # seven blocks of 300
        tasks = list(datasets._block_tasks(store, small, "key", "value", 1000, 500, 8))
        assert [sum(rows for _, _, rows in t.args[2]) for t in tasks] == [1000, 1000, 100]
        assert store.write_dataset(one_block, batch_rows=1500, ingest_rows=400) == 4000
        assert store.write_dataset(small, batch_rows=1000) == 2100
        with store.client() as c:
            assert c.get(b"k003999") == b"999300k" and c.get(b"s6000299") == b"9920006s"
        assert sum(p["keys"] for p in store.stats(sizes=True)["partitions"].values()) == 6100


def test_write_tasks_keep_one_client_per_store_instance(ray_session):
    """A Ray worker keeps its write tasks' client; a store launched again under the same name is
    another instance and gets a client of its own, not the old one's (its actors are dead), and a
    handle of the old instance is refused, not served by the new one."""
    from ddia_ray.errors import ComponentNotFoundError
    from ddia_ray.partitioning import datasets

    import ray

    def load(table, store_name, instance):  # what a load task runs (here in the driver's process)
        return datasets._load_blocks(store_name, instance, [(ray.put(table), 0, None)], "key", "value", 50, 8)

    name = "datasets-relaunched"
    first = PartitionedStore.launch(name, partitions=2, groups=1, replicas=1)
    old = first.instance
    assert load(_table(100), name, old) == 100
    cached = datasets._CLIENTS[(name, old, 8)][1]
    assert load(_table(10, "m"), name, old) == 10
    assert datasets._CLIENTS[(name, old, 8)][1] is cached  # the second task reused the connection
    first.shutdown(destroy_data=True)
    with PartitionedStore.launch(name, partitions=2, groups=1, replicas=1) as second:
        attached = PartitionedStore.connect(name, routers=False)
        assert second.instance not in ("", old) and attached.instance == second.instance
        attached.close()
        assert load(_table(100, "n"), name, second.instance) == 100
        with second.client() as c:
            assert c.get(b"n000042") == b"240000n" and c.get(b"k000042") is None
        datasets._CLIENTS.pop((name, old, 8))
        with pytest.raises(ComponentNotFoundError, match="instance"):
            load(_table(10), name, old)
    for key in [k for k in datasets._CLIENTS if k[0] == name]:
        store, client = datasets._CLIENTS.pop(key)
        client.close()
        store.close()
