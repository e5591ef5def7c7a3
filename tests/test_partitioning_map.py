"""The partition map's pure core: routing keys, the map's invariants under splits, merges and moves,
the replica's request check, and the routing of keys, ranges and batches."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.error_record import ErrorRecord
from ddia_ray.errors import (ConfigError, CorruptRecordError, InvalidArgumentError, MapVersionError, StaleMapError,
                             WrongPartitionError)
from ddia_ray.partitioning import (HASH_BYTES, Partition, PartitionMap, hash_boundaries, hash_of, initial_map,
                                   routing_key, sample_boundaries)
from ddia_ray.replication.records import DELETE, DELETE_RANGE, PUT


def test_the_hash_routing_key_is_blake2b_and_the_same_in_every_process():
    assert hash_of(b"user:42") == hashlib.blake2b(b"user:42", digest_size=8).digest()
    # Known answers, pinned: a change of the hash function would re-home every key of every stored map.
    assert hash_of(b"").hex() == "e4a6a0577479b2b4" and hash_of(b"user:42").hex() == "d9279b7cb3a5b282"
    assert routing_key("range", b"k") == b"k" and routing_key("hash", b"k") == hash_of(b"k")
    with pytest.raises(InvalidArgumentError):
        routing_key("hash", "k")
    with pytest.raises(ConfigError, match="unknown partitioning scheme"):
        routing_key("ring", b"k")


def test_hash_boundaries_cut_the_space_evenly_and_spread_keys():
    cuts = hash_boundaries(16)
    assert len(cuts) == 15 and all(len(c) == HASH_BYTES for c in cuts) and list(cuts) == sorted(cuts)
    loc = initial_map("hash", ["g"], partitions=16).locator()
    counts: dict[int, int] = {}
    for i in range(16_000):
        pid = loc.locate(b"key-%d" % i).id
        counts[pid] = counts.get(pid, 0) + 1
    assert len(counts) == 16 and max(counts.values()) < 1.25 * 1000 and min(counts.values()) > 0.75 * 1000
    with pytest.raises(ConfigError):
        hash_boundaries(0)


def test_sample_boundaries_split_a_sample_into_equal_counts():
    rng = random.Random(7)
    sample = [b"%06d" % rng.randrange(1_000_000) for _ in range(5000)]
    cuts = sample_boundaries(sample, 5)
    assert len(cuts) == 4 and list(cuts) == sorted(set(cuts))
    loc = initial_map("range", ["a", "b"], boundaries=cuts).locator()
    counts: dict[int, int] = {}
    for k in set(sample):
        counts[loc.locate(k).id] = counts.get(loc.locate(k).id, 0) + 1
    assert max(counts.values()) - min(counts.values()) <= 2
    assert sample_boundaries([b"x", b"x"], 4) == (b"x",)  # fewer distinct keys than partitions
    assert sample_boundaries([], 4) == ()


def test_initial_maps_deal_partitions_round_robin_and_refuse_bad_settings():
    m = initial_map("hash", ["g1", "g2", "g3"])
    assert len(m.partitions) == 24 and m.groups() == ("g1", "g2", "g3") and m.version == 1 and m.next_id == 24
    r = initial_map("range", ["g1", "g2"], boundaries=[b"h", b"p"])
    assert [(p.start, p.end, p.group) for p in r.partitions] == [(b"", b"h", "g1"), (b"h", b"p", "g2"),
                                                                 (b"p", None, "g1")]
    for kwargs, message in [({"scheme": "range", "groups": []}, "one or more"),
                            ({"scheme": "range", "groups": ["a", "a"]}, "distinct"),
                            ({"scheme": "range", "groups": ["a"], "boundaries": [b"p", b"h"]}, "ascending"),
                            ({"scheme": "range", "groups": ["a"], "boundaries": [b"h"], "partitions": 3}, "make 2"),
                            ({"scheme": "hash", "groups": ["a"], "boundaries": [b"h"]}, "evenly"),
                            ({"scheme": "ring", "groups": ["a"]}, "unknown partitioning scheme")]:
        with pytest.raises(ConfigError, match=message):
            initial_map(**kwargs)


def _owner(pmap: PartitionMap, key: bytes) -> int:
    """The one partition that owns ``key``, found without the locator's bisection."""
    rk = routing_key(pmap.scheme, key)
    owners = [p.id for p in pmap.partitions if p.owns(rk)]
    assert len(owners) == 1, f"{key!r} has owners {owners} at version {pmap.version}"
    return owners[0]


_KEYS = [b"", b"a", b"ab", b"m", b"mz", b"z", b"zzz", b"\xff\xff"] + [b"k%03d" % i for i in range(0, 1000, 37)]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["range", "hash"]), st.randoms(use_true_random=False), st.integers(1, 25))
def test_every_change_keeps_one_owner_per_key_and_fences_only_what_it_changed(scheme, rng, steps):
    pmap = initial_map(scheme, ["g1", "g2"], **({"partitions": 4} if scheme == "hash" else {}))
    seen_ids = {p.id for p in pmap.partitions}
    for _ in range(steps):
        before = pmap
        p = rng.choice(pmap.partitions)
        action = rng.choice(["split", "merge", "move"])
        try:
            if action == "split":
                at = hash_of(rng.randbytes(4)) if scheme == "hash" else rng.choice(_KEYS[1:])
                pmap = pmap.split(p.id, at, group=rng.choice([None, "g3"]))
            elif action == "merge":
                i = pmap.partitions.index(p)
                pmap = pmap.merge(p.id, pmap.partitions[i + 1].id)
            else:
                pmap = pmap.move(p.id, rng.choice(["g1", "g2", "g3"]))
        except (InvalidArgumentError, IndexError):
            continue  # a split point outside it, a merge without a neighbour in its group: refused
        assert pmap.version == before.version + 1
        assert codec.decode(codec.encode(pmap)) == pmap
        loc = pmap.locator()
        for k in _KEYS:
            assert loc.locate(k).id == _owner(pmap, k)
        changed = set(pmap.partitions) - set(before.partitions)
        assert changed and all(c.since == pmap.version for c in changed)
        new_ids = {c.id for c in changed} - {q.id for q in before.partitions}
        assert not new_ids & seen_ids, "a retired or existing id was reused"
        seen_ids |= new_ids
        for q in pmap.partitions:  # a request routed with the map before the change
            if q in changed:
                with pytest.raises(StaleMapError):
                    pmap.check_request(q.id, before.version, ())
            else:
                assert pmap.check_request(q.id, before.version, ()) == q


