"""``BTreeEngine`` behaviour: bad input, closed databases, foreign files, compaction, snapshots, scans."""

from __future__ import annotations

import itertools
import os

import fsspec
import pytest

from ddia_ray.errors import ConfigError, DatabaseClosedError, InvalidArgumentError, NotADatabaseError
from ddia_ray.storage import WriteBatch, open_engine
from ddia_ray.storage.btree import BTreeEngine

_N = itertools.count()


@pytest.fixture
def db():
    engine = BTreeEngine.open(f"memory://btree-engine/{next(_N)}", page_size=1024, sync=False)
    yield engine
    engine.close()


def test_open_engine_finds_the_registered_btree(tmp_path):
    db = open_engine(f"file://{tmp_path}/db", engine="btree")
    db.put("text key", b"v")  # str keys are UTF-8
    assert db.get(b"text key") == b"v"
    db.close()
    assert os.path.isfile(tmp_path / "db" / "data.btree")


@pytest.mark.parametrize("key", [1, 2.5, None, ["k"], object()])
def test_non_bytes_keys_are_refused(db, key):
    with pytest.raises(InvalidArgumentError):
        db.put(key, b"v")
    with pytest.raises(InvalidArgumentError):
        db.get(key)


@pytest.mark.parametrize("value", ["text", 3, None, [b"x"]])
def test_non_bytes_values_are_refused(db, value):
    with pytest.raises(InvalidArgumentError):
        db.put(b"k", value)
    assert db.get(b"k") is None


def test_oversized_keys_and_bad_batches_are_refused_atomically(db):
    with pytest.raises(ConfigError):
        db.write(WriteBatch().put(b"ok", b"1").put(b"x" * (db.max_key_bytes + 1), b"2"))
    assert db.get(b"ok") is None  # nothing of the refused batch was applied
    with pytest.raises(InvalidArgumentError):
        db.write([("put", b"k", b"v")])
    with pytest.raises(ConfigError):
        list(db.scan(b"b", b"a"))


@pytest.mark.parametrize("options, error", [
    ({"page_size": 1000}, ConfigError), ({"page_size": 256}, ConfigError), ({"sync": "yes"}, InvalidArgumentError),
    ({"inline_value_max": 10_000}, ConfigError), ({"fill_factor": 0.2}, ConfigError),
    ({"cache_pages": 2}, ConfigError),
])
def test_bad_options_are_refused(options, error):
    with pytest.raises(error):
        BTreeEngine.open(f"memory://btree-engine/{next(_N)}", **options)


def test_every_call_after_close_raises(db):
    db.put(b"a", b"1")
    snap = db.snapshot()
    it = db.scan()
    db.close()
    calls = [lambda: db.put(b"a", b"2"), lambda: db.get(b"a"), lambda: db.delete(b"a"),
             lambda: db.delete_range(b"a", b"b"), lambda: db.write(WriteBatch().put(b"a", b"1")),
             lambda: db.scan(), lambda: db.snapshot(), db.flush, db.compact, db.stats,
             lambda: db.get(b"a", snapshot=snap), lambda: next(it)]
    for call in calls:
        with pytest.raises(DatabaseClosedError):
            call()
    db.close()  # idempotent


def test_a_released_snapshot_cannot_be_read(db):
    db.put(b"a", b"1")
    with db.snapshot() as snap:
        assert db.get(b"a", snapshot=snap) == b"1"
    with pytest.raises(DatabaseClosedError):
        db.get(b"a", snapshot=snap)


def test_opening_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a page file\n" * 300)
    with pytest.raises(NotADatabaseError):
        BTreeEngine.open(f"file://{path}")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data.btree").write_bytes(os.urandom(10_000))
    with pytest.raises(NotADatabaseError):
        BTreeEngine.open(str(tmp_path / "dir"))
    assert path.read_bytes().startswith(b"hello")  # a failed open never writes


def test_object_storage_is_refused_with_the_scheme_named():
    pytest.importorskip("s3fs")
    with pytest.raises(ConfigError, match="s3://"):
        BTreeEngine.open("s3://bucket/db")


