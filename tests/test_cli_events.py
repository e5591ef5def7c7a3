"""``ddia-ray events``: its arguments, its verdicts and summary (ddia_ray.events.report), and one real run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddia_ray.cli import build_parser, main
from ddia_ray.events.domain import OrderLineAdded, OrderPaid, OrderPlaced, OrderShipped
from ddia_ray.events.records import RecordedEvent, event_data
from ddia_ray.events.report import (EventsReport, append_rate, fold_orders, judge, lag_series, max_lags,
                                    summary_lines, verdict_line)


def test_events_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "events", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--replicas", "--engine", "--clients", "--orders", "--duration-s", "--schedule", "--faults",
                   "--no-faults", "--seed", "--root", "--no-progress"):
        assert option in out


@pytest.mark.parametrize("argv", [["--engine", "sqlite"], ["--replicas", "0"], ["--duration-s", "-1"],
                                  ["--schedule", "chaos"], ["--schedule", "replace-follower"], ["--clients", "x"]])
def test_bad_events_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["events", *argv])
    assert e.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_no_faults_turns_the_schedule_off():
    args = build_parser().parse_args(["events", "--no-faults"])
    assert args.faults is False and args.schedule == "cycle"


# --- the verdicts, on a hand-made history ----------------------------------------------------------

_PAID = "seed.order_paid"


def _events() -> list[RecordedEvent]:
    """Two orders: order-a placed, a line, paid, shipped; order-b placed, a line (positions 0..5)."""
    script = [("order-a", OrderPlaced("u1")), ("order-a", OrderLineAdded("book", 1, 100)),
              ("order-b", OrderPlaced("u2")), ("order-a", OrderPaid(100)), ("order-b", OrderLineAdded("pen", 2, 5)),
              ("order-a", OrderShipped("t1"))]
    versions: dict[str, int] = {}
    out = []
    for position, (stream, event) in enumerate(script):
        d = event_data(event, event_id=f"id{position}")
        versions[stream] = versions.get(stream, -1) + 1
        out.append(RecordedEvent(stream, versions[stream], position, d.id, d.type, d.data, b"", 1000 + position))
    return out


def _judged(events=None, acked=None, model=None, checkpoint=None, group=None, seen=None) -> EventsReport:
    events = _events() if events is None else events
    report = EventsReport("cycle", 5.0, 2, elapsed_s=5.0, commands_ok=6, events_acked=6,
                          commands_by_kind={"place": 2, "add_line": 2, "pay": 1, "ship": 1},
                          samples=[(0.0, 0, 0, 0.0, 0, 0.0), (1.0, 4, 3, 0.5, 1, 0.2), (2.0, 6, 0, 0.0, 0, 0.0)],
                          faults=[(1.0, "kill leader r1"), (2.5, "repair")])
    n = len(events)
    group = {"parked": 0, "in_flight": 0, "checkpoint": n, "acked": 1, "delivered": 2, "retried": 1,
             "timed_out": 0, **(group or {})}
    judge(report, events, [(e.stream, e.id) for e in _events()] if acked is None else acked,
          fold_orders(events) if model is None else model, n if checkpoint is None else checkpoint, group,
          {3: 2} if seen is None else seen)
    return report


def test_a_clean_history_passes_every_checker():
    lines = summary_lines(_judged())
    text = "\n".join(lines)
    assert lines[-5:] == [
        "events lost: 0 (of 6 acknowledged)",
        "$all gap-free: yes (positions 0..5, 2 streams' versions contiguous, no id twice)",
        "projection: ok (equals a fold from scratch (4 rows; {'open': 1, 'shipped': 1}); checkpoint 6 of 6)",
        "consumer group billing: ok (1 of 1 OrderPaid events handled, 1 acks, parked 0, in flight 0, "
        "checkpoint 6 of 6)",
        "events: ok"]
    assert "1.2 appends/s (events)" in text and "faults injected: 1" in text and "kill leader r1" in text
    assert "projection lag: max 3 events, 0.50 s" in text and "subscription lag (billing): max 1 events" in text


def test_fold_from_scratch_counts_orders_per_last_status():
    assert fold_orders(_events()) == {b"o:order-a": b"shipped", b"o:order-b": b"open", b"s:shipped": b"1",
                                      b"s:open": b"1"}


@pytest.mark.parametrize("change,line", [
    (dict(events=_events()[:-1]), "events lost: 1 (of 6 acknowledged), missing e.g. ['id5']"),
    (dict(acked=[("order-b", "id0")]), "events lost: 1 (of 6 acknowledged), in another stream e.g. ['id0']"),
    (dict(events=[e for e in _events() if e.position != 2] + [_events()[2]]), "$all gap-free: NO"),
    (dict(events=_events() + [_events()[0]]), "$all gap-free: NO"),
    (dict(model={**fold_orders(_events()), b"s:open": b"2"}), "projection: FAILED (DIFFERS FROM"),
    (dict(checkpoint=5), "projection: FAILED"),
    (dict(seen={}), "consumer group billing: FAILED (0 of 1 OrderPaid events handled"),
    (dict(seen={3: 1, 4: 1}), "consumer group billing: FAILED"),
    (dict(group={"parked": 1}), "consumer group billing: FAILED"),
    (dict(group={"in_flight": 1}), "consumer group billing: FAILED"),
    (dict(group={"checkpoint": 4}), "consumer group billing: FAILED"),
])
def test_each_checker_can_fail(change, line):
    report = _judged(**change)
    lines = summary_lines(report)
    assert any(x.startswith(line) for x in lines), "\n".join(lines)
    assert not report.ok and lines[-1] == verdict_line(report) == "events: FAILED"


def test_an_unchecked_report_fails():
    report = EventsReport("cycle", 5.0, 2)
    assert not report.ok and verdict_line(report) == "events: FAILED"
    assert "projection: not checked" in "\n".join(summary_lines(report))


def test_plot_series():
    report = _judged()
    assert lag_series(report)["projection_events"] == [0, 3, 0]
    assert append_rate(report) == ([1.0, 2.0], [4.0, 2.0])
    assert max_lags(report) == {"projection_events": 3, "projection_s": 0.5, "group_events": 1, "group_s": 0.2}


# --- a real run --------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_real_run_under_faults_ends_ok(ray_session, capsys, tmp_path):
    status = main(["events", "--duration-s", "8", "--clients", "3", "--root", f"file://{tmp_path}"])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.rstrip().splitlines()
    assert lines[-1] == "events: ok"
    assert lines[-5].startswith("events lost: 0 (of ") and lines[-4].startswith("$all gap-free: yes")
    assert lines[-3].startswith("projection: ok") and lines[-2].startswith("consumer group billing: ok")
    assert "kill leader" in out and "appends/s (events)" in out and "billing lag" in out  # faults and progress
