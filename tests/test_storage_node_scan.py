"""Arrow scans: the LSM's ``scan_batches`` against its own ``scan`` and the model, then through the node.

The engine tests (no Ray) drive an LSM-tree and :class:`MemoryEngine` with the same seeded
writes, so memtables, level-0 files, deeper levels and range tombstones overlap, and compare
every Arrow scan (bounds, reverse, limit, snapshots, batch sizes) row for row. The node tests
(Ray) check that batches cross the actor boundary as Arrow and that ``scan()`` still yields
pairs. The point-index tests pin the corner cases of the fixed-width lookup in
:mod:`ddia_ray.storage.lsm.sstable`.
"""

from __future__ import annotations

import itertools
import random
import uuid

import pyarrow as pa
import pytest

from ddia_ray.errors import ConfigError, DatabaseClosedError, InvalidArgumentError
from ddia_ray.storage.engine import MemoryEngine
from ddia_ray.storage.lsm import LSMTree, reads

_urls = itertools.count()
SMALL = dict(memtable_bytes=2_000, row_group_rows=8, target_file_bytes=1_500, l0_compaction_trigger=3,
             l0_slowdown_trigger=6, l0_stop_trigger=8, level_base_bytes=4_000, level_fanout=2, num_levels=4,
             background=False)


def _rows(batches) -> list[tuple[bytes, bytes]]:
    out = []
    for b in batches:
        assert isinstance(b, pa.RecordBatch)
        assert b.schema.names == ["key", "value"]
        assert b.num_rows > 0
        out += zip(b.column(0).to_pylist(), b.column(1).to_pylist())
    return out


def _random_ops(db, model, rng: random.Random, n: int, keyspace: list[bytes]) -> None:
    for _ in range(n):
        r = rng.random()
        k = rng.choice(keyspace)
        if r < 0.6:
            v = rng.randbytes(rng.randint(0, 12))
            db.put(k, v)
            model.put(k, v)
        elif r < 0.8:
            db.delete(k)
            model.delete(k)
        elif r < 0.87:
            a, b = sorted((k, rng.choice(keyspace)))
            if a < b:
                db.delete_range(a, b)
                model.delete_range(a, b)
        elif r < 0.95:
            db.flush()
        else:
            db.compact()


def _ranges(rng: random.Random, keyspace: list[bytes]):
    yield None, None
    for _ in range(4):
        a, b = sorted((rng.choice(keyspace), rng.choice(keyspace)))
        yield a, b
        yield a + b"\x00", None  # a bound between two keys
        yield None, b


@pytest.mark.parametrize("seed", range(6))
def test_arrow_scan_matches_scan_and_model_over_memtable_sstables_and_range_deletes(seed):
    rng = random.Random(seed)
    # Mixed key widths (range tombstones and short keys) and one fixed width, so both lookups run.
    width = rng.choice([None, 6])
    keyspace = sorted({(rng.randbytes(width) if width else rng.randbytes(rng.randint(1, 4))) for _ in range(60)})
    db = LSMTree.open(f"memory://arrow-scan-{next(_urls)}", **SMALL)
    model = MemoryEngine()
    snaps = []
    try:
        for round_ in range(4):
            _random_ops(db, model, rng, 150, keyspace)
            snaps.append((db.snapshot(), model.snapshot()))
            if round_ == 1:
                db.flush()  # the rest stays partly in the memtable, overlapping the files
        for rev, lim, rows in itertools.product((False, True), (None, 0, 1, 7), (1, 5, 64)):
            for s, e in _ranges(rng, keyspace):
                for dsnap, msnap in [(None, None)] + snaps[:2]:
                    want = list(model.scan(s, e, reverse=rev, snapshot=msnap))[:lim]
                    assert list(db.scan(s, e, reverse=rev, snapshot=dsnap))[:lim] == want
                    got = _rows(db.scan_batches(s, e, reverse=rev, snapshot=dsnap, limit=lim, batch_rows=rows))
                    assert got == want, (seed, rev, lim, rows, s, e)
    finally:
        for d, m in snaps:
            d.release()
            m.release()
        assert db.stats()["pinned_versions"] == 0
        db.close()


