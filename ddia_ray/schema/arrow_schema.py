"""Arrow schemas (the schemas of Parquet datasets) as Avro records, and back.

Theory of operation: an Arrow schema is a list of typed, nullable columns; an Avro record is a list
of typed fields. A nullable column is the union ``["null", T]`` with default ``null`` (a reader of a
newer dataset version then fills a column it lacks with nulls, as Parquet readers do); a column that
is not nullable is ``T`` with no default. Structs become records named by their path
(``Row_address``), lists arrays, maps with string keys maps.

=====================================  ============================================================
Arrow                                  Avro
=====================================  ============================================================
bool                                   boolean
int8, int16, int32, uint8, uint16      int
int64, uint32, uint64                  long (uint64 above 2**63 - 1 does not fit: Avro has no
                                       unsigned type)
float16, float32 / float64             float / double
string, large_string                   string
binary, large_binary                   bytes
fixed_size_binary(n)                   fixed of size n
decimal128(p, s)                       bytes, logical type decimal(p, s)
date32                                 int, logical type date
time32(ms) / time64(us)                int time-millis / long time-micros
timestamp(ms | us, tz)                 long timestamp-millis | -micros (local-timestamp-* without tz)
list, large_list, fixed_size_list      array
struct                                 record
map<string, V>                         map
dictionary<V>                          V (dictionary encoding is a storage detail)
=====================================  ============================================================

Where Avro's type is wider than Arrow's (int8 as ``int``), the Avro type carries the Arrow type in an
``arrow.type`` attribute, so :func:`avro_to_arrow` gives back the same Arrow schema. Attributes are
not part of the canonical form: two Arrow schemas that differ only in int widths have one
fingerprint, which is right for Avro readers (they read both alike). Other types (unions of two
non-null types, recursive records, map keys that are not strings, unsigned 64-bit values past the
long range) raise :class:`~ddia_ray.errors.SchemaMappingError`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import pyarrow as pa

from ..errors import SchemaMappingError

__all__ = ["arrow_to_avro", "avro_to_arrow"]

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")

# Arrow scalar types by the name ``str(type)`` gives, with the Avro type each maps to.
_SCALARS: dict[str, tuple[pa.DataType, Any]] = {
    "null": (pa.null(), "null"),
    "bool": (pa.bool_(), "boolean"),
    "int8": (pa.int8(), "int"),
    "int16": (pa.int16(), "int"),
    "int32": (pa.int32(), "int"),
    "uint8": (pa.uint8(), "int"),
    "uint16": (pa.uint16(), "int"),
    "int64": (pa.int64(), "long"),
    "uint32": (pa.uint32(), "long"),
    "uint64": (pa.uint64(), "long"),
    "halffloat": (pa.float16(), "float"),
    "float": (pa.float32(), "float"),
    "double": (pa.float64(), "double"),
    "string": (pa.string(), "string"),
    "large_string": (pa.large_string(), "string"),
    "binary": (pa.binary(), "bytes"),
    "large_binary": (pa.large_binary(), "bytes"),
    "date32[day]": (pa.date32(), {"type": "int", "logicalType": "date"}),
    "date64[ms]": (pa.date64(), "long"),
    "time32[s]": (pa.time32("s"), "int"),
    "time32[ms]": (pa.time32("ms"), {"type": "int", "logicalType": "time-millis"}),
    "time64[us]": (pa.time64("us"), {"type": "long", "logicalType": "time-micros"}),
    "time64[ns]": (pa.time64("ns"), "long"),
}
# The Arrow type an Avro type maps back to when no ``arrow.type`` attribute says otherwise.
_DEFAULT_BACK = {"null": "null", "boolean": "bool", "int": "int32", "long": "int64", "float": "float",
                 "double": "double", "string": "string", "bytes": "binary"}
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]\Z")
_LOGICAL_TS = {"ms": "timestamp-millis", "us": "timestamp-micros"}


def arrow_to_avro(arrow_schema: Any, name: str = "Row") -> dict[str, Any]:
    """The Avro record schema (a JSON value) named ``name`` of a ``pyarrow.Schema``."""
    if not isinstance(arrow_schema, pa.Schema):
        raise SchemaMappingError(f"expected a pyarrow.Schema, got {type(arrow_schema).__name__}")
    record_name = _name(name)
    return {"type": "record", "name": record_name,
            "fields": [_field(f, record_name, record_name) for f in arrow_schema]}


def _name(text: str) -> str:
    text = _NOT_NAME.sub("_", text) or "_"
    return "_" + text if text[0].isdigit() else text


def _field(field: pa.Field, record_name: str, path: str) -> dict[str, Any]:
    avro = _type(field.type, f"{record_name}_{_name(field.name)}", f"{path}.{field.name}")
    if field.nullable and avro != "null":
        return {"name": field.name, "type": ["null", avro], "default": None}
    return {"name": field.name, "type": avro}


def _type(t: pa.DataType, name: str, path: str) -> Any:
    text = str(t)
    if text in _SCALARS:
        avro = _SCALARS[text][1]
        if isinstance(avro, dict):  # a logical type: maps back by itself
            return dict(avro)
        if _DEFAULT_BACK[avro] == text:
            return avro  # maps back by default: no attribute needed
        return {"type": avro, "arrow.type": text}
    if pa.types.is_timestamp(t):
        prefix = "" if t.tz is not None else "local-"
        if t.unit in _LOGICAL_TS:
            out: dict[str, Any] = {"type": "long", "logicalType": prefix + _LOGICAL_TS[t.unit]}
            if t.tz not in (None, "UTC"):
                out["arrow.type"] = text
            return out
        return {"type": "long", "arrow.type": text}
    if pa.types.is_decimal(t):
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale,
                **({} if pa.types.is_decimal128(t) else {"arrow.type": text})}
    if pa.types.is_fixed_size_binary(t):
        return {"type": "fixed", "name": name, "size": t.byte_width}
    if pa.types.is_dictionary(t):
        return _type(t.value_type, name, path)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = t.value_field
        items = _type(item.type, name + "_item", path + "[]")
        out = {"type": "array", "items": ["null", items] if item.nullable and items != "null" else items}
        if not pa.types.is_list(t):
            out["arrow.type"] = "large_list" if pa.types.is_large_list(t) else f"fixed_size_list[{t.list_size}]"
        return out
    if pa.types.is_map(t):
        if not (pa.types.is_string(t.key_type) or pa.types.is_large_string(t.key_type)):
            raise SchemaMappingError(f"{path}: Avro map keys are strings; this Arrow map has {t.key_type} keys")
        item = t.item_field
        values = _type(item.type, name + "_value", path + "{}")
        return {"type": "map", "values": ["null", values] if item.nullable and values != "null" else values}
    if pa.types.is_struct(t):
        return {"type": "record", "name": name,
                "fields": [_field(t.field(i), name, path) for i in range(t.num_fields)]}
    raise SchemaMappingError(f"{path}: the Arrow type {t} has no Avro equivalent here")


def avro_to_arrow(avro: Any, names: Mapping[str, Any] | None = None) -> pa.Schema:
    """The ``pyarrow.Schema`` of a normalised Avro record schema (``names``: full name -> definition of its
    named types, as parsing gives them). A field ``["null", T]`` is a nullable column of ``T``."""
    names = names or {}
    avro = _deref(avro, names)
    if not (isinstance(avro, dict) and avro.get("type") in ("record", "error")):
        raise SchemaMappingError("only a record schema has an Arrow equivalent (its fields become columns)")
    return pa.schema(_arrow_fields(avro, names, avro["name"], set()))


def _deref(node: Any, names: Mapping[str, Any]) -> Any:
    return names.get(node, node) if isinstance(node, str) else node


def _arrow_fields(record: dict, names: Mapping[str, Any], path: str, active: set) -> list[pa.Field]:
    if record["name"] in active:
        raise SchemaMappingError(f"{path}: record {record['name']} contains itself; Arrow has no recursive types")
    active = active | {record["name"]}
    out = []
    for f in record["fields"]:
        node, nullable = _nullable(_deref(f["type"], names), f"{path}.{f['name']}")
        out.append(pa.field(f["name"], _arrow(node, names, f"{path}.{f['name']}", active), nullable=nullable))
    return out


def _nullable(node: Any, path: str) -> tuple[Any, bool]:
    """(type, nullable) of a field type: ``["null", T]`` and ``[T, "null"]`` are a nullable ``T``."""
    if not isinstance(node, list):
        return node, node == "null"
    others = [b for b in node if b != "null"]
    if len(others) > 1 or (len(others) == len(node)):
        raise SchemaMappingError(f"{path}: the union {node} has no Arrow equivalent (only [\"null\", T] does)")
    return (others[0] if others else "null"), True


def _arrow(node: Any, names: Mapping[str, Any], path: str, active: set) -> pa.DataType:
    node = _deref(node, names)
    if isinstance(node, list):
        raise SchemaMappingError(f"{path}: a union here has no Arrow equivalent")
    if isinstance(node, str):
        return _SCALARS[_DEFAULT_BACK[node]][0]
    attr = node.get("arrow.type")
    kind = node["type"]
    if kind in _DEFAULT_BACK:
        if isinstance(attr, str):
            return _arrow_from_text(attr, path)
        logical = node.get("logicalType")
        if logical == "decimal" and kind == "bytes":
            return pa.decimal128(node.get("precision", 38), node.get("scale", 0))
        if logical == "date" and kind == "int":
            return pa.date32()
        if logical == "time-millis" and kind == "int":
            return pa.time32("ms")
        if logical == "time-micros" and kind == "long":
            return pa.time64("us")
        if kind == "long" and isinstance(logical, str) and logical.endswith(("timestamp-millis", "timestamp-micros")):
            unit = "ms" if logical.endswith("millis") else "us"
            return pa.timestamp(unit, tz=None if logical.startswith("local-") else "UTC")
        return _SCALARS[_DEFAULT_BACK[kind]][0]
    if kind == "fixed":
        return pa.binary(node["size"])
    if kind == "enum":
        return pa.string()
    if kind == "array":
        items, nullable = _nullable(_deref(node["items"], names), path + "[]")
        item = pa.field("item", _arrow(items, names, path + "[]", active), nullable=nullable)
        if attr == "large_list":
            return pa.large_list(item)
        if isinstance(attr, str) and attr.startswith("fixed_size_list["):
            return pa.list_(item, int(attr[len("fixed_size_list["):-1]))
        return pa.list_(item)
    if kind == "map":
        values, nullable = _nullable(_deref(node["values"], names), path + "{}")
        return pa.map_(pa.string(), pa.field("value", _arrow(values, names, path + "{}", active), nullable=nullable))
    if kind in ("record", "error"):
        return pa.struct(_arrow_fields(node, names, path, active))
    raise SchemaMappingError(f"{path}: the Avro type {kind} has no Arrow equivalent")


def _arrow_from_text(text: str, path: str) -> pa.DataType:
    if text in _SCALARS:
        return _SCALARS[text][0]
    m = _TIMESTAMP.match(text)
    if m:
        return pa.timestamp(m.group(1), tz=m.group(2))
    m = re.match(r"decimal(128|256)\((\d+), (\d+)\)\Z", text)
    if m:
        factory = pa.decimal128 if m.group(1) == "128" else pa.decimal256
        return factory(int(m.group(2)), int(m.group(3)))
    raise SchemaMappingError(f"{path}: unknown arrow.type {text!r}")
