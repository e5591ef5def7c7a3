"""Dotted version vectors (clocks/dotted.py) against a reference model of whole causal histories.

The model gives every write a dot and its full causal history (the set of dots the read it was
based on knew, plus its own); a replica knows a set of dots; its siblings must be exactly the
known writes that no other known write happened after (DDIA 5.5 "Capturing the happens-before
relationship"). DDIA_DVV_EXAMPLES raises the number of generated runs for long campaigns.
"""

from __future__ import annotations

import os
import pickle

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ddia_ray.clocks import Dot, DVVSet, Ordering, VectorClock
from ddia_ray.clocks.dotted import COUNTER_MAX, NODES_MAX, VALUES_MAX
from ddia_ray.codec import FORMAT_1, decode, encode
from ddia_ray.errors import CorruptRecordError, DdiaRayError, InvalidArgumentError
from ddia_ray.replication.resolvers import Sibling

EXAMPLES = int(os.environ.get("DDIA_DVV_EXAMPLES", "200"))
NODES = ("a", "b", "c")
model_settings = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# An operation: ("write", context index, coordinator), ("sync", source, destination) or ("read", replica);
# indices are taken modulo what exists when the operation runs.
ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 50), st.integers(0, 2)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("read"), st.integers(0, 2), st.just(0)),
), max_size=40)


class Cluster:
    """Three replicas of one key, each a DVVSet beside the reference model's set of known dots."""

    def __init__(self):
        self.states = [DVVSet() for _ in NODES]
        self.known: list[frozenset] = [frozenset() for _ in NODES]
        self.history: dict[tuple, frozenset] = {}  # dot -> every dot of its causal past, itself included
        self.value: dict[tuple, int] = {}
        self.reads = [(VectorClock(), frozenset())]  # (context, dots it knew): index 0 is a blind write
        self.seen: list[DVVSet] = [DVVSet()]  # every state reached, for the algebraic laws

    def write(self, ctx_index: int, r: int) -> None:
        context, knew = self.reads[ctx_index % len(self.reads)]
        old = self.states[r]
        new = old.update(DVVSet.new(len(self.value), context), NODES[r])
        # The new dot is the coordinator's next counter: one above both its own and the context's.
        counter = new.context().get(NODES[r])
        assert counter == max(old.context().get(NODES[r]), context.get(NODES[r])) + 1
        dot = (NODES[r], counter)
        assert dot not in self.history
        self.history[dot] = knew | {dot}
        self.value[dot] = len(self.value)
        self.known[r] = self.known[r] | knew | {dot}
        self.states[r] = new
        assert new.sync(old) == new and old.sync(new) == new  # update then sync with the old state is the update
        assert new.descends(old) and not old.descends(new)

    def sync(self, src: int, dst: int) -> None:
        self.states[dst] = self.states[dst].sync(self.states[src])
        self.known[dst] = self.known[dst] | self.known[src]

    def run(self, operations) -> None:
        for op, x, y in operations:
            if op == "write":
                self.write(x, y)
            elif op == "sync":
                self.sync(x, y)
            else:
                self.reads.append((self.states[x].context(), self.known[x]))
            self.seen.extend(self.states)
            for r in range(len(NODES)):
                self.check(r)

    def maximal(self, dots: frozenset) -> dict:
        """The writes among ``dots`` that no other write among them happened after."""
        superseded = set().union(*(self.history[d] - {d} for d in dots)) if dots else set()
        return {d: self.value[d] for d in dots - superseded}

    def check(self, r: int) -> None:
        state = self.states[r]
        siblings = {(dot.node, dot.counter): v for dot, v in state.dotted_values()}
        assert siblings == self.maximal(self.known[r]), (r, state)
        assert not state.anonymous and state.size() == len(siblings)
        vv: dict[str, int] = {}
        for node, counter in self.known[r]:
            vv[node] = max(vv.get(node, 0), counter)
        assert state.context() == VectorClock(vv)


def _converge(cluster: Cluster) -> None:
    for _ in range(2):  # two rounds of everyone-to-everyone reach every replica with every dot
        for src in range(len(NODES)):
            for dst in range(len(NODES)):
                cluster.sync(src, dst)


