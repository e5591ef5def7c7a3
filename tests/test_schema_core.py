"""The Schema value: parsing Avro, canonical form and fingerprint, refusal of malformed schemas (one
named test per kind of defect), the bounds, and the two other languages (codec records, Arrow)."""

from __future__ import annotations

import hashlib
import json

import fastavro
import pyarrow as pa
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode, record
from ddia_ray.errors import MalformedSchemaError, SchemaMappingError
from ddia_ray.schema import (
    JSON_DEPTH_MAX,
    SCHEMA_BYTES_MAX,
    SCHEMA_DEPTH_MAX,
    Schema,
    can_read,
    from_arrow,
    from_avro,
    from_record,
    parse,
)

ORDER = {
    "type": "record", "name": "Order", "namespace": "shop", "doc": "An order.",
    "fields": [
        {"name": "id", "type": "long", "doc": "its id"},
        {"name": "items", "type": {"type": "array", "items": {
            "type": "record", "name": "Item", "fields": [{"name": "price", "type": "double"}]}}},
        {"name": "gift", "type": "Item"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


# --- parsing, canonical form, fingerprint --------------------------------------------------------------


def test_parse_gives_the_normalised_avro_and_the_canonical_form():
    s = from_avro(ORDER)
    assert s.kind == "avro" and s.name == "shop.Order"
    assert s.field_names() == ("id", "items", "gift", "note")
    assert s.avro["fields"][1]["type"]["items"]["name"] == "shop.Item"  # full names after parsing
    assert s.avro["fields"][2]["type"] == "shop.Item"  # defined once, then referred to by name
    assert s.canonical == (
        '{"name":"shop.Order","type":"record","fields":[{"name":"id","type":"long"},'
        '{"name":"items","type":{"type":"array","items":{"name":"shop.Item","type":"record",'
        '"fields":[{"name":"price","type":"double"}]}}},{"name":"gift","type":"shop.Item"},'
        '{"name":"note","type":["null","string"]}]}'
    )


def test_fingerprint_is_sha256_of_the_canonical_form():
    s = from_avro(ORDER)
    assert s.fingerprint == hashlib.sha256(s.canonical.encode()).hexdigest()
    assert s.fingerprint == fastavro_fingerprint(s.canonical, "SHA-256")


@pytest.mark.parametrize("schema,canonical", [
    # The transformations of the Avro 1.11 specification, "Parsing Canonical Form for Schemas".
    ({"type": "int"}, '"int"'),                                                   # [PRIMITIVES]
    ({"type": "fixed", "name": "F", "namespace": "a.b", "size": 2},
     '{"name":"a.b.F","type":"fixed","size":2}'),                                 # [FULLNAMES], [ORDER]
    ({"type": "enum", "name": "E", "doc": "x", "aliases": ["Z"], "symbols": ["A"], "default": "A"},
     '{"name":"E","type":"enum","symbols":["A"]}'),                               # [STRIP]
    ({"type": "long", "logicalType": "timestamp-millis"}, '"long"'),              # [STRIP] logical types
    ('  [ "null" ,\n "int" ]  ', '["null","int"]'),                               # [WHITESPACE]
])
def test_canonical_form_follows_the_specification(schema, canonical):
    assert parse("avro", schema).canonical == canonical


def test_docs_aliases_defaults_and_whitespace_keep_the_fingerprint():
    plain = json.loads(json.dumps(ORDER))
    for f in plain["fields"]:
        f.pop("doc", None)
    plain.pop("doc")
    assert from_avro(json.dumps(ORDER, indent=4)).fingerprint == from_avro(plain).fingerprint


def test_a_type_change_changes_the_fingerprint():
    changed = json.loads(json.dumps(ORDER))
    changed["fields"][0]["type"] = "int"
    assert from_avro(changed).fingerprint != from_avro(ORDER).fingerprint


def test_a_primitive_name_is_a_schema():
    assert from_avro("long").canonical == '"long"'
    assert from_avro('"long"').canonical == '"long"'


def test_schema_is_a_codec_record_and_checks_its_fingerprint_on_decode():
    s = from_avro(ORDER)
    back = decode(encode(s))
    assert back == s and back.avro == s.avro
    with pytest.raises(MalformedSchemaError, match="fingerprint"):
        Schema("avro", s.source, s.canonical, "0" * 64)
    with pytest.raises(MalformedSchemaError, match="kind"):
        Schema("protobuf", s.source, s.canonical, s.fingerprint)


def test_avro_is_a_copy():
    s = from_avro(ORDER)
    s.avro["fields"].clear()
    assert s.field_names() == ("id", "items", "gift", "note")


def test_to_json_parses_back_to_the_same_schema():
    s = from_avro(ORDER)
    assert from_avro(s.to_json()).fingerprint == s.fingerprint


# --- malformed schemas: one test per defect --------------------------------------------------------------


def malformed(schema, match):
    with pytest.raises(MalformedSchemaError, match=match):
        parse("avro", schema)


def test_bad_json():
    malformed('{"type": "record", ', "not valid JSON")


def test_bad_utf8():
    malformed(b'"\xff"', "UTF-8")


def test_unknown_type():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Money"}]}, "Money")


def test_unknown_type_keyword():
    malformed({"type": "tuple"}, "tuple")


def test_duplicate_field():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "long"}]},
              "duplicate field 'a'")


