"""The LSM's bulk-load window (ddia_ray/storage/lsm/jobs.py, "Bulk loads"): ingests that overlap leave
level 0 uncompacted while the window lasts, up to a file limit, and the merge runs once it closes."""

from __future__ import annotations

import itertools
import random
import time

import pyarrow as pa
import pytest

from ddia_ray.errors import ConfigError
from ddia_ray.storage.lsm import LSMTree
from ddia_ray.storage.lsm.options import BULK_L0_FILES, LSMOptions, bulk_l0_limit

_dbs = itertools.count()


def _overlapping(i: int, rows: int = 200) -> pa.Table:
    """Rows whose keys spread over the whole key space, as hashed keys do: every batch overlaps the others."""
    rng = random.Random(i)
    keys = sorted({rng.randbytes(8) for _ in range(rows)})
    return pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array([b"%d" % i] * len(keys), pa.binary())})


def _open(clock, **options) -> LSMTree:
    return LSMTree.open(f"memory://bulk-window-{next(_dbs)}", wal=False, clock=clock,
                        l0_compaction_trigger=2, l0_slowdown_trigger=4, l0_stop_trigger=8, num_levels=2, **options)


def _model(tables) -> dict:
    model: dict = {}
    for t in tables:
        model.update(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))
    return model


@pytest.mark.parametrize("background", [False, True])
def test_ingests_inside_the_window_are_merged_once_after_it(background):
    now = [0.0]
    db = _open(lambda: now[0], bulk_window_s=5.0, background=background)
    tables = [_overlapping(i) for i in range(7)]  # the first lands in level 1, the rest in level 0
    for t in tables:
        db.ingest(t)
    stats = db.stats()
    assert stats["level_files"][0] == 6 and stats["compactions"] == 0, stats  # trigger 2: deferred
    assert stats["compactions_deferred"] >= 1
    model = _model(tables)
    assert db.get_many(list(model)) == list(model.values())  # reads meanwhile see every row
    now[0] = 10.0  # the window closes; a flush wakes the compactor (as the window's own timer would)
    db.put(b"after", b"x")
    db.flush()
    deadline = time.monotonic() + 30
    while db.stats()["compactions"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = db.stats()
    assert stats["compactions"] >= 1 and stats["level_files"][0] <= 1, stats
    assert db.get_many(list(model)) == list(model.values()) and db.get(b"after") == b"x"
    db.close()


def test_a_full_level_zero_ends_the_window_early():
    now = [0.0]
    db = _open(lambda: now[0], bulk_window_s=5.0, bulk_l0_files=3, background=False)
    for i in range(4):  # the first lands in level 1, the fourth makes three files in level 0: the limit
        db.ingest(_overlapping(i))
    stats = db.stats()
    assert stats["compactions"] >= 1 and stats["level_files"][0] < 3, stats


def test_without_a_window_level_zero_compacts_at_its_trigger():
    db = _open(time.monotonic, bulk_window_s=0.0, background=False)
    for i in range(3):  # level 1, then two files in level 0: the trigger
        db.ingest(_overlapping(i))
    stats = db.stats()
    assert stats["compactions"] == 1 and stats["compactions_deferred"] == 0, stats


def test_the_compactor_wakes_by_itself_when_the_window_closes():
    db = _open(time.monotonic, bulk_window_s=0.2)
    tables = [_overlapping(i) for i in range(5)]
    for t in tables:
        db.ingest(t)
    deadline = time.monotonic() + 30  # nothing else happens: only the window's end can start the merge
    while db.stats()["level_files"][0] > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db.stats()["level_files"][0] <= 1, db.stats()
    model = _model(tables)
    assert db.get_many(list(model)) == list(model.values())
    db.close()


def test_bulk_window_options_are_checked():
    with pytest.raises(ConfigError, match="bulk_l0_files"):
        LSMOptions(bulk_l0_files=30)  # above the stop trigger: writes would stall inside a window
    with pytest.raises(ConfigError, match="bulk_l0_files"):
        LSMOptions(bulk_l0_files=2)  # below the compaction trigger
    with pytest.raises(ConfigError):
        LSMOptions(bulk_window_s=-1)
    assert bulk_l0_limit(LSMOptions()) == BULK_L0_FILES
    assert bulk_l0_limit(LSMOptions(l0_compaction_trigger=2, l0_slowdown_trigger=4, l0_stop_trigger=8)) == 8
    assert bulk_l0_limit(LSMOptions(bulk_l0_files=5)) == 5


def test_an_ingest_does_not_wait_for_a_running_compaction():
    """While a compaction holds the compaction lock, an ingest goes on and writes its file to level
    0 (safe beside any job); with the lock free the same rows would go as deep as nothing overlaps."""
    import threading

    db = _open(time.monotonic, background=True)  # inline mode runs pending compactions in the writer
    first = _overlapping(1)
    db.ingest(first)
    assert list(db.stats()["level_files"]) == [0, 1]  # nothing above overlaps: the deepest level
    apart = pa.table({"key": pa.array([b"\xff\xff" + bytes([i]) for i in range(50)], pa.binary()),
                      "value": pa.array([b"late"] * 50, pa.binary())})  # above every key of `first`
    done = threading.Event()
    db._comp_lock.acquire()  # as a running compaction holds it
    try:
        worker = threading.Thread(target=lambda: (db.ingest(apart), done.set()))
        worker.start()
        assert done.wait(30), "the ingest waited for the compaction lock"
        worker.join()
        assert list(db.stats()["level_files"]) == [1, 1]  # level 0, not level 1 where the job may write
    finally:
        db._comp_lock.release()
    model = _model([first, apart])
    assert db.get_many(list(model)) == list(model.values())
    db.compact()
    assert db.get_many(list(model)) == list(model.values()) and db.stats()["level_files"][0] == 0
    db.close()
