"""Strong eventual consistency of every CRDT kind under hostile delivery (ddia_ray.crdt).

A seeded simulation runs 3-4 replicas of one kind: each step is either a random operation at a
replica (its delta, and now and then the replica's whole state, go into a message pool) or the
delivery of a random message from the pool to a replica. Messages are delivered in any order, any
number of times, and partitioned replicas receive nothing until the partition heals. Checked:

* replicas that have merged the same set of updates hold equal states and equal values, at every
  step (a delta-CRDT state is the join of the deltas it has received);
* after the partition heals and every message reaches every replica, all replicas are equal;
* merge is commutative, associative and idempotent on the states and deltas met on the way, and
  ``crdt.merge`` changes neither argument;
* the converged value matches the kind's specification, computed from the operations and their
  causal pasts: counters sum, a 2P-Set holds what was added and never removed, LWW keeps the
  highest ``(timestamp, node)``; and, when messages are delivered in causal order, an OR-Set (and
  an OR-Map's key set) keeps an add that no remove observed and an MV-Register holds exactly the
  assignments no other one observed.

``DDIA_CRDT_EXAMPLES`` sets the number of seeds per kind (default 25) and ``DDIA_CRDT_STEPS`` the steps
of each simulation (default 60), for a longer campaign.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddia_ray import crdt
from ddia_ray.crdt.base import item_key
from ddia_ray.errors import CRDTTypeError, InvalidArgumentError

EXAMPLES = int(os.environ.get("DDIA_CRDT_EXAMPLES", "25"))
STEPS = int(os.environ.get("DDIA_CRDT_STEPS", "60"))  # steps per simulation
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ITEMS = (0, 1, "a", "b", b"c", ("t", 1), None, 2.5, True, ("t", (1, "x")))
KEYS = ("k1", "k2", 3)
ALL_KINDS = ("gcounter", "pncounter", "gset", "2pset", "orset", "lww", "mvregister", "ormap", "text")


def random_op(kind: str, rng: random.Random, state: crdt.CRDT, node: str) -> tuple[str, tuple]:
    """A random operation of ``kind`` that makes sense for ``state`` (e.g. a text index within it)."""
    if kind == "gcounter":
        return "increment", (rng.randint(0, 5),)
    if kind == "pncounter":
        return rng.choice(("increment", "decrement")), (rng.randint(0, 5),)
    if kind == "gset":
        return "add", (rng.choice(ITEMS),)
    if kind == "2pset":
        present = sorted(state.value(), key=item_key)
        if present and rng.random() < 0.4:
            return "remove", (rng.choice(present),)
        return "add", (rng.choice(ITEMS),)
    if kind == "orset":
        return rng.choice(("add", "add", "remove")), (rng.choice(ITEMS[:5]),)
    if kind == "lww":
        return "assign", (rng.choice(ITEMS), rng.randint(0, 6))
    if kind == "mvregister":
        return "assign", (rng.choice(ITEMS),)
    if kind == "ormap":
        key = rng.choice(KEYS)
        if rng.random() < 0.25:
            return "remove", (key,)
        nested = rng.choice(("pncounter", "orset", "mvregister", "pncounter"))
        if nested == "pncounter":
            return "update", (key, nested, rng.choice(("increment", "decrement")), rng.randint(1, 3))
        if nested == "orset":
            return "update", (key, nested, rng.choice(("add", "remove")), rng.choice(ITEMS[:4]))
        return "update", (key, nested, "assign", rng.choice(ITEMS[:4]))
    if kind == "text":
        n = len(state.value())
        if n and rng.random() < 0.3:
            i = rng.randrange(n)
            return "delete", (i, rng.randint(1, min(3, n - i)))
        letters = node[-1] * rng.randint(1, 3) + rng.choice("xyz")
        return "insert", (rng.randint(0, n), letters)
    raise AssertionError(kind)


class Sim:
    """Replicas of one kind, a message pool, raw and causal knowledge per replica, and an op log."""

    def __init__(self, kind: str, seed: int, steps: int = STEPS, causal: bool = False) -> None:
        self.kind, self.rng, self.causal = kind, random.Random(seed), causal
        r = self.rng.randint(3, 4)
        self.nodes = [f"n{i}" for i in range(r)]
        self.states = [crdt.new(kind) for _ in range(r)]
        self.raw = [frozenset() for _ in range(r)]  # ids of the ops whose deltas were merged here
        self.past = [frozenset() for _ in range(r)]  # the same, closed under causal pasts
        self.pool: list[tuple[crdt.CRDT, frozenset, frozenset]] = []
        self.log: list[tuple[str, str, tuple, frozenset]] = []  # (node, op, args, past at the op)
        self.samples: list[crdt.CRDT] = []  # states and deltas met, for the lattice laws
        self.steps = steps

    def run(self) -> None:
        rng, n = self.rng, len(self.states)
        partitioned = set(rng.sample(range(n), rng.randint(0, n - 1))) if rng.random() < 0.5 else set()
        heal_at = rng.randrange(self.steps)
        for step in range(self.steps):
            if step == heal_at:
                partitioned = set()
            i = rng.randrange(n)
            if rng.random() < 0.5 or not self.pool:
                self.operate(i)
            elif i not in partitioned:
                ready = [m for m in self.pool if self.deliverable(i, m)]
                if ready:
                    self.deliver(i, rng.choice(ready))
            self.check_equal_knowledge()

    def operate(self, i: int) -> None:
        op, args = random_op(self.kind, self.rng, self.states[i], self.nodes[i])
        before = crdt.encode(self.states[i])
        try:
            _, delta = crdt.apply(self.states[i], self.kind, self.nodes[i], op, args)
        except (CRDTTypeError, InvalidArgumentError):  # a map key of another kind: refused, state untouched
            assert crdt.encode(self.states[i]) == before
            return
        oid = len(self.log)
        self.log.append((self.nodes[i], op, args, self.past[i]))
        self.raw[i] |= {oid}
        self.past[i] |= {oid}
        self.pool.append((delta, frozenset({oid}), self.past[i]))
        self.samples.append(delta)
        if self.rng.random() < 0.2:
            self.pool.append((self.states[i].copy(), self.raw[i], self.past[i]))
        if self.rng.random() < 0.3:
            self.samples.append(self.states[i].copy())

    def deliverable(self, i: int, msg) -> bool:
        """In causal mode, a message waits until the replica holds everything it depends on."""
        return not self.causal or msg[2] - msg[1] <= self.raw[i]

    def deliver(self, i: int, msg) -> None:
        state, raw, past = msg
        self.states[i].merge(state)
        self.raw[i] |= raw
        self.past[i] |= past

    def check_equal_knowledge(self) -> None:
        by_raw: dict[frozenset, int] = {}
        for i, raw in enumerate(self.raw):
            j = by_raw.setdefault(raw, i)
            if j != i:
                assert self.states[i] == self.states[j], (self.kind, i, j)
                assert self.states[i].value() == self.states[j].value()

    def heal(self) -> None:
        """Every message to every replica, each in its own random order, then every state to every replica."""
        for i in range(len(self.states)):
            # the pool is in creation order, a causal order; otherwise any order
            for msg in self.pool if self.causal else self.rng.sample(self.pool, len(self.pool)):
                self.deliver(i, msg)
        for i in range(len(self.states)):
            for j in range(len(self.states)):
                self.states[i].merge(self.states[j].copy())


def expected_value(sim: Sim):
    """The value the kind's specification gives for the ops in ``sim.log`` (None: not specified here)."""
    kind, log = sim.kind, sim.log
    if kind == "gcounter":
        return sum(a[0] for _, _, a, _ in log)
    if kind == "pncounter":
        return sum(a[0] if op == "increment" else -a[0] for _, op, a, _ in log)
    if kind == "gset":
        return frozenset(a[0] for _, _, a, _ in log)
    if kind == "2pset":
        added = {item_key(a[0]): a[0] for _, op, a, _ in log if op == "add"}
        removed = {item_key(a[0]) for _, op, a, _ in log if op == "remove"}
        return frozenset(v for k, v in added.items() if k not in removed)
    if kind == "orset":
        out = {}
        for oid, (_, op, a, _) in enumerate(log):
            if op == "add" and not any(o2 == "remove" and item_key(a2[0]) == item_key(a[0]) and oid in p2
                                       for _, o2, a2, p2 in log):
                out[item_key(a[0])] = a[0]
        return frozenset(out.values())
    if kind == "lww":
        best = max(((a[1], node, item_key(a[0])), a[0]) for node, _, a, _ in log) if log else (None, None)
        return best[1]
    if kind == "mvregister":
        maximal = {item_key(a[0]): a[0] for oid, (_, _, a, _) in enumerate(log)
                   if not any(oid in p2 for _, _, _, p2 in log)}
        return tuple(maximal[k] for k in sorted(maximal))
    if kind == "ormap":  # the keys only: nested values depend on what each updater had seen
        present = set()
        for oid, (_, op, a, _) in enumerate(log):
            if op == "update" and not any(o2 == "remove" and item_key(a2[0]) == item_key(a[0]) and oid in p2
                                          for _, o2, a2, p2 in log):
                present.add(item_key(a[0]))
        return present
    return None