def test_default_not_matching_its_type():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "one"}]},
              "(?i)default")


def test_boolean_default_for_an_int():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": True}]},
              "R.a: default True")


def test_int_default_out_of_range():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": 1 << 31}]},
              "R.a: default")


def test_nested_record_default_checked_deeply():
    inner = {"type": "record", "name": "S", "fields": [{"name": "b", "type": "int"}]}
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": inner, "default": {"b": "x"}}]},
              "field 'b'")
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": inner, "default": {}}]},
              "field 'b' is missing")


def test_union_default_must_match_the_first_branch():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": ["int", "null"], "default": None}]},
              "first branch")
    parse("avro", {"type": "record", "name": "R", "fields": [{"name": "a", "type": ["null", "int"], "default": None}]})


def test_fixed_default_of_the_wrong_size():
    fx = {"type": "fixed", "name": "F", "size": 2}
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": fx, "default": "abc"}]}, "2 bytes")


def test_enum_default_not_a_symbol():
    malformed({"type": "enum", "name": "E", "symbols": ["A"], "default": "B"}, "symbols")


def test_duplicate_enum_symbol():
    malformed({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "unique")


def test_invalid_names():
    malformed({"type": "record", "name": "1R", "fields": []}, "invalid name")
    malformed({"type": "record", "name": "R", "fields": [{"name": "a-b", "type": "int"}]}, "invalid field name")
    malformed({"type": "enum", "name": "E", "symbols": ["a b"]}, "symbol")


def test_enum_symbols_not_a_list():
    malformed({"type": "enum", "name": "E", "symbols": "AB"}, "symbols are a list")


def test_invalid_field_order():
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "order": "up"}]},
              "R.a: a field's order")


def test_union_inside_a_union():
    malformed(["int", ["null", "string"]], "union may not hold a union")


def test_union_with_two_branches_of_one_type():
    malformed(["int", "null", "int"], "two branches of type int")
    malformed([{"type": "array", "items": "int"}, {"type": "array", "items": "long"}], "two branches of type array")
    parse("avro", [{"type": "fixed", "name": "A", "size": 1}, {"type": "fixed", "name": "B", "size": 1}])


def test_negative_fixed_size():
    malformed({"type": "fixed", "name": "F", "size": -1}, "size")


def test_redefined_name():
    r = {"type": "record", "name": "R", "fields": []}
    malformed({"type": "record", "name": "R", "fields": [{"name": "a", "type": r}]}, "redefined")


