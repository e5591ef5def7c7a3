"""Power sums of a replica's keys (replication/power_sums.py): up to (L - 1) / 2 differing keys decode
from L sums, more are refused, and hostile sums raise only ddia_ray errors.

Minsky, Trachtenberg and Zippel 2003 ("Set reconciliation with nearly optimal communication
complexity"), in the weighted form a Merkle tree's entry hashes give.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.errors import CorruptRecordError
from ddia_ray.replication.power_sums import ID_BITS, P, SUM_BYTES, SUMS, PowerSums, decode, key_id, read_sums


def two_replicas(rng: random.Random, common: int, differing: int):
    """Sums of two replicas sharing ``common`` keys and differing in ``differing`` (changed on one side,
    or held by one side only); with the expected ``{id: weight difference}``."""
    a, b, expected = PowerSums(), PowerSums(), {}
    for _ in range(common):
        kid, h = rng.randrange(1 << ID_BITS), rng.randrange(1 << 64)
        a.add(kid, h)
        b.add(kid, h)
    for j in range(differing):
        kid, h, g = rng.randrange(1 << ID_BITS), rng.randrange(1 << 64), rng.randrange(1 << 64)
        if j % 3 == 0:  # changed: both versions are one difference
            a.add(kid, h)
            b.add(kid, g)
            expected[kid] = (h - g) % P
        elif j % 3 == 1:
            a.add(kid, h)
            expected[kid] = h % P
        else:
            b.add(kid, g)
            expected[kid] = -g % P
    return a, b, expected


@pytest.mark.parametrize("differing", [0, 1, 2, 3, 12, 30])
def test_up_to_thirty_differing_keys_decode_with_their_weight_differences(differing):
    a, b, expected = two_replicas(random.Random(differing), 40, differing)
    assert dict(decode(a.sums(), b.sums()) or []) == expected


@pytest.mark.parametrize("count, differing", [(5, 2), (25, 12), (SUMS, 30)])
def test_the_first_sums_name_as_many_keys_as_they_can_and_refuse_one_more(count, differing):
    a, b, expected = two_replicas(random.Random(count), 20, differing)
    assert dict(decode(a.sums(0, count), b.sums(0, count)) or []) == expected
    a, b, _ = two_replicas(random.Random(count), 20, differing + 1)
    assert decode(a.sums(0, count), b.sums(0, count)) is None


def test_a_rewrite_cancels_and_a_delete_takes_the_key_away():
    a, b = PowerSums(), PowerSums()
    a.add(5, 100)
    a.add(5, 50 - 100)  # rewritten: only the new weight stays
    b.add(5, 50)
    assert a == b and decode(a.sums(), b.sums()) == []
    a.add(5, -50)  # deleted
    assert a == PowerSums()


def test_a_scan_sums_as_the_updates_do():
    rng = random.Random(4)
    pairs = [(rng.randrange(1 << ID_BITS), rng.randrange(1 << 64)) for _ in range(300)]
    one_by_one = PowerSums()
    for kid, h in pairs:
        one_by_one.add(kid, h)
    scanned = PowerSums.from_arrays(np.array([k for k, _ in pairs], dtype=np.uint64),
                                    np.array([h for _, h in pairs], dtype=np.uint64))
    assert scanned == one_by_one and scanned.copy() == scanned
    assert read_sums(scanned.to_bytes(3, 9), "t") == scanned.sums(3, 9)


def test_key_ids_are_the_top_bits_of_the_key_hash():
    assert key_id((1 << 64) - 1) == (1 << ID_BITS) - 1 and key_id(1 << 32) == 0


@pytest.mark.parametrize("data", [b"abc", bytes(4 * SUMS + 4), b"\xff\xff\xff\xff", P.to_bytes(4, "big")])
def test_hostile_sums_are_refused(data):
    with pytest.raises(CorruptRecordError):
        read_sums(data, "t")


def test_sums_of_other_lengths_are_refused():
    with pytest.raises(CorruptRecordError):
        decode([1, 2], [1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, P - 1), min_size=1, max_size=SUMS), st.integers(0, 2**32))
def test_arbitrary_sums_decode_or_are_refused_and_never_raise(sums, seed):
    result = decode(sums, [0] * len(sums))
    assert result is None or all(0 <= kid < 1 << ID_BITS and 0 < w < P for kid, w in result)
    if result:  # what it names reproduces every sum it was given
        again = PowerSums()
        for kid, w in result:
            again.add(kid, w)
        assert again.sums(0, len(sums)) == sums
    assert SUM_BYTES == 4
