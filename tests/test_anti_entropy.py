"""Merkle anti-entropy between two replicas: the session finds exactly the differing keys, within the
byte bound, and hostile messages fail with ddia_ray errors.

DDIA 5.5 ("Read repair and anti-entropy"); DeCandia et al. 2007 ("Dynamo", 4.7). Every message
crosses the codec both ways, as it would between actors.
"""

from __future__ import annotations

import functools
import os
import random

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray import codec
from ddia_ray.errors import (
    CorruptRecordError,
    DdiaRayError,
    InvalidArgumentError,
    MerkleShapeError,
    UnknownVersionError,
)
from ddia_ray.history import check_convergence
from ddia_ray.replication import anti_entropy, anti_entropy_responder
from ddia_ray.replication.anti_entropy import (
    AeFetch,
    AeNodes,
    AeProbe,
    AeValues,
    AntiEntropySession,
    answer,
    pushed_pairs,
)
from ddia_ray.replication.merkle import MerkleTree, key_hash
from ddia_ray.replication.power_sums import key_id

EXAMPLES = int(os.environ.get("DDIA_AE_EXAMPLES", "40"))


def wire(message):
    """``message`` as the peer receives it: encoded, then decoded."""
    return codec.decode(codec.encode(message))


def exchange(a: dict, b: dict, shape: dict, *, session_id=7, **options):
    """Run a session from replica ``a`` to replica ``b``; returns the finished session and B's pushed pairs."""
    ta, tb = MerkleTree.build(a.items(), **shape), MerkleTree.build(b.items(), **shape)
    session = AntiEntropySession(ta, peer="b", session_id=session_id, lookup=lambda ks: [a.get(k) for k in ks],
                                 **options)
    pushed = []
    out = session.start()
    for _ in range(200):
        if not out:
            break
        replies = []
        for m in out:
            m = wire(m)
            if isinstance(m, AeFetch):
                pushed += pushed_pairs(m)
            replies.append(wire(answer(tb, m, lambda ks: [b.get(k) for k in ks])))
        out = [x for r in replies for x in session.on_message(r)]
    assert session.done
    return session, pushed


def differing(a: dict, b: dict) -> list[bytes]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def diverge(rng: random.Random, base: dict, count: int) -> tuple[dict, dict, int]:
    """Two copies of ``base`` that differ in ``count`` keys (changed on one side, or only on one side);
    with the minimal bytes that must cross."""
    a, b = dict(base), dict(base)
    minimal = 0
    for j, key in enumerate(rng.sample(sorted(base), count)):
        if j % 4 in (0, 3):
            b[key] = rng.randbytes(len(base[key]))
            minimal += 2 * (len(key) + len(base[key]))
        elif j % 4 == 1:
            del b[key]
            minimal += len(key) + len(base[key])
        else:
            del a[key]
            minimal += len(key) + len(base[key])
    return a, b, minimal


@functools.lru_cache(maxsize=8)
def store(n: int, seed: int = 1, value_bytes: int = 100) -> dict:
    """``n`` keys of random values (cached: callers copy before they change it)."""
    rng = random.Random(seed)
    return {b"key:%012d" % i: rng.randbytes(value_bytes) for i in range(n)}


def test_equal_stores_end_after_one_round():
    data = store(2000)
    session, pushed = exchange(data, dict(data), MerkleTree.shape_for(2000))
    assert (session.messages_sent, session.messages_received, session.rounds) == (1, 1, 1)
    assert session.verified and session.received == [] and session.to_push == [] and pushed == []
    assert session.bytes_sent + session.bytes_received < 200


def test_empty_replicas_agree_and_an_empty_one_gets_everything():
    session, _ = exchange({}, {}, {"fanout": 4, "depth": 3})
    assert session.verified and session.rounds == 1
    data = store(300)
    session, pushed = exchange({}, data, {"fanout": 4, "depth": 3})
    assert sorted(session.received) == sorted(data.items()) and pushed == []
    session, pushed = exchange(data, {}, {"fanout": 4, "depth": 3})
    assert sorted(pushed) == sorted(data.items()) and session.received == []


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(st.binary(max_size=5), st.binary(max_size=6), max_size=60),
       st.dictionaries(st.binary(max_size=5), st.binary(max_size=6), max_size=60),
       st.sampled_from([{"fanout": 2, "depth": 4}, {"fanout": 4, "depth": 3}, {"fanout": 16, "depth": 2}]),
       st.integers(0, 6), st.sampled_from([0, 1024]))
