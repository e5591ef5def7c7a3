"""The schema registry's decisions and reads, as procedures the replicated store runs in its log.

Theory of operation
-------------------
The registry is the Confluent Schema Registry's model (subjects, versions, global ids,
compatibility configured globally and per subject) kept in a Raft-replicated store. Every write
is a procedure (:mod:`ddia_ray.replication.procedures`): decided at apply time, by every member,
against the state as of its log entry. So two clients registering under one subject at once are
ordered by the log, each checked against the versions before it, with no lock and no retry loop,
and the log records only the rows a registration wrote (DDIA 9.3: total order broadcast makes the
registry a linearizable compare-and-set over each subject's history).

The rows, their grammar and the records the procedures answer are :mod:`.registry_rows`'s.

``schema.register`` (``subject, kind, source, rules, from_version``), step by step:

1. parse the schema (deterministic: the same text gives the same schema on every member);
2. idempotence: if the subject holds this schema in a live version, answer that version and its
   id and write nothing (a client's retry, or two clients registering the same schema);
3. compatibility: check the new schema against the subject's live versions under its mode
   (the subject's, else the global one, else ``BACKWARD``); a break is refused with
   :class:`~ddia_ray.errors.IncompatibleSchemaError` naming each field and why;
4. the migration chain: version *n* needs a :class:`~.migrations.Migration` from *n - 1* (its
   rules given, or inferred by :func:`~.migrations.infer_rules` for added and removed fields and
   aliased renames); the rules must turn the fields of *n - 1* into those of *n*
   (:func:`migration_problems`), else :class:`~ddia_ray.errors.MigrationError` names each field
   not accounted for. Versions are numbered with no reuse, so the chain runs 1, 2, 3, ... with
   a step between each two, soft-deleted versions included;
5. write the version (a new id if the schema is new to the registry, else its id).

Conversion functions of type changes are named, not stored (functions cannot be replicated), and
are looked up where data is migrated: the registry checks that a rule names two conversions, the
client checks before it sends the rule that its process has them (a member's imports must not
change a decision, so members do not look them up).
"""

from __future__ import annotations

from typing import Any

from ..errors import (ConfigError, IncompatibleSchemaError, InvalidArgumentError, MigrationError, UnknownSchemaError,
                      UnknownSubjectError)
from ..replication.procedures import procedure, query
from ..replication.records import DELETE, PUT
from .compatibility import Incompatibility, check
from .migrations import AddField, Migration, RemoveField, RenameField, check_migration, infer_rules
from .registry_rows import (DEFAULT_MODE, GLOBAL_MODE, NEXT_ID, PAGE_MAX, U64, VERSIONS_MAX, Head, RegisteredSchema,
                            SchemaVersion, check_mode, check_subject, check_version, existing_version, fingerprint_key,
                            head_key, identity_of, live_key, live_versions, mode_of, pack, parse_schema,
                            require_subject, schema_key, schema_row, stored, stored_identity, unpack, version_key,
                            version_row)
from .schemas import Schema

__all__ = ["register", "set_compatibility", "delete_version", "delete_subject", "get", "by_id", "by_fingerprint",
           "versions", "subjects", "compatibility", "check_schema", "chain", "migration_problems"]


def _against(get, subject: str, head: Head, mode: str) -> list[tuple[int, Schema]]:
    """The live versions ``mode`` checks a new schema against (the latest only, unless transitive)."""
    if mode == "NONE":
        return []
    if mode.endswith("_TRANSITIVE"):
        return live_versions(get, subject, head)
    for v in range(head.latest, 0, -1):
        row = version_row(get, subject, v)
        if row is not None and not row[1]:
            return [(v, stored(get, row[0]))]
    return []


def _incompatibilities(get, subject: str, head: Head, schema: Schema) -> tuple[str, list[Incompatibility]]:
    mode = mode_of(get, head)
    against = _against(get, subject, head, mode)
    return mode, check(mode, schema, [s for _, s in against], versions=[v for v, _ in against])


# --- the migration chain -----------------------------------------------------------------------


