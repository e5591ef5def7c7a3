"""Live reload: keys of the configuration store bound to components that change while they run.

The pure bookkeeping (BindingState) step by step and under random schedules; the driver
(LiveConfig) against a fake client that keeps the ConfigClient contract (revisions, reads at a
revision, watches delivered in revision order on a thread of their own), with real pure
components as targets; then real actors on Ray, reconfigured under load.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.balancing import BalancerSettings
from ddia_ray.caching import CacheFront, CacheSettings, LRUCache, TTLCache
from ddia_ray.config.live import BindingState, LiveConfig, LocalTarget, settings_of
from ddia_ray.config.typed import TypedConfig
from ddia_ray.config.records import KeyValue, WatchEvent
from ddia_ray.errors import ActorUnavailableError, CallTimeoutError, ConfigError, InvalidConfigValueError
from ddia_ray.resilience import BreakerSettings, CircuitBreaker, CircuitBreakerConfig, State
from raywait import wait_for


# --- a fake client that keeps the ConfigClient contract ---------------------------------------------


class FakeWatch:
    def __init__(self, client: "FakeClient", key: str, callback, on_error):
        self.client, self.key, self.callback, self.on_error = client, key, callback, on_error
        self.revision = 0
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClient:
    """Puts and deletes numbered by one global revision; each watch gets its key's changes in revision
    order, on the client's watch thread, from its start revision on."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rev = 0
        self._log: list[tuple[int, str, Any]] = []  # (revision, key, value or _DELETED)
        self._queue: list[Callable[[], None]] = []
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self.watches: list[FakeWatch] = []
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    _DELETED = object()

    def _feed(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._queue.pop(0)
            job()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _event(self, revision: int, key: str, value: Any) -> WatchEvent:
        if value is self._DELETED:
            return WatchEvent("delete", KeyValue(key, None, 0, revision, 0))
        return WatchEvent("put", KeyValue(key, value, 1, revision, 1))

    def _deliver(self, watch: FakeWatch, events: list) -> None:
        def job():
            if not watch.cancelled:
                watch.callback(events)
                watch.revision = events[-1].kv.mod_revision
        self._queue.append(job)
        self._wake.notify_all()

    def _write(self, key: str, value: Any) -> int:
        with self._lock:
            self._rev += 1
            self._log.append((self._rev, key, value))
            for w in self.watches:
                if w.key == key and not w.cancelled:
                    self._deliver(w, [self._event(self._rev, key, value)])
            return self._rev

    def put(self, key: str, value: Any) -> int:
        return self._write(key, value)

    def delete(self, key: str) -> int:
        return self._write(key, self._DELETED)

    def revision(self) -> int:
        with self._lock:
            return self._rev

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None:
        with self._lock:
            at = self._rev if revision is None else revision
            for rev, k, value in reversed(self._log):
                if k == key and rev <= at:
                    return None if value is self._DELETED else KeyValue(key, value, 1, rev, 1)
            return None

    def watch(self, key: str, callback, *, prefix: bool = False, start_revision: int | None = None,
              on_error=None) -> FakeWatch:
        assert not prefix
        with self._lock:
            w = FakeWatch(self, key, callback, on_error)
            start = self._rev + 1 if start_revision is None else start_revision
            backlog = [self._event(r, k, v) for r, k, v in self._log if k == key and r >= start]
            if backlog:
                self._deliver(w, backlog)
            self.watches.append(w)
            return w

    def break_watches(self, error: BaseException) -> None:
        """Stop every watch as a compaction would, reporting ``error`` to its on_error."""
        with self._lock:
            broken = [w for w in self.watches if not w.cancelled]
            for w in broken:
                w.cancelled = True
        for w in broken:
            w.on_error(error)


@pytest.fixture
def client():
    c = FakeClient()
    yield c
    c.close()


@pytest.fixture
def live(client):
    errors: list = []
    lc = LiveConfig(client, timeout_s=5.0, retry_interval_s=0.02, on_error=lambda key, e: errors.append((key, e)))
    lc.errors = errors
    yield lc
    lc.close()


class Recorder:
    """A target recording what it was given; fails its first ``failures`` deliveries."""

    def __init__(self, name: str = "rec", failures: int = 0):
        self.name, self.failures = name, failures
        self.got: list = []
        self.calls = 0

    def reconfigure(self, s):
        self.calls += 1
        if self.calls <= self.failures:
            raise ActorUnavailableError(f"{self.name} is down (delivery {self.calls})")
        self.got.append(s)
        return s


# --- settings_of ----------------------------------------------------------------------------------


def test_values_become_settings_only_through_the_schema():
    assert settings_of(CacheSettings, {"capacity": 5}) == CacheSettings(5)
    same = CacheSettings(7, 1.0)
    assert settings_of(CacheSettings, same) == same
    with pytest.raises(InvalidConfigValueError, match="no field 'ttl'") as info:
        settings_of(CacheSettings, {"ttl": 3})
    assert info.value.field == "ttl"
    with pytest.raises(InvalidConfigValueError, match="capacity") as info:
        settings_of(CacheSettings, {"capacity": -1})
    assert info.value.field == "capacity"
    with pytest.raises(InvalidConfigValueError, match="instance or a dict of its fields"):
        settings_of(CacheSettings, 42)
    with pytest.raises(InvalidConfigValueError, match=r"weights\['r0'\] must be > 0") as info:
        settings_of(BalancerSettings, {"weights": {"r0": 0}})
    assert info.value.field == "weights"
    # The rules of TypedConfig.set: what it stores (its plain dict form) reads back as the same settings.
    stored = TypedConfig(None, "lb", BalancerSettings).dump(BalancerSettings("round_robin", {"r0": 2}))
    assert settings_of(BalancerSettings, stored) == BalancerSettings("round_robin", {"r0": 2})


# --- BindingState: the pure core -------------------------------------------------------------------


def test_a_valid_value_is_owed_to_every_target_once():
    s = BindingState("k", CacheSettings, ["a", "b"])
    assert s.plan(0.0) == [], "nothing to deliver before a value"
    s.offer(3, {"capacity": 4})
    assert s.plan(0.0) == [("a", 3, CacheSettings(4)), ("b", 3, CacheSettings(4))]
    assert s.plan(0.0) == [], "in flight: not planned twice"
    s.done("a", 3, None, 0.0)
    s.done("b", 3, None, 0.0)
    assert s.status().synced and dict(s.status().applied) == {"a": 3, "b": 3}
    s.check_invariants()


def test_an_invalid_value_is_kept_with_its_error_and_never_planned():
    s = BindingState("k", CacheSettings, ["a"])
    s.offer(2, {"capacity": 4})
    s.done(*s.plan(0.0)[0][:2], None, 0.0)
    error = s.offer(3, {"capacity": 0})
    assert isinstance(error, InvalidConfigValueError)
    assert s.plan(0.0) == [] and s.settings == CacheSettings(4) and s.revision == 2
    assert s.refusal(3) is error and s.refusal(2) is error
    s.offer(4, {"capacity": 8})
    assert s.refusal(3) is None, "a valid value came since"


def test_old_and_repeated_revisions_and_deletes_change_nothing():
    s = BindingState("k", CacheSettings, ["a"])
    s.offer(5, {"capacity": 5})
    s.offer(5, {"capacity": 9})
    s.offer(4, {"capacity": 9})
    s.offer(6, None, deleted=True)
    assert (s.revision, s.settings, s.seen) == (5, CacheSettings(5), 6)


def test_a_failed_target_backs_off_then_gets_the_newest_value():
    s = BindingState("k", CacheSettings, ["a", "b"], retry_interval_s=1.0)
    s.offer(1, {"capacity": 1})
    s.plan(0.0)
    s.done("a", 1, None, 0.0)
    failure = s.done("b", 1, ActorUnavailableError("down"), 0.0)
    assert failure is not None and failure.target == "b" and s.next_retry_s() == 1.0
    assert s.plan(0.5) == []
    assert s.settled(1), "b failed on the newest value: nothing more to wait for now"
    s.offer(2, {"capacity": 2})
    assert s.plan(0.5) == [("a", 2, CacheSettings(2)), ("b", 2, CacheSettings(2))], "a new value: retried at once"
    s.done("a", 2, None, 0.6)
    s.done("b", 2, ActorUnavailableError("down"), 0.6)
    assert s.plan(1.0) == [] and s.plan(1.6) == [("b", 2, CacheSettings(2))]
    s.done("b", 2, None, 1.7)
    assert not s.status().failures and s.status().synced


def test_a_target_in_flight_gets_only_the_newest_value_afterwards():
    s = BindingState("k", CacheSettings, ["a"])
    s.offer(1, {"capacity": 1})
    s.plan(0.0)
    s.offer(2, {"capacity": 2})
    s.offer(3, {"capacity": 3})
    assert s.plan(0.0) == [], "one delivery at a time per target: no reordering"
    s.done("a", 1, None, 0.0)
    assert s.plan(0.0) == [("a", 3, CacheSettings(3))], "superseded values are skipped"


def test_resync_and_added_targets_are_owed_the_value_in_force():
    s = BindingState("k", CacheSettings, ["a"])
    s.offer(1, {"capacity": 1})
    s.done("a", *s.plan(0.0)[0][1:2], None, 0.0)
    s.add_target("b")
    assert s.plan(0.0) == [("b", 1, CacheSettings(1))]
    s.done("b", 1, None, 0.0)
    s.resync()
    assert [p[0] for p in s.plan(0.0)] == ["a", "b"]
    with pytest.raises(ConfigError, match="already bound"):
        s.add_target("a")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["offer", "bad", "plan", "plan", "finish", "finish", "fail", "refuse",
                                           "resync"]),
                          st.integers(0, 2)), max_size=40), st.integers(0, 2**32))
