"""The schema registry users launch, and its client.

Theory of operation
-------------------
:meth:`SchemaRegistry.launch` starts a :class:`~ddia_ray.replication.ReplicatedStore` under Raft
(a registered version survives losing a minority of members; DDIA 9.3) with the registry's
procedures (:mod:`.registry_procedures`) loaded in every member, exactly as the event store is
built (both are a :class:`~ddia_ray.replication.service_store.ServiceStore`). The handle is the
project's one convention: ``client()``, ``stats()``, ``leader()``, ``kill()``/``restart()``, ``shutdown()``, and
:meth:`SchemaRegistry.connect` from another driver, which checks that the group it finds runs the
registry's procedures.

:class:`RegistryClient` turns each request into one procedure call (a write, decided in the log)
or one query (a read on one replica, the leader by default, so a read sees every registration
acknowledged before it). It runs over any backend with ``call_nowait`` and ``query_nowait``: the
replicated store's (:class:`~ddia_ray.replication.backend.ProcedureBackend`) or one process's
(:class:`~ddia_ray.events.local.LocalBackend`, for tests and notebooks), so what a test finds
in one process holds for the replicated registry's decisions too.

Readers keep each subject's history (:class:`~.history.SubjectHistory`): versions are immutable
once registered, so the client caches them and asks again only for a version it has not seen.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ConfigError, IncompatibleSchemaError, InvalidArgumentError, MigrationError
from ..replication.backend import ProcedureClient
from ..replication.service_store import ServiceStore
from .compatibility import Incompatibility
from .history import SubjectHistory
from .migrations import ChangeType, Migration, get_conversion, upgrade
from . import registry_procedures as _procedures  # registers the procedures here too (local() runs them)
from .registry_rows import PAGE_MAX, RegisteredSchema, SchemaVersion, identity_of
from .schemas import Schema, from_arrow, from_avro, from_record, parse
from .upcasting import EventUpcaster

__all__ = ["SchemaRegistry", "RegistryClient", "PROCEDURES", "as_schema"]

#: The module every member imports: it registers the registry's procedures and queries.
PROCEDURES = "ddia_ray.schema.registry_procedures"


def as_schema(schema: Any, kind: str | None = None) -> Schema:
    """``schema`` as a :class:`~.schemas.Schema`: one already, a codec ``@record`` class, a
    ``pyarrow.Schema``, or Avro JSON (text or value); ``kind`` forces the language of a text."""
    if isinstance(schema, Schema):
        return schema
    if kind is not None:
        return parse(kind, schema)
    if isinstance(schema, type):
        return from_record(schema)
    if type(schema).__module__.startswith("pyarrow") and hasattr(schema, "names"):
        return from_arrow(schema)
    return from_avro(schema)


class SchemaRegistry(ServiceStore):
    """A running schema registry (see the module docstring). Create it with :meth:`launch`; its
    members, ``leader()``, ``kill()``, ``restart()`` and ``shutdown()`` are the
    :class:`~ddia_ray.replication.service_store.ServiceStore`'s."""

    procedures_module = PROCEDURES
    raft_only = ("a schema registry replicates with Raft: a registered version must survive a failover, and "
                 "leader-follower's async modes could lose it")
    runs = "the schema registry's procedures"

    def client(self, *, read: str | None = "leader", timeout_s: float = 30.0, **options: Any) -> "RegistryClient":
        """A new client (thread-safe). ``read``: the replicated store's read mode (``"leader"``: every
        read sees every registration acknowledged before it). ``options`` go to the store's client."""
        return RegistryClient(self._backend(read=read, timeout_s=timeout_s, **options), timeout_s=timeout_s)

    def stats(self) -> dict:
        """The subjects (``subjects``: with a live version) and the replicated store's figures (``store``)."""
        with self.client() as c:
            return {"subjects": len(c.subjects()), "store": self.store.stats()}


def _migration_args(migration: Any) -> tuple[tuple | None, int]:
    """A migration as the procedure takes it: ``(rules or None, from_version or -1)``, with the
    conversions its type changes name checked in this process (members do not look them up)."""
    if migration is None:
        return None, -1
    if isinstance(migration, Migration):
        rules, start = tuple(migration.rules), migration.from_version
        if migration.to_version != start + 1:
            raise InvalidArgumentError(f"a registered migration goes one version up, not {start} to "
                                       f"{migration.to_version}")
    elif isinstance(migration, (tuple, list)):
        rules, start = tuple(migration), -1
    else:
        raise InvalidArgumentError(f"a migration is a Migration, a tuple of rules or None, got {migration!r:.80}")
    for rule in rules:
        if isinstance(rule, ChangeType):
            get_conversion(rule.forward)
            get_conversion(rule.backward)
    return rules, start


