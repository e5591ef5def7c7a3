"""Hypothesis stateful test: the breaker against a deliberately naive reference model.

The model keeps plain lists and recomputes everything from scratch at every
step, restating the rules of the module docstring independently of the
implementation (no ring buffers, no shared table). Any divergence in a state,
an admission decision or a counter fails the run with a shrunk scenario.
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ddia_ray.errors import CallNotPermittedError
from ddia_ray.resilience import CircuitBreaker, CircuitBreakerConfig


class FakeClock:
    def __init__(self):
        self.now = 500.0

    def __call__(self):
        return self.now


class Model:
    """The breaker rules, written the slow and obvious way."""

    def __init__(self, cfg: CircuitBreakerConfig, now: float):
        self.cfg = cfg
        self.state = "closed"
        self.gen = 0
        self.entered = now
        self.open_until = 0.0
        self.opens = 0
        self.closed_calls: list[tuple[int, bool, bool]] = []
        self.probes: list[tuple[bool, bool]] = []
        self.permits_left = 0
        self.shown = "closed"
        self.counts = {"success": 0, "failure": 0, "ignored": 0, "not_permitted": 0}

    def live_closed(self, now):
        c = self.cfg
        if c.window_type == "count":
            return self.closed_calls[-c.window_size:]
        return [e for e in self.closed_calls if e[0] > math.floor(now) - c.window_size]

    def exceeded(self, outcomes):
        n = len(outcomes)
        failed = sum(1 for o in outcomes if o[-2])
        slow = sum(1 for o in outcomes if o[-1])
        return (failed * 100 >= self.cfg.failure_rate_threshold * n
                or slow * 100 >= self.cfg.slow_call_rate_threshold * n)

    def go(self, new, now):
        self.state, self.gen, self.entered = new, self.gen + 1, now
        if new == "closed":
            self.closed_calls, self.opens, self.shown = [], 0, "closed"
        elif new == "open":
            self.opens += 1
            wait = self.cfg.wait_in_open_s * self.cfg.wait_multiplier ** (self.opens - 1)
            if self.cfg.max_wait_in_open_s is not None:
                wait = min(wait, self.cfg.max_wait_in_open_s)
            self.open_until = now + wait
        elif new == "half_open":
            self.probes, self.permits_left, self.shown = [], self.cfg.permitted_calls_in_half_open, "probes"

    def tick(self, now, attempt):
        c = self.cfg
        if (self.state == "half_open" and c.max_wait_in_half_open_s > 0
                and now - self.entered >= c.max_wait_in_half_open_s):
            self.go("open", now)
        if self.state == "open" and now >= self.open_until and (attempt or c.automatic_transition_from_open):
            self.go("half_open", now)

    def admit(self, now):
        self.tick(now, True)
        if self.state in ("closed", "disabled"):
            return True
        if self.state == "half_open" and self.permits_left > 0:
            self.permits_left -= 1
            return True
        self.counts["not_permitted"] += 1
        return False

    def record(self, now, gen, kind, duration_s):
        self.tick(now, False)
        if kind != "release":
            self.counts[kind] += 1
        if gen != self.gen:
            return
        n = self.cfg.permitted_calls_in_half_open
        if kind in ("ignored", "release"):
            if self.state == "half_open":
                self.permits_left = min(n - len(self.probes), self.permits_left + 1)
            return
        failed, slow = kind == "failure", duration_s > self.cfg.slow_call_duration_s
        if self.state == "closed":
            self.closed_calls.append((math.floor(now), failed, slow))
            live = self.live_closed(now)
            if len(live) >= min(self.cfg.minimum_calls, self.cfg.window_size
                                if self.cfg.window_type == "count" else 10**9) and self.exceeded(live):
                self.go("open", now)
        elif self.state == "half_open":
            self.probes.append((failed, slow))
            if len(self.probes) == n:
                self.go("open" if self.exceeded(self.probes) else "closed", now)

    def manual(self, target, now):
        if target == "reset" or self.state != target:
            self.go("closed" if target == "reset" else target, now)

    def buffered(self, now):
        return len(self.live_closed(now)) if self.shown == "closed" else len(self.probes)


class Ignored(Exception):
    pass


configs = st.builds(
    CircuitBreakerConfig,
    failure_rate_threshold=st.sampled_from([25.0, 50.0, 100.0]),
    slow_call_rate_threshold=st.sampled_from([50.0, 100.0]),
    slow_call_duration_s=st.just(1.0),
    window_type=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 5),
    minimum_calls=st.integers(1, 6),
    permitted_calls_in_half_open=st.integers(1, 3),
    wait_in_open_s=st.sampled_from([0.0, 2.0, 5.0]),
    wait_multiplier=st.sampled_from([1.0, 2.0]),
    max_wait_in_open_s=st.sampled_from([None, 8.0]),
    automatic_transition_from_open=st.booleans(),
    max_wait_in_half_open_s=st.sampled_from([0.0, 3.0]),
    ignore_exceptions=st.just((Ignored,)),
)


class BreakerVsModel(RuleBasedStateMachine):
    """Drive breaker and model with the same steps; they must agree after each one."""

    @initialize(cfg=configs)
    def setup(self, cfg):
        self.clock = FakeClock()
        self.breaker = CircuitBreaker("sm", cfg, clock=self.clock)
        self.model = Model(cfg, self.clock.now)
        self.held = []  # (real permit, model generation)

    @rule()
    def acquire(self):
        was_open = self.model.state == "open" and self.clock.now < self.model.open_until
        expected = self.model.admit(self.clock.now)
        try:
            permit = self.breaker.acquire()
        except CallNotPermittedError:
            permit = None
        assert (permit is not None) == expected, f"breaker admitted={permit is not None}, model={expected}"
        if permit is not None:
            self.held.append((permit, self.model.gen))
        if was_open:
            assert permit is None, "an open breaker admitted a call before its wait elapsed"

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 50), kind=st.sampled_from(["success", "failure", "ignored", "release"]),
          duration_s=st.sampled_from([0.1, 2.0]))
    def complete(self, index, kind, duration_s):
        permit, gen = self.held.pop(index % len(self.held))
        if kind == "success":
            self.breaker.on_success(duration_s, permit)
        elif kind == "failure":
            self.breaker.on_error(duration_s, RuntimeError("x"), permit)
        elif kind == "ignored":
            self.breaker.on_error(duration_s, Ignored(), permit)
        else:
            self.breaker.release(permit)
        self.model.record(self.clock.now, gen, kind, duration_s)

    @rule(dt=st.sampled_from([0.4, 1.0, 2.0, 3.0, 7.0]))
    def advance(self, dt):
        self.clock.now += dt

    @rule(kind=st.sampled_from(["success", "failure", "failure", "ignored"]),
          duration_s=st.sampled_from([0.1, 2.0]))
    def call_through(self, kind, duration_s):
        """Acquire and complete at once: the common case, so it gets its own rule."""
        self.acquire()
        if self.held and self.held[-1][1] == self.model.gen:
            self.complete(len(self.held) - 1, kind, duration_s)

    @rule(goal=st.sampled_from(["disabled", "forced_open", "closed", "reset"]), roll=st.integers(0, 5))
    def manual(self, goal, roll):
        if roll != 5:  # manual overrides are rare in real life and would mask the automatic rules
            return
        {"disabled": self.breaker.transition_to_disabled,
         "forced_open": self.breaker.transition_to_forced_open,
         "closed": self.breaker.transition_to_closed,
         "reset": self.breaker.reset}[goal]()
        self.model.manual(goal, self.clock.now)

    @invariant()
    def agrees_with_model(self):
        m = self.breaker.metrics()
        self.model.tick(self.clock.now, False)
        assert m.state.value == self.model.state
        assert m.buffered_calls == self.model.buffered(self.clock.now)
        c = self.model.counts
        assert (m.successful_calls_total, m.failed_calls_total, m.ignored_calls_total,
                m.not_permitted_calls) == (c["success"], c["failure"], c["ignored"], c["not_permitted"])
        assert m.consecutive_opens == self.model.opens

    @invariant()
    def half_open_never_over_admits(self):
        if self.model.state == "half_open":
            n = self.breaker.config.permitted_calls_in_half_open
            outstanding = sum(1 for _, gen in self.held if gen == self.model.gen)
            m = self.breaker.metrics()
            assert outstanding + m.buffered_calls <= n
            assert m.half_open_permits_left == self.model.permits_left

    @invariant()
    def open_means_waiting(self):
        if self.model.state == "open":
            m = self.breaker.metrics()
            assert m.retry_after_s == max(0.0, self.model.open_until - self.clock.now)
            if self.clock.now < self.model.open_until:
                assert m.retry_after_s > 0


TestBreakerVsModel = BreakerVsModel.TestCase
TestBreakerVsModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
