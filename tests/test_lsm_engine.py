"""LSM-tree API behaviour: bad input, closed databases, snapshots, ingest, options, durability modes."""

from __future__ import annotations

import itertools
import os

import pyarrow as pa
import pytest

from ddia_ray.errors import (ConfigError, DatabaseClosedError, InvalidArgumentError, NotADatabaseError)
from ddia_ray.storage.engine import MemoryEngine, StorageEngine, WriteBatch, open_engine
from ddia_ray.storage.lsm import LSMTree

_n = itertools.count()


def _url():
    return f"memory://lsm-engine-{next(_n)}"


@pytest.fixture
def db():
    tree = LSMTree.open(_url(), background=False, memtable_bytes=500, row_group_rows=4)
    yield tree
    tree.close()


def test_implements_the_engine_protocol_and_registers_itself():
    tree = open_engine(_url(), engine="lsm", background=False)
    assert isinstance(tree, LSMTree) and isinstance(tree, StorageEngine)
    tree.put("ключ", b"v")
    assert tree.get("ключ".encode()) == b"v"
    tree.close()


@pytest.mark.parametrize("call", [
    lambda db: db.put(1, b"v"),
    lambda db: db.put(b"k", "text"),
    lambda db: db.put(None, b"v"),
    lambda db: db.get(3.5),
    lambda db: db.delete(object()),
    lambda db: db.delete_range(None, b"z"),
    lambda db: db.delete_range(b"a", 7),
    lambda db: db.write([("put", b"k", b"v")]),
    lambda db: db.get_many([b"a", 1]),
    lambda db: db.get(b"a", snapshot=MemoryEngine().snapshot()),
    lambda db: db.ingest({"key": [b"a"], "value": [b"b"]}),
    lambda db: db.ingest(pa.table({"key": pa.array(["a"]), "value": pa.array([b"b"])})),
    lambda db: db.ingest(pa.table({"key": pa.array([b"a"])})),
    lambda db: db.ingest(pa.table({"key": pa.array([b"a", None]), "value": pa.array([b"b", b"c"])})),
])
def test_bad_arguments_raise_invalid_argument(db, call):
    with pytest.raises(InvalidArgumentError):
        call(db)


def test_reversed_ranges_are_config_errors(db):
    with pytest.raises(ConfigError):
        db.delete_range(b"b", b"a")
    with pytest.raises(ConfigError):
        db.scan(b"b", b"a")


@pytest.mark.parametrize("options", [
    {"compaction": "random"}, {"sync": "always"}, {"wal_recovery": "ignore"}, {"memtable_bytes": 0},
    {"l0_compaction_trigger": 8, "l0_slowdown_trigger": 4}, {"level_fanout": 1}, {"stall_timeout_s": -1},
    {"bloom_bits_per_key": 0}, {"no_such_option": 1}, {"memory_pool": "tcmalloc"},
])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        LSMTree.open(_url(), **options)


@pytest.mark.parametrize("pool", ["system", "default"])
def test_every_memory_pool_flushes_and_compacts_the_same_rows(pool):
    """The Arrow pool of the background jobs changes where buffers come from, never the data."""
    import pyarrow as pa

    tree = LSMTree.open(_url(), background=False, memtable_bytes=4096, l0_compaction_trigger=2, memory_pool=pool)
    before = pa.system_memory_pool().num_allocations()
    expect = {}
    for i in range(2000):
        key, value = b"k%05d" % (i * 7919 % 2000), b"v%d" % i
        tree.put(key, value)
        expect[key] = value
    assert tree.stats()["flushes"] >= 10 and tree.stats()["compactions"] >= 1
    assert dict(tree.scan()) == expect
    if pool == "system":  # the flushes' columns came from the C allocator's pool
        assert pa.system_memory_pool().num_allocations() > before
    tree.close()


def test_options_validate_themselves_when_built():
    """No path around the checks: building LSMOptions directly refuses what open() refuses."""
    from ddia_ray.storage.lsm.options import LSMOptions

    with pytest.raises(ConfigError):
        LSMOptions(memtable_bytes=-1)
    with pytest.raises(ConfigError):
        LSMOptions(l0_compaction_trigger=8, l0_slowdown_trigger=4)
    with pytest.raises(InvalidArgumentError):
        LSMOptions(background="yes")
    assert LSMOptions(memtable_bytes=1 << 20).memtable_bytes == 1 << 20


def test_wrongly_typed_options_are_invalid_arguments():
    with pytest.raises(InvalidArgumentError):
        LSMTree.open(_url(), memtable_bytes="big")


def test_closed_database_refuses_every_call():
    tree = LSMTree.open(_url(), background=False)
    tree.put(b"a", b"1")
    snap = tree.snapshot()
    it = tree.scan()
    tree.close()
    tree.close()  # idempotent
    for call in (lambda: tree.put(b"a", b"2"), lambda: tree.get(b"a"), lambda: tree.delete(b"a"),
                 lambda: tree.delete_range(b"a", b"b"), lambda: tree.write(WriteBatch().put(b"a", b"1")),
                 lambda: tree.scan(), lambda: tree.snapshot(), lambda: tree.flush(), lambda: tree.compact(),
                 lambda: tree.get_many([b"a"]), lambda: next(it)):
        with pytest.raises(DatabaseClosedError):
            call()
    snap.release()  # releasing after close is harmless


def test_released_snapshot_refuses_reads(db):
    snap = db.snapshot()
    snap.release()
    snap.release()
    with pytest.raises(DatabaseClosedError):
        db.get(b"a", snapshot=snap)


