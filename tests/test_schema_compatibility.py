"""Avro schema resolution and the compatibility modes: one named test per rule of the Avro 1.11
specification ("Schema Resolution"), then property tests with fastavro's reader as the oracle.

The oracle: ``can_read(reader, writer) == []`` exactly when fastavro reads, with ``reader``, every
datum of a *covering* set written with ``writer``: data that takes every union branch, every enum
symbol, and every record, array and map reachable from the root. Resolution failures are local (a
field, a branch, a symbol), so a reader that fails on some datum fails on one of these. Pairs where
some record has no finite datum (one that must contain itself) are skipped: there, no datum can
show what the checker sees.
"""

from __future__ import annotations

import io
import itertools

import fastavro
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, IncompatibleSchemaError, MalformedSchemaError
from ddia_ray.schema import MODES, Incompatibility, can_read, check, from_avro, require_compatible
from ddia_ray.schema.schemas import PRIMITIVES, parsed


def rec(name, *fields, **extra):
    """A record schema; fields as (name, type) or (name, type, {"default": ...})."""
    out = []
    for f in fields:
        field = {"name": f[0], "type": f[1]}
        if len(f) > 2:
            field.update(f[2])
        out.append(field)
    return {"type": "record", "name": name, "fields": out, **extra}


def kinds(found):
    return [(i.path, i.kind) for i in found]


# --- primitives and promotions -------------------------------------------------------------------------

PROMOTABLE = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
              ("float", "double"), ("string", "bytes"), ("bytes", "string")}


@pytest.mark.parametrize("writer,reader", [(w, r) for w in sorted(PRIMITIVES) for r in sorted(PRIMITIVES)])
def test_primitive_resolution_is_identity_or_a_promotion(writer, reader):
    found = can_read(from_avro(reader), from_avro(writer))
    expected_ok = writer == reader or (writer, reader) in PROMOTABLE
    assert (found == []) == expected_ok, found
    if not expected_ok:
        assert kinds(found) == [("$", "TYPE_MISMATCH")]
        assert writer in found[0].reason and reader in found[0].reason


def test_promotions_never_go_backwards():
    assert kinds(can_read(from_avro("int"), from_avro("long"))) == [("$", "TYPE_MISMATCH")]
    assert kinds(can_read(from_avro("float"), from_avro("double"))) == [("$", "TYPE_MISMATCH")]


# --- records -----------------------------------------------------------------------------------------


def test_a_field_type_change_is_named_by_its_path():
    item = lambda t: rec("Item", ("price", t))  # noqa: E731
    order = lambda t: from_avro(rec("order", ("items", {"type": "array", "items": item(t)})))  # noqa: E731
    found = can_read(order("string"), order("double"))
    assert kinds(found) == [("order.items[].price", "TYPE_MISMATCH")]
    assert "double" in found[0].reason and "string" in found[0].reason
    assert can_read(order("double"), order("int")) == []


