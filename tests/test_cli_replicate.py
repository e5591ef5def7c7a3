"""``ddia-ray replicate``: its arguments, its summary (ddia_ray.replication.report), and one real run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddia_ray.cli import build_parser, main
from ddia_ray.replication.report import failover_timeline, lag_series, summary_lines, verdict_line
from ddia_ray.replication.workload import ReplicationReport


def test_replicate_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "replicate", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--mode", "--sync-replicas", "--replicas", "--engine", "--read", "--clients", "--keys",
                   "--duration-s", "--schedule", "--lease-s", "--seed", "--root", "--no-progress", "--protocol"):
        assert option in out


@pytest.mark.parametrize("argv", [["--mode", "eventual"], ["--engine", "sqlite"], ["--read", "any"],
                                  ["--replicas", "0"], ["--duration-s", "-1"], ["--schedule", "chaos"],
                                  ["--protocol", "paxos"]])
def test_bad_replicate_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["replicate", *argv])
    assert e.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_a_semi_sync_count_past_the_followers_fails_before_ray_starts(capsys):
    """The store would refuse it too, but only after Ray started (this test may not start Ray)."""
    from ddia_ray.cli import main

    assert main(["replicate", "--replicas", "3", "--mode", "semi-sync", "--sync-replicas", "3", "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "semi-sync needs 1 <= sync_replicas <= 2 followers, got 3" in out and out.rstrip().endswith("FAILED")


def _report(**kw) -> ReplicationReport:
    r = ReplicationReport("async", "session", "kill-leader", 5.0, writes_ok=100, reads_ok=40, unknown=2,
                          throughput_ops_s=28.0, write_latency_ms={"p50": 3.0, "p95": 9.0, "p99": 20.0, "max": 40.0},
                          faults=[(1.0, "kill leader r1"), (2.5, "repair")],
                          failovers=[(0.0, 1, "r1"), (1.9, 2, "r2")],
                          lag=[(0.5, "r2", 3), (0.6, "r2", 5), (0.5, "r3", 0), (2.0, "r1", 7)],
                          durability_ok=True, durability="0 of 60 acknowledged writes missing", sessions_ok=True,
                          sessions="session guarantees hold")
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_summary_shows_lag_failovers_faults_and_ends_with_the_verdict():
    lines = summary_lines(_report())
    text = "\n".join(lines)
    assert "100 writes and 40 reads" in text and "p50 3.0" in text and "reads: none completed" in text
    assert "failovers: 1 (epochs 1:r1@0.0s, 2:r2@1.9s)" in text
    assert "r2 max 5 mean 4.0" in text and "kill leader r1" in text
    assert lines[-1] == "replication: ok"


@pytest.mark.parametrize("durability,sessions,read,word", [
    (True, True, "session", "ok"), (False, True, "session", "FAILED"), (True, False, "session", "FAILED"),
    (True, False, "follower", "ok"), (None, True, "session", "FAILED")])
def test_verdict_needs_durability_and_the_promised_sessions(durability, sessions, read, word):
    assert verdict_line(_report(durability_ok=durability, sessions_ok=sessions, read=read)) == f"replication: {word}"


def test_plot_series():
    series = lag_series(_report())
    assert series["r2"] == ([0.5, 0.6], [3, 5]) and set(series) == {"r1", "r2", "r3"}
    assert failover_timeline(_report()) == [(0.0, "epoch 1: r1 leads"), (1.0, "kill leader r1"),
                                            (1.9, "epoch 2: r2 leads"), (2.5, "repair")]


@pytest.mark.ray
def test_a_real_run_ends_ok(ray_session, capsys, tmp_path):
    status = main(["replicate", "--mode", "semi-sync", "--engine", "lsm", "--duration-s", "5", "--schedule",
                   "kill-leader", "--lease-s", "0.6", "--clients", "2", "--no-progress",
                   "--root", f"file://{tmp_path}"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.rstrip().splitlines()[-1] == "replication: ok"
    assert "kill leader" in out and "durability: 0 of" in out
