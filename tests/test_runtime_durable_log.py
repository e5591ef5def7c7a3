"""The runtime's durable log under crashes and damage: torn tails are cut, damage raises, format 1 upgrades.

Each test names one case. Byte offsets are found by appending records one at a
time and noting the file's size, so the tests state the rules, not the layout.
"""

from __future__ import annotations

import os
import random
import struct
import uuid
import zlib

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from ddia_ray import codec
from ddia_ray.demo.replica import Served
from ddia_ray.errors import CorruptRecordError, DdiaRayError
from ddia_ray.runtime import durable
from ddia_ray.runtime.core import Rewrite
from ddia_ray.runtime.durable import DurableLog


@pytest.fixture(params=["memory", "file"])
def root(request, tmp_path):
    return f"memory://dlog-{uuid.uuid4().hex}" if request.param == "memory" else f"file://{tmp_path}"


def _path(root, node):
    fs, base = fsspec.core.url_to_fs(root)
    return fs, f"{base.rstrip('/')}/{node}/records.log"


def _put(root, node, data):
    """Make ``data`` the log file of ``node`` (creating its directory); returns the file's path."""
    fs, path = _path(root, node)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)
    return path


def _write(root, node, records):
    """Append ``records`` one per call; returns the file's size after each (the frame boundaries)."""
    log = DurableLog(root, node)
    fs, path = _path(root, node)
    sizes = []
    for rec in records:
        log.append([rec])
        sizes.append(fs.size(path))
    log.close()
    return sizes


def _legacy_frames(records):
    """The format-1 encoder of ddia-ray 0.x, inlined: ``length:u32le crc32:u32le body``."""
    out = bytearray()
    for rec in records:
        body = codec.encode(rec)
        out += struct.pack("<II", len(body), zlib.crc32(body)) + body
    return bytes(out)


def _legacy_decode(data):
    """The format-1 reader of ddia-ray 0.x, inlined (raises ValueError where it raised on a checksum)."""
    records, pos = [], 0
    while len(data) - pos >= 8:
        length, crc = struct.unpack_from("<II", data, pos)
        if pos + 8 + length > len(data):
            break
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(body) != crc:
            raise ValueError(f"checksum mismatch at byte {pos}")
        records.append(codec.decode(body))
        pos += 8 + length
    return records


RECORDS = [Served(1), Served(22), Served(333), Served(4444)]


# --- torn tails ---------------------------------------------------------------


def test_torn_tail_then_append_then_restart_keeps_every_record(root):
    sizes = _write(root, "whole", RECORDS)
    fs, whole = _path(root, "whole")
    data = fs.cat_file(whole)
    for cut in range(sizes[-2] + 1, sizes[-1]):  # every length inside the last frame
        node = f"cut{cut}"
        _put(root, node, data[:cut])
        assert DurableLog(root, node).read_all() == RECORDS[:-1]  # what the restarted node reads
        assert fs.size(_path(root, node)[1]) == sizes[-2]  # the torn bytes are gone before it appends
        log = DurableLog(root, node)
        log.append([Served(5)])
        log.close()
        assert DurableLog(root, node).read_all() == RECORDS[:-1] + [Served(5)], f"cut at byte {cut}"


def test_append_without_reading_first_still_cuts_the_torn_tail(root):
    sizes = _write(root, "n", RECORDS)
    fs, path = _path(root, "n")
    fs.pipe_file(path, fs.cat_file(path)[:sizes[-1] - 3])
    log = DurableLog(root, "n")
    log.append([Served(5)])  # no read_all before it
    log.close()
    assert DurableLog(root, "n").read_all() == RECORDS[:-1] + [Served(5)]


def test_zero_filled_tail_after_a_power_cut_is_a_torn_tail(root):
    # Some filesystems extend a file with zeros when its size was logged before its data.
    _write(root, "n", RECORDS)
    fs, path = _path(root, "n")
    fs.pipe_file(path, fs.cat_file(path) + b"\0" * 100)
    assert DurableLog(root, "n").read_all() == RECORDS
    log = DurableLog(root, "n")
    log.append([Served(5)])
    log.close()
    assert DurableLog(root, "n").read_all() == RECORDS + [Served(5)]


# --- damage before the last frame -----------------------------------------------


