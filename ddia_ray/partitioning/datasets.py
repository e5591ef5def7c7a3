"""Ray Data in and out of a partitioned store: one read task per partition, parallel routed writes.

Theory of operation
-------------------
:func:`to_ray_dataset` turns the store (or a key range of it) into a Ray Dataset with one read
task per partition the range overlaps. Each task reads its partition's stored keys, through its
worker process's client of the store (connected by the first task there, then reused), with a
*pinned* scan (every page from one view of the group's leader, :mod:`ddia_ray.replication.pins`;
pages as Arrow, :mod:`ddia_ray.replication.arrow_pages`): a consistent snapshot per partition, as
Ray users ask ("what was in partition 3 at one moment"). Snapshots of different partitions are
taken at different moments; the store has no cross-partition snapshot (that needs a global
clock or a coordinator, DDIA 9). A partition that moves or splits while its task reads is
followed by the partition-aware client: the task goes on after its last key under the new map.

:func:`write_dataset` writes a Ray Dataset, or the Parquet files at a path or URL, into the
store. Write tasks send the rows through their worker process's partition-aware client (connected
by the first task there, then reused); every Arrow batch is cut by partition (:mod:`.bulk`) and
each partition's part goes to its group as one *ingest* entry (:mod:`ddia_ray.replication.ingest`):
the rows travel as Arrow buffers, the log holds them as one value, and each replica on the LSM
engine adds them as one SSTable, with no step per row anywhere. The groups replicate what they
take, so a bulk load is as durable as any write and every replica's state still follows from its
log; nothing bypasses the log (a replica that imported files on its own would differ from its log).

Both kinds of input go through the store's own load tasks, each keeping up to
:data:`_TASK_INGESTS` ingests in flight, so it reads and cuts its next batch while the groups take
the last. Parquet files are not read through Ray Data at all: one task per file reads it with
pyarrow (through fsspec, like every file the project reads). A Dataset is executed by Ray Data,
and its blocks, as they are made (``iter_internal_ref_bundles``, streaming), go to load tasks of
about ``batch_rows`` rows each, which fetch them from the object store. The first version ran
``map_batches`` tasks, and timestamps showed why that was slow: Ray Data's executor took 0.65-1.1 s
over 500,000 rows on this project's 2-core machine whatever the work (a no-op ``map_batches``;
pyarrow reads the same files in 35 ms), its map tasks took their batches only once the reads were
done, and each waited for its ingests before taking the next batch, so the groups' work never
overlapped the reading (docs/partitioning.md, "Ray Data").
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Any, Callable, Iterator

import pyarrow as pa
import ray.data
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from .._fs import arrow_fs, is_local
from .._validate import integer, positive
from ..errors import ComponentNotFoundError, ConfigError, InvalidArgumentError
from .keyspace import stored_key
from .partition_map import PartitionMap

__all__ = ["to_ray_dataset", "write_dataset"]

_BLOCK_ROWS = 100_000  # rows per block a read task yields (pages are joined up to this)
_IN_FLIGHT = 8  # requests in flight per group of a task's client (write_dataset's default too)
#: Ingests a Parquet load task keeps outstanding: enough that reading and cutting the next batch
#: overlaps the groups' work on the last ones, few enough to bound the task's memory (each holds
#: its rows until acknowledged).
_TASK_INGESTS = 4


def _read_partition(store_name: str, instance: str, lo: bytes, hi: bytes | None, keep: tuple | None, read: str,
                    page_rows: int) -> Iterator[pa.Table]:
    """Runs in a Ray task: partition ``[lo, hi)`` of ``store_name`` as Arrow tables, through the
    worker process's client of the store (:func:`_client`)."""
    client = _client(store_name, instance, _IN_FLIGHT)
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in client.scan_stored(lo, hi, keep=keep, read=read, page_rows=page_rows, pinned=True):
        pending.append(batch)
        rows += batch.num_rows
        if rows >= _BLOCK_ROWS:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


