"""Recording client histories: invoke, then exactly one of ok / fail / info.

Theory of operation
-------------------
A history is what clients saw, not what the store did (Jepsen's model, and
Herlihy & Wing 1990 for the definition of linearizability). A client calls
:meth:`HistoryRecorder.invoke` *before* it sends a request and one
completion *after* it learns the outcome:

* ``ok(op_id, result)``: the operation took effect and returned ``result``;
* ``fail(op_id, error)``: it certainly did NOT take effect (the store
  rejected it before applying it);
* ``info(op_id, error)``: the outcome is unknown (a timeout, a crash); it
  may take effect at any time after its invocation, or never.

Each call appends an :class:`Event`, stamped by the injected ``clock`` under
one lock, so event indices and times agree with the real order of the calls
even across threads. A simulation passes its virtual clock
(``clock=lambda: sim.now_s``); the checker then breaks time ties by event
index, so two events at the same virtual instant still keep their order.

Processes follow Jepsen: a process is a single-threaded client, so it has at
most one operation outstanding, and after an ``info`` it is *crashed* (its
request may still be in flight), so its next operation must use a new process
id. :data:`PROCESS_TRANSITIONS` is that life cycle as a table::

    idle --invoke--> busy --ok/fail--> idle
                      '-----info-----> crashed   (terminal)

:func:`pair_events` turns events into :class:`Operation` intervals; an op
completed by ``info`` or never completed gets ``return_s = math.inf``
(Knossos' convention: it may linearize at any point after its call, or not at
all). Both records are codec types, so :func:`save_history` /
:func:`load_history` keep a history as msgpack on any fsspec URL.
"""

from __future__ import annotations

import math
import threading
import time
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .._validate import integer, number
from ..codec import decode, encode, record
from ..errors import ConfigError, InvalidArgumentError

__all__ = [
    "KV_FUNCTIONS",
    "EVENT_KINDS",
    "OP_STATUSES",
    "PROCESS_TRANSITIONS",
    "Event",
    "Operation",
    "HistoryRecorder",
    "pair_events",
    "save_history",
    "load_history",
]

#: The operations of the key-value register model (see :mod:`.model`).
KV_FUNCTIONS: frozenset[str] = frozenset({"read", "write", "cas", "delete"})
#: What an :class:`Event` can record.
EVENT_KINDS: tuple[str, ...] = ("invoke", "ok", "fail", "info")
#: How an :class:`Operation` ended (a never-completed one counts as ``info``).
OP_STATUSES: tuple[str, ...] = ("ok", "fail", "info")

#: Life cycle of a process: (state, event kind) -> next state. A missing pair is a misuse.
PROCESS_TRANSITIONS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("idle", "invoke"): "busy",
        ("busy", "ok"): "idle",
        ("busy", "fail"): "idle",
        ("busy", "info"): "crashed",
    }
)


def _seconds(name: str, value) -> float:
    """A finite time; floats skip the abstract-class check of ``number`` (events are hot in simulations)."""
    if type(value) is float and math.isfinite(value):
        return value
    return number(name, value)


def _index(name: str, value) -> int:
    """A non-negative ``int`` (an event index or op id)."""
    if type(value) is not int:
        integer(name, value)
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return value


def _process_id(value) -> int | str:
    """A process id is an ``int`` or a ``str`` (bools refused: they look like ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgumentError(f"process must be an int or a str, got {type(value).__name__}")
    return value


def _hashable(name: str, value) -> Any:
    """Keys partition the history into a dict, so they must be hashable."""
    try:
        hash(value)
    except TypeError:
        raise InvalidArgumentError(f"{name} must be hashable, got {type(value).__name__}") from None
    return value


def _function(value) -> str:
    """An operation name is a non-empty ``str``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"f must be a str, got {type(value).__name__}")
    if not value:
        raise ConfigError("f must be a non-empty string")
    return value


