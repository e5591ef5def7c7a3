"""Versioned msgpack encoding for every message and persisted record.

Theory of operation
-------------------
A *record* is a frozen, slotted dataclass registered under a stable type tag
and a schema version with :func:`record`. :func:`encode` turns a record (or
plain data containing records) into bytes, :func:`decode` turns bytes back.
No pickle is involved anywhere: decoding can only build registered record
classes from plain values, so nothing read from disk or the wire runs code.

Wire grammar (msgpack, format 1)::

    payload  := value
    value    := nil | bool | int | float | str | bin | array(value*) | map(key value)*
              | record
    record   := ext(code=FORMAT_1, data=msgpack(map{"t": tag, "v": version, "f": fields}))
    fields   := map(str -> value)
    tag      := str      # stable name, e.g. "clock.lamport"
    version  := uint     # schema version of that type, starting at 1

Arrays decode as tuples so records stay hashable. Any other ext code is a
wire format this reader does not know and raises :class:`UnknownVersionError`.

Schema evolution
----------------
* Older versions are upgraded on read by the ``upgrades`` steps given at
  registration: ``upgrades={1: fn}`` turns a v1 field map into a v2 one.
* Newer versions are read when the type was registered with
  ``accepts_newer=True`` (the default; writers promise additive changes
  only, as in protobuf): fields this reader does not know are kept in the
  record's hidden ``_unknown`` slot, and re-encoding writes them back with
  the newer version number, so a rewrite by an old reader loses nothing.
  Types registered with ``accepts_newer=False`` refuse newer versions.
* Unknown tags raise :class:`UnknownTypeError` naming the tag.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from typing import Any, Callable, Mapping, TypeVar

import msgpack

from .errors import CodecError, CorruptRecordError, UnknownTypeError, UnknownVersionError

__all__ = ["record", "encode", "decode", "registered", "register_module", "FORMAT_1", "RecordType"]

FORMAT_1 = 1
_VERSION_KEY = "\x00writer_version"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RecordType:
    """Registration data of one record class."""

    tag: str
    version: int
    cls: type
    field_names: tuple[str, ...]
    required: frozenset
    upgrades: Mapping[int, Callable[[dict], dict]]
    accepts_newer: bool


_BY_TAG: dict[str, RecordType] = {}
_BY_CLASS: dict[type, RecordType] = {}


def record(
    tag: str,
    version: int = 1,
    *,
    upgrades: Mapping[int, Callable[[dict], dict]] | None = None,
    accepts_newer: bool = True,
) -> Callable[[type[T]], type[T]]:
    """Class decorator: make ``cls`` a frozen slotted dataclass encodable by this codec.

    ``upgrades[v]`` maps the field dict of version ``v`` to version ``v + 1``;
    every version from the oldest one you still read up to ``version - 1``
    needs a step. Validate fields in ``__post_init__``: it runs on decode too,
    so corrupt but well-formed input is rejected at the boundary.
    """
    if not isinstance(tag, str) or not tag:
        raise CodecError("record tag must be a non-empty string")
    if not isinstance(version, int) or version < 1:
        raise CodecError(f"record {tag!r}: version must be an int >= 1, got {version!r}")

    def wrap(cls: type[T]) -> type[T]:
        if tag in _BY_TAG and _BY_TAG[tag].cls.__qualname__ != cls.__qualname__:
            raise CodecError(f"record tag {tag!r} is already registered by {_BY_TAG[tag].cls!r}")
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        annotations["_unknown"] = "Any"
        cls.__annotations__ = annotations
        # Unknown fields ride along but never affect equality, hashing or repr.
        setattr(cls, "_unknown", dataclasses.field(default=None, compare=False, repr=False, kw_only=True))
        dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
        fields = tuple(f.name for f in dataclasses.fields(dc) if f.name != "_unknown")
        required = frozenset(
            f.name
            for f in dataclasses.fields(dc)
            if f.name != "_unknown"
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        rt = RecordType(tag, version, dc, fields, required, dict(upgrades or {}), accepts_newer)
        _BY_TAG[tag] = rt
        _BY_CLASS[dc] = rt
        return dc

    return wrap


#: Where the record types of ddia-ray itself live, by tag prefix: a process that
#: decodes one (a Ray worker that never imported the module) loads it on demand.
#: Applications add theirs with :func:`register_module`.
_MODULES: dict[str, str] = {
    "balancing": "ddia_ray.balancing",
    "caching": "ddia_ray.caching",
    "clock": "ddia_ray.clocks",
    "demo": "ddia_ray.demo.replica",
    "membership": "ddia_ray.membership",
    "net": "ddia_ray.runtime",
    "resilience": "ddia_ray.resilience",
    "runtime": "ddia_ray.runtime",
    "storage": "ddia_ray.storage",
    "raft": "ddia_ray.consensus.raft",
    "kv": "ddia_ray.kv",
    "history": "ddia_ray.history",
}


def register_module(prefix: str, module: str) -> None:
    """Tags ``"<prefix>.*"`` are defined in ``module``, imported the first time one is decoded."""
    if not prefix or "." in prefix:
        raise CodecError(f"a tag prefix is the part before the first '.', got {prefix!r}")
    _MODULES[prefix] = module


def registered(tag: str) -> RecordType:
    """The registration of ``tag`` (importing its module if known); raises :class:`UnknownTypeError`."""
    rt = _BY_TAG.get(tag)
    if rt is None:
        module = _MODULES.get(tag.partition(".")[0])
        if module is not None:
            importlib.import_module(module)  # registers its types as a side effect
            rt = _BY_TAG.get(tag)
        if rt is None:
            raise UnknownTypeError(tag, len(_BY_TAG))
    return rt


def _default(obj: Any) -> Any:
    rt = _BY_CLASS.get(type(obj))
    if rt is None:
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        raise CodecError(
            f"cannot encode {type(obj).__name__!r}: only plain values and @record classes are encodable"
        )
    fields = {name: getattr(obj, name) for name in rt.field_names}
    version = rt.version
    unknown = obj._unknown
    if unknown:
        version = max(version, unknown.get(_VERSION_KEY, version))
        for k, v in unknown.items():
            if k != _VERSION_KEY:
                fields.setdefault(k, v)
    # A record nests inside the frame of its parent, so each nesting depth needs its own packer
    # (a Packer is not reentrant); reusing them avoids building one per record.
    local = _packers
    depth = getattr(local, "depth", 0)
    stack = getattr(local, "stack", None)
    if stack is None:
        stack = local.stack = []
    if depth == len(stack):
        stack.append(msgpack.Packer(default=_default, use_bin_type=True))
    local.depth = depth + 1
    try:
        inner = stack[depth].pack({"t": rt.tag, "v": version, "f": fields})
    except BaseException:
        stack[depth] = msgpack.Packer(default=_default, use_bin_type=True)  # its buffer may be half-written
        raise
    finally:
        local.depth = depth
    return msgpack.ExtType(FORMAT_1, inner)


_packers = threading.local()


def encode(obj: Any) -> bytes:
    """Encode a record, or plain data holding records, as versioned msgpack bytes."""
    try:
        return msgpack.packb(obj, default=_default, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot encode {type(obj).__name__!r}: {e}") from e


def _build(data: Any) -> Any:
    if not isinstance(data, dict) or not {"t", "v", "f"} <= data.keys():
        raise CorruptRecordError("record frame is not a map with 't', 'v' and 'f'")
    tag, version, fields = data["t"], data["v"], data["f"]
    if not isinstance(tag, str) or not isinstance(version, int) or not isinstance(fields, dict):
        raise CorruptRecordError(f"record frame has malformed tag/version/fields: {tag!r}, {version!r}")
    rt = registered(tag)
    unknown: dict | None = None
    if version < rt.version:
        for v in range(version, rt.version):
            step = rt.upgrades.get(v)
            if step is None:
                oldest = min([k for k in rt.upgrades if all(j in rt.upgrades for j in range(k, rt.version))]
                             or [rt.version])
                raise UnknownVersionError(tag, version, f"versions {oldest}..{rt.version}")
            fields = step(dict(fields))
    elif version > rt.version:
        if not rt.accepts_newer:
            raise UnknownVersionError(tag, version, f"versions up to {rt.version} (newer ones are refused)")
        unknown = {k: v for k, v in fields.items() if k not in rt.field_names}
        unknown[_VERSION_KEY] = version
        fields = {k: v for k, v in fields.items() if k in rt.field_names}
    else:
        extra = [k for k in fields if k not in rt.field_names]
        if extra:
            raise CorruptRecordError(f"record {tag!r} v{version} has fields it never defined: {extra}")
    missing = rt.required - fields.keys()
    if missing:
        raise CorruptRecordError(f"record {tag!r} v{version} lacks required fields {sorted(missing)}")
    try:
        return rt.cls(**fields, _unknown=unknown)
    except (TypeError, ValueError) as e:
        raise CorruptRecordError(f"record {tag!r} v{version} has invalid field values: {e}") from e


def _ext_hook(code: int, data: bytes) -> Any:
    if code != FORMAT_1:
        raise UnknownVersionError("<wire format>", code, f"format {FORMAT_1}")
    try:
        inner = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, use_list=False, strict_map_key=False)
    except CodecError:
        raise
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CorruptRecordError(f"record body is not valid msgpack: {e}") from e
    if isinstance(inner, dict):
        inner = dict(inner)
        if isinstance(inner.get("f"), dict):
            inner["f"] = dict(inner["f"])
    return _build(inner)


def decode(data: bytes, expect: type | tuple[type, ...] | None = None) -> Any:
    """Decode bytes written by :func:`encode`; ``expect`` checks the top-level type."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"decode needs bytes, got {type(data).__name__}")
    try:
        obj = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, use_list=False, strict_map_key=False)
    except CodecError:
        raise
    except Exception as e:
        raise CorruptRecordError(f"bytes are not valid msgpack: {e}") from e
    if expect is not None and not isinstance(obj, expect):
        raise CodecError(f"expected {expect!r}, decoded {type(obj).__name__}")
    return obj
