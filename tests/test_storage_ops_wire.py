"""The ``write`` payload shared by the storage node and the caches: columns on the wire, checked on arrival."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.errors import CodecError, InvalidArgumentError
from ddia_ray.storage import Op, OpColumns, WriteBatch
from ddia_ray.storage.engine import MemoryEngine, decode_columns, decode_ops, encode_ops
from ddia_ray.storage.lsm import LSMTree

_dbs = itertools.count()
_op = st.one_of(
    st.builds(lambda k, v: Op("put", k, v), st.binary(max_size=8), st.binary(max_size=8)),
    st.builds(lambda k: Op("delete", k), st.binary(max_size=8)),
    st.builds(lambda s, e: Op("delete_range", min(s, e), b"", max(s, e)), st.binary(max_size=8),
              st.binary(max_size=8)),  # a reversed range is refused when the Op is built
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=30))
def test_a_batch_survives_the_wire_op_for_op(ops):
    data = encode_ops(WriteBatch(ops))
    assert isinstance(codec.decode(data), OpColumns)  # columns, not a record per op
    assert decode_ops(data).ops == ops


def test_put_columns_and_the_older_tuple_of_ops_both_decode():
    assert decode_ops(encode_ops(OpColumns.puts((b"a", b"b"), (b"1", b"2")))).ops == [Op("put", b"a", b"1"),
                                                                                    Op("put", b"b", b"2")]
    older = codec.encode((Op("put", b"k", b"v"), Op("delete", b"x")))  # what clients before the columns sent
    assert decode_ops(older).ops == [Op("put", b"k", b"v"), Op("delete", b"x")]


@pytest.mark.parametrize("kinds, keys, tails, message", [
    (b"\x00\x00", (b"a",), (b"1",), "differ in length"),
    (b"\x07", (b"a",), (b"1",), "unknown batch operation code 7"),
    (b"\x00", ("a",), (b"1",), "must be bytes"),
    (b"\x00", (b"a",), (None,), "must be bytes"),
    ("put", (b"a",), (b"1",), "must be bytes, tuple and tuple"),
])
def test_malformed_columns_are_refused_on_arrival(kinds, keys, tails, message):
    with pytest.raises(InvalidArgumentError, match=message):
        OpColumns(kinds, keys, tails)


def test_a_payload_that_is_neither_columns_nor_ops_is_refused():
    with pytest.raises(InvalidArgumentError, match="storage.op_columns"):
        decode_ops(codec.encode((b"not", b"ops")))
    with pytest.raises(CodecError):
        decode_ops(codec.encode({"a": 1}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_op, max_size=20), max_size=6))
def test_the_lsm_applies_columns_as_it_applies_the_batch(batches):
    """The storage node hands the LSM the wire's columns (no Op per operation): same result as write()."""
    model = MemoryEngine()
    db = LSMTree.open(f"memory://cols-{next(_dbs)}", background=False)
    try:
        for ops in batches:
            model.write(WriteBatch(ops))
            db.write_columns(decode_columns(encode_ops(WriteBatch(ops))))
        assert list(db.scan()) == list(model.scan())
    finally:
        db.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_op, max_size=20), max_size=6))
def test_the_lsm_applies_checked_tuples_as_it_applies_the_batch(batches):
    """A replica hands the LSM its log entries' checked (code, key, tail) tuples as they are: the
    same data as write(), and the same bytes counted in the statistics."""
    codes = {"put": 0, "delete": 1, "delete_range": 2}
    by_batch = LSMTree.open(f"memory://checked-a-{next(_dbs)}", background=False)
    by_tuples = LSMTree.open(f"memory://checked-b-{next(_dbs)}", background=False)
    try:
        for ops in batches:
            by_batch.write(WriteBatch(ops))
            by_tuples.write_checked(tuple((codes[op.kind], op.key, op.end if op.kind == "delete_range" else op.value)
                                          for op in ops))
        assert list(by_tuples.scan()) == list(by_batch.scan())
        assert by_tuples.stats()["user_bytes"] == by_batch.stats()["user_bytes"] == sum(
            len(op.key) + len(op.value) + len(op.end or b"") for ops in batches for op in ops)
    finally:
        by_batch.close()
        by_tuples.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=80),
                          st.lists(_op, max_size=3), st.booleans()), max_size=6), st.booleans())
