"""Linearizability checker: hand-written histories that read like the anomaly they show."""

from __future__ import annotations

import math
import pickle

import pytest

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.history import (
    KV_MODEL,
    CheckResult,
    Counterexample,
    HistoryRecorder,
    Operation,
    check,
    check_events,
    describe,
)

INF = math.inf


def op(op_id, f, value, output, call_s, return_s, *, key="x", status="ok", process=None):
    """An operation built by hand (no event indices: equal times count as concurrent)."""
    if status == "info":
        return_s, output = INF, None
    return Operation(
        op_id=op_id, process=op_id if process is None else process, f=f, key=key, value=value,
        output=output, call_s=call_s, return_s=return_s, status=status,
    )


def w(op_id, value, call_s, return_s, **kw):
    return op(op_id, "write", value, None, call_s, return_s, **kw)


def r(op_id, output, call_s, return_s, **kw):
    return op(op_id, "read", None, output, call_s, return_s, **kw)


def cas(op_id, expected, new, output, call_s, return_s, **kw):
    return op(op_id, "cas", (expected, new), output, call_s, return_s, **kw)


# --- the basics --------------------------------------------------------------


def test_empty_history_is_linearizable():
    result = check([])
    assert result.ok is True
    assert dict(result.per_key) == {}
    assert result.explored_states == 0


def test_sequential_write_then_read_is_linearizable():
    result = check([w(0, 1, 0, 1), r(1, 1, 2, 3)])
    assert result.ok is True
    assert dict(result.per_key) == {"x": True}
    assert result.counterexample is None
    assert result.ops_checked == 2


def test_read_of_absent_key_returns_none():
    assert check([r(0, None, 0, 1)]).ok is True
    assert check([r(0, 0, 0, 1)]).ok is False  # 0 was never written; absent is None


def test_stale_read_after_completed_write_is_not_linearizable():
    history = [w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]
    result = check(history)
    assert result.ok is False
    ce = result.counterexample
    assert ce.key == "x"
    assert [o.op_id for o in ce.prefix] == [0, 1]  # both writes fit, the read cannot follow
    assert ce.state == 2
    assert ce.blocked.op_id == 2


def test_read_concurrent_with_write_may_see_old_or_new():
    for seen in (None, 1):
        assert check([w(0, 1, 0, 10), r(1, seen, 2, 3)]).ok is True
    assert check([w(0, 1, 0, 10), r(1, 2, 2, 3)]).ok is False


def test_concurrent_writes_seen_in_either_order_by_reads():
    # w1 and w2 overlap; the reads see 1 then 2: w1 linearizes first.
    first_one = [w(0, 1, 0, 10), w(1, 2, 0, 10), r(2, 1, 1, 2), r(3, 2, 3, 4)]
    # ... or 2 then 1: w2 linearizes first. Both are legal.
    first_two = [w(0, 1, 0, 10), w(1, 2, 0, 10), r(2, 2, 1, 2), r(3, 1, 3, 4)]
    assert check(first_one).ok is True
    assert check(first_two).ok is True
    # Seeing 1, then 2, then 1 again would need w1 to take effect twice.
    flip_flop = first_one + [r(4, 1, 5, 6)]
    assert check(flip_flop).ok is False


def test_reads_may_not_go_back_in_time():
    # Classic: after one reader saw the new value, a later reader must too.
    history = [w(0, 1, 0, 10), r(1, 1, 1, 2), r(2, None, 3, 4)]
    assert check(history).ok is False


def test_lost_write_is_not_linearizable():
    history = [w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5), r(3, 1, 6, 7)]
    assert check(history).ok is False


def test_cas_succeeding_twice_from_the_same_value_is_not_linearizable():
    history = [w(0, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, True, 2, 5)]
    result = check(history)
    assert result.ok is False
    ce = result.counterexample
    placed = {o.op_id for o in ce.prefix}
    assert len(placed & {1, 2}) == 1  # one cas fits after the write, the other never can
    assert ({1, 2} - placed) <= {o.op_id for o in ce.candidates}


def test_cas_failing_when_value_differs_and_succeeding_when_equal():
    ok_history = [w(0, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, False, 2, 5), r(3, 1, 6, 7)]
    assert check(ok_history).ok is True
    # A failed cas must not change the value.
    wrong = [w(0, 0, 0, 1), cas(1, 5, 1, False, 2, 3), r(2, 1, 4, 5)]
    assert check(wrong).ok is False
    # A cas may not fail when the value it expected is certainly there.
    wrong_fail = [w(0, 0, 0, 1), cas(1, 0, 1, False, 2, 3)]
    assert check(wrong_fail).ok is False


def test_cas_on_absent_key_with_expected_none():
    assert check([cas(0, None, 7, True, 0, 1), r(1, 7, 2, 3)]).ok is True


def test_delete_makes_the_key_absent():
    history = [w(0, 1, 0, 1), op(1, "delete", None, None, 2, 3), r(2, None, 4, 5)]
    assert check(history).ok is True
    assert check(history[:2] + [r(2, 1, 4, 5)]).ok is False