def _error_text(error) -> str:
    """Errors are kept as text: an exception object is neither portable nor encodable."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    if not isinstance(error, str):
        raise InvalidArgumentError(f"error must be a str or an exception, got {type(error).__name__}")
    return error


@record("history.event", version=1)
class Event:
    """One line of a history: an invocation or a completion, stamped ``time_s``.

    ``value`` is the argument for an ``invoke``, the result for an ``ok``, and
    ``None`` for ``fail``/``info`` (whose reason is in ``error``). A completion
    repeats the ``process``, ``f`` and ``key`` of its invocation so each line
    reads on its own, as in a Jepsen history.
    """

    index: int
    kind: str
    process: Any
    op_id: int
    f: str
    key: Any
    value: Any
    time_s: float
    error: str = ""

    def __post_init__(self) -> None:
        _index("index", self.index)
        if self.kind not in EVENT_KINDS:
            raise ConfigError(f"kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        _process_id(self.process)
        _index("op_id", self.op_id)
        _function(self.f)
        _hashable("key", self.key)
        _seconds("time_s", self.time_s)
        _error_text(self.error)


@record("history.operation", version=1)
class Operation:
    """An invocation paired with its completion: the interval ``[call_s, return_s]``.

    ``status`` is ``"ok"``, ``"fail"`` (never took effect) or ``"info"``
    (unknown; also used for an op that never completed); an ``info`` op has
    ``return_s == math.inf`` and ``output is None``. ``call_index`` and
    ``return_index`` are the event indices from the recorder, used only to
    order events with equal times; operations built by hand may leave them
    ``None`` (ties then count as concurrent).
    """

    op_id: int
    process: Any
    f: str
    key: Any
    value: Any
    output: Any
    call_s: float
    return_s: float
    status: str
    call_index: int | None = None
    return_index: int | None = None
    error: str = ""

    def __post_init__(self) -> None:
        _index("op_id", self.op_id)
        _process_id(self.process)
        _function(self.f)
        _hashable("key", self.key)
        _seconds("call_s", self.call_s)
        if self.status not in OP_STATUSES:
            raise ConfigError(f"status must be one of {OP_STATUSES}, got {self.status!r}")
        if self.status == "info":
            # Knossos: an indeterminate op may take effect arbitrarily late, so it has no return.
            if self.return_s != math.inf:
                raise ConfigError(f"an info op must have return_s = inf, got {self.return_s!r}")
            if self.return_index is not None:
                raise ConfigError("an info op has no return event, so return_index must be None")
        else:
            _seconds("return_s", self.return_s)
        if self.return_s < self.call_s:
            raise ConfigError(f"op {self.op_id} returns at {self.return_s} before its call at {self.call_s}")
        if self.call_index is not None:
            _index("call_index", self.call_index)
        if self.return_index is not None:
            _index("return_index", self.return_index)
        if self.call_index is not None and self.return_index is not None and self.return_index <= self.call_index:
            raise ConfigError(f"op {self.op_id}: return_index must come after call_index")
        _error_text(self.error)


def pair_events(events: Iterable[Event]) -> tuple[Operation, ...]:
    """Pair each ``invoke`` with its completion, in invocation order.

    An op whose completion is ``info`` or missing gets ``status="info"`` and
    ``return_s = inf``. Raises :class:`ConfigError` for a completion without
    an open invocation or one that disagrees with it (process, f or key).
    """
    calls: dict[int, Event] = {}
    done: dict[int, Event] = {}
    for event in events:
        if not isinstance(event, Event):
            raise InvalidArgumentError(f"a history holds Event records, got {type(event).__name__}")
        if event.kind == "invoke":
            if event.op_id in calls:
                first = calls[event.op_id].index
                raise ConfigError(f"op {event.op_id} is invoked twice (events {first} and {event.index})")
            calls[event.op_id] = event
            continue
        call = calls.get(event.op_id)
        if call is None:
            raise ConfigError(f"event {event.index} completes op {event.op_id}, which was never invoked before it")
        if event.op_id in done:
            raise ConfigError(f"op {event.op_id} completes twice (events {done[event.op_id].index} and {event.index})")
        if (event.process, event.f, event.key) != (call.process, call.f, call.key):
            raise ConfigError(f"event {event.index} completes op {event.op_id} with a different process, f or key")
        done[event.op_id] = event
    ops = []
    for op_id, call in calls.items():
        end = done.get(op_id)
        if end is None or end.kind == "info":
            status, output, return_s, return_index = "info", None, math.inf, None
        else:
            status, return_s, return_index = end.kind, end.time_s, end.index
            output = end.value if end.kind == "ok" else None
        ops.append(
            Operation(
                op_id=op_id, process=call.process, f=call.f, key=call.key, value=call.value,
                output=output, call_s=call.time_s, return_s=return_s, status=status,
                call_index=call.index, return_index=return_index,
                error=end.error if end is not None else "",
            )
        )
    return tuple(ops)


class HistoryRecorder:
    """Thread-safe recorder of a history, stamped by ``clock`` (seconds).

    Use one process id per single-threaded client. After :meth:`info` the
    process is crashed: give the client a new id (Jepsen uses
    ``process + concurrency``) before its next op.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, functions: Iterable[str] = KV_FUNCTIONS):
        """``functions`` are the op names accepted (the key-value ones by default)."""
        if not callable(clock):
            raise InvalidArgumentError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._functions = frozenset(_function(f) for f in functions)
        if not self._functions:
            raise ConfigError("functions must name at least one operation")
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._open: dict[int, Event] = {}  # op_id -> its invoke event
        self._process_state: dict[int | str, str] = {}
        self._next_op_id = 0
        self._last_time_s = -math.inf

    # --- recording --------------------------------------------------------

    def invoke(self, process: int | str, f: str, key: Any, value: Any = None) -> int:
        """Record that ``process`` is about to call ``f(key, value)``; returns the op id.

        ``cas`` takes ``value=(expected, new)``. Raises :class:`ConfigError` if
        the process has an op outstanding or has crashed (after an ``info``).
        """
        _process_id(process)
        if _function(f) not in self._functions:
            raise ConfigError(f"f must be one of {sorted(self._functions)}, got {f!r}")
        _hashable("key", key)
        if f == "cas":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise InvalidArgumentError(f"cas takes value=(expected, new), got {value!r}")
            value = tuple(value)  # the codec decodes arrays as tuples: keep one shape
        with self._lock:
            nxt = self._transition(process, "invoke")
            op_id = self._next_op_id
            event = self._append("invoke", process, op_id, f, key, value, "")
            self._next_op_id += 1
            self._open[op_id] = event
            self._process_state[process] = nxt
            return op_id

    def ok(self, op_id: int, result: Any = None) -> Event:
        """Record that op ``op_id`` took effect and returned ``result``."""
        return self._complete(op_id, "ok", result, "")

    def fail(self, op_id: int, error: str | BaseException = "") -> Event:
        """Record that op ``op_id`` certainly did NOT take effect."""
        return self._complete(op_id, "fail", None, _error_text(error))

    def info(self, op_id: int, error: str | BaseException = "") -> Event:
        """Record that the outcome of ``op_id`` is unknown; its process is now crashed."""
        return self._complete(op_id, "info", None, _error_text(error))

    def call(
        self,
        process: int | str,
        f: str,
        key: Any,
        value: Any,
        thunk: Callable[[], Any],
        *,
        fail_on: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Record ``thunk()`` as one op: ok with its result, or the exception re-raised.

        Exceptions of a type in ``fail_on`` are definite failures (``fail``);
        any other exception leaves the outcome unknown (``info``), which
        crashes ``process``.
        """
        op_id = self.invoke(process, f, key, value)
        try:
            result = thunk()
        except fail_on as e:
            self.fail(op_id, e)
            raise
        except BaseException as e:
            self.info(op_id, e)
            raise
        self.ok(op_id, result)
        return result

    # --- reading ----------------------------------------------------------

    def process_state(self, process: int | str) -> str:
        """``"idle"``, ``"busy"`` or ``"crashed"`` (unknown processes are idle)."""
        with self._lock:
            return self._process_state.get(_process_id(process), "idle")

    def history(self) -> tuple[Event, ...]:
        """Every event so far, in order."""
        with self._lock:
            return tuple(self._events)

    def operations(self) -> tuple[Operation, ...]:
        """The history paired into operations (open ones count as ``info``)."""
        return pair_events(self.history())

    def save(self, url: str, **storage_options: Any) -> None:
        """Write the history to ``url`` (a path or fsspec URL); see :func:`save_history`."""
        save_history(self.history(), url, **storage_options)

    def __len__(self) -> int:
        """Number of events recorded."""
        with self._lock:
            return len(self._events)

    # --- internals ----------------------------------------------------------

    def _complete(self, op_id: int, kind: str, value: Any, error: str) -> Event:
        integer("op_id", op_id)
        with self._lock:
            call = self._open.get(op_id)
            if call is None:
                state = "completed" if 0 <= op_id < self._next_op_id else "unknown"
                raise ConfigError(f"op {op_id} is {state}: each invoke takes exactly one ok, fail or info")
            nxt = self._transition(call.process, kind)
            event = self._append(kind, call.process, op_id, call.f, call.key, value, error)
            del self._open[op_id]
            self._process_state[call.process] = nxt
            return event

    def _transition(self, process: int | str, kind: str) -> str:
        """The next state by :data:`PROCESS_TRANSITIONS`; the caller holds the lock.

        The caller stores it only once the event is recorded, so a failing
        clock leaves nothing half-done.
        """
        state = self._process_state.get(process, "idle")
        nxt = PROCESS_TRANSITIONS.get((state, kind))
        if nxt is None:
            why = {
                "busy": "it already has an op outstanding (a process is single-threaded)",
                "crashed": "it crashed after an info op; use a new process id for its next op",
            }.get(state, f"{kind} is not allowed for a {state} process")
            raise ConfigError(f"process {process!r} cannot {kind}: {why}")
        return nxt

    def _append(self, kind: str, process, op_id: int, f: str, key, value, error: str) -> Event:
        """Stamp and store one event; caller holds the lock, so times follow indices."""
        now_s = float(_seconds("clock()", self._clock()))
        if now_s < self._last_time_s:
            raise ConfigError(
                f"clock went backwards ({now_s} < {self._last_time_s}); use a monotonic clock"
            )
        self._last_time_s = now_s
        event = Event(len(self._events), kind, process, op_id, f, key, value, now_s, error)
        self._events.append(event)
        return event


def save_history(events: Iterable[Event], url: str, **storage_options: Any) -> None:
    """Write ``events`` as codec msgpack to a path or fsspec URL."""
    import fsspec

    payload = encode(tuple(events))
    with fsspec.open(url, "wb", **storage_options) as fh:
        fh.write(payload)


def load_history(url: str, **storage_options: Any) -> tuple[Event, ...]:
    """Read a history written by :func:`save_history`."""
    import fsspec

    with fsspec.open(url, "rb", **storage_options) as fh:
        events = decode(fh.read(), expect=tuple)
    for event in events:
        if not isinstance(event, Event):
            raise ConfigError(f"{url} is not a history: it holds a {type(event).__name__}")
    return events
