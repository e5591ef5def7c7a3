"""RaftKV's pure parts: command encoding, batch validation, the session state machine, bad input."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import CorruptRecordError, InvalidArgumentError, UnknownVersionError
from ddia_ray.kv import KVBatch, RaftMember
from ddia_ray.kv.commands import COMMAND_FORMAT, decode_command, encode_command
from ddia_ray.kv.state_machine import STALE, KVStateMachine


def test_commands_round_trip_and_unknown_formats_are_refused():
    data = encode_command("c1", 3, ("cas", "k", 7, b"new", b"old"))
    cmd = decode_command(data)
    assert (cmd.client, cmd.seq, cmd.acked_below, cmd.kind, cmd.key, cmd.value, cmd.expected) == \
        ("c1", 7, 3, "cas", "k", b"new", b"old")
    newer = codec.encode((COMMAND_FORMAT + 1, "c1", 7, 3, "put", "k", 1, None))
    with pytest.raises(UnknownVersionError):
        decode_command(newer)
    with pytest.raises(CorruptRecordError):
        decode_command(codec.encode("not a command"))


@pytest.mark.parametrize("op", [("get",), ("scan", "k", 1, None, None), ("get", 5, 1, None, None),
                                ("put", "k", 0, b"v", None), ("put", "k", "1", b"v", None), ["get", "k", 1, None, None]])
def test_malformed_operations_are_refused(op):
    with pytest.raises(InvalidArgumentError):
        KVBatch("c1", (op,))


def test_a_batch_needs_a_session_name():
    with pytest.raises(InvalidArgumentError):
        KVBatch("", ())


def test_sessions_apply_each_write_once_and_forget_acknowledged_results():
    sm = KVStateMachine()
    put = decode_command(encode_command("c", 1, ("put", "k", 1, "a", None)))
    cas = decode_command(encode_command("c", 1, ("cas", "k", 2, "b", "a")))
    assert sm.apply(put) is None
    assert sm.apply(cas) is True
    assert sm.apply(cas) is True and sm.read("k") == "b"  # a retry: the remembered result, no second effect
    assert sm.duplicates == 1 and sm.applied_writes == 2
    later = decode_command(encode_command("c", 3, ("put", "k", 3, "c", None)))
    sm.apply(later)  # the client has its answers below seq 3
    assert sm.sessions["c"][0] == 3 and 2 not in sm.sessions["c"][1]
    assert sm.apply(cas) == STALE and sm.read("k") == "c"  # a very late retry changes nothing


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


@pytest.mark.parametrize("value", [{1: b"a"}, {(1, 2): b"a"}, [[[[[[[[[[[[[[[[[b"deep"]]]]]]]]]]]]]]]]]])
def test_an_operation_whose_value_the_codec_refuses_fails_on_its_own(value):
    """Checked when the operation is submitted, not when its batch is encoded (where it would fail
    every other caller's operation in that batch) or when the log entry is applied."""
    from ddia_ray.kv.commands import check_op

    for op in (("put", "k", 1, value, None), ("cas", "k", 1, b"new", value)):
        with pytest.raises(InvalidArgumentError, match="cannot be stored"):
            check_op(op)
    check_op(("put", "k", 1, {"fine": [1, 2, {b"also": None}]}, None))
