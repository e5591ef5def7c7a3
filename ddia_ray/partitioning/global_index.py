"""Global (term-partitioned) secondary indexes, updated asynchronously from the groups' outboxes.

Theory of operation
-------------------
A local index (:mod:`ddia_ray.replication.indexing`) is cheap to keep and dear to query: every
query asks every group. A *global* index is partitioned by term instead (DDIA 6.2, "Partitioning
Secondary Indexes by Term"): the rows of one term live together, so a query asks the one or few
partitions that hold its term. Here a global index is a partitioned store of its own, range
partitioned over its rows' keys ``encode_term(term) + key`` (DynamoDB keeps each global secondary
index as a table of its own, with its own partitions, for the same reason), named
``<store>-gix-<index>``. Its partitions split and move like any store's.

**Asynchronous, through an outbox.** A write to the data changes rows in a different partition of
a different store; making both atomic would take a distributed transaction on every write (DDIA
6.2: "in practice, updates to global secondary indexes are often asynchronous"). Instead each
group records, in the same log entry as the write, an *outbox* row for the changed key naming
the terms its older values had (:mod:`ddia_ray.replication.indexing`). An indexer, a service of
its own (:class:`IndexerService`, one per index, restartable: it keeps no state the groups do
not), runs passes over every group's outbox; for each changed key it

1. reads the key's current value from its owner (a linearizable read through the partition-aware
   client, so after a move it reads the new owner),
2. writes the index: deletes the rows of the stale terms the value no longer has, puts the rows
   of the terms it has now (:func:`plan_updates`, pure),
3. deletes the outbox row with a compare-and-set on the value it read in the outbox: if the key
   was written again meanwhile, its row changed, the delete fails and the next pass takes it again.

Every write after step 1's read leaves an outbox row that a later pass processes, and one indexer
processes one key at a time (passes never overlap), so once writes stop and the outbox is empty
the index holds exactly the current terms of every key. Until then it *lags*.

**What a query returns.** A query scans the term's rows in the index store (key order), reads
those keys' current values from the data and keeps a key only if its current value still has
the term. So a query never returns a key whose value lost the term (a stale row is filtered, at
the cost of the read), and may miss a key whose value gained the term after the indexer's last
pass: the lag. :meth:`IndexerService.stats` reports it: ``pending`` (changes seen and not yet
indexed), ``lag_s`` (the age of the oldest of them, from when the indexer first saw it), and the
length of the last pass; ``catch_up()`` returns once a pass finds nothing to do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import ConfigError, DdiaRayError
from ..replication.indexing import IndexDef, Indexer, ReplOutboxScan, decode_outbox, outbox_row
from ..replication.records import CAS
from ..runtime import NodeGroup
from ..runtime.service import ServiceSpec
from .keyspace import user_key

if TYPE_CHECKING:
    from .client import PartitionedClient
    from .store import PartitionedStore

__all__ = ["encode_term", "term_bounds", "index_key", "IndexPlan", "plan_updates", "IndexerService",
           "index_store_name", "indexer_name", "launch_global_index", "drop_global_index", "query_global"]

_FACTORY = "ddia_ray.partitioning.global_index:IndexerService"
_NODE = "indexer"


def encode_term(term: bytes) -> bytes:
    """``term`` as the prefix of its index rows: each NUL escaped as ``00 ff`` and ``00 01`` at the
    end. Order-preserving (FoundationDB's tuple layer escapes alike), and no term's prefix starts
    another's, whatever bytes the terms and keys hold."""
    return term.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def term_bounds(term: bytes) -> tuple[bytes, bytes]:
    """``[start, end)`` of the index rows of ``term``."""
    prefix = encode_term(term)
    return prefix, prefix[:-1] + b"\x02"


def index_key(term: bytes, key: bytes) -> bytes:
    """The index store's key recording that ``key`` (the data's key) holds ``term``."""
    return encode_term(term) + key


def index_store_name(store: str, index: str) -> str:
    """The partitioned store holding global index ``index`` of ``store``."""
    return f"{store}-gix-{index}"


def indexer_name(store: str, index: str) -> str:
    """The node group of ``index``'s indexer service."""
    return f"{store}-gix-{index}-indexer"


@dataclass(frozen=True)
class IndexPlan:
    """What one page of outbox rows asks: index keys to delete and to put, and the outbox rows to
    acknowledge, ``(stored key, raw value)``, each deleted only if it still holds that value."""

    deletes: tuple
    puts: tuple
    acks: tuple


def plan_updates(rows: Sequence[tuple[bytes, bytes]], scheme: str, current: Sequence[bytes | None],
                 terms: Callable[[bytes | None], set]) -> IndexPlan:
    """The index changes of outbox ``rows`` (``(stored key, raw row)``), given each key's
    ``current`` value (read after the rows) and ``terms`` (the index function): the stale terms the
    current value lacks lose the key, every term it has gains it (rewriting a row is harmless)."""
    deletes: list = []
    puts: list = []
    for (stored, raw), value in zip(rows, current, strict=True):
        now = terms(value)
        key = user_key(scheme, stored)
        deletes += [index_key(t, key) for t in sorted(decode_outbox(raw) - now)]
        puts += [index_key(t, key) for t in sorted(now)]
    return IndexPlan(tuple(deletes), tuple(puts), tuple(rows))


class IndexerService:
    """The indexer of global index ``index`` of store ``store``: a runtime service (the one actor
    shell hosts it, the nemesis kills and restarts it) whose thread runs passes over the groups'
    outboxes every ``interval_s`` (see the module docstring)."""

    component = "indexer"
    methods = ("ping", "stats", "catch_up")

    def __init__(self, node_id: str, *, store: str, index: str, interval_s: float = 0.05,
                 page_rows: int = 1000):
        from .store import PartitionedStore

        self.node_id, self.index, self.page_rows, self.interval_s = node_id, index, page_rows, interval_s
        self.store = PartitionedStore.connect(store, routers=False)
        self.index_store = PartitionedStore.connect(index_store_name(store, index), routers=False)
        found = [d for d in self.store.indexes() if d.name == index and d.scope == "global"]
        if not found:
            raise ConfigError(f"{store!r} has no global index {index!r}")
        self._indexer = Indexer()
        self._indexer.load((found[0],))
        self.data = self.store.client(read="linearizable", timeout_s=30.0)
        self.rows = self.index_store.client(timeout_s=30.0)
        self._pass_lock = threading.Lock()  # passes never overlap (the module docstring's argument)
        self._stop = threading.Event()
        self._first_seen: dict[tuple[str, bytes], float] = {}
        self.figures: dict[str, Any] = {"passes": 0, "indexed": 0, "retained": 0, "index_rows_put": 0,
                                        "index_rows_deleted": 0, "pass_s": 0.0, "errors": 0, "last_error": ""}
        self._thread = threading.Thread(target=self._run, name=f"indexer-{index}", daemon=True)
        self._thread.start()

    def ping(self) -> str:
        """Liveness probe: the node id."""
        return self.node_id

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._pass_lock:
                    done = self._pass()
            except DdiaRayError as e:  # a group failing over, a timeout: the next pass tries again
                self.figures["errors"] += 1
                self.figures["last_error"] = f"{type(e).__name__}: {e}"[:500]
                done = 0
            if not done:
                self._stop.wait(self.interval_s)

    def _groups(self) -> list[str]:
        """Every group of the current map, connecting to any added since this service started."""
        for p in self.store.partition_map().partitions:
            if p.group not in self.store.groups:
                from ..replication import ReplicatedStore

                self.store.groups[p.group] = ReplicatedStore.connect(p.group)
        return list(self.store.groups)

    def _pass(self) -> int:
        """One pass over every group's outbox; returns the changes it indexed."""
        t0 = time.monotonic()
        done = 0
        for g in self._groups():
            admin = self.store.admin_client(g)
            cursor = b""
            while True:
                page = admin.call_leader(ReplOutboxScan(self.index, cursor, self.page_rows)).result()
                if page.keys:
                    done += self._index_page(g, admin, tuple(zip(page.keys, page.values)))
                if not page.more:
                    break
                cursor = page.cursor
        self.figures["passes"] += 1
        self.figures["pass_s"] = round(time.monotonic() - t0, 4)
        return done

    def _index_page(self, group: str, admin, rows: tuple) -> int:
        now = time.monotonic()
        for stored, _ in rows:
            self._first_seen.setdefault((group, stored), now)
        scheme = self.store.scheme
        current = self.data.get_many([user_key(scheme, k) for k, _ in rows])  # after the outbox read
        plan = plan_updates(rows, scheme, current, lambda v: self._indexer.terms(self.index, v))
        ops = [("delete", k) for k in plan.deletes] + [("put", k, b"") for k in plan.puts]
        if ops:
            self.rows.write(ops, across_partitions=True)  # acknowledged before any outbox row goes
        acked = admin.submit_ops(tuple((CAS, outbox_row(self.index, k), None, raw) for k, raw in plan.acks)).result()
        for (stored, _), ok in zip(plan.acks, acked):
            if ok:
                self._first_seen.pop((group, stored), None)
        kept = len(acked) - sum(acked)
        f = self.figures
        f["indexed"] += len(acked) - kept
        f["retained"] += kept  # written again meanwhile: the next pass takes it again
        f["index_rows_put"] += len(plan.puts)
        f["index_rows_deleted"] += len(plan.deletes)
        return len(acked) - kept

    def catch_up(self, timeout_s: float = 60.0) -> dict:
        """Run passes until one finds no change to index (what has been written is in the index,
        if nothing writes meanwhile); returns :meth:`stats`."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._pass_lock:
                done = self._pass()
            if not done and not self._first_seen:
                return self.stats()
            if time.monotonic() > deadline:
                raise ConfigError(f"index {self.index!r} did not catch up within {timeout_s}s "
                                  f"({len(self._first_seen)} changes pending)")

    def stats(self) -> dict:
        """The indexer's figures: changes ``pending`` and the index lag ``lag_s`` (the oldest pending
        change's age since the indexer first saw it), passes, rows written, errors."""
        oldest = min(self._first_seen.values(), default=None)
        return {**self.figures, "index": self.index, "pending": len(self._first_seen),
                "lag_s": 0.0 if oldest is None else round(time.monotonic() - oldest, 4),
                "index_errors": dict(self._indexer.errors)}

    def close(self) -> None:
        """Stop the passes and let go of the stores."""
        self._stop.set()
        self._thread.join(10)
        for c in (self.data, self.rows):
            c.close()
        self.store.close()
        self.index_store.close()


# --- the store's side (PartitionedStore delegates here) ---------------------------------------------


def launch_global_index(store: "PartitionedStore", definition: IndexDef, options: dict) -> tuple:
    """Start ``definition``'s index store and indexer (the definition is already in the groups' records:
    their outboxes fill from now on); returns their handles, which own the actors (a handle that
    launched them keeps them, as it keeps its groups). ``options`` go to the index store's launch."""
    from .store import PartitionedStore

    launch = dict(store.options.get("group_launch") or {})
    settings = {"groups": 1, "replicas": launch.pop("replicas", 3), "scheme": "range", **launch, **options}
    name = index_store_name(store.name, definition.name)
    rows = PartitionedStore.launch(name, **settings)
    try:
        group = NodeGroup.launch(indexer_name(store.name, definition.name),
                                 {_NODE: ServiceSpec(_FACTORY, {"store": store.name, "index": definition.name}, 4)},
                                 detached=bool(settings.get("detached")))
    except BaseException:
        rows.shutdown(destroy_data=True)
        raise
    return rows, group


def drop_global_index(store_name: str, index: str, handles: tuple | None, *, destroy_data: bool) -> None:
    """Stop ``index``'s indexer and its index store (``handles`` from :func:`launch_global_index`, or
    found by name; each only if it runs)."""
    from ..errors import ComponentNotFoundError
    from .store import PartitionedStore

    if handles is None:
        try:
            handles = (PartitionedStore.connect(index_store_name(store_name, index), routers=False, timeout_s=5.0),
                       None)
        except ComponentNotFoundError:
            handles = (None, None)
        try:
            handles = (handles[0], NodeGroup.connect(indexer_name(store_name, index), timeout_s=5.0))
        except ComponentNotFoundError:
            pass
    rows, group = handles
    if group is not None:
        group.shutdown()
    if rows is not None:
        rows.shutdown(destroy_data=destroy_data)


def indexer(store_name: str, index: str) -> NodeGroup:
    """The node group of ``index``'s indexer service (call ``.call("indexer", "stats")`` on it)."""
    return NodeGroup.connect(indexer_name(store_name, index))


def query_global(client: "PartitionedClient", definition: IndexDef, term: bytes,
                 page_rows: int) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, value)`` pairs whose current value has ``term``, in key order: the index store's
    rows of the term, each key checked against its current value (see the module docstring)."""
    rows = client._index_client(index_store_name(client.store.name, definition.name))
    check = Indexer()
    check.load((definition,))
    start, end = term_bounds(term)
    cut = len(start)
    for batch in rows.scan(start, end, page_rows=page_rows):
        keys = [k[cut:] for k in batch.column(0).to_pylist()]
        values = client.get_many(keys)
        for key, value in zip(keys, values):
            if value is not None and term in check.terms(definition.name, value):
                yield key, value


def index_stats(store_name: str, index: str) -> dict[str, Any]:
    """The indexer's :meth:`IndexerService.stats`."""
    return indexer(store_name, index).call(_NODE, "stats")


def catch_up(store_name: str, index: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until ``index``'s indexer finds nothing left to index; its stats."""
    return indexer(store_name, index).call(_NODE, "catch_up", timeout_s, timeout_s=timeout_s + 10.0)
