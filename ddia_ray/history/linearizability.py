"""A linearizability checker: Wing & Gong's search with Lowe's state cache, per key.

Theory of operation
-------------------
A history is linearizable (Herlihy & Wing 1990; DDIA ch. 9) if every op can
be given a point between its call and its return such that applying the ops
in that order to the sequential :class:`~.model.Model` reproduces every
output the clients saw. ``fail`` ops are dropped first (they did not
happen); ``info`` ops return at ``+inf``, so they may take effect at any time
after their call, or be left out.

1. Partition (P-compositionality): ``model.partition`` splits the history
   into independent sub-histories, one per key for the key-value model.
2. Entry list: each sub-history becomes a list of call and return entries
   sorted by time. *Ties*: when every op carries recorder event indices,
   equal times are ordered by index, which is the true order of the calls to
   the recorder (so a virtual clock that does not advance still orders a
   return before the next call); otherwise, as in Porcupine, a call sorts
   before a return at the same time, i.e. touching intervals count as
   concurrent, which can hide a violation but never reports a false one.
3. Search (Wing & Gong 1993, with Lowe 2017's improvements): walk the list;
   at a call, try to linearize that op now (``model.step``); if legal and the
   pair ``(set of linearized ops, state)`` was never seen before, remember
   it, unlink the op's call and return entries and restart from the head. At
   a return whose op is not linearized yet, nothing can be placed before it:
   backtrack by undoing the last linearization (dancing links: relinking is
   O(1)) and try the next call. The loop is iterative with an explicit stack.
   It succeeds once every op that returned is linearized (any ``info`` ops
   left over simply never took effect), and fails when it must backtrack
   with an empty stack.

The cache is what makes the search fast: two orders that linearize the same
ops into the same state have the same future, so only one is explored. Two
extensions keep ``info`` ops (which stay pending forever) from multiplying
the states: a configuration that differs from a seen one only by *more*
linearized info ops is pruned (an info op never has to take effect, so the
smaller configuration can do everything the larger one can), and info ops
with the same ``f``, ``key`` and ``value`` are counted rather than named, as
which copy took effect cannot matter. Both need ``model.step`` to depend on
an op's ``f``, ``key``, ``value``, ``output`` and ``status`` only.

``explored_states`` counts configurations entered, a deterministic measure
of work (unlike ``elapsed_s``); ``max_explored_states`` is a deterministic
budget, ``timeout_s`` a wall-clock one; running out of either gives
``ok=None``. Event indices are only comparable within one recorder: to merge
histories from several recorders, clear ``call_index``/``return_index``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .._validate import integer, invariant, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError
from .model import KV_MODEL, Model
from .recorder import Event, Operation, pair_events

__all__ = ["Counterexample", "CheckResult", "check", "check_events", "describe"]

#: How many search steps run between two looks at the clock.
_CLOCK_CHECK_EVERY_STEPS = 512


@record("history.counterexample", version=1)
class Counterexample:
    """Why one sub-history is not linearizable, at the deepest point the search reached.

    ``prefix`` is the longest linearization found (ops in linearization
    order) and ``state`` the model state after it. ``blocked`` is the op
    whose return was reached without it being placed, so nothing after it
    could go first; ``candidates`` are the ops that could have come next at
    that point (``blocked`` among them), none of which leads to a full
    linearization.
    """

    key: Any
    prefix: tuple
    state: Any
    blocked: Operation
    candidates: tuple

    def __post_init__(self) -> None:
        if not isinstance(self.blocked, Operation):
            raise InvalidArgumentError(f"blocked must be an Operation, got {type(self.blocked).__name__}")
        for name in ("prefix", "candidates"):
            ops = getattr(self, name)
            if not isinstance(ops, tuple) or not all(isinstance(op, Operation) for op in ops):
                raise InvalidArgumentError(f"{name} must be a tuple of Operation records")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of :func:`check`.

    ``ok`` is ``True`` (linearizable), ``False`` (a violation was found) or
    ``None`` (the search gave up: ``timed_out`` is set and ``stop_reason``
    says which budget ran out). A violation found before giving up still
    gives ``ok=False``. ``per_key`` maps each partition label to the same
    three-valued verdict, in the order the model partitioned them;
    ``counterexample`` explains the first failing key.
    """

    ok: bool | None
    per_key: Mapping[Any, bool | None]
    counterexample: Counterexample | None
    explored_states: int
    elapsed_s: float
    ops_checked: int
    timed_out: bool = False
    stop_reason: str = ""

    def __reduce__(self):
        """Pickle with ``per_key`` as a plain dict (a mapping proxy cannot be pickled)."""
        return (_rebuild_result, (self.ok, dict(self.per_key), self.counterexample, self.explored_states,
                                  self.elapsed_s, self.ops_checked, self.timed_out, self.stop_reason))


