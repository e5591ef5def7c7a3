"""Services: components that own an I/O library, hosted by the same shell as the pure cores.

Theory of operation
-------------------
A pure core (Raft, a replica) takes messages and ticks and answers through
``ready()``. Some ddia-ray components cannot be written that way, because
their work *is* I/O: a storage node owns an LSM-tree that writes files on
background threads, a cache actor waits on its store, a balancer actor waits
on its replicas. Such a component is a *service*: a plain object whose
listed methods the shell calls, each in a worker thread of the shell, so a
slow call never blocks the shell's event loop or the other calls.

Everything else is the shell's, exactly as for a core
(:mod:`ddia_ray.runtime.shell`): a call from ``src`` passes the fault model
``src -> node`` on the way in and ``node -> src`` on the way out (lost,
delayed or duplicated like any message), a paused node parks its calls until
resumed, ``kill`` is ``ray.kill`` and ``restart`` builds the service again
from its :class:`ServiceSpec` (a storage service reopens its engine at the
same URL and recovers it). The nemesis of a group therefore partitions,
pauses, kills and restarts a storage node, a cache or a balancer with the
same verbs it uses on Raft members.

The contract of a service object:

* ``factory(node_id, **options)`` builds it (``options`` are plain codec
  values, so a spec can be stored and read back by :meth:`NodeGroup.connect`);
* ``methods``: the names callers may invoke (a call naming anything else is
  refused: a caller cannot reach an attribute it was not offered);
* ``streams`` (optional): names of generator methods served as Ray streams;
* ``component`` (optional): its kind, the ``component`` label of its metrics;
* ``stats()`` (optional): plain data, also exported as metrics;
* ``close()`` (optional): called on a clean shutdown.

A refused call reaches the caller as an :class:`~ddia_ray.error_record.ErrorRecord`
and is raised there as its own class, as every error between actors is.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Iterator, Mapping

from .. import codec
from ..codec import record
from ..error_record import ErrorRecord
from ..errors import ActorUnavailableError, CodecError, InvalidArgumentError
from .calls import get_result
from .connect import NAMESPACE, ensure_ray

__all__ = ["ServiceSpec", "ServiceRef", "call_service", "stream_service", "unwrap"]


@record("runtime.service_spec", version=1)
class ServiceSpec:
    """How to build a service anywhere: an importable factory, plain-data options, worker threads.

    ``factory`` is ``"package.module:callable"``, called as ``factory(node_id, **options)``;
    ``threads`` is how many of its calls may run at once.
    """

    factory: str
    options: dict = field(default_factory=dict)
    threads: int = 8

    def __post_init__(self):
        if not isinstance(self.factory, str) or ":" not in self.factory:
            raise InvalidArgumentError(f"factory must be 'module:callable', got {self.factory!r}")
        if not isinstance(self.options, Mapping):
            raise InvalidArgumentError("options must be a mapping of plain values")
        if type(self.threads) is not int or self.threads < 1:
            raise InvalidArgumentError(f"threads must be an int >= 1, got {self.threads!r}")


def unwrap(answer: Any, where: str) -> Any:
    """The value of a shell's ``(value, error)`` answer; raises the error record's exception."""
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise CodecError(f"{where} answered with {type(answer).__name__}, not (value, error)")
    value, error = answer
    if error is not None:
        raise codec.decode(error, ErrorRecord).exception(where)
    return value


def call_service(handle: Any, src: str, method: str, args: tuple = (), *, timeout_s: float | None,
                 where: str) -> Any:
    """Call ``method(*args)`` of the service behind ``handle`` as ``src``; its result or its error."""
    return unwrap(get_result(handle.call.remote(src, method, args), timeout_s, where), where)


def stream_service(handle: Any, src: str, method: str, args: tuple = (), *, timeout_s: float | None,
                   where: str) -> Iterator[Any]:
    """Iterate what the generator ``method(*args)`` of the service yields, streamed through Ray."""
    refs = handle.call_stream.options(num_returns="streaming").remote(src, method, args)
    for ref in refs:
        yield unwrap(get_result(ref, timeout_s, where), where)


class ServiceRef:
    """A caller's address of one service node: ``group``/``node``, called as ``src``.

    Thread-safe and cheap to copy into other actors (it travels as names, not handles). The
    actor is looked up by name on first use and again after it was found dead, so a reference
    keeps working across ``kill`` and ``restart`` of the node: calls made while it is down raise
    :class:`~ddia_ray.errors.ActorUnavailableError`, and so may the first call after a restart
    that this process did not see (as a client's first request over a connection to a restarted
    server fails); later calls reach the new actor. ``owner``, the launching process's
    :class:`~ddia_ray.runtime.group.NodeGroup`, gives the current handle directly, so in that
    process a restart is seamless; it stays behind when the reference is copied to an actor.
    """

    def __init__(self, group: str, node: str, *, src: str = "client", owner: Any = None):
        for what, v in (("group", group), ("node", node), ("src", src)):
            if not isinstance(v, str) or not v:
                raise InvalidArgumentError(f"{what} must be a non-empty str, got {v!r}")
        self.group, self.node, self.src = group, node, src
        self.where = f"{group}/{node}"
        self._handle: Any = None
        self._owner = owner

    def __reduce__(self):
        return (ServiceRef, (self.group, self.node), {"src": self.src})

    def __setstate__(self, state: dict) -> None:
        self.src = state["src"]

    def as_src(self, src: str) -> "ServiceRef":
        """The same node, called as ``src`` (a component calling another names itself)."""
        return ServiceRef(self.group, self.node, src=src, owner=self._owner)

    def handle(self) -> Any:
        """The node's actor handle, looked up by name when not known (or known dead)."""
        if self._owner is not None:
            return self._owner.handle(self.node)
        h = self._handle
        if h is None:
            ray = ensure_ray()
            try:
                h = ray.get_actor(self.where, namespace=NAMESPACE)
            except ValueError as e:
                raise ActorUnavailableError(f"{self.where} is not running") from e
            self._handle = h
        return h

    def call(self, method: str, *args: Any, timeout_s: float | None = 60.0) -> Any:
        """``method(*args)`` on the node; its value, or its error raised as its own class."""
        h = self.handle()
        try:
            return call_service(h, self.src, method, args, timeout_s=timeout_s, where=self.where)
        except ActorUnavailableError:
            if self._handle is h:
                self._handle = None  # look it up again next time: it may have been restarted
            raise

    def stream(self, method: str, *args: Any, timeout_s: float | None = 60.0) -> Iterator[Any]:
        """Iterate the generator ``method(*args)`` on the node, streamed through Ray's object store."""
        h = self.handle()
        try:
            yield from stream_service(h, self.src, method, args, timeout_s=timeout_s, where=self.where)
        except ActorUnavailableError:
            if self._handle is h:
                self._handle = None
            raise

    def __repr__(self) -> str:
        return f"ServiceRef({self.group!r}, {self.node!r}, src={self.src!r})"
