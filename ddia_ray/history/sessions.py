"""Session guarantees: does each client session read its own writes, and never go back in time?

Theory of operation
-------------------
Linearizability asks one order of all ops to explain every output; session
guarantees (Terry et al. 1994, "Session guarantees for weakly consistent
replicated data"; DDIA ch. 5) ask much less, and only *within a session*:

* **read-your-writes**: a read sees at least the latest of the session's
  own writes of that key that completed before the read was invoked;
* **monotonic reads**: a read sees at least what an earlier read of that key
  in the same session saw (earlier: completed before this one was invoked).

A store that serves reads from lagging followers breaks both; a client that
sticks to one replica, or that carries the position of its last write, keeps
them. Sessions are given by ``session_of(op)``, not by the Jepsen process:
after a crash a new process may continue the same session.

Both guarantees compare *versions*, the position the store gave each write
of a key (an LSN, an ``(epoch, lsn)`` pair: anything ordered by ``<``). An ok
write or delete whose output is not ``None`` (nor a bool, which acknowledges
rather than positions) has version ``op.output``; ``versions[(key, value)]``
adds or overrides them, e.g. from the store's log for ``info`` writes. Values
are unique per key, so a read's value names its write and thereby its
version. ``None`` is the exception: every delete writes it, so a read of
``None`` may have seen any delete of the key, or the initial state, which is
below every version.

The check is a sweep, so it costs O(n log n) for the sort and O(1) per op
after it:

1. Rank the versions of each key (0, 1, ...; the initial state is -1), so
   the sweep compares ints, and refuse inconsistent input: two versions for
   one value, or one version for two values, is a misuse (:class:`ConfigError`).
2. Sort the calls of ok reads and the returns of ok reads and writes by time.
   Ties: an event with a recorder index is ordered by it against another
   indexed event (the true order of the calls to the recorder); otherwise a
   call sorts before a return at the same time, so touching intervals count
   as concurrent, as in :mod:`.linearizability`. That can hide a violation
   but never reports a false one.
3. Per (session, key) keep two lower bounds: the highest ranked own write
   that has returned (read-your-writes) and the highest version an earlier
   read is known to have seen (monotonic reads), each with the op that set
   it. At a read's call, judge it against both; at its return, raise the
   monotonic bound by what it saw.

Every judgement gives the store the benefit of the doubt, so a reported
violation is real: a ``None`` read counts as having seen the highest delete
of its key when judged, but raises the bound only to the lowest version it
could have seen; a read of a value whose version is unknown (written by an
``info`` write, say) is *undetermined*, neither a violation nor a bound. A
read of a value that no write wrote, and that is not the initial ``None``, is
a *phantom*: no order of the writes explains it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any, Callable, Hashable, Iterable, Mapping

from .._validate import integer
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError
from .recorder import Operation

__all__ = ["SESSION_GUARANTEES", "SessionViolation", "SessionCheck", "check_sessions", "describe_sessions"]

#: What a :class:`SessionViolation` can report.
SESSION_GUARANTEES: tuple[str, ...] = ("read-your-writes", "monotonic-reads", "phantom")

#: The rank of the initial state of every key (absent, read as ``None``): below every version.
_INITIAL = -1
#: Event kinds of the sweep.
_READ_CALL, _READ_RETURN, _WRITE_RETURN = 0, 1, 2


@record("history.session_violation", version=1)
class SessionViolation:
    """A read of ``key`` (op ``op_id``) in ``session`` that breaks ``guarantee``.

    ``saw`` is the version the read saw (``None`` for the initial state; for a
    ``None`` read, the highest delete of the key) and ``expected_at_least``
    the version it should have seen at least, set by op ``because_of``: the
    session's own write (read-your-writes) or its earlier read (monotonic
    reads). ``value`` is the value the read returned; for a ``"phantom"``,
    a value no write wrote, so it has no version: ``saw`` and
    ``expected_at_least`` are ``None`` and ``because_of`` is -1.
    """

    guarantee: str
    session: Any
    key: Any
    op_id: int
    saw: Any
    expected_at_least: Any
    because_of: int
    value: Any = None

    def __post_init__(self) -> None:
        if self.guarantee not in SESSION_GUARANTEES:
            raise ConfigError(f"guarantee must be one of {SESSION_GUARANTEES}, got {self.guarantee!r}")
        if integer("op_id", self.op_id) < 0:
            raise ConfigError(f"op_id must be >= 0, got {self.op_id}")
        if integer("because_of", self.because_of) < -1:
            raise ConfigError(f"because_of must be an op id or -1, got {self.because_of}")


@record("history.session_check", version=1)
class SessionCheck:
    """The verdict of :func:`check_sessions`.

    ``ok`` is true iff ``violations`` is empty; violations are in the order
    of the reads' calls. ``reads_checked`` counts the ok reads examined, of
    which ``undetermined`` could not be judged (their value's version is
    unknown); ``sessions`` counts the sessions of the ops examined.
    """

    ok: bool
    violations: tuple
    reads_checked: int
    undetermined: int
    sessions: int

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise InvalidArgumentError(f"ok must be a bool, got {type(self.ok).__name__}")
        if not isinstance(self.violations, tuple) or not all(
            isinstance(v, SessionViolation) for v in self.violations
        ):
            raise InvalidArgumentError("violations must be a tuple of SessionViolation records")
        if self.ok != (not self.violations):
            raise ConfigError(f"ok={self.ok} contradicts {len(self.violations)} violations")
        for name in ("reads_checked", "undetermined", "sessions"):
            if integer(name, getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.undetermined > self.reads_checked:
            raise ConfigError(f"undetermined ({self.undetermined}) exceeds reads_checked ({self.reads_checked})")


def _hashable(what: str, value: Any) -> Any:
    """Values, versions and sessions index dicts, so they must be hashable."""
    try:
        hash(value)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be hashable (use tuples, not lists), got {value!r:.80}") from None
    return value


def _written_value(op: Operation) -> tuple[bool, Any]:
    """``(may have written, value)``: what a non-failed write, delete or cas put in its key."""
    if op.f == "write":
        return True, op.value
    if op.f == "delete":
        return True, None
    # A cas: an ok one wrote its new value only if it answered true; an info one may have.
    value = op.value
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidArgumentError(f"op {op.op_id}: cas takes value=(expected, new), got {value!r:.80}")
    return (op.status == "info" or bool(op.output)), value[1]


class _Versions:
    """The ranked versions of every key, built from the history and the ``versions`` mapping."""

    def __init__(self) -> None:
        self.of_value: dict[tuple[Any, Any], Any] = {}  # (key, non-None value) -> version
        self.source: dict[tuple[Any, Any], int] = {}  # (key, value) -> op id that gave its version
        self.deletes: dict[Any, list[Any]] = {}  # key -> versions of its writes of None
        self.unknown_deletes: dict[Any, int] = {}  # key -> writes of None with no version yet
        self.delete_fill: dict[Any, Any] = {}  # key -> versions[(key, None)]: the version of those writes
        self.written: set[tuple[Any, Any]] = set()  # (key, value) some non-failed op may have written
        self.opaque_keys: set[Any] = set()  # keys changed by functions this checker does not model
        # Filled by rank():
        self.order: dict[Any, list[Any]] = {}  # key -> its versions, ascending: rank -> version
        self.rank_of: dict[tuple[Any, Any], int] = {}  # (key, non-None value) -> rank
        self.delete_ranks: dict[Any, list[int]] = {}  # key -> ascending ranks of its deletes
        self.rank_index: dict[Any, dict[Any, int]] = {}  # key -> version -> rank

    def acknowledged(self, op: Operation, key: Any, value: Any) -> None:
        """Note the version the store gave an ok write (``op.output``), if it gave one."""
        version = op.output
        if version is None or isinstance(version, bool):  # a bool acknowledges, it does not position
            if value is None:
                self.unknown_deletes[key] = self.unknown_deletes.get(key, 0) + 1
            return
        _hashable(f"op {op.op_id}: the version (output)", version)
        if value is None:
            self.deletes.setdefault(key, []).append(version)
            return
        old = self.of_value.get((key, value))
        if old is not None and old != version:
            raise ConfigError(
                f"key {key!r}: value {value!r:.80} has two versions, {old!r} (op {self.source[(key, value)]}) "
                f"and {version!r} (op {op.op_id}); values must be unique per key"
            )
        self.of_value[(key, value)] = version
        self.source[(key, value)] = op.op_id

    def given(self, versions: Mapping) -> None:
        """Apply the caller's ``versions``: they override acknowledged ones, and fill in deletes'."""
        if not isinstance(versions, Mapping):
            raise InvalidArgumentError(
                f"versions must be a Mapping[(key, value), version], got {type(versions).__name__}"
            )
        for pair, version in versions.items():
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidArgumentError(f"versions maps (key, value) pairs, got the key {pair!r:.80}")
            if version is None or isinstance(version, bool):
                raise InvalidArgumentError(
                    f"versions[{pair!r:.80}] must be a position (an int, a tuple...), got {version!r}"
                )
            _hashable(f"versions[{pair!r:.80}]", version)
            key, value = pair
            if value is None:
                # Every delete writes None, so one entry cannot override them all: it stands for the
                # deletes whose version the store did not acknowledge (or for one outside the history).
                self.unknown_deletes.pop(key, None)
                self.delete_fill[key] = version
                self.deletes.setdefault(key, []).append(version)
            else:
                self.of_value[pair] = version
                self.source[pair] = -1

    def rank(self) -> None:
        """Number each key's versions 0, 1, ... in ``<`` order; refuse one version for two values."""
        holders: dict[Any, dict[Any, Any]] = {}  # key -> version -> the value written there
        for (key, value), version in self.of_value.items():
            self._hold(holders.setdefault(key, {}), key, version, value)
        for key, dels in self.deletes.items():
            held = holders.setdefault(key, {})
            for version in dels:
                self._hold(held, key, version, None)
        for key, held in holders.items():
            try:
                order = sorted(held)
            except TypeError as e:
                raise ConfigError(f"key {key!r}: versions cannot be compared with '<' ({e})") from None
            self.order[key] = order
        for key, order in self.order.items():
            rank = self.rank_index[key] = {version: i for i, version in enumerate(order)}
            held = holders[key]
            for version, value in held.items():
                if value is not None:
                    self.rank_of[(key, value)] = rank[version]
            if key in self.deletes:
                self.delete_ranks[key] = sorted({rank[v] for v in self.deletes[key]})

    @staticmethod
    def _hold(held: dict, key: Any, version: Any, value: Any) -> None:
        """A version names one write: a second value at the same position is a misuse."""
        old = held.setdefault(version, value)
        if old is not value and old != value:
            raise ConfigError(
                f"key {key!r}: version {version!r} is given to two values, {old!r:.80} and {value!r:.80}"
            )

    def write_rank(self, op: Operation, value: Any) -> int:
        """The rank of what an ok write, delete or cas ``op`` wrote (``value``); -1 when unknown."""
        key = op.key
        if value is not None:
            return self.rank_of.get((key, value), _INITIAL)
        # Writes of None: each has its own version, its output; else the one `versions` gave None.
        version = op.output if op.f != "cas" else None
        if version is None or isinstance(version, bool):
            version = self.delete_fill.get(key)
        return _INITIAL if version is None else self.rank_index[key][version]

    def version(self, key: Any, rank: int) -> Any:
        """The version of ``rank`` (``None`` for the initial state)."""
        return None if rank == _INITIAL else self.order[key][rank]


