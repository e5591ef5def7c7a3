"""The :class:`Schema` value: a schema in any of the three languages, as a normalised Avro schema.

Theory of operation
-------------------
Every schema, whatever language it was written in, is translated to Avro (Avro 1.11 specification,
"Schema Declaration") and then parsed the same way:

1. bounds first: the JSON text is at most :data:`SCHEMA_BYTES_MAX` bytes and nests at most
   :data:`JSON_DEPTH_MAX` brackets deep, checked by a scan *before* ``json.loads``, so a hostile
   text can neither exhaust the stack nor take long to parse;
2. ``fastavro.parse_schema`` resolves names (full names, named types referenced by name after their
   definition) and refuses unknown types and redefined names;
3. our own checks, where fastavro is lenient and the specification is not: names match
   ``[A-Za-z_][A-Za-z0-9_]*``, field names are unique, unions hold no union and no two branches of
   one unnamed type, fixed sizes are non-negative ints, types nest at most :data:`SCHEMA_DEPTH_MAX`
   deep, and every default matches its type as the specification says (a union's default matches
   its *first* branch; ints are not booleans);
4. the Parsing Canonical Form (specification, "Parsing Canonical Form for Schemas") strips what does
   not affect how data is read (docs, aliases, defaults, logical types) and fixes the order of the
   rest; its SHA-256 is the schema's :attr:`Schema.fingerprint`.

Nothing parsed here runs code: a schema is JSON, and JSON becomes dicts, lists and strings.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ..codec import record
from ..errors import MalformedSchemaError

__all__ = ["KINDS", "SCHEMA_BYTES_MAX", "SCHEMA_DEPTH_MAX", "JSON_DEPTH_MAX", "PRIMITIVES", "Schema", "parse",
           "from_avro", "from_record", "from_arrow"]

#: The schema languages: Avro JSON, a codec ``@record`` class, an Arrow schema.
KINDS = ("avro", "record", "arrow")
#: The largest schema accepted, in bytes of its JSON text (Confluent's registry caps a request body at
#: a few MiB; schemas people write are a few KiB).
SCHEMA_BYTES_MAX = 1 << 20
#: How deeply types may nest (a record holding an array of records is 3 deep). Every walk over a
#: schema recurses once per level, so this bounds the stack they use.
SCHEMA_DEPTH_MAX = 32
#: How deeply JSON brackets may nest in a schema's text: a type level takes up to three (a record,
#: its field list, a field), and a default value adds its own.
JSON_DEPTH_MAX = 4 * SCHEMA_DEPTH_MAX
#: Avro's primitive type names.
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A JSON string (its closing quote optional, so that an unterminated one ends the scan instead of being
# retried from every quote inside it, which would be quadratic) or a bracket.
_TOKENS = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[\]{}]', re.S)
_INT_RANGE = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}


@record("schema.schema")
class Schema:
    """A schema: ``kind`` (one of :data:`KINDS`), ``source`` (its text as submitted; Avro JSON derived
    from the class or the Arrow schema for the ``record`` and ``arrow`` kinds), ``canonical`` (Avro's
    Parsing Canonical Form) and ``fingerprint`` (hex SHA-256 of ``canonical``).

    Build one with :func:`parse` or the ``from_*`` functions, not by hand. Two schemas are the same
    schema when their fingerprints are equal, whatever their kind, docs or whitespace.
    """

    kind: str
    source: str
    canonical: str
    fingerprint: str

    def __post_init__(self):
        # Runs on decode too: a stored schema whose fingerprint does not match its canonical form is corrupt.
        if self.kind not in KINDS:
            raise MalformedSchemaError(f"schema kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.source, str) or not isinstance(self.canonical, str):
            raise MalformedSchemaError("a schema's source and canonical form are str")
        if self.fingerprint != _sha256(self.canonical):
            raise MalformedSchemaError("a schema's fingerprint is not the SHA-256 of its canonical form")

    @property
    def avro(self) -> Any:
        """The normalised Avro schema: what ``fastavro.parse_schema`` gives (full names; a named type
        defined once, then referred to by name), without fastavro's private keys. A fresh copy."""
        return json.loads(_parsed(self.source).avro_json)

    @property
    def name(self) -> str | None:
        """The full name of the top-level named type (None for an unnamed schema such as ``"int"``)."""
        avro = _parsed(self.source).avro
        return avro.get("name") if isinstance(avro, dict) else None

    def field_names(self) -> tuple[str, ...]:
        """The names of the top-level record's fields, in order (empty for a non-record schema)."""
        avro = _parsed(self.source).avro
        if isinstance(avro, dict) and avro.get("type") in ("record", "error"):
            return tuple(f["name"] for f in avro["fields"])
        return ()

    def to_json(self) -> str:
        """The normalised Avro schema as compact JSON text with sorted keys (parse it back with
        :func:`from_avro`): equal for two texts that differ only in whitespace and attribute order."""
        return _parsed(self.source).avro_json

    def to_arrow(self) -> Any:
        """This schema as a ``pyarrow.Schema``: a record whose fields have Arrow equivalents (see
        :mod:`.arrow_schema`); raises :class:`~ddia_ray.errors.SchemaMappingError` otherwise."""
        from .arrow_schema import avro_to_arrow

        return avro_to_arrow(_parsed(self.source).avro, _parsed(self.source).names)

    @classmethod
    def parse(cls, kind: str, text_or_obj: Any) -> Schema:
        """Same as :func:`parse`."""
        return parse(kind, text_or_obj)

    @classmethod
    def from_avro(cls, obj: Any) -> Schema:
        """Same as :func:`from_avro`."""
        return from_avro(obj)

    @classmethod
    def from_record(cls, record_cls: type) -> Schema:
        """Same as :func:`from_record`."""
        return from_record(record_cls)

    @classmethod
    def from_arrow(cls, arrow_schema: Any) -> Schema:
        """Same as :func:`from_arrow`."""
        return from_arrow(arrow_schema)


