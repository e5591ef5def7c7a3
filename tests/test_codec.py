"""The versioned msgpack codec: round trips, schema evolution and refusal of bad input."""

from __future__ import annotations

import pickle

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import FORMAT_1, decode, encode, record
from ddia_ray.errors import CodecError, CorruptRecordError, UnknownTypeError, UnknownVersionError


@record("test.point", version=1)
class Point:
    x: int
    label: str = ""


@record("test.shape", version=3, upgrades={1: lambda f: {**f, "points": ()}, 2: lambda f: {**f, "closed": False}})
class Shape:
    name: str
    points: tuple = ()
    closed: bool = False


@record("test.strict", version=1, accepts_newer=False)
class Strict:
    v: int


@record("test.validated", version=1)
class Validated:
    n: int

    def __post_init__(self):
        if self.n < 0:
            raise ValueError("n must be >= 0")


def _raw(tag, version, fields) -> bytes:
    """Bytes as another writer (older, newer) would have produced them."""
    return msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": tag, "v": version, "f": fields})))


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
points = st.builds(Point, st.integers(-(2**31), 2**31), st.text(max_size=8))
shapes = st.builds(Shape, st.text(max_size=8), st.lists(points, max_size=5).map(tuple), st.booleans())


@settings(max_examples=300)
@given(value=plain)
def test_plain_values_round_trip(value):
    assert decode(encode(value)) == value


@settings(max_examples=300)
@given(shape=shapes, extra=plain)
def test_records_nested_in_plain_data_round_trip(shape, extra):
    data = {"shape": shape, "extra": extra, "many": (shape, shape)}
    back = decode(encode(data))
    assert back == data
    assert isinstance(back["shape"], Shape) and all(isinstance(p, Point) for p in back["shape"].points)


@settings(max_examples=200)
@given(x=st.integers(-(2**31), 2**31), new_value=plain, newer=st.integers(2, 50))
def test_fields_from_a_newer_writer_survive_a_rewrite(x, new_value, newer):
    old_reader_view = decode(_raw("test.point", newer, {"x": x, "label": "l", "added_later": new_value}))
    assert old_reader_view == Point(x, "l")
    ext = msgpack.unpackb(encode(old_reader_view))
    rewritten = msgpack.unpackb(ext.data, use_list=False, strict_map_key=False)
    assert rewritten["v"] == newer  # the rewrite still says which version wrote the extra fields
    assert rewritten["f"]["added_later"] == new_value


def test_unknown_fields_do_not_change_equality_or_hash():
    a = decode(_raw("test.point", 2, {"x": 1, "label": "", "z": 9}))
    assert a == Point(1) and hash(a) == hash(Point(1))


def test_older_versions_are_upgraded_step_by_step():
    assert decode(_raw("test.shape", 1, {"name": "n"})) == Shape("n", (), False)
    assert decode(_raw("test.shape", 2, {"name": "n", "points": ()})) == Shape("n")


def test_unknown_type_names_the_tag():
    with pytest.raises(UnknownTypeError, match="test.nope"):
        decode(_raw("test.nope", 1, {}))


def test_version_older_than_any_upgrade_is_refused_with_its_number():
    @record("test.young", version=3, upgrades={2: lambda f: f})
    class Young:
        a: int = 0

    with pytest.raises(UnknownVersionError, match="version 1"):
        decode(_raw("test.young", 1, {"a": 1}))
    assert decode(_raw("test.young", 2, {"a": 1})) == Young(1)


def test_types_that_refuse_newer_versions_say_so():
    with pytest.raises(UnknownVersionError, match="'test.strict' has version 2"):
        decode(_raw("test.strict", 2, {"v": 1}))


def test_unknown_wire_format_is_refused():
    data = msgpack.packb(msgpack.ExtType(7, b"whatever"))
    with pytest.raises(UnknownVersionError, match="wire format"):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"\x92\x01", _raw("test.point", 1, {"label": "no x"}), _raw("test.point", 1, {"x": 1, "bogus": 2}),
     msgpack.packb(msgpack.ExtType(FORMAT_1, b"\x01")), msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb([1])))],
    ids=["invalid-byte", "truncated-array", "missing-field", "undefined-field", "not-a-frame", "frame-not-map"],
)
def test_corrupt_input_raises_codec_errors(data):
    with pytest.raises(CodecError):
        decode(data)


def test_validation_runs_on_decode():
    with pytest.raises(CorruptRecordError, match="invalid field values"):
        decode(_raw("test.validated", 1, {"n": -1}))


def test_pickle_payloads_are_not_executed_or_accepted():
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(CodecError):
        decode(pickle.dumps(Boom()), Point)


def test_unencodable_values_are_refused_by_name():
    with pytest.raises(CodecError, match="object"):
        encode(object())


def test_expect_checks_the_top_level_type():
    with pytest.raises(CodecError, match="expected"):
        decode(encode(Point(1)), Shape)
    with pytest.raises(CodecError, match="bytes"):
        decode("not bytes")


