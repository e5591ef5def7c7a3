"""An event store in one process: the replicas' own state and procedures, without Ray.

Theory of operation
-------------------
:class:`LocalBackend` keeps the rows in a replica's :class:`~ddia_ray.replication.state.MapState`
and runs each append through the same :func:`~ddia_ray.replication.state.decide` and the same
registered procedures (:mod:`.procedures`) as a replica does, one log entry per call, and the
consumer groups through the same leader service (:mod:`.group_service`), saved after each call. So an
:class:`~.client.EventStoreClient` over it behaves as one over a replicated store, minus the
network: the model-based tests, the aggregate and projection tests and the notebooks' first
steps use it, and what they find holds for the replicated store's decisions too.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from .. import codec
from ..replication.leader_services import LeaderServices, ReplServiceCall
from ..replication.procedures import call_op, result_or_raise, run_query
from ..replication.state import MapState
from . import procedures as _procedures  # registers the event store's procedures in this process

__all__ = ["LocalBackend"]

assert _procedures  # imported for its registrations


class LocalBackend:
    """The event store's rows in memory, decided as a replica decides them (thread-safe)."""

    def __init__(self) -> None:
        self.state = MapState()
        self._lock = threading.Lock()
        self.services = LeaderServices()  # the leader services (consumer groups), one leader for ever
        self.services.reset(1)

    def call_nowait(self, name: str, args: Any, *, checked: bool = False) -> concurrent.futures.Future:
        """Run procedure ``name`` as one log entry; the future holds its result or its refusal
        (``checked``: as :func:`~ddia_ray.replication.procedures.call_op` takes it)."""
        with self._lock:
            ops, results = self.state.decide((call_op(name, args, checked=checked),))
            self.state.apply(self.state.applied + 1, ops)
        return _answered(results[0])

    def service_nowait(self, service: str, method: str, args: Any) -> concurrent.futures.Future:
        """Call ``method`` of leader service ``service``; its effects are saved at once (one log
        entry per call that changed anything, as if every call were durable). The future holds its
        result or its refusal."""
        with self._lock:
            result, _ = self.services.call(ReplServiceCall(service, method, codec.encode(args)), self.state)
            ops = self.services.checkpoint(0)
            if ops:
                self.state.apply(self.state.applied + 1, ops)
        return _answered(result)

    def query_nowait(self, name: str, args: Any) -> concurrent.futures.Future:
        """Run query ``name`` against the rows; the future holds its result or its refusal."""
        with self._lock:
            answer = run_query(name, codec.encode(args), self.state)
        return _answered(answer)

    def close(self) -> None:
        """Nothing to release (the rows live as long as this object)."""


def _answered(result: Any) -> concurrent.futures.Future:
    """A finished future: ``result``, or the exception it is the record of (the caller's refusal)."""
    fut: concurrent.futures.Future = concurrent.futures.Future()
    try:
        fut.set_result(result_or_raise(result))
    except Exception as e:  # noqa: BLE001 - a refusal of the procedure, query or service: the caller's
        fut.set_exception(e)
    return fut
