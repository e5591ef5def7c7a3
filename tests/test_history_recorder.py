"""History recorder: Jepsen's process rules, pairing, threads, the codec and files."""

from __future__ import annotations

import math
import threading

import pytest

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, CorruptRecordError, InvalidArgumentError
from ddia_ray.history import (
    PROCESS_TRANSITIONS,
    Event,
    HistoryRecorder,
    Operation,
    check,
    load_history,
    pair_events,
    save_history,
)


class FakeClock:
    """Virtual time, advanced by hand."""

    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def rec(clock):
    return HistoryRecorder(clock=clock)


def test_events_record_kind_process_time_and_value(rec, clock):
    a = rec.invoke("p1", "write", "x", 5)
    clock.advance(0.5)
    done = rec.ok(a)
    assert rec.history() == (
        Event(0, "invoke", "p1", a, "write", "x", 5, 0.0),
        Event(1, "ok", "p1", a, "write", "x", None, 0.5),
    )
    assert done == rec.history()[1]
    assert len(rec) == 2


def test_operations_pair_calls_with_completions(rec, clock):
    a = rec.invoke(0, "write", "x", 1)
    b = rec.invoke(1, "read", "x")
    clock.advance(1)
    rec.ok(b, 1)
    c = rec.invoke(1, "cas", "x", [1, 2])  # a list is stored as the tuple the codec would give back
    clock.advance(1)
    rec.fail(c, "rejected: not leader")
    rec.info(a, TimeoutError("no reply"))
    d = rec.invoke(2, "delete", "x")  # never completes
    ops = {o.op_id: o for o in rec.operations()}
    assert list(ops) == [a, b, c, d]
    assert ops[b] == Operation(b, 1, "read", "x", None, 1, 0.0, 1.0, "ok", call_index=1, return_index=2)
    assert ops[c].value == (1, 2) and ops[c].status == "fail" and ops[c].error == "rejected: not leader"
    assert (ops[a].status, ops[a].return_s, ops[a].return_index) == ("info", math.inf, None)
    assert ops[a].error == "TimeoutError: no reply"
    assert (ops[d].status, ops[d].return_s, ops[d].output) == ("info", math.inf, None)


def test_a_process_has_one_op_outstanding(rec):
    rec.invoke(0, "read", "x")
    with pytest.raises(ConfigError, match="outstanding"):
        rec.invoke(0, "read", "y")
    assert rec.process_state(0) == "busy"


def test_after_info_the_process_is_crashed(rec):
    a = rec.invoke(0, "write", "x", 1)
    rec.info(a, "timeout")
    assert rec.process_state(0) == "crashed"
    with pytest.raises(ConfigError, match="new process id"):
        rec.invoke(0, "read", "x")
    rec.invoke(5, "read", "x")  # the client carries on under a new id


def test_after_ok_and_fail_the_process_is_idle_again(rec):
    for complete in (rec.ok, rec.fail):
        op_id = rec.invoke(0, "write", "x", 1)
        complete(op_id)
        assert rec.process_state(0) == "idle"


def test_each_op_completes_exactly_once(rec):
    a = rec.invoke(0, "write", "x", 1)
    rec.ok(a)
    with pytest.raises(ConfigError, match="completed"):
        rec.fail(a)
    with pytest.raises(ConfigError, match="unknown"):
        rec.ok(99)
    assert len(rec) == 2  # refused calls record nothing


def test_process_transitions_table():
    assert dict(PROCESS_TRANSITIONS) == {
        ("idle", "invoke"): "busy",
        ("busy", "ok"): "idle",
        ("busy", "fail"): "idle",
        ("busy", "info"): "crashed",
    }
    assert not any(state == "crashed" for state, _ in PROCESS_TRANSITIONS)  # crashed is terminal
    with pytest.raises(TypeError):
        PROCESS_TRANSITIONS[("crashed", "invoke")] = "busy"


def test_bad_arguments_are_refused(rec):
    with pytest.raises(ConfigError):
        rec.invoke(0, "append", "x", 1)
    with pytest.raises(InvalidArgumentError):
        rec.invoke(0, 7, "x")
    with pytest.raises(InvalidArgumentError):
        rec.invoke(True, "read", "x")
    with pytest.raises(InvalidArgumentError):
        rec.invoke(0, "read", ["not", "hashable"])
    with pytest.raises(InvalidArgumentError):
        rec.invoke(0, "cas", "x", 1)
    with pytest.raises(InvalidArgumentError):
        rec.fail(rec.invoke(0, "read", "x"), error=42)
    with pytest.raises(InvalidArgumentError):
        HistoryRecorder(clock=3.0)
    with pytest.raises(ConfigError):
        HistoryRecorder(functions=())


