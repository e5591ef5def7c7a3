"""The ``ddia-ray`` command line.

Every subcommand has ``--help``. Subcommands connect to Ray through
:func:`ddia_ray.runtime.ensure_ray`: ``RAY_ADDRESS`` joins a cluster, otherwise
a local Ray is started on demand and stopped at exit.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ddia-ray`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ddia-ray",
        description="Designing Data-Intensive Applications patterns as fault-tolerant building blocks on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="replicas behind a balancer with breakers and retries, under a kill and a partition",
        description=(
            "Storage part: load a storage node (LSM engine), read and scan it, crash it with ray.kill and "
            "check that a new node recovers every acknowledged write. Balancer part: start a pool of replica actors behind a balancer (circuit breakers, retries, outlier "
            "ejection, phi-accrual health checks), drive load, kill one replica and partition another "
            "part-way through, then print load per replica, breaker transitions, retries and the "
            "requests the client lost (the goal: none)."
        ),
    )
    demo.add_argument("--replicas", type=_positive_int, default=4, help="replica actors in the pool (>= 3; default 4)")
    demo.add_argument("--requests", type=_positive_int, default=10000, help="requests to send (default 10000)")
    demo.add_argument("--batch", type=_positive_int, default=20,
                      help="requests per balancer call; the balancer batches per replica (default 20)")
    demo.add_argument("--concurrency", type=_positive_int, default=4,
                      help="balancer calls in flight at once (default 4)")
    demo.add_argument("--picker", default="least_connections",
                      choices=["round_robin", "weighted_round_robin", "least_connections", "power_of_two",
                               "consistent_hash"], help="load-balancing policy (default least_connections)")
    demo.add_argument("--seed", type=int, default=0, help="seed for the picker and the network (default 0)")
    demo.add_argument("--root", default=None,
                      help="fsspec URL for the replicas' durable records (default: a temporary directory)")
    demo.add_argument("--no-faults", action="store_true", help="skip the kill and the partition")
    demo.add_argument("--part", choices=["all", "balancer", "storage"], default="all",
                      help="run the storage part (load, reads, scan, crash, recovery), the balancer part, or both "
                           "(default all: storage first, then the balancer)")
    demo.add_argument("--keys", type=_positive_int, default=50_000, help="keys the storage part loads (default 50000)")
    demo.add_argument("--storage-root", default=None,
                      help="fsspec URL of the storage part's database (default: a temporary directory)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")

    info = sub.add_parser("info", help="show the Ray cluster ddia-ray connects to",
                          description="Connect (or start a local Ray) and print nodes and resources.")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _info(args) -> int:
    import json

    from .runtime import NAMESPACE, ensure_ray

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


def main(argv: list[str] | None = None) -> int:
    """Run ``ddia-ray``; returns the process exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from .demo.run import run_demo
        from .demo.storage import run_storage_demo

        writes_lost = run_storage_demo(args) if args.part in ("all", "storage") else 0
        requests_failed = run_demo(args) if args.part in ("all", "balancer") else 0
        return 0 if writes_lost == 0 and requests_failed == 0 else 1
    return _info(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