@pytest.mark.parametrize("seed", range(4))
def test_overlapping_files_merge_as_arrow_windows_like_the_model(seed, monkeypatch):
    """Forward scans that no memtable entry touches merge the overlapping files a window at a time
    in Arrow (ddia_ray.storage.lsm.arrow_merge); windows of a few rows cut between the versions of
    one key (ingests repeat keys, row groups are 8 rows), range tombstones and snapshots apply."""
    from ddia_ray.storage.lsm import arrow_merge

    monkeypatch.setattr(arrow_merge, "MERGE_ROWS", 1 + seed % 4)
    rng = random.Random(seed)
    keyspace = sorted({rng.randbytes(rng.randint(1, 3)) for _ in range(50)})
    db = LSMTree.open(f"memory://arrow-merge-{next(_urls)}", **SMALL)
    model = MemoryEngine()
    snaps = []
    try:
        for _ in range(5):
            _random_ops(db, model, rng, 40, keyspace)
            snaps.append((db.snapshot(), model.snapshot()))  # the memtable keeps both sides of it: a
            _random_ops(db, model, rng, 40, keyspace)  # flushed file then holds several versions of a key
            keys = [rng.choice(keyspace) for _ in range(rng.randint(1, 40))]  # repeats: the last value wins
            values = [rng.randbytes(3) for _ in keys]
            db.ingest(pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array(values, pa.binary())}))
            for k, v in zip(keys, values):
                model.put(k, v)
            db.flush()  # nothing in the memtables: the scans below take the Arrow merge
            snaps.append((db.snapshot(), model.snapshot()))
        before = db.stats()["arrow_merged_scans"]
        scans = 0
        for lim in (None, 1, 9):
            for s, e in _ranges(rng, keyspace):
                for dsnap, msnap in [(None, None)] + snaps[::2]:
                    want = list(model.scan(s, e, snapshot=msnap))[:lim]
                    got = _rows(db.scan_batches(s, e, snapshot=dsnap, limit=lim, batch_rows=4))
                    assert got == want, (seed, lim, s, e)
                    scans += 1
        merged = db.stats()["arrow_merged_scans"] - before
        assert 0 < merged <= scans  # a range one clean file serves needs no merge
    finally:
        for d, m in snaps:
            d.release()
            m.release()
        db.close()


def test_live_rows_keeps_the_newest_visible_put_per_key():
    """The window merge's reduction on its own: newest version at or below the snapshot, deletes
    and covered versions dropped, range-tombstone rows never returned as data."""
    from ddia_ray.storage.lsm.arrow_merge import live_rows
    from ddia_ray.storage.lsm.memtable import DELETE, PUT, RANGE_DELETE, SCHEMA

    rows = [(b"a", 1, PUT, b"a1"), (b"a", 5, PUT, b"a5"), (b"b", 2, PUT, b"b2"), (b"b", 3, DELETE, b""),
            (b"c", 4, PUT, b"c4"), (b"c", 9, PUT, b"c9"), (b"d", 2, PUT, b"d2"), (b"b", 6, RANGE_DELETE, b"d")]
    table = pa.table([pa.array([r[i] for r in rows], SCHEMA.field(i).type) for i in range(4)], schema=SCHEMA)
    tombstones = [(b"b", b"d", 6)]  # deletes b and c below seq 6
    got = live_rows(table, 8, tombstones)
    assert list(zip(got.column("key").to_pylist(), got.column("value").to_pylist())) == [(b"a", b"a5"), (b"d", b"d2")]
    got = live_rows(table, 4, tombstones)  # the tombstone (seq 6) and a5, c9 are not visible yet
    assert got.column("value").to_pylist() == [b"a1", b"c4", b"d2"]
    got = live_rows(table, 9, tombstones)
    assert got.column("value").to_pylist() == [b"a5", b"c9", b"d2"]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_clean_run_is_served_from_arrow_slices_of_its_row_groups(reverse, monkeypatch):
    """After a full compaction the range needs no merge: rows come from the row groups' Arrow
    columns, bounds cut inside row groups, batches are at most ``batch_rows`` long."""
    db = LSMTree.open(f"memory://arrow-clean-{next(_urls)}", **SMALL)
    keys = [b"k%05d" % i for i in range(0, 2000, 2)]
    db.ingest(pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array([k[::-1] for k in keys])}))
    db.compact()
    try:
        s, e = b"k00101", b"k01500"  # neither is a key: both cut inside a row group
        want = list(db.scan(s, e, reverse=reverse))
        assert len(want) == 699
        monkeypatch.setattr(reads, "pair_batches", None)  # the merging path would fail: not taken
        batches = list(db.scan_batches(s, e, reverse=reverse, batch_rows=5))
        assert _rows(batches) == want
        # Slices of the 8-row groups, never glued together (no copy): 5 + 3 per full group.
        assert max(b.num_rows for b in batches) == 5 and len(batches) > 699 // 5 + 1
        assert _rows(db.scan_batches(reverse=reverse, limit=5, batch_rows=3)) == list(db.scan(reverse=reverse))[:5]
    finally:
        db.close()


