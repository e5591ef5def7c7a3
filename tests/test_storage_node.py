"""The storage-node actor and its batching client, on real Ray actors."""

from __future__ import annotations

import uuid

import pytest

from ddia_ray.errors import ActorUnavailableError, ComponentNotFoundError, ConfigError, InvalidArgumentError
from ddia_ray.storage import WriteBatch
from ddia_ray.storage.node import StorageNode

pytestmark = pytest.mark.ray


def _name() -> str:
    return f"sn-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def memory_node(ray_session):
    with StorageNode.launch(_name(), None, engine="memory") as node:
        client = node.client()
        yield client
        client.close()


def test_batches_cross_the_actor_boundary_once(memory_node):
    calls = memory_node.stats()["node_calls"]
    memory_node.put_many({f"k{i:05d}": b"v%d" % i for i in range(5000)})
    values = memory_node.get_many(f"k{i:05d}" for i in range(5000))
    assert values == [b"v%d" % i for i in range(5000)]
    assert memory_node.stats()["node_calls"] - calls == 2


def test_futures_are_coalesced_into_few_calls(memory_node):
    calls = memory_node.stats()["node_calls"]
    puts = [memory_node.put_future(f"f{i:05d}", b"x") for i in range(4000)]
    assert all(p.result(timeout=30) is None for p in puts)
    gets = [memory_node.get_future(f"f{i:05d}") for i in range(4000)]
    assert [g.result(timeout=30) for g in gets] == [b"x"] * 4000
    used = memory_node.stats()["node_calls"] - calls - 1  # the stats() call itself
    assert used <= 40, f"{used} actor calls for 8000 single-key operations"


def test_a_get_future_after_a_put_future_sees_the_write(memory_node):
    memory_node.put_future("order", b"1")
    assert memory_node.get_future("order").result(timeout=30) == b"1"


def test_scan_pages_forward_and_backward(memory_node):
    memory_node.put_many({f"s{i:03d}": b"%d" % i for i in range(250)})
    fwd = list(memory_node.scan("s", "t", page_size=64))
    assert [k for k, _ in fwd] == [b"s%03d" % i for i in range(250)]
    back = list(memory_node.scan("s050", "s100", reverse=True, page_size=7))
    assert [k for k, _ in back] == [b"s%03d" % i for i in range(99, 49, -1)]


def test_atomic_batches_and_range_deletes(memory_node):
    memory_node.write(WriteBatch().put("a", b"1").put("b", b"2").delete_range("b", "c").put("c", b"3"))
    assert memory_node.get_many(["a", "b", "c"]) == [b"1", None, b"3"]


def test_bad_input_is_refused_with_clear_errors(memory_node):
    with pytest.raises(InvalidArgumentError):
        memory_node.put("k", "not bytes")
    with pytest.raises(InvalidArgumentError):
        memory_node.get_many([1])
    with pytest.raises(ConfigError):
        list(memory_node.scan("z", "a"))
    with pytest.raises(ConfigError, match="unknown storage engine"):
        StorageNode.launch(_name(), None, engine="nope")


def test_calls_to_a_dead_node_raise_actor_unavailable(ray_session):
    from raywait import actor_dead, wait_for

    node = StorageNode.launch(_name(), None, engine="memory")
    client = node.client()
    handle = node.group.handle(node.node)
    ray_session.kill(handle)  # behind the handle's back, as a crash would
    # ray.kill only requests the kill: wait until Ray reports the actor dead.
    actor_id = handle._actor_id.hex()
    wait_for(lambda: actor_dead(actor_id), what="the killed node to be dead")
    with pytest.raises(ActorUnavailableError):
        client.get("k")
    fut = client.get_future("k")
    with pytest.raises(ActorUnavailableError):
        fut.result(timeout=30)
    client.close()
    node.shutdown()


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_a_killed_node_recovers_its_data_on_restart(ray_session, tmp_path, engine):
    url = f"file://{tmp_path}/db"
    options = {"sync": "batch"} if engine == "lsm" else {"sync": True}
    with StorageNode.launch(_name(), url, engine=engine, **options) as node:
        client = node.client()
        client.put_many({b"k%05d" % i: b"v%05d" % i for i in range(3000)})
        client.delete_range(b"k01000", b"k02000")
        node.nemesis.kill(node.node)  # ray.kill: no close, no flush
        with pytest.raises(ActorUnavailableError):
            client.get("k00001")
        node.nemesis.restart(node.node)  # a new actor reopens the engine and recovers
        values = client.get_many(b"k%05d" % i for i in range(3000))
        assert values == [None if 1000 <= i < 2000 else b"v%05d" % i for i in range(3000)]
        assert [k for k, _ in client.scan(b"k00998", b"k02002")] == [b"k00998", b"k00999", b"k02000", b"k02001"]
        assert node.group.restarts[node.node] == 1


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_a_client_scan_reads_one_snapshot_across_its_pages(ray_session, tmp_path, engine):
    """One scan is one streaming call over one engine snapshot: a delete issued after the first
    page arrived does not cut the scan short (it did when every page was its own call)."""
    options = {"sync": "none"} if engine == "lsm" else {"sync": False}
    node = StorageNode.launch(_name(), f"file://{tmp_path}/db", engine=engine, **options)
    client = node.client()
    try:
        client.put_many({b"p%03d" % i: b"v" for i in range(100)})
        pages = client.scan(page_size=10)
        first = [next(pages) for _ in range(10)]
        client.delete_range(b"p", b"q")
        assert [k for k, _ in first + list(pages)] == [b"p%03d" % i for i in range(100)]
        assert list(client.scan()) == []
    finally:
        client.close()
        node.shutdown()


