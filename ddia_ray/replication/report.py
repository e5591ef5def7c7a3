"""Reading a replication workload run: the summary people read, the verdict line, plot series.

Theory of operation: :func:`~.workload.run_workload` returns a
:class:`~.workload.ReplicationReport` of plain data; everything here is a pure
function of it, so the command line, the Ray job and the notebook show the same
figures. :func:`summary_lines` ends with :func:`verdict_line`, exactly
``replication: ok`` or ``replication: FAILED``, so a script can ``tail -n 1``
a run. :func:`lag_series` gives one series of (time, entries behind) per
follower for plotting lag; :func:`failover_timeline` the epochs with their
leaders and the faults around them.
"""

from __future__ import annotations

__all__ = ["summary_lines", "verdict_line", "lag_series", "failover_timeline"]


def verdict_line(report) -> str:
    """``replication: ok`` or ``replication: FAILED`` (durability and, where promised, sessions)."""
    return f"replication: {'ok' if report.ok else 'FAILED'}"


def lag_series(report) -> dict:
    """Per follower: ``(times, entries behind the leader)`` from the sampler, in time order."""
    out: dict = {}
    for t, follower, behind in report.lag:
        times, values = out.setdefault(follower, ([], []))
        times.append(t)
        values.append(behind)
    return out


def failover_timeline(report) -> list:
    """``(seconds, event)`` rows: each fault and repair, and each epoch's leader, in time order."""
    rows = [(t, what) for t, what in report.faults]
    rows += [(t, f"epoch {epoch}: {leader} leads") for t, epoch, leader in report.failovers]
    return sorted(rows)


def _lat(name: str, p: dict) -> str:
    if not p:
        return f"  {name}: none completed"
    return f"  {name} ms: p50 {p['p50']}  p95 {p['p95']}  p99 {p['p99']}  max {p['max']}"


def summary_lines(report) -> list:
    """The text summary of ``report``; the last line is :func:`verdict_line`."""
    lines = [f"mode {report.mode}, reads {report.read}, schedule {report.schedule}, {report.duration_s:g} s",
             f"  operations: {report.writes_ok} writes and {report.reads_ok} reads acknowledged, "
             f"{report.unknown} with an unknown outcome; {report.throughput_ops_s:,.1f} ops/s",
             _lat("writes", report.write_latency_ms), _lat("reads", report.read_latency_ms)]
    series = lag_series(report)
    if series:
        lags = [f"{f} max {max(v)} mean {sum(v) / len(v):.1f}" for f, (_, v) in sorted(series.items())]
        lines.append("  replication lag (entries behind the leader): " + ", ".join(lags))
    lines.append(f"  failovers: {max(0, len(report.failovers) - 1)} (epochs "
                 + ", ".join(f"{e}:{leader}@{t:.1f}s" for t, e, leader in report.failovers) + ")")
    for t, what in report.faults:
        lines.append(f"    {t:7.2f} s  {what}")
    lines.append(f"  durability: {report.durability}")
    if report.missing:
        lines.append("    missing, e.g. " + ", ".join(k.decode(errors='replace') for k in report.missing[:5]))
    note = " (follower reads promise no session guarantee: reported, not judged)" if report.read == "follower" else ""
    if report.broken_sessions:
        note += (f"; {report.broken_sessions} session(s) were told a write they saw was lost (SessionError) "
                 f"and started anew")
    lines.append(f"  sessions: {report.sessions}{note}")
    if report.linearizable is not None:
        lines.append(f"  linearizability: {report.verdict}")
    lines.append(verdict_line(report))
    return lines
