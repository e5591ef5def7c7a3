"""The LSM-tree's parts on their own: Bloom filter, frames, range tombstones, merge rules, policies."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.errors import CorruptionError, NotADatabaseError
from ddia_ray.storage.lsm.bloom import BloomFilter
from ddia_ray.storage.lsm.compaction import LeveledPolicy, TieredPolicy
from ddia_ray.framing import TornObjectError, frame, frame_object, read_log, read_object
from ddia_ray.storage.lsm.manifest import Version
from ddia_ray.storage.lsm.memtable import DELETE, PUT, SCHEMA
from ddia_ray.storage.lsm.merge import merge_runs, split_outputs
from ddia_ray.storage.lsm.sstable import FileMeta
from ddia_ray.storage.lsm.tombstones import TombstoneIndex
from ddia_ray.storage.lsm.wal import WalWriter, read_wal, wal_name


def test_bloom_filter_has_no_false_negatives_and_about_one_percent_false_positives():
    members = [b"member-%d" % i for i in range(20_000)]
    bloom = BloomFilter.build(pa.array(members, pa.binary()), bits_per_key=10)
    assert all(bloom.may_contain(k) for k in members)
    fp = sum(bloom.may_contain(b"other-%d" % i) for i in range(20_000)) / 20_000
    assert 0.002 < fp < 0.02
    assert not BloomFilter.build([], 10).may_contain(b"x")


def test_log_frames_torn_tail_and_corruption():
    data = b"".join(frame(b"record-%d" % i) for i in range(4))
    assert read_log(data, where="t").bodies == tuple(b"record-%d" % i for i in range(4))
    torn = read_log(data[:-3], where="t")
    assert len(torn.bodies) == 3 and torn.torn_tail_bytes > 0
    assert len(read_log(data + b"\0" * 20, where="t").bodies) == 4  # preallocated zeros
    damaged = bytearray(data)
    damaged[len(frame(b"record-0")) + 14] ^= 1
    with pytest.raises(CorruptionError):
        read_log(bytes(damaged), where="t")
    skipped = read_log(bytes(damaged), where="t", skip=True)
    assert skipped.bodies == (b"record-0", b"record-2", b"record-3") and skipped.skipped_frames == 1


def test_preallocated_log_torn_in_any_byte_order_is_a_tail_and_damage_before_a_frame_is_not():
    whole = [frame(b"record-%d" % i) for i in range(3)]
    last = frame(b"the-last-record")
    prefix = b"".join(whole)
    reserved = b"\0" * 64
    # A copy into a mapping may land in any byte order: header missing, body present...
    no_header = prefix + b"\0" * 12 + last[12:] + reserved
    # ...part of the header and none of the body, or the header and half the body.
    half_header = prefix + last[:5] + b"\0" * (len(last) - 5) + reserved
    half_body = prefix + last[:len(last) - 6] + b"\0" * 6 + reserved
    for data in (no_header, half_header, half_body):
        read = read_log(data, where="t")
        assert read.bodies == tuple(b"record-%d" % i for i in range(3)) and read.torn_tail_bytes > 0
    # The same damage with a whole frame after it is corruption, not a torn tail.
    for damaged in (whole[0] + b"\0" * 12 + last[12:] + whole[1],
                    whole[0] + last[:len(last) - 6] + b"\xff" * 6 + whole[1]):
        with pytest.raises(CorruptionError):
            read_log(damaged + reserved, where="t")


def test_mapped_wal_grows_past_its_reservation_survives_a_crash_and_is_cut_on_close(tmp_path):
    fs = fsspec.filesystem("file")
    value = b"v" * 1000
    wal = WalWriter(fs, str(tmp_path), 7, sync="none")
    assert wal.cheap
    for seq in range(1, 3001):  # ~3 MB: past the first reservation of 1 MiB, twice
        wal.append_batch(seq, ((PUT, b"key%d" % seq, value),))
    wal.append_batch(3001, ((PUT, b"a", b"1"), (DELETE, b"b", b"")))
    path = tmp_path / wal_name(7)
    assert path.stat().st_size > wal.bytes_written  # the reserved tail, as a crash would leave it

    def replayed():
        return [(first, list(ops)) for first, ops, _ in read_wal(fs, str(tmp_path), 7, [wal_name(7)], skip=False)]

    got = replayed()  # read while the writer is still open: what a killed process leaves behind
    assert len(got) == 3001 and got[2999] == (3000, [(PUT, b"key3000", value)])
    assert got[3000] == (3001, [(PUT, b"a", b"1"), (DELETE, b"b", b"")])
    wal.close(sync=True)
    assert path.stat().st_size == wal.bytes_written and replayed() == got


def test_objects_distinguish_torn_corrupt_and_foreign():
    obj = frame_object(b"MAGIC123", b"body")
    assert read_object(obj, b"MAGIC123", where="o") == b"body"
    with pytest.raises(TornObjectError):
        read_object(obj[:-1], b"MAGIC123", where="o")
    with pytest.raises(CorruptionError):
        read_object(obj[:-1] + b"X", b"MAGIC123", where="o")
    with pytest.raises(CorruptionError):
        read_object(obj + b"extra", b"MAGIC123", where="o")
    with pytest.raises(NotADatabaseError):
        read_object(b"OTHERMAG" + obj[8:], b"MAGIC123", where="o")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=2), st.binary(max_size=2), st.integers(1, 9)), max_size=6),
       st.binary(max_size=2), st.integers(0, 10))
def test_tombstone_index_matches_a_linear_scan(tombstones, key, snap):
    expected = max([q for s, e, q in tombstones if s <= key < e and q <= snap], default=0)
    assert TombstoneIndex(tombstones).cover(key, snap) == expected


def _rows(*rows):
    return pa.table([pa.array([r[0] for r in rows], pa.binary()), pa.array([r[1] for r in rows], pa.uint64()),
                     pa.array([r[2] for r in rows], pa.uint8()), pa.array([r[3] for r in rows], pa.binary())],
                    schema=SCHEMA)


def _as_tuples(table):
    return list(zip(*(table.column(n).to_pylist() for n in SCHEMA.names)))


def test_merge_keeps_one_version_per_snapshot_stripe():
    run = _rows((b"a", 9, 0, b"a9"), (b"a", 6, 0, b"a6"), (b"a", 3, 0, b"a3"), (b"a", 1, 0, b"a1"))
    assert _as_tuples(merge_runs([run], [], False)) == [(b"a", 9, 0, b"a9")]
    assert _as_tuples(merge_runs([run], [4], False)) == [(b"a", 9, 0, b"a9"), (b"a", 3, 0, b"a3")]


def test_merge_drops_tombstones_only_at_the_bottom():
    newer = _rows((b"a", 5, 1, b""), (b"b", 6, 2, b"d"))
    older = _rows((b"a", 2, 0, b"old"), (b"c", 3, 0, b"c3"), (b"e", 4, 0, b"e4"))
    assert _as_tuples(merge_runs([newer, older], [], True)) == [(b"e", 4, 0, b"e4")]
    middle = _as_tuples(merge_runs([newer, older], [], False))
    assert (b"a", 5, 1, b"") in middle and (b"b", 6, 2, b"d") in middle and (b"c", 3, 0, b"c3") not in middle
    kept = _as_tuples(merge_runs([newer, older], [3], True))  # a snapshot at 3 still sees c3 and a=old
    assert (b"c", 3, 0, b"c3") in kept and (b"a", 2, 0, b"old") in kept and (b"b", 6, 2, b"d") in kept


def test_split_outputs_fragments_range_tombstones_at_cuts():
    rows = [(b"k%02d" % i, 1, 0, b"v" * 40) for i in range(20)] + [(b"k03", 9, 2, b"k15")]
    table = merge_runs([_rows(*rows)], [5], False)  # a snapshot keeps the covered rows
    pieces = split_outputs(table, 200)
    assert len(pieces) > 2
    frags = [(r[0], r[3]) for p in pieces for r in _as_tuples(p) if r[2] == 2]
    assert frags[0][0] == b"k03" and frags[-1][1] == b"k15"
    assert all(a[1] == b[0] for a, b in zip(frags, frags[1:]))  # contiguous, non-overlapping
    for p in pieces:
        keys = p.column("key").to_pylist()
        ends = [v for v, op in zip(p.column("value").to_pylist(), p.column("op").to_pylist()) if op == 2]
        nxt = pieces[pieces.index(p) + 1].column("key")[0].as_py() if p is not pieces[-1] else None
        assert all(nxt is None or e <= nxt for e in ends) and keys == sorted(keys)


def _meta(n, lo, hi, size, seq):
    return FileMeta(n, size, 10, lo, hi, seq, seq, 1, size)


def test_leveled_policy_compacts_l0_then_the_most_oversized_level():
    policy = LeveledPolicy(l0_compaction_trigger=2, level_base_bytes=100, level_fanout=10, num_levels=4,
                           target_file_bytes=50)
    v = Version([[_meta(1, b"a", b"c", 10, 5), _meta(2, b"b", b"d", 10, 6)], [_meta(3, b"c", b"e", 40, 1)], [], []])
    job = policy.pick(v)
    assert job.output_level == 1 and {f.number for _, f in job.inputs} == {1, 2, 3} and job.bottommost
    v = Version([[], [_meta(4, b"a", b"b", 90, 1), _meta(5, b"m", b"n", 90, 2)], [_meta(6, b"m", b"z", 5, 0)], []])
    job = policy.pick(v)  # level 1 is over target; file 4 overlaps nothing below: moved, not rewritten
    assert job.trivial_move and [f.number for _, f in job.inputs] == [4] and job.output_level == 2
    assert policy.pick(Version([[], [_meta(7, b"a", b"b", 50, 1)], [], []])) is None


def test_tiered_policy_merges_similar_consecutive_runs():
    policy = TieredPolicy(l0_compaction_trigger=3, size_ratio=2.0, max_runs=6)
    runs = [_meta(1, b"a", b"z", 10, 9), _meta(2, b"a", b"z", 12, 8), _meta(3, b"a", b"z", 15, 7),
            _meta(4, b"a", b"z", 500, 6)]
    job = policy.pick(Version([runs]))
    assert [f.number for _, f in job.inputs] == [1, 2, 3] and not job.bottommost
    assert policy.pick(Version([runs[2:]])) is None
    uneven = [_meta(i, b"a", b"z", 10 ** i, 10 - i) for i in range(1, 7)]
    job = policy.pick(Version([uneven]))  # no similar window, but too many runs
    assert [f.number for _, f in job.inputs] == [1, 2, 3, 4, 5]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=2), min_size=1, max_size=40))
def test_past_versions_moves_a_cut_past_one_keys_run_like_a_linear_walk(keys):
    from ddia_ray.storage.lsm.merge import past_versions

    keys = sorted(keys)  # a sorted run: repeated keys are one key's versions
    arr = pa.array(keys, pa.binary())
    for i in range(len(keys) + 1):
        j = i
        while 0 < j < len(keys) and keys[j] == keys[j - 1]:
            j += 1
        assert past_versions(arr, i) == j
        assert past_versions(pa.chunked_array([arr.slice(0, 3), arr.slice(3)]), i) == j


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=50))
def test_a_memtable_binary_column_equals_pyarrows(items):
    from ddia_ray.storage.lsm.memtable import _binary_column

    got = _binary_column(items, None)
    got.validate(full=True)
    assert got.equals(pa.array(items, pa.binary()))


def test_a_memtable_binary_column_past_32_bit_offsets_falls_back(monkeypatch):
    from ddia_ray.storage.lsm import memtable

    built = []
    real = pa.array
    monkeypatch.setattr(memtable, "_MAX_BINARY_BYTES", 10)
    monkeypatch.setattr(pa, "array", lambda items, *a, **k: built.append(len(items)) or real(items, *a, **k))
    items = [b"abcdef", b"ghijkl"]  # 12 bytes: past the (patched) limit
    got = memtable._binary_column(items, None)
    got.validate(full=True)
    assert got.to_pylist() == items
    assert built == [2]  # pyarrow built it (and chunks it if it must), not the 32-bit offsets
    assert memtable._binary_column(items[:1], None).to_pylist() == items[:1] and built == [2]


@given(st.binary(max_size=300), st.integers(0, 40))
def test_frame_into_writes_the_bytes_of_frame(body, pos):
    from ddia_ray.framing import HEADER_BYTES, frame_into

    buf = bytearray(b"\xee" * (pos + HEADER_BYTES + len(body) + 5))
    end = frame_into(buf, pos, body)
    assert end == pos + HEADER_BYTES + len(body)
    assert bytes(buf[pos:end]) == frame(body)
    assert buf[:pos] == b"\xee" * pos and buf[end:] == b"\xee" * 5


@pytest.mark.parametrize("seqs", [(5, 6, 7, 8), (5, 6, 9, 10), (1,)])
def test_a_flushed_memtable_keeps_every_seq_with_or_without_gaps(seqs):
    from ddia_ray.storage.lsm.memtable import Memtable

    m = Memtable()
    keys = [b"d", b"a", b"c", b"b"][:len(seqs)]
    for seq, key in zip(seqs, keys):  # a gap is what an ingest between two writes leaves
        m.apply_one(seq, 0, key, b"v" + key)
    rows = m.to_table().to_pylist()
    assert [(r["key"], r["seq"]) for r in rows] == sorted(zip(keys, seqs))
