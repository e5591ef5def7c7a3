"""Parquet datasets at any registered version: read data written at version *v* as version *w*.

Theory of operation
-------------------
A dataset's files are immutable and hold the columns of the version that wrote them. Rewriting
every file at each schema change is what a migration in a database does; a reader instead carries
each batch it reads through the subject's migrations (:class:`~.history.SubjectHistory`), column
by column, as Avro's reader/writer resolution carries one datum (DDIA 4.1, "Dataflow through
databases": data outlives code). A migration step on an Arrow table is columnar:

==================  ==============================================  ===================================
rule                up (old data, newer reader)                     down (newer data, older reader)
==================  ==============================================  ===================================
AddField            a constant column of the default                drop the column
RemoveField         drop the column                                 a constant column of the default
RenameField         rename the column                               rename it back
ChangeType          the named conversion, once per distinct value   the backward conversion, likewise
==================  ==============================================  ===================================

A conversion is a Python function (named, see :mod:`.migrations`), so it runs per value; it runs
once per *distinct* value of the batch (the column is dictionary-encoded first, and the converted
dictionary taken back by the indices), and nulls stay null. Last, the batch is conformed to the
reader's Arrow schema (:meth:`~.schemas.Schema.to_arrow`): columns cast to its types (Avro's
promotions such as int to long), columns no step produced filled from the schema's default (or
nulls), in its order. Nothing here loops over rows in Python but the conversions.

Files this module writes (:func:`write_dataset`, :func:`rewrite_dataset`) record their subject and
version in the Parquet schema's metadata (key ``ddia_ray.schema``), so a reader finds the version it
reads from; for other files the version whose Arrow schema matches the files' is taken, or the
caller names it. URLs are fsspec URLs (``file://``, ``memory://``, ``s3://``).

An event archive (:mod:`ddia_ray.events.archive`) is a dataset whose rows hold codec payloads of
many types and versions: :func:`events_table` decodes the payloads of one type and gives their
fields as columns at the version asked for, beside each event's position, stream and version.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from .._fs import arrow_fs, is_local
from ..errors import InvalidArgumentError, MigrationError
from .history import SubjectHistory
from .migrations import AddField, ChangeType, Migration, RemoveField, RenameField, get_conversion, python_default
from .upcasting import record_frame

__all__ = ["migrate_table", "read_dataset", "iter_dataset", "write_dataset", "rewrite_dataset", "dataset_version",
           "events_table", "METADATA_KEY"]

#: The Parquet schema metadata key under which a written dataset names its subject and version.
METADATA_KEY = b"ddia_ray.schema"
_BATCH_ROWS = 65_536


# --- migrating a table -----------------------------------------------------------------------------


def _constant(name: str, value: Any, rows: int, target: pa.Schema) -> pa.Array:
    typ = target.field(name).type if name in target.names else None
    if value is None:
        return pa.nulls(rows, typ or pa.null())
    scalar = pa.scalar(value, typ) if typ is not None else pa.scalar(value)
    return pa.repeat(scalar, rows)


def _add(table: pa.Table, name: str, value: Any, target: pa.Schema) -> pa.Table:
    if name in table.column_names:  # as a field map's upgrade: a field the data has is kept
        return table
    return table.append_column(name, _constant(name, value, table.num_rows, target))


def _drop(table: pa.Table, name: str) -> pa.Table:
    return table.drop_columns([name]) if name in table.column_names else table


def _rename(table: pa.Table, old: str, new: str) -> pa.Table:
    if old not in table.column_names:
        return table
    if new in table.column_names:
        raise MigrationError(f"cannot rename column {old!r} to {new!r}: the data already has a column {new!r}")
    return table.rename_columns([new if n == old else n for n in table.column_names])


def _convert(table: pa.Table, name: str, conversion: str, target: pa.Schema) -> pa.Table:
    fn = get_conversion(conversion)
    if name not in table.column_names:
        return table
    column = table[name].combine_chunks()
    typ = target.field(name).type if name in target.names else None
    try:
        encoded = column.dictionary_encode()
        values, indices = encoded.dictionary.to_pylist(), encoded.indices
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested values: no dictionary, one call per row
        values, indices = column.to_pylist(), None
    try:
        converted = [None if v is None else fn(v) for v in values]
    except Exception as e:  # noqa: BLE001 - user code: its failure is the migration's
        raise MigrationError(f"conversion {conversion!r} failed on column {name!r}: {e!r}") from e
    out = pa.array(converted, type=typ)
    if indices is not None:
        out = out.take(indices)
    return table.set_column(table.column_names.index(name), name, out)


def _step(table: pa.Table, m: Migration, up: bool, target: pa.Schema) -> pa.Table:
    for rule in (m.rules if up else tuple(reversed(m.rules))):
        if type(rule) is AddField:
            table = _add(table, rule.name, rule.default, target) if up else _drop(table, rule.name)
        elif type(rule) is RemoveField:
            table = _drop(table, rule.name) if up else _add(table, rule.name, rule.default, target)
        elif type(rule) is RenameField:
            table = _rename(table, rule.old, rule.new) if up else _rename(table, rule.new, rule.old)
        elif type(rule) is ChangeType:
            table = _convert(table, rule.name, rule.forward if up else rule.backward, target)
        else:
            raise MigrationError(f"not a migration rule: {rule!r}")
    return table


def _conform(table: pa.Table, history: SubjectHistory, version: int) -> pa.Table:
    """``table`` with exactly the columns of ``version``'s Arrow schema, in its order and types."""
    schema = history.schema(version)
    target = schema.to_arrow()
    defaults = {f["name"]: f for f in schema.avro["fields"]}
    columns = []
    for field in target:
        if field.name in table.column_names:
            col = table[field.name]
            columns.append(col if col.type == field.type else pc.cast(col, field.type))
        elif "default" in defaults[field.name] or field.nullable:
            avro_field = defaults[field.name]
            value = python_default(avro_field["default"], avro_field["type"], {}) if "default" in avro_field else None
            columns.append(_constant(field.name, value, table.num_rows, target))
        else:
            raise MigrationError(f"subject {history.subject!r} version {version}: column {field.name!r} has no "
                                 f"value (no migration step fills it and it has no default)")
    return pa.Table.from_arrays(columns, schema=target)


