"""A replica's versions: conflict policies, causal contexts, LWW accounting and resolver isolation (DDIA 5.4)."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.clocks import VectorClock
from ddia_ray.errors import ConfigError, CRDTTypeError, ForeignContextError, InvalidArgumentError
from ddia_ray.replication.resolvers import register_resolver, unregister_resolver
from ddia_ray.replication.versions import (ConflictPolicy, KeyVersions, Policies, decode_context, encode_context,
                                           parse_policies)


def _versions(spec, node="a"):
    return KeyVersions(node, "store", Policies(parse_policies(spec)))


def test_policies_parse_and_the_longest_prefix_wins():
    policies = Policies(parse_policies({"": "lww", "cart/": "resolver:set_union", b"cart/x/": "siblings",
                                        "n/": "crdt:pncounter", "r/": "resolver:set_union@read"}))
    assert policies.of(b"zz").mode == "lww"
    assert policies.of(b"cart/1").resolver == "set_union" and not policies.of(b"cart/1").on_read
    assert policies.of(b"cart/x/1").mode == "siblings"
    assert policies.of(b"n/1").kind == "pncounter"
    assert policies.of(b"r/1").on_read
    assert parse_policies("siblings") == (ConflictPolicy(b"", "siblings"),)
    for spec in ("sometimes", "resolver:no-such-resolver", "crdt:no-such-kind", "lww:x", "resolver:lww@never"):
        with pytest.raises((ConfigError, CRDTTypeError)):
            parse_policies(spec)
    with pytest.raises(InvalidArgumentError):
        parse_policies(42)


def test_contexts_are_bound_to_their_store():
    token = encode_context("store", VectorClock({"a": 2}))
    assert decode_context("store", token) == VectorClock({"a": 2})
    assert decode_context("store", b"") == VectorClock()
    with pytest.raises(ForeignContextError, match="comes from store 'other'"):
        decode_context("store", encode_context("other", VectorClock({"a": 2})))
    for junk in (b"\x00garbage", codec.encode(("not", "a", "context")), "text"):
        with pytest.raises(ForeignContextError):
            decode_context("store", junk)


def test_lww_keeps_the_latest_and_counts_each_loss_once_across_replicas():
    a, b = _versions("lww", "a"), _versions("lww", "b")
    sa = a.put(b"k", b"older", VectorClock(), (100, 0))
    sb = b.put(b"k", b"newer", VectorClock(), (200, 0))
    assert a.merge(b"k", sb) and b.merge(b"k", sa)  # a drops its own "older"; b keeps "newer", knows of "older"
    assert [s.value for s in a.data[b"k"].values()] == [b"newer"]
    assert a.data[b"k"] == b.data[b"k"]
    assert set(a.lww_lost) == {(b"k", "a", 1)} and a.lww_discarded == 1
    assert b.lww_discarded == 1 and set(b.lww_lost) == {(b"k", "a", 1)}  # the same loss: the union counts it once


def test_a_write_with_an_older_clock_loses_to_a_concurrent_one_and_is_counted():
    v = _versions("lww")
    v.put(b"k", b"from-the-future", VectorClock(), (10**12, 0))
    v.merge(b"k", _versions("lww", "b").put(b"k", b"now", VectorClock(), (5, 0)))
    assert [s.value for s in v.data[b"k"].values()] == [b"from-the-future"]
    assert v.lww_discarded == 1


def test_siblings_keep_concurrent_writes_and_a_put_with_the_context_replaces_them():
    a, b = _versions("siblings", "a"), _versions("siblings", "b")
    a.put(b"k", b"x", VectorClock(), (1, 0))
    a.merge(b"k", b.put(b"k", b"y", VectorClock(), (2, 0)))
    answer = a.answer(b"k", a.data[b"k"])
    assert sorted(s.value for s in answer["siblings"]) == [b"x", b"y"]
    merged = a.put(b"k", b"xy", decode_context("store", answer["context"]), (3, 0))
    assert [s.value for s in merged.values()] == [b"xy"]


def test_a_resolver_on_write_folds_the_concurrent_siblings_into_the_new_write():
    v = _versions("resolver:set_union", "a")
    w = _versions("resolver:set_union", "b")
    v.put(b"k", codec.encode(("x",)), VectorClock(), (1, 0))
    v.merge(b"k", w.put(b"k", codec.encode(("y",)), VectorClock(), (2, 0)))
    assert v.data[b"k"].size() == 2  # merging replicas' states leaves siblings (see KeyVersions._fold)
    assert codec.decode(v.answer(b"k", v.data[b"k"])["siblings"][0].value) == ("x", "y")  # a read merges them
    v.put(b"k", codec.encode(("z",)), VectorClock(), (3, 0))
    assert [codec.decode(s.value) for s in v.data[b"k"].values()] == [("x", "y", "z")]
    assert v.resolutions >= 2


def test_a_resolver_that_raises_is_isolated_and_the_key_stays_readable_as_siblings():
    def broken(key, siblings):
        raise RuntimeError("boom")

    register_resolver("test-broken", broken)
    try:
        a, b = _versions("resolver:test-broken", "a"), _versions("resolver:test-broken", "b")
        a.put(b"k", b"x", VectorClock(), (1, 0))
        a.merge(b"k", b.put(b"k", b"y", VectorClock(), (2, 0)))
        a.put(b"k", b"z", VectorClock(), (3, 0))  # the fold fails: the write stays a sibling of the others
        answer = a.answer(b"k", a.data[b"k"])
        assert sorted(s.value for s in answer["siblings"]) == [b"x", b"y", b"z"]
        assert answer["error"] is not None and "boom" in str(answer["error"])
        assert a.resolver_failures >= 2 and a.stats()["resolver_errors"][-1]["resolver"] == "test-broken"
    finally:
        unregister_resolver("test-broken", broken)


def test_crdt_keys_take_operations_not_puts_and_plain_keys_the_reverse():
    v = _versions({"": "siblings", "c/": "crdt:gcounter"})
    state, delta = v.update(b"c/n", "increment", (3,), (1, 0))
    assert state.value() == 3 and delta.value() == 3
    with pytest.raises(CRDTTypeError):
        v.put(b"c/n", b"3", VectorClock(), (1, 0))
    with pytest.raises(CRDTTypeError):
        v.update(b"plain", "increment", (1,), (1, 0))
    with pytest.raises(CRDTTypeError):
        v.update(b"c/n", "add", (1,), (1, 0))
    with pytest.raises(CRDTTypeError):
        v.merge(b"c/n", v.put(b"plain", b"x", VectorClock(), (1, 0)))


def test_a_resolver_from_a_plugin_resolves_a_stores_siblings():
    from ddia_ray.plugins import PluginManager

    class Longest:
        api_version = "1.0"

        def ddia_ray_conflict_resolvers(self):
            return {"test-longest": lambda key, siblings: max((s.value or b"" for s in siblings), key=len)}

    manager = PluginManager(health_timeout_s=5.0, call_timeout_s=5.0)
    manager.register(Longest(), "longest")
    try:
        a, b = _versions("resolver:test-longest", "a"), _versions("resolver:test-longest", "b")
        a.put(b"k", b"short", VectorClock(), (1, 0))
        a.merge(b"k", b.put(b"k", b"the longer one", VectorClock(), (2, 0)))
        assert [s.value for s in a.answer(b"k", a.data[b"k"])["siblings"]] == [b"the longer one"]
    finally:
        manager.unregister("longest")
    with pytest.raises(ConfigError, match="unknown conflict resolver"):
        parse_policies("resolver:test-longest")  # withdrawn with its plugin


@pytest.mark.parametrize("spec", ["siblings", "lww", "resolver:set_union"])
@pytest.mark.parametrize("value", [b"v", b"", None])
def test_a_blind_write_of_a_new_key_is_the_state_the_general_update_builds(spec, value):
    # put() builds a new key's state directly; it must be the state DVVSet.update stamps from nothing,
    # encode to the same bytes (the Merkle trees hash them) and be told to on_change once.
    from ddia_ray.clocks import DVVSet
    from ddia_ray.replication.resolvers import Sibling
    from ddia_ray.replication.state_format import encode_state

    changes = []
    kv = KeyVersions("node-7", "store", Policies(parse_policies(spec)), on_change=lambda k, s: changes.append((k, s)))
    state = kv.put(b"k", value, VectorClock(), (1_700_000_000_000_000_000, 3))
    general = DVVSet().update(DVVSet.new(Sibling(value, 1_700_000_000_000_000_000, "node-7", 3), VectorClock()),
                              "node-7")
    assert state == general and encode_state(state) == encode_state(general)
    assert changes == [(b"k", state)] and kv.data[b"k"] is state and kv.siblings_max == 1
    # A second blind write of the key goes the general way and keeps both as siblings, or LWW's winner
    # (these values are no encoded tuples: set_union fails on them, and the siblings stay).
    again = kv.put(b"k", b"w", VectorClock(), (1_700_000_000_000_000_001, 0))
    assert again.size() == (1 if spec == "lww" else 2)
