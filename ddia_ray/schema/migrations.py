"""Declarative migrations between schema versions, in both directions.

Theory of operation
-------------------
A :class:`Migration` carries a datum (a field map) from ``from_version`` to ``to_version`` by a
tuple of rules, each one reversible:

==============================  ===================================  =====================================
rule                            upgrade (old data, new reader)       downgrade (new data, old reader)
==============================  ===================================  =====================================
``AddField(name, default)``     set ``name`` to ``default`` if absent  drop ``name``
``RemoveField(name, default)``  drop ``name``                        set ``name`` to ``default`` if absent
``RenameField(old, new)``       move ``old`` to ``new``              move ``new`` to ``old``
``ChangeType(name, to_type,     ``forward(value)``                   ``backward(value)``
forward, backward)``
==============================  ===================================  =====================================

Upgrade applies the rules in order, downgrade in reverse order. Fields that no rule names pass
through untouched, so a datum of a newer version read by an older reader keeps what that reader
does not know (DDIA 4.1, "Dataflow through databases": an old reader must not lose the newer
fields it rewrites). Rules are codec records: they are persisted and replicated with the schemas
they join. Functions cannot be persisted, so a type change names its conversions, and each
process registers the functions under those names with :func:`conversion` (as the replicated
store's procedures are registered by name).

:func:`migrate` chains the steps of several versions: upward through ``chain[v]`` (keyed by
``from_version``), downward through the steps that end at each version. A missing step is a
:class:`~ddia_ray.errors.MigrationError` naming it, never a silent skip.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ..codec import record
from ..errors import ConfigError, MigrationError, UnknownConversionError
from ..registry import Registry
from .schemas import PRIMITIVES, Schema, parsed

__all__ = ["AddField", "RemoveField", "RenameField", "ChangeType", "Migration", "Rule", "conversion",
           "conversions", "get_conversion", "upgrade", "downgrade", "migrate", "check_chain", "check_migration",
           "infer_rules", "python_default"]

F = TypeVar("F", bound=Callable[[Any], Any])


def _field_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty field name, got {value!r}")


@record("schema.add_field")
class AddField:
    """The newer version adds field ``name``: upgrading older data sets it to ``default`` (a msgpack
    value: None, bool, int, float, str, bytes, tuples and maps of them); downgrading drops it."""

    name: str
    default: Any = None

    def __post_init__(self):
        _field_name(self.name, "AddField.name")


@record("schema.remove_field")
class RemoveField:
    """The newer version drops field ``name``: upgrading drops it; downgrading for an old reader sets
    it to ``default`` (the value that reader gets, since the data no longer holds one)."""

    name: str
    default: Any = None

    def __post_init__(self):
        _field_name(self.name, "RemoveField.name")


@record("schema.rename_field")
class RenameField:
    """Field ``old`` is called ``new`` from the newer version on (Avro declares this with an alias)."""

    old: str
    new: str

    def __post_init__(self):
        _field_name(self.old, "RenameField.old")
        _field_name(self.new, "RenameField.new")
        if self.old == self.new:
            raise ConfigError(f"RenameField renames {self.old!r} to itself")


@record("schema.change_type")
class ChangeType:
    """Field ``name`` changes to Avro type ``to_type``; ``forward`` and ``backward`` name the conversion
    functions (registered with :func:`conversion`) from the old value to the new one and back.

    ``to_type`` is a type name (``"string"``, ``"shop.Money"``) or an Avro type given as a dict or
    list, kept as its compact JSON text so that the rule stays hashable and persists exactly.
    """

    name: str
    to_type: str
    forward: str
    backward: str

    def __post_init__(self):
        _field_name(self.name, "ChangeType.name")
        if isinstance(self.to_type, (dict, list)):
            object.__setattr__(self, "to_type", json.dumps(self.to_type, sort_keys=True, separators=(",", ":")))
        if not isinstance(self.to_type, str) or not self.to_type:
            raise ConfigError(f"ChangeType.to_type must be an Avro type, got {self.to_type!r}")
        for what in ("forward", "backward"):
            if not isinstance(getattr(self, what), str) or not getattr(self, what):
                raise ConfigError(f"ChangeType.{what} must name a registered conversion, "
                                  f"got {getattr(self, what)!r}")


#: The rule types a :class:`Migration` may hold.
Rule = (AddField, RemoveField, RenameField, ChangeType)


@record("schema.migration")
class Migration:
    """The rules that carry data from ``from_version`` to ``to_version`` (upgrade) and back (downgrade)."""

    from_version: int
    to_version: int
    rules: tuple = ()

    def __post_init__(self):
        for what in ("from_version", "to_version"):
            v = getattr(self, what)
            if type(v) is not int or v < 1:
                raise ConfigError(f"Migration.{what} must be an int >= 1, got {v!r}")
        if self.to_version <= self.from_version:
            raise ConfigError(f"a Migration goes up: from_version {self.from_version} >= to_version {self.to_version}")
        if isinstance(self.rules, list):
            object.__setattr__(self, "rules", tuple(self.rules))
        if not isinstance(self.rules, tuple):
            raise ConfigError(f"Migration.rules must be a tuple of rules, got {type(self.rules).__name__}")
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise ConfigError(f"a migration rule is one of AddField, RemoveField, RenameField, ChangeType, "
                                  f"got {rule!r}")


# --- conversions, by name ------------------------------------------------------

def _identity(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _a_function(name: str, fn: Any) -> Callable[[Any], Any]:
    if not callable(fn):
        raise ConfigError(f"conversion {name!r} must be a function, got {fn!r}")
    return fn


_CONVERSIONS: Registry[Callable[[Any], Any]] = Registry(
    "conversion", check=_a_function, same=lambda a, b: _identity(a) == _identity(b))


def conversion(name: str) -> Callable[[F], F]:
    """Decorator: register ``fn`` as the conversion ``name`` for :class:`ChangeType` rules, in this process.

    Registering another function under a taken name raises :class:`~ddia_ray.errors.ConfigError`
    (the same function again, e.g. on a module reload, is fine). Conversions must be pure: they run
    wherever data is migrated, on any replica, any number of times.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a conversion's name must be a non-empty string, got {name!r}")

    def register(fn: F) -> F:
        _CONVERSIONS.register(name, fn)
        return fn

    return register