def test_under_any_schedule_applied_revisions_only_grow_and_everyone_converges(steps, seed):
    rng = random.Random(seed)
    s = BindingState("k", CacheSettings, ["a", "b", "c"], retry_interval_s=1.0)
    rev, now = 0, 0.0
    in_flight: list[tuple[str, int]] = []
    last = {"a": 0, "b": 0, "c": 0}
    for kind, n in steps:
        now += 0.4
        if kind in ("offer", "bad"):
            rev += 1 + n
            s.offer(rev, {"capacity": 0 if kind == "bad" else rev})
        elif kind == "plan":
            planned = s.plan(now)
            assert all(r == s.revision and settings_ == s.settings for _, r, settings_ in planned)
            in_flight += [(t, r) for t, r, _ in planned]
        elif kind == "resync":
            s.resync()
        elif in_flight:
            t, r = in_flight.pop(rng.randrange(len(in_flight)))
            error = {"fail": ActorUnavailableError("down"), "refuse": ConfigError("no")}.get(kind)
            s.done(t, r, error, now, retry=kind != "refuse")
        s.check_invariants()
        applied = s.status().applied
        if kind != "resync":
            assert all(applied[t] >= last[t] for t in last), "an applied revision went back"
        last = dict(applied)
    for t, r in in_flight:
        s.done(t, r, None, now)
    s.resync()  # what a refusal waits for (or a new value)
    for _ in range(3):
        now += 2.0
        for t, r, _ in s.plan(now):
            s.done(t, r, None, now)
    assert s.status().synced and not s.status().failures


