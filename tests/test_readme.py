"""The README's Python snippets run as written (they are the user's first contact)."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 5


@pytest.mark.ray
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(README.parent)
    code = BLOCKS[index].replace("file:///tmp/shop", f"file://{tmp_path}/shop").replace(
        "file:///tmp/raftkv", f"file://{tmp_path}/raftkv")
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": "readme"})
