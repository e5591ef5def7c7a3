"""A whole text document merged from bytes: the in-order fast path against plain integration.

A document decoded into an empty replica adopts the order its bytes list once it is checked to be
RGA's (``ddia_ray.crdt.text_place``), and builds its blocks only when first read. These tests hold
that path to the general one, integrating every block in id order: same text, same rows, same
bytes, same state after further edits; the count it places is the longest prefix in RGA's order
(an oracle by the definition); and bytes it must refuse raise a ``ddia_ray.errors`` error.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_crdt_convergence import EXAMPLES, Sim
from test_crdt_text import _general_merge, check_structure, edit

from ddia_ray import codec, crdt
from ddia_ray.crdt import text_place
from ddia_ray.crdt.base import CRDTState
from ddia_ray.crdt.runs import _Block
from ddia_ray.errors import CorruptRecordError, DdiaRayError


def integrated(t: crdt.Text) -> crdt.Text:
    """``t``'s characters and deletions integrated one block at a time in id order: no order trusted."""
    out = crdt.Text()
    for s, node, text, origin, deleted in sorted(t._rows(), key=lambda r: (r[0], r[1])):
        out._integrate(_Block(s, node, text, origin, deleted))
    for node, (starts, ends) in t._orphans.items():
        for s, e in zip(starts, ends):
            out._delete_range(node, s, e)
    out._clock = max(out._clock, t._clock)
    return out


def same(a: crdt.Text, b: crdt.Text) -> None:
    """``a`` and ``b`` hold the same state by every measure the text has."""
    assert a.value() == b.value() and len(a) == len(b)
    assert a._rows() == b._rows() and a == b
    assert crdt.encode(a) == crdt.encode(b)
    check_structure(a)
    check_structure(b)


def document(seed: int) -> crdt.Text:
    """A document of several writers' concurrent edits, healed or not (waiting blocks, orphans)."""
    sim = Sim("text", seed, steps=80)
    sim.run()
    if seed % 3:
        sim.heal()
    return sim.states[seed % len(sim.states)]


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_document_merged_into_an_empty_replica_is_the_integrated_one(seed):
    t = document(seed)
    data = crdt.encode(t)
    fast = crdt.Text().merge_bytes(data)
    assert fast.value() == t.value()  # read from the columns, before any block is built
    same(fast, integrated(t))
    same(crdt.decode(data), t)
    # edits on the built state go where they go on the integrated one
    rng = random.Random(seed)
    a, b = crdt.Text().merge_bytes(data), integrated(t)
    model = list(a.value())
    for _ in range(20):
        node = rng.choice("xy")
        d = edit(rng, a, list(model), node)
        b.merge(d)
        model = list(a.value())
    same(a, b)


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.floats(0, 1))
def test_a_document_merged_into_a_replica_with_part_of_its_history_is_the_integrated_one(seed, cut):
    sim = Sim("text", seed, steps=80)
    sim.run()
    sim.heal()
    whole = sim.states[0]
    rows = whole._rows()
    part = crdt.Text()  # a replica that saw the blocks of a prefix of the id order
    for s, node, text, origin, deleted in sorted(rows, key=lambda r: (r[0], r[1]))[:int(len(rows) * cut)]:
        part._integrate(_Block(s, node, text, origin, deleted))
    data = crdt.encode(whole)
    fast, slow = part.copy(), part.copy()
    fast.merge_bytes(data)
    _general_merge(slow, integrated(whole))
    same(fast, slow)
    same(fast, integrated(whole))
    # and the other way round: the part's bytes merged into a deferred whole document
    back = crdt.Text().merge_bytes(data).merge_bytes(crdt.encode(part))
    same(back, integrated(whole))


def rga_order_prefix(rows: list) -> int:
    """The longest prefix of ``rows`` whose characters are in RGA's order, by the definition: every
    origin earlier in it, and the characters the preorder of their tree with siblings descending."""
    for k in range(len(rows), 0, -1):
        chars, children, seen = [], {}, set()
        ok = True
        for s, node, text, origin, _ in rows[:k]:
            for i in range(len(text)):
                cid = (s + i, node)
                o = origin if i == 0 else (s + i - 1, node)
                if o is not None and o not in seen:
                    ok = False
                seen.add(cid)
                chars.append(cid)
                children.setdefault(o, []).append(cid)
        if not ok:
            continue
        preorder, stack = [], sorted(children.get(None, []))
        while stack:
            cid = stack.pop()
            preorder.append(cid)
            stack.extend(sorted(children.get(cid, [])))
        if preorder == chars:
            return k
    return 0


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), moves=st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)),
                                                      max_size=3))