@model_settings
@given(ops)
def test_siblings_are_exactly_the_concurrent_writes(operations):
    cluster = Cluster()
    cluster.run(operations)
    _converge(cluster)
    assert cluster.states[0] == cluster.states[1] == cluster.states[2]
    cluster.check(0)
    assert set(cluster.maximal(cluster.known[0])) == set(cluster.maximal(frozenset(cluster.history)))


@model_settings
@given(ops, st.data())
def test_sync_is_a_semilattice_join_on_reachable_states(operations, data):
    cluster = Cluster()
    cluster.run(operations)
    pick = st.sampled_from(cluster.seen)
    x, y, z = data.draw(pick), data.draw(pick), data.draw(pick)
    assert x.sync(y) == y.sync(x)
    assert x.sync(y).sync(z) == x.sync(y.sync(z))
    assert x.sync(x) == x and x.sync(y).sync(y) == x.sync(y)
    xy = x.sync(y)
    assert xy.descends(x) and xy.descends(y)
    # On reachable states the context decides causality: descends is exactly "context includes".
    assert x.descends(y) == (x.context().compare(y.context()) in (Ordering.AFTER, Ordering.EQUAL))
    assert x.concurrent(y) == (x.context().compare(y.context()) is Ordering.CONCURRENT)
    assert decode(encode(x), expect=DVVSet) == x and pickle.loads(pickle.dumps(x)) == x


def test_dvvset_reference_vectors():
    """dvvset.erl's own update_test and sync_test, transcribed."""
    a0 = DVVSet().update(DVVSet.new("v1"), "a")
    a1 = a0.update(DVVSet.new("v2", a0.context()), "a")
    assert a0 == DVVSet((("a", 1, ("v1",)),)) and a1 == DVVSet((("a", 2, ("v2",)),))
    assert a1.update(DVVSet.new("v3", a1.context()), "b") == DVVSet((("a", 2, ()), ("b", 1, ("v3",))))
    assert a1.update(DVVSet.new("v4", a0.context()), "b") == DVVSet((("a", 2, ("v2",)), ("b", 1, ("v4",))))
    assert a1.update(DVVSet.new("v5", a0.context()), "a") == DVVSet((("a", 3, ("v5", "v2")),))
    w, z = DVVSet((("a", 1, ()),)), DVVSet((("a", 2, ("v2", "v1")),))
    assert w.sync(z) == z.sync(w) == DVVSet((("a", 2, ("v2",)),))
    a3 = a1.update(DVVSet.new("v3", a1.context()), "b")
    a4 = a1.update(DVVSet.new("v3", a1.context()), "c")
    assert a3.sync(a4) == a4.sync(a3) == DVVSet((("a", 2, ()), ("b", 1, ("v3",)), ("c", 1, ("v3",))))


def test_reading_a_state():
    s = DVVSet((("a", 3, ("a3", "a2")), ("b", 1, ("b1",))), ("anon",))
    assert s.values() == ("a3", "a2", "b1", "anon") and s.size() == 4
    assert s.dotted_values() == ((Dot("a", 3), "a3"), (Dot("a", 2), "a2"), (Dot("b", 1), "b1"), (None, "anon"))
    assert s.context() == VectorClock({"a": 3, "b": 1})
    assert s.covers(Dot("a", 1)) and s.covers(Dot("b", 1)) and not s.covers(Dot("b", 2))
    assert not s.covers(Dot("c", 1))
    assert s.map_values(str.upper).dotted_values()[1] == (Dot("a", 2), "A2")
    assert DVVSet().size() == 0 and DVVSet().context() == VectorClock()


# --- sibling explosion ---------------------------------------------------------------------------


class PerReplicaVersionVector:
    """The pre-DVV baseline: one version vector per key (one entry per replica) over all its values.

    A write whose context includes the key's vector replaces every value; any other write is added
    beside them, since values carry no clocks of their own to say which of them it supersedes."""

    def __init__(self):
        self.clock, self.values = VectorClock(), ()

    def put(self, value, context: VectorClock, node: str) -> VectorClock:
        if context.compare(self.clock) in (Ordering.AFTER, Ordering.EQUAL):
            self.values = (value,)
        else:
            self.values += (value,)
        self.clock = self.clock.merge(context).increment(node)
        return self.clock


