"""``ddia-ray raft``: its arguments, its summary (ddia_ray.kv.report), its clean-up, and one real run.

The fast tests drive :func:`ddia_ray.cli.main` with a stand-in cluster and
workload, so every path (linearizable, violation, unknown, a crash) is
checked for its last line, its exit status and the shutdown of the cluster.
The report tests build :class:`WorkloadReport` values by hand. One test runs
the real thing on the session's Ray: a 3-member RaftKV whose leader is killed.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.cli import build_parser, main
from ddia_ray.errors import InvalidArgumentError
from ddia_ray.kv import report as kv_report
from ddia_ray.kv.report import (REPAIR_EVENTS, exit_status, fault_spans, leader_spans, member_series,
                                summary_lines, verdict_line)
from ddia_ray.kv.workload import SCHEDULES, WorkloadReport


def _report(linearizable=True, **fields) -> WorkloadReport:
    base = dict(schedule="kill-leader", duration_s=5.0, ops=120, ok=100, failed=15, unknown=5,
                throughput_ops_s=20.0, latency_ms={"p50": 2.5, "p95": 9.0, "p99": 30.25, "max": 120.0},
                elections=2, terms=((3, "m2"), (4, "m1")),
                faults=[(1.0, "kill leader m1"), (2.5, "repair"), (2.5, "heal"), (3.5, "kill leader m2"),
                        (5.0, "repair"), (5.0, "heal")],
                samples=[], linearizable=linearizable, verdict="history is linearizable: 120 ops")
    base.update(fields)
    return WorkloadReport(**base)


# --- arguments ------------------------------------------------------------------------------


def test_raft_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "raft", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "usage: ddia-ray raft" in out
    for option in ("--members", "--clients", "--keys", "--duration-s", "--schedule", "--seed", "--root", "--tick-s",
                   "--no-progress"):
        assert option in out, option
    for schedule in SCHEDULES:
        assert schedule in out, schedule


@pytest.mark.parametrize("members", ["4", "1", "2", "7", "three"])
def test_only_three_or_five_members_are_accepted(members, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["raft", "--members", members])
    assert exit_info.value.code == 2
    assert "must be 3 or 5" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--schedule", "chaos"], ["--duration-s", "0"], ["--duration-s", "-1"],
                                  ["--clients", "0"], ["--keys", "-3"], ["--tick-s", "0"], ["--tick-s", "nan"]])
def test_bad_raft_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["raft", *argv])
    assert exit_info.value.code == 2


def test_raft_defaults_and_accepted_values():
    args = build_parser().parse_args(["raft"])
    assert (args.members, args.clients, args.keys, args.schedule, args.seed, args.root, args.no_progress) == \
        (3, 4, 3, "mixed", 0, None, False)
    assert args.duration_s == 10.0 and args.tick_s == 0.02
    args = build_parser().parse_args(["raft", "--members", "5", "--schedule", "partition-halves", "--duration-s", "2.5",
                                      "--tick-s", "0.05", "--root", "memory://x", "--no-progress"])
    assert (args.members, args.schedule, args.duration_s, args.tick_s, args.root, args.no_progress) == \
        (5, "partition-halves", 2.5, 0.05, "memory://x", True)


# --- the summary ----------------------------------------------------------------------------


@pytest.mark.parametrize("verdict, word, status", [(True, "yes", 0), (False, "NO", 1), (None, "unknown", 2)])
def test_verdict_line_and_exit_status(verdict, word, status):
    report = _report(linearizable=verdict)
    assert verdict_line(report) == f"linearizable: {word}"
    assert exit_status(report) == status
    assert summary_lines(report)[-1] == f"linearizable: {word}"


@pytest.mark.parametrize("bogus", [1, 0, "yes", "True"])
def test_a_verdict_that_is_not_a_bool_or_none_is_refused(bogus):
    with pytest.raises(InvalidArgumentError):
        verdict_line(_report(linearizable=bogus))


def test_summary_shows_counts_latency_elections_and_faults():
    text = "\n".join(summary_lines(_report()))
    assert "operations      120 (ok 100, failed 15, unknown 5)" in text
    assert "20.0 ok ops/s" in text
    assert "p50 2.50  p95 9.00  p99 30.25  max 120.00" in text
    assert re.search(r"elections seen\s+2$", text, re.MULTILINE)
    assert re.search(r"term 3\s+leader m2", text) and re.search(r"term 4\s+leader m1", text)
    # Two faults, each listed with its time; repairs are listed but not counted as faults.
    assert re.search(r"faults\s+2$", text, re.MULTILINE)
    assert re.search(r"1\.00 s\s+kill leader m1", text) and re.search(r"3\.50 s\s+kill leader m2", text)
    assert "history is linearizable: 120 ops" in text


def test_a_multiline_counterexample_stays_above_the_verdict_line():
    verdict = "history is NOT linearizable: 9 ops\nkey 'k': longest linearizable prefix\n  1. op 3 write"
    lines = summary_lines(_report(linearizable=False, verdict=verdict))
    assert lines[-1] == "linearizable: NO"
    assert sum(1 for line in lines if line.startswith("linearizable:")) == 1
    assert any("1. op 3 write" in line for line in lines[:-1])


def test_summary_without_any_successful_operation():
    lines = summary_lines(_report(linearizable=None, ok=0, latency_ms={}, terms=(), elections=0, faults=[],
                                  verdict=""))
    text = "\n".join(lines)
    assert "latency ms      n/a" in text and re.search(r"elections seen\s+0$", text, re.MULTILINE)
    assert lines[-1] == "linearizable: unknown"


# --- plot data ------------------------------------------------------------------------------


def test_fault_spans_pair_each_fault_with_its_repair():
    spans = fault_spans(_report().faults)
    assert [(s.label, s.start_s, s.end_s) for s in spans] == [("kill leader m1", 1.0, 2.5),
                                                              ("kill leader m2", 3.5, 5.0)]
    # A fault still in force when the log ends lasts until end_s (or the last logged time).
    spans = fault_spans([(1.0, "isolate leader m1"), (2.0, "heal"), (3.0, "pause leader m3")], end_s=6.0)
    assert [(s.label, s.start_s, s.end_s) for s in spans] == [("isolate leader m1", 1.0, 2.0),
                                                              ("pause leader m3", 3.0, 6.0)]
    assert fault_spans([]) == ()


_EVENT = st.tuples(st.floats(0, 30, allow_nan=False).map(lambda t: round(t, 3)),
                   st.sampled_from(["kill leader m1", "isolate leader m2", "pause leader m3", "heal", "repair"]))


@settings(max_examples=150, deadline=None)
@given(events=st.lists(_EVENT, max_size=12), end_s=st.none() | st.floats(0, 40, allow_nan=False))
def test_fault_spans_cover_every_fault_and_never_run_backwards(events, end_s):
    spans = fault_spans(events, end_s=end_s)
    assert len(spans) == sum(1 for _, what in events if what not in REPAIR_EVENTS)
    assert all(s.start_s <= s.end_s for s in spans)
    assert [s.start_s for s in spans] == sorted(s.start_s for s in spans)
    repairs = {t for t, what in events if what in REPAIR_EVENTS}
    last_s = end_s if end_s is not None else max((t for t, _ in events), default=0.0)
    for s in spans:
        # It ends at a repair, or (never repaired) at the end of the run; no repair falls inside it.
        assert s.end_s in repairs or s.end_s == max(s.start_s, last_s)
        assert not any(s.start_s < r < s.end_s for r in repairs)


def test_member_series_breaks_where_a_member_did_not_answer():
    samples = [(0.0, "m1", 2, "leader", 5), (0.0, "m2", 2, "follower", 5),
               (0.1, "m2", 2, "candidate", 5),  # m1 killed: no row in this round
               (0.2, "m1", 3, "follower", 6), (0.2, "m2", 3, "leader", 7)]
    series = member_series(samples)
    assert list(series) == ["m1", "m2"]
    m1 = series["m1"]
    assert m1.times_s == (0.0, 0.1, 0.2)
    assert m1.terms[0] == 2 and math.isnan(m1.terms[1]) and m1.terms[2] == 3
    assert m1.roles == ("leader", None, "follower")
    assert math.isnan(m1.commits[1]) and m1.commits[2] == 6
    assert series["m2"].commits == (5, 5, 7)
    with pytest.raises(TypeError):
        series["m3"] = m1  # read-only view


def test_leader_spans_merge_consecutive_rounds_of_one_term():
    samples = [(0.0, "m1", 2, "leader", 1), (0.1, "m1", 2, "leader", 2), (0.2, "m1", 2, "follower", 2),
               (0.2, "m2", 3, "leader", 2), (0.3, "m2", 3, "leader", 3), (0.3, "m1", 3, "follower", 3),
               (0.4, "m2", 4, "leader", 4)]
    spans = leader_spans(samples)
    assert [(s.member, s.term, s.start_s, s.end_s) for s in spans] == [("m1", 2, 0.0, 0.2), ("m2", 3, 0.2, 0.4),
                                                                      ("m2", 4, 0.4, 0.4)]
    assert leader_spans([]) == ()


# --- the command's paths, with a stand-in cluster and workload -------------------------------


class _FakeCluster:
    """Records what the CLI does to a cluster; ``fail_leader`` makes the election wait fail."""

    launched: list = []

    def __init__(self, members, root, fail_leader):
        self.members, self.root, self.fail_leader = members, root, fail_leader
        self.shutdowns: list = []
        self.group = type("Group", (), {"name": "raftkv-fake"})()

    def leader(self):
        if self.fail_leader:
            raise RuntimeError("no leader in this fake")
        return "m1"

    def shutdown(self, *, destroy_data=False):
        self.shutdowns.append(destroy_data)


@pytest.fixture
def fake_run(monkeypatch):
    """Patch Ray, the cluster and the workload; returns a dict the test fills and reads."""
    import ddia_ray.kv.cluster as cluster_module
    import ddia_ray.kv.workload as workload_module
    import ddia_ray.runtime as runtime_module

    state = {"clusters": [], "workload_calls": [], "outcome": _report(), "fail_leader": False}

    class _Launcher:
        @staticmethod
        def launch(members, *, root=None, tick_s=0.01, seed=0):
            cluster = _FakeCluster(members, root, state["fail_leader"])
            cluster.launch_args = {"tick_s": tick_s, "seed": seed}
            if not state.get("root_given"):
                assert os.path.isdir(root[len("file://"):])  # the temporary directory exists during the run
            state["clusters"].append(cluster)
            return cluster

    def fake_workload(cluster, **kwargs):
        state["workload_calls"].append(kwargs)
        for t_s in (0.5, 1.0):
            kwargs["progress"](t_s, int(t_s * 10))
        if isinstance(state["outcome"], BaseException):
            raise state["outcome"]
        return state["outcome"]

    monkeypatch.setattr(runtime_module, "ensure_ray", lambda: None)
    monkeypatch.setattr(cluster_module, "RaftKV", _Launcher)
    monkeypatch.setattr(workload_module, "run_workload", fake_workload)
    return state


@pytest.mark.parametrize("progress", [True, False])
def test_cli_forwards_the_arguments_and_cleans_up(fake_run, capsys, progress):
    argv = ["raft", "--members", "5", "--clients", "2", "--keys", "7", "--duration-s", "3", "--schedule",
            "kill-follower", "--seed", "9", "--tick-s", "0.05"] + ([] if progress else ["--no-progress"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "linearizable: yes"
    (cluster,) = fake_run["clusters"]
    assert cluster.members == 5 and cluster.launch_args == {"tick_s": 0.05, "seed": 9}
    (call,) = fake_run["workload_calls"]
    assert {k: call[k] for k in ("clients", "keys", "duration_s", "schedule", "seed")} == \
        {"clients": 2, "keys": 7, "duration_s": 3.0, "schedule": "kill-follower", "seed": 9}
    # A temporary root is destroyed with the cluster and then removed.
    assert cluster.shutdowns == [True]
    assert not os.path.exists(cluster.root[len("file://"):])


@pytest.mark.parametrize("verdict, status", [(False, 1), (None, 2)])
def test_cli_exit_status_follows_the_verdict(fake_run, capsys, verdict, status):
    fake_run["outcome"] = _report(linearizable=verdict)
    assert main(["raft", "--no-progress"]) == status
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == verdict_line(fake_run["outcome"])
    assert fake_run["clusters"][0].shutdowns == [True]


@pytest.mark.parametrize("where", ["workload", "leader"])
def test_cli_shuts_down_and_says_unknown_when_the_run_breaks(fake_run, capsys, where):
    if where == "workload":
        fake_run["outcome"] = RuntimeError("the nemesis tripped")
    else:
        fake_run["fail_leader"] = True
    assert main(["raft", "--no-progress"]) == kv_report.VERDICTS[None][1]
    captured = capsys.readouterr()
    assert captured.out.rstrip().splitlines()[-1] == "linearizable: unknown"
    assert ("the nemesis tripped" if where == "workload" else "no leader in this fake") in captured.err
    cluster = fake_run["clusters"][0]
    assert cluster.shutdowns == [True]
    assert not os.path.exists(cluster.root[len("file://"):])


def test_cli_keeps_the_data_under_a_root_the_user_gave(fake_run, tmp_path, capsys):
    fake_run["root_given"] = True
    (tmp_path / "logs").mkdir()
    root = f"file://{tmp_path / 'logs'}"
    assert main(["raft", "--no-progress", "--root", root]) == 0
    cluster = fake_run["clusters"][0]
    assert cluster.root == root and cluster.shutdowns == [False]
    assert (tmp_path / "logs").is_dir()


# --- the real thing -----------------------------------------------------------------------


@pytest.mark.ray
def test_raft_run_survives_a_killed_leader_and_is_linearizable(ray_session, capsys):
    code = main(["raft", "--duration-s", "5", "--schedule", "kill-leader", "--seed", "1"])
    out = capsys.readouterr().out
    lines = out.rstrip().splitlines()
    assert lines[-1] == "linearizable: yes", out[-3000:]
    assert code == 0
    elections = re.search(r"^\s*elections seen\s+(\d+)$", out, re.MULTILINE)
    assert elections and int(elections.group(1)) >= 1, out[-3000:]
    leaders = re.findall(r"^\s*term (\d+)\s+leader (m\d)$", out, re.MULTILINE)
    assert len(leaders) == int(elections.group(1))
    assert re.search(r"\d+\.\d\d s\s+kill leader m\d", out), out[-3000:]
    ops = re.search(r"operations\s+(\d+) \(ok (\d+), failed (\d+), unknown (\d+)\)", out)
    assert ops and int(ops.group(2)) > 0 and sum(map(int, ops.groups()[1:])) == int(ops.group(1))
    assert re.search(r"latency ms\s+p50 [\d.]+\s+p95 [\d.]+\s+p99 [\d.]+\s+max [\d.]+", out)
    # The temporary root is gone (the header names it).
    root = re.search(r"logs under file://(\S+)", out).group(1)
    assert not Path(root).exists()
