"""The one framing of every durable log and object, and the rule for a damaged magic.

The framing tests import :mod:`ddia_ray.framing` inside each test (the module
moved there from ``storage/lsm``); the LSM tests go through ``LSMTree.open``
only, as a user would meet the rule.
"""

from __future__ import annotations

import os

import pytest

from ddia_ray.errors import CorruptionError, NotADatabaseError
from ddia_ray.storage.lsm import LSMTree

OPTS = dict(background=False, row_group_rows=8)


def _flip_bit(path, offset, bit):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def _database(tmp_path):
    db = LSMTree.open(f"file://{tmp_path}", **OPTS)
    for i in range(20):
        db.put(b"k%02d" % i, b"v%02d" % i)
    db.flush()
    db.close()
    names = os.listdir(tmp_path)
    (manifest,) = [n for n in names if n.startswith("MANIFEST-")]
    (sidecar,) = [n for n in names if n.endswith(".sstmeta")]
    return tmp_path / manifest, tmp_path / sidecar


def _reopens(tmp_path):
    LSMTree.open(f"file://{tmp_path}", **OPTS).close()


# --- damaged magic: CorruptionError, never "not a database" -------------------------


@pytest.mark.parametrize("bit", [0, 7, 13, 31, 42, 63])
@pytest.mark.parametrize("which", [0, 1], ids=["manifest", "sidecar"])
def test_one_flipped_bit_in_a_manifests_or_sidecars_magic_is_corruption(tmp_path, which, bit):
    damaged = _database(tmp_path)[which]
    _flip_bit(damaged, bit // 8, bit % 8)
    with pytest.raises(CorruptionError, match="magic"):
        _reopens(tmp_path)


def test_any_foreign_magic_in_a_live_sidecar_is_corruption(tmp_path):
    # A manifest names the sidecar: whatever sits under that name must be ours.
    _, sidecar = _database(tmp_path)
    data = sidecar.read_bytes()
    sidecar.write_bytes(b"BTREEPG1" + data[8:])
    with pytest.raises(CorruptionError):
        _reopens(tmp_path)


def test_a_manifest_with_a_distant_magic_is_still_not_a_database(tmp_path):
    # Another engine's MANIFEST-* (LevelDB names its manifests the same way) is not ours.
    manifest, _ = _database(tmp_path)
    data = manifest.read_bytes()
    manifest.write_bytes(bytes(b ^ 0xFF for b in data[:8]) + data[8:])
    with pytest.raises(NotADatabaseError):
        _reopens(tmp_path)


# --- the framing itself ---------------------------------------------------------------


def test_magic_damaged_accepts_up_to_one_bytes_worth_of_flipped_bits():
    from ddia_ray.framing import MAGIC_DAMAGE_BITS, magic_damaged

    magic = b"LSMMANI1"
    value = int.from_bytes(magic, "little")
    assert not magic_damaged(magic, magic)  # equal is not damaged
    for bits in range(1, 65):
        found = (value ^ ((1 << bits) - 1)).to_bytes(8, "little")  # the lowest `bits` bits flipped
        assert magic_damaged(found, magic) == (bits <= MAGIC_DAMAGE_BITS), bits
    assert not magic_damaged(b"LSMSST01", magic)  # our other magic is far away
    assert not magic_damaged(b"LSMMANI", magic)  # too short to compare


def test_read_object_sorts_a_bad_magic_into_damaged_or_foreign():
    from ddia_ray.framing import frame_object, read_object

    obj = frame_object(b"MAGIC123", b"body")
    for pos in range(8):
        damaged = bytearray(obj)
        damaged[pos] ^= 0x04
        with pytest.raises(CorruptionError, match="magic"):
            read_object(bytes(damaged), b"MAGIC123", where="o")
    with pytest.raises(NotADatabaseError):
        read_object(b"OTHERMAG" + obj[8:], b"MAGIC123", where="o")


def test_frame_object_refuses_a_magic_of_the_wrong_size_with_a_ddia_ray_error():
    from ddia_ray.errors import InvalidArgumentError
    from ddia_ray.framing import frame_object

    with pytest.raises(InvalidArgumentError):
        frame_object(b"SHORT", b"body")


def test_read_log_from_an_offset_counts_bytes_from_the_start_of_the_data():
    from ddia_ray.framing import frame, read_log

    head = b"HEADER!!"
    frames = [frame(b"record-%d" % i) for i in range(3)]
    data = head + b"".join(frames)
    read = read_log(data, where="t", start=len(head))
    assert read.bodies == (b"record-0", b"record-1", b"record-2") and read.torn_tail_bytes == 0
    assert read_log(data[:-2], where="t", start=len(head)).torn_tail_bytes == len(frames[2]) - 2
    damaged = bytearray(data)
    second = len(head) + len(frames[0])
    damaged[second] ^= 0x01  # the second frame's length
    with pytest.raises(CorruptionError, match=f"at byte {second}"):
        read_log(bytes(damaged), where="t", start=len(head))


def test_whole_frame_at_verifies_header_and_body():
    from ddia_ray.framing import frame, whole_frame_at

    data = b"xx" + frame(b"payload")
    assert whole_frame_at(data, 2) and not whole_frame_at(data, 0) and not whole_frame_at(data, 3)
    assert not whole_frame_at(data[:-1], 2)  # body cut short
    bad_body = data[:-1] + bytes([data[-1] ^ 1])
    assert not whole_frame_at(bad_body, 2)


def test_the_lsm_and_the_runtime_share_one_framing():
    import ddia_ray.framing as framing
    from ddia_ray.runtime import durable
    from ddia_ray.storage.lsm import manifest, sstable, wal

    assert wal.frame is framing.frame and wal.read_log is framing.read_log
    assert manifest.read_object is framing.read_object and sstable.read_object is framing.read_object
    assert durable.frame is framing.frame and durable.read_log is framing.read_log
