"""The lost-update checker: siblings and merges lose nothing, last-writer-wins loses concurrent acked
writes (DDIA 5.4 "Last write wins"), and CRDT counters, sets and text keep every acked update."""

from __future__ import annotations


import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray import codec
from ddia_ray.errors import CRDTTypeError, InvalidArgumentError
from ddia_ray.history import (
    CounterUpdate,
    LostUpdateResult,
    RegisterWrite,
    SetUpdate,
    TextUpdate,
    check_lost_updates,
)

K = b"cart"


def w(i, observed=(), acked=True, key=K):
    return RegisterWrite(i, key, acked, tuple(observed))


# --- registers ---------------------------------------------------------------------


def test_concurrent_writes_kept_as_siblings_lose_nothing():
    ops = [w("w1"), w("w2")]  # two clients write without reading: concurrent
    result = check_lost_updates(ops, {K: {"w1", "w2"}})
    assert result.ok and result.lost == 0 and result.checked == 2
    assert result.summary() == "no lost updates: 2 acknowledged updates checked"


def test_last_writer_wins_silently_discards_a_concurrent_acked_write():
    ops = [w("w1"), w("w2")]
    result = check_lost_updates(ops, {K: {"w2"}})  # LWW kept the later timestamp only
    assert not result.ok and result.lost == 1 and result.lost_ids == ("w1",)
    assert result.by_kind["register"] == 1
    assert result.summary().startswith("1 of 2 acknowledged updates lost (register 1)")


def test_a_write_that_read_the_siblings_knowingly_replaces_them_transitively():
    ops = [w("w1"), w("w2"), w("w3", observed=("w1", "w2")), w("w4", observed=("w3",))]
    assert check_lost_updates(ops, {K: ["w4"]}).ok
    # a resolver's merged value that names the ids it merged
    assert check_lost_updates([w("w1"), w("w2")], {K: ("w1", "w2")}).ok


def test_unacknowledged_writes_may_vanish_but_what_they_read_counts():
    ops = [w("w1"), w("w2", observed=("w1",), acked=False), w("w3", acked=False)]
    assert check_lost_updates(ops, {K: {"w2"}}).ok
    lost = check_lost_updates(ops, {})
    assert lost.lost_ids == ("w1",)  # nothing present replaces w1


def test_a_delete_is_a_write_present_while_its_tombstone_is_the_state():
    ops = [w("w1"), w("del", observed=("w1",))]
    assert check_lost_updates(ops, {K: {"del"}}).ok
    lost = check_lost_updates(ops, {})  # the delete is lost; w1 was replaced by it all the same
    assert lost.lost == 1 and lost.lost_ids == ("del",)


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 30))
def test_sibling_stores_lose_nothing_and_dropping_an_unreplaced_sibling_is_caught(rng, n):
    # A store that keeps siblings: each write replaces what its client read (a random subset of the
    # current siblings) and joins the rest; the final siblings are the writes nobody replaced.
    siblings: list[str] = []
    ops = []
    for i in range(n):
        seen = [s for s in siblings if rng.random() < 0.5]
        ops.append(w(f"w{i}", observed=seen, acked=rng.random() < 0.8))
        siblings = [s for s in siblings if s not in seen] + [f"w{i}"]
    assert check_lost_updates(ops, {K: siblings}).ok
    acked = [s for s in siblings if next(o for o in ops if o.id == s).acked]
    if acked:
        victim = rng.choice(acked)
        result = check_lost_updates(ops, {K: [s for s in siblings if s != victim]})
        assert victim in result.lost_ids


# --- counters, sets, text --------------------------------------------------------------


def test_counters_report_the_lost_amount_and_the_excess():
    c = b"likes"
    ops = [CounterUpdate("i1", c, True, 3), CounterUpdate("i2", c, True, 2), CounterUpdate("i3", c, False, 2),
           CounterUpdate("d1", c, False, -1)]
    for final in (4, 5, 6, 7):  # 5 acked; the unacked +2 and -1 may or may not have landed
        assert check_lost_updates(ops, {c: final}).ok
    short = check_lost_updates(ops, {c: 2})
    assert (short.lost, short.lost_amount, short.excess_amount) == (2, 2, 0)
    assert short.lost_ids == (f"counter:{c.hex()}:2",) and "counters short by 2" in short.summary()
    over = check_lost_updates(ops, {c: 9})
    assert (over.lost, over.excess_amount) == (0, 2) and not over.ok


