"""A watched configuration store with etcd v3's model, on the Raft-replicated store.

Theory of operation: every write is a deterministic procedure the replicated store runs in its log
(:mod:`ddia_ray.replication.procedures`), so a Raft group orders it, numbers it with the next
global *revision* and replicates it; the history of every key is kept as rows keyed by key and
revision (MVCC), so reads at a past revision, transactions, watches that resume from a revision,
compaction and rollback are all reads and writes of those rows. Leases are the one thing that
needs a clock: a small lessor service keeps their deadlines and proposes the revoke of an expired
lease as a procedure, as etcd's lessor does on its leader.

Modules:

* :mod:`.records`: :class:`KeyValue`, :class:`WatchEvent`, :class:`Compare`, :class:`Op`,
  :class:`TxnResult`, :class:`Lease` (codec records);
* :mod:`.keys`: the row layout;
* :mod:`.mvcc`: the pure reads and writes of rows (revisions, versions, leases, history);
* :mod:`.procedures`: the writes the replicas run (:mod:`.maintenance`: compaction and rollback);
* :mod:`.queries`: the reads one replica answers (the watch feed among them);
* :mod:`.lessor`: the pure lessor core (deadlines from the ``now`` it is given);
* :mod:`.lessor_service`: the lessor as a runtime service next to the Raft members;
* :mod:`.client`: :class:`ConfigClient` (get, put, txn, leases, watches);
* :mod:`.lease_keeper`: :class:`~.lease_keeper.LeaseKeeper`, a lease renewed from a thread of its own;
* :mod:`.watch`: the one long poll per client that feeds its watches;
* :mod:`.local`: the same store in one process (no Ray), for tests and notebooks;
* :mod:`.store`: :class:`ConfigStore`, the handle (launch, connect, client, stats, shutdown);
* :mod:`.typed`: :class:`~.typed.TypedConfig`, a schema with defaults and validation over a key;
* :mod:`.simulation`: seeded runs of watches under member failover, with their checker.

See docs/config.md.
"""

from __future__ import annotations

from typing import Any

from .records import Compare, KeyValue, Lease, Op, TxnResult, WatchEvent

__all__ = ["ConfigStore", "ConfigClient", "Watch", "KeyValue", "WatchEvent", "Compare", "Op", "TxnResult", "Lease",
           "LocalConfig"]


def __getattr__(name: str) -> Any:
    # The handle and the client pull in the replicated store (and Ray's client side): imported on first
    # use, so a replica that only loads the procedures, or a pure test, does not pay for them.
    if name == "ConfigStore":
        from .store import ConfigStore
        return ConfigStore
    if name in ("ConfigClient", "Watch"):
        from . import client
        return getattr(client, name)
    if name == "LocalConfig":
        from .local import LocalConfig
        return LocalConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