def test_the_session_finds_exactly_the_differing_keys(base, other, shape, lmax, sums_min_keys):
    a = dict(base)
    b = {**base, **other}  # shared keys, changed keys and keys only b holds
    for k in list(other)[:3]:
        a.pop(k, None)
        a[k + b"!"] = b"mine"  # keys only a holds
    session, pushed = exchange(a, b, shape, lmax=lmax, sums_min_keys=sums_min_keys)  # with power sums, or not
    assert session.verified
    assert session.differing_keys == differing(a, b)
    assert dict(session.received) == {k: b[k] for k in differing(a, b) if k in b}
    assert dict(pushed) == {k: a[k] for k in differing(a, b) if k in a}


def test_merging_both_ways_makes_the_replicas_converge():
    rng = random.Random(5)
    a, b, _ = diverge(rng, store(3000), 200)
    session, pushed = exchange(a, b, MerkleTree.shape_for(3000))
    for key, value in session.received:  # each side merges what it got; here the larger value wins
        a[key] = max(value, a.get(key, b""))
    for key, value in pushed:
        b[key] = max(value, b.get(key, b""))
    assert check_convergence({"a": a, "b": b}).converged


def test_hashes_too_narrow_to_see_every_difference_are_caught_by_the_root_and_searched_again(monkeypatch):
    # One-byte node hashes and prefixes miss about one difference in 256 per level: the first pass
    # misses some, the full-width root check notices, and a wider pass finds only those.
    monkeypatch.setattr(anti_entropy, "_WIDTHS", ((1, 1), (1, 1), (8, 8)))
    rng = random.Random(11)
    a, b, _ = diverge(rng, store(4000), 1500)
    session, pushed = exchange(a, b, MerkleTree.shape_for(4000))
    assert session.passes >= 2 and session.verified
    assert session.differing_keys == differing(a, b)


@pytest.mark.parametrize("n, count", [(20_000, 200), (20_000, 2_000)])
def test_transfer_stays_within_twice_the_minimal_bytes(n, count):
    a, b, minimal = diverge(random.Random(n + count), store(n), count)
    session, _ = exchange(a, b, MerkleTree.shape_for(n))
    assert session.differing_keys == differing(a, b)
    total = session.bytes_sent + session.bytes_received
    assert minimal < total <= 2 * minimal, (total, minimal)


@pytest.mark.parametrize("count, rounds", [(1, 2), (2, 2), (3, 2), (12, 2), (13, 3), (30, 3), (31, 6)])
def test_a_few_differing_keys_are_named_by_power_sums_within_twice_their_bytes(count, rounds):
    # Up to 2 keys: the probe's own sums name them and the answer carries them (then a push, as the
    # changed key crosses both ways); up to 12: the answer's sums; up to 30: the next answer's. Past
    # that, the descent: more rounds. The bound holds from the first key (see the module doc).
    a, b, minimal = diverge(random.Random(3), store(5_000), count)
    session, _ = exchange(a, b, MerkleTree.shape_for(5_000))
    assert session.verified and session.differing_keys == differing(a, b)
    assert session.rounds == rounds if count < 31 else session.rounds >= rounds
    assert minimal < session.bytes_sent + session.bytes_received <= 2 * minimal


def test_one_key_only_the_peer_holds_crosses_in_one_round_trip():
    data = store(5_000)
    a, b = dict(data), dict(data)
    del a[b"key:000000000042"]
    session, pushed = exchange(a, b, MerkleTree.shape_for(5_000))
    assert (session.rounds, session.messages_sent, session.messages_received) == (1, 1, 1)
    assert session.received == [(b"key:000000000042", data[b"key:000000000042"])] and pushed == []
    assert session.verified and session.bytes_sent + session.bytes_received <= 2 * (16 + 100)


def test_a_small_tree_skips_the_power_sums():
    a, b, _ = diverge(random.Random(9), store(500), 2)
    sent = exchange(a, b, MerkleTree.shape_for(500))[0]
    assert sent.verified and sent.rounds > 2  # the descent: no sums in the probe, none in the answers
    with_sums = exchange(a, b, MerkleTree.shape_for(500), sums_min_keys=0)[0]
    assert with_sums.rounds == 2 and with_sums.differing_keys == sent.differing_keys == differing(a, b)


