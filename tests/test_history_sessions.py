"""Session guarantees checker: hand-written histories that read like the anomaly, and properties.

The hand-written histories put one op per time unit unless a test is about
concurrency; ``w(...)`` acknowledges its write with a version (an LSN), as a
store that returns the position of each write would.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings, strategies as st

from ddia_ray import codec
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.history import (
    SESSION_GUARANTEES,
    HistoryRecorder,
    Operation,
    SessionCheck,
    SessionViolation,
    check_sessions,
    describe_sessions,
)

INF = math.inf


def op(op_id, f, value, output, at_s, *, key="x", process=0, status="ok", duration_s=0.5):
    """An op of ``process`` from ``at_s`` to ``at_s + duration_s`` (no event indices)."""
    if status == "info":
        return Operation(op_id, process, f, key, value, None, at_s, INF, "info")
    return Operation(op_id, process, f, key, value, output, at_s, at_s + duration_s, status)


def w(op_id, value, version, at_s, **kw):
    """A write acknowledged at ``version`` (``None``: the store gave no position)."""
    return op(op_id, "write", value, version, at_s, **kw)


def d(op_id, version, at_s, **kw):
    return op(op_id, "delete", None, version, at_s, **kw)


def r(op_id, output, at_s, **kw):
    return op(op_id, "read", None, output, at_s, **kw)


def only(result: SessionCheck) -> SessionViolation:
    assert len(result.violations) == 1, describe_sessions(result)
    return result.violations[0]


# --- clean histories ----------------------------------------------------------------


def test_empty_history_holds():
    result = check_sessions([])
    assert result == SessionCheck(ok=True, violations=(), reads_checked=0, undetermined=0, sessions=0)


def test_a_clean_history_holds():
    ops = [
        w(0, "a", 1, 0, process=0),
        r(1, "a", 1, process=0),
        w(2, "b", 2, 2, process=1),
        r(3, "b", 3, process=0),
        r(4, "b", 4, process=1),
        r(5, None, 5, key="y", process=1),
    ]
    result = check_sessions(ops)
    assert result.ok is True, describe_sessions(result)
    assert (result.reads_checked, result.undetermined, result.sessions) == (4, 0, 2)
    assert "hold" in describe_sessions(result)


# --- read-your-writes ---------------------------------------------------------------


def test_reading_an_older_value_after_the_sessions_own_write_breaks_read_your_writes():
    ops = [
        w(0, "a", 1, 0, process=1),
        w(1, "b", 2, 1, process=0),
        r(2, "a", 2, process=0),  # a follower that has not applied op 1 yet
    ]
    v = only(check_sessions(ops))
    assert v == SessionViolation("read-your-writes", 0, "x", 2, saw=1, expected_at_least=2, because_of=1, value="a")
    text = describe_sessions(check_sessions(ops))
    assert "VIOLATED" in text and "op 2" in text and "op 1" in text


def test_reading_nothing_after_the_sessions_own_write_breaks_read_your_writes():
    v = only(check_sessions([w(0, "a", 1, 0), r(1, None, 1)]))
    assert (v.guarantee, v.saw, v.expected_at_least, v.because_of) == ("read-your-writes", None, 1, 0)


def test_a_read_concurrent_with_the_sessions_write_may_miss_it():
    # A session spanning two processes: the read starts before the write returns.
    ops = [w(0, "a", 1, 0, process=0, duration_s=2), r(1, None, 1, process=1)]
    assert check_sessions(ops, session_of=lambda o: "s").ok is True


def test_an_unacknowledged_write_sets_no_bound():
    # Neither the output nor `versions` gives op 0 a position: "b" read later cannot be ranked against it.
    result = check_sessions([w(0, "a", None, 0), w(1, "b", 1, 1, process=1), r(2, "b", 2)])
    assert result.ok is True


def test_a_session_spans_processes():
    # Process 0 writes and crashes; process 10 continues its session and must see the write.
    ops = [w(0, "a", 1, 0, process=1), w(1, "b", 2, 1, process=0), r(2, "a", 2, process=10)]
    assert check_sessions(ops).ok is True  # by process: two strangers
    v = only(check_sessions(ops, session_of=lambda o: ("client", o.process % 10)))
    assert (v.guarantee, v.session, v.because_of) == ("read-your-writes", ("client", 0), 1)


def test_a_different_session_reading_old_data_is_not_a_violation():
    ops = [w(0, "a", 1, 0, process=0), w(1, "b", 2, 1, process=0), r(2, "a", 2, process=1), r(3, None, 3, process=2)]
    assert check_sessions(ops).ok is True


# --- monotonic reads ---------------------------------------------------------------


def test_a_read_going_backwards_breaks_monotonic_reads():
    ops = [
        w(0, "a", 1, 0, process=9),
        w(1, "b", 2, 1, process=9),
        r(2, "b", 2, process=0),  # from an up-to-date replica
        r(3, "a", 3, process=0),  # then from a lagging one
    ]
    v = only(check_sessions(ops))
    assert v == SessionViolation("monotonic-reads", 0, "x", 3, saw=1, expected_at_least=2, because_of=2, value="a")


def test_overlapping_reads_may_see_any_order():
    ops = [w(0, "a", 1, 0, process=9), w(1, "b", 2, 1, process=9),
           r(2, "b", 2, process=0, duration_s=3), r(3, "a", 3, process=1)]
    assert check_sessions(ops, session_of=lambda o: "s" if o.process < 9 else "writer").ok is True
    ops[2] = dataclasses.replace(ops[2], return_s=2.5)  # now op 2 returns before op 3 starts
    assert only(check_sessions(ops, session_of=lambda o: "s" if o.process < 9 else "writer")).op_id == 3


def test_reads_of_other_keys_set_no_bound():
    ops = [w(0, "a", 1, 0, process=9), w(1, "b", 2, 1, process=9), r(2, "b", 2), r(3, None, 3, key="y")]
    assert check_sessions(ops).ok is True


def test_a_stale_read_does_not_lower_the_bound():
    ops = [w(0, "a", 1, 0, process=9), w(1, "b", 2, 1, process=9), r(2, "b", 2), r(3, "a", 3), r(4, "a", 4)]
    result = check_sessions(ops)
    assert [(v.op_id, v.because_of) for v in result.violations] == [(3, 2), (4, 2)]


# --- deletes and None --------------------------------------------------------------


def test_a_read_of_nothing_after_the_sessions_delete_holds():
    assert check_sessions([w(0, "a", 1, 0), d(1, 2, 1), r(2, None, 2)]).ok is True


def test_a_read_of_nothing_holds_when_a_later_delete_exists():
    # The session's latest write is a put, but another session deleted the key after it.
    assert check_sessions([w(0, "a", 1, 0), d(1, 2, 1, process=1), r(2, None, 2)]).ok is True


def test_a_read_of_nothing_after_a_write_that_followed_the_delete_breaks_read_your_writes():
    v = only(check_sessions([d(0, 1, 0), w(1, "a", 2, 1), r(2, None, 2)]))
    assert (v.guarantee, v.saw, v.expected_at_least) == ("read-your-writes", 1, 2)


def test_a_read_of_nothing_raises_the_bound_to_the_delete_it_must_have_seen():
    ops = [
        w(0, "a", 1, 0),
        w(1, "b", 2, 1, process=9),
        d(2, 3, 2, process=9),
        r(3, None, 3),  # at least version 1: so it saw the delete at 3
        r(4, "b", 4),  # version 2: back in time
    ]
    v = only(check_sessions(ops))
    assert (v.guarantee, v.op_id, v.saw, v.expected_at_least, v.because_of) == ("monotonic-reads", 4, 2, 3, 3)


def test_a_read_of_nothing_without_a_bound_may_be_the_initial_state():
    # Op 3 may have seen the initial state rather than the delete, so "a" after it is no regression.
    ops = [w(0, "a", 1, 0, process=9), d(1, 2, 1, process=9), r(3, None, 3), r(4, "a", 4)]
    assert check_sessions(ops).ok is True


def test_an_info_delete_leaves_a_stale_looking_read_of_nothing_undetermined():
    ops = [w(0, "a", 1, 0), d(1, None, 1, process=1, status="info"), r(2, None, 2)]
    result = check_sessions(ops)
    assert (result.ok, result.undetermined) == (True, 1)
    v = only(check_sessions(ops, versions={("x", None): 0}))  # the store's log: the delete came first
    assert (v.guarantee, v.saw, v.expected_at_least) == ("read-your-writes", 0, 1)
    assert check_sessions(ops, versions={("x", None): 2}).ok is True


# --- unknown versions and phantoms -------------------------------------------------


def test_a_value_of_an_info_write_is_undetermined_unless_versions_gives_it():
    ops = [w(0, "a", 1, 0), w(1, "b", 2, 1), w(2, "c", None, 2, process=1, status="info"), r(3, "c", 3)]
    result = check_sessions(ops)
    assert (result.ok, result.reads_checked, result.undetermined) == (True, 1, 1)
    assert check_sessions(ops, versions={("x", "c"): 3}).ok is True
    v = only(check_sessions(ops, versions={("x", "c"): 0}))
    assert (v.guarantee, v.op_id, v.saw, v.expected_at_least) == ("read-your-writes", 3, 0, 2)


def test_an_undetermined_read_sets_no_bound():
    ops = [w(0, "a", 1, 0, process=9), w(1, "c", None, 1, process=9, status="info"), r(2, "c", 2), r(3, "a", 3)]
    assert check_sessions(ops).ok is True


def test_versions_override_the_acknowledged_ones():
    ops = [w(0, "a", 1, 0, process=9), w(1, "b", 2, 1, process=9), r(2, "b", 2), r(3, "a", 3)]
    assert not check_sessions(ops).ok
    assert check_sessions(ops, versions={("x", "a"): 3}).ok is True


def test_a_value_no_write_wrote_is_a_phantom():
    ops = [w(0, b"a", 1, 0), r(1, b"zz", 1), w(2, b"q", 2, 2, process=1, status="fail"), r(3, b"q", 3)]
    result = check_sessions(ops)
    assert [(v.guarantee, v.op_id, v.value, v.because_of) for v in result.violations] == [
        ("phantom", 1, b"zz", -1), ("phantom", 3, b"q", -1)]  # a failed write never took effect
    assert "no write wrote" in describe_sessions(result)


def test_a_cas_counts_as_a_write_when_its_version_is_known():
    cas = op(1, "cas", ("a", "b"), True, 1)
    ops = [w(0, "a", 1, 0), cas, r(2, "a", 2)]
    result = check_sessions(ops)
    assert (result.ok, result.undetermined) == (True, 0)  # "b" is not read: the cas sets no bound
    v = only(check_sessions(ops, versions={("x", "b"): 2}))
    assert (v.guarantee, v.because_of) == ("read-your-writes", 1)
    assert check_sessions([w(0, "a", 1, 0), cas, r(2, "b", 2)]).undetermined == 1  # written, version unknown
    failed_cas = op(1, "cas", ("z", "b"), False, 1)
    assert only(check_sessions([w(0, "a", 1, 0), failed_cas, r(2, "b", 2)])).guarantee == "phantom"


def test_values_written_by_functions_it_does_not_model_are_undetermined():
    ops = [w(0, 1, 1, 0), op(1, "incr", None, 2, 1), r(2, 2, 2)]
    assert check_sessions(ops).undetermined == 1


def test_failed_and_info_reads_are_not_judged():
    ops = [w(0, "a", 1, 0), w(1, "b", 2, 1), r(2, "a", 2, status="fail"), r(3, None, 3, status="info")]
    result = check_sessions(ops)
    assert (result.ok, result.reads_checked) == (True, 0)


# --- ordering ties -----------------------------------------------------------------


def test_equal_times_are_ordered_by_recorder_indices():
    clock = [0.0]
    rec = HistoryRecorder(clock=lambda: clock[0])  # a virtual clock that never advances
    a = rec.invoke(0, "write", "x", "a")
    rec.ok(a, 1)
    b = rec.invoke(0, "write", "x", "b")
    rec.ok(b, 2)
    c = rec.invoke(0, "read", "x")
    rec.ok(c, "a")
    assert only(check_sessions(rec.operations())).guarantee == "read-your-writes"
    # Without the indices, touching intervals count as concurrent.
    bare = [dataclasses.replace(o, call_index=None, return_index=None) for o in rec.operations()]
    assert check_sessions(bare).ok is True


# --- misuse --------------------------------------------------------------------------


def test_two_versions_for_one_value_raise_config_error():
    with pytest.raises(ConfigError, match="two versions"):
        check_sessions([w(0, "a", 1, 0), w(1, "a", 2, 1)])


def test_one_version_for_two_values_raises_config_error():
    with pytest.raises(ConfigError, match="two values"):
        check_sessions([w(0, "a", 1, 0), w(1, "b", 1, 1)])
    with pytest.raises(ConfigError, match="two values"):
        check_sessions([w(0, "a", 1, 0)], versions={("x", "b"): 1})


def test_versions_that_cannot_be_compared_raise_config_error():
    with pytest.raises(ConfigError, match="compared"):
        check_sessions([w(0, "a", 1, 0), w(1, "b", (0, 2), 1)])


@pytest.mark.parametrize("bad", [[("write", "x", 1)], [None], ["op"]])
def test_input_that_is_not_operations_raises_invalid_argument(bad):
    with pytest.raises(InvalidArgumentError):
        check_sessions(bad)


def test_bad_arguments_raise_invalid_argument():
    with pytest.raises(InvalidArgumentError):
        check_sessions([], session_of="process")
    with pytest.raises(InvalidArgumentError):
        check_sessions([], versions=[(("x", "a"), 1)])
    with pytest.raises(InvalidArgumentError):
        check_sessions([], versions={"x": 1})
    with pytest.raises(InvalidArgumentError):
        check_sessions([r(0, None, 0)], session_of=lambda o: [o.process])  # unhashable session


def test_records_validate_their_fields():
    with pytest.raises(ConfigError):
        SessionViolation("causal", 0, "x", 1, 1, 2, 0)
    with pytest.raises(ConfigError):
        SessionCheck(ok=True, violations=(SessionViolation("phantom", 0, "x", 1, None, None, -1),),
                     reads_checked=1, undetermined=0, sessions=1)
    with pytest.raises(InvalidArgumentError):
        SessionCheck(ok=True, violations=[], reads_checked=0, undetermined=0, sessions=0)
    assert set(SESSION_GUARANTEES) == {"read-your-writes", "monotonic-reads", "phantom"}


# --- records ------------------------------------------------------------------------


def test_records_survive_a_codec_round_trip():
    ops = [
        w(0, b"a", (1, 5), 0, key=b"k", process=0),
        w(1, b"b", (2, 1), 1, key=b"k", process=0),
        r(2, b"a", 2, key=b"k", process=10),
        r(3, b"zz", 3, key=b"k", process=10),
    ]
    result = check_sessions(ops, session_of=lambda o: ("client", o.process % 10))
    assert [v.guarantee for v in result.violations] == ["read-your-writes", "phantom"]
    assert result.violations[0].saw == (1, 5) and result.violations[0].session == ("client", 0)
    assert codec.decode(codec.encode(result), expect=SessionCheck) == result
    for v in result.violations:
        assert codec.decode(codec.encode(v)) == v


def test_describe_lists_the_first_violations_only():
    ops = [w(0, "a", 1, 0, process=9), w(1, "b", 2, 1, process=9), r(2, "b", 2)]
    ops += [r(3 + i, "a", 3 + i) for i in range(8)]
    text = describe_sessions(check_sessions(ops), max_violations=3)
    assert "8 monotonic-reads" in text
    assert "op 3 " in text and "op 5 " in text and "op 6 " not in text
    assert "and 5 more violations" in text


# --- properties: a single copy keeps both guarantees; a stale read breaks one ------


@dataclasses.dataclass
class _Execution:
    """A sequential run of a single-copy store, and what each session had written and read by then."""

    ops: list
    # For each read (by position): the bound of its session's own writes, and of its earlier reads.
    write_bound: dict
    read_bound: dict
    history: dict  # key -> [(version, value)] in version order; None for deletes


@st.composite
def executions(draw, max_ops=60):
    """Ops one after another (so every earlier op is "before"), each read returning the current value.

    Sessions span processes (``process // 100`` is the session), and with
    ``tied`` every op happens at time 0, ordered only by recorder indices.
    """
    n = draw(st.integers(1, max_ops))
    keys = ("a", "b", "c")[: draw(st.integers(1, 3))]
    sessions = draw(st.integers(1, 4))
    tied = draw(st.booleans())
    current: dict = {}  # key -> (version, value)
    history: dict = {k: [] for k in keys}
    own: dict = {}  # (session, key) -> highest version of its own writes
    seen: dict = {}  # (session, key) -> highest non-None version its reads saw
    write_bound, read_bound = {}, {}
    version = 0
    ops = []
    for i in range(n):
        session = draw(st.integers(0, sessions - 1))
        process = session * 100 + draw(st.integers(0, 2))
        key = draw(st.sampled_from(keys))
        f = draw(st.sampled_from(("read", "read", "write", "delete")))
        times = dict(call_s=0.0, return_s=0.0, call_index=2 * i, return_index=2 * i + 1) if tied else \
            dict(call_s=float(i), return_s=i + 0.5)
        if f == "read":
            ver, value = current.get(key, (-1, None))
            write_bound[i] = own.get((session, key), -1)
            read_bound[i] = seen.get((session, key), -1)
            if value is not None:
                seen[(session, key)] = ver
            ops.append(Operation(i, process, "read", key, None, value, status="ok", **times))
            continue
        version += 1
        value = None if f == "delete" else f"{key}{version}".encode()
        current[key] = (version, value)
        history[key].append((version, value))
        own[(session, key)] = version
        ops.append(Operation(i, process, f, key, value, version, status="ok", **times))
    return _Execution(ops, write_bound, read_bound, history)


def _session(o: Operation) -> int:
    return o.process // 100


def _older_values(ex: _Execution, key, below: int, at_least: int = -1) -> list:
    """Values of ``key`` that the checker must rank in ``[at_least, below)``: writes there, and None
    when no delete of the key (in the whole run) reaches ``below``, since a None read counts as the latest delete."""
    values = [v for ver, v in ex.history[key] if v is not None and at_least <= ver < below]
    deletes = [ver for ver, v in ex.history[key] if v is None]
    if max(deletes, default=-1) < below and max(deletes, default=-1) >= at_least:
        values.append(None)
    return values


@settings(max_examples=200, deadline=None)
@given(executions())
def test_a_single_copy_store_keeps_both_guarantees(ex):
    result = check_sessions(ex.ops, session_of=_session)
    assert result.ok is True, describe_sessions(result)
    assert result.reads_checked == sum(o.f == "read" for o in ex.ops)
    assert result.undetermined == 0


@settings(max_examples=200, deadline=None)
@given(executions(), st.data())
def test_a_read_older_than_the_sessions_own_write_is_caught(ex, data):
    candidates = [(i, older) for i, bound in ex.write_bound.items()
                  if (older := _older_values(ex, ex.ops[i].key, bound))]
    assume(candidates)
    i, older = data.draw(st.sampled_from(candidates))
    ops = list(ex.ops)
    ops[i] = dataclasses.replace(ops[i], output=data.draw(st.sampled_from(older)))
    v = only(check_sessions(ops, session_of=_session))
    assert (v.guarantee, v.op_id, v.expected_at_least) == ("read-your-writes", i, ex.write_bound[i])
    assert _session(ops[v.because_of]) == _session(ops[i]) and ops[v.because_of].f != "read"


@settings(max_examples=200, deadline=None)
@given(executions(), st.data())
def test_a_read_older_than_an_earlier_read_is_caught(ex, data):
    candidates = [(i, older) for i, bound in ex.read_bound.items()
                  if (older := [v for v in _older_values(ex, ex.ops[i].key, bound, ex.write_bound[i])
                                if v is not None])]
    assume(candidates)
    i, older = data.draw(st.sampled_from(candidates))
    ops = list(ex.ops)
    ops[i] = dataclasses.replace(ops[i], output=data.draw(st.sampled_from(older)))
    v = only(check_sessions(ops, session_of=_session))
    assert (v.guarantee, v.op_id) == ("monotonic-reads", i)
    assert v.expected_at_least >= ex.read_bound[i]  # a None read may have raised the bound further
    assert ops[v.because_of].f == "read" and _session(ops[v.because_of]) == _session(ops[i])
