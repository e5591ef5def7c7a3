"""Load balancing: pickers, outlier detection, the balancer core, and the balancer on Ray.

Theory of operation: a :class:`Picker` chooses a member for each request
(round robin, nginx's smooth weighted round robin, weighted least connections,
power of two choices, or a consistent-hash ring); an
:class:`OutlierDetector` ejects members whose requests keep failing, the way
Envoy does; :class:`BalancerCore` ties both to in-flight counts, health marks
from a failure detector, draining and panic mode. All of it is deterministic:
time is passed in as ``now_s`` and randomness comes from a seeded
``random.Random``. :class:`BalancedHandle` drives a core from a client process
(breakers, retries, health checks over a node group); :class:`BalancerActor`
runs one as an actor that many clients share.
"""

from .actor import BalancerActor, BalancerClient, BalancerService
from .balancer import PICKERS, BalancedHandle, BalancedStats
from .consistent_hash import ConsistentHashPicker, blake2b_64
from .core import BalancerCore, BalancerStats, ReplicaStats
from .least_connections import WeightedLeastConnectionsPicker
from .outlier import EjectionEvent, OutlierDetector, OutlierStatus
from .pickers import Picker
from .power_of_two import PowerOfTwoChoicesPicker
from .round_robin import RoundRobinPicker
from .settings import DEFAULT_WEIGHT, BalancerSettings
from .weighted import SmoothWeightedRoundRobinPicker

__all__ = [
    "Picker",
    "RoundRobinPicker",
    "SmoothWeightedRoundRobinPicker",
    "WeightedLeastConnectionsPicker",
    "PowerOfTwoChoicesPicker",
    "ConsistentHashPicker",
    "blake2b_64",
    "OutlierDetector",
    "EjectionEvent",
    "OutlierStatus",
    "BalancerCore",
    "BalancerStats",
    "ReplicaStats",
    "PICKERS",
    "BalancerSettings",
    "DEFAULT_WEIGHT",
    "BalancedHandle",
    "BalancedStats",
    "BalancerActor",
    "BalancerClient",
    "BalancerService",
]
