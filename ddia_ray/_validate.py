"""Argument checks shared by every component, raising :mod:`ddia_ray.errors` types.

Each helper returns the value it checked so constructors read as one line per
argument: ``self.threshold = positive("threshold", threshold)``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TypeVar

from .errors import ConfigError, DdiaRayError, InvalidArgumentError

_N = TypeVar("_N")


class InvariantViolation(DdiaRayError, AssertionError):
    """An internal invariant failed: a bug in ddia-ray, never the caller's fault."""


def invariant(condition: bool, message: str) -> None:
    """Assert an invariant; unlike ``assert`` it stays on under ``python -O``."""
    if not condition:
        raise InvariantViolation(message)


def number(name: str, value: _N) -> _N:
    """``value`` must be a finite real number (bools are refused); returns it unchanged."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidArgumentError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return value


def integer(name: str, value) -> int:
    """``value`` must be an ``int`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__}")
    return value


def positive(name: str, value):
    """``value`` must be a number > 0."""
    if number(name, value) <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return value


def non_negative(name: str, value):
    """``value`` must be a number >= 0."""
    if number(name, value) < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return value


def probability(name: str, value) -> float:
    """``value`` must be a number in [0, 1]."""
    if not 0 <= number(name, value) <= 1:
        raise ConfigError(f"{name} must be within [0, 1], got {value!r}")
    return float(value)


def at_least(name: str, value, low):
    """``value`` must be a number >= ``low``."""
    if number(name, value) < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
    return value


def page_limit(limit, most: int) -> int:
    """A read's ``limit`` (an int >= 1, else :class:`~ddia_ray.errors.InvalidArgumentError`), capped
    at ``most``: what one page of a query may return."""
    if type(limit) is not int or limit < 1:
        raise InvalidArgumentError(f"a read's limit is an int >= 1, got {limit!r}")
    return min(limit, most)


def seconds_to_ticks(name: str, seconds, tick_s: float) -> int:
    """``seconds`` (an int or float > 0, else :class:`~ddia_ray.errors.ConfigError`) as a whole
    number of ticks of ``tick_s``, at least one: a core's periods, counted in its ticks."""
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds / tick_s))
