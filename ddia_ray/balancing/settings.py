"""The balancer settings that can change while it runs: the picker and the replicas' weights.

Theory of operation: :class:`BalancerSettings` is a codec record naming a
picker (one of :data:`~ddia_ray.balancing.balancer.PICKERS`, registered
plugins included) and the replicas' weights, checked at construction and so
at decode too: settings that reach a balancer actor are already valid. They
are a whole description, not a patch: a replica the weights do not name has
weight :data:`DEFAULT_WEIGHT`, so applying the same settings twice, or again
after a restart, gives the same balancer. They are applied by
:meth:`BalancerCore.reconfigure <ddia_ray.balancing.core.BalancerCore.reconfigure>`
(through :meth:`BalancedHandle.reconfigure
<ddia_ray.balancing.balancer.BalancedHandle.reconfigure>`), which keeps every
replica's in-flight count, health mark and ejection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from .._validate import integer, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError
from .pickers import _check_member_name

__all__ = ["BalancerSettings", "DEFAULT_WEIGHT"]

#: The weight of a replica the settings do not name.
DEFAULT_WEIGHT = 1


@record("balancing.settings", version=1)
class BalancerSettings:
    """A balancer's live settings: its ``picker`` (a name in :data:`PICKERS`) and ``weights``.

    ``weights`` maps replica names to positive int weights; replicas it does not name have
    :data:`DEFAULT_WEIGHT`. It may name replicas not in the pool (yet): their weight applies
    when they are added.
    """

    picker: str = "least_connections"
    weights: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        from .balancer import PICKERS  # the registry of picker names (plugins add theirs) imports this module

        if self.picker not in PICKERS:
            raise ConfigError(f"unknown picker {self.picker!r}; choose one of {sorted(PICKERS)}")
        if not isinstance(self.weights, Mapping):
            raise InvalidArgumentError(f"weights must map replica names to ints, got {type(self.weights).__name__}")
        for name, weight in self.weights.items():
            _check_member_name(name)
            positive(f"weights[{name!r}]", integer(f"weights[{name!r}]", weight))

    def weight_of(self, replica: str) -> int:
        """The weight these settings give ``replica``."""
        return self.weights.get(replica, DEFAULT_WEIGHT)