def check_indexes(state: crdt.CRDT) -> None:
    """The OR-Set's and OR-Map's dot -> key index names exactly their live dots."""
    if state.kind == "orset":
        assert state._owner == {d: k for k, (_, dots) in state._entries.items() for d in dots}
    elif state.kind == "ormap":
        assert state._owner == {d: kb for kb, (_, kinds) in state._fields.items()
                                for contribs in kinds.values() for d in contribs}


def check_lattice(samples: list[crdt.CRDT], rng: random.Random) -> None:
    for _ in range(min(12, len(samples))):
        a, b, c = (rng.choice(samples) for _ in range(3))
        before = (crdt.encode(a), crdt.encode(b), crdt.encode(c))
        ab, ba = crdt.merge(a, b), crdt.merge(b, a)
        check_indexes(ab)
        assert ab == ba and ab.value() == ba.value(), "merge is not commutative"
        assert crdt.merge(ab, c) == crdt.merge(a, crdt.merge(b, c)), "merge is not associative"
        assert crdt.merge(a, a) == a and crdt.merge(ab, b) == ab, "merge is not idempotent"
        assert (crdt.encode(a), crdt.encode(b), crdt.encode(c)) == before, "crdt.merge changed an argument"


#: Kinds whose value depends on what each operation had observed: their specification is stated
#: for causal delivery (with deltas out of causal order, a remove observes only the adds it holds).
CAUSAL_SPEC = {"orset", "mvregister", "ormap"}