def test_keys_the_sums_name_wrongly_are_caught_by_the_root_check_and_searched_again(monkeypatch):
    # A wrong decode (about 2**-32 a key) is played here by a responder that names an equal key.
    a, b, _ = diverge(random.Random(8), store(2000), 1)
    same = next(k for k in sorted(a) if a.get(k) == b.get(k))
    monkeypatch.setattr(anti_entropy_responder, "decode", lambda mine, theirs: [(key_id(key_hash(same)), 1)])
    session, _ = exchange(a, b, MerkleTree.shape_for(2000), sums_min_keys=0)
    assert session.passes == 2 and session.verified and session.differing_keys == differing(a, b)


def test_a_few_differences_are_verified_before_the_fetch_which_carries_the_pushes(monkeypatch):
    monkeypatch.setattr(anti_entropy, "PROBE_SUMS", 0)  # no power sums: the descent alone
    data = store(2000)
    a, b = dict(data), dict(data)
    a[b"key:000000000007"] = b"mine"
    b[b"key:000000000009"] = b"theirs"
    ta, tb = MerkleTree.build(a.items(), fanout=4, depth=5), MerkleTree.build(b.items(), fanout=4, depth=5)
    session = AntiEntropySession(ta, peer="b", session_id=1, lookup=lambda ks: [a[k] for k in ks])
    sent = []
    out = session.start()
    while out:
        sent += out
        out = [x for m in out for x in session.on_message(wire(answer(tb, wire(m), lambda ks: [b[k] for k in ks])))]
    fetches = [m for m in sent if isinstance(m, AeFetch)]
    k7, k9 = b"key:000000000007", b"key:000000000009"
    assert len(fetches) == 1 and fetches[0].want  # one fetch, and no separate push afterwards
    assert sorted(pushed_pairs(fetches[0])) == [(k7, b"mine"), (k9, data[k9])]
    assert session.verified and session.differing_keys == [k7, k9]
    assert dict(session.received) == {k7: data[k7], k9: b"theirs"}


def test_a_peer_written_during_the_session_ends_it_after_its_passes_unverified():
    rng = random.Random(2)
    a, b, _ = diverge(rng, store(1000), 30)
    ta, tb = MerkleTree.build(a.items(), fanout=4, depth=4), MerkleTree.build(b.items(), fanout=4, depth=4)
    session = AntiEntropySession(ta, peer="b", session_id=1, lookup=lambda ks: [a.get(k) for k in ks])
    moving = [k for k in differing(a, b) if k in b]
    out, messages = session.start(), 0
    while out:
        messages += len(out)
        replies = [wire(answer(tb, wire(m), lambda ks: [b.get(k) for k in ks])) for m in out]
        for key in moving:  # the peer's divergent keys are written again between every two messages
            b[key] = b"%d" % messages
            tb.update(key, b[key])
        out = [x for r in replies for x in session.on_message(r)]
    assert session.done and not session.verified and session.passes == 3
    assert messages < 40


def test_without_lookup_the_caller_pushes():
    a, b = {b"x": b"1", b"y": b"2"}, {b"x": b"1"}
    ta, tb = MerkleTree.build(a.items(), fanout=4, depth=2), MerkleTree.build(b.items(), fanout=4, depth=2)
    session = AntiEntropySession(ta, peer="b", session_id=1)
    out = session.start()
    while out:
        out = [x for m in out for x in session.on_message(wire(answer(tb, wire(m), lambda ks: [b.get(k) for k in ks])))]
    assert session.done and session.to_push == [b"y"] and session.pushed == 0


def test_replies_of_another_session_are_refused_and_stale_ones_ignored():
    data = store(100)
    tree = MerkleTree.build(data.items(), fanout=4, depth=3)
    session = AntiEntropySession(tree, peer="b", session_id=3, lookup=lambda ks: [data[k] for k in ks])
    (probe,) = session.start()
    reply = answer(MerkleTree(fanout=4, depth=3), probe, lambda ks: [])  # an empty peer lists its root
    with pytest.raises(InvalidArgumentError):
        session.on_message(AeNodes.of(4, 0, root=0))
    assert session.on_message(AeValues.of(3)) == []  # nothing was fetched: a stray reply
    (push,) = session.on_message(reply)
    assert sorted(pushed_pairs(push)) == sorted(data.items())
    assert session.on_message(reply) == []  # a duplicate
    assert not session.done
    assert session.on_message(AeValues.of(3)) == [] and session.done
    with pytest.raises(InvalidArgumentError):
        session.start()