def parse(kind: str, text_or_obj: Any) -> Schema:
    """A :class:`Schema` of ``kind`` from its text (Avro JSON, for every kind) or object (an Avro JSON
    value for ``avro``, a ``@record`` class for ``record``, a ``pyarrow.Schema`` for ``arrow``).

    Raises :class:`~ddia_ray.errors.MalformedSchemaError` naming what is wrong.
    """
    if kind not in KINDS:
        raise MalformedSchemaError(f"unknown schema kind {kind!r}; kinds are {KINDS}")
    if kind == "record" and isinstance(text_or_obj, type):
        return from_record(text_or_obj)
    if kind == "arrow" and not isinstance(text_or_obj, (str, bytes, dict)):
        return from_arrow(text_or_obj)
    if isinstance(text_or_obj, str) and text_or_obj.strip() in PRIMITIVES:
        text_or_obj = json.dumps(text_or_obj.strip())  # a bare primitive name is that type's schema
    source = _source_text(text_or_obj)
    parsed = _parsed(source)
    return Schema(kind, source, parsed.canonical, _sha256(parsed.canonical))


def from_avro(obj: Any) -> Schema:
    """An Avro schema, given as JSON text (str or UTF-8 bytes) or as its JSON value (dict, list or str
    name: ``"long"`` is the schema ``long``, not JSON text)."""
    return parse("avro", obj)


def from_record(cls: type) -> Schema:
    """The schema of a codec ``@record`` class: its fields, their types and defaults (see
    :mod:`.record_schema` for the mapping)."""
    from .record_schema import record_to_avro

    return parse("record", json.dumps(record_to_avro(cls), separators=(",", ":")))


def from_arrow(arrow_schema: Any) -> Schema:
    """The schema of a ``pyarrow.Schema`` as an Avro record (see :mod:`.arrow_schema`)."""
    from .arrow_schema import arrow_to_avro

    return parse("arrow", json.dumps(arrow_to_avro(arrow_schema), separators=(",", ":")))