def test_not_json_at_all():
    with pytest.raises(MalformedSchemaError):
        parse("avro", 42)
    with pytest.raises(MalformedSchemaError):
        parse("avro", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": {1, 2}}]})


def test_unknown_kind():
    with pytest.raises(MalformedSchemaError, match="kind"):
        parse("protobuf", "{}")


# --- bounds ------------------------------------------------------------------------------------------------


def test_text_larger_than_the_bound_is_refused_before_parsing():
    text = '{"type": "record", "name": "R", "doc": "' + "x" * SCHEMA_BYTES_MAX + '", "fields": []}'
    malformed(text, "SCHEMA_BYTES_MAX")


def test_deep_brackets_are_refused_before_parsing():
    malformed("[" * (JSON_DEPTH_MAX + 1) + "]" * (JSON_DEPTH_MAX + 1), "JSON_DEPTH_MAX")
    malformed({"type": "record", "name": "R", "fields": [], "x": _nested_list(JSON_DEPTH_MAX + 5)}, "JSON_DEPTH_MAX")


def test_brackets_inside_strings_do_not_count():
    parse("avro", {"type": "record", "name": "R", "doc": "[" * (JSON_DEPTH_MAX * 2), "fields": []})


def test_types_nested_deeper_than_the_bound_are_refused():
    t: object = "int"
    for _ in range(SCHEMA_DEPTH_MAX + 1):
        t = {"type": "array", "items": t}
    malformed(t, "SCHEMA_DEPTH_MAX")
    t = "int"
    for _ in range(SCHEMA_DEPTH_MAX - 1):
        t = {"type": "array", "items": t}
    parse("avro", t)


def test_an_unterminated_string_of_escaped_quotes_is_refused_in_linear_time():
    # Each escaped quote could restart a string scan that runs to the end of the text: quadratic, were
    # the scan to retry from every quote (minutes for this text).
    malformed('"' + '\\"' * 400_000, "not valid JSON")


def test_huge_int_literal_is_refused():
    malformed('{"type": "fixed", "name": "F", "size": ' + "9" * 5000 + "}", "not valid JSON")


def _nested_list(depth):
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


# --- codec records ---------------------------------------------------------------------------------------


@record("shoptest.item")
class Item:
    """A line of an order."""

    sku: str
    price: float = 0.0


@record("shoptest.order", version=3)
class Order:
    id: int
    items: tuple[Item, ...] = ()
    note: str | None = None
    tags: dict[str, int] = None  # type: ignore[assignment]
    blob: bytes = b"\x00\xff"
    best: Item | None = None
    code: int | str = "x"
    flags: list[bool] = None  # type: ignore[assignment]
    done: bool = False


@record("shoptest.bad_any")
class WithAny:
    x: object


@record("shoptest.bad_keys")
class WithIntKeys:
    x: dict[int, str]


@record("shoptest.bad_tuple")
class WithMixedTuple:
    x: tuple[int, str]


def test_a_record_class_maps_to_an_avro_record():
    s = from_record(Order)
    avro = s.avro
    assert s.kind == "record" and s.name == "shoptest.order"
    assert avro["ddia.tag"] == "shoptest.order" and avro["ddia.version"] == 3
    types = {f["name"]: f["type"] for f in avro["fields"]}
    assert types["id"] == "long"
    assert types["items"]["type"] == "array" and types["items"]["items"]["name"] == "shoptest.item"
    assert types["note"] == ["null", "string"]
    assert types["tags"] == ["null", {"type": "map", "values": "long"}]  # default None: null first
    assert types["blob"] == "bytes"
    assert types["best"] == ["null", "shoptest.item"]  # the second use refers to it by name
    assert types["code"] == ["string", "long"]  # the default's branch first
    assert types["flags"] == ["null", {"type": "array", "items": "boolean"}]
    defaults = {f["name"]: f.get("default", "<none>") for f in avro["fields"]}
    assert defaults["id"] == "<none>" and defaults["items"] == [] and defaults["blob"] == "\x00\xff"
    assert defaults["code"] == "x" and defaults["done"] is False


def test_tags_none_is_allowed_by_the_annotation_mapping():
    # ``dict[str, int] = None`` is an annotation lie; the mapping makes it a nullable union rather than
    # refuse a pattern the project's own records use.
    assert from_record(Order).avro["fields"][3]["default"] is None


def test_record_classes_with_no_avro_equivalent_are_refused():
    with pytest.raises(SchemaMappingError, match="WithAny.x"):
        from_record(WithAny)
    with pytest.raises(SchemaMappingError, match="map keys"):
        from_record(WithIntKeys)
    with pytest.raises(SchemaMappingError, match="mixes item types"):
        from_record(WithMixedTuple)
    with pytest.raises(SchemaMappingError, match="not a @record"):
        from_record(int)


def test_record_data_written_by_fastavro_reads_back_as_the_record():
    s = from_record(Order)
    order = Order(7, (Item("a", 1.5),), "hi", {"k": 1}, b"\x01", Item("b"), 3, [True], True)
    datum = {"id": 7, "items": [{"sku": "a", "price": 1.5}], "note": "hi", "tags": {"k": 1}, "blob": b"\x01",
             "best": {"sku": "b", "price": 0.0}, "code": 3, "flags": [True], "done": True}
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(s.avro), datum)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, fastavro.parse_schema(s.avro), None)
    rebuilt = Order(**{**back, "items": tuple(Item(**i) for i in back["items"]), "best": Item(**back["best"])})
    assert rebuilt == order