def test_the_in_order_prefix_is_the_longest_one_in_rga_order(seed, moves):
    """Rows moved about: the placed count is exactly the longest prefix in RGA's order, and the rest
    integrates to the state the rows came from."""
    t = document(seed)
    rows = [r for r in t._rows() if r[3] is None or t._find(r[3][1], r[3][0]) is not None]
    rows = [(s, n, x, o, d) for s, n, x, o, d in rows if t._find(n, s).chunk is not None]  # the placed ones
    for i, j in moves:
        if rows:
            rows.insert(j % len(rows), rows.pop(i % len(rows)))
    fresh = crdt.Text()
    assert fresh._place_in_order(rows) == rga_order_prefix(rows)
    check_structure(fresh)


def test_a_reordered_whole_document_is_integrated_not_trusted():
    t = document(4)
    p = t._payload()
    nn, = p[:1]
    nb = p[1 + nn]
    start = 2 + nn
    rows = [p[i:i + 6] for i in range(start, start + 6 * nb, 6)]
    assert nb > 3
    rows[1], rows[-1] = rows[-1], rows[1]
    data = codec.encode(CRDTState("text", 1, p[:start] + tuple(x for r in rows for x in r) + p[start + 6 * nb:]))
    same(crdt.Text().merge_bytes(data), integrated(t))


def _typed(text: str) -> tuple:
    """The payload of one writer's document, typed with one insertion in the middle: three blocks."""
    t = crdt.Text()
    t.insert("a", 0, text)
    t.insert("a", 2, "XY")
    p = t._payload()
    assert p[2] == 3  # three blocks: "ab", "XY", the rest
    return p


@pytest.mark.parametrize("name, change", [
    ("overlapping ids", lambda p: p[:3] + (p[3], 2) + p[5:]),  # the first block's id range reaches into another's
    ("origin counter 0 inside", lambda p: p[:13] + (0,) + p[14:]),  # "XY"'s origin counter set to 0
    ("a start block with a counter", lambda p: p[:12] + (-1,) + p[13:]),  # "XY" at the start, counter 2 kept
    ("an origin at or after its block", lambda p: p[:13] + (p[10],) + p[14:]),  # "XY"'s origin counter = its start
    ("a bool for an int", lambda p: p[:4] + (True,) + p[5:]),  # the first start as True
    ("a str for a bool", lambda p: p[:8] + ("no",) + p[9:]),  # the first deleted flag as a str
])
def test_a_corrupt_whole_document_is_refused_on_the_fast_path(name, change):
    good = _typed("abcdefgh")
    assert crdt.Text().merge_bytes(codec.encode(CRDTState("text", 1, good))).value() == "abXYcdefgh"
    bad = codec.encode(CRDTState("text", 1, change(good)))
    with pytest.raises(CorruptRecordError):
        crdt.decode(bad, "text")
    with pytest.raises(CorruptRecordError):
        crdt.Text().merge_bytes(bad)


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                      min_size=1, max_size=3))
def test_a_damaged_document_merged_into_an_empty_replica_raises_or_is_what_decode_reads(seed, flips):
    data = bytearray(crdt.encode(document(seed)))
    for at, byte in flips:
        data[at % len(data)] = byte
    try:
        expected = crdt.decode(bytes(data), "text")
    except DdiaRayError as e:
        with pytest.raises(type(e)):
            crdt.Text().merge_bytes(bytes(data))
        return
    got = crdt.Text().merge_bytes(bytes(data))
    same(got, expected)
    same(got, integrated(expected))


def test_a_deferred_document_builds_its_blocks_once_and_copies_stay_apart():
    t = document(7)
    data = crdt.encode(t)
    a = crdt.Text().merge_bytes(data)
    if a._deferred is None:
        pytest.skip("this document has waiting blocks: decoded eagerly")
    b = a.copy()
    c = crdt.Text().merge(a)
    assert b._deferred is a._deferred and c._deferred is a._deferred  # the checked columns, shared
    a.insert("z", 0, "A")
    assert a._deferred is None and b._deferred is not None
    b.insert("z", 0, "B")
    assert a.value() == "A" + t.value() and b.value() == "B" + t.value() and c.value() == t.value()
    same(c, t)
    assert text_place.deferred_value(crdt.decode(data)) == t.value()
