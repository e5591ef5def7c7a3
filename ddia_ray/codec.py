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
    key      := str | bin  # hashed with a per-process random seed: no crafted collisions
    record   := ext(code=FORMAT_1, data=msgpack(map{"t": tag, "v": version, "f": fields}))
    fields   := map(str -> value)
    tag      := str      # stable name, e.g. "clock.lamport"
    version  := uint     # schema version of that type, starting at 1

Arrays decode as tuples so records stay hashable. Any other ext code is a
wire format this reader does not know and raises :class:`UnknownVersionError`.

Limits
------
Bytes from the wire or the disk may be hostile, and an actor thread may have
as little as 1 MiB of C stack, so both directions bound a payload
(docs/codec.md has the reasons and the measurements):

* records nest at most :data:`RECORD_DEPTH_MAX` (16) deep; ours need 5, an
  envelope holding a Raft message, its snapshot, the snapshot's metadata and
  its configuration;
* inside one record's fields, arrays and maps nest at most
  :data:`FIELD_DEPTH_MAX` (16) deep (ours need 2); outside any record,
  msgpack's own bounds apply: 1024 levels to unpack, and to pack since
  msgpack 1.2 (511 before);
* map keys are str or bin, whose hashes are seeded per process: int, float
  and array keys can be chosen to collide, which makes building a map
  quadratic;
* no length in a header may exceed the bytes of its frame, so a decode holds
  at most about 100 bytes of Python objects per input byte.

A violation raises :class:`CorruptRecordError` on decode and a
:class:`CodecError` naming the limit on encode. No other exception leaves
:func:`encode` or :func:`decode` but ``MemoryError``, which says that the
process is short of memory, not that the bytes are bad. :func:`encode` checks
the fields of every record, but packs plain values outside any record as
given (checking them would cost as much as packing them): a map key other
than str or bytes there is refused when read, not when written.

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
import functools
import importlib
import itertools
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

if TYPE_CHECKING:  # type checkers learn that @record makes a frozen dataclass (PEP 681)
    from typing_extensions import dataclass_transform
elif sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10 at run time: the marker only informs type checkers
    def dataclass_transform(**_kwargs):
        return lambda fn: fn

import msgpack

from .errors import CodecError, CorruptRecordError, UnknownTypeError, UnknownVersionError

__all__ = ["record", "encode", "decode", "registered", "record_type_of", "register_module", "registered_modules",
           "FORMAT_1", "RecordType",
           "RECORD_DEPTH_MAX", "FIELD_DEPTH_MAX", "check_value", "prechecked", "prechecked_maker", "record_fields"]

FORMAT_1 = 1
_VERSION_KEY = "\x00writer_version"

#: How deep records may nest in records (a record on its own is depth 1).
RECORD_DEPTH_MAX = 16
#: How deep arrays and maps may nest inside one record's fields (a record there starts its own count).
FIELD_DEPTH_MAX = 16
#: msgpack's own nesting bounds for arrays and maps: its unpacker's, and its packer's (raised in msgpack 1.2).
_UNPACK_DEPTH_MAX = 1024
_PACK_DEPTH_MAX = 1024 if msgpack.version >= (1, 2) else 511
#: The payload and the record frames above this depth are parsed by ``msgpack.unpackb``, which keeps its
#: parse stack (about 40 KiB) on the C stack; deeper frames go to an ``Unpacker``, which keeps it on the heap.
_STACK_PARSE_DEPTH = 4

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
    fields_checked: bool = False
    field_set: frozenset = dataclasses.field(init=False, repr=False, compare=False)  # field_names, for lookups

    def __post_init__(self):
        object.__setattr__(self, "field_set", frozenset(self.field_names))


_BY_TAG: dict[str, RecordType] = {}
_BY_CLASS: dict[type, RecordType] = {}


