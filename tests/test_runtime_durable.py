"""The node's durable record log: replay, torn tails and corruption."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from ddia_ray.errors import CorruptRecordError
from ddia_ray.demo.replica import Served
from ddia_ray.runtime.durable import DurableLog, decode_frames, encode_frames


@pytest.fixture(params=["memory", "file"])
def root(request, tmp_path):
    return f"memory://log-{uuid.uuid4().hex}" if request.param == "memory" else f"file://{tmp_path}"


def test_records_replay_in_order(root):
    log = DurableLog(root, "n1")
    log.append([Served(1), Served(2)])
    log.append([Served(3)])
    assert DurableLog(root, "n1").read_all() == [Served(1), Served(2), Served(3)]
    assert DurableLog(root, "other").read_all() == []


def test_torn_last_frame_is_ignored():
    data = encode_frames([Served(1), Served(2)])
    for cut in range(len(data) - len(encode_frames([Served(2)])) + 1, len(data)):
        assert decode_frames(data[:cut]) == [Served(1)]


def test_corruption_before_the_tail_is_reported(root):
    log = DurableLog(root, "n1")
    log.append([Served(1), Served(2)])
    fs, path = fsspec.core.url_to_fs(root)
    p = f"{path.rstrip('/')}/n1/records.log"
    raw = bytearray(fs.cat_file(p))
    raw[9] ^= 0xFF  # inside the first frame's body
    fs.pipe_file(p, bytes(raw))
    with pytest.raises(CorruptRecordError, match="checksum"):
        DurableLog(root, "n1").read_all()


def test_destroy_removes_the_records(root):
    log = DurableLog(root, "n1")
    log.append([Served(1)])
    log.destroy()
    assert DurableLog(root, "n1").read_all() == []


def test_a_rewrite_replaces_everything_before_it(root):
    from ddia_ray.runtime.core import Rewrite

    name = f"rw-{uuid.uuid4().hex}"
    log = DurableLog(root, name)
    log.append([Served(1), Served(2)])
    log.append([Served(3), Rewrite((Served(9),)), Served(4)])
    log.append([Served(5)])
    expected = [Served(9), Served(4), Served(5)]
    assert log.read_all() == expected
    assert DurableLog(root, name).read_all() == expected  # what a restarted node reads


def test_apply_records_mirrors_a_rewrite_in_memory():
    from ddia_ray.runtime.core import Rewrite
    from ddia_ray.runtime.durable import apply_records

    assert apply_records([1, 2], [3, Rewrite((7,)), 8]) == [7, 8]


def test_a_synced_log_replays_the_same(tmp_path):
    from ddia_ray.runtime.core import Rewrite

    log = DurableLog(f"file://{tmp_path}", "synced", sync=True)
    log.append([Served(1), Rewrite((Served(7),)), Served(2)])
    log.append([Served(3)])
    assert DurableLog(f"file://{tmp_path}", "synced").read_all() == [Served(7), Served(2), Served(3)]
