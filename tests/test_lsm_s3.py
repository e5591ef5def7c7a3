"""The LSM-tree on object storage: a local S3 (moto server) through s3fs, no append and no rename."""

from __future__ import annotations

import socket

import pytest

from ddia_ray.storage.engine import MemoryEngine, WriteBatch

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

from ddia_ray.storage.lsm import LSMTree  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint,
                                                                      "region_name": "us-east-1"}}
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="lsm-bucket")
    yield options
    server.stop()


OPTS = dict(memtable_bytes=1500, row_group_rows=8, target_file_bytes=1500, l0_compaction_trigger=2,
            level_base_bytes=3000, level_fanout=2, wal_segment_bytes=600, sleep=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["leveled", "tiered"])
def test_s3_round_trip_flush_compact_reopen(s3, policy):
    url = f"s3://lsm-bucket/db-{policy}"
    db = LSMTree.open(url, storage_options=s3, compaction=policy, **OPTS)
    model = MemoryEngine()
    for i in range(300):
        k, v = b"key%03d" % (i * 7 % 300), b"value%d" % i
        db.put(k, v)
        model.put(k, v)
    db.write(WriteBatch().delete(b"key010").delete_range(b"key100", b"key120"))
    model.write(WriteBatch().delete(b"key010").delete_range(b"key100", b"key120"))
    snap = db.snapshot()
    db.put(b"key000", b"changed")
    model_snap_value = model.get(b"key000")
    model.put(b"key000", b"changed")
    db.flush()
    db.compact()
    assert db.get(b"key000", snapshot=snap) == model_snap_value
    snap.release()
    assert list(db.scan()) == list(model.scan())
    db.put(b"tail", b"in-the-wal")  # buffered WAL segment: written by close
    db.close()
    db = LSMTree.open(url, storage_options=s3, compaction=policy, **OPTS)
    model.put(b"tail", b"in-the-wal")
    assert list(db.scan()) == list(model.scan())
    assert list(db.scan(reverse=True)) == list(model.scan(reverse=True))
    db.close()


@pytest.mark.slow
def test_s3_sync_batch_writes_a_segment_per_commit(s3):
    url = "s3://lsm-bucket/db-sync"
    db = LSMTree.open(url, storage_options=s3, sync="batch", background=False)
    for i in range(3):
        db.put(b"k%d" % i, b"v%d" % i)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    segments = [p for p in fs.ls("lsm-bucket/db-sync", refresh=True) if ".log." in p]
    assert len(segments) == 3
    db.close()
    db = LSMTree.open(url, storage_options=s3, background=False)
    assert db.get_many([b"k0", b"k1", b"k2"]) == [b"v0", b"v1", b"v2"]
    db.close()
