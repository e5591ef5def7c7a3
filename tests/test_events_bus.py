"""The fire-and-forget event bus on real Ray: slow, failing and killed handlers, functions, the nemesis."""

from __future__ import annotations

import asyncio
import importlib
import pathlib
import time
import uuid

import pytest
import ray

from ddia_ray.codec import record
from ddia_ray.errors import (ActorUnavailableError, ComponentNotFoundError, ConfigError, InvalidArgumentError,
                             RemoteError, UnknownSubscriptionError)
from ddia_ray.events.bus import EventBus
from ddia_ray.resilience import RetryPolicy
from raywait import actor_dead, wait_for

pytestmark = pytest.mark.ray

_TESTS = str(pathlib.Path(__file__).parent)
#: Handlers decode events in their own process: these workers can import this module, which defines them.
HANDLER_ENV = {"env_vars": {"PYTHONPATH": _TESTS}}
TASK_OPTIONS = {"num_cpus": 0, "runtime_env": HANDLER_ENV}
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


@record("test_bus_ray.ping", version=1)
class Ping:
    n: int


@record("test_bus_ray.pong", version=1)
class Pong:
    n: int


@ray.remote(num_cpus=0)
class Recorder:
    """A handler actor: records what it gets; can be gated (slow), or fail its first ``fail_times`` calls."""

    def __init__(self, fail_times: int = 0, gated: bool = False):
        importlib.import_module("test_events_bus")  # the event records, for decoding the arguments
        self.fail_times = fail_times
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.events: list = []
        self.calls = 0

    async def handle(self, event):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise ValueError(f"boom {self.calls}")
        await self.gate.wait()
        self.events.append((type(event).__name__, event.n))

    async def handle_batch(self, events):
        self.events.append(tuple(e.n for e in events))

    async def record(self, n):
        self.events.append(n)

    async def release(self):
        self.gate.set()

    async def heal(self):
        self.fail_times = 0

    async def received(self):
        return list(self.events)

    async def call_count(self):
        return self.calls


@ray.remote(num_cpus=0)
class Blind:
    """A handler actor whose process cannot import the event classes."""

    def handle(self, event):
        return event


@pytest.fixture
def launch(ray_session):
    """Launch buses and handler actors with unique names; everything is stopped at the end of the test."""
    buses, actors = [], []

    def start(**options):
        bus = EventBus.launch(f"test-bus-{uuid.uuid4().hex[:8]}", **options)
        buses.append(bus)
        return bus

    def recorder(**options):
        actor = Recorder.options(runtime_env=HANDLER_ENV).remote(**options)
        actors.append(actor)
        return actor

    start.recorder = recorder
    yield start
    for bus in buses:
        bus.shutdown()
    for actor in actors:
        ray.kill(actor)


def _received(actor) -> list:
    return ray.get(actor.received.remote(), timeout=30)


def _pings(ns) -> list:
    return [("Ping", n) for n in ns]


# --- publishing never waits on handlers -----------------------------------------------------------


def test_publish_returns_once_accepted_while_the_handler_is_still_blocked(launch):
    bus = launch()
    client = bus.client()
    gated = launch.recorder(gated=True)
    client.subscribe(Ping, gated, name="gated")
    seqs = client.publish_many([Ping(i) for i in range(5)])
    assert seqs == (1, 2, 3, 4, 5)
    assert client.publish(Ping(5)) == 6
    assert _received(gated) == [], "publish returned while the handler had not finished anything"
    wait_for(lambda: client.stats().subscription("gated").in_flight == 1, what="the first delivery in flight")
    assert client.stats().subscription("gated").queued == 5
    ray.get(gated.release.remote())
    client.drain(timeout_s=30)
    assert _received(gated) == _pings(range(6))


