"""Every Python snippet of the README and of docs/*.md runs as written (they are the user's first contact).

Each ```python block runs on its own, in a fresh namespace, from the repository root, with
``file:///tmp/...`` URLs moved under the test's temporary directory. Code that only illustrates
uses a ```text fence.
"""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_BLOCK = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", flags=re.S | re.M)


def _blocks(page: pathlib.Path) -> list[str]:
    """The page's ```python blocks, in order (a block indented under a list item is dedented)."""
    return [textwrap.dedent(code) for _, code in _BLOCK.findall(page.read_text())]


SNIPPETS = [(page.relative_to(ROOT).as_posix(), i, code) for page in PAGES for i, code in enumerate(_blocks(page))]


def test_readme_has_snippets():
    assert len(_blocks(ROOT / "README.md")) >= 5


def test_every_docs_page_is_listed_in_the_docs_index():
    index = (DOCS / "README.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"


@pytest.mark.ray
@pytest.mark.parametrize("where,index,code", SNIPPETS, ids=[f"{w}[{i}]" for w, i, _ in SNIPPETS])
def test_snippet_runs(where, index, code, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = code.replace("file:///tmp/", f"file://{tmp_path}/")
    # dont_inherit: a snippet runs as a user's script would, without this file's `from __future__`
    # (whose string annotations make dataclasses look for the snippet's module in sys.modules).
    exec(compile(code, f"{where}[python block {index}]", "exec", dont_inherit=True), {"__name__": "docs_snippet"})