def test_arrow_scan_reads_its_snapshot_while_writers_and_compactions_go_on():
    db = LSMTree.open(f"memory://arrow-snap-{next(_urls)}", **SMALL)
    model = MemoryEngine()
    rng = random.Random(7)
    keyspace = [b"%03d" % i for i in range(200)]
    _random_ops(db, model, rng, 400, keyspace)
    want = list(model.scan())
    it = db.scan_batches(batch_rows=4)
    first = next(it)
    _random_ops(db, model, rng, 400, keyspace)  # flushes and compactions included
    db.compact()
    assert _rows([first]) + _rows(it) == want
    db.close()


def test_arrow_scan_stops_at_close_and_refuses_bad_arguments():
    db = LSMTree.open(f"memory://arrow-close-{next(_urls)}", **SMALL)
    db.ingest(pa.table({"key": pa.array([b"%05d" % i for i in range(500)]), "value": pa.array([b"v"] * 500)}))
    db.compact()
    it = db.scan_batches(batch_rows=8)
    next(it)
    next(it)  # one batch ahead is cut already; the next row group is read after close
    db.close()
    with pytest.raises(DatabaseClosedError):
        list(it)
    db = LSMTree.open(f"memory://arrow-args-{next(_urls)}", **SMALL)
    with pytest.raises(ConfigError):
        db.scan_batches(batch_rows=0)
    with pytest.raises(InvalidArgumentError):
        db.scan_batches(limit=1.5)
    with pytest.raises(ConfigError):
        db.scan_batches(b"z", b"a")
    db.close()


def test_dropped_arrow_scans_release_their_pins():
    db = LSMTree.open(f"memory://arrow-pins-{next(_urls)}", **SMALL)
    db.ingest(pa.table({"key": pa.array([b"%05d" % i for i in range(300)]), "value": pa.array([b"v"] * 300)}))
    db.put(b"00007", b"new")  # a memtable entry: the merging path
    for clean in (False, True):
        full = list(db.scan_batches(batch_rows=7))
        assert sum(b.num_rows for b in full) == 300
        half = db.scan_batches(batch_rows=7)
        next(half)
        half.close()
        limited = list(db.scan_batches(limit=3))
        assert limited[0].num_rows == 3
        db.compact()
    db.put(b"x", b"1")  # the next write applies deferred releases
    assert db.stats()["pinned_versions"] == 0
    db.close()


# --- the fixed-width point index ------------------------------------------------------------------

