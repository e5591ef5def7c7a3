"""Checkpoints of both engines: a consistent copy that opens with the same contents, taken while
writes and compactions go on, copied between filesystems, and refused when damaged or short.

Each engine is checkpointed from and to ``file://`` and ``memory://`` (every test its own memory
paths). The damage cases follow tests/test_lsm_corruption.py: one named test per case.
"""

from __future__ import annotations

import itertools
import os
import threading

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddia_ray.errors import ConfigError, CorruptionError, DatabaseClosedError, NotADatabaseError
from ddia_ray.storage import MemoryEngine, WriteBatch, checkpoint, copy_checkpoint, read_checkpoint
from ddia_ray.storage import checkpoints as checkpoints_module
from ddia_ray.storage.btree import BTreeEngine
from ddia_ray.storage.btree import checkpoint as btree_checkpoint
from ddia_ray.storage.checkpoints import CHECKPOINT_FILE, CheckpointWriter
from ddia_ray.storage.lsm import LSMTree

_N = itertools.count()

#: Small memtables and files: a few hundred keys make several SSTables and trigger compactions.
LSM_SMALL = dict(memtable_bytes=16 << 10, row_group_rows=64, target_file_bytes=32 << 10,
                 l0_compaction_trigger=2, level_base_bytes=64 << 10)
ENGINES = {
    "lsm": lambda url: LSMTree.open(url, **LSM_SMALL),
    "lsm-inline": lambda url: LSMTree.open(url, background=False, **LSM_SMALL),
    "lsm-tiered": lambda url: LSMTree.open(url, compaction="tiered", **LSM_SMALL),
    "btree": lambda url: BTreeEngine.open(url, sync=False, page_size=1024),
}
REOPEN = {"lsm": LSMTree.open, "lsm-inline": LSMTree.open, "btree": BTreeEngine.open,
          "lsm-tiered": lambda url: LSMTree.open(url, compaction="tiered")}  # a copy keeps its policy


@pytest.fixture
def url(tmp_path):
    """``url(kind, name)``: directory ``name`` under tmp_path (``file``) or under a ``memory://`` root of
    this test's own (``memory``); the same name gives the same URL within a test."""
    root = f"/ckpt-test-{os.getpid()}-{next(_N)}"

    def make(kind: str, name: str) -> str:
        return f"file://{tmp_path}/{name}" if kind == "file" else f"memory://{root}/{name}"

    yield make
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _fs_path(u: str) -> tuple:
    return fsspec.core.url_to_fs(u)


def _fill(db, model, n: int, prefix: bytes = b"k") -> None:
    """Puts, overwrites, deletes and a range delete, in batches and one by one, flushed in between."""
    for i in range(n):
        for target in (db, model):
            target.put(b"%s%05d" % (prefix, i), b"v%05d" % i * 4)
        if i % 97 == 0:
            db.flush()
    for target in (db, model):
        target.write(WriteBatch().put(prefix + b"00001", b"overwritten").delete(prefix + b"00002"))
        target.delete(prefix + b"00003")
    db.flush()  # the range tombstone below lands in a newer SSTable than the keys it covers
    for target in (db, model):
        target.delete_range(prefix + b"00010", prefix + b"00050")
        target.put(prefix + b"00020", b"after the range delete")
    # the last writes stay in the LSM memtable: the checkpoint must flush them


def _contents(db) -> list:
    return list(db.scan())


# --- contents -------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("src_kind,dst_kind", [("file", "file"), ("file", "memory"), ("memory", "memory"),
                                               ("memory", "file")])
