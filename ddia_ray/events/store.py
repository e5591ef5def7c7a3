"""The event store users launch: an append-only store of streams on a Raft-replicated store.

Theory of operation
-------------------
:meth:`EventStore.launch` starts a :class:`~ddia_ray.replication.ReplicatedStore`
under the Raft protocol (every append committed by a majority, so a committed
append survives losing a minority of members; DDIA 9.3) on the LSM engine (or
the one named), with the event store's procedures (:mod:`.procedures`) loaded
in every member: a :class:`~ddia_ray.replication.service_store.ServiceStore`,
as every service on the replicated store. The handle is the project's one convention: ``client()``,
``stats()``, ``nemesis``, ``shutdown()``, and :meth:`EventStore.connect` from
another driver, which checks that the group it finds really runs the event
store's procedures.

Rows (:mod:`.keys`), the log and the engine's files are the replicated store's,
so its durability, recovery, snapshots and membership changes apply unchanged.
"""

from __future__ import annotations

from typing import Any

from ..replication.service_store import ServiceStore
from .client import EventStoreClient

__all__ = ["EventStore", "PROCEDURES"]

#: The module every member imports: it registers the event store's procedures and queries.
PROCEDURES = "ddia_ray.events.procedures"


class EventStore(ServiceStore):
    """A running event store (see the module docstring). Create it with :meth:`launch`; its
    members, ``leader()``, ``kill()``, ``restart()`` and ``shutdown()`` are the
    :class:`~ddia_ray.replication.service_store.ServiceStore`'s, as are ``partition()``, ``heal()``,
    ``pause()`` and ``resume()``."""

    procedures_module = PROCEDURES
    raft_only = ("an event store replicates with Raft (a committed append survives losing a minority of members); "
                 "leader-follower's async modes could lose acknowledged events")
    runs = "the event store's procedures"

    def client(self, *, read: str | None = "leader", timeout_s: float = 30.0, archive: Any = None,
               archive_options: dict | None = None, **options: Any) -> EventStoreClient:
        """A new client (thread-safe; appends from many threads share the store's batches). ``read``:
        the replicated store's read mode for reads (``"leader"``: every read sees every append
        acknowledged before it; ``"session"``: a replica that has this client's own appends;
        ``"follower"``: any replica). ``archive`` and ``archive_options``: where the client reads
        archived events (:class:`~.client.EventStoreClient`; default: the URL the store recorded).
        ``options`` go to the replicated store's client."""
        return EventStoreClient(self._backend(read=read, timeout_s=timeout_s, **options), timeout_s=timeout_s,
                                archive=archive, archive_options=archive_options)

    def stats(self) -> dict:
        """The replicated store's figures (``store``) and the event count (``events``: the next ``$all``
        position, since positions are gap-free)."""
        with self.client() as c:
            rows, position, _ = c.read_all_page(-1, backward=True, page=1)
        return {"events": rows[0][2] + 1 if rows else 0, "store": self.store.stats()}
