"""Schemas and their evolution: one model (Avro) for three schema languages, Avro's resolution rules
as the one compatibility checker, and declarative migrations between versions.

Theory of operation: a :class:`Schema` is parsed from Avro JSON, derived from a codec ``@record``
class, or derived from an Arrow schema, and in each case translated to a normalised Avro schema
(what ``fastavro.parse_schema`` gives). Its identity is the SHA-256 of Avro's Parsing Canonical Form
(Avro 1.11 specification, "Parsing Canonical Form for Schemas"), so two texts that differ only in
docs, aliases or whitespace are the same schema. :func:`can_read` applies Avro's "Schema Resolution"
rules to a reader and a writer schema and lists every field the reader cannot resolve;
:func:`check` applies the seven compatibility modes of the Confluent Schema Registry on top.
:mod:`.migrations` holds the rules (add, remove, rename, change a type) that carry a datum from
one version to another, in both directions. Everything here is pure: no Ray, no I/O, no clock.

Module map:

* :mod:`.schemas` -- :class:`Schema`, parsing, bounds, canonical form and fingerprint;
* :mod:`.record_schema` -- a codec ``@record`` class as an Avro record;
* :mod:`.arrow_schema` -- an Arrow schema as an Avro record, and back;
* :mod:`.compatibility` -- Avro schema resolution and the compatibility modes;
* :mod:`.migrations` -- migration rules, conversions by name, chains of migrations.
* :mod:`.registry_rows`, :mod:`.registry_procedures` -- the registry's rows, and its decisions as
  procedures of a Raft-replicated store (subjects, versions, ids, modes, migration chains);
* :mod:`.registry` -- :class:`SchemaRegistry` (launch, connect) and :class:`RegistryClient`;
* :mod:`.history`, :mod:`.upcasting` -- a subject's versions as a reader keeps them, codec upgrade
  steps and event upcasting from the registry;
* :mod:`.datasets` -- Parquet datasets (an event archive among them) read at any registered version.
"""

from __future__ import annotations

from ..codec import register_module
from .arrow_schema import arrow_to_avro, avro_to_arrow
from .compatibility import MODES, PROMOTIONS, Incompatibility, can_read, check, require_compatible
from .migrations import (
    AddField,
    ChangeType,
    Migration,
    RemoveField,
    RenameField,
    check_chain,
    check_migration,
    conversion,
    conversions,
    downgrade,
    get_conversion,
    infer_rules,
    migrate,
    upgrade,
)
from .record_schema import record_to_avro
from .schemas import (
    JSON_DEPTH_MAX,
    KINDS,
    SCHEMA_BYTES_MAX,
    SCHEMA_DEPTH_MAX,
    Schema,
    from_arrow,
    from_avro,
    from_record,
    parse,
)

from .history import SubjectHistory
from .registry_rows import RegisteredSchema, SchemaVersion
from .upcasting import EventUpcaster

# Records of this package ("schema.*" tags) are decoded in processes that never imported it.
register_module("schema", __name__)

# The registry's handle and client, and the dataset functions, load the replicated store and
# pyarrow's compute kernels: imported on first use, so that decoding a schema record stays light.
_LAZY = {"SchemaRegistry": "registry", "RegistryClient": "registry", "read_dataset": "datasets",
         "iter_dataset": "datasets", "write_dataset": "datasets", "rewrite_dataset": "datasets",
         "migrate_table": "datasets", "events_table": "datasets"}


def __getattr__(name: str):
    """The registry's and the datasets' names, imported on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

__all__ = [
    "KINDS",
    "SCHEMA_BYTES_MAX",
    "SCHEMA_DEPTH_MAX",
    "JSON_DEPTH_MAX",
    "Schema",
    "parse",
    "from_avro",
    "from_record",
    "from_arrow",
    "record_to_avro",
    "arrow_to_avro",
    "avro_to_arrow",
    "MODES",
    "PROMOTIONS",
    "Incompatibility",
    "can_read",
    "check",
    "require_compatible",
    "AddField",
    "RemoveField",
    "RenameField",
    "ChangeType",
    "Migration",
    "conversion",
    "conversions",
    "get_conversion",
    "upgrade",
    "downgrade",
    "migrate",
    "check_chain",
    "check_migration",
    "infer_rules",
    "SchemaRegistry",
    "RegistryClient",
    "SchemaVersion",
    "RegisteredSchema",
    "SubjectHistory",
    "EventUpcaster",
    "read_dataset",
    "iter_dataset",
    "write_dataset",
    "rewrite_dataset",
    "migrate_table",
    "events_table",
]