def conversions() -> tuple[str, ...]:
    """The names of the conversions registered in this process, sorted."""
    return tuple(_CONVERSIONS.names())


def get_conversion(name: str) -> Callable[[Any], Any]:
    """The conversion registered under ``name``; raises :class:`~ddia_ray.errors.UnknownConversionError`."""
    fn = _CONVERSIONS.view.get(name)
    if fn is None:
        raise UnknownConversionError(name, _CONVERSIONS.view)
    return fn


# --- applying rules ----------------------------------------------------------


def upgrade(data: Mapping[str, Any], rules: Sequence[Any]) -> dict[str, Any]:
    """A new field map: ``data`` carried one version up by ``rules`` (applied in order)."""
    out = dict(data)
    for rule in rules:
        if isinstance(rule, AddField):
            if rule.name not in out:
                out[rule.name] = copy.deepcopy(rule.default)
        elif isinstance(rule, RemoveField):
            out.pop(rule.name, None)
        elif isinstance(rule, RenameField):
            _move(out, rule.old, rule.new)
        elif isinstance(rule, ChangeType):
            _convert(out, rule.name, rule.forward)
        else:
            raise MigrationError(f"not a migration rule: {rule!r}")
    return out


def downgrade(data: Mapping[str, Any], rules: Sequence[Any]) -> dict[str, Any]:
    """A new field map: ``data`` carried one version down by ``rules`` (undone in reverse order)."""
    out = dict(data)
    for rule in reversed(tuple(rules)):
        if isinstance(rule, AddField):
            out.pop(rule.name, None)
        elif isinstance(rule, RemoveField):
            if rule.name not in out:
                out[rule.name] = copy.deepcopy(rule.default)
        elif isinstance(rule, RenameField):
            _move(out, rule.new, rule.old)
        elif isinstance(rule, ChangeType):
            _convert(out, rule.name, rule.backward)
        else:
            raise MigrationError(f"not a migration rule: {rule!r}")
    return out


def _move(out: dict, src: str, dst: str) -> None:
    if src in out:
        if dst in out:
            raise MigrationError(f"cannot rename field {src!r} to {dst!r}: the data already has a field {dst!r}")
        out[dst] = out.pop(src)


def _convert(out: dict, name: str, conversion_name: str) -> None:
    fn = get_conversion(conversion_name)  # looked up even when the field is absent: a missing one is a bug now
    if name in out:
        try:
            out[name] = fn(out[name])
        except Exception as e:  # noqa: BLE001 - any failure of user code becomes the migration's error
            raise MigrationError(f"conversion {conversion_name!r} failed on field {name!r} "
                                 f"(value {out[name]!r}): {e!r}") from e


