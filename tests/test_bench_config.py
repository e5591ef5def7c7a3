"""The pure parts of ``bench/config.py`` and ``bench/config_peers.py``: etcd's watch messages, the tally.

The protobuf codec is checked twice: against bytes worked out by hand from the grammar at the top
of ``bench/config_peers.py``, and against the ``protobuf`` package (a dependency of Ray) with the
same messages declared from etcd 3.4's ``rpc.proto`` and ``kv.proto``. One test drives a real
etcd when the Debian package is installed (a few seconds) and is skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import config_peers as cp  # noqa: E402 - found through the line above
import replication_peers as rp  # noqa: E402


def _load_bench_config():
    # bench/config.py under a name of its own: "config" alone could be any module's
    spec = importlib.util.spec_from_file_location("bench_config", os.path.join(BENCH, "config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bc = _load_bench_config()


# ---------------------------------------------------------------------------------------------
# Hand-computed bytes


def test_create_request_bytes():
    # create = key "a/" (0a 02 61 2f), range_end "a0" (12 02 61 30), start_revision 5 (18 05)
    create = bytes.fromhex("0a02612f" "12026130" "1805")
    assert cp.encode_watch_create(b"a/", b"a0", 5) == b"\x0a" + bytes([len(create)]) + create


def test_create_request_omits_defaults():
    assert cp.encode_watch_create(b"k") == bytes.fromhex("0a03" "0a016b")


def test_cancel_request_bytes():
    assert cp.encode_watch_cancel(3) == bytes.fromhex("1202" "0803")
    assert cp.encode_watch_cancel(0) == bytes.fromhex("1200")  # watch 0: the field is the default


def test_negative_varint_is_refused():
    with pytest.raises(ValueError):
        cp.encode_watch_create(b"k", start_revision=-1)


@pytest.mark.parametrize("prefix, end", [(b"a/", b"a0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"),
                                         (b"\xff\xff", b"\x00"), (b"", b"\x00")])
def test_prefix_range_end(prefix, end):
    assert cp.prefix_range_end(prefix) == end


def test_decode_watch_response_by_hand():
    header = bytes.fromhex("1807")  # revision 7
    kv = bytes.fromhex("0a016b" "1807" "2001" "2a0176")  # key "k", mod_revision 7, version 1, value "v"
    put = b"\x12" + bytes([len(kv)]) + kv  # type PUT is the default, off the wire
    delete = bytes.fromhex("0801" "1203" "0a016b")  # type DELETE, kv {key "k"}
    buf = (b"\x0a" + bytes([len(header)]) + header + bytes.fromhex("1002")
           + b"\x5a" + bytes([len(put)]) + put + b"\x5a" + bytes([len(delete)]) + delete)
    r = cp.decode_watch_response(buf)
    assert (r.revision, r.watch_id, r.created, r.canceled) == (7, 2, False, False)
    assert [e.type for e in r.events] == [0, 1]
    assert r.events[0].kv == cp.KeyValue(key=b"k", mod_revision=7, version=1, value=b"v")
    assert r.events[1].kv == cp.KeyValue(key=b"k")


def test_decode_created_and_canceled():
    r = cp.decode_watch_response(bytes.fromhex("1003" "1801" "2001" "2809" "3203") + b"why")
    assert (r.watch_id, r.created, r.canceled, r.compact_revision, r.cancel_reason) == (3, True, True, 9, "why")


@pytest.mark.parametrize("buf", [bytes.fromhex("5a05" "0a01"), bytes.fromhex("1080"), bytes.fromhex("0f")])
def test_decode_refuses_broken_input(buf):
    # a length past the end, a varint cut short, wire type 7
    with pytest.raises(ValueError):
        cp.decode_watch_response(buf)


# ---------------------------------------------------------------------------------------------
# The protobuf package as the oracle


def _etcd_messages():
    """etcd's watch messages, declared at run time from their field numbers in rpc.proto / kv.proto."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="ddia_bench_etcd_watch.proto", package="ddiabench",
                                             syntax="proto3")

    def message(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".ddiabench.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("KeyValue", ("key", 1, F.TYPE_BYTES, opt, None), ("create_revision", 2, F.TYPE_INT64, opt, None),
            ("mod_revision", 3, F.TYPE_INT64, opt, None), ("version", 4, F.TYPE_INT64, opt, None),
            ("value", 5, F.TYPE_BYTES, opt, None), ("lease", 6, F.TYPE_INT64, opt, None))
    message("Event", ("type", 1, F.TYPE_INT32, opt, None), ("kv", 2, F.TYPE_MESSAGE, opt, "KeyValue"),
            ("prev_kv", 3, F.TYPE_MESSAGE, opt, "KeyValue"))
    message("ResponseHeader", ("cluster_id", 1, F.TYPE_UINT64, opt, None), ("member_id", 2, F.TYPE_UINT64, opt, None),
            ("revision", 3, F.TYPE_INT64, opt, None), ("raft_term", 4, F.TYPE_UINT64, opt, None))
    message("WatchCreateRequest", ("key", 1, F.TYPE_BYTES, opt, None), ("range_end", 2, F.TYPE_BYTES, opt, None),
            ("start_revision", 3, F.TYPE_INT64, opt, None))
    message("WatchCancelRequest", ("watch_id", 1, F.TYPE_INT64, opt, None))
    message("WatchRequest", ("create_request", 1, F.TYPE_MESSAGE, opt, "WatchCreateRequest"),
            ("cancel_request", 2, F.TYPE_MESSAGE, opt, "WatchCancelRequest"))
    message("WatchResponse", ("header", 1, F.TYPE_MESSAGE, opt, "ResponseHeader"),
            ("watch_id", 2, F.TYPE_INT64, opt, None), ("created", 3, F.TYPE_BOOL, opt, None),
            ("canceled", 4, F.TYPE_BOOL, opt, None), ("compact_revision", 5, F.TYPE_INT64, opt, None),
            ("cancel_reason", 6, F.TYPE_STRING, opt, None), ("fragment", 7, F.TYPE_BOOL, opt, None),
            ("events", 11, F.TYPE_MESSAGE, rep, "Event"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ddiabench.{name}"))
            for name in ("WatchRequest", "WatchResponse")}


_MESSAGES = None


def _messages():
    global _MESSAGES
    if _MESSAGES is None:
        _MESSAGES = _etcd_messages()
    return _MESSAGES


_revisions = st.integers(0, 2**63 - 1)
_blobs = st.binary(max_size=300)


@settings(max_examples=50, deadline=None)
@given(key=_blobs, range_end=_blobs, start=_revisions)
def test_create_request_matches_protobuf(key, range_end, start):
    theirs = _messages()["WatchRequest"]()
    theirs.create_request.key, theirs.create_request.range_end = key, range_end
    theirs.create_request.start_revision = start
    ours = cp.encode_watch_create(key, range_end, start)
    assert ours == theirs.SerializeToString()
    parsed = _messages()["WatchRequest"].FromString(ours)
    assert (parsed.create_request.key, parsed.create_request.range_end, parsed.create_request.start_revision) \
        == (key, range_end, start)


@settings(max_examples=50, deadline=None)
@given(watch_id=_revisions)
def test_cancel_request_matches_protobuf(watch_id):
    theirs = _messages()["WatchRequest"]()
    theirs.cancel_request.watch_id = watch_id
    assert cp.encode_watch_cancel(watch_id) == theirs.SerializeToString()


_kv = st.fixed_dictionaries({"key": _blobs, "create_revision": _revisions, "mod_revision": _revisions,
                             "version": _revisions, "value": _blobs, "lease": _revisions})


@settings(max_examples=50, deadline=None)
@given(revision=_revisions, watch_id=_revisions, created=st.booleans(), canceled=st.booleans(),
       compact=_revisions, reason=st.text(max_size=20), fragment=st.booleans(),
       events=st.lists(st.tuples(st.integers(0, 1), _kv, st.none() | _kv), max_size=5))
def test_watch_response_decodes_what_protobuf_encodes(revision, watch_id, created, canceled, compact, reason,
                                                      fragment, events):
    msg = _messages()["WatchResponse"]()
    msg.header.revision, msg.watch_id, msg.created, msg.canceled = revision, watch_id, created, canceled
    msg.compact_revision, msg.cancel_reason, msg.fragment = compact, reason, fragment
    for kind, kv, prev in events:
        e = msg.events.add(type=kind)
        e.kv.CopyFrom(e.kv.__class__(**kv))
        if prev is not None:
            e.prev_kv.CopyFrom(e.prev_kv.__class__(**prev))
    r = cp.decode_watch_response(msg.SerializeToString())
    assert (r.revision, r.watch_id, r.created, r.canceled, r.compact_revision, r.cancel_reason, r.fragment) \
        == (revision, watch_id, created, canceled, compact, reason, fragment)
    assert [(e.type, e.kv, e.prev_kv) for e in r.events] == [
        (kind, cp.KeyValue(**kv), None if prev is None else cp.KeyValue(**prev)) for kind, kv, prev in events]


# ---------------------------------------------------------------------------------------------
# The tally and the figures


@given(seq=st.integers(0, 10**16 - 1))
def test_value_carries_its_sequence_number(seq):
    value = bc.encode_value(seq)
    assert len(value) == bc.VALUE_BYTES
    assert bc.decode_seq(value) == seq


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert rp._percentile(values, 50) == 50
    assert rp._percentile(values, 99) == 99
    assert rp._percentile([3.0], 99) == 3.0
    assert rp._percentile([1, 2], 50) == 1


def test_summary_latencies_rate_missing_and_duplicates():
    # sets 10 and 11 sent at 1.000 s and 1.010 s; watcher 0 sees both (one twice), watcher 1 only 10
    sent = [1.000, 1.010]
    received = [[(10, 1.002), (11, 1.014), (11, 1.020)], [(10, 1.003)]]
    s = bc.summarize(sent, received, 10)
    assert (s["notifications"], s["missing"], s["duplicates"]) == (3, 1, 1)
    assert s["p50_ms"] == pytest.approx(3.0)  # latencies 2, 3, 4 ms
    assert s["p99_ms"] == pytest.approx(4.0)
    assert s["seconds"] == pytest.approx(0.014)  # first send to last delivery
    assert s["notifications_per_s"] == pytest.approx(3 / 0.014)
    assert bc.summarize(sent, received, 10, t_first=0.996)["seconds"] == pytest.approx(0.018)


def test_summary_of_nothing_delivered():
    s = bc.summarize([1.0, 2.0], [[], []], 0)
    assert (s["missing"], s["p50_ms"], s["notifications_per_s"]) == (4, None, None)


def test_tally_counts_strays_and_waits_for_deliveries():
    tally = bc.Tally(watchers=2, first=100, count=3)
    for seq in range(100, 103):
        tally.mark_sent(seq, 0.0)
    tally.deliver(0, [99, 100, 101, 102], 0.5)  # 99: a late event of an earlier run
    assert tally.strays == 1
    assert not tally.wait_delivered(6, timeout_s=0.05)
    other = threading.Thread(target=tally.deliver, args=(1, [100, 101, 102], 0.6))
    other.start()
    assert tally.wait_delivered(6, timeout_s=10.0)
    other.join()
    s = tally.summary()
    assert (s["notifications"], s["missing"], s["callbacks"], s["strays"]) == (6, 0, 2, 1)


def test_wait_delivered_raises_what_check_raises():
    tally = bc.Tally(watchers=1, first=0, count=1)

    def broken():
        raise RuntimeError("stream failed")

    with pytest.raises(RuntimeError, match="stream failed"):
        tally.wait_delivered(1, timeout_s=5.0, check=broken)


def test_median_run_takes_the_middle_and_sorts_missing_figures_last():
    runs = [{"x": 3.0}, {"x": None}, {"x": 1.0}, {"x": 2.0}]
    m = bc.median_run(runs, "x")
    assert m["x"] == 2.0
    assert m["x_runs"] == [3.0, None, 1.0, 2.0]
    assert bc.median_run([{"x": None}], "x")["x"] is None


def test_targets_ratios_and_verdicts():
    def fig(p50, rate, writes):
        return {"latency": {"p50_ms": p50}, "throughput": {"notifications_per_s": rate, "writes_per_s": writes}}

    ours = {1: fig(3.0, 1000.0, 500.0), 10: fig(5.0, 900.0, 500.0)}
    etcd = {1: fig(1.0, 500.0, 1000.0), 10: fig(2.5, 1000.0, 1000.0)}
    rows = bc.targets(ours, etcd, (1, 10, 100))
    assert [r["watchers"] for r in rows] == [1, 10]
    assert (rows[0]["latency_p50_ratio"], rows[0]["latency_met"]) == (3.0, False)
    assert (rows[0]["notifications_ratio"], rows[0]["notifications_met"]) == (2.0, True)
    assert (rows[1]["latency_p50_ratio"], rows[1]["latency_met"]) == (2.0, True)
    assert (rows[1]["notifications_met"], rows[1]["writes_ratio"]) == (False, 0.5)


# ---------------------------------------------------------------------------------------------
# A real etcd, when installed


@pytest.mark.skipif(rp.etcd_missing() is not None, reason=str(rp.etcd_missing()))
@pytest.mark.parametrize("streams", ["shared", "per-watcher"])
def test_watchers_see_every_put_once_in_revision_order(streams):
    got: dict = {i: [] for i in range(3)}
    done = threading.Condition()

    def callback(index, events, t):
        with done:
            got[index].extend((e.kv.mod_revision, e.kv.key, e.kv.value) for e in events)
            done.notify_all()

    with rp.EtcdCluster(members=1) as etcd:
        target = etcd.leader_url[len("http://"):]
        with cp.EtcdWatchers(target, b"cfg/", 3, callback, streams=streams) as watchers:
            revisions = [rp._decode_put_revision(etcd._put_blocking(b"cfg/%d" % i, b"v%d" % i)) for i in range(5)]
            etcd._put_blocking(b"other/0", b"not watched")
            with done:
                assert done.wait_for(lambda: all(len(g) >= 5 for g in got.values()), timeout=30)
            watchers.check()
    want = [(r, b"cfg/%d" % i, b"v%d" % i) for i, r in enumerate(revisions)]
    assert all(g == want for g in got.values()), got


@pytest.mark.skipif(rp.etcd_missing() is not None, reason=str(rp.etcd_missing()))
def test_bench_system_on_etcd_delivers_every_set_to_every_watcher():
    etcd = bc._Etcd(fsync=False, streams="shared", members=1)
    try:
        out = bc.bench_system(etcd, watchers=(1, 3), latency_writes=5, writes=40, in_flight=4, repeats=1,
                              progress=lambda line: None)
    finally:
        etcd.close()
    for n in (1, 3):
        lat, thr = out[n]["latency"], out[n]["throughput"]
        assert (lat["notifications"], lat["missing"], lat["duplicates"]) == (5 * n, 0, 0)
        assert (thr["notifications"], thr["missing"], thr["duplicates"], thr["failed_writes"]) == (40 * n, 0, 0, 0)
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
        assert thr["notifications_per_s"] > 0 and thr["writes_per_s"] > 0


def test_bench_system_on_our_store_in_one_process():
    # the same harness over the configuration store's in-process backend (no Ray): both clients
    # share one backend, as the bench's two clients share one Raft group
    from ddia_ray.config.client import ConfigClient
    from ddia_ray.config.local import LocalBackend

    backend = LocalBackend()
    ours = bc._Ours(ConfigClient(backend), ConfigClient(backend))
    try:
        out = bc.bench_system(ours, watchers=(1, 3), latency_writes=5, writes=40, in_flight=4, repeats=1,
                              progress=lambda line: None)
    finally:
        ours.close()
    for n in (1, 3):
        lat, thr = out[n]["latency"], out[n]["throughput"]
        assert (lat["notifications"], lat["missing"], lat["duplicates"]) == (5 * n, 0, 0)
        assert (thr["notifications"], thr["missing"], thr["duplicates"], thr["failed_writes"]) == (40 * n, 0, 0, 0)
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]


def test_a_missing_etcd_is_skipped_with_the_reason(monkeypatch, capsys, tmp_path):
    import json

    reason = "etcd-server is not installed: apt-get install etcd-server"
    monkeypatch.setattr(rp, "etcd_missing", lambda: reason)
    out = tmp_path / "figures.json"
    assert bc.main(["--only", "peers", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipping etcd: etcd-server is not installed" in printed
    assert "etcd: skipped: etcd-server is not installed" in printed
    assert json.loads(out.read_text())["results"] == {"etcd": reason}
