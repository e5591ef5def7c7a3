"""Fast paths of the LSM-tree (clean-run scans, cached gets, one-op commits) agree with the general paths."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import DatabaseClosedError
from ddia_ray.storage.engine import MemoryEngine
from ddia_ray.storage.lsm import LSMTree
from ddia_ray.storage.lsm.iterator import FastScanIterator, ScanIterator

_n = itertools.count()


def _open(**opts):
    opts.setdefault("background", False)
    opts.setdefault("row_group_rows", 16)
    opts.setdefault("l0_compaction_trigger", 50)
    opts.setdefault("l0_slowdown_trigger", 60)
    opts.setdefault("l0_stop_trigger", 70)
    return LSMTree.open(f"memory://lsm-fast-{next(_n)}", **opts)


def _load(db, n=200):
    keys = [b"k%05d" % i for i in range(0, 2 * n, 2)]
    db.ingest(pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array([k + b"!" for k in keys])}))
    db.compact()
    return {k: k + b"!" for k in keys}


def _expected(model: dict, start=None, end=None, reverse=False):
    rows = sorted((k, v) for k, v in model.items() if (start is None or k >= start) and (end is None or k < end))
    return rows[::-1] if reverse else rows


@pytest.mark.parametrize("bounds", [(None, None), (b"k00100", b"k00301"), (b"a", b"k00007"), (b"k00391", None),
                                    (b"z", None), (b"k00050", b"k00050")])
@pytest.mark.parametrize("reverse", [False, True])
def test_clean_run_takes_the_fast_path_and_matches_the_model(bounds, reverse):
    db = _open(target_file_bytes=1500)  # several non-overlapping files in one level
    model = _load(db)
    assert max(db.stats()["level_files"]) > 1
    it = db.scan(*bounds, reverse=reverse)
    assert isinstance(it, FastScanIterator)
    assert list(it) == _expected(model, *bounds, reverse=reverse)
    assert db.stats()["pinned_versions"] == 0  # exhausting the scan released its pin
    db.close()


def _general_cases():
    def memtable_put(db, model):
        db.put(b"k00101", b"new")
        model[b"k00101"] = b"new"

    def memtable_delete(db, model):
        db.delete(b"k00100")
        del model[b"k00100"]

    def range_tombstone(db, model):
        db.delete_range(b"k00010", b"k00020")
        for k in [k for k in model if b"k00010" <= k < b"k00020"]:
            del model[k]

    def overlapping_l0_files(db, model):
        db.put(b"k00101", b"x")
        db.delete(b"k00102")
        db.flush()  # a level-0 file over the same range as the bottom level
        model[b"k00101"] = b"x"
        del model[b"k00102"]

    def duplicate_versions_kept_for_a_snapshot(db, model):
        snap = db.snapshot()
        db.put(b"k00100", b"y")
        db.compact()  # the snapshot keeps the old version: the file holds two versions of one key
        model[b"k00100"] = b"y"
        assert [kv for kv in db.scan(b"k00100", b"k00101", snapshot=snap)] == [(b"k00100", b"k00100!")]
        snap.release()

    return [memtable_put, memtable_delete, range_tombstone, overlapping_l0_files,
            duplicate_versions_kept_for_a_snapshot]


@pytest.mark.parametrize("change", _general_cases(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("reverse", [False, True])
def test_ranges_that_need_merging_take_the_general_path(change, reverse):
    db = _open()
    model = _load(db)
    change(db, model)
    it = db.scan(reverse=reverse)
    assert isinstance(it, ScanIterator)
    assert list(it) == _expected(model, reverse=reverse)
    # A range the change does not touch may still stream: the answer must be the same either way.
    assert list(db.scan(b"k00300", b"k00350", reverse=reverse)) == _expected(model, b"k00300", b"k00350", reverse)
    db.close()


def test_a_clean_file_newer_than_the_snapshot_takes_the_general_path():
    db = _open()
    db.put(b"a", b"1")
    snap = db.snapshot()
    db.put(b"b", b"2")
    db.flush()  # one clean file holding seqs on both sides of the snapshot
    it = db.scan(snapshot=snap)
    assert isinstance(it, ScanIterator) and list(it) == [(b"a", b"1")]
    assert isinstance(db.scan(), FastScanIterator) and list(db.scan()) == [(b"a", b"1"), (b"b", b"2")]
    snap.release()
    db.close()


def test_fast_scan_stops_at_database_close_even_mid_row_group():
    db = _open(row_group_rows=4096)
    _load(db)
    it = db.scan()
    assert isinstance(it, FastScanIterator)
    assert next(it) == (b"k00000", b"k00000!")
    db.close()
    with pytest.raises(DatabaseClosedError):
        next(it)


def test_fast_scan_close_releases_the_pin_and_ends_iteration():
    db = _open()
    _load(db)
    with db.scan() as it:
        assert next(it)[0] == b"k00000"
        assert db.stats()["pinned_versions"] == 1
    assert db.stats()["pinned_versions"] == 0
    with pytest.raises(StopIteration):
        next(it)
    db.close()


def test_gets_from_cached_and_uncached_row_groups_agree_and_are_counted():
    db = _open(row_cache_bytes=0)  # nothing cached: every get reads its row group
    model = _load(db)
    db2 = _open()
    _load(db2)
    probes = list(model) + [b"k00001", b"a", b"zz"]
    for _ in range(2):  # the second round is served from db2's cache
        assert [db.get(k) for k in probes] == [db2.get(k) for k in probes] == [model.get(k) for k in probes]
    assert db.stats()["gets"] == db2.stats()["gets"] == 2 * len(probes)
    assert db2.stats()["row_cache_hits"] > 0 and db.stats()["row_cache_hits"] == 0
    db.close()
    db2.close()


def test_a_cached_table_is_not_searched_for_a_key_its_filter_rules_out():
    """Point reads ask each table's Bloom filter before its row group, cached or not: a cached
    row group of variable-width keys is searched by a bisection in Python, several times the
    filter's cost, and most keys a read meets are in none of the tables whose range holds them
    (an event id checked for a retry). Asking the filter only on a cache miss made those
    lookups over half of a Raft leader's time (docs/storage.md)."""
    db = _open()
    for t in range(4):  # four level-0 tables over the same key range
        for i in range(100):
            db.put(b"id-%03d-%d" % (i, t), b"v")
        db.flush()
    present = [b"id-%03d-%d" % (i, t) for t in range(4) for i in range(100)]
    assert db.get_many(present) == [b"v"] * len(present)  # every row group is cached now
    before = db.stats()
    absent = [b"id-%03d-9" % i for i in range(1, 99)]
    assert db.get_many(absent) == [None] * len(absent)
    after = db.stats()
    probed = after["sst_probes"] - before["sst_probes"]
    skipped = after["bloom_negatives"] - before["bloom_negatives"]
    assert probed == 4 * len(absent)  # each key falls in the range of every table
    assert skipped >= 0.9 * probed  # and the filters, at 10 bits a key, rule out all but ~1%
    db.close()


