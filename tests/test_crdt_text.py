"""The text CRDT (our RGA with runs): sequential edits, concurrent edits, runs and waiting blocks.

The oracle for concurrent edits is RGA's definition (Roh et al. 2011): the characters form a
tree, each the child of its origin, and the text is its preorder with siblings in descending id
order. The run-based, linked-list integration must give exactly that text for every replica.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_crdt_convergence import EXAMPLES, Sim

from ddia_ray import codec, crdt
from ddia_ray.crdt import runs

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
    t._built()  # a decoded document builds its blocks when first read
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


def test_a_long_typing_trace_is_runs_of_at_most_run_max_and_one_run_on_the_wire():
    """Extending a run copies it (a str does not grow in place), so runs stop at RUN_MAX characters
    and typing a long document stays linear; the state still travels as one run."""
    t, r, bulk = crdt.Text(), crdt.Text(), crdt.Text()
    n = 3 * runs.RUN_MAX + 17
    for i in range(n):
        r.merge_bytes(crdt.encode(t.insert("a", i, "xy"[i % 2])))
    bulk.merge(t)
    for doc in (t, r, bulk):
        assert doc.value() == "xy" * (n // 2) + "x" * (n % 2)
        blocks = doc._blocks()
        assert len(blocks) == -(-n // runs.RUN_MAX) and max(len(b.text) for b in blocks) == runs.RUN_MAX
    assert crdt.encode(t) == crdt.encode(r) == crdt.encode(bulk)
    decoded = crdt.decode(crdt.encode(t))
    assert len(decoded._blocks()) == 1  # one run on the wire, one block when read back
    decoded.insert("a", n, "z")  # typing on after it starts a run of its own
    assert len(decoded._blocks()) == 2 and decoded.value().endswith("z")


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


# --- bytes written before the fast paths (format 1): they still decode to the same states -----------

FORMAT_1_FIXTURES = {  # name -> (value, hex of crdt.encode), written by the code of 2026-12-05 before its fast paths
    "full": ("h\u00e9\U0001f600eXY world",
             "c76f0183a174aa637264742e7374617465a17601a16683a46b696e64a474657874a6666f726d617401a77061796c6f6164dc0029"
             "02a161a162060001a168ff00c2000ca6c3a9f09f98800001c20002a1650001c20003a36c6c6f0002c3010ca258590005c20006a6"
             "20776f726c640005c200"),
    "waiting": ("", "c7410183a174aa637264742e7374617465a17601a16683a46b696e64a474657874a6666f726d617401a77061796c6f6164"
                    "9e02a162a16101000ca258590105c201010305"),
    "ins": ("hello world", "c7450183a174aa637264742e7374617465a17601a16683a46b696e64a474657874a6666f726d617401a7706179"
                           "6c6f61649a01a161010001ab68656c6c6f20776f726c64ff00c200"),
    "del": ("", "c7370183a174aa637264742e7374617465a17601a16683a46b696e64a474657874a6666f726d617401a77061796c6f6164"
                "9701a1610001000305"),
    "ins2": ("", "c73e0183a174aa637264742e7374617465a17601a16683a46b696e64a474657874a6666f726d617401a77061796c6f6164"
                 "9b02a162a16101000ca258590105c200"),
}


def test_format_1_fixtures_decode_to_the_same_states_and_bytes():
    for name, (value, hexed) in FORMAT_1_FIXTURES.items():
        t = crdt.decode(bytes.fromhex(hexed), "text")
        check_structure(t)
        assert t.value() == value, name
        assert crdt.encode(t).hex() == hexed, name
    # the deltas, merged in any order, rebuild the document they came from
    parts = [crdt.decode(bytes.fromhex(FORMAT_1_FIXTURES[n][1])) for n in ("ins2", "del", "ins")]
    whole = crdt.decode(bytes.fromhex(FORMAT_1_FIXTURES["full"][1]))
    a, b = crdt.Text(), crdt.Text()
    for p in parts:
        a.merge(p)
    for p in reversed(parts):
        b.merge(p)
    assert a.value() == b.value() == "heXY world" and a == b
    assert whole.merge(a).value() == "h\u00e9\U0001f600eXY world"


# --- the fast paths give what the general paths give ---------------------------------------------


def _general_decode(data: bytes) -> crdt.Text:
    """Decode ``data`` by the general path only (no one-block or deletion shortcut, no column checks)."""
    from ddia_ray import codec
    from ddia_ray.crdt import text_format

    p = codec.decode(data).payload
    saved = text_format._one_block, text_format._deletion, text_format._columns
    text_format._one_block = text_format._deletion = lambda cls, p: None
    text_format._columns = lambda p, a, nb, top: None  # no column passes: every row is read one at a time
    try:
        return text_format.from_payload(crdt.Text, p)
    finally:
        text_format._one_block, text_format._deletion, text_format._columns = saved


def _general_merge(into: crdt.Text, other: crdt.Text) -> None:
    """Merge as the general path does: every block of ``other`` absorbed in id order, then its deletions."""
    if into._shared:
        runs.unshare(into)
    blocks = sorted(other._blocks(), key=lambda b: (b.start, b.node))
    for b in blocks:
        into._absorb(b.start, b.node, b.text, b.origin, b.deleted)
    for node, (starts, ends) in other._orphans.items():
        for s, e in zip(starts, ends):
            into._delete_range(node, s, e)
    into._clock = max(into._clock, other._clock)
    into._cci, into._coff = 0, 0


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fast_paths_match_the_general_paths(seed):
    """Deltas of two writers, delivered shuffled and duplicated, decoded and merged by the fast paths
    and by the general ones: same text, same state, same bytes."""
    rng = random.Random(seed)
    writers = {"a": (crdt.Text(), []), "b": (crdt.Text(), [])}
    wire = []
    for _ in range(60):
        node = rng.choice("ab")
        t, model = writers[node]
        d = edit(rng, t, model, node)
        wire.append(crdt.encode(d))
        if rng.random() < 0.2:  # the writers hear each other now and then
            other = writers["b" if node == "a" else "a"][0]
            other.merge(crdt.decode(wire[-1]))
            writers["b" if node == "a" else "a"][1][:] = list(other.value())
    order = wire + rng.sample(wire, len(wire) // 4)
    if rng.random() < 0.5:
        rng.shuffle(order)
    fast, slow, direct = crdt.Text(), crdt.Text(), crdt.Text()
    for data in order:
        d_fast, d_slow = crdt.decode(data), _general_decode(data)
        assert d_fast == d_slow and crdt.encode(d_fast) == data
        fast.merge(d_fast)
        _general_merge(slow, d_slow)
        direct.merge_bytes(data)  # one edit's delta joined straight from its payload
        assert fast.value() == slow.value() == direct.value()
    check_structure(fast)
    check_structure(slow)
    check_structure(direct)
    assert fast == slow == direct and crdt.encode(fast) == crdt.encode(slow) == crdt.encode(direct)
    both = crdt.Text()
    for data in wire:
        both.merge(crdt.decode(data))
    assert both == fast


def test_typing_at_the_end_extends_the_last_run_even_before_a_trailing_tombstone():
    t = crdt.Text()
    deltas = [t.insert("a", 0, "ab"), t.delete("a", 1, 1), t.insert("a", 1, "c"), t.insert("a", 2, "d")]
    r = crdt.Text()
    for d in deltas:
        r.merge(crdt.decode(crdt.encode(d)))
    check_structure(r)
    assert r.value() == "acd" and r == t
    # "a", then "cd" as one run (the receiver extended it), then the tombstone "b"
    assert [(b.text, b.deleted) for ch in r._chunks for b in ch] == [("a", False), ("cd", False), ("b", True)]


def test_a_greater_id_after_the_origin_is_not_overtaken_by_a_run_extension():
    # b's "X" is a child of a's "a" with a greater id than a's next character: a's "b" goes after it
    a = crdt.Text()
    d1 = a.insert("a", 0, "a")
    x = crdt.Text().merge(d1)
    dx = x.insert("z", 1, "X")
    d2 = a.insert("a", 1, "b")
    r = crdt.Text()
    for d in (d1, dx, d2):
        r.merge(crdt.decode(crdt.encode(d)))
    check_structure(r)
    assert r.value() == "aXb"
    assert r == a.merge(dx)


def test_a_state_merged_into_an_empty_one_is_shared_until_either_changes():
    src = crdt.Text()
    src.insert("a", 0, "hello")
    dst = crdt.Text().merge(src)
    assert dst._chunks is src._chunks and dst == src  # shared, not copied
    dst.insert("b", 5, "!")
    src.delete("a", 0, 1)
    check_structure(dst)
    check_structure(src)
    assert dst.value() == "hello!" and src.value() == "ello"
    third = crdt.Text().merge(src)
    third.merge(dst)  # changes third only
    assert third.value() == "ello!" and src.value() == "ello" and dst.value() == "hello!"
    assert crdt.decode(crdt.encode(third)) == third


def test_merge_bytes_refuses_what_decode_refuses_and_changes_nothing():
    """``merge_bytes`` of another kind's state, of a malformed edit payload or of garbage raises the
    error ``decode`` raises, and the state is as before."""
    from ddia_ray.crdt.base import CRDTState
    from ddia_ray.errors import CorruptRecordError, CRDTTypeError

    t = crdt.Text()
    t.merge_bytes(crdt.encode(crdt.Text().insert("a", 0, "hello")))
    before = crdt.encode(t)
    good = crdt.Text().insert("b", 0, "x")._payload()
    bad = [
        crdt.encode(crdt.GCounter()),
        codec.encode(CRDTState("text", 1, good[:-1] + ("0",))),  # the orphan count as a str
        codec.encode(CRDTState("text", 1, (1, "a", 0, 1, 0, 5, 3))),  # a deleted range that ends first
        codec.encode(CRDTState("text", 1, (1, "a", 1, 0, 1, "x", -1, 0, "no", 0))),  # a flag that is no bool
        b"\xc1",
    ]
    errors = (CRDTTypeError, CorruptRecordError, CorruptRecordError, CorruptRecordError, CorruptRecordError)
    for data, error in zip(bad, errors):
        with pytest.raises(error):
            crdt.decode(data, "text")
        with pytest.raises(error):
            t.merge_bytes(data)
        assert crdt.encode(t) == before
    assert t.merge_bytes(crdt.encode(crdt.Text().insert("b", 0, "x"))).value() in ("xhello", "hellox")


def test_a_small_records_payload_is_read_past_the_codecs_own_frame_bytes_and_nothing_else_is():
    """``edit_payload`` gives what ``record_fields`` gives as the payload for a small text state, and
    None for every other bytes: another kind, a byte more or fewer, a large record, not bytes."""
    from ddia_ray.crdt import text_format
    from ddia_ray.crdt.base import CRDTState

    t = crdt.Text()
    deltas = [t.insert("a", 0, "hello"), t.insert("b", 2, "XY"), t.delete("a", 1, 3), t.insert("a", 4, "!")]
    for d in deltas:
        data = crdt.encode(d)
        assert text_format.edit_payload(data) == codec.record_fields(data, CRDTState)[2] == d._payload()
        for other in (data + b"\x00", data[:-1], bytearray(data), data.replace(b"text", b"texu")):
            assert text_format.edit_payload(other) is None
    assert text_format.edit_payload(crdt.encode(crdt.GCounter().increment("a", 3))) is None
    large = crdt.encode(crdt.Text().insert("a", 0, "x" * 300))  # over 255 bytes: ext 16, read by fields
    assert text_format.edit_payload(large) is None
    assert crdt.Text().merge_bytes(large).value() == "x" * 300
    # The frame's bytes with a record nested in the payload: the shortcut refuses the shape, and
    # merge_bytes raises what decode raises.
    nested = codec.encode(CRDTState("text", 1, (1, "a", 1, 0, 1, CRDTState("x", 1, ()), -1, 0, False, 0)))
    assert type(text_format.edit_payload(nested)) is tuple
    with pytest.raises(Exception) as decoded:
        crdt.decode(nested, "text")
    with pytest.raises(type(decoded.value)):
        t.merge_bytes(nested)


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                                      min_size=1, max_size=3))
def test_a_damaged_delta_is_merged_from_bytes_exactly_as_decode_and_merge_take_it(seed, flips):
    """A delta with bytes changed: ``merge_bytes`` raises what ``decode`` raises (the state unchanged),
    or joins what ``decode`` reads, to the same state as ``merge``."""
    from ddia_ray.errors import DdiaRayError

    rng = random.Random(seed)
    t, model = crdt.Text(), []
    for _ in range(rng.randint(3, 12)):
        edit(rng, t, model, "a")
    base = crdt.Text().merge(t)
    data = bytearray(crdt.encode(edit(rng, t, model, rng.choice("ab"))))
    for at, byte in flips:
        data[at % len(data)] = byte
    fast, slow = base.copy(), base.copy()
    try:
        expected = slow.merge(crdt.decode(bytes(data), "text"))
    except DdiaRayError as e:
        with pytest.raises(type(e)):
            fast.merge_bytes(bytes(data))
        assert fast == base
        return
    fast.merge_bytes(bytes(data))
    check_structure(fast)
    assert fast == expected and fast.value() == expected.value()