def test_a_tree_of_another_shape_is_refused():
    tree = MerkleTree(fanout=4, depth=3)
    session = AntiEntropySession(MerkleTree.build([(b"k", b"v")], fanout=4, depth=2), peer="b", session_id=1)
    (probe,) = session.start()
    with pytest.raises(MerkleShapeError) as info:
        answer(tree, wire(probe), lambda ks: [])
    assert info.value.ours == (4, 3) and info.value.theirs == (4, 2)


# --- hostile messages -------------------------------------------------------------------


def test_a_message_is_one_compact_bytes_field_and_round_trips():
    probe = AeProbe.of(7, 0, b"\x00", step=3, ewidth=8, root=(1 << 64) - 1, shape=(4, 10), sums=bytes(20))
    assert wire(probe) == probe and (probe.sid, probe.step, probe.shape, probe.nodes) == (7, 3, (4, 10), b"\x00")
    assert len(codec.encode(AeProbe.of(1, 3, b"\x05"))) < 40  # the framing of a round: tens of bytes
    values = AeValues.of(1, (b"k" * 16, b"v" * 100))
    assert wire(values).pairs == (b"k" * 16, b"v" * 100) and len(codec.encode(values)) < 16 + 100 + 40


def test_a_version_1_message_fails_with_a_clear_error():
    with pytest.raises(UnknownVersionError):
        codec.decode(_frame("repl.ae_probe", {"sid": 1, "level": 0, "nodes": b""}, version=1))


@pytest.mark.parametrize("tag, body", [
    ("repl.ae_probe", b""),  # no sid
    ("repl.ae_probe", b"\x01"),  # no bitmap
    ("repl.ae_probe", b"\x01\x80"),  # a truncated varint
    ("repl.ae_probe", b"\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),  # a varint of 11 bytes
    ("repl.ae_probe", b"\x01\x80\x10"),  # a field this version does not define
    ("repl.ae_probe", b"\x01\x01\xff"),  # a root cut short
    ("repl.ae_probe", b"\x01\x04\xff\xff\xff\x0f" + bytes(8)),  # sums announced longer than the frame
    ("repl.ae_probe", b"\x01\x04\x03abc"),  # 3 bytes of 4-byte sums
    ("repl.ae_probe", b"\x01\x04\x04\xff\xff\xff\xff"),  # a sum not below P
    ("repl.ae_probe", b"\x01\x08\x05\x03"),  # asks for sums 5 to 3
    ("repl.ae_probe", b"\x01\x08\x00\x7f"),  # asks for sums past the last
    ("repl.ae_probe", b"\x01\x10\x00"),  # step 0
    ("repl.ae_probe", b"\x01\x00\x00"),  # a byte past the last field
    ("repl.ae_probe", b"\x01\x40\x40"),  # level past DEPTH_MAX
    ("repl.ae_nodes", b"\x01\x04\x02\x00\x00"),  # ids of 2 bytes
    ("repl.ae_nodes", b"\x01\x02\x01\x01k"),  # a pair without its value
    ("repl.ae_nodes", b"\x01\x02\xff\xff\x03"),  # a million pairs announced in a few bytes
    ("repl.ae_fetch", b"\x01\x20\x00"),  # ewidth 0
    ("repl.ae_fetch", b"\x01\x02\x01\x00"),  # ids of 1 byte
    ("repl.ae_values", b"\x01\x01\x03\x01k\x01v\x01x"),  # three items: not pairs
    ("repl.ae_values", b"\x01\x01\x01\x05ab"),  # an item longer than the frame
])
def test_malformed_compact_messages_fail_to_decode(tag, body):
    with pytest.raises(CorruptRecordError):
        codec.decode(_frame(tag, {"b": body}))


@pytest.mark.parametrize("tag, fields", [
    ("repl.ae_probe", {"b": "x"}), ("repl.ae_nodes", {}), ("repl.ae_fetch", {"b": 5}),
    ("repl.ae_values", {"b": b"\x01\x00", "sid": 1}),
])
def test_frames_of_the_wrong_fields_fail_to_decode(tag, fields):
    with pytest.raises(CorruptRecordError):
        codec.decode(_frame(tag, fields))


def _frame(tag: str, fields: dict, version: int = 2) -> bytes:
    """A record frame as a hostile peer could write it, bypassing the record's own checks."""
    import msgpack

    inner = msgpack.packb({"t": tag, "v": version, "f": fields}, use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner), use_bin_type=True)


