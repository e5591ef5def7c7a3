"""The replication stream's records: the C-level check of a batch of puts agrees with the per-op
check, and the records that skip the codec's own walk of their fields refuse what it would."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.errors import CodecError, CorruptRecordError, InvalidArgumentError
from ddia_ray.replication import records
from ddia_ray.replication.records import (CAS, DELETE, DELETE_RANGE, PUT, RESERVED_PREFIX, Append, LogEntries,
                                          ReplWrite, check_ops)
from ddia_ray.replication.state import decide
from ddia_ray.storage.engine import Op, WriteBatch


class _Bytes(bytes):
    """A bytes subclass: refused as a key or value (the codec would send it as plain bytes)."""


_keys = st.one_of(st.binary(max_size=8), st.just(RESERVED_PREFIX + b"x"), st.just(RESERVED_PREFIX),
                  st.just(b"\x00ddia"), st.just(b"\x00ddia\x01"), st.builds(_Bytes, st.binary(max_size=3)))
_codes = st.one_of(st.sampled_from([PUT, PUT, PUT, DELETE, DELETE_RANGE, CAS, 9, -1, 256]),
                   st.sampled_from([False, True, 0.0]))
_tails = st.one_of(st.binary(max_size=8), st.none(), st.just(1), st.builds(_Bytes, st.binary(max_size=3)))
_op = st.one_of(st.tuples(_codes, _keys, _tails), st.tuples(st.just(PUT), _keys, st.binary(max_size=8)),
                st.tuples(_codes, _keys, _tails, _tails), st.tuples(_codes, _keys), st.lists(_keys, max_size=3))
_batches = st.one_of(st.lists(_op, max_size=6).map(tuple),
                     st.lists(st.tuples(st.just(PUT), _keys, st.binary(max_size=8)), max_size=6).map(tuple),
                     st.lists(_op, max_size=3))


def _verdict(ops, client: bool):
    try:
        return check_ops(ops, client=client)
    except InvalidArgumentError:
        return "refused"


@settings(max_examples=600, deadline=None)
@given(_batches, st.booleans())
def test_the_fast_check_of_puts_agrees_with_the_per_op_check(ops, client):
    fast = _verdict(ops, client)
    original = records._puts_only
    records._puts_only = lambda ops, client: False  # the per-op loop alone
    try:
        slow = _verdict(ops, client)
    finally:
        records._puts_only = original
    assert fast == slow


def test_the_fast_check_is_taken_for_puts_and_refuses_a_reserved_key_among_them():
    puts = tuple((PUT, b"k%04d" % i, b"v") for i in range(100))
    assert records._puts_only(puts, True)
    assert not records._puts_only(((True, b"k", b"v"),), False)  # True == DELETE: the loop decides
    hidden = puts[:50] + ((PUT, RESERVED_PREFIX + b"applied", b"v"),) + puts[50:]
    assert check_ops(hidden, client=False) == hidden  # the replicas' own writes may use it
    with pytest.raises(InvalidArgumentError, match="reserved"):
        check_ops(hidden, client=True)


def test_a_batch_without_cas_is_decided_as_it_is():
    ops = ((PUT, b"a", b"1"), (DELETE_RANGE, b"a", b"b"), (DELETE, b"c", b""))
    assert decide(ops, lambda k: None) == (ops, (None, None, None))
    assert decide(((CAS, b"a", b"2", None), *ops), lambda k: None) == (((PUT, b"a", b"2"), *ops),
                                                                         (True, None, None, None))


_ENTRIES = ((2, 5, ((PUT, b"k", b"v"), (DELETE, b"d", b"")), 1, ("c1", 3, 2, (None, True), 77)),
            (2, 6, ((PUT, b"k2", b"v2"),), 0, ()))


_DEEP: tuple = ()
for _ in range(codec.FIELD_DEPTH_MAX + 2):
    _DEEP = (_DEEP,)


def _frame(tag: str, version: int, fields: dict) -> bytes:
    """A payload of one record as a writer of any version would frame it (wire grammar, codec docstring)."""
    inner = msgpack.packb({"t": tag, "v": version, "f": fields}, use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner), use_bin_type=True)


@pytest.mark.parametrize("bad_entries, message", [
    # A result is a procedure's answer (any codec value), within the codec's nesting bound.
    (((2, 5, ((PUT, b"k", b"v"),), 1, ("c1", 3, 2, (_DEEP,), 77)),), "an entry's result.*FIELD_DEPTH_MAX"),
    (((2, 5, ((PUT, b"k", ((((b"deep",),),),)),), 1, ()),), "bytes tail"),
    (((2, 5, ((PUT, b"k", b"v", b"extra"),), 1, ()),), "bytes tail"),
    (((2, 5, ((CAS, b"k", b"v", None),), 1, ()),), "unknown operation code"),
])
def test_checked_records_refuse_on_decode_what_the_codec_walk_would(bad_entries, message):
    for tag, fields in (("repl.append", {"epoch": 2, "prev_lsn": 4, "prev_epoch": 2, "entries": bad_entries,
                                         "leader_last": 5}),
                        ("repl.entries", {"entries": bad_entries})):
        with pytest.raises(CorruptRecordError, match=message):
            codec.decode(_frame(tag, 2, fields))


def test_prechecked_records_equal_checked_ones_and_round_trip():
    made = codec.prechecked(Append, 2, 4, 2, _ENTRIES, 6)
    assert made == Append(2, 4, 2, _ENTRIES, 6)
    assert codec.decode(codec.encode(made)) == made
    assert codec.decode(codec.encode(codec.prechecked(LogEntries, _ENTRIES))) == LogEntries(_ENTRIES)
    with pytest.raises(CodecError, match="5 fields, got 4"):
        codec.prechecked(Append, 2, 4, 2, _ENTRIES)
    with pytest.raises(CodecError, match="not a registered record"):
        codec.prechecked(dict, 1)


def test_a_write_batch_put_is_the_same_op_as_one_built_and_checked():
    batch = WriteBatch().put("k", b"v").put(b"k2", bytearray(b"w"))
    assert batch.ops == [Op("put", b"k", b"v"), Op("put", b"k2", b"w")]
    assert codec.decode(codec.encode(batch.ops[0])) == Op("put", b"k", b"v")
    assert ReplWrite(((PUT, b"k", b"v"),)).ops == ((PUT, b"k", b"v"),)


def test_a_session_orders_positions_epoch_first_and_is_lost_when_it_saw_two_histories():
    from ddia_ray.replication.records import LOST_LSN, Session, one_history

    s = Session("st").saw(True, 1, 10).saw(False, 2, 15)
    assert s.position() == (2, 15) and not s.lost
    assert s.saw(False, 1, 12) is s  # older than what it read: nothing changes
    assert one_history((2, 15), (3, 16)) and one_history((3, 16), (2, 15)) and one_history((2, 15), (2, 15))
    # (3, 15) and (2, 15) cannot both be in one log (epochs never decrease along it), nor (3, 12) and
    # (2, 15): a failover discarded one of them, so the session cannot keep its guarantees.
    for epoch, lsn in ((3, 15), (3, 12)):
        assert not one_history((epoch, lsn), (2, 15))
        lost = s.saw(True, epoch, lsn)
        assert lost.lost and lost.write_lsn == LOST_LSN and lost.position()[1] == LOST_LSN
        assert lost.saw(True, 9, 99).lost and lost.saw(False, 1, 1).lost  # it stays lost

