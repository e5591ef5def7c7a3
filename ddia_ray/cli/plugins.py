"""``ddia-ray plugins``: the plugins installed in this environment, and whether each is compatible.

It discovers the entry points of group ``ddia_ray.plugins`` as any process does
(:func:`ddia_ray.plugins.PluginManager.discover`: import, version check,
extensions claimed), without initialising or starting any plugin, and with no
Ray: what it prints is what a driver or a worker of this environment would load.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run", "plugin_rows"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plugins`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    p = sub.add_parser("plugins", help="list the installed plugins and whether each is compatible",
                       description="Discover the plugins installed under the entry-point group ddia_ray.plugins "
                                   "and print, for each, what it provides, its version, the plugin API it "
                                   "wants and whether this ddia-ray accepts it (and why not). Plugins are "
                                   "loaded, not started.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 if any installed plugin is refused or failed")


def plugin_rows(statuses) -> list[dict]:
    """One plain dict per plugin status (what ``--json`` prints, and the table's rows)."""
    rows = []
    for s in statuses:
        rows.append({
            "name": s.name,
            "distribution": s.distribution,
            "version": s.version,
            "api_version": s.api_version,
            "compatible": s.compatible,
            "state": s.state,
            "provides": {k: list(v) for k, v in (s.provides or {}).items()},
            "entry_point": s.entry_point,
            "error": None if s.error is None else {"kind": s.error.kind, "message": s.error.message},
        })
    return rows


def run(args: argparse.Namespace) -> int:
    """Run ``ddia-ray plugins``; returns 0, or 1 with ``--strict`` when a plugin is refused or failed."""
    import json

    from ..plugins import PLUGIN_API, PluginManager, format_version

    manager = PluginManager()
    try:
        rows = plugin_rows(manager.discover())
    finally:
        # Listing must leave no trace in the registries of a process that goes on (a test, a notebook).
        for name in manager.names():
            manager.unregister(name)
    offered = format_version(PLUGIN_API)
    if args.json:
        print(json.dumps({"plugin_api": offered, "plugins": rows}, indent=2, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"ddia-ray plugins (plugin API {offered})")
        for col in ("plugin", "version", "API wanted", "compatible", "provides", "entry point"):
            table.add_column(col, overflow="fold")
        for r in rows:
            if r["error"] is None:
                verdict = "yes" if r["state"] != "failed" else "yes, but failed"
            else:
                verdict = ("no: " if not r["compatible"] else "failed: ") + r["error"]["message"]
            provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["provides"].items()) or "-"
            version = f"{r['distribution']} {r['version']}".strip() or "-"
            table.add_row(r["name"], version, r["api_version"] or "-", verdict, provides, r["entry_point"] or "-")
        console = Console()
        if rows:
            console.print(table)
        else:
            console.print(f"No plugins are installed (entry-point group ddia_ray.plugins; plugin API {offered}).")
    bad = [r for r in rows if not r["compatible"] or r["state"] == "failed"]
    return 1 if args.strict and bad else 0
