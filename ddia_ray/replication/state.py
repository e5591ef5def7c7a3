"""The state a replica applies its log to: a key-value map with the log position it reflects.

Theory of operation
-------------------
A replica's state is a pure function of the log prefix it has applied (DDIA 5.1: a
follower "applies all writes in the same order as they were processed on the
leader"). Two states implement one interface, :class:`ReplicaState`:

* :class:`MapState` keeps the data in a dict; the simulation and small groups use
  it. It is rebuilt on restart from the replica's base and the log entries after
  it, so it needs no durability of its own; its snapshot is the whole map.
* :class:`~.engine_state.EngineState` keeps the data in a storage engine (LSM or
  B-tree) that holds more than memory and is durable by itself; its snapshot is
  only the sessions, and a checkpoint is a copy of the engine's files.

``apply`` takes the operations of one entry, already decided (a ``cas`` was turned
into a put or a delete by the leader), so applying the same entries in the same
order gives the same state on every replica. :func:`decide` is the leader's half:
it evaluates a client's cas against the state before the entry is ordered.

The :class:`~ddia_ray.consensus.sessions.Sessions` table remembers the answer of every client write a client
may still ask for again (Raft thesis 6.3), so a retried write applies once. It
changes with every applied entry that came from a client, *including* entries a
durable state had applied before a restart: :meth:`ReplicaState.remember` is
called for those.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, insort
from typing import Any, Callable, Protocol

from .. import codec
from ..consensus.sessions import Sessions
from ..errors import CorruptRecordError, InvalidArgumentError
from .procedures import run as run_procedure
from .records import CALL, CAS, DELETE, DELETE_RANGE, INGEST, PUT, RESERVED_PREFIX

_code = operator.itemgetter(0)
_DECIDED = frozenset({CAS, CALL})  # the codes decide() turns into other operations
_SEEK_PAGE = 16  # keys one step of a procedure's seek reads from the state

__all__ = ["ReplicaState", "MapState", "decide", "needs_deciding", "read_through", "state_reader", "UNKNOWN"]

_SNAPSHOT_FORMAT = 1


def needs_deciding(ops: tuple) -> bool:
    """Whether ``ops`` hold a cas or a procedure call, which :func:`decide` turns into other
    operations (the usual batch holds neither: one C-level pass tells)."""
    return not _DECIDED.isdisjoint(map(_code, ops))


def decide(ops: tuple, get: Callable[[bytes], bytes | None],
           scan: Callable[[bytes, bytes, int], tuple[tuple, tuple]] | None = None,
           get_many: Callable[[tuple], Any] | None = None) -> tuple[tuple, tuple]:
    """A client's ops as log ops plus one result each: a cas becomes its put/delete (result
    True) or nothing (False); a procedure call becomes the puts and deletes it decided (result:
    its answer, :mod:`.procedures`); the other ops stay as they are (result None).

    ``get`` reads the state before the batch; later ops of the batch see the effects of earlier
    ones, as they will when applied. ``scan(start, end, limit)`` (the state's) lets a procedure
    ``get.seek(start, end)``: the first live key of a range and its value, as the batch has it;
    ``get_many(keys)`` (the state's, else ``get`` of each) lets it ``get.many(keys)``: the values
    of several keys in one call, as the batch has them.
    """
    if not needs_deciding(ops):
        return ops, (None,) * len(ops)
    log_ops: list = []
    results: list = []
    pending: dict[bytes, bytes | None] = {}
    ranges: list[tuple[bytes, bytes]] = []  # ranges deleted earlier in the batch
    ordered: list[bytes] = []  # pending's keys in order, kept once a seek needed them (few batches do)
    kept = [False]  # whether ``ordered`` is kept

    def known(key: bytes) -> Any:
        if key in pending:
            return pending[key]
        # A procedure's hot path: no generator when no range was deleted.
        return None if ranges and any(s <= key < e for s, e in ranges) else UNKNOWN

    def current(key: bytes) -> bytes | None:
        value = known(key)
        return get(key) if value is UNKNOWN else value

    def effect(op: tuple) -> None:
        log_ops.append(op)
        if op[0] == PUT or op[0] == DELETE:
            key = op[1]
            if kept[0] and key not in pending:
                insort(ordered, key)
            pending[key] = op[2] if op[0] == PUT else None
        else:  # a range covers keys decided earlier in this batch and keys of the state
            for k in [k for k in pending if op[1] <= k < op[2]]:
                pending[k] = None
            ranges.append((op[1], op[2]))

    def seek(start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        """The first live ``(key, value)`` of ``[start, end)`` as the batch has it so far, or None."""
        if scan is None:
            raise InvalidArgumentError("this replica's state offers procedures no seek")
        if not kept[0]:
            ordered.extend(sorted(pending))
            kept[0] = True
        first_put = None  # the batch's own first live key in the range
        i = bisect_left(ordered, start)
        while i < len(ordered) and ordered[i] < end:
            if pending[ordered[i]] is not None:
                first_put = ordered[i]
                break
            i += 1
        bound, at = (end if first_put is None else first_put), start
        while at < bound:  # the state's first key before it that the batch did not delete or replace
            keys, values = scan(at, bound, _SEEK_PAGE)
            for k, v in zip(keys, values):
                if k not in pending and not (ranges and any(s <= k < e for s, e in ranges)):
                    return k, v
            if len(keys) < _SEEK_PAGE:
                break
            at = keys[-1] + b"\x00"
        return None if first_put is None else (first_put, pending[first_put])  # type: ignore[return-value]

    current.seek = seek  # type: ignore[attr-defined]  # what a procedure reads a range with
    # and several keys with: the state's part in one call (an append's id lookups, 100 at a time)
    current.many = lambda keys: read_through(keys, known, get, get_many)  # type: ignore[attr-defined]

    for op in ops:
        if op[0] == CAS:
            _, key, new, expected = op
            ok = current(key) == expected
            if ok:
                effect((PUT, key, new) if new is not None else (DELETE, key, b""))
            results.append(ok)
        elif op[0] == CALL:
            effects, answer = run_procedure(op, current)
            for e in effects:
                effect(e)
            results.append(answer)
        else:
            effect(op)
            results.append(None)
    return tuple(log_ops), tuple(results)


#: What ``known(key)`` answers in :func:`read_through` for a key only the state can tell.
UNKNOWN = object()


def read_through(keys: tuple, known: Callable[[bytes], Any], get: Callable[[bytes], bytes | None],
                 get_many: Callable[[tuple], Any] | None) -> list:
    """The values of ``keys`` (None: absent) through a layer of changes over a state: ``known(key)``
    where the layer has the key (its value, None where it deleted it), :data:`UNKNOWN` where the
    state must tell; those are read in one ``get_many`` call (one ``get`` each without it)."""
    out: list = [None] * len(keys)
    todo = []
    for i, key in enumerate(keys):
        value = known(key)
        if value is UNKNOWN:
            todo.append(i)
        else:
            out[i] = value
    if todo:
        found = get_many(tuple(keys[i] for i in todo)) if get_many is not None else [get(keys[i]) for i in todo]
        for i, value in zip(todo, found):
            out[i] = value
    return out


class ReplicaState(Protocol):
    """What a replica needs from its state (see the module docstring)."""

    applied: int         # lsn of the last entry applied
    applied_epoch: int   # epoch of that entry: with ``applied``, the position the state is at
    sessions: Sessions

    def answered(self, client: str, seq: int) -> Any:
        """``(lsn, results)`` of the client's write ``seq`` if applied, ``"stale"`` below its floor, else None."""

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """A client's ops as log ops (a cas decided against this state) and one result per op."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""

    def get_many(self, keys: tuple) -> tuple:
        """The values of ``keys`` (None where absent)."""

    def scan(self, start: bytes, end: bytes | None, limit: int, pin: Any = None) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)`` in order, and their values (as of ``pin``'s view)."""

    def scan_rows(self, start: bytes, end: bytes, limit: int) -> tuple[tuple, tuple]:
        """Like :meth:`scan`, reserved keys included (the replicas' own rows: index rows)."""

    def pin(self) -> Any:
        """A point-in-time view for pinned scans (:mod:`.pins`); release it with :meth:`unpin`."""

    def unpin(self, view: Any) -> None:
        """Release a view of :meth:`pin`."""

    def apply(self, lsn: int, ops: tuple, origin: tuple = (), epoch: int = 0) -> None:
        """Apply the decided ops of entry ``lsn`` of ``epoch``; remember ``origin``'s answer."""

    def remember(self, lsn: int, origin: tuple) -> None:
        """An entry at or below ``applied`` seen again: record only its session answer."""

    def durable_lsn(self) -> int:
        """The newest lsn a crash keeps without the replica's log (entries after it are replayed)."""

    def request_durable(self) -> None:
        """Start making :meth:`durable_lsn` reach ``applied`` (in the background)."""

    def snapshot(self) -> bytes:
        """What a replica's own log keeps as its base (recovered by :meth:`restore`)."""

    def restore(self, data: bytes) -> None:
        """Recover from this replica's own :meth:`snapshot`."""

    def export(self, name: str, keep: frozenset = frozenset()) -> bytes:
        """What a lagging follower installs (named ``name`` where files are written); ``keep``:
        names of earlier exports that must stay (a follower may be copying them still)."""

    def install(self, data: bytes) -> None:
        """Replace this state by a leader's :meth:`export`."""

    def describe(self) -> dict:
        """Figures for status."""

    def close(self) -> None:
        """Release what the state holds open."""


class MapState:
    """A dict-backed replica state; ``applied`` is the lsn of the last entry applied."""

    def __init__(self, session_ttl_ms: int = 0) -> None:
        self.data: dict[bytes, bytes] = {}
        self.applied = 0
        self.applied_epoch = 0
        self.sessions = Sessions(session_ttl_ms)

    def answered(self, client: str, seq: int):
        """See :meth:`Sessions.answered`."""
        return self.sessions.answered(client, seq)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        return self.data.get(key)

    def get_many(self, keys: tuple) -> tuple:
        """The values of ``keys`` (None where absent)."""
        return tuple(self.data.get(k) for k in keys)

    def scan(self, start: bytes, end: bytes | None, limit: int, pin: Any = None) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)`` in order (reserved keys skipped), and their values
        (from ``pin``, a copy of the data, when given)."""
        data = self.data if pin is None else pin
        keys = sorted(k for k in data if k >= start and (end is None or k < end)
                      and not k.startswith(RESERVED_PREFIX))[:limit]
        return tuple(keys), tuple(data[k] for k in keys)

    def scan_rows(self, start: bytes, end: bytes, limit: int) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)``, reserved ones included, and their values."""
        keys = sorted(k for k in self.data if start <= k < end)[:limit]
        return tuple(keys), tuple(self.data[k] for k in keys)

    def pin(self) -> dict:
        """A copy of the data (a dict state has no cheaper view: pinned scans of it cost a copy)."""
        return dict(self.data)

    def unpin(self, view: Any) -> None:
        """Nothing to release: the copy is dropped with the pin."""

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """See :func:`decide`."""
        return decide(ops, self.data.get, self.scan, self.get_many)

    def apply(self, lsn: int, ops: tuple, origin: tuple = (), epoch: int = 0) -> None:
        """Apply the decided ops of entry ``lsn`` (of ``epoch``); ``origin`` is remembered for
        exactly-once retries."""
        if origin:
            self.sessions.remember(lsn, origin)
        data = self.data
        if ops and ops[0][0] == INGEST:  # a bulk load: its rows, as puts in order
            from .ingest import ingest_puts

            ops = ingest_puts(ops)
        for code, key, tail in ops:
            if code == PUT:
                data[key] = tail
            elif code == DELETE:
                data.pop(key, None)
            elif code == DELETE_RANGE:
                for k in [k for k in data if key <= k < tail]:
                    del data[k]
        self.applied, self.applied_epoch = lsn, epoch

    def remember(self, lsn: int, origin: tuple) -> None:
        """An entry at or below ``applied`` seen again: only its session answer may be new."""
        if origin:
            self.sessions.remember(lsn, origin)

    def durable_lsn(self) -> int:
        """``applied``: a snapshot holds the whole map."""
        return self.applied

    def request_durable(self) -> None:
        """Nothing to do (see :meth:`durable_lsn`)."""

    def snapshot(self) -> bytes:
        """The whole state, encoded (with the position it reflects)."""
        return codec.encode((_SNAPSHOT_FORMAT, self.applied, tuple(self.data.items()), self.sessions.encode(),
                             self.applied_epoch))

    def restore(self, data: bytes) -> None:
        """Replace the state by a :meth:`snapshot`."""
        decoded = codec.decode(data)
        if not (isinstance(decoded, tuple) and len(decoded) in (4, 5) and decoded[0] == _SNAPSHOT_FORMAT
                and type(decoded[1]) is int and isinstance(decoded[2], tuple) and isinstance(decoded[3], tuple)):
            raise CorruptRecordError("not a replica state snapshot (or one of an unknown format)")
        applied, items, sessions = decoded[1:4]
        if not all(isinstance(p, tuple) and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes
                   for p in items):
            raise CorruptRecordError("a replica state snapshot holds (bytes, bytes) pairs")
        self.sessions.restore(sessions)
        self.data = dict(items)
        self.applied = applied
        self.applied_epoch = decoded[4] if len(decoded) == 5 and type(decoded[4]) is int else 0

    def export(self, name: str, keep: frozenset = frozenset()) -> bytes:
        """What a lagging follower installs: the snapshot itself (``name`` and ``keep`` are unused
        here: nothing is written where a follower copies from)."""
        return self.snapshot()

    def install(self, data: bytes) -> None:
        """Install a leader's :meth:`export`."""
        self.restore(data)

    def describe(self) -> dict:
        """Figures for status: the number of keys and client sessions."""
        return {"keys": len(self.data), "sessions": len(self.sessions), "sessions_expired": self.sessions.expired}

    def close(self) -> None:
        """Nothing to release."""


def state_reader(state: Any) -> Callable:
    """A reader of a replica's ``state`` as a procedure's ``get`` reads it (with ``seek`` and
    ``many``), for code written against a procedure's ``get`` that runs outside the log (a
    leader service, a query)."""
    def get(key: bytes) -> bytes | None:
        return state.get(key)

    def seek(start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        found, values = state.scan(start, end, 1)
        return (found[0], values[0]) if found else None

    get.seek = seek  # type: ignore[attr-defined]
    get.many = state.get_many  # type: ignore[attr-defined]
    return get