# --- parsing -----------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """A schema as the other modules of this package use it: ``avro`` (normalised, shared: never
    mutate it), ``names`` (full name -> definition of every named type), its JSON and canonical form."""

    avro: Any
    names: dict
    avro_json: str
    canonical: str


def parsed(schema: Schema) -> Parsed:
    """The parsed form of ``schema`` (cached by source text)."""
    return _parsed(schema.source)


def _source_text(text_or_obj: Any) -> str:
    """The JSON text of a schema given as text or as a JSON value, within the size bound."""
    if isinstance(text_or_obj, bytes):
        try:
            text_or_obj = text_or_obj.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedSchemaError(f"schema text is not UTF-8: {e}") from None
    if isinstance(text_or_obj, str):
        return text_or_obj
    if not isinstance(text_or_obj, (dict, list)):
        raise MalformedSchemaError(f"a schema is JSON text or a JSON dict/list, got {type(text_or_obj).__name__}")
    _check_json_depth_of_value(text_or_obj)
    try:
        return json.dumps(text_or_obj, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise MalformedSchemaError(f"schema is not a JSON value: {e}") from None


#: Sources up to this size are cached once parsed (a registry reads the same few schemas all the time);
#: larger ones are parsed each time, so the cache holds at most 256 x 64 KiB of source.
_CACHED_SOURCE_MAX = 64 * 1024


def _parsed(source: str) -> Parsed:
    """The parsed form of the schema text ``source``."""
    if len(source) <= _CACHED_SOURCE_MAX:
        return _parsed_cached(source)
    return _parse(source)


@functools.lru_cache(maxsize=256)
def _parsed_cached(source: str) -> Parsed:
    return _parse(source)


def _parse(source: str) -> Parsed:
    """Parse and check ``source`` (see the module docstring for the steps)."""
    if len(source) > SCHEMA_BYTES_MAX or len(source.encode("utf-8")) > SCHEMA_BYTES_MAX:
        raise MalformedSchemaError(f"schema is larger than SCHEMA_BYTES_MAX={SCHEMA_BYTES_MAX} bytes")
    _check_json_depth_of_text(source)
    try:
        value = json.loads(source, parse_int=_parse_int)
    except (ValueError, RecursionError) as e:  # ValueError covers JSONDecodeError and too-long int literals
        raise MalformedSchemaError(f"schema is not valid JSON: {e}") from None
    names: dict[str, Any] = {}
    try:
        avro = fastavro.parse_schema(value, names)
    except Exception as e:  # noqa: BLE001 - fastavro raises KeyError, TypeError, ... for malformed input
        raise MalformedSchemaError(f"schema is not valid Avro: {type(e).__name__}: {e}") from None
    if isinstance(avro, dict):
        avro = {k: v for k, v in avro.items() if not k.startswith("__fastavro") and k != "__named_schemas"}
    _Checker(names).check(avro, "$", 1)
    try:
        canonical = to_parsing_canonical_form(avro)
    except Exception as e:  # noqa: BLE001 - same as above: any failure here means a schema fastavro cannot read
        raise MalformedSchemaError(f"schema has no canonical form: {type(e).__name__}: {e}") from None
    # Sorted keys: the JSON of a schema does not depend on the order its text wrote attributes in.
    return Parsed(avro, names, json.dumps(avro, sort_keys=True, separators=(",", ":")), canonical)


def _parse_int(digits: str) -> int:
    """An int literal of a schema: at most 20 digits (a long has 19), since converting a long literal
    costs time quadratic in its length on Python 3.10 (later versions refuse past 4300 digits)."""
    if len(digits) > 20:
        raise ValueError(f"an int literal of {len(digits)} digits is out of Avro's range")
    return int(digits)


def _sha256(text: str) -> str:
    return fingerprint(text, "SHA-256")  # fastavro's helper: hex SHA-256 of the UTF-8 text


def _check_json_depth_of_text(source: str) -> None:
    """Refuse JSON nesting past JSON_DEPTH_MAX before parsing it (json.loads recurses per level).

    One pass of a regular expression over strings and brackets (a bracket inside a string does not
    nest) keeps the scan in C and linear in the text.
    """
    depth = 0
    for token in _TOKENS.findall(source):
        if token[0] == '"':
            continue
        depth += 1 if token in "[{" else -1
        if depth > JSON_DEPTH_MAX:
            raise MalformedSchemaError(f"schema nests deeper than JSON_DEPTH_MAX={JSON_DEPTH_MAX} brackets")


def _check_json_depth_of_value(value: Any) -> None:
    """The same bound for a JSON value given as objects, walked without recursion."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > JSON_DEPTH_MAX:
            raise MalformedSchemaError(f"schema nests deeper than JSON_DEPTH_MAX={JSON_DEPTH_MAX} levels")
        inner: list[Any] = []
        for v in level:
            children = v.values() if isinstance(v, dict) else v
            inner.extend(c for c in children if isinstance(c, (dict, list)))
        level = inner


