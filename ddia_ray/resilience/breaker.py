"""A circuit breaker with the semantics of resilience4j's CircuitBreaker.

Theory of operation
-------------------
A breaker sits in front of a dependency and stops calling it while it is
failing, so a struggling backend gets room to recover and callers fail fast
instead of queueing behind timeouts (DDIA ch. 8, "Timeouts and Unbounded
Delays": a fast, explicit refusal beats an unbounded wait).

* **CLOSED**: calls flow; each outcome goes into a sliding window
  (:mod:`.windows`). Once the window holds ``minimum_calls`` outcomes, a
  failure rate or slow-call rate at or above its threshold trips the breaker.
* **OPEN**: every call is refused with :class:`CircuitOpenError` carrying
  ``retry_after_s``. After ``wait_in_open_s`` (growing by ``wait_multiplier``
  on each consecutive reopen, capped by ``max_wait_in_open_s``) the breaker
  moves to HALF_OPEN, either on the next call attempt or, with
  ``automatic_transition_from_open``, on the next observation of any kind
  (``state``, ``metrics()``): there is no background thread, so the injected
  clock stays the only source of time.
* **HALF_OPEN**: exactly ``permitted_calls_in_half_open`` probe permits are
  handed out; further calls are refused with :class:`CallNotPermittedError`.
  When all probes have completed, their rates decide: CLOSED (fresh window)
  or OPEN again. ``max_wait_in_half_open_s > 0`` reopens the breaker if the
  probes take longer than that in total.
* **DISABLED** (always permit, record nothing) and **FORCED_OPEN** (always
  refuse) are entered and left only by the manual ``transition_to_*`` calls.

**Live reconfiguration** (:meth:`CircuitBreaker.reconfigure`) swaps the
config atomically under the lock and keeps the breaker's state: no
transition, no new generation (permits stay valid), counters and history
kept. New rate thresholds, ``slow_call_duration_s`` and ``minimum_calls``
judge the next outcome recorded, together with the outcomes already in the
window; a new window type or size keeps the newest outcomes that fit (see
:mod:`.windows`; a change of type starts empty). An OPEN breaker keeps the
wait it announced in ``retry_after_s``; the new waits apply from its next
opening. A HALF_OPEN probe round finishes with the number of probes it
started with; the next round uses the new number.

Every transition is looked up in :data:`TRANSITIONS`, one table
``{(state, event): new_state}``. Each transition bumps a *generation*; a
:class:`Permit` remembers the generation it was issued in, and an outcome
reported with a permit from an earlier generation is counted in the lifetime
totals but never fed to the current window: a call admitted while CLOSED that
finishes during HALF_OPEN cannot consume a probe slot.

Concurrency: one ``threading.Lock`` guards all state and is never held while
user code runs (the protected call, predicates, listeners) nor across an
``await``. Listener events are queued under the lock and delivered after it
is released, in transition order, by whichever thread gets to deliver first.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import inspect
import logging
import threading
import time
from types import MappingProxyType
from typing import Any, Callable

from .._validate import InvariantViolation, integer, number, positive
from ..codec import record
from ..errors import CallNotPermittedError, CircuitOpenError, ConfigError, InvalidArgumentError
from .breaker_config import BreakerSettings, CircuitBreakerConfig, Outcome
from .windows import CountWindow, WindowSnapshot, TimeWindow

__all__ = [
    "State",
    "Event",
    "TRANSITIONS",
    "Permit",
    "StateTransition",
    "BreakerMetrics",
    "CircuitBreaker",
    "CircuitBreakerConfig",
]

_log = logging.getLogger(__name__)


class State(str, enum.Enum):
    """The states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"


class Event(str, enum.Enum):
    """What can make a breaker change state."""

    THRESHOLD_EXCEEDED = "threshold_exceeded"  # the closed window crossed a rate threshold
    WAIT_ELAPSED = "wait_elapsed"              # open long enough: let probes through
    PROBES_PASSED = "probes_passed"            # every half-open probe done, rates below thresholds
    PROBES_FAILED = "probes_failed"            # every half-open probe done, a threshold crossed
    HALF_OPEN_TIMEOUT = "half_open_timeout"    # probes took longer than max_wait_in_half_open_s
    DISABLE = "disable"                        # transition_to_disabled()
    FORCE_OPEN = "force_open"                  # transition_to_forced_open()
    CLOSE = "close"                            # transition_to_closed()
    RESET = "reset"                            # reset(): closed, fresh window, wait back to base


