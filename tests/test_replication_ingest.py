"""The ingest operation (ddia_ray/replication/ingest.py): its blob round-trips, every malformed blob is
refused with InvalidArgumentError, and each replica state applies it like the puts it stands for, with
the entry's position and session rows in the same atomic step on the LSM engine."""

from __future__ import annotations

import struct

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.errors import InvalidArgumentError
from ddia_ray.replication.engine_state import APPLIED_KEY, SESSION_PREFIX, SMALL_INGEST_ROWS, EngineState
from ddia_ray.replication.ingest import (MAX_INGEST_ROWS, PUTS_AS_INGEST_MIN, columns_op, decode_ingest, ingest_op,
                                         ingest_puts, puts_op)
from ddia_ray.replication.records import INGEST, PUT, ReplWrite, check_ops
from ddia_ray.replication.state import MapState

rows = st.lists(st.tuples(st.binary(min_size=1, max_size=12).filter(lambda k: not k.startswith(b"\x00ddia")),
                          st.binary(max_size=20)), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(rows, st.integers(0, 5))
def test_a_batch_round_trips_and_applies_like_its_puts(pairs, skip):
    keys, values = [k for k, _ in pairs], [v for _, v in pairs]
    arr_k, arr_v = pa.array([b"pad"] * skip + keys, pa.binary()), pa.array([b"x"] * skip + values, pa.binary())
    op = ingest_op(arr_k.slice(skip), arr_v.slice(skip))  # a sliced column (an Arrow offset) too
    assert op[0] == INGEST and op[1] == min(keys)
    got = decode_ingest(op[2], op[1])
    assert got.keys.to_pylist() == keys and got.values.to_pylist() == values and got.hi == max(keys)
    assert ingest_puts((op,)) == tuple((PUT, k, v) for k, v in pairs)
    # The op survives the wire as a client write, and a dict state applies it as its puts in order.
    again = codec.decode(codec.encode(ReplWrite((op,), 0, 0, "c", 1, 1, 0, 0, 0)))
    assert again.ops == (op,)
    state = MapState()
    state.apply(1, (op,))
    assert state.data == dict(pairs)  # a key repeated keeps its last value


def _blob(count: int, key_offsets, value_offsets, data: bytes, version: int = 1, magic: bytes = b"DRIG") -> bytes:
    u32 = struct.Struct("<I")
    return (struct.pack("<4sBI", magic, version, count) + b"".join(map(u32.pack, key_offsets))
            + b"".join(map(u32.pack, value_offsets)) + data)


@pytest.mark.parametrize("blob, match", [
    (b"DRIG", "batch blob"),
    (_blob(1, [0, 1], [0, 1], b"ab", magic=b"NOPE"), "bad magic"),
    (_blob(1, [0, 1], [0, 1], b"ab", version=2), "format 2"),
    (_blob(0, [0], [0], b""), "1 to"),
    (_blob(MAX_INGEST_ROWS + 1, [0], [0], b""), "1 to"),
    (_blob(2, [0, 1], [0, 1], b""), "shorter than its offsets"),
    (_blob(2, [0, 2, 1], [0, 1, 2], b"abcd"), "key offsets do not ascend"),
    (_blob(1, [1, 2], [0, 1], b"abc"), "key offsets do not ascend"),
    (_blob(1, [0, 1], [0, 1 << 31], b"ab"), "value offsets do not ascend"),
    (_blob(1, [0, 1], [0, 1], b"abc"), "describe"),
    (_blob(1, [0, 1], [0, 5], b"ab"), "describe"),
    (_blob(1, [0, 6], [0, 1], b"\x00ddia\x00v"), "reserved"),
])
def test_a_malformed_batch_is_refused_precisely(blob, match):
    with pytest.raises(InvalidArgumentError, match=match):
        decode_ingest(blob)
    with pytest.raises(InvalidArgumentError):
        check_ops(((INGEST, b"a", blob),), client=False)


def test_an_ingest_is_alone_in_its_write_and_names_its_smallest_key():
    op = ingest_op([b"b", b"a"], [b"1", b"2"])
    assert check_ops((op,), client=True) == (op,)
    with pytest.raises(InvalidArgumentError, match="alone"):
        check_ops((op, (PUT, b"c", b"3")), client=True)
    with pytest.raises(InvalidArgumentError, match="smallest key"):
        check_ops(((INGEST, b"b", op[2]),), client=False)
    with pytest.raises(InvalidArgumentError, match="keys and"):
        ingest_op([b"a"], [b"1", b"2"])
    with pytest.raises(InvalidArgumentError, match="null"):
        ingest_op(pa.array([b"a", None], pa.binary()), pa.array([b"1", b"2"], pa.binary()))
    with pytest.raises(InvalidArgumentError, match="binary column"):
        ingest_op(pa.array(["a"]), pa.array([b"1"]))
    assert decode_ingest(ingest_op(pa.array([b"k"], pa.large_binary()), [b"v"])[2]).keys.to_pylist() == [b"k"]


@pytest.mark.parametrize("engine, rows", [("lsm", 500), ("lsm", SMALL_INGEST_ROWS + 1), ("btree", 500)])
def test_an_engine_state_ingests_with_its_position_and_sessions(tmp_path, engine, rows):
    def open_():
        return EngineState(f"file://{tmp_path}/e", engine=engine, session_ttl_ms=1000,
                           checkpoints_url=f"file://{tmp_path}/cps")

    st_ = open_()
    st_.apply(1, ((PUT, b"k0", b"old"),), ("a", 1, 1, (None,), 0), epoch=1)
    keys = [b"k%d" % i for i in range(rows)]
    op = ingest_op(keys, [b"v" + k for k in keys])
    st_.apply(2, (op,), ("b", 1, 1, (None,), 5000), epoch=2)  # client a's session expires in this entry
    assert st_.get(b"k0") == b"vk0" and st_.get(b"k499") == b"vk499"
    if engine == "lsm":
        # A large batch is the engine's own ingest (an SSTable); a small one goes to the memtable
        # as columns, with no SSTable per write (and the WAL-less replica replays it after a crash).
        assert (st_.engine.stats()["ingest_bytes"] > 0) == (rows > SMALL_INGEST_ROWS)
    assert st_.engine.get(SESSION_PREFIX + b"a") is None and st_.answered("b", 1) == (2, (None,))
    st_.close()
    again = open_()
    assert (again.applied, again.applied_epoch) == (2, 2)  # the position came with the rows
    assert codec.decode(again.engine.get(APPLIED_KEY)) == (2, 2)
    assert again.answered("b", 1) == (2, (None,)) and again.get_many((b"k7", b"k8")) == (b"vk7", b"vk8")
    again.close()


@pytest.mark.parametrize("in_order", [True, False])
def test_a_large_ingest_in_key_order_reaches_the_engine_in_order_with_the_entrys_rows(tmp_path, in_order):
    """The entry's own rows (position, sessions) go where they sort, even among batch keys below and
    above the reserved prefix, so a batch in key order needs no sort in the engine; any order applies."""
    st_ = EngineState(f"file://{tmp_path}/e", engine="lsm")
    seen = []
    real = st_.engine.ingest
    st_.engine.ingest = lambda table: (seen.append(table), real(table))[1]
    keys = sorted({b"\x00" + bytes([i % 256]) + b"%06d" % i for i in range(SMALL_INGEST_ROWS + 50)}
                  | {b"z%06d" % i for i in range(50)})
    assert keys[0] < APPLIED_KEY < keys[-1]  # the reserved rows land inside the batch's range
    sent = keys if in_order else keys[::-1]
    st_.apply(1, (ingest_op(sent, [b"v" + k for k in sent]),), ("c", 1, 1, (None,), 0), epoch=1)
    got = seen[0].column("key").to_pylist()
    assert sorted(got) == sorted(keys + [APPLIED_KEY, SESSION_PREFIX + b"c"])
    assert (got == sorted(got)) == in_order
    assert st_.get_many((keys[0], keys[-1])) == (b"v" + keys[0], b"v" + keys[-1])
    assert codec.decode(st_.engine.get(APPLIED_KEY)) == (1, 1)
    st_.close()


@settings(max_examples=100, deadline=None)
@given(rows, st.sampled_from([PUT, 1]))
def test_a_clients_puts_go_as_one_ingest_only_when_they_are_many_and_nothing_else(pairs, other):
    ops = tuple((PUT, k, v) for k, v in pairs) * (PUTS_AS_INGEST_MIN // len(pairs) + 1)
    op = puts_op(ops)
    assert op is not None and check_ops((op,), client=False) == (op,)
    assert ingest_puts((op,)) == ops  # the same puts, in order
    assert puts_op(ops[:PUTS_AS_INGEST_MIN - 1]) is None  # too few to be worth it
    mixed = ops + ((other, b"k", b"" if other else b"v"),)
    assert (puts_op(mixed) is None) == (other != PUT)  # a delete keeps the op tuples
    assert puts_op(ops + ((3, b"k", None, b"v"),)) is None  # a cas too


def test_a_clients_puts_with_a_reserved_key_stay_op_tuples_for_the_leader_to_refuse():
    ops = tuple((PUT, b"k%d" % i, b"v") for i in range(100)) + ((PUT, b"\x00ddia\x00x", b"v"),)
    assert puts_op(ops) is None
    with pytest.raises(InvalidArgumentError, match="reserved"):
        check_ops(ops, client=True)


class _Sub(bytes):
    """A bytes subclass, which the wire would send as plain bytes without a word."""


@settings(max_examples=100, deadline=None)
@given(rows)
def test_puts_kept_as_columns_make_the_ingest_their_op_tuples_make_or_none(pairs):
    """A WriteBatch's two lists (columns_op) and its op tuples (puts_op) give the same operation, and
    columns_op declines whatever check_ops would refuse or an ingest cannot carry."""
    pairs = pairs * (PUTS_AS_INGEST_MIN // len(pairs) + 1)
    keys, values = [k for k, _ in pairs], [v for _, v in pairs]
    op = columns_op(keys, values)
    assert op is not None and op == puts_op(tuple((PUT, k, v) for k, v in pairs))
    assert ingest_puts((op,)) == tuple((PUT, k, v) for k, v in pairs)
    n = PUTS_AS_INGEST_MIN - 1
    assert columns_op(keys[:n], values[:n]) is None  # too few to be worth it
    assert columns_op(keys, values[:-1]) is None  # unequal columns
    assert columns_op([_Sub(keys[0])] + keys[1:], values) is None  # exact bytes only
    assert columns_op(keys, [bytearray(values[0])] + values[1:]) is None
    assert columns_op(keys + [b"\x00ddia\x00x"], values + [b"v"]) is None  # a reserved key: the leader's to refuse
