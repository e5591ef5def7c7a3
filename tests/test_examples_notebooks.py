"""The notebooks in examples/ run top to bottom (plots drawn off-screen)."""

from __future__ import annotations

import json
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _run_notebook(name: str, monkeypatch, namespace: dict | None = None) -> dict:
    """Execute the code cells of ``examples/<name>`` in order with an off-screen backend; return their namespace."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    nb = json.loads((EXAMPLES / name).read_text())
    namespace = {"__name__": "notebook"} if namespace is None else namespace
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{name}[cell {i}]", "exec"), namespace)
    return namespace


@pytest.mark.slow
@pytest.mark.parametrize("name", ["storage.ipynb"])
def test_notebook_runs(name, monkeypatch):
    namespace = _run_notebook(name, monkeypatch)
    runs = namespace["runs"]
    for policy, (history, final) in runs.items():
        assert final["space_amplification"] > 0 and final["write_amplification"] > 1, policy
        assert len(history) == namespace["ROUNDS"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(180)
def test_raft_notebook_plots_a_linearizable_run(ray_session, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "notebook"}
    try:
        _run_notebook("raft.ipynb", monkeypatch, namespace)
    finally:
        if "kv" in namespace and "report" not in namespace:  # a cell failed before the notebook's own shutdown
            namespace["kv"].shutdown(destroy_data=True)
    report = namespace["report"]
    assert report.linearizable is True, report.verdict
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "linearizable: yes"
    assert report.faults and report.elections >= 1, (report.faults, report.terms)
    fig = namespace["fig"]
    ax_lead, ax_term, ax_commit = fig.axes
    members = sorted(namespace["series"])
    assert members == ["m1", "m2", "m3"]
    # One term line and one commit line per member, labelled with its name.
    assert sorted(line.get_label() for line in ax_term.get_lines()) == members
    assert sorted(line.get_label() for line in ax_commit.get_lines()) == members
    # The leader bars and a shaded band per fault on every panel.
    assert len(ax_lead.collections) == len(namespace["leader_spans"](report.samples)) >= 1
    bands = len(namespace["fault_spans"](report.faults))
    assert bands >= 1 and all(len(ax.patches) == bands for ax in (ax_lead, ax_term, ax_commit))
    assert not pathlib.Path(namespace["root"]).exists()  # the notebook cleaned up its logs
    plt.close(fig)
