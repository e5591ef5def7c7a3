"""``ddia-ray info``: the Ray cluster ``ddia-ray`` connects to, its nodes and resources."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``info`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    info = sub.add_parser("info", help="show the Ray cluster ddia-ray connects to",
                          description="Connect (or start a local Ray) and print nodes and resources.")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run ``ddia-ray info``: print the live nodes and their resources, as a table or ``--json``; returns 0."""
    import json

    from ..runtime import NAMESPACE, ensure_ray

    ray = ensure_ray()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    data = {
        "namespace": NAMESPACE,
        "address": ray.get_runtime_context().gcs_address,
        "nodes": [{"id": n["NodeID"][:12], "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in nodes],
        "resources": ray.cluster_resources(),
    }
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Ray at {data['address']} (namespace {NAMESPACE})")
        for col in ("node", "ip", "CPU", "memory GiB"):
            table.add_column(col)
        for n in data["nodes"]:
            r = n["resources"]
            table.add_row(n["id"], n["ip"], str(r.get("CPU", 0)), f"{r.get('memory', 0) / 2**30:.1f}")
        Console().print(table)
    return 0
