"""``ddia-ray partition``: a range-partitioned store under skew, a split and a move.

The run shows the write load per partition live, then the load before and after, the move's
report and the checkers' verdicts, and ends with ``partitioning: ok`` or ``partitioning: FAILED``
(exit status 0 only for ok).
"""

from __future__ import annotations

import argparse

from ._args import positive_float, positive_int
from ._run import release, verdict

__all__ = ["add_parser", "run"]


def _partition_groups(text: str) -> int:
    """A number of replica groups, 2 to 8: a move needs a group to leave and one to join."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be 2 to 8 replica groups (a move needs two), got {text}")
    return value


def _skew(text: str) -> float:
    """A Zipf exponent: a finite number >= 0 (0 spreads the keys evenly)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a Zipf exponent >= 0, got {text}")
    return value


# The split comes at 30% of the run and the move at least a second after it; below this, no load is
# left to measure after the move.
_PARTITION_DURATION_S_MIN = 4.0


def _partition_duration(text: str) -> float:
    """A workload duration in seconds, at least :data:`_PARTITION_DURATION_S_MIN`."""
    value = positive_float(text)
    if value < _PARTITION_DURATION_S_MIN:
        raise argparse.ArgumentTypeError(f"must be at least {_PARTITION_DURATION_S_MIN:g} seconds (a split, then a "
                                         f"move, then load to measure), got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``partition`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    from ..partitioning.demo import FAULTS as PARTITION_FAULTS

    part = sub.add_parser(
        "partition",
        help="a range-partitioned store loaded with skew, its hot partition split and one moved under load",
        description=(
            "Launch a range-partitioned store (replica groups, and the coordination service holding the "
            "partition map), load keys skewed towards one key range (Zipf), then run a Jepsen-style workload "
            "with a hot-spot writer while the hottest partition is split and a partition is moved to the least "
            "loaded group (a fault hitting the group it leaves), showing the write load per partition live. "
            "Then print the load per partition before and after, the move's report (keys copied, writes "
            "frozen), every loaded key read back, and the checkers' verdicts. The last line is "
            "'partitioning: ok' or 'partitioning: FAILED'; the exit status is 0 only for ok."
        ),
    )
    part.add_argument("--groups", type=_partition_groups, default=2,
                      help="replica groups (2 to 8); the store starts with two partitions per group (default 2)")
    part.add_argument("--replicas", type=positive_int, default=3, help="replicas per group (default 3)")
    part.add_argument("--protocol", choices=["raft", "leader-follower"], default="raft",
                      help="replication inside each group (default raft, whose histories are also checked for "
                           "linearizability); leader-follower groups run semi-sync")
    part.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                      help="where each replica keeps its data (default lsm)")
    part.add_argument("--keys", type=positive_int, default=2000, help="keys loaded before the workload (default 2000)")
    part.add_argument("--skew", type=_skew, default=1.0,
                      help="Zipf exponent of the keys' first hex digit; 0 spreads keys evenly (default 1: six "
                           "keys in ten in the first of four partitions)")
    part.add_argument("--clients", type=positive_int, default=3,
                      help="concurrent workload clients, besides the hot-spot writer (default 3)")
    part.add_argument("--duration-s", type=_partition_duration, default=20.0,
                      help="seconds of workload (at least 4): the split comes at 30%% of it, the move at least a "
                           "second later (default 20)")
    part.add_argument("--fault", choices=PARTITION_FAULTS, default="kill-leader",
                      help="what hits the moving partition's source group while it moves (default kill-leader)")
    part.add_argument("--fault-s", type=positive_float, default=2.0,
                      help="seconds before the fault is repaired (default 2)")
    part.add_argument("--seed", type=int, default=0, help="seed for the keys, the writers and the workload "
                                                         "(default 0)")
    part.add_argument("--root", default=None,
                      help="fsspec URL for logs and engines (default: a temporary directory, removed at the end)")
    part.add_argument("--no-progress", action="store_true", help="no live load table (for logs and Ray jobs)")


def _partition_view(report, now_s: float):
    """The live view of ``ddia-ray partition``: the phase, then the write load per partition lately."""
    from rich.console import Group
    from rich.table import Table

    from ..partitioning.demo import group_rows, load_rates, load_rows

    if report.phase == "load":
        return Group(f"loading {report.loaded}/{report.keys} skewed keys  {now_s:5.1f} s")
    rates = load_rates(list(report.load), now_s - 1.5, now_s)
    table = Table(title=f"writes per second, last 1.5 s (workload {now_s:5.1f}/{report.duration_s:g} s)",
                  title_justify="left")
    for col in ("partition", "range", "group", "writes/s", "share"):
        table.add_column(col, justify="right" if col in ("partition", "writes/s") else "left")
    for pid, span, group, r, share in load_rows(report.partition_map, rates, report.store):
        table.add_row(str(pid), span, group, f"{r:.1f}", f"{'█' * round(20 * share):20} {share:4.0%}")
    groups = ", ".join(f"{g} {share:.0%}" for g, _, share in group_rows(report.partition_map, rates, report.store))
    events = [f"  {t:6.2f} s  {what}" for t, what in sorted(report.events)[-4:]]
    return Group(table, f"groups: {groups}", *events)


def run(args: argparse.Namespace) -> int:
    """``ddia-ray partition``: launch, load, run with a split and a move, always shut down, then the summary."""
    import contextlib
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.live import Live
    from rich.markup import escape

    from ..partitioning import PartitionedStore
    from ..partitioning.demo import hex_boundaries, run_demo, summary_lines
    from ..runtime import ensure_ray

    console = Console()
    ensure_ray()
    tmp = None if args.root else tempfile.mkdtemp(prefix="ddia-ray-partition-")
    root = args.root or f"file://{tmp}"
    store = None
    report = None
    try:
        started = time.monotonic()
        # Two partitions per group, cut at even ranges of the keys' first hex digit; leader-follower
        # groups run semi-sync so that the leader kill loses no acknowledged write.
        store = PartitionedStore.launch(scheme="range", boundaries=hex_boundaries(2 * args.groups),
                                        groups=args.groups, replicas=args.replicas, protocol=args.protocol,
                                        mode="semi-sync" if args.protocol == "leader-follower" else None,
                                        engine=args.engine, root=root)
        console.print(f"[bold]ddia-ray partition[/]: {args.groups} groups x {args.replicas} replicas "
                      f"({args.protocol}, {args.engine}) in {escape(store.name)!r}, {args.keys} keys with skew "
                      f"{args.skew:g}, {args.clients} clients for {args.duration_s:g} s, fault {args.fault}, "
                      f"seed {args.seed}, data under {escape(root)} (up after {time.monotonic() - started:.1f} s)",
                      soft_wrap=True)
        live = Live(console=console, auto_refresh=False)

        def on_progress(rep, now_s: float) -> None:
            live.update(_partition_view(rep, now_s), refresh=True)

        with contextlib.nullcontext() if args.no_progress else live:
            report = run_demo(store, keys=args.keys, skew=args.skew, clients=args.clients,
                              duration_s=args.duration_s, seed=args.seed, fault=args.fault, fault_s=args.fault_s,
                              progress=None if args.no_progress else on_progress)
        if not args.no_progress and not console.is_terminal:
            console.line()  # Live ends its last frame with a new line on a terminal only
    except Exception:  # noqa: BLE001 -- reported in full below; the verdict is then FAILED
        traceback.print_exc()
    finally:
        release(store, tmp)
    return verdict("partition", "partitioning", report, summary_lines)
