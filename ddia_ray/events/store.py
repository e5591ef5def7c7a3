"""The event store users launch: an append-only store of streams on a Raft-replicated store.

Theory of operation
-------------------
:meth:`EventStore.launch` starts a :class:`~ddia_ray.replication.ReplicatedStore`
under the Raft protocol (every append committed by a majority, so a committed
append survives losing a minority of members; DDIA 9.3) on the LSM engine (or
the one named), with the event store's procedures (:mod:`.procedures`) loaded
in every member. The handle is the project's one convention: ``client()``,
``stats()``, ``nemesis``, ``shutdown()``, and :meth:`EventStore.connect` from
another driver, which checks that the group it finds really runs the event
store's procedures.

Rows (:mod:`.keys`), the log and the engine's files are the replicated store's,
so its durability, recovery, snapshots and membership changes apply unchanged.
"""

from __future__ import annotations

from typing import Any

from ..errors import ComponentNotFoundError, ConfigError
from ..replication.store import ReplicatedStore
from ..runtime.component import Component
from .client import EventStoreClient, ReplicatedBackend

__all__ = ["EventStore", "PROCEDURES"]

#: The module every member imports: it registers the event store's procedures and queries.
PROCEDURES = "ddia_ray.events.procedures"


class EventStore(Component):
    """A running event store (see the module docstring). Create it with :meth:`launch`."""

    factories = ReplicatedStore.factories

    def __init__(self, store: ReplicatedStore):
        super().__init__(store.group)
        self.store = store

    @classmethod
    def launch(cls, name: str | None = None, replicas: int = 3, *, root: str | None = None, engine: str = "lsm",
               **options: Any) -> "EventStore":
        """Start an event store of ``replicas`` Raft members keeping their rows under ``root`` (an
        fsspec URL; required for the ``lsm`` and ``btree`` engines, ``engine="map"`` keeps them in
        memory and in the members' logs). ``options`` go to
        :meth:`~ddia_ray.replication.ReplicatedStore.launch` (``sync``, ``tick_s``, ``detached``, ...)."""
        if "protocol" in options and options["protocol"] != "raft":
            raise ConfigError("an event store replicates with Raft (a committed append survives losing a minority "
                              "of members); leader-follower's async modes could lose acknowledged events")
        options.pop("protocol", None)
        procedures = tuple(options.pop("procedures", ()))
        store = ReplicatedStore.launch(name, replicas, protocol="raft", engine=engine, root=root,
                                       procedures=(PROCEDURES, *[p for p in procedures if p != PROCEDURES]),
                                       **options)
        return cls(store)

    @classmethod
    def _attached(cls, group) -> "EventStore":
        store = ReplicatedStore._attached(group)
        if PROCEDURES not in store.options.get("procedures", ()):
            raise ComponentNotFoundError(group.name, [f"{group.name} (a replicated store without the event "
                                                      f"store's procedures)"], kind=cls.__name__)
        return cls(store)

    @property
    def members(self) -> tuple:
        """The Raft members (``r1..rn``)."""
        return self.store.members

    def client(self, *, read: str | None = "leader", timeout_s: float = 30.0, archive: Any = None,
               archive_options: dict | None = None, **options: Any) -> EventStoreClient:
        """A new client (thread-safe; appends from many threads share the store's batches). ``read``:
        the replicated store's read mode for reads (``"leader"``: every read sees every append
        acknowledged before it; ``"session"``: a replica that has this client's own appends;
        ``"follower"``: any replica). ``archive`` and ``archive_options``: where the client reads
        archived events (:class:`~.client.EventStoreClient`; default: the URL the store recorded).
        ``options`` go to the replicated store's client."""
        inner = self.store.client(timeout_s=timeout_s, read=read, **options)
        return EventStoreClient(ReplicatedBackend(inner), timeout_s=timeout_s, archive=archive,
                                archive_options=archive_options)

    def stats(self) -> dict:
        """The replicated store's figures (``store``) and the event count (``events``: the next ``$all``
        position, since positions are gap-free)."""
        with self.client() as c:
            rows, position, _ = c.read_all_page(-1, backward=True, page=1)
        return {"events": rows[0][2] + 1 if rows else 0, "store": self.store.stats()}

    def leader(self) -> str:
        """The member that leads now."""
        return self.store.leader()

    def kill(self, member: str) -> None:
        """Kill a member's actor (``ray.kill``): its volatile state is gone; its log and rows stay."""
        self.store.kill(member)

    def restart(self, member: str) -> None:
        """Restart a killed member; it recovers from its log and catches up from the leader."""
        self.store.restart(member)

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop every member (``destroy_data``: and delete their logs and rows)."""
        self.store.shutdown(destroy_data=destroy_data)