def migration_problems(old: Schema, new: Schema, migration: Migration) -> list[str]:
    """Why ``migration`` does not carry data of schema ``old`` to ``new`` ([] when it does): what
    :func:`~.migrations.check_migration` finds (rules naming missing fields, new fields nothing fills,
    type changes without a :class:`~.migrations.ChangeType`), and old fields the rules leave behind
    (a reader's class of the new version would be handed a field it does not have)."""
    problems = check_migration(old, new, migration)
    before, after = set(old.field_names()), set(new.field_names())
    if not after:
        return problems
    names = set(before)
    for rule in migration.rules:
        if type(rule) is AddField:
            names.add(rule.name)
        elif type(rule) is RemoveField:
            names.discard(rule.name)
        elif type(rule) is RenameField:
            names.discard(rule.old)
            names.add(rule.new)
    for name in sorted(names - after):
        problems.append(f"field {name!r} is gone from the new schema and no RemoveField or RenameField says so")
    return problems


def _migration(get, subject: str, head: Head, schema: Schema, rules: Any, from_version: int) -> Migration | None:
    """The checked migration to the version a registration adds (None for a subject's first)."""
    new = head.latest + 1
    if head.latest == 0:
        if rules is not None:
            raise MigrationError(f"subject {subject!r}: version 1 has no version before it to migrate from")
        return None
    if from_version not in (-1, head.latest):
        raise MigrationError(f"subject {subject!r}: the migration goes from version {from_version}, but the new "
                             f"version {new} follows version {head.latest} (another schema was registered "
                             f"meanwhile: re-read the subject)")
    old = stored(get, existing_version(get, subject, head.latest)[0])
    given = rules is not None
    if not given:
        rules = tuple(infer_rules(old, schema))
    elif not isinstance(rules, tuple):
        raise InvalidArgumentError("migration rules are a tuple of AddField, RemoveField, RenameField, ChangeType")
    migration = Migration(head.latest, new, rules)
    problems = migration_problems(old, schema, migration)
    if problems:
        how = "the given rules" if given else "no migration was given, and the inferred one (adds and removes)"
        raise MigrationError(f"subject {subject!r}: {how} cannot carry version {head.latest} to version {new}: "
                             + "; ".join(problems))
    return migration


# --- procedures --------------------------------------------------------------------------------


@procedure("schema.register")
def register(get, args: Any) -> tuple[tuple, SchemaVersion]:
    """Register a schema under a subject (see the module docstring): ``(subject, kind, source, rules,
    from_version)`` where ``rules`` is None (inferred) or the migration's rules from the subject's
    latest version, and ``from_version`` -1 or the version the rules start from."""
    subject, kind, source, rules, from_version = args
    check_subject(subject)
    if type(from_version) is not int:
        raise InvalidArgumentError(f"from_version is an int, got {from_version!r:.40}")
    schema = parse_schema(kind, source)
    identity = identity_of(schema)
    head = Head(get(head_key(subject)))
    live = get(live_key(subject, identity))
    if live is not None:  # idempotent: this schema is a live version of the subject already
        version = unpack(live, 1, "live schema")[0]
        schema_id = existing_version(get, subject, version)[0]
        return (), SchemaVersion(subject, version, schema_id, schema.fingerprint)
    if head.latest >= VERSIONS_MAX:
        raise ConfigError(f"subject {subject!r} holds {VERSIONS_MAX} versions, the most one subject may hold")
    mode, found = _incompatibilities(get, subject, head, schema)
    if found:
        raise IncompatibleSchemaError(f"subject {subject!r}: the schema is not {mode} compatible", found)
    migration = _migration(get, subject, head, schema, rules, from_version)
    ops = []
    known = get(b"Sk" + identity)
    if known is not None:
        schema_id = unpack(known, 1, "schema identity")[0]
    else:
        nxt = get(NEXT_ID)
        schema_id = 1 if nxt is None else unpack(nxt, 1, "id sequence")[0]
        ops += [(PUT, NEXT_ID, pack(schema_id + 1)), (PUT, schema_key(schema_id), pack(schema, identity)),
                (PUT, b"Sk" + identity, pack(schema_id)),
                (PUT, fingerprint_key(schema.fingerprint, schema_id), b"")]
    head.latest += 1
    head.live += 1
    ops += [(PUT, version_key(subject, head.latest), pack(schema_id, False, migration)),
            (PUT, live_key(subject, identity), pack(head.latest)), (PUT, head_key(subject), head.row())]
    return tuple(ops), SchemaVersion(subject, head.latest, schema_id, schema.fingerprint)


