"""The nemesis vocabulary shared by the simulated network and Ray node groups.

Theory of operation: both :class:`~ddia_ray.runtime.simnet.SimNetwork` and
:class:`~ddia_ray.runtime.group.Nemesis` hold a
:class:`~ddia_ray.runtime.faults.NetworkConfig` and install a changed copy
with ``_install``. This mixin turns the user-facing verbs into config
changes once, so a fault schedule written for the simulator reads the same on
a real cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import UnknownNodeError
from .faults import ANY, NetworkConfig

__all__ = ["NetworkControls"]


class NetworkControls:
    """``partition``, ``heal``, ``cut``, ``link``, ``pause``, ``resume`` over a config.

    Subclasses provide ``config``, ``node_ids()`` and ``_install(config)``;
    ``_install`` returns only once the new config is in force everywhere.
    """

    if TYPE_CHECKING:  # read-only here: a subclass stores it (Nemesis) or derives it (SimNetwork)
        @property
        def config(self) -> NetworkConfig: ...

    def node_ids(self) -> tuple[str, ...]:  # pragma: no cover - abstract
        """Ids of the nodes this network knows."""
        raise NotImplementedError

    def _install(self, config: NetworkConfig) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _known(self, node: str) -> str:
        if node != ANY and node not in self.node_ids():
            raise UnknownNodeError(node, self.node_ids())
        return node

    def partition(self, groups: Iterable[Iterable[str]] | Mapping[str, Iterable[str]]) -> None:
        """Cut every link between nodes of different groups (``"*"`` = everyone else).

        ``groups`` is a sequence of groups or a mapping of group names to
        groups (``{"majority": [...], "minority": [...]}``); names only label
        the schedule for the reader.
        """
        if isinstance(groups, Mapping):
            groups = groups.values()
        groups = [list(g) for g in groups]
        for g in groups:
            for node in g:
                self._known(node)
        self._install(self.config.with_partition(groups))

    def isolate(self, node: str) -> None:
        """Cut ``node`` off from every other node, both ways."""
        self.partition([[self._known(node)], [ANY]])

    def cut(self, src: str, dst: str) -> None:
        """Cut the one-way link ``src -> dst``; ``dst`` still reaches ``src``."""
        self._install(self.config.with_cut(self._known(src), self._known(dst)))

    def heal(self) -> None:
        """Remove every partition and cut."""
        self._install(self.config.healed())

    def link(self, src: str = ANY, dst: str = ANY, **settings) -> None:
        """Set link behaviour: ``drop``, ``delay_s``, ``jitter_s``, ``duplicate``, ``reorder``."""
        self._install(self.config.with_link(self._known(src), self._known(dst), **settings))

    def reset_links(self) -> None:
        """Back to a perfect network: no partitions, cuts or link faults (pauses stay)."""
        self._install(self.config.reset())

    def pause(self, node: str) -> None:
        """Freeze ``node`` (like SIGSTOP): no ticks, and input waits until resumed."""
        self._install(self.config.with_paused(self._known(node), True))

    def resume(self, node: str) -> None:
        """Let a paused node run again; what reached it meanwhile is then processed."""
        self._install(self.config.with_paused(self._known(node), False))