def test_a_reader_field_missing_in_the_writer_needs_a_default():
    v1 = from_avro(rec("User", ("name", "string")))
    without = from_avro(rec("User", ("name", "string"), ("email", "string")))
    with_default = from_avro(rec("User", ("name", "string"), ("email", "string", {"default": ""})))
    found = can_read(without, v1)
    assert kinds(found) == [("User.email", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    assert "email" in found[0].reason and "default" in found[0].reason
    assert can_read(with_default, v1) == []


def test_a_writer_field_the_reader_lacks_is_skipped():
    v1 = from_avro(rec("User", ("name", "string"), ("age", "int")))
    v2 = from_avro(rec("User", ("name", "string")))
    assert can_read(v2, v1) == []


def test_fields_match_by_the_readers_aliases():
    old = from_avro(rec("User", ("mail", "string")))
    renamed = from_avro(rec("User", ("email", "string", {"aliases": ["mail"]})))
    renamed_no_alias = from_avro(rec("User", ("email", "string")))
    assert can_read(renamed, old) == []
    assert kinds(can_read(renamed_no_alias, old)) == [("User.email", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    # Aliases are the reader's: a writer's alias does not help an old reader.
    assert kinds(can_read(old, renamed)) == [("User.mail", "READER_FIELD_MISSING_DEFAULT_VALUE")]


def test_a_writer_field_taken_by_name_is_not_reused_by_an_alias():
    writer = from_avro(rec("R", ("a", "int")))
    reader = from_avro(rec("R", ("a", "int"), ("b", "int", {"aliases": ["a"]})))
    assert kinds(can_read(reader, writer)) == [("R.b", "READER_FIELD_MISSING_DEFAULT_VALUE")]


def test_records_match_by_unqualified_name_or_reader_alias():
    w = from_avro(rec("Order", ("id", "long"), namespace="shop.v1"))
    same_short = from_avro(rec("Order", ("id", "long"), namespace="shop.v2"))
    other = from_avro(rec("Purchase", ("id", "long")))
    aliased = from_avro(rec("Purchase", ("id", "long"), aliases=["shop.v1.Order"]))
    assert can_read(same_short, w) == []
    assert kinds(can_read(other, w)) == [("Purchase", "NAME_MISMATCH")]
    assert can_read(aliased, w) == []


def test_recursive_records_terminate():
    node = lambda extra: from_avro(rec("Node", ("v", "int"), ("next", ["null", "Node"]), *extra))  # noqa: E731
    assert can_read(node([]), node([])) == []
    found = can_read(node([("w", "int")]), node([]))
    assert kinds(found) == [("Node.w", "READER_FIELD_MISSING_DEFAULT_VALUE")]


def test_a_named_type_used_twice_is_reported_at_each_place():
    item = rec("Item", ("p", "int"))
    w = from_avro(rec("R", ("a", item), ("b", "Item")))
    r = from_avro(rec("R", ("a", rec("Item", ("p", "string"))), ("b", "Item")))
    assert kinds(can_read(r, w)) == [("R.a.p", "TYPE_MISMATCH"), ("R.b.p", "TYPE_MISMATCH")]


# --- enums, fixed, arrays, maps ------------------------------------------------------------------------


def test_enum_symbols_missing_in_the_reader_need_its_default():
    w = from_avro({"type": "enum", "name": "Suit", "symbols": ["HEART", "SPADE", "CLUB"]})
    r = from_avro({"type": "enum", "name": "Suit", "symbols": ["HEART", "SPADE"]})
    r_default = from_avro({"type": "enum", "name": "Suit", "symbols": ["HEART", "SPADE"], "default": "HEART"})
    found = can_read(r, w)
    assert kinds(found) == [("Suit", "MISSING_ENUM_SYMBOLS")] and "CLUB" in found[0].reason
    assert can_read(r_default, w) == []
    assert can_read(w, r) == []  # more symbols in the reader is fine


def test_enums_match_by_name():
    w = from_avro({"type": "enum", "name": "Suit", "symbols": ["A"]})
    r = from_avro({"type": "enum", "name": "Colour", "symbols": ["A"]})
    assert kinds(can_read(r, w)) == [("Colour", "NAME_MISMATCH")]


def test_fixed_needs_the_same_name_and_size():
    f = lambda name, size: from_avro({"type": "fixed", "name": name, "size": size})  # noqa: E731
    assert can_read(f("Md5", 16), f("Md5", 16)) == []
    assert kinds(can_read(f("Md5", 16), f("Md5", 20))) == [("Md5", "FIXED_SIZE_MISMATCH")]
    assert kinds(can_read(f("Sha", 16), f("Md5", 16))) == [("Sha", "NAME_MISMATCH")]


def test_array_items_and_map_values_resolve_recursively():
    arr = lambda t: from_avro({"type": "array", "items": t})  # noqa: E731
    mp = lambda t: from_avro({"type": "map", "values": t})  # noqa: E731
    assert can_read(arr("long"), arr("int")) == []
    assert kinds(can_read(arr("int"), arr("long"))) == [("$[]", "TYPE_MISMATCH")]
    assert kinds(can_read(mp("int"), mp("string"))) == [("${}", "TYPE_MISMATCH")]
    assert kinds(can_read(arr("int"), mp("int"))) == [("$", "TYPE_MISMATCH")]


# --- unions --------------------------------------------------------------------------------------------


def test_every_writer_branch_must_resolve_in_the_readers_union():
    w = from_avro(["null", "int", "string"])
    found = can_read(from_avro(["null", "long"]), w)
    assert kinds(found) == [("$", "MISSING_UNION_BRANCH")] and "string" in found[0].reason
    assert can_read(from_avro(["string", "long", "null"]), w) == []


def test_a_writer_union_against_a_reader_non_union():
    assert can_read(from_avro("long"), from_avro(["int", "long"])) == []
    found = can_read(from_avro("long"), from_avro(["null", "long"]))
    assert kinds(found) == [("$", "TYPE_MISMATCH")] and "null" in found[0].reason


def test_a_non_union_writer_against_a_reader_union():
    assert can_read(from_avro(["null", "double"]), from_avro("int")) == []
    assert kinds(can_read(from_avro(["null", "string"]), from_avro("int"))) == [("$", "MISSING_UNION_BRANCH")]


def test_the_first_matching_reader_branch_is_taken_and_not_searched_past():
    # A reader takes the first branch that matches by name, then resolves it; it does not try the next.
    w = from_avro(rec("Wrap", ("v", rec("A", ("x", "int")))))
    r = from_avro(rec("Wrap", ("v", [rec("A", ("x", "string")), rec("B", ("x", "int"), aliases=["A"])])))
    assert kinds(can_read(r, w)) == [("Wrap.v.x", "TYPE_MISMATCH")]
    assert_oracle_agrees(r, w)


# --- modes -----------------------------------------------------------------------------------------------

V1 = from_avro(rec("User", ("name", "string")))
V2 = from_avro(rec("User", ("name", "string"), ("email", "string", {"default": ""})))  # adds with default
V3 = from_avro(rec("User", ("email", "string", {"default": ""})))  # drops name (no default there)
V4 = from_avro(rec("User", ("name", "string"), ("email", "string", {"default": ""}), ("age", "int")))


def test_modes_are_confluents_seven():
    assert set(MODES) == {"BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                          "FULL_TRANSITIVE", "NONE"}


def test_backward_refuses_a_new_field_without_default():
    assert check("BACKWARD", V2, [V1]) == []
    found = check("BACKWARD", V4, [V1, V2])
    assert kinds(found) == [("User.age", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    assert "version 2" in found[0].reason


def test_forward_refuses_removing_a_field_without_default():
    # The latest reader (V2) reading V3 data lacks "name", which V2 declares without a default.
    found = check("FORWARD", V3, [V1, V2])
    assert kinds(found) == [("User.name", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    assert "version 2 reading data of the new schema" in found[0].reason
    assert check("BACKWARD", V3, [V1, V2]) == []


def test_full_needs_both_directions():
    assert check("FULL", V2, [V1]) == []
    assert kinds(check("FULL", V3, [V2])) == [("User.name", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    assert kinds(check("FULL", V4, [V2])) == [("User.age", "READER_FIELD_MISSING_DEFAULT_VALUE")]


def test_transitive_modes_check_every_earlier_version():
    a = from_avro(rec("R", ("x", "int")))
    b = from_avro(rec("R", ("x", "int"), ("y", "int", {"default": 0})))
    c = from_avro(rec("R", ("y", "int", {"default": 0})))
    # c reads b's data and a's data (x skipped, y defaulted): backward both ways.
    assert check("BACKWARD_TRANSITIVE", c, [a, b]) == []
    # a reads nothing of c (x has no default): FORWARD against b passes (b has y, x... no: b needs x).
    assert kinds(check("FORWARD", c, [a, b])) == [("R.x", "READER_FIELD_MISSING_DEFAULT_VALUE")]
    d = from_avro(rec("R", ("x", "long"), ("y", "int", {"default": 0})))
    e = from_avro(rec("R", ("x", "int"), ("y", "int", {"default": 0})))
    assert check("BACKWARD", e, [a, d, b]) == []  # e reads b
    found = check("BACKWARD_TRANSITIVE", e, [a, d, b])
    assert kinds(found) == [("R.x", "TYPE_MISMATCH")] and "version 2" in found[0].reason


def test_none_checks_nothing_and_no_history_is_compatible():
    assert check("NONE", from_avro("int"), [from_avro("string")]) == []
    for mode in MODES:
        assert check(mode, V1, []) == []


def test_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="BACKWARDS"):
        check("BACKWARDS", V1, [V2])


def test_require_compatible_names_each_field_and_why():
    with pytest.raises(IncompatibleSchemaError) as err:
        require_compatible("FULL", V4, [V2])
    assert "User.age" in str(err.value) and "default" in str(err.value)
    assert [i.path for i in err.value.incompatibilities] == ["User.age"]
    require_compatible("BACKWARD", V2, [V1])


def test_incompatibility_is_a_codec_record():
    found = can_read(V4, V1)
    assert decode(encode(found[0])) == found[0]
    assert isinstance(found[0], Incompatibility) and str(found[0]).startswith("User.age: ")


# --- the oracle ------------------------------------------------------------------------------------------

_SAMPLE = {"null": None, "boolean": True, "int": 7, "long": 1 << 40, "float": 1.5, "double": 2.5,
           "bytes": b"ab", "string": "ab"}


def covering_data(schema) -> list:
    """Data of ``schema`` that takes every union branch and enum symbol (see the module docstring).
    A recursive record is entered twice at most, so its recursive branch is taken once."""
    p = parsed(schema)
    return _variants(p.avro, p.names, ())


def _variants(node, names, stack) -> list:
    """[] when the type has no finite datum within the recursion allowance."""
    if isinstance(node, str):
        node = names.get(node, node)
    if isinstance(node, str):
        return [_SAMPLE[node]]
    if isinstance(node, list):  # tuple notation picks the branch: (its type or full name, value)
        out = []
        for branch in node:
            b = names.get(branch, branch) if isinstance(branch, str) else branch
            label = b if isinstance(b, str) else b.get("name", b["type"])
            out += [(label, v) for v in _variants(b, names, stack)]
        return out
    kind = node["type"]
    if kind in PRIMITIVES:
        return [_SAMPLE[kind]]
    if kind == "enum":
        return list(node["symbols"])
    if kind == "fixed":
        return [b"x" * node["size"]]
    if kind == "array":
        items = _variants(node["items"], names, stack)
        return [[], items] if items else [[]]
    if kind == "map":
        values = _variants(node["values"], names, stack)
        return [{}, {f"k{i}": v for i, v in enumerate(values)}] if values else [{}]
    if stack.count(node["name"]) >= 2:
        return []
    stack = (*stack, node["name"])
    per_field = [(f["name"], _variants(f["type"], names, stack)) for f in node["fields"]]
    if any(not vs for _, vs in per_field):
        return []
    n = max([len(vs) for _, vs in per_field], default=1)
    return [{name: vs[j % len(vs)] for name, vs in per_field} for j in range(n)]


def fastavro_reads_all(reader, writer) -> bool:
    w = fastavro.parse_schema(parsed(writer).avro)
    r = fastavro.parse_schema(parsed(reader).avro)
    for datum in covering_data(writer):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, datum)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception:  # noqa: BLE001 - any failure to read is the oracle's "incompatible"
            return False
    return True


def assert_oracle_agrees(reader, writer):
    found = can_read(reader, writer)
    assert (found == []) == fastavro_reads_all(reader, writer), (found, reader.source, writer.source)


# Random schemas. Field names a-d in writers; readers add fields z0.., rename to n_<old>: names never collide,
# so the one place where fastavro's alias lookup is order-dependent is never reached.
_PRIMS = sorted(PRIMITIVES)


class _Gen:
    def __init__(self, draw):
        self.draw = draw
        self.count = itertools.count()
        self.defined: list[str] = []

    def fresh(self, prefix):
        return f"{prefix}{next(self.count)}"

    def named(self, prefix):
        """A fresh full name, sometimes in a namespace (named types match by unqualified name)."""
        return self.draw(st.sampled_from(["", "ns1.", "ns2."])) + self.fresh(prefix)

    def type(self, depth, allow_union=True):
        if depth == 0 and self.draw(st.integers(0, 9)) < 8:  # mostly records at the root, as in a registry
            return self.record(depth)
        choices = ["prim"] * 4 + (["record", "enum", "fixed", "array", "map"] if depth < 3 else [])
        choices += ["union"] * 2 if allow_union and depth < 3 else []
        choices += ["ref"] if self.defined else []
        kind = self.draw(st.sampled_from(choices))
        if kind == "prim":
            return self.draw(st.sampled_from(_PRIMS))
        if kind == "ref":
            return self.draw(st.sampled_from(self.defined))
        if kind == "record":
            return self.record(depth)
        if kind == "enum":
            name = self.named("E")
            symbols = self.draw(st.lists(st.sampled_from("ABCD"), unique=True, min_size=1, max_size=4))
            self.defined.append(name)
            return {"type": "enum", "name": name, "symbols": symbols}
        if kind == "fixed":
            name = self.named("F")
            self.defined.append(name)
            return {"type": "fixed", "name": name, "size": self.draw(st.integers(0, 3))}
        if kind == "array":
            return {"type": "array", "items": self.type(depth + 1)}
        if kind == "map":
            return {"type": "map", "values": self.type(depth + 1)}
        branches = [self.type(depth + 1, allow_union=False) for _ in range(self.draw(st.integers(1, 3)))]
        return branches

    def record(self, depth):
        name = self.named("R")
        names = self.draw(st.lists(st.sampled_from("abcd"), unique=True, min_size=int(depth == 0), max_size=4))
        fields = []
        for n in names:
            t = self.type(depth + 1)
            field = {"name": n, "type": t}
            if self.draw(st.booleans()):
                d = self.default(t)
                if d is not _NONE:
                    field["default"] = d
            fields.append(field)
        self.defined.append(name)
        return {"type": "record", "name": name, "fields": fields}

    def default(self, t):
        if isinstance(t, list):
            return self.default(t[0])
        if isinstance(t, str):
            return {"null": None, "boolean": False, "int": 1, "long": 2, "float": 0.5, "double": 0.25,
                    "bytes": "b", "string": "s"}.get(t, _NONE)  # a reference: no default (kept simple)
        kind = t["type"]
        if kind == "enum":
            return t["symbols"][0]
        if kind == "fixed":
            return "x" * t["size"]
        if kind in ("array", "map"):
            return [] if kind == "array" else {}
        values = {}
        for f in t["fields"]:
            d = self.default(f["type"])
            if d is _NONE:
                return _NONE
            values[f["name"]] = d
        return values


_NONE = object()


class _Mutator:
    """A reader derived from a writer by random edits, each of a kind the resolution rules care about."""

    def __init__(self, draw, gen):
        self.draw = draw
        self.gen = gen
        self.p = st.integers(0, 99)

    def chance(self, percent):
        return self.draw(self.p) < percent

    def type(self, t):
        if isinstance(t, list):
            branches = [self.type(b) for b in t]
            if len(branches) > 1 and self.chance(15):
                branches.pop(self.draw(st.integers(0, len(branches) - 1)))
            if self.chance(15):
                branches.insert(self.draw(st.integers(0, len(branches))), self.draw(st.sampled_from(_PRIMS)))
            if self.chance(10):
                return branches[0]
            return branches
        if isinstance(t, str):
            if t in PRIMITIVES and self.chance(25):
                near = sorted({b for a, b in PROMOTABLE if a == t} | {a for a, b in PROMOTABLE if b == t})
                if near and self.chance(50):  # a promotion, or one backwards
                    return self.draw(st.sampled_from(near))
                return self.draw(st.sampled_from(_PRIMS))
            if self.chance(8):
                return ["null", t] if t != "null" else ["null", "int"]
            return t
        t = dict(t)
        kind = t["type"]
        if kind in ("record", "enum", "fixed") and self.chance(15):
            old = t["name"]
            namespace, _, short = old.rpartition(".")
            if self.chance(30):  # another namespace, the same unqualified name: still the same type
                t["name"] = ("ns3." if namespace != "ns3" else "") + short
            else:
                t["name"] = old + "x"
                if self.chance(60):
                    t["aliases"] = [self.draw(st.sampled_from([old, short]))]
        if kind == "record":
            fields = []
            for f in t["fields"]:
                if self.chance(10):
                    continue  # removed
                f = dict(f)
                new_type = self.type(f["type"])
                if new_type != f["type"]:
                    f.pop("default", None)
                    f["type"] = new_type
                    if self.chance(50):
                        d = self.gen.default(new_type)
                        if d is not _NONE:
                            f["default"] = d
                if self.chance(8):
                    f["aliases"] = [f["name"]] if self.chance(70) else []
                    f["name"] = "n_" + f["name"]
                fields.append(f)
            if self.chance(15):
                new_type = self.gen.type(2)
                field = {"name": self.gen.fresh("z"), "type": new_type}
                d = self.gen.default(new_type)
                if d is not _NONE and self.chance(60):
                    field["default"] = d
                fields.insert(self.draw(st.integers(0, len(fields))), field)
            t["fields"] = fields
        elif kind == "enum":
            symbols = list(t["symbols"])
            if len(symbols) > 1 and self.chance(40):
                symbols.pop(self.draw(st.integers(0, len(symbols) - 1)))
            if self.chance(15):
                symbols += [s for s in "ABCDE" if s not in symbols][:1]
            t["symbols"] = symbols
            if self.chance(20):
                t["default"] = symbols[0]
        elif kind == "fixed":
            if self.chance(15):
                t["size"] = t["size"] + 1
        elif kind == "array":
            t["items"] = self.type(t["items"])
        elif kind == "map":
            t["values"] = self.type(t["values"])
        return t


@st.composite
def schema_pairs(draw):
    gen = _Gen(draw)
    writer_json = gen.type(0)
    reader_json = _Mutator(draw, gen).type(writer_json)
    try:
        writer, reader = from_avro(writer_json), from_avro(reader_json)
    except MalformedSchemaError:
        assume(False)
    # A reader may reference a named type from inside itself (a recursive type): every type of both
    # must have finite data, or the checker sees a difference no datum can show.
    assume(inhabited(writer) and inhabited(reader))
    return writer, reader


def inhabited(schema) -> bool:
    p = parsed(schema)
    return bool(_variants(p.avro, p.names, ())) and all(_variants(t, p.names, ()) for t in p.names.values())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(pair=schema_pairs())
def test_can_read_agrees_with_fastavro(pair):
    writer, reader = pair
    assert_oracle_agrees(reader, writer)
    assert_oracle_agrees(writer, reader)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(pair=schema_pairs())
def test_a_schema_always_reads_itself_and_full_is_both_directions(pair):
    writer, reader = pair
    assert can_read(writer, writer) == []
    full = check("FULL", reader, [writer])
    assert (full == []) == (can_read(reader, writer) == [] and can_read(writer, reader) == [])


def test_the_oracle_can_fail():
    # The oracle itself: an incompatible pair must be caught by fastavro on the covering data.
    w = from_avro(rec("R", ("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})))
    r = from_avro(rec("R", ("e", {"type": "enum", "name": "E", "symbols": ["A"]})))
    assert not fastavro_reads_all(r, w)
    assert fastavro_reads_all(w, r)
