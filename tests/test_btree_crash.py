"""Crash safety and free space of the B-tree page file, in-process.

A crash is simulated by damaging the file the way an interrupted write would (a torn page, a
missing tail) right after a commit, then reopening: the engine must come back with the previous
committed state, or raise CorruptionError -- never return a wrong answer. Page headers are parsed
here with the grammar documented in ``pagefile.py``.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from ddia_ray.errors import CorruptionError
from ddia_ray.storage import MemoryEngine, WriteBatch
from ddia_ray.storage.btree import BTreeEngine
from ddia_ray.storage.btree.cowtree import tree_pages

PAGE = 1024
HEADER = struct.Struct("<IBBHQQI")  # crc format kind 0 page_no txn length
LEAF = 2


def _open(tmp_path, **options):
    return BTreeEngine.open(f"file://{tmp_path}/db", page_size=PAGE, sync=options.pop("sync", False), **options)


def _data(tmp_path) -> str:
    return os.path.join(tmp_path, "db", "data.btree")


def _headers(path):
    with open(path, "rb") as f:
        raw = f.read()
    return [(n, HEADER.unpack_from(raw, n * PAGE)) for n in range(len(raw) // PAGE)]


def _damage(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _contents(db) -> list:
    return list(db.scan())


def _workload(db, rng, commits: int) -> list:
    """Random batches; returns the model contents after every commit (index = seq)."""
    model = MemoryEngine()
    states = [[]]
    for _ in range(commits):
        batch = WriteBatch()
        for _ in range(rng.randint(1, 20)):
            key = b"key%04d" % rng.randrange(300)
            r = rng.random()
            if r < 0.7:
                batch.put(key, rng.randbytes(rng.choice([5, 50, 400])))  # 400 bytes: overflow pages
            elif r < 0.9:
                batch.delete(key)
            else:
                batch.delete_range(key, key[:-1] + b"9")
        db.write(batch)
        model.write(batch)
        states.append(list(model.scan()))
    return states


@pytest.mark.parametrize("damage", ["meta_checksum", "meta_torn_half", "written_page", "truncated_tail"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_damage_from_an_interrupted_last_commit_falls_back_to_the_previous_commit(tmp_path, damage, seed):
    rng = random.Random(seed)
    db = _open(tmp_path)
    states = _workload(db, rng, 40)
    grew = db.stats()["pages_total"]
    db.put(b"zz-last", os.urandom(60_000))  # the last commit appends overflow pages at the end of the file
    seq = db.stats()["seq"]
    assert db.stats()["pages_total"] > grew
    db.close()
    path = _data(tmp_path)
    meta_at = (seq % 2) * PAGE
    if damage == "meta_checksum":
        _damage(path, meta_at + 40, b"\xff\xfe")
    elif damage == "meta_torn_half":  # only the first half of the meta page reached the disk
        _damage(path, meta_at + PAGE // 4, bytes(PAGE - PAGE // 4))
    elif damage == "written_page":
        mine = [n for n, h in _headers(path) if n >= 2 and h[5] == seq]
        assert mine
        victim = rng.choice(mine)
        _damage(path, victim * PAGE + HEADER.size + 3, b"\x00\x01\x02")
    else:
        os.truncate(path, os.path.getsize(path) - PAGE // 2)
    db = _open(tmp_path)
    assert db.stats()["seq"] == seq - 1
    assert _contents(db) == states[-1]
    assert db.get(b"zz-last") is None
    db.check()
    db.put(b"after", b"recovery")  # the recovered database keeps working and stays durable
    db.close()
    db = _open(tmp_path)
    assert db.get(b"after") == b"recovery" and db.get(b"zz-last") is None
    db.close()


def test_a_damaged_live_page_raises_corruption_error_on_read(tmp_path):
    db = _open(tmp_path)
    batch = WriteBatch()
    for i in range(500):
        batch.put(b"key%04d" % i, b"value-%d" % i)
    db.write(batch)  # commit 1: every leaf
    db.put(b"key0499", b"changed")  # commit 2: touches only the last leaf
    db.close()
    path = _data(tmp_path)
    target = b"key0123"
    with open(path, "rb") as f:
        raw = f.read()
    leaves = [n for n, h in _headers(path) if h[2] == LEAF and target in raw[n * PAGE:(n + 1) * PAGE]]
    assert len(leaves) == 1
    at = raw.index(target, leaves[0] * PAGE)
    _damage(path, at + len(target) + 3, b"\xde\xad")  # inside the value: a wrong answer unless checked
    db = _open(tmp_path)  # the last commit is intact, so the file opens
    assert db.get(b"key0499") == b"changed"
    with pytest.raises(CorruptionError):
        db.get(target)
    with pytest.raises(CorruptionError):
        list(db.scan())
    db.close()


def test_both_metas_damaged_is_a_corruption_error(tmp_path):
    db = _open(tmp_path)
    db.put(b"a", b"1")
    db.close()
    path = _data(tmp_path)
    _damage(path, 40, b"\xff\xff")
    _damage(path, PAGE + 40, b"\xff\xff")
    with pytest.raises(CorruptionError):
        _open(tmp_path)


def test_sync_mode_survives_reopen(tmp_path):
    db = _open(tmp_path, sync=True)
    db.write(WriteBatch().put(b"a", b"1").put(b"b", b"2").delete(b"a"))
    db.close()
    db = _open(tmp_path, sync=True)
    assert _contents(db) == [(b"b", b"2")]
    db.close()


def test_the_file_stops_growing_under_steady_updates(tmp_path):
    db = _open(tmp_path)
    keys = [b"key%04d" % i for i in range(300)]
    for k in keys:
        db.put(k, b"initial")
    sizes = []
    for round_no in range(20):
        for k in keys[::5]:
            db.put(k, b"round %d" % round_no + b"x" * (round_no % 3) * 200)  # inline and overflow values
        sizes.append(os.path.getsize(_data(tmp_path)))
    assert sizes[-1] == sizes[4], sizes
    stats = db.stats()
    assert stats["pages_pending"] == 0 and stats["pages_free"] > 0
    db.close()


def _raw_pages(path, pages) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    return {p: raw[p * PAGE:(p + 1) * PAGE] for p in pages}


def test_pages_of_a_held_snapshot_are_not_reused(tmp_path):
    db = _open(tmp_path)
    keys = [b"key%04d" % i for i in range(300)]
    for k in keys:
        db.put(k, b"old-" + k)
    snap = db.snapshot()
    pinned = tree_pages(snap._gen.store, snap._root)
    before = _raw_pages(_data(tmp_path), pinned)
    size_at_snapshot = os.path.getsize(_data(tmp_path))
    for round_no in range(5):
        for k in keys:
            db.put(k, b"new-%d" % round_no)
    assert _raw_pages(_data(tmp_path), pinned) == before  # not one byte of the pinned tree changed
    assert [db.get(k, snapshot=snap) for k in keys] == [b"old-" + k for k in keys]
    assert list(db.scan(snapshot=snap)) == [(k, b"old-" + k) for k in keys]
    assert db.stats()["pages_pending"] > 0
    assert os.path.getsize(_data(tmp_path)) > size_at_snapshot
    snap.release()
    assert db.stats()["pages_pending"] == 0
    size = os.path.getsize(_data(tmp_path))
    for k in keys:  # the released pages are enough for a whole new version of the tree
        db.put(k, b"newer")
    assert os.path.getsize(_data(tmp_path)) == size
    db.close()


def test_releasing_an_older_snapshot_keeps_a_newer_one_intact(tmp_path):
    db = _open(tmp_path)
    keys = [b"key%04d" % i for i in range(200)]
    for k in keys:
        db.put(k, b"v1")
    first = db.snapshot()
    for k in keys:
        db.put(k, b"v2")
    second = db.snapshot()
    for k in keys:
        db.put(k, b"v3")
    first.release()
    for k in keys:
        db.put(k, b"v4")
    assert {v for _, v in db.scan(snapshot=second)} == {b"v2"}
    assert {v for _, v in db.scan()} == {b"v4"}
    second.release()
    assert db.stats()["pages_pending"] == 0
    db.close()
