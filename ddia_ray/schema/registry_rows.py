"""The schema registry's rows in the replicated store, its records, and the checks of its arguments.

Theory of operation
-------------------
Rows (every key starts with ``S``, so the registry can share a store with the event store)::

    S#                                  -> (next id,): the global id sequence (ids count from 1)
    S=                                  -> (mode,): the global compatibility mode (unset: BACKWARD)
    Si <id: u64 BE>                     -> (Schema, identity): a schema, by its global id
    Sk <identity: 32 bytes>             -> (id,): one id per distinct schema, across subjects
    Sf <fingerprint: 32 bytes> <id: u64 BE> -> b"": ids by Avro fingerprint (lookups)
    Sh <subject>                        -> (latest version, live versions, mode or None): a subject
    Sv <subject> 00 <version: u64 BE>   -> (id, deleted, Migration or None): one version
    Sx <subject> 00 <identity>          -> (version,): the live version of a schema in a subject

A schema's *identity* is the SHA-256 of its normalised Avro JSON (names resolved, whitespace
gone, docs, defaults and aliases kept), while its *fingerprint* is Avro's (the Parsing Canonical
Form, which drops defaults). Ids and idempotence go by identity, as Confluent's registry keys ids
by the schema text: a version that only adds a default to a field is a new schema (the default is
what makes it backward compatible), though it reads data exactly as before.

Values are versioned msgpack (:mod:`ddia_ray.codec`) tuples that start with their format number,
so a row written by another version either decodes or fails with a clear error. Everything here is
a pure function of ``get`` and its arguments: the procedures (:mod:`.registry_procedures`) and
queries read the rows only through these.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from ..codec import record
from ..errors import ConfigError, CorruptRecordError, InvalidArgumentError, UnknownSubjectError
from ..replication.row_format import RowFormat
from .compatibility import MODES
from .migrations import Migration
from .schemas import KINDS, Schema, parse

__all__ = ["SchemaVersion", "RegisteredSchema", "Head", "identity_of", "pack", "unpack", "schema_key", "head_key",
           "version_key", "live_key", "fingerprint_key", "version_row", "schema_row", "mode_of", "check_subject",
           "check_mode", "check_version", "parse_schema", "require_subject", "live_versions", "stored",
           "stored_identity", "stored_row", "existing_version", "U64", "NEXT_ID", "GLOBAL_MODE", "DEFAULT_MODE",
           "VERSIONS_MAX", "SUBJECT_MAX", "PAGE_MAX"]

#: The mode of a subject and a registry that set none (Confluent's default).
DEFAULT_MODE = "BACKWARD"
#: Versions one subject holds at most: a transitive check reads every one of them in one log entry.
VERSIONS_MAX = 1000
#: Characters of a subject name.
SUBJECT_MAX = 255
#: Names or ids one query answers at most; a client reads on from where a page ended.
PAGE_MAX = 1000

U64 = struct.Struct(">Q")
#: The rows' value format (:class:`~ddia_ray.replication.row_format.RowFormat`): ``pack`` writes it,
#: ``unpack`` reads it back or refuses a row of another format.
ROWS = RowFormat(1, "a schema registry")
pack = ROWS.pack
unpack = ROWS.unpack
NEXT_ID = b"S#"
GLOBAL_MODE = b"S="


@record("schema.version", fields_checked=True)
class SchemaVersion:
    """Where a schema is registered: ``subject``, its ``version`` there, its global ``id`` and its
    Avro ``fingerprint`` (hex SHA-256 of the Parsing Canonical Form)."""

    subject: str
    version: int
    id: int
    fingerprint: str

    def __post_init__(self):
        if not (isinstance(self.subject, str) and type(self.version) is int and type(self.id) is int
                and isinstance(self.fingerprint, str)):
            raise InvalidArgumentError("a schema version is (subject: str, version: int, id: int, fingerprint: str)")


@record("schema.registered")
class RegisteredSchema:
    """One version of a subject as the registry keeps it: ``subject``, ``version``, global ``id``,
    the ``schema``, whether it is ``deleted`` (soft: its id still resolves) and the ``migration``
    from the version before (None for version 1)."""

    subject: str
    version: int
    id: int
    schema: Schema
    deleted: bool = False
    migration: Migration | None = None

    @property
    def fingerprint(self) -> str:
        """The schema's Avro fingerprint."""
        return self.schema.fingerprint

    def ref(self) -> SchemaVersion:
        """This version as a registration answers it."""
        return SchemaVersion(self.subject, self.version, self.id, self.schema.fingerprint)


# --- rows --------------------------------------------------------------------------------------


def schema_key(schema_id: int) -> bytes:
    """The row of global id ``schema_id``."""
    return b"Si" + U64.pack(schema_id)


def head_key(subject: str) -> bytes:
    """The head row of ``subject``."""
    return b"Sh" + subject.encode()


