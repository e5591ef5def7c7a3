"""A balanced handle over the replicas of a node group, and the same thing as a Ray actor.

Theory of operation
-------------------
:class:`BalancedHandle` routes requests to the shells of a
:class:`~ddia_ray.runtime.NodeGroup` (looked up by name, so restarted
replicas are found again). It combines, per request:

* the pure :class:`~ddia_ray.balancing.core.BalancerCore` (picker,
  in-flight counts, outlier ejection, health marks);
* one :class:`~ddia_ray.resilience.CircuitBreaker` per replica: a replica
  whose breaker refuses is skipped for that attempt;
* retries under a :class:`~ddia_ray.resilience.RetryPolicy` and a shared
  :class:`~ddia_ray.resilience.RetryBudget`; a retry goes to a replica the
  request has not tried yet whenever one is left;
* health checks: every ``health_interval_s`` a :class:`~ddia_ray.runtime.core.Probe`
  (answered by every core) goes to each replica *through the fault-injecting network*; each answer is a
  heartbeat for a :class:`~ddia_ray.membership.MembershipView`, whose
  phi-accrual verdicts mark replicas healthy or not in the core.

Batching: :meth:`BalancedHandle.call_batch` assigns every request of a batch
to a replica, then sends *one* ``request_batch`` actor call per replica and
waits for all of them together; failed requests are retried as a smaller
batch in the next round. Requests are assumed idempotent when retried (they
may have executed on a replica whose reply was lost): use request ids and
deduplication in the core otherwise.

Live settings: :meth:`BalancedHandle.reconfigure` switches the picker and
the weights (:class:`~ddia_ray.balancing.settings.BalancerSettings`) and
:meth:`BalancedHandle.reconfigure_breakers` every replica's breaker
thresholds (:class:`~ddia_ray.resilience.BreakerSettings`) while requests
flow; both take the handle's lock, so a request is routed entirely under
the old settings or entirely under the new ones.

:class:`~ddia_ray.balancing.actor.BalancerActor` runs a :class:`BalancedHandle`
as a runtime service, so many clients share one set of breakers and statistics.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from .. import codec
from .._validate import positive
from ..errors import (
    ActorUnavailableError,
    CallNotPermittedError,
    CallTimeoutError,
    ConfigError,
    InvalidArgumentError,
    NoReplicaAvailableError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)
from ..membership import MembershipView, MemberStatus
from ..resilience import Backoff, BreakerSettings, CircuitBreaker, CircuitBreakerConfig, RetryBudget, RetryPolicy
from ..registry import Registry
from ..runtime.connect import NAMESPACE, ensure_ray
from ..runtime.core import Probe, Reply
from ..runtime.shell import actor_name
from .consistent_hash import ConsistentHashPicker
from .core import BalancerCore
from .outlier import OutlierDetector
from .settings import DEFAULT_WEIGHT, BalancerSettings
from .least_connections import WeightedLeastConnectionsPicker
from .power_of_two import PowerOfTwoChoicesPicker
from .round_robin import RoundRobinPicker
from .weighted import SmoothWeightedRoundRobinPicker

__all__ = ["BalancedHandle", "PICKERS", "BalancedStats", "register_picker", "unregister_picker"]

def _callable_factory(name: str, factory: Any) -> Callable[[random.Random], Any]:
    if not callable(factory):
        raise InvalidArgumentError(f"picker {name!r}: the factory must be callable, got {type(factory).__name__}")
    return factory


_PICKERS: Registry[Callable[[random.Random], Any]] = Registry("picker", {
    "round_robin": lambda rng: RoundRobinPicker(),
    "weighted_round_robin": lambda rng: SmoothWeightedRoundRobinPicker(),
    "least_connections": lambda rng: WeightedLeastConnectionsPicker(rng=rng),
    "power_of_two": lambda rng: PowerOfTwoChoicesPicker(rng=rng),
    "consistent_hash": lambda rng: ConsistentHashPicker(),
}, check=_callable_factory)
#: Picker names accepted by :class:`BalancedHandle`: name -> factory ``(rng) -> Picker``. Read-only:
#: add one with :func:`register_picker` (plugins do), so every name is checked once, on the way in.
PICKERS: Mapping[str, Callable[[random.Random], Any]] = _PICKERS.view


def register_picker(name: str, factory: Callable[[random.Random], Any]) -> None:
    """Make ``picker=name`` build its picker with ``factory(rng)`` (a seeded ``random.Random`` in, a
    :class:`~ddia_ray.balancing.pickers.Picker` out). A name taken by another factory raises
    ConfigError; registering the same factory again is a no-op."""
    _PICKERS.register(name, factory)


def unregister_picker(name: str, factory: Callable[[random.Random], Any]) -> bool:
    """Forget picker ``name`` if ``factory`` is what builds it; returns whether it was removed."""
    return _PICKERS.unregister(name, factory)

_DEFAULT_RETRY = RetryPolicy(max_attempts=6, base_delay_s=0.02, max_delay_s=0.5, jitter="full",
                             retry_on=(CallTimeoutError, ActorUnavailableError, NoReplicaAvailableError))
_DEFAULT_BREAKER = CircuitBreakerConfig(window_type="count", window_size=20, minimum_calls=5,
                                        failure_rate_threshold=50, wait_in_open_s=1.0,
                                        permitted_calls_in_half_open=2)


@dataclass(frozen=True)
class BalancedStats:
    """Immutable snapshot of a :class:`BalancedHandle`."""

    balancer: Any
    breakers: Mapping[str, Any]
    transitions: tuple
    members: Mapping[str, Any]
    requests: int
    retries: int
    failed: int
    budget: Any


class BalancedHandle:
    """Client-side load balancing with breakers, retries and health checks (see module doc).

    ``replicas`` maps replica node ids to weights (or is an iterable of ids).
    ``src`` is the name this client has on the fault-injecting network.
    """

    def __init__(self, group: str, replicas: Mapping[str, int] | Iterable[str], *,
                 picker: str = "least_connections", src: str = "balancer", timeout_s: float = 1.0,
                 retry: RetryPolicy | None = None, budget: RetryBudget | None = None,
                 breaker: CircuitBreakerConfig | None = None, health_interval_s: float | None = 0.1,
                 membership: MembershipView | None = None, outlier: OutlierDetector | None = None,
                 seed: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        if not isinstance(group, str) or not group:
            raise InvalidArgumentError("group must be the name of a NodeGroup")
        weights = dict(replicas) if isinstance(replicas, Mapping) else {r: 1 for r in replicas}
        if not weights:
            raise ConfigError("a balancer needs at least one replica")
        if picker not in PICKERS:
            raise ConfigError(f"unknown picker {picker!r}; choose one of {sorted(PICKERS)}")
        self.group = group
        self.src = src
        self.timeout_s = positive("timeout_s", timeout_s)
        self.retry = retry or _DEFAULT_RETRY
        self.breaker_config = breaker or _DEFAULT_BREAKER
        self.budget = budget or RetryBudget(clock=clock)
        self.clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        # Ejections are short by default: a replica back from a crash should get traffic within
        # seconds, and a still-broken one is ejected again for longer (base * times ejected).
        self.picker = picker
        # The weights the settings give by name, also to replicas added later (see reconfigure).
        self._weight_table: dict[str, int] = dict(weights)
        self.core = BalancerCore(PICKERS[picker](random.Random(seed)), detector=outlier or OutlierDetector(
            consecutive_failures=5, base_ejection_s=1.0, max_ejection_s=30.0, interval_s=1.0))
        self.membership = membership or MembershipView(first_heartbeat_estimate_s=health_interval_s or 1.0,
                                                       min_std_deviation_s=0.05)
        # Every verdict (from a tick or from a heartbeat that brings a node back) marks the core.
        self.membership.subscribe(self._on_member_event)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.transitions: list = []
        self._handles: dict[str, Any] = {}
        self._pings: dict[str, Any] = {}
        self._counts = {"requests": 0, "retries": 0, "failed": 0}
        ensure_ray()
        for name, weight in weights.items():
            self.add_replica(name, weight)
        self._stop = threading.Event()
        self._health_thread = None
        self.health_interval_s = positive("health_interval_s", health_interval_s or 1.0)
        if health_interval_s:
            self._health_thread = threading.Thread(target=self._health_loop, name="ddia-ray-health", daemon=True)
            self._health_thread.start()

    # --- pool ------------------------------------------------------------------

    def add_replica(self, name: str, weight: int | None = None) -> None:
        """Start routing to ``name`` (a node of the group) with ``weight`` (default: the settings' weight)."""
        with self._lock:
            self.core.add_replica(name, self._weight_table.get(name, DEFAULT_WEIGHT) if weight is None else weight)
            if name not in self.breakers:
                b = CircuitBreaker(f"{self.group}/{name}", self.breaker_config, clock=self.clock)
                b.add_listener(self.transitions.append)
                self.breakers[name] = b
            if name not in self.membership:
                self.membership.add(name, self.clock())

    def remove_replica(self, name: str) -> None:
        """Stop routing new requests to ``name``; requests in flight there finish."""
        with self._lock:
            self.core.remove_replica(name, self.clock())
            if name in self.membership:
                self.membership.remove(name)
            self._pings.pop(name, None)

    # --- live settings ---------------------------------------------------------------

    def reconfigure(self, settings: BalancerSettings) -> BalancerSettings:
        """Switch to ``settings`` (picker, weights) while requests flow; returns the settings in force.

        A picker switch keeps every replica's health, in-flight count, breaker and ejection
        (:meth:`BalancerCore.reconfigure`); unchanged settings change nothing, not even the
        picker's rotation. An unknown picker raises ConfigError and leaves everything as it was.
        """
        if not isinstance(settings, BalancerSettings):
            raise InvalidArgumentError(f"settings must be BalancerSettings, got {type(settings).__name__}")
        if settings.picker not in PICKERS:  # registered in the process that built the settings, not here
            raise ConfigError(f"unknown picker {settings.picker!r}; choose one of {sorted(PICKERS)}")
        with self._lock:
            picker = None
            if settings.picker != self.picker:
                picker = PICKERS[settings.picker](random.Random(self._rng.getrandbits(64)))
            self.core.reconfigure(picker=picker, weights={m: settings.weight_of(m) for m in self.core.replicas})
            self.picker = settings.picker
            self._weight_table = dict(settings.weights)
            return self.settings()

    def reconfigure_breakers(self, settings: BreakerSettings | CircuitBreakerConfig) -> BreakerSettings:
        """Give every replica's breaker (and those of replicas added later) new thresholds, keeping
        their states (:meth:`CircuitBreaker.reconfigure`); returns the settings in force.

        :class:`BreakerSettings` replace the plain fields and keep this handle's classification
        callables; a :class:`CircuitBreakerConfig` replaces everything.
        """
        if isinstance(settings, BreakerSettings):
            config = settings.config(self.breaker_config)
        elif isinstance(settings, CircuitBreakerConfig):
            config = settings
        else:
            raise InvalidArgumentError(
                f"settings must be BreakerSettings or a CircuitBreakerConfig, got {type(settings).__name__}")
        with self._lock:
            for breaker in self.breakers.values():
                breaker.reconfigure(config)
            self.breaker_config = config
            return BreakerSettings.of(config)

    def settings(self) -> BalancerSettings:
        """The picker and every pooled replica's weight, as settings."""
        with self._lock:
            return BalancerSettings(self.picker, {m: self.core.picker.weight(m) for m in self.core.replicas})

    def breaker_settings(self) -> BreakerSettings:
        """The plain settings of the replicas' breakers."""
        with self._lock:
            return BreakerSettings.of(self.breaker_config)

    # --- replicas' actors --------------------------------------------------------

    def _handle(self, name: str):
        import ray

        h = self._handles.get(name)
        if h is None:
            try:
                h = ray.get_actor(actor_name(self.group, name), namespace=NAMESPACE)
            except ValueError as e:
                raise ActorUnavailableError(f"replica {self.group}/{name} does not exist (killed?)") from e
            self._handles[name] = h
        return h

    # --- calls -----------------------------------------------------------------

    def call(self, payload: Any, key: bytes | str | None = None) -> Any:
        """Send one request; returns the replica's answer or raises after retries."""
        return self.call_batch([payload], None if key is None else [key])[0]

    def call_batch(self, payloads: Sequence[Any], keys: Sequence[Any] | None = None, *,
                   return_exceptions: bool = False) -> list:
        """Send many requests, one actor call per replica per round; results in order.

        With ``return_exceptions`` a failed request's slot holds its exception
        (as in ``asyncio.gather``); otherwise the first failure is raised.
        """
        import ray

        n = len(payloads)
        if keys is not None and len(keys) != n:
            raise InvalidArgumentError("keys must have one entry per payload")
        results: list = [None] * n
        errors: dict[int, BaseException] = {}
        refused: set[int] = set()  # answered with an error reply: final, never retried nor wrapped
        tried: list[set] = [set() for _ in range(n)]
        pending = list(range(n))
        backoff = Backoff(self.retry, random.Random(self._rng.getrandbits(64)))
        deadline = None if self.retry.deadline_s is None else self.clock() + self.retry.deadline_s
        with self._lock:
            self._counts["requests"] += n
        for _ in range(n):
            self.budget.deposit()
        for attempt in range(1, self.retry.max_attempts + 1):
            by_member: dict[str, list[int]] = {}
            permits: dict[int, Any] = {}
            with self._lock:
                for i in pending:
                    try:
                        member, permits[i] = self._choose(None if keys is None else keys[i], tried[i])
                    except NoReplicaAvailableError as e:
                        errors[i] = e
                        continue
                    tried[i].add(member)
                    by_member.setdefault(member, []).append(i)
            started = self.clock()
            refs = {}
            for member, idx in by_member.items():
                try:
                    refs[member] = self._handle(member).request_batch.remote(
                        self.src, codec.encode(tuple(payloads[i] for i in idx)))
                except ActorUnavailableError as e:
                    refs[member] = e
            live = [r for r in refs.values() if not isinstance(r, BaseException)]
            ready, _ = ray.wait(live, num_returns=len(live), timeout=self.timeout_s) if live else ([], [])
            done = set(ready)
            for member, ref in refs.items():
                outcome = self._outcome(member, ref, done)
                elapsed = self.clock() - started
                for pos, i in enumerate(by_member[member]):
                    if isinstance(outcome, BaseException):
                        self._finish(member, permits[i], elapsed, outcome)
                        errors[i] = outcome
                        continue
                    reply: Reply = outcome[pos]
                    self._finish(member, permits[i], elapsed, None)
                    if reply.error is not None:  # not ok: the replica's own error, of its own class (see error_record)
                        errors[i] = reply.error.exception(f"{self.group}/{member}")
                        refused.add(i)  # refused by the service: final, never retried
                    else:
                        results[i] = reply.payload
                        errors.pop(i, None)
            pending = [i for i in pending if i in errors and i not in refused
                       and self.retry.is_retryable(errors[i])]
            if not pending or attempt == self.retry.max_attempts:
                break
            delay = next(backoff, 0.0)
            if deadline is not None and self.clock() + delay > deadline:
                break
            still = []
            for i in pending:
                if self.budget.try_withdraw():
                    still.append(i)
                else:
                    errors[i] = RetryBudgetExhaustedError(
                        f"request {i}: retry budget spent after {attempt} attempts", attempt, errors[i])
            with self._lock:
                self._counts["retries"] += len(still)
            pending = still
            if not pending:
                break
            if delay:
                time.sleep(delay)
        for i, err in list(errors.items()):
            if i not in refused and not isinstance(err, RetriesExhaustedError):
                errors[i] = RetriesExhaustedError(
                    f"request {i} failed after {len(tried[i])} attempts: {err}", len(tried[i]), err)
        with self._lock:
            self._counts["failed"] += len(errors)
        if errors and not return_exceptions:
            raise errors[min(errors)]
        for i, err in errors.items():
            results[i] = err
        return results

    def _choose(self, key, tried: set) -> tuple[str, Any]:
        """Pick a replica whose breaker permits the call, preferring ones not tried yet."""
        now = self.clock()
        refused: set = set()
        for exclude_tried in (True, False):
            while True:
                exclude = frozenset(refused | (tried if exclude_tried else set()))
                try:
                    member = self.core.begin(key, now_s=now, exclude=exclude)
                except NoReplicaAvailableError:
                    break
                try:
                    return member, self.breakers[member].acquire()
                except CallNotPermittedError:  # its breaker is open (or half-open and full): skip it this time
                    self.core.cancel(member)  # no call was made: nothing to learn
                    refused.add(member)
        raise NoReplicaAvailableError(
            f"no replica of {self.group!r} may take the request (breakers open: {sorted(refused)})")

    def _outcome(self, member: str, ref, done: set):
        import ray

        if isinstance(ref, BaseException):
            return ref
        if ref not in done:
            ray.cancel(ref)
            return CallTimeoutError(f"{self.group}/{member} did not answer within {self.timeout_s}s")
        try:
            replies = codec.decode(ray.get(ref), tuple)
        except ray.exceptions.RayActorError as e:
            self._handles.pop(member, None)  # look it up again: it may be restarted
            return ActorUnavailableError(f"{self.group}/{member} died: {type(e).__name__}")
        except ray.exceptions.RayTaskError as e:
            return ActorUnavailableError(f"{self.group}/{member} failed the batch: {e}")
        if not all(isinstance(r, Reply) for r in replies):
            return ActorUnavailableError(f"{self.group}/{member} answered with something other than replies")
        return replies

    def _finish(self, member: str, permit, elapsed_s: float, err: BaseException | None) -> None:
        with self._lock:
            breaker = self.breakers[member]
            if err is None:
                breaker.on_success(elapsed_s, permit)
            else:
                breaker.on_error(elapsed_s, err, permit)
            self.core.end(member, err is None, self.clock(), elapsed_s)

    # --- health ----------------------------------------------------------------

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_interval_s):
            try:
                self.check_health()
            except Exception:  # a dead Ray at shutdown must not kill the thread noisily
                if self._stop.is_set():
                    return
                raise

    def check_health(self) -> tuple:
        """One round of health checks: collect answered pings, send new ones, update health marks."""
        import ray

        now = self.clock()
        with self._lock:
            members = list(self.core.replicas)
        # A ping unanswered this long is lost (the network may hold it for good): send another.
        give_up_s = max(self.timeout_s, 3 * self.health_interval_s)
        for name in members:
            ref, sent_s = self._pings.get(name, (None, now))
            if ref is not None:
                ready, _ = ray.wait([ref], timeout=0)
                if not ready:
                    if now - sent_s < give_up_s:
                        continue  # still waiting: the silence itself raises phi
                    ray.cancel(ref)
                    self._pings.pop(name, None)
                    ref = None
            if ref is not None:
                self._pings.pop(name, None)
                try:
                    ray.get(ref)
                    with self._lock:
                        if name in self.membership:
                            self.membership.heartbeat(name, now)
                except ray.exceptions.RayError:
                    self._handles.pop(name, None)
            try:
                self._pings[name] = (self._handle(name).request.remote(self.src, codec.encode(Probe())), now)
            except ActorUnavailableError:
                pass
        with self._lock:
            events = self.membership.tick(now)
            self.core.tick(now)
        return events

    def _on_member_event(self, event) -> None:
        with self._lock:
            if event.node in self.core.replicas:
                self.core.mark_health(event.node, event.new is MemberStatus.HEALTHY)

    # --- reporting and lifecycle -------------------------------------------------

    def stats(self) -> BalancedStats:
        """Balancer, breaker, membership and retry statistics."""
        with self._lock:
            return BalancedStats(
                balancer=self.core.stats(self.clock()),
                breakers={n: b.metrics() for n, b in self.breakers.items()},
                transitions=tuple(self.transitions),
                members=dict(self.membership.snapshot()),
                requests=self._counts["requests"], retries=self._counts["retries"],
                failed=self._counts["failed"], budget=self.budget.stats())

    def close(self) -> None:
        """Stop the health-check thread."""
        self._stop.set()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)