def test_checkpoint_opens_with_the_same_contents(engine, src_kind, dst_kind, url):
    db, model = ENGINES[engine](url(src_kind, "src")), MemoryEngine()
    _fill(db, model, 600)
    dst = url(dst_kind, "cp")
    summary = checkpoint(db, dst)
    assert summary["seq"] == db.stats()["seq"] and summary["engine"] == engine.split("-")[0]
    assert summary["url"] == dst and read_checkpoint(dst).seq == summary["seq"]
    fs, path = _fs_path(dst)
    on_disk = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    assert on_disk == sorted(summary["files"] + [CHECKPOINT_FILE])
    assert summary["bytes"] == sum(fs.size(f"{path}/{n}") for n in summary["files"])
    db.close()
    copy = REOPEN[engine](dst)
    assert _contents(copy) == _contents(model)
    assert copy.get(b"k00002") is None and copy.get(b"k00030") is None and copy.get(b"k00020") is not None
    assert copy.stats()["seq"] == summary["seq"]
    copy.put(b"zz", b"the copy is a live database")
    assert copy.get(b"zz") == b"the copy is a live database"
    copy.close()


def test_lsm_checkpoint_on_one_disk_hard_links_and_survives_the_source_deleting_its_files(url):
    db, model = ENGINES["lsm-inline"](url("file", "src")), MemoryEngine()  # no compaction behind our back
    _fill(db, model, 400)
    summary = db.checkpoint(url("file", "cp"))
    tables = [n for n in summary["files"] if not n.startswith("MANIFEST")]
    assert summary["linked"] == len(tables) > 2
    _, src = _fs_path(url("file", "src"))
    _, dst = _fs_path(url("file", "cp"))
    assert all(os.stat(f"{dst}/{n}").st_ino == os.stat(f"{src}/{n}").st_ino for n in tables)
    db.put(b"k99999", b"later")
    db.compact()  # rewrites every file; the old names go from the source directory
    db.close()
    assert not any(os.path.exists(f"{src}/{n}") for n in tables if n.endswith(".parquet"))
    copy = LSMTree.open(url("file", "cp"))
    assert _contents(copy) == _contents(model)
    copy.close()


@pytest.mark.parametrize("dst_kind", ["file", "memory"])
def test_lsm_checkpoint_from_memory_copies_rather_than_links(url, dst_kind):
    db = ENGINES["lsm"](url("memory", "src"))
    _fill(db, MemoryEngine(), 200)
    assert db.checkpoint(url(dst_kind, "cp"))["linked"] == 0
    db.close()


def test_the_entry_point_refuses_an_engine_without_files(url):
    with pytest.raises(ConfigError, match="MemoryEngine cannot take checkpoints"):
        checkpoint(MemoryEngine(), url("memory", "cp"))


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_an_empty_database_checkpoints_and_opens_empty(engine, url):
    db = ENGINES[engine](url("memory", "src"))
    summary = checkpoint(db, url("file", "cp"))
    db.close()
    assert summary["seq"] == 0
    copy = REOPEN[engine](url("file", "cp"))
    assert _contents(copy) == []
    copy.close()


# --- the cut: writes racing the checkpoint ------------------------------------------------------------

