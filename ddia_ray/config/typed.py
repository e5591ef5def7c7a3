"""Typed configuration: one key of the store holding a value of a schema, with defaults and validation.

Theory of operation
-------------------
:class:`TypedConfig` binds a key to a *schema*: a pydantic model, or a standard
library dataclass whose ``__post_init__`` checks what its annotations cannot
(both are validated by pydantic, the dataclass through a ``TypeAdapter``).

* :meth:`~TypedConfig.set` validates before anything is written: an invalid
  value raises :class:`~ddia_ray.errors.InvalidConfigValueError` naming the
  field and the reason, and is never stored. A valid one is stored as the
  schema's plain JSON-like form (a dict), so any reader, in any language or
  version, can read it, and the codec's versioned msgpack carries it.
* :meth:`~TypedConfig.get` validates what it reads: the store may hold a value
  that a raw ``put`` wrote around the schema; it raises
  ``InvalidConfigValueError`` rather than hand it out. An absent key reads as
  the schema's defaults.
* :meth:`~TypedConfig.watch` calls back with validated instances only: a value
  that fails validation is skipped and reported (``on_invalid``, and the
  ``invalid`` counter), so a watcher never sees an invalid value. A delete
  reads as the defaults again.

Why pydantic rather than dataclasses with hand-written checks: validating a
configuration means checking every annotated type, including nested models,
lists, optionals and literals, coercing what is unambiguous (``"5"`` for an
``int`` read from a command line), applying constraints (``Field(gt=0)``), and
naming the exact field that failed: that *is* pydantic, and writing it again
over dataclasses would be a second, weaker copy. It is already installed with
``ray[default]`` (the project now names it as a dependency of its own), and its
``TypeAdapter`` validates plain dataclasses too, so a user who prefers them
keeps them, with explicit validators in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Generic, TypeVar

import pydantic

from ..errors import InvalidArgumentError, InvalidConfigValueError
from .records import check_key

__all__ = ["TypedConfig", "validate"]

T = TypeVar("T")
_log = logging.getLogger(__name__)


def _adapter(schema: Any) -> pydantic.TypeAdapter:
    is_model = isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)
    if not (is_model or (isinstance(schema, type) and dataclasses.is_dataclass(schema))):
        raise InvalidArgumentError(f"a configuration schema is a pydantic model or a dataclass, got {schema!r:.80}")
    return pydantic.TypeAdapter(schema)


def _invalid(key: str, error: pydantic.ValidationError) -> InvalidConfigValueError:
    """The error naming every failing field of ``error`` (the first one in ``field`` and ``reason``)."""
    problems = error.errors()
    parts = []
    for p in problems:
        where = ".".join(str(x) for x in p["loc"]) or "(the value)"
        parts.append(f"{where}: {p['msg']}")
    first = problems[0] if problems else {"loc": (), "msg": str(error)}
    field = ".".join(str(x) for x in first["loc"])
    return InvalidConfigValueError(f"invalid configuration for {key!r}: " + "; ".join(parts), field=field,
                                   reason=str(first["msg"]))


def validate(schema: Any, value: Any, key: str = "value") -> Any:
    """``value`` (an instance of ``schema`` or a dict of its fields) validated as an instance of
    ``schema``; raises :class:`~ddia_ray.errors.InvalidConfigValueError` naming the failing fields."""
    adapter = _adapter(schema)
    if isinstance(value, schema):
        value = adapter.dump_python(value, mode="json")  # re-validated: a dataclass may have been mutated
    if not isinstance(value, dict):
        raise InvalidConfigValueError(f"invalid configuration for {key!r}: a {schema.__name__} is given as an "
                                      f"instance or a dict of its fields, got {type(value).__name__}",
                                      field="", reason=f"not a {schema.__name__} or a dict")
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as e:
        raise _invalid(key, e) from None


class TypedConfig(Generic[T]):
    """``key`` of ``client``'s store, holding a ``schema`` value (see the module docstring).
    ``on_invalid(error)`` hears of stored values that fail validation (a raw ``put``)."""

    def __init__(self, client: Any, key: str, schema: type[T], *,
                 on_invalid: Callable[[InvalidConfigValueError], Any] | None = None):
        self.client = client
        self.key = check_key(key)
        self.schema = schema
        self._adapter = _adapter(schema)
        self.on_invalid = on_invalid
        #: How many stored values failed validation when read or watched.
        self.invalid = 0

    def defaults(self) -> T:
        """The schema's defaults (raises :class:`InvalidConfigValueError` if a field has none)."""
        return validate(self.schema, {}, self.key)

    def dump(self, value: T) -> dict:
        """``value`` as the plain dict that is stored."""
        return self._adapter.dump_python(value, mode="json")

    def get(self, *, revision: int | None = None) -> T:
        """The value (at ``revision``), validated; the defaults if the key is absent."""
        kv = self.client.get(self.key, revision=revision)
        if kv is None:
            return self.defaults()
        try:
            return validate(self.schema, kv.value, self.key)
        except InvalidConfigValueError as e:
            self._report(e)
            raise

    def set(self, value: T | dict, *, expect_revision: int | None = None) -> int:
        """Validate ``value`` (an instance or a dict of fields; missing fields take their defaults) and
        store it; returns the revision. An invalid value raises :class:`InvalidConfigValueError` and
        nothing is written. ``expect_revision``: write only if the key's ``mod_revision`` is still
        that (0: the key does not exist), else raise :class:`~ddia_ray.errors.RevisionConflictError`."""
        checked = validate(self.schema, value, self.key)
        data = self.dump(checked)
        if expect_revision is None:
            return self.client.put(self.key, data)
        from ..errors import RevisionConflictError
        from .records import Compare, Op

        res = self.client.txn([Compare(self.key, "mod_revision", "==", expect_revision)], [Op.put(self.key, data)])
        if not res.succeeded:
            raise RevisionConflictError(f"{self.key!r} changed since revision {expect_revision}; read it again",
                                        read_revision=expect_revision)
        return res.revision

    def update(self, **changes: Any) -> int:
        """Change some fields of the current value (read, validate, compare-and-set, again on a race);
        returns the revision. A stored value that fails validation is reported and replaced: the
        changes apply to the defaults."""
        from ..errors import RevisionConflictError

        for _ in range(100):
            kv = self.client.get(self.key)
            try:
                current = self.defaults() if kv is None else validate(self.schema, kv.value, self.key)
            except InvalidConfigValueError as e:  # a raw put stored garbage: repair from the defaults
                self._report(e)
                current = self.defaults()
            merged = {**self.dump(current), **changes}
            try:
                return self.set(merged, expect_revision=0 if kv is None else kv.mod_revision)
            except RevisionConflictError:
                continue
        raise RevisionConflictError(f"{self.key!r} kept changing during 100 attempts to update it")

    def watch(self, callback: Callable[[T], Any], *, start_revision: int | None = None,
              on_error: Callable[[BaseException], Any] | None = None) -> Any:
        """Call ``callback(value)`` with each new valid value (the defaults after a delete), in
        revision order; invalid stored values are skipped and reported. Returns the
        :class:`~.watch.Watch`."""

        def deliver(events: list) -> None:
            for e in events:
                if e.kind == "delete":
                    try:
                        value = self.defaults()
                    except InvalidConfigValueError as err:
                        self._report(err)
                        continue
                else:
                    try:
                        value = validate(self.schema, e.kv.value, self.key)
                    except InvalidConfigValueError as err:
                        self._report(err)
                        continue
                callback(value)

        return self.client.watch(self.key, deliver, start_revision=start_revision, on_error=on_error)

    def _report(self, error: InvalidConfigValueError) -> None:
        self.invalid += 1
        if self.on_invalid is not None:
            self.on_invalid(error)
        else:
            _log.warning("%s", error)
