"""The runtime every component stands on: Ray connection, node shells, networks and the nemesis.

* :func:`ensure_ray` joins ``RAY_ADDRESS`` or starts a local Ray on demand.
* :class:`BaseCore` / :class:`Ready` are the sans-I/O contract of a pure core.
* :class:`SimNetwork` runs cores deterministically in virtual time.
* :class:`NodeGroup` runs the same cores as Ray actors, and the services
  (:class:`ServiceSpec`: storage nodes, caches, balancers) in the same shell;
  ``group.nemesis`` partitions, cuts, pauses, kills and restarts them all.
* :class:`Component` is the handle every ``X.launch`` returns and
  ``X.connect(name)`` finds again; :class:`ServiceRef` addresses one service node.
* :class:`ShellMetrics` exports every shell's figures through ``ray.util.metrics``.
"""

from .connect import NAMESPACE, ensure_ray
from .core import BaseCore, Core, CoreSpec, Envelope, Probe, ProbeAck, Ready, Reply, Rewrite
from .durable import DurableLog
from .faults import ANY, FaultModel, LinkSettings, NetworkConfig
from .component import Component, ServiceComponent
from .group import Nemesis, NodeGroup, assign_nodes, running_groups
from .metrics import ShellMetrics
from .service import ServiceRef, ServiceSpec
from .simnet import SimCall, SimNetwork

__all__ = [
    "NAMESPACE", "ensure_ray", "BaseCore", "Core", "CoreSpec", "Envelope", "Probe", "ProbeAck", "Ready", "Reply",
    "Rewrite",
    "DurableLog", "ANY", "FaultModel", "LinkSettings", "NetworkConfig", "Nemesis", "NodeGroup",
    "assign_nodes", "running_groups", "SimCall", "SimNetwork", "Component", "ServiceComponent", "ServiceRef",
    "ServiceSpec",
    "ShellMetrics",
]