# --- LiveConfig on the fake client, with pure components as targets -----------------------------------


def test_bind_delivers_the_value_in_force_then_every_change(client, live):
    client.put("cache", {"capacity": 8})
    front = CacheFront(TTLCache(100, default_ttl_s=60.0))
    binding = live.bind_cache("cache", front)
    assert front.settings() == CacheSettings(8, None), "applied at bind, before any change"
    rev = client.put("cache", CacheSettings(4, 2.0))
    status = binding.wait_applied(rev, timeout_s=5)
    assert front.settings() == CacheSettings(4, 2.0) and status.synced


def test_an_invalid_value_never_reaches_a_target_and_is_reported(client, live):
    client.put("cache", {"capacity": 8})
    front = CacheFront(TTLCache(100))
    binding = live.bind_cache("cache", front)
    bad = client.put("cache", {"capacity": 8, "default_ttl_s": -5})
    with pytest.raises(InvalidConfigValueError, match="default_ttl_s"):
        binding.wait_applied(bad, timeout_s=5)
    assert front.settings() == CacheSettings(8, None)
    wait_for(lambda: live.errors, timeout_s=5, what="the refusal reported")  # reported after it is recorded
    assert [(k, type(e)) for k, e in live.errors] == [("cache", InvalidConfigValueError)]
    assert binding.status().invalid[0][0] == bad


