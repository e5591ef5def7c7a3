"""Reading a RaftKV workload run: the summary people read, the verdict line scripts read, plot series.

Theory of operation
-------------------
:func:`~.workload.run_workload` returns a :class:`~.workload.WorkloadReport`
of plain data; everything here is a pure function of it (no Ray, no clock),
so the command line, the Ray job and the notebook show the same figures and
tests can check them without a cluster.

* :func:`summary_lines` is the text summary: operations, throughput, latency
  percentiles, the elections seen (term and leader), the faults with their
  times, and the checker's report. Its last line is :func:`verdict_line`,
  exactly ``linearizable: yes`` / ``linearizable: NO`` /
  ``linearizable: unknown``, so a script can ``tail -n 1`` a run (Jepsen's
  habit of ending with the verdict); :func:`exit_status` maps the same
  verdict to a process exit code through one table, :data:`VERDICTS`.
* :func:`member_series` turns the sampler's rows into one series per member
  for plotting, with a NaN where a member did not answer a sampling round
  (killed, or restarting), so a plotted line breaks instead of drawing a
  straight segment across the outage.
* :func:`leader_spans` and :func:`fault_spans` give the intervals to shade:
  who led when, and each fault from the moment it was applied to its repair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import InvalidArgumentError

__all__ = ["VERDICTS", "REPAIR_EVENTS", "verdict_line", "exit_status", "summary_lines", "MemberSeries",
           "member_series", "LeaderSpan", "leader_spans", "FaultSpan", "fault_spans"]

#: The checker's answer -> (word on the last line, process exit status). ``None`` means the check gave up.
VERDICTS: Mapping = MappingProxyType({True: ("yes", 0), False: ("NO", 1), None: ("unknown", 2)})

#: Nemesis log entries that end a fault (the workload notes ``repair`` and then ``heal``).
REPAIR_EVENTS = frozenset({"heal", "repair"})

_LEADER = "leader"


def _verdict(linearizable) -> tuple:
    # `True == 1` would let a stray 1 through a plain dict lookup; only the three real answers count.
    if linearizable is not None and type(linearizable) is not bool:
        raise InvalidArgumentError(f"linearizable must be True, False or None, got {linearizable!r}")
    return VERDICTS[linearizable]


def verdict_line(report) -> str:
    """``linearizable: yes`` / ``linearizable: NO`` / ``linearizable: unknown`` for ``report.linearizable``."""
    return f"linearizable: {_verdict(report.linearizable)[0]}"


def exit_status(report) -> int:
    """The process exit status for ``report``: 0 only for a linearizable history (1: violation, 2: unknown)."""
    return _verdict(report.linearizable)[1]


def _fmt_s(t_s: float) -> str:
    return f"{t_s:7.2f} s"


def summary_lines(report) -> tuple:
    """The human summary of ``report`` as lines of text; the last one is :func:`verdict_line`."""
    latency = report.latency_ms
    lines = [
        f"RaftKV workload: schedule {report.schedule}, {report.duration_s:g} s",
        f"  operations      {report.ops} (ok {report.ok}, failed {report.failed}, unknown {report.unknown})",
        f"  throughput      {report.throughput_ops_s:.1f} ok ops/s",
        "  latency ms      " + ("  ".join(f"{q} {latency[q]:.2f}" for q in ("p50", "p95", "p99", "max") if q in latency)
                                or "n/a (no operation succeeded)"),
        f"  elections seen  {report.elections}",
    ]
    lines.extend(f"    term {term:<4} leader {leader}" for term, leader in report.terms)
    lines.append(f"  faults          {sum(1 for _, what in report.faults if what not in REPAIR_EVENTS)}")
    lines.extend(f"    {_fmt_s(t_s)}  {what}" for t_s, what in report.faults)
    verdict = report.verdict.splitlines() or ["(no checker report)"]
    lines.append(f"  checker         {verdict[0]}")
    # A counterexample spans many lines; keep them under the heading so the verdict stays last.
    lines.extend(f"                  {more}" for more in verdict[1:])
    lines.append(verdict_line(report))
    return tuple(lines)


@dataclass(frozen=True, slots=True)
class MemberSeries:
    """One member's samples over time; where it did not answer a round, term and commit are NaN, role None."""

    times_s: tuple
    terms: tuple
    commits: tuple
    roles: tuple


def member_series(samples) -> Mapping:
    """Group ``(t_s, member, term, role, commit)`` rows per member, aligned on every sampling round.

    All members of one round share its ``t_s`` (the workload stamps a round
    once), so a round time without a row for a member means that member did
    not answer: it gets NaN there, which breaks a plotted line.
    """
    rounds = sorted({row[0] for row in samples})
    by_member: dict = {}
    for t_s, member, term, role, commit in samples:
        by_member.setdefault(member, {})[t_s] = (term, role, commit)
    out = {}
    for member in sorted(by_member):
        seen = by_member[member]
        rows = [seen.get(t_s, (math.nan, None, math.nan)) for t_s in rounds]
        out[member] = MemberSeries(times_s=tuple(rounds), terms=tuple(r[0] for r in rows),
                                   roles=tuple(r[1] for r in rows), commits=tuple(r[2] for r in rows))
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class LeaderSpan:
    """``member`` was seen leading ``term`` from ``start_s`` until the next round at ``end_s``."""

    member: str
    term: int
    start_s: float
    end_s: float


def leader_spans(samples) -> tuple:
    """Intervals during which a member reported itself leader, in order of start time.

    A span runs from the first round a member says "leader" (for one term) to
    the round after the last one, so back-to-back spans touch. Two members
    can overlap: a deposed leader that has not heard of the new term yet
    still says "leader" (Raft allows it; its writes cannot commit).
    """
    rounds = sorted({row[0] for row in samples})
    following = dict(zip(rounds, rounds[1:]))
    leading = sorted((row[1], row[0], row[2]) for row in samples if row[3] == _LEADER)
    spans: list = []
    for member, t_s, term in leading:
        end_s = following.get(t_s, t_s)
        last = spans[-1] if spans else None
        if last is not None and last.member == member and last.term == term and last.end_s == t_s:
            spans[-1] = LeaderSpan(member, term, last.start_s, end_s)
        else:
            spans.append(LeaderSpan(member, term, t_s, end_s))
    return tuple(sorted(spans, key=lambda s: (s.start_s, s.member)))


@dataclass(frozen=True, slots=True)
class FaultSpan:
    """A fault from when the nemesis applied it (``start_s``) to its repair (``end_s``)."""

    label: str
    start_s: float
    end_s: float


def fault_spans(faults, *, end_s: float | None = None) -> tuple:
    """Pair each fault in the nemesis log with the next repair; an unrepaired one lasts until ``end_s``.

    ``end_s`` defaults to the last time in the log. Repair entries
    (:data:`REPAIR_EVENTS`) are not faults themselves.
    """
    events = sorted(faults, key=lambda e: e[0])
    stop_s = end_s if end_s is not None else (events[-1][0] if events else 0.0)
    spans: list[FaultSpan] = []
    open_faults: list = []
    for t_s, what in events:
        if what in REPAIR_EVENTS:
            spans.extend(FaultSpan(label, start_s, t_s) for start_s, label in open_faults)
            open_faults.clear()
        else:
            open_faults.append((t_s, what))
    spans.extend(FaultSpan(label, start_s, max(start_s, stop_s)) for start_s, label in open_faults)
    return tuple(sorted(spans, key=lambda s: (s.start_s, s.label)))
