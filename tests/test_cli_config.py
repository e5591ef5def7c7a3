"""``ddia-ray config``: its arguments, its output, each action against an in-process store, and one
run against a store on Ray found by name."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from ddia_ray.cli import build_parser, main
from ddia_ray.cli import config as cli
from ddia_ray.config import KeyValue, LocalConfig, WatchEvent


@pytest.fixture
def local(monkeypatch):
    """Every ``ddia-ray config`` call in the test talks to one in-process store."""
    client = LocalConfig(watch_wait_s=0.2)
    closed = []
    monkeypatch.setattr(client, "close", lambda: closed.append(True))  # the command closes it; the test reuses it
    monkeypatch.setattr(cli, "_client", lambda args: client)
    yield client
    type(client).close(client)


def test_config_help_lists_every_action():
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "config", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for action in ("get", "set", "delete", "watch", "history", "rollback", "--name"):
        assert action in out


@pytest.mark.parametrize("argv", [["config", "get", "k"], ["config", "--name", "s", "rollback", "0"],
                                  ["config", "--name", "s", "watch", "k", "--count", "-1"],
                                  ["config", "--name", "s", "frobnicate", "k"]])
def test_bad_config_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2


def test_values_are_json_when_they_parse_and_strings_otherwise():
    assert cli.parse_value("5") == 5
    assert cli.parse_value('{"ttl_s": 30}') == {"ttl_s": 30}
    assert cli.parse_value("true") is True
    assert cli.parse_value("hello world") == "hello world"
    assert cli.parse_value("5", string=True) == "5"


def test_lines_show_the_revisions():
    kv = KeyValue("app/ttl", {"s": 3}, 2, 5, 4, 7)
    assert cli.format_kv(kv) == 'app/ttl = {"s": 3}  (revision 5, version 4, created 2, lease 7)'
    assert json.loads(cli.format_kv(kv, as_json=True))["mod_revision"] == 5
    assert cli.format_kv(KeyValue("k", None, 0, 9, 0, 0)) == "k deleted  (revision 9)"
    assert cli.format_event(WatchEvent("put", KeyValue("k", 1, 3, 3, 1))) == "3 PUT k = 1"
    assert cli.format_event(WatchEvent("delete", KeyValue("k", None, 0, 4))) == "4 DELETE k"


def test_set_get_history_rollback_and_delete(local, capsys):
    assert main(["config", "--name", "s", "set", "app/size", "10"]) == 0
    assert capsys.readouterr().out.strip() == "1"
    assert main(["config", "--name", "s", "set", "app/mode", "fast"]) == 0
    assert main(["config", "--name", "s", "set", "app/size", "20"]) == 0
    capsys.readouterr()
    assert main(["config", "--name", "s", "get", "app/size"]) == 0
    assert capsys.readouterr().out.strip() == "app/size = 20  (revision 3, version 2, created 1)"
    assert main(["config", "--name", "s", "--json", "get", "app/", "--prefix", "--revision", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["key"], r["value"]) for r in rows] == [("app/mode", "fast"), ("app/size", 10)]
    assert main(["config", "--name", "s", "history", "app/size"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["config", "--name", "s", "rollback", "1"]) == 0
    assert capsys.readouterr().out.strip() == "4"
    assert local.get("app/size").value == 10 and local.get("app/mode") is None
    assert main(["config", "--name", "s", "delete", "app/", "--prefix"]) == 0
    assert main(["config", "--name", "s", "get", "app/size"]) == 1
    assert "no key 'app/size'" in capsys.readouterr().err


def test_refusals_are_printed_with_their_class(local, capsys):
    local.put("k", 1)
    local.compact(1)
    local.put("k", 2)
    local.compact(2)
    assert main(["config", "--name", "s", "get", "k", "--revision", "1"]) == 1
    assert "CompactedError" in capsys.readouterr().err
    assert main(["config", "--name", "s", "set", "k", "1", "--lease", "9"]) == 1
    assert "LeaseNotFoundError" in capsys.readouterr().err


def test_watch_prints_events_until_count(local, capsys):
    local.put("app/a", 1)

    def writer():  # once the command's watch is registered, two more changes
        deadline = time.monotonic() + 10
        while not local.watches() and time.monotonic() < deadline:
            time.sleep(0.01)
        local.put("app/b", 2)
        local.delete("app/a")

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert main(["config", "--name", "s", "watch", "app/", "--prefix", "--from-revision", "1",
                     "--count", "3"]) == 0
    finally:
        t.join()
    assert capsys.readouterr().out.splitlines() == ["1 PUT app/a = 1", "2 PUT app/b = 2", "3 DELETE app/a"]


def test_watch_from_the_future_is_refused(local, capsys):
    assert main(["config", "--name", "s", "watch", "k", "--from-revision", "5"]) == 1
    assert "FutureRevisionError" in capsys.readouterr().err


def test_an_unknown_store_is_reported(monkeypatch, capsys):
    from ddia_ray.errors import ComponentNotFoundError

    def missing(args):
        raise ComponentNotFoundError(args.name, ())

    monkeypatch.setattr(cli, "_client", missing)
    assert main(["config", "--name", "nope", "get", "k"]) == 1
    assert "ComponentNotFoundError" in capsys.readouterr().err


@pytest.mark.ray
def test_the_command_finds_a_running_store_by_name(ray_session, capsys):
    from ddia_ray.config import ConfigStore

    store = ConfigStore.launch(engine="map", replicas=3)
    try:
        assert main(["config", "--name", store.name, "set", "svc/port", "8080"]) == 0
        assert main(["config", "--name", store.name, "--json", "get", "svc/port"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert json.loads(out[-1])["value"] == 8080
    finally:
        store.shutdown(destroy_data=True)
