"""Each CRDT kind's semantics as scenarios, and the errors of the package's API (ddia_ray.crdt).

The scenarios are DDIA 5.4's: concurrent writes at two replicas, then an exchange of deltas.
"""

from __future__ import annotations

import math

import pytest

from ddia_ray import crdt
from ddia_ray.errors import CRDTTypeError, InvalidArgumentError


def exchange(a: crdt.CRDT, da: crdt.CRDT, b: crdt.CRDT, db: crdt.CRDT) -> None:
    """Replicas ``a`` and ``b`` made deltas ``da`` and ``db`` concurrently; each receives the other's."""
    a.merge(db)
    b.merge(da)
    assert a == b and a.value() == b.value()


def test_kinds_and_ops_are_as_the_contract_lists():
    assert set(crdt.KINDS) == {"gcounter", "pncounter", "gset", "2pset", "orset", "lww", "mvregister", "ormap", "text"}
    assert crdt.ops("gcounter") == {"increment"}
    assert crdt.ops("pncounter") == {"increment", "decrement"}
    assert crdt.ops("gset") == {"add"}
    assert crdt.ops("2pset") == crdt.ops("orset") == {"add", "remove"}
    assert crdt.ops("lww") == crdt.ops("mvregister") == {"assign"}
    assert crdt.ops("ormap") == {"update", "remove"}
    assert crdt.ops("text") == {"insert", "delete"}
    for kind, cls in crdt.KINDS.items():
        assert cls.kind == kind and type(crdt.new(kind)) is cls


def test_counters_sum_concurrent_increments():
    a, b = crdt.GCounter(), crdt.GCounter()
    da, db = a.increment("a", 3), b.increment("b", 4)
    exchange(a, da, b, db)
    assert a.value() == 7
    p, q = crdt.PNCounter(), crdt.PNCounter()
    dp, dq = p.increment("a", 5), q.decrement("b", 2)
    exchange(p, dp, q, dq)
    assert p.value() == 3
    assert p.decrement("a").merge(p.decrement("a")).value() == -2  # a delta carries the count, not the step
    assert p.value() == 1


def test_gset_and_2pset():
    g = crdt.GSet()
    g.add("a", "x")
    g.add("a", ("t", 1))
    assert g.value() == {"x", ("t", 1)} and "x" in g
    s, t = crdt.TwoPSet(), crdt.TwoPSet()
    s.merge(s.add("a", "x"))
    t.merge(s)
    ds, dt = s.remove("a", "x"), t.add("b", "x")  # a concurrent re-add cannot beat the tombstone
    exchange(s, ds, t, dt)
    assert s.value() == frozenset()
    with pytest.raises(InvalidArgumentError):
        s.remove("a", "x")  # already removed
    with pytest.raises(InvalidArgumentError):
        s.remove("a", "never-added")


def test_orset_add_wins_over_a_concurrent_remove():
    a, b = crdt.ORSet(), crdt.ORSet()
    b.merge(a.add("a", "milk"))
    da, db = a.add("a", "milk"), b.remove("b", "milk")  # a re-adds while b removes what it saw
    exchange(a, da, b, db)
    assert a.value() == {"milk"}
    # a remove that has seen every add wins
    b.merge(b.remove("b", "milk"))
    a.merge(b)
    assert a.value() == frozenset()
    assert b.remove("b", "absent") == crdt.ORSet()  # nothing observed, nothing to remove


def test_orset_keeps_one_dot_per_concurrent_adder():
    once, s = crdt.ORSet(), crdt.ORSet()
    once.add("a", "x")
    for _ in range(50):
        s.add("a", "x")
    assert len(s._entries[next(iter(s._entries))][1]) == 1
    assert len(crdt.encode(s)) == len(crdt.encode(once))  # the counter grew, not the entry