def test_types_of_ddia_ray_modules_load_on_demand(tmp_path):
    import subprocess
    import sys

    # A fresh interpreter that never imported the demo module still decodes its records.
    data = encode(__import__("ddia_ray.demo.replica", fromlist=["Work"]).Work("k", 2))
    code = ("import sys, ddia_ray.codec as c; r = c.decode(sys.stdin.buffer.read()); "
            "print(type(r).__module__, r.key, r.rounds)")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["ddia_ray.demo.replica", "k", "2"]


def test_codec_errors_survive_pickling_as_they_were():
    """Ray pickles an actor's exception; the codec's errors rebuild with their message and fields
    (their __init__ takes a tag, not the message: unpickled naively, the message doubled)."""
    import pickle

    from ddia_ray.errors import UnknownTypeError, UnknownVersionError

    for err in (UnknownTypeError("shop.order", 7), UnknownVersionError("shop.order", 3, "1..2")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.tag == "shop.order"


@record("test.made", version=1)
class _Made:
    a: int
    b: str
    c: bytes = b""


@given(a=st.integers(-2**63, 2**64 - 1), b=st.text(max_size=20), c=st.binary(max_size=20))
def test_a_record_built_by_its_prechecked_maker_is_the_record_its_init_builds(a, b, c):
    from ddia_ray.codec import prechecked, prechecked_maker

    made = prechecked_maker(_Made)(a, b, c)
    assert made == _Made(a, b, c) == prechecked(_Made, a, b, c) and made._unknown is None
    assert decode(encode(made)) == made and hash(made) == hash(_Made(a, b, c))
    with pytest.raises(AttributeError):
        made.a = 1  # still frozen


def test_a_prechecked_maker_is_only_for_record_classes():
    from ddia_ray.codec import prechecked_maker

    with pytest.raises(CodecError):
        prechecked_maker(dict)


def test_the_fast_path_of_a_known_record_refuses_what_the_general_path_refuses():
    """Once a tag has been decoded whole (its fast path cached), every other frame of it decodes to
    what the general path gives, or raises the same error type."""
    from ddia_ray import codec

    assert decode(encode(Validated(1))) == Validated(1)
    assert decode(encode(Shape("s", (Point(1, "p"),), True))) == Shape("s", (Point(1, "p"),), True)
    assert "test.validated" in codec._FAST and "test.shape" in codec._FAST
    deep: object = 1
    for _ in range(codec.FIELD_DEPTH_MAX + 2):
        deep = (deep,)
    frames = [
        _raw("test.validated", 1, {"n": 5}),
        _raw("test.validated", True, {"n": 5}),  # a bool is no version
        _raw("test.validated", 1, {"n": -1}),  # its own validation
        _raw("test.validated", 1, {"n": 5, "m": 1}),  # a field v1 never defined
        _raw("test.validated", 1, {}),  # a required field missing
        _raw("test.validated", 1, [5]),  # fields that are no map
        _raw("test.validated", 2, {"n": 5, "m": 1}),  # a newer writer: kept, unknown field aside
        _raw("test.shape", 3, {"points": (), "name": "x", "closed": False}),  # fields out of order
        _raw("test.shape", 3, {"name": "x", "points": deep, "closed": False}),  # nested past FIELD_DEPTH_MAX
        _raw("test.shape", 1, {"name": "x"}),  # an older version: upgraded
        msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": "test.validated", "v": 1, "f": {"n": 5},
                                                               "x": 0}))),  # a frame with a fourth key
    ]

    def outcome(data):
        try:
            return decode(data)
        except CodecError as e:
            return type(e)

    warm = [outcome(f) for f in frames]
    codec._FAST.clear()
    cold = [outcome(f) for f in frames]
    assert warm == cold
    assert warm[0] == Validated(5) and warm[7] == Shape("x") and warm[9] == Shape("x")
    assert warm[1] is warm[2] is warm[3] is warm[4] is warm[5] is warm[8] is CorruptRecordError


@settings(max_examples=300)
@given(shape=shapes, cut=st.integers(0, 400), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_record_fields_are_the_fields_decode_builds_and_bytes_never_make_it_raise(shape, cut, flip, byte):
    """``record_fields`` gives a record's field values as ``decode`` would build them, None for any
    other bytes (cut short, a byte changed, another record), and raises for none of them."""
    from ddia_ray.codec import record_fields

    data = encode(shape)
    if not shape.points:  # flat fields only: a nested record stays an undecoded ExtType there
        assert record_fields(data, Shape) == (shape.name, (), shape.closed)
    assert record_fields(encode(Validated(1)), Shape) is None
    assert record_fields(data[:cut % max(len(data), 1)], Shape) is None
    mutated = bytearray(data)
    mutated[flip % len(data)] = byte
    got = record_fields(bytes(mutated), Shape)
    if got is not None and not shape.points:  # (with points, nested records stay ExtTypes: see above)
        assert len(got) == 3
        try:
            assert decode(bytes(mutated)) == Shape(*got)  # when decode accepts it, the same values
        except CodecError:
            pass  # values decode refuses: record_fields does not check them (its caller does)
    with pytest.raises(CodecError):
        record_fields(data, dict)  # not a record class
