"""The storage-node actor: one engine behind batch methods, and a client that batches for you.

Theory of operation
-------------------
:meth:`StorageNode.launch` starts a runtime shell (:mod:`ddia_ray.runtime.shell`)
hosting a :class:`StorageService`, which owns one engine opened with
:func:`~ddia_ray.storage.engine.open_engine`. Every call passes the shell's
fault model and pause, so the node's nemesis partitions, pauses, kills and
restarts it like any Raft member. Every method takes and returns
codec-encoded batches (never one actor call per key: a call costs about a
millisecond, see ``bench/actor_rate.py``). Killing the actor loses nothing
acknowledged by a durable engine: ``nemesis.restart`` (or
:meth:`StorageNode.restart`) starts a new actor that reopens the engine at the
same URL and recovers it.

:class:`StorageClient` (from :meth:`StorageNode.client`) is what code calls. Its plain methods take batches;
its ``*_future`` methods return ``concurrent.futures.Future`` objects and are
coalesced by a background thread into one actor call per ``max_batch``
operations or ``linger_s`` seconds, whichever comes first, so code written
one key at a time still crosses the actor boundary in batches. Within one
round the queued writes are sent before the queued reads, so a read issued
after a write of the same key sees it (a read issued just *before* a write may
see it too: futures promise read-your-writes, not a point in time).

Scans cross the boundary as Arrow. :meth:`StorageService.scan_batches` is a Ray
streaming generator: one engine scan (one snapshot, one pinned version)
yields lists of ``pyarrow.RecordBatch`` es of :data:`KV_SCHEMA` (about
``batch_rows`` rows per list), each put in Ray's object store as it is made,
so the client reads one while the node cuts the next, and the Arrow buffers
are never re-encoded row by row (the LSM serves a range with nothing to merge
straight from its SSTables' Arrow columns). :meth:`StorageClient.scan_batches` and
:meth:`StorageClient.scan_arrow` hand the batches (or one ``pa.Table``) to
bulk users; :meth:`StorageClient.scan` keeps yielding ``(key, value)`` pairs,
built from the batches.
"""

from __future__ import annotations

import concurrent.futures
import threading
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa

from .. import codec
from .._validate import integer, non_negative, positive
from ..errors import InvalidArgumentError
from ..runtime.component import ServiceComponent
from ..runtime.service import ServiceRef
from .engine import (KV_SCHEMA, Op, OpColumns, WriteBatch, check_range, decode_columns, encode_ops, open_engine,
                     pair_batches, to_key, to_value)

__all__ = ["StorageNode", "StorageClient", "StorageService"]

_FACTORY = "ddia_ray.storage.node:StorageService"
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})

_DEFAULT_BATCH_ROWS = 65536  # ~8 MB of 16 B keys and 100 B values: few objects, still pipelined


def _check_scan_args(limit: int | None, batch_rows: int) -> None:
    positive("batch_rows", integer("batch_rows", batch_rows))
    if limit is not None:
        non_negative("limit", integer("limit", limit))


