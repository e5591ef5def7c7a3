"""Run the example notebooks in a Jupyter kernel and store them with their outputs.

The repository keeps each notebook with its outputs, so its plots show wherever it is viewed
(GitHub, nbviewer, an IDE). Run this after changing a notebook or the code it shows, then commit:

    python examples/execute.py            # every notebook here
    python examples/execute.py raft.ipynb # one of them

It needs the ``test`` extra (nbclient, ipykernel, matplotlib). The Raft notebook starts a local Ray
(or joins ``RAY_ADDRESS``).
"""

from __future__ import annotations

import os
import pathlib
import sys

import nbclient
import nbformat

HERE = pathlib.Path(__file__).parent


def execute(path: pathlib.Path) -> None:
    """Execute ``path`` top to bottom in a fresh ``python3`` kernel and write it back with outputs."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):  # nbformat 4.5 cell ids, stable across runs
        cell.setdefault("id", f"cell-{i}")
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=900,
                            resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)
    print(f"executed {path.name}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells")


def main(argv: list[str]) -> int:
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend stores each figure as a PNG output
    names = argv or sorted(p.name for p in HERE.glob("*.ipynb"))
    for name in names:
        execute(HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
