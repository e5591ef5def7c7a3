"""Configuration of a circuit breaker, and how it classifies call outcomes.

Theory of operation: a :class:`CircuitBreakerConfig` is a frozen value checked
once in ``__post_init__``, so a breaker never meets an impossible setting at
run time. Defaults are resilience4j's. The config also owns the two policy
questions the state machine asks: "is this outcome a failure?"
(:meth:`CircuitBreakerConfig.classify_exception` / ``classify_result``) and
"how long do we stay open after the n-th consecutive opening?"
(:meth:`CircuitBreakerConfig.wait_in_open_for`).

Exception classification, first match wins:

1. not an ``Exception`` (cancellation, ``KeyboardInterrupt``): the call was
   abandoned, not answered; its permit is released and nothing is recorded;
2. an instance of ``ignore_exceptions``: neither success nor failure;
3. ``record_exceptions`` and/or ``record_exception``: a failure when it
   matches the types, or when the predicate says so (either one suffices when
   both are given; with neither, every ``Exception`` is a failure);
4. anything else is a success: the dependency answered, the caller erred.

:class:`BreakerSettings` is the plain-data part of a config (thresholds,
window, waits) as a codec record: what can travel to an actor and be
changed while a breaker runs (:meth:`CircuitBreaker.reconfigure
<ddia_ray.resilience.CircuitBreaker.reconfigure>`). The classification
callables and exception classes are code: they stay as the breaker was built.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable

from .._validate import at_least, integer, non_negative, number, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError

__all__ = ["CircuitBreakerConfig", "Outcome", "BreakerSettings"]


class Outcome(str, enum.Enum):
    """How one finished (or abandoned) call is counted."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    RELEASE = "release"  # the permit was not used (call never made, or cancelled)


def _exception_types(name: str, value) -> tuple:
    if not isinstance(value, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value):
        raise InvalidArgumentError(f"{name} must be a tuple of exception classes, got {value!r}")
    return value


