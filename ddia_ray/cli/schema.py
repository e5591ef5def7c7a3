"""``ddia-ray schema``: register, check, list and migrate against a running schema registry.

The registry is found by name on the Ray cluster (:meth:`ddia_ray.schema.SchemaRegistry.connect`;
``RAY_ADDRESS`` names the cluster). A schema is given as a file of Avro JSON (``-``: standard input),
as a Parquet file or dataset whose Arrow schema is registered (``--kind arrow``), or as a codec
``@record`` class named ``module:Class`` (``--kind record``). A migration is a JSON list of rules::

    [{"add": "phone", "default": ""}, {"remove": "fax", "default": null},
     {"rename": ["mail", "email"]},
     {"change_type": "price", "to": "long", "forward": "to_cents", "backward": "from_cents"}]

Conversions and record classes live in the user's modules: ``--import MODULE`` (repeatable) imports
them first, so that ``@conversion`` and ``@record`` register what the rules and kinds name.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ._args import positive_int

__all__ = ["add_parser", "run", "rules_from_json", "read_schema"]

_MODES = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schema`` subcommand (and its actions) to the subparsers ``sub`` of ``ddia-ray``."""
    p = sub.add_parser("schema", help="register, check and list schemas; migrate Parquet datasets between versions",
                       description="Register schemas under subjects, check them against a subject's compatibility "
                                   "mode, show a subject's versions, set modes, and rewrite a Parquet dataset at "
                                   "another version, against a running schema registry (ddia_ray.schema."
                                   "SchemaRegistry) found by --name on the Ray cluster (RAY_ADDRESS).")
    p.add_argument("--name", required=True, help="the schema registry's name (as launched)")
    p.add_argument("--json", action="store_true", help="print JSON objects, one per line")
    p.add_argument("--timeout-s", type=float, default=30.0, help="how long a call waits for the registry")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers conversions or record classes); repeatable")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, what in (("register", "register a schema under a subject; prints its version and id"),
                       ("check", "check a schema against a subject's mode and migrations (exit 1 if refused)")):
        a = actions.add_parser(name, help=what)
        a.add_argument("subject")
        a.add_argument("schema", help="an Avro JSON file ('-': stdin), a Parquet path (--kind arrow), or "
                                      "module:Class (--kind record)")
        a.add_argument("--kind", choices=("avro", "arrow", "record"), default="avro", help="the schema's language")
        a.add_argument("--migration", default=None, metavar="FILE",
                       help="a JSON file of migration rules from the latest version (default: inferred)")
    v = actions.add_parser("versions", help="show a subject's versions: ids, fingerprints, fields, migrations")
    v.add_argument("subject")
    v.add_argument("--deleted", action="store_true", help="include soft-deleted versions")
    actions.add_parser("subjects", help="list the subjects")
    c = actions.add_parser("compatibility", help="show (or set) the compatibility mode of a subject or the registry")
    c.add_argument("mode", nargs="?", choices=_MODES, default=None, help="set this mode (default: show)")
    c.add_argument("--subject", default=None, help="a subject (default: the registry's global mode)")
    m = actions.add_parser("migrate", help="rewrite a Parquet dataset at another version of a subject")
    m.add_argument("subject")
    m.add_argument("src", help="the dataset's fsspec URL")
    m.add_argument("dst", help="where to write it (an fsspec URL of a directory)")
    m.add_argument("--to", dest="to_version", type=positive_int, default=None, help="the version (default: latest)")
    m.add_argument("--from", dest="from_version", type=positive_int, default=None,
                   help="the version it was written at (default: from its metadata or its columns)")


def rules_from_json(value: Any) -> tuple:
    """Migration rules from their JSON form (see the module docstring)."""
    from ..errors import InvalidArgumentError
    from ..schema import AddField, ChangeType, RemoveField, RenameField

    if not isinstance(value, list):
        raise InvalidArgumentError("a migration is a JSON list of rules")
    rules: list[Any] = []
    for r in value:
        if not isinstance(r, dict):
            raise InvalidArgumentError(f"a migration rule is a JSON object, got {r!r:.80}")
        if "add" in r:
            rules.append(AddField(r["add"], r.get("default")))
        elif "remove" in r:
            rules.append(RemoveField(r["remove"], r.get("default")))
        elif "rename" in r and isinstance(r["rename"], list) and len(r["rename"]) == 2:
            rules.append(RenameField(*r["rename"]))
        elif "change_type" in r and {"to", "forward", "backward"} <= r.keys():
            rules.append(ChangeType(r["change_type"], r["to"], r["forward"], r["backward"]))
        else:
            raise InvalidArgumentError(f"unknown migration rule {r!r:.120}: use add, remove, rename or change_type")
    return tuple(rules)


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    import fsspec

    with fsspec.open(path, "rt") as f:
        return f.read()


