"""CRDT states as bytes: round trips, canonical encodings, and decoding hostile input (ddia_ray.crdt).

Every kind's states from a simulation survive ``decode(encode(s))`` equal and re-encode to the
same bytes. Truncations, bit flips and random bytes of valid encodings, and valid records whose
payload has one value replaced by a random one, only ever raise :class:`CodecError` subclasses;
what does decode is a usable state (its value, encoding, copy, merge and mutators work).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_crdt_convergence import ALL_KINDS, EXAMPLES, Sim, random_op

from ddia_ray import codec, crdt
from ddia_ray.crdt.base import CRDTState
from ddia_ray.errors import CodecError, CorruptRecordError, CRDTTypeError, DdiaRayError, InvalidArgumentError

FUZZ = settings(max_examples=max(EXAMPLES * 4, 50), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_STATES: dict[str, list[crdt.CRDT]] = {}


def states_of(kind: str) -> list[crdt.CRDT]:
    """A few states of ``kind``, from three seeded simulations (cached: they are inputs, not tests)."""
    if kind not in _STATES:
        out = [crdt.new(kind)]
        for seed in (1, 2, 3):
            sim = Sim(kind, seed, steps=40)
            sim.run()
            out += sim.states[:2] + sim.samples[:3]
        _STATES[kind] = out
    return _STATES[kind]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_round_trip_is_exact_and_canonical(kind):
    for s in states_of(kind):
        data = crdt.encode(s)
        back = crdt.decode(data)
        assert type(back) is type(s) and back == s and back.value() == s.value()
        assert crdt.encode(back) == data
        assert crdt.decode(data, kind) == s
        assert crdt.encode(s.copy()) == data


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_decoding_as_another_kind_is_a_type_error(kind):
    other = "text" if kind != "text" else "gcounter"
    with pytest.raises(CRDTTypeError):
        crdt.decode(crdt.encode(crdt.new(kind)), other)
    with pytest.raises(CRDTTypeError):
        crdt.decode(crdt.encode(crdt.new(kind)), "no-such-kind")


def test_the_record_is_registered_under_the_crdt_prefix():
    assert codec.registered_modules()["crdt"] == "ddia_ray.crdt"
    assert codec.registered("crdt.state").cls is CRDTState


def test_not_a_state_and_unknown_formats_are_codec_errors():
    with pytest.raises(CorruptRecordError):
        crdt.decode(codec.encode((1, 2)))
    with pytest.raises(CorruptRecordError):
        crdt.decode(codec.encode(CRDTState("no-such-kind", 1, None)))
    with pytest.raises(CodecError):  # UnknownVersionError: a payload format from a newer writer
        crdt.decode(codec.encode(CRDTState("gcounter", 2, ())))
    with pytest.raises(CodecError):
        crdt.decode("not bytes")  # type: ignore[arg-type]


def _usable(c: crdt.CRDT) -> None:
    """A decoded state must behave: value, encode, copy, merge with itself, and a mutator."""
    c.value()
    again = crdt.decode(crdt.encode(c))
    assert again == c
    assert crdt.merge(c, again) == c
    rng = random.Random(0)
    op, args = random_op(c.kind, rng, c, "fuzz")
    try:
        crdt.apply(c, c.kind, "fuzz", op, args)
    except (CRDTTypeError, InvalidArgumentError):
        pass
    c.value()


def _decode_only_codec_errors(data: bytes) -> None:
    try:
        c = crdt.decode(data)
    except CodecError:
        return
    except DdiaRayError as e:  # any other ddia error is still a contract breach for decode
        raise AssertionError(f"decode raised {type(e).__name__}, not a CodecError: {e}") from e
    _usable(c)


@pytest.mark.parametrize("kind", ALL_KINDS)
@FUZZ
@given(data=st.data())
def test_damaged_bytes_raise_only_codec_errors(kind, data):
    good = crdt.encode(data.draw(st.sampled_from(states_of(kind))))
    how = data.draw(st.sampled_from(["truncate", "flip", "random", "splice"]))
    if how == "truncate":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        buf = bytearray(good)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        bad = bytes(buf)
    elif how == "random":
        bad = data.draw(st.binary(max_size=200))
    else:
        i = data.draw(st.integers(0, len(good)))
        bad = good[:i] + data.draw(st.binary(min_size=1, max_size=8)) + good[i:]
    _decode_only_codec_errors(bad)


#: Replacement values for a payload leaf: wrong types, out-of-range ints, NaN, nesting, records.
_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, -1, 1, 2**63, 2**63 - 1]),
    st.floats(allow_nan=True), st.text(max_size=4), st.binary(max_size=4),
    st.lists(st.integers(-2, 5), max_size=5).map(tuple),
    st.dictionaries(st.sampled_from(["n", "c", "e", "b", "d", "f", "x"]), st.integers(-1, 3), max_size=3),
    st.just(CRDTState("gcounter", 1, ())), st.just(((("a", 1),),)),
)


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, tuple):
        for i, v in enumerate(x):
            yield from _paths(v, prefix + (i,))
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, CRDTState):
        yield from _paths(x.payload, prefix + ("<payload>",))


def _replace(x, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(x, tuple):
        return x[:head] + (_replace(x[head], rest, value),) + x[head + 1:]
    if isinstance(x, dict):
        return {**x, head: _replace(x[head], rest, value)}
    return CRDTState(x.kind, x.format, _replace(x.payload, rest, value))


@pytest.mark.parametrize("kind", ALL_KINDS)
@FUZZ
@given(data=st.data())
def test_well_formed_records_with_a_wrong_value_raise_only_codec_errors(kind, data):
    state = codec.decode(crdt.encode(data.draw(st.sampled_from(states_of(kind)))))
    paths = list(_paths(state.payload))
    path = data.draw(st.sampled_from(paths))
    payload = _replace(state.payload, path, data.draw(_JUNK))
    try:
        bad = codec.encode(CRDTState(kind, 1, payload))
    except CodecError:
        return  # not even encodable (a NaN key...): nothing to decode
    _decode_only_codec_errors(bad)


def test_a_long_prepended_text_decodes_in_linear_time():
    """Typing at position 0 makes every block a sibling of the last; decoding in id order skips none."""
    t = crdt.Text()
    for _ in range(20_000):
        t.insert("a", 0, "x")
    t.insert("b", 10_000, "middle")
    back = crdt.decode(crdt.encode(t))
    assert back == t and back.value() == t.value() and len(back.value()) == 20_006


def test_ormap_nesting_is_bounded_so_every_map_encodes():
    m = crdt.ORMap()
    args: tuple = ("gcounter", "increment", 1)
    for _ in range(crdt.MAP_DEPTH_MAX - 1):
        args = ("ormap", "update", "k") + args
    m.update("a", "k", *args)  # MAP_DEPTH_MAX maps deep: allowed
    assert crdt.decode(crdt.encode(m)) == m
    assert m.value() == {"k": {"k": {"k": {"k": {"k": {"k": {"k": {"k": 1}}}}}}}}
    with pytest.raises(InvalidArgumentError):
        m.update("a", "k", *(("ormap", "update", "k") + args))


def _raw(kind: str, payload) -> bytes:
    return codec.encode(CRDTState(kind, 1, payload))


@pytest.mark.parametrize("name,kind,payload", [
    ("text: two blocks share an id", "text", (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, 2, "c", -1, 0, False, 0)),
    ("text: origin not below the block", "text", (1, "a", 1, 0, 3, "ab", 0, 3, False, 0)),
    ("text: origin counter with no origin node", "text", (1, "a", 1, 0, 3, "ab", -1, 2, False, 0)),
    ("text: orphan ranges out of order", "text", (1, "a", 0, 2, 0, 5, 9, 0, 1, 3)),
    ("text: orphan ranges touching", "text", (1, "a", 0, 2, 0, 1, 3, 0, 4, 6)),
    ("text: trailing values", "text", (1, "a", 0, 0, 7)),
    ("text: block count beyond the payload", "text", (1, "a", 5, 0)),
    ("text: repeated node", "text", (2, "a", "a", 0, 0)),
    ("text: empty block text", "text", (1, "a", 1, 0, 1, "", -1, 0, False, 0)),
    # whole documents: their columns are checked at once, their origins as they are placed
    ("text: two placed blocks share an id", "text",
     (1, "a", 2, 0, 5, "xy", -1, 0, False, 0, 3, "abc", -1, 0, False, 0)),
    ("text: a second block at the start with an origin counter", "text",
     (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, 3, "c", -1, 2, False, 0)),
    ("text: a second block with an origin node and counter 0", "text",
     (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, 3, "c", 0, 0, False, 0)),
    ("text: a deleted flag that is an int, among bools", "text",
     (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, 3, "c", 0, 2, 1, 0)),
    ("text: a node index beyond the table, in a column", "text",
     (1, "a", 2, 0, 1, "ab", -1, 0, False, 1, 3, "c", 0, 2, False, 0)),
    # the shapes of one-edit deltas, which decode by a shortcut: it refuses the same flaws
    ("text: one block at counter 0", "text", (1, "a", 1, 0, 0, "x", -1, 0, False, 0)),
    ("text: one block with a bool node index", "text", (1, "a", 1, False, 1, "x", -1, 0, False, 0)),
    ("text: one block with an int deleted flag", "text", (1, "a", 1, 0, 1, "x", -1, 0, 0, 0)),
    ("text: one block whose origin is not below it", "text", (2, "a", "b", 1, 0, 2, "x", 1, 2, False, 0)),
    ("text: one block whose origin node is its own, repeated", "text", (2, "a", "a", 1, 0, 2, "x", 1, 1, False, 0)),
    ("text: one block, a counter beyond the int64 range", "text", (1, "a", 1, 0, 2**63 - 1, "xy", -1, 0, False, 0)),
    ("text: one deleted range, backwards", "text", (1, "a", 0, 1, 0, 5, 4)),
    ("text: one deleted range at counter 0", "text", (1, "a", 0, 1, 0, 0, 4)),
    ("text: one deleted range with a bool count", "text", (1, "a", 0, True, 0, 1, 4)),
    ("gcounter: zero count", "gcounter", (("a", 0),)),
    ("gcounter: repeated node", "gcounter", (("a", 1), ("a", 2))),
    ("gset: repeated item", "gset", ("x", "x")),
    ("gset: NaN item", "gset", (float("nan"),)),
    ("orset: dot outside the context", "orset", {"n": ("a",), "c": ((), ()), "e": (("x", ((0, 1),)),)}),
    ("orset: entry without dots", "orset", {"n": ("a",), "c": (((0, 1),), ()), "e": (("x", ()),)}),
    ("orset: one dot held by two items", "orset",
     {"n": ("a",), "c": (((0, 1),), ()), "e": (("x", ((0, 1),)), ("y", ((0, 1),)))}),
    ("mvregister: repeated dot", "mvregister", {"n": ("a",), "c": (((0, 1),), ()), "e": ((0, 1, "x"), (0, 1, "y"))}),
    ("lww: negative timestamp", "lww", (-1, "a", "x")),
    ("ormap: field holds another kind", "ormap",
     {"n": ("a",), "c": (((0, 1),), ()), "f": (("k", "gcounter", ((0, 1, "a@1", CRDTState("gset", 1, ())),)),)}),
    ("ormap: unknown field kind", "ormap", {"n": ("a",), "c": (((0, 1),), ()), "f": (("k", "bogus", ()),)}),
])
def test_named_corruptions_are_refused(name, kind, payload):
    with pytest.raises(CorruptRecordError):
        crdt.decode(_raw(kind, payload))


def test_valid_hand_written_payloads_decode():
    """The named corruptions above differ from these valid payloads in the one flaw they name."""
    t = crdt.decode(_raw("text", (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, 3, "c", 0, 2, True, 0)))
    assert t.value() == "ab" and len(t._blocks()) == 2
    assert crdt.decode(_raw("text", (1, "a", 0, 2, 0, 1, 3, 0, 5, 6))).value() == ""
    assert crdt.decode(_raw("text", (1, "a", 1, 0, 1, "x", -1, 0, False, 0))).value() == "x"
    assert crdt.decode(_raw("text", (2, "a", "b", 1, 0, 2, "x", 1, 1, False, 0)))._find("a", 2) is not None
    assert crdt.decode(_raw("text", (1, "a", 1, 0, 2**63 - 2, "xy", -1, 0, False, 0))).value() == "xy"
    assert crdt.decode(_raw("text", (1, "a", 0, 1, 0, 5, 5)))._orphans == {"a": ([5], [5])}
    s = crdt.decode(_raw("orset", {"n": ("a",), "c": (((0, 1),), ()), "e": (("x", ((0, 1),)),)}))
    assert s.value() == {"x"}
    nested = CRDTState("gcounter", 1, (("a@1", 2),))
    fields = (("k", "gcounter", ((0, 1, "a@1", nested),)),)
    m = crdt.decode(_raw("ormap", {"n": ("a",), "c": (((0, 1),), ()), "f": fields}))
    assert m.value() == {"k": 2}