@procedure("schema.set_compatibility")
def set_compatibility(get, args: Any) -> tuple[tuple, str | None]:
    """Set the compatibility mode of ``subject`` (None: the global mode) to ``mode`` (None, for a
    subject: fall back to the global mode again); the result is the mode set."""
    subject, mode = args
    if subject is None:
        check_mode(mode)
        return ((PUT, GLOBAL_MODE, pack(mode)),), mode
    check_subject(subject)
    check_mode(mode, unset=True)
    head = Head(get(head_key(subject)))
    head.mode = mode  # a subject's mode may be set before its first version, as Confluent allows
    return ((PUT, head_key(subject), head.row()),), mode


@procedure("schema.delete_version")
def delete_version(get, args: Any) -> tuple[tuple, int]:
    """Soft-delete version ``version`` of ``subject``: it leaves the subject's live versions (no longer
    checked against, no longer returned as latest) while its id and its migration stay, so data
    written with it can still be read and migrated. The result is the version deleted."""
    subject, version = args
    check_subject(subject)
    check_version(version)
    head = Head(get(head_key(subject)))
    require_subject(subject, head)
    row = version_row(get, subject, version)
    if row is None or row[1]:
        raise UnknownSchemaError(f"subject {subject!r} has no live version {version}", subject=subject,
                                 version=version)
    schema_id, _, migration = row
    identity = stored_identity(get, schema_id)
    head.live -= 1
    return ((PUT, version_key(subject, version), pack(schema_id, True, migration)),
            (DELETE, live_key(subject, identity), b""), (PUT, head_key(subject), head.row())), version


@procedure("schema.delete_subject")
def delete_subject(get, args: Any) -> tuple[tuple, tuple]:
    """Soft-delete every live version of ``subject`` (see :func:`delete_version`); the result is the
    versions deleted. The subject keeps its numbering: a schema registered later gets the next version."""
    (subject,) = args
    check_subject(subject)
    head = Head(get(head_key(subject)))
    require_subject(subject, head)
    ops: list = []
    deleted = []
    for v in range(1, head.latest + 1):
        row = version_row(get, subject, v)
        if row is not None and not row[1]:
            ops.append((PUT, version_key(subject, v), pack(row[0], True, row[2])))
            ops.append((DELETE, live_key(subject, stored_identity(get, row[0])), b""))
            deleted.append(v)
    head.live = 0
    ops.append((PUT, head_key(subject), head.row()))
    return tuple(ops), tuple(deleted)


# --- queries -----------------------------------------------------------------------------------


def _registered(get, subject: str, version: int, row: tuple) -> RegisteredSchema:
    schema_id, deleted, migration = row
    return RegisteredSchema(subject, version, schema_id, stored(get, schema_id), deleted, migration)


@query("schema.get")
def get(state, args: Any) -> RegisteredSchema:
    """Version ``version`` of ``subject`` (``"latest"``: its latest live version); a deleted version
    only with ``deleted=True``."""
    subject, version, deleted = args
    check_subject(subject)
    head = Head(state.get(head_key(subject)))
    require_subject(subject, head)
    if version == "latest":
        for v in range(head.latest, 0, -1):
            row = version_row(state.get, subject, v)
            if row is not None and (deleted or not row[1]):
                return _registered(state.get, subject, v, row)
        raise UnknownSubjectError(f"subject {subject!r} has no live version (all were deleted)", subject=subject)
    check_version(version)
    row = version_row(state.get, subject, version)
    if row is None or (row[1] and not deleted):
        raise UnknownSchemaError(f"subject {subject!r} has no {'' if deleted else 'live '}version {version} "
                                 f"(its latest is {head.latest})", subject=subject, version=version)
    return _registered(state.get, subject, version, row)


@query("schema.by_id")
def by_id(state, args: Any) -> Schema:
    """The schema of global id ``schema_id`` (deleted versions' ids resolve too: data written with
    them still needs them)."""
    (schema_id,) = args
    if type(schema_id) is not int or schema_id < 1:
        raise InvalidArgumentError(f"a schema id is an int >= 1, got {schema_id!r:.40}")
    got = schema_row(state.get, schema_id)
    if got is None:
        raise UnknownSchemaError(f"no schema of id {schema_id} in the schema registry", schema_id=schema_id)
    return got[0]


