"""An event-store workload run as data: the report, the checkers' verdicts, the summary and plot series.

Theory of operation: :func:`~.workload.run_workload` does the I/O (threads, faults, reading
every event back) and fills an :class:`EventsReport` of plain data. Everything here is a pure
function: :func:`judge` gives the verdicts from what was read (every event of ``$all``, the
projection's rows and checkpoint, the group's info, what the consumers handled and the ids of the
acknowledged appends), and the rest turns a report into text and series, so the command line, the
Ray job and the notebook show the same figures and a unit test can make any verdict fail.

:func:`summary_lines` ends with one line per checker (``events lost: 0``, ``$all gap-free: yes``,
``projection: ok``, ``consumer group billing: ok``) and then :func:`verdict_line`, exactly
``events: ok`` or ``events: FAILED``, so a script can ``tail -n 1`` a run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .domain import ORDER_LIFECYCLE
from .records import RecordedEvent

__all__ = ["EventsReport", "judge", "fold_orders", "status_after", "summary_lines", "verdict_line",
           "verdict_lines", "lag_series", "append_rate", "max_lags", "GROUP", "PAID_TYPE"]

#: The consumer group the workload creates (only ``OrderPaid`` events).
GROUP = "billing"
#: The event type the group takes (the tag of :class:`~.domain.OrderPaid`).
PAID_TYPE = "seed.order_paid"


@dataclass
class EventsReport:
    """What a workload run did and what the checkers said (see the module docstring)."""

    schedule: str
    duration_s: float
    clients: int
    elapsed_s: float = 0.0
    commands_ok: int = 0
    commands_by_kind: dict = field(default_factory=dict)
    commands_unknown: int = 0  # retries spent with the outcome unknown (a timeout): maybe written
    commands_failed: int = 0  # refused or failed before anything was written
    command_latency_ms: dict = field(default_factory=dict)
    events_acked: int = 0
    conflicts: int = 0
    retries: int = 0
    resends: int = 0
    snapshots: int = 0
    faults: list = field(default_factory=list)  # (t, what)
    # (t, end of $all, projection lag events, its lag s, group lag events, its lag s)
    samples: list = field(default_factory=list)
    projection_restarts: int = 0
    consumer_restarts: int = 0
    redeliveries: int = 0
    handler_failures: int = 0  # deliveries the handler failed on purpose (nacked for a retry)
    group: dict = field(default_factory=dict)  # the group's final info()
    events_total: int = 0
    lost: list = field(default_factory=list)  # acknowledged event ids missing from $all
    misplaced: list = field(default_factory=list)  # acknowledged ids found in another stream
    gap_free: bool | None = None
    gaps: str = ""
    projection_ok: bool | None = None
    projection: str = ""
    group_ok: bool | None = None
    group_verdict: str = ""

    @property
    def appends_per_s(self) -> float:
        """Acknowledged events per second of workload."""
        return self.events_acked / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def commands_per_s(self) -> float:
        """Commands that returned per second of workload."""
        return self.commands_ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def ok(self) -> bool:
        """Every verdict passed (a verdict never reached counts as failed)."""
        return (not self.lost and not self.misplaced and self.gap_free is True and self.projection_ok is True
                and self.group_ok is True)


def status_after(event: RecordedEvent) -> str | None:
    """The status an order event moves its order to (None for an event that is no order event)."""
    row = ORDER_LIFECYCLE.get(type(event.decode()))
    return None if row is None else row[1]


def fold_orders(events: Iterable[RecordedEvent]) -> dict[bytes, bytes]:
    """The read model the workload's projection should hold after ``events``, computed from scratch
    without its code: each order's last status (``o:<order>``), then a count per status (``s:<status>``)."""
    status: dict[str, str] = {}
    for e in events:
        if e.stream.startswith("order-"):
            new = status_after(e)
            if new is not None:
                status[e.stream] = new
    model = {b"o:" + s.encode(): v.encode() for s, v in status.items()}
    model.update({b"s:" + k.encode(): b"%d" % n for k, n in Counter(status.values()).items()})
    return model


def judge(report: "EventsReport", events: list, acked: list, model: dict, projection_checkpoint: int,
          group: dict, seen: dict) -> None:
    """Fill ``report``'s verdicts (see :mod:`.workload`) from every event of ``$all`` in order,
    ``acked`` ``(stream, event id)`` pairs, the projection's rows and checkpoint, the group's
    ``info()`` and ``seen`` (deliveries per position)."""
    report.events_total = n = len(events)
    where = {e.id: e.stream for e in events}
    report.lost = [i for _, i in acked if i not in where]
    report.misplaced = [i for s, i in acked if i in where and where[i] != s]
    positions = [e.position for e in events]
    versions: dict[str, list] = {}
    for e in events:
        versions.setdefault(e.stream, []).append(e.version)
    bad_streams = [s for s, v in versions.items() if v != list(range(len(v)))]
    twice = n - len(where)
    report.gap_free = positions == list(range(n)) and not bad_streams and not twice
    report.gaps = (f"positions 0..{n - 1}" if positions == list(range(n))
                   else f"positions are not 0..{n - 1}: e.g. {_first_gap(positions)}")
    report.gaps += (f", {len(versions)} streams' versions contiguous" if not bad_streams
                    else f", streams with version gaps: {bad_streams[:3]}")
    report.gaps += ", no id twice" if not twice else f", {twice} event ids appear twice"

    expected = fold_orders(events)
    diff = sorted(k for k in set(model) | set(expected) if model.get(k) != expected.get(k))
    report.projection_ok = not diff and projection_checkpoint == n
    counts = {k[2:].decode(): int(v) for k, v in sorted(expected.items()) if k.startswith(b"s:")}
    report.projection = (f"{'equals' if not diff else 'DIFFERS FROM'} a fold from scratch ({len(expected)} rows; "
                         f"{counts})" + (f", e.g. {diff[:3]}" if diff else "")
                         + f"; checkpoint {projection_checkpoint} of {n}")

    report.group = dict(group)
    paid = [e.position for e in events if e.type == PAID_TYPE]
    unhandled = [p for p in paid if not seen.get(p)]
    stray = sorted(set(seen) - set(paid))
    report.group_ok = (not unhandled and not stray and group["parked"] == 0 and group["in_flight"] == 0
                       and group["checkpoint"] == n and group["acked"] >= len(paid))
    report.group_verdict = (f"{len(paid) - len(unhandled)} of {len(paid)} OrderPaid events handled, "
                            f"{group['acked']} acks, parked {group['parked']}, in flight {group['in_flight']}, "
                            f"checkpoint {group['checkpoint']} of {n}"
                            + (f"; never handled e.g. {unhandled[:5]}" if unhandled else "")
                            + (f"; handed out but no OrderPaid: {stray[:5]}" if stray else ""))


