"""Live reload: configuration keys bound to running components, which change without a restart.

Theory of operation
-------------------
A :class:`LiveConfig` binds a key of the configuration store to *targets*: running components
(a balancer actor, a cache actor: their handle from ``launch``/``connect``, or a
:class:`~ddia_ray.runtime.service.ServiceRef`) or objects in this process (a
:class:`~ddia_ray.balancing.BalancedHandle`, a :class:`~ddia_ray.resilience.CircuitBreaker`, a
:class:`~ddia_ray.caching.CacheAside`). The key holds a component's settings, typed by a schema
(:class:`~ddia_ray.balancing.BalancerSettings`, :class:`~ddia_ray.resilience.BreakerSettings`,
:class:`~ddia_ray.caching.CacheSettings`, or any codec record class). Each target receives every
valid value through one call of its ``reconfigure`` method and applies it while it serves.

* **Start:** the binding reads the key at the current revision ``R``, delivers that value, and
  watches from ``R + 1``: a change between the read and the watch is never missed, and a target
  bound (or added to the binding) after a change still gets the value in force.
* **Validation:** a value becomes settings only through the schema (the record's checks run in
  its constructor). A value that fails them never reaches a target: the targets keep what they
  run, and the refusal is kept in :meth:`Binding.status` and reported to ``on_error``.
* **Delivery, batched:** one delivery thread per :class:`LiveConfig` sends, in each round, the
  newest valid value to every target of every binding that lacks it: all the actor calls of a
  round are in flight together, then their answers are collected. Settings describe the whole
  configuration (a field left out takes its default), so sending only the newest value is
  enough: skipping a value that was superseded before it was sent changes no outcome.
* **Ordering:** a target has at most one call of a binding in flight and never receives an
  older revision after a newer one; each target's applied revision only grows.
* **Failures:** a target whose call failed is reported; the other targets are not held back.
  An unreachable one (dead actor, timeout) is sent the newest value again every
  ``retry_interval_s``; one that refused the value (e.g. a TTL for a cache without one) waits
  for the next value. :meth:`Binding.resync` sends the newest value again to every target
  (after a restart, a component runs its launch settings until then).
* **Absent key:** a key never set, or deleted, changes nothing: targets keep what they run.
* **Atomicity** is each component's: it checks the settings whole, then applies them under its
  own lock, so its requests see the old settings or the new ones, never a mix.

The bookkeeping is a pure core, :class:`~ddia_ray.config.live_state.BindingState` (no thread,
no clock, no I/O); :class:`LiveConfig` drives it from the watch thread and its delivery thread.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Callable

from .. import codec
from .._validate import non_negative, positive
from ..errors import ActorUnavailableError, CallTimeoutError, ConfigError, InvalidArgumentError, MessageDroppedError
from .live_state import BindingState, BindingStatus, TargetFailure, settings_of

__all__ = ["LiveConfig", "Binding", "BindingState", "BindingStatus", "TargetFailure", "Target", "ActorTarget",
           "LocalTarget", "settings_of"]

_log = logging.getLogger(__name__)


# --- targets ---------------------------------------------------------------------------------------


def _unreachable(error: BaseException | None) -> bool:
    """Whether a delivery failed for want of reaching the target (worth retrying), not by its refusal."""
    return isinstance(error, (ActorUnavailableError, CallTimeoutError, MessageDroppedError))


class _Outcome:
    """A delivery under way: ``result(timeout_s)`` returns the target's answer or raises its error."""

    def __init__(self, wait: Callable[[float | None], Any]):
        self._wait = wait

    def result(self, timeout_s: float | None) -> Any:
        return self._wait(timeout_s)


def _done(fn: Callable[[], Any]) -> _Outcome:
    """Run ``fn`` now; an outcome that returns its value or raises its error when asked."""
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - handed to the caller of result(), which reports it
        return _failed(e)
    return _Outcome(lambda _timeout_s: value)


def _failed(error: BaseException) -> _Outcome:
    """An outcome that raises ``error`` when asked."""
    def fail(_timeout_s: float | None) -> Any:
        raise error
    return _Outcome(fail)


class Target(ABC):
    """Something a binding delivers settings to: a running component, or an object in this process."""

    name: str

    @abstractmethod
    def send(self, settings: Any) -> _Outcome:
        """Start delivering ``settings``; never raises (errors come out of the outcome)."""