def test_opening_something_that_is_not_a_database_fails_with_its_own_error(ray_session, tmp_path):
    from ddia_ray.errors import NotADatabaseError

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a database")
    with pytest.raises(NotADatabaseError):
        StorageNode.launch(_name(), f"file://{tmp_path}/junk", engine="lsm")


def test_ingest_job_loads_a_parquet_dataset(ray_session, capsys, tmp_path, monkeypatch):
    import importlib.util
    import pathlib
    import tempfile

    # The job's temporary directories land under tmp_path, so the test can see that it removed them.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    path = pathlib.Path(__file__).parent.parent / "jobs" / "ingest.py"
    spec = importlib.util.spec_from_file_location("ingest_job", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--rows", "20000", "--engine", "lsm"]) == 0
    out = capsys.readouterr().out
    assert "ingested 20000 rows" in out and out.rstrip().splitlines()[-1] == "rows missing: 0"
    assert list(tmp_path.iterdir()) == []

    # A load that fails leaves neither its node's actor nor the directories it made.
    with pytest.raises(Exception, match="nothing-here"):
        job.main(["--source", f"file://{tmp_path}/nothing-here", "--name", "ingest-fails"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ComponentNotFoundError):
        StorageNode.connect("ingest-fails", timeout_s=5)


@pytest.mark.parametrize("engine", ["lsm", "btree"])
def test_concurrent_clients_lose_no_write(ray_session, tmp_path, engine):
    import threading

    node = StorageNode.launch(_name(), f"file://{tmp_path}/db", engine=engine, threads=8)
    client = node.client()
    errors: list = []

    def writer(t: int) -> None:
        try:
            futures = [client.put_future(b"t%d-%05d" % (t, i), b"%d" % i) for i in range(1500)]
            for f in futures:
                f.result(timeout=60)
            client.put_many({b"m%d-%05d" % (t, i): b"x" for i in range(1500)})
        except BaseException as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert not errors, errors
        for t in range(4):
            assert client.get_many(b"t%d-%05d" % (t, i) for i in range(1500)) == [b"%d" % i for i in range(1500)]
            assert sum(1 for _ in client.scan(b"m%d-" % t, b"m%d." % t)) == 1500
    finally:
        client.close()
        node.shutdown()


def test_a_service_refuses_what_it_does_not_offer_and_a_missing_node_is_unavailable(memory_node):
    """A caller reaches only the methods a service lists: not its attributes, not its engine."""
    from ddia_ray.runtime.service import ServiceRef

    with pytest.raises(InvalidArgumentError, match="offers no method 'db'"):
        memory_node.target.call("db")
    with pytest.raises(InvalidArgumentError, match="offers no method 'close'"):
        memory_node.target.call("close")  # only the shell's clean shutdown closes the engine
    with pytest.raises(InvalidArgumentError, match="offers no stream 'get_many'"):
        list(memory_node.target.stream("get_many", b""))
    assert memory_node.get_many(["k"]) == [None]  # still serving
    with pytest.raises(ActorUnavailableError, match="not running"):
        ServiceRef(_name(), "nobody").call("ping")