def test_snapshot_sees_exactly_the_writes_before_it_across_flush_and_compaction(db):
    for i in range(50):
        db.put(b"k%02d" % i, b"old")
    with db.snapshot() as snap:
        assert snap.seq == db.stats()["seq"]
        db.delete_range(b"k10", b"k20")
        for i in range(0, 50, 3):
            db.put(b"k%02d" % i, b"new")
        db.delete(b"k49")
        db.flush()
        db.compact()
        assert [v for _, v in db.scan(snapshot=snap)] == [b"old"] * 50
        assert db.get(b"k49", snapshot=snap) == b"old" and db.get(b"k49") is None
        assert db.get(b"k11") is None and db.get(b"k12") == b"new" and db.get(b"k21") == b"new"
    db.compact()  # the snapshot is gone: old versions and tombstones may be dropped now
    assert len(list(db.scan())) == 50 - 7 - 1  # k10..k19 except the re-put k12, k15, k18; and k49


def test_missing_database_without_create_is_not_a_database():
    with pytest.raises(NotADatabaseError):
        LSMTree.open(_url(), create_if_missing=False)


def test_error_if_exists_and_policy_mismatch_are_config_errors():
    url = _url()
    LSMTree.open(url, background=False).close()
    with pytest.raises(ConfigError):
        LSMTree.open(url, error_if_exists=True)
    with pytest.raises(ConfigError):
        LSMTree.open(url, compaction="tiered")


def test_close_keeps_unflushed_writes_in_the_wal():
    url = _url()
    tree = LSMTree.open(url, background=False)
    tree.put(b"a", b"1")
    tree.write(WriteBatch().put(b"b", b"2").delete(b"a").delete_range(b"x", b"z"))
    assert tree.stats()["flushes"] == 0
    tree.close()
    tree = LSMTree.open(url, background=False)
    assert tree.stats()["wal_replayed_entries"] == 4
    assert list(tree.scan()) == [(b"b", b"2")]
    tree.close(flush=True)
    tree = LSMTree.open(url, background=False)
    assert tree.stats()["wal_replayed_entries"] == 0 and tree.get(b"b") == b"2"
    tree.close()


@pytest.mark.parametrize("policy", ["leveled", "tiered"])
def test_ingest_bulk_loads_with_fresh_sequence_numbers(policy):
    url = _url()
    tree = LSMTree.open(url, background=False, compaction=policy, row_group_rows=16, target_file_bytes=2000)
    tree.put(b"k005", b"written-before")
    tree.put(b"zzz", b"untouched")
    before = tree.snapshot()
    keys = [b"k%03d" % i for i in range(300)]
    table = pa.table({"key": pa.array(keys + [b"k007"], pa.binary()),
                      "value": pa.array([k[::-1] for k in keys] + [b"last-wins"], pa.large_binary())})
    tree.ingest(table)
    assert tree.get(b"k005") == b"500k"
    assert tree.get(b"k007") == b"last-wins"
    assert tree.get(b"k005", snapshot=before) == b"written-before"
    assert tree.get(b"k100", snapshot=before) is None
    assert tree.stats()["seq"] == before.seq + 301
    before.release()
    tree.close()  # ingested rows never went through the WAL: they must be in the manifest
    tree = LSMTree.open(url, compaction=policy, background=False)
    assert tree.stats()["wal_replayed_entries"] == 0
    assert len(list(tree.scan())) == 301 and tree.get(b"zzz") == b"untouched"
    tree.put(b"k001", b"after")
    assert tree.get(b"k001") == b"after"
    tree.close()


def test_ingest_into_an_empty_leveled_tree_goes_to_the_last_level():
    tree = LSMTree.open(_url(), background=False, num_levels=4)
    tree.ingest(pa.table({"key": pa.array([b"a", b"b"]), "value": pa.array([b"1", b"2"])}))
    assert tree.stats()["level_files"] == (0, 0, 0, 1)
    tree.ingest(pa.table({"key": pa.array([b"a"]), "value": pa.array([b"3"])}))
    assert tree.stats()["level_files"] == (0, 0, 1, 1)  # just above the level it overlaps
    assert tree.get(b"a") == b"3" and tree.get(b"b") == b"2"
    tree.close()


def test_stats_report_amplification_and_levels(db):
    for i in range(300):
        db.put(b"key%04d" % i, b"x" * 20)
    for i in range(100):
        db.get(b"key%04d" % i)
    db.compact()
    s = db.stats()
    with pytest.raises(TypeError):
        s["gets"] = 0  # immutable
    assert s["write_amplification"] > 1
    assert s["read_amplification"] > 0
    assert s["space_amplification"] > 0
    assert sum(s["level_files"]) >= 1 and s["disk_bytes"] == sum(s["level_bytes"])
    assert s["user_bytes"] == 300 * 27 and s["gets"] == 100


def test_sync_modes_fsync_the_wal_when_they_promise(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    for mode in ("none", "batch", "flush"):
        synced.clear()
        tree = LSMTree.open(f"file://{tmp_path}/{mode}", sync=mode, background=False)
        for i in range(5):
            tree.put(b"k%d" % i, b"v")
        during_puts = sum(p.endswith(".log") for p in synced)
        tree.flush()
        at_flush = sum(p.endswith(".log") for p in synced) - during_puts
        tree.close()
        assert (during_puts, at_flush > 0) == {"none": (0, False), "batch": (5, False), "flush": (0, True)}[mode]