def _event_key(time_s: float, index: int | None, is_call: bool, seq: int) -> tuple:
    """Sort key of one sweep event: by time; ties by recorder index, else calls before returns."""
    if index is not None:
        return (time_s, 1, index, seq)
    return (time_s, 0 if is_call else 2, 0, seq)


def check_sessions(
    ops: Iterable[Operation],
    *,
    session_of: Callable[[Operation], Hashable] | None = None,
    versions: Mapping[tuple[Any, Any], Any] | None = None,
) -> SessionCheck:
    """Check read-your-writes and monotonic reads in every session of ``ops``.

    ``session_of(op)`` names an op's session (default: ``op.process``).
    ``versions`` maps ``(key, value)`` to the version of that write, adding
    to or overriding the outputs of ok writes and deletes (see the module
    docstring; for ``None`` it gives the version of the deletes whose output
    is ``None``). Only ``read``, ``write``, ``delete`` and ``cas`` are
    modelled (a cas only through ``versions``; a key written by any other
    function leaves unexplained values undetermined); ``fail`` ops are
    ignored. Values, versions and sessions must be hashable. Raises
    :class:`InvalidArgumentError` for input that is not operations, and
    :class:`ConfigError` for inconsistent versions: two for one value, one
    for two values, or versions of a key that ``<`` cannot compare.
    """
    if session_of is not None and not callable(session_of):
        raise InvalidArgumentError(f"session_of must be callable, got {type(session_of).__name__}")
    table = _Versions()
    reads: list[tuple[Operation, Any]] = []  # (ok read, session)
    writes: list[tuple[Operation, Any, Any]] = []  # (ok write that took effect, session, value)
    sessions: set = set()
    for op in ops:
        if not isinstance(op, Operation):
            raise InvalidArgumentError(f"check_sessions takes Operation records, got {type(op).__name__}")
        if op.status == "fail":  # it certainly did not take effect
            continue
        f = op.f
        if f not in ("read", "write", "delete", "cas"):
            table.opaque_keys.add(op.key)  # it may have written anything to its key
            continue
        session = op.process if session_of is None else _hashable(f"op {op.op_id}: session_of(op)", session_of(op))
        sessions.add(session)
        if f == "read":
            if op.status == "ok":  # an info read saw nothing observable
                _hashable(f"op {op.op_id}: the value read", op.output)
                reads.append((op, session))
            continue
        wrote, value = _written_value(op)
        if not wrote:
            continue
        _hashable(f"op {op.op_id}: the value written", value)
        table.written.add((op.key, value))
        if f == "cas":
            if value is None:
                table.unknown_deletes[op.key] = table.unknown_deletes.get(op.key, 0) + 1
            if op.status == "ok":  # its version can only come from `versions`
                writes.append((op, session, value))
            continue
        if op.status == "ok":
            table.acknowledged(op, op.key, value)
            writes.append((op, session, value))
        elif value is None:
            table.unknown_deletes[op.key] = table.unknown_deletes.get(op.key, 0) + 1
    if versions is not None:
        table.given(versions)
    table.rank()
    return _sweep(table, reads, writes, len(sessions))


