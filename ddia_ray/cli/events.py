"""``ddia-ray events``: an order-processing workload on the event store under faults.

The run prints progress lines, then rates, lags and the checkers' verdicts, and ends with
``events: ok`` or ``events: FAILED`` (exit status 0 only for ok).
"""

from __future__ import annotations

import argparse

from ._args import positive_float, positive_int
from ._run import release, verdict

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``events`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    from ..events.workload import CYCLE
    from ..kv.workload import SCHEDULES

    ev = sub.add_parser(
        "events",
        help="an order-processing workload on the event store under faults: aggregates, a projection, a "
             "consumer group",
        description=(
            "Launch an event store (a Raft group over the LSM engine), run client threads executing the "
            "seed's Order commands through a repository (expected-version conflicts retried), a projection "
            "of orders per status and a consumer group of two competing consumers, while a fault schedule "
            f"kills, pauses and partitions members (cycle: {', '.join(CYCLE)}). Prints progress, then "
            "appends/s, commands/s, conflicts, lags, redeliveries, the faults and the checkers' verdicts "
            "(events lost, $all gap-free, projection equals a fold from scratch, every paid order settled). "
            "The last line is 'events: ok' or 'events: FAILED'; the exit status is 0 only for ok."
        ),
    )
    ev.add_argument("--replicas", type=positive_int, default=3, help="Raft members (default 3)")
    ev.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                    help="where each member keeps its rows (default lsm)")
    ev.add_argument("--clients", type=positive_int, default=4, help="command threads (default 4)")
    ev.add_argument("--orders", type=positive_int, default=None,
                    help="orders open at once, shared by the threads (default 2 x clients: they conflict)")
    ev.add_argument("--duration-s", type=positive_float, default=15.0,
                    help="seconds of workload before the repair, the catch-up and the checks (default 15)")
    ev.add_argument("--schedule", choices=("cycle", *[s for s in SCHEDULES if s != "replace-follower"]),
                    default="cycle", metavar="NAME", help="fault schedule: cycle (each fault in turn) or one of "
                                                          "the raft schedules (default cycle)")
    ev.add_argument("--faults", action=argparse.BooleanOptionalAction, default=True,
                    help="inject faults (--no-faults: the schedule none)")
    ev.add_argument("--seed", type=int, default=0, help="seed for the commands and the faults (default 0)")
    ev.add_argument("--root", default=None,
                    help="fsspec URL for logs and engines (default: a temporary directory, removed at the end)")
    ev.add_argument("--no-progress", action="store_true", help="no progress lines (for logs and Ray jobs)")


def run(args: argparse.Namespace) -> int:
    """``ddia-ray events``: launch, run the workload, always shut down, then the summary and the verdict lines."""
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape

    from ..events.report import max_lags, summary_lines
    from ..events.store import EventStore
    from ..events.workload import run_workload
    from ..runtime import ensure_ray

    console = Console()
    ensure_ray()
    tmp = None if args.root else tempfile.mkdtemp(prefix="ddia-ray-events-")
    root = args.root or f"file://{tmp}"
    schedule = args.schedule if args.faults else "none"
    store = None
    report = None
    try:
        started = time.monotonic()
        store = EventStore.launch(replicas=args.replicas, root=root, engine=args.engine)
        console.print(f"[bold]ddia-ray events[/]: {args.replicas} Raft members ({args.engine}) in "
                      f"{escape(store.name)!r}, schedule {schedule}, {args.clients} clients for {args.duration_s:g} s, "
                      f"seed {args.seed}, data under {escape(root)} (leader {store.leader()} after "
                      f"{time.monotonic() - started:.1f} s)", soft_wrap=True)
        printed = [-1]

        def on_progress(now_s: float, rep) -> None:
            # A line every 2 s, not a redrawn bar: it reads the same in a terminal and in a job's log.
            if args.no_progress or not rep.samples or int(now_s // 2) == printed[0]:
                return
            printed[0] = int(now_s // 2)
            t, end, proj, proj_s, group, group_s = rep.samples[-1]
            faults = [w for _, w in rep.faults if w != "repair"]
            console.print(f"  {t:5.1f} s  events {end:6d}  projection lag {proj:4d} ev {proj_s:5.2f} s  billing lag "
                          f"{group:4d} ev {group_s:5.2f} s  faults {len(faults)} (last: "
                          f"{escape(faults[-1]) if faults else '-'})",
                          soft_wrap=True)

        report = run_workload(store, clients=args.clients, duration_s=args.duration_s, schedule=schedule,
                              seed=args.seed, orders=args.orders, progress=on_progress)
        if not args.no_progress:
            lags = max_lags(report)
            console.print(f"  caught up: projection and billing at the end of $all ({report.events_total} events; "
                          f"max lag {lags['projection_events']} / {lags['group_events']} events)", soft_wrap=True)
    except Exception:  # noqa: BLE001 -- reported in full below; the verdict is then FAILED
        traceback.print_exc()
    finally:
        release(store, tmp)
    return verdict("events", "events", report, summary_lines)