def test_sets_keep_acked_adds_unless_a_remove_saw_them():
    s = b"set"
    add_a = SetUpdate("a1", s, True, "add", b"milk")
    add_b = SetUpdate("b1", s, True, "add", b"eggs")
    remove_a = SetUpdate("r1", s, True, "remove", b"milk", ("a1",))
    assert check_lost_updates([add_a, add_b, remove_a], {s: {b"eggs"}}).ok
    lost = check_lost_updates([add_a, add_b, remove_a], {s: set()})
    assert lost.lost_ids == ("b1",) and lost.by_kind["set"] == 1
    # a concurrent add of milk the remove did not see survives it (add wins)
    add_again = SetUpdate("a2", s, True, "add", b"milk")
    assert check_lost_updates([add_a, add_again, remove_a], {s: {b"milk"}}).ok
    assert check_lost_updates([add_a, add_again, remove_a], {s: set()}).lost_ids == ("a2",)
    # milk is back although the acked remove saw its only add: the remove was lost
    assert check_lost_updates([add_a, remove_a], {s: {b"milk"}}).lost_ids == ("r1",)


def test_text_keeps_acked_characters_unless_a_delete_saw_them():
    t = b"doc"
    ins = TextUpdate("i1", t, True, "insert", text="abc")
    other = TextUpdate("i2", t, False, "insert", text="xy")
    dele = TextUpdate("d1", t, False, "delete", deletes=(("i1", 1),))
    assert check_lost_updates([ins, other, dele], {t: {("i1", 0), ("i1", 2)}}).ok
    result = check_lost_updates([ins, other, dele], {t: [["i1", 2]]})  # decoded ids may be lists
    assert result.lost == 1 and result.lost_ids == ("i1#0",) and result.checked == 3


# --- misuse and records -----------------------------------------------------------------


def test_malformed_histories_are_refused():
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([w("w1"), w("w1")], {})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([w("w1", observed=("ghost",))], {})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([w("w1", key=b"x"), w("w2", observed=("w1",))], {})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([w("w1")], {K: {"w9"}})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([CounterUpdate("c", b"n", True, 1)], {b"n": "3"})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([TextUpdate("d", b"t", True, "delete", deletes=(("nope", 0),))], {})
    with pytest.raises(InvalidArgumentError):
        check_lost_updates([SetUpdate("a", b"s", True, "add", b"e")], {b"s": [{}]})
    with pytest.raises(CRDTTypeError):
        check_lost_updates([w("w1", key=b"k"), CounterUpdate("c1", b"k", True, 1)], {})
    with pytest.raises(InvalidArgumentError):
        SetUpdate("a", b"s", True, "add", b"e", ("x",))
    with pytest.raises(InvalidArgumentError):
        RegisterWrite("", b"k", True)


def test_operations_and_results_travel_as_records():
    ops = [w("w1"), CounterUpdate("c", b"n", True, 2), SetUpdate("r", b"s", False, "remove", b"e"),
           TextUpdate("t", b"d", True, "insert", text="hi")]
    assert [codec.decode(codec.encode(op)) for op in ops] == ops
    result = check_lost_updates([w("w1"), w("w2")], {K: {"w2"}})
    again = codec.decode(codec.encode(result))
    assert again == result and isinstance(again, LostUpdateResult) and again.by_kind == result.by_kind


def test_lost_ids_are_capped_and_sorted():
    ops = [w(f"w{i:03d}") for i in range(50)]
    result = check_lost_updates(ops, {}, lost_ids_max=5)
    assert result.lost == 50 and result.lost_ids == tuple(f"w{i:03d}" for i in range(5))
