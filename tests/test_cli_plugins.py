"""``ddia-ray plugins``: what it lists for good, incompatible and broken entry points (no Ray)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from ddia_ray.cli import build_parser, main


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Three entry points of group ddia_ray.plugins, as if installed: good, too new and broken."""
    module = f"cliplug_{uuid.uuid4().hex[:8]}"
    engine = f"cli-engine-{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        from ddia_ray.storage.engine import MemoryEngine

        class Good:
            api_version = "1.0"
            version = "2.1.0"
            def ddia_ray_storage_engines(self):
                return {{"{engine}": lambda url=None, **o: MemoryEngine()}}

        class TooNew:
            api_version = "1.7"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    group = "ddia_ray.plugins"
    eps = [importlib.metadata.EntryPoint("good", f"{module}:Good", group),
           importlib.metadata.EntryPoint("toonew", f"{module}:TooNew", group),
           importlib.metadata.EntryPoint("broken", f"{module}_missing:Plugin", group)]

    def entry_points(**select):
        assert select == {"group": group}
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield engine
    from ddia_ray.storage.engine import ENGINES

    assert engine not in ENGINES  # listing leaves nothing registered behind


def test_plugins_json_lists_each_with_its_verdict(installed, capsys):
    assert main(["plugins", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plugin_api"] == "1.0"
    rows = {r["name"]: r for r in out["plugins"]}
    assert set(rows) == {"good", "toonew", "broken"}
    good = rows["good"]
    assert good["compatible"] and good["state"] == "loaded" and good["version"] == "2.1.0"
    assert good["api_version"] == "1.0" and good["provides"] == {"storage_engine": [installed]}
    too_new = rows["toonew"]
    assert not too_new["compatible"] and too_new["api_version"] == "1.7"
    assert too_new["error"]["kind"] == "PluginVersionError" and "upgrade ddia-ray" in too_new["error"]["message"]
    broken = rows["broken"]
    assert broken["error"]["kind"] == "PluginLoadError" and "broken = " in broken["error"]["message"]


def test_plugins_table_says_why_not_and_strict_fails(installed, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per row: the cells are not folded
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "good" in table and "toonew" in table and "no: plugin 'toonew' refused" in table
    assert main(["plugins", "--strict"]) == 1
    assert "no: plugin 'good'" not in capsys.readouterr().out  # a second listing finds the same, no conflict


def test_no_plugins_installed(monkeypatch, capsys):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **select: [])
    assert main(["plugins", "--strict"]) == 0
    assert "No plugins are installed" in capsys.readouterr().out


def test_plugins_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "plugins", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--json", "--strict"):
        assert option in out
    assert build_parser().parse_args(["plugins", "--json"]).json is True
