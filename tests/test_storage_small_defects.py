"""Storage engine argument and accounting checks, one named test each, run against every engine where it applies.

- the row-group cache charged 64 B per entry where one holds ~5 KB: its byte bound did not bound memory;
- ``MemoryEngine.write(list)`` raised AttributeError where the other engines raise InvalidArgumentError;
- ``Op("delete_range", b"z", end=b"a")`` deleted nothing where ``delete_range(b"z", b"a")`` raises,
  and a wire batch could carry such a range (or a field its operation ignores) unnoticed;
- ``MemoryEngine`` read through another engine's snapshot where the others refuse it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import tracemalloc

import pyarrow as pa
import pytest

from ddia_ray import codec
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.storage.btree import BTreeEngine
from ddia_ray.storage.engine import MemoryEngine, Op, OpColumns, WriteBatch, decode_columns, decode_ops, encode_ops
from ddia_ray.storage.lsm import LSMTree

_N = itertools.count()

ENGINES = {
    "memory": lambda: MemoryEngine(),
    "lsm": lambda: LSMTree.open(f"memory://small-defects-lsm/{next(_N)}", background=False),
    "btree": lambda: BTreeEngine.open(f"memory://small-defects-btree/{next(_N)}", page_size=1024, sync=False),
}


@pytest.fixture(params=sorted(ENGINES))
def db(request):
    engine = ENGINES[request.param]()
    yield engine
    engine.close()


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as e:  # the caller asserts on what was raised
        return e
    pytest.fail("expected an exception, nothing was raised")


# --- the row-group cache's byte bound ------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _c_heap_probe():
    """Bytes in use on the C heap (glibc's mallinfo2), or None where there is no such call."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd
    return in_use


def _freed_by_clearing(db, keys, *, trace: bool, c_heap) -> tuple[int, int]:
    """Fill the row cache by reading ``keys``; return (Python + Arrow bytes, C heap bytes) that clearing it frees."""
    cache = db._row_cache
    cache.clear()
    gc.collect()
    evictions = cache.evictions
    if trace:
        tracemalloc.start()
    try:
        for k in keys:
            assert db.get(k) == k[::-1]
        gc.collect()
        py, arrow, heap = tracemalloc.get_traced_memory()[0], pa.total_allocated_bytes(), c_heap() if c_heap else 0
        # The bound must be reached for the measurement to test it.
        assert cache.evictions > evictions and cache.charge > cache.capacity // 2, "the cache never filled"
        cache.clear()
        gc.collect()
        py -= tracemalloc.get_traced_memory()[0]
        arrow -= pa.total_allocated_bytes()
        heap -= c_heap() if c_heap else 0
    finally:
        if trace:
            tracemalloc.stop()
    return py + arrow, heap


def test_the_row_group_cache_holds_no_more_memory_than_its_byte_bound():
    # One-row row groups are the worst case: per-entry overhead dwarfs the rows. Charged 64 B each,
    # ~2,000 of them fit a 128 KiB bound while holding ~10 MB.
    capacity = 128 * 1024
    keys = [b"key-%06d" % i for i in range(2000)]
    db = LSMTree.open(f"memory://small-defects-rowcache/{next(_N)}", background=False,
                      row_group_rows=1, row_cache_bytes=capacity)
    try:
        for k in keys:
            db.put(k, k[::-1])
        db.flush()
        for k in keys:  # warm everything but the row cache (open files, footers, interned ints)
            db.get(k)
        # Python objects under tracemalloc; then, without it (it mallocs per trace), the C++ objects
        # behind them where the C library can report its heap. Arrow's pool is counted both times.
        python_and_arrow, _ = _freed_by_clearing(db, keys, trace=True, c_heap=None)
        c_heap = _c_heap_probe()
        # mallinfo2 counts the heap of every thread in the process: a thread left running by an
        # earlier test that allocates or frees between the two reads moves the figure, which on a
        # loaded machine read 2.2x and 2.4x the bound in two suite runs while the test alone passed.
        # The least of up to three measurements is the cache's own.
        heap = 0
        for attempt in range(3 if c_heap else 0):
            _, measured = _freed_by_clearing(db, keys, trace=False, c_heap=c_heap)
            heap = measured if attempt == 0 else min(heap, measured)
            if python_and_arrow + max(heap, 0) <= capacity * 1.10:
                break
        held = python_and_arrow + max(heap, 0)
        assert 0 < held <= capacity * 1.10, (
            f"the row cache held {held} B (Python + Arrow {python_and_arrow} B, C heap {heap} B) "
            f"under a {capacity} B bound, {held / capacity:.1f}x")
    finally:
        db.close()


# --- write() takes a WriteBatch of Op records, on every engine -----------------------------------


@pytest.mark.parametrize("batch", [
    [Op("put", b"k", b"v")],
    (Op("put", b"k", b"v"),),
    [("put", b"k", b"v")],
    None,
    b"put k v",
], ids=["list", "tuple", "list-of-tuples", "none", "bytes"])
def test_write_refuses_anything_but_a_write_batch(db, batch):
    with pytest.raises(InvalidArgumentError, match="takes a WriteBatch"):
        db.write(batch)
    assert db.get(b"k") is None


@pytest.mark.parametrize("ops", [[("put", b"k", b"v")], [Op("put", b"k", b"v"), None], b"ops", 7])
def test_a_write_batch_holds_only_op_records(ops):
    with pytest.raises(InvalidArgumentError):
        WriteBatch(ops)


def test_write_refuses_a_batch_whose_ops_list_was_given_something_else(db):
    batch = WriteBatch().put(b"k", b"v")
    batch.ops.append(("put", b"x", b"y"))
    with pytest.raises(InvalidArgumentError, match="only hold Op records"):
        db.write(batch)
    assert db.get(b"k") is None and db.get(b"x") is None  # all or nothing


# --- a reversed delete_range is refused on every path --------------------------------------------


def test_a_reversed_range_op_raises_what_delete_range_raises(db):
    db.put(b"m", b"kept")
    direct = _raised(lambda: db.delete_range(b"z", b"a"))
    via_op = _raised(lambda: db.write(WriteBatch([Op("delete_range", b"z", end=b"a")])))
    via_batch = _raised(lambda: db.write(WriteBatch().delete_range(b"z", b"a")))
    for e in (direct, via_op, via_batch):
        assert type(e) is ConfigError and str(e) == str(direct)
    assert db.get(b"m") == b"kept"


def test_an_empty_range_op_is_still_accepted(db):
    db.put(b"m", b"kept")
    db.write(WriteBatch([Op("delete_range", b"m", end=b"m")]))  # [m, m) is empty, not reversed
    assert db.get(b"m") == b"kept"


@pytest.mark.parametrize("make", [
    lambda: Op("delete_range", b"a", b"z"),  # the end passed where the value goes: deleted nothing
    lambda: Op("delete", b"k", b"v"),
    lambda: Op("put", b"k", b"v", end=b"z"),
    lambda: Op("delete", b"k", end=b"z"),
], ids=["range-end-as-value", "delete-with-value", "put-with-end", "delete-with-end"])
def test_an_op_refuses_a_field_its_kind_ignores(make):
    with pytest.raises(InvalidArgumentError):
        make()


def _unchecked_op(kind: str, key: bytes, value: bytes = b"", end: bytes = b"") -> Op:
    """An Op as a client that predates validation could send it: fields set past ``__post_init__``."""
    op = Op("put", b"", b"")
    for name, v in (("kind", kind), ("key", key), ("value", value), ("end", end)):
        object.__setattr__(op, name, v)
    return op


def test_a_wire_batch_with_a_reversed_range_is_refused_with_the_same_error():
    local = _raised(lambda: MemoryEngine().delete_range(b"z", b"a"))
    columns = encode_ops(OpColumns(b"\x02", (b"z",), (b"a",)))
    tuple_of_ops = codec.encode((_unchecked_op("delete_range", b"z", end=b"a"),))  # older clients' format
    for decode in (decode_ops, decode_columns):
        for payload in (columns, tuple_of_ops):
            e = _raised(lambda: decode(payload))
            assert type(e) is ConfigError and str(e) == str(local)


@pytest.mark.parametrize("payload", [
    encode_ops(OpColumns(b"\x01", (b"k",), (b"ignored",))),
    codec.encode((_unchecked_op("delete", b"k", value=b"ignored"),)),
    codec.encode((_unchecked_op("delete_range", b"a", value=b"z"),)),
], ids=["columns-delete-with-tail", "ops-delete-with-value", "ops-range-end-as-value"])
@pytest.mark.parametrize("decode", [decode_ops, decode_columns])
def test_a_wire_batch_with_an_ignored_field_is_refused(payload, decode):
    with pytest.raises(InvalidArgumentError):
        decode(payload)


def test_a_well_formed_wire_range_still_arrives():
    batch = decode_ops(encode_ops(OpColumns(b"\x02", (b"a",), (b"z",))))
    assert batch.ops == [Op("delete_range", b"a", end=b"z")]


# --- snapshots belong to their engine ------------------------------------------------------------


def test_a_snapshot_of_another_engine_is_refused(db):
    db.put(b"k", b"v")
    foreign = MemoryEngine().snapshot()
    with pytest.raises(InvalidArgumentError, match="snapshot must come from this"):
        db.get(b"k", snapshot=foreign)
    with pytest.raises(InvalidArgumentError, match="snapshot must come from this"):
        list(db.scan(snapshot=foreign))