def _compact(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch``, copied if it is a small slice of larger buffers.

    Pickling a sliced Arrow array ships its parent's whole buffers (pyarrow 26): a 100-row
    slice of a 4096-row group would cross the object store at the group's size.
    """
    if batch.get_total_buffer_size() <= 2 * batch.nbytes + 4096:
        return batch
    return pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in batch.columns], schema=batch.schema)


class StorageService:
    """The service a storage node's shell hosts: one engine behind batch methods.

    Built by the shell as ``StorageService(node_id, url=..., engine=..., options=...)``;
    users start it with :meth:`StorageNode.launch`.
    """

    component = "storage"
    methods = ("ping", "get_many", "write", "scan", "ingest_parquet", "flush", "compact", "stats")
    streams = ("scan_batches",)

    def __init__(self, node_id: str, *, url: str | None, engine: str = "lsm",
                 options: Mapping[str, Any] = _NO_OPTIONS):
        self.node_id = node_id
        self.url = url
        self.engine_name = engine
        self.calls = 0
        self.db = open_engine(url, engine, **dict(options))

    def ping(self) -> str:
        """Liveness probe: the engine name."""
        return self.engine_name

    def get_many(self, keys: bytes) -> bytes:
        """Encoded tuple of keys in; encoded tuple of values (or None) out."""
        self.calls += 1
        ks = codec.decode(keys, tuple)
        many = getattr(self.db, "get_many", None)
        values = many(ks) if many is not None else [self.db.get(k) for k in ks]
        return codec.encode(tuple(values))

    def write(self, ops: bytes) -> int:
        """Apply an encoded batch (:func:`~.engine.encode_ops`) atomically; returns how many ops."""
        self.calls += 1
        columns = decode_columns(ops)
        by_columns = getattr(self.db, "write_columns", None)  # the LSM's: no record per operation
        if by_columns is not None:
            by_columns(columns)
        else:
            self.db.write(columns.to_batch())
        return len(columns.keys)

    def scan(self, start: bytes | None, end: bytes | None, limit: int, reverse: bool) -> bytes:
        """Up to ``limit`` live pairs of ``[start, end)`` (encoded); page with the last key.

        The codec-encoded page API, kept for existing callers; :class:`StorageClient` scans
        through :meth:`scan_batches` (Arrow, one snapshot per scan).
        """
        self.calls += 1
        out = []
        for pair in self.db.scan(start, end, reverse=reverse):
            out.append(pair)
            if len(out) >= limit:
                break
        return codec.encode(tuple(out))

    def scan_batches(self, start: bytes | None, end: bytes | None, limit: int | None, reverse: bool,
                     batch_rows: int) -> Iterator[list]:
        """Live pairs of ``[start, end)`` as lists of :data:`KV_SCHEMA` record batches, at most ``limit`` rows.

        A generator: call it with ``num_returns="streaming"`` (the client does) so every list
        goes to the object store as soon as it holds ``batch_rows`` rows (the engine's batches,
        e.g. the LSM's row-group slices, are grouped as they are, not copied into one). The
        whole scan reads one snapshot.
        """
        self.calls += 1
        _check_scan_args(limit, batch_rows)
        arrow = getattr(self.db, "scan_batches", None)
        if arrow is not None:
            batches = arrow(start, end, reverse=reverse, limit=limit, batch_rows=batch_rows)
        else:
            batches = pair_batches(iter(self.db.scan(start, end, reverse=reverse)), batch_rows, limit)
        group, rows = [], 0
        for batch in batches:
            group.append(_compact(batch))
            rows += batch.num_rows
            if rows >= batch_rows:
                yield group
                group, rows = [], 0
        if group:
            yield group

    def ingest_parquet(self, url: str, storage_options: dict | None = None) -> int:
        """Bulk-load a Parquet dataset with ``key`` and ``value`` binary columns; returns rows loaded."""
        import pyarrow.dataset as ds
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        table = ds.dataset(path, filesystem=fs, format="parquet").to_table(columns=["key", "value"])
        ingest = getattr(self.db, "ingest", None)
        if ingest is not None:
            ingest(table)
        else:
            batch = WriteBatch()
            for k, v in zip(table.column("key").to_pylist(), table.column("value").to_pylist()):
                batch.put(k, v)
            self.db.write(batch)
        return table.num_rows

    def flush(self) -> None:
        """Flush the engine's memory to its files."""
        self.db.flush()

    def compact(self) -> None:
        """Run a full compaction."""
        self.db.compact()

    def stats(self) -> dict:
        """The engine's statistics plus the actor's call count."""
        return {**dict(self.db.stats()), "node_calls": self.calls}

    def close(self) -> None:
        """Close the engine (called by the shell on a clean shutdown)."""
        self.db.close()


class StorageNode(ServiceComponent):
    """A running storage node: what :meth:`launch` and :meth:`connect` return.

    One node of one service, named like the component, so the nemesis addresses it by the
    component's name (``node.nemesis.pause(node.name)``).
    """

    factories = (_FACTORY,)

    @classmethod
    def launch(cls, name: str, url: str | None, *, engine: str = "lsm", threads: int = 8, detached: bool = False,
               config=None, actor_options: Mapping[str, Any] | None = None, **options) -> "StorageNode":
        """Start the node ``name`` on the engine at ``url`` (reopened and recovered if it exists).

        ``options`` are the engine's (see :func:`~.engine.open_engine`); ``threads`` calls run at
        once. An engine that cannot open (not a database, corrupt, bad options) raises its own
        error here. ``config`` is the nemesis' initial network config.
        """
        return cls._launch_service(name, {"url": url, "engine": engine, "options": dict(options)}, threads,
                                   detached=detached, config=config, actor_options=actor_options)

    def client(self, *, src: str = "client", **options) -> "StorageClient":
        """A new batching client (see :class:`StorageClient` for the options), calling as ``src``."""
        return StorageClient(self._ref(src), **options)

    def restart(self) -> None:
        """Kill the node if it runs and start it again: the engine reopens and recovers its files."""
        if self.node in self.group.alive():
            self.nemesis.kill(self.node)
        self.nemesis.restart(self.node)


class StorageClient:
    """Batching client of a storage node (see the module docstring); thread-safe.

    ``target`` is the :class:`~ddia_ray.runtime.service.ServiceRef` of the node (or of anything
    serving the same methods, such as a cache actor).
    """

    def __init__(self, target: ServiceRef, *, timeout_s: float = 60.0, max_batch: int = 1000,
                 linger_s: float = 0.002):
        if not isinstance(target, ServiceRef):
            raise InvalidArgumentError(f"a StorageClient calls a ServiceRef, got {type(target).__name__}")
        self.target = target
        self.timeout_s = positive("timeout_s", timeout_s)
        self.max_batch = int(positive("max_batch", max_batch))
        self.linger_s = positive("linger_s", linger_s)
        self._cv = threading.Condition()
        self._gets: list[tuple[bytes, concurrent.futures.Future]] = []
        self._ops: list[tuple[Op, concurrent.futures.Future]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._flusher, name="ddia-ray-storage-client", daemon=True)
        self._thread.start()

    # --- blocking batch API ---------------------------------------------------

    def _call(self, method: str, *args: Any) -> Any:
        return self.target.call(method, *args, timeout_s=self.timeout_s)

    def get_many(self, keys: Iterable[Any]) -> list:
        """Values of ``keys`` (None where absent), in one actor call."""
        ks = tuple(to_key(k) for k in keys)
        return list(codec.decode(self._call("get_many", codec.encode(ks)), tuple))

    def get(self, key: Any) -> bytes | None:
        """One value (prefer :meth:`get_many` or :meth:`get_future` in loops)."""
        return self.get_many([key])[0]

    def write(self, batch: WriteBatch) -> int:
        """Apply ``batch`` atomically in one actor call."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgumentError("write() takes a WriteBatch")
        return self._write(batch)

    def _write(self, batch: WriteBatch | OpColumns) -> int:
        return self._call("write", encode_ops(batch))

    def put_many(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> int:
        """Set many keys atomically in one call."""
        pairs = items.items() if isinstance(items, Mapping) else items
        keys, values = [], []
        for k, v in pairs:
            keys.append(k if type(k) is bytes else to_key(k))
            values.append(v if type(v) is bytes else to_value(v))
        return self._write(OpColumns.puts(tuple(keys), tuple(values)))

    def put(self, key: Any, value: Any) -> None:
        """Set one key (prefer :meth:`put_many` or :meth:`put_future` in loops)."""
        self.write(WriteBatch().put(key, value))

    def delete(self, key: Any) -> None:
        """Delete one key."""
        self.write(WriteBatch().delete(key))

    def delete_range(self, start: Any, end: Any) -> None:
        """Delete every key in ``[start, end)``."""
        self.write(WriteBatch().delete_range(start, end))

    def scan(self, start: Any = None, end: Any = None, *, reverse: bool = False,
             page_size: int = 1000) -> Iterator[tuple[bytes, bytes]]:
        """Iterate the live pairs of ``[start, end)``, fetched in batches of ``page_size`` rows.

        One streaming actor call reads one snapshot of the node's engine (the LSM and the
        B+tree; the memory engine scans a copy), whatever the number of batches. The pairs are
        built from the Arrow batches of :meth:`scan_batches`; bulk users should take those.
        """
        for batch in self.scan_batches(start, end, reverse=reverse, batch_rows=page_size):
            keys, values = batch.columns
            yield from zip(keys.to_pylist(), values.to_pylist())

    def scan_batches(self, start: Any = None, end: Any = None, *, reverse: bool = False,
                     limit: int | None = None, batch_rows: int = _DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Record batches (:data:`KV_SCHEMA`) of the live pairs of ``[start, end)``, in scan order.

        At most ``limit`` rows in all and ``batch_rows`` per batch (a batch may be shorter: the
        LSM hands out slices of its row groups rather than copy them together). The node streams
        about ``batch_rows`` rows per object through Ray's object store while this generator
        consumes them (see the module docstring).
        """
        s, e = check_range(start, end)
        _check_scan_args(limit, batch_rows)
        for group in self.target.stream("scan_batches", s, e, limit, reverse, batch_rows, timeout_s=self.timeout_s):
            yield from group

    def scan_arrow(self, start: Any = None, end: Any = None, *, reverse: bool = False,
                   limit: int | None = None, batch_rows: int = _DEFAULT_BATCH_ROWS) -> pa.Table:
        """The live pairs of ``[start, end)`` as one ``pa.Table`` (chunked by batch, no copy)."""
        batches = list(self.scan_batches(start, end, reverse=reverse, limit=limit, batch_rows=batch_rows))
        return pa.Table.from_batches(batches, schema=KV_SCHEMA)

    def flush(self) -> None:
        """Flush the node's engine."""
        self._call("flush")

    def compact(self) -> None:
        """Fully compact the node's engine."""
        self._call("compact")

    def stats(self) -> dict:
        """The node's engine statistics plus its call count."""
        return self._call("stats")

    def ingest_parquet(self, url: str, storage_options: dict | None = None) -> int:
        """Have the node bulk-load a Parquet dataset (key, value columns) directly from ``url``."""
        return self._call("ingest_parquet", url, storage_options)

    # --- futures, coalesced by the flusher thread ----------------------------------

    def get_future(self, key: Any) -> concurrent.futures.Future:
        """A future of one value; many calls are sent as one ``get_many``."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._check_open()
            self._gets.append((to_key(key), fut))
            self._cv.notify()
        return fut

    def put_future(self, key: Any, value: Any) -> concurrent.futures.Future:
        """A future completed once the write is acknowledged; writes are coalesced in order."""
        return self._op(Op("put", to_key(key), to_value(value)))

    def delete_future(self, key: Any) -> concurrent.futures.Future:
        """Like :meth:`put_future` for a deletion."""
        return self._op(Op("delete", to_key(key)))

    def _op(self, op: Op) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._check_open()
            self._ops.append((op, fut))
            self._cv.notify()
        return fut

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this StorageClient is closed")

    def _flusher(self) -> None:
        while True:
            with self._cv:
                while not (self._gets or self._ops or self._closed):
                    self._cv.wait()
                if not (self._gets or self._ops) and self._closed:
                    return
                # Linger briefly so that one-at-a-time callers fill a batch.
                if len(self._gets) < self.max_batch and len(self._ops) < self.max_batch and not self._closed:
                    self._cv.wait(self.linger_s)
                ops, self._ops = self._ops[: self.max_batch], self._ops[self.max_batch:]
                gets, self._gets = self._gets[: self.max_batch], self._gets[self.max_batch:]
            # Writes first, so a get issued after a put by the same caller sees it.
            if ops:
                self._complete([f for _, f in ops], lambda ops=ops: self.write(WriteBatch(tuple(o for o, _ in ops))),
                               spread=False)
            if gets:
                self._complete([f for _, f in gets], lambda gets=gets: self.get_many([k for k, _ in gets]),
                               spread=True)

    @staticmethod
    def _complete(futures: Sequence[concurrent.futures.Future], call, spread: bool) -> None:
        try:
            result = call()
        except BaseException as e:  # noqa: BLE001 - every waiter learns the failure; nothing is dropped silently
            for f in futures:
                f.set_exception(e)
            return
        for i, f in enumerate(futures):
            f.set_result(result[i] if spread else None)

    def close(self) -> None:
        """Send what is queued, then stop the flusher thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=self.timeout_s)