def test_a_slow_handler_does_not_delay_a_fast_one(launch):
    bus = launch()
    client = bus.client()
    slow, fast = launch.recorder(gated=True), launch.recorder()
    client.subscribe("test_bus_ray.ping", slow, name="slow")
    client.subscribe("test_bus_ray.*", fast, name="fast")
    futures = [client.publish_future(Ping(i)) for i in range(20)]
    assert [f.result(30) for f in futures] == list(range(1, 21))
    wait_for(lambda: len(_received(fast)) == 20, what="the fast handler's 20 events")
    assert _received(fast) == _pings(range(20)), "in publish order (concurrency 1)"
    assert _received(slow) == []
    stats = client.stats()
    assert (stats.subscription("slow").queued, stats.subscription("slow").in_flight) == (19, 1)
    assert stats.subscription("fast").delivered == 20
    ray.get(slow.release.remote())
    client.drain(timeout_s=30)
    assert _received(slow) == _pings(range(20))


# --- failures: retried, then dead-lettered ----------------------------------------------------------


def test_a_failing_handler_is_retried_then_dead_lettered_with_its_error_and_replayed(launch):
    bus = launch(seed=5)
    client = bus.client()
    flaky, broken = launch.recorder(fail_times=2), launch.recorder(fail_times=10**6)
    client.subscribe(Ping, flaky, name="flaky", retry=FAST_RETRY)
    client.subscribe(Ping, broken, name="broken", retry=FAST_RETRY)
    client.publish_many([Ping(0), Ping(1)])
    client.drain(timeout_s=30)
    assert _received(flaky) == _pings([0, 1])
    stats = client.stats()
    assert (stats.subscription("flaky").retried, stats.subscription("flaky").delivered) == (2, 2)
    assert (stats.subscription("broken").dead_lettered, stats.subscription("broken").attempts) == (2, 6)
    letters = client.dead_letters(subscription="broken")
    assert [(d.seq, d.attempts, d.reason) for d in letters] == [(1, 3, "failed"), (2, 3, "failed")]
    assert letters[0].event() == Ping(0) and letters[0].event_type == "test_bus_ray.ping"
    assert letters[0].error.kind == "RemoteError" and letters[0].error.attrs["kind"] == "ValueError"
    assert "boom" in letters[0].error.message and time.time() - letters[0].at_s < 60
    with pytest.raises(RemoteError, match="boom"):
        raise letters[0].exception()
    ray.get(broken.heal.remote())
    assert client.replay_dead_letters(subscription="broken") == 2
    client.drain(timeout_s=30)
    assert _received(broken) == _pings([0, 1]) and client.dead_letters() == ()


def test_no_retry_on_dead_letters_an_error_at_its_first_attempt(launch):
    client = launch().client()
    broken = launch.recorder(fail_times=10**6)
    client.subscribe(Ping, broken, name="poison", retry=FAST_RETRY, no_retry_on=("ValueError",))
    client.publish(Ping(0))
    client.drain(timeout_s=30)
    assert [d.attempts for d in client.dead_letters()] == [1]


def test_a_killed_handler_actor_is_retried_then_dead_lettered_and_others_are_unaffected(launch):
    client = launch().client()
    doomed, healthy = launch.recorder(), launch.recorder()
    client.subscribe(Ping, doomed, name="doomed", retry=FAST_RETRY, concurrency=2)
    client.subscribe(Ping, healthy, name="healthy", retry=FAST_RETRY)
    client.publish(Ping(0))
    wait_for(lambda: _received(doomed) == _pings([0]), what="the first delivery to the doomed actor")
    ray.kill(doomed)
    # ray.kill only requests the kill: a delivery sent right after it can still reach the live
    # worker, so wait until Ray reports the actor dead.
    doomed_id = doomed._actor_id.hex()
    wait_for(lambda: actor_dead(doomed_id), what="the doomed actor to be dead")
    client.publish_many([Ping(i) for i in range(1, 6)])
    client.drain(timeout_s=60)
    assert _received(healthy) == _pings(range(6))
    letters = client.dead_letters(subscription="doomed")
    assert sorted(d.seq for d in letters) == [2, 3, 4, 5, 6]
    assert {(d.attempts, d.error.kind) for d in letters} == {(3, "ActorUnavailableError")}
    stats = client.stats()
    assert stats.subscription("doomed").delivered == 1 and stats.subscription("healthy").failures == 0