class _Writer(threading.Thread):
    """Puts ``w0000000``, ``w0000001``, ... one at a time; ``issued`` counts puts begun, ``acked`` puts returned."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db, self.issued, self.acked = db, 0, 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            while not self.stop.is_set():
                self.issued += 1
                self.db.put(b"w%07d" % self.acked, b"x" * 64)
                self.acked += 1
        except BaseException as e:  # noqa: BLE001 -- reported by the test
            self.error = e

    def wait_for(self, n: int) -> None:
        while self.acked < n and self.error is None:
            self.stop.wait(0.001)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("src_kind,dst_kind", [("file", "file"), ("memory", "file"), ("file", "memory")])
def test_a_checkpoint_taken_during_writes_holds_a_prefix_of_them(engine, src_kind, dst_kind, url):
    db = ENGINES[engine](url(src_kind, "src"))
    writer = _Writer(db)
    writer.start()
    cuts = []
    try:
        for round_ in range(3):  # each round later: flushes and compactions are running by then
            writer.wait_for(300 * (round_ + 1))
            before = writer.acked
            summary = checkpoint(db, url(dst_kind, f"cp{round_}"))
            after = writer.issued
            cuts.append((before, summary, after))
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    for i, (before, summary, after) in enumerate(cuts):
        copy = REOPEN[engine](url(dst_kind, f"cp{i}"))
        keys = [k for k, _ in copy.scan()]
        n = len(keys)
        assert keys == [b"w%07d" % j for j in range(n)]  # a prefix: no gap, nothing from after the cut
        assert before <= n <= after, (before, n, after)
        assert summary["seq"] == n  # one sequence number (LSM) or transaction (B-tree) per put
        copy.close()
    db.close()


# --- compaction and writes while the files are copied ------------------------------------------------

def test_lsm_compaction_during_the_copy_keeps_the_pinned_files(url, monkeypatch):
    db, model = ENGINES["lsm-inline"](url("file", "src")), MemoryEngine()
    _fill(db, model, 600)
    expected = _contents(model)
    _, src = _fs_path(url("file", "src"))
    copy_file = CheckpointWriter.copy_file
    seen = []

    def compact_first(self, src_fs, src_path, name, size, **kwargs):
        if not seen:  # the cut is taken; now make every pinned file obsolete in the source
            for i in range(300):
                db.put(b"k%05d" % i, b"rewritten after the cut")
            db.delete_range(b"k00000", b"k00100")
            db.compact()
            assert db.stats()["pinned_versions"] == 1 and db.stats()["files_awaiting_deletion"] > 0
        seen.append(name)
        return copy_file(self, src_fs, src_path, name, size, link=False)

    monkeypatch.setattr(CheckpointWriter, "copy_file", compact_first)
    summary = db.checkpoint(url("memory", "cp"))
    monkeypatch.undo()
    assert len(seen) > 2 and summary["linked"] == 0
    # released: the files the compaction dropped are gone from the source now
    assert db.stats()["pinned_versions"] == 0 and db.stats()["files_awaiting_deletion"] == 0
    assert not any(os.path.exists(f"{src}/{n}") for n in seen)
    copy = LSMTree.open(url("memory", "cp"))
    assert _contents(copy) == expected
    copy.close()
    assert db.get(b"k00200") == b"rewritten after the cut"
    db.close()


def _btree_with_a_long_free_list(u: str, model) -> BTreeEngine:
    """A B-tree whose current commit lists more free pages than fit its meta page: the free list
    then lives in free-list pages, which the commit after next may reuse while a copy runs."""
    db = ENGINES["btree"](u)
    for i in range(3000):
        for target in (db, model):
            target.put(b"k%05d" % i, b"v" * 40)
    for target in (db, model):
        target.delete_range(b"k00500", b"k02500")
    assert db._gen.pf.meta.freelist_pages, "the test needs a free list kept in pages"
    return db


@pytest.mark.parametrize("src_kind,dst_kind", [("file", "memory"), ("memory", "file")])
def test_btree_writes_and_compaction_during_the_copy_do_not_reach_it(src_kind, dst_kind, url, monkeypatch):
    model = MemoryEngine()
    db = _btree_with_a_long_free_list(url(src_kind, "src"), model)
    expected, seq = _contents(model), db.stats()["seq"]
    monkeypatch.setattr(checkpoints_module, "COPY_CHUNK_BYTES", 4096)  # four pages a chunk: many chances to race
    read = btree_checkpoint._read_pinned
    calls = itertools.count()

    def racing_read(engine, snap, offset, length):
        n = next(calls)
        if n < 30:  # rewrite everything: without the pin, pages of the copied tree would be reused
            for i in range(n * 100, n * 100 + 100):
                engine.put(b"k%05d" % i, b"w" * 40)
            engine.delete_range(b"k%05d" % (n * 50), b"k%05d" % (n * 50 + 40))
        if n == 10:
            engine.compact()  # a new page file; the copy keeps reading the pinned one
        return read(engine, snap, offset, length)

    monkeypatch.setattr(btree_checkpoint, "_read_pinned", racing_read)
    summary = db.checkpoint(url(dst_kind, "cp"))
    assert summary["seq"] == seq and next(calls) > 30
    assert db.stats()["compactions"] == 1 and db.stats()["snapshots"] == 0
    copy = BTreeEngine.open(url(dst_kind, "cp"))
    assert copy.check() == len(expected)
    assert _contents(copy) == expected and copy.stats()["seq"] == seq
    copy.close()
    db.close()


def test_btree_close_during_the_copy_raises_and_leaves_the_destination_empty(url, monkeypatch):
    db = _btree_with_a_long_free_list(url("memory", "src"), MemoryEngine())
    monkeypatch.setattr(checkpoints_module, "COPY_CHUNK_BYTES", 4096)
    read = btree_checkpoint._read_pinned
    calls = itertools.count()

    def closing_read(engine, snap, offset, length):
        if next(calls) == 3:
            engine.close()
        return read(engine, snap, offset, length)

    monkeypatch.setattr(btree_checkpoint, "_read_pinned", closing_read)
    dst = url("memory", "cp")
    with pytest.raises(DatabaseClosedError):
        db.checkpoint(dst)
    fs, path = _fs_path(dst)
    assert fs.ls(path, detail=False) == []


# --- the destination and the source -------------------------------------------------------------

@pytest.mark.parametrize("engine", ["lsm", "btree"])
@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_destination_that_is_not_empty_is_refused(engine, kind, url):
    db = ENGINES[engine](url("memory", "src"))
    db.put(b"a", b"1")
    dst = url(kind, "cp")
    fs, path = _fs_path(dst)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path}/somebody-elses", b"keep me")
    with pytest.raises(ConfigError, match="is not empty"):
        checkpoint(db, dst)
    assert fs.cat_file(f"{path}/somebody-elses") == b"keep me"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == ["somebody-elses"]
    with pytest.raises(ConfigError, match="is a file"):
        checkpoint(db, f"{dst}/somebody-elses")
    checkpoint(db, url(kind, "cp2"))  # and the refusal left the engine able to checkpoint
    with pytest.raises(ConfigError, match="is not empty"):
        checkpoint(db, url(kind, "cp2"))  # a finished checkpoint is not overwritten either
    db.close()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_source_keeps_working_after_a_checkpoint(engine, url):
    db, model = ENGINES[engine](url("file", "src")), MemoryEngine()
    _fill(db, model, 300)
    at_cut = _contents(model)
    checkpoint(db, url("memory", "cp1"))
    _fill(db, model, 300, prefix=b"m")
    db.compact()
    with db.snapshot() as snap:
        db.put(b"n", b"after the snapshot")
        assert db.get(b"n", snapshot=snap) is None
    model.put(b"n", b"after the snapshot")
    second = checkpoint(db, url("memory", "cp2"))
    db.close()
    db = REOPEN[engine](url("file", "src"))
    assert _contents(db) == _contents(model)
    db.close()
    first = REOPEN[engine](url("memory", "cp1"))
    assert _contents(first) == at_cut  # nothing written after the first checkpoint reached it
    first.close()
    again = REOPEN[engine](url("memory", "cp2"))
    assert _contents(again) == _contents(model) and again.stats()["seq"] == second["seq"]
    again.close()


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_a_closed_engine_refuses_to_checkpoint(engine, url):
    db = ENGINES[engine](url("memory", "src"))
    db.close()
    with pytest.raises(DatabaseClosedError):
        checkpoint(db, url("memory", "cp"))


# --- copying a finished checkpoint ---------------------------------------------------------------

@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_copy_checkpoint_between_filesystems_keeps_the_contents(engine, url):
    db, model = ENGINES[engine](url("file", "src")), MemoryEngine()
    _fill(db, model, 400)
    first = checkpoint(db, url("file", "cp"))
    db.close()
    via_memory = copy_checkpoint(url("file", "cp"), url("memory", "cp"))
    back = copy_checkpoint(url("memory", "cp"), url("file", "cp-again"))
    for s in (via_memory, back):
        assert (s["engine"], s["seq"], s["files"], s["bytes"], s["linked"]) == \
            (first["engine"], first["seq"], first["files"], first["bytes"], 0)
    assert read_checkpoint(url("file", "cp-again")) == read_checkpoint(url("file", "cp"))
    copy = REOPEN[engine](url("file", "cp-again"))
    assert _contents(copy) == _contents(model)
    copy.close()


def _checkpointed(engine: str, url) -> tuple[str, str]:
    """A finished checkpoint in ``memory://``; returns its URL and the path of its largest file."""
    db = ENGINES[engine](url("memory", "src"))
    _fill(db, MemoryEngine(), 300)
    src = url("memory", "cp")
    summary = checkpoint(db, src)
    db.close()
    fs, path = _fs_path(src)
    biggest = max(summary["files"], key=lambda n: fs.size(f"{path}/{n}"))
    return src, f"{path}/{biggest}"