def test_lww_highest_timestamp_then_node_wins():
    a, b = crdt.LWWRegister(), crdt.LWWRegister()
    assert a.value() is None
    da, db = a.assign("a", "first", 5), b.assign("b", "second", 5)
    exchange(a, da, b, db)
    assert a.value() == "second" and a.timestamp() == (5, "b")  # tie on time: node "b" > "a"
    a.assign("a", "old", 1)
    assert a.value() == "second"
    c, d = crdt.LWWRegister(), crdt.LWWRegister()
    dc, dd = c.assign("n", "x", 1), d.assign("n", "y", 1)  # one node, one timestamp: the value's bytes decide
    exchange(c, dc, d, dd)
    assert c.value() == "y"


def test_mvregister_keeps_concurrent_values_until_one_supersedes_them():
    a, b = crdt.MVRegister(), crdt.MVRegister()
    da, db = a.assign("a", "x"), b.assign("b", "y")
    exchange(a, da, b, db)
    assert a.value() == ("x", "y")
    b.merge(a.assign("a", "z"))
    assert a.value() == b.value() == ("z",)
    c, d = crdt.MVRegister(), crdt.MVRegister()
    exchange(c, c.assign("c", 1), d, d.assign("d", 1))
    assert c.value() == (1,)  # the same value twice is listed once


def test_ormap_updates_nested_crdts_and_concurrent_update_beats_remove():
    a, b = crdt.ORMap(), crdt.ORMap()
    b.merge(a.update("a", "cart", "orset", "add", "milk"))
    b.merge(a.update("a", "visits", "gcounter", "increment", 2))
    assert a.value() == b.value() == {"cart": {"milk"}, "visits": 2}
    da = a.update("a", "cart", "orset", "add", "eggs")
    db = b.remove("b", "cart")
    exchange(a, da, b, db)
    assert a.value()["cart"] == {"milk", "eggs"}  # the updater's whole view survives (Riak maps)
    # a remove that saw the update removes the key; a later update starts afresh
    a.merge(a.remove("a", "cart"))
    assert "cart" not in a.value()
    a.update("a", "cart", "orset", "add", "tea")
    assert a.value()["cart"] == {"tea"}
    assert a.get("visits").value() == 2 and a.kinds("visits") == ("gcounter",)
    assert a.get("nothing") is None


def test_ormap_concurrent_creation_with_two_kinds_keeps_both_fields():
    a, b = crdt.ORMap(), crdt.ORMap()
    da = a.update("a", "k", "gcounter", "increment", 1)
    db = b.update("b", "k", "lww", "assign", "v", 3)
    exchange(a, da, b, db)
    assert a.kinds("k") == ("gcounter", "lww")
    assert a.value() == {"k": 1}  # the kind that sorts first
    assert a.get("k", "lww").value() == "v"
    a.update("a", "k", "lww", "assign", "w", 4)  # either kind it holds may be updated
    with pytest.raises(CRDTTypeError):
        a.update("a", "k", "orset", "add", 1)


def test_ormap_nested_ids_never_repeat_after_a_remove():
    """A node that updates a key again after a remove uses a fresh nested id, so a concurrent old
    nested state cannot shadow the new increments (its entry is a different replica id)."""
    a, b = crdt.ORMap(), crdt.ORMap()
    b.merge(a.update("a", "c", "gcounter", "increment", 5))
    db = b.update("b", "c", "gcounter", "increment", 1)  # b's view includes a's 5
    a.merge(a.remove("a", "c"))
    da = a.update("a", "c", "gcounter", "increment", 1)  # afresh: 1
    exchange(a, da, b, db)
    assert a.value() == {"c": 7}  # b's whole view (5 + 1) joined with a's fresh 1: nothing lost


@pytest.mark.parametrize("bad", [[1], {"a": 1}, {1}, float("nan"), object(), bytearray(b"x"), 2**64, ("a", [1]),
                                 ((((((((((1,),),),),),),),),),)])
