"""The contract between a pure core and whatever drives it (a Ray shell or the simulator).

Theory of operation (after etcd raft's ``RawNode``)
---------------------------------------------------
A core is a deterministic, synchronous object. Its driver feeds it inputs:

* ``step(envelope)``: a message from another node;
* ``tick()``: one unit of time passed (``tick_s`` seconds, fixed per node);
* ``request(request_id, payload)``: a client request that wants a reply.

and then collects what the core wants done with ``ready()``, a frozen
:class:`Ready`. The driver MUST, in this order:

1. append ``ready.persist`` to durable storage and sync it,
2. deliver ``ready.replies`` to the waiting clients and send ``ready.messages``
   (in either order: the Ray shell answers first, to keep message sends off
   the clients' latency),
3. call ``advance(ready)``.

Persisting before sending or answering is what lets a core promise something
in a message or a reply (a vote, an acknowledgement, "your write is stored")
and still keep that promise after a crash. On a
restart the driver rebuilds the core from its factory, passing every record
it persisted, in order, as ``recovered``.

:class:`BaseCore` implements the bookkeeping so a concrete core only writes
``on_message``, ``on_tick`` and ``on_request`` handlers that call
``self.send``, ``self.persist`` and ``self.reply``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from .._validate import positive
from ..codec import record
from ..error_record import ErrorRecord
from ..errors import ConfigError, InvalidArgumentError

__all__ = ["Envelope", "Reply", "Probe", "ProbeAck", "Rewrite", "Ready", "Core", "BaseCore", "CoreSpec", "load_factory"]


@record("net.envelope", version=1)
class Envelope:
    """A message between nodes: who sent it, to whom, and a codec-encodable payload."""

    src: str
    dst: str
    payload: Any

    def __post_init__(self):
        if not isinstance(self.src, str) or not isinstance(self.dst, str):
            raise InvalidArgumentError("envelope src and dst must be str node ids")


def _reply_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried the error as text; it becomes a RemoteError record holding that text."""
    text = fields.get("error") or ""
    return {**fields, "error": ErrorRecord("RemoteError", text) if text else None}


@record("net.reply", version=2, upgrades={1: _reply_v1_to_v2})
class Reply:
    """The answer to request ``request_id``: a payload, or when ``ok`` is false the error as a record.

    ``error.exception()`` rebuilds the error the core raised, of its own class (see
    :mod:`ddia_ray.error_record`).
    """

    request_id: int
    payload: Any = None
    ok: bool = True
    error: ErrorRecord | None = None

    def __post_init__(self):
        if self.ok != (self.error is None) or not (self.error is None or isinstance(self.error, ErrorRecord)):
            raise InvalidArgumentError("a reply is ok with no error, or not ok with an ErrorRecord")


@record("net.probe", version=1)
class Probe:
    """A health check every :class:`BaseCore` answers, whatever else it serves."""

    seq: int = 0


@record("net.probe_ack", version=1)
class ProbeAck:
    """The answer to a :class:`Probe`: which node answered."""

    node: str
    seq: int


@record("runtime.rewrite", version=2, upgrades={1: lambda f: {**f, "derived": False}})
class Rewrite:
    """A persist record meaning "everything persisted before me is replaced by ``records``".

    A core compacts its durable log with it (Raft after a snapshot): the driver
    replaces the log atomically, so a crash leaves either the old records or
    the new ones, never a mix.

    ``derived=True`` promises that ``records`` say nothing the log does not already
    say: replaying the log as it stands restores the same state (a compaction of
    the core's own persisted changes, not a snapshot received from a peer). The
    old log is then as good as the new one until the swap, so a driver may write
    the new one in the background and swap it in later, with the records persisted
    meanwhile appended to both (:class:`~ddia_ray.runtime.durable.DurableLog`;
    Redis's BGREWRITEAOF). Without the promise the swap happens before anything
    persisted after the rewrite, as a peer may act on what it says.
    """

    records: tuple = ()
    derived: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    """What a core asks its driver to do; see the module docstring for the required order.

    Persist ``persist`` (durably) BEFORE sending ``messages``.
    """

    persist: tuple = ()
    messages: tuple = ()
    replies: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.persist or self.messages or self.replies)


class Core(Protocol):
    """What a driver needs from a core (implemented by :class:`BaseCore`)."""

    node_id: str

    def step(self, envelope: Envelope) -> None:
        """Deliver a message from another node."""

    def tick(self) -> None:
        """One tick of time passed."""

    def request(self, request_id: int, payload: Any) -> None:
        """A client request; its reply comes out of a later :meth:`ready`."""

    def ready(self) -> Ready:
        """What to persist, send and answer now."""

    def advance(self, ready: Ready) -> None:
        """The driver did everything in ``ready``."""

    def status(self) -> Mapping[str, Any]:
        """Plain data describing the core."""