_keys = st.binary(min_size=1, max_size=3)
_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), _keys, st.binary(max_size=3)),
    st.tuples(st.just("delete"), _keys),
    st.tuples(st.just("delete_range"), _keys, _keys),
    st.tuples(st.sampled_from(["flush", "compact", "snapshot"])),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=_ops, bounds=st.tuples(st.none() | _keys, st.none() | _keys), reverse=st.booleans())
def test_scans_and_gets_match_the_model_whichever_path_runs(ops, bounds, reverse):
    db = _open(row_group_rows=4, target_file_bytes=64)
    model = MemoryEngine()
    snaps = []
    for op in ops:
        if op[0] == "put":
            db.put(op[1], op[2])
            model.put(op[1], op[2])
        elif op[0] == "delete":
            db.delete(op[1])
            model.delete(op[1])
        elif op[0] == "delete_range":
            if op[1] < op[2]:
                db.delete_range(op[1], op[2])
                model.delete_range(op[1], op[2])
        elif op[0] == "snapshot":
            snaps.append((db.snapshot(), model.snapshot()))
        else:
            getattr(db, op[0])()
    start, end = bounds
    if start is not None and end is not None and start > end:
        start, end = end, start
    assert list(db.scan(start, end, reverse=reverse)) == list(model.scan(start, end, reverse=reverse))
    for snap, msnap in snaps:
        assert list(db.scan(start, end, reverse=reverse, snapshot=snap)) == \
            list(model.scan(start, end, reverse=reverse, snapshot=msnap))
    probe = sorted({op[1] for op in ops if len(op) > 1})
    assert [db.get(k) for k in probe] == [model.get(k) for k in probe]
    for snap, _ in snaps:
        snap.release()
    db.close()