_S, _E = State, Event
#: Every legal transition. Pairs not listed are not transitions (the manual
#: calls are then no-ops, e.g. disabling a disabled breaker).
TRANSITIONS = MappingProxyType({
    (_S.CLOSED, _E.THRESHOLD_EXCEEDED): _S.OPEN,
    (_S.OPEN, _E.WAIT_ELAPSED): _S.HALF_OPEN,
    (_S.HALF_OPEN, _E.PROBES_PASSED): _S.CLOSED,
    (_S.HALF_OPEN, _E.PROBES_FAILED): _S.OPEN,
    (_S.HALF_OPEN, _E.HALF_OPEN_TIMEOUT): _S.OPEN,
    # Manual overrides, from every state but their own target; reset is allowed everywhere.
    **{(s, _E.DISABLE): _S.DISABLED for s in _S if s is not _S.DISABLED},
    **{(s, _E.FORCE_OPEN): _S.FORCED_OPEN for s in _S if s is not _S.FORCED_OPEN},
    **{(s, _E.CLOSE): _S.CLOSED for s in _S if s is not _S.CLOSED},
    **{(s, _E.RESET): _S.CLOSED for s in _S},
})
del _S, _E


@dataclasses.dataclass(frozen=True, slots=True)
class Permit:
    """Permission for one call, tied to the breaker generation (state entry) that issued it."""

    generation: int
    state: State


@record("resilience.transition", version=1)
class StateTransition:
    """One state change of a named breaker, as delivered to listeners and kept in history."""

    breaker: str
    from_state: str
    to_state: str
    at_s: float
    reason: str

    def __post_init__(self):
        states = {s.value for s in State}
        if self.from_state not in states or self.to_state not in states:
            raise ConfigError(f"unknown breaker state in {self.from_state!r} -> {self.to_state!r}")
        if not isinstance(self.breaker, str) or not isinstance(self.reason, str):
            raise InvalidArgumentError("breaker and reason must be strings")
        number("at_s", self.at_s)


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """Immutable view of a breaker: current state, window rates, lifetime counters.

    ``failure_rate_pct``/``slow_call_rate_pct`` and the ``buffered``/``failed``/``slow``
    counts describe the window in use (the closed window, or the probe window
    while half-open and after probes failed); ``*_total`` counters cover the
    breaker's whole life, stale outcomes included.
    """

    name: str
    state: State
    failure_rate_pct: float
    slow_call_rate_pct: float
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    minimum_calls_reached: bool
    not_permitted_calls: int
    successful_calls_total: int
    failed_calls_total: int
    slow_calls_total: int
    ignored_calls_total: int
    transitions: int
    consecutive_opens: int
    half_open_permits_left: int
    retry_after_s: float | None
    listener_errors: int