class BaseCore:
    """Bookkeeping shared by cores: outboxes, tick counting and virtual time.

    Subclasses override ``on_message(src, payload)``, ``on_tick()`` and
    ``on_request(request_id, payload)``; they read the time as ``self.now_s``
    (ticks times ``tick_s``), never from a clock.
    """

    #: Whether the shell must keep this core's tick count in step with the clock, delivering the
    #: ticks its timer woke too late for (a lease holder; see :mod:`ddia_ray.runtime.ticks`).
    clock_ticks = False
    #: Where :attr:`wall_ns` reads the wall time: set by the driver (the Ray shell gives the host's
    #: clock, the simulator its virtual time from a fixed epoch). None: virtual time since start.
    wall_source: Callable[[], int] | None = None

    def __init__(self, node_id: str, *, tick_s: float = 0.01):
        if not isinstance(node_id, str) or not node_id:
            raise InvalidArgumentError("node_id must be a non-empty str")
        self.node_id = node_id
        self.tick_s = positive("tick_s", tick_s)
        self.ticks = 0
        self._persist: list = []
        self._messages: list = []
        self._replies: list = []

    @property
    def now_s(self) -> float:
        """Virtual time of this node: ticks seen so far times ``tick_s``."""
        return self.ticks * self.tick_s

    @property
    def wall_ns(self) -> int:
        """Wall-clock time in ns, as the driver supplies it (:attr:`wall_source`). Only a core that stamps
        data with wall time reads it (hybrid logical clocks for last-writer-wins, DDIA 8.3): it is the
        one input that differs between nodes' clocks, and the driver, not the core, owns it."""
        source = self.wall_source
        return source() if source is not None else int(self.ticks * self.tick_s * 1e9)

    # --- driver side --------------------------------------------------------

    def step(self, envelope: Envelope) -> None:
        """Deliver one message from another node."""
        if envelope.dst != self.node_id:
            raise ConfigError(f"{self.node_id}: got a message for {envelope.dst!r}")
        self.on_message(envelope.src, envelope.payload)

    def tick(self) -> None:
        """Advance virtual time by one tick."""
        self.ticks += 1
        self.on_tick()

    def request(self, request_id: int, payload: Any) -> None:
        """Start a client request; its reply comes out of a later :meth:`ready`.

        A :class:`Probe` is answered here, so health checks work with any core
        (and still pass through the fault-injecting network like any request).
        """
        if isinstance(payload, Probe):
            self.reply(request_id, ProbeAck(self.node_id, payload.seq))
        else:
            self.on_request(request_id, payload)

    def ready(self) -> Ready:
        """Everything produced since the last :meth:`advance`."""
        return Ready(tuple(self._persist), tuple(self._messages), tuple(self._replies))

    def advance(self, ready: Ready) -> None:
        """The driver has done everything in ``ready``; forget it."""
        del self._persist[: len(ready.persist)]
        del self._messages[: len(ready.messages)]
        del self._replies[: len(ready.replies)]

    def status(self) -> Mapping[str, Any]:
        """Plain data describing the core, for ``status()`` calls and the demo."""
        return {"node": self.node_id, "ticks": self.ticks}

    # --- core side ----------------------------------------------------------

    def send(self, dst: str, payload: Any) -> None:
        """Queue a message to ``dst``."""
        self._messages.append(Envelope(self.node_id, dst, payload))

    def persist(self, rec: Any) -> None:
        """Queue a record for durable storage (written before this round's messages)."""
        self._persist.append(rec)

    def reply(self, request_id: int, payload: Any = None, *, error: BaseException | None = None) -> None:
        """Answer request ``request_id``; an ``error`` (the exception refusing it) makes it a failure.

        The caller receives the error as its own class, with its attributes (see
        :mod:`ddia_ray.error_record`).
        """
        if error is None:
            self._replies.append(Reply(request_id, payload))
        else:
            self._replies.append(Reply(request_id, None, False, ErrorRecord.of(error, self.node_id)))

    def on_message(self, src: str, payload: Any) -> None:
        """Handle a message; the default refuses every message."""
        raise ConfigError(f"{type(self).__name__} does not handle messages ({type(payload).__name__})")

    def on_tick(self) -> None:
        """Handle the passing of one tick; the default does nothing."""

    def on_request(self, request_id: int, payload: Any) -> None:
        """Handle a client request; the default refuses it."""
        self.reply(request_id, error=InvalidArgumentError(f"{type(self).__name__} takes no requests"))


@record("runtime.core_spec", version=1)
class CoreSpec:
    """How to build a core anywhere: an importable factory and plain-data options.

    ``factory`` is ``"package.module:callable"``; it is called as
    ``factory(node_id, recovered=(...), tick_s=..., **options)``.
    """

    factory: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.factory, str) or ":" not in self.factory:
            raise InvalidArgumentError(f"factory must be 'module:callable', got {self.factory!r}")
        if not isinstance(self.options, Mapping):
            raise InvalidArgumentError("options must be a mapping of plain values")

    def build(self, node_id: str, *, recovered: tuple = (), tick_s: float = 0.01):
        """Instantiate the core for ``node_id`` from its recovered records."""
        return load_factory(self.factory)(node_id, recovered=recovered, tick_s=tick_s, **dict(self.options))


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``"module:attr"``; raises :class:`ConfigError` naming what is missing."""
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)  # then each attribute along the dotted path
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load core factory {path!r}: {e}") from e
    return obj
