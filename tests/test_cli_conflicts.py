"""``ddia-ray conflicts``: its arguments, the demonstration's pure parts (plan, values, verdicts), one real run."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.cli import build_parser, main
from ddia_ray.demo.conflicts import (RESOLUTION, ROWS, ConflictsReport, _finals, _region_steps, judge, key_of, plan,
                                     register_value, summary_lines, text_chars, value_ids, verdict_line)
from ddia_ray.errors import InvalidArgumentError
from ddia_ray.history.lost_updates import CounterUpdate, RegisterWrite, SetUpdate, TextUpdate

_ROW = {r.name: r for r in ROWS}
#: A row of the table: label, prefix, acked, lost, unit, siblings max and mean, resolutions, a sample value.
_ROW_LINE = re.compile(r"^(?P<label>.{20}) (?P<prefix>[a-z]+/)\s+(?P<acked>\d+)\s+(?P<lost>\d+)\s+(?P<unit>\S+)\s+"
                       r"(?P<sib_max>\S+)\s+(?P<sib_mean>\S+)\s+(?P<resolutions>\S+)  ")


# --- arguments ------------------------------------------------------------------------------------------


def test_conflicts_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "conflicts", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--regions", "--writes", "--keys", "--delay-s", "--skew-s", "--skew-region", "--protocol",
                   "--timeout-s", "--seed", "--no-progress"):
        assert option in out


@pytest.mark.parametrize("argv", [["--regions", "us"], ["--regions", "us,us"], ["--regions", "us,e u"],
                                  ["--writes", "0"], ["--delay-s", "-0.1"], ["--skew-s", "nan"],
                                  ["--skew-s", "inf"], ["--protocol", "raft"], ["--keys", "x"]])
def test_bad_conflicts_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["conflicts", *argv])
    assert e.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_arguments_parse_to_the_run_settings():
    args = build_parser().parse_args(["conflicts", "--regions", "us,eu", "--skew-s", "0.25", "--delay-s", "0"])
    assert args.regions == ("us", "eu") and args.skew_s == 0.25 and args.delay_s == 0.0
    assert args.protocol == "multi-leader" and args.writes == 40 and args.skew_region is None


def test_a_skew_region_outside_the_regions_fails_before_launching(capsys):
    assert main(["conflicts", "--regions", "us,eu", "--skew-region", "ap", "--no-progress"]) == 2
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "conflicts: FAILED"


# --- the plan and the values ------------------------------------------------------------------------------


def test_the_plan_is_the_seeds_and_each_regions_own():
    a = plan(("us", "eu", "ap"), 20, 3, seed=7)
    assert a == plan(("us", "eu", "ap"), 20, 3, seed=7)
    assert a != plan(("us", "eu", "ap"), 20, 3, seed=8)
    assert plan(("us", "eu"), 20, 3, seed=7) == {r: a[r] for r in ("us", "eu")}  # a region added changes no other
    assert [s.id for s in a["eu"]] == [f"eu.{i}" for i in range(20)]
    assert all(0 <= s.key < 3 and s.amount != 0 and 0 <= s.pick < 1 for steps in a.values() for s in steps)


@pytest.mark.parametrize("regions,writes,keys", [((), 5, 2), (("us", "us"), 5, 2), (("u,s",), 5, 2),
                                                 (("us",), 0, 2), (("us",), 5, 0), (("us",), True, 2)])
def test_a_bad_plan_is_refused(regions, writes, keys):
    with pytest.raises(InvalidArgumentError):
        plan(regions, writes, keys, 0)


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.from_regex(r"[a-z]{1,3}\.[0-9]{1,3}", fullmatch=True), min_size=1, max_size=6, unique=True),
       row=st.sampled_from(["lww", "siblings", "resolver"]))
def test_a_register_value_names_its_write_ids(ids, row):
    assert value_ids(_ROW[row], register_value(_ROW[row], ids)) == tuple(sorted(ids))


def test_a_resolver_value_that_is_not_a_tuple_of_ids_is_refused():
    from ddia_ray import codec
    with pytest.raises(InvalidArgumentError):
        value_ids(_ROW["resolver"], codec.encode({"a": 1}))
    assert value_ids(_ROW["lww"], None) == ()


def test_text_characters_are_the_intact_tokens():
    assert text_chars("us.1;eu.2;", ["us.1", "eu.2", "ap.3"]) == {("us.1", o) for o in range(5)} | {
        ("eu.2", o) for o in range(5)}
    # Interleaved characters make no known token: none of them counts as present.
    assert text_chars("us.eu.21;", ["us.1", "eu.2"]) == set()
    assert text_chars("", ["us.1"]) == set()


# --- the verdicts, on a hand-made history ------------------------------------------------------------------


def _report(lww_discarded=1, converged=True, sib_final=None, counter=5, text="us.0;eu.0;") -> ConflictsReport:
    """Two regions, one key, one step each: us.0 and eu.0 concurrent on every prefix."""
    report = ConflictsReport("multi-leader", ("us", "eu"), 1, 1, 0.05, {"eu": -0.5}, 0, converged=converged,
                             convergence_s=0.3 if converged else None, stats={"lww_discarded": lww_discarded})
    history, finals = {}, {}
    for name in ("lww", "siblings", "resolver"):
        k = key_of(_ROW[name], 0)
        history[name] = [RegisterWrite("us.0", k, True), RegisterWrite("eu.0", k, True)]
        finals[name] = {k: {"us.0", "eu.0"}}
    finals["lww"] = {key_of(_ROW["lww"], 0): {"us.0"}}  # LWW kept one
    if sib_final is not None:
        finals["siblings"] = {key_of(_ROW["siblings"], 0): sib_final}
    c, s, t = key_of(_ROW["counter"], 0), key_of(_ROW["set"], 0), key_of(_ROW["text"], 0)
    history["counter"] = [CounterUpdate("us.0", c, True, 2), CounterUpdate("eu.0", c, True, 3)]
    finals["counter"] = {c: counter}
    history["set"] = [SetUpdate("us.0", s, True, "add", b"us.0"), SetUpdate("eu.0", s, True, "add", b"eu.0")]
    finals["set"] = {s: {b"us.0", b"eu.0"}}
    history["text"] = [TextUpdate("us.0", t, True, "insert", "us.0;"), TextUpdate("eu.0", t, True, "insert", "eu.0;")]
    finals["text"] = {t: text_chars(text, ["us.0", "eu.0"])}
    judge(report, history, finals)
    return report


def test_a_run_that_lost_only_under_lww_and_counted_it_is_ok():
    report = _report()
    lines = summary_lines(report)
    assert report.ok and lines[-1] == verdict_line(report) == "conflicts: ok"
    assert report.rows["lww"].lost == 1 and report.rows["lww"].lost_ids == ("eu.0",)
    assert lines[-4] == "LWW writes lost: 1 of 2, counted by the store: yes (1 discarded)"
    assert lines[-3] == "lost under siblings, resolver and CRDTs: 0" and lines[-2] == "converged: yes"
    table = [m for m in map(_ROW_LINE.match, lines) if m]
    assert [m["prefix"] for m in table] == ["lww/", "sib/", "res/", "cnt/", "set/", "txt/"]
    assert [m["lost"] for m in table] == ["1", "0", "0", "0", "0", "0"]


@pytest.mark.parametrize("change,line", [
    (dict(lww_discarded=0), "LWW writes lost: 1 of 2, counted by the store: NO (0 discarded)"),
    (dict(sib_final={"us.0"}), "lost under siblings, resolver and CRDTs: siblings 1"),
    (dict(counter=4), "lost under siblings, resolver and CRDTs: counter 1"),
    (dict(counter=6), "lost under siblings, resolver and CRDTs: counter 0 (+1)"),
    (dict(text="us.0;eu.0"), "lost under siblings, resolver and CRDTs: text 5"),
    (dict(converged=False), "converged: NO"),
])
def test_each_check_can_fail(change, line):
    report = _report(**change)
    lines = summary_lines(report)
    assert line in lines, "\n".join(lines)
    assert not report.ok and lines[-1] == "conflicts: FAILED"


def test_a_report_with_no_rows_fails():
    report = ConflictsReport("multi-leader", ("us", "eu"), 1, 1, 0.0, {}, 0, converged=True)
    assert not report.ok and "not run" in "\n".join(summary_lines(report))


# --- a real run ------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_real_run_behind_a_partition_ends_ok(ray_session, capsys):
    status = main(["conflicts", "--writes", "12", "--keys", "3", "--delay-s", "0.02", "--seed", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.rstrip().splitlines()
    assert lines[-1] == "conflicts: ok" and lines[-2] == "converged: yes"
    assert lines[-3] == "lost under siblings, resolver and CRDTs: 0"
    assert lines[-4].startswith("LWW writes lost: ") and "counted by the store: yes" in lines[-4]
    lost, acked = (int(x) for x in re.match(r"LWW writes lost: (\d+) of (\d+),", lines[-4]).groups())
    assert acked == 36 and 1 <= lost < acked  # 3 regions x 12 steps; the skewed region's writes lose
    rows = {m["label"].strip(): m for m in map(_ROW_LINE.match, lines) if m}
    assert list(rows) == ["LWW", "siblings", "resolver set_union", "CRDT counter", "CRDT OR-set", "CRDT text"]
    assert int(rows["LWW"]["lost"]) == lost and rows["LWW"]["sib_max"] == "1"
    assert all(int(r["acked"]) >= 36 for r in rows.values())
    assert all(r["lost"] == "0" for label, r in rows.items() if label != "LWW")
    assert int(rows["siblings"]["sib_max"]) >= 2  # concurrent writes were kept as siblings
    assert int(rows["siblings"]["resolutions"]) >= 1  # and merged by the application
    assert int(rows["resolver set_union"]["resolutions"]) >= 1 and rows["resolver set_union"]["sib_max"] == "1"
    assert "partitioned every region apart" in out and "convergence after healing: " in out


# --- the workload against in-memory replicas (the store's pure versions, no Ray) -----------------------------


class _MemoryClient:
    """A client of one in-memory replica: the store's :class:`KeyVersions` and its answers, no Ray."""

    def __init__(self, node: str, wall_ns: int):
        from ddia_ray.replication.versions import KeyVersions, Policies, parse_policies
        self.kv = KeyVersions(node, "mem", Policies(parse_policies(RESOLUTION)))
        self.wall_ns = wall_ns  # this replica's clock: a skewed one starts lower

    def _stamp(self) -> tuple[int, int]:
        self.wall_ns += 1_000
        return self.wall_ns, 0

    def _done(self, result):
        fut = concurrent.futures.Future()
        fut.set_result(result)
        return fut

    def get_many(self, keys):
        from ddia_ray import crdt
        from ddia_ray.replication.versioned_client import Versions
        out = []
        for key in keys:
            a = self.kv.answer(key, self.kv.data.get(key))
            state = crdt.decode(a["crdt"], a["kind"]) if a["crdt"] is not None else None
            out.append(Versions(key, a["siblings"], a["context"], state, a["kind"]))
        return out

    def put_nowait(self, key, value, *, context=None):
        from ddia_ray.replication.versions import decode_context
        return self._done(self.kv.put(key, value, decode_context("mem", context), self._stamp()))

    def update_nowait(self, key, op, *args):
        return self._done(self.kv.update(key, op, args, self._stamp()))

    def heal(self, other: "_MemoryClient") -> None:
        for key, state in list(other.kv.data.items()):
            self.kv.merge(key, state)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), keys=st.integers(1, 3))
