"""The text CRDT (our RGA with runs): sequential edits, concurrent edits, runs and waiting blocks.

The oracle for concurrent edits is RGA's definition (Roh et al. 2011): the characters form a
tree, each the child of its origin, and the text is its preorder with siblings in descending id
order. The run-based, linked-list integration must give exactly that text for every replica.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_crdt_convergence import EXAMPLES, Sim

from ddia_ray import crdt

TEXT = settings(max_examples=EXAMPLES * 2, deadline=None)


def edit(rng: random.Random, t: crdt.Text, model: list[str], node: str) -> crdt.Text:
    """One random edit on ``t`` and on the plain-list ``model``; returns the delta."""
    n = len(model)
    r = rng.random()
    if n and r < 0.25:
        i = rng.randrange(n)
        k = rng.randint(1, min(5, n - i))
        del model[i:i + k]
        return t.delete(node, i, k)
    i = n if r < 0.7 else rng.randint(0, n)  # mostly typing at the end, as people do
    s = "".join(rng.choice("abcdefgh\u00e9\U0001f600") for _ in range(rng.randint(1, 4)))
    model[i:i] = s
    return t.insert(node, i, s)


@TEXT
@given(seed=st.integers(0, 2**32 - 1))
def test_sequential_edits_match_a_plain_string(seed):
    rng, t, model = random.Random(seed), crdt.Text(), []
    replica = crdt.Text()
    for _ in range(80):
        delta = edit(rng, t, model, "a")
        assert t.value() == "".join(model) and len(t) == len(model)
        replica.merge(delta)
    check_structure(t)
    check_structure(replica)
    assert replica == t and replica.value() == t.value()
    back = crdt.decode(crdt.encode(t))
    check_structure(back)
    assert back == t


def check_structure(t: crdt.Text) -> None:
    """The text's indexes agree with its blocks: chunk lengths, chunk links, the id index, the length."""
    for ch in t._chunks:
        assert ch and ch.vis == sum(len(b.text) for b in ch if not b.deleted)
        assert all(b.chunk is ch for b in ch)
    assert t._len == sum(ch.vis for ch in t._chunks) == len(t.value())
    for node, (starts, blocks) in t._index.items():
        assert starts == sorted(starts) == [b.start for b in blocks]
        assert all(b.node == node and b.start + len(b.text) <= s for b, s in zip(blocks, starts[1:]))
    assert {id(b) for b in t._blocks()} == {id(b) for _, bs in t._index.values() for b in bs}


def rga_oracle(t: crdt.Text) -> str:
    """The text RGA defines for ``t``'s characters: preorder of the origin tree, siblings by descending id."""
    children: dict = {}
    chars = {}
    deleted = set()
    for s, node, text, origin, dead in t._rows():
        for k, ch in enumerate(text):
            cid = (s + k, node)
            chars[cid] = ch
            children.setdefault(origin if k == 0 else (s + k - 1, node), []).append(cid)
            if dead:
                deleted.add(cid)
    deleted |= {(c, node) for node, (starts, ends) in t._orphans.items() for s, e in zip(starts, ends)
                for c in range(s, e + 1)}
    out, stack = [], sorted(children.get(None, []))  # ascending, so the greatest pops first
    while stack:
        cid = stack.pop()
        if cid not in deleted:
            out.append(chars[cid])
        stack.extend(sorted(children.get(cid, [])))
    return "".join(out)


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_concurrent_edits_give_rga_order_at_every_replica(seed):
    sim = Sim("text", seed, steps=80)
    sim.run()
    for s in sim.states:
        if not s._pending:
            assert s.value() == rga_oracle(s)
    sim.heal()
    for s in sim.states:
        check_structure(s)
    assert all(s == sim.states[0] for s in sim.states)
    assert sim.states[0].value() == rga_oracle(sim.states[0])


def test_concurrent_runs_at_one_position_do_not_interleave():
    a, b = crdt.Text(), crdt.Text()
    b.merge(a.insert("a", 0, "[]"))
    da = a.insert("a", 1, "hello")
    db = b.insert("b", 1, "world")
    a.merge(db)
    b.merge(da)
    assert a.value() == b.value() and a.value() in ("[helloworld]", "[worldhello]")


def test_a_typing_trace_is_one_block_at_the_writer_and_at_a_replica():
    t, r = crdt.Text(), crdt.Text()
    for i in range(1000):
        r.merge(t.insert("a", i, "x"))
    assert len(t._blocks()) == len(r._blocks()) == 1  # a single run each
    assert len(crdt.encode(t)) < 1100


def test_deltas_in_reverse_order_wait_for_their_origins():
    t = crdt.Text()
    deltas = [t.insert("a", i, c) for i, c in enumerate("hello")]
    deltas.append(t.delete("a", 1, 3))
    deltas.append(t.insert("a", 2, "y"))
    r = crdt.Text()
    for d in reversed(deltas):
        r.merge(d)
    assert r == t and r.value() == t.value() == "hoy"
    assert not r._pending


def test_a_delete_before_the_insert_arrives_is_applied_on_arrival():
    t = crdt.Text()
    d1 = t.insert("a", 0, "abcdef")
    d2 = t.delete("a", 2, 2)
    r = crdt.Text()
    r.merge(d2)
    assert r.value() == ""
    r.merge(d1)
    assert r.value() == "abef" == t.value()


