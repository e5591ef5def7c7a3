"""The notebooks in examples/ run top to bottom in a real Jupyter kernel and draw their plots.

Each notebook is executed by nbclient in a fresh ``python3`` (ipykernel) kernel, as Jupyter would
run it, with one extra cell appended in memory: the checks below, run in the notebook's own
namespace. The repository keeps the notebooks with their outputs (refreshed with
``python examples/execute.py``), so the plots show wherever a notebook is viewed; the test also
checks that the stored copies carry those outputs.
"""

from __future__ import annotations

import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
_PASSED = "NOTEBOOK CHECKS PASSED"

_STORAGE_CHECKS = f"""
for policy, (history, final) in runs.items():
    assert final["space_amplification"] > 0 and final["write_amplification"] > 1, policy
    assert len(history) == ROUNDS, policy
print({_PASSED!r})
"""

_RAFT_CHECKS = f"""
import pathlib
assert report.linearizable is True, report.verdict
assert report.faults and report.elections >= 1, (report.faults, report.terms)
ax_lead, ax_term, ax_commit = fig.axes
members = sorted(series)
assert members == ["m1", "m2", "m3"]
# One term line and one commit line per member, labelled with its name.
assert sorted(line.get_label() for line in ax_term.get_lines()) == members
assert sorted(line.get_label() for line in ax_commit.get_lines()) == members
# The leader bars and a shaded band per fault on every panel.
assert len(ax_lead.collections) == len(leader_spans(report.samples)) >= 1
bands = len(fault_spans(report.faults))
assert bands >= 1 and all(len(ax.patches) == bands for ax in (ax_lead, ax_term, ax_commit))
assert not pathlib.Path(root).exists()  # the notebook cleaned up its logs
print({_PASSED!r})
"""

_REPLICATION_CHECKS = f"""
import pathlib
from ddia_ray.replication.report import lag_series
# The partition-leader run on the semi-sync store: faults, failovers, nothing lost, sessions kept.
assert report.faults and len(report.failovers) >= 2, (report.faults, report.failovers)
assert report.durability_ok is True and report.missing == [], report.durability
assert report.sessions_ok is True, report.sessions
ax_lead, ax_lag, ax_stale = fig_run.axes
# One leader bar per replica and epoch, one lag line per follower, labelled with its name.
assert len(ax_lead.collections) == len(spans) >= 2
followers = sorted(line.get_label() for line in ax_lag.get_lines() if not line.get_label().startswith("_"))
assert followers == sorted(lag_series(report)) and len(followers) == 3  # every replica followed some leader
# A shaded band per fault and a dashed line per failover on every panel.
bands = len(fault_spans(report.faults))
for ax in (ax_lead, ax_lag, ax_stale):
    assert bands >= 1 and len(ax.patches) == bands
    assert sum(line.get_label() == "_failover" for line in ax.get_lines()) == len(report.failovers) - 1
# The same faults in each mode: sync and semi-sync lose nothing; async loses only what it reports.
assert list(runs) == ["sync", "semi-sync", "async"]
for mode, r in runs.items():
    assert r.schedule == "partition-leader" and r.mode == mode and len(r.failovers) >= 2, (mode, r.failovers)
    assert r.durability_ok is True, (mode, r.durability)
    assert len(r.missing) == r.reported_missing <= r.reported_lost, (mode, r.durability)
    # Sessions hold in every mode: an async session whose write was lost is told (SessionError) and
    # starts anew rather than read past its loss.
    assert r.sessions_ok is True, (mode, r.sessions)
    if mode != "async":
        assert r.missing == [] and r.reported_lost == 0, (mode, r.durability)
ax_lat, ax_lost = fig_modes.axes
lost = [len(runs[m].missing) for m in MODES] + [runs[m].reported_lost for m in MODES]
assert [round(bar.get_height()) for bar in ax_lost.patches] == lost
latency = [runs[m].write_latency_ms[q] for q in ("p50", "p99") for m in MODES]
assert [bar.get_height() for bar in ax_lat.patches] == latency
assert not pathlib.Path(root).exists()  # the notebook cleaned up the last store's files
print({_PASSED!r})
"""