def test_a_failing_target_is_retried_and_never_holds_the_others_back(client, live):
    client.put("k", {"capacity": 1})
    healthy, flaky = Recorder("healthy"), Recorder("flaky", failures=3)
    binding = live.bind("k", CacheSettings, [healthy, flaky])
    assert healthy.got == [CacheSettings(1)], "delivered although flaky failed"
    rev = client.put("k", {"capacity": 2})
    binding.wait_applied(rev, timeout_s=5)
    assert healthy.got == [CacheSettings(1), CacheSettings(2)]
    assert flaky.got[-1] == CacheSettings(2) and flaky.calls > 3
    assert any(getattr(e, "target", None) == "Recorder:flaky" for _, e in live.errors)


def test_a_value_a_target_refuses_is_not_sent_again_and_the_wait_raises_the_refusal(client, live):
    lru = CacheFront(LRUCache(5))
    calls = []
    binding = live.bind("k", CacheSettings, [LocalTarget(lambda s: (calls.append(s), lru.reconfigure(s)), "lru")])
    rev = client.put("k", {"capacity": 3, "default_ttl_s": 5.0})
    with pytest.raises(ConfigError, match="needs the 'ttl' eviction policy"):
        binding.wait_applied(rev, timeout_s=5)
    failure = binding.status().failures["lru"]
    assert (failure.revision, failure.retry) == (rev, False) and lru.settings() == CacheSettings(5)
    assert binding.status().failures["lru"].retry is False
    assert binding.state.next_retry_s() is None, "a refusal is not retried: only a new value can change it"
    with pytest.raises(ConfigError, match="needs the 'ttl' eviction policy"):
        binding.wait_applied(timeout_s=5)  # the newest value, refused
    assert len(calls) == 1
    rev = client.put("k", {"capacity": 3})
    binding.wait_applied(rev, timeout_s=5)
    assert lru.settings() == CacheSettings(3) and not binding.status().failures


def test_each_target_sees_revisions_in_order_and_ends_on_the_last(client, live):
    slow_started = threading.Event()
    release = threading.Event()
    got: list[int] = []

    def slow(s: CacheSettings):
        slow_started.set()
        release.wait(5)
        got.append(s.capacity)

    binding = live.bind("k", CacheSettings, LocalTarget(slow, "slow"))
    client.put("k", {"capacity": 1})
    slow_started.wait(5)
    revs = [client.put("k", {"capacity": c}) for c in range(2, 30)]
    release.set()
    binding.wait_applied(revs[-1], timeout_s=5)
    assert got == sorted(got) and got[0] == 1 and got[-1] == 29
    assert len(got) < 29, "values superseded while a delivery was in flight are skipped"


