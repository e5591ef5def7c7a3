"""The ``ddia-ray`` command line and the demo's promise: no request lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddia_ray.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["info", "--help"]])
def test_every_subcommand_has_help(argv):
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", *argv], capture_output=True, text=True, check=True)
    assert "usage: ddia-ray" in out.stdout
    assert "--help" in out.stdout


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--requests", "-5"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--picker", "fastest"])
    with pytest.raises(SystemExit, match="at least 3"):
        main(["demo", "--replicas", "2", "--no-progress"])


@pytest.mark.ray
def test_demo_loses_no_request_through_a_kill_and_a_partition(ray_session, capsys):
    code = main(["demo", "--requests", "3000", "--no-progress", "--seed", "3"])
    out = capsys.readouterr().out
    assert "killed replica-1" in out and "isolated replica-2" in out and "healed" in out
    assert out.rstrip().splitlines()[-1] == "requests lost: 0"
    assert code == 0


@pytest.mark.ray
def test_info_reports_the_cluster(ray_session, capsys):
    import json

    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["namespace"] == "ddia_ray" and data["nodes"] and data["resources"]["CPU"] > 0