def _first_gap(positions: list) -> str:
    for i, p in enumerate(positions):
        if p != i:
            return f"{p} at index {i}"
    return f"{len(positions)} events"


def verdict_line(report) -> str:
    """``events: ok`` or ``events: FAILED`` (every checker of :func:`verdict_lines` passed, or not)."""
    return f"events: {'ok' if report.ok else 'FAILED'}"


def _word(ok: bool | None) -> str:
    return "ok" if ok else ("not checked" if ok is None else "FAILED")


def verdict_lines(report) -> list:
    """One line per checker: lost events, ``$all``'s gaps, the projection, the consumer group."""
    lost = len(report.lost) + len(report.misplaced)
    line = f"events lost: {lost} (of {report.events_acked} acknowledged)"
    if report.lost:
        line += f", missing e.g. {report.lost[:3]}"
    if report.misplaced:
        line += f", in another stream e.g. {report.misplaced[:3]}"
    gap = "yes" if report.gap_free else ("not checked" if report.gap_free is None else "NO")
    return [line, f"$all gap-free: {gap} ({report.gaps})",
            f"projection: {_word(report.projection_ok)} ({report.projection})",
            f"consumer group {GROUP}: {_word(report.group_ok)} ({report.group_verdict})"]


def lag_series(report) -> dict:
    """Series for plots: ``t``, ``events`` (the end of ``$all``), ``projection_events``,
    ``projection_s``, ``group_events``, ``group_s``, one value per sample."""
    names = ("t", "events", "projection_events", "projection_s", "group_events", "group_s")
    return {name: [s[i] for s in report.samples] for i, name in enumerate(names)}


def append_rate(report) -> tuple[list, list]:
    """``(times, events appended per second)`` between consecutive samples."""
    times, rates = [], []
    for (t0, e0, *_), (t1, e1, *_) in zip(report.samples, report.samples[1:]):
        if t1 > t0:
            times.append(t1)
            rates.append((e1 - e0) / (t1 - t0))
    return times, rates


def max_lags(report) -> dict:
    """The largest lag seen, in events and seconds, of the projection and of the group."""
    s = lag_series(report)
    return {k: max(s[k], default=0) for k in ("projection_events", "projection_s", "group_events", "group_s")}


def summary_lines(report) -> list:
    """The text summary of ``report``; it ends with :func:`verdict_lines` and :func:`verdict_line`."""
    kinds = ", ".join(f"{k} {n}" for k, n in report.commands_by_kind.items())
    lat = report.command_latency_ms
    lat_text = f"; latency ms p50 {lat['p50']} p99 {lat['p99']} max {lat['max']}" if lat else ""
    lags = max_lags(report)
    g = report.group
    lines = [f"{report.clients} clients, schedule {report.schedule}, {report.duration_s:g} s",
             f"  commands: {report.commands_ok} returned ({kinds or 'none'}), {report.commands_unknown} with an "
             f"unknown outcome, {report.commands_failed} failed; {report.commands_per_s:,.1f} commands/s{lat_text}",
             f"  appends: {report.events_acked} events acknowledged, {report.appends_per_s:,.1f} appends/s (events); "
             f"{report.events_total} events in $all",
             f"  conflicts retried: {report.retries} (of {report.conflicts} expected-version conflicts), "
             f"{report.resends} appends resent after an unknown outcome, {report.snapshots} snapshots",
             f"  projection lag: max {lags['projection_events']} events, {lags['projection_s']:.2f} s "
             f"({report.projection_restarts} restarts from its checkpoint)",
             f"  subscription lag ({GROUP}): max {lags['group_events']} events, {lags['group_s']:.2f} s; "
             f"redeliveries {report.redeliveries} ({report.handler_failures} handler failures nacked; delivered "
             f"{g.get('delivered', 0)}, timed out {g.get('timed_out', 0)}, retried {g.get('retried', 0)}; "
             f"{report.consumer_restarts} consumer restarts)",
             f"  faults injected: {sum(1 for _, what in report.faults if what != 'repair')}"]
    lines += [f"    {t:7.2f} s  {what}" for t, what in report.faults]
    return lines + verdict_lines(report) + [verdict_line(report)]