def test_record_schema_evolution_is_checked_like_any_avro():
    @record("shoptest.user", version=1)
    class UserV1:
        name: str

    v1 = from_record(UserV1)

    @record("shoptest.user", version=2)
    class UserV1:  # noqa: F811 - the same class name evolving, as in a later release
        name: str
        email: str = ""

    v2 = from_record(UserV1)
    assert can_read(v2, v1) == [] and can_read(v1, v2) == []
    assert v1.fingerprint != v2.fingerprint


def test_parse_record_kind_from_its_text():
    s = from_record(Item)
    again = parse("record", s.source)
    assert again == s and parse("record", Item) == s


# --- Arrow ---------------------------------------------------------------------------------------------------

ARROW = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("small", pa.int8()), pa.field("u32", pa.uint32()), pa.field("half", pa.float16()),
    pa.field("f", pa.float32()), pa.field("d", pa.float64()), pa.field("s", pa.string()),
    pa.field("ls", pa.large_string()), pa.field("b", pa.binary()), pa.field("fx", pa.binary(16)),
    pa.field("dec", pa.decimal128(10, 2)), pa.field("day", pa.date32()), pa.field("t", pa.time64("us")),
    pa.field("ts", pa.timestamp("ms", tz="UTC")), pa.field("local", pa.timestamp("us")),
    pa.field("paris", pa.timestamp("ns", tz="Europe/Paris")),
    pa.field("l", pa.list_(pa.int32())), pa.field("ll", pa.large_list(pa.field("item", pa.string(), nullable=False))),
    pa.field("m", pa.map_(pa.string(), pa.int64())),
    pa.field("st", pa.struct([pa.field("x", pa.int32(), nullable=False),
                              pa.field("y", pa.struct([("z", pa.bool_())]))])),
])


def test_arrow_schema_round_trips_through_avro():
    s = from_arrow(ARROW)
    assert s.kind == "arrow" and s.to_arrow().equals(ARROW)
    assert parse("arrow", s.source).to_arrow().equals(ARROW)


def test_arrow_nullability_is_a_union_with_null_default():
    fields = {f["name"]: f for f in from_arrow(ARROW).avro["fields"]}
    assert fields["id"]["type"] == "long" and "default" not in fields["id"]
    assert fields["s"]["type"] == ["null", "string"] and fields["s"]["default"] is None
    assert fields["dec"]["type"][1] == {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
    assert fields["st"]["type"][1]["name"] == "Row_st"


def test_adding_a_nullable_column_is_backward_and_forward_compatible():
    v1 = from_arrow(pa.schema([pa.field("id", pa.int64(), nullable=False)]))
    v2 = from_arrow(pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("note", pa.string())]))
    v3 = from_arrow(pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("n", pa.int32(), nullable=False)]))
    assert can_read(v2, v1) == [] and can_read(v1, v2) == []
    assert [i.path for i in can_read(v3, v1)] == ["Row.n"]


def test_a_record_schema_maps_to_arrow():
    arrow = from_record(Item).to_arrow()
    assert arrow.equals(pa.schema([pa.field("sku", pa.string(), nullable=False),
                                   pa.field("price", pa.float64(), nullable=False)]))


def test_avro_without_an_arrow_equivalent_is_refused():
    with pytest.raises(SchemaMappingError, match="union"):
        from_avro({"type": "record", "name": "R", "fields": [{"name": "a", "type": ["int", "string"]}]}).to_arrow()
    with pytest.raises(SchemaMappingError, match="record"):
        from_avro("int").to_arrow()
    with pytest.raises(SchemaMappingError, match="itself"):
        from_avro({"type": "record", "name": "N", "fields": [{"name": "n", "type": ["null", "N"]}]}).to_arrow()
    with pytest.raises(SchemaMappingError, match="keys"):
        from_arrow(pa.schema([pa.field("m", pa.map_(pa.int32(), pa.int32()))]))


_arrow_scalars = st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
                                  pa.uint32(), pa.float32(), pa.float64(), pa.string(), pa.binary(), pa.bool_(),
                                  pa.date32(), pa.timestamp("us", tz="UTC"), pa.decimal128(5, 1), pa.binary(4)])
_arrow_types = st.recursive(
    _arrow_scalars,
    lambda inner: st.builds(pa.list_, inner)
    | st.builds(lambda t: pa.map_(pa.string(), t), inner)
    | st.lists(st.tuples(st.sampled_from("abc"), inner, st.booleans()), min_size=1, max_size=3,
               unique_by=lambda f: f[0]).map(lambda fs: pa.struct([pa.field(n, t, nullable=b) for n, t, b in fs])),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pqrstu"), _arrow_types, st.booleans()), max_size=5,
                unique_by=lambda f: f[0]))
