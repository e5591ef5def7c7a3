"""Avro schema resolution, and the compatibility modes of the Confluent Schema Registry on top.

Theory of operation
-------------------
Data written with one schema (the *writer's*) is read with another (the *reader's*) by resolving
the two, as the Avro 1.11 specification defines in "Schema Resolution". :func:`can_read` walks both
schemas side by side and lists every place where that resolution fails, instead of stopping at the
first as a reader does. The rules, with the name each failure gets (the names Confluent's registry
and Avro's ``SchemaCompatibility`` use):

* **primitive** -- the reader has the same primitive, or a promotion: int -> long, float, double;
  long -> float, double; float -> double; string <-> bytes. Else ``TYPE_MISMATCH``.
* **record** -- the reader has a record of the same unqualified name, or one whose aliases name it
  (else ``NAME_MISMATCH``). Each reader field is found in the writer by its name, else by one of
  its aliases, and resolved; a reader field found nowhere needs a default
  (``READER_FIELD_MISSING_DEFAULT_VALUE``); writer fields the reader lacks are skipped.
* **enum** -- same name; a writer symbol the reader lacks needs the reader's default symbol
  (``MISSING_ENUM_SYMBOLS``).
* **fixed** -- same name and size (``FIXED_SIZE_MISMATCH``).
* **array, map** -- the reader's is an array (map) too; items (values) resolve recursively
  (paths ``[]`` and ``{}``).
* **union** -- every writer branch must resolve against the reader; against a reader union, each
  goes to the reader's first matching branch (``MISSING_UNION_BRANCH`` if none matches).
* **non-union against a reader union** -- the reader's first branch that *matches* (same type, a
  promotion, or a named type of the same name) is resolved recursively (``MISSING_UNION_BRANCH``).

"Matches" is decided at one level only, as the specification says (a record of the right name
matches even if its fields then fail): a reader takes the first matching branch and does not
look further, so the checker must not either. Union and enum rules are data-dependent in a reader
(a branch or symbol that no datum uses never fails); the checker, like Confluent's, refuses them
all the same, since the schema allows such data.

Recursive types terminate: a pair of named types being resolved is assumed compatible while its
own resolution is under way (the result is the greatest fixed point). Each resolved pair is
remembered and each reader union is indexed by type and name, so a check costs time about
proportional to the writer's size times the number of reader types that share a name with one
of its types (usually one).

Paths name fields as a reader sees them: the root record's name (``$`` for a schema that is not a
named type), ``.field`` for a field, ``[]`` for an array's items and ``{}`` for a map's values
(``Order.items[].price``).

Modes (Confluent's): ``BACKWARD`` -- the new schema reads data written with the latest one (upgrade
consumers first); ``FORWARD`` -- the latest reads data written with the new one (upgrade producers
first); ``FULL`` -- both; the ``_TRANSITIVE`` variants check against every earlier version, not only
the latest; ``NONE`` checks nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..codec import record
from ..errors import ConfigError, IncompatibleSchemaError, InvalidArgumentError
from .schemas import NAMED, PRIMITIVES, Parsed, Schema, parsed

__all__ = ["MODES", "Incompatibility", "can_read", "check", "require_compatible", "INCOMPATIBILITIES_MAX",
           "PROMOTIONS"]

MODES = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")
#: Writer type -> reader type pairs the specification lets a reader promote.
PROMOTIONS = frozenset({
    ("int", "long"), ("int", "float"), ("int", "double"),
    ("long", "float"), ("long", "double"),
    ("float", "double"),
    ("string", "bytes"), ("bytes", "string"),
})
#: At most this many incompatibilities are listed per check (a schema broken everywhere says so
#: long before its list would end).
INCOMPATIBILITIES_MAX = 100


@record("schema.incompatibility")
class Incompatibility:
    """One thing a reader schema cannot resolve in a writer schema: ``path`` of the field (e.g.
    ``Order.items[].price``), ``reason`` in plain words, and ``kind``, one of Confluent's names
    (``TYPE_MISMATCH``, ``NAME_MISMATCH``, ``FIXED_SIZE_MISMATCH``, ``MISSING_ENUM_SYMBOLS``,
    ``READER_FIELD_MISSING_DEFAULT_VALUE``, ``MISSING_UNION_BRANCH``)."""

    path: str
    reason: str
    kind: str = ""

    def __post_init__(self):
        if not (isinstance(self.path, str) and isinstance(self.reason, str) and isinstance(self.kind, str)):
            raise InvalidArgumentError("an Incompatibility is (path: str, reason: str, kind: str)")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def can_read(reader: Schema, writer: Schema) -> list[Incompatibility]:
    """Every way in which data written with ``writer`` cannot be read with ``reader``; [] if all of it can."""
    r, w = parsed(reader), parsed(writer)
    root = _root_path(r.avro) or _root_path(w.avro) or "$"
    found = _Resolver(r, w).resolve(w.avro, r.avro, root)
    return [Incompatibility(path, reason, kind) for path, reason, kind in found[:INCOMPATIBILITIES_MAX]]


def check(mode: str, new: Schema, previous: Sequence[Schema], *,
          versions: Sequence[int] | None = None) -> list[Incompatibility]:
    """The incompatibilities of ``new`` with ``previous`` (oldest first) under ``mode`` (one of :data:`MODES`).

    ``versions`` labels ``previous`` in the reasons (default: 1, 2, ...). Each reason ends with the
    direction that failed, e.g. "(the new schema reading data of version 3)".
    """
    if mode not in MODES:
        raise ConfigError(f"unknown compatibility mode {mode!r}; modes are {MODES}")
    previous = list(previous)
    labels = list(versions) if versions is not None else list(range(1, len(previous) + 1))
    if len(labels) != len(previous):
        raise ConfigError(f"{len(labels)} version labels for {len(previous)} previous schemas")
    if mode == "NONE" or not previous:
        return []
    against = list(zip(labels, previous)) if mode.endswith("_TRANSITIVE") else [(labels[-1], previous[-1])]
    found: list[Incompatibility] = []
    for label, old in reversed(against):  # newest first: the closest break is the most useful
        if mode.startswith(("BACKWARD", "FULL")):
            found += _labelled(can_read(new, old), f"the new schema reading data of version {label}")
        if mode.startswith(("FORWARD", "FULL")):
            found += _labelled(can_read(old, new), f"version {label} reading data of the new schema")
    return found[:INCOMPATIBILITIES_MAX]


def require_compatible(mode: str, new: Schema, previous: Sequence[Schema], *,
                       versions: Sequence[int] | None = None) -> None:
    """Raise :class:`~ddia_ray.errors.IncompatibleSchemaError` listing what :func:`check` finds, if anything."""
    found = check(mode, new, previous, versions=versions)
    if found:
        raise IncompatibleSchemaError(f"schema is not {mode} compatible", found)


def _labelled(found: list[Incompatibility], direction: str) -> list[Incompatibility]:
    return [dataclasses.replace(i, reason=f"{i.reason} ({direction})") for i in found]


def _root_path(avro: Any) -> str:
    if isinstance(avro, dict) and avro.get("type") in NAMED:
        return avro["name"].rpartition(".")[2]
    return ""


def _kind(node: Any) -> str:
    """The type of a resolved node ("error" records are records); "union" for a union."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    kind = node["type"]
    return "record" if kind == "error" else kind