def migrate_table(table: pa.Table, history: SubjectHistory, from_version: int, to_version: int) -> pa.Table:
    """``table`` (columns of ``from_version``) as ``to_version`` of ``history``'s subject holds it:
    every step's rules applied column by column, then conformed to ``to_version``'s Arrow schema."""
    for m, up in history.steps(from_version, to_version):
        table = _step(table, m, up, history.schema(m.to_version if up else m.from_version).to_arrow())
    return _conform(table, history, to_version)


# --- datasets ----------------------------------------------------------------------------------------


def _filesystem(url: str, storage_options: dict | None) -> tuple[Any, str, bool]:
    """``(Arrow filesystem, path, local)`` of an fsspec URL: Arrow's own for a local disk, else
    fsspec's wrapped (Arrow's threads over a Python filesystem are avoided: see events.archive)."""
    import fsspec

    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"a dataset is named by an fsspec URL, got {url!r:.80}")
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return arrow_fs(fs), path, is_local(fs)


def _dataset(url: str, storage_options: dict | None) -> tuple[Any, bool]:
    import pyarrow.dataset as ds

    fs, path, local = _filesystem(url, storage_options)
    return ds.dataset(path, format="parquet", filesystem=fs), local


def dataset_version(schema: pa.Schema, history: SubjectHistory) -> int:
    """The version a dataset of Arrow ``schema`` was written at: the one its metadata records, else
    the newest version whose Arrow schema has the same columns and types."""
    meta = (schema.metadata or {}).get(METADATA_KEY)
    if meta is not None:
        recorded = json.loads(meta)
        if recorded.get("subject") != history.subject:
            raise MigrationError(f"the dataset was written for subject {recorded.get('subject')!r}, not "
                                 f"{history.subject!r}")
        return int(recorded["version"])
    plain = pa.schema([pa.field(f.name, f.type) for f in schema])
    for v in sorted(history.schemas, reverse=True):
        target = history.schemas[v].to_arrow()
        if pa.schema([pa.field(f.name, f.type) for f in target]) == plain:
            return v
    raise MigrationError(f"no version of subject {history.subject!r} has the dataset's columns {schema.names}: "
                         f"name the version it was written at")


def iter_dataset(url: str, history: SubjectHistory, *, version: int | None = None,
                 from_version: int | None = None, storage_options: dict | None = None,
                 batch_rows: int = _BATCH_ROWS) -> Iterator[pa.Table]:
    """The Parquet dataset at ``url`` (written at ``from_version``; default: see
    :func:`dataset_version`) as ``version`` (default: the latest), one migrated table of at most
    ``batch_rows`` rows at a time (so a dataset larger than memory streams)."""
    data, local = _dataset(url, storage_options)
    written = dataset_version(data.schema, history) if from_version is None else from_version
    to = history.latest if version is None else version
    for batch in data.to_batches(batch_size=batch_rows, use_threads=local):
        yield migrate_table(pa.Table.from_batches([batch]), history, written, to)