def test_point_reads_compare_keys_bytewise_in_fixed_and_variable_width_row_groups():
    fixed = [b"\x00\x00", b"\x00\x80", b"\x7f\x00", b"\x80\x00", b"\xff\x00", b"\xff\xff"]
    mixed = fixed + [b"\x80", b"\xff", b"\x00"]
    for keys in (fixed, mixed):
        db = _open(row_group_rows=2)
        for k in keys:
            db.put(k, k * 2)
        db.flush()
        db.compact()
        probes = sorted(set(keys) | {b"\x80\x00\x00", b"\x7f", b"\x00\x00\x00", b"\x01\x00"})
        assert [db.get(k) for k in probes] == [k * 2 if k in keys else None for k in probes]
        assert db.get_many(probes) == [k * 2 if k in keys else None for k in probes]
        db.close()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12).flatmap(lambda w: st.lists(
    st.one_of(st.binary(min_size=w, max_size=w),  # any bytes of the width
              st.sampled_from([b"\x00" * w, b"\xff" * w, b"k" * w])),  # repeats and shared prefixes
    min_size=2, max_size=60)))
def test_ingest_sort_of_fixed_width_keys_matches_the_general_sort(keys):
    from ddia_ray.storage.lsm.jobs import _sort_ingest_rows
    from ddia_ray.storage.lsm.memtable import SCHEMA
    from ddia_ray.storage.lsm.merge import sort_rows

    rows = pa.table([pa.array(keys, pa.binary()), pa.array(range(1, len(keys) + 1), pa.uint64()),
                     pa.array([0] * len(keys), pa.uint8()), pa.array([b"%d" % i for i in range(len(keys))])],
                    schema=SCHEMA)
    assert _sort_ingest_rows(rows).to_pylist() == sort_rows(rows).to_pylist()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=6), min_size=2, max_size=60), st.booleans())
def test_ingest_rows_already_in_key_order_are_kept_as_they_are(keys, unique):
    """Keys that ascend strictly need no sort (the table itself comes back); sorted keys with a
    repeat, of any widths, still get the general order (newest version first)."""
    from ddia_ray.storage.lsm.jobs import _sort_ingest_rows
    from ddia_ray.storage.lsm.memtable import SCHEMA
    from ddia_ray.storage.lsm.merge import sort_rows

    keys = sorted(set(keys)) if unique else sorted(keys)
    rows = pa.table([pa.array(keys, pa.binary()), pa.array(range(1, len(keys) + 1), pa.uint64()),
                     pa.array([0] * len(keys), pa.uint8()), pa.array([b"%d" % i for i in range(len(keys))])],
                    schema=SCHEMA)
    got = _sort_ingest_rows(rows)
    assert got.to_pylist() == sort_rows(rows).to_pylist()
    assert (got is rows) == (len(set(keys)) == len(keys)) or len(keys) < 2  # one row is its own order


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=400), st.integers(0, 5))
def test_vectorised_crc32_matches_zlib(keys, offset):
    import zlib

    from ddia_ray.storage.lsm.crc import crc32_of_keys

    keys = keys + [b"sixteen-byte-key"] * 300  # one length with enough rows for its tables
    arr = pa.array([b"x"] * offset + keys, pa.binary()).slice(offset)  # an array that starts mid-buffer
    assert crc32_of_keys(arr).tolist() == [zlib.crc32(k) for k in keys]
    assert crc32_of_keys(pa.chunked_array([arr.slice(0, 5), arr.slice(5)])).tolist() == [zlib.crc32(k) for k in keys]


@pytest.mark.parametrize("width", [7, 16, 33])
@pytest.mark.parametrize("offset", [0, 1])
def test_vectorised_crc32_of_one_width_matches_zlib(width, offset):
    import random
    import zlib

    from ddia_ray.storage.lsm.crc import crc32_of_keys

    rng = random.Random(width * 10 + offset)
    keys = [rng.randbytes(width) for _ in range(1000)]
    arr = pa.array([b"x"] * offset + keys, pa.binary()).slice(offset)  # offset 1: an odd start in the buffer
    assert crc32_of_keys(arr).tolist() == [zlib.crc32(k) for k in keys]