# --- info and fail -------------------------------------------------------------


def test_info_write_that_took_effect():
    history = [w(0, 1, 0, None, status="info"), r(1, 1, 5, 6)]
    assert check(history).ok is True


def test_info_write_that_never_took_effect():
    history = [w(0, 1, 0, None, status="info"), r(1, None, 5, 6), r(2, None, 7, 8)]
    assert check(history).ok is True


def test_info_write_may_take_effect_much_later():
    history = [w(0, 1, 0, None, status="info"), r(1, None, 5, 6), r(2, 1, 100, 101)]
    assert check(history).ok is True
    # ... but only once: the value cannot come back after being overwritten.
    again = history + [w(3, 2, 102, 103), r(4, 1, 104, 105)]
    assert check(again).ok is False


def test_info_op_cannot_take_effect_before_it_was_invoked():
    history = [r(0, 1, 0, 1), w(1, 1, 5, None, status="info")]
    assert check(history).ok is False


def test_info_cas_applies_only_if_its_expected_value_is_there():
    assert check([w(0, 0, 0, 1), cas(1, 0, 5, None, 2, None, status="info"), r(2, 5, 3, 4)]).ok is True
    assert check([w(0, 3, 0, 1), cas(1, 0, 5, None, 2, None, status="info"), r(2, 5, 3, 4)]).ok is False


def test_each_info_op_takes_effect_at_most_once_even_among_identical_copies():
    # Value 1 shows up twice, each time after a 2 was written: it needs two writes of 1.
    reads = [w(10, 2, 1, 2), r(11, 1, 3, 4), w(12, 2, 5, 6), r(13, 1, 7, 8)]
    one_copy = [w(0, 1, 0, None, status="info")]
    two_copies = one_copy + [w(1, 1, 0.5, None, status="info")]
    assert check(one_copy + reads).ok is False
    assert check(two_copies + reads).ok is True
    # A third 1 after a third 2 needs a third copy.
    assert check(two_copies + reads + [w(14, 2, 9, 10), r(15, 1, 11, 12)]).ok is False
    # The second copy must have been invoked before the second read returned.
    late_copy = one_copy + [w(1, 1, 9, None, status="info")]
    assert check(late_copy + reads).ok is False


def test_info_read_is_ignored():
    history = [w(0, 1, 0, 1), r(1, None, 2, None, status="info"), r(2, 1, 3, 4)]
    result = check(history)
    assert result.ok is True
    assert result.ops_checked == 3  # counted, yet it constrains nothing


def test_fail_op_is_dropped_before_checking():
    # A failed write did not happen: reading its value is a violation ...
    failed = op(1, "write", 2, None, 2, 3, status="fail")
    assert check([w(0, 1, 0, 1), failed, r(2, 2, 4, 5)]).ok is False
    # ... and reading the old value is fine, whatever the failed op claims.
    result = check([w(0, 1, 0, 1), failed, r(2, 1, 4, 5)])
    assert result.ok is True
    assert result.ops_checked == 2


def test_history_of_only_info_ops_is_linearizable():
    assert check([w(0, 1, 0, None, status="info"), w(1, 2, 0, None, status="info")]).ok is True


# --- ties and event order --------------------------------------------------------


def test_equal_times_without_indices_count_as_concurrent():
    # The read starts the instant the write returns; without event indices the
    # checker cannot tell the order, so it lets the read go first.
    history = [w(0, 1, 0, 1), r(1, None, 1, 2)]
    assert check(history).ok is True


def test_equal_times_with_recorder_indices_keep_the_real_order():
    now = [0.0]
    rec = HistoryRecorder(clock=lambda: now[0])  # a virtual clock that does not advance
    a = rec.invoke(0, "write", "x", 1)
    rec.ok(a)
    b = rec.invoke(0, "read", "x")
    rec.ok(b, None)  # the same process cannot miss its own completed write
    result = check_events(rec.history())
    assert result.ok is False
    assert result.counterexample.blocked.op_id == b


def test_equal_times_with_indices_still_allow_real_concurrency():
    now = [0.0]
    rec = HistoryRecorder(clock=lambda: now[0])
    a = rec.invoke(0, "write", "x", 1)
    b = rec.invoke(1, "read", "x")
    rec.ok(a)
    rec.ok(b, None)
    assert check_events(rec.history()).ok is True


# --- partitions, budgets, results ------------------------------------------------


def test_keys_are_checked_independently():
    history = [
        w(0, 1, 0, 1, key="a"), r(1, 1, 2, 3, key="a"),
        w(2, 1, 0, 1, key="b"), r(3, None, 2, 3, key="b"),
        r(4, None, 0, 1, key="c"),
    ]
    result = check(history)
    assert result.ok is False
    assert dict(result.per_key) == {"a": True, "b": False, "c": True}
    assert result.counterexample.key == "b"