def migrate(data: Mapping[str, Any], chain: Mapping[int, Migration], from_v: int, to_v: int) -> dict[str, Any]:
    """``data`` written at version ``from_v`` as version ``to_v`` holds it: upgraded step by step through
    ``chain[from_v]``, ``chain[next]``, ... when ``to_v`` is newer, downgraded through the steps that end at
    ``from_v``, then at their ``from_version``, ... when it is older.

    Raises :class:`~ddia_ray.errors.MigrationError` naming the missing step if the chain has a gap.
    """
    out = dict(data)
    v = from_v
    if to_v >= from_v:
        while v < to_v:
            step = chain.get(v)
            if step is None:
                raise MigrationError(f"cannot migrate from version {from_v} to {to_v}: "
                                     f"no migration step from version {v}")
            _check_key(v, step)
            if step.to_version > to_v:
                raise MigrationError(f"cannot migrate from version {from_v} to {to_v}: the step from version {v} "
                                     f"goes past it, to version {step.to_version}")
            out = upgrade(out, step.rules)
            v = step.to_version
        return out
    into = _steps_into(chain)
    while v > to_v:
        step = into.get(v)
        if step is None:
            raise MigrationError(f"cannot migrate from version {from_v} down to {to_v}: "
                                 f"no migration step into version {v}")
        if step.from_version < to_v:
            raise MigrationError(f"cannot migrate from version {from_v} down to {to_v}: the step into version {v} "
                                 f"starts before it, at version {step.from_version}")
        out = downgrade(out, step.rules)
        v = step.from_version
    return out


def _check_key(key: int, step: Migration) -> None:
    if step.from_version != key:
        raise MigrationError(f"the migration chain keeps a step from version {step.from_version} under key {key}")


def _steps_into(chain: Mapping[int, Migration]) -> dict[int, Migration]:
    into: dict[int, Migration] = {}
    for key, step in chain.items():
        _check_key(key, step)
        if step.to_version in into:
            raise MigrationError(f"two migration steps end at version {step.to_version} (from versions "
                                 f"{into[step.to_version].from_version} and {step.from_version})")
        into[step.to_version] = step
    return into


# --- checking chains ---------------------------------------------------------


def check_chain(chain: Mapping[int, Migration], versions: Sequence[int]) -> list[str]:
    """The problems of ``chain`` as the path through ``versions`` (each consecutive pair of the sorted
    versions needs the step between them): missing steps, steps under the wrong key or going elsewhere,
    and conversions not registered in this process. [] when data can move between any two of them."""
    problems: list[str] = []
    ordered = sorted(set(versions))
    for a, b in zip(ordered, ordered[1:]):
        step = chain.get(a)
        if step is None:
            problems.append(f"missing step: no migration from version {a} to version {b}")
        elif step.from_version != a:
            problems.append(f"the step kept under version {a} migrates from version {step.from_version}")
        elif step.to_version != b:
            problems.append(f"the step from version {a} goes to version {step.to_version}, not to {b}")
    for key in sorted(chain):
        step = chain[key]
        for rule in step.rules:
            if isinstance(rule, ChangeType):
                for name in (rule.forward, rule.backward):
                    if name not in _CONVERSIONS:
                        problems.append(f"unknown conversion {name!r} (type change of field {rule.name!r} from "
                                        f"version {step.from_version} to {step.to_version}); register it with "
                                        "@conversion")
    return problems


def check_migration(old: Schema, new: Schema, step: Migration) -> list[str]:
    """The problems of ``step`` as the migration from record schema ``old`` to ``new``: rules naming fields
    that are not where they should be, new fields that nothing fills (no default, no rule), and type
    changes Avro cannot promote that no :class:`ChangeType` declares. [] for non-record schemas."""
    old_fields, new_fields = _fields(old), _fields(new)
    if old_fields is None or new_fields is None:
        return []
    problems: list[str] = []
    names = set(old_fields)  # the field names as the rules move them along
    renamed: dict[str, str] = {}  # new name -> old name
    changed: set[str] = set()
    for rule in step.rules:
        if isinstance(rule, AddField):
            if rule.name not in new_fields:
                problems.append(f"AddField({rule.name!r}): the new schema has no field {rule.name!r}")
            names.add(rule.name)
        elif isinstance(rule, RemoveField):
            if rule.name not in names:
                problems.append(f"RemoveField({rule.name!r}): the old schema has no field {rule.name!r}")
            names.discard(rule.name)
        elif isinstance(rule, RenameField):
            if rule.old not in names:
                problems.append(f"RenameField({rule.old!r}, {rule.new!r}): the old schema has no field {rule.old!r}")
            if rule.new not in new_fields:
                problems.append(f"RenameField({rule.old!r}, {rule.new!r}): the new schema has no field {rule.new!r}")
            names.discard(rule.old)
            names.add(rule.new)
            renamed[rule.new] = renamed.pop(rule.old, rule.old)
        elif isinstance(rule, ChangeType):
            if rule.name not in new_fields:
                problems.append(f"ChangeType({rule.name!r}): the new schema has no field {rule.name!r}")
            elif not _same_type(rule.to_type, new_fields[rule.name]["type"], new):
                problems.append(f"ChangeType({rule.name!r}) changes it to {rule.to_type}, but the new schema "
                                f"has {_type_text(new_fields[rule.name]['type'], new)}")
            changed.add(rule.name)
    for name, field in new_fields.items():
        if name not in names and "default" not in field:
            problems.append(f"field {name!r} is new, has no default and no AddField or RenameField fills it")
        source = renamed.get(name, name)
        if name in names and source in old_fields and name not in changed:
            before = _type_text(old_fields[source]["type"], old)
            after = _type_text(field["type"], new)
            if before != after and (before, after) not in _PROMOTIONS_TEXT:
                problems.append(f"field {name!r} changes type from {before} to {after}: declare a ChangeType with "
                                "conversions")
    return problems