def _rate_pct(name: str, value) -> float:
    if not 0 < number(name, value) <= 100:
        raise ConfigError(f"{name} must be a percentage in (0, 100], got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class CircuitBreakerConfig:
    """Thresholds, window and waits of a :class:`~ddia_ray.resilience.CircuitBreaker`.

    ``window_size`` counts calls for ``window_type="count"`` and seconds for
    ``"time"``. ``wait_multiplier > 1`` makes the open wait grow as
    ``wait_in_open_s * wait_multiplier ** (n - 1)`` on the n-th consecutive
    opening, capped by ``max_wait_in_open_s`` (None: no cap); closing resets n.
    ``max_wait_in_half_open_s = 0`` waits for every probe however long it takes.
    """

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_s: float = 60.0
    window_type: str = "count"
    window_size: int = 100
    minimum_calls: int = 100
    permitted_calls_in_half_open: int = 10
    wait_in_open_s: float = 60.0
    wait_multiplier: float = 1.0
    max_wait_in_open_s: float | None = None
    automatic_transition_from_open: bool = False
    max_wait_in_half_open_s: float = 0.0
    record_exception: Callable[[BaseException], bool] | None = None
    ignore_exceptions: tuple = ()
    record_exceptions: tuple | None = None
    record_result: Callable[[Any], bool] | None = None

    def __post_init__(self):
        _rate_pct("failure_rate_threshold", self.failure_rate_threshold)
        _rate_pct("slow_call_rate_threshold", self.slow_call_rate_threshold)
        positive("slow_call_duration_s", self.slow_call_duration_s)
        if self.window_type not in ("count", "time"):
            raise ConfigError(f"window_type must be 'count' or 'time', got {self.window_type!r}")
        at_least("window_size", integer("window_size", self.window_size), 1)
        at_least("minimum_calls", integer("minimum_calls", self.minimum_calls), 1)
        at_least("permitted_calls_in_half_open",
                 integer("permitted_calls_in_half_open", self.permitted_calls_in_half_open), 1)
        non_negative("wait_in_open_s", self.wait_in_open_s)
        at_least("wait_multiplier", self.wait_multiplier, 1.0)
        if self.max_wait_in_open_s is not None:
            at_least("max_wait_in_open_s", self.max_wait_in_open_s, self.wait_in_open_s)
        if not isinstance(self.automatic_transition_from_open, bool):
            raise InvalidArgumentError("automatic_transition_from_open must be a bool")
        non_negative("max_wait_in_half_open_s", self.max_wait_in_half_open_s)
        for name in ("record_exception", "record_result"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable or None")
        _exception_types("ignore_exceptions", self.ignore_exceptions)
        if self.record_exceptions is not None:
            _exception_types("record_exceptions", self.record_exceptions)

    @property
    def effective_minimum_calls(self) -> int:
        """Calls needed before rates count; a count window can never hold more than its size."""
        if self.window_type == "count":
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls

    def wait_in_open_for(self, consecutive_opens: int) -> float:
        """Seconds to stay OPEN on the ``consecutive_opens``-th opening in a row (1-based)."""
        wait_s = float(self.wait_in_open_s)
        if self.wait_multiplier != 1.0 and consecutive_opens > 1:
            try:
                wait_s *= self.wait_multiplier ** (consecutive_opens - 1)
            except OverflowError:  # only reachable without a cap, after ~1000 reopenings
                wait_s = math.inf
        if self.max_wait_in_open_s is not None:
            wait_s = min(wait_s, float(self.max_wait_in_open_s))
        return wait_s

    def classify_exception(self, exc: BaseException) -> Outcome:
        """Map a raised exception to an :class:`Outcome` (rules in the module docstring)."""
        if not isinstance(exc, Exception):
            return Outcome.RELEASE
        if self.ignore_exceptions and isinstance(exc, self.ignore_exceptions):
            return Outcome.IGNORED
        if self.record_exceptions is None and self.record_exception is None:
            return Outcome.FAILURE
        if self.record_exceptions is not None and isinstance(exc, self.record_exceptions):
            return Outcome.FAILURE
        if self.record_exception is not None and self.record_exception(exc):
            return Outcome.FAILURE
        return Outcome.SUCCESS

    def classify_result(self, result: Any) -> Outcome:
        """A returned value is a success unless ``record_result(result)`` says it is a failure."""
        if self.record_result is not None and self.record_result(result):
            return Outcome.FAILURE
        return Outcome.SUCCESS


#: The fields of :class:`CircuitBreakerConfig` that are plain data (the rest are callables and classes).
_PLAIN_FIELDS = ("failure_rate_threshold", "slow_call_rate_threshold", "slow_call_duration_s", "window_type",
                 "window_size", "minimum_calls", "permitted_calls_in_half_open", "wait_in_open_s",
                 "wait_multiplier", "max_wait_in_open_s", "automatic_transition_from_open",
                 "max_wait_in_half_open_s")


@record("resilience.breaker_settings", version=1)
class BreakerSettings:
    """The plain-data settings of a circuit breaker: what a running breaker can be switched to.

    Every field means what the :class:`CircuitBreakerConfig` field of the same name means, with
    the same default, and is checked by the same rules at construction (and so on decode too:
    an invalid value never reaches a breaker). Settings are a whole description, not a patch:
    a field left out takes its default. :meth:`config` turns them into a full config that keeps
    a base config's classification callables and exception classes.
    """

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_s: float = 60.0
    window_type: str = "count"
    window_size: int = 100
    minimum_calls: int = 100
    permitted_calls_in_half_open: int = 10
    wait_in_open_s: float = 60.0
    wait_multiplier: float = 1.0
    max_wait_in_open_s: float | None = None
    automatic_transition_from_open: bool = False
    max_wait_in_half_open_s: float = 0.0

    def __post_init__(self):
        self.config()  # one set of rules: CircuitBreakerConfig's own checks

    def config(self, base: CircuitBreakerConfig | None = None) -> CircuitBreakerConfig:
        """A :class:`CircuitBreakerConfig` with these settings and ``base``'s callables (default: none)."""
        if base is not None and not isinstance(base, CircuitBreakerConfig):
            raise InvalidArgumentError(f"base must be a CircuitBreakerConfig, got {type(base).__name__}")
        return dataclasses.replace(base or CircuitBreakerConfig(), **{f: getattr(self, f) for f in _PLAIN_FIELDS})

    @classmethod
    def of(cls, config: CircuitBreakerConfig) -> "BreakerSettings":
        """The plain-data settings of ``config``."""
        if not isinstance(config, CircuitBreakerConfig):
            raise InvalidArgumentError(f"config must be a CircuitBreakerConfig, got {type(config).__name__}")
        return cls(**{f: getattr(config, f) for f in _PLAIN_FIELDS})