def _contended(n_writers: int) -> list[Operation]:
    """All writes overlap and a final read sees a value never written: a wide search."""
    ops = [w(i, i, 0, 10) for i in range(n_writers)]
    return ops + [r(n_writers, -1, 11, 12)]


def test_state_budget_gives_up_with_unknown_verdict():
    result = check(_contended(12), max_explored_states=50)
    assert result.ok is None
    assert result.timed_out is True
    assert "max_explored_states" in result.stop_reason
    assert result.explored_states <= 50
    assert dict(result.per_key) == {"x": None}


def test_violation_found_before_giving_up_is_still_reported():
    history = [r(100, 5, 0, 1, key="bad")] + _contended(12)
    result = check(history, max_explored_states=50)
    assert result.ok is False
    assert result.timed_out is True
    assert dict(result.per_key) == {"bad": False, "x": None}


def test_timeout_uses_the_injected_clock():
    ticks = iter(range(10**6))
    result = check(_contended(12), timeout_s=3, clock=lambda: next(ticks))
    assert result.ok is None
    assert result.timed_out is True
    assert "timeout" in result.stop_reason


def test_without_budget_the_wide_search_finishes_and_fails():
    result = check(_contended(8))
    assert result.ok is False
    assert result.explored_states >= 2**8 - 1  # every subset of the writes is a distinct state


def test_result_is_immutable_and_picklable():
    result = check([w(0, 1, 0, 1), r(1, 2, 2, 3)])
    with pytest.raises(TypeError):
        result.per_key["x"] = True
    with pytest.raises(AttributeError):
        result.ok = True
    clone = pickle.loads(pickle.dumps(result))
    assert isinstance(clone, CheckResult)
    assert clone.ok is False and dict(clone.per_key) == {"x": False}
    assert clone.counterexample == result.counterexample


def test_counterexample_is_a_codec_record():
    ce = check([w(0, 1, 0, 1), r(1, 2, 2, 3)]).counterexample
    assert isinstance(ce, Counterexample)
    assert decode(encode(ce)) == ce


def test_describe_names_the_key_the_prefix_and_the_blocked_op():
    result = check([w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)])
    text = describe(result)
    assert "NOT linearizable" in text
    assert "key 'x'" in text
    assert "write('x', 2) -> ok" in text
    assert "read('x') -> 1" in text
    assert "state after the prefix: 2" in text
    assert "linearizable" in describe(check([w(0, 1, 0, 1)])).splitlines()[0]
    assert "gave up" in describe(check(_contended(12), max_explored_states=10))


def test_bad_input_is_refused():
    with pytest.raises(InvalidArgumentError):
        check([("write", 1)])
    with pytest.raises(ConfigError):
        check([], timeout_s=0)
    with pytest.raises(ConfigError):
        check([], max_explored_states=0)
    with pytest.raises(ConfigError):
        check([op(0, "append", 1, None, 0, 1)])  # not a key-value operation
    with pytest.raises(InvalidArgumentError):
        check([cas(0, 1, 2, "yes", 0, 1)])  # an ok cas returns a bool
    with pytest.raises(InvalidArgumentError):
        check([w(0, [1, 2], 0, 1)])  # states must be hashable


def test_operation_records_refuse_inconsistent_intervals():
    with pytest.raises(ConfigError):
        op(0, "write", 1, None, 5, 4)  # returns before its call
    with pytest.raises(ConfigError):
        Operation(0, 0, "write", "x", 1, None, 0.0, 5.0, "info")  # info returns at +inf
    with pytest.raises(ConfigError):
        Operation(0, 0, "write", "x", 1, None, 0.0, INF, "ok")  # ok returns at a finite time
    with pytest.raises(ConfigError):
        Operation(0, 0, "write", "x", 1, None, 0.0, 1.0, "ok", call_index=3, return_index=2)


class _Counter:
    """A counter with increments and reads: another data type through the same checker."""

    def init(self):
        return 0

    def step(self, state, o):
        if o.f == "incr":
            return True, state + 1
        return o.output == state, state

    def partition(self, ops):
        return [("counter", tuple(ops))]


def test_the_model_is_pluggable():
    incr = lambda i, s, e, **kw: op(i, "incr", None, None, s, e, **kw)  # noqa: E731
    read = lambda i, out, s, e: op(i, "get", None, out, s, e)  # noqa: E731
    good = [incr(0, 0, 5), incr(1, 0, 5), read(2, 1, 1, 2), read(3, 2, 6, 7)]
    assert check(good, _Counter()).ok is True
    bad = [incr(0, 0, 1), incr(1, 2, 3), read(2, 1, 4, 5)]
    result = check(bad, _Counter())
    assert result.ok is False
    assert dict(result.per_key) == {"counter": False}
    assert "incr" in describe(result, _Counter())


def test_kv_model_is_a_model():
    from ddia_ray.history import Model

    assert isinstance(KV_MODEL, Model)
    assert isinstance(_Counter(), Model)
