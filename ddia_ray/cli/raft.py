"""``ddia-ray raft``: a RaftKV cluster under a Jepsen-style workload and a nemesis.

The run ends with the linearizability checker's verdict line, ``linearizable: yes``, ``NO`` or
``unknown``, and an exit status to match (0, 1, 2), so that scripts and CI can read it.
"""

from __future__ import annotations

import argparse
import sys

from ._args import positive_float, positive_int
from ._run import release

__all__ = ["add_parser", "run"]

# Member counts `ddia-ray raft` runs: a majority then survives one (3) or two (5) faulty members;
# an even count tolerates no more faults than the odd count below it.
_RAFT_MEMBER_COUNTS = (3, 5)


def _raft_members(text: str) -> int:
    """A member count ``ddia-ray raft`` runs: one of :data:`_RAFT_MEMBER_COUNTS`."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in _RAFT_MEMBER_COUNTS:
        raise argparse.ArgumentTypeError(
            f"must be 3 or 5 (an odd cluster whose majority survives one or two faulty members), got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``raft`` subcommand to the subparsers ``sub`` of ``ddia-ray``."""
    from ..kv.workload import SCHEDULES

    raft = sub.add_parser(
        "raft",
        help="a 3- or 5-member RaftKV under a Jepsen-style workload and a nemesis, checked for linearizability",
        description=(
            "Launch a RaftKV cluster (Raft-replicated key-value store), run concurrent clients doing read, "
            "write and compare-and-set on a few keys while a nemesis partitions, kills or pauses members "
            "(the leader included), then print throughput, latency percentiles, the elections seen, the faults "
            "applied and the linearizability checker's verdict. The last line is 'linearizable: yes', "
            "'linearizable: NO' or 'linearizable: unknown'; the exit status is 0 only for yes "
            "(1 for NO, 2 for unknown)."
        ),
    )
    raft.add_argument("--members", type=_raft_members, default=3, metavar="{3,5}",
                      help="RaftKV members (3 or 5; default 3)")
    raft.add_argument("--clients", type=positive_int, default=4,
                      help="concurrent client sessions (default 4)")
    raft.add_argument("--keys", type=positive_int, default=3,
                      help="keys the clients share; few keys make more conflicts to check (default 3)")
    raft.add_argument("--duration-s", type=positive_float, default=10.0,
                      help="seconds of workload before the final repair and the check (default 10)")
    raft.add_argument("--schedule", choices=SCHEDULES, default="mixed", metavar="NAME",
                      help="nemesis schedule, applied in cycles of fault, wait, repair: "
                           f"{', '.join(SCHEDULES)} (default mixed: a random fault each cycle)")
    raft.add_argument("--seed", type=int, default=0, help="seed for the clients, the nemesis and Raft (default 0)")
    raft.add_argument("--root", default=None,
                      help="fsspec URL for the members' durable logs (default: a temporary directory, removed "
                           "at the end)")
    raft.add_argument("--tick-s", type=positive_float, default=0.02,
                      help="Raft tick in seconds; an election starts after about 10 ticks without a leader "
                           "(default 0.02)")
    raft.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")


def run(args: argparse.Namespace) -> int:
    """``ddia-ray raft``: launch, run the workload, always shut down, then the summary and the verdict line."""
    import gc
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..kv.cluster import RaftKV
    from ..kv.report import VERDICTS, exit_status, summary_lines
    from ..kv.workload import run_workload
    from ..runtime import ensure_ray

    console = Console()
    ensure_ray()
    tmp = None if args.root else tempfile.mkdtemp(prefix="ddia-ray-raft-")
    root = args.root or f"file://{tmp}"
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                        TextColumn("{task.completed:5.1f}/{task.total:g} s"), TextColumn("ops ok {task.fields[ops]}"),
                        TimeElapsedColumn(), console=console, disable=args.no_progress)
    cluster = None
    try:
        started = time.monotonic()
        cluster = RaftKV.launch(args.members, root=root, tick_s=args.tick_s, seed=args.seed)
        console.print(f"[bold]ddia-ray raft[/]: {args.members} members in group {escape(cluster.group.name)!r}, "
                      f"schedule {args.schedule}, {args.clients} clients on {args.keys} keys for "
                      f"{args.duration_s:g} s, seed {args.seed}, logs under {escape(root)}", soft_wrap=True)
        leader = cluster.leader()
        console.print(f"  leader {escape(leader)} elected after {time.monotonic() - started:.1f} s", soft_wrap=True)
        with progress:
            task = progress.add_task("workload", total=args.duration_s, ops=0)

            def on_progress(now_s: float, ops_done: int) -> None:
                progress.update(task, completed=min(now_s, args.duration_s), ops=ops_done)

            report = run_workload(cluster, clients=args.clients, keys=args.keys, duration_s=args.duration_s,
                                  schedule=args.schedule, seed=args.seed, progress=on_progress)
            # The bar stopped at the last sample; the clients' last operations finished after it.
            progress.update(task, completed=args.duration_s, ops=report.ok)
    except Exception:  # noqa: BLE001 -- reported in full below; the verdict is then unknown
        traceback.print_exc()
        report = None
    finally:
        release(cluster, tmp)
    # The clients' stopped event loops still hold tasks; asyncio complains about them on stderr when they
    # are collected. Collect now so that those lines come before the summary, never after the verdict.
    gc.collect()
    if report is None:
        word, status = VERDICTS[None]
        print("ddia-ray raft: the run did not complete (traceback above), so nothing was checked", file=sys.stderr)
        print(f"linearizable: {word}", flush=True)
        return status
    print("\n".join(summary_lines(report)), flush=True)
    return exit_status(report)
