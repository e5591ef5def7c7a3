"""An LSM-tree opened with ``wal=False``: writes live in the memtable until a flush, ``durable_seq``
says how far a crash would keep them, and ``close`` flushes. The replicated store's engines run
this way, their replica log being the log of record (docs/storage-engines.md, "Without a WAL")."""

from __future__ import annotations

import shutil

import pytest

from ddia_ray.errors import InvalidArgumentError
from ddia_ray.storage.lsm import LSMTree


def _crash_copy(tmp_path, name: str):
    """The files as a process crash leaves them: copied while the tree is still open. A copy that a
    background rotation cut into (a file listed, then gone: a manifest replaced) is no one instant
    of the tree, so it is made again; on a busy machine the background work runs late."""
    for _ in range(50):
        try:
            shutil.copytree(tmp_path / "db", tmp_path / name)
            return f"file://{tmp_path}/{name}"
        except shutil.Error:
            shutil.rmtree(tmp_path / name, ignore_errors=True)
    raise AssertionError("the tree's files changed under every copy")


@pytest.mark.parametrize("background", [True, False])
def test_durable_seq_follows_flushes_and_a_crash_keeps_exactly_that(tmp_path, background):
    db = LSMTree.open(f"file://{tmp_path}/db", wal=False, background=background)
    for i in range(100):
        db.put(b"a%03d" % i, b"v")
    assert db.last_seq == 100 and db.durable_seq == 0
    db.flush()
    assert db.durable_seq == 100
    for i in range(50):
        db.put(b"b%03d" % i, b"w")
    assert db.last_seq == 150 and db.durable_seq == 100
    assert not list((tmp_path / "db").glob("*.log"))  # no WAL file at all
    crashed = LSMTree.open(_crash_copy(tmp_path, "crash1"), wal=False)
    try:
        assert crashed.get(b"a099") == b"v" and crashed.get(b"b000") is None  # the memtable died
        assert crashed.last_seq == 100 and crashed.durable_seq == 100
    finally:
        crashed.close()
    db.request_flush()  # in the background: durable_seq reaches last_seq once it is done
    if background:
        db.flush()
    assert db.durable_seq == 150
    db.put(b"c", b"1")
    db.close()  # without a WAL, close flushes: nothing acknowledged is lost by a clean stop
    again = LSMTree.open(f"file://{tmp_path}/db", wal=False)
    try:
        assert again.get(b"c") == b"1" and again.get(b"b049") == b"w" and again.durable_seq == 151
    finally:
        again.close()


def test_a_tree_with_a_wal_is_durable_at_every_write_and_reopens_without_one(tmp_path):
    db = LSMTree.open(f"file://{tmp_path}/db")
    db.put(b"k", b"1")
    assert db.durable_seq == db.last_seq == 1
    copy = _crash_copy(tmp_path, "crash")
    db.close()
    # Opened without a WAL, the tree still replays the WALs it finds, and keeps them until flushed.
    other = LSMTree.open(copy, wal=False)
    try:
        assert other.get(b"k") == b"1" and other.durable_seq == 1
    finally:
        other.close()


def test_the_option_is_checked():
    with pytest.raises(InvalidArgumentError, match="wal must be a bool"):
        LSMTree.open("memory://nowal-bad", wal="no")
