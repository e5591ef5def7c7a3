"""One named test per damage case: the LSM-tree never returns a wrong answer from damaged files."""

from __future__ import annotations

import os

import pytest

from ddia_ray.codec import encode
from ddia_ray.errors import CorruptionError, NotADatabaseError
from ddia_ray.storage.lsm import LSMTree
from ddia_ray.framing import frame_object
from ddia_ray.storage.lsm.manifest import ManifestRecord

OPTS = dict(background=False, row_group_rows=8)


def _files(path, suffix):
    return sorted(p for p in os.listdir(path) if p.endswith(suffix))


def _largest_wal(path):
    """Full path of the biggest WAL segment (the one the test's writes went to)."""
    wal = max(_files(path, ".log"), key=lambda n: os.path.getsize(os.path.join(path, n)))
    return os.path.join(path, wal)


def _unflushed(tmp_path, n):
    """A database whose ``n`` puts (``key<i>`` -> ``value<i>``, one WAL frame each) live only in its
    WAL (nothing flushed); returns its path and the WAL's full path."""
    path = _make(tmp_path, n=0)
    db = LSMTree.open(f"file://{path}", **OPTS)
    for i in range(n):
        db.put(b"key%d" % i, b"value%d" % i)
    db.close()
    return path, _largest_wal(path)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def _make(tmp_path, n=200, flush=True):
    db = LSMTree.open(f"file://{tmp_path}", **OPTS)
    for i in range(n):
        db.put(b"k%04d" % i, b"v%04d" % i)
    if flush:
        db.flush()
    db.close()
    return str(tmp_path)


def _manifest(path):
    (name,) = [p for p in os.listdir(path) if p.startswith("MANIFEST-")]
    return os.path.join(path, name)


def test_flipped_byte_in_sstable_raises_on_read(tmp_path):
    path = _make(tmp_path)
    (sst,) = _files(path, ".parquet")
    _flip(os.path.join(path, sst), 40)  # inside the first row group
    db = LSMTree.open(f"file://{path}", **OPTS)
    with pytest.raises(CorruptionError, match="checksum"):
        db.get(b"k0000")
    with pytest.raises(CorruptionError):
        list(db.scan())
    assert db.get(b"k0199") == b"v0199"  # other row groups still verify
    db.close()


def test_flipped_byte_in_sstable_footer_raises(tmp_path):
    path = _make(tmp_path)
    (sst,) = _files(path, ".parquet")
    full = os.path.join(path, sst)
    _flip(full, os.path.getsize(full) - 20)
    db = LSMTree.open(f"file://{path}", **OPTS)
    with pytest.raises(CorruptionError, match="footer"):
        db.get(b"k0100")
    db.close()


def test_truncated_sstable_raises(tmp_path):
    path = _make(tmp_path)
    (sst,) = _files(path, ".parquet")
    full = os.path.join(path, sst)
    os.truncate(full, os.path.getsize(full) // 2)
    db = LSMTree.open(f"file://{path}", **OPTS)
    with pytest.raises(CorruptionError, match="truncated"):
        db.get(b"k0000")
    with pytest.raises(CorruptionError):
        db.compact()
    db.close()


def test_missing_sstable_raises_on_open(tmp_path):
    path = _make(tmp_path)
    (sst,) = _files(path, ".parquet")
    os.remove(os.path.join(path, sst))
    with pytest.raises(CorruptionError, match="missing"):
        LSMTree.open(f"file://{path}", **OPTS)


def test_corrupted_sidecar_raises_on_open(tmp_path):
    path = _make(tmp_path)
    (meta,) = _files(path, ".sstmeta")
    _flip(os.path.join(path, meta), 30)
    with pytest.raises(CorruptionError):
        LSMTree.open(f"file://{path}", **OPTS)


@pytest.mark.parametrize("field, value", [("bloom_probes", 0), ("bloom_bits", 1 << 40),
                                          ("rg_spans", "two-int spans"), ("range_tombstones", ((b"a", 3, 1),))])
def test_a_crafted_sidecar_with_valid_checksums_is_corruption(tmp_path, field, value):
    """Checksums prove the bytes are what was written, not that a writer was ours: the fields are checked too."""
    import dataclasses

    from ddia_ray.codec import decode
    from ddia_ray.framing import read_object
    from ddia_ray.storage.lsm.sstable import TableMeta

    path = _make(tmp_path)
    (name,) = _files(path, ".sstmeta")
    full = os.path.join(path, name)
    with open(full, "rb") as f:
        data = f.read()
    magic = data[:8]
    meta = decode(read_object(data, magic, where=full), TableMeta)
    fields = {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta) if f.name != "_unknown"}
    fields[field] = tuple((1, 2) for _ in meta.rg_spans) if value == "two-int spans" else value
    # Build the record frame by hand: the class's own checks would refuse to encode the crafted field.
    import msgpack

    from ddia_ray.codec import FORMAT_1
    inner = msgpack.packb({"t": "storage.lsm.sstmeta", "v": 1, "f": fields}, use_bin_type=True)
    with open(full, "wb") as f:
        f.write(frame_object(magic, msgpack.packb(msgpack.ExtType(FORMAT_1, inner), use_bin_type=True)))
    with pytest.raises(CorruptionError, match="sidecar"):
        LSMTree.open(f"file://{path}", **OPTS)