def test_a_handler_process_without_the_event_class_dead_letters_with_the_codec_error(launch):
    client = launch().client()
    blind = Blind.remote()
    try:
        client.subscribe(Ping, blind, retry=RetryPolicy(max_attempts=1), name="blind")
        client.publish(Ping(0))
        client.drain(timeout_s=30)
        (letter,) = client.dead_letters()
        assert letter.error.kind == "UnknownTypeError" and "test_bus_ray.ping" in letter.error.message, letter.error
    finally:
        ray.kill(blind)


# --- function handlers, prefixes and batches ---------------------------------------------------------


def test_a_function_handler_runs_as_a_ray_task_and_its_failures_are_dead_lettered(launch):
    client = launch().client()
    sink = launch.recorder()

    # Closures, pickled by value; they name Ping and Pong, so the task's worker imports this module
    # (on its PYTHONPATH) when it loads them, and the records are registered before the events decode.
    def on_ping(event):
        assert isinstance(event, Ping)
        ray.get(sink.record.remote(event.n))

    def on_pong(event):
        raise KeyError(f"no {type(event).__name__} {event.n} for {Pong.__name__}")

    client.subscribe(Ping, on_ping, ray_options=TASK_OPTIONS, concurrency=4)
    client.subscribe(Pong, on_pong, ray_options=TASK_OPTIONS, retry=FAST_RETRY, name="pong")
    client.publish_many([Ping(i) for i in range(8)] + [Pong(0)])
    client.drain(timeout_s=60)
    assert sorted(_received(sink)) == list(range(8)), "concurrency 4: every event, in any order"
    (letter,) = client.dead_letters(subscription="pong")
    assert letter.error.attrs["kind"] == "KeyError" and letter.attempts == 3


def test_a_prefix_subscription_with_batches_gets_tuples_of_events(launch):
    client = launch().client()
    batches = launch.recorder(gated=False)
    client.subscribe("test_bus_ray.*", batches, method="handle_batch", batch_max=4)
    client.publish_many([Ping(i) if i % 2 else Pong(i) for i in range(10)])
    client.drain(timeout_s=30)
    got = _received(batches)
    assert [n for batch in got for n in batch] == list(range(10)) and max(map(len, got)) <= 4


# --- the nemesis: lost and duplicated publishes, a crash of the bus -------------------------------------


def test_duplicated_and_lost_publishes_are_each_accepted_once(launch):
    bus = launch()
    sink = launch.recorder()
    client = bus.client(timeout_s=1.0, max_batch=7,
                        publish_retry=RetryPolicy(max_attempts=20, base_delay_s=0.01, max_delay_s=0.1,
                                                  retry_on=(TimeoutError, ActorUnavailableError)))
    client.subscribe(Ping, sink)
    bus.nemesis.link("client", bus.node, duplicate=1.0)
    client.publish_many([Ping(i) for i in range(20)])
    bus.nemesis.reset_links()
    bus.nemesis.link("client", bus.node, drop=0.3)
    bus.nemesis.link(bus.node, "client", drop=0.3)
    client.publish_many([Ping(i) for i in range(20, 40)])
    bus.nemesis.reset_links()
    client.drain(timeout_s=30)
    stats = client.stats()
    assert stats.published == 40 and stats.duplicate_batches >= 3
    assert _received(sink) == _pings(range(40)), "each event once, in order"


def test_a_crash_of_the_bus_loses_its_queues_and_subscriptions(launch):
    bus = launch()
    client = bus.client()
    gated = launch.recorder(gated=True)
    client.subscribe(Ping, gated, name="gated")
    client.publish_many([Ping(i) for i in range(5)])
    bus.nemesis.kill(bus.node)
    with pytest.raises(ActorUnavailableError):
        client.stats()
    bus.nemesis.restart(bus.node)
    stats = client.stats()
    assert (stats.published, stats.subscriptions) == (0, ()), "at-most-once across a crash"
    with pytest.raises(UnknownSubscriptionError):
        client.unsubscribe("gated")