def describe(node: Any) -> str:
    """A type in a few words, for reasons: ``long``, ``record shop.Order``, ``fixed Md5 (16 bytes)``."""
    kind = _kind(node)
    if kind in ("record", "enum"):
        return f"{kind} {node['name']}"
    if kind == "fixed":
        return f"fixed {node['name']} ({node['size']} bytes)"
    if kind == "array":
        return f"array of {_short(node['items'])}"
    if kind == "map":
        return f"map of {_short(node['values'])}"
    if kind == "union":
        shown = ", ".join(_short(b) for b in node[:_UNION_SHOWN])
        more = f", ... {len(node) - _UNION_SHOWN} more" if len(node) > _UNION_SHOWN else ""
        return f"union [{shown}{more}]"
    return kind


_UNION_SHOWN = 8  # branches of a union named in a reason; the rest are counted


def _short(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        return str(node.get("name", node["type"]))
    return str(node)


class _Resolver:
    """One walk over a reader and a writer schema. Results of named pairs are kept with paths relative
    to the named type, so a type used in many places is resolved once."""

    def __init__(self, reader: Parsed, writer: Parsed):
        self.r_names = reader.names
        self.w_names = writer.names
        self.done: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self.active: set[tuple[str, str]] = set()
        self.unions: dict[int, tuple[list, dict]] = {}  # id of a reader union -> its index (_union_index)

    def _r(self, node: Any) -> Any:
        return _deref(node, self.r_names)

    def _w(self, node: Any) -> Any:
        return _deref(node, self.w_names)

    def resolve(self, w: Any, r: Any, path: str) -> list[tuple[str, str, str]]:
        """The failures of reading a datum of writer type ``w`` as reader type ``r`` at ``path``."""
        w, r = self._w(w), self._r(r)
        if isinstance(w, list):
            out: list[tuple[str, str, str]] = []
            for branch in w:  # every branch may be written, so every branch must resolve
                out += self._resolve_one(self._w(branch), r, path, in_writer_union=True)
                if len(out) >= INCOMPATIBILITIES_MAX:
                    break
            return out
        return self._resolve_one(w, r, path, in_writer_union=False)

    def _resolve_one(self, w: Any, r: Any, path: str, in_writer_union: bool) -> list[tuple[str, str, str]]:
        """``w`` is not a union."""
        if isinstance(r, list):
            branch = self._first_match(w, r)  # the first match is taken, as a reader does
            if branch is not None:
                return self._resolve_matched(w, branch, path)
            what = "the writer's union branch" if in_writer_union else "the writer's type"
            return [(path, f"{what} {describe(w)} matches no branch of the reader's {describe(r)}",
                     "MISSING_UNION_BRANCH")]
        if not self.matches(w, r):
            what = "the writer's union branch" if in_writer_union else "the writer's"
            return [self._mismatch(w, r, path, what)]
        return self._resolve_matched(w, r, path)

    def _first_match(self, w: Any, union: list) -> Any:
        """The first branch of the reader's ``union`` that ``w`` matches, or None.

        Only the branches that can match are tried, found in an index of the union by type and name
        built once per union: scanning every branch for every writer branch would make two unions of
        thousands of named types (a schema within the size bound) cost millions of comparisons.
        """
        index = self.unions.get(id(union))
        if index is None:
            index = self.unions[id(union)] = _union_index([self._r(b) for b in union])
        branches, by_key = index
        wk = _kind(w)
        keys: list[Any]
        if wk in PRIMITIVES:
            keys = [wk, *(r for (w_, r) in PROMOTIONS if w_ == wk)]
        elif wk in ("record", "enum", "fixed"):
            short = w["name"].rpartition(".")[2]
            keys = [(wk, "name", short), (wk, "alias", short), (wk, "alias", w["name"])]
        else:
            keys = [wk]
        for i in sorted({i for key in keys for i in by_key.get(key, ())}):
            if self.matches(w, branches[i]):
                return branches[i]
        return None

    def _mismatch(self, w: Any, r: Any, path: str, what: str) -> tuple[str, str, str]:
        wk, rk = _kind(w), _kind(r)
        if wk == rk == "fixed" and w["size"] != r["size"] and _names_match(w, r):
            return (path, f"fixed {r['name']} is {r['size']} bytes in the reader but {w['size']} in the writer",
                    "FIXED_SIZE_MISMATCH")
        if wk == rk and wk in ("record", "enum", "fixed"):
            return (path, f"{what} {wk} {w['name']} is not the reader's {r['name']}, nor one of its aliases",
                    "NAME_MISMATCH")
        return (path, f"{what} {describe(w)} cannot be read as {describe(r)}", "TYPE_MISMATCH")

    def matches(self, w: Any, r: Any) -> bool:
        """Whether non-union ``w`` and ``r`` match at the top level (Avro 1.11, "Schema Resolution")."""
        wk, rk = _kind(w), _kind(r)
        if wk in PRIMITIVES and rk in PRIMITIVES:
            return wk == rk or (wk, rk) in PROMOTIONS
        if wk != rk or wk == "union":
            return False
        if wk == "fixed" and w["size"] != r["size"]:
            return False
        if wk in ("record", "enum", "fixed"):
            return _names_match(w, r)
        return True  # arrays, maps: their items and values are resolved next

    def _resolve_matched(self, w: Any, r: Any, path: str) -> list[tuple[str, str, str]]:
        kind = _kind(r)
        if kind == "array":
            return self.resolve(w["items"], r["items"], path + "[]")
        if kind == "map":
            return self.resolve(w["values"], r["values"], path + "{}")
        if kind == "enum":
            return self._enum(w, r, path)
        if kind == "record":
            key = (w["name"], r["name"])
            if key in self.active:  # recursive type: assume it resolves while resolving it
                return []
            relative = self.done.get(key)
            if relative is None:
                self.active.add(key)
                try:
                    relative = self._record(w, r)
                finally:
                    self.active.discard(key)
                self.done[key] = relative
            return [(path + sub, reason, kind_) for sub, reason, kind_ in relative]
        return []  # primitives and fixed: nothing below them

    def _enum(self, w: dict, r: dict, path: str) -> list[tuple[str, str, str]]:
        known = set(r["symbols"])
        missing = [s for s in w["symbols"] if s not in known]
        if missing and "default" not in r:
            return [(path, f"the writer's symbols {missing} are not in the reader's enum {r['name']}, "
                           "which has no default symbol", "MISSING_ENUM_SYMBOLS")]
        return []

    def _record(self, w: dict, r: dict) -> list[tuple[str, str, str]]:
        """The failures inside records ``w`` and ``r`` (their names matched), paths relative to them."""
        writer_fields = {f["name"]: f for f in w["fields"]}
        # A writer field taken by name by one reader field is not available to another's alias.
        claimed = {f["name"] for f in r["fields"] if f["name"] in writer_fields}
        out: list[tuple[str, str, str]] = []
        for rf in r["fields"]:
            name = rf["name"]
            wf = writer_fields.get(name)
            if wf is None:
                wf = next((writer_fields[a] for a in rf.get("aliases", ())
                           if a in writer_fields and a not in claimed), None)
            if wf is not None:
                out += self.resolve(wf["type"], rf["type"], "." + name)
            elif "default" not in rf:
                out.append(("." + name, f"the reader's field {name!r} is not in the writer's record "
                                        f"{w['name']} and has no default", "READER_FIELD_MISSING_DEFAULT_VALUE"))
            if len(out) >= INCOMPATIBILITIES_MAX:
                break
        return out


def _union_index(branches: list) -> tuple[list, dict]:
    """(branches, key -> positions): primitives, arrays and maps by type; named types by (type,
    "name", unqualified name) and by (type, "alias", alias) for each alias."""
    by_key: dict[Any, list[int]] = {}
    for i, b in enumerate(branches):
        kind = _kind(b)
        if kind in ("record", "enum", "fixed"):
            keys: list[Any] = [(kind, "name", b["name"].rpartition(".")[2])]
            keys += [(kind, "alias", a) for a in b.get("aliases", ())]
        else:
            keys = [kind]
        for key in keys:
            by_key.setdefault(key, []).append(i)
    return branches, by_key


def _deref(node: Any, names: dict) -> Any:
    if isinstance(node, str):
        return names.get(node, node)
    if isinstance(node, dict) and node.get("type") in PRIMITIVES:
        return node["type"]
    return node


def _names_match(w: dict, r: dict) -> bool:
    """Named types match by unqualified name (Avro 1.11), or when one of the reader's aliases names the
    writer's type (by full or unqualified name, as fastavro and the Java reader accept)."""
    w_full = w["name"]
    w_short = w_full.rpartition(".")[2]
    if w_short == r["name"].rpartition(".")[2]:
        return True
    return any(alias in (w_full, w_short) for alias in r.get("aliases", ()))