def test_breakers_change_thresholds_live_and_keep_their_state(client, live):
    breakers = [CircuitBreaker(f"b{i}", CircuitBreakerConfig(minimum_calls=4, window_size=4)) for i in range(2)]
    for _ in range(2):
        breakers[0].on_error(0.0, RuntimeError("x"))
    binding = live.bind_breakers("breakers", breakers)
    rev = client.put("breakers", BreakerSettings(minimum_calls=3, window_size=4, failure_rate_threshold=60))
    binding.wait_applied(rev, timeout_s=5)
    assert all(b.config.minimum_calls == 3 for b in breakers)
    breakers[0].on_success(0.0)  # 2 of 3 failed: 67% >= 60%
    assert breakers[0].state is State.OPEN and breakers[1].state is State.CLOSED


def test_a_target_added_later_gets_the_value_in_force(client, live):
    client.put("k", {"capacity": 3})
    binding = live.bind("k", CacheSettings, Recorder("first"))
    late = Recorder("late")
    binding.add_target(late)
    binding.wait_applied(timeout_s=5)
    assert late.got == [CacheSettings(3)]


def test_an_absent_or_deleted_key_changes_nothing(client, live):
    rec = Recorder()
    binding = live.bind("k", CacheSettings, rec)
    assert rec.got == [] and binding.status().revision == 0
    client.put("k", {"capacity": 3})
    binding.wait_applied(timeout_s=5)
    client.delete("k")
    wait_for(lambda: binding.state.seen == 2, timeout_s=5, what="the delete seen")
    assert rec.got == [CacheSettings(3)]


def test_a_broken_watch_is_started_again_without_missing_a_change(client, live):
    rec = Recorder()
    binding = live.bind("k", CacheSettings, rec)
    client.break_watches(RuntimeError("compacted while lagging"))
    rev = client.put("k", {"capacity": 9})  # while no watch runs
    binding.wait_applied(rev, timeout_s=5)
    assert rec.got[-1] == CacheSettings(9)


def test_a_target_that_never_succeeds_times_the_wait_out_with_the_reason(client, live):
    client.put("k", {"capacity": 1})
    binding = live.bind("k", CacheSettings, Recorder("dead", failures=10**6))
    with pytest.raises(CallTimeoutError, match="dead is down"):
        binding.wait_applied(timeout_s=0.3)


def test_unknown_targets_and_closed_configs_are_refused(client):
    lc = LiveConfig(client)
    with pytest.raises(Exception, match="cannot deliver settings to a int"):
        lc.bind("k", CacheSettings, 42)
    lc.close()
    with pytest.raises(ConfigError, match="closed"):
        lc.bind("k", CacheSettings, Recorder())


def test_with_the_real_client_in_one_process_a_rollback_rolls_the_components_back():
    from ddia_ray.config import LocalConfig

    client = LocalConfig()
    try:
        breakers = TypedConfig(client, "/svc/breakers", BreakerSettings)
        first = breakers.set(BreakerSettings(minimum_calls=20, window_size=20))
        breaker = CircuitBreaker("svc", CircuitBreakerConfig())
        with LiveConfig(client, timeout_s=5.0) as live:
            binding = live.bind_breakers("/svc/breakers", breaker)
            assert breaker.config.minimum_calls == 20
            binding.wait_applied(breakers.update(minimum_calls=5, failure_rate_threshold=25), timeout_s=5)
            assert (breaker.config.minimum_calls, breaker.config.failure_rate_threshold) == (5, 25)
            back = client.rollback(first)
            binding.wait_applied(back, timeout_s=5)
            assert breaker.config == BreakerSettings(minimum_calls=20, window_size=20).config()
            assert binding.status().applied == {"breaker:svc": back}
    finally:
        client.close()


def test_a_binding_made_on_an_empty_store_gets_the_first_value():
    from ddia_ray.config import LocalConfig

    client = LocalConfig()
    try:
        assert client.revision() == 0
        breaker = CircuitBreaker("svc", CircuitBreakerConfig())
        with LiveConfig(client, timeout_s=5.0) as live:
            binding = live.bind_breakers("/svc/breakers", breaker)  # nothing to read yet: watch from revision 1
            assert breaker.config == CircuitBreakerConfig()
            rev = TypedConfig(client, "/svc/breakers", BreakerSettings).set(BreakerSettings(minimum_calls=7))
            assert rev == 1
            binding.wait_applied(rev, timeout_s=5)
            assert breaker.config.minimum_calls == 7
    finally:
        client.close()


