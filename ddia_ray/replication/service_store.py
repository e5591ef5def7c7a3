"""The handle of a service built on a Raft-replicated store running the service's procedures.

Theory of operation
-------------------
The event store, the schema registry and the configuration store are built
the same way: a :class:`~.store.ReplicatedStore` under the Raft protocol
(every write committed by a majority, so an acknowledged write survives
losing a minority of members; DDIA 9.3) whose members all import one module
of procedures and queries (:mod:`.procedures`), the service's whole write and
read path. :class:`ServiceStore` is that handle once: each service subclasses
it, names its module in :attr:`ServiceStore.procedures_module`, says why it
refuses the other protocols (leader-follower's async modes could lose an
acknowledged write), and adds its own ``client()`` and ``stats()``.

:meth:`ServiceStore.connect` (from :class:`~ddia_ray.runtime.component.Component`)
finds the group from any driver and checks that it runs the service's
procedures, so a plain replicated store, or another service's, is refused with
:class:`~ddia_ray.errors.ComponentNotFoundError`.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from ..errors import ComponentNotFoundError, ConfigError
from ..runtime.component import Component
from ..runtime.group import NodeGroup
from .backend import ProcedureBackend
from .store import ReplicatedStore

__all__ = ["ServiceStore"]

_S = TypeVar("_S", bound="ServiceStore")


class ServiceStore(Component):
    """A running service on a Raft-replicated store (see the module docstring). Subclasses set
    :attr:`procedures_module`, :attr:`raft_only` and :attr:`runs`, and add ``client()``."""

    factories: ClassVar[tuple[str, ...]] = ReplicatedStore.factories
    #: The module every member imports: it registers the service's procedures and queries.
    procedures_module: ClassVar[str] = ""
    #: The :class:`~ddia_ray.errors.ConfigError` text for a protocol other than Raft: why the
    #: service needs every acknowledged write committed by a majority.
    raft_only: ClassVar[str] = "this service replicates with Raft"
    #: What :meth:`connect` requires of a group, in its refusal ("the event store's procedures").
    runs: ClassVar[str] = "the service's procedures"

    def __init__(self, store: ReplicatedStore):
        super().__init__(store.group)
        self.store = store

    @classmethod
    def launch(cls: type[_S], name: str | None = None, replicas: int = 3, *, root: str | None = None,
               engine: str = "lsm", **options: Any) -> _S:
        """Start the service on ``replicas`` Raft members keeping their rows under ``root`` (an fsspec
        URL; required for the ``lsm`` and ``btree`` engines, ``engine="map"`` keeps them in memory and
        in the members' logs). ``options`` go to :meth:`~ddia_ray.replication.ReplicatedStore.launch`
        (``sync``, ``tick_s``, ``detached``, ``procedures`` to host other services in the same store)."""
        if "protocol" in options and options["protocol"] != "raft":
            raise ConfigError(cls.raft_only)
        options.pop("protocol", None)
        own = cls.procedures_module
        procedures = tuple(options.pop("procedures", ()))
        store = ReplicatedStore.launch(name, replicas, protocol="raft", engine=engine, root=root,
                                       procedures=(own, *[p for p in procedures if p != own]), **options)
        return cls(store)

    @classmethod
    def _attached(cls, group: NodeGroup):
        store = ReplicatedStore._attached(group)
        if not cls._runs_here(store):
            raise ComponentNotFoundError(group.name, [f"{group.name} (a replicated store without {cls.runs})"],
                                         kind=cls.__name__)
        return cls(store)

    @classmethod
    def _runs_here(cls, store: ReplicatedStore) -> bool:
        """Whether ``store``'s group runs this service (its members load its procedures)."""
        return cls.procedures_module in store.options.get("procedures", ())

    def _backend(self, *, read: str | None, timeout_s: float, **options: Any) -> Any:
        """The backend a new client of the service runs over: a new client of the replicated store
        (``read``: its read mode; ``options``: its other settings)."""
        return ProcedureBackend(self.store.client(timeout_s=timeout_s, read=read, **options))

    @property
    def members(self) -> tuple:
        """The Raft members (``r1..rn``)."""
        return self.store.members

    def leader(self) -> str:
        """The member that leads now."""
        return self.store.leader()

    def kill(self, member: str) -> None:
        """Kill a member's actor, or another node's of the group (``ray.kill``): its volatile state is
        gone; a member's log and rows stay."""
        self.store.kill(member)

    def restart(self, member: str) -> None:
        """Restart a killed member (it recovers from its log and catches up from the leader), or
        another node of the group."""
        self.store.restart(member)

    def partition(self, groups) -> None:
        """Cut the network between groups of members (``"*"``: everyone else, clients included), as
        :meth:`ReplicatedStore.partition <ddia_ray.replication.ReplicatedStore.partition>` does."""
        self.store.partition(groups)

    def heal(self) -> None:
        """Remove every partition and cut."""
        self.store.heal()

    def pause(self, member: str) -> None:
        """Freeze a member (no ticks, input held): a process pause (DDIA 8.3)."""
        self.store.pause(member)

    def resume(self, member: str) -> None:
        """Let a paused member run again."""
        self.store.resume(member)

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop every node of the group (``destroy_data``: and delete their logs and rows)."""
        self.store.shutdown(destroy_data=destroy_data)
