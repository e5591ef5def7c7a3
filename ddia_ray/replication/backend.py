"""What the clients of a service built on procedures stand on: a backend, and their common part.

Theory of operation
-------------------
A service built on the replicated store (the event store, the schema registry,
the configuration store) turns every request of its client into one procedure
call, decided in the log (:mod:`.procedures`), or one query, read on one
replica. Its client does not care where they run: it talks to a *backend*
with three methods, ``call_nowait(name, args)``, ``query_nowait(name, args)`` and
``service_nowait(service, method, args)`` (a leader service's call,
:mod:`.leader_services`), each returning a future that holds the answer or raises
the refusal.

* :class:`ProcedureBackend` is the backend on Ray: it sends both through a
  :class:`~.client.ReplicatedClient`, so concurrent calls share the client's
  batches (each call stays atomic on its own: one refusal does not touch the
  other calls packed into the same log entry). A service with more to reach
  (the configuration store's lessor) subclasses it.
* A one-process backend (``LocalBackend`` of each service) runs the same
  procedures over a replica's in-memory state, for tests and notebooks.

:class:`ProcedureClient` is what every such client shares: the backend, the
timeout a blocking call waits (a call that takes longer raises
:class:`~ddia_ray.errors.CallTimeoutError` with the service's own advice on
what an unknown outcome means), ``call``/``query`` by name, and ``close`` as a
context manager.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, ClassVar, TypeVar

from .._validate import positive
from ..errors import CallTimeoutError
from .procedures import call_op, result_or_raise

__all__ = ["ProcedureBackend", "ProcedureClient"]

_C = TypeVar("_C", bound="ProcedureClient")


class ProcedureBackend:
    """Procedure calls and queries through a :class:`~ddia_ray.replication.ReplicatedClient`
    (``client``); ``read``: the read mode of queries (None: the client's own)."""

    def __init__(self, client: Any, *, read: str | None = None) -> None:
        self.client = client
        self.read = read

    def call_nowait(self, name: str, args: Any, *, checked: bool = False) -> concurrent.futures.Future:
        """Run procedure ``name`` in the store's log; the future holds its result or its refusal
        (``checked``: as :func:`~.procedures.call_op` takes it)."""
        inner = self.client.submit_ops((call_op(name, args, checked=checked),), single=True)
        outer: concurrent.futures.Future = concurrent.futures.Future()

        def done(f: concurrent.futures.Future) -> None:
            try:
                outer.set_result(result_or_raise(f.result()))
            except BaseException as e:  # noqa: BLE001 - the refusal or the call's failure: the caller's
                outer.set_exception(e)

        inner.add_done_callback(done)
        return outer

    def query_nowait(self, name: str, args: Any, *, wait_s: float = 0.0,
                     read: str | None = None) -> concurrent.futures.Future:
        """Run query ``name`` on one replica (``read``, else the backend's read mode); with ``wait_s``
        a blocking query (an empty answer is held by the replica until a write changes it, or
        ``wait_s`` passes). The future holds its result or its refusal."""
        return self.client.query_nowait(name, args, read=read or self.read, wait_s=wait_s)

    def service_nowait(self, service: str, method: str, args: Any) -> concurrent.futures.Future:
        """Call ``method`` of leader service ``service`` on the leader (:mod:`.leader_services`); the
        future holds its result or its refusal."""
        return self.client.service_nowait(service, method, args)

    def service_direct(self, service: str, method: str, args: Any, timeout_s: float | None = None) -> tuple[bool, Any]:
        """Call a leader service from the calling thread on its own link to the leader:
        ``(True, answer)``, or ``(False, None)`` to take :meth:`service_nowait`
        (:meth:`~.client.ReplicatedClient.service_direct`)."""
        return self.client.service_direct(service, method, args, timeout_s=timeout_s)

    def query_direct(self, name: str, args: Any, timeout_s: float | None = None) -> tuple[bool, Any]:
        """Run query ``name`` from the calling thread on its own link to the leader, when the read
        mode allows it: ``(True, answer)``, or ``(False, None)`` to take :meth:`query_nowait`
        (:meth:`~.client.ReplicatedClient.query_direct`)."""
        return self.client.query_direct(name, args, read=self.read, timeout_s=timeout_s)

    def close(self) -> None:
        """Close the replicated store's client."""
        self.client.close()


class ProcedureClient:
    """The part every client of a service built on procedures shares (see the module docstring).

    ``backend``: where procedures and queries run; ``timeout_s``: how long a blocking call waits
    for its answer. A context manager: leaving it calls :meth:`close`.
    """

    #: The text of the :class:`~ddia_ray.errors.CallTimeoutError` a late answer raises: which
    #: service did not answer, and what the caller can do about a write whose outcome is unknown
    #: (``{timeout_s}`` stands for the client's timeout).
    timeout_message: ClassVar[str] = "the service did not answer within {timeout_s}s; a write's outcome is unknown"

    def __init__(self, backend: Any, *, timeout_s: float = 30.0) -> None:
        self.backend = backend
        self.timeout_s = positive("timeout_s", timeout_s)

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's client."""
        self.backend.close()

    def wait(self, fut: concurrent.futures.Future, timeout_s: float | None = None) -> Any:
        """The answer a ``*_nowait`` call's future holds, waiting up to ``timeout_s`` (default: the
        client's); :class:`~ddia_ray.errors.CallTimeoutError` when it does not come in time."""
        try:
            return fut.result(self.timeout_s if timeout_s is None else timeout_s)
        except concurrent.futures.TimeoutError:
            raise CallTimeoutError(self.timeout_message.format(timeout_s=self.timeout_s)) from None

    def call(self, name: str, args: Any, *, timeout_s: float | None = None) -> Any:
        """Run procedure ``name`` in the store's log and return its answer (raising the error it
        refused with): for the parts built on the service's own procedures."""
        return self.wait(self.backend.call_nowait(name, args), timeout_s)

    def service(self, service: str, method: str, args: Any, *, timeout_s: float | None = None) -> Any:
        """Call ``method`` of leader service ``service`` and return its answer (raising the error it
        refused with): for the parts whose state the leader holds (:mod:`.leader_services`). On this
        thread's direct link to the leader when the backend has one, as :meth:`query` is."""
        direct = getattr(self.backend, "service_direct", None)
        if direct is not None:
            served, answer = direct(service, method, args, self.timeout_s if timeout_s is None else timeout_s)
            if served:
                return answer
        return self.wait(self.backend.service_nowait(service, method, args), timeout_s)

    def query(self, name: str, args: Any, *, timeout_s: float | None = None) -> Any:
        """Run read-only query ``name`` on one replica and return its answer (see :meth:`call`); on
        this thread's direct link to the leader when the backend has one (a blocking read then
        skips the client's loop thread)."""
        direct = getattr(self.backend, "query_direct", None)
        if direct is not None:
            served, answer = direct(name, args, self.timeout_s if timeout_s is None else timeout_s)
            if served:
                return answer
        return self.wait(self.backend.query_nowait(name, args), timeout_s)
