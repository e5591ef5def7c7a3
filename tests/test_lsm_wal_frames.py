"""WAL frames whose checksums verify but whose bodies are not batches: one named case each.

A checksum proves the bytes are the ones written, not that the engine wrote them. Each case
appends one crafted frame (wrapped by the real framing, so it verifies) to a closed database's
WAL and reopens it: ``wal_recovery="error"`` must raise CorruptionError naming the file and
the frame's byte offset; ``"skip"`` must drop that one batch, keep the batches around it, and
leave a database that works. Never a raw TypeError, OverflowError or pyarrow error.
"""

from __future__ import annotations

import os
import random

import msgpack
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from ddia_ray.errors import CorruptionError
from ddia_ray.storage.lsm import LSMTree
from ddia_ray.storage.lsm.wal import encode_batch, read_wal, wal_name

from ddia_ray.framing import frame

OPTS = dict(background=False)

#: name -> the msgpack body of the crafted frame (the real writer packs [1, first_seq, ops]).
CASES = {
    "ops_not_a_list": [1, 5, 7],
    "op_not_a_list": [1, 5, [7]],
    "op_too_short": [1, 5, [[0, b"k"]]],
    "op_too_long": [1, 5, [[0, b"k", b"v", b"w"]]],
    "kind_is_a_bool": [1, 5, [[True, b"k", b"v"]]],
    "kind_unknown": [1, 5, [[7, b"k", b"v"]]],
    "kind_is_a_float": [1, 5, [[0.0, b"k", b"v"]]],
    "key_is_a_string": [1, 5, [[0, "k", b"v"]]],
    "value_is_nil": [1, 5, [[0, b"k", None]]],
    "range_delete_inverted": [1, 5, [[2, b"z", b"a"]]],
    "first_seq_zero": [1, 0, [[0, b"k", b"v"]]],
    "first_seq_negative": [1, -3, [[0, b"k", b"v"]]],
    "first_seq_a_float": [1, 5.5, [[0, b"k", b"v"]]],
    "first_seq_beyond_uint64_seqs": [1, 2**64 - 1, [[0, b"k", b"v"]]],
    "last_seq_beyond_int64": [1, 2**63 - 1, [[0, b"k", b"v"], [0, b"k2", b"v"]]],
    "format_is_a_string": ["1", 5, [[0, b"k", b"v"]]],
    "not_a_triple": [1, 5],
    "a_map": {"fmt": 1},
    "an_integer": 42,
}


def _db_with_crafted_frame(path, body) -> tuple[str, int]:
    """A database holding b"a" (before) and b"z" (after) around one crafted frame; ``(wal, offset)``."""
    db = LSMTree.open(f"file://{path}", **OPTS)
    db.put(b"a", b"before")
    db.close()
    wal = max(n for n in os.listdir(path) if n.endswith(".log"))
    wal_path = f"{path}/{wal}"
    offset = os.path.getsize(wal_path)
    with open(wal_path, "ab") as f:
        f.write(frame(msgpack.packb(body, use_bin_type=True)))
        f.write(encode_batch(100, ((0, b"z", b"after"),)))
    return wal_path, offset


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_frame_is_corruption_naming_file_and_offset(tmp_path, case):
    wal_path, offset = _db_with_crafted_frame(tmp_path, CASES[case])
    with pytest.raises(CorruptionError) as info:
        LSMTree.open(f"file://{tmp_path}", **OPTS)
    assert info.value.path == wal_path
    assert f"byte {offset}" in str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_frame_is_skipped_with_skip_recovery(tmp_path, case):
    _db_with_crafted_frame(tmp_path, CASES[case])
    db = LSMTree.open(f"file://{tmp_path}", wal_recovery="skip", **OPTS)
    assert db.stats()["wal_skipped_records"] == 1
    assert db.get(b"a") == b"before" and db.get(b"z") == b"after" and db.get(b"k") is None
    db.put(b"m", b"later")  # the engine still works: the crafted batch left nothing behind
    db.compact()
    assert dict(db.scan()) == {b"a": b"before", b"m": b"later", b"z": b"after"}
    db.close()


def test_an_unknown_format_version_is_never_skipped(tmp_path):
    wal_path, offset = _db_with_crafted_frame(tmp_path, [2, 5, [[0, b"k", b"v"]]])
    with pytest.raises(CorruptionError, match=f"byte {offset}.*format 2 is not supported"):
        LSMTree.open(f"file://{tmp_path}", wal_recovery="skip", **OPTS)


def test_random_bodies_are_batches_or_corruption():
    """A seeded mutator: random msgpack shapes near the real grammar never escape as foreign errors."""
    rng = random.Random(20240610)
    fs = MemoryFileSystem(skip_instance_cache=True)
    atoms = [0, 1, 2, 3, -1, True, None, 1.5, 2**63, 2**64 - 1, b"", b"k", "k", [], {}, [b"a", b"b"]]

    def shape(depth=0):
        r = rng.random()
        if depth > 3 or r < 0.4:
            return rng.choice(atoms)
        if r < 0.9:
            return [shape(depth + 1) for _ in range(rng.randrange(5))]
        return {rng.choice(["x", 1]): shape(depth + 1)}

    outcomes = {"batch": 0, "corrupt": 0}
    for i in range(2000):
        ops = [[rng.choice([0, 1, 2, shape()]), rng.choice([b"k", shape()]), rng.choice([b"v", shape()])]
               for _ in range(rng.randrange(3))]
        body = rng.choice([[1, rng.choice([1, 7, shape()]), ops], [1, 3, shape()], shape()])
        d = f"/wal-fuzz-{i}"
        fs.pipe_file(f"{d}/{wal_name(1)}", frame(msgpack.packb(body, use_bin_type=True)))
        try:
            batches = list(read_wal(fs, d, 1, [wal_name(1)], skip=False))
        except CorruptionError:
            outcomes["corrupt"] += 1
            continue
        except Exception as e:  # noqa: BLE001 -- anything else is the defect under test
            pytest.fail(f"body {body!r} raised {e!r}")
        for first_seq, ops_read, _ in batches:
            assert type(first_seq) is int and first_seq >= 1
            assert all(type(k) is bytes and type(v) is bytes and kind in (0, 1, 2) for kind, k, v in ops_read)
        outcomes["batch"] += 1
    assert outcomes["batch"] and outcomes["corrupt"]  # the generator reaches both sides of the check