def test_states_split_differently_merge_to_the_same_text():
    a = crdt.Text()
    d = a.insert("a", 0, "abcdefgh")
    b = crdt.Text().merge(d)
    b.insert("b", 4, "XY")  # splits b's copy of the run
    a.delete("a", 1, 2)  # splits a's copy elsewhere
    ab, ba = crdt.merge(a, b), crdt.merge(b, a)
    assert ab == ba and ab.value() == "adXYefgh"


def test_index_positions_count_code_points():
    t = crdt.Text()
    t.insert("a", 0, "\U0001f600\U0001f600")
    t.insert("a", 1, "-")
    assert t.value() == "\U0001f600-\U0001f600" and len(t) == 3
    t.delete("a", 0, 1)
    assert t.value() == "-\U0001f600"


def test_empty_edits_have_empty_deltas():
    t = crdt.Text()
    t.insert("a", 0, "abc")
    assert t.insert("a", 1, "") == crdt.Text() and t.delete("a", 1, 0) == crdt.Text()
    assert t.value() == "abc"


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_small_chunks_change_nothing(seed):
    """The chunked document list (cut at CHUNK_MAX blocks) gives the same texts when chunks are tiny."""
    from ddia_ray.crdt import runs

    saved = runs.CHUNK_MAX
    runs.CHUNK_MAX = 2
    try:
        rng, t, model, replica = random.Random(seed), crdt.Text(), [], crdt.Text()
        for _ in range(60):
            replica.merge(edit(rng, t, model, "a"))
            assert t.value() == "".join(model)
            check_structure(t)
            check_structure(replica)
        assert replica == t and len(t._chunks) > 3
        sim = Sim("text", seed, steps=80)
        sim.run()
        sim.heal()
        for s in sim.states:
            check_structure(s)
        assert all(s == sim.states[0] for s in sim.states)
        assert sim.states[0].value() == rga_oracle(sim.states[0])
    finally:
        runs.CHUNK_MAX = saved


def _shuffled_rows(t: crdt.Text, rng: random.Random) -> bytes:
    """``t``'s encoding with its blocks in a random order (a valid, non-canonical payload)."""
    from ddia_ray import codec
    from ddia_ray.crdt.base import CRDTState

    p = t._payload()
    nn = p[0]
    nb = p[1 + nn]
    start = 2 + nn
    rows = [p[i:i + 6] for i in range(start, start + 6 * nb, 6)]
    rng.shuffle(rows)
    return codec.encode(CRDTState("text", 1, p[:start] + tuple(x for r in rows for x in r) + p[start + 6 * nb:]))


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_decoding_takes_blocks_in_any_order(seed):
    """Canonical bytes are placed in one pass (the document order is only checked); any other order of
    the same blocks falls back to integration and gives the same state."""
    sim = Sim("text", seed, steps=80)
    sim.run()
    sim.heal()
    t = sim.states[0]
    linked = len(t._blocks())
    fresh = crdt.Text()
    rows = [r for r in t._rows() if r[3] is None or t._find(r[3][1], r[3][0]) is not None]
    assert fresh._place_in_order(rows) == len(rows) or linked == 0
    back = crdt.decode(crdt.encode(t))
    check_structure(back)
    assert back == t
    shuffled = crdt.decode(_shuffled_rows(t, random.Random(seed)))
    check_structure(shuffled)
    assert shuffled == t and shuffled.value() == t.value()


def _payload_of(rows: list[tuple]) -> bytes:
    """Text bytes holding ``rows`` of ``(start, node, text, origin)`` in the order given."""
    from ddia_ray import codec
    from ddia_ray.crdt.base import CRDTState

    nodes = sorted({r[1] for r in rows} | {r[3][1] for r in rows if r[3]})
    flat = []
    for s, node, text, origin in rows:
        flat += [nodes.index(node), s, text, -1 if origin is None else nodes.index(origin[1]),
                 0 if origin is None else origin[0], False]
    return codec.encode(CRDTState("text", 1, (len(nodes), *nodes, len(rows), *flat, 0)))


def test_decoding_checks_sibling_order_before_trusting_the_given_order():
    # two first characters typed concurrently: the greater id, (1, "b"), comes first
    assert crdt.decode(_payload_of([(1, "b", "y", None), (1, "a", "x", None)])).value() == "yx"
    assert crdt.decode(_payload_of([(1, "a", "x", None), (1, "b", "y", None)])).value() == "yx"
    # two children of one character
    base = (1, "m", "m", None)
    assert crdt.decode(_payload_of([base, (2, "b", "B", (1, "m")), (2, "a", "A", (1, "m"))])).value() == "mBA"
    assert crdt.decode(_payload_of([base, (2, "a", "A", (1, "m")), (2, "b", "B", (1, "m"))])).value() == "mBA"
    # a child inside a run whose id beats the run's next character: it goes between them
    assert crdt.decode(_payload_of([(1, "n", "a", None), (2, "z", "Z", (1, "n")), (2, "n", "bc", (1, "n"))])).value() \
        == "aZbc"
    assert crdt.decode(_payload_of([(1, "n", "abc", None), (2, "z", "Z", (1, "n"))])).value() == "aZbc"