def test_point_index_finds_versions_that_straddle_a_stride_and_skips_misaligned_matches():
    """Keys of one width with many versions each: a key's versions cross the 16-row strides of
    the index, and the bytes of one key appear across the boundary of two others."""
    db = LSMTree.open(f"memory://point-{next(_urls)}", **dict(SMALL, row_group_rows=4096, memtable_bytes=1 << 20))
    keys = [b"ab", b"ba", b"bb", b"cd"]  # b"ab" + b"ba" contains b"bb" at an odd offset
    seqs = {}
    for round_ in range(9):
        for k in keys:
            db.put(k, b"%s-%d" % (k, round_))
        seqs[round_] = db.snapshot()
    db.flush()  # one row group: 36 rows, every key's 9 versions newest first
    try:
        for round_, snap in seqs.items():
            for k in keys:
                assert db.get(k, snapshot=snap) == b"%s-%d" % (k, round_)
        for k in keys:
            assert db.get(k) == b"%s-8" % k
        assert db.get(b"bab"[:2]) == b"ba-8"
        assert db.get(b"b") is None and db.get(b"abc") is None and db.get(b"aa") is None
    finally:
        for s in seqs.values():
            s.release()
        db.close()


def test_point_index_walks_versions_of_keys_with_high_bytes():
    """Arrow buffers view as signed bytes: compared with ``bytes`` as such, a key holding a byte
    >= 0x80 never equals itself and the walk to an older version (a snapshot read) stops short."""
    db = LSMTree.open(f"memory://point-hi-{next(_urls)}", **dict(SMALL, memtable_bytes=1 << 20))
    keys = [bytes([0xF0 + i, 0x80, 0xFF]) for i in range(5)]
    for k in keys:
        db.put(k, b"old")
    snap = db.snapshot()
    for k in keys:
        db.put(k, b"new")
    db.flush()
    try:
        assert [db.get(k, snapshot=snap) for k in keys] == [b"old"] * 5
        assert [db.get(k) for k in keys] == [b"new"] * 5
    finally:
        snap.release()
        db.close()


def test_point_index_never_answers_with_a_range_tombstone_row():
    """A range tombstone whose start has the point keys' width is a row of the same width; the
    index must not take it for a version (its value column holds the tombstone's end)."""
    db = LSMTree.open(f"memory://point-rt-{next(_urls)}", **dict(SMALL, memtable_bytes=1 << 20))
    db.put(b"k1", b"old")
    db.delete_range(b"k1", b"k3")
    db.put(b"k2", b"live")
    db.flush()
    try:
        assert db.get(b"k1") is None
        assert db.get(b"k2") == b"live"
    finally:
        db.close()


# --- through the storage-node actor -------------------------------------------------------------

def _name() -> str:
    return f"sn-scan-{uuid.uuid4().hex[:8]}"


@pytest.mark.ray
@pytest.mark.parametrize("engine", ["lsm", "memory"])
def test_node_scans_cross_the_actor_boundary_as_arrow_batches(ray_session, tmp_path, engine):
    from ddia_ray.storage.node import KV_SCHEMA, StorageNode

    url = None if engine == "memory" else f"file://{tmp_path}/db"
    node = StorageNode.launch(_name(), url, engine=engine, **({"sync": "none"} if engine == "lsm" else {}))
    client = node.client()
    try:
        pairs = {b"k%05d" % i: b"v%d" % i for i in range(3000)}
        client.put_many(pairs)
        client.delete_range(b"k00100", b"k00200")
        client.delete(b"k00500")
        if engine == "lsm":
            client.put_many({b"k00600": b"newer"})  # a memtable entry over the files
            client.flush()
            client.put(b"k00601", b"newest")
        want = {k: v for k, v in pairs.items() if not (b"k00100" <= k < b"k00200") and k != b"k00500"}
        if engine == "lsm":
            want[b"k00600"], want[b"k00601"] = b"newer", b"newest"
        want = sorted(want.items())
        batches = list(client.scan_batches(batch_rows=1000))
        assert all(b.schema == KV_SCHEMA for b in batches)
        assert [b.num_rows for b in batches] == [1000, 1000, 899]  # merged rows are packed: exact sizes
        assert _rows(batches) == want
        if engine == "lsm":
            client.compact()  # one clean run: row-group slices, no merge
            batches = list(client.scan_batches(batch_rows=1000))
            assert _rows(batches) == want and all(0 < b.num_rows <= 1000 for b in batches)
        assert list(client.scan(page_size=333)) == want
        table = client.scan_arrow(b"k00050", b"k00700", reverse=True, limit=400)
        assert table.schema == KV_SCHEMA
        assert list(zip(table.column("key").to_pylist(), table.column("value").to_pylist())) == \
            [p for p in reversed(want) if b"k00050" <= p[0] < b"k00700"][:400]
        assert client.scan_arrow(b"x", b"y").num_rows == 0
        with pytest.raises(ConfigError):
            list(client.scan_batches(batch_rows=0))
    finally:
        client.close()
        node.shutdown()


