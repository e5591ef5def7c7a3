"""``ddia-ray config``: get, set, delete, watch, history and rollback against a running configuration store.

The store is found by name on the Ray cluster (:meth:`ddia_ray.config.ConfigStore.connect`;
``RAY_ADDRESS`` names the cluster). Values given on the command line are read as JSON when they
parse as JSON (``5``, ``true``, ``{"ttl_s": 30}``) and as a string otherwise (``--string`` forces a
string); values are printed as JSON. Each key-value line carries the key's revisions, as
``etcdctl get -w fields`` shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ._args import positive_int

__all__ = ["add_parser", "run", "parse_value", "format_kv", "format_event"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``config`` subcommand (and its actions) to the subparsers ``sub`` of ``ddia-ray``."""
    p = sub.add_parser("config", help="read, write and watch a running configuration store",
                       description="Get, set, delete, watch, list the history of, and roll back keys of a running "
                                   "configuration store (ddia_ray.config.ConfigStore), found by --name on the Ray "
                                   "cluster (RAY_ADDRESS).")
    p.add_argument("--name", required=True, help="the configuration store's name (as launched)")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--timeout-s", type=float, default=30.0, help="how long a call waits for the store")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = actions.add_parser("get", help="print a key (or every key under a prefix)")
    g.add_argument("key")
    g.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    g.add_argument("--revision", type=positive_int, default=None, help="as of this revision (default: now)")
    s = actions.add_parser("set", help="set a key; prints the new revision")
    s.add_argument("key")
    s.add_argument("value", help="JSON (5, true, {\"a\": 1}), or a string if it is not JSON")
    s.add_argument("--string", action="store_true", help="store VALUE as a string even if it parses as JSON")
    s.add_argument("--lease", type=positive_int, default=0, help="attach the key to this lease")
    d = actions.add_parser("delete", help="delete a key (or every key under a prefix); prints the revision")
    d.add_argument("key")
    d.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    w = actions.add_parser("watch", help="print changes of a key (or prefix) until Ctrl-C or --count events")
    w.add_argument("key")
    w.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    w.add_argument("--from-revision", type=positive_int, default=None,
                   help="replay the changes from this revision first (default: only new changes)")
    w.add_argument("--count", type=positive_int, default=None, help="stop after this many events")
    h = actions.add_parser("history", help="print a key's changes still kept, oldest first")
    h.add_argument("key")
    h.add_argument("--limit", type=positive_int, default=100, help="the newest LIMIT changes")
    r = actions.add_parser("rollback", help="write every key back as it was at REVISION (one new revision)")
    r.add_argument("revision", type=positive_int)


def parse_value(text: str, *, string: bool = False) -> Any:
    """A command-line value: its JSON reading if it has one (and ``string`` is not set), else the text."""
    if string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)  # a record: its repr names its class and fields


def format_kv(kv: Any, *, as_json: bool = False) -> str:
    """One key-value line: ``key = value`` and its revisions (or a JSON object)."""
    fields = {"key": kv.key, "value": _jsonable(kv.value), "create_revision": kv.create_revision,
              "mod_revision": kv.mod_revision, "version": kv.version, "lease": kv.lease}
    if as_json:
        return json.dumps(fields, sort_keys=True)
    if kv.version == 0:
        return f"{kv.key} deleted  (revision {kv.mod_revision})"
    lease = f", lease {kv.lease}" if kv.lease else ""
    return (f"{kv.key} = {json.dumps(fields['value'])}  (revision {kv.mod_revision}, version {kv.version}, "
            f"created {kv.create_revision}{lease})")


def format_event(event: Any, *, as_json: bool = False) -> str:
    """One watch event line: ``PUT``/``DELETE``, its revision, the key and the value."""
    if as_json:
        prev = None if event.prev is None else _jsonable(event.prev.value)
        return json.dumps({"kind": event.kind, "revision": event.revision, "key": event.kv.key,
                           "value": _jsonable(event.kv.value), "version": event.kv.version, "prev": prev},
                          sort_keys=True)
    if event.kind == "delete":
        return f"{event.revision} DELETE {event.kv.key}"
    return f"{event.revision} PUT {event.kv.key} = {json.dumps(_jsonable(event.kv.value))}"


def _client(args: argparse.Namespace) -> Any:
    """A client of the store named by ``--name`` (the one place the command reaches Ray)."""
    from ..config import ConfigStore

    return ConfigStore.connect(args.name).client(timeout_s=args.timeout_s)


def run(args: argparse.Namespace) -> int:
    """Run ``ddia-ray config ACTION``; returns 0, or 1 when a key to get has no value or the store
    refused the request (its error printed)."""
    from ..errors import DdiaRayError

    try:
        client = _client(args)
    except DdiaRayError as e:
        print(f"ddia-ray config: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        return _ACTIONS[args.action](client, args)
    except DdiaRayError as e:
        print(f"ddia-ray config {args.action}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _get(client: Any, args: argparse.Namespace) -> int:
    if args.prefix:
        kvs = client.get_prefix(args.key, revision=args.revision, limit=1_000_000)
    else:
        kv = client.get(args.key, revision=args.revision)
        kvs = [] if kv is None else [kv]
    for kv in kvs:
        print(format_kv(kv, as_json=args.json))
    if not kvs:
        print(f"ddia-ray config get: no key {'under ' if args.prefix else ''}{args.key!r}", file=sys.stderr)
        return 1
    return 0


def _set(client: Any, args: argparse.Namespace) -> int:
    revision = client.put(args.key, parse_value(args.value, string=args.string), lease=args.lease)
    print(json.dumps({"revision": revision}) if args.json else revision)
    return 0


def _delete(client: Any, args: argparse.Namespace) -> int:
    revision = client.delete_prefix(args.key) if args.prefix else client.delete(args.key)
    print(json.dumps({"revision": revision}) if args.json else revision)
    return 0


def _watch(client: Any, args: argparse.Namespace) -> int:
    done = threading.Event()
    seen = [0]
    failed: list[BaseException] = []

    def show(events: list) -> None:
        for e in events:
            if done.is_set():
                return
            print(format_event(e, as_json=args.json), flush=True)
            seen[0] += 1
            if args.count is not None and seen[0] >= args.count:
                done.set()

    def stopped(error: BaseException) -> None:
        failed.append(error)
        done.set()

    w = client.watch(args.key, show, prefix=args.prefix, start_revision=args.from_revision, on_error=stopped)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        w.cancel()
    if failed:
        print(f"ddia-ray config watch: {type(failed[0]).__name__}: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def _history(client: Any, args: argparse.Namespace) -> int:
    for kv in client.history(args.key, limit=args.limit):
        print(format_kv(kv, as_json=args.json))
    return 0


def _rollback(client: Any, args: argparse.Namespace) -> int:
    revision = client.rollback(args.revision)
    print(json.dumps({"revision": revision}) if args.json else revision)
    return 0


_ACTIONS = {"get": _get, "set": _set, "delete": _delete, "watch": _watch, "history": _history,
            "rollback": _rollback}