def _rebuild_result(ok, per_key, counterexample, explored, elapsed_s, ops_checked, timed_out, stop_reason):
    return CheckResult(ok, MappingProxyType(per_key), counterexample, explored, elapsed_s, ops_checked,
                       timed_out, stop_reason)


class _GaveUp(Exception):
    """Internal: a budget ran out inside the search of one key."""

    def __init__(self, reason: str, explored: int):
        super().__init__(reason)
        self.reason = reason
        self.explored = explored


def check(
    operations: Iterable[Operation],
    model: Model = KV_MODEL,
    *,
    timeout_s: float | None = None,
    max_explored_states: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Is the history of ``operations`` linearizable with respect to ``model``?

    ``timeout_s`` bounds wall time (read from ``clock``) and
    ``max_explored_states`` the total number of search configurations; either
    running out gives ``ok=None`` unless a violation was already found.
    Prefer ``max_explored_states`` where results must be reproducible.
    """
    if timeout_s is not None:
        positive("timeout_s", timeout_s)
    if max_explored_states is not None and integer("max_explored_states", max_explored_states) < 1:
        raise ConfigError(f"max_explored_states must be >= 1, got {max_explored_states}")
    ops = []
    for op in operations:
        if not isinstance(op, Operation):
            raise InvalidArgumentError(f"check takes Operation records, got {type(op).__name__}")
        if op.status != "fail":  # a failed op certainly did not take effect: it is not in the history
            ops.append(op)
    start_s = clock()
    deadline_s = math.inf if timeout_s is None else start_s + timeout_s
    budget = math.inf if max_explored_states is None else max_explored_states
    per_key: dict[Any, bool | None] = {}
    counterexample = None
    explored = 0
    stop_reason = ""
    for key, key_ops in model.partition(ops):
        if not stop_reason and deadline_s != math.inf and clock() > deadline_s:
            stop_reason = "timeout_s elapsed"
        if stop_reason:
            per_key[key] = None  # never reached: unknown
            continue
        try:
            ok, used, example = _check_partition(key, key_ops, model, budget - explored, deadline_s, clock)
        except _GaveUp as e:
            per_key[key] = None
            explored += e.explored
            stop_reason = e.reason
            continue
        explored += used
        per_key[key] = ok
        if not ok and counterexample is None:
            counterexample = example
    verdicts = per_key.values()
    verdict = False if False in verdicts else (None if None in verdicts else True)
    return CheckResult(
        ok=verdict,
        per_key=MappingProxyType(per_key),
        counterexample=counterexample,
        explored_states=explored,
        elapsed_s=clock() - start_s,
        ops_checked=len(ops),
        timed_out=bool(stop_reason),
        stop_reason=stop_reason,
    )


def check_events(events: Iterable[Event], model: Model = KV_MODEL, **kwargs: Any) -> CheckResult:
    """:func:`check` a raw event history (pairs invocations with completions first)."""
    return check(pair_events(events), model, **kwargs)


def _entry_list(ops: tuple[Operation, ...]) -> list[tuple[int, bool]]:
    """Call and return entries ``(op index, is_call)`` in time order, ties as the module doc says."""
    by_index = all(op.call_index is not None and (op.return_index is not None or op.status == "info") for op in ops)
    keyed = []
    for i, op in enumerate(ops):
        if by_index:
            call_key = (op.call_s, op.call_index)
            return_key = (op.return_s, -1 if op.return_index is None else op.return_index)
        else:
            call_key, return_key = (op.call_s, 0), (op.return_s, 1)  # calls first: ties are concurrent
        keyed.append((call_key, i, True))
        keyed.append((return_key, i, False))
    keyed.sort(key=lambda entry: entry[0])  # stable: equal keys keep op order, so runs repeat exactly
    return [(i, is_call) for _, i, is_call in keyed]


def _check_partition(key, ops, model: Model, budget, deadline_s: float, clock) -> tuple[bool, int, Any]:
    """Search one sub-history: ``(ok, explored states, counterexample or None)``.

    Raises :class:`_GaveUp` when ``budget`` states or the deadline run out.
    """
    n = len(ops)
    required = sum(1 for op in ops if op.status != "info")
    if required == 0:
        return True, 0, None  # only info ops: none of them need to have happened
    # Doubly linked entry list over arrays: node 0 is the head, 2n + 1 the tail sentinel.
    entries = _entry_list(ops)
    head, tail = 0, 2 * n + 1
    nxt = list(range(1, 2 * n + 2)) + [tail]
    prv = [head] + list(range(0, 2 * n + 1))
    op_of = [-1] * (2 * n + 2)
    is_call = [False] * (2 * n + 2)
    match = [0] * (2 * n + 2)
    call_node = [0] * n
    for node, (i, call) in enumerate(entries, start=1):
        op_of[node] = i
        is_call[node] = call
        if call:
            call_node[i] = node
        else:
            match[call_node[i]] = node
    is_info = [op.status == "info" for op in ops]
    klass, members = _info_classes(ops, call_node)
    used = [0] * len(members)  # per class: how many of its info ops are linearized
    step = model.step

    state = model.init()
    returned_bits = 0  # linearized ops that returned (ok), by op index
    info_bits = 0  # linearized info ops, canonical: the first used[c] members of each class c
    # (returned_bits, state) -> the minimal info_bits seen with them (Lowe's cache, see _subsumed)
    cache: dict[tuple[int, Any], list[int]] = {}
    explored = 0
    stack: list[tuple[int, Any]] = []  # (call node, state before linearizing it)
    remaining = required
    best_depth = -1
    example = None
    steps = 0
    node = nxt[head]
    while True:
        steps += 1
        if steps % _CLOCK_CHECK_EVERY_STEPS == 0 and clock() > deadline_s:
            raise _GaveUp("timeout_s elapsed", explored)
        if is_call[node]:
            i = op_of[node]
            legal, new_state = step(state, ops[i])
            if legal:
                if is_info[i]:
                    c = klass[i]
                    new_returned, new_info = returned_bits, info_bits | (1 << members[c][used[c]])
                else:
                    new_returned, new_info = returned_bits | (1 << i), info_bits
                seen = cache.get((new_returned, new_state))
                if seen is None or not _subsumed(seen, new_info):
                    if explored >= budget:
                        raise _GaveUp("max_explored_states reached", explored)
                    explored += 1
                    if seen is None:
                        cache[(new_returned, new_state)] = [new_info]
                    stack.append((node, state))
                    returned_bits, info_bits, state = new_returned, new_info, new_state
                    ret = match[node]  # unlink the call, then its return
                    nxt[prv[node]] = nxt[node]
                    prv[nxt[node]] = prv[node]
                    nxt[prv[ret]] = nxt[ret]
                    prv[nxt[ret]] = prv[ret]
                    if is_info[i]:
                        used[klass[i]] += 1
                    else:
                        remaining -= 1
                        if remaining == 0:
                            return True, explored, None
                    node = nxt[head]
                    continue
            node = nxt[node]
            continue
        # A return entry of an op not linearized yet: nothing later may go first.
        invariant(node != tail and not is_info[op_of[node]], "search ran past every finite return")
        if len(stack) > best_depth:
            best_depth = len(stack)
            example = _counterexample(key, ops, stack, state, node, nxt, is_call, op_of)
        if not stack:
            invariant(returned_bits == 0 and info_bits == 0 and not any(used), "backtracking left ops linearized")
            return False, explored, example
        node, state = stack.pop()
        i = op_of[node]
        if is_info[i]:
            c = klass[i]
            used[c] -= 1
            info_bits ^= 1 << members[c][used[c]]
        else:
            returned_bits ^= 1 << i
            remaining += 1
        ret = match[node]  # relink in reverse order of unlinking
        nxt[prv[ret]] = ret
        prv[nxt[ret]] = ret
        nxt[prv[node]] = node
        prv[nxt[node]] = node
        node = nxt[node]


def _info_classes(ops, call_node: list[int]) -> tuple[list[int], list[list[int]]]:
    """Group info ops that are interchangeable: same ``f``, ``key`` and ``value``.

    Returns each op's class (-1 for ops that returned) and each class's
    members in call order. An info op has no output and no return, so once
    two of a class have both been called, which of them took effect does not
    matter; the search therefore only counts how many of each class are
    linearized and names them canonically by the earliest calls.
    """
    klass = [-1] * len(ops)
    by_identity: dict[Any, int] = {}
    members: list[list[int]] = []
    for i in sorted(range(len(ops)), key=lambda j: call_node[j]):
        op = ops[i]
        if op.status != "info":
            continue
        try:
            identity = (op.f, op.key, op.value)
            c = by_identity.setdefault(identity, len(members))
        except TypeError:  # an unhashable value: a class of its own
            c = len(members)
        if c == len(members):
            members.append([])
        members[c].append(i)
        klass[i] = c
    return klass, members


def _subsumed(seen: list[int], info: int) -> bool:
    """Is a configuration with linearized info set ``info`` covered by one in ``seen``?

    Lowe's cache prunes a configuration equal to one already explored. With
    info ops it also prunes one that differs only by *more* linearized info
    ops: an info op never has to take effect, so every completion of the
    larger configuration also completes the smaller one, which was (or is
    being) explored. Otherwise ``info`` joins ``seen``, which keeps the
    minimal sets only.
    """
    for old in seen:
        if old & info == old:  # old is a subset of info
            return True
    seen[:] = [old for old in seen if old & info != info]
    seen.append(info)
    return False


def _counterexample(key, ops, stack, state, blocked_node, nxt, is_call, op_of) -> Counterexample:
    """Snapshot of the search where it is stuck: the prefix so far and what could come next."""
    candidates = []
    node = nxt[0]
    while node != blocked_node:
        if is_call[node]:
            candidates.append(ops[op_of[node]])
        node = nxt[node]
    return Counterexample(
        key=key,
        prefix=tuple(ops[op_of[call]] for call, _ in stack),
        state=state,
        blocked=ops[op_of[blocked_node]],
        candidates=tuple(candidates),
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _format_time(t: float) -> str:
    return "inf" if t == math.inf else f"{t:.6f}"


def _format_op(op: Operation, model: Any) -> str:
    """One line per op: process, call and outcome (in the model's words), interval."""
    describe_op = getattr(model, "describe_op", None)
    if describe_op is not None:
        text = describe_op(op)
    else:
        outcome = repr(op.output) if op.status == "ok" else f"? ({op.status})"
        text = f"{op.f}({op.key!r}, {op.value!r}) -> {outcome}"
    return f"op {op.op_id} by process {op.process!r}: {text}  [{_format_time(op.call_s)}, {_format_time(op.return_s)}]"


def describe(result: CheckResult, model: Model = KV_MODEL) -> str:
    """A human-readable report of ``result``; ``model`` only formats the ops."""
    verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown (the check gave up)"}[result.ok]
    lines = [
        f"history is {verdict}: {_count(result.ops_checked, 'op')} in {_count(len(result.per_key), 'partition')}, "
        f"{_count(result.explored_states, 'state')} explored in {result.elapsed_s * 1000:.1f} ms"
    ]
    if result.timed_out:
        lines.append(f"gave up: {result.stop_reason}")
    bad = [k for k, v in result.per_key.items() if v is False]
    unknown = [k for k, v in result.per_key.items() if v is None]
    if bad:
        lines.append(f"non-linearizable keys: {', '.join(repr(k) for k in bad)}")
    if unknown:
        lines.append(f"unchecked keys: {', '.join(repr(k) for k in unknown)}")
    ce = result.counterexample
    if ce is not None:
        lines.append(f"key {ce.key!r}: longest linearizable prefix ({_count(len(ce.prefix), 'op')}):")
        lines.extend(f"  {n}. {_format_op(op, model)}" for n, op in enumerate(ce.prefix, start=1))
        lines.append(f"state after the prefix: {ce.state!r}")
        lines.append("then no op can be placed; it must be one of:")
        lines.extend(f"  - {_format_op(op, model)}" for op in ce.candidates)
        lines.append(f"and this op returned before any order worked: {_format_op(ce.blocked, model)}")
    return "\n".join(lines)