@pytest.mark.parametrize("message", [
    AeProbe.of(1, 2, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),  # a varint of 11 bytes
    AeProbe.of(1, 2, b"\x80"),  # a truncated varint
    AeProbe.of(1, 2, bytes([16])),  # node 16 of a level of 16 nodes
    AeProbe.of(1, 5, b"\x00"),  # past the depth
    AeFetch.of(1, nodes=b"\x00", counts=b"\x02", want=b"abc"),  # 3 bytes for two 4-byte prefixes
    AeFetch.of(1, nodes=b"\x00\x00", counts=b"\x01"),  # counts for one of two nodes
    AeFetch.of(1, nodes=bytes([100]), counts=b"\x00"),  # past the last node
    AeFetch.of(1, ids=(1 << 31).to_bytes(4, "big")),  # a key id past 31 bits
])
def test_requests_that_do_not_fit_the_tree_are_corrupt(message):
    tree = MerkleTree.build(store(50).items(), fanout=4, depth=2)
    with pytest.raises(CorruptRecordError):
        answer(tree, wire(message), lambda ks: [None] * len(ks))


def test_a_probe_asking_for_too_many_hashes_is_refused(monkeypatch):
    tree = MerkleTree.build(store(50).items(), fanout=4, depth=4)
    probe = AeProbe.of(1, 1, bytes([0, 0, 0, 0]), step=3, width=8)  # 4 nodes x 63 hashes x 8 bytes
    assert isinstance(answer(tree, probe, lambda ks: []), AeNodes)
    monkeypatch.setattr(anti_entropy_responder, "ANSWER_HASH_BYTES_MAX", 4 * 63 * 8 - 1)
    with pytest.raises(CorruptRecordError):
        answer(tree, probe, lambda ks: [])


def test_a_responder_answers_only_requests():
    with pytest.raises(InvalidArgumentError):
        answer(MerkleTree(fanout=4, depth=2), AeValues.of(1), lambda ks: [])


sums_bytes = st.lists(st.integers(0, (1 << 32) - 6), max_size=64).map(
    lambda xs: b"".join(x.to_bytes(4, "big") for x in xs))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(["repl.ae_probe", "repl.ae_nodes", "repl.ae_fetch", "repl.ae_values"]), st.binary(max_size=60))
def test_arbitrary_bytes_in_a_message_decode_or_raise_corrupt(tag, body):
    try:
        message = codec.decode(_frame(tag, {"b": body}))
    except CorruptRecordError:
        return
    assert codec.decode(codec.encode(message)) == message


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40),
       st.booleans(), st.one_of(st.none(), st.integers(0, (1 << 64) - 1)), sums_bytes,
       st.lists(st.binary(max_size=20), max_size=4).map(tuple), st.binary(max_size=12))
def test_a_hostile_answer_raises_only_ddia_ray_errors(hashes, listed, counts, entries, at_root, root, sums, pairs,
                                                      ids):
    data = store(200)
    session = AntiEntropySession(MerkleTree.build(data.items(), fanout=4, depth=3), peer="b", session_id=9)
    (probe,) = session.start()
    if not at_root:  # one round into the descent, against a peer whose values all differ
        peer = MerkleTree.build(store(200, seed=2).items(), fanout=4, depth=3)
        (probe,) = session.on_message(answer(peer, probe, lambda ks: []))
    try:
        session.on_message(wire(AeNodes.of(9, probe.level, hashes, listed, counts, entries, root, sums, pairs, ids)))
    except DdiaRayError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 3), st.binary(max_size=30), st.integers(1, 8), st.integers(1, 8), st.integers(1, 8),
       st.integers(0, 10), st.binary(max_size=30), st.binary(max_size=30), sums_bytes,
       st.one_of(st.none(), st.tuples(st.integers(0, 30), st.integers(31, 61))), st.binary(max_size=12))
def test_hostile_requests_raise_only_ddia_ray_errors(level, nodes, step, width, ewidth, lmax, counts, want, sums, ask,
                                                     ids):
    tree = MerkleTree.build(store(200).items(), fanout=4, depth=3)
    try:
        messages = [AeProbe.of(1, level, nodes, step, width, ewidth, lmax, 0, (4, 3), sums, ask),
                    AeFetch.of(1, nodes=nodes, counts=counts, want=want, ewidth=ewidth, ids=ids)]
    except InvalidArgumentError:  # e.g. ids not a multiple of 4 bytes: refused before the wire
        messages = [AeProbe.of(1, level, nodes, step, width, ewidth, lmax, 0, (4, 3), sums, ask)]
    for message in messages:
        try:
            reply = answer(tree, wire(message), lambda ks: [b"v"] * len(ks))
        except DdiaRayError:
            continue
        assert isinstance(reply, (AeNodes, AeValues))
