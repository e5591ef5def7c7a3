"""The notebooks in examples/ run top to bottom (plots drawn off-screen)."""

from __future__ import annotations

import json
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["storage.ipynb"])
def test_notebook_runs(name, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    nb = json.loads((EXAMPLES / name).read_text())
    namespace: dict = {"__name__": "notebook"}
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{name}[cell {i}]", "exec"), namespace)
    runs = namespace["runs"]
    for policy, (history, final) in runs.items():
        assert final["space_amplification"] > 0 and final["write_amplification"] > 1, policy
        assert len(history) == namespace["ROUNDS"]
