"""Background flushes and compactions: writes keep flowing, backpressure, group commit, file lifetimes."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from ddia_ray.errors import WriteStallError
from ddia_ray.storage.engine import MemoryEngine, WriteBatch
from ddia_ray.storage.lsm import LSMTree

_n = itertools.count()
WAIT_S = 30  # upper bound for events that should happen almost at once


class GatedFS(MemoryFileSystem):
    """memory:// whose SSTable uploads (and optionally WAL appends) wait for a gate to open."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sst_gate = threading.Event()
        self.sst_entered = threading.Event()
        self.wal_gate = threading.Event()
        self.wal_gate.set()
        self.wal_entered = threading.Event()

    def pipe_file(self, path, value, *args, **kwargs):
        if path.endswith(".parquet"):
            self.sst_entered.set()
            assert self.sst_gate.wait(WAIT_S)
        return super().pipe_file(path, value, *args, **kwargs)

    def _open(self, path, mode="rb", *args, **kwargs):
        f = super()._open(path, mode, *args, **kwargs)
        if path.endswith(".log") and "a" in mode:
            return _GatedFile(f, self)
        return f


class _GatedFile:
    def __init__(self, f, fs):
        self._f, self._fs = f, fs

    def write(self, data):
        self._fs.wal_entered.set()
        assert self._fs.wal_gate.wait(WAIT_S)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _gated():
    return GatedFS(skip_instance_cache=True), f"/lsm-bg-{next(_n)}"


def _wait_for(predicate):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        threading.Event().wait(0.001)


def test_writes_continue_while_a_slow_flush_runs():
    fs, path = _gated()
    db = LSMTree.open(path, filesystem=fs, memtable_bytes=2000, max_immutable_memtables=50,
                      sleep=lambda s: None)
    i = 0
    while not fs.sst_entered.is_set():  # fill memtables until the flusher is stuck in its upload
        db.put(b"k%05d" % i, b"v" * 50)
        i += 1
        if db.stats()["immutable_memtables"]:
            # A flush is due: wait for the flusher to reach its upload. It may take a while to get
            # there (a process's first Arrow array imports pandas), and writers that kept filling
            # memtables meanwhile would reach max_immutable_memtables and stall.
            assert fs.sst_entered.wait(WAIT_S)
    for j in range(i, i + 500):  # ~15 more memtables, all while the flush cannot finish
        db.put(b"k%05d" % j, b"v" * 50)
    stats = db.stats()
    assert stats["flushes"] == 0 and stats["immutable_memtables"] >= 10 and stats["stalls"] == 0
    assert db.get(b"k00000") == b"v" * 50  # reads see immutable memtables
    fs.sst_gate.set()
    db.flush()
    assert db.stats()["immutable_memtables"] == 0 and db.stats()["flushes"] >= 10
    assert len(list(db.scan())) == i + 500
    db.close()


def test_backpressure_slows_then_stalls_then_fails_writes():
    fs, path = _gated()
    slept = []
    db = LSMTree.open(path, filesystem=fs, memtable_bytes=1000, max_immutable_memtables=1,
                      stall_timeout_s=0.05, sleep=slept.append)
    with pytest.raises(WriteStallError):
        for i in range(10_000):
            db.put(b"k%05d" % i, b"v" * 50)
    stats = db.stats()
    assert stats["slowdowns"] >= 1 and slept and slept[0] == 0.001
    assert stats["stalls"] == 1 and stats["stall_time_s"] >= 0.05
    fs.sst_gate.set()
    db.put(b"after", b"ok")  # the flush caught up: writes flow again
    db.flush()
    assert db.get(b"after") == b"ok"
    db.close()


def test_a_stalled_writer_resumes_when_the_flush_finishes():
    fs, path = _gated()
    stalled = threading.Event()

    def clock():  # only consulted while a writer stalls
        stalled.set()
        return time.monotonic()

    db = LSMTree.open(path, filesystem=fs, memtable_bytes=1000, max_immutable_memtables=1,
                      stall_timeout_s=WAIT_S, clock=clock, sleep=lambda s: None)
    errors = []

    def writer():
        try:
            for i in range(200):
                db.put(b"k%05d" % i, b"v" * 50)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    assert stalled.wait(WAIT_S)
    assert t.is_alive()
    fs.sst_gate.set()
    t.join(WAIT_S)
    assert not t.is_alive() and not errors
    assert db.stats()["stalls"] >= 1
    assert len(list(db.scan())) == 200
    db.close()


def test_concurrent_writers_share_one_wal_append():
    fs, path = _gated()
    db = LSMTree.open(path, filesystem=fs)
    fs.wal_gate.clear()
    threads = [threading.Thread(target=db.put, args=(b"k%d" % i, b"v%d" % i)) for i in range(6)]
    threads[0].start()
    assert fs.wal_entered.wait(WAIT_S)  # the first writer leads and is stuck in its append
    for t in threads[1:]:
        t.start()
    _wait_for(lambda: db.stats()["write_queue"] == 6)
    fs.wal_gate.set()
    for t in threads:
        t.join(WAIT_S)
    stats = db.stats()
    assert stats["batches"] == 6 and stats["group_commits"] == 2
    assert db.get_many([b"k%d" % i for i in range(6)]) == [b"v%d" % i for i in range(6)]
    db.close()


