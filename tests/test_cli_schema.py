"""``ddia-ray schema``: its arguments, each action against a registry in this process (the command's
client swapped for one over a LocalBackend), and one run against a real registry found by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ddia_ray.cli import build_parser, main
from ddia_ray.cli import schema as cli_schema
from ddia_ray.cli.schema import rules_from_json
from ddia_ray.errors import InvalidArgumentError
from ddia_ray.events.local import LocalBackend
from ddia_ray.schema import AddField, ChangeType, RemoveField, RenameField
from ddia_ray.schema.registry import RegistryClient

V1 = {"type": "record", "name": "Row", "fields": [{"name": "id", "type": "long"}, {"name": "mail", "type": "string"}]}
V2 = {"type": "record", "name": "Row", "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": "string"},
                                                   {"name": "country", "type": "string", "default": "NL"}]}
BAD = {"type": "record", "name": "Row", "fields": [{"name": "id", "type": "string"}]}


def test_schema_help_lists_every_action():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "schema", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for action in ("register", "check", "versions", "subjects", "compatibility", "migrate", "--name", "--import"):
        assert action in out


@pytest.mark.parametrize("argv", [["schema", "versions", "s"], ["schema", "--name", "r", "compatibility", "SOME"],
                                  ["schema", "--name", "r", "migrate", "s", "a", "b", "--to", "0"],
                                  ["schema", "--name", "r", "register", "s", "f", "--kind", "protobuf"]])
def test_bad_schema_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2


def test_rules_from_json():
    assert rules_from_json([{"add": "a", "default": 1}, {"remove": "b"}, {"rename": ["c", "d"]},
                            {"change_type": "e", "to": "long", "forward": "f", "backward": "g"}]) == \
        (AddField("a", 1), RemoveField("b"), RenameField("c", "d"), ChangeType("e", "long", "f", "g"))
    for bad in ({"add": "a"}, [{"rename": "c"}], [7]):
        with pytest.raises(InvalidArgumentError):
            rules_from_json(bad)


@pytest.fixture
def local(monkeypatch):
    client = RegistryClient(LocalBackend())
    monkeypatch.setattr(cli_schema, "_client", lambda args: client)
    return client


def _write(tmp_path, name: str, value) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


def test_register_check_versions_and_modes(local, tmp_path, capsys):
    assert main(["schema", "--name", "r", "register", "rows", _write(tmp_path, "v1.json", V1)]) == 0
    assert capsys.readouterr().out.startswith("rows version 1 id 1")
    renamed = _write(tmp_path, "m.json", [{"rename": ["mail", "email"]}, {"add": "country", "default": "NL"}])
    # A rename with no alias is not BACKWARD (an Avro reader would not find "email"): under NONE, the
    # migration alone decides. A check says what a registration would meet, and exits 1 when refused.
    assert main(["schema", "--name", "r", "compatibility", "NONE", "--subject", "rows"]) == 0
    assert main(["schema", "--name", "r", "check", "rows", _write(tmp_path, "v2.json", V2)]) == 1
    assert "migration:" in capsys.readouterr().out  # email comes from nowhere without the rename
    assert main(["schema", "--name", "r", "check", "rows", str(tmp_path / "v2.json"), "--migration", renamed]) == 0
    assert main(["schema", "--name", "r", "compatibility", "BACKWARD", "--subject", "rows"]) == 0
    assert main(["schema", "--name", "r", "--json", "check", "rows", _write(tmp_path, "bad.json", BAD)]) == 1
    verdict = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert not verdict["compatible"] and verdict["incompatibilities"][0]["path"] == "Row.id"
    assert main(["schema", "--name", "r", "register", "rows", str(tmp_path / "bad.json")]) == 1
    assert "IncompatibleSchemaError" in capsys.readouterr().err
    assert main(["schema", "--name", "r", "compatibility", "NONE", "--subject", "rows"]) == 0
    assert main(["schema", "--name", "r", "register", "rows", str(tmp_path / "v2.json"), "--migration", renamed]) == 0
    capsys.readouterr()
    assert main(["schema", "--name", "r", "--json", "versions", "rows"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["version"], r["fields"]) for r in rows] == [(1, ["id", "mail"]), (2, ["id", "email", "country"])]
    assert rows[1]["migration"] == [repr(RenameField("mail", "email")), repr(AddField("country", "NL"))]
    assert main(["schema", "--name", "r", "compatibility", "FULL", "--subject", "rows"]) == 0
    assert main(["schema", "--name", "r", "compatibility", "--subject", "rows"]) == 0
    assert main(["schema", "--name", "r", "subjects"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["rows FULL", "rows"]
    assert main(["schema", "--name", "r", "versions", "nope"]) == 1
    assert "UnknownSubjectError" in capsys.readouterr().err


def test_migrate_a_dataset_and_register_an_arrow_schema(local, tmp_path, capsys):
    src = tmp_path / "v1"
    src.mkdir()
    columns = pa.schema([pa.field("id", pa.int64(), False), pa.field("mail", pa.string(), False)])
    pq.write_table(pa.table({"id": [1, 2], "mail": ["a@x", "b@x"]}, schema=columns), src / "part.parquet")
    assert main(["schema", "--name", "r", "register", "rows", f"file://{src}", "--kind", "arrow"]) == 0
    got = local.get("rows").schema
    assert got.kind == "arrow" and got.field_names() == ("id", "mail")
    local.set_compatibility("NONE")
    local.register("rows", V2, migration=(RenameField("mail", "email"), AddField("country", "NL")))
    dst = tmp_path / "v2"
    assert main(["schema", "--name", "r", "migrate", "rows", f"file://{src}", f"file://{dst}", "--from", "1"]) == 0
    assert "2 rows written at version 2" in capsys.readouterr().out
    table = pq.read_table(dst)
    assert table.column_names == ["id", "email", "country"]
    assert table["email"].to_pylist() == ["a@x", "b@x"] and table["country"].to_pylist() == ["NL", "NL"]


@pytest.mark.ray
def test_schema_command_against_a_running_registry(ray_session, tmp_path, capsys):
    from ddia_ray.schema.registry import SchemaRegistry

    reg = SchemaRegistry.launch(replicas=1, engine="map")
    try:
        assert main(["schema", "--name", reg.name, "register", "rows", _write(tmp_path, "v1.json", V1)]) == 0
        assert main(["schema", "--name", reg.name, "--json", "versions", "rows"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert json.loads(out[-1])["fields"] == ["id", "mail"]
        assert main(["schema", "--name", "no-such-registry", "subjects"]) == 1
        assert "ComponentNotFoundError" in capsys.readouterr().err
    finally:
        reg.shutdown()