@pytest.mark.parametrize("causal", [False, True], ids=["any-order", "causal"])
@pytest.mark.parametrize("kind", ALL_KINDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_strong_eventual_consistency(kind, causal, seed):
    sim = Sim(kind, seed, causal=causal)
    sim.run()
    check_lattice(sim.samples, sim.rng)
    sim.heal()
    first = sim.states[0]
    for s in sim.states:
        check_indexes(s)
    for s in sim.states[1:]:
        assert s == first and s.value() == first.value()
        assert crdt.encode(s) == crdt.encode(first), "equal states must encode to equal bytes"
    spec = expected_value(sim) if causal or kind not in CAUSAL_SPEC else None
    if kind == "ormap" and spec is not None:
        assert {item_key(k) for k in first.value()} == spec
    elif spec is not None:
        assert first.value() == spec
    # merging everything once more changes nothing (idempotence of the final state)
    again = first.copy()
    for msg, _, _ in sim.pool:
        again.merge(msg)
    assert again == first


@pytest.mark.parametrize("kind", ALL_KINDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_causal_delivery_gives_the_origin_state(kind, seed):
    """Deltas merged in the order they were made rebuild each origin's state exactly."""
    rng = random.Random(seed)
    origin, replica = crdt.new(kind), crdt.new(kind)
    for _ in range(30):
        op, args = random_op(kind, rng, origin, "n1")
        try:
            _, delta = crdt.apply(origin, kind, "n1", op, args)
        except (CRDTTypeError, InvalidArgumentError):
            continue
        replica.merge(delta)
        assert replica == origin and replica.value() == origin.value()


def test_the_simulation_can_fail():
    """The checks above are not vacuous: a merge that forgets a delta is caught."""
    sim = Sim("gcounter", 7)
    sim.run()
    sim.heal()
    broken = crdt.new("gcounter")
    assert sim.log and any(a[0] for _, _, a, _ in sim.log)
    assert broken != sim.states[0]