class ActorTarget(Target):
    """A component's actor: each delivery is one Ray call of its service's ``method`` with the
    settings codec-encoded (an actor decodes and checks them again: its schema is the same record).

    ``target`` is a :class:`~ddia_ray.runtime.service.ServiceRef` or a component handle from
    ``launch``/``connect`` (one service node: a balancer, a cache); ``src`` is the name the
    calls come from, as the component's network sees it.
    """

    def __init__(self, target: Any, method: str = "reconfigure", *, src: str = "config", name: str | None = None):
        from ..runtime.component import ServiceComponent
        from ..runtime.service import ServiceRef

        if isinstance(target, ServiceComponent):
            target = ServiceRef(target.name, target.node, src=src, owner=target.group)
        if not isinstance(target, ServiceRef):
            raise InvalidArgumentError(f"an actor target is a ServiceRef or a component handle, "
                                       f"got {type(target).__name__}")
        if not isinstance(method, str) or not method:
            raise InvalidArgumentError(f"method must be a service method's name, got {method!r}")
        self.ref = target
        self.method = method
        self.name = name or target.where

    def send(self, settings: Any) -> _Outcome:
        from ..runtime.calls import get_result
        from ..runtime.service import unwrap

        ref = self.ref
        try:
            call = ref.handle().call.remote(ref.src, self.method, (codec.encode(settings),))
        except Exception as e:  # noqa: BLE001 - reported through the outcome
            self.ref = ref.as_src(ref.src)  # look the actor up again next time: it may be restarted
            return _failed(e)

        def wait(timeout_s: float | None) -> Any:
            try:
                return unwrap(get_result(call, timeout_s, ref.where), ref.where)
            except Exception:
                self.ref = ref.as_src(ref.src)
                raise
        return _Outcome(wait)


class LocalTarget(Target):
    """A callable in this process, called with the settings (e.g. ``breaker.reconfigure``)."""

    def __init__(self, apply: Callable[[Any], Any], name: str | None = None):
        if not callable(apply):
            raise InvalidArgumentError(f"a local target is a callable, got {type(apply).__name__}")
        self.apply = apply
        self.name = name or str(getattr(apply, "__qualname__", type(apply).__name__))

    def send(self, settings: Any) -> _Outcome:
        return _done(lambda: self.apply(settings))


def _target_of(obj: Any, method: str, src: str) -> Target:
    from ..runtime.component import ServiceComponent
    from ..runtime.service import ServiceRef

    if isinstance(obj, Target):
        return obj
    if isinstance(obj, (ServiceRef, ServiceComponent)):
        return ActorTarget(obj, method, src=src)
    bound = getattr(obj, method, None)
    if callable(bound):
        label = getattr(obj, "name", None)
        return LocalTarget(bound, f"{type(obj).__name__}:{label if isinstance(label, str) else hex(id(obj))}")
    if callable(obj):
        return LocalTarget(obj)
    raise InvalidArgumentError(f"cannot deliver settings to a {type(obj).__name__}: give a component handle, a "
                               f"ServiceRef, an object with {method}(), a callable or a Target")


# --- the driver ----------------------------------------------------------------------------------------