# --- real actors on Ray, reconfigured from a real configuration store while they serve -----------------

NODES = ("r0", "r1", "r2")


class _Load:
    """Requests through the balancer and reads through the cache, in a loop, until stopped; every
    answer is checked, every error kept."""

    def __init__(self, balancer, cache, keys: list):
        from ddia_ray.demo.replica import Work, expected_digest

        self.balancer, self.cache, self.keys = balancer, cache, keys
        self.work = [Work(f"w{i}") for i in range(14)]
        self.digests = [expected_digest(w) for w in self.work]
        self.rounds = 0
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                assert [r.digest for r in self.balancer.call_batch(self.work)] == self.digests
                assert self.cache.get_many(self.keys) == [b"v-" + k for k in self.keys]
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 - kept, asserted empty by the test
                self.errors.append(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _actor_id(component) -> str:
    return component.group.handle(component.node)._actor_id.hex()


@pytest.mark.ray
def test_running_actors_take_new_settings_under_load_without_a_restart(ray_session):
    import uuid

    from ddia_ray.balancing import BalancerActor
    from ddia_ray.caching import ReadThroughCache
    from ddia_ray.config import ConfigStore
    from ddia_ray.runtime import CoreSpec, NodeGroup
    from ddia_ray.storage.node import StorageNode

    tag = uuid.uuid4().hex[:6]
    owned: list = []
    closing: list = []
    try:
        replicas = NodeGroup.launch(f"live-{tag}", {n: CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})
                                                    for n in NODES})
        owned.append(replicas)
        lenient = CircuitBreakerConfig(window_size=50, minimum_calls=50, failure_rate_threshold=100)
        lb = BalancerActor.launch(replicas, NODES, name=f"live-lb-{tag}", picker="round_robin", timeout_s=0.5,
                                  health_interval_s=None, breaker=lenient)
        owned.append(lb)
        store = StorageNode.launch(f"live-store-{tag}", None, engine="memory")
        owned.append(store)
        cache = ReadThroughCache.launch(f"live-cache-{tag}", store, policy="ttl", capacity=100,
                                        policy_options={"default_ttl_s": 60.0})
        owned.append(cache)
        config = ConfigStore.launch(f"live-config-{tag}", replicas=1, engine="map")
        owned.append(config)
        ids = {c.name: _actor_id(c) for c in (lb, cache)}
        lbc, cc = lb.client(), cache.client()
        keys = [f"k{i:02d}".encode() for i in range(40)]
        cc.put_many({k: b"v-" + k for k in keys})
        client = config.client()
        live = LiveConfig(client, timeout_s=10.0, retry_interval_s=0.2)
        closing += [client, live]
        load = _Load(lbc, cc, keys)
        closing.append(load)
        wait_for(lambda: load.rounds >= 3, timeout_s=30, what="the load running")

        def routed() -> dict:
            return {n: r["requests"] for n, r in lbc.stats()["replicas"].items()}

        def shares_since(before: dict, check) -> Callable[[], bool]:
            def ok() -> bool:
                now = routed()
                delta = {n: now[n] - before[n] for n in NODES}
                return sum(delta.values()) >= 140 and check(delta)
            return ok

        # The balancer: a change made before the binding exists is applied when it binds.
        lb_config = TypedConfig(client, "/live/lb", BalancerSettings)
        rev = lb_config.set(BalancerSettings("weighted_round_robin", {"r0": 5}))
        lb_binding = live.bind_balancer("/live/lb", lb)
        lb_binding.wait_applied(rev, timeout_s=20)
        assert lbc.settings()[0] == BalancerSettings("weighted_round_robin", {"r0": 5, "r1": 1, "r2": 1})
        wait_for(shares_since(routed(), lambda d: d["r0"] >= 4 * d["r1"] and d["r0"] >= 4 * d["r2"]),
                 timeout_s=30, what="smooth weighted round robin at 5:1:1")
        rev = lb_config.set({"picker": "least_connections", "weights": {"r2": 3}})
        lb_binding.wait_applied(rev, timeout_s=20)
        assert lbc.settings()[0] == BalancerSettings("least_connections", {"r0": 1, "r1": 1, "r2": 3})
        wait_for(shares_since(routed(), lambda d: d["r2"] >= 2 * d["r0"] and d["r2"] >= 2 * d["r1"]),
                 timeout_s=30, what="weighted least connections favouring r2")

        # The breakers: thresholds low enough that a cut-off replica trips at once.
        quick = BreakerSettings(failure_rate_threshold=50, minimum_calls=2, window_size=4, wait_in_open_s=30.0,
                                permitted_calls_in_half_open=1)
        rev = client.put("/live/breakers", quick)
        live.bind_breakers("/live/breakers", lb).wait_applied(rev, timeout_s=20)
        assert lbc.settings()[1] == quick
        replicas.nemesis.isolate("r1")
        wait_for(lambda: lbc.stats()["breakers"]["r1"] == "open", timeout_s=30, what="r1's breaker open")
        replicas.nemesis.heal()
        opened = [reason for breaker, _, to, reason in lbc.stats()["transitions"] if breaker.endswith("/r1")
                  and to == "open"]
        judged = int(re.search(r"over (\d+) calls", opened[0]).group(1))
        assert judged <= 4, f"opened on {judged} calls: the launch settings needed 50 ({opened[0]})"

        # The cache: smaller and with a short TTL; a cache started after the change gets it too.
        before = cc.stats()
        assert (before.capacity, before.expirations, before.evictions) == (100, 0, 0)
        rev = TypedConfig(client, "/live/cache", CacheSettings).set(CacheSettings(capacity=10, default_ttl_s=0.3))
        cache_binding = live.bind_cache("/live/cache", cache)
        cache_binding.wait_applied(rev, timeout_s=20)
        assert cc.settings() == CacheSettings(10, 0.3)
        first = cc.stats()
        assert first.capacity == 10 and first.entries <= 10
        # The 40 entries cached for seconds under the 60 s TTL expire under the new one, measured from their write.
        assert first.expirations > 0
        wait_for(lambda: cc.stats().evictions > first.evictions, timeout_s=30,
                 what="evictions as the load reads 40 keys through 10 places")
        late = ReadThroughCache.launch(f"live-cache2-{tag}", store, policy="ttl", capacity=500)
        owned.append(late)
        cache_binding.add_target(late)
        cache_binding.wait_applied(rev, timeout_s=20)
        assert late.client().settings() == CacheSettings(10, 0.3)

        # An invalid value written around the schema never reaches the actors.
        bad = client.put("/live/cache", {"capacity": 0})
        with pytest.raises(InvalidConfigValueError, match="capacity"):
            cache_binding.wait_applied(bad, timeout_s=10)
        assert cc.settings() == CacheSettings(10, 0.3)

        rounds = load.rounds
        wait_for(lambda: load.rounds >= rounds + 3, timeout_s=30, what="the load still running")
        load.stop()
        assert load.errors == [], load.errors[:3]
        assert {c.name: _actor_id(c) for c in (lb, cache)} == ids, "an actor was replaced"
        assert lb.group.restarts == {lb.node: 0} and cache.group.restarts == {cache.node: 0}
        assert lbc.stats()["requests"] >= 14 * load.rounds, "the balancer's counters survived: never restarted"
    finally:
        for thing in reversed(closing):
            thing.stop() if isinstance(thing, _Load) else thing.close()
        for component in reversed(owned):
            component.shutdown()
