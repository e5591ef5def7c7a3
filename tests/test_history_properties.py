"""Checker properties: real executions pass, corrupted ones fail, and a brute force agrees.

The generators build histories from a sequential execution of the key-value
model: every op gets a linearization point, its interval is drawn around that
point, and its output is what the model returned there. Such a history is
linearizable by construction.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from hypothesis import assume, given, settings, strategies as st

from ddia_ray.history import KV_MODEL, Operation, check, describe

INF = math.inf
FUNCTIONS = ("read", "write", "cas", "delete")
NEVER_WRITTEN = "never-written"


def _apply(state: dict, f: str, key, value):
    """Run one op on a dict and return its output (the reference semantics)."""
    current = state.get(key)
    if f == "read":
        return current
    if f == "write":
        state[key] = value
    elif f == "delete":
        state.pop(key, None)
    else:
        ok = current == value[0]
        if ok:
            state[key] = value[1]
        return ok
    return None


def _value_for(f: str, draw_value):
    if f in ("read", "delete"):
        return None
    if f == "cas":
        return (draw_value(allow_none=True), draw_value())
    return draw_value()


@st.composite
def linearizable_histories(draw, max_ops=40):
    """Ops with linearization points 0, 1, 2, ... and intervals drawn around them.

    Some ops end as ``info`` (half of them took effect), some as ``fail``
    (never took effect, whatever output they claim).
    """
    n = draw(st.integers(1, max_ops))
    keys = ["a", "b", "c"][: draw(st.integers(1, 3))]
    spread = st.integers(0, 12).map(lambda k: k / 4)  # quarter steps: equal times happen often

    def value(allow_none=False):
        return draw(st.one_of(st.none(), st.integers(0, 3)) if allow_none else st.integers(0, 3))

    state: dict = {}
    ops = []
    for i in range(n):
        f = draw(st.sampled_from(FUNCTIONS))
        key = draw(st.sampled_from(keys))
        arg = _value_for(f, value)
        call_s, return_s = i - draw(spread), i + draw(spread)
        outcome = draw(st.sampled_from(("ok",) * 6 + ("info-applied", "info-lost", "fail")))
        if outcome in ("ok", "info-applied"):
            output = _apply(state, f, key, arg)
        else:
            output = draw(st.sampled_from((True, False))) if f == "cas" else value()
        if outcome.startswith("info"):
            ops.append(Operation(i, i, f, key, arg, None, call_s, INF, "info"))
        elif outcome == "fail":
            ops.append(Operation(i, i, f, key, arg, output if f in ("read", "cas") else None, call_s, return_s, "fail"))
        else:
            ops.append(Operation(i, i, f, key, arg, output, call_s, return_s, "ok"))
    return ops


@settings(max_examples=150, deadline=None)
@given(linearizable_histories())
def test_histories_of_sequential_executions_are_linearizable(ops):
    result = check(ops)
    assert result.ok is True, describe(result)
    assert result.counterexample is None
    assert set(result.per_key) == {o.key for o in ops if o.status != "fail"}


@settings(max_examples=150, deadline=None)
@given(linearizable_histories(), st.data())
def test_a_read_of_a_value_never_written_is_caught(ops, data):
    reads = [k for k, o in enumerate(ops) if o.f == "read" and o.status == "ok"]
    assume(reads)
    k = data.draw(st.sampled_from(reads))
    ops[k] = dataclasses.replace(ops[k], output=NEVER_WRITTEN)
    result = check(ops)
    assert result.ok is False
    assert result.per_key[ops[k].key] is False
    ce = result.counterexample
    assert ce.key == ops[k].key
    assert ops[k] in ce.candidates  # the corrupted read is among the ops that could not be placed


# --- the search agrees with brute force on small histories ------------------------


@st.composite
def small_histories(draw):
    """Up to 6 ops with arbitrary (often wrong) outputs, ties, info ops and event indices.

    Events are laid out as a random interleaving (each op's call before its
    return) with times that advance by 0 or 1 per event, so equal times are
    common; with ``indexed`` each op also carries its event positions.
    """
    n = draw(st.integers(1, 6))
    order = draw(st.permutations([i for i in range(n) for _ in (0, 1)]))
    steps = draw(st.lists(st.integers(0, 1), min_size=2 * n, max_size=2 * n))
    times = list(itertools.accumulate(steps))
    indexed = draw(st.booleans())
    call_at, return_at = {}, {}
    for pos, i in enumerate(order):
        (return_at if i in call_at else call_at)[i] = pos
    ops = []
    for i in range(n):
        f = draw(st.sampled_from(FUNCTIONS))
        key = draw(st.sampled_from(("a", "b")))
        arg = _value_for(f, lambda allow_none=False: draw(st.sampled_from((None, 1, 2) if allow_none else (1, 2))))
        status = draw(st.sampled_from(("ok", "ok", "ok", "info", "fail")))
        output = {"read": draw(st.sampled_from((None, 1, 2))), "cas": draw(st.booleans())}.get(f)
        info = status == "info"
        ops.append(Operation(
            i, i, f, key, arg, None if info else output,
            float(times[call_at[i]]), INF if info else float(times[return_at[i]]), status,
            call_index=call_at[i] if indexed else None,
            return_index=return_at[i] if indexed and not info else None,
        ))
    return ops


def _precedes(a: Operation, b: Operation) -> bool:
    """Real-time order: ``a`` returned before ``b`` was called (ties as the checker documents)."""
    if a.call_index is not None and b.call_index is not None:
        if a.return_index is None:
            return False
        return (a.return_s, a.return_index) < (b.call_s, b.call_index)
    return a.return_s < b.call_s


def _brute_force(ops) -> bool:
    """Try every order of every subset of the info ops over the whole map (no partitioning)."""
    ops = [o for o in ops if o.status != "fail"]

    def search(left: tuple, state: dict) -> bool:
        if all(o.status == "info" for o in left):
            return True
        for o in left:
            if any(_precedes(p, o) for p in left if p is not o):
                continue
            legal, value = KV_MODEL.step(state.get(o.key), o)
            if legal and search(tuple(p for p in left if p is not o), {**state, o.key: value}):
                return True
        return False

    return search(tuple(ops), {})


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_search_agrees_with_brute_force(ops):
    assert check(ops).ok is _brute_force(ops)


@settings(max_examples=300, deadline=None)
@given(small_histories(), st.data())
def test_copies_of_info_ops_are_judged_like_distinct_ops(ops, data):
    # The checker counts interchangeable info ops instead of naming them: copies
    # invoked at other times must still be judged exactly like distinct ops.
    infos = [o for o in ops if o.status == "info"]
    assume(infos)
    plain = [dataclasses.replace(o, call_index=None, return_index=None) for o in ops]
    last_s = max(o.call_s for o in ops) + 1
    copies = data.draw(st.lists(st.tuples(st.sampled_from(infos), st.integers(0, int(last_s))), min_size=1, max_size=3))
    extra = [
        dataclasses.replace(twin, op_id=100 + k, process=100 + k, call_s=float(call_s), call_index=None)
        for k, (twin, call_s) in enumerate(copies)
    ]
    history = plain + extra
    assert check(history).ok is _brute_force(history)


# --- a realistic concurrent workload ------------------------------------------------


def _concurrent_workload(rng: random.Random, n_ops: int, n_keys: int, n_processes: int, info_rate: float):
    """Closed-loop clients against an atomic store: each op takes effect at a random point of its interval."""
    free_s = [0.0] * n_processes
    planned = []
    for i in range(n_ops):
        p = min(range(n_processes), key=free_s.__getitem__)
        call_s = free_s[p] + rng.uniform(0.0, 0.3)
        return_s = call_s + rng.uniform(0.05, 2.0)
        free_s[p] = return_s
        f = rng.choice(("read", "read", "write", "cas", "delete"))
        arg = _value_for(f, lambda allow_none=False: rng.choice((None, 0, 1, 2, 3) if allow_none else (0, 1, 2, 3)))
        info = rng.random() < info_rate
        applied = not info or rng.random() < 0.5
        planned.append((rng.uniform(call_s, return_s), i, p, f, "k%d" % rng.randrange(n_keys), arg, call_s, return_s,
                        info, applied))
    state: dict = {}
    ops = []
    for _, i, p, f, key, arg, call_s, return_s, info, applied in sorted(planned):
        output = _apply(state, f, key, arg) if applied else None
        if info:
            ops.append(Operation(i, p, f, key, arg, None, call_s, INF, "info"))
        else:
            ops.append(Operation(i, p, f, key, arg, output, call_s, return_s, "ok"))
    return sorted(ops, key=lambda o: o.op_id)


def test_300_ops_3_keys_5_processes_check_quickly():
    for seed in range(20):
        rng = random.Random(seed)
        ops = _concurrent_workload(rng, n_ops=300, n_keys=3, n_processes=5, info_rate=0.03)
        result = check(ops, timeout_s=10)
        assert result.ok is True, describe(result)
        # The cache keeps the work close to one state per op: far from the exponential worst case.
        assert result.explored_states <= 3 * len(ops), (seed, result.explored_states)
        reads = [k for k, o in enumerate(ops) if o.f == "read" and o.status == "ok"]
        k = rng.choice(reads)
        ops[k] = dataclasses.replace(ops[k], output=NEVER_WRITTEN)
        broken = check(ops, timeout_s=10)
        assert broken.ok is False
        assert broken.explored_states <= 50 * len(ops), (seed, broken.explored_states)