_PARTITIONING_CHECKS = f"""
import pathlib
assert report.ok, "\\n".join(summary_lines(report))
assert report.checked == report.loaded == 2000 and report.missing == [] and report.stale == []
# The hot spot: the first key range holds most of the loaded keys; it was split, and a partition moved.
assert max(report.keys_per_partition, key=report.keys_per_partition.get) == 0, report.keys_per_partition
assert report.split["outcome"] == "ok" and report.split["new"] is not None, report.split
m = report.move
assert m["outcome"] == "ok" and m["report"]["copied"] >= m["keys_loaded_in_it"] > 0, m
assert m["source"] != m["target"] and report.map_after.partition(m["partition"]).group == m["target"]
assert report.rates_before and report.rates_after
# One bar per exponent and key range.
assert len(fig_skew.axes[0].patches) == 16
# One line per partition (the split's new one included) and per group; a dashed line per change.
ax_rate, ax_group = fig_load.axes
lines = sorted(line.get_label() for line in ax_rate.get_lines() if not line.get_label().startswith("_"))
assert lines == sorted(f"partition {{pid}}" for pid in series) and len(series) == 5, lines
assert len([line for line in ax_group.get_lines() if not line.get_label().startswith("_")]) == 2
assert sum(line.get_label() == "_change" for line in ax_group.get_lines()) == len(report.events) == 2
# Before and after: two bars per partition of the final map, two per group.
ax_part, ax_grp = fig_rebalance.axes
assert len(ax_part.patches) == 2 * len(report.map_after.partitions) == 10 and len(ax_grp.patches) == 4
assert not pathlib.Path(root).exists()  # the notebook cleaned up the store's files
# The global index's lag: short while the indexer runs, as long as the outage across it, nothing lost.
assert lag.writes > 500 and lag.errors == [], lag.errors[:3]
assert normal and normal[len(normal) // 2] < 1.0, normal
assert max(lag.probe_lags()) > 1.0, lag.probes  # a probe written during the outage waited for the restart
assert any(p is None for _, p, _ in lag.samples) and lag.samples[-1][1] is not None
assert len(fig_lag.axes) == 2 and len(fig_lag.axes[0].get_lines()) == 1
print({_PASSED!r})
"""


_EVENTS_CHECKS = f"""
import pathlib
from ddia_ray.kv.report import fault_spans
# The workload under faults: every verdict passed, with real conflicts and a leader killed.
assert report.ok, "\\n".join(summary_lines(report))
assert report.lost == [] and report.gap_free and report.projection_ok and report.group_ok
assert report.retries >= 1 and report.redeliveries >= 1, (report.retries, report.redeliveries)
assert any(what.startswith("kill leader") for _, what in report.faults), report.faults
# The projection rebuilt from zero gives the same model; the parked orders were replayed and settled.
assert before == after and len(after) > 10 and runner.checkpoint == end
assert len(parked) == replayed >= 1 and shipping["parked"] == 0 and shipping["acked"] == total
# The archive: the files hold positions 0..cut-1, and reads still serve the archived events.
assert table.num_rows == run.archived_upto == run.dropped_upto == cut
assert [e.version for e in served] == list(range(len(served))) and len(served) >= 3
# Appends per second above, the two lags below, a band per fault on both.
ax_rate, ax_lag = fig.axes
assert sorted(line.get_label() for line in ax_lag.get_lines()) == ["billing group", "projection"]
bands = len(fault_spans(report.faults))
assert bands >= 1 and all(len(ax.patches) == bands for ax in (ax_rate, ax_lag))
assert not pathlib.Path(root).exists()  # the notebook cleaned up its store and archive
print({_PASSED!r})
"""


_EVOLUTION_CHECKS = f"""
import pathlib
assert [r.version for r in registered] == [1, 2, 3, 4] and reg is not None
# The modes decide as Avro's rules say: a field without a default breaks BACKWARD, a dropped required
# field breaks FORWARD, and NONE accepts everything.
assert verdicts["add vip, no default"]["BACKWARD"] is False and verdicts["add vip, no default"]["FORWARD"] is True
assert verdicts["drop name"]["FORWARD"] is False and verdicts["drop name"]["BACKWARD"] is True
assert verdicts["add nickname, default"]["FULL"] is True
assert verdicts["add nickname, default"]["FORWARD_TRANSITIVE"] is False  # v1/v2 readers need the renamed email
assert all(v["NONE"] for v in verdicts.values())
# Three changes, each applied by the running actors, with no failed request and no restart.
assert len(changes) == 3 and errors == []
assert balancer.group.restarts == {{balancer.node: 0}} and cache.group.restarts == {{cache.node: 0}}
assert [s[3] for s in samples][-1] == 40 and min(s[3] for s in samples) == 20
assert not pathlib.Path(root).exists()
print({_PASSED!r})
"""