_PROMOTIONS_TEXT = frozenset({(f'"{a}"', f'"{b}"') for a, b in (
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"))})


def _fields(schema: Schema) -> dict[str, dict] | None:
    avro = parsed(schema).avro
    if isinstance(avro, dict) and avro.get("type") in ("record", "error"):
        return {f["name"]: f for f in avro["fields"]}
    return None


def _same_type(to_type: str, node: Any, schema: Schema) -> bool:
    """Whether a ChangeType's ``to_type`` (a type name or JSON) names the field type ``node``."""
    try:
        declared = json.loads(to_type)
    except ValueError:
        declared = to_type  # a name: "long", "shop.Money" or "Money"
    actual = _type_text(node, schema)
    if _type_text(declared, schema) == actual:
        return True
    full = json.loads(actual)
    return isinstance(declared, str) and isinstance(full, str) and full.rpartition(".")[2] == declared


def _type_text(node: Any, schema: Schema) -> str:
    """A field type's canonical JSON, named types by name (their own evolution is their own check)."""
    if isinstance(node, dict) and node.get("type") in PRIMITIVES:
        node = node["type"]
    if isinstance(node, dict) and "name" in node:
        node = node["name"]
    if isinstance(node, dict):
        node = {k: v for k, v in node.items() if k in ("type", "items", "values")}
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


# --- inference -----------------------------------------------------------------


def infer_rules(old: Schema, new: Schema) -> tuple:
    """The rules from record schema ``old`` to ``new`` that the schemas themselves declare: a new field
    whose alias names an old field is a :class:`RenameField`; another new field is an :class:`AddField`
    with its Avro default; an old field gone is a :class:`RemoveField` with its old default (or None).

    Type changes need conversions and are never inferred. A new field without a default raises
    :class:`~ddia_ray.errors.MigrationError` (old data has no value for it). () for non-record schemas.
    """
    old_fields, new_fields = _fields(old), _fields(new)
    if old_fields is None or new_fields is None:
        return ()
    names = parsed(new).names
    rules: list[Any] = []
    taken: set[str] = set()
    for name, field in new_fields.items():
        if name in old_fields:
            taken.add(name)
            continue
        alias = next((a for a in field.get("aliases", ()) if a in old_fields and a not in new_fields), None)
        if alias is not None and alias not in taken:
            rules.append(RenameField(alias, name))
            taken.add(alias)
        elif "default" in field:
            rules.append(AddField(name, python_default(field["default"], field["type"], names)))
        else:
            raise MigrationError(f"field {name!r} is new in the newer schema and has no default: give it one, "
                                 "or declare an AddField with a default")
    old_names = parsed(old).names
    for name, field in old_fields.items():
        if name not in taken:
            default = python_default(field["default"], field["type"], old_names) if "default" in field else None
            rules.append(RemoveField(name, default))
    return tuple(rules)


def python_default(value: Any, node: Any, names: Mapping[str, Any]) -> Any:
    """An Avro JSON default as the value a Python reader holds: bytes and fixed strings become bytes
    (code points 0-255, one per byte), a union's default is its first branch's, the rest stays JSON."""
    if isinstance(node, str):
        node = names.get(node, node)
    if isinstance(node, list):
        return python_default(value, node[0], names) if node else value
    kind = node if isinstance(node, str) else node.get("type")
    if kind in ("bytes", "fixed") and isinstance(value, str):
        return value.encode("latin-1")
    if kind == "array" and isinstance(value, list):
        return [python_default(v, node["items"], names) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: python_default(v, node["values"], names) for k, v in value.items()}
    if kind in ("record", "error") and isinstance(value, dict):
        out = {}
        for f in node["fields"]:
            if f["name"] in value:
                out[f["name"]] = python_default(value[f["name"]], f["type"], names)
            elif "default" in f:
                out[f["name"]] = python_default(f["default"], f["type"], names)
        return out
    return value