def version_key(subject: str, version: int) -> bytes:
    """The row of ``subject``'s version ``version``."""
    return b"Sv" + subject.encode() + b"\x00" + U64.pack(version)


def live_key(subject: str, identity: bytes) -> bytes:
    """The row that says which live version of ``subject`` a schema (by identity) is."""
    return b"Sx" + subject.encode() + b"\x00" + identity


def fingerprint_key(fingerprint: str, schema_id: int) -> bytes:
    """The row that files ``schema_id`` under its Avro fingerprint."""
    return b"Sf" + bytes.fromhex(fingerprint) + U64.pack(schema_id)


def identity_of(schema: Schema) -> bytes:
    """The 32-byte identity of ``schema``: SHA-256 of its normalised Avro JSON (see the module docstring)."""
    return hashlib.sha256(schema.to_json().encode()).digest()


class Head:
    """A subject's head row: its latest version number (deleted or not), its live version count and
    its own compatibility mode (None: the global one)."""

    __slots__ = ("latest", "live", "mode")

    def __init__(self, row: bytes | None):
        self.latest, self.live, self.mode = (0, 0, None) if row is None else unpack(row, 3, "subject head")

    def row(self) -> bytes:
        """This head as its row value."""
        return pack(self.latest, self.live, self.mode)


def version_row(get, subject: str, version: int) -> tuple | None:
    """``(id, deleted, migration)`` of a version, or None."""
    row = get(version_key(subject, version))
    return None if row is None else unpack(row, 3, "version")


def schema_row(get, schema_id: int) -> tuple[Schema, bytes] | None:
    """``(Schema, identity)`` of a global id, or None."""
    row = get(schema_key(schema_id))
    return None if row is None else unpack(row, 2, "schema")


def mode_of(get, head: Head) -> str:
    """The compatibility mode that applies to a subject with this head."""
    if head.mode is not None:
        return head.mode
    row = get(GLOBAL_MODE)
    return DEFAULT_MODE if row is None else unpack(row, 1, "global mode")[0]


# --- argument checks ---------------------------------------------------------------------------


def check_subject(subject: Any) -> str:
    """``subject`` if it is a valid subject name."""
    if (not isinstance(subject, str) or not subject or len(subject) > SUBJECT_MAX or "\x00" in subject
            or not subject.isprintable()):
        raise InvalidArgumentError(f"a subject is a printable str of 1..{SUBJECT_MAX} characters without NUL, "
                                   f"got {subject!r:.80}")
    return subject


def check_mode(mode: Any, *, unset: bool = False) -> str | None:
    """``mode`` if it is one of the modes (or None, with ``unset``); ConfigError otherwise."""
    if (mode is None and unset) or mode in MODES:
        return mode
    raise ConfigError(f"unknown compatibility mode {mode!r}; modes are {MODES}")


def check_version(version: Any) -> int:
    """``version`` if it is a version number (an int >= 1)."""
    if type(version) is not int or version < 1:
        raise InvalidArgumentError(f"a version is an int >= 1 (or 'latest'), got {version!r:.40}")
    return version


def parse_schema(kind: Any, source: Any) -> Schema:
    """The schema a procedure's arguments carry as ``(kind, source)``, parsed."""
    if kind not in KINDS or not isinstance(source, str):
        raise InvalidArgumentError(f"a schema travels as (kind in {KINDS}, its JSON text)")
    return parse(kind, source)


def require_subject(subject: str, head: Head) -> None:
    """:class:`~ddia_ray.errors.UnknownSubjectError` unless the subject has a version."""
    if head.latest == 0:
        raise UnknownSubjectError(f"no subject {subject!r} in the schema registry (register a schema under it "
                                  f"first)", subject=subject)


def live_versions(get, subject: str, head: Head) -> list[tuple[int, Schema]]:
    """The subject's live versions, oldest first, with their schemas."""
    out = []
    for v in range(1, head.latest + 1):
        row = version_row(get, subject, v)
        if row is not None and not row[1]:
            out.append((v, stored(get, row[0])))
    return out


def stored(get, schema_id: int) -> Schema:
    """The schema of a global id that a version row names."""
    return stored_row(get, schema_id)[0]


def stored_identity(get, schema_id: int) -> bytes:
    """The identity of a global id that a version row names."""
    return stored_row(get, schema_id)[1]


def stored_row(get, schema_id: int) -> tuple[Schema, bytes]:
    """``(Schema, identity)`` of a global id that a version row names (it must exist)."""
    got = schema_row(get, schema_id)
    if got is None:
        raise CorruptRecordError(f"the schema registry lost schema {schema_id} (a version row names it)")
    return got


def existing_version(get, subject: str, version: int) -> tuple:
    """The row of a version that another row names (it must exist)."""
    row = version_row(get, subject, version)
    if row is None:
        raise CorruptRecordError(f"subject {subject!r}: version {version} has no row (a row names it)")
    return row
