"""EngineState: a replica's state in a storage engine, with its position and client sessions kept in
the same atomic batches as the data, and checkpoints copied as files."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from ddia_ray import codec
from ddia_ray.errors import ConfigError, CorruptionError, CorruptRecordError, InvalidArgumentError, StorageError
from ddia_ray.replication.arrow_pages import page_bytes, read_page, rows_page
from ddia_ray.replication.engine_state import APPLIED_KEY, EngineState
from ddia_ray.replication.records import CAS, DELETE, DELETE_RANGE, PUT, RESERVED_PREFIX, ReplScan, ScanResult
from ddia_ray.replication.state import MapState

ENGINES = ["lsm", "btree"]


def _open(tmp_path, name: str, engine: str) -> EngineState:
    return EngineState(f"file://{tmp_path}/{name}", engine=engine, checkpoints_url=f"file://{tmp_path}/cps")


@pytest.mark.parametrize("engine", ENGINES)
def test_data_position_and_sessions_survive_a_reopen(tmp_path, engine):
    st = _open(tmp_path, "a", engine)
    ops, results = st.decide(((PUT, b"k1", b"v1"), (PUT, b"k2", b"v2"), (CAS, b"k1", b"w", b"v1")))
    assert results == (None, None, True)
    st.apply(1, ops, ("client-a", 1, 1, results, 10), epoch=3)
    st.apply(2, ((DELETE, b"k2", b""),), (), epoch=3)
    st.close()
    again = _open(tmp_path, "a", engine)
    assert (again.applied, again.applied_epoch) == (2, 3)
    assert again.get_many((b"k1", b"k2")) == (b"w", None)
    assert again.answered("client-a", 1) == (1, (None, None, True))  # exactly-once survives a restart
    assert again.answered("client-b", 1) is None
    again.apply(3, ((PUT, b"k3", b"x"),), ("client-a", 2, 2, (None,), 20), epoch=4)
    assert again.answered("client-a", 1) == "stale"  # acked_below=2 lets the replicas forget seq 1
    again.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_scans_never_return_the_replicas_own_keys(tmp_path, engine):
    st = _open(tmp_path, "s", engine)
    st.apply(1, tuple((PUT, b"k%02d" % i, b"v") for i in range(30)), ("c", 1, 1, (None,) * 30, 10), epoch=1)
    keys, values = st.scan(b"", None, 1000)
    assert keys == tuple(b"k%02d" % i for i in range(30)) and set(values) == {b"v"}
    assert st.scan(b"k10", b"k15", 3) == ((b"k10", b"k11", b"k12"), (b"v", b"v", b"v"))
    assert st.engine.get(APPLIED_KEY) is not None  # it is there, only hidden
    st.close()


_scan_keys = hs.binary(max_size=6).map(lambda k: RESERVED_PREFIX + k if k[:1] == b"!" else k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=hs.lists(hs.lists(hs.tuples(hs.sampled_from([PUT, DELETE]), _scan_keys, hs.binary(max_size=8)),
                                 min_size=1, max_size=30), min_size=1, max_size=5),
       start=hs.binary(max_size=3), end=hs.none() | hs.binary(max_size=3), limit=hs.integers(1, 40),
       flush_after=hs.integers(0, 5))
@pytest.mark.parametrize("engine", ENGINES)
def test_arrow_pages_hold_what_row_pages_hold(tmp_path_factory, engine, batches, start, end, limit, flush_after):
    """An Arrow page of a scan (from the LSM's columns, or the rows of another engine) is the row
    page: same keys and values, reserved keys left out, across the memtable and SSTables, and under
    a pinned view while later writes land."""
    if end is not None and end < start:
        start, end = end, start
    path = tmp_path_factory.mktemp("pages")
    state = _open(path, "p", engine)
    try:
        for lsn, ops in enumerate(batches, 1):
            state.apply(lsn, tuple((code, key, b"" if code == DELETE else value) for code, key, value in ops))
            if lsn == flush_after and engine == "lsm":
                state.engine.flush()
        view = state.pin()
        want = state.scan(start, end, limit, view)
        state.apply(len(batches) + 1, ((PUT, start + b"\x01", b"later"),))  # not in the pinned view
        data, rows = state.scan_arrow(start, end, limit, view)
        pages = read_page(data)
        got_keys = tuple(k for b in pages for k in b.column(0).to_pylist())
        got_values = tuple(v for b in pages for v in b.column(1).to_pylist())
        assert (got_keys, got_values) == want and rows == len(want[0])
        state.unpin(view)
    finally:
        state.close()


def test_a_damaged_or_foreign_arrow_page_is_refused():
    import pyarrow as pa

    good = rows_page((b"a", b"b"), (b"1", b"2"))
    assert [b.num_rows for b in read_page(good)] == [2]
    assert read_page(page_bytes([])) == []  # an empty page reads as no batch
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("key", pa.string()), ("value", pa.binary())])) as w:
        w.write_batch(pa.record_batch([pa.array(["a"]), pa.array([b"1"])], names=["key", "value"]))
    with_nulls = pa.BufferOutputStream()
    schema = pa.schema([("key", pa.binary()), ("value", pa.binary())])
    with pa.ipc.new_stream(with_nulls, schema) as w:
        w.write_batch(pa.record_batch([pa.array([b"a", None]), pa.array([b"1", b"2"])], schema=schema))
    for bad in (sink.getvalue().to_pybytes(), with_nulls.getvalue().to_pybytes(), good[: len(good) // 2],
                b"\xff" * 64, good[:8] + bytes(reversed(good[8:])), "text"):
        with pytest.raises(CorruptRecordError):
            read_page(bad)


def test_scan_records_of_the_versions_before_arrow_pages_still_decode():
    import msgpack

    def wire(tag, version, fields):
        inner = msgpack.packb({"t": tag, "v": version, "f": fields}, use_bin_type=True)
        return codec.decode(msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner), use_bin_type=True))

    scan = wire("repl.scan", 3, {"start": b"a", "end": None, "limit": 5, "read": "leader", "after_epoch": 0,
                                 "after_lsn": 0, "max_staleness_s": -1.0, "fence": 0, "pin": 0})
    assert scan == ReplScan(b"a", None, 5) and scan.arrow is False
    page = wire("repl.scan_result", 2, {"keys": (b"a",), "values": (b"1",), "more": False, "epoch": 1, "lsn": 2,
                                        "node": "r1", "pin": 0})
    assert page.batch == b"" and page.keys == (b"a",)
    with pytest.raises(InvalidArgumentError):
        ReplScan(b"a", None, 5, arrow=1)
    with pytest.raises(InvalidArgumentError, match="batch is bytes"):
        ScanResult((), (), False, 1, 2, "r1", 0, "not bytes")


def test_a_range_delete_then_a_cas_in_one_batch_sees_the_range():
    st = MapState()
    st.apply(1, ((PUT, b"b", b"1"),))
    ops, results = st.decide(((DELETE_RANGE, b"a", b"c"), (CAS, b"b", b"2", None)))
    assert results == (None, True)  # b was deleted by the range earlier in the batch
    st.apply(2, ops)
    assert st.get(b"b") == b"2"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_engine_behind_its_recorded_position_refuses_to_recover(tmp_path, engine):
    st = _open(tmp_path, "r", engine)
    st.apply(1, ((PUT, b"k", b"v"),), epoch=1)
    st.engine.flush()  # durable in the engine's files, with or without an engine WAL
    assert st.durable_lsn() == 1
    snap = st.snapshot()
    st.close()
    fresh = _open(tmp_path, "other", engine)
    with pytest.raises(CorruptionError, match="lost data"):
        fresh.restore(snap)
    with pytest.raises(CorruptRecordError):
        fresh.restore(codec.encode(("engine", 99, 1, 1)))
    fresh.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_checkpoint_installs_by_copying_files(tmp_path, engine):
    leader = _open(tmp_path, "leader", engine)
    for lsn in range(1, 21):
        leader.apply(lsn, tuple((PUT, b"k%03d" % (lsn * 10 + i), b"v%d" % lsn) for i in range(10)),
                     ("c", lsn, lsn, (None,) * 10, lsn), epoch=2)
    follower = _open(tmp_path, "follower", engine)
    follower.apply(1, ((PUT, b"zz-only-here", b"x"),), epoch=1)  # a diverged tail the install replaces
    record = leader.export("leader-2-20")
    follower.install(record)
    assert (follower.applied, follower.applied_epoch) == (20, 2) and follower.generation == 2
    assert follower.scan(b"", None, 1000) == leader.scan(b"", None, 1000)
    assert follower.get(b"zz-only-here") is None
    assert follower.answered("c", 20) == (20, (None,) * 10)  # the sessions came with the files
    follower.close()
    reopened = _open(tmp_path, "follower", engine)  # CURRENT names the installed engine
    assert reopened.generation == 2 and reopened.applied == 20
    assert not os.path.exists(tmp_path / "follower" / "engine-1")  # the replaced engine is gone
    reopened.close()
    leader.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_checkpoint_that_is_gone_raises_and_leaves_the_state_as_it_was(tmp_path, engine):
    leader = _open(tmp_path, "leader", engine)
    leader.apply(1, ((PUT, b"a", b"1"),), epoch=1)
    records = [leader.export(f"cp-{i}") for i in range(3)]  # the oldest of three is deleted (two kept)
    follower = _open(tmp_path, "follower", engine)
    follower.apply(1, ((PUT, b"mine", b"1"),), epoch=1)
    with pytest.raises(StorageError, match="ask the leader again"):
        follower.install(records[0])
    assert follower.get(b"mine") == b"1" and follower.generation == 1
    follower.install(records[2])
    assert follower.get(b"a") == b"1" and follower.get(b"mine") is None
    follower.close()
    leader.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_checkpoint_a_follower_is_copying_outlives_newer_exports(tmp_path, engine):
    leader = _open(tmp_path, "leader", engine)
    leader.apply(1, ((PUT, b"a", b"1"),), epoch=1)
    first = leader.export("cp-0")
    # Four more exports while a follower copies cp-0 (the leader's Raft member names it in keep):
    # without keep, only the newest two would be left (the test above).
    records = [leader.export(f"cp-{i}", keep=frozenset({"cp-0"})) for i in range(1, 5)]
    follower = _open(tmp_path, "follower", engine)
    follower.install(first)
    assert follower.get(b"a") == b"1"
    assert [os.path.basename(d) for d in leader.exported] == ["cp-0", "cp-3", "cp-4"]
    leader.export("cp-5")  # acknowledged: cp-0 goes with the next export, with cp-3
    assert [os.path.basename(d) for d in leader.exported] == ["cp-4", "cp-5"]
    with pytest.raises(StorageError, match="ask the leader again"):
        follower.install(records[0])
    follower.close()
    leader.close()

def test_orphans_of_an_interrupted_install_are_removed_on_open(tmp_path):
    st = _open(tmp_path, "o", "lsm")
    st.apply(1, ((PUT, b"k", b"v"),), epoch=1)
    st.close()
    (tmp_path / "o" / "engine-7").mkdir()  # a copy that never became CURRENT
    again = _open(tmp_path, "o", "lsm")
    assert again.get(b"k") == b"v" and not (tmp_path / "o" / "engine-7").exists()
    again.close()


def test_bad_configuration_and_damage_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="engine"):
        EngineState(f"file://{tmp_path}/x", engine="sqlite")
    st = _open(tmp_path, "d", "lsm")
    st.engine.put(APPLIED_KEY, b"garbage")
    st.close()
    with pytest.raises(CorruptionError, match="applied position"):
        _open(tmp_path, "d", "lsm")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "CURRENT").write_text("not-an-engine\n")
    with pytest.raises(CorruptionError, match="CURRENT"):
        _open(tmp_path, "e", "lsm")


@pytest.mark.parametrize("engine", ENGINES)
def test_expired_sessions_leave_the_engine_in_the_entry_that_expired_them(tmp_path, engine):
    from ddia_ray.replication.engine_state import SESSION_PREFIX

    def open_(name="x"):
        return EngineState(f"file://{tmp_path}/{name}", engine=engine, session_ttl_ms=1000,
                           checkpoints_url=f"file://{tmp_path}/cps")

    st = open_()
    for i, client in enumerate(("a", "b", "c")):
        st.apply(i + 1, ((PUT, b"k", b"%d" % i),), (client, 1, 1, (None,), 100 * i), epoch=1)
    st.close()
    again = open_()  # the index of sessions is rebuilt from the rows, oldest first
    assert list(again.sessions.active) == ["a", "b", "c"] and again.sessions.clock == 200
    again.apply(4, ((PUT, b"k", b"x"),), ("d", 1, 1, (None,), 1150), epoch=1)  # a and b idle > 1000 ms
    assert again.answered("a", 1) is None and again.answered("c", 1) == (3, (None,))
    assert again.engine.get(SESSION_PREFIX + b"a") is None and again.engine.get(SESSION_PREFIX + b"b") is None
    assert again.describe()["sessions"] == 2 and again.describe()["sessions_expired"] == 2
    cp = again.export("cp-4")
    again.close()
    third = open_()
    assert list(third.sessions.active) == ["c", "d"] and third.answered("d", 1) == (4, (None,))
    third.close()
    follower = open_("f")
    follower.install(cp)  # a checkpoint carries the session rows and their stamps
    assert list(follower.sessions.active) == ["c", "d"] and follower.sessions.clock == 1150
    follower.close()


def test_a_damaged_session_row_is_reported_when_the_index_is_built(tmp_path):
    from ddia_ray.replication.engine_state import SESSION_PREFIX

    st = _open(tmp_path, "r", "lsm")
    st.engine.put(SESSION_PREFIX + b"c", b"\xc1garbage")
    st.close()
    with pytest.raises(CorruptionError, match="session row of client 'c'"):
        _open(tmp_path, "r", "lsm")


def test_without_an_engine_wal_the_durable_position_follows_flushes(tmp_path):
    import shutil

    # The store's default (the replica's log is the log of record), with the engine's work done inline:
    # the copy below must see files at rest, not a background purge removing the manifest it copies.
    st = EngineState(f"file://{tmp_path}/n", engine="lsm", checkpoints_url=f"file://{tmp_path}/cps",
                     options={"background": False})
    assert st.engine._opts.wal is False
    for lsn in range(1, 11):
        st.apply(lsn, ((PUT, b"k%02d" % lsn, b"v"),), epoch=1)
    assert st.applied == 10 and st.durable_lsn() == 0
    assert codec.decode(st.snapshot())[2:] == (0, 0)  # a base records only what a crash keeps
    st.engine.flush()
    assert st.durable_lsn() == 10 and codec.decode(st.snapshot())[2:] == (10, 1)
    st.apply(11, ((PUT, b"k11", b"v"),), epoch=2)
    st.request_durable()
    st.request_durable()  # asked once per flush
    st.engine.flush()
    assert st.durable_lsn() == 11
    st.apply(12, ((PUT, b"k12", b"v"),), epoch=2)
    shutil.copytree(tmp_path / "n", tmp_path / "crashed")  # what a crash leaves: lsn 12 was in memory only
    st.close()
    crashed = EngineState(f"file://{tmp_path}/crashed", engine="lsm", checkpoints_url=f"file://{tmp_path}/cps")
    assert (crashed.applied, crashed.applied_epoch) == (11, 2) and crashed.get(b"k12") is None
    crashed.close()
    clean = _open(tmp_path, "n", "lsm")  # a clean close flushed
    assert clean.applied == 12 and clean.durable_lsn() == 12
    clean.close()


def test_with_an_engine_wal_or_a_btree_every_applied_entry_is_durable(tmp_path):
    for st in (EngineState(f"file://{tmp_path}/w", engine="lsm", options={"wal": True}),
               _open(tmp_path, "b", "btree")):
        st.apply(1, ((PUT, b"k", b"v"),), epoch=1)
        assert st.durable_lsn() == 1
        st.close()


def test_the_positions_waiting_for_a_flush_are_dropped_once_flushed_even_if_nobody_asks(tmp_path):
    st = _open(tmp_path, "p", "lsm")  # (a Raft replica never asks for durable_lsn: apply trims)
    for lsn in range(1, 5001):
        st.apply(lsn, ((PUT, b"k", b"%d" % lsn),), epoch=1)
        if lsn == 3000:
            st.engine.flush()
    assert len(st._pending) <= 4096 - 3000 + 1000 and st._durable[0] >= 3000
    st.close()
