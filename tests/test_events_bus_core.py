"""The event bus's pure core: routing, bounded queues, the retry schedule, dead letters (no Ray, fake time)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ddia_ray import codec
from ddia_ray.codec import record
from ddia_ray.error_record import ErrorRecord
from ddia_ray.errors import (BusClosedError, ConfigError, InvalidArgumentError, UnknownSubscriptionError)
from ddia_ray.events.bus_core import BusCore
from ddia_ray.events.bus_records import (BusStats, DeadLetter, PublishBatch, SubscriptionSpec, event_type, matches,
                                         retry_data)
from ddia_ray.resilience import Backoff, RetryPolicy

BOOM = ErrorRecord("RemoteError", "ValueError: boom", "handler", {"kind": "ValueError"})
SLOW = ErrorRecord("CallTimeoutError", "no answer", "handler")


@record("test_bus.user_created", version=1)
class UserCreated:
    user: str


def spec(sub_id: str = "s1", pattern: str = "*", **knobs) -> SubscriptionSpec:
    knobs.setdefault("retry", {"max_attempts": 3, "base_delay_s": 1.0, "max_delay_s": 8.0, "jitter": "none"})
    return SubscriptionSpec(sub_id, pattern, knobs.pop("name", sub_id), f"handler of {sub_id}", "actor", "handle",
                            **knobs)


_batches = iter(range(1, 10**9))


def publish(core: BusCore, *types: str, now_s: float = 0.0, batch_id: str | None = None) -> tuple[int, int]:
    data = tuple(f"{t}#{i}".encode() for i, t in enumerate(types))
    return core.publish(PublishBatch(batch_id or f"b{next(_batches)}", tuple(types), data), now_s)


def deliver_all(core: BusCore, now_s: float = 0.0) -> list:
    """Run every delivery to success until nothing is pending; the deliveries in the order made."""
    made = []
    while core.pending():
        due = core.start_due(now_s)
        assert due, "events are pending but nothing can start"
        for d in due:
            core.succeeded(d.id, now_s)
        made += due
        core.check_invariants()
    return made


# --- routing and publishing ---------------------------------------------------------------


def test_patterns_match_a_type_or_a_prefix():
    assert matches("user.created", "user.created") and not matches("user.created", "user.created2")
    assert matches("user.*", "user.created") and not matches("user.*", "order.placed")
    assert matches("*", "anything")
    with pytest.raises(ConfigError):
        spec(pattern="user.*.created")


def test_an_event_goes_to_every_matching_subscription_and_unmatched_ones_are_counted():
    core = BusCore()
    core.subscribe(spec("exact", "user.created"))
    core.subscribe(spec("prefix", "user.*"))
    core.subscribe(spec("all", "*"))
    assert publish(core, "user.created", "user.deleted", "order.placed") == (1, 3)
    stats = core.stats()
    assert [stats.subscription(s).matched for s in ("exact", "prefix", "all")] == [1, 2, 3]
    core.unsubscribe("all", 0.0)
    publish(core, "order.placed")
    assert core.stats().unrouted == 1 and core.stats().published == 4


def test_a_retried_publish_batch_is_accepted_once_within_the_dedupe_window():
    core = BusCore(dedupe_batches=2)
    core.subscribe(spec())
    first = publish(core, "a", "b", batch_id="x")
    assert publish(core, "a", "b", batch_id="x") == first
    assert core.stats().duplicate_batches == 1 and core.stats().subscription("s1").matched == 2
    publish(core, "c", batch_id="y")
    publish(core, "d", batch_id="z")  # "x" leaves the window: the bound holds
    assert publish(core, "a", "b", batch_id="x") == (5, 2)


def test_publishing_after_close_is_refused_and_nothing_starts():
    core = BusCore()
    core.subscribe(spec())
    publish(core, "a", "b")
    assert core.close() == 2
    with pytest.raises(BusClosedError):
        publish(core, "a")
    with pytest.raises(BusClosedError):
        core.subscribe(spec("s2"))
    assert core.start_due(0.0) == ()


# --- deliveries, order and retries ---------------------------------------------------------


def test_with_concurrency_one_a_handler_gets_its_events_in_publish_order():
    core = BusCore()
    core.subscribe(spec(concurrency=1))
    publish(core, *"abcde")
    seqs = [d.seqs for d in deliver_all(core)]
    assert seqs == [(1,), (2,), (3,), (4,), (5,)]


def test_concurrency_bounds_the_outstanding_deliveries_and_batch_max_their_size():
    core = BusCore()
    core.subscribe(spec(concurrency=2, batch_max=3))
    publish(core, *"abcdefgh")
    started = core.start_due(0.0)
    assert [d.seqs for d in started] == [(1, 2, 3), (4, 5, 6)]
    assert core.start_due(0.0) == ()
    core.succeeded(started[0].id, 0.0)
    assert [d.seqs for d in core.start_due(0.0)] == [(7, 8)]


def test_a_failed_delivery_is_retried_on_the_policys_backoff_then_dead_lettered_with_the_last_error():
    policy = {"max_attempts": 3, "base_delay_s": 1.0, "max_delay_s": 8.0, "multiplier": 2.0, "jitter": "full"}
    core = BusCore(seed=7)
    core.subscribe(spec(retry=policy))
    publish(core, "a", "b")
    expected = Backoff(RetryPolicy(**policy), random.Random(7)).plan()  # the same seeded schedule
    now_s, attempts = 0.0, []
    for i, error in enumerate((SLOW, BOOM, BOOM)):
        (d,) = core.start_due(now_s)
        assert d.seqs == (1,) and d.attempt == i + 1
        attempts.append(now_s)
        core.failed(d.id, error, now_s)
        if i < 2:
            assert core.start_due(now_s) == (), "event 2 waits behind the retrying head (concurrency 1)"
            now_s = core.next_due_s()
    assert tuple(b - a for a, b in zip(attempts, attempts[1:])) == pytest.approx(expected)
    (letter,) = core.dead_letters()
    assert (letter.seq, letter.attempts, letter.reason, letter.error) == (1, 3, "failed", BOOM)
    assert letter.data == b"a#0" and letter.event_type == "a"
    (d,) = core.start_due(now_s)
    assert d.seqs == (2,), "the next event starts once the head is dead-lettered"
    s = core.stats().subscription("s1")
    assert (s.attempts, s.retried, s.failures, s.dead_lettered) == (4, 2, 3, 1)


def test_an_error_named_in_no_retry_on_is_dead_lettered_at_once():
    core = BusCore()
    core.subscribe(spec(no_retry_on=("ValueError",)))
    publish(core, "a")
    (d,) = core.start_due(0.0)
    core.failed(d.id, BOOM, 0.0)
    assert core.dead_letters()[0].attempts == 1 and core.next_due_s() is None


def test_the_policys_deadline_stops_retries_that_would_end_past_it():
    core = BusCore()
    core.subscribe(spec(retry={"max_attempts": 10, "base_delay_s": 1.0, "jitter": "none", "deadline_s": 2.5}))
    publish(core, "a")
    now_s = 0.0
    for _ in range(10):
        due = core.start_due(now_s)
        if not due:
            break
        core.failed(due[0].id, SLOW, now_s)
        now_s = core.next_due_s() or now_s
    (letter,) = core.dead_letters()
    assert letter.attempts == 2, "1 s then 2 s of backoff: the second would end at 3 s, past the 2.5 s deadline"


def test_a_failed_batch_dead_letters_each_of_its_events():
    core = BusCore()
    core.subscribe(spec(batch_max=2, retry={"max_attempts": 1}))
    publish(core, "a", "b")
    (d,) = core.start_due(0.0)
    core.failed(d.id, BOOM, 0.0)
    assert [(x.seq, x.attempts) for x in core.dead_letters()] == [(1, 1), (2, 1)]


def test_an_outcome_reported_twice_is_ignored_and_counted():
    core = BusCore()
    core.subscribe(spec())
    publish(core, "a")
    (d,) = core.start_due(0.0)
    core.succeeded(d.id, 0.0)
    core.failed(d.id, BOOM, 0.0)
    assert core.counts["late_results"] == 1 and core.stats().subscription("s1").delivered == 1
    core.check_invariants()


# --- bounds: queues and the dead-letter list ---------------------------------------------------


@pytest.mark.parametrize("overflow, kept, dropped", [("drop_oldest", (3, 4, 5), (1, 2)),
                                                     ("drop_newest", (1, 2, 3), (4, 5))])
def test_a_full_queue_dead_letters_one_event_per_arrival(overflow, kept, dropped):
    core = BusCore()
    core.subscribe(spec(queue_max=3, overflow=overflow))
    publish(core, *"abcde")
    assert [x.seq for x in core.dead_letters()] == list(dropped)
    assert {x.reason for x in core.dead_letters()} == {"overflow"}
    assert [d.seqs[0] for d in deliver_all(core)] == list(kept)
    s = core.stats().subscription("s1")
    assert (s.dropped, s.delivered, s.queue_depth_max) == (2, 3, 3)


def test_the_dead_letter_list_is_bounded_and_evicts_its_oldest():
    core = BusCore(dead_letters_max=2)
    core.subscribe(spec(queue_max=1, overflow="drop_newest"))
    publish(core, *"abcd")  # a stays queued; b, c, d overflow
    assert [x.seq for x in core.dead_letters()] == [3, 4]
    stats = core.stats()
    assert (stats.dead_letters_held, stats.dead_letters_total, stats.dead_letters_evicted) == (2, 3, 1)
    core.check_invariants()


# --- dead letters: listing, replay, discard ------------------------------------------------------


def test_replayed_dead_letters_are_delivered_and_leave_the_list():
    core = BusCore()
    core.subscribe(spec(queue_max=1, overflow="drop_newest"))
    publish(core, "a", "b", "c")
    deliver_all(core)
    assert [x.seq for x in core.dead_letters()] == [2, 3]
    assert core.replay_dead_letters([core.dead_letters()[1].id], now_s=0.0) == 1
    assert [d.seqs for d in deliver_all(core)] == [(3,)]
    assert core.replay_dead_letters(subscription="s1", now_s=0.0) == 1
    assert [d.seqs for d in deliver_all(core)] == [(2,)]
    assert core.dead_letters() == () and core.stats().dead_letters_replayed == 2
    assert core.stats().subscription("s1").replayed == 2


def test_dead_letters_page_by_id_and_filter_by_subscription():
    core = BusCore()
    core.subscribe(spec("s1", queue_max=1, overflow="drop_newest"))
    core.subscribe(spec("s2", queue_max=1, overflow="drop_newest", name="second"))
    publish(core, *"abcd")
    assert len(core.dead_letters()) == 6
    page = core.dead_letters(limit=4)
    assert [x.id for x in core.dead_letters(after=page[-1].id)] == [5, 6]
    assert {x.subscription for x in core.dead_letters(subscription="second")} == {"s2"}
    assert core.discard_dead_letters(subscription="s1") == 3
    assert core.discard_dead_letters([999]) == 0
    with pytest.raises(InvalidArgumentError):
        core.discard_dead_letters(["1"])
    core.check_invariants()


def test_a_dead_letter_of_an_ended_subscription_is_not_replayed_but_kept():
    core = BusCore()
    core.subscribe(spec(queue_max=1, overflow="drop_newest"))
    publish(core, "a", "b")
    assert core.unsubscribe("s1", 0.0) == 1  # a was still queued
    assert core.replay_dead_letters(now_s=0.0) == 0
    assert [x.reason for x in core.dead_letters()] == ["overflow", "unsubscribed"]


# --- subscriptions ----------------------------------------------------------------------------


def test_subscribing_again_with_the_same_spec_is_a_no_op_and_conflicts_are_refused():
    core = BusCore()
    assert core.subscribe(spec("s1", name="mailer")) is True
    assert core.subscribe(spec("s1", name="mailer")) is False
    with pytest.raises(ConfigError):
        core.subscribe(spec("s1", name="mailer", concurrency=2))
    with pytest.raises(ConfigError):
        core.subscribe(spec("s2", name="mailer"))
    assert core.subscription("mailer").id == "s1"
    with pytest.raises(UnknownSubscriptionError) as info:
        core.unsubscribe("nobody", 0.0)
    assert info.value.subscription == "nobody"


def test_unsubscribe_dead_letters_what_waits_and_lets_running_deliveries_finish():
    core = BusCore()
    core.subscribe(spec(concurrency=2))
    publish(core, *"abcd")
    running, retrying = core.start_due(0.0)
    core.failed(retrying.id, SLOW, 0.0)
    assert core.unsubscribe("s1", 0.0) == 3  # c and d queued, b waiting for its retry
    assert [(x.seq, x.reason) for x in core.dead_letters()] == [(3, "unsubscribed"), (4, "unsubscribed"),
                                                                 (2, "unsubscribed")]
    assert core.dead_letters()[2].error == SLOW
    assert core.has_subscription("s1") and core.subscriptions() == ()
    core.succeeded(running.id, 0.0)
    assert not core.has_subscription("s1") and core.pending() == 0
    core.subscribe(spec("s9", name="s1"))  # the name is free again


# --- records --------------------------------------------------------------------------------


def test_the_records_round_trip_through_the_codec():
    core = BusCore()
    core.subscribe(spec(queue_max=1, overflow="drop_newest", no_retry_on=("ValueError",)))
    publish(core, "a", "b")
    for value in (core.subscription("s1"), core.dead_letters()[0], core.stats()):
        assert codec.decode(codec.encode(value)) == value
    assert isinstance(core.stats(), BusStats) and isinstance(core.dead_letters()[0], DeadLetter)


def test_a_dead_letter_decodes_its_event_and_rebuilds_its_error():
    letter = DeadLetter(1, "s1", "mailer", "Mailer.handle", 1, "test_bus.user_created",
                        codec.encode(UserCreated("ada")), 3, "failed", BOOM)
    assert letter.event() == UserCreated("ada")
    err = letter.exception()
    assert type(err).__name__ == "RemoteError" and err.kind == "ValueError" and "boom" in str(err)


@pytest.mark.parametrize("knobs, error", [({"overflow": "block"}, ConfigError), ({"queue_max": 0}, ConfigError),
                                          ({"batch_max": 5, "queue_max": 4}, ConfigError),
                                          ({"concurrency": 1.5}, InvalidArgumentError),
                                          ({"retry": {"max_attempts": 0}}, ConfigError),
                                          ({"retry": {"retry_on": 1}}, ConfigError),
                                          ({"timeout_s": 0}, ConfigError),
                                          ({"no_retry_on": ("",)}, InvalidArgumentError)])
def test_bad_subscription_settings_raise_specific_errors(knobs, error):
    with pytest.raises(error):
        spec(**knobs)


def test_only_the_plain_fields_of_a_retry_policy_travel():
    assert retry_data(RetryPolicy(max_attempts=5))["max_attempts"] == 5
    assert retry_data(None) == {}
    with pytest.raises(InvalidArgumentError):
        retry_data(RetryPolicy(retry_on=(ValueError,)))


def test_an_events_type_is_its_record_tag():
    assert event_type(UserCreated("ada")) == event_type(UserCreated) == "test_bus.user_created"
    with pytest.raises(InvalidArgumentError):
        event_type({"type": "user.created"})


def test_a_publish_batch_refuses_malformed_columns():
    with pytest.raises(InvalidArgumentError):
        PublishBatch("b", ("a",), (b"1", b"2"))
    with pytest.raises(InvalidArgumentError):
        PublishBatch("b", ("a",), ("not bytes",))
    with pytest.raises(InvalidArgumentError):
        PublishBatch("", (), ())


# --- properties: bounds hold and nothing vanishes, under any interleaving ---------------------------

TYPES = ("user.created", "user.deleted", "order.placed", "audit")
PATTERNS = ("user.created", "user.*", "order.*", "*")


class BusMachine(RuleBasedStateMachine):
    """Random subscriptions, publishes, outcomes, time, unsubscribes and replays against the core."""

    @initialize(seed=st.integers(0, 2**16), letters=st.integers(1, 6))
    def start(self, seed, letters):
        self.core = BusCore(seed=seed, dead_letters_max=letters, dedupe_batches=3)
        self.now_s = 0.0
        self.running: list = []
        self.names = iter(range(10**6))

    @rule(pattern=st.sampled_from(PATTERNS), concurrency=st.integers(1, 3), queue_max=st.integers(1, 4),
          batch_max=st.integers(1, 3), overflow=st.sampled_from(("drop_oldest", "drop_newest")),
          attempts=st.integers(1, 3), deadline=st.sampled_from((None, 3.0)))
    def subscribe(self, pattern, concurrency, queue_max, batch_max, overflow, attempts, deadline):
        retry = {"max_attempts": attempts, "base_delay_s": 0.5, "max_delay_s": 2.0, "deadline_s": deadline}
        self.core.subscribe(spec(f"s{next(self.names)}", pattern, concurrency=concurrency, queue_max=queue_max,
                                 batch_max=min(batch_max, queue_max), overflow=overflow, retry=retry))

    @rule(types=st.lists(st.sampled_from(TYPES), max_size=6), batch=st.integers(0, 4))
    def publish(self, types, batch):
        publish(self.core, *types, now_s=self.now_s, batch_id=f"batch-{batch}")

    @rule()
    def start_due(self):
        self.running += self.core.start_due(self.now_s)

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 100), ok=st.booleans(), error=st.sampled_from((BOOM, SLOW)))
    def outcome(self, index, ok, error):
        d = self.running.pop(index % len(self.running))
        if ok:
            self.core.succeeded(d.id, self.now_s)
        else:
            self.core.failed(d.id, error, self.now_s)

    @rule(dt=st.floats(0.0, 3.0))
    def tick(self, dt):
        self.now_s += dt

    @precondition(lambda self: self.core.subscriptions())
    @rule(index=st.integers(0, 100))
    def unsubscribe(self, index):
        subs = self.core.subscriptions()
        self.core.unsubscribe(subs[index % len(subs)].name, self.now_s)

    @rule(everything=st.booleans())
    def replay(self, everything):
        letters = self.core.dead_letters()
        ids = None if everything else [d.id for d in letters[:1]]
        self.core.replay_dead_letters(ids, now_s=self.now_s)

    @rule()
    def discard_one(self):
        self.core.discard_dead_letters([d.id for d in self.core.dead_letters()[:1]])

    @invariant()
    def bounds_hold_and_nothing_vanishes(self):
        self.core.check_invariants()
        stats = self.core.stats()
        assert stats.dead_letters_held <= self.core.dead_letters_max
        for s in stats.subscriptions:
            assert s.queued <= s.queue_max and s.queue_depth_max <= s.queue_max
            assert s.matched + s.replayed == (s.delivered + s.dead_lettered + s.dropped + s.unsubscribed
                                              + s.queued + s.in_flight)

    def teardown(self):
        # Let every delivery run to an end (success or dead letter): no event is left anywhere.
        for d in self.running:
            self.core.succeeded(d.id, self.now_s)
        for _ in range(1000):
            if not self.core.pending():
                break
            self.now_s = max(self.now_s, self.core.next_due_s() or self.now_s)
            for d in self.core.start_due(self.now_s):
                self.core.failed(d.id, SLOW, self.now_s)
        assert self.core.pending() == 0
        self.core.check_invariants()
        for s in self.core.stats().subscriptions:
            assert s.matched + s.replayed == s.delivered + s.dead_lettered + s.dropped + s.unsubscribed


BusMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_bus_core_properties = BusMachine.TestCase


def test_the_same_seed_and_inputs_give_the_same_schedule_and_dead_letters():
    def run(seed: int):
        core = BusCore(seed=seed)
        core.subscribe(spec(retry={"max_attempts": 4, "base_delay_s": 1.0, "jitter": "full"}))
        publish(core, "a", batch_id="one")
        now_s, times = 0.0, []
        while core.pending():
            for d in core.start_due(now_s):
                times.append(now_s)
                core.failed(d.id, BOOM, now_s)
            now_s = core.next_due_s() or now_s
        return times, core.dead_letters()

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]