@dataclass_transform(frozen_default=True)
def record(
    tag: str,
    version: int = 1,
    *,
    upgrades: Mapping[int, Callable[[dict], dict]] | None = None,
    accepts_newer: bool = True,
    fields_checked: bool = False,
) -> Callable[[type[T]], type[T]]:
    """Class decorator: make ``cls`` a frozen slotted dataclass encodable by this codec.

    ``upgrades[v]`` maps the field dict of version ``v`` to version ``v + 1``;
    every version from the oldest one you still read up to ``version - 1``
    needs a step. Validate fields in ``__post_init__``: it runs on decode too,
    so corrupt but well-formed input is rejected at the boundary.

    ``fields_checked=True`` promises that ``__post_init__`` refuses every field value
    that :func:`check_value` would refuse (it checks each field's type, or calls
    :func:`check_value`): encode and decode then skip their own walk of the fields,
    which for a batch of a hundred operations costs as much as packing it. Fields
    of a newer version that this one does not know are walked all the same.
    """
    if not isinstance(tag, str) or not tag:
        raise CodecError("record tag must be a non-empty string")
    if not isinstance(version, int) or version < 1:
        raise CodecError(f"record {tag!r}: version must be an int >= 1, got {version!r}")

    def wrap(cls: type[T]) -> type[T]:
        if tag in _BY_TAG and _BY_TAG[tag].cls.__qualname__ != cls.__qualname__:
            raise CodecError(f"record tag {tag!r} is already registered by {_BY_TAG[tag].cls!r}")
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        annotations["_unknown"] = Any  # an object, not a str: dataclasses then never look up the module
        cls.__annotations__ = annotations
        # The class is being made a dataclass with one more field: no static type describes it midway.
        plain: Any = cls
        # Unknown fields ride along but never affect equality, hashing or repr.
        plain._unknown = dataclasses.field(default=None, compare=False, repr=False, kw_only=True)
        dc = dataclasses.dataclass(frozen=True, slots=True)(plain)
        fields = tuple(f.name for f in dataclasses.fields(dc) if f.name != "_unknown")
        required = frozenset(
            f.name
            for f in dataclasses.fields(dc)
            if f.name != "_unknown"
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        rt = RecordType(tag, version, dc, fields, required, dict(upgrades or {}), accepts_newer, fields_checked)
        _BY_TAG[tag] = rt
        _BY_CLASS[dc] = rt
        _FAST.pop(tag, None)  # a re-registered tag (a module reloaded) is built by its new class
        _LEAVES.add(dc)
        return dc

    return wrap


#: Where the record types of ddia-ray itself live, by tag prefix: a process that
#: decodes one (a Ray worker that never imported the module) loads it on demand.
#: Applications add theirs with :func:`register_module`.
_MODULES: dict[str, str] = {
    "balancing": "ddia_ray.balancing",
    "caching": "ddia_ray.caching",
    "clock": "ddia_ray.clocks",
    "error": "ddia_ray.error_record",
    "demo": "ddia_ray.demo.replica",
    "membership": "ddia_ray.membership",
    "net": "ddia_ray.runtime",
    "resilience": "ddia_ray.resilience",
    "runtime": "ddia_ray.runtime",
    "storage": "ddia_ray.storage",
    "partitioning": "ddia_ray.partitioning",
    "raft": "ddia_ray.consensus.raft",
    "kv": "ddia_ray.kv",
    "history": "ddia_ray.history",
    "events": "ddia_ray.events.records",
    "config": "ddia_ray.config.records",
    "schema": "ddia_ray.schema",
    "seed": "ddia_ray.events.domain",
    "crdt": "ddia_ray.crdt",
}


def register_module(prefix: str, module: str) -> None:
    """Tags ``"<prefix>.*"`` are defined in ``module``, imported the first time one is decoded."""
    if not prefix or "." in prefix:
        raise CodecError(f"a tag prefix is the part before the first '.', got {prefix!r}")
    _MODULES[prefix] = module


def registered_modules() -> Mapping[str, str]:
    """Tag prefix -> module of every prefix :func:`registered` imports on demand (a copy), so that
    a caller can refuse a prefix that is taken before it calls :func:`register_module`."""
    return dict(_MODULES)


def record_type_of(obj: Any) -> RecordType | None:
    """The registration of ``obj``'s class (or of ``obj`` when it is a class); None if it is no record."""
    return _BY_CLASS.get(obj if isinstance(obj, type) else type(obj))


def registered(tag: str) -> RecordType:
    """The registration of ``tag`` (importing its module if known); raises :class:`UnknownTypeError`,
    or :class:`CodecError` if that module fails to import."""
    rt = _BY_TAG.get(tag)
    if rt is None:
        module = _MODULES.get(tag.partition(".")[0])
        if module is not None:
            try:
                importlib.import_module(module)  # registers its types as a side effect
            except Exception as e:
                raise CodecError(f"record type {tag!r}: importing {module!r}, its module, failed: {e!r}") from e
            rt = _BY_TAG.get(tag)
        if rt is None:
            raise UnknownTypeError(tag, len(_BY_TAG))
    return rt


#: What ends the walk of :func:`_check_fields`: scalars, and records (whose own frame is checked by itself).
_LEAVES: set[type] = {str, bytes, bytearray, memoryview, int, float, bool, type(None)}
_CONTAINERS = (tuple, list, dict, set, frozenset)  # what msgpack packs as an array or a map
_KEY_TYPES = frozenset({str, bytes})
_TUPLE_ONLY = frozenset({tuple})
_CONTAINER_TYPES = frozenset(_CONTAINERS)  # exactly these types (a subclass is found by isinstance)
_PLAIN = frozenset(_LEAVES) | _CONTAINER_TYPES
_chain = itertools.chain.from_iterable


def _check_fields(values, tag: str, error: type[CodecError]) -> None:
    """Raise ``error`` if arrays and maps in a record's field ``values`` nest deeper than FIELD_DEPTH_MAX,
    or a map among them has a key that is neither str nor bytes."""
    for v in values:  # the common cases first, at little cost: a scalar, a record, a flat tuple or map
        t = type(v)
        if t in _LEAVES or (t is tuple and _LEAVES.issuperset(map(type, v))):
            continue
        if t is dict and _KEY_TYPES.issuperset(map(type, v)) and _LEAVES.issuperset(map(type, v.values())):
            continue
        # A batch: a tuple of flat tuples (a KVBatch's operations), checked in two C-level passes
        # rather than a Python step per element (a tenth of the cost at 100 operations).
        if t is tuple and _TUPLE_ONLY.issuperset(map(type, v)) and _LEAVES.issuperset(map(type, _chain(v))):
            continue
        _check_nesting(values, tag, error)
        return


def _check_nesting(values, tag: str, error: type[CodecError]) -> None:
    """The general case of :func:`_check_fields`: breadth-first, one level of containers at a time.

    A level made of tuples only (what decode gives for arrays, and what log entries and batches
    are) is walked in C: its elements are chained into one list, and the containers among them
    picked out with ``compress`` over their exact types, so a replication message of 1,000
    entries-of-operations costs a few C passes instead of a Python step per operation. Other
    levels (maps, lists, subclasses of the container types, records) take the per-element step.
    """
    level: list[Any] = [v for v in values if type(v) not in _LEAVES and isinstance(v, _CONTAINERS)]
    depth = 0
    while level:
        depth += 1
        if depth > FIELD_DEPTH_MAX:
            raise error(f"record {tag!r}: arrays and maps nest deeper than FIELD_DEPTH_MAX={FIELD_DEPTH_MAX} "
                        "inside its fields")
        if _TUPLE_ONLY.issuperset(map(type, level)):
            items = list(_chain(level))
            kinds = set(map(type, items))
            if kinds <= _LEAVES:
                return
            if kinds <= _PLAIN:  # leaves and exact containers: the containers, found in C
                level = list(itertools.compress(items, map(_CONTAINER_TYPES.__contains__, map(type, items))))
                continue
        inner = []
        for c in level:
            if isinstance(c, dict):
                if not _KEY_TYPES.issuperset(map(type, c)):
                    for k in c:
                        if not isinstance(k, (str, bytes)):
                            raise error(f"record {tag!r}: a map key is {type(k).__name__}; "
                                        "map keys must be str or bytes")
                c = c.values()
            if not _LEAVES.issuperset(map(type, c)):
                inner += [v for v in c if type(v) not in _LEAVES and isinstance(v, _CONTAINERS)]
        level = inner


def prechecked(cls: type[T], *values: Any) -> T:
    """A ``cls`` record of ``values`` (every field, in declaration order), built without running
    its ``__post_init__``.

    For a hot path that wraps parts this process has checked already in a new record: a replica
    forwarding log entries it accepted (each arrived in a checked message) would otherwise walk
    every operation again per message. Anything not checked before goes through ``cls(...)``.
    """
    rt = _BY_CLASS.get(cls)
    if rt is None:
        raise CodecError(f"{cls!r} is not a registered record class")
    if len(values) != len(rt.field_names):
        raise CodecError(f"{rt.tag!r} has {len(rt.field_names)} fields, got {len(values)} values")
    return prechecked_maker(cls)(*values)


def prechecked_maker(cls: type[T]) -> Callable[..., T]:
    """The constructor :func:`prechecked` uses for ``cls``: a function of every field value in
    declaration order (no check of their count: the caller's loop builds them all alike). For a
    loop that builds many records of rows this process decoded and checked (a page of events)."""
    make = _MAKERS.get(cls)
    if make is None:
        rt = _BY_CLASS.get(cls)
        if rt is None:
            raise CodecError(f"{cls!r} is not a registered record class")
        make = _MAKERS[cls] = _maker(cls, len(rt.field_names))
    return make


#: record class -> its :func:`prechecked` constructor, made on first use.
_MAKERS: dict[type, Callable[..., Any]] = {}


def _maker(cls: type, n: int) -> Callable[..., Any]:
    """A function of ``n`` field values that builds a ``cls`` record: ``object.__new__`` and each
    slot's own setter, in one generated straight-line function (about half the time of the
    frozen dataclass ``__init__``, whose every field goes through ``object.__setattr__``; a page
    of a thousand events is built so). The generated text holds only indices, never a name."""
    slots: Any = cls  # a record class: its fields and ``_unknown`` are slots, each with its setter
    setters = {f"s{i}": getattr(slots, name).__set__ for i, name in enumerate(_BY_CLASS[cls].field_names)}
    params = ", ".join(f"v{i}" for i in range(n))
    body = "".join(f"    s{i}(o, v{i})\n" for i in range(n))
    namespace = {"new": object.__new__, "cls": cls, "unknown": slots._unknown.__set__, **setters}
    exec(f"def make({params}):\n    o = new(cls)\n{body}    unknown(o, None)\n    return o\n", namespace)
    return namespace["make"]


def check_value(value: Any, what: str = "value") -> None:
    """Raise :class:`CodecError` if ``value`` could not travel as a record field.

    :func:`encode` checks nesting and map keys inside records only (outside them the check
    would cost as much as packing). Code that accepts a user's value now and encodes it later,
    inside a batch with other callers' values or in a log entry that every replica must decode,
    calls this first, so that one bad value fails its own call instead of the batch or the log.
    """
    if type(value) not in _LEAVES:
        _check_fields((value,), what, CodecError)


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
    if not rt.fields_checked or unknown:
        _check_fields(fields.values(), rt.tag, CodecError)
    # A record nests inside the frame of its parent, so each nesting depth needs its own packer
    # (a Packer is not reentrant); reusing them avoids building one per record.
    local = _packers
    depth = local.depth
    if depth >= RECORD_DEPTH_MAX:
        raise CodecError(f"record {rt.tag!r} would nest deeper than RECORD_DEPTH_MAX={RECORD_DEPTH_MAX} records")
    stack = local.stack
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
    return _new_tuple(msgpack.ExtType, (FORMAT_1, inner))  # ExtType() would check again what holds here


class _Packers(threading.local):
    """Per thread: the packer of each record nesting depth, and the depth being packed."""

    depth = 0

    def __init__(self) -> None:
        self.stack: list = []


_packers = _Packers()
_new_tuple = tuple.__new__


def encode(obj: Any) -> bytes:
    """Encode a record, or plain data holding records, as versioned msgpack bytes.

    Raises :class:`CodecError` for anything else, and for values beyond the limits in the module docstring
    (``MemoryError`` passes through).
    """
    try:
        return msgpack.packb(obj, default=_default, use_bin_type=True)
    except (CodecError, MemoryError):
        raise
    except ValueError as e:
        if "recursion limit" in str(e):  # msgpack's packer: arrays and maps deeper than it packs
            raise CodecError(f"cannot encode {type(obj).__name__!r}: arrays and maps nest deeper than "
                             f"msgpack's {_PACK_DEPTH_MAX} levels") from e
        raise CodecError(f"cannot encode {type(obj).__name__!r}: {e}") from e
    except Exception as e:  # a failing comparison while sorting a set, a RecursionError...
        raise CodecError(f"cannot encode {type(obj).__name__!r}: {type(e).__name__}: {e}") from e


_FRAME_KEYS = frozenset({"t", "v", "f"})

#: tag -> (version, field names, generated constructor, ``__post_init__`` or None, fields_checked), filled
#: by :func:`_build` the first time it builds a record of the current version whole, for its fast path.
_FAST: dict[str, tuple] = {}


def _build(frame: Any) -> Any:
    """The record of a decoded frame ``{"t": tag, "v": version, "f": fields}``, checked.

    The common frame (the current version, every field in declaration order, as :func:`encode`
    writes it) takes a path that does the same checks with one cache lookup: a small record's
    decode is mostly this function's fixed cost, and a typing trace or an event page decodes
    thousands of them. Anything else goes the general way (:func:`_build_general`)."""
    if type(frame) is dict and len(frame) == 3:
        tag: Any = frame.get("t")
        fast = _FAST.get(tag) if type(tag) is str else None
        if fast is not None:
            version, names, make, post, checked = fast
            fields = _whole_fields(frame, version, names)
            if fields is not None:
                if not checked:
                    _check_fields(fields.values(), tag, CorruptRecordError)
                try:
                    obj = make(*fields.values())
                    if post is not None:
                        post(obj)
                    return obj
                except (MemoryError, RecursionError):
                    raise
                except Exception as e:  # as in _build_general
                    raise CorruptRecordError(f"record {tag!r} v{version} has invalid field values: {e}") from e
    return _build_general(frame)


def _whole_fields(frame: dict, version: int, names: tuple) -> dict | None:
    """The field map of ``frame`` (a decoded record frame, its tag already matched) if it is of
    ``version`` with every field of ``names`` in order, as :func:`encode` writes it; else None."""
    fields = frame.get("f")
    v = frame.get("v")
    if type(v) is int and v == version and type(fields) is dict and tuple(fields) == names:
        return fields
    return None


def _build_general(frame: Any) -> Any:
    """:func:`_build` for every frame: older and newer versions, fields missing or out of order."""
    if not isinstance(frame, dict) or not _FRAME_KEYS <= frame.keys():
        raise CorruptRecordError("record frame is not a map with 't', 'v' and 'f'")
    tag, version, fields = frame["t"], frame["v"], frame["f"]
    if not isinstance(tag, str) or type(version) is not int or version < 1 or not isinstance(fields, dict):
        raise CorruptRecordError(f"record frame has malformed tag/version/fields: {tag!r:.80}, {version!r:.40}")
    rt = registered(tag)
    if not rt.fields_checked or not fields.keys() <= rt.field_set:
        _check_fields(fields.values(), tag, CorruptRecordError)
    unknown: dict | None = None
    if version == rt.version:
        if not fields.keys() <= rt.field_set:
            extra = [k for k in fields if k not in rt.field_set]
            raise CorruptRecordError(f"record {tag!r} v{version} has fields it never defined: {extra[:8]!r:.200}")
    elif version < rt.version:
        for v in range(version, rt.version):
            step = rt.upgrades.get(v)
            if step is None:
                oldest = min([k for k in rt.upgrades if all(j in rt.upgrades for j in range(k, rt.version))]
                             or [rt.version])
                raise UnknownVersionError(tag, version, f"versions {oldest}..{rt.version}")
            try:
                fields = step(dict(fields))
            except MemoryError:
                raise
            except Exception as e:
                raise CorruptRecordError(f"record {tag!r} v{v}: its upgrade step failed: {e!r:.200}") from e
            if not isinstance(fields, dict):
                raise CorruptRecordError(f"record {tag!r} v{v}: its upgrade step returned no field map")
    else:
        if not rt.accepts_newer:
            raise UnknownVersionError(tag, version, f"versions up to {rt.version} (newer ones are refused)")
        unknown = {k: v for k, v in fields.items() if k not in rt.field_set}
        unknown[_VERSION_KEY] = version
        fields = {k: v for k, v in fields.items() if k in rt.field_set}
    whole = unknown is None and tuple(fields) == rt.field_names
    if not whole:
        missing = rt.required - fields.keys()
        if missing:
            raise CorruptRecordError(f"record {tag!r} v{version} lacks required fields {sorted(missing)}")
    try:
        if whole:
            # Every field, in declaration order (as encode writes them): the generated constructor,
            # then the class's own checks as its __init__ would run them, without binding keywords.
            make: Callable[..., Any] = prechecked_maker(rt.cls)
            post = getattr(rt.cls, "__post_init__", None)
            obj: Any = make(*fields.values())
            if post is not None:
                post(obj)
            if _BY_TAG.get(tag) is rt:  # (the class is registered under this tag: then the fast path may build it)
                _FAST[tag] = (rt.version, rt.field_names, make, post, rt.fields_checked)
            return obj
        return rt.cls(**fields, _unknown=unknown)
    except (MemoryError, RecursionError):  # the process, not the bytes: decode() says which (a shallow stack
        raise  # runs out only when the caller was deep already; the limits bound the nesting itself)
    except Exception as e:  # __post_init__ refusing the values, or failing on them in any other way
        raise CorruptRecordError(f"record {tag!r} v{version} has invalid field values: {e}") from e


def _ext_hook(depth: int, code: int, data: bytes) -> Any:
    """Build the depth-``depth`` record in ``data``; records in its fields go to ``_EXT_HOOKS[depth]``.

    Every length in a frame's headers is bounded by the frame's size (``unpackb`` derives its limits
    from it, the ``Unpacker`` from ``max_buffer_size``), so a short frame cannot make msgpack
    preallocate a long array; ``strict_map_key`` refuses a key other than str or bytes before hashing it.
    """
    if code != FORMAT_1:
        raise UnknownVersionError("<wire format>", code, f"format {FORMAT_1}")
    if depth < _STACK_PARSE_DEPTH:
        return _build(msgpack.unpackb(data, ext_hook=_EXT_HOOKS[depth], raw=False, use_list=False,
                                      strict_map_key=True))
    if depth > RECORD_DEPTH_MAX:
        raise CorruptRecordError(f"records nest deeper than RECORD_DEPTH_MAX={RECORD_DEPTH_MAX}")
    size = max(len(data), 1)  # an Unpacker reads max_buffer_size=0 as "no limit"
    unpacker = msgpack.Unpacker(ext_hook=_EXT_HOOKS[depth], raw=False, use_list=False, strict_map_key=True,
                                max_buffer_size=size, read_size=size)
    unpacker.feed(data)
    frame = unpacker.unpack()
    if unpacker.tell() != len(data):
        raise CorruptRecordError(f"record frame has {len(data) - unpacker.tell()} bytes after its value")
    return _build(frame)


#: ``_EXT_HOOKS[d]`` builds a record met in a depth-``d`` frame (the payload is depth 0): one at depth ``d + 1``.
_EXT_HOOKS = tuple(functools.partial(_ext_hook, d + 1) for d in range(RECORD_DEPTH_MAX + 1))


def record_fields(data: bytes, cls: type) -> tuple | None:
    """The field values of the ``cls`` record that ``data`` holds, in declaration order, without
    building the record; None unless ``data`` is exactly that: one record of ``cls``'s tag at its
    current version, every field present and in order (as :func:`encode` writes it).

    For a hot reader that checks every value itself and takes only flat values (a CRDT's one-edit
    delta, :meth:`~ddia_ray.crdt.text.Text.merge_bytes`): the values are **not** checked here (no
    ``__post_init__``, no nesting walk; a record nested in them stays an undecoded
    ``msgpack.ExtType``), so the caller must refuse anything but the exact shapes it reads and
    :func:`decode` the bytes for the rest, which checks everything and raises what is wrong. What it
    reads is bounded as in :func:`decode` (lengths by the input's size).
    """
    rt = _BY_CLASS.get(cls)
    if rt is None:
        raise CodecError(f"{cls!r} is not a registered record class")
    # The ext header read here (msgpack's ext 8/16/32 with the frame's length, then the format code),
    # not by a call to unpackb that would build an ExtType only to take it apart: on a 60-byte delta
    # that call and that object are a tenth of the reader's time.
    if type(data) is not bytes or len(data) < 6:
        return None
    head = data[0]
    if head == 0xC7:
        size, at = data[1], 3
    elif head == 0xC8:
        size, at = int.from_bytes(data[1:3], "big"), 4
    elif head == 0xC9:
        size, at = int.from_bytes(data[1:5], "big"), 6
    else:
        return None  # a fixext or no ext at all: not what encode writes for a record
    if data[at - 1] != FORMAT_1 or len(data) != at + size:
        return None
    try:
        frame = msgpack.unpackb(data[at:], raw=False, use_list=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - not the exact shape: decode() reads it and names the fault
        return None
    if type(frame) is not dict or len(frame) != 3 or frame.get("t") != rt.tag:
        return None
    fields = _whole_fields(frame, rt.version, rt.field_names)
    return None if fields is None else tuple(fields.values())


def decode(data: bytes, expect: type | tuple[type, ...] | None = None) -> Any:
    """Decode bytes written by :func:`encode`; ``expect`` checks the top-level type.

    Raises :class:`CorruptRecordError` for bytes that are not a payload within the limits in the module
    docstring, :class:`UnknownTypeError` or :class:`UnknownVersionError` for records this process cannot
    read, and no other exception but ``MemoryError``. Runs no code but registered classes and upgrade steps.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"decode needs bytes, got {type(data).__name__}")
    try:
        obj = msgpack.unpackb(data, ext_hook=_EXT_HOOKS[0], raw=False, use_list=False, strict_map_key=True)
    except (CodecError, MemoryError):  # MemoryError: this process is short of memory, the bytes may be fine
        raise
    except RecursionError as e:  # the limits keep decode itself shallow: the caller was already deep
        raise CodecError("decode ran out of Python recursion depth; call it from a shallower stack") from e
    except msgpack.StackError as e:
        raise CorruptRecordError(f"arrays and maps nest deeper than msgpack's {_UNPACK_DEPTH_MAX} levels") from e
    except ValueError as e:
        if "map key" in str(e):  # strict_map_key: "int is not allowed for map key when strict_map_key=True"
            raise CorruptRecordError(f"a map key is {str(e).split()[0]}; map keys must be str or bytes") from e
        raise CorruptRecordError(f"bytes are not valid msgpack: {e}") from e
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CorruptRecordError(f"bytes are not valid msgpack: {type(e).__name__}: {e}") from e
    if expect is not None and not isinstance(obj, expect):
        raise CodecError(f"expected {expect!r}, decoded {type(obj).__name__}")
    return obj
