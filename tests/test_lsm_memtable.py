"""The memtable against a plain model: pending runs, the dict, range tombstones and the flush order."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.storage.lsm import memtable as memtable_module
from ddia_ray.storage.lsm.memtable import DELETE, PUT, RANGE_DELETE, Memtable, PutColumns

_KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"ff", b"g"])
_POINT = st.tuples(st.sampled_from([PUT, PUT, DELETE]), _KEYS, st.binary(max_size=4)).map(
    lambda op: (op[0], op[1], b"" if op[0] == DELETE else op[2]))
_RANGE = st.tuples(st.just(RANGE_DELETE), _KEYS, _KEYS).map(lambda op: (RANGE_DELETE, *sorted(op[1:])))
_BATCH = st.tuples(st.lists(st.one_of(_POINT, _POINT, _POINT, _RANGE), min_size=1, max_size=8),
                   st.sampled_from(["tuple", "list", "columns"]))
_STEP = st.one_of(_BATCH.map(lambda b: ("write", b)), st.tuples(st.just("read"), _KEYS, st.integers(0, 80)))


def _newest(model: list, key: bytes, snap: int):
    """The model's newest point version of ``key`` at or below ``snap``."""
    for seq, kind, k, value in reversed(model):
        if seq <= snap and k == key and kind != RANGE_DELETE:
            return (seq, kind, value)
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_STEP, max_size=25), st.integers(0, 4))
def test_a_memtable_with_pending_runs_reads_and_flushes_like_a_model(steps, threshold):
    """Pending runs (any batch at or above ``threshold`` point ops), the dict and range deletes,
    interleaved with reads that index the runs: reads, sorted keys and the flushed table match."""
    saved = memtable_module.PENDING_MIN_OPS
    memtable_module.PENDING_MIN_OPS = threshold
    try:
        m, model, seq = Memtable(), [], 0
        for step in steps:
            if step[0] == "write":
                ops, container = step[1]
                first = seq + 1
                if container == "columns":  # puts only, as a replica hands them over (PutColumns)
                    ops = [(PUT, k, v) for _c, k, v in ops if _c == PUT]
                    batch = PutColumns(pa.array([k for _c, k, _v in ops], pa.binary()),
                                       pa.array([v for _c, _k, v in ops], pa.binary()))
                else:
                    batch = tuple(ops) if container == "tuple" else list(ops)
                last = m.apply(first, batch)
                for op in ops:
                    seq += 1
                    model.append((seq, *op))
                assert last == seq
            else:
                _, key, snap = step
                assert m.get(key, snap) == _newest(model, key, snap)
        assert len(m) == len(model)
        assert m.sorted_keys() == sorted({k for _s, kind, k, _v in model if kind != RANGE_DELETE})
        for key in m.sorted_keys():  # every key's versions in seq order, as reads and scans assume
            assert list(m.versions_of(key)) == [(s, kind, v) for s, kind, k, v in model
                                                if k == key and kind != RANGE_DELETE]
        expected = sorted(((k, s, kind, v) for s, kind, k, v in model), key=lambda r: (r[0], -r[1]))
        rows = [(r["key"], r["seq"], r["op"], r["value"]) for r in m.to_table().to_pylist()]
        assert rows == expected
        assert sorted(m.range_tombstones()) == sorted((k, v, s) for s, kind, k, v in model if kind == RANGE_DELETE)
    finally:
        memtable_module.PENDING_MIN_OPS = saved


def test_a_large_put_batch_stays_pending_until_a_read_and_the_flush_needs_no_index():
    m = Memtable()
    ops = tuple((PUT, b"k%04d" % (i % 300), b"v%d" % i) for i in range(1000))  # every key three times or four
    m.apply(1, ops)
    assert m._pending and not m._data  # kept as it came
    rows = m.to_table().to_pylist()
    assert not m._data  # the flush read the run itself
    assert [(r["key"], r["seq"]) for r in rows] == sorted(((k, i + 1) for i, (_c, k, _v) in enumerate(ops)),
                                                          key=lambda r: (r[0], -r[1]))
    assert m.get(b"a", 1000) is None and m.get(b"z", 1000) is None  # outside the run's keys: no index
    assert m._pending and not m._data
    assert m.get(b"k0007", 1000) == (908, PUT, b"v907")  # a read moves the run into the dict
    assert not m._pending and len(m._data) == 300
    assert m.get(b"k0007", 500) == (308, PUT, b"v307")
    # A read has indexed runs here: reads follow writes, so later batches go straight to the dict.
    m.apply(1001, tuple((PUT, b"k%04d" % i, b"w") for i in range(100)))
    m.apply(1101, PutColumns(pa.array([b"k0001", b"k0002"] * 40, pa.binary()), pa.array([b"x"] * 80, pa.binary())))
    assert not m._pending and m.get(b"k0002", 2000) == (1180, PUT, b"x")