def test_bad_changes_are_refused_with_the_reason():
    m = initial_map("range", ["g1", "g2"], boundaries=[b"m"])
    with pytest.raises(InvalidArgumentError, match="outside partition 0"):
        m.split(0, b"q")  # in partition 1
    with pytest.raises(InvalidArgumentError, match="strictly inside"):
        m.split(1, b"m")  # its own start
    with pytest.raises(InvalidArgumentError, match="8-byte"):
        initial_map("hash", ["g"], partitions=2).split(0, b"\x01")
    with pytest.raises(InvalidArgumentError, match="groups 'g1' and 'g2'"):
        m.merge(0, 1)
    with pytest.raises(InvalidArgumentError, match="not neighbours"):
        m.move(1, "g1").merge(1, 0)
    with pytest.raises(InvalidArgumentError, match="already"):
        m.move(0, "g1")
    with pytest.raises(WrongPartitionError, match="no partition 9") as e:
        m.split(9, b"x")
    assert e.value.partition == 9 and e.value.version == 1


def test_the_replica_check_refuses_stale_future_and_foreign_requests():
    m = initial_map("range", ["g1", "g2"], boundaries=[b"m"]).split(0, b"f")  # version 2
    assert m.check_request(1, 1, [b"x", b"m"]).id == 1  # untouched by the split: an old map is fine
    with pytest.raises(StaleMapError) as stale:
        m.check_request(0, 1, [b"a"])
    assert (stale.value.version, stale.value.current) == (1, 2)
    with pytest.raises(MapVersionError, match="newer than this side") as future:
        m.check_request(0, 3, [b"a"])
    assert not isinstance(future.value, StaleMapError)
    with pytest.raises(WrongPartitionError, match="not in partition 0"):
        m.check_request(0, 2, [b"a", b"g"])
    with pytest.raises(InvalidArgumentError):
        m.check_request(0, 0, [b"a"])
    # The errors cross actors as typed records, with their attributes.
    back = ErrorRecord.of(stale.value, "r1").exception()
    assert type(back) is StaleMapError and (back.version, back.current) == (1, 2)


def test_a_damaged_map_is_refused_on_decode():
    good = codec.encode(initial_map("range", ["g"], boundaries=[b"m"]))
    gap = good.replace(b"\xc4\x01m", b"\xc4\x01n", 1)  # the second partition now starts at b"n"
    assert gap != good
    with pytest.raises(CorruptRecordError, match="gap or overlap"):
        codec.decode(gap)
    with pytest.raises(InvalidArgumentError, match="whole key space"):
        PartitionMap(1, "range", (Partition(0, b"a", None, "g"),), 1)
    with pytest.raises(InvalidArgumentError, match="unique"):
        PartitionMap(1, "range", (Partition(0, b"", b"m", "g"), Partition(0, b"m", None, "g")), 1)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([(), (b"f",), (b"f", b"m", b"t")]), st.binary(max_size=2), st.binary(max_size=2))
def test_a_range_scan_asks_exactly_the_partitions_holding_its_keys_in_order(cuts, a, b):
    start, end = min(a, b), max(a, b)
    loc = initial_map("range", ["g"], boundaries=cuts).locator()
    asked = loc.overlapping(start, end)
    assert list(asked) == sorted(asked, key=lambda p: p.start)
    probe = [bytes([i, j]) for i in range(0, 256, 7) for j in (0, 255)] + [start, end, b"f", b"m", b"t"]
    for k in probe:
        if start <= k < end:
            assert loc.locate(k) in asked
    for p in asked:  # and none that holds no key of the range
        assert p.end is None or p.end > start
        assert p.start < end
    assert len(initial_map("hash", ["g"], partitions=4).locator().overlapping(b"a", b"b")) == 4


def test_a_batch_is_split_by_owner_and_a_range_delete_is_cut_at_the_boundaries():
    loc = initial_map("range", ["g"], boundaries=[b"f", b"m"]).locator()
    ops = [(PUT, b"a", b"1"), (PUT, b"x", b"2"), (DELETE_RANGE, b"c", b"p"), (DELETE, b"g", b""), (PUT, b"b", b"3")]
    assert loc.split_ops(ops) == {0: [(PUT, b"a", b"1"), (DELETE_RANGE, b"c", b"f"), (PUT, b"b", b"3")],
                                  2: [(PUT, b"x", b"2"), (DELETE_RANGE, b"m", b"p")],
                                  1: [(DELETE_RANGE, b"f", b"m"), (DELETE, b"g", b"")]}
    hashed = initial_map("hash", ["g"], partitions=4).locator()
    parts = hashed.split_ops([(DELETE_RANGE, b"a", b"b"), (PUT, b"k", b"v")])
    assert all((DELETE_RANGE, b"a", b"b") in v for v in parts.values()) and len(parts) == 4
    assert (PUT, b"k", b"v") in parts[hashed.locate(b"k").id]