def read_dataset(url: str, history: SubjectHistory, *, version: int | None = None, from_version: int | None = None,
                 storage_options: dict | None = None) -> pa.Table:
    """The whole dataset at ``url`` as ``version`` (see :func:`iter_dataset`)."""
    to = history.latest if version is None else version
    tables = list(iter_dataset(url, history, version=to, from_version=from_version,
                               storage_options=storage_options))
    return pa.concat_tables(tables) if tables else history.schema(to).to_arrow().empty_table()


def _with_metadata(schema: pa.Schema, history: SubjectHistory, version: int) -> pa.Schema:
    meta = {"subject": history.subject, "version": version, "fingerprint": history.schema(version).fingerprint}
    return schema.with_metadata({**(schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()})


def write_dataset(tables: Any, url: str, history: SubjectHistory, version: int, *,
                  storage_options: dict | None = None, compression: str = "zstd") -> int:
    """Write ``tables`` (one Arrow table, or an iterable of them, each with ``version``'s columns) as
    one Parquet file ``part-00000.parquet`` under the directory ``url``, recording the subject and
    version in its metadata; the answer is the rows written. The file is written under a temporary
    name and moved in place, so a reader never sees half of it under its final name."""
    import fsspec
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(path, exist_ok=True)
    schema = _with_metadata(history.schema(version).to_arrow(), history, version)
    final = f"{path.rstrip('/')}/part-00000.parquet"
    rows = 0
    with fs.open(final + ".tmp", "wb") as f, pq.ParquetWriter(f, schema, compression=compression) as writer:
        for t in ([tables] if isinstance(tables, pa.Table) else tables):
            writer.write_table(_conform(t, history, version).replace_schema_metadata(schema.metadata))
            rows += t.num_rows
    fs.mv(final + ".tmp", final)
    return rows


def rewrite_dataset(src: str, dst: str, history: SubjectHistory, version: int | None = None, *,
                    from_version: int | None = None, storage_options: dict | None = None) -> int:
    """Rewrite the dataset at ``src`` as ``version`` (default: the latest) under ``dst``, batch by
    batch; the answer is the rows written."""
    to = history.latest if version is None else version
    return write_dataset(iter_dataset(src, history, version=to, from_version=from_version,
                                      storage_options=storage_options), dst, history, to,
                         storage_options=storage_options)


# --- event archives ------------------------------------------------------------------------------------


def events_table(archive: Any, history: SubjectHistory, *, version: int | None = None,
                 event_type: str | None = None, prefix: str = "event_") -> pa.Table:
    """The events of ``event_type`` (default: the subject's name, a record tag) in ``archive`` (an
    event archive's ``pyarrow.dataset.Dataset`` or table: :func:`~ddia_ray.events.archive.archive_dataset`)
    with their payloads' fields as columns at ``version`` (default: the latest), each event written
    at whatever version it was, plus the event's ``position``, ``stream``, ``version``, ``id`` and
    ``created_ms`` as columns named with ``prefix``; in position order."""
    tag = history.subject if event_type is None else event_type
    to = history.latest if version is None else version
    if isinstance(archive, pa.Table):
        rows = archive.filter(pc.equal(archive["type"], tag))
    else:
        import pyarrow.dataset as ds

        rows = archive.to_table(filter=ds.field("type") == tag, use_threads=False)
    by_version: dict[int, tuple[list, list]] = {}
    for i, payload in enumerate(rows["data"].to_pylist()):
        _, written, payload_fields = record_frame(payload)
        group = by_version.setdefault(written, ([], []))
        group[0].append(i)
        group[1].append(payload_fields)
    event_columns = ("position", "stream", "version", "id", "created_ms")
    parts = []
    for written, (indices, fields) in sorted(by_version.items()):
        data = pa.Table.from_pylist(fields, schema=history.schema(written).to_arrow())
        data = migrate_table(data, history, written, to)
        taken = rows.select(list(event_columns)).take(pa.array(indices, pa.int64()))
        for name in event_columns:
            data = data.append_column(prefix + name, taken[name])
        parts.append(data)
    if not parts:
        empty = history.schema(to).to_arrow().empty_table()
        for name in event_columns:
            empty = empty.append_column(prefix + name, rows[name].slice(0, 0))
        return empty
    return pa.concat_tables(parts).sort_by(prefix + "position")