def _interleaved_writes(writers: int, order) -> tuple[list, list]:
    """Each writer keeps writing through coordinator "a" with the context its own last write returned.
    Returns the sibling counts after each write, for DVVSet and for the baseline."""
    dvv, baseline = DVVSet(), PerReplicaVersionVector()
    dvv_ctx = [VectorClock()] * writers
    base_ctx = [VectorClock()] * writers
    dvv_sizes, base_sizes = [], []
    for i, w in enumerate(order):
        dvv = dvv.update(DVVSet.new((w, i), dvv_ctx[w]), "a")
        dvv_ctx[w] = dvv.context()
        base_ctx[w] = baseline.put((w, i), base_ctx[w], "a")
        dvv_sizes.append(dvv.size())
        base_sizes.append(len(baseline.values))
    return dvv_sizes, base_sizes


def test_no_sibling_explosion_where_per_replica_version_vectors_explode():
    dvv, baseline = _interleaved_writes(2, [0, 1] * 20)
    assert max(dvv) == 2  # one sibling per concurrent writer, however long they go on
    assert baseline == list(range(1, 41))  # every write piles up beside all the others


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(2, 4).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), max_size=40))))
def test_siblings_stay_at_most_the_number_of_concurrent_writers(case):
    writers, order = case
    dvv, baseline = _interleaved_writes(writers, order)
    assert all(size <= writers for size in dvv)
    assert all(d <= b for d, b in zip(dvv, baseline))


# --- anonymous values: resolution kept in replicated state ----------------------------------------


def _resolved(state: DVVSet) -> DVVSet:
    """Set-union resolution, as a replica resolving on write would store it."""
    return state.reconcile(lambda values: tuple(sorted(set().union(*values))))


def test_resolution_survives_a_replica_that_superseded_only_part_of_it():
    x = DVVSet().update(DVVSet.new(("x",)), "a")
    xy = x.sync(DVVSet().update(DVVSet.new(("y",)), "b"))
    resolved = _resolved(xy)  # {x, y} -> ("x", "y"), anonymous, context {a: 1, b: 1}
    assert resolved.dotted_values() == ((None, ("x", "y")),) and resolved.context() == xy.context()
    # Elsewhere a client that read only x overwrites it; y is still a sibling there.
    later = xy.update(DVVSet.new(("x2",), x.context()), "a")
    assert sorted(later.values()) == [("x2",), ("y",)]
    merged = resolved.sync(later)
    # dvvset would drop the resolution (its context is strictly older) and y with it (covered): y lost.
    assert sorted(merged.values()) == [("x", "y"), ("x2",)]
    assert merged == later.sync(resolved)


def test_a_client_that_read_the_resolution_supersedes_it():
    xy = DVVSet().update(DVVSet.new(1), "a").sync(DVVSet().update(DVVSet.new(2), "b"))
    resolved = xy.reconcile(sum)
    written = resolved.update(DVVSet.new(4, resolved.context()), "c")
    assert written.values() == (4,)  # no false conflict with the value the client read
    assert resolved.update(DVVSet.new(5), "c").values() == (5, 3)  # a blind write is concurrent with it
    assert written.sync(resolved) == written and written.sync(xy) == written
    unstamped = DVVSet.new(7)  # no context at all: a blind write is concurrent with it, not its successor
    assert sorted(unstamped.update(DVVSet.new(8), "a").values()) == [7, 8]
    # A resolution can itself be stamped as a write: it then supersedes every sibling it merged.
    stamped = xy.update(resolved, "c")
    assert stamped.dotted_values() == ((Dot("c", 1), 3),) and stamped.sync(xy) == stamped


@model_settings
@given(st.lists(st.tuples(st.sampled_from(("write", "sync")), st.integers(0, 2), st.integers(0, 2), st.booleans()),
                max_size=40), st.booleans())