def _assert_refused_and_nothing_installed(src, dst, error, match):
    with pytest.raises(error, match=match):
        copy_checkpoint(src, dst)
    fs, path = _fs_path(dst)
    assert not fs.exists(path) or fs.ls(path, detail=False) == []  # the same destination can be used again


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_copy_refuses_a_truncated_file(engine, url):
    src, victim = _checkpointed(engine, url)
    fs = fsspec.filesystem("memory")
    fs.pipe_file(victim, fs.cat_file(victim)[:-1])
    _assert_refused_and_nothing_installed(src, url("memory", "dst"), CorruptionError, "bytes, the checkpoint says")


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_copy_refuses_a_flipped_byte(engine, url):
    src, victim = _checkpointed(engine, url)
    fs = fsspec.filesystem("memory")
    data = bytearray(fs.cat_file(victim))
    data[len(data) // 2] ^= 0x40
    fs.pipe_file(victim, bytes(data))
    _assert_refused_and_nothing_installed(src, url("file", "dst"), CorruptionError, "checksum mismatch")


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_copy_refuses_a_missing_file(engine, url):
    src, victim = _checkpointed(engine, url)
    fsspec.filesystem("memory").rm_file(victim)
    _assert_refused_and_nothing_installed(src, url("memory", "dst"), CorruptionError, "is missing")


def test_copy_refuses_a_checkpoint_that_never_finished(url):
    src, _ = _checkpointed("lsm", url)
    fs, path = _fs_path(src)
    fs.rm_file(f"{path}/{CHECKPOINT_FILE}")
    _assert_refused_and_nothing_installed(src, url("memory", "dst"), NotADatabaseError, "no finished checkpoint")


def test_copy_refuses_a_damaged_descriptor(url):
    src, _ = _checkpointed("lsm", url)
    fs, path = _fs_path(src)
    data = bytearray(fs.cat_file(f"{path}/{CHECKPOINT_FILE}"))
    data[-3] ^= 0x01
    fs.pipe_file(f"{path}/{CHECKPOINT_FILE}", bytes(data))
    _assert_refused_and_nothing_installed(src, url("memory", "dst"), CorruptionError, "CHECKPOINT")


def test_copy_refuses_a_descriptor_cut_short(url):
    src, _ = _checkpointed("btree", url)
    fs, path = _fs_path(src)
    fs.pipe_file(f"{path}/{CHECKPOINT_FILE}", fs.cat_file(f"{path}/{CHECKPOINT_FILE}")[:20])
    _assert_refused_and_nothing_installed(src, url("memory", "dst"), CorruptionError, "truncated")


class _ShortWrites(MemoryFileSystem):
    """A ``memory://`` twin whose files lose their last byte when closed: a short write."""

    protocol = "shortwrites"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("shortwrites://"))

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "w" in mode:
            f.__class__ = _LastByteLost
        return f