def test_corrupted_complete_manifest_raises(tmp_path):
    path = _make(tmp_path)
    manifest = _manifest(path)
    _flip(manifest, os.path.getsize(manifest) - 5)
    with pytest.raises(CorruptionError, match="checksum"):
        LSMTree.open(f"file://{path}", **OPTS)


def test_torn_newest_manifest_is_ignored(tmp_path):
    path = _make(tmp_path)
    manifest = _manifest(path)
    number = int(manifest.rsplit("-", 1)[1])
    data = open(manifest, "rb").read()
    torn = os.path.join(path, f"MANIFEST-{number + 1:06d}")
    with open(torn, "wb") as f:
        f.write(data[: len(data) // 2])  # a newer manifest whose put never finished
    db = LSMTree.open(f"file://{path}", **OPTS)
    assert db.get(b"k0007") == b"v0007"
    assert not os.path.exists(torn)  # garbage-collected on open
    db.close()


def test_wal_corrupted_in_the_middle_raises(tmp_path):
    path, full = _unflushed(tmp_path, 3)
    frame_bytes = os.path.getsize(full) // 3
    _flip(full, frame_bytes + frame_bytes - 3)  # inside the second frame's body
    with pytest.raises(CorruptionError, match="checksum"):
        LSMTree.open(f"file://{path}", **OPTS)


def test_wal_corruption_is_skipped_with_skip_recovery(tmp_path):
    path, full = _unflushed(tmp_path, 3)
    frame_bytes = os.path.getsize(full) // 3
    _flip(full, frame_bytes + 2)  # the second frame's header
    db = LSMTree.open(f"file://{path}", wal_recovery="skip", **OPTS)
    assert db.get_many([b"key0", b"key1", b"key2"]) == [b"value0", None, b"value2"]
    assert db.stats()["wal_skipped_records"] == 1
    db.close()


def test_torn_wal_tail_is_ignored(tmp_path):
    path, full = _unflushed(tmp_path, 3)
    os.truncate(full, os.path.getsize(full) - 4)
    db = LSMTree.open(f"file://{path}", **OPTS)
    assert db.get_many([b"key0", b"key1", b"key2"]) == [b"value0", b"value1", None]
    db.put(b"key3", b"value3")  # and the database keeps working
    db.close()
    db = LSMTree.open(f"file://{path}", **OPTS)
    assert db.get(b"key3") == b"value3"
    db.close()


def test_checksum_failure_in_last_wal_record_counts_as_torn(tmp_path):
    path, full = _unflushed(tmp_path, 2)
    _flip(full, os.path.getsize(full) - 2)
    db = LSMTree.open(f"file://{path}", **OPTS)
    assert db.get_many([b"key0", b"key1"]) == [b"value0", None]
    db.close()


def test_unreferenced_files_are_garbage_collected_on_open(tmp_path):
    path = _make(tmp_path)
    for name in ("000999.parquet", "000999.sstmeta"):
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"left behind by a flush that crashed before its manifest")
    db = LSMTree.open(f"file://{path}", **OPTS)
    assert not os.path.exists(os.path.join(path, "000999.parquet"))
    assert db.get(b"k0001") == b"v0001"
    db.close()


def test_directory_with_foreign_files_is_not_a_database(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotADatabaseError):
        LSMTree.open(f"file://{tmp_path}", **OPTS)


def test_foreign_manifest_is_not_a_database(tmp_path):
    (tmp_path / "MANIFEST-000001").write_bytes(b"BTREEMANIFEST" + b"\0" * 40)
    with pytest.raises(NotADatabaseError):
        LSMTree.open(f"file://{tmp_path}", **OPTS)


def test_manifest_of_another_engine_is_not_a_database(tmp_path):
    rec = ManifestRecord("btree", 1, 0, 1, 1, "leveled", ((),))
    (tmp_path / "MANIFEST-000001").write_bytes(frame_object(b"LSMMANI1", encode(rec)))
    with pytest.raises(NotADatabaseError):
        LSMTree.open(f"file://{tmp_path}", **OPTS)
