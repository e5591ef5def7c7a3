"""The pure core of live reload: what one binding knows and owes its targets.

Theory of operation
-------------------
:class:`BindingState` is the bookkeeping of one key bound to named targets, with no thread, no
clock and no I/O (time comes in as ``now_s``), so it is tested step by step;
:class:`~ddia_ray.config.live.LiveConfig` drives it from the watch thread and its delivery thread.

* :meth:`~BindingState.offer` takes the key's values in revision order (a revision seen already
  is ignored: a watch that resumes may deliver it twice). :func:`settings_of` makes a value
  settings through the schema; a value it refuses is kept with its error and never becomes the
  value to deliver. A delete changes nothing: targets keep what they run.
* :meth:`~BindingState.plan` lists the deliveries to make now: each target behind the newest
  valid value, with no delivery of this binding in flight (so it never receives an older
  revision after a newer one), and not backing off after a failure of that same value.
* :meth:`~BindingState.done` records an outcome: a target's applied revision only grows; a
  failure is kept until a delivery succeeds. An unreachable target is sent the value again
  ``retry_interval_s`` later; a target that refused the value waits for the next one (or a
  :meth:`~BindingState.resync`), since sending it again would be refused again.

Invariant: ``0 <= applied[t] <= revision <= seen`` for every target ``t``, and a target is in
flight for at most one revision, the newest valid one when it was planned.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .._validate import invariant, non_negative, positive
from ..errors import ConfigError, InvalidArgumentError, InvalidConfigValueError
from .typed import validate

__all__ = ["settings_of", "TargetFailure", "BindingStatus", "BindingState"]


def settings_of(schema: type, value: Any, key: str = "value") -> Any:
    """``value`` (an instance of ``schema`` or a mapping of its fields) as checked settings.

    The rules are :class:`~ddia_ray.config.typed.TypedConfig`'s (:func:`~ddia_ray.config.typed.validate`:
    what its ``set`` refuses, a binding refuses), plus one: a field the schema does not have is an
    error, not ignored, since a misspelt setting would otherwise silently take its default. Raises
    :class:`~ddia_ray.errors.InvalidConfigValueError` naming the offending field.
    """
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(schema)}
        for name in value:
            if name not in known:
                public = sorted(n for n in known if not n.startswith("_"))
                raise InvalidConfigValueError(f"invalid configuration for {key!r}: {schema.__name__} has no field "
                                              f"{name!r}; its fields: {public}", str(name), "unknown field")
        value = dict(value)
    try:
        return validate(schema, value, key)
    except InvalidConfigValueError as e:
        if e.field:
            raise
        # A check of the schema's own (__post_init__) fails the value as a whole: name its field.
        raise InvalidConfigValueError(str(e), _field_named(schema, e.reason), e.reason) from None
    except (ConfigError, InvalidArgumentError) as e:  # a type check of the schema's own, outside pydantic's
        raise InvalidConfigValueError(f"invalid configuration for {key!r}: {e}", _field_named(schema, str(e)),
                                      str(e)) from e


def _field_named(schema: type, reason: str) -> str:
    """The field of ``schema`` that ``reason`` names (the longest that matches), or ``""``."""
    names = sorted((f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")), key=len, reverse=True)
    return next((n for n in names if re.search(rf"\b{re.escape(n)}\b", reason)), "")


# --- state: the pure core of a binding ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TargetFailure:
    """A delivery to ``target`` of the value of ``revision`` failed with ``error`` at ``at_s``.

    ``retry``: whether the same value is worth sending again (the target was unreachable), as
    opposed to a refusal by the target itself, which only a new value can change.
    """

    target: str
    revision: int
    error: BaseException
    at_s: float
    retry: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class BindingStatus:
    """A binding at one moment: the newest valid value and where each target stands.

    ``revision`` is the mod revision of the newest valid value (0: none), ``applied`` maps each
    target to the revision it runs (0: nothing delivered), ``failures`` holds each target's last
    failed delivery still unresolved, ``invalid`` the ``(revision, error)`` of refused values.
    """

    key: str
    revision: int
    settings: Any
    applied: Mapping[str, int]
    failures: Mapping[str, TargetFailure]
    invalid: tuple

    @property
    def synced(self) -> bool:
        """Whether every target runs the newest valid value."""
        return all(r >= self.revision for r in self.applied.values())


class BindingState:
    """What a binding knows and owes its targets; deterministic (``now_s`` is passed in).

    :meth:`offer` takes the key's values in revision order, :meth:`plan` says which deliveries
    to make now (marking them in flight), :meth:`done` records their outcomes.
    """

    def __init__(self, key: str, schema: type, targets: Sequence[str] = (), *, retry_interval_s: float = 1.0,
                 invalid_kept: int = 32):
        if not isinstance(schema, type) or not dataclasses.is_dataclass(schema):
            raise InvalidArgumentError(f"schema must be a dataclass (a codec record), got {schema!r}")
        self.key = key
        self.schema = schema
        self.retry_interval_s = non_negative("retry_interval_s", retry_interval_s)
        self._invalid_kept = positive("invalid_kept", invalid_kept)
        self.seen = 0          # newest revision offered (valid, invalid or a delete)
        self.revision = 0      # newest valid value's revision
        self.settings: Any = None
        self._applied: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._failures: dict[str, TargetFailure] = {}
        self._invalid: list[tuple[int, InvalidConfigValueError]] = []
        for name in targets:
            self.add_target(name)

    def add_target(self, name: str) -> None:
        """A new target: it is owed the newest valid value at once."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a target's name is a non-empty str, got {name!r}")
        if name in self._applied:
            raise ConfigError(f"target {name!r} is already bound to {self.key!r}")
        self._applied[name] = 0

    def remove_target(self, name: str) -> None:
        """Stop delivering to ``name``."""
        self._applied.pop(name, None)
        self._in_flight.pop(name, None)
        self._failures.pop(name, None)

    def offer(self, revision: int, value: Any, *, deleted: bool = False) -> InvalidConfigValueError | None:
        """The key's value at ``revision`` (a revision seen already is ignored); its refusal, if invalid."""
        if revision <= self.seen:
            return None
        self.seen = revision
        if deleted:
            return None  # absent: targets keep what they run
        try:
            settings = settings_of(self.schema, value, self.key)
        except InvalidConfigValueError as e:
            self._invalid.append((revision, e))
            del self._invalid[:-self._invalid_kept]
            return e
        self.revision, self.settings = revision, settings
        return None

    def resync(self) -> None:
        """Owe every target the newest valid value again (it may have restarted and lost it)."""
        for name in self._applied:
            self._applied[name] = 0
            self._failures.pop(name, None)

    def plan(self, now_s: float) -> list[tuple[str, int, Any]]:
        """``(target, revision, settings)`` to send now: targets behind, idle, and not backing off."""
        if not self.revision:
            return []
        out = []
        for name, applied in self._applied.items():
            if applied >= self.revision or name in self._in_flight:
                continue
            failure = self._failures.get(name)
            if failure is not None and failure.revision == self.revision and \
                    (not failure.retry or now_s < failure.at_s + self.retry_interval_s):
                continue  # refused there, or failed just now: wait for a new value, or before retrying
            self._in_flight[name] = self.revision
            out.append((name, self.revision, self.settings))
        return out

    def done(self, name: str, revision: int, error: BaseException | None, now_s: float, *,
             retry: bool = True) -> TargetFailure | None:
        """The delivery of ``revision`` to ``name`` ended (``error`` None: applied); returns the failure
        recorded, if it failed. ``retry=False`` marks a refusal by the target (see the module doc)."""
        if self._in_flight.get(name) != revision:
            return None  # the target was removed meanwhile
        del self._in_flight[name]
        if error is None:
            self._applied[name] = max(self._applied[name], revision)
            self._failures.pop(name, None)
            return None
        failure = TargetFailure(name, revision, error, now_s, retry)
        self._failures[name] = failure
        return failure

    def next_retry_s(self) -> float | None:
        """When the earliest failed target may be tried again (None: nothing to retry)."""
        times = [f.at_s + self.retry_interval_s for n, f in self._failures.items()
                 if f.retry and n not in self._in_flight and self._applied[n] < self.revision]
        return min(times) if times else None

    def settled(self, revision: int) -> bool:
        """Whether every target runs ``revision`` or later, or last failed on the newest value."""
        return all(self._applied[n] >= revision or (n in self._failures and n not in self._in_flight
                                                     and self._failures[n].revision >= self.revision)
                   for n in self._applied)

    def refusal(self, revision: int) -> BaseException | None:
        """Why the value of ``revision`` will not be applied everywhere without a newer one: the
        schema refused it (or a later value, with no valid value since), or a target refused it."""
        for rev, error in reversed(self._invalid):
            if rev >= revision and rev > self.revision:
                return error
        for failure in self._failures.values():
            if not failure.retry and failure.revision >= revision and failure.revision == self.revision:
                return failure.error
        return None

    def check_invariants(self) -> None:
        """Raise :class:`~ddia_ray._validate.InvariantViolation` if the module's invariant is broken."""
        invariant(0 <= self.revision <= self.seen, "the newest valid revision is past the newest seen")
        for name, applied in self._applied.items():
            invariant(0 <= applied <= self.revision, f"{name} runs revision {applied}, newer than {self.revision}")
        for name, revision in self._in_flight.items():
            invariant(name in self._applied, f"{name} has a delivery in flight but is not a target")
            invariant(self._applied[name] < revision <= self.revision, f"{name}: delivery of {revision} not owed")

    def status(self) -> BindingStatus:
        """An immutable snapshot."""
        return BindingStatus(self.key, self.revision, self.settings, MappingProxyType(dict(self._applied)),
                             MappingProxyType(dict(self._failures)), tuple(self._invalid))
