"""RaftKV's pure parts: command encoding, batch validation, the session state machine, bad input."""

from __future__ import annotations

import msgpack
import pytest

from ddia_ray import codec
from ddia_ray.errors import CorruptRecordError, InvalidArgumentError, UnknownVersionError
from ddia_ray.kv import KVBatch, RaftMember
from ddia_ray.kv.commands import COMMAND_FORMAT, decode_command, encode_command
from ddia_ray.kv.state_machine import STALE, KVStateMachine


def test_commands_round_trip_and_unknown_formats_are_refused():
    data = encode_command("c1", 3, ("cas", b"k", 7, b"new", b"old"))
    cmd = decode_command(data)
    assert (cmd.client, cmd.seq, cmd.acked_below, cmd.kind, cmd.key, cmd.value, cmd.expected) == \
        ("c1", 7, 3, "cas", b"k", b"new", b"old")
    newer = codec.encode((COMMAND_FORMAT + 1, "c1", 7, 3, "put", b"k", b"1", None))
    with pytest.raises(UnknownVersionError):
        decode_command(newer)
    with pytest.raises(CorruptRecordError):
        decode_command(codec.encode("not a command"))


@pytest.mark.parametrize("op", [("get",), ("scan", b"k", 1, None, None), ("get", 5, 1, None, None),
                                ("get", "k", 1, None, None), ("put", b"k", 0, b"v", None),
                                ("put", b"k", "1", b"v", None), ["get", b"k", 1, None, None],
                                ("put", b"k", 1, "v", None), ("cas", b"k", 1, b"v", 1)])
def test_malformed_operations_are_refused(op):
    with pytest.raises(InvalidArgumentError):
        KVBatch("c1", (op,))


def test_a_batch_needs_a_session_name():
    with pytest.raises(InvalidArgumentError):
        KVBatch("", ())


def test_sessions_apply_each_write_once_and_forget_acknowledged_results():
    sm = KVStateMachine()
    put = decode_command(encode_command("c", 1, ("put", b"k", 1, b"a", None)))
    cas = decode_command(encode_command("c", 1, ("cas", b"k", 2, b"b", b"a")))
    assert sm.apply(put) is None
    assert sm.apply(cas) is True
    assert sm.apply(cas) is True and sm.read(b"k") == b"b"  # a retry: the remembered result, no second effect
    assert sm.duplicates == 1 and sm.applied_writes == 2
    later = decode_command(encode_command("c", 3, ("put", b"k", 3, b"c", None)))
    sm.apply(later)  # the client has its answers below seq 3
    assert sm.sessions["c"][0] == 3 and 2 not in sm.sessions["c"][1]
    assert sm.apply(cas) == STALE and sm.read(b"k") == b"c"  # a very late retry changes nothing


def test_snapshots_round_trip_and_garbage_is_refused():
    sm = KVStateMachine()
    sm.apply(decode_command(encode_command("c", 1, ("put", b"k", 1, b"v", None))))
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert other.data == sm.data and other.sessions == sm.sessions
    with pytest.raises(CorruptRecordError):
        other.restore(codec.encode((99, (), ())))


def test_a_member_refuses_messages_that_are_not_raft_messages():
    m = RaftMember("m1", voters=("m1",))
    with pytest.raises(InvalidArgumentError):
        m.on_message("m2", "hello")


def test_data_written_before_keys_and_values_were_bytes_reads_back_under_the_rule():
    """Format-1 log commands, version-1 batches and format-1 snapshots could hold str keys and any
    codec value: they decode with the key as its UTF-8 bytes and the value as its codec encoding."""
    old = decode_command(codec.encode((1, "c", 4, 0, "cas", "k", {"n": 2}, 1)))
    assert (old.key, old.value, old.expected) == (b"k", codec.encode({"n": 2}), codec.encode(1))
    assert codec.decode(old.value) == {"n": 2}
    assert decode_command(codec.encode((1, "c", 5, 0, "put", b"k", b"raw", None))).value == b"raw"
    fields = {"client": "c", "ops": [["put", "k", 1, 7, None], ["cas", b"j", 2, b"n", "o"]], "acked_below": 0}
    v1 = msgpack.packb(msgpack.ExtType(codec.FORMAT_1, msgpack.packb({"t": "kv.batch", "v": 1, "f": fields})))
    assert codec.decode(v1, KVBatch).ops == (("put", b"k", 1, codec.encode(7), None),
                                             ("cas", b"j", 2, b"n", codec.encode("o")))
    sm = KVStateMachine()
    sm.restore(codec.encode((1, (("k", 5), (b"b", b"x")), ())))
    assert sm.data == {b"k": codec.encode(5), b"b": b"x"}
    with pytest.raises(UnknownVersionError):
        decode_command(codec.encode((0, "c", 1, 0, "put", b"k", b"v", None)))


def test_values_must_be_bytes():
    from ddia_ray.kv.commands import check_op

    for op in (("put", b"k", 1, 1, None), ("put", b"k", 1, {"a": 1}, None), ("cas", b"k", 1, b"new", "old")):
        with pytest.raises(InvalidArgumentError, match="values are bytes"):
            check_op(op)
    assert check_op(("cas", b"k", 1, None, b"old")) == ("cas", b"k", 1, None, b"old")