def test_custom_functions_for_other_models(clock):
    rec = HistoryRecorder(clock=clock, functions={"incr", "get"})
    rec.ok(rec.invoke(0, "incr", "c"))
    with pytest.raises(ConfigError):
        rec.invoke(0, "write", "c", 1)


def test_a_clock_going_backwards_is_refused_and_records_nothing(rec, clock):
    clock.advance(5)
    a = rec.invoke(0, "write", "x", 1)
    clock.advance(-1)
    with pytest.raises(ConfigError, match="backwards"):
        rec.ok(a)
    assert rec.process_state(0) == "busy"  # the op is still open
    clock.advance(2)
    rec.ok(a)
    assert [e.kind for e in rec.history()] == ["invoke", "ok"]


def test_call_records_ok_fail_and_info(rec):
    assert rec.call(0, "write", "x", 1, lambda: None) is None
    with pytest.raises(PermissionError):
        rec.call(0, "write", "x", 2, _raise(PermissionError("read-only")), fail_on=(PermissionError,))
    with pytest.raises(TimeoutError):
        rec.call(0, "read", "x", None, _raise(TimeoutError("slow")), fail_on=(PermissionError,))
    assert [o.status for o in rec.operations()] == ["ok", "fail", "info"]
    assert rec.process_state(0) == "crashed"


def _raise(error):
    def thunk():
        raise error

    return thunk


def test_threads_record_a_consistent_linearizable_history():
    store: dict = {}
    store_lock = threading.Lock()
    rec = HistoryRecorder()  # the real monotonic clock

    def client(process: int) -> None:
        for i in range(150):
            key = "k%d" % (i % 3)
            if i % 2:
                def do(key=key, value=(process, i)):
                    with store_lock:
                        store[key] = value
                rec.call(process, "write", key, (process, i), do)
            else:
                def do(key=key):
                    with store_lock:
                        return store.get(key)
                rec.call(process, "read", key, None, do)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = rec.history()
    assert [e.index for e in events] == list(range(4 * 150 * 2))
    assert all(a.time_s <= b.time_s for a, b in zip(events, events[1:]))
    result = check(rec.operations())
    assert result.ok is True
    assert dict(result.per_key) == {"k0": True, "k1": True, "k2": True}


def test_events_and_operations_round_trip_through_the_codec(rec, clock):
    a = rec.invoke(0, "cas", "x", (None, 1))
    clock.advance(1)
    rec.ok(a, True)
    b = rec.invoke(1, "write", b"key", {"nested": (1, 2)})
    rec.info(b, "crash")
    history = rec.history()
    assert decode(encode(history)) == history
    ops = rec.operations()
    assert decode(encode(ops)) == ops
    assert decode(encode(ops))[1].return_s == math.inf


def test_decoding_refuses_a_corrupt_event():
    good = encode(Event(0, "invoke", 0, 0, "read", "x", None, 0.0))
    bad = good.replace(b"invoke", b"invent")
    with pytest.raises(CorruptRecordError):
        decode(bad)


def test_save_and_load_a_history(rec, clock, tmp_path):
    a = rec.invoke(0, "write", "x", 1)
    clock.advance(1)
    rec.ok(a)
    path = str(tmp_path / "history.msgpack")
    rec.save(path)
    assert load_history(path) == rec.history()
    save_history(rec.history(), "memory://histories/one.msgpack")
    assert load_history("memory://histories/one.msgpack") == rec.history()


def test_load_refuses_a_file_that_is_not_a_history(tmp_path):
    path = tmp_path / "other.msgpack"
    path.write_bytes(encode((1, 2)))
    with pytest.raises(ConfigError):
        load_history(str(path))


def test_pairing_refuses_malformed_histories():
    inv = Event(0, "invoke", 0, 0, "write", "x", 1, 0.0)
    with pytest.raises(ConfigError, match="never invoked"):
        pair_events([Event(0, "ok", 0, 3, "write", "x", None, 0.0)])
    with pytest.raises(ConfigError, match="twice"):
        pair_events([inv, Event(1, "ok", 0, 0, "write", "x", None, 1.0), Event(2, "ok", 0, 0, "write", "x", None, 2.0)])
    with pytest.raises(ConfigError, match="invoked twice"):
        pair_events([inv, inv])
    with pytest.raises(ConfigError, match="different"):
        pair_events([inv, Event(1, "ok", 0, 0, "write", "y", None, 1.0)])
    with pytest.raises(InvalidArgumentError):
        pair_events([("invoke", 0)])