class Binding:
    """One key bound to its targets (from :meth:`LiveConfig.bind`)."""

    def __init__(self, live: "LiveConfig", key: str, schema: type, targets: Sequence[Target]):
        self._live = live
        self.key = key
        self.schema = schema
        self.state = BindingState(key, schema, retry_interval_s=live.retry_interval_s)
        self._targets: dict[str, Target] = {}
        self._watch: Any = None
        self._watch_error: BaseException | None = None  # why the watch stopped; cleared when it runs again
        self._restart_at_s = 0.0
        self.cancelled = False
        for t in targets:
            self._add(t)

    def _add(self, target: Target) -> None:
        name, n = target.name, 1
        while name in self._targets:
            n += 1
            name = f"{target.name}#{n}"
        target.name = name
        self.state.add_target(name)
        self._targets[name] = target

    def _start(self) -> None:
        """Read the key at the current revision, offer it, watch from the next revision (no gap)."""
        client = self._live.client
        revision = client.revision()
        kv = client.get(self.key, revision=revision) if revision else None  # revision 0: nothing written yet
        with self._live._cond:
            error = None if kv is None else self.state.offer(kv.mod_revision, kv.value)
            self._watch_error = None
            self._live._cond.notify_all()
        if error is not None:
            self._live._report(self.key, error)
        self._watch = client.watch(self.key, self._on_events, start_revision=revision + 1,
                                   on_error=self._on_watch_error)

    def _on_events(self, events: list) -> None:
        # On the client's watch thread: record and wake the delivery thread, never block on targets.
        refused: list[BaseException | None] = []
        try:
            with self._live._cond:
                for ev in events:
                    if ev.kv.key == self.key:
                        refused.append(self.state.offer(ev.kv.mod_revision, ev.kv.value, deleted=ev.kind == "delete"))
                self._live._cond.notify_all()
        except Exception as e:  # noqa: BLE001 - a raising callback would stop the watch: report instead
            refused.append(e)
        for error in refused:
            if error is not None:
                self._live._report(self.key, error)

    def _on_watch_error(self, error: BaseException) -> None:
        # The watch stopped (e.g. its revision was compacted while it lagged): read and watch again.
        with self._live._cond:
            self._watch_error = error
            self._live._cond.notify_all()
        self._live._report(self.key, error)

    def add_target(self, target: Any, *, method: str = "reconfigure") -> str:
        """Deliver to ``target`` too, starting with the value in force now; returns its name."""
        t = _target_of(target, method, self._live.src)
        with self._live._cond:
            self._add(t)
            self._live._cond.notify_all()
        return t.name

    def remove_target(self, name: str) -> None:
        """Stop delivering to the target ``name`` (it keeps what it runs)."""
        with self._live._cond:
            self.state.remove_target(name)
            self._targets.pop(name, None)

    def resync(self) -> None:
        """Send the newest valid value to every target again (idempotent for the components)."""
        with self._live._cond:
            self.state.resync()
            self._live._cond.notify_all()

    def status(self) -> BindingStatus:
        """An immutable snapshot (see :class:`BindingStatus`)."""
        with self._live._cond:
            return self.state.status()

    def wait_applied(self, revision: int | None = None, *, timeout_s: float = 30.0) -> BindingStatus:
        """Wait until every target runs the value of ``revision`` (what ``put`` returned) or a newer one.

        ``None`` waits for the newest valid value seen. Raises the refusal of that value: the
        :class:`~ddia_ray.errors.InvalidConfigValueError` of the schema, or the error a target refused
        it with; and :class:`~ddia_ray.errors.CallTimeoutError` (naming the failing targets) after
        ``timeout_s``.
        """
        deadline = time.monotonic() + positive("timeout_s", timeout_s)
        with self._live._cond:
            while True:
                wanted = self.state.revision if revision is None else revision
                status = self.state.status()
                if all(r >= wanted for r in status.applied.values()):
                    return status
                refused = self.state.refusal(wanted)
                if refused is not None:
                    raise refused
                left = deadline - time.monotonic()
                if left <= 0:
                    failing = {n: f"{type(f.error).__name__}: {f.error}" for n, f in status.failures.items()}
                    raise CallTimeoutError(f"{self.key!r}: targets still behind revision {wanted} after "
                                           f"{timeout_s}s (applied {dict(status.applied)}; failures {failing})")
                self._live._cond.wait(min(left, 0.5))

    def cancel(self) -> None:
        """Stop watching and delivering; the targets keep what they run."""
        with self._live._cond:
            self.cancelled = True
            self._live._bindings.discard(self)
        if self._watch is not None:
            self._watch.cancel()