def test_flipped_bit_in_a_middle_frames_length_raises_and_keeps_the_file(root):
    sizes = _write(root, "whole", RECORDS)
    fs, whole = _path(root, "whole")
    data = fs.cat_file(whole)
    for bit in range(32):  # the length is the first field of a frame, in both formats
        damaged = bytearray(data)
        damaged[sizes[1] + bit // 8] ^= 1 << (bit % 8)
        path = _put(root, f"len{bit}", bytes(damaged))
        with pytest.raises(CorruptRecordError):
            DurableLog(root, f"len{bit}").read_all()
        assert fs.cat_file(path) == bytes(damaged), f"bit {bit}: the log was rewritten"


def test_every_single_bit_flip_raises_before_the_last_frame_and_drops_only_the_last_frame_in_it():
    root = f"memory://dlog-{uuid.uuid4().hex}"
    sizes = _write(root, "whole", RECORDS)
    fs, whole = _path(root, "whole")
    data = fs.cat_file(whole)
    for pos in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            node = f"f{pos}-{bit}"
            path = _put(root, node, bytes(damaged))
            if pos < sizes[-2]:
                with pytest.raises(CorruptRecordError):
                    DurableLog(root, node).read_all()
                assert fs.cat_file(path) == bytes(damaged), f"byte {pos} bit {bit}: the log was shortened"
            else:
                assert DurableLog(root, node).read_all() == RECORDS[:-1], f"byte {pos} bit {bit}"


def test_damage_in_the_middle_raises_on_append_too_and_the_file_is_not_shortened(root):
    sizes = _write(root, "n", RECORDS)
    fs, path = _path(root, "n")
    damaged = bytearray(fs.cat_file(path))
    damaged[sizes[0] + (sizes[1] - sizes[0]) // 2] ^= 0xFF  # inside the second frame
    fs.pipe_file(path, bytes(damaged))
    log = DurableLog(root, "n")
    with pytest.raises(CorruptRecordError, match="checksum"):
        log.read_all()
    with pytest.raises(CorruptRecordError):
        log.append([Served(5)])
    log.close()
    assert fs.cat_file(path) == bytes(damaged)


def test_a_frame_with_a_valid_checksum_that_holds_no_record_is_corrupt(root):
    from ddia_ray.framing import frame

    fs, path = _path(root, "n")
    DurableLog(root, "n")  # creates the directory
    for body in (b"\xc1", b"\x92\x01", b"\xc7\x05\x01abc", b""):  # reserved byte, short array, short ext, empty
        around = frame(codec.encode(Served(1))), frame(codec.encode(Served(2)))
        fs.pipe_file(path, durable.MAGIC + around[0] + frame(body) + around[1])
        with pytest.raises(CorruptRecordError, match="holds no record"):
            DurableLog(root, "n").read_all()


def test_a_huge_length_is_a_torn_tail_read_in_bounded_memory(root):
    from ddia_ray.framing import HEADER_BYTES

    fs, path = _path(root, "n")
    DurableLog(root, "n")
    head = struct.pack("<II", 0xFFFFFFF0, 0)
    lying = head + struct.pack("<I", zlib.crc32(head))  # a verified header that claims 4 GiB
    fs.pipe_file(path, durable.MAGIC + durable.encode_frames([Served(1)]) + lying + b"x" * 10)
    assert DurableLog(root, "n").read_all() == [Served(1)]
    assert fs.size(path) == len(durable.MAGIC) + len(durable.encode_frames([Served(1)]))
    assert HEADER_BYTES == len(lying)


def test_seeded_mutations_give_written_records_or_a_ddia_ray_error():
    root = f"memory://dlog-{uuid.uuid4().hex}"
    written = [Served(i) for i in range(12)] + [Rewrite((Served(99),)), Served(100)]
    log = DurableLog(root, "whole")
    log.append(written[:6])
    log.append(written[6:])
    fs, whole = _path(root, "whole")
    data = fs.cat_file(whole)
    allowed = set(written[:12]) | {Served(99), Served(100)}
    rng = random.Random(20240610)
    for i in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(("flip", "cut", "splice", "huge", "garbage"))
            at = rng.randrange(len(damaged) + 1)
            if kind == "flip" and damaged:
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            elif kind == "cut":
                del damaged[at:]
            elif kind == "splice":
                a = rng.randrange(len(data))
                damaged[at:at] = data[a:a + rng.randint(1, 40)]
            elif kind == "huge":
                damaged[at:at + 4] = struct.pack("<I", rng.choice((0xFFFFFFFF, 1 << 31, 1 << 24)))
            else:
                damaged[at:at] = rng.randbytes(rng.randint(1, 30))
        node = f"m{i}"
        _put(root, node, bytes(damaged))
        try:
            got = DurableLog(root, node).read_all()
        except DdiaRayError:
            continue
        assert set(got) <= allowed, f"mutation {i} produced records nobody wrote"


# --- format 1 (no magic) ------------------------------------------------------------


def test_a_format_1_log_is_read_and_upgraded_before_the_first_append(root):
    fs, path = _path(root, "old")
    DurableLog(root, "old")
    fs.pipe_file(path, _legacy_frames(RECORDS))
    assert DurableLog(root, "old").read_all() == RECORDS
    log = DurableLog(root, "old")
    log.append([Served(5)])
    log.close()
    assert DurableLog(root, "old").read_all() == RECORDS + [Served(5)]
    upgraded = fs.cat_file(path)
    with pytest.raises(ValueError, match="checksum"):  # a format-1 reader refuses it instead of reading it as empty
        _legacy_decode(upgraded)
    assert upgraded.startswith(durable.MAGIC)
    assert not fs.exists(path + ".rewrite")


def test_a_format_1_log_with_a_torn_tail_is_cut_and_upgraded(root):
    fs, path = _path(root, "old")
    DurableLog(root, "old")
    frames = _legacy_frames(RECORDS)
    for cut in (1, 5, 9):
        fs.pipe_file(path, frames[:len(frames) - cut])
        assert DurableLog(root, "old").read_all() == RECORDS[:-1]
        log = DurableLog(root, "old")
        log.append([Served(5)])
        log.close()
        assert DurableLog(root, "old").read_all() == RECORDS[:-1] + [Served(5)]


def test_a_format_1_log_damaged_in_the_middle_raises_and_is_not_converted(root):
    fs, path = _path(root, "old")
    DurableLog(root, "old")
    damaged = bytearray(_legacy_frames(RECORDS))
    damaged[12] ^= 0x10  # the first frame's body
    fs.pipe_file(path, bytes(damaged))
    with pytest.raises(CorruptRecordError, match="checksum"):
        DurableLog(root, "old").append([Served(5)])
    assert fs.cat_file(path) == bytes(damaged)


def test_a_magic_damaged_beyond_recognition_is_not_read_as_format_1(root):
    sizes = _write(root, "n", RECORDS)
    fs, path = _path(root, "n")
    damaged = b"\xff" * len(durable.MAGIC) + fs.cat_file(path)[len(durable.MAGIC):]
    fs.pipe_file(path, damaged)
    with pytest.raises(CorruptRecordError, match="magic"):
        DurableLog(root, "n").read_all()
    assert fs.size(path) == sizes[-1]


def test_bytes_spliced_into_the_magic_are_not_read_as_a_torn_format_1_log(root):
    # Shifted by the splice, no frame starts at byte 8 and format 1 would see one huge torn frame.
    _write(root, "n", RECORDS)
    fs, path = _path(root, "n")
    data = fs.cat_file(path)
    for at, junk in ((3, b"\x7f" * 78), (0, b"\x01\x02\x03"), (6, b"\xff\xff\xff\xff\x00")):
        damaged = data[:at] + junk + data[at:]
        fs.pipe_file(path, damaged)
        with pytest.raises(CorruptRecordError, match="magic"):
            DurableLog(root, "n").read_all()
        assert fs.cat_file(path) == damaged, f"splice at {at}: the log was changed"


# --- object stores: one immutable segment per flush ------------------------------------


class _NoAppendFS(MemoryFileSystem):
    """``memory://`` without append, as on S3."""

    protocol = "noappend"
    store: dict = {}
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("object stores cannot append")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("noappend", _NoAppendFS, clobber=True)


def test_object_store_segments_torn_last_is_cut_and_torn_earlier_raises():
    root = f"noappend://seg-{uuid.uuid4().hex}"
    log = DurableLog(root, "n")
    for rec in RECORDS:
        log.append([rec])
    fs, base = fsspec.core.url_to_fs(root)
    segments = sorted(fs.ls(f"{base}/n", detail=False))
    assert len(segments) == len(RECORDS)
    fs.pipe_file(segments[-1], fs.cat_file(segments[-1])[:-2])
    assert DurableLog(root, "n").read_all() == RECORDS[:-1]
    log = DurableLog(root, "n")
    log.append([Served(5)])
    assert DurableLog(root, "n").read_all() == RECORDS[:-1] + [Served(5)]
    # A torn segment with a later one behind it was not the log's last write: damage.
    fs.pipe_file(segments[0], fs.cat_file(segments[0])[:-2])
    with pytest.raises(CorruptRecordError):
        DurableLog(root, "n").read_all()


# --- Rewrite with sync=True ---------------------------------------------------------


def test_a_synced_rewrite_fsyncs_the_new_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    log = DurableLog(f"file://{tmp_path}", "n", sync=True)
    log.append([Served(1), Served(2)])
    events = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", os.fspath(src), os.fspath(dst)))
        return real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        events.append(("rename", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    log.append([Rewrite((Served(7),))])
    monkeypatch.undo()
    directory = str(tmp_path / "n")
    target = os.path.join(directory, "records.log")
    (i_rename,) = [i for i, e in enumerate(events) if e[0] == "rename" and e[2] == target]
    tmp = events[i_rename][1]
    assert ("fsync", tmp) in events[:i_rename], events  # the new bytes before the name points at them
    assert ("fsync", directory) in events[i_rename + 1:], events  # the rename itself
    assert DurableLog(f"file://{tmp_path}", "n").read_all() == [Served(7)]


def test_a_synced_log_makes_its_new_file_and_directories_durable(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    log = DurableLog(f"file://{tmp_path}", "group/n", sync=True)
    log.append([Served(1)])
    log.close()
    monkeypatch.undo()
    node_dir = str(tmp_path / "group" / "n")
    assert os.path.join(node_dir, "records.log") in synced  # the bytes
    assert node_dir in synced  # the new file's name
    assert str(tmp_path / "group") in synced and str(tmp_path) in synced  # the directories it created