class _LastByteLost(MemoryFile):
    def close(self):
        self.truncate(max(0, self.getbuffer().nbytes - 1))


fsspec.register_implementation("shortwrites", _ShortWrites, clobber=True)


def test_copy_detects_a_short_write_at_the_destination(url):
    src, _ = _checkpointed("btree", url)
    dst = f"shortwrites:///ckpt-{next(_N)}/dst"
    _assert_refused_and_nothing_installed(src, dst, CorruptionError, "short or long copy")


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_a_checkpoint_detects_a_short_write_and_the_source_is_unharmed(engine, url):
    db, model = ENGINES[engine](url("memory", "src")), MemoryEngine()
    _fill(db, model, 200)
    dst = f"shortwrites:///ckpt-{next(_N)}/dst"
    with pytest.raises(CorruptionError, match="short or long copy"):
        db.checkpoint(dst)
    fs, path = _fs_path(dst)
    assert fs.ls(path, detail=False) == []
    assert _contents(db) == _contents(model)
    assert db.stats().get("pinned_versions", 0) == 0 and db.stats().get("snapshots", 0) == 0
    checkpoint(db, url("memory", "cp"))  # and it can checkpoint again
    db.close()


# --- property: any history, checkpointed and opened, equals the model ------------------------------------

_KEYS = st.binary(min_size=1, max_size=3)
_OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), _KEYS, st.binary(max_size=40)),
    st.tuples(st.just("delete"), _KEYS, st.just(b"")),
    st.tuples(st.just("range"), _KEYS, _KEYS),
    st.tuples(st.just("flush"), st.just(b""), st.just(b"")),
    st.tuples(st.just("compact"), st.just(b""), st.just(b"")),
), max_size=60)