_CONFLICTS_CHECKS = f"""
from ddia_ray.clocks import Ordering
# Version vectors: before, concurrent, after.
assert orderings == {{"base vs eu": Ordering.BEFORE, "eu vs ap": Ordering.CONCURRENT,
                      "merged vs ap": Ordering.AFTER}}, orderings
# Two concurrent writes became two siblings; the merge written with their context replaced both, everywhere.
assert sorted(before.values) == [b"eggs", b"milk"] and before.conflict
assert after.values == (b"eggs,milk",) and not after.conflict
assert len(lww.values) == 1 and lww.values[0] in (b"eggs", b"milk")
# The comparison: only LWW lost writes, and the store counted every one; siblings were kept, then merged.
assert report.ok, "\\n".join(summary_lines(report))
assert report.rows["lww"].lost >= 1 and report.stats["lww_discarded"] >= report.rows["lww"].lost
assert all(report.rows[n].lost == 0 and report.rows[n].ops >= 90 for n in names if n != "lww")
assert report.rows["siblings"].siblings_max >= 2 and report.rows["siblings"].resolutions >= 1
assert report.converged and report.convergence_s is not None
assert any(i.startswith("eu.") for i in report.rows["lww"].lost_ids)  # the skewed region lost
# One bar per resolution (its losses), one per sib/ key (its siblings).
ax_lost, ax_sib = fig_rows.axes
assert [round(b.get_height()) for b in ax_lost.patches] == lost and lost[0] == report.rows["lww"].lost
assert [round(b.get_height()) for b in ax_sib.patches] == list(report.siblings_per_key.values())
# Skew: LWW kept the earlier write about as often as a trial's gap was below the later writer's clock lag.
assert earlier_kept["s0"] <= 0.25 and earlier_kept["s150"] >= 0.75, earlier_kept
assert all(abs(earlier_kept[r] - expected[r]) <= 0.35 for r in lag_s), (earlier_kept, expected)
assert discarded == TRIALS * len(lag_s)  # every key lost one write, and the store counted each once
measured, theory = fig_skew.axes[0].get_lines()
assert list(measured.get_ydata()) == [earlier_kept[r] for r in lag_s]
assert list(theory.get_ydata()) == [expected[r] for r in lag_s]
# Quorums: waiting for one replica beats waiting for all three (one of them is always in another region).
assert latency[(3, 1, 1)][0] < latency[(3, 1, 3)][0] and latency[(3, 1, 1)][1] < latency[(3, 3, 1)][1], latency
assert len(fig_quorum.axes[0].patches) == 2 * len(configs)
# Anti-entropy: equal trees cost one round; the traffic grows with the divergence, within 2x from 30 keys.
assert ae_bytes[0] < 500 and ae_bytes == sorted(ae_bytes), ae_bytes
assert all(b < 2 * m for b, m, d in zip(ae_bytes, minimal, divergences) if d >= 30), (ae_bytes, minimal)
assert ae_bytes[-1] < full_copy and len(fig_ae.axes[0].get_lines()) == 3
print({_PASSED!r})
"""


def _execute(name: str, checks: str):
    """Run ``examples/<name>`` plus a cell of ``checks`` in a real kernel; returns the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(checks))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    return nb


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _images(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


@pytest.mark.slow
def test_storage_notebook_runs_in_a_kernel_and_plots(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend captures figures
    nb = _execute("storage.ipynb", _STORAGE_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    assert _images(nb) == 2  # bytes per level, and the three amplification figures


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_raft_notebook_runs_in_a_kernel_and_plots_a_linearizable_run(ray_session, monkeypatch):
    # The kernel joins this session's Ray instead of starting a second one on the machine.
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("raft.ipynb", _RAFT_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    assert "linearizable: yes" in _text(nb.cells[-2]).splitlines()[-1]
    assert _images(nb) == 1


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(400)
def test_replication_notebook_runs_in_a_kernel_and_plots_every_mode(ray_session, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("replication.ipynb", _REPLICATION_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    summary = next(c for c in nb.cells if c.cell_type == "code" and "summary_lines(report)" in c.source)
    assert _text(summary).splitlines()[-1] == "replication: ok"
    assert _images(nb) == 2  # the run's lag and leaders, and the modes compared


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_partitioning_notebook_runs_in_a_kernel_and_plots_the_rebalance(ray_session, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("partitioning.ipynb", _PARTITIONING_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    summary = next(c for c in nb.cells if c.cell_type == "code" and "summary_lines(report)" in c.source)
    assert _text(summary).splitlines()[-1] == "partitioning: ok"
    assert _images(nb) == 4  # the skew, the load over time, the load before and after, the index lag


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_events_notebook_runs_in_a_kernel_and_plots_appends_and_lag(ray_session, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("events.ipynb", _EVENTS_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    summary = next(c for c in nb.cells if c.cell_type == "code" and "summary_lines(report)" in c.source)
    assert _text(summary).splitlines()[-1] == "events: ok"
    assert _images(nb) == 1  # appends and lag over time


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_evolution_notebook_runs_in_a_kernel_and_plots_the_rollout(ray_session, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("evolution.ipynb", _EVOLUTION_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    assert _text(nb.cells[-2]).splitlines()[-1] == "evolution: ok"
    assert _images(nb) == 1  # traffic shares and cache size over the three changes


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_conflicts_notebook_runs_in_a_kernel_and_plots_each_comparison(ray_session, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute("conflicts.ipynb", _CONFLICTS_CHECKS)
    assert _PASSED in _text(nb.cells[-1])
    summary = next(c for c in nb.cells if c.cell_type == "code" and "summary_lines(report)" in c.source)
    assert _text(summary).splitlines()[-1] == "conflicts: ok"
    assert _images(nb) == 4  # losses and siblings, LWW against skew, quorum latency, anti-entropy traffic


@pytest.mark.parametrize("name", ["storage.ipynb", "raft.ipynb", "replication.ipynb", "partitioning.ipynb",
                                  "events.ipynb", "evolution.ipynb", "conflicts.ipynb"])
def test_stored_notebooks_keep_their_outputs(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "run python examples/execute.py and commit"
    assert _images(nb) >= 1