def test_a_small_write_after_a_pending_run_keeps_each_keys_versions_in_order():
    m = Memtable()
    m.apply(1, tuple((PUT, b"k%04d" % i, b"old") for i in range(100)))
    m.apply(101, ((PUT, b"k0005", b"new"),))  # below the run threshold: the dict, after the run
    m.apply_one(102, DELETE, b"k0006", b"")
    assert m.get(b"k0005", 200) == (101, PUT, b"new")
    assert m.get(b"k0005", 100) == (6, PUT, b"old")
    assert m.get(b"k0006", 200) == (102, DELETE, b"")


def test_bookkeeping_rows_outside_a_runs_key_range_neither_wait_for_nor_trigger_its_indexing():
    m = Memtable()
    m.apply(1, tuple((PUT, b"user%04d" % i, b"v") for i in range(100)))
    m.apply(101, ((PUT, b"\x00applied", b"101"),))  # the replica's position after each entry
    m.apply(102, tuple((PUT, b"user%04d" % i, b"w") for i in range(100)))
    m.apply(202, ((PUT, b"\x00applied", b"202"),))
    assert m.get(b"\x00applied", 500) == (202, PUT, b"202")
    assert len(m._pending) == 2  # neither the writes nor the read of the position indexed the runs
    m.apply(203, ((DELETE, b"user0003", b""),))  # a key inside the runs' range: they go first
    assert not m._pending
    assert list(m.versions_of(b"user0003")) == [(4, PUT, b"v"), (105, PUT, b"w"), (203, DELETE, b"")]


def test_a_batch_holding_a_range_delete_or_lists_goes_to_the_dict_at_once():
    m = Memtable()
    ops = tuple((PUT, b"k%04d" % i, b"v") for i in range(100)) + ((RANGE_DELETE, b"k0010", b"k0020"),)
    m.apply(1, ops)
    assert not m._pending and len(m._data) == 100
    m.apply(102, [(PUT, b"x%04d" % i, b"v") for i in range(100)])  # a list could still change
    assert not m._pending and len(m._data) == 200


@pytest.mark.parametrize("rounds", [30])
def test_indexing_an_immutable_memtable_while_it_flushes_loses_and_doubles_no_row(rounds):
    """A reader (under the tree's mutex) may index an immutable memtable's runs while the flush
    thread turns it into a table: the table holds every version once, whichever goes first."""
    for r in range(rounds):
        m = Memtable()
        seq = 0
        for b in range(40):
            m.apply(seq + 1, tuple((PUT, b"k%05d" % ((b * 977 + i) % 3000), b"v%d" % seq) for i in range(200)))
            seq += 200
        tables = []
        flusher = threading.Thread(target=lambda: tables.append(m.to_table()))
        flusher.start()
        assert m.get(b"k00001", seq) is not None
        flusher.join()
        rows = tables[0]
        assert rows.num_rows == seq, f"round {r}"
        assert sorted(rows.column("seq").to_pylist()) == list(range(1, seq + 1))


@pytest.mark.parametrize("dict_key", [b"\x00pos", b"zz-after", b"user0050"])
@pytest.mark.parametrize("repeat", [False, True])
def test_a_flush_of_runs_and_dict_rows_is_in_sstable_order_wherever_their_keys_fall(dict_key, repeat):
    """Runs sorted by key alone, the dict's rows apart, joined when their ranges do not overlap
    (a replica's position rows below its clients' keys, or above) and sorted whole when they do."""
    m, seq, model = Memtable(), 0, []
    if dict_key == b"user0050":  # in the dict before runs whose range covers it: the parts overlap
        m.apply(1, ((PUT, dict_key, b"p"),))
        model.append((dict_key, 1, PUT, b"p"))
        seq = 1
    for b in range(3):
        keys = [b"user%04d" % ((i * 7 + b) % 100) for i in range(100)] + ([b"user0001"] if repeat else [])
        m.apply(seq + 1, PutColumns(pa.array(keys, pa.binary()), pa.array([b"v%d" % b] * len(keys), pa.binary())))
        model += [(k, seq + 1 + i, PUT, b"v%d" % b) for i, k in enumerate(keys)]
        seq += len(keys)
        if dict_key != b"user0050":  # outside the runs' range: it neither waits for nor indexes them
            m.apply(seq + 1, ((PUT, dict_key, b"p%d" % b),))
            model.append((dict_key, seq + 1, PUT, b"p%d" % b))
            seq += 1
    assert len(m._pending) == 3 and m._data
    rows = [(r["key"], r["seq"], r["op"], r["value"]) for r in m.to_table().to_pylist()]
    assert rows == sorted(model, key=lambda r: (r[0], -r[1]))