def read_schema(text: str, kind: str) -> Any:
    """The schema a command line names (see the module docstring) as a :class:`~ddia_ray.schema.Schema`."""
    from ..errors import InvalidArgumentError
    from ..schema import from_arrow, from_record, parse

    if kind == "record":
        module, _, name = text.partition(":")
        if not module or not name:
            raise InvalidArgumentError(f"a record class is named module:Class, got {text!r}")
        return from_record(getattr(importlib.import_module(module), name))
    if kind == "arrow":
        import fsspec
        import pyarrow.dataset as ds

        fs, path = fsspec.core.url_to_fs(text)
        return from_arrow(ds.dataset(path, format="parquet", filesystem=fs).schema.remove_metadata())
    return parse("avro", _read_text(text))


def _client(args: argparse.Namespace) -> Any:
    """A client of the registry named by ``--name`` (the one place the command reaches Ray)."""
    from ..schema.registry import SchemaRegistry

    return SchemaRegistry.connect(args.name).client(timeout_s=args.timeout_s)


def run(args: argparse.Namespace) -> int:
    """Run ``ddia-ray schema ACTION``; returns 0, or 1 when the registry refused the request or a
    check found the schema would be refused (the reasons printed)."""
    from ..errors import DdiaRayError

    try:
        for module in args.imports:
            importlib.import_module(module)
        client = _client(args)
    except (DdiaRayError, ImportError) as e:
        print(f"ddia-ray schema: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        return _ACTIONS[args.action](client, args)
    except (DdiaRayError, OSError, ValueError) as e:
        print(f"ddia-ray schema {args.action}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _migration(args: argparse.Namespace) -> tuple | None:
    return None if args.migration is None else rules_from_json(json.loads(_read_text(args.migration)))


def _register(client: Any, args: argparse.Namespace) -> int:
    got = client.register(args.subject, read_schema(args.schema, args.kind), migration=_migration(args))
    if args.json:
        print(json.dumps({"subject": got.subject, "version": got.version, "id": got.id,
                          "fingerprint": got.fingerprint}))
    else:
        print(f"{got.subject} version {got.version} id {got.id} fingerprint {got.fingerprint[:16]}")
    return 0


def _check(client: Any, args: argparse.Namespace) -> int:
    mode, found, problems = client.explain(args.subject, read_schema(args.schema, args.kind),
                                           migration=_migration(args))
    ok = not found and not problems
    if args.json:
        print(json.dumps({"subject": args.subject, "mode": mode, "compatible": ok,
                          "incompatibilities": [{"path": i.path, "reason": i.reason, "kind": i.kind} for i in found],
                          "migration_problems": list(problems)}))
    else:
        print(f"{args.subject}: {'compatible' if ok else 'REFUSED'} under {mode}")
        for i in found:
            print(f"  {i.path}: {i.reason}")
        for p in problems:
            print(f"  migration: {p}")
    return 0 if ok else 1


def _versions(client: Any, args: argparse.Namespace) -> int:
    h = client.history(args.subject)
    for v in sorted(h.schemas):
        if v in h.deleted and not args.deleted:
            continue
        s, m = h.schemas[v], h.chain.get(v - 1)
        rules = [] if m is None else [repr(r) for r in m.rules]
        if args.json:
            print(json.dumps({"version": v, "id": h.ids[v], "fingerprint": s.fingerprint, "kind": s.kind,
                              "deleted": v in h.deleted, "fields": list(s.field_names()), "migration": rules}))
        else:
            flag = "  (deleted)" if v in h.deleted else ""
            print(f"version {v}  id {h.ids[v]}  {s.kind}  fingerprint {s.fingerprint[:16]}{flag}")
            print(f"  fields: {', '.join(s.field_names()) or s.to_json()}")
            if rules:
                print(f"  from {v - 1}: {'; '.join(rules)}")
    return 0


def _subjects(client: Any, args: argparse.Namespace) -> int:
    for s in client.subjects():
        print(json.dumps({"subject": s}) if args.json else s)
    return 0


def _compatibility(client: Any, args: argparse.Namespace) -> int:
    mode = args.mode
    if mode is not None:
        client.set_compatibility(mode, args.subject)
    else:
        mode = client.compatibility(args.subject)
    where = args.subject or "(global)"
    print(json.dumps({"subject": args.subject, "mode": mode}) if args.json else f"{where} {mode}")
    return 0


def _migrate(client: Any, args: argparse.Namespace) -> int:
    from ..schema.datasets import rewrite_dataset

    h = client.history(args.subject, args.to_version or 0)
    to = args.to_version or h.latest
    rows = rewrite_dataset(args.src, args.dst, h, to, from_version=args.from_version)
    print(json.dumps({"rows": rows, "version": to, "dst": args.dst}) if args.json
          else f"{rows} rows written at version {to} to {args.dst}")
    return 0


_ACTIONS = {"register": _register, "check": _check, "versions": _versions, "subjects": _subjects,
            "compatibility": _compatibility, "migrate": _migrate}
