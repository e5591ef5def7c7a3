"""Circuit breaker state machine, one transition at a time, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ddia_ray.codec import decode, encode
from ddia_ray.errors import CallNotPermittedError, CircuitOpenError, ConfigError, InvalidArgumentError
from ddia_ray.resilience import (TRANSITIONS, CircuitBreaker, CircuitBreakerConfig, Event, State,
                                 StateTransition)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


def make(clock=None, **overrides):
    cfg = dict(minimum_calls=4, window_size=4, permitted_calls_in_half_open=2, wait_in_open_s=10.0)
    cfg.update(overrides)
    clock = clock or FakeClock()
    return CircuitBreaker("db", CircuitBreakerConfig(**cfg), clock=clock), clock


def fail(b, n=1, duration_s=0.01):
    for _ in range(n):
        p = b.acquire()
        b.on_error(duration_s, RuntimeError("boom"), p)


def succeed(b, n=1, duration_s=0.01):
    for _ in range(n):
        p = b.acquire()
        b.on_success(duration_s, p)


def trip(b):
    fail(b, b.config.effective_minimum_calls)
    assert b.state is State.OPEN


# --- the table -------------------------------------------------------------


def test_transition_table_is_the_single_source_of_truth():
    assert TRANSITIONS[(State.CLOSED, Event.THRESHOLD_EXCEEDED)] is State.OPEN
    assert TRANSITIONS[(State.OPEN, Event.WAIT_ELAPSED)] is State.HALF_OPEN
    assert TRANSITIONS[(State.HALF_OPEN, Event.PROBES_PASSED)] is State.CLOSED
    assert TRANSITIONS[(State.HALF_OPEN, Event.PROBES_FAILED)] is State.OPEN
    # Automatic events only leave the states they belong to.
    assert (State.OPEN, Event.THRESHOLD_EXCEEDED) not in TRANSITIONS
    assert (State.DISABLED, Event.THRESHOLD_EXCEEDED) not in TRANSITIONS
    assert (State.FORCED_OPEN, Event.WAIT_ELAPSED) not in TRANSITIONS
    assert all(TRANSITIONS[(s, Event.RESET)] is State.CLOSED for s in State)
    with pytest.raises(TypeError):
        TRANSITIONS[(State.CLOSED, Event.CLOSE)] = State.OPEN  # read-only


# --- closed ----------------------------------------------------------------


def test_stays_closed_below_minimum_calls_even_if_all_fail():
    b, _ = make(minimum_calls=4, window_size=10)
    fail(b, 3)
    assert b.state is State.CLOSED
    assert not b.metrics().minimum_calls_reached
    fail(b, 1)
    assert b.state is State.OPEN


def test_failure_rate_at_threshold_opens():
    b, _ = make(failure_rate_threshold=50.0)
    succeed(b, 2)
    fail(b, 1)
    assert b.state is State.CLOSED
    fail(b, 1)  # 2 of 4 = 50% >= 50%
    assert b.state is State.OPEN
    assert "failure rate 50.0%" in b.transitions()[-1].reason


def test_below_threshold_stays_closed_as_window_slides():
    b, _ = make(failure_rate_threshold=60.0)
    for _ in range(5):
        fail(b)
        succeed(b)
    assert b.state is State.CLOSED
    assert b.metrics().failure_rate_pct == pytest.approx(50.0)


def test_slow_calls_open_the_breaker():
    b, _ = make(slow_call_duration_s=1.0, slow_call_rate_threshold=75.0)
    succeed(b, 3, duration_s=2.0)
    assert b.state is State.CLOSED
    succeed(b, 1, duration_s=2.0)
    assert b.state is State.OPEN
    assert "slow call rate" in b.transitions()[-1].reason
    assert b.metrics().slow_calls_total == 4


def test_minimum_calls_above_count_window_is_capped_by_its_size():
    b, _ = make(minimum_calls=100, window_size=4)
    fail(b, 4)
    assert b.state is State.OPEN


def test_time_window_forgets_old_failures():
    b, clock = make(window_type="time", window_size=10, minimum_calls=4)
    fail(b, 3)
    clock.advance(10.0)  # those three failures leave the 10-second window
    fail(b, 3)
    assert b.state is State.CLOSED
    assert b.metrics().buffered_calls == 3
    fail(b, 1)
    assert b.state is State.OPEN


# --- open ------------------------------------------------------------------


def test_open_refuses_with_retry_after_until_wait_elapsed():
    b, clock = make()
    trip(b)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as ei:
        b.acquire()
    assert ei.value.retry_after_s == pytest.approx(6.0)
    assert not b.try_acquire()
    assert b.metrics().not_permitted_calls == 2
    clock.advance(5.999)
    assert not b.try_acquire()
    clock.advance(0.001)
    assert b.try_acquire()
    assert b.state is State.HALF_OPEN


def test_without_automatic_transition_state_stays_open_until_an_attempt():
    b, clock = make()
    trip(b)
    clock.advance(60)
    assert b.state is State.OPEN
    assert b.try_acquire()
    assert b.state is State.HALF_OPEN


def test_automatic_transition_happens_on_observation():
    b, clock = make(automatic_transition_from_open=True)
    trip(b)
    clock.advance(10)
    assert b.state is State.HALF_OPEN
    assert b.metrics().half_open_permits_left == 2


def test_wait_grows_on_consecutive_reopens_and_resets_on_close():
    b, clock = make(wait_multiplier=2.0, max_wait_in_open_s=30.0, permitted_calls_in_half_open=1)
    trip(b)
    waits = []
    for _ in range(4):
        waits.append(b.metrics().retry_after_s)
        clock.advance(waits[-1])
        fail(b)  # the single probe fails: reopen
        assert b.state is State.OPEN
    assert waits == [10.0, 20.0, 30.0, 30.0]  # capped
    clock.advance(30.0)
    succeed(b)
    assert b.state is State.CLOSED
    trip(b)
    assert b.metrics().retry_after_s == 10.0


# --- half-open --------------------------------------------------------------


def half_open(**overrides):
    b, clock = make(**overrides)
    trip(b)
    clock.advance(b.config.wait_in_open_s)
    return b, clock


def test_half_open_admits_exactly_the_permitted_calls():
    b, _ = half_open(permitted_calls_in_half_open=3)
    permits = [b.acquire() for _ in range(3)]
    with pytest.raises(CallNotPermittedError) as ei:
        b.acquire()
    assert not isinstance(ei.value, CircuitOpenError)
    assert ei.value.state == "half_open"
    for p in permits:
        b.on_success(0.01, p)
    assert b.state is State.CLOSED


def test_half_open_decides_only_when_all_probes_finish():
    b, _ = half_open(permitted_calls_in_half_open=3)
    permits = [b.acquire() for _ in range(3)]
    b.on_error(0.01, RuntimeError(), permits[0])
    b.on_error(0.01, RuntimeError(), permits[1])
    assert b.state is State.HALF_OPEN  # 2 of 3 done: not evaluated yet
    b.on_success(0.01, permits[2])
    assert b.state is State.OPEN
    assert b.transitions()[-1].reason.startswith("probes failed")


def test_released_permit_returns_a_probe_slot():
    b, _ = half_open(permitted_calls_in_half_open=1)
    p = b.acquire()
    assert not b.try_acquire()
    b.release(p)
    assert b.state is State.HALF_OPEN
    p2 = b.acquire()
    b.on_success(0.01, p2)
    assert b.state is State.CLOSED


def test_max_wait_in_half_open_reopens():
    b, clock = half_open(max_wait_in_half_open_s=5.0)
    b.acquire()  # a probe that never reports back
    clock.advance(5.0)
    assert b.state is State.OPEN
    assert b.transitions()[-1].reason.startswith("probes unfinished")


def test_stale_outcome_from_closed_does_not_use_a_probe_slot():
    b, clock = make(permitted_calls_in_half_open=1)
    slow_permit = b.acquire()  # issued while closed
    trip(b)
    clock.advance(10)
    probe = b.acquire()
    b.on_success(0.01, slow_permit)  # finishes during half-open: stale
    assert b.state is State.HALF_OPEN
    b.on_error(0.01, RuntimeError(), probe)
    assert b.state is State.OPEN
    assert b.metrics().successful_calls_total == 1


# --- classification -----------------------------------------------------------


class Business(Exception):
    pass


def test_ignored_exceptions_count_neither_way():
    b, _ = make(ignore_exceptions=(Business,))
    for _ in range(10):
        p = b.acquire()
        b.on_error(0.01, Business(), p)
    m = b.metrics()
    assert (m.state, m.buffered_calls, m.ignored_calls_total) == (State.CLOSED, 0, 10)


def test_record_exceptions_limit_what_counts_as_failure():
    b, _ = make(record_exceptions=(TimeoutError,))
    for _ in range(4):
        p = b.acquire()
        b.on_error(0.01, KeyError("caller bug"), p)
    assert b.state is State.CLOSED
    assert b.metrics().successful_calls_total == 4
    p = b.acquire()
    b.on_error(0.01, TimeoutError(), p)
    assert b.state is State.CLOSED  # 1 of 4 failed
    p = b.acquire()
    b.on_error(0.01, TimeoutError(), p)
    assert b.state is State.OPEN  # 2 of 4 failed


def test_record_exception_predicate():
    b, _ = make(record_exception=lambda e: "fatal" in str(e))
    for msg in ("fine", "fatal", "fatal", "fine"):
        p = b.acquire()
        b.on_error(0.01, RuntimeError(msg), p)
    assert b.state is State.OPEN  # 2 of 4 counted as failures
    assert b.metrics().failed_calls_total == 2


def test_result_predicate_marks_results_as_failures():
    b, _ = make(record_result=lambda r: r is None)
    for r in (1, None, None, 2):
        p = b.acquire()
        b.on_result(0.01, r, p)
    assert b.state is State.OPEN


def test_call_records_and_reraises():
    b, _ = make()
    assert b.call(lambda x: x * 2, 21) == 42
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    m = b.metrics()
    assert (m.state, m.successful_calls_total, m.failed_calls_total) == (State.OPEN, 1, 3)
    with pytest.raises(CircuitOpenError):
        b.call(pytest.fail, "must not run")


def test_protect_wraps_sync_and_async_functions():
    b, _ = make(minimum_calls=2, window_size=2)

    @b.protect
    def double(x):
        return 2 * x

    @b.protect
    async def boom():
        raise ValueError("x")

    assert double(4) == 8
    assert double.__name__ == "double"
    with pytest.raises(ValueError):
        asyncio.run(boom())
    assert b.state is State.OPEN  # 1 of 2 failed = 50%
    with pytest.raises(CircuitOpenError):
        asyncio.run(boom())


def test_cancelled_coroutine_releases_its_probe():
    b, _ = half_open(permitted_calls_in_half_open=1)

    async def scenario():
        started = asyncio.Event()

        async def hang():
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(b.call_async(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert b.state is State.HALF_OPEN
    assert b.try_acquire()  # the slot came back


# --- manual states -------------------------------------------------------------


def test_forced_open_refuses_until_closed():
    b, clock = make()
    assert b.transition_to_forced_open()
    assert not b.transition_to_forced_open()  # already there: not a transition
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as ei:
        b.acquire()
    assert ei.value.retry_after_s is None and ei.value.state == "forced_open"
    assert b.transition_to_closed()
    assert b.try_acquire()


def test_disabled_permits_everything_and_records_nothing():
    b, _ = make()
    b.transition_to_disabled()
    fail(b, 50)
    m = b.metrics()
    assert m.state is State.DISABLED and m.buffered_calls == 0
    assert m.failed_calls_total == 50


def test_reset_closes_with_fresh_window_and_base_wait():
    b, clock = make(wait_multiplier=3.0, permitted_calls_in_half_open=1)
    trip(b)
    clock.advance(10)
    fail(b)
    assert b.metrics().consecutive_opens == 2
    b.reset()
    m = b.metrics()
    assert (m.state, m.buffered_calls, m.consecutive_opens) == (State.CLOSED, 0, 0)
    trip(b)
    assert b.metrics().retry_after_s == 10.0


# --- listeners and history ---------------------------------------------------------


def test_listeners_see_each_transition_once_in_order():
    b, clock = make()
    seen = []
    b.add_listener(seen.append)
    trip(b)
    clock.advance(10)
    succeed(b, 2)
    b.transition_to_forced_open()
    assert [(t.from_state, t.to_state) for t in seen] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("closed", "forced_open")]
    assert seen[0].at_s == 1000.0 and seen[1].at_s == 1010.0
    assert b.transitions() == tuple(seen)
    assert b.metrics().transitions == 4


def test_transition_record_round_trips_through_the_codec():
    b, _ = make()
    trip(b)
    t = b.transitions()[-1]
    assert decode(encode(t)) == t
    with pytest.raises(ConfigError):
        StateTransition("db", "closed", "ajar", 1.0, "nope")


def test_failing_listener_is_counted_and_does_not_break_calls():
    b, _ = make()
    got = []

    def bad(_):
        raise RuntimeError("observer bug")

    b.add_listener(bad)
    b.add_listener(got.append)
    trip(b)
    assert len(got) == 1
    assert b.metrics().listener_errors == 1


def test_listener_may_call_back_into_the_breaker():
    b, _ = make()
    seen = []

    def reset_on_open(t):
        seen.append(t.to_state)
        if t.to_state == "open":
            b.reset()

    b.add_listener(reset_on_open)
    fail(b, 4)
    assert seen == ["open", "closed"]
    assert b.state is State.CLOSED


def test_history_is_bounded():
    clock = FakeClock()
    b = CircuitBreaker("h", CircuitBreakerConfig(), clock=clock, history_size=3)
    for _ in range(5):
        b.transition_to_forced_open()
        b.transition_to_closed()
    assert len(b.transitions()) == 3
    assert b.metrics().transitions == 10


# --- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    dict(failure_rate_threshold=0), dict(failure_rate_threshold=101), dict(slow_call_rate_threshold=-1),
    dict(slow_call_duration_s=0), dict(window_type="sliding"), dict(window_size=0),
    dict(minimum_calls=0), dict(permitted_calls_in_half_open=0), dict(wait_in_open_s=-1),
    dict(wait_multiplier=0.5), dict(max_wait_in_open_s=1.0, wait_in_open_s=5.0),
    dict(max_wait_in_half_open_s=-0.1),
])
def test_config_rejects_out_of_range_values(bad):
    with pytest.raises(ConfigError):
        CircuitBreakerConfig(**bad)


@pytest.mark.parametrize("bad", [
    dict(window_size=2.0), dict(ignore_exceptions=[ValueError]), dict(record_exceptions=(int,)),
    dict(record_result=3), dict(automatic_transition_from_open=1),
])
def test_config_rejects_wrong_types(bad):
    with pytest.raises(InvalidArgumentError):
        CircuitBreakerConfig(**bad)


def test_config_defaults_are_resilience4j_defaults():
    c = CircuitBreakerConfig()
    assert (c.failure_rate_threshold, c.slow_call_rate_threshold, c.slow_call_duration_s) == (50, 100, 60)
    assert (c.window_type, c.window_size, c.minimum_calls) == ("count", 100, 100)
    assert (c.permitted_calls_in_half_open, c.wait_in_open_s, c.wait_multiplier) == (10, 60, 1.0)
    with pytest.raises(InvalidArgumentError):
        CircuitBreaker("", c)


def test_broken_predicate_propagates_and_frees_the_probe_slot():
    def broken(_):
        raise LookupError("predicate bug")

    b, _ = half_open(permitted_calls_in_half_open=1, record_result=broken)
    with pytest.raises(LookupError):
        b.call(lambda: "value")
    assert b.state is State.HALF_OPEN
    assert b.try_acquire()


def test_breaker_settings_mirror_every_plain_field_of_the_config_with_its_default_and_type():
    """BreakerSettings repeats CircuitBreakerConfig's plain fields (a codec record cannot hold the config's
    callables): a field added to, renamed in or re-defaulted in the config must change the settings too."""
    import dataclasses

    from ddia_ray.resilience import BreakerSettings, CircuitBreakerConfig

    config = {f.name: f for f in dataclasses.fields(CircuitBreakerConfig)}
    settings = {f.name: f for f in dataclasses.fields(BreakerSettings) if f.name != "_unknown"}
    plain = {name for name, f in config.items() if "Callable" not in str(f.type) and "tuple" not in str(f.type)}
    assert set(settings) == plain
    for name, field in settings.items():
        assert (field.default, str(field.type)) == (config[name].default, str(config[name].type)), name
    assert BreakerSettings().config() == CircuitBreakerConfig()
