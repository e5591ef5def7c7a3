"""Procedures and queries of the replicated store: decided in log order with the batch's earlier
effects visible, refusals as typed answers that never stop a replica, effects checked, and the
wire checks (client writes may call; log entries may not); then both protocols on Ray."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.error_record import ErrorRecord
from ddia_ray.errors import CodecError, ConfigError, InvalidArgumentError, RemoteError, UnknownProcedureError
from ddia_ray.replication.ownership import Ownership, check_fenced_ops
from ddia_ray.replication.procedures import call_op, procedure, query, result_or_raise, run_query
from ddia_ray.replication.records import CALL, CAS, DELETE, DELETE_RANGE, PUT, RESERVED_PREFIX, check_entries, check_ops
from ddia_ray.replication.state import MapState, decide


@procedure("test.add")
def _add(get, args):
    key, n = args
    total = int(get(key) or b"0") + n
    if total > 100:
        raise ConfigError(f"{key!r} would pass 100")
    return ((PUT, key, b"%d" % total),), total


@procedure("test.crash")
def _crash(get, args):
    return 1 / 0


@procedure("test.bad_effects")
def _bad_effects(get, args):
    return {"reserved": ((PUT, RESERVED_PREFIX + b"x", b""),), "shape": ((PUT, b"k"),),
            "range": ((DELETE_RANGE, b"", b"\xff"),), "list": [(PUT, b"k", b"v")]}[args], None


@query("test.sum")
def _sum(state, args):
    keys, values = state.scan(args[0], args[1], 100)
    return sum(int(v) for v in values)


def test_calls_are_decided_in_order_with_the_batch_effects_visible():
    data = {b"a": b"5"}
    ops, results = decide((call_op("test.add", (b"a", 1)), (CAS, b"a", b"50", b"6"), call_op("test.add", (b"a", 7)),
                           call_op("test.add", (b"b", 2))), data.get)
    assert results == (6, True, 57, 2)
    assert ops == ((PUT, b"a", b"6"), (PUT, b"a", b"50"), (PUT, b"a", b"57"), (PUT, b"b", b"2"))


def test_refusals_and_bugs_are_answers_not_crashes():
    ops, results = decide((call_op("test.add", (b"a", 101)), call_op("test.crash", None), call_op("nope", 1),
                           call_op("test.add", (b"a", 1))), {}.get)
    assert ops == ((PUT, b"a", b"1"),)  # only the last call wrote
    refused, crashed, unknown, ok = results
    assert isinstance(refused, ErrorRecord) and refused.kind == "ConfigError"
    with pytest.raises(ConfigError, match="pass 100"):
        result_or_raise(refused)
    with pytest.raises(RemoteError) as e:
        result_or_raise(crashed)
    assert e.value.kind == "ZeroDivisionError"
    with pytest.raises(UnknownProcedureError) as e2:
        result_or_raise(unknown)
    assert e2.value.name == "nope"
    assert ok == 1
    assert codec.decode(codec.encode(results)) == results  # the answers travel and are remembered


@pytest.mark.parametrize("which", ["reserved", "shape", "range", "list"])
def test_effects_are_checked(which):
    ops, (answer,) = decide((call_op("test.bad_effects", which),), {}.get)
    assert ops == () and answer.kind == "InvalidArgumentError"


def test_queries_read_the_state_and_refuse_typed():
    state = MapState()
    state.apply(1, ((PUT, b"n1", b"3"), (PUT, b"n2", b"4"), (PUT, b"z", b"100")))
    assert run_query("test.sum", codec.encode((b"n", b"o")), state) == 7
    assert run_query("missing", codec.encode(None), state).kind == "UnknownProcedureError"


def test_wire_checks():
    op = call_op("test.add", (b"a", 1))
    assert check_ops((op,), client=True) == (op,)
    with pytest.raises(InvalidArgumentError, match="unknown operation code"):
        check_ops((op,), client=False)  # a call never enters the log: its effects do
    with pytest.raises(InvalidArgumentError, match="procedure call"):
        check_ops(((CALL, b"test.add", "not bytes"),), client=True)
    with pytest.raises(InvalidArgumentError):
        call_op("", None)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        procedure("test.add")(lambda get, args: ((), None))
    # An entry's origin may carry a procedure's answer (a codec value within the codec's limits).
    entry = (1, 1, ((PUT, b"a", b"1"),), 0, ("c", 1, 0, (ErrorRecord("ConfigError", "x"), (1, "s")), 0))
    assert check_entries((entry,)) == (entry,)
    deep: tuple = ()
    for _ in range(codec.FIELD_DEPTH_MAX + 2):
        deep = (deep,)
    with pytest.raises(CodecError):
        check_entries(((1, 1, (), 0, ("c", 1, 0, (deep,), 0)),))
    with pytest.raises(InvalidArgumentError, match="partition map"):
        check_fenced_ops(Ownership("s", 1, ()), 1, (op,))


@pytest.mark.ray
@pytest.mark.parametrize("protocol", ["raft", "leader-follower"])
def test_procedures_on_ray(ray_session, protocol):
    from ddia_ray.replication import ReplicatedStore

    store = ReplicatedStore.launch(replicas=3, protocol=protocol, mode=None if protocol == "raft" else "sync",
                                   procedures=("ddia_ray.events.procedures",))
    try:
        with store.client() as c:
            ok = call_op("events.append", ("s-1", "no_stream", (("id1", "T", b"x", b""),), 0))
            first = c.submit_ops((ok,), single=True).result(30)
            assert first == ("s-1", 0, 0, 0, 0)
            assert c.submit_ops((ok,), single=True).result(30) == first  # a retry by id: the first answer
            refused = c.submit_ops((call_op("events.append", ("s-1", "no_stream", (("id2", "T", b"", b""),), 0)),),
                                   single=True).result(30)
            assert refused.kind == "WrongExpectedVersionError" and refused.attrs["actual"] == 0
            assert c.query("events.stream_info", ("s-1",))[0] == 0
            with pytest.raises(UnknownProcedureError):
                c.query("test.sum", (b"", b"z"))  # registered in this driver only, not in the replicas
    finally:
        store.shutdown()


@procedure("test.write_then_seek")
def _write_then_seek(get, args):
    """Write ``effects`` (puts, deletes and range deletes), then seek each of ``ranges`` and read
    the keys of each of them with ``get.many``."""
    effects, ranges = args
    return tuple(effects), (tuple(get.seek(s, e) for s, e in ranges), tuple(get.many((s, e)) for s, e in ranges))


_KEYS = st.binary(min_size=1, max_size=3).map(lambda k: b"k" + k)  # outside the replicas' reserved keys


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(_KEYS, st.binary(max_size=2), max_size=40),
       batch=st.lists(st.lists(st.one_of(
           st.tuples(st.just(PUT), _KEYS, st.binary(max_size=2)),
           st.tuples(st.just(DELETE), _KEYS, st.just(b"")),
           st.tuples(st.just(DELETE_RANGE), _KEYS, _KEYS).filter(lambda op: op[1] < op[2])), max_size=6),
           min_size=1, max_size=4),
       ranges=st.lists(st.tuples(_KEYS, _KEYS), min_size=1, max_size=4))
def test_a_procedures_seek_finds_the_first_live_key_as_the_batch_has_it(data, batch, ranges):
    state = MapState()
    state.data.update(data)
    model = dict(data)
    calls = []
    for effects in batch:
        calls.append(call_op("test.write_then_seek", (tuple(effects), tuple(ranges))))
    _, results = state.decide(tuple(calls))
    for effects, (got, many) in zip(batch, results):
        want = []  # a call seeks through the earlier calls' effects (its own apply after it returns)
        for s, e in ranges:
            inside = sorted(k for k in model if s <= k < e)
            want.append((inside[0], model[inside[0]]) if inside else None)
        assert list(got) == want
        assert [list(values) for values in many] == [[model.get(s), model.get(e)] for s, e in ranges]
        for code, a, b in effects:  # the model: this call's effects
            if code == PUT:
                model[a] = b
            elif code == DELETE:
                model.pop(a, None)
            else:
                for k in [k for k in model if a <= k < b]:
                    del model[k]
