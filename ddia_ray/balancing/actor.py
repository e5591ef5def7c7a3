"""The balancer as an actor: a :class:`~.balancer.BalancedHandle` many clients share.

Theory of operation
-------------------
:class:`BalancerActor` runs a :class:`~.balancer.BalancedHandle` as a runtime
service (:class:`BalancerService`), hosted by the same shell as every ddia-ray
actor, so many clients share one set of breakers, health checks and
statistics, and the nemesis partitions, pauses, kills and restarts the
balancer like any node. The balancer calls its replicas as its own node id,
so a partition of the replicas' group that names it (or ``"*"``) cuts it off.
A restarted balancer starts with fresh breakers and statistics.

Its picker, weights and breaker thresholds change while it serves
(``reconfigure`` and ``reconfigure_breakers``, with settings records that
travel as codec bytes; :mod:`ddia_ray.config.live` drives them from watched
configuration keys). A restarted balancer is back to its launch settings
until they are sent again.

Its spec travels as plain data (so another driver can :meth:`connect` and a
restart can rebuild it): the breaker and retry settings are their plain
fields; callables and exception classes belong to a
:class:`~.balancer.BalancedHandle` built in the caller's own process.

:class:`BalancerClient` sends batches and gets each request's answer or its
error as a typed :class:`~ddia_ray.error_record.ErrorRecord` inside a
:class:`~ddia_ray.runtime.core.Reply`, never as text; its futures let many
batches be in flight at once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
from typing import Any, Mapping, Sequence

from .. import codec
from .._validate import positive
from ..error_record import ErrorRecord
from ..errors import ActorUnavailableError, CodecError, InvalidArgumentError
from ..resilience import BreakerSettings, CircuitBreakerConfig, RetryPolicy
from ..runtime.component import ServiceComponent
from ..runtime.core import Reply
from ..runtime.service import ServiceRef, unwrap
from .balancer import _DEFAULT_RETRY, BalancedHandle
from .settings import BalancerSettings

__all__ = ["BalancerActor", "BalancerClient", "BalancerService"]


def _as_data(what: str, config: Any, cls: type) -> dict | None:
    """The scalar fields of a config dataclass, for a spec that must travel as plain data."""
    if config is None:
        return None
    if not isinstance(config, cls):
        raise InvalidArgumentError(f"{what} must be a {cls.__name__}, got {type(config).__name__}")
    default = cls()
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        if isinstance(value, (str, int, float, bool, type(None))):
            out[f.name] = value
        elif value != getattr(default, f.name):
            raise InvalidArgumentError(
                f"{what}.{f.name} is not plain data: a balancer actor is built from a spec that travels "
                f"as data, so use a BalancedHandle in your process for callables and exception classes")
    return out


class BalancerService:
    """The service a balancer actor's shell hosts: one :class:`BalancedHandle` shared by many clients.

    Built as ``BalancerService(node_id, group=..., replicas=..., ...)``; the handle calls the
    replicas as ``node_id``, so a partition that names the balancer cuts its calls.
    """

    component = "balancer"
    methods = ("ping", "call_batch", "add_replica", "remove_replica", "stats", "reconfigure",
               "reconfigure_breakers", "settings")

    def __init__(self, node_id: str, *, group: str, replicas, breaker: dict | None = None,
                 retry: dict | None = None, records: tuple = (), **kwargs):
        # The balancer decodes the requests it forwards, so the modules defining their record types
        # must be imported here. Only ddia_ray's own modules: a spec names code, and code is ours.
        for module in records:
            if not (isinstance(module, str) and module.startswith("ddia_ray.")):
                raise InvalidArgumentError(f"records names ddia_ray modules only, got {module!r}")
            importlib.import_module(module)
        if breaker is not None:
            kwargs["breaker"] = CircuitBreakerConfig(**breaker)
        if retry is not None:
            kwargs["retry"] = dataclasses.replace(_DEFAULT_RETRY, **retry)
        self.node_id = node_id
        self.handle = BalancedHandle(group, replicas, src=node_id, **kwargs)

    def ping(self) -> str:
        """Liveness probe: the node id."""
        return self.node_id

    def call_batch(self, payloads: bytes) -> bytes:
        """Encoded payloads in; encoded :class:`~ddia_ray.runtime.core.Reply` records out, in order.

        A failed request's reply carries its error as a record, of its own class (never text).
        """
        results = self.handle.call_batch(codec.decode(payloads, tuple), return_exceptions=True)
        return codec.encode(tuple(
            Reply(i, None, False, ErrorRecord.of(r, self.node_id)) if isinstance(r, BaseException) else Reply(i, r)
            for i, r in enumerate(results)))

    def add_replica(self, name: str, weight: int | None = None) -> None:
        """Route to ``name`` from now on (default weight: the settings')."""
        self.handle.add_replica(name, weight)

    def remove_replica(self, name: str) -> None:
        """Stop routing new requests to ``name``."""
        self.handle.remove_replica(name)

    def reconfigure(self, settings: bytes) -> bytes:
        """Encoded :class:`~ddia_ray.balancing.settings.BalancerSettings` in, applied while serving; the
        encoded settings in force out."""
        return codec.encode(self.handle.reconfigure(codec.decode(settings, BalancerSettings)))

    def reconfigure_breakers(self, settings: bytes) -> bytes:
        """Encoded :class:`~ddia_ray.resilience.BreakerSettings` in, given to every replica's breaker
        (states kept); the encoded settings in force out."""
        return codec.encode(self.handle.reconfigure_breakers(codec.decode(settings, BreakerSettings)))

    def settings(self) -> bytes:
        """The encoded ``(BalancerSettings, BreakerSettings)`` in force."""
        return codec.encode((self.handle.settings(), self.handle.breaker_settings()))

    def stats(self) -> dict:
        """Plain-data statistics (per replica, breakers, members, totals)."""
        s = self.handle.stats()
        return {
            "replicas": {r.name: {"requests": r.requests, "failures": r.failures, "in_flight": r.in_flight,
                                  "ejected": r.ejected, "healthy": r.healthy, "weight": r.weight}
                         for r in s.balancer.replicas},
            "breakers": {n: m.state.value for n, m in s.breakers.items()},
            "transitions": [(t.breaker, t.from_state, t.to_state, t.reason) for t in s.transitions],
            "members": {n: m.status.value for n, m in s.members.items()},
            "requests": s.requests, "retries": s.retries, "failed": s.failed,
        }

    def close(self) -> None:
        """Stop health checks (the shell's clean shutdown)."""
        self.handle.close()


class BalancerActor(ServiceComponent):
    """A running balancer actor in front of a node group; start it with :meth:`launch`."""

    factories = ("ddia_ray.balancing.actor:BalancerService",)

    @classmethod
    def launch(cls, group: Any, replicas, *, name: str | None = None, threads: int = 32, detached: bool = False,
               config=None, breaker: CircuitBreakerConfig | None = None, retry: RetryPolicy | None = None,
               actor_options: Mapping[str, Any] | None = None, **kwargs) -> "BalancerActor":
        """Start the balancer ``name`` (default ``"<group>-balancer"``) over ``replicas`` of ``group``.

        ``group`` is a group's name or anything with a ``name`` (a NodeGroup, a component);
        ``kwargs`` are :class:`BalancedHandle`'s plain settings (``picker``, ``timeout_s``,
        ``health_interval_s``, ``seed``), and ``records``: the ``ddia_ray`` modules defining the
        request records it forwards, when they are not the runtime's own. ``breaker`` and ``retry``
        travel as data: their plain fields only (a retry always retries the network's errors, as the default does).
        """
        group_name = group if isinstance(group, str) else getattr(group, "name", None)
        if not isinstance(group_name, str) or not group_name:
            raise InvalidArgumentError(f"group must be a group's name or have one, got {type(group).__name__}")
        replicas = dict(replicas) if isinstance(replicas, Mapping) else list(replicas)
        options = {"group": group_name, "replicas": replicas, "breaker": _as_data("breaker", breaker,
                   CircuitBreakerConfig), "retry": _as_data("retry", retry, RetryPolicy), **kwargs}
        return cls._launch_service(name or f"{group_name}-balancer", options, threads, detached=detached,
                                   config=config, actor_options=actor_options)

    def client(self, *, src: str = "client", **options) -> "BalancerClient":
        """A new client of the balancer (see :class:`BalancerClient` for the options: ``timeout_s``), calling
        as ``src``."""
        return BalancerClient(self._ref(src), **options)


class BalancerClient:
    """Sends batches through a balancer actor; thread-safe."""

    def __init__(self, target: ServiceRef, *, timeout_s: float = 60.0):
        if not isinstance(target, ServiceRef):
            raise InvalidArgumentError(f"a BalancerClient calls a ServiceRef, got {type(target).__name__}")
        self.target = target
        self.timeout_s = positive("timeout_s", timeout_s)

    def _results(self, encoded: bytes, return_exceptions: bool) -> list:
        out = []
        for r in codec.decode(encoded, tuple):
            if not isinstance(r, Reply):
                raise CodecError(f"{self.target.where} answered with {type(r).__name__}, not a Reply")
            value = r.payload if r.error is None else r.error.exception(self.target.where)  # not ok: its error
            if not r.ok and not return_exceptions:
                raise value
            out.append(value)
        return out

    def call_batch(self, payloads: Sequence[Any], *, return_exceptions: bool = False) -> list:
        """Send ``payloads`` through the balancer in one call; results in order.

        With ``return_exceptions`` a failed request's slot holds its exception; otherwise the
        first failure is raised, of its own class.
        """
        encoded = self.target.call("call_batch", codec.encode(tuple(payloads)), timeout_s=self.timeout_s)
        return self._results(encoded, return_exceptions)

    def call(self, payload: Any) -> Any:
        """Send one request; its answer, or its error raised."""
        return self.call_batch([payload])[0]

    def call_batch_future(self, payloads: Sequence[Any], *,
                          return_exceptions: bool = True) -> concurrent.futures.Future:
        """:meth:`call_batch` without waiting: a future of the results (many may be in flight)."""
        ref = self.target.handle().call.remote(self.target.src, "call_batch", (codec.encode(tuple(payloads)),))
        out: concurrent.futures.Future = concurrent.futures.Future()

        def done(fut: concurrent.futures.Future) -> None:
            try:
                out.set_result(self._results(unwrap(fut.result(), self.target.where), return_exceptions))
            except BaseException as e:  # noqa: BLE001 - every failure reaches the waiter, typed
                out.set_exception(_ray_error(e, self.target.where))

        ref.future().add_done_callback(done)
        return out

    def add_replica(self, name: str, weight: int | None = None) -> None:
        """Have the balancer route to ``name`` (default weight: the settings')."""
        self.target.call("add_replica", name, weight, timeout_s=self.timeout_s)

    def remove_replica(self, name: str) -> None:
        """Have the balancer stop routing new requests to ``name``."""
        self.target.call("remove_replica", name, timeout_s=self.timeout_s)

    def stats(self) -> dict:
        """The balancer's plain-data statistics."""
        return self.target.call("stats", timeout_s=self.timeout_s)

    def reconfigure(self, settings: BalancerSettings) -> BalancerSettings:
        """Switch the balancer's picker and weights while it serves; returns the settings in force."""
        if not isinstance(settings, BalancerSettings):
            raise InvalidArgumentError(f"settings must be BalancerSettings, got {type(settings).__name__}")
        return codec.decode(self.target.call("reconfigure", codec.encode(settings), timeout_s=self.timeout_s),
                            BalancerSettings)

    def reconfigure_breakers(self, settings: BreakerSettings) -> BreakerSettings:
        """Give the balancer's breakers new thresholds while it serves; returns the settings in force."""
        if not isinstance(settings, BreakerSettings):
            raise InvalidArgumentError(f"settings must be BreakerSettings, got {type(settings).__name__}")
        return codec.decode(self.target.call("reconfigure_breakers", codec.encode(settings),
                                             timeout_s=self.timeout_s), BreakerSettings)

    def settings(self) -> tuple[BalancerSettings, BreakerSettings]:
        """The balancer's settings and its breakers' settings, in force."""
        balancer, breakers = codec.decode(self.target.call("settings", timeout_s=self.timeout_s), tuple)
        return balancer, breakers


def _ray_error(e: BaseException, where: str) -> BaseException:
    """A Ray failure of a future as the ddia-ray error a blocking call would raise."""
    import ray

    if isinstance(e, ray.exceptions.RayActorError):
        return ActorUnavailableError(f"{where} is dead or unreachable: {type(e).__name__}")
    if isinstance(e, ray.exceptions.RayTaskError):
        return e.as_instanceof_cause()
    return e