def test_any_arrow_schema_round_trips(columns):
    schema = pa.schema([pa.field(n, t, nullable=b) for n, t, b in columns])
    assert from_arrow(schema).to_arrow().equals(schema)


# --- robustness: whatever the input, a schema or MalformedSchemaError -------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["int", "record", "enum", "fixed", "array", "map", "name", "fields", "type", "null", "R", "a"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "name", "fields", "items", "values", "symbols", "size", "default",
                                       "aliases", "namespace", "doc", "order", "logicalType"]), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_parses_or_is_refused_as_malformed(value):
    try:
        s = parse("avro", value)
    except MalformedSchemaError:
        return
    assert from_avro(s.to_json()).fingerprint == s.fingerprint  # what parses is a schema fastavro agrees on


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_edits_of_a_valid_schema_parse_or_are_refused_as_malformed(data):
    text = json.dumps(ORDER)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + data.draw(st.sampled_from(['"', "{", "}", "[", "]", ",", ":", "1", "", '"int"', "null"])) \
            + text[j:]
    try:
        parse("avro", text)
    except MalformedSchemaError:
        pass


def test_to_json_ignores_attribute_order_and_keeps_defaults():
    a = from_avro('{"type": "record", "name": "R", "doc": "d", "fields": [{"name": "x", "type": "int", "default": 1}]}')
    b = from_avro('{"fields": [{"default": 1, "type": "int", "name": "x"}], "doc": "d", "name": "R", "type": "record"}')
    c = from_avro('{"type": "record", "name": "R", "doc": "d", "fields": [{"name": "x", "type": "int", "default": 2}]}')
    assert a.to_json() == b.to_json() and a.to_json() != c.to_json()
    assert a.fingerprint == c.fingerprint  # defaults are not in the canonical form


def test_a_record_schema_ignores_the_docstring_and_orders_set_defaults():
    @record("shoptest.tagged", version=1)
    class Tagged:
        """First wording."""

        tags: frozenset[str] = frozenset({"b", "a", "c"})

    first = from_record(Tagged)

    @record("shoptest.tagged", version=1)
    class Tagged:  # noqa: F811 - the same class, its docstring reworded
        """Second wording."""

        tags: frozenset[str] = frozenset({"c", "b", "a"})

    second = from_record(Tagged)
    assert first.to_json() == second.to_json()
    assert first.avro["fields"][0]["default"] == ["a", "b", "c"]


# --- property: data of a record class fits the schema derived from it ----------------------------------------

_SCALAR_VALUES = {bool: st.booleans(), int: st.integers(-(2**63), 2**63 - 1),
                  float: st.floats(allow_nan=False, allow_infinity=False), str: st.text(max_size=5),
                  bytes: st.binary(max_size=5)}


def _annotations(depth=0):
    scalars = st.sampled_from(list(_SCALAR_VALUES))
    if depth >= 2:
        return scalars
    inner = st.deferred(lambda: _annotations(depth + 1))
    return st.one_of(scalars, inner.map(lambda t: t | None), inner.map(lambda t: tuple[t, ...]),
                     inner.map(lambda t: dict[str, t]))


def _values(hint):
    import typing

    if hint in _SCALAR_VALUES:
        return _SCALAR_VALUES[hint]
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return st.lists(_values(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=3), _values(args[1]), max_size=3)
    return st.none() | _values(next(a for a in args if a is not type(None)))


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_tags = iter(range(10**9))


@settings(max_examples=40, deadline=None)
@given(st.lists(_annotations(), min_size=1, max_size=4).flatmap(
    lambda hints: st.tuples(st.just(hints), st.tuples(*[_values(h) for h in hints]))))
def test_record_data_round_trips_through_its_derived_schema(case):
    import io

    hints, values = case
    names = [f"f{i}" for i in range(len(hints))]
    body = {"__annotations__": dict(zip(names, hints))}
    cls = record(f"shoptest.generated{next(_tags)}")(type("Generated", (), body))
    schema = fastavro.parse_schema(from_record(cls).avro)
    datum = {n: _plain(v) for n, v in zip(names, values)}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, schema, None)
    assert back == datum
    assert cls(**{n: v for n, v in zip(names, values)}) is not None  # the values are valid for the class too
