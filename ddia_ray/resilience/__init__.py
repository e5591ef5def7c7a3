"""Resilience: circuit breakers, retries with backoff and budgets, and a resilient Ray actor handle.

Theory of operation: the pure parts (:mod:`.windows`, :mod:`.breaker`,
:mod:`.retry`, :mod:`.budget`) never import Ray and take time from an
injected clock, so they are tested with fake clocks and work around any
callable. :mod:`.handle` composes them around ``ActorHandle`` calls, mapping
Ray's errors to :mod:`ddia_ray.errors`; it imports Ray only when it is used.
"""

from .breaker import (TRANSITIONS, BreakerMetrics, CircuitBreaker, Event, Permit, State,
                      StateTransition)
from .breaker_config import BreakerSettings, CircuitBreakerConfig, Outcome
from .budget import BudgetStats, RetryBudget
from .handle import HandleStats, ResilientHandle
from .retry import JITTERS, Backoff, Retrier, RetryPolicy, RetryStats
from .windows import CountWindow, WindowSnapshot, TimeWindow

__all__ = [
    "TRANSITIONS",
    "BreakerMetrics",
    "BreakerSettings",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "Event",
    "Outcome",
    "Permit",
    "State",
    "StateTransition",
    "BudgetStats",
    "RetryBudget",
    "HandleStats",
    "ResilientHandle",
    "JITTERS",
    "Backoff",
    "Retrier",
    "RetryPolicy",
    "RetryStats",
    "CountWindow",
    "WindowSnapshot",
    "TimeWindow",
]
