"""``ddia-ray replicate``: a replicated store under a workload and a nemesis.

The run prints lag, failovers and the acknowledged writes lost, and ends with the verdict line
``replication: ok`` or ``replication: FAILED`` (exit status 0 only for ok).
"""

from __future__ import annotations

import argparse

from ._args import positive_float, positive_int
from ._run import release, verdict

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replicate`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    from ..kv.workload import SCHEDULES

    repl = sub.add_parser(
        "replicate",
        help="a leader-follower replica group under a workload and a nemesis, with lag, failovers and losses",
        description=(
            "Launch a replicated store (replicas over a storage engine, plus the coordination service that "
            "holds the leader's lease), run concurrent client sessions writing and reading while a nemesis "
            "partitions, kills or pauses replicas (the leader included), then print throughput, latency "
            "percentiles, replication lag over time, the failovers, the acknowledged writes lost (against what "
            "the mode allows) and the checkers' verdicts. The last line is 'replication: ok' or "
            "'replication: FAILED'; the exit status is 0 only for ok."
        ),
    )
    repl.add_argument("--protocol", choices=["leader-follower", "raft"], default="leader-follower",
                      help="replication protocol (default leader-follower); under raft --mode does not apply and "
                           "the shared-key history is also checked for linearizability")
    repl.add_argument("--mode", choices=["sync", "semi-sync", "async"], default="semi-sync",
                      help="when a write is acknowledged: every follower, --sync-replicas of them, or the leader "
                           "alone (default semi-sync)")
    repl.add_argument("--sync-replicas", type=positive_int, default=1,
                      help="followers that acknowledge a semi-sync write (default 1)")
    repl.add_argument("--replicas", type=positive_int, default=3, help="replicas (default 3)")
    repl.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                      help="where each replica keeps its data (default lsm)")
    repl.add_argument("--read", choices=["session", "leader", "linearizable", "follower"], default=None,
                      help="how the clients read (default: session under leader-follower, read-your-writes and "
                           "monotonic reads; linearizable under raft, checked for linearizability)")
    repl.add_argument("--clients", type=positive_int, default=4, help="concurrent client sessions (default 4)")
    repl.add_argument("--keys", type=positive_int, default=3, help="shared keys the sessions write and read "
                                                                    "(default 3)")
    repl.add_argument("--duration-s", type=positive_float, default=10.0,
                      help="seconds of workload before the final repair and the checks (default 10)")
    repl.add_argument("--schedule", choices=SCHEDULES, default="mixed", metavar="NAME",
                      help=f"nemesis schedule: {', '.join(SCHEDULES)} (default mixed)")
    repl.add_argument("--lease-s", type=positive_float, default=1.0,
                      help="the leader's lease; a failover takes about 1.5 leases (default 1)")
    repl.add_argument("--seed", type=int, default=0, help="seed for the clients and the nemesis (default 0)")
    repl.add_argument("--root", default=None,
                      help="fsspec URL for logs and engines (default: a temporary directory, removed at the end)")
    repl.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")


def run(args: argparse.Namespace) -> int:
    """``ddia-ray replicate``: launch, run the workload, always shut down, then the summary and the verdict line."""
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import ConfigError
    from ..replication import ReplicatedStore
    from ..replication.leader_follower import check_sync_replicas
    from ..replication.report import summary_lines
    from ..replication.workload import run_workload
    from ..runtime import ensure_ray

    console = Console()
    if args.protocol == "leader-follower":
        try:  # before Ray starts: a count the store would refuse fails at once
            check_sync_replicas(args.mode, args.sync_replicas, args.replicas - 1)
        except ConfigError as e:
            console.print(f"ddia-ray replicate: {escape(str(e))}")
            console.print("replicate: FAILED")
            return 2
    ensure_ray()
    tmp = None if args.root else tempfile.mkdtemp(prefix="ddia-ray-replicate-")
    root = args.root or f"file://{tmp}"
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                        TextColumn("{task.completed:5.1f}/{task.total:g} s"), TextColumn("ops ok {task.fields[ops]}"),
                        TimeElapsedColumn(), console=console, disable=args.no_progress)
    store = None
    report = None
    try:
        started = time.monotonic()
        mode = None if args.protocol == "raft" else args.mode
        args.read = args.read or ("linearizable" if args.protocol == "raft" else "session")
        store = ReplicatedStore.launch(replicas=args.replicas, protocol=args.protocol, mode=mode,
                                       sync_replicas=args.sync_replicas, engine=args.engine, root=root,
                                       lease_s=args.lease_s, seed=args.seed)
        console.print(f"[bold]ddia-ray replicate[/]: {args.replicas} replicas ({store.mode}, {args.engine}) in "
                      f"{escape(store.name)!r}, schedule {args.schedule}, {args.clients} clients reading "
                      f"{args.read} for {args.duration_s:g} s, seed {args.seed}, data under {escape(root)}",
                      soft_wrap=True)
        leader = store.leader()
        console.print(f"  leader {escape(leader)} after {time.monotonic() - started:.1f} s", soft_wrap=True)
        with progress:
            task = progress.add_task("workload", total=args.duration_s, ops=0)

            def on_progress(now_s: float, ops_done: int) -> None:
                progress.update(task, completed=min(now_s, args.duration_s), ops=ops_done)

            report = run_workload(store, clients=args.clients, keys=args.keys, duration_s=args.duration_s,
                                  schedule=args.schedule, read=args.read, seed=args.seed, progress=on_progress)
            progress.update(task, completed=args.duration_s, ops=report.writes_ok + report.reads_ok)
    except Exception:  # noqa: BLE001 -- reported in full below; the verdict is then FAILED
        traceback.print_exc()
    finally:
        release(store, tmp)
    return verdict("replicate", "replication", report, summary_lines)