def test_replicas_that_resolve_siblings_converge_and_lose_no_item(operations, lww):
    """Replicas resolve siblings (set union, or last writer) when a step says so, and all of them at the end:
    resolutions then meet unresolved siblings and other resolutions. Each client writes what it read plus a
    new item, so under set union no item may ever be lost; under either, replicas must converge."""
    states = [DVVSet() for _ in NODES]
    items: set = set()
    written: dict[Dot, tuple] = {}  # each write's dot -> its value
    key = lambda v: (len(v), v)  # noqa: E731 - the last writer: the biggest set

    def settle(state: DVVSet, resolve: bool = True) -> DVVSet:
        if state.size() < 2 or not resolve:
            return state
        return state.last_writer(key) if lww else _resolved(state)

    for i, (op, x, y, resolve) in enumerate(operations):
        if op == "write":
            seen = states[(x + 1) % 3]  # the client read a replica, possibly not the coordinator
            value = tuple(sorted(set().union(*seen.values(), {i})))
            items.add(i)
            stamped = states[y].update(DVVSet.new(value, seen.context()), NODES[y])
            written[Dot(NODES[y], stamped.context().get(NODES[y]))] = value
            states[y] = settle(stamped, resolve)
        else:
            merged = states[y].sync(states[x])
            assert merged == states[x].sync(states[y])
            states[y] = settle(merged, resolve)
        if not lww:  # a replica that knows a write holds its items: whoever superseded it kept them
            held = set().union(*states[y].values())
            assert all(set(v) <= held for dot, v in written.items() if states[y].covers(dot)), states[y]
    for _ in range(4):
        for src in range(3):
            for dst in range(3):
                states[dst] = settle(states[dst].sync(states[src]))
    assert states[0] == states[1] == states[2]
    assert states[0].size() <= 1
    if not lww and items:
        assert set(states[0].values()[0]) == items


def test_last_writer_keeps_the_winners_dot_when_it_is_its_nodes_newest():
    s = DVVSet((("a", 2, ("a2", "a1")), ("b", 4, ("b4",))))
    win_b = s.last_writer(lambda v: v == "b4")
    assert win_b == DVVSet((("a", 2, ()), ("b", 4, ("b4",))))
    assert win_b.sync(s) == s.sync(win_b) == win_b  # the losers stay superseded wherever it goes
    # a1 is not a's newest value: it cannot keep dot (a, 1) without (a, 2), so it becomes anonymous.
    win_a1 = s.last_writer(lambda v: v == "a1")
    assert win_a1.dotted_values() == ((None, "a1"),) and win_a1.context() == s.context()
    assert win_a1.sync(s) == s.sync(win_a1) == win_a1
    assert s.last_writer(lambda v: 0).values() == ("a2",)  # a tie: the first in values() order


def test_sync_of_anonymous_values_is_commutative_and_idempotent():
    a = DVVSet.new("p", VectorClock({"a": 1}))
    b = DVVSet.new("q", VectorClock({"b": 1}))
    c = DVVSet.new("r", VectorClock({"a": 1, "b": 1}))
    for x in (a, b, c):
        for y in (a, b, c):
            assert x.sync(y) == y.sync(x) and x.sync(x) == x
    assert a.sync(b).values() == ("p", "q")
    assert a.sync(c).values() == ("r",)  # c's context strictly includes a's, with nothing of a's left
    assert DVVSet((), ("q", "p", "q")) == DVVSet((), ("p", "q"))  # canonical: sorted by encoding, no duplicates


def test_reconcile_and_last_writer_refuse_nothing_and_pass_errors_through():
    with pytest.raises(InvalidArgumentError):
        DVVSet().reconcile(sum)
    with pytest.raises(InvalidArgumentError):
        DVVSet().last_writer(len)
    with pytest.raises(ZeroDivisionError):
        DVVSet.new(1).reconcile(lambda values: 1 / 0)


# --- validation and the codec ---------------------------------------------------------------------


def test_codec_round_trip_with_sibling_records():
    s = DVVSet().update(DVVSet.new(Sibling(b"v", 7, "a")), "a").update(DVVSet.new(Sibling(None, 8, "b")), "b")
    s = DVVSet(s.entries, (Sibling(b"w", 9, "c"), ("plain", {"k": (1, 2)})))
    back = decode(encode(s), expect=DVVSet)
    assert back == s and back.values() == s.values() and back.size() == 4
    assert decode(encode(Dot("a", 3))) == Dot("a", 3)