class RegistryClient(ProcedureClient):
    """Register, check and read schemas; migrate data between a subject's versions (see the module
    docstring). ``backend``: where procedures and queries run; ``timeout_s``: how long a call waits."""

    timeout_message = ("the schema registry did not answer in time; a registration's outcome is unknown (register "
                       "again: a repeat answers the same version)")

    def __init__(self, backend: Any, *, timeout_s: float = 30.0) -> None:
        super().__init__(backend, timeout_s=timeout_s)
        self._histories: dict[str, SubjectHistory] = {}
        self._lock = threading.Lock()

    @classmethod
    def local(cls, **options: Any) -> "RegistryClient":
        """A registry in this process (the members' own procedures over one in-memory state, no Ray):
        for tests, notebooks and the first steps of the docs."""
        from ..events.local import LocalBackend

        assert _procedures  # imported for its registrations
        return cls(LocalBackend(), **options)

    # --- writes ------------------------------------------------------------------------------------

    def register(self, subject: str, schema: Any, *, migration: Any = None, kind: str | None = None) -> SchemaVersion:
        """Register ``schema`` (a :class:`~.schemas.Schema`, a ``@record`` class, a ``pyarrow.Schema``
        or Avro JSON) under ``subject``; the answer names its version and global id.

        Registering a schema the subject holds already answers its version and writes nothing.
        ``migration``: the rules from the subject's latest version (a tuple of rules, or a
        :class:`~.migrations.Migration` from that version); None infers adds and removes.
        Raises :class:`~ddia_ray.errors.IncompatibleSchemaError` (``incompatibilities`` lists each
        field and why) when the subject's compatibility mode refuses it, and
        :class:`~ddia_ray.errors.MigrationError` when no migration carries the latest version to it."""
        s = as_schema(schema, kind)
        rules, start = _migration_args(migration)
        try:
            return self.call("schema.register", (subject, s.kind, s.source, rules, start))
        except IncompatibleSchemaError as e:
            if not e.incompatibilities:  # a list does not travel in an error record: ask for it again
                e.incompatibilities = list(self.explain(subject, s)[1])
            raise

    def set_compatibility(self, mode: str | None, subject: str | None = None) -> str | None:
        """Set the compatibility mode of ``subject`` (None: the registry's global mode); ``mode`` None
        makes a subject follow the global mode again."""
        return self.call("schema.set_compatibility", (subject, mode))

    def delete_version(self, subject: str, version: int) -> int:
        """Soft-delete a version (its id still resolves, its migration still applies)."""
        return self.call("schema.delete_version", (subject, version))

    def delete_subject(self, subject: str) -> tuple[int, ...]:
        """Soft-delete every live version of ``subject``; the answer lists them."""
        return self.call("schema.delete_subject", (subject,))

    # --- reads -------------------------------------------------------------------------------------

    def check(self, subject: str, schema: Any, *, kind: str | None = None) -> list[Incompatibility]:
        """What ``subject``'s compatibility mode finds wrong with ``schema`` ([] if it would pass)."""
        return list(self.explain(subject, schema, kind=kind)[1])

    def explain(self, subject: str, schema: Any, *, migration: Any = None,
                kind: str | None = None) -> tuple[str, tuple, tuple]:
        """What a registration of ``schema`` would meet: ``(mode, incompatibilities, migration
        problems)``, both empty when it would be accepted."""
        s = as_schema(schema, kind)
        rules, _ = _migration_args(migration)
        return self.query("schema.check", (subject, s.kind, s.source, rules))

    def get(self, subject: str, version: int | str = "latest", *, deleted: bool = False) -> RegisteredSchema:
        """Version ``version`` of ``subject`` (``"latest"``: the newest live one); ``deleted`` also
        finds soft-deleted ones."""
        return self.query("schema.get", (subject, version, deleted))

    def by_id(self, schema_id: int) -> Schema:
        """The schema of global id ``schema_id``."""
        return self.query("schema.by_id", (schema_id,))

    def by_fingerprint(self, fingerprint: str) -> tuple[int, ...]:
        """The ids of the schemas with this Avro fingerprint."""
        return self.query("schema.by_fingerprint", (fingerprint,))

    def lookup(self, subject: str, schema: Any, *, kind: str | None = None) -> SchemaVersion | None:
        """The live version of ``subject`` that is ``schema`` (None if there is none), without registering."""
        s = as_schema(schema, kind)
        h = self.history(subject, refresh=True)  # a version registered or deleted since the last fetch counts
        for v in reversed(h.live):
            if identity_of(h.schemas[v]) == identity_of(s):
                return SchemaVersion(subject, v, h.ids[v], s.fingerprint)
        return None

    def versions(self, subject: str, *, deleted: bool = False) -> list[int]:
        """``subject``'s live versions (``deleted``: every one), oldest first."""
        return list(self.query("schema.versions", (subject, deleted)))

    def subjects(self, *, deleted: bool = False) -> list[str]:
        """Every subject with a live version (``deleted``: every subject ever registered), in order."""
        out: list[str] = []
        while True:
            page = self.query("schema.subjects", (out[-1] if out else None, PAGE_MAX, deleted))
            out += page
            if len(page) < PAGE_MAX:
                return out

    def compatibility(self, subject: str | None = None) -> str:
        """The compatibility mode that applies to ``subject`` (None: the registry's global one)."""
        return self.query("schema.compatibility", (subject,))[0]

    # --- evolution -----------------------------------------------------------------------------------

    def history(self, subject: str, at_least: int = 0, *, refresh: bool = False) -> SubjectHistory:
        """``subject``'s versions and migrations, cached: a version's schema and migration never change
        once registered, so the copy is fetched again only when it lacks version ``at_least``, or with
        ``refresh`` (its ``deleted`` set is as of the fetch)."""
        with self._lock:
            cached = self._histories.get(subject)
        if cached is not None and cached.latest >= max(at_least, 1) and not refresh:
            return cached
        rows: list = []
        while True:
            page = self.query("schema.chain", (subject, rows[-1][0] + 1 if rows else 1))
            rows += page
            if len(page) < PAGE_MAX:
                break
        h = SubjectHistory(subject, {r[0]: r[3] for r in rows}, {r[4].from_version: r[4] for r in rows if r[4]},
                           {r[0]: r[1] for r in rows}, frozenset(r[0] for r in rows if r[2]))
        with self._lock:
            self._histories[subject] = h
        return h

    def migrate(self, subject: str, data: dict, from_version: int, to_version: int) -> dict:
        """``data`` (a field map) written at ``from_version`` of ``subject`` as ``to_version`` holds
        it, through the registered migrations, up or down."""
        return self.history(subject, max(from_version, to_version)).migrate(data, from_version, to_version)

    def codec_upgrades(self, subject: str, *, up_to: int) -> dict:
        """The ``upgrades=`` of the codec ``@record`` class of version ``up_to`` registered under
        ``subject`` at its versions (see :mod:`.history`): one step per older version, each taking
        its rules from the registry's migration the first time data of that version is decoded. So
        the class can be defined before its own version is registered (``register_record``), and
        defining it asks the registry nothing."""
        if type(up_to) is not int or up_to < 1:
            raise InvalidArgumentError(f"up_to is the class's codec version (an int >= 1), got {up_to!r}")
        return {v: _RegistryStep(self, subject, v) for v in range(1, up_to)}

    def register_record(self, cls: type, *, subject: str | None = None, migration: Any = None) -> SchemaVersion:
        """Register the schema of codec ``@record`` class ``cls`` under ``subject`` (default: its tag),
        and check that the registry's version is the class's codec version (the numbering
        :meth:`codec_upgrades` relies on); :class:`~ddia_ray.errors.ConfigError` if not."""
        from .. import codec

        rt = codec.record_type_of(cls)
        if rt is None:
            raise InvalidArgumentError(f"{cls!r} is not a codec @record class")
        got = self.register(subject or rt.tag, from_record(cls), migration=migration)
        if got.version != rt.version:
            raise ConfigError(f"{rt.tag!r} is version {rt.version} of the class but version {got.version} of subject "
                              f"{got.subject!r}: register every version of the class, in order")
        return got

    def upcaster(self, *, versions: dict[str, int] | None = None, subject_of: Any = None,
                 strict: bool = False) -> EventUpcaster:
        """An :class:`~.upcasting.EventUpcaster` that takes its migrations from this registry."""
        return EventUpcaster(lambda subject, at_least: self.history(subject, at_least), versions=versions,
                             subject_of=subject_of, strict=strict)


class _RegistryStep:
    """A codec upgrade step from version ``version`` of ``subject`` to the next, by the registry's
    migration, fetched (and cached by the client) the first time it runs."""

    __slots__ = ("client", "subject", "version")

    def __init__(self, client: RegistryClient, subject: str, version: int):
        self.client, self.subject, self.version = client, subject, version

    def __call__(self, fields: dict) -> dict:
        step = self.client.history(self.subject, self.version + 1).chain.get(self.version)
        if step is None:
            raise MigrationError(f"subject {self.subject!r} has no migration from version {self.version}")
        return upgrade(fields, step.rules)

    def __repr__(self) -> str:
        return f"registry step {self.subject!r} {self.version} -> {self.version + 1}"