@query("schema.by_fingerprint")
def by_fingerprint(state, args: Any) -> tuple:
    """The ids of the schemas whose Avro fingerprint is ``fingerprint`` (hex), oldest first (several
    when schemas differ only in docs or defaults)."""
    (fingerprint,) = args
    if not isinstance(fingerprint, str) or len(fingerprint) != 64:
        raise InvalidArgumentError(f"a fingerprint is 64 hex digits (SHA-256), got {fingerprint!r:.80}")
    try:
        prefix = b"Sf" + bytes.fromhex(fingerprint)
    except ValueError:
        raise InvalidArgumentError(f"a fingerprint is 64 hex digits (SHA-256), got {fingerprint!r:.80}") from None
    found, _ = state.scan(prefix, prefix + b"\xff" * 9, PAGE_MAX)
    return tuple(U64.unpack_from(k, len(k) - 8)[0] for k in found)


@query("schema.versions")
def versions(state, args: Any) -> tuple:
    """The versions of ``subject``, oldest first: the live ones, or with ``deleted`` every one."""
    subject, deleted = args
    check_subject(subject)
    head = Head(state.get(head_key(subject)))
    require_subject(subject, head)
    rows = state.get_many(tuple(version_key(subject, v) for v in range(1, head.latest + 1)))
    return tuple(v for v, row in enumerate(rows, 1)
                 if row is not None and (deleted or not unpack(row, 3, "version")[1]))


@query("schema.subjects")
def subjects(state, args: Any) -> tuple:
    """Up to ``limit`` subject names after ``after`` (None: from the first), in order: those with a
    live version, or with ``deleted`` every subject ever registered."""
    after, limit, deleted = args
    if type(limit) is not int or not 1 <= limit <= PAGE_MAX:
        raise InvalidArgumentError(f"limit is an int in 1..{PAGE_MAX}, got {limit!r:.40}")
    start = b"Sh" if after is None else head_key(check_subject(after)) + b"\x00"
    out: list[str] = []
    while len(out) < limit:
        found, values = state.scan(start, b"Si", limit)
        for k, v in zip(found, values):
            head = Head(v)
            if head.latest and (deleted or head.live) and len(out) < limit:
                out.append(k[2:].decode())
        if len(found) < limit:
            break
        start = found[-1] + b"\x00"
    return tuple(out)


@query("schema.compatibility")
def compatibility(state, args: Any) -> tuple[str, str]:
    """The mode that applies to ``subject`` (None: the registry's) and where it is set: ``(mode,
    "subject" | "global" | "default")``."""
    (subject,) = args
    if subject is not None:
        check_subject(subject)
        head = Head(state.get(head_key(subject)))
        if head.mode is not None:
            return head.mode, "subject"
    row = state.get(GLOBAL_MODE)
    return (DEFAULT_MODE, "default") if row is None else (unpack(row, 1, "global mode")[0], "global")


@query("schema.check")
def check_schema(state, args: Any) -> tuple:
    """What a registration of the schema ``(kind, source)`` under ``subject`` would be refused for:
    ``(mode, incompatibilities, migration problems)``, both empty when it would be accepted (or is
    registered already)."""
    subject, kind, source, rules = args
    check_subject(subject)
    schema = parse_schema(kind, source)
    head = Head(state.get(head_key(subject)))
    require_subject(subject, head)
    if state.get(live_key(subject, identity_of(schema))) is not None:
        return mode_of(state.get, head), (), ()
    mode, found = _incompatibilities(state.get, subject, head, schema)
    try:
        _migration(state.get, subject, head, schema, rules, -1)
        problems: tuple = ()
    except MigrationError as e:
        problems = (str(e),)
    return mode, tuple(found), problems


@query("schema.chain")
def chain(state, args: Any) -> tuple:
    """``subject``'s schemas and migrations, oldest first: ``(version, id, deleted, Schema, Migration
    or None)`` for every version from ``from_version`` (at most :data:`PAGE_MAX`): what a reader needs
    to migrate data between any two of its versions, in one read."""
    subject, from_version = args
    check_subject(subject)
    check_version(from_version)
    head = Head(state.get(head_key(subject)))
    require_subject(subject, head)
    out = []
    for v in range(from_version, min(head.latest, from_version + PAGE_MAX - 1) + 1):
        row = version_row(state.get, subject, v)
        if row is not None:
            out.append((v, row[0], row[1], stored(state.get, row[0]), row[2]))
    return tuple(out)