@pytest.mark.parametrize("make", [
    lambda: DVVSet([("a", 1, ())]),
    lambda: DVVSet((("a", 1),)),
    lambda: DVVSet((("", 1, ()),)),
    lambda: DVVSet((("x" * 257, 1, ()),)),
    lambda: DVVSet(((1, 1, ()),)),
    lambda: DVVSet((("a", 0, ()),)),
    lambda: DVVSet((("a", True, ()),)),
    lambda: DVVSet((("a", 2**63, ()),)),
    lambda: DVVSet((("a", 1, ("v", "w")),)),
    lambda: DVVSet((("a", 1, ["v"]),)),
    lambda: DVVSet((("b", 1, ()), ("a", 1, ()))),
    lambda: DVVSet((("a", 1, ()), ("a", 2, ()))),
    lambda: DVVSet((), [1]),
    lambda: DVVSet((), (object(),)),
    lambda: DVVSet((), ({1: 2},)),
    lambda: Dot("a", 0),
    lambda: Dot("", 1),
    lambda: DVVSet.new(1, {"a": 1}),
    lambda: DVVSet.new(1, VectorClock({"x" * 300: 1})),
    lambda: DVVSet().update(DVVSet(), "a"),
    lambda: DVVSet().update(DVVSet((), (1, 2)), "a"),
    lambda: DVVSet().update(DVVSet.new(1), ""),
    lambda: DVVSet().update("v", "a"),
    lambda: DVVSet().sync(None),
    lambda: DVVSet().descends(VectorClock()),
    lambda: DVVSet((("a", COUNTER_MAX, ()),)).update(DVVSet.new(1), "a"),
    lambda: DVVSet().covers(("a", 1)),
    lambda: DVVSet().reconcile("sum"),
])
def test_bad_input_raises_invalid_argument(make):
    with pytest.raises(InvalidArgumentError):
        make()


def test_bounds_hold_for_results_of_checked_states():
    many = DVVSet(tuple((f"n{i:05d}", 1, (i,)) for i in range(NODES_MAX)))
    other = DVVSet((("zz", 1, (0,)),))
    with pytest.raises(InvalidArgumentError, match="entries"):
        many.sync(other)
    full = DVVSet((("a", VALUES_MAX, tuple(range(VALUES_MAX))),))
    with pytest.raises(InvalidArgumentError, match="values"):
        full.update(DVVSet.new(-1), "b")


def _frame(fields) -> bytes:
    return msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": "clock.dvvset", "v": 1, "f": fields})))


@pytest.mark.parametrize("fields", [
    {"entries": {"a": 1}},
    {"entries": [["a", 1]]},
    {"entries": [["a", -1, []]]},
    {"entries": [["a", 2**64 - 1, []]]},
    {"entries": [["a", 1, [1, 2]]]},
    {"entries": [["b", 1, []], ["a", 1, []]]},
    {"entries": [[b"a", 1, []]]},
    {"entries": [["a", 1.0, []]]},
    {"entries": [["a", False, []]]},
    {"entries": [[f"n{i:05d}", 1, []] for i in range(NODES_MAX + 1)]},
    {"entries": [["a", VALUES_MAX + 1, list(range(VALUES_MAX + 1))]]},
    {"anonymous": {"x": 1}},
    {"anonymous": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]},
    {"entries": [], "extra": 1},
])
def test_decode_of_hostile_shapes_fails_with_a_project_error(fields):
    with pytest.raises(CorruptRecordError):
        decode(_frame(fields))


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(st.binary(max_size=8), st.integers(0, 200), st.integers(0, 255))
def test_decode_of_damaged_bytes_returns_a_valid_state_or_a_project_error(junk, at, byte):
    good = bytearray(encode(DVVSet((("a", 3, ("x", "y")), ("b", 1, ())), ("z",))))
    at %= len(good)
    good[at] = byte
    for data in (bytes(good), bytes(good[:at]) + junk):
        try:
            s = decode(data)
        except DdiaRayError:
            continue
        if isinstance(s, DVVSet):
            assert s == DVVSet(s.entries, s.anonymous)  # whatever decodes passed validation