class _PartitionSource(Datasource):
    """A Ray Data source: one read task per partition of a map that ``[start, end)`` overlaps."""

    def __init__(self, store_name: str, instance: str, pmap: PartitionMap, start: bytes | None, end: bytes | None,
                 read: str, page_rows: int):
        self.tasks: list[tuple] = []
        if pmap.scheme == "hash":  # every partition holds keys of any range: each keeps [start, end)
            keep = (start or b"", end)
            self.tasks = [(p.start, p.end, keep) for p in pmap.partitions]
        else:
            for p in pmap.locator().overlapping(start, end):
                lo = max(start or b"", p.start)
                hi = end if p.end is None else (p.end if end is None else min(end, p.end))
                if hi is None or lo < hi:
                    self.tasks.append((lo, hi, None))
        self.store_name, self.instance, self.read, self.page_rows = store_name, instance, read, page_rows

    def estimate_inmemory_data_size(self) -> int | None:
        """Unknown before reading (the groups keep no per-partition byte counts)."""
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        """One task per partition, whatever ``parallelism`` asks: a partition is the unit of reading."""
        out = []
        for lo, hi, keep in self.tasks:
            def read_fn(lo=lo, hi=hi, keep=keep) -> Iterator[pa.Table]:
                return _read_partition(self.store_name, self.instance, lo, hi, keep, self.read, self.page_rows)

            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            out.append(ReadTask(read_fn, meta))
        return out


def to_ray_dataset(store, start=None, end=None, *, read: str = "linearizable",
                   page_rows: int = 10_000) -> "ray.data.Dataset":
    """The pairs of ``[start, end)`` (users' keys; None: unbounded) as a Ray Dataset of ``key`` and
    ``value`` binary columns: one read task per partition, each a consistent snapshot of its
    partition (see the module docstring). Range scheme: blocks come in key order per partition."""
    s = None if start is None else stored_key("range", start)  # checks the type
    e = None if end is None else stored_key("range", end)
    if s is not None and e is not None and s > e:
        raise ConfigError(f"range start {s!r} is after its end {e!r}")
    source = _PartitionSource(store.name, store.instance, store.partition_map(), s, e, read, page_rows)
    # One block stream per partition, as many as there are: left to choose, Ray Data asks for 200
    # and cuts each task's output into that many blocks (a SplitBlocks step after the read).
    return ray.data.read_datasource(source, override_num_blocks=max(1, len(source.tasks)))


#: Per worker process, the clients of the stores its read and write tasks used lately, newest last. A Ray
#: worker runs task after task; connecting to a store took 17-72 ms a task on this project's
#: 2-core machine, a tenth of the time a 100,000-row batch takes to load there. Keyed by the
#: store's instance too: a store launched again under the same name is another store, and a
#: client of the old one would wait out its timeouts on dead actors.
_CLIENTS: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_CLIENTS_KEPT = 4
_CLIENTS_LOCK = threading.Lock()


def _client(store_name: str, instance: str, in_flight: int):
    """A partition-aware client of ``store_name`` for this process (connected once, then reused)."""
    from .store import PartitionedStore

    key = (store_name, instance, in_flight)
    with _CLIENTS_LOCK:
        held = _CLIENTS.pop(key, None)
        if held is None:
            store = PartitionedStore.connect(store_name, routers=False)
            if store.instance != instance:  # relaunched since the caller's handle was made
                store.close()
                raise ComponentNotFoundError(f"{store_name} (instance {instance})", [store.name],
                                             kind="PartitionedStore")
            held = (store, store.client(max_in_flight=in_flight))
        _CLIENTS[key] = held
        while len(_CLIENTS) > _CLIENTS_KEPT:
            store, client = _CLIENTS.popitem(last=False)[1]
            client.close()
            store.close()
    return held[1]


