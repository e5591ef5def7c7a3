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


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


# Member counts `ddia-ray raft` runs: a majority then survives one (3) or two (5) faulty members;
# an even count tolerates no more faults than the odd count below it.
_RAFT_MEMBER_COUNTS = (3, 5)


def _raft_members(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in _RAFT_MEMBER_COUNTS:
        raise argparse.ArgumentTypeError(
            f"must be 3 or 5 (an odd cluster whose majority survives one or two faulty members), got {text}")
    return value


def _partition_groups(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be 2 to 8 replica groups (a move needs two), got {text}")
    return value


def _skew(text: str) -> float:
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
    value = _positive_float(text)
    if value < _PARTITION_DURATION_S_MIN:
        raise argparse.ArgumentTypeError(f"must be at least {_PARTITION_DURATION_S_MIN:g} seconds (a split, then a "
                                         f"move, then load to measure), got {text}")
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
            "check that a new node recovers every acknowledged write. Balancer part: start a pool of "
            "replica actors behind a balancer (circuit breakers, retries, outlier "
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

    from .kv.workload import SCHEDULES

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
    raft.add_argument("--clients", type=_positive_int, default=4,
                      help="concurrent client sessions (default 4)")
    raft.add_argument("--keys", type=_positive_int, default=3,
                      help="keys the clients share; few keys make more conflicts to check (default 3)")
    raft.add_argument("--duration-s", type=_positive_float, default=10.0,
                      help="seconds of workload before the final repair and the check (default 10)")
    raft.add_argument("--schedule", choices=SCHEDULES, default="mixed", metavar="NAME",
                      help="nemesis schedule, applied in cycles of fault, wait, repair: "
                           f"{', '.join(SCHEDULES)} (default mixed: a random fault each cycle)")
    raft.add_argument("--seed", type=int, default=0, help="seed for the clients, the nemesis and Raft (default 0)")
    raft.add_argument("--root", default=None,
                      help="fsspec URL for the members' durable logs (default: a temporary directory, removed "
                           "at the end)")
    raft.add_argument("--tick-s", type=_positive_float, default=0.02,
                      help="Raft tick in seconds; an election starts after about 10 ticks without a leader "
                           "(default 0.02)")
    raft.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")

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
    repl.add_argument("--sync-replicas", type=_positive_int, default=1,
                      help="followers that acknowledge a semi-sync write (default 1)")
    repl.add_argument("--replicas", type=_positive_int, default=3, help="replicas (default 3)")
    repl.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                      help="where each replica keeps its data (default lsm)")
    repl.add_argument("--read", choices=["session", "leader", "linearizable", "follower"], default=None,
                      help="how the clients read (default: session under leader-follower, read-your-writes and "
                           "monotonic reads; linearizable under raft, checked for linearizability)")
    repl.add_argument("--clients", type=_positive_int, default=4, help="concurrent client sessions (default 4)")
    repl.add_argument("--keys", type=_positive_int, default=3, help="shared keys the sessions write and read "
                                                                    "(default 3)")
    repl.add_argument("--duration-s", type=_positive_float, default=10.0,
                      help="seconds of workload before the final repair and the checks (default 10)")
    repl.add_argument("--schedule", choices=SCHEDULES, default="mixed", metavar="NAME",
                      help=f"nemesis schedule: {', '.join(SCHEDULES)} (default mixed)")
    repl.add_argument("--lease-s", type=_positive_float, default=1.0,
                      help="the leader's lease; a failover takes about 1.5 leases (default 1)")
    repl.add_argument("--seed", type=int, default=0, help="seed for the clients and the nemesis (default 0)")
    repl.add_argument("--root", default=None,
                      help="fsspec URL for logs and engines (default: a temporary directory, removed at the end)")
    repl.add_argument("--no-progress", action="store_true", help="no live progress bar (for logs and Ray jobs)")

    from .partitioning.demo import FAULTS as PARTITION_FAULTS

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
    part.add_argument("--replicas", type=_positive_int, default=3, help="replicas per group (default 3)")
    part.add_argument("--protocol", choices=["raft", "leader-follower"], default="raft",
                      help="replication inside each group (default raft, whose histories are also checked for "
                           "linearizability); leader-follower groups run semi-sync")
    part.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                      help="where each replica keeps its data (default lsm)")
    part.add_argument("--keys", type=_positive_int, default=2000, help="keys loaded before the workload (default 2000)")
    part.add_argument("--skew", type=_skew, default=1.0,
                      help="Zipf exponent of the keys' first hex digit; 0 spreads keys evenly (default 1: six "
                           "keys in ten in the first of four partitions)")
    part.add_argument("--clients", type=_positive_int, default=3,
                      help="concurrent workload clients, besides the hot-spot writer (default 3)")
    part.add_argument("--duration-s", type=_partition_duration, default=20.0,
                      help="seconds of workload (at least 4): the split comes at 30%% of it, the move at least a "
                           "second later (default 20)")
    part.add_argument("--fault", choices=PARTITION_FAULTS, default="kill-leader",
                      help="what hits the moving partition's source group while it moves (default kill-leader)")
    part.add_argument("--fault-s", type=_positive_float, default=2.0,
                      help="seconds before the fault is repaired (default 2)")
    part.add_argument("--seed", type=int, default=0, help="seed for the keys, the writers and the workload "
                                                         "(default 0)")
    part.add_argument("--root", default=None,
                      help="fsspec URL for logs and engines (default: a temporary directory, removed at the end)")
    part.add_argument("--no-progress", action="store_true", help="no live load table (for logs and Ray jobs)")

    from .events.workload import CYCLE

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
    ev.add_argument("--replicas", type=_positive_int, default=3, help="Raft members (default 3)")
    ev.add_argument("--engine", choices=["lsm", "btree", "map"], default="lsm",
                    help="where each member keeps its rows (default lsm)")
    ev.add_argument("--clients", type=_positive_int, default=4, help="command threads (default 4)")
    ev.add_argument("--orders", type=_positive_int, default=None,
                    help="orders open at once, shared by the threads (default 2 x clients: they conflict)")
    ev.add_argument("--duration-s", type=_positive_float, default=15.0,
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


def _raft(args) -> int:
    """``ddia-ray raft``: launch, run the workload, always shut down, then the summary and the verdict line."""
    import gc
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .kv.cluster import RaftKV
    from .kv.report import VERDICTS, exit_status, summary_lines
    from .kv.workload import run_workload
    from .runtime import ensure_ray

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
        _release(cluster, tmp)
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


def _release(store, tmp: str | None) -> None:
    """End a command's run: stop its store (deleting its data when it lived in a temporary root)."""
    import shutil

    if store is not None:
        store.shutdown(destroy_data=tmp is not None)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def _verdict(command: str, what: str, report, summary_lines) -> int:
    """Print a run's summary and return its exit status; a run that did not complete fails."""
    import gc

    gc.collect()  # the clients' loops' leftovers complain on collection: before the summary, not after
    if report is None:
        print(f"ddia-ray {command}: the run did not complete (traceback above), so nothing was checked",
              file=sys.stderr)
        print(f"{what}: FAILED", flush=True)
        return 1
    print("\n".join(summary_lines(report)), flush=True)
    return 0 if report.ok else 1


def _replicate(args) -> int:
    """``ddia-ray replicate``: launch, run the workload, always shut down, then the summary and the verdict line."""
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .replication import ReplicatedStore
    from .replication.report import summary_lines
    from .replication.workload import run_workload
    from .runtime import ensure_ray

    console = Console()
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
        _release(store, tmp)
    return _verdict("replicate", "replication", report, summary_lines)


def _events(args) -> int:
    """``ddia-ray events``: launch, run the workload, always shut down, then the summary and the verdict lines."""
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.markup import escape

    from .events.report import max_lags, summary_lines
    from .events.store import EventStore
    from .events.workload import run_workload
    from .runtime import ensure_ray

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
        _release(store, tmp)
    return _verdict("events", "events", report, summary_lines)


def _partition_view(report, now_s: float):
    """The live view of ``ddia-ray partition``: the phase, then the write load per partition lately."""
    from rich.console import Group
    from rich.table import Table

    from .partitioning.demo import group_rows, load_rates, load_rows

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


def _partition(args) -> int:
    """``ddia-ray partition``: launch, load, run with a split and a move, always shut down, then the summary."""
    import contextlib
    import tempfile
    import time
    import traceback

    from rich.console import Console
    from rich.live import Live
    from rich.markup import escape

    from .partitioning import PartitionedStore
    from .partitioning.demo import hex_boundaries, run_demo, summary_lines
    from .runtime import ensure_ray

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
        _release(store, tmp)
    return _verdict("partition", "partitioning", report, summary_lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``ddia-ray``; returns the process exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from .demo.run import run_demo
        from .demo.storage import run_storage_demo

        writes_lost = run_storage_demo(args) if args.part in ("all", "storage") else 0
        requests_failed = run_demo(args) if args.part in ("all", "balancer") else 0
        return 0 if writes_lost == 0 and requests_failed == 0 else 1
    if args.command == "raft":
        return _raft(args)
    if args.command == "replicate":
        return _replicate(args)
    if args.command == "partition":
        return _partition(args)
    if args.command == "events":
        return _events(args)
    return _info(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