def test_partitioned_regions_lose_writes_only_under_lww(seed, keys):
    steps = plan(("us", "eu"), 12, keys, seed)
    us, eu = _MemoryClient("r1", 2_000_000_000), _MemoryClient("r2", 1_000_000_000)  # eu's clock is behind
    history = {r.name: [] for r in ROWS}
    for region, client in (("us", us), ("eu", eu)):  # partitioned: neither sees the other's writes
        hist, latencies, errors = _region_steps(client, region, steps[region], False, 1.0)
        assert errors == [] and len(latencies) == 12
        for name, ops in hist.items():
            history[name] += ops
    us.heal(eu)
    finals, versions = _finals(us, keys)
    finals["text"] = {key_of(_ROW["text"], k): text_chars(versions[key_of(_ROW["text"], k)].crdt.value(),
                                                         [o.id for o in history["text"] if o.op == "insert"])
                      for k in range(keys)}
    report = ConflictsReport("multi-leader", ("us", "eu"), 12, keys, 0.0, {"eu": -1.0}, seed, converged=True,
                             stats={"lww_discarded": us.kv.lww_discarded})
    judge(report, history, finals)
    assert all(r.ok for name, r in report.rows.items() if name != "lww"), {n: r.lost for n, r in report.rows.items()}
    # Under LWW each key both regions wrote loses eu's last write there (its clock is behind), and the replica
    # that met the two counted it.
    both = {s.key for s in steps["us"]} & {s.key for s in steps["eu"]}
    assert report.rows["lww"].lost == len(both) <= us.kv.lww_discarded
    assert all(i.startswith("eu.") for i in report.rows["lww"].lost_ids)
    assert report.ok
    # Siblings: one per region on the keys both wrote, until the application merges them.
    sib = _ROW["siblings"]
    assert {k for k in range(keys) if len(versions[key_of(sib, k)].siblings) == 2} == both
