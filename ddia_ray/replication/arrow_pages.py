"""Scan pages as Arrow: a page's key and value columns in one Arrow IPC stream.

Theory of operation
-------------------
A page of msgpack rows costs a Python object per key and per value at every step: the replica
builds them from its engine, the codec walks them, the client decodes them and builds the Arrow
arrays its caller wanted all along. A scan that asks for Arrow (``ReplScan.arrow``) gets the page
as an Arrow IPC stream of ``key`` and ``value`` binary columns in ``ScanResult.batch``: an LSM
state serves it from its SSTables' columns (``scan_batches``, no object per row when nothing is to
merge), any other state from the rows it scans, and the client reads the stream without a copy.

The stream crosses a trust boundary, so :func:`read_page` checks it whole before anyone uses it:
the schema, and every offset of both columns (``validate(full=True)``), which bounds every later
read of the arrays by the bytes received. A damaged page raises :class:`CorruptRecordError`.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from ..errors import CorruptRecordError
from ..storage.engine import KV_SCHEMA  # a page's columns: those of every engine's Arrow scan

__all__ = ["arrow_page", "page_bytes", "read_page", "rows_page", "scanned_page"]


def page_bytes(batches: Iterable[pa.RecordBatch]) -> bytes:
    """``batches`` (of :data:`KV_SCHEMA`'s columns) as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, KV_SCHEMA) as writer:
        for batch in batches:
            if batch.num_rows:
                writer.write_batch(batch if batch.schema.equals(KV_SCHEMA) else
                                   pa.record_batch(batch.columns, schema=KV_SCHEMA))
    return sink.getvalue().to_pybytes()


def rows_page(keys: tuple, values: tuple) -> bytes:
    """A page of ``keys`` and their ``values`` (bytes each) as an Arrow IPC stream."""
    return page_bytes([pa.record_batch([pa.array(keys, pa.binary()), pa.array(values, pa.binary())],
                                       schema=KV_SCHEMA)])


def arrow_page(state: Any, start: bytes, end: bytes | None, limit: int, view: Any = None) -> tuple[bytes, int]:
    """Up to ``limit`` pairs of ``[start, end)`` of ``state`` (as of ``view``) as a page, and its row
    count: from the state's own ``scan_arrow`` when it has one, else from the rows it scans."""
    scan_arrow = getattr(state, "scan_arrow", None)
    if scan_arrow is not None:
        return scan_arrow(start, end, limit, view)
    return scanned_page(state, start, end, limit, view)


def scanned_page(state: Any, start: bytes, end: bytes | None, limit: int, view: Any = None) -> tuple[bytes, int]:
    """:func:`arrow_page` built from the rows ``state.scan`` returns (a state without Arrow scans)."""
    keys, values = state.scan(start, end, limit, view)
    return rows_page(keys, values), len(keys)


def read_page(data: Any) -> list[pa.RecordBatch]:
    """The record batches of a page :func:`page_bytes` wrote, each checked whole (see the module
    docstring); raises :class:`CorruptRecordError` for anything else."""
    if type(data) is not bytes:
        raise CorruptRecordError(f"a scan page is bytes, got {type(data).__name__}")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        if not reader.schema.equals(KV_SCHEMA):
            raise CorruptRecordError(f"a scan page has columns {reader.schema.names} of types "
                                     f"{[str(t) for t in reader.schema.types]}, not binary key and value")
        batches = []
        for batch in reader:
            batch.validate(full=True)
            if batch.column(0).null_count or batch.column(1).null_count:
                raise CorruptRecordError("a scan page holds a null key or value")
            batches.append(batch)
    except CorruptRecordError:
        raise
    except (pa.ArrowException, ValueError, OSError) as e:  # ArrowInvalid, ArrowIOError, ...
        raise CorruptRecordError(f"a scan page is not a valid Arrow stream: {e}") from None
    return batches