# --- the handle: connect, bad input, shutdown ------------------------------------------------------------


def test_connect_finds_the_bus_and_shutdown_stops_it(launch):
    bus = launch()
    other = EventBus.connect(bus.name)
    assert other.mode == "fire-and-forget" and other.nodes == bus.nodes
    sink = launch.recorder()
    sub = other.client().subscribe(Ping, sink)
    assert [s.id for s in bus.client().subscriptions()] == [sub]
    bus.client().publish(Ping(1))
    other.client().drain(timeout_s=30)
    assert _received(sink) == _pings([1])
    assert bus.stats()[bus.node]["stats"]["delivered"] == 1
    client = bus.client()
    other.shutdown()
    with pytest.raises(ComponentNotFoundError):
        EventBus.connect(bus.name)
    with pytest.raises(ActorUnavailableError):
        client.subscriptions()


def test_bad_handlers_settings_and_subscriptions_raise_specific_errors(launch):
    client = launch().client()
    sink = launch.recorder()
    with pytest.raises(InvalidArgumentError):
        client.subscribe(Ping, 42)
    with pytest.raises(InvalidArgumentError):
        client.subscribe(Ping, sink, method="no_such_method")
    with pytest.raises(ConfigError):
        client.subscribe(Ping, lambda e: None, ray_options={"no_such_option": 1})
    with pytest.raises(ConfigError):
        client.subscribe(Ping, sink, ray_options={"num_cpus": 1})
    with pytest.raises(InvalidArgumentError):
        client.publish({"type": "not a record"})
    with pytest.raises(UnknownSubscriptionError) as info:
        client.unsubscribe("nobody")
    assert info.value.subscription == "nobody" and info.value.remote_node


def test_launch_refuses_bad_modes_and_settings():
    with pytest.raises(ConfigError):
        EventBus.launch("never", mode="exactly-once")
    with pytest.raises(ConfigError):
        EventBus.launch("never", dead_letters_max=0)
    with pytest.raises(ConfigError, match="durable-mode settings"):
        EventBus.launch("never", partitions=4)


def test_durable_mode_delivers_every_published_event_across_a_leader_kill(ray_session, tmp_path):
    """Durable mode: a publish that returned is delivered at least once to each subscribing group,
    although the store's leader is killed while publishing; a replay reads a partition in order."""
    import threading

    from ddia_ray.errors import CallTimeoutError

    bus = EventBus.launch("durable-bus", mode="durable", root=f"file://{tmp_path}", partitions=3)
    try:
        assert EventBus.connect("durable-bus").mode == "durable"
        with bus.client(timeout_s=30) as client:
            seen: dict[str, set] = {"audit": set(), "pings": set()}
            lock = threading.Lock()

            def into(group):
                def handle(event):
                    with lock:
                        seen[group].add(event.decode().n)
                return handle

            client.subscribe("*", into("audit"), group="audit", consumers=2, ack_timeout_s=2.0)
            client.subscribe(Ping, into("pings"), group="pings", ack_timeout_s=2.0)
            futures = []
            for i in range(200):
                futures.append((i, client.publish_future(Ping(i) if i % 2 else Pong(i), key=str(i % 5))))
                if i == 80:
                    bus.store.kill(bus.store.leader())
            published = set()
            for i, f in futures:
                try:
                    f.result(60)
                    published.add(i)
                except CallTimeoutError:
                    pass
            assert len(published) > 100
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (published <= seen["audit"]
                                                       and {i for i in published if i % 2} <= seen["pings"]):
                time.sleep(0.05)
            assert published <= seen["audit"], "a published event was never delivered to the audit group"
            assert {i for i in published if i % 2} <= seen["pings"] and all(i % 2 for i in seen["pings"])
            in_order = [e.decode().n for e in client.replay(0, from_offset=0)]
            assert len(in_order) == len(set(in_order))  # each once, in the partition's order
    finally:
        bus.shutdown(destroy_data=True)