def test_one_writer_per_file(tmp_path):
    first = BTreeEngine.open(f"file://{tmp_path}/db")
    with pytest.raises(ConfigError):
        BTreeEngine.open(f"file://{tmp_path}/db")
    first.close()
    BTreeEngine.open(f"file://{tmp_path}/db").close()


def test_large_values_round_trip_through_overflow_pages(db):
    big = os.urandom(300_000)
    db.put(b"big", big)
    db.put(b"small", b"s")
    assert db.get(b"big") == big
    assert list(db.scan()) == [(b"big", big), (b"small", b"s")]
    db.put(b"big", b"now small")
    assert db.get(b"big") == b"now small"


def test_compaction_reclaims_space_and_keeps_old_snapshots_readable(tmp_path):
    db = BTreeEngine.open(f"file://{tmp_path}/db", page_size=1024, sync=False)
    for i in range(3000):
        db.put(b"key%05d" % i, b"v" * 40)
    db.delete_range(b"key00100", b"key03000")
    snap = db.snapshot()
    before = os.path.getsize(tmp_path / "db" / "data.btree")
    db.compact()
    after = os.path.getsize(tmp_path / "db" / "data.btree")
    assert after < before / 5
    assert [k for k, _ in db.scan()] == [b"key%05d" % i for i in range(100)]
    assert db.get(b"key00099", snapshot=snap) == b"v" * 40
    assert sum(1 for _ in db.scan(snapshot=snap)) == 100
    assert db.check() == 100
    stats = db.stats()
    assert stats["pages_free"] == 0 and stats["compactions"] == 1 and stats["seq"] > snap.seq
    snap.release()
    db.put(b"zz", b"after compaction")
    db.close()
    db = BTreeEngine.open(f"file://{tmp_path}/db", page_size=1024)
    assert db.get(b"zz") == b"after compaction" and db.check() == 101
    assert not os.path.exists(tmp_path / "db" / "data.btree.compact")
    db.close()


def test_a_scan_sees_the_tree_as_it_was_when_it_started(db):
    for i in range(500):
        db.put(b"k%03d" % i, b"old")
    it = db.scan()
    assert next(it) == (b"k000", b"old")
    for i in range(500):
        db.put(b"k%03d" % i, b"new")
    db.delete_range(b"k100", b"k200")
    rest = list(it)
    assert len(rest) == 499 and {v for _, v in rest} == {b"old"}
    assert db.stats()["snapshots"] == 0  # the scan's own pin is gone
    assert sum(1 for _ in db.scan()) == 400


def test_reverse_and_bounded_scans(db):
    for i in range(0, 300, 3):
        db.put(b"%03d" % i, b"%d" % i)
    assert [k for k, _ in db.scan(b"010", b"020")] == [b"012", b"015", b"018"]
    assert [k for k, _ in db.scan(b"010", b"021", reverse=True)] == [b"018", b"015", b"012"]
    assert [k for k, _ in db.scan(None, b"007", reverse=True)] == [b"006", b"003", b"000"]
    assert next(db.scan(reverse=True))[0] == b"297"


def test_stats_are_immutable_and_count_commits(db):
    db.put(b"a", b"1")
    db.write(WriteBatch().put(b"b", b"2").delete(b"a"))
    stats = db.stats()
    with pytest.raises(TypeError):
        stats["keys"] = 5
    assert stats["keys"] == 1 and stats["commits"] == 2 and stats["seq"] == 2
    assert stats["height"] == 1 and stats["bytes_written"] > 0
    assert db.get_many([b"a", b"b"]) == [None, b"2"]


def test_memory_databases_are_visible_to_fsspec():
    url = f"memory://btree-engine/{next(_N)}"
    db = BTreeEngine.open(url)
    db.put(b"a", b"1")
    fs = fsspec.filesystem("memory")
    assert fs.size(url + "/data.btree") >= 3 * 4096
    db.close()
    again = BTreeEngine.open(url)
    assert again.get(b"a") == b"1"
    again.close()