def _send(client, batches: Iterator[pa.RecordBatch], ingest_rows: int) -> int:
    """Bulk-load ``batches`` (``key``, ``value`` columns) through ``client`` as ingests of about
    ``ingest_rows`` rows (smaller batches are joined), up to :data:`_TASK_INGESTS` outstanding, so
    the next batch is read and cut while the groups take the last; returns the rows acknowledged."""
    pending: collections.deque = collections.deque()
    rows = 0

    def send(group: list) -> None:
        if len(pending) >= _TASK_INGESTS:
            pending.popleft().result()
        table = pa.Table.from_batches(group)
        pending.append(client.ingest_nowait(table.column(0), table.column(1)))  # refused whole if not binary

    group: list = []
    held = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        group.append(batch)
        held += batch.num_rows
        if held >= ingest_rows:
            send(group)
            rows, group, held = rows + held, [], 0
    if held:
        send(group)
        rows += held
    for f in pending:
        f.result()
    return rows


def _load_files(store_name: str, instance: str, url: str, storage_options: dict | None, files: list[str],
                key: str, value: str, ingest_rows: int, in_flight: int) -> int:
    """A Ray task: bulk-load the Parquet ``files`` (paths on ``url``'s filesystem); see :func:`_send`."""
    import fsspec
    import pyarrow.dataset as ds

    client = _client(store_name, instance, in_flight)
    fs, _ = fsspec.core.url_to_fs(url, **(storage_options or {}))
    scanner = ds.dataset(files, format="parquet", filesystem=arrow_fs(fs)).scanner(
        columns=[key, value], batch_size=ingest_rows, use_threads=is_local(fs))  # see arrow_fs
    return _send(client, scanner.to_batches(), ingest_rows)


def _load_blocks(store_name: str, instance: str, pieces: list, key: str, value: str, ingest_rows: int,
                 in_flight: int) -> int:
    """A Ray task: bulk-load ``pieces`` of Ray Data blocks, each ``(block ref, first row, rows)``
    (None: to the end), fetched one at a time; see :func:`_send`."""
    from ray.data.block import BlockAccessor

    client = _client(store_name, instance, in_flight)

    def batches() -> Iterator[pa.RecordBatch]:
        for ref, first, rows in pieces:
            table = BlockAccessor.for_block(ray.get(ref)).to_arrow()  # Arrow or pandas blocks
            yield from table.select([key, value]).slice(first, rows).to_batches()

    return _send(client, batches(), ingest_rows)


_load_file_task = ray.remote(_load_files)
_load_block_task = ray.remote(_load_blocks)


def _gather(tasks: Iterator[Callable[[], Any]], window: int | None) -> int:
    """Start the load tasks ``tasks`` yields, at most ``window`` running (None: no bound); the rows
    they loaded. A task's error is raised here (Ray's ``RayTaskError`` is also an instance of the
    error the task raised)."""
    running: list = []
    rows = 0
    for start in tasks:
        if window is not None and len(running) >= window:
            done, running = ray.wait(running, num_returns=1)
            rows += ray.get(done[0])
        running.append(start())
    return rows + sum(ray.get(running))


def _parquet_files(url: str, storage_options: dict | None, key: str, value: str) -> list[str]:
    """The Parquet files of the dataset at ``url`` (a file or a directory tree), its columns checked."""
    import fsspec
    import pyarrow.dataset as ds

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        data = ds.dataset(path, format="parquet", filesystem=arrow_fs(fs))
    except (OSError, pa.ArrowInvalid) as e:  # no such path; a file that is not Parquet
        raise InvalidArgumentError(f"cannot read a Parquet dataset at {url!r}: {e}") from None
    missing = {key, value} - set(data.schema.names)
    if missing:
        raise InvalidArgumentError(f"the Parquet dataset at {url!r} has no column(s) {sorted(missing)}; "
                                   f"name them with key=, value=")
    return list(data.files)