class CircuitBreaker:
    """A thread- and asyncio-safe circuit breaker; see the module docstring for the rules."""

    def __init__(self, name: str, config: CircuitBreakerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, *, history_size: int = 256):
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("breaker name must be a non-empty string")
        config = CircuitBreakerConfig() if config is None else config
        if not isinstance(config, CircuitBreakerConfig):
            raise InvalidArgumentError(f"config must be a CircuitBreakerConfig, got {type(config).__name__}")
        if not callable(clock):
            raise InvalidArgumentError("clock must be a callable returning seconds")
        positive("history_size", integer("history_size", history_size))
        self.name = name
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._generation = 0
        self._entered_at_s = clock()
        self._open_until_s = 0.0
        self._consecutive_opens = 0
        self._window = self._new_closed_window()
        self._probes = CountWindow(config.permitted_calls_in_half_open)
        self._probe_permits_left = 0
        self._shown = self._window  # the window metrics() reports
        self._counts: collections.Counter[str] = collections.Counter()
        self._history: collections.deque[StateTransition] = collections.deque(maxlen=history_size)
        self._transition_count = 0
        self._listeners: list[Callable[[StateTransition], Any]] = []
        self._pending: collections.deque[StateTransition] = collections.deque()
        self._dispatch_lock = threading.Lock()

    # --- state machine (all `_locked` methods require self._lock) ----------

    def _new_closed_window(self):
        return self._new_window(self.config)

    @staticmethod
    def _new_window(c: CircuitBreakerConfig) -> CountWindow | TimeWindow:
        return CountWindow(c.window_size) if c.window_type == "count" else TimeWindow(c.window_size)

    def _transition_locked(self, event: Event, now: float, reason: str) -> None:
        old = self._state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise InvariantViolation(f"no transition from {old.value} on {event.value}")
        self._state = new
        self._generation += 1
        self._entered_at_s = now
        self._transition_count += 1
        if new is State.CLOSED:
            self._window = self._shown = self._new_closed_window()
            self._consecutive_opens = 0
        elif new is State.OPEN:
            self._consecutive_opens += 1
            wait_s = self.config.wait_in_open_for(self._consecutive_opens)
            self._open_until_s = now + wait_s
            reason = f"{reason}; open for {wait_s:.3f}s"
        elif new is State.HALF_OPEN:
            self._probes = self._shown = CountWindow(self.config.permitted_calls_in_half_open)
            self._probe_permits_left = self.config.permitted_calls_in_half_open
        ev = StateTransition(self.name, old.value, new.value, float(now), reason)
        self._history.append(ev)
        self._pending.append(ev)

    def _tick_locked(self, now: float, attempt: bool) -> None:
        """Apply the time-driven transitions that are due at ``now``."""
        c = self.config
        if (self._state is State.HALF_OPEN and c.max_wait_in_half_open_s > 0
                and now - self._entered_at_s >= c.max_wait_in_half_open_s):
            self._transition_locked(Event.HALF_OPEN_TIMEOUT, now,
                                    f"probes unfinished after {c.max_wait_in_half_open_s}s")
        if (self._state is State.OPEN and now >= self._open_until_s
                and (attempt or c.automatic_transition_from_open)):
            self._transition_locked(Event.WAIT_ELAPSED, now, "wait in open state elapsed")

    def _exceeded(self, snap: WindowSnapshot) -> str | None:
        """Why ``snap`` crosses a threshold, or None. Integer products avoid rounding surprises."""
        c = self.config
        if snap.failed_calls * 100 >= c.failure_rate_threshold * snap.total_calls:
            return (f"failure rate {snap.failure_rate_pct:.1f}% >= {c.failure_rate_threshold}% "
                    f"over {snap.total_calls} calls")
        if snap.slow_calls * 100 >= c.slow_call_rate_threshold * snap.total_calls:
            return (f"slow call rate {snap.slow_call_rate_pct:.1f}% >= {c.slow_call_rate_threshold}% "
                    f"over {snap.total_calls} calls")
        return None

    def _admit_locked(self, now: float):
        self._tick_locked(now, attempt=True)
        st = self._state
        if st is State.CLOSED or st is State.DISABLED:
            return Permit(self._generation, st), None
        if st is State.HALF_OPEN and self._probe_permits_left > 0:
            self._probe_permits_left -= 1
            return Permit(self._generation, st), None
        self._counts["not_permitted"] += 1
        if st is State.OPEN:
            return None, CircuitOpenError(self.name, st.value, max(0.0, self._open_until_s - now))
        if st is State.FORCED_OPEN:
            return None, CircuitOpenError(self.name, st.value, None)
        return None, CallNotPermittedError(self.name, st.value, None)

    def _record(self, permit: Permit | None, duration_s: float, outcome: Outcome) -> None:
        if permit is not None and not isinstance(permit, Permit):
            raise InvalidArgumentError(f"permit must be a Permit from acquire(), got {type(permit).__name__}")
        duration_s = max(0.0, float(number("duration_s", duration_s)))
        slow = duration_s > self.config.slow_call_duration_s
        with self._lock:
            now = self._clock()
            self._tick_locked(now, attempt=False)
            if outcome is not Outcome.RELEASE:
                self._counts[outcome.value] += 1
                if slow and outcome is not Outcome.IGNORED:
                    self._counts["slow"] += 1
            generation = self._generation if permit is None else permit.generation
            if generation == self._generation:  # else: admitted under an earlier state, stale
                self._apply_locked(now, duration_s, outcome, slow)
        self._dispatch()

    def _apply_locked(self, now: float, duration_s: float, outcome: Outcome, slow: bool) -> None:
        st, c = self._state, self.config
        if outcome in (Outcome.IGNORED, Outcome.RELEASE):
            if st is State.HALF_OPEN:  # the probe did not happen: give its slot back
                room = self._probes.size_calls - self._probes.snapshot(now).total_calls
                self._probe_permits_left = min(room, self._probe_permits_left + 1)
            return
        failed = outcome is Outcome.FAILURE
        if st is State.CLOSED:
            snap = self._window.record(now, duration_s, failed=failed, slow=slow)
            if snap.total_calls >= c.effective_minimum_calls:
                why = self._exceeded(snap)
                if why is not None:
                    self._transition_locked(Event.THRESHOLD_EXCEEDED, now, why)
        elif st is State.HALF_OPEN:
            snap = self._probes.record(now, duration_s, failed=failed, slow=slow)
            if snap.total_calls >= self._probes.size_calls:  # this round's size, even if reconfigured since
                why = self._exceeded(snap)
                if why is None:
                    self._transition_locked(Event.PROBES_PASSED, now,
                                            f"{snap.total_calls} probes below thresholds")
                else:
                    self._transition_locked(Event.PROBES_FAILED, now, f"probes failed: {why}")
        # OPEN and FORCED_OPEN never issue permits; DISABLED records nothing by definition.

    def _manual(self, event: Event, reason: str) -> bool:
        with self._lock:
            legal = (self._state, event) in TRANSITIONS
            if legal:
                self._transition_locked(event, self._clock(), reason)
        self._dispatch()
        return legal

    # --- listeners ------------------------------------------------------------

    def _dispatch(self) -> None:
        """Deliver queued transitions outside the state lock, in order, exactly once each."""
        while self._pending:
            if not self._dispatch_lock.acquire(blocking=False):
                return  # another thread (or an outer frame of this one) is delivering them
            try:
                while self._pending:
                    ev = self._pending.popleft()
                    for fn in tuple(self._listeners):
                        try:
                            fn(ev)
                        except Exception:  # noqa: BLE001 - logged and counted, see below
                            # A broken observer must not turn a healthy call into a failure;
                            # it is logged with its traceback and counted in metrics().
                            self._counts["listener_errors"] += 1
                            _log.exception("listener %r of breaker %r failed on %s", fn, self.name, ev)
            finally:
                self._dispatch_lock.release()

    def add_listener(self, fn: Callable[[StateTransition], Any]) -> Callable[[StateTransition], Any]:
        """Call ``fn(StateTransition)`` after every state change; returns ``fn`` (usable as decorator)."""
        if not callable(fn):
            raise InvalidArgumentError("listener must be callable")
        self._listeners.append(fn)
        return fn

    def remove_listener(self, fn: Callable[[StateTransition], Any]) -> None:
        """Stop calling ``fn``; raises ValueError if it was never added."""
        self._listeners.remove(fn)

    def transitions(self) -> tuple[StateTransition, ...]:
        """The most recent transitions, oldest first (bounded by ``history_size``)."""
        with self._lock:
            return tuple(self._history)

    # --- permission and outcomes ---------------------------------------------------

    def try_acquire(self) -> bool:
        """Ask for permission to call; False if refused. Pair a True with exactly one outcome call."""
        with self._lock:
            permit, _ = self._admit_locked(self._clock())
        self._dispatch()
        return permit is not None

    def acquire(self) -> Permit:
        """Get a :class:`Permit` or raise :class:`CircuitOpenError` / :class:`CallNotPermittedError`."""
        with self._lock:
            permit, refusal = self._admit_locked(self._clock())
        self._dispatch()
        if refusal is not None:
            raise refusal
        return permit

    def _classify(self, classify: Callable[[Any], Outcome], value: Any, permit: Permit | None) -> Outcome:
        try:
            return classify(value)
        except BaseException:
            self.release(permit)  # a broken predicate must not leak a half-open probe slot
            raise

    def on_success(self, duration_s: float, permit: Permit | None = None) -> None:
        """Report a successful call that took ``duration_s`` seconds."""
        self._record(permit, duration_s, Outcome.SUCCESS)

    def on_error(self, duration_s: float, exc: BaseException, permit: Permit | None = None) -> None:
        """Report a call that raised ``exc``; the config decides failure, success or ignored."""
        if not isinstance(exc, BaseException):
            raise InvalidArgumentError(f"exc must be an exception, got {type(exc).__name__}")
        self._record(permit, duration_s, self._classify(self.config.classify_exception, exc, permit))

    def on_result(self, duration_s: float, result: Any, permit: Permit | None = None) -> None:
        """Report a call that returned ``result``; ``record_result(result)`` makes it a failure."""
        self._record(permit, duration_s, self._classify(self.config.classify_result, result, permit))

    def release(self, permit: Permit | None = None) -> None:
        """Give back a permission whose call was never made (frees a half-open probe slot)."""
        self._record(permit, 0.0, Outcome.RELEASE)

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` under the breaker; refusals raise before ``fn`` runs."""
        permit = self.acquire()
        start = self._clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self.on_error(self._clock() - start, e, permit)
            raise
        self.on_result(self._clock() - start, result, permit)
        return result

    async def call_async(self, coro_fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Await ``coro_fn(*args, **kwargs)`` under the breaker (cancellation releases the permit)."""
        permit = self.acquire()
        start = self._clock()
        try:
            result = await coro_fn(*args, **kwargs)
        except BaseException as e:
            self.on_error(self._clock() - start, e, permit)
            raise
        self.on_result(self._clock() - start, result, permit)
        return result

    def protect(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: route every call of a sync or ``async def`` function through this breaker."""
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                return await self.call_async(fn, *args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return self.call(fn, *args, **kwargs)
        return wrapper

    # --- live reconfiguration -------------------------------------------------------

    def reconfigure(self, config: CircuitBreakerConfig | BreakerSettings) -> CircuitBreakerConfig:
        """Switch to ``config`` while running, keeping the state (rules in the module docstring).

        ``config`` is a full :class:`CircuitBreakerConfig`, or :class:`BreakerSettings`, whose
        plain fields then replace the current config's (its callables are kept). Both are
        validated when built, so nothing here can fail halfway: the swap is atomic, and calls
        see either the old config or the new one. Returns the config now in force.
        """
        if isinstance(config, BreakerSettings):
            config = config.config(self.config)
        elif not isinstance(config, CircuitBreakerConfig):
            raise InvalidArgumentError(
                f"config must be a CircuitBreakerConfig or BreakerSettings, got {type(config).__name__}")
        with self._lock:
            old = self.config
            if (config.window_type, config.window_size) != (old.window_type, old.window_size):
                if config.window_type == old.window_type:
                    window = self._window.resized(config.window_size)
                else:  # counts and seconds do not convert: start the new kind of window empty
                    window = self._new_window(config)
                if self._shown is self._window:
                    self._shown = window
                self._window = window
            self.config = config
        return config

    # --- manual control and observation --------------------------------------------

    def transition_to_disabled(self) -> bool:
        """Stop protecting: permit everything, record nothing. False if already disabled."""
        return self._manual(Event.DISABLE, "transition_to_disabled()")

    def transition_to_forced_open(self) -> bool:
        """Refuse everything until a manual transition. False if already forced open."""
        return self._manual(Event.FORCE_OPEN, "transition_to_forced_open()")

    def transition_to_closed(self) -> bool:
        """Close with a fresh window. False if already closed."""
        return self._manual(Event.CLOSE, "transition_to_closed()")

    def reset(self) -> None:
        """Back to CLOSED with a fresh window and base open wait; lifetime counters are kept."""
        self._manual(Event.RESET, "reset()")

    @property
    def state(self) -> State:
        """The current state (applies a due automatic OPEN -> HALF_OPEN transition first)."""
        with self._lock:
            self._tick_locked(self._clock(), attempt=False)
            st = self._state
        self._dispatch()
        return st

    def metrics(self) -> BreakerMetrics:
        """An immutable :class:`BreakerMetrics` snapshot."""
        with self._lock:
            now = self._clock()
            self._tick_locked(now, attempt=False)
            snap = self._shown.snapshot(now)
            st = self._state
            minimum = (self._probes.size_calls if self._shown is self._probes
                       else self.config.effective_minimum_calls)
            m = BreakerMetrics(
                name=self.name, state=st,
                failure_rate_pct=snap.failure_rate_pct, slow_call_rate_pct=snap.slow_call_rate_pct,
                buffered_calls=snap.total_calls, failed_calls=snap.failed_calls,
                slow_calls=snap.slow_calls, minimum_calls_reached=snap.total_calls >= minimum,
                not_permitted_calls=self._counts["not_permitted"],
                successful_calls_total=self._counts[Outcome.SUCCESS.value],
                failed_calls_total=self._counts[Outcome.FAILURE.value],
                slow_calls_total=self._counts["slow"],
                ignored_calls_total=self._counts[Outcome.IGNORED.value],
                transitions=self._transition_count, consecutive_opens=self._consecutive_opens,
                half_open_permits_left=self._probe_permits_left if st is State.HALF_OPEN else 0,
                retry_after_s=max(0.0, self._open_until_s - now) if st is State.OPEN else None,
                listener_errors=self._counts["listener_errors"],
            )
        self._dispatch()
        return m

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"