def _sweep(table: _Versions, reads: list, writes: list, n_sessions: int) -> SessionCheck:
    """Steps 2 and 3 of the module docstring: one pass over the sorted calls and returns."""
    keyed: list[tuple] = []
    events: list[tuple[int, Operation, Any, int]] = []  # (kind, op, session, rank or -1)
    for op, session in reads:
        seq = len(events)
        events.append((_READ_CALL, op, session, _INITIAL))
        keyed.append(_event_key(op.call_s, op.call_index, True, seq))
        events.append((_READ_RETURN, op, session, _INITIAL))
        keyed.append(_event_key(op.return_s, op.return_index, False, seq + 1))
    for op, session, value in writes:
        rank = table.write_rank(op, value)
        if rank == _INITIAL:
            continue  # no known version: it cannot set a bound
        seq = len(events)
        events.append((_WRITE_RETURN, op, session, rank))
        keyed.append(_event_key(op.return_s, op.return_index, False, seq))
    keyed.sort()

    # Per (session, key): [own-write rank, its op id, seen rank, the read that saw it].
    bounds: dict[tuple[Any, Any], list[int]] = {}
    raised: dict[int, int] = {}  # read call event -> the rank its read raises the bound to at its return
    violations: list[SessionViolation] = []
    undetermined = 0
    for entry in keyed:
        seq = entry[-1]
        kind, op, session, rank = events[seq]
        key = op.key
        state = bounds.get((session, key))
        if state is None:
            state = bounds[(session, key)] = [_INITIAL, -1, _INITIAL, -1]
        if kind == _WRITE_RETURN:
            if rank > state[0]:
                state[0], state[1] = rank, op.op_id
            continue
        if kind == _READ_RETURN:
            rank = raised.pop(seq - 1, _INITIAL)  # a read's return event follows its call event
            if rank > state[2]:
                state[2], state[3] = rank, op.op_id
            continue
        verdict = _judge(table, op, max(state[0], state[2]))
        if verdict is None:
            undetermined += 1
        elif verdict[0] == "phantom":
            violations.append(SessionViolation("phantom", session, key, op.op_id, None, None, -1, op.output))
        elif verdict[0] == "ok":
            raised[seq] = verdict[1]
        else:
            saw = verdict[1]
            # Both bounds may be broken: the session's own write is the stronger complaint.
            guarantee, bound, cause = (
                ("read-your-writes", state[0], state[1]) if saw < state[0] else ("monotonic-reads", state[2], state[3])
            )
            violations.append(SessionViolation(
                guarantee, session, key, op.op_id, table.version(key, saw), table.version(key, bound), cause,
                op.output,
            ))
    return SessionCheck(
        ok=not violations,
        violations=tuple(violations),
        reads_checked=len(reads),
        undetermined=undetermined,
        sessions=n_sessions,
    )


