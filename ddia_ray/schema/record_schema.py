"""A codec ``@record`` class as an Avro record schema.

Theory of operation: a record class already says everything a schema needs, in its dataclass
fields: names, types (annotations) and defaults. The record's codec tag names the Avro record
(``"shop.order"`` becomes the record ``order`` in namespace ``shop``), so renaming the class does not
rename the schema, exactly as it does not change the codec's wire format. The mapping:

=============================================  ===============================================
annotation                                     Avro type
=============================================  ===============================================
``bool``, ``int``, ``float``, ``str``,         ``boolean``, ``long``, ``double``, ``string``,
``bytes``, ``None``                            ``bytes``, ``null``
``X | None``, ``Optional[X]``, ``X | Y``       a union; the branch the default belongs to comes
                                               first (Avro reads a union's default by its first
                                               branch), else ``null`` first
``tuple[X, ...]``, ``list[X]``,                ``{"type": "array", "items": X}`` (a fixed-length
``frozenset[X]``, ``tuple[X, X]``              tuple of several item types has no equivalent)
``dict[str, X]``, ``Mapping[str, X]``          ``{"type": "map", "values": X}``
another ``@record`` class                      that record, nested (named by its own tag)
``X = None`` (X not optional)                  ``["null", X]``: the default says what the
                                               annotation left out
=============================================  ===============================================

``int`` is ``long`` because the codec writes Python ints of up to 64 bits; ``float`` is ``double``.
Annotations with no Avro equivalent (``Any``, a bare ``tuple`` or ``dict``, a map with non-string
keys) raise :class:`~ddia_ray.errors.SchemaMappingError` naming the field. Extra attributes
``ddia.tag`` and ``ddia.version`` record where the schema came from; like docs, they are not part
of the canonical form and so do not change the fingerprint. The class docstring is left out, so
that rewording it does not make a new schema.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import types
import typing
from typing import Any

from ..codec import record_type_of
from ..errors import SchemaMappingError

__all__ = ["record_to_avro"]

_SCALARS: dict[Any, str] = {bool: "boolean", int: "long", float: "double", str: "string", bytes: "bytes",
                            type(None): "null"}
_SEQUENCES = (tuple, list, frozenset, set, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def record_to_avro(cls: type) -> dict[str, Any]:
    """The Avro record schema (a JSON value) of the ``@record`` class ``cls``; raises
    :class:`~ddia_ray.errors.SchemaMappingError` for a class that is no record or a field type with
    no Avro equivalent."""
    return _Mapper().record(cls, cls.__name__ if isinstance(cls, type) else repr(cls))


def _avro_name(tag: str) -> tuple[str, str]:
    """(namespace, name) of a codec tag: ``"shop.order"`` -> ``("shop", "order")``; characters Avro
    names cannot hold become ``_``, and a part starting with a digit gets a leading ``_``."""
    parts = [_NOT_NAME.sub("_", p) or "_" for p in tag.split(".")]
    parts = ["_" + p if p[0].isdigit() else p for p in parts]
    return ".".join(parts[:-1]), parts[-1]


class _Mapper:
    """One mapping: named records already emitted are referred to by full name afterwards."""

    def __init__(self) -> None:
        self.emitted: set[str] = set()

    def record(self, cls: type, path: str) -> Any:
        rt = record_type_of(cls) if isinstance(cls, type) else None
        if rt is None:
            raise SchemaMappingError(f"{path}: {cls!r} is not a @record class")
        namespace, name = _avro_name(rt.tag)
        full = f"{namespace}.{name}" if namespace else name
        if full in self.emitted:
            return full
        self.emitted.add(full)
        try:
            hints = typing.get_type_hints(rt.cls)
        except Exception as e:  # noqa: BLE001 - NameError, TypeError, ...: any unresolvable annotation
            raise SchemaMappingError(f"{path}: the annotations of {rt.cls.__qualname__} cannot be resolved "
                                     f"({e!r}); define the types it names at module level") from None
        fields = []
        for f in dataclasses.fields(rt.cls):
            if f.name == "_unknown":
                continue
            here = f"{path}.{f.name}"
            default = _default_of(f)
            avro_type = self.type(hints.get(f.name, Any), here, default)
            if default is None and not (isinstance(avro_type, list) and "null" in avro_type) and avro_type != "null":
                # ``x: dict[str, int] = None``: the default says "optional" where the annotation forgot to.
                avro_type = ["null", *(avro_type if isinstance(avro_type, list) else [avro_type])]
            field: dict[str, Any] = {"name": f.name, "type": avro_type}
            if default is not dataclasses.MISSING:
                field["default"] = _json_default(default, here)
            fields.append(field)
        out: dict[str, Any] = {"type": "record", "name": name}
        if namespace:
            out["namespace"] = namespace
        # No "doc" from the docstring: rewording a docstring must not make a new schema version.
        out["fields"] = fields
        out["ddia.tag"] = rt.tag
        out["ddia.version"] = rt.version
        return out

    def type(self, hint: Any, path: str, default: Any = dataclasses.MISSING) -> Any:
        if hint in _SCALARS:
            return _SCALARS[hint]
        if isinstance(hint, type) and record_type_of(hint) is not None:
            return self.record(hint, path)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
            return self.union(args, path, default)
        if origin in _SEQUENCES and args:
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.type(args[0], path + "[]")}
            distinct = list(dict.fromkeys(args))
            if len(distinct) > 1:  # Avro arrays hold one type; a union of them could not have a default
                raise SchemaMappingError(f"{path}: {hint!r} mixes item types, which an Avro array cannot; "
                                         "use a @record class for the tuple")
            return {"type": "array", "items": self.type(distinct[0], path + "[]")}
        if origin in _MAPPINGS and len(args) == 2:
            if args[0] is not str:
                raise SchemaMappingError(f"{path}: Avro map keys are strings; {hint!r} has {args[0]!r} keys")
            return {"type": "map", "values": self.type(args[1], path + "{}")}
        raise SchemaMappingError(f"{path}: {hint!r} has no Avro equivalent; annotate the field with bool, int, float, "
                                 "str, bytes, a @record class, or tuple/list/dict of them (with item types)")

    def union(self, args: tuple, path: str, default: Any) -> list:
        branches = [(a, self.type(a, path)) for a in args]
        if default is not dataclasses.MISSING:
            first = next((i for i, (a, _) in enumerate(branches) if _holds(a, default)), None)
        else:
            first = next((i for i, (a, _) in enumerate(branches) if a is type(None)), None)
        if first:
            branches.insert(0, branches.pop(first))
        return [avro for _, avro in branches]


def _holds(hint: Any, value: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` (shallowly: enough to pick a union's branch)."""
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    origin = typing.get_origin(hint)
    return isinstance(origin, type) and isinstance(value, origin)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _json_default(value: Any, path: str) -> Any:
    """A Python default as Avro JSON (bytes as a string of code points 0-255, records as objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, (tuple, list)):
        return [_json_default(v, path + "[]") for v in value]
    if isinstance(value, (frozenset, set)):  # in a fixed order: the same class gives the same schema text
        return sorted((_json_default(v, path + "[]") for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _json_default(v, path + "{}") for k, v in value.items()}
    if record_type_of(value) is not None:
        return {f.name: _json_default(getattr(value, f.name), f"{path}.{f.name}")
                for f in dataclasses.fields(value) if f.name != "_unknown"}
    raise SchemaMappingError(f"{path}: the default {value!r} has no Avro equivalent")