def test_items_must_be_immutable_scalars_or_tuples(bad):
    with pytest.raises(InvalidArgumentError):
        crdt.GSet().add("a", bad)
    with pytest.raises(InvalidArgumentError):
        crdt.ORMap().update("a", bad, "gcounter", "increment")
    with pytest.raises(InvalidArgumentError):
        crdt.LWWRegister().assign("a", bad, 1)


def test_items_of_equal_python_value_but_other_type_are_distinct():
    s = crdt.GSet()
    for x in (1, 1.0, True):
        s.add("a", x)
    assert len(s._items) == 3
    assert math.inf in crdt.GSet().add("a", math.inf).value()


@pytest.mark.parametrize("call", [
    lambda: crdt.GCounter().increment("", 1),
    lambda: crdt.GCounter().increment(3, 1),
    lambda: crdt.GCounter().increment("a", -1),
    lambda: crdt.GCounter().increment("a", True),
    lambda: crdt.PNCounter().decrement("a", 1.5),
    lambda: crdt.LWWRegister().assign("a", "v", -1),
    lambda: crdt.LWWRegister().assign("a", "v", "late"),
    lambda: crdt.Text().insert("a", 1, "x"),
    lambda: crdt.Text().insert("a", 0, b"x"),
    lambda: crdt.Text().delete("a", 0, 1),
    lambda: crdt.apply(None, "gcounter", "a", "increment", (1, 2)),
    lambda: crdt.apply(None, "gcounter", "a", "increment", "1"),
])
def test_bad_arguments_are_invalid_argument_errors(call):
    with pytest.raises(InvalidArgumentError):
        call()


def test_counter_overflow_is_refused():
    c = crdt.GCounter()
    c.increment("a", 2**63 - 1)
    with pytest.raises(InvalidArgumentError):
        c.increment("a", 1)
    assert c.value() == 2**63 - 1


def test_type_errors_name_both_kinds():
    with pytest.raises(CRDTTypeError) as e:
        crdt.apply(crdt.GCounter(), "orset", "a", "add", ("x",))
    assert e.value.expected == "orset" and e.value.got == "gcounter"
    with pytest.raises(CRDTTypeError) as e:
        crdt.apply(None, "orset", "a", "increment", ())
    assert "orset" in str(e.value) and "increment" in str(e.value)
    with pytest.raises(CRDTTypeError) as e:
        crdt.new("bogus")
    assert "gcounter" in str(e.value)  # it lists the known kinds
    with pytest.raises(CRDTTypeError):
        crdt.ops("bogus")
    with pytest.raises(CRDTTypeError):
        crdt.merge(crdt.GSet(), crdt.PNCounter())
    with pytest.raises(CRDTTypeError):
        crdt.GSet().merge(crdt.TwoPSet())
    with pytest.raises(CRDTTypeError):
        crdt.ORMap().update("a", "k", "bogus", "add", 1)
    with pytest.raises(CRDTTypeError):
        crdt.ORMap().update("a", "k", "gset", "remove", 1)


def test_apply_returns_state_and_delta_and_refusals_leave_the_state_alone():
    state, delta = crdt.apply(None, "pncounter", "a", "increment", (2,))
    assert state.value() == 2 and delta.value() == 2
    state, _ = crdt.apply(state, "pncounter", "a", "decrement", [1])
    assert state.value() == 1
    m = crdt.ORMap()
    m.update("a", "k", "2pset", "add", "x")
    before = crdt.encode(m)
    with pytest.raises(InvalidArgumentError):
        crdt.apply(m, "ormap", "a", "update", ("k", "2pset", "remove", "absent"))
    assert crdt.encode(m) == before


def test_merge_returns_a_new_state_and_merge_method_returns_self():
    a, b = crdt.GCounter(), crdt.GCounter()
    a.increment("a")
    b.increment("b")
    joined = crdt.merge(a, b)
    assert joined.value() == 2 and a.value() == 1 and b.value() == 1
    assert a.merge(b) is a and a == joined
    assert a.copy() == a and a.copy() is not a