@pytest.mark.ray
def test_a_narrow_scan_does_not_ship_its_whole_row_group(ray_session, tmp_path):
    """A slice of an Arrow array pickles with its parent's buffers: the node copies small
    slices, so ten rows from the middle of a 4096-row group cross as ten rows."""
    from ddia_ray.storage.node import StorageNode, _compact

    big = pa.record_batch([pa.array([b"k%05d" % i for i in range(4096)]), pa.array([b"v" * 100] * 4096)],
                          names=["key", "value"])
    piece = _compact(big.slice(2000, 10))
    assert piece.get_total_buffer_size() < 2_000 and piece.to_pylist() == big.slice(2000, 10).to_pylist()
    assert _compact(big) is big
    node = StorageNode.launch(_name(), f"file://{tmp_path}/db", engine="lsm", sync="none")
    client = node.client()
    try:
        client.put_many({b"k%05d" % i: b"v" * 100 for i in range(4096)})
        client.compact()
        batches = list(client.scan_batches(b"k02000", b"k02010"))
        assert sum(b.num_rows for b in batches) == 10
        assert sum(b.get_total_buffer_size() for b in batches) < 4_000
    finally:
        client.close()
        node.shutdown()


def test_a_sorted_run_spread_over_levels_is_served_without_a_merge():
    """After a full compaction the leveled policy moves whole files down, so one sorted run can sit in
    two levels: its files are disjoint and clean, and the scan needs no merge. Overlap, a file that is
    not clean, a range tombstone or a file newer than the snapshot each need the merge."""
    from types import SimpleNamespace

    from ddia_ray.storage.lsm.reads import _ReadPath

    def f(lo, hi, clean=True, max_seq=5, tombstones=()):
        return SimpleNamespace(smallest=lo, largest=hi, clean=clean, max_seq=max_seq, range_tombstones=tombstones)

    a, b, c = f(b"a", b"c"), f(b"d", b"f"), f(b"g", b"k")
    run = _ReadPath._clean_run([(1, [a, c]), (2, [b])], seq=9)
    assert run == [a, b, c]
    assert _ReadPath._clean_run([(0, [c, a])], seq=9) == [a, c]
    assert _ReadPath._clean_run([], seq=9) == []
    assert _ReadPath._clean_run([(1, [a]), (2, [f(b"c", b"e")])], seq=9) is None  # b"c" in both
    assert _ReadPath._clean_run([(1, [a, f(b"d", b"f", clean=False)])], seq=9) is None
    assert _ReadPath._clean_run([(1, [a, f(b"d", b"f", tombstones=((b"d", b"e", 3),))])], seq=9) is None
    assert _ReadPath._clean_run([(1, [a, f(b"d", b"f", max_seq=10)])], seq=9) is None


def test_a_scan_over_a_run_spread_over_levels_matches_the_merge(tmp_path):
    """End to end: files disjoint across L1 and L2 (a full compaction, then more disjoint keys flushed
    and moved down) give the same rows through the merge-free path as the model."""
    from ddia_ray.storage.lsm import LSMTree

    db = LSMTree.open(f"file://{tmp_path}/db", background=False, row_group_rows=8)
    want = {}
    for i in range(200):
        db.put(b"a%04d" % i, b"v%d" % i)
        want[b"a%04d" % i] = b"v%d" % i
    db.compact()
    for i in range(200):
        db.put(b"b%04d" % i, b"w%d" % i)
        want[b"b%04d" % i] = b"w%d" % i
    db.flush()
    got = {}
    for batch in db.scan_batches(batch_rows=64):
        got.update(zip(batch.column("key").to_pylist(), batch.column("value").to_pylist()))
    assert got == want and [k for k, _ in db.scan()] == sorted(want)
    db.close()
