"""The configuration store users launch: etcd's model on a Raft-replicated store, plus its lessor.

Theory of operation
-------------------
:meth:`ConfigStore.launch` starts a :class:`~ddia_ray.replication.ReplicatedStore`
under the Raft protocol (every write committed by a majority, so a committed
revision survives losing a minority of members; DDIA 9.3) with the
configuration store's procedures (:mod:`.procedures`) loaded in every member,
as every service on procedures is launched
(:class:`~ddia_ray.replication.service_store.ServiceStore`), and adds one more
node to the same group: the lessor (:mod:`.lessor_service`), which times
leases and revokes the expired ones. One group, so the nemesis, ``connect``
and ``shutdown`` reach both.

The handle is the project's one convention: ``client()``, ``stats()``,
``nemesis``, ``kill``/``restart`` of a member (or of ``"lessor"``),
``shutdown()``, and :meth:`ConfigStore.connect` from another driver, which
checks that the group it finds really runs the configuration store's
procedures and its lessor.
"""

from __future__ import annotations

from typing import Any

from ..replication.service_store import ServiceStore
from ..replication.store import ReplicatedStore
from ..runtime.service import ServiceRef, ServiceSpec
from .client import ConfigClient, ReplicatedBackend
from .lessor_service import FACTORY as LESSOR_FACTORY
from .lessor_service import NODE as LESSOR

__all__ = ["ConfigStore", "PROCEDURES", "LESSOR"]

#: The module every member imports: it registers the configuration store's procedures and queries.
PROCEDURES = "ddia_ray.config.procedures"


class ConfigStore(ServiceStore):
    """A running configuration store (see the module docstring). Create it with :meth:`launch`."""

    factories = (*ReplicatedStore.factories, LESSOR_FACTORY)
    procedures_module = PROCEDURES
    raft_only = ("a configuration store replicates with Raft (a committed revision survives losing a minority of "
                 "members; watchers must never see a revision that is later lost)")
    runs = "the configuration store's procedures or lessor"

    @classmethod
    def launch(cls, name: str | None = None, replicas: int = 3, *, root: str | None = None, engine: str = "lsm",
               lessor_interval_s: float = 0.05, **options: Any) -> "ConfigStore":
        """Start a configuration store of ``replicas`` Raft members keeping their rows under ``root``
        (an fsspec URL; required for the ``lsm`` and ``btree`` engines, ``engine="map"`` keeps them
        in memory and in the members' logs) and its lessor, which checks lease deadlines every
        ``lessor_interval_s``. ``options`` go to :meth:`~ddia_ray.replication.ReplicatedStore.launch`
        (``sync``, ``tick_s``, ``detached``, ...)."""
        handle = super().launch(name, replicas, root=root, engine=engine, **options)
        with handle.shutdown_on_error():
            handle.group.add(LESSOR, ServiceSpec(LESSOR_FACTORY, {"store": handle.name,
                                                                 "interval_s": float(lessor_interval_s)}, 4))
        return handle

    @classmethod
    def _runs_here(cls, store: ReplicatedStore) -> bool:
        """Whether ``store``'s group runs the configuration store: its procedures, and the lessor."""
        return super()._runs_here(store) and LESSOR in store.group.specs

    def lessor(self, src: str = "client") -> ServiceRef:
        """The lessor's address, called as ``src``."""
        return ServiceRef(self.name, LESSOR, src=src, owner=self.group)

    def _backend(self, *, read: str | None, timeout_s: float, **options: Any) -> ReplicatedBackend:
        """A new client of the replicated store, and the lessor, called as that client."""
        inner = self.store.client(timeout_s=timeout_s, read=read, **options)
        return ReplicatedBackend(inner, self.lessor(inner.name), read=read)

    def client(self, *, read: str | None = "leader", timeout_s: float = 30.0, watch_wait_s: float = 5.0,
               **options: Any) -> ConfigClient:
        """A new client (thread-safe; calls from many threads share the store's batches). ``read``: the
        replicated store's read mode (``"leader"``: every read sees every write acknowledged before
        it; ``"follower"``: any replica, which watches can use too, since a watch asks for what lies
        after its revision wherever it asks). ``watch_wait_s``: how long a replica holds a watch's
        blocking query. ``options`` go to the replicated store's client."""
        return ConfigClient(self._backend(read=read, timeout_s=timeout_s, **options), timeout_s=timeout_s,
                            watch_wait_s=watch_wait_s)

    def stats(self) -> dict:
        """The store's counters (``revision``, ``compacted``, ``next_lease``), the lessor's figures
        (``lessor``) and the replicated store's (``store``)."""
        with self.client() as c:
            status = c.status()
        try:
            lessor = self.group.call(LESSOR, "stats", timeout_s=10.0)
        except Exception as e:  # noqa: BLE001 - a killed lessor is a figure here, not a failure of stats()
            lessor = {"error": f"{type(e).__name__}: {e}"[:300]}
        return {**status, "lessor": lessor, "store": self.store.stats()}