def test_the_lsm_applies_puts_as_columns_as_it_applies_their_batch(batches, wal):
    """write_puts(keys, values, tail): the same data as write() of the puts then the tail, in the
    memtable, after a flush, and (with a WAL) after reopening; a read between writes indexes the run."""
    codes = {"put": 0, "delete": 1, "delete_range": 2}
    url = f"memory://puts-cols-{next(_dbs)}"
    model = LSMTree.open(f"memory://puts-model-{next(_dbs)}", background=False)
    db = LSMTree.open(url, background=False, wal=wal)
    try:
        for puts, tail, read in batches:
            model.write(WriteBatch([Op("put", k, v) for k, v in puts] + tail))
            db.write_puts(pa.array([k for k, _ in puts], pa.binary()), pa.array([v for _, v in puts], pa.binary()),
                          tuple((codes[op.kind], op.key, op.end if op.kind == "delete_range" else op.value)
                                for op in tail))
            if read and puts:
                assert db.get(puts[0][0]) == model.get(puts[0][0])
        assert list(db.scan()) == list(model.scan())
        if wal:
            db.close()
            db = LSMTree.open(url, background=False)
            assert list(db.scan()) == list(model.scan())
        db.flush()
        assert list(db.scan()) == list(model.scan())
    finally:
        db.close()
        model.close()


def test_write_puts_refuses_columns_of_different_lengths():
    db = LSMTree.open("memory://puts-refusals", background=False)
    try:
        with pytest.raises(InvalidArgumentError, match="2 keys and 1 values"):
            db.write_puts(pa.array([b"a", b"b"]), pa.array([b"1"]))
    finally:
        db.close()


def test_write_columns_refuses_what_write_refuses():
    db = LSMTree.open("memory://cols-refusals", background=False)
    try:
        with pytest.raises(InvalidArgumentError, match="takes OpColumns"):
            db.write_columns(WriteBatch([Op("put", b"k", b"v")]))
        with pytest.raises(InvalidArgumentError, match="a delete has no value"):
            db.write_columns(OpColumns(b"\x00\x01", (b"a", b"k"), (b"1", b"ignored")))
        assert db.get(b"a") is None  # the batch is refused whole, before anything is applied
    finally:
        db.close()


class _Key(bytes):
    """A bytes subclass: kept as it is by the batch, refused by a replicated store's client."""


_step = st.one_of(
    st.tuples(st.just("put"), st.one_of(st.binary(max_size=6), st.text(max_size=3)),
              st.one_of(st.binary(max_size=6), st.builds(bytearray, st.binary(max_size=4)))),
    st.tuples(st.just("put"), st.builds(_Key, st.binary(max_size=4)), st.binary(max_size=4)),
    st.tuples(st.just("put"), st.binary(max_size=4), st.text(min_size=1, max_size=3)),  # a str value: refused
    st.tuples(st.just("delete"), st.binary(max_size=6), st.none()),
    st.tuples(st.just("delete_range"), st.binary(max_size=6), st.binary(max_size=6)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=40), st.integers(0, 40))
def test_a_batch_of_puts_kept_as_columns_holds_the_same_ops_as_records(steps, read_at):
    """WriteBatch keeps a puts-only batch as two lists and makes Op records when ``ops`` is read:
    whenever it is read, and whatever comes after, the ops equal those built one record at a time."""
    batch, model = WriteBatch(), []
    for i, (kind, key, tail) in enumerate(steps):
        if i == read_at:
            assert batch.ops == model  # read midway: the records are made, the rest appended to them
        if kind == "put":
            try:
                expected = Op("put", key.encode() if isinstance(key, str) else key, bytes(tail))
                assert not isinstance(tail, str)
            except (InvalidArgumentError, AssertionError, TypeError):
                with pytest.raises(InvalidArgumentError):
                    batch.put(key, tail)
                continue  # a refused put leaves nothing behind, not even its key
            batch.put(key, tail)
        elif kind == "delete":
            expected = Op("delete", key)
            batch.delete(key)
        else:
            s, e = min(key, tail), max(key, tail)
            expected = Op("delete_range", s, b"", e)
            batch.delete_range(s, e)
        model.append(expected)
        assert len(batch) == len(model)
    cols = batch.puts()
    if cols is not None:  # still columns: puts only, never read as records
        assert all(op.kind == "put" for op in model) and read_at >= len(steps) or not model
        assert list(zip(*cols)) == [(op.key, op.value) for op in model]
    assert batch.ops == model and batch.puts() is None or not model
    if all(type(op.key) is bytes for op in model):
        assert decode_ops(encode_ops(batch)).ops == model  # the wire sees the same batch
    else:  # the wire takes exact bytes, whichever way the batch held them
        with pytest.raises(InvalidArgumentError, match="must be bytes"):
            encode_ops(batch)
