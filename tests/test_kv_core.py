"""RaftKV's pure parts: command encoding, batch validation, the session state machine, bad input."""

from __future__ import annotations

import msgpack
import pytest

from ddia_ray import codec
from ddia_ray.errors import ConfigError, CorruptRecordError, InvalidArgumentError, UnknownVersionError
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
    assert sm.sessions.table["c"][0] == 3 and 2 not in sm.sessions.table["c"][1]
    assert sm.apply(cas) == STALE and sm.read(b"k") == b"c"  # a very late retry changes nothing


def test_snapshots_round_trip_and_garbage_is_refused():
    sm = KVStateMachine()
    sm.apply(decode_command(encode_command("c", 1, ("put", b"k", 1, b"v", None))))
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert other.data == sm.data and other.sessions.table == sm.sessions.table
    assert other.sessions.active == sm.sessions.active
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


def _write(client: str, seq: int, stamp: int, acked_below: int = 0, kind: str = "put", value: bytes = b"v",
           expected=None):
    return decode_command(encode_command(client, acked_below, (kind, b"k-" + client.encode(), seq, value, expected),
                                         stamp))


def test_commands_of_format_2_carry_no_stamp_and_a_bad_stamp_is_refused():
    old = codec.encode((2, "c1", 7, 3, "put", b"k", b"1", None))
    assert decode_command(old).stamp == -1
    assert decode_command(encode_command("c1", 3, ("put", b"k", 7, b"1", None), 1234)).stamp == 1234
    with pytest.raises(CorruptRecordError, match="stamp"):
        decode_command(codec.encode((COMMAND_FORMAT, "c1", 7, 3, "put", b"k", b"1", None, "soon")))
    with pytest.raises(UnknownVersionError):
        decode_command(codec.encode((COMMAND_FORMAT, "c1", 7, 3, "put", b"k", b"1", None)))  # its stamp missing


def test_idle_sessions_expire_at_the_same_command_on_every_member():
    members = [KVStateMachine(session_ttl_ms=1000) for _ in range(2)]
    log = [_write("a", 1, 0), _write("b", 1, 500), _write("a", 2, 900, kind="cas", value=b"w", expected=b"v"),
           _write("c", 1, 2000), _write("b", 2, 2400)]
    for sm in members:
        seen = []
        for i, cmd in enumerate(log, 1):
            sm.apply(cmd, i)
            seen.append(sorted(sm.sessions.table))
        # At 2000 "a" (last write 900) and "b" (500) are idle for over 1000 ms; "b" writes again at 2400.
        assert seen == [["a"], ["a", "b"], ["a", "b"], ["c"], ["b", "c"]]
        assert sm.figures()["sessions_expired"] == 2 and sm.figures()["sessions"] == 2
    assert members[0].snapshot() == members[1].snapshot()
    # Within the TTL a retry finds its answer: the cas is not applied a second time.
    sm = KVStateMachine(session_ttl_ms=1000)
    first = _write("a", 1, 0, kind="cas", value=b"x", expected=None)
    assert sm.apply(first, 1) is True and sm.apply(first, 2) is True and sm.duplicates == 1
    assert sm.apply(_write("a", 1, 500, kind="cas", value=b"y", expected=None), 3) is True  # a retry, answered
    assert sm.read(b"k-a") == b"x"


def test_sessions_never_expire_without_a_ttl_and_old_snapshots_are_read():
    sm = KVStateMachine()
    sm.apply(_write("a", 1, 0), 1)
    sm.apply(_write("b", 1, 10 ** 9), 2)
    assert sorted(sm.sessions.table) == ["a", "b"]
    old = codec.encode((2, ((b"k", b"v"),), (("a", 2, ((2, True), (3, None))),)))
    restored = KVStateMachine(session_ttl_ms=1000)
    restored.restore(old)
    assert restored.data == {b"k": b"v"} and restored.sessions.answered("a", 2) == (0, True)
    assert restored.sessions.answered("a", 1) == STALE
    with pytest.raises(CorruptRecordError):
        restored.restore(codec.encode((2, (), (("a", 2, ((2,),)),))))


def test_a_client_whose_retries_could_outlive_its_session_is_refused():
    import types

    from ddia_ray.kv.client import RaftKVClient

    with pytest.raises(ConfigError, match="session_ttl_s"):
        RaftKVClient(types.SimpleNamespace(options={"session_ttl_s": 5.0}), timeout_s=5.0)
