"""A subject's history as a reader holds it: every version's schema and the migrations between them.

Theory of operation
-------------------
A registered version never changes: its schema and the migration from the version before it are
written once, in the log entry that registered it (a soft delete only hides it from the live
versions). So a reader fetches a subject's history once (:meth:`RegistryClient.history
<ddia_ray.schema.registry.RegistryClient.history>`) and keeps it, fetching again only when data
names a version newer than the ones it holds. :class:`SubjectHistory` is that copy, pure data:
it migrates a field map between any two versions (:func:`~.migrations.migrate`, up through the
steps, down through them in reverse), builds the ``upgrades=`` steps of a codec ``@record``
class (:meth:`SubjectHistory.codec_upgrades`), and gives each version's Arrow schema for
:mod:`.datasets`.

The registry's versions and the codec's versions of a record class are the same numbers when a
class's schema is registered under its tag at each of its versions in turn (version 1 of the
subject is version 1 of the class, and so on): :meth:`SubjectHistory.codec_upgrades` relies on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ..errors import MigrationError, UnknownSchemaError
from .migrations import Migration, migrate, upgrade
from .schemas import Schema

__all__ = ["SubjectHistory"]


@dataclasses.dataclass(frozen=True)
class SubjectHistory:
    """``subject``'s versions: ``schemas[v]`` (every version, deleted ones too: data written with them
    still exists), ``chain[v]`` the migration from ``v`` to ``v + 1``, ``ids[v]`` the global id and
    ``deleted`` the versions soft-deleted."""

    subject: str
    schemas: Mapping[int, Schema]
    chain: Mapping[int, Migration]
    ids: Mapping[int, int] = dataclasses.field(default_factory=dict)
    deleted: frozenset = frozenset()

    @property
    def latest(self) -> int:
        """The newest version (0 for a history with none)."""
        return max(self.schemas, default=0)

    @property
    def live(self) -> tuple[int, ...]:
        """The versions not deleted, oldest first."""
        return tuple(v for v in sorted(self.schemas) if v not in self.deleted)

    def schema(self, version: int) -> Schema:
        """The schema of ``version``; :class:`~ddia_ray.errors.UnknownSchemaError` if it has none."""
        got = self.schemas.get(version)
        if got is None:
            raise UnknownSchemaError(f"subject {self.subject!r} has no version {version!r} (it has "
                                     f"{sorted(self.schemas)})", subject=self.subject,
                                     version=version if type(version) is int else -1)
        return got

    def version_of(self, schema: Schema) -> int | None:
        """The newest version whose schema has ``schema``'s fingerprint (None: no version has it)."""
        found = [v for v, s in self.schemas.items() if s.fingerprint == schema.fingerprint]
        return max(found) if found else None

    def migrate(self, data: Mapping[str, Any], from_version: int, to_version: int) -> dict[str, Any]:
        """``data`` written at ``from_version`` as ``to_version`` holds it (up or down the chain)."""
        self.schema(from_version)
        self.schema(to_version)
        return migrate(data, self.chain, from_version, to_version)

    def steps(self, from_version: int, to_version: int) -> list[tuple[Migration, bool]]:
        """The migrations from ``from_version`` to ``to_version`` in the order they apply, each with
        True when it applies upward (its rules in order) and False downward (reversed)."""
        self.schema(from_version)
        self.schema(to_version)
        out = []
        v = from_version
        while v != to_version:
            up = to_version > v
            m = self.chain.get(v if up else v - 1)
            if m is None:
                raise MigrationError(f"subject {self.subject!r}: no migration from version {v if up else v - 1} "
                                     f"to {v + 1 if up else v}")
            out.append((m, up))
            v = v + 1 if up else v - 1
        return out

    def codec_upgrades(self, up_to: int | None = None) -> dict[int, Callable[[dict], dict]]:
        """The ``upgrades=`` of a codec ``@record`` class at version ``up_to`` (default: the latest):
        for every ``v`` below it, a step that carries a version-``v`` field map to ``v + 1`` by the
        registered rules (see the module docstring for how versions line up)."""
        top = self.latest if up_to is None else up_to
        self.schema(top)
        out: dict[int, Callable[[dict], dict]] = {}
        for v in range(1, top):
            m = self.chain.get(v)
            if m is None:
                raise MigrationError(f"subject {self.subject!r}: no migration from version {v} to {v + 1}")
            out[v] = _Step(m.rules)
        return out


class _Step:
    """One codec upgrade step: a field map carried one version up by a migration's rules (a class, not
    a closure, so that it names what it does in a traceback)."""

    __slots__ = ("rules",)

    def __init__(self, rules: tuple):
        self.rules = rules

    def __call__(self, fields: dict) -> dict:
        return upgrade(fields, self.rules)

    def __repr__(self) -> str:
        return f"upgrade step {self.rules!r:.200}"
