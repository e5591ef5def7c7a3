"""A whole text document merged from bytes: the in-order fast path against plain integration.

A document decoded into an empty replica adopts the order its bytes list once it is checked to be
RGA's (``ddia_ray.crdt.text_place``), and builds its blocks only when first read. These tests hold
that path to the general one, integrating every block in id order: same text, same rows, same
bytes, same state after further edits; the count it places is the longest prefix in RGA's order
(an oracle by the definition); and bytes it must refuse raise a ``ddia_ray.errors`` error.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_crdt_convergence import EXAMPLES, Sim
from test_crdt_text import _general_merge, check_structure, edit

from ddia_ray import codec, crdt
from ddia_ray.crdt import text_place
from ddia_ray.crdt.base import COUNTER_MAX, CRDTState
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


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(arcs=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=8, unique_by=lambda a: a[0]))
def test_the_columns_crossing_test_is_the_pairwise_one(arcs):
    """``_nested`` (all arcs at once) against the definition: arcs ``(l, r)``, ``l < r - 1``, in
    order of ``r``; two cross when ``l1 < l2 < r1 < r2``; shared left ends and touching ends do not."""
    rights = [r + 2 for r, _ in sorted(arcs)]
    lefts = [-1 + x % (r + 1) for r, x in zip(rights, (x for _, x in sorted(arcs)))]
    crossing = any(lefts[i] < lefts[j] < rights[i] for j in range(len(rights)) for i in range(j))
    assert text_place._nested(np.array(lefts, np.int64), np.array(rights, np.int64)) is not crossing


@pytest.mark.parametrize("order", ["BA", "AB"])
def test_siblings_with_one_counter_are_ordered_by_node_name_not_by_node_index(order):
    """Two children of one character with the same counter, of nodes "b" and "a": RGA puts b's first.
    In the node table "b" comes first (index 0), so an order check that broke ties by index, not
    name, would take "x", "A", "B" for RGA's order."""
    x, a, b = (1, "b", "x", None, False), (2, "a", "A", (1, "b"), False), (2, "b", "B", (1, "b"), False)
    rows = [x, b, a] if order == "BA" else [x, a, b]
    assert crdt.Text()._place_in_order(rows) == rga_order_prefix(rows) == (3 if order == "BA" else 2)
    flat = tuple(v for s, node, text, _, deleted in rows
                 for v in ((0 if node == "b" else 1), s, text, -1 if s == 1 else 0, 0 if s == 1 else 1, deleted))
    data = codec.encode(CRDTState("text", 1, (2, "b", "a", 3, *flat, 0)))
    got = crdt.Text().merge_bytes(data)
    assert got.value() == "xBA"
    same(got, integrated(crdt.decode(data)))


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
    ("a float for an int", lambda p: p[:10] + (float(p[10]),) + p[11:]),  # "XY"'s start as a float
    # msgpack's ints an int64 column cannot hold (2**63 up to 2**64 - 1) or that end its range
    ("a start of 2**64 - 1", lambda p: p[:4] + (2**64 - 1,) + p[5:]),
    ("a start of 2**63", lambda p: p[:4] + (2**63,) + p[5:]),
    ("an origin counter of 2**63", lambda p: p[:13] + (2**63,) + p[14:]),
    ("an origin node index of -2**63", lambda p: p[:12] + (-(2**63),) + p[13:]),
    # the last block's last counter one past COUNTER_MAX: start + length is 2**63 + 1, which wraps in int64
    ("a block past the last counter", lambda p: p[:16] + (COUNTER_MAX - len(p[17]) + 2,) + p[17:]),
])
def test_a_corrupt_whole_document_is_refused_on_the_fast_path(name, change):
    good = _typed("abcdefgh")
    assert crdt.Text().merge_bytes(codec.encode(CRDTState("text", 1, good))).value() == "abXYcdefgh"
    bad = codec.encode(CRDTState("text", 1, change(good)))
    with pytest.raises(CorruptRecordError):
        crdt.decode(bad, "text")
    with pytest.raises(CorruptRecordError):
        crdt.Text().merge_bytes(bad)


def test_a_document_whose_ids_reach_the_last_counter_is_placed_as_integrated():
    """Ids up to COUNTER_MAX (2**63 - 1): the columns hold them as int64 without forming start +
    length, so the document is placed as the general path integrates it."""
    t = crdt.Text()
    t.insert("a", 0, "abcdef")
    t._clock = COUNTER_MAX - 8
    t.insert("b", 2, "XY")  # in the middle: "ab", "XY", "cdef"
    t.insert("a", 0, "<")
    t.insert("b", 9, "01234")  # its last id is COUNTER_MAX
    assert t._clock == COUNTER_MAX and t.value() == "<abXYcdef01234"
    data = crdt.encode(t)
    got = crdt.Text().merge_bytes(data)
    assert got._deferred is not None  # placed by the columns, not integrated
    same(got, integrated(t))
    same(crdt.decode(data), t)
    assert got._clock == COUNTER_MAX


@pytest.mark.parametrize("start, ok", [(COUNTER_MAX - 1, True), (COUNTER_MAX, False)])
def test_a_run_typed_on_up_to_the_last_counter_or_past_it(start, ok):
    """"XY" typed on after "ab" (linked: placed by the columns with no order check that could refuse
    it first), its last counter COUNTER_MAX or one past it: start + length is 2**63 or 2**63 + 1,
    which an int64 column wraps to a negative number, so the bound is checked without forming it."""
    data = codec.encode(CRDTState("text", 1, (1, "a", 2, 0, 1, "ab", -1, 0, False, 0, start, "XY", 0, 2, False, 0)))
    if not ok:
        with pytest.raises(CorruptRecordError):
            crdt.decode(data, "text")
        with pytest.raises(CorruptRecordError):
            crdt.Text().merge_bytes(data)
        return
    got = crdt.Text().merge_bytes(data)
    assert got.value() == "abXY" and got._clock == COUNTER_MAX
    same(got, integrated(crdt.decode(data)))


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