@pytest.mark.parametrize("policy", ["leveled", "tiered"])
def test_background_engine_matches_the_model(policy):
    rnd = random.Random(7)
    url = f"memory://lsm-bg-model-{next(_n)}"
    db = LSMTree.open(url, compaction=policy, memtable_bytes=3000, row_group_rows=8, target_file_bytes=1500,
                      l0_compaction_trigger=2, level_base_bytes=4000, level_fanout=2, sleep=lambda s: None)
    model = MemoryEngine()
    keys = [b"key%03d" % i for i in range(150)]
    stop = threading.Event()
    scan_errors = []

    def reader():  # scans race with flushes and compactions; each must be sorted and consistent
        while not stop.is_set():
            got = [k for k, _ in db.scan()]
            if got != sorted(got):
                scan_errors.append(got)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for step in range(3000):
            r = rnd.random()
            k = rnd.choice(keys)
            if r < 0.7:
                v = rnd.randbytes(rnd.randrange(1, 40))
                db.put(k, v)
                model.put(k, v)
            elif r < 0.85:
                db.delete(k)
                model.delete(k)
            elif r < 0.9:
                lo, hi = sorted(rnd.sample(keys, 2))
                db.delete_range(lo, hi)
                model.delete_range(lo, hi)
            else:
                b1, b2 = WriteBatch(), WriteBatch()
                for _ in range(3):
                    k2, v2 = rnd.choice(keys), rnd.randbytes(5)
                    b1.put(k2, v2)
                    b2.put(k2, v2)
                db.write(b1)
                model.write(b2)
            if step % 500 == 0:
                assert list(db.scan()) == list(model.scan())
    finally:
        stop.set()
        t.join()
    assert not scan_errors
    assert db.stats()["compactions"] + db.stats()["trivial_moves"] > 0
    assert list(db.scan()) == list(model.scan())
    assert list(db.scan(reverse=True)) == list(model.scan(reverse=True))
    db.close()
    db = LSMTree.open(url, compaction=policy)
    assert list(db.scan()) == list(model.scan())
    db.close()


def _sst_files(fs, path):
    return {p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if p.endswith(".parquet")}


@pytest.mark.parametrize("holder", ["snapshot", "iterator"])
def test_obsolete_files_live_while_a_reader_uses_them(holder):
    fs, path = MemoryFileSystem(), f"/lsm-obsolete-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs, background=False, l0_compaction_trigger=10,
                      l0_slowdown_trigger=10, l0_stop_trigger=10)
    for round_ in range(3):
        for i in range(20):
            db.put(b"k%02d" % i, b"round%d" % round_)
        db.flush()
    before = _sst_files(fs, path)
    assert len(before) == 3
    if holder == "snapshot":
        reader = db.snapshot()
    else:
        reader = db.scan()
        assert next(reader) == (b"k00", b"round2")
    db.compact()
    after = _sst_files(fs, path)
    assert before < after  # the compaction output exists, the inputs were kept
    assert db.stats()["files_awaiting_deletion"] == 3
    if holder == "snapshot":
        assert db.get(b"k05", snapshot=reader) == b"round2"
        reader.release()
    else:
        assert len(list(reader)) == 19  # exhausting the iterator releases it
    assert _sst_files(fs, path) == after - before and len(after - before) == 1
    assert db.stats()["files_awaiting_deletion"] == 0
    db.close()


def test_single_key_writers_hand_the_gil_to_a_pending_flush(tmp_path, monkeypatch):
    """While a flush is pending, the fast path releases the GIL every HANDOFF_WRITES writes, else never."""
    from ddia_ray.storage.lsm.writes import HANDOFF_WRITES

    gate, entered = threading.Event(), threading.Event()
    flush = LSMTree._flush_oldest

    def gated_flush(self):
        entered.set()
        gate.wait()
        return flush(self)

    monkeypatch.setattr(LSMTree, "_flush_oldest", gated_flush)
    db = LSMTree.open(f"file://{tmp_path}/db", memtable_bytes=1 << 20, max_immutable_memtables=8)
    for i in range(3 * HANDOFF_WRITES):  # nothing to flush yet: the writer keeps the GIL
        db.put(b"a%06d" % i, b"v")
    assert db.stats()["gil_handoffs"] == 0
    i = 0
    while not entered.is_set():  # fill the memtable until the flusher holds an immutable one
        db.put(b"b%06d" % i, b"v" * 100)
        i += 1
        if i % 1000 == 0:
            entered.wait(0.01)
    before = db.stats()["gil_handoffs"]
    for j in range(4 * HANDOFF_WRITES):
        db.put(b"c%06d" % j, b"v")
    assert db.stats()["gil_handoffs"] - before == 4
    gate.set()
    db.flush()
    assert db.get(b"b000000") == b"v" * 100 and db.get(b"c000000") == b"v"
    db.close()