class _Checker:
    """The checks fastavro does not make (step 3 of the module docstring), over a normalised schema."""

    def __init__(self, names: dict):
        self.names = names

    def check(self, node: Any, path: str, depth: int) -> None:
        if depth > SCHEMA_DEPTH_MAX:
            raise MalformedSchemaError(f"{path}: types nest deeper than "
                                       f"SCHEMA_DEPTH_MAX={SCHEMA_DEPTH_MAX}")
        if isinstance(node, str):
            if node not in PRIMITIVES and node not in self.names:
                raise MalformedSchemaError(f"{path}: unknown type {node!r}")
            return
        if isinstance(node, list):
            self._check_union(node, path, depth)
            return
        if not isinstance(node, dict):
            raise MalformedSchemaError(f"{path}: a type is a name, an object or a union, got {node!r}")
        kind = node.get("type")
        if not isinstance(kind, str):
            raise MalformedSchemaError(f"{path}: a type's \"type\" is a type name, got {kind!r}")
        if kind in NAMED:
            for part in str(node.get("name", "")).split("."):
                if not _NAME.match(part):
                    raise MalformedSchemaError(f"{path}: invalid name {node.get('name')!r} "
                                               "(names match [A-Za-z_][A-Za-z0-9_]*)")
            self._check_aliases(node, path)
        if kind in ("record", "error"):
            self._check_record(node, path, depth)
        elif kind == "enum":
            if not isinstance(node.get("symbols"), list):
                raise MalformedSchemaError(f"{path}: an enum's symbols are a list")
            for symbol in node["symbols"]:
                if not isinstance(symbol, str) or not _NAME.match(symbol):
                    raise MalformedSchemaError(f"{path}: invalid enum symbol {symbol!r}")
        elif kind == "fixed":
            size = node.get("size")
            if type(size) is not int or size < 0:
                raise MalformedSchemaError(f"{path}: a fixed size is an int >= 0, got {size!r}")
        elif kind == "array":
            self.check(node.get("items"), f"{path}[]", depth + 1)
        elif kind == "map":
            self.check(node.get("values"), path + "{}", depth + 1)
        elif kind not in PRIMITIVES:
            raise MalformedSchemaError(f"{path}: unknown type {kind!r}")

    def _check_record(self, node: dict, path: str, depth: int) -> None:
        here = node["name"].rpartition(".")[2] if path == "$" else path
        fields = node.get("fields")
        if not isinstance(fields, list):
            raise MalformedSchemaError(f"{here}: a record's fields are a list")
        seen: set[str] = set()
        for f in fields:
            name = f.get("name") if isinstance(f, dict) else None
            if not isinstance(name, str) or not _NAME.match(name):
                raise MalformedSchemaError(f"{here}: invalid field name {name!r}")
            if name in seen:
                raise MalformedSchemaError(f"{here}: duplicate field {name!r}")
            seen.add(name)
            self._check_aliases(f, f"{here}.{name}")
            if f.get("order", "ascending") not in ("ascending", "descending", "ignore"):
                raise MalformedSchemaError(f"{here}.{name}: a field's order is ascending, descending or ignore, "
                                           f"got {f['order']!r}")
            self.check(f.get("type"), f"{here}.{name}", depth + 1)
            if "default" in f:
                problem = self.default_problem(f["default"], f["type"], SCHEMA_DEPTH_MAX)
                if problem:
                    raise MalformedSchemaError(f"{here}.{name}: default {f['default']!r} does not match its type: "
                                               f"{problem}")

    def _check_union(self, branches: list, path: str, depth: int) -> None:
        # Avro 1.11, "Unions": no union directly inside a union, and at most one branch of each
        # unnamed type; named types may repeat if their names differ.
        seen: set[str] = set()
        for branch in branches:
            if isinstance(branch, list):
                raise MalformedSchemaError(f"{path}: a union may not hold a union")
            self.check(branch, path, depth)
            key = self.branch_key(branch)
            if key in seen:
                raise MalformedSchemaError(f"{path}: the union has two branches of type {key}")
            seen.add(key)

    def branch_key(self, branch: Any) -> str:
        """What makes union branches distinct: the full name of a named type, else the type."""
        if isinstance(branch, str):
            return branch
        kind = branch.get("type")
        return branch["name"] if kind in NAMED else kind

    @staticmethod
    def _check_aliases(node: dict, path: str) -> None:
        aliases = node.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise MalformedSchemaError(f"{path}: aliases are a list of names")

    def resolve(self, node: Any) -> Any:
        """A type by value: named references looked up, ``{"type": "int"}`` as ``"int"``."""
        if isinstance(node, str):
            return self.names.get(node, node)
        if isinstance(node, dict) and node.get("type") in PRIMITIVES:
            return node["type"]
        return node

    def default_problem(self, value: Any, node: Any, budget: int) -> str:
        """Why ``value`` is not a valid default (Avro JSON encoding) of type ``node``; "" if it is."""
        if budget <= 0:
            return "the default nests too deeply"
        node = self.resolve(node)
        if isinstance(node, list):  # a union's default matches its first branch (Avro 1.11, "Unions")
            problem = self.default_problem(value, node[0], budget - 1) if node else "the union is empty"
            return f"a union's default must match its first branch ({problem})" if problem else ""
        kind = node if isinstance(node, str) else node.get("type")
        if kind == "null":
            return "" if value is None else "expected null"
        if kind == "boolean":
            return "" if isinstance(value, bool) else "expected true or false"
        if kind in ("int", "long"):
            lo, hi = _INT_RANGE[kind]
            ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
            return "" if ok else f"expected {'an' if kind == 'int' else 'a'} {kind} in [{lo}, {hi}]"
        if kind in ("float", "double"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return "" if ok else "expected a number"
        if kind == "string":
            return "" if isinstance(value, str) else "expected a string"
        if kind in ("bytes", "fixed"):
            # Avro JSON encodes bytes as a string of code points 0-255, one per byte.
            if not isinstance(value, str) or any(ord(c) > 255 for c in value):
                return "expected a string of code points 0-255"
            if kind == "fixed" and len(value) != node["size"]:
                return f"expected {node['size']} bytes"
            return ""
        if kind == "enum":
            return "" if value in node["symbols"] else f"expected one of the symbols {node['symbols']}"
        if kind == "array":
            if not isinstance(value, list):
                return "expected an array"
            return next((p for p in (self.default_problem(v, node["items"], budget - 1) for v in value) if p), "")
        if kind == "map":
            if not isinstance(value, dict):
                return "expected an object"
            return next((p for p in (self.default_problem(v, node["values"], budget - 1) for v in value.values())
                         if p), "")
        if kind in ("record", "error"):
            if not isinstance(value, dict):
                return "expected an object"
            for f in node["fields"]:
                if f["name"] in value:
                    problem = self.default_problem(value[f["name"]], f["type"], budget - 1)
                    if problem:
                        return f"field {f['name']!r}: {problem}"
                elif "default" not in f:
                    return f"field {f['name']!r} is missing and has no default"
            return ""
        return f"unknown type {kind!r}"
