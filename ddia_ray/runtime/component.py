"""The one handle convention: ``X.launch(...)`` owns the actors, ``X.connect(name)`` attaches to them.

Theory of operation
-------------------
Every ddia-ray component a user starts (a storage node, a cache, a balancer,
a RaftKV cluster) is a :class:`~ddia_ray.runtime.group.NodeGroup` of shells
plus a :class:`Component` handle over it:

* ``X.launch(name, ...)`` starts the group and returns the handle, which
  owns the actors: ``shutdown()`` kills them, and the handle is a context
  manager that shuts down on exit. ``detached=True`` makes the actors outlive
  the launching driver.
* ``X.connect(name)`` returns a handle on the same actors from any other
  driver, notebook or Ray job on the cluster. It checks that the group is
  really an ``X`` (its nodes run ``X``'s factory), so connecting a cache
  handle to a RaftKV group fails at once with a precise error. A handle from
  ``connect`` owns the actors as much as the launcher's: ``shutdown()`` from
  either stops them.
* ``client(**options)`` returns a new thread-safe client that batches for
  the user and offers futures; ``stats()`` returns every node's figures (the
  same ones exported as Ray metrics, see :mod:`ddia_ray.runtime.metrics`);
  ``nemesis`` partitions, pauses, kills and restarts the nodes.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator

from ..errors import ComponentNotFoundError
from .group import Nemesis, NodeGroup
from .service import ServiceRef, ServiceSpec

__all__ = ["Component", "ServiceComponent"]


class Component:
    """Base of every handle that ``launch`` returns (see the module docstring).

    Subclasses set :attr:`factories` (the factories their nodes run) and implement
    :meth:`client`; they may override :meth:`_attached` to rebuild their own settings
    from the group's specs.
    """

    #: The ``"module:callable"`` factories of this component's nodes (checked by :meth:`connect`).
    factories: ClassVar[tuple[str, ...]] = ()

    def __init__(self, group: NodeGroup):
        self.group = group
        self.name = group.name

    @property
    def nemesis(self) -> Nemesis:
        """Fault injection over this component's nodes: partitions, link faults, pauses, kills, restarts."""
        return self.group.nemesis

    @classmethod
    def connect(cls, name: str, *, timeout_s: float = 30.0):
        """A handle on the running component ``name``, launched by any driver on this Ray cluster.

        Raises :class:`~ddia_ray.errors.ComponentNotFoundError` if no group of that name runs,
        or if it runs something other than this kind of component.
        """
        group = NodeGroup.connect(name, timeout_s=timeout_s)
        kinds = {spec.factory for spec in group.specs.values()}
        if cls.factories and not kinds <= set(cls.factories):
            raise ComponentNotFoundError(name, [f"{name} (runs {sorted(kinds)})"], kind=cls.__name__)
        return cls._attached(group)

    @classmethod
    def _attached(cls, group: NodeGroup):
        """The handle over an existing ``group`` (from :meth:`connect`)."""
        return cls(group)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The node ids of this component."""
        return self.group.node_ids()

    def client(self, **options: Any) -> Any:  # pragma: no cover - every component defines it
        """A new client of this component."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Per node: its calls (count, errors, latency) and the component's own figures."""
        return self.group.stats()

    def shutdown(self, *, destroy_data: bool = False) -> None:
        """Stop and kill every node (closing services cleanly); ``destroy_data`` deletes durable logs."""
        self.group.shutdown(destroy_data=destroy_data)

    @contextlib.contextmanager
    def shutdown_on_error(self) -> Iterator[Any]:
        """A block that finishes setting up a component just launched (a node added, a topic
        created): if it raises, every node is stopped and its data deleted, so no half-made
        component is left running, and the error goes on to the caller."""
        try:
            yield self
        except BaseException:
            self.shutdown(destroy_data=True)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, nodes={list(self.nodes)})"


class ServiceComponent(Component):
    """A component of one service node named like the component (storage node, cache, balancer).

    Subclasses list their service's factory first in :attr:`factories` and start it with
    :meth:`_launch_service`; :meth:`_ref` addresses the node for a client.
    """

    @classmethod
    def _launch_service(cls, name: str, options: dict, threads: int, *, detached: bool = False, config=None,
                        actor_options: Any = None):
        """Start one shell named ``name`` hosting ``factories[0]`` built with ``options``; its handle."""
        spec = ServiceSpec(cls.factories[0], options, threads)
        return cls(NodeGroup.launch(name, {name: spec}, detached=detached, config=config,
                                    actor_options=actor_options))

    @property
    def node(self) -> str:
        """The node id (the component's name): what the nemesis and the callees' networks see."""
        return self.nodes[0]

    def _ref(self, src: str) -> ServiceRef:
        """The node's address for a client calling as ``src`` (the current actor, in this process)."""
        return ServiceRef(self.name, self.node, src=src, owner=self.group)
