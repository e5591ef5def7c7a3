"""``ddia-ray conflicts``: concurrent writes behind a partition, resolved six ways over the same history.

The run (:func:`ddia_ray.demo.conflicts.run_conflicts`) prints progress lines, then a table comparing
LWW (writes lost), siblings (siblings per key, the application's merges), a resolver and three CRDTs
(counter, OR-set, text), the convergence time after healing and the store's own counts, and ends with
``conflicts: ok`` or ``conflicts: FAILED`` (exit status 0 only for ok).
"""

from __future__ import annotations

import argparse

from ._args import positive_float, positive_int
from ._run import verdict

__all__ = ["add_parser", "run", "region_list", "seconds"]


def region_list(text: str) -> tuple[str, ...]:
    """``us,eu,ap``: distinct region names (letters, digits, ``-``, ``_``), at least two."""
    regions = tuple(r.strip() for r in text.split(","))
    if len(regions) < 2 or len(set(regions)) != len(regions) or not all(
            r and len(r) <= 32 and r.replace("-", "").replace("_", "").isalnum() for r in regions):
        raise argparse.ArgumentTypeError(f"must be two or more distinct region names separated by commas "
                                         f"(letters, digits, '-', '_'), got {text!r}")
    return regions


def seconds(text: str) -> float:
    """A finite number of seconds, of either sign (a clock skew), or >= 0 where the option says so."""
    value = float(text)
    if value != value or abs(value) == float("inf") or abs(value) > 3600:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds within an hour, got {text}")
    return value


def _delay(text: str) -> float:
    value = seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``conflicts`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    cf = sub.add_parser(
        "conflicts",
        help="regions behind a partition write the same keys; LWW, siblings, a resolver and CRDTs compared",
        description=(
            "Launch one multi-leader store (a leader per region, --delay-s between regions, one region's clock "
            "skewed) whose key prefixes resolve conflicts differently: lww/ last writer wins, sib/ siblings, "
            "res/ the set_union resolver, cnt/ a PN-counter, set/ an OR-set and txt/ a text CRDT. The regions "
            "are cut apart and one client per region applies the same seeded steps to every prefix; then the "
            "partition heals, the replicas converge (the time is printed), the application merges the "
            "siblings, and the lost-update checker judges each prefix over the same history. The last line is "
            "'conflicts: ok' (converged; nothing lost but under LWW, and every LWW loss counted by the store) "
            "or 'conflicts: FAILED'; the exit status is 0 only for ok."
        ),
    )
    cf.add_argument("--regions", type=region_list, default=("us", "eu", "ap"),
                    help="comma-separated regions, one leader (or replica) each (default us,eu,ap)")
    cf.add_argument("--writes", type=positive_int, default=40,
                    help="steps per region; each writes every prefix once (default 40)")
    cf.add_argument("--keys", type=positive_int, default=4, help="keys per prefix the steps share (default 4)")
    cf.add_argument("--delay-s", type=_delay, default=0.05,
                    help="one-way network delay between regions in seconds (default 0.05)")
    cf.add_argument("--skew-s", type=seconds, default=-0.5,
                    help="clock offset of --skew-region in seconds; negative: its writes look older to LWW "
                         "(default -0.5)")
    cf.add_argument("--skew-region", default=None,
                    help="the region whose clock is skewed (default: the second of --regions)")
    cf.add_argument("--protocol", choices=["multi-leader", "leaderless"], default="multi-leader",
                    help="multi-leader (regions partitioned apart) or leaderless (replicas partitioned apart, "
                         "clients n=3 r=1 w=1) (default multi-leader)")
    cf.add_argument("--timeout-s", type=positive_float, default=5.0, help="a request's timeout (default 5)")
    cf.add_argument("--seed", type=int, default=0, help="seed for the steps (default 0)")
    cf.add_argument("--no-progress", action="store_true", help="no progress lines (for logs and Ray jobs)")


def run(args: argparse.Namespace) -> int:
    """``ddia-ray conflicts``: run the demonstration (it always shuts its store down), then the table and verdict."""
    import traceback

    from ..demo.conflicts import run_conflicts, summary_lines

    if args.skew_region is not None and args.skew_region not in args.regions:
        print(f"ddia-ray conflicts: --skew-region {args.skew_region!r} is not one of --regions {args.regions}")
        print("conflicts: FAILED", flush=True)
        return 2
    report = None
    try:
        report = run_conflicts(protocol=args.protocol, regions=args.regions, writes=args.writes, keys=args.keys,
                               delay_s=args.delay_s, skew_s=args.skew_s, skew_region=args.skew_region,
                               seed=args.seed, timeout_s=args.timeout_s,
                               progress=None if args.no_progress else lambda m: print(f"  {m}", flush=True))
    except Exception:  # noqa: BLE001 -- reported in full below; the verdict is then FAILED
        traceback.print_exc()
    return verdict("conflicts", "conflicts", report, summary_lines)
