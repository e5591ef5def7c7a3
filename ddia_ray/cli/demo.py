"""``ddia-ray demo``: the storage part, then the balancer part, each under faults.

The storage part crashes a storage node and checks that a new one recovers every acknowledged
write; the balancer part drives load through a balancer while a replica is killed and another
partitioned. The exit status is 0 only if neither part lost anything.
"""

from __future__ import annotations

import argparse

from ._args import positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    demo = sub.add_parser(
        "demo",
        help="replicas behind a balancer with breakers and retries, under a kill and a partition",
        description=(
            "Storage part: load a storage node (LSM engine), read and scan it, crash it with ray.kill and "
            "check that a new node recovers every acknowledged write. Balancer part: start a pool of "
            "replica actors behind a balancer (circuit breakers, retries, outlier "
            "ejection, phi-accrual health checks), drive load, kill one replica and partition another "
            "part-way through, then print load per replica, breaker transitions, retries and the "
            "requests the client lost (the goal: none)."
        ),
    )
    demo.add_argument("--replicas", type=positive_int, default=4, help="replica actors in the pool (>= 3; default 4)")
    demo.add_argument("--requests", type=positive_int, default=10000, help="requests to send (default 10000)")
    demo.add_argument("--batch", type=positive_int, default=20,
                      help="requests per balancer call; the balancer batches per replica (default 20)")
    demo.add_argument("--concurrency", type=positive_int, default=4,
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
    demo.add_argument("--keys", type=positive_int, default=50_000, help="keys the storage part loads (default 50000)")
    demo.add_argument("--storage-root", default=None,
                      help="fsspec URL of the storage part's database (default: a temporary directory)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")


def run(args: argparse.Namespace) -> int:
    """Run ``ddia-ray demo``; 0 when no write and no request was lost, else 1."""
    from ..demo.run import check_demo_args, run_demo
    from ..demo.storage import run_storage_demo

    if args.part in ("all", "balancer"):
        check_demo_args(args)  # before the storage part starts Ray and runs: a bad option fails at once
    writes_lost = run_storage_demo(args) if args.part in ("all", "storage") else 0
    requests_failed = run_demo(args) if args.part in ("all", "balancer") else 0
    return 0 if writes_lost == 0 and requests_failed == 0 else 1