def _judge(table: _Versions, op: Operation, bound: int) -> tuple[str, int] | None:
    """Judge an ok read against ``bound``: ``("ok", rank it raises the bound to)``,
    ``("stale", rank seen)``, ``("phantom", -1)``, or ``None`` when undetermined."""
    key, value = op.key, op.output
    if value is not None:
        rank = table.rank_of.get((key, value))
        if rank is None:
            if (key, value) in table.written or key in table.opaque_keys:
                return None  # written, but where in the order is unknown
            return ("phantom", _INITIAL)
        return ("ok", rank) if rank >= bound else ("stale", rank)
    # None: the initial state or any delete. Judge by the highest (the store's best case)...
    dels = table.delete_ranks.get(key, ())
    top = dels[-1] if dels else _INITIAL
    unknown = table.unknown_deletes.get(key, 0) > 0 or key in table.opaque_keys
    if top < bound:
        return None if unknown else ("stale", top)
    if unknown or bound <= _INITIAL:
        return ("ok", _INITIAL)  # ...and raise the bound by no more than it must have seen
    return ("ok", dels[bisect_left(dels, bound)])


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def describe_sessions(result: SessionCheck, *, max_violations: int = 5) -> str:
    """A readable verdict of ``result``, listing its first ``max_violations`` violations."""
    if not isinstance(result, SessionCheck):
        raise InvalidArgumentError(f"describe_sessions takes a SessionCheck, got {type(result).__name__}")
    if integer("max_violations", max_violations) < 0:
        raise ConfigError(f"max_violations must be >= 0, got {max_violations}")
    verdict = "session guarantees hold" if result.ok else "session guarantees VIOLATED"
    lines = [
        f"{verdict}: {_count(result.reads_checked, 'read')} in {_count(result.sessions, 'session')}, "
        f"{result.undetermined:,} undetermined"
    ]
    if result.violations:
        by_kind = Counter(v.guarantee for v in result.violations)
        lines.append(", ".join(f"{by_kind[g]:,} {g}" for g in SESSION_GUARANTEES if by_kind[g]))
    for v in result.violations[:max_violations]:
        where = f"op {v.op_id} (session {v.session!r}, key {v.key!r})"
        if v.guarantee == "phantom":
            lines.append(f"  {where}: phantom: read {v.value!r:.80}, which no write wrote")
            continue
        saw = "the initial state" if v.saw is None else f"version {v.saw!r}"
        source = "its own write" if v.guarantee == "read-your-writes" else "its earlier read"
        lines.append(
            f"  {where}: {v.guarantee}: read {v.value!r:.80} ({saw}), but {source}, "
            f"op {v.because_of}, requires version >= {v.expected_at_least!r}"
        )
    hidden = len(result.violations) - max_violations
    if hidden > 0:
        lines.append(f"  ... and {_count(hidden, 'more violation')}")
    return "\n".join(lines)