class LiveConfig:
    """Binds keys of a configuration store to running components (see the module docstring).

    ``client`` is a :class:`~ddia_ray.config.ConfigClient` (or anything with its ``revision``,
    ``get`` and ``watch``). ``timeout_s`` bounds each delivery call; a failed target is retried
    every ``retry_interval_s``; ``on_error(key, error)`` hears every refusal and failure
    (a :class:`TargetFailure` for a delivery), which are also logged. A context manager.
    """

    def __init__(self, client: Any, *, timeout_s: float = 30.0, retry_interval_s: float = 1.0, src: str = "config",
                 on_error: Callable[[str, Any], Any] | None = None, clock: Callable[[], float] = time.monotonic):
        for method in ("revision", "get", "watch"):
            if not callable(getattr(client, method, None)):
                raise InvalidArgumentError(f"client must offer {method}() (a ConfigClient)")
        if on_error is not None and not callable(on_error):
            raise InvalidArgumentError("on_error must be callable")
        self.client = client
        self.timeout_s = positive("timeout_s", timeout_s)
        self.retry_interval_s = non_negative("retry_interval_s", retry_interval_s)
        self.src = src
        self._on_error = on_error
        self._clock = clock
        # One lock for every binding's state: the watch threads write it, the delivery thread and waiters read it.
        self._cond = threading.Condition()
        self._bindings: set[Binding] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._deliver_forever, name="ddia-ray-live-config", daemon=True)
        self._thread.start()

    # --- binding ----------------------------------------------------------------------------------

    def bind(self, key: str, schema: type, targets: Any, *, method: str = "reconfigure",
             wait: bool = True) -> Binding:
        """Deliver the settings at ``key`` (typed by ``schema``) to ``targets`` now and on every change.

        ``targets`` is one target or a sequence: component handles or ServiceRefs (their service's
        ``method`` is called), objects with a ``method``, callables, or :class:`Target` s. With
        ``wait``, returns once the value in force was delivered (or its delivery failed) everywhere.
        """
        if self._closed:
            raise ConfigError("this LiveConfig is closed")
        many = targets if isinstance(targets, (list, tuple)) else [targets]
        binding = Binding(self, key, schema, [_target_of(t, method, self.src) for t in many])
        binding._start()
        with self._cond:
            self._bindings.add(binding)
            self._cond.notify_all()
        if wait:
            deadline = time.monotonic() + self.timeout_s * 2
            with self._cond:
                while not binding.state.settled(binding.state.revision) and time.monotonic() < deadline:
                    self._cond.wait(0.5)
        return binding

    def bind_balancer(self, key: str, balancers: Any, **options: Any) -> Binding:
        """Bind ``key`` (:class:`~ddia_ray.balancing.BalancerSettings`: picker, weights) to balancers."""
        from ..balancing.settings import BalancerSettings

        return self.bind(key, BalancerSettings, balancers, method="reconfigure", **options)

    def bind_breakers(self, key: str, targets: Any, **options: Any) -> Binding:
        """Bind ``key`` (:class:`~ddia_ray.resilience.BreakerSettings`) to the breakers of balancers
        (actors or handles: all their replicas' breakers) or to single :class:`CircuitBreaker` s."""
        from ..resilience import BreakerSettings, CircuitBreaker

        many = targets if isinstance(targets, (list, tuple)) else [targets]
        wrapped = [LocalTarget(t.reconfigure, f"breaker:{t.name}") if isinstance(t, CircuitBreaker) else t
                   for t in many]
        return self.bind(key, BreakerSettings, wrapped, method="reconfigure_breakers", **options)

    def bind_cache(self, key: str, caches: Any, **options: Any) -> Binding:
        """Bind ``key`` (:class:`~ddia_ray.caching.CacheSettings`: capacity, default TTL) to caches."""
        from ..caching.settings import CacheSettings

        return self.bind(key, CacheSettings, caches, method="reconfigure", **options)

    def bindings(self) -> tuple[Binding, ...]:
        """The bindings still active."""
        with self._cond:
            return tuple(self._bindings)

    def close(self) -> None:
        """Cancel every binding and stop the delivery thread (the components keep what they run)."""
        for binding in self.bindings():
            binding.cancel()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout_s + 5)

    def __enter__(self) -> "LiveConfig":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- delivery ---------------------------------------------------------------------------------

    def _report(self, key: str, error: Any) -> None:
        _log.warning("live config %r: %s", key, error)
        if self._on_error is not None:
            try:
                self._on_error(key, error)
            except Exception:  # noqa: BLE001 - a broken observer must not stop the deliveries
                _log.exception("on_error of live config %r failed", key)

    def _deliver_forever(self) -> None:
        while True:
            restart: list[Binding] = []
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = self._clock()
                    broken = [b for b in self._bindings if b._watch_error is not None]
                    restart = [b for b in broken if now >= b._restart_at_s]
                    jobs = [(b, name, revision, settings) for b in self._bindings
                            for name, revision, settings in b.state.plan(now)]
                    if jobs or restart:
                        break
                    wake = [t for t in (b.state.next_retry_s() for b in self._bindings) if t is not None]
                    wake += [b._restart_at_s for b in broken]
                    self._cond.wait(None if not wake else max(0.001, min(wake) - now))
            for binding in restart:
                try:
                    binding._start()
                except Exception as e:  # noqa: BLE001 - the store may be unreachable: try again later
                    binding._restart_at_s = self._clock() + self.retry_interval_s
                    self._report(binding.key, e)
            self._deliver(jobs)

    def _deliver(self, jobs: list[tuple[Binding, str, int, Any]]) -> None:
        """One round: every call in flight at once, then every answer collected."""
        sent = [(b, name, revision, b._targets[name].send(settings)) for b, name, revision, settings in jobs
                if name in b._targets]
        deadline = time.monotonic() + self.timeout_s
        outcomes: list[tuple[Binding, str, int, BaseException | None]] = []
        for b, name, revision, outcome in sent:
            try:
                outcome.result(max(0.0, deadline - time.monotonic()))
                outcomes.append((b, name, revision, None))
            except Exception as e:  # noqa: BLE001 - recorded for this target only, reported below
                outcomes.append((b, name, revision, e))
        failures = []
        with self._cond:
            now = self._clock()
            for b, name, revision, error in outcomes:
                failure = b.state.done(name, revision, error, now, retry=_unreachable(error))
                if failure is not None:
                    failures.append((b.key, failure))
            self._cond.notify_all()
        for key, failure in failures:
            self._report(key, failure)
