"""Errors across actors: a refusal travels as a typed ErrorRecord and is raised again as its own class."""

from __future__ import annotations

import msgpack
import pytest

from ddia_ray import codec, errors
from ddia_ray.codec import FORMAT_1, decode, encode
from ddia_ray.error_record import _CLASSES, ErrorRecord
from ddia_ray.errors import (CallNotPermittedError, CorruptionError, CorruptRecordError, DdiaRayError,
                             InvalidArgumentError, NotLeaderError, RemoteError, RetriesExhaustedError,
                             UnknownNodeError)
from ddia_ray.runtime.core import Reply


def _travel(exc: BaseException, node: str = "m1", where: str = "kv/m1") -> BaseException:
    return decode(encode(ErrorRecord.of(exc, node)), ErrorRecord).exception(where)


def test_every_error_class_of_ddia_ray_can_travel():
    """The table holds every DdiaRayError subclass that errors.py defines, and each rebuilds as itself."""
    defined = {n for n, c in vars(errors).items()
               if isinstance(c, type) and issubclass(c, DdiaRayError) and c.__module__ == errors.__name__}
    assert set(_CLASSES) == defined and defined <= set(errors.__all__)
    for name, cls in _CLASSES.items():
        exc = ErrorRecord(name, "why it failed", "m2").exception("g/m2")
        assert type(exc) is cls and "why it failed" in str(exc) and exc.remote_node == "m2"


@pytest.mark.parametrize("original, check", [
    (NotLeaderError("not the leader", "m3"), lambda e: e.leader_hint == "m3"),
    (NotLeaderError("not the leader"), lambda e: e.leader_hint is None),
    (CorruptionError("bad page", "/db/x"), lambda e: e.path == "/db/x"),
    (CallNotPermittedError("b1", "open", 1.5), lambda e: (e.breaker, e.state, e.retry_after_s) == ("b1", "open", 1.5)),
    (RetriesExhaustedError("gave up", 3, KeyError("k")), lambda e: e.attempts == 3 and e.last_error is None),
    (UnknownNodeError("m9", ["m1"]), lambda e: e.node == "m9" and isinstance(e, KeyError)),
])
def test_a_travelled_error_keeps_its_class_message_and_fields(original, check):
    got = _travel(original)
    assert type(got) is type(original)
    assert str(got) == f"kv/m1: {original}"
    assert check(got) and got.remote_node == "m1"


def test_errors_ddia_ray_does_not_define_arrive_as_remote_errors_naming_their_type():
    got = _travel(KeyError("x"))
    assert type(got) is RemoteError and got.kind == "KeyError" and "KeyError: 'x'" in str(got)

    class AppError(NotLeaderError):  # a subclass an application defined is not ours either
        pass

    got = _travel(AppError("nope", "m2"))
    assert type(got) is RemoteError and got.kind == "AppError"
    relayed = _travel(got, node="m5")  # relayed once more: keeps where it first failed and what it was
    assert type(relayed) is RemoteError and relayed.kind == "AppError" and relayed.node == "m1"


@pytest.mark.parametrize("kind", ["Exception", "BaseException", "KeyboardInterrupt", "SystemExit", "os.system",
                                  "__import__", "DdiaRayErrorX", "ErrorRecord", "Reply", ""])
def test_a_record_never_builds_a_class_outside_the_table(kind):
    """Decoding picks the class from a fixed table: a sender cannot make it build anything else."""
    data = msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb(
        {"t": "error.record", "v": 1, "f": {"kind": kind, "message": "m", "node": "", "attrs": None}})))
    if not kind:
        with pytest.raises(CorruptRecordError):
            decode(data)
        return
    got = decode(data, ErrorRecord).exception()
    assert type(got) is RemoteError and got.kind == kind


@pytest.mark.parametrize("fields", [
    {"kind": "NotLeaderError", "attrs": {"leader_hint": ("m", 2)}},
    {"kind": "NotLeaderError", "attrs": {1: "m2"}},
    {"kind": "NotLeaderError", "attrs": [["leader_hint", "m2"]]},
    {"kind": 7},
    {"kind": "NotLeaderError", "message": b"bytes"},
])
def test_malformed_error_records_are_refused_on_decode(fields):
    data = msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": "error.record", "v": 1, "f": fields})))
    with pytest.raises(CorruptRecordError):
        decode(data)


def test_a_reply_is_ok_without_an_error_or_failed_with_one():
    assert Reply(1, b"x").ok and Reply(1, b"x").error is None
    failed = Reply(2, None, False, ErrorRecord("NotLeaderError", "no", "m1", {"leader_hint": "m2"}))
    assert decode(encode(failed), Reply) == failed
    for bad in ((3, None, False, None), (3, None, True, ErrorRecord("ConfigError")), (3, None, False, "text")):
        with pytest.raises(InvalidArgumentError):
            Reply(*bad)


def test_a_version_1_reply_with_error_text_reads_as_a_remote_error():
    """Replies of the previous format carried the error as text: they still decode."""
    def v1(ok, error):
        return msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb(
            {"t": "net.reply", "v": 1, "f": {"request_id": 4, "payload": None, "ok": ok, "error": error}})))

    failed = decode(v1(False, "not_leader:m2"), Reply)
    assert not failed.ok and failed.error.kind == "RemoteError" and failed.error.message == "not_leader:m2"
    assert decode(v1(True, ""), Reply) == Reply(4)


def test_a_core_refusal_reaches_the_caller_as_its_class_through_the_simulator():
    from ddia_ray.demo.replica import ReplicaCore
    from ddia_ray.runtime import SimNetwork

    net = SimNetwork(1)
    net.add("a", lambda node, recovered=(), tick_s=0.01: ReplicaCore(node, recovered=recovered, tick_s=tick_s,
                                                                       peers=("a",)))
    call = net.request("a", "not a request")
    assert net.run_until(lambda: call.done, 5.0)
    assert not call.ok and isinstance(call.error, ErrorRecord)
    exc = call.error.exception()
    assert type(exc) is InvalidArgumentError and "cannot serve" in str(exc) and exc.remote_node == "a"


def test_codec_knows_where_error_records_live():
    assert codec._MODULES["error"] == "ddia_ray.error_record"