def _parquet_tasks(store, url: str, storage_options: dict | None, key: str, value: str, ingest_rows: int,
                   in_flight: int) -> Iterator[Callable[[], Any]]:
    """One load task per Parquet file of the dataset at ``url``."""
    for path in _parquet_files(url, storage_options, key, value):
        yield functools.partial(_load_file_task.remote, store.name, store.instance, url, storage_options, [path],
                                key, value, ingest_rows, in_flight)


def _block_tasks(store, data: "ray.data.Dataset", key: str, value: str, batch_rows: int, ingest_rows: int,
                 in_flight: int) -> Iterator[Callable[[], Any]]:
    """Load tasks of about ``batch_rows`` rows each over the blocks of ``data``, as Ray Data makes
    them: small blocks are grouped, a large one is cut into slices that tasks fetch in parallel (Ray
    Data read eight Parquet files of 62,500 rows into one block of 500,000 with one task; one load
    task for it would leave the other cores idle)."""
    group: list = []
    rows = 0

    def task(pieces: list) -> Callable[[], Any]:
        return functools.partial(_load_block_task.remote, store.name, store.instance, pieces, key, value,
                                 ingest_rows, in_flight)

    for bundle in data.iter_internal_ref_bundles():  # streams: tasks start while Ray Data reads on
        for ref, meta in zip(bundle.block_refs, bundle.metadata):
            n = meta.num_rows
            if n is None:  # unknown size: the block whole, counted as a full task's worth
                group.append((ref, 0, None))
                rows = batch_rows
            else:
                first = 0
                while first < n:
                    take = min(n - first, batch_rows - rows)
                    group.append((ref, first, take))
                    first, rows = first + take, rows + take
                    if rows >= batch_rows:
                        yield task(group)
                        group, rows = [], 0
            if rows >= batch_rows:
                yield task(group)
                group, rows = [], 0
    if group:
        yield task(group)


def write_dataset(store, data, *, key: str = "key", value: str = "value", batch_rows: int = 100_000,
                  ingest_rows: int = 100_000, concurrency: int | None = None, in_flight: int = _IN_FLIGHT,
                  storage_options: dict | None = None) -> int:
    """Write ``data`` (a Ray Dataset, or the fsspec path or URL of a Parquet file or a directory of
    them) into the store; returns the rows written. ``key``/``value`` name binary columns; a key
    repeated keeps one of its values (which, when the copies fall in different batches, is not
    defined). The rows go as ingests of up to ``ingest_rows`` rows each (then cut by partition),
    with ``in_flight`` requests outstanding per group of each task's client; at most
    ``concurrency`` load tasks run at once (None: for files, as many as the cluster's CPUs allow;
    for a Dataset, one per CPU). A Dataset's blocks go to tasks of about ``batch_rows`` rows as Ray
    Data makes them; Parquet files are read by one task per file (see the module docstring), with
    fsspec's ``storage_options``. Larger ingests mean fewer, larger SSTables for the groups to
    compact (measured in docs/partitioning.md)."""
    positive("batch_rows", integer("batch_rows", batch_rows))
    positive("ingest_rows", integer("ingest_rows", ingest_rows))
    positive("in_flight", integer("in_flight", in_flight))
    if concurrency is not None:
        positive("concurrency", integer("concurrency", concurrency))
    if isinstance(data, str):
        return _gather(_parquet_tasks(store, data, storage_options, key, value, ingest_rows, in_flight), concurrency)
    if not isinstance(data, ray.data.Dataset):
        raise InvalidArgumentError(f"write_dataset takes a Ray Dataset or a Parquet path, got {type(data).__name__}")
    missing = {key, value} - set(data.schema().names)
    if missing:
        raise InvalidArgumentError(f"the dataset has no column(s) {sorted(missing)}; name them with key=, value=")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return _gather(_block_tasks(store, data, key, value, batch_rows, ingest_rows, in_flight), concurrency or cpus)
