"""``ddia-ray demo``: replicas behind a balancer, surviving a kill and a partition.

Theory of operation: the demo launches ``--replicas`` :class:`ReplicaCore`
shells and a :class:`~ddia_ray.balancing.BalancerActor` in front of them, then
keeps ``--concurrency`` batches of :class:`Work` in flight. Part-way through
it applies a fixed fault schedule with the nemesis (kill one replica, isolate
another, restart the first, heal), so a run shows the breakers opening, the
outlier detector and the phi-accrual health checks routing around the
faults, and the retries absorbing them. Every answer is checked against
:func:`expected_digest`; a request whose answer never arrived or was wrong
counts as *lost*, and the last line printed is ``requests lost: <n>``.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import tempfile
import time
import uuid

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..resilience import CircuitBreakerConfig
from ..runtime import CoreSpec, NodeGroup, ensure_ray
from .replica import Work, WorkResult, expected_digest

__all__ = ["run_demo", "check_demo_args", "FAULT_SCHEDULE"]

#: (fraction of requests completed, action) — applied once each, in order.
FAULT_SCHEDULE = ((0.15, "kill"), (0.30, "partition"), (0.45, "restart"), (0.60, "heal"))


def check_demo_args(args) -> None:
    """Refuse ``args`` the balancer demo cannot run with (SystemExit naming the option), before anything starts."""
    if args.replicas < 3:
        raise SystemExit("ddia-ray demo: --replicas must be at least 3 (one is killed, one partitioned)")


def run_demo(args) -> int:
    """Run the demo with parsed CLI ``args``; returns 0 when no request was lost."""
    check_demo_args(args)
    console = Console()
    ensure_ray()
    from ..balancing.actor import BalancerActor

    name = f"demo-{uuid.uuid4().hex[:6]}"
    nodes = [f"replica-{i}" for i in range(args.replicas)]
    tmp = None if args.root else tempfile.mkdtemp(prefix="ddia-ray-demo-")
    root = args.root or f"file://{tmp}"
    spec = CoreSpec("ddia_ray.demo.replica:ReplicaCore", {"peers": tuple(nodes)})
    console.print(f"[bold]ddia-ray demo[/]: {args.replicas} replicas in group {name!r}, "
                  f"{args.requests} requests, picker {args.picker}, records under {root}")
    group = NodeGroup.launch(name, {n: spec for n in nodes}, root=root, seed=args.seed)
    # Short timeouts and waits so a run of a few seconds shows failure *and* recovery.
    breaker = CircuitBreakerConfig(window_type="count", window_size=20, minimum_calls=5, failure_rate_threshold=50,
                                   wait_in_open_s=0.5, permitted_calls_in_half_open=2)
    balancer = BalancerActor.launch(group, nodes, picker=args.picker, seed=args.seed, timeout_s=0.5, breaker=breaker)
    calls = balancer.client()
    killed, isolated = nodes[1], nodes[2]
    work = [Work(f"req-{i}", rounds=1 + i % 3) for i in range(args.requests)]
    batches = [work[i:i + args.batch] for i in range(0, len(work), args.batch)]
    ok = lost = wrong = 0
    lost_examples: list[str] = []
    faults_done = 0
    events: list[str] = []
    started = time.monotonic()

    def apply_fault(action: str) -> None:
        if args.no_faults:
            return
        if action == "kill":
            group.nemesis.kill(killed)
            events.append(f"killed {killed}")
        elif action == "partition":
            group.nemesis.isolate(isolated)
            events.append(f"isolated {isolated} from every other node and the balancer")
        elif action == "restart":
            group.nemesis.restart(killed)
            events.append(f"restarted {killed} (recovered from its durable records)")
        else:
            group.nemesis.heal()
            events.append("healed the partition")
        console.print(f"  [yellow]nemesis[/] at {time.monotonic() - started:5.1f}s: {events[-1]}")

    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("ok {task.fields[ok]} lost {task.fields[lost]}"), TimeElapsedColumn(),
                        console=console, disable=args.no_progress)
    try:
        with progress:
            task = progress.add_task("requests", total=len(work), ok=0, lost=0)
            in_flight: dict = {}
            next_batch = 0
            while next_batch < len(batches) or in_flight:
                while next_batch < len(batches) and len(in_flight) < args.concurrency:
                    batch = batches[next_batch]
                    in_flight[calls.call_batch_future(batch)] = batch
                    next_batch += 1
                done, _ = concurrent.futures.wait(list(in_flight), return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    batch = in_flight.pop(fut)
                    for w, r in zip(batch, fut.result()):
                        if isinstance(r, BaseException):
                            lost += 1
                            if len(lost_examples) < 5:
                                lost_examples.append(f"{w.key}: {type(r).__name__}: {r}")
                        elif r != WorkResult(w.key, expected_digest(w), r.replica):
                            wrong += 1
                        else:
                            ok += 1
                    progress.update(task, advance=len(batch), ok=ok, lost=lost + wrong)
                finished = (ok + lost + wrong) / len(work)
                while faults_done < len(FAULT_SCHEDULE) and finished >= FAULT_SCHEDULE[faults_done][0]:
                    apply_fault(FAULT_SCHEDULE[faults_done][1])
                    faults_done += 1
        elapsed = time.monotonic() - started
        stats = calls.stats()
        served = {n: s["core"]["served"] for n, s in group.status().items()}
        _report(console, stats, served, ok, lost + wrong, elapsed, len(work), lost_examples)
    finally:
        balancer.shutdown()
        group.shutdown(destroy_data=tmp is not None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"requests lost: {lost + wrong}", flush=True)
    return 0 if lost + wrong == 0 else 1


def _report(console: Console, stats: dict, served: dict, ok: int, lost: int, elapsed: float, total: int,
            lost_examples: list[str]) -> None:
    table = Table(title="Load per replica")
    for col in ("replica", "routed", "failed", "served (durable)", "breaker", "health", "ejected"):
        table.add_column(col, justify="right" if col in ("routed", "failed", "served (durable)") else "left")
    for name, r in sorted(stats["replicas"].items()):
        table.add_row(name, str(r["requests"]), str(r["failures"]), str(served.get(name, "-")),
                      stats["breakers"].get(name, "-"), stats["members"].get(name, "-"),
                      "yes" if r["ejected"] else "no")
    console.print(table)
    transitions = Table(title="Breaker transitions")
    for col in ("breaker", "from", "to", "why"):
        transitions.add_column(col)
    for breaker, frm, to, why in stats["transitions"]:
        transitions.add_row(breaker, str(frm), str(to), why)
    console.print(transitions)
    summary = Table(title="Client view")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for k, v in (("requests", total), ("answered correctly", ok), ("retries", stats["retries"]),
                 ("requests lost", lost), ("elapsed s", f"{elapsed:.1f}"), ("requests/s", f"{total / elapsed:,.0f}")):
        summary.add_row(k, str(v))
    console.print(summary)
    for example in lost_examples:
        console.print(f"  [red]lost[/] {example}")