@pytest.mark.parametrize("engine", ["lsm-inline", "btree"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_any_history_checkpointed_and_opened_equals_the_model(engine, ops, url):
    example = next(_N)  # hypothesis runs every example in the same test, so with the same fixture
    db, model = ENGINES[engine](url("memory", f"src{example}")), MemoryEngine()
    for kind, a, b in ops:
        if kind == "put":
            db.put(a, b)
            model.put(a, b)
        elif kind == "delete":
            db.delete(a)
            model.delete(a)
        elif kind == "range":
            db.delete_range(min(a, b), max(a, b))
            model.delete_range(min(a, b), max(a, b))
        else:
            getattr(db, kind)()
    summary = checkpoint(db, url("memory", f"cp{example}"))
    db.put(b"\xff-after", b"not in the checkpoint")
    db.close()
    copy = REOPEN[engine](url("memory", f"cp{example}"))
    try:
        assert _contents(copy) == _contents(model)
        assert copy.stats()["seq"] == summary["seq"]
    finally:
        copy.close()


# --- object storage -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3():
    """fsspec storage options of a local S3 (moto server) with an empty bucket ``checkpoints``."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import socket

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="checkpoints")
    yield {"key": "testing", "secret": "testing",
           "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    server.stop()


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_a_checkpoint_goes_through_object_storage_and_back(engine, s3, url):
    db, model = ENGINES[engine](url("memory", "src")), MemoryEngine()
    _fill(db, model, 300)
    bucket = f"s3://checkpoints/{engine}-{next(_N)}"
    summary = checkpoint(db, bucket, storage_options=s3)
    with pytest.raises(ConfigError, match="is not empty"):
        checkpoint(db, bucket, storage_options=s3)
    db.close()
    assert read_checkpoint(bucket, storage_options=s3).seq == summary["seq"]
    back = copy_checkpoint(bucket, url("file", "cp"), src_options=s3)
    assert (back["files"], back["bytes"]) == (summary["files"], summary["bytes"])
    copy = REOPEN[engine](url("file", "cp"))
    assert _contents(copy) == _contents(model)
    copy.close()
    if engine == "lsm":  # an LSM-tree also opens straight from the bucket
        remote = LSMTree.open(bucket, storage_options=s3)
        assert _contents(remote) == _contents(model)
        remote.close()
